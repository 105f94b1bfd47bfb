//! The storage seam: what a backend must provide.
//!
//! The core decides every state change (see [`crate::lifecycle`]); a backend
//! only stores, selects and swaps atomically. Every method takes "now" from
//! the caller (the manager's [`crate::Clock`]), never from the server, so
//! tests can move time. Bulk methods report one outcome per item, in input
//! order, and never fail as a whole for one bad item.
//!
//! Reading this file tells you the whole contract; the `oncetask-conformance`
//! crate checks it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::error::StoreError;
use crate::inspect::QueueStats;
use crate::lifecycle::LeaseGrant;
pub use crate::status::StatusCounts;
use crate::status::TaskStatus;
use crate::task::Task;

pub mod connect;
pub mod defaults;
mod finished;
mod forward;
pub mod operator;
mod rate;
mod storage;
mod swap;
pub use connect::{ConnectOptions, redact_password};
pub use finished::{DEFAULT_FINISHED_PAGE, FinishedQuery};
pub use forward::Forward;
pub use operator::{KeyQueue, KeyQueues};
pub use rate::{StartsRequest, window_start};
pub use storage::{StorageFigure, StorageStats, StoredSize};
pub use swap::{Announce, Change, Fence, Field, Swap, SwapOutcome, swap_rounds};

/// A durable home for tasks.
///
/// A wrapper around another store implements [`Forward`] instead, which
/// forwards every method, the provided ones included. (A provided method
/// added here needs a forwarding default in [`Forward`] too, or wrappers
/// would answer with this trait's generic default.)
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts each task unless its id exists (in any environment).
    async fn create(&self, tasks: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError>;

    /// Atomically selects ready tasks of `request.env` and `request.kind` and
    /// leases them with [`crate::lifecycle::claim`].
    ///
    /// Ready means [`Task::is_ready_at`]`(request.now)`; candidates are taken in
    /// [`Task::claim_order_key`] order, except that a backend may break exact
    /// ties of `(leased_until, wait_until, created_at)` by resource key (none
    /// first) before the id ([`ClaimTies`]; Firestore does: its queries that
    /// leave busy keys out can order no other way). A task whose resource key has a live
    /// lease (same env and kind) is skipped, not blocking the others. Two
    /// concurrent claims never both lease tasks of one resource key.
    /// Documents that cannot be decoded are skipped and reported; a backend
    /// may report the same document on every claim until it is removed.
    /// A limit or group size of 0 claims nothing.
    async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError>;

    /// Applies each swap ([`Swap`]): writes its [`Change`]'s fields and new
    /// version (as [`Swap::task`] has them) only if the stored task still
    /// matches its [`Fence`]: the version, and on a backend with revisions
    /// the document's revision (when the fence has one).
    ///
    /// Fields outside the change stay as stored: a backend may write them
    /// only where the fence guarantees they are unchanged (every writer of
    /// the backend bumps the version). A swap onto a stored document that
    /// cannot be decoded reports [`SwapOutcome::Failed`] with
    /// [`StoreError::Undecodable`]. [`SwapOutcome::Applied`] carries the
    /// written document's new revision, for the next swap of that task.
    /// The swaps are borrowed: the caller keeps them to retry after a
    /// storage error and to take the written tasks from.
    async fn swap(&self, swaps: &[Swap]) -> Result<Vec<SwapOutcome>, StoreError>;

    /// Reads tasks by id, in input order; missing ids are omitted, duplicates read once.
    async fn get(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError>;

    /// Lists tasks matching `filter`, oldest `created_at` first (then id):
    /// with [`TaskFilter::after`], only those after that cursor in this
    /// order; then `offset` matches are skipped and at most `limit` returned.
    /// Documents that cannot be decoded are not listed.
    ///
    /// A filter the store cannot serve from an index
    /// ([`Store::check_filter`]) is [`StoreError::Unsupported`], with
    /// nothing read.
    async fn find(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError>;

    /// Whether [`Store::find`] serves `filter` without reading past tasks
    /// that do not match: `Ok` if it does, [`StoreError::Unsupported`]
    /// saying why not (and what would be served) if it does not. It reads
    /// nothing, so a user interface can ask it for every choice it offers.
    ///
    /// Stores that filter inside their database (all but Firestore) serve
    /// every filter: the default answers `Ok`. Firestore bills every
    /// document a query reads, so it refuses what no composite index serves.
    fn check_filter(&self, filter: &TaskFilter) -> Result<(), StoreError> {
        let _ = filter;
        Ok(())
    }

    /// Counts tasks of `env` (and `kind`, if given) by their status at `now`,
    /// and, apart from them, the stored documents of `env` (and `kind`) that
    /// cannot be decoded ([`StatusCounts::undecodable`]): such a document has
    /// no status and is never counted in one. A backend that cannot tell
    /// every undecodable document without decoding it says in its docs which
    /// ones it counts by status instead.
    async fn count_by_status(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StatusCounts, StoreError>;

    /// Removes documents by id; one with an `expected_version` only if the
    /// stored task still has that version (otherwise [`DeleteOutcome::Conflict`]).
    async fn delete(&self, deletes: &[Delete]) -> Result<Vec<DeleteOutcome>, StoreError>;

    /// The earliest instant strictly after `after` at which a not-done task of
    /// `env`/`kind` becomes due ([`Task::due_at`]): a `wait_until` or a lease expiry.
    /// Workers sleep until then.
    async fn next_due(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// The kinds of the tasks of `env`, sorted, each once; documents that
    /// cannot be decoded are not tasks and do not count.
    ///
    /// The default lists every task of `env` ([`defaults::kinds_by_listing`]);
    /// backends that can ask for distinct kinds override it.
    async fn kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        defaults::kinds_by_listing(self, env).await
    }

    /// The queue inspector: for each kind of `env` ([`Store::kinds`]), its
    /// counts by status at `now` (as [`Store::count_by_status`]), when its
    /// longest-waiting pending task became ready ([`Task::ready_since`] of
    /// the tasks whose status at `now` is pending), and its next due time
    /// after `now` (as [`Store::next_due`]).
    ///
    /// The default ([`defaults::inspect_with_primitives`]) is built
    /// from those methods; backends may override it with fewer round trips.
    async fn inspect(&self, env: &str, now: DateTime<Utc>) -> Result<QueueStats, StoreError> {
        defaults::inspect_with_primitives(self, env, now).await
    }

    /// Finished tasks for a pruner ([`FinishedQuery::matches`]), in
    /// `(done_at, id)` order, at most `query.limit`. Documents that cannot
    /// be decoded are not listed.
    ///
    /// The default pages through [`Store::find`] (every task of the kind
    /// with that status is read); backends override it with a query on
    /// the finish time.
    async fn find_finished(&self, query: &FinishedQuery) -> Result<Vec<Task>, StoreError> {
        defaults::finished_by_listing(self, query).await
    }

    /// The recurrence generators of `env` (tasks with a
    /// [`Task::recurrence`]), at most `limit`, in an order of the store's
    /// choosing; documents that cannot be decoded are not listed.
    ///
    /// The default reads every task of `env`
    /// ([`operator::generators_by_listing`]); backends with an index on
    /// recurrence override it.
    async fn find_generators(&self, env: &str, limit: usize) -> Result<Vec<Task>, StoreError> {
        operator::generators_by_listing(self, env, limit).await
    }

    /// The resource keys of the open tasks of `env` (and `kind`), busiest
    /// first, at most `limit`, with their queues at `now`
    /// ([`KeyQueues`]).
    ///
    /// The default groups the first [`operator::KEY_QUEUE_SCAN`] open tasks
    /// ([`operator::key_queues_by_listing`], which says when it read only
    /// part of them); backends that can group in their database override
    /// it, and one that bills every document read (Firestore) refuses it
    /// with [`StoreError::Unsupported`].
    async fn open_resource_keys(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<KeyQueues, StoreError> {
        operator::key_queues_by_listing(self, env, kind, now, limit).await
    }

    /// The stored documents of `env` that cannot be decoded into tasks,
    /// with the reasons, at most `limit` (what
    /// [`StatusCounts::undecodable`] counts, as far as the backend can
    /// select them).
    ///
    /// [`Store::find`] leaves such documents out, so there is no default
    /// listing: the default is [`StoreError::Unsupported`].
    async fn find_undecodable(
        &self,
        env: &str,
        limit: usize,
    ) -> Result<Vec<Undecodable>, StoreError> {
        let _ = (env, limit);
        Err(StoreError::Unsupported(
            "this store does not list the documents it cannot decode".to_owned(),
        ))
    }

    /// Pauses (`paused`) or resumes a kind of `env` for every process
    /// sharing the store: stored, so it outlives the processes. Returns
    /// whether the state changed. A change publishes a notice for the kind
    /// with [`Notification::may_touch_claimed`] set, so that managers
    /// re-read the paused kinds ([`Store::paused_kinds`]) at once.
    async fn set_paused(&self, env: &str, kind: &str, paused: bool) -> Result<bool, StoreError>;

    /// The paused kinds of `env`, sorted.
    async fn paused_kinds(&self, env: &str) -> Result<Vec<String>, StoreError>;

    /// Takes starts from rate limiters, one answer per request in input
    /// order: how many starts each granted ([`StartsRequest`] has the rule).
    /// Each request is atomic across processes; the batch as a whole need
    /// not be. A limiter may be forgotten once its window has ended.
    async fn take_starts(&self, requests: &[StartsRequest]) -> Result<Vec<u32>, StoreError>;

    /// Gives starts taken but not used back to their limiters' windows
    /// ([`StartsRequest::give_back`]).
    async fn return_starts(&self, requests: &[StartsRequest]) -> Result<(), StoreError>;

    /// What the tasks of `env` take up: documents and bytes per status,
    /// tombstones apart, and the backend's own figures, each labelled with
    /// how it was obtained ([`StorageStats`]).
    ///
    /// The default lists every task of `env` and counts them, with no
    /// sizes ([`defaults::storage_by_listing`]).
    async fn storage_stats(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<StorageStats, StoreError> {
        defaults::storage_by_listing(self, env, now).await
    }

    /// How many claims of one kind a manager may have in flight against
    /// this store at once. Backends whose claims pass over the rows other
    /// claimers hold (SQL `SKIP LOCKED`, a server-side script, a lock)
    /// gain from a second one, which keeps worker slots fed while the first
    /// is on the wire. An optimistic backend would make one process's
    /// concurrent claims race each other for the same tasks (wasted reads
    /// and retries), so the default is 1.
    fn concurrent_claims(&self) -> usize {
        1
    }

    /// Whether managers claim tasks ahead of their free worker slots by
    /// default ([`crate::manager::HandlerOptions::claim_ahead`] overrides
    /// it). Worth it where a claim that takes a few more tasks costs no
    /// more and races no one; an optimistic backend's claims of several
    /// managers would collide on the same tasks more often, so the default
    /// is false.
    fn claims_ahead(&self) -> bool {
        false
    }

    /// An optional stream of change notices for `env`, so workers in other
    /// processes wake without polling. `None` when the backend has none.
    ///
    /// Backends publish on writes that can make a task ready or free a
    /// resource key (create, swap, delete); claims need not publish. Cancels,
    /// resets, pauses and resumes, deletes of tasks that are not done (and
    /// writes the backend cannot classify) must be published with
    /// [`Notification::may_touch_claimed`] set (deleting a finished task
    /// frees nothing and need not be published at all): only those make
    /// workers re-read the tasks they claimed ahead, so a backend that
    /// leaves it unset lets a task cancelled meanwhile start its main
    /// handler (its outcome is still written as cancelled). Notices may be
    /// lost (a slow subscriber, a dropped connection): workers still wake at
    /// due times and at the manager's poll interval.
    fn subscribe(&self, env: &str) -> Option<BoxStream<'static, Notification>> {
        let _ = env;
        None
    }
}

/// Result of creating one task.
#[derive(Debug)]
pub enum CreateOutcome {
    /// Stored.
    Created,
    /// A task with this id exists in the same environment; nothing changed.
    AlreadyExists,
    /// A task with this id exists in another environment; nothing changed (Go W13).
    ExistsInOtherEnv {
        /// The env of the existing task.
        env: String,
    },
    /// This item failed.
    Failed(StoreError),
}

/// What a claim asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Environment.
    pub env: String,
    /// Task kind.
    pub kind: String,
    /// The caller's now.
    pub now: DateTime<Utc>,
    /// The lease to apply to every claimed task.
    pub grant: LeaseGrant,
    /// Single tasks or one resource-key group.
    pub mode: ClaimMode,
    /// Which ready tasks come first.
    pub order: ClaimOrder,
}

/// The order in which a claim takes ready tasks.
///
/// Both orders end in the claim order of [`Task::claim_order_key`] (never
/// leased before expired leases, then `wait_until`, `created_at`, and the
/// backend's [`ClaimTies`]); resource-key exclusion and the group rules of
/// [`ClaimMode`] are the same in both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClaimOrder {
    /// Higher [`Task::priority`] first, then the claim order. (Firestore,
    /// which cannot query by a field the Go package does not write, ranks
    /// by priority within the page of ready tasks it reads in claim order.)
    #[default]
    Priority,
    /// The claim order alone, whatever the priorities: the manager makes
    /// every n-th claim of a kind in this order
    /// ([`HandlerOptions::oldest_claim_every`](crate::HandlerOptions::oldest_claim_every)),
    /// so a stream of high-priority tasks cannot starve the others.
    Oldest,
}

/// How many tasks a claim takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimMode {
    /// Up to `limit` ready tasks, at most one per resource key.
    Single {
        /// Maximum number of tasks.
        limit: usize,
    },
    /// For resource-key handlers: the first ready candidate decides. Without a
    /// resource key it is claimed alone; with one, every ready task of that key
    /// (same env and kind) is claimed, ordered by `wait_until` (`None`
    /// first, then `created_at`, id), at most `max_group`.
    ResourceGroup {
        /// Maximum group size (Go had none, W29).
        max_group: usize,
    },
}

/// How a backend's claims break exact ties of [`Task::claim_order_key`]
/// (same `leased_until`, `wait_until` and `created_at`): the one place the
/// [`Store::claim`] contract lets backends differ.
///
/// ```
/// use chrono::Utc;
/// use oncetask_core::Task;
/// use oncetask_core::store::ClaimTies;
///
/// let now = Utc::now();
/// let mut keyed = Task::new("a", "k", "E", now);
/// keyed.resource_key = Some("r".into());
/// let keyless = Task::new("b", "k", "E", now);
/// assert!(ClaimTies::Id.order(&keyed, &keyless).is_lt());
/// assert!(ClaimTies::ResourceKeyThenId.order(&keyed, &keyless).is_gt());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClaimTies {
    /// By id (memory, PostgreSQL, Redis).
    #[default]
    Id,
    /// By resource key (none first), then id: Firestore, whose queries
    /// that leave busy keys out can only order by the key before the id.
    ResourceKeyThenId,
}

impl ClaimTies {
    /// Compares two ready tasks in claim order.
    pub fn order(self, a: &Task, b: &Task) -> std::cmp::Ordering {
        fn key(ties: ClaimTies, t: &Task) -> &str {
            match ties {
                ClaimTies::Id => "",
                ClaimTies::ResourceKeyThenId => t.resource_key.as_deref().unwrap_or(""),
            }
        }
        let (a_lease, a_wait, a_created, a_id) = a.claim_order_key();
        let (b_lease, b_wait, b_created, b_id) = b.claim_order_key();
        (a_lease, a_wait, a_created, key(self, a), a_id).cmp(&(
            b_lease,
            b_wait,
            b_created,
            key(self, b),
            b_id,
        ))
    }
}

/// Tasks a claim leased, plus documents it had to skip.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Leased tasks, as stored after the claim.
    pub tasks: Vec<Task>,
    /// Candidates that could not be decoded (Go W7: they no longer stop the kind).
    pub undecodable: Vec<Undecodable>,
}

/// A stored document that is not a valid task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// Document id.
    pub id: String,
    /// Decoder message.
    pub reason: String,
}

/// Result of one read by id.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // tasks are the common case; boxing them costs every read
pub enum Fetched {
    /// A task.
    Task(Task),
    /// A document that is not a valid task.
    Undecodable(Undecodable),
}

/// One removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Document id.
    pub id: String,
    /// Remove only if the stored task still has this version. `None` removes
    /// whatever is stored (also a document that cannot be decoded).
    pub expected_version: Option<u64>,
    /// With an expected version, on a backend with revisions
    /// ([`Task::revision`]): remove only if the stored document is still at
    /// this revision too, so a write by a writer that does not bump the
    /// version (the Go package on a shared Firestore collection) also makes
    /// the delete conflict. Ignored by backends without revisions.
    pub expected_revision: Option<crate::task::Revision>,
}

impl Delete {
    /// Removes `id` whatever is stored.
    pub fn any(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            expected_version: None,
            expected_revision: None,
        }
    }

    /// Removes `task` only if it is still stored at its version (and, on a
    /// backend with revisions, at the revision it was read at).
    pub fn exact(task: &Task) -> Self {
        Self {
            id: task.id.clone(),
            expected_version: Some(task.version),
            expected_revision: task.revision,
        }
    }
}

/// Result of deleting one id.
#[derive(Debug)]
pub enum DeleteOutcome {
    /// Removed.
    Deleted,
    /// Nothing to remove.
    NotFound,
    /// The stored version differs from the expected one (or the document
    /// cannot be decoded, so it has no version); nothing removed.
    Conflict,
    /// This item failed.
    Failed(StoreError),
}

/// A filtered listing.
///
/// Page through a listing with [`TaskFilter::after`] and [`TaskFilter::limit`]
/// (keyset paging: each page costs what it returns, however deep it is, and
/// tasks created or deleted meanwhile neither shift nor repeat the others):
///
/// ```
/// # use oncetask_core::{Store, StoreError, Task};
/// # use oncetask_core::store::{TaskCursor, TaskFilter};
/// # async fn demo(store: &dyn Store) -> Result<(), StoreError> {
/// let first = TaskFilter::env("prod", chrono::Utc::now()).kind("send_email").limit(100);
/// let mut filter = first.clone();
/// loop {
///     let page = store.find(&filter).await?;
///     for task in &page { println!("{}", task.id); }
///     match page.last() {
///         Some(last) if page.len() == 100 => filter = first.clone().after(TaskCursor::of(last)),
///         _ => break,
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskFilter {
    /// Environment (always required).
    pub env: String,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this resource key.
    pub resource_key: Option<String>,
    /// Only these statuses (at `now`); empty means all.
    pub statuses: Vec<TaskStatus>,
    /// Only tasks with this priority.
    pub priority: Option<i8>,
    /// Only tasks that are not done.
    pub not_done: bool,
    /// Only tasks whose id starts with this.
    pub id_prefix: Option<String>,
    /// Only tasks created at or before this time (the end of a range whose
    /// start is a cursor: [`TaskFilter::created_from`]).
    pub created_until: Option<DateTime<Utc>>,
    /// Time used for status filtering.
    pub now: DateTime<Utc>,
    /// Only tasks after this cursor in listing order (`created_at`, then
    /// id): the cursor of the last task of the previous page. Prefer it to
    /// `offset`, which reads and skips every task before the page.
    pub after: Option<TaskCursor>,
    /// Skip this many matches (after the cursor, if any).
    pub offset: usize,
    /// Return at most this many.
    pub limit: Option<usize>,
}

/// A position in listing order (`created_at`, then id): listings with
/// [`TaskFilter::after`] set to it start with the first task past it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskCursor {
    /// The `created_at` of the last task seen.
    pub created_at: DateTime<Utc>,
    /// Its id.
    pub id: String,
}

impl TaskCursor {
    /// The position of `task`: a listing after it starts with the next task.
    pub fn of(task: &Task) -> Self {
        Self {
            created_at: task.created_at,
            id: task.id.clone(),
        }
    }

    /// True when `task` comes after this position in listing order.
    pub fn precedes(&self, task: &Task) -> bool {
        (self.created_at, self.id.as_str()) < (task.created_at, task.id.as_str())
    }

    /// The text form `<created_at RFC 3339>/<id>` (for command lines and
    /// URLs; [`TaskCursor::from_str`](std::str::FromStr) reads it back).
    pub fn to_text(&self) -> String {
        format!(
            "{}/{}",
            self.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            self.id
        )
    }
}

impl std::str::FromStr for TaskCursor {
    type Err = String;

    /// Reads [`TaskCursor::to_text`]: the time up to the first `/`, the id after it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (time, id) = s
            .split_once('/')
            .ok_or_else(|| format!("cursor {s:?}: expected <created_at>/<id>"))?;
        let created_at = DateTime::parse_from_rfc3339(time)
            .map_err(|e| format!("cursor {s:?}: {e}"))?
            .with_timezone(&Utc);
        Ok(Self {
            created_at,
            id: id.to_owned(),
        })
    }
}

impl TaskFilter {
    /// Every task of `env`.
    pub fn env(env: impl Into<String>, now: DateTime<Utc>) -> Self {
        Self {
            env: env.into(),
            kind: None,
            resource_key: None,
            statuses: Vec::new(),
            priority: None,
            not_done: false,
            id_prefix: None,
            created_until: None,
            now,
            after: None,
            offset: 0,
            limit: None,
        }
    }

    /// Only tasks of `kind`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Only tasks with this resource key.
    pub fn resource_key(mut self, key: impl Into<String>) -> Self {
        self.resource_key = Some(key.into());
        self
    }

    /// Only tasks with `status` (at [`TaskFilter::now`]); call again to
    /// allow several.
    pub fn status(mut self, status: TaskStatus) -> Self {
        self.statuses.push(status);
        self
    }

    /// Only tasks with this priority.
    pub fn priority(mut self, priority: i8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Only tasks that are not done.
    pub fn not_done(mut self) -> Self {
        self.not_done = true;
        self
    }

    /// Only tasks whose id starts with `prefix`.
    pub fn id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.id_prefix = Some(prefix.into());
        self
    }

    /// Only tasks created at or after `time`: a cursor before every task
    /// created then (a later [`TaskFilter::after`] replaces it).
    pub fn created_from(self, time: DateTime<Utc>) -> Self {
        self.after(TaskCursor {
            created_at: time,
            id: String::new(),
        })
    }

    /// Only tasks created at or before `time`.
    pub fn created_until(mut self, time: DateTime<Utc>) -> Self {
        self.created_until = Some(time);
        self
    }

    /// Only tasks past `cursor` in listing order (the next page).
    pub fn after(mut self, cursor: TaskCursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// Skip this many matches.
    pub fn offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// At most this many.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// True when `task` passes every criterion except paging.
    pub fn matches(&self, task: &Task) -> bool {
        task.env == self.env
            && self.kind.as_ref().is_none_or(|k| *k == task.kind)
            && self
                .resource_key
                .as_ref()
                .is_none_or(|k| task.resource_key.as_ref() == Some(k))
            && self.priority.is_none_or(|p| p == task.priority)
            && (!self.not_done || !task.is_done())
            && (self.statuses.is_empty() || self.statuses.contains(&task.status(self.now)))
            && self
                .id_prefix
                .as_deref()
                .is_none_or(|p| task.id.starts_with(p))
            && !self.is_past_end(task)
    }

    /// True when `task` was created after [`TaskFilter::created_until`]:
    /// in listing order, so is every task after it.
    pub fn is_past_end(&self, task: &Task) -> bool {
        self.created_until.is_some_and(|end| task.created_at > end)
    }

    /// True when `task` is past [`TaskFilter::after`] (always, without a cursor).
    pub fn is_after_cursor(&self, task: &Task) -> bool {
        self.after.as_ref().is_none_or(|c| c.precedes(task))
    }
}

/// "Something changed for this kind": wake its workers.
///
/// ```
/// use oncetask_core::store::Notification;
///
/// // New or freed work: workers claim again, nothing more.
/// assert!(!Notification::new("send_email", false).may_touch_claimed);
/// // A cancel may hit a task a worker claimed ahead: it re-reads those.
/// assert!(Notification::touching_claimed("send_email").may_touch_claimed);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Notification {
    /// The kind whose tasks changed.
    pub kind: String,
    /// True when the write may have changed a task that a worker already
    /// holds: an operator's cancel, reset or delete, or a write the backend
    /// cannot tell apart. Workers then re-read the tasks they claimed ahead
    /// before starting them. False for writes that only add or free work
    /// (creates, and the heartbeats, releases and outcomes that only a lease
    /// holder writes): re-reading on those would cost a read per waiting
    /// task on every outcome.
    pub may_touch_claimed: bool,
}

impl Notification {
    /// A notice of a change of `kind`; see [`Self::may_touch_claimed`].
    pub fn new(kind: impl Into<String>, may_touch_claimed: bool) -> Self {
        Self {
            kind: kind.into(),
            may_touch_claimed,
        }
    }

    /// A notice of a write that may have changed tasks a worker holds (a
    /// delete, or a write of unknown origin).
    pub fn touching_claimed(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            may_touch_claimed: true,
        }
    }
}

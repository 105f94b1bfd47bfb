//! The storage seam: what a backend must provide.
//!
//! The core decides every state change (see [`crate::lifecycle`]); a backend
//! only stores, selects and swaps atomically. Every method takes "now" from
//! the caller (the manager's [`crate::Clock`]), never from the server, so
//! tests can move time. Bulk methods report one outcome per item, in input
//! order, and never fail as a whole for one bad item.
//!
//! Reading this file tells you the whole contract; the `conformance-tests`
//! crate checks it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::error::StoreError;
use crate::inspect::QueueStats;
use crate::lifecycle::LeaseGrant;
use crate::status::TaskStatus;
use crate::task::Task;

/// A durable home for tasks.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts each task unless its id exists (in any environment).
    async fn create(&self, tasks: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError>;

    /// Atomically selects ready tasks of `request.env` and `request.kind` and
    /// leases them with [`crate::lifecycle::claim`].
    ///
    /// Ready means [`Task::is_ready_at`]`(request.now)`; candidates are taken in
    /// [`Task::claim_order_key`] order. A task whose resource key has a live
    /// lease (same env and kind) is skipped, not blocking the others. Two
    /// concurrent claims never both lease tasks of one resource key.
    /// Documents that cannot be decoded are skipped and reported; a backend
    /// may report the same document on every claim until it is removed.
    /// A limit or group size of 0 claims nothing.
    async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError>;

    /// Writes each `task` only if the stored version is still `expected_version`
    /// and, on a backend with revisions, the stored document is still at
    /// `task.revision` (when it is set).
    ///
    /// A swap never changes a task's id, env, kind, `created_at`, payload,
    /// resource key or lineage (the core never asks for it), so a backend may
    /// write only the fields a swap can change. A swap onto a stored document
    /// that cannot be decoded reports [`SwapOutcome::Failed`] with
    /// [`StoreError::Undecodable`]. [`SwapOutcome::Applied`] carries the
    /// written document's new revision, for the next swap of that task.
    async fn swap(&self, swaps: Vec<Swap>) -> Result<Vec<SwapOutcome>, StoreError>;

    /// Reads tasks by id, in input order; missing ids are omitted, duplicates read once.
    async fn get(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError>;

    /// Lists tasks matching `filter`, oldest `created_at` first (then id).
    async fn find(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError>;

    /// Counts tasks of `env` (and `kind`, if given) by their status at `now`.
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
    /// The default lists every task of `env` ([`crate::inspect::kinds_by_listing`]);
    /// backends that can ask for distinct kinds override it.
    async fn kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        crate::inspect::kinds_by_listing(self, env).await
    }

    /// The queue inspector: for each kind of `env` ([`Store::kinds`]), its
    /// counts by status at `now` (as [`Store::count_by_status`]), when its
    /// longest-waiting pending task became ready ([`Task::ready_since`] of
    /// the tasks whose status at `now` is pending), and its next due time
    /// after `now` (as [`Store::next_due`]).
    ///
    /// The default ([`crate::inspect::inspect_with_primitives`]) is built
    /// from those methods; backends may override it with fewer round trips.
    async fn inspect(&self, env: &str, now: DateTime<Utc>) -> Result<QueueStats, StoreError> {
        crate::inspect::inspect_with_primitives(self, env, now).await
    }

    /// An optional stream of change notices for `env`, so workers in other
    /// processes wake without polling. `None` when the backend has none.
    ///
    /// Backends publish on writes that can make a task ready or free a
    /// resource key (create, swap, delete); claims need not publish. Notices
    /// may be lost (a slow subscriber, a dropped connection): workers still
    /// wake at due times and at the manager's poll interval.
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

/// One conditional write.
///
/// The fence is the state the new task was computed from: its version
/// (`expected_version`) and, where the backend has them, its revision
/// (`task.revision`, which [`crate::lifecycle`] transitions copy from the task
/// they start from). Versions fence writers that go through oncetask;
/// revisions also fence writers that do not bump the version (the Go
/// package on a shared Firestore collection), so their changes are never
/// overwritten: the swap conflicts, and the core decides again on a fresh read.
#[derive(Debug, Clone)]
pub struct Swap {
    /// The new task (its `version` is already the new one; its `revision`
    /// is the one the stored document must still have, if set).
    pub task: Task,
    /// The version the stored task must still have.
    pub expected_version: u64,
}

/// Result of one conditional write.
#[derive(Debug)]
pub enum SwapOutcome {
    /// Written.
    Applied {
        /// The revision of the document as written, on backends with
        /// revisions ([`Task::revision`]); `None` elsewhere.
        revision: Option<crate::task::Revision>,
    },
    /// The stored version differs; nothing written.
    Conflict,
    /// No task with this id; nothing written.
    NotFound,
    /// This item failed.
    Failed(StoreError),
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
}

impl Delete {
    /// Removes `id` whatever is stored.
    pub fn any(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            expected_version: None,
        }
    }

    /// Removes `task` only if it is still stored at its version.
    pub fn exact(task: &Task) -> Self {
        Self {
            id: task.id.clone(),
            expected_version: Some(task.version),
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
#[derive(Debug, Clone)]
pub struct TaskFilter {
    /// Environment (always required).
    pub env: String,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this resource key.
    pub resource_key: Option<String>,
    /// Only these statuses (at `now`); empty means all.
    pub statuses: Vec<TaskStatus>,
    /// Only tasks that are not done.
    pub not_done: bool,
    /// Time used for status filtering.
    pub now: DateTime<Utc>,
    /// Skip this many matches.
    pub offset: usize,
    /// Return at most this many.
    pub limit: Option<usize>,
}

impl TaskFilter {
    /// Every task of `env`.
    pub fn env(env: impl Into<String>, now: DateTime<Utc>) -> Self {
        Self {
            env: env.into(),
            kind: None,
            resource_key: None,
            statuses: Vec::new(),
            not_done: false,
            now,
            offset: 0,
            limit: None,
        }
    }

    /// True when `task` passes every criterion except paging.
    pub fn matches(&self, task: &Task) -> bool {
        task.env == self.env
            && self.kind.as_ref().is_none_or(|k| *k == task.kind)
            && self
                .resource_key
                .as_ref()
                .is_none_or(|k| task.resource_key.as_ref() == Some(k))
            && (!self.not_done || !task.is_done())
            && (self.statuses.is_empty() || self.statuses.contains(&task.status(self.now)))
    }
}

/// Number of tasks per status; statuses with no task are absent.
pub type StatusCounts = BTreeMap<TaskStatus, u64>;

/// "Something changed for this kind": wake its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The kind whose tasks changed.
    pub kind: String,
}

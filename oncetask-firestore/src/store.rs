//! [`FirestoreStore`]: the [`Store`] on Firestore.
//!
//! The whole conformance suite passes against the Firestore emulator. The
//! composite indexes the queries need are in the crate's
//! `firestore.indexes.json`; the queries are built in one private module
//! whose unit test checks them against that file.
//!
//! The store uses the Firestore gRPC API through
//! [`FirestoreDb::client`], which the `firestore` crate documents as an
//! escape hatch outside its semver promise: the dependency is kept on 0.61.x.
//!
//! * **create**: one BatchWrite with an `exists = false` precondition per
//!   document; ids that exist are read back (BatchGet) to tell "already
//!   exists" from "exists in another env".
//! * **get**: BatchGet. **find** reads one page: a query with equality
//!   filters (env, kind, resource key, not done) ordered by `createdAt` and
//!   id, with a limit, from the filter's cursor ([`TaskFilter::after`]);
//!   a page of n tasks costs n reads. Status filters apply on the client.
//! * **count_by_status** runs COUNT aggregation queries, each status as
//!   field filters (`doneAt`, `isCancelled`, `outcome`, and `leasedUntil` /
//!   `waitUntil` against now), about one read each instead of one per task,
//!   and counts the documents with malformed status fields as undecodable
//!   (one more COUNT of every document). Documents the Go package finished
//!   carry no `outcome`: only those are read (at most 500), and counted by
//!   Go's count rule. Go's whole-second times make a not-done Go task's
//!   COUNT status up to 1 s late (claims are exact). See `count_statuses` in the
//!   `store::listing` module for what a COUNT cannot tell.
//! * **inspect** is `kinds` (one read per kind), then per kind the counts,
//!   `next_due`, and limit-1 queries for the oldest pending task: O(kinds)
//!   reads, whatever the backlog.
//! * **swap** is fenced on the document as this worker last saw it: every
//!   task the store returns carries its [`oncetask_core::Revision`] (the
//!   document's update time, and its version), and a swap of a task computed
//!   from it is one BatchWrite item with that update time as precondition,
//!   no read. Any write in between, by another oncetask process or by a Go
//!   service that never bumps `version`, fails the precondition: the swap
//!   reports a conflict and the core decides again on a fresh read (a Go
//!   cancel turns an outcome into "cancelled"; a Go claim voids the lease
//!   token, see [`crate::document`]). Swaps write only the fields a swap can
//!   change (an update mask), never the payload. A delete of a finished task
//!   `find_finished` just returned, at its revision, is likewise written at
//!   once with that update time as precondition (a pruner's delete: no
//!   read). Swaps of tasks without a revision (built elsewhere) and other
//!   deletes read first: one BatchGet, the
//!   versions are compared, and one BatchWrite writes them all, each with an
//!   `updateTime` precondition; the items whose precondition failed are read
//!   and decided again, up to 5 rounds.
//! * **next_due**: two ordered range queries (`waitUntil > after`,
//!   `leasedUntil > after`) read until past the best due time found.
//! * **claim** uses no transaction; claims of one kind in one store take
//!   turns. The ready query (env, kind, `doneAt == ""`, `waitUntil` and
//!   `leasedUntil` up to the end of the current second, ordered by
//!   `leasedUntil`, `waitUntil`, `createdAt`, `resourceKey`, `__name__`)
//!   reads `limit` documents, leaving out (`resourceKey not-in`) up to 10
//!   keys the store knows are busy, and further pages only while busy
//!   resource keys or undecodable documents keep the claim short; exact
//!   times are checked on what it read. Exact ties of the three times are
//!   broken by resource key before id (the order a `not-in` query can
//!   serve). The ready query never filters or orders on `priority`,
//!   `snoozes` or `maxAttempts`: Firestore would leave out every document
//!   without the field (all of Go's, and Rust's at the default; see
//!   [`crate::document`]). A claim by priority ranks what it read on the
//!   client instead: while the kind is known to hold prioritized tasks, its
//!   first page is the window of the oldest ready tasks
//!   ([`DEFAULT_PRIORITY_WINDOW`], 50), and priority holds within that
//!   window ([`crate::priority`] gives the rule). Resource keys are taken
//!   with lock documents (see the `keys` module of `store`: a store drains
//!   a busy key under one lock write while its hold lasts). Every lease write
//!   carries the candidate's `updateTime` as a precondition, so a task
//!   taken meanwhile is not leased twice. Leases of tasks without a resource
//!   key go in one BatchWrite, each standing alone: a lease another claim
//!   took first fails, the others are kept. Leases with key locks go in one
//!   atomic commit with their locks. A claim that won nothing retries
//!   (after 10 lost races it returns nothing). A lease write sets only the
//!   lease fields (an update mask: `leasedUntil`, `leaseToken`,
//!   `leaseAttempt`, `attempts`, `cancellationAttempts`, `version`), and
//!   each leased task carries the revision its write produced. After a lost
//!   race the store's claims start at a random candidate for a while, so
//!   concurrent claimers rarely meet at the head; uncontended claims keep
//!   the exact claim order. A keyless claim costs `limit` reads (one if the
//!   queue is empty; up to the priority window for a claim by priority of
//!   a kind known to hold prioritized tasks) plus one write per task;
//!   [`FirestoreStore::stats`] counts reads, writes and lost races.
//! * **Wake-up signals**: after a create, a swap that leaves a task waiting
//!   (a retry, a release, a reset), cancels a leased task or finishes a task
//!   with a resource key, and a delete of a not-done task, the store bumps
//!   the task kind's number in its own signal document of the env (side
//!   collection `<collection>-wakeups`, one document per store instance and
//!   env), written at most once per [`FirestoreStore::with_signal_interval`]
//!   (one second by default; signals in between go out together at its
//!   end). Leases, heartbeats and the end of a keyless task signal nothing.
//!   Counted in [`StoreStats::signal_writes`]. A store that wrote a
//!   not-done task with a priority other than 0 also names its kind in the
//!   document (`prioritized`, for 10 minutes), so that listening stores
//!   rank the kind's priority window (see [`crate::priority`]).
//! * **subscribe** opens a Firestore Listen when the stream is first polled,
//!   by default on the env's signal documents (`env ==`), and yields a
//!   notice for each kind whose number moved; with
//!   [`Wakeups::TaskChanges`], on the env's not-done tasks (`env ==`,
//!   `doneAt == ""`), with a notice for every task that enters, changes in
//!   (except a lease) or leaves that set, Go writes included. The initial
//!   snapshot yields each kind in it once. On an error or a dropped stream
//!   it reconnects with its resume token (backing off from 250 ms to 30 s;
//!   failures are logged with their cause). Cost: one read per document of
//!   the initial snapshot, then one per change, counted in
//!   [`StoreStats::listen_reads`].
//! * **Retention, pause, rate limits, storage**: a prune is a fenced swap
//!   that empties `data`, `errors` and `result` and sets `prunedAt` (see
//!   [`crate::document`]); `find_finished` reads the kind's finished tasks
//!   in `doneAt` order from a scan position kept per query, and the
//!   queries of one pass share one scan (the `pruning` module: a pass
//!   reads each task about once, not every tombstone again); paused kinds
//!   and rate limiters are side documents read by id and rewritten
//!   conditionally (the `controls` module: 1 read per `paused_kinds`; a
//!   `take_starts` is served from the store's reserve of starts, and reads
//!   and writes a limiter only to take a chunk of about a second's worth);
//!   `storage_stats` counts with COUNT aggregations and sizes a sample (the
//!   `storage` module).
//! * **Resource keys**: each (env, kind, key) has a lock document in the
//!   side collection `<collection>-resourceKeys`. A claim reads the lock,
//!   then asks for one not-done task of the key with a live lease (limit 1:
//!   one read, whatever the key's backlog; a group claim then reads the
//!   group); it skips the key if there is one, and otherwise rewrites the lock (precondition: the update time it
//!   read, or absence) in the same commit as the leases. Two claims of one
//!   key therefore cannot both commit, and one that commits after another
//!   read the lock after it, so it also saw the other's leases. Go workers
//!   do not take these locks (so Go and Rust workers must not serve one
//!   keyed kind at the same time). The store never removes a lock; each
//!   carries `expireAt` (lease end + 7 days) for a Firestore TTL policy.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use firestore::FirestoreDb;
use firestore::gcloud_sdk::google::firestore::v1::{
    BatchGetDocumentsRequest, BatchWriteRequest, CommitRequest, Cursor, Document, DocumentMask,
    Precondition, RunAggregationQueryRequest, RunQueryRequest, StructuredAggregationQuery,
    StructuredQuery, Value, Write, batch_get_documents_request, batch_get_documents_response,
    precondition::ConditionType, run_aggregation_query_request, run_query_request,
    structured_aggregation_query as sa, value::ValueType, write::Operation,
};
use firestore::gcloud_sdk::prost::Message;
use firestore::gcloud_sdk::prost_types::Timestamp;
use firestore::gcloud_sdk::tonic::{Code, Request, Status};
use futures::stream::BoxStream;
use oncetask_core::lifecycle;
use oncetask_core::store::Notification;
use oncetask_core::store::{
    ClaimMode, ClaimRequest, Claimed, CreateOutcome, Delete, DeleteOutcome, Fetched, FinishedQuery,
    StartsRequest, StatusCounts, StorageStats, Swap, SwapOutcome, TaskFilter, Undecodable,
};
use oncetask_core::{Revision, Store, StoreError, Task, TaskStatus};

use crate::document::{
    DATA, Fields, change_mask, data_value, decode_task, encode_changes, encode_task, fixed_fields,
    format_time, round_up_to_second,
};
use crate::limits;
use crate::listen::Source;
pub use crate::priority::DEFAULT_PRIORITY_WINDOW;
use crate::priority::Priorities;
use crate::queries::{self, CountOf, str_value};
pub use crate::signal::DEFAULT_SIGNAL_INTERVAL;
use crate::signal::{self, Raised, Signals};
use crate::status::{is_exists, item_error, status_error};

mod claim;
mod conditional;
mod controls;
mod keys;
mod listing;
mod pruning;
mod storage;

/// The side collections' names and fields, for the index file's tests.
#[cfg(test)]
pub(crate) mod side {
    pub(crate) use super::controls::{CONTROLS_SUFFIX, LIMITERS_SUFFIX, PAUSED};
    pub(crate) use super::pruning::{POSITION_FIELDS, PRUNING_SUFFIX};
}

use conditional::Decision;

/// The collection the Go package uses.
pub const DEFAULT_COLLECTION: &str = "onceTasks";

/// Firestore's limit of writes in one commit or batch write.
const MAX_WRITES: usize = 500;

/// How often a claim is retried after losing a race to a concurrent claim.
/// After the last one it returns what it has (nothing): the caller's next
/// claim tries again.
const CLAIM_ATTEMPTS: usize = 10;

/// How often a swap or delete re-reads after losing its precondition.
const SWAP_ATTEMPTS: usize = 5;

/// How many claims after a lost race start at a random one of the
/// candidates they read, so concurrent claimers rarely pick the same one
/// first; once claimers of the store stop colliding, claims go back to the
/// exact claim order. (Reading more candidates than the limit, to spread
/// further, costs a read for each one; and with per-lease preconditions a
/// collision loses only the contested lease. Measured, it cost more than it
/// saved.)
const SPREAD_CLAIMS: u64 = 32;

/// Most ready pages one claim reads when busy resource keys or undecodable
/// documents keep it from filling its limit.
const MAX_PAGES: usize = 16;

/// How long one Firestore call may take by default ([`FirestoreStore::with_call_timeout`]).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Retries of a call Firestore answered RESOURCE_EXHAUSTED (quota or
/// overload), after waits of 0.5 s, 1 s and 2 s (plus up to 50 % jitter).
const BACKOFF_RETRIES: u32 = 3;
const BACKOFF_FIRST: Duration = Duration::from_millis(500);

/// A [`Store`] on a Firestore collection, in the Go package's document layout.
#[derive(Clone)]
pub struct FirestoreStore {
    db: FirestoreDb,
    collection: String,
    counters: Arc<Counters>,
    call_timeout: Duration,
    signals: Arc<Signals>,
    wakeups: Wakeups,
    keys: Arc<keys::KeyBook>,
    /// When this store last saw prioritized tasks of each kind.
    priorities: Arc<Priorities>,
    /// How many ready tasks a priority claim ranks (see [`crate::priority`]).
    priority_window: usize,
    /// What a prune pass's reads left for its next calls (see `store::pruning`).
    prune_memory: Arc<pruning::PruneMemory>,
    /// Rate-limit starts taken from limiter documents and not handed out yet.
    reserves: Arc<controls::Reserves>,
}

/// What [`Store::subscribe`] listens to, so that workers in other processes
/// wake when work becomes available ([`FirestoreStore::with_wakeups`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wakeups {
    /// The env's wake-up signal documents (the default). Every oncetask
    /// process writes its own, at most once per second, when its writes can
    /// make work available (see the `signal` notes in the [module
    /// docs](self)); a listener pays one read per signal write, not one per
    /// task write. Tasks written by the Go package send no signal: they are
    /// found at the next poll.
    #[default]
    Signals,
    /// Every change to the env's not-done tasks, Go's included: one read
    /// per change (create, lease, finish) per listening process. For
    /// collections shared with Go producers whose tasks must start at once.
    TaskChanges,
    /// No listener: workers in other processes find work at their polls.
    Off,
}

/// What a [`FirestoreStore`] (and its clones) has cost so far, counted the
/// way Firestore bills: see [`FirestoreStore::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Documents read: every document a query returned (a query that
    /// returned none counts one) and every document asked for by id.
    pub reads: u64,
    /// Documents written (created, updated or deleted) by successful writes.
    pub writes: u64,
    /// Claim attempts that lost every race to concurrent claims (each
    /// write's precondition failed or its commit was aborted) and were
    /// retried.
    pub lost_races: u64,
    /// Lease writes (or one key's lock and leases) that lost to a
    /// concurrent claim, within claims that may have won others.
    pub lost_leases: u64,
    /// Calls sent to Firestore (each query, read, write or commit; retries
    /// included).
    pub requests: u64,
    /// Calls retried after Firestore answered RESOURCE_EXHAUSTED.
    pub retries: u64,
    /// Of `reads`: documents delivered by listeners (changes, removals, and
    /// whole result sets after each (re)connect).
    pub listen_reads: u64,
    /// Of `writes`: wake-up signal documents written (at most one per
    /// second per env).
    pub signal_writes: u64,
    /// Listen streams opened (the first connect and every reconnect).
    pub listen_connects: u64,
}

/// The sum of two stores' figures (e.g. over a fleet of processes).
impl std::ops::Add for StoreStats {
    type Output = StoreStats;

    fn add(self, other: StoreStats) -> StoreStats {
        StoreStats {
            reads: self.reads + other.reads,
            writes: self.writes + other.writes,
            lost_races: self.lost_races + other.lost_races,
            lost_leases: self.lost_leases + other.lost_leases,
            requests: self.requests + other.requests,
            retries: self.retries + other.retries,
            listen_reads: self.listen_reads + other.listen_reads,
            listen_connects: self.listen_connects + other.listen_connects,
            signal_writes: self.signal_writes + other.signal_writes,
        }
    }
}

impl StoreStats {
    /// What was spent between `earlier` (a previous [`FirestoreStore::stats`])
    /// and these.
    pub fn since(&self, earlier: &StoreStats) -> StoreStats {
        StoreStats {
            reads: self.reads.saturating_sub(earlier.reads),
            writes: self.writes.saturating_sub(earlier.writes),
            lost_races: self.lost_races.saturating_sub(earlier.lost_races),
            lost_leases: self.lost_leases.saturating_sub(earlier.lost_leases),
            requests: self.requests.saturating_sub(earlier.requests),
            retries: self.retries.saturating_sub(earlier.retries),
            listen_reads: self.listen_reads.saturating_sub(earlier.listen_reads),
            signal_writes: self.signal_writes.saturating_sub(earlier.signal_writes),
            listen_connects: self.listen_connects.saturating_sub(earlier.listen_connects),
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    lost_races: AtomicU64,
    lost_leases: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    listen_reads: AtomicU64,
    listen_connects: AtomicU64,
    signal_writes: AtomicU64,
    /// How many more claims start at a random candidate: set after a lost
    /// race, counted down by each claim (see [`SPREAD_CLAIMS`]).
    spread: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// A listener delivered a document (added, changed, removed or deleted
    /// from its result set, or re-sent after a reconnect): billed one read.
    pub(crate) fn listen_read(&self) {
        Counters::add(&self.reads, 1);
        Counters::add(&self.listen_reads, 1);
    }

    /// A listener (re)connected: it is billed its result set again, counted
    /// as the documents it delivers.
    pub(crate) fn listen_connect(&self) {
        Counters::add(&self.listen_connects, 1);
    }
}

impl std::fmt::Debug for FirestoreStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirestoreStore")
            .field("database", self.db.get_database_path())
            .field("collection", &self.collection)
            .finish()
    }
}

/// A stored document: its decoded task (or why not) and its update time.
pub(crate) struct Stored {
    id: String,
    task: Result<Task, String>,
    update_time: Option<Timestamp>,
    /// The document's name and fields as stored (for query cursors).
    doc: Document,
}

impl FirestoreStore {
    /// A store on the `onceTasks` collection of `db`.
    pub fn new(db: FirestoreDb) -> Self {
        Self::with_collection(db, DEFAULT_COLLECTION)
    }

    /// A store on another collection of `db` (e.g. one per test).
    pub fn with_collection(db: FirestoreDb, collection: impl Into<String>) -> Self {
        Self {
            db,
            collection: collection.into(),
            counters: Arc::default(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            signals: Arc::new(Signals::new(signal::DEFAULT_SIGNAL_INTERVAL)),
            wakeups: Wakeups::default(),
            keys: Arc::default(),
            priorities: Arc::default(),
            priority_window: DEFAULT_PRIORITY_WINDOW,
            prune_memory: Arc::default(),
            reserves: Arc::default(),
        }
    }

    /// Sets how many of the oldest ready tasks a claim by priority ranks
    /// while the kind is known to hold prioritized tasks (default
    /// [`DEFAULT_PRIORITY_WINDOW`], 50): priority holds within this window
    /// of the claim order, and a task beyond it waits until it enters it.
    /// Firestore cannot query by priority without leaving out every task
    /// at priority 0 (every Go task among them), so a claim reads the
    /// window and ranks it; each document read is billed, so such a claim
    /// costs up to `window` reads instead of its limit. 0 (or a window no
    /// larger than a claim's limit) ranks only the tasks a claim would read
    /// anyway. A kind whose tasks are all at priority 0 never reads the
    /// window. The [`crate::priority`] notes give the exact rule.
    ///
    /// ```no_run
    /// # async fn run(db: firestore::FirestoreDb) {
    /// // Rank the 200 oldest ready tasks, at up to 200 reads per claim.
    /// let store = oncetask_firestore::FirestoreStore::new(db).with_priority_window(200);
    /// # let _ = store;
    /// # }
    /// ```
    pub fn with_priority_window(mut self, window: usize) -> Self {
        self.priority_window = window;
        self
    }

    /// How many ready tasks a priority claim ranks
    /// ([`FirestoreStore::with_priority_window`]).
    pub fn priority_window(&self) -> usize {
        self.priority_window
    }

    /// Notes the not-done tasks of a priority other than 0 among `tasks`,
    /// which this store just wrote: its claims of their kinds rank the
    /// window, and its wake-up signals tell other processes' claims to.
    fn wrote_priorities<'a>(&self, tasks: impl IntoIterator<Item = &'a Task>) {
        for task in tasks {
            if task.priority != 0 && !task.is_done() {
                self.priorities.seen(&task.env, &task.kind);
                self.signals.prioritized(&task.env, &task.kind);
            }
        }
    }

    /// Sets what [`Store::subscribe`] listens to (default
    /// [`Wakeups::Signals`]). Whatever is chosen, this store keeps writing
    /// its signals, so processes that listen to signals still hear of its
    /// writes.
    ///
    /// ```no_run
    /// # async fn run(db: firestore::FirestoreDb) {
    /// use oncetask_firestore::{FirestoreStore, Wakeups};
    /// // Go services create tasks in this collection: wake on their writes too.
    /// let store = FirestoreStore::new(db).with_wakeups(Wakeups::TaskChanges);
    /// # let _ = store;
    /// # }
    /// ```
    pub fn with_wakeups(mut self, wakeups: Wakeups) -> Self {
        self.wakeups = wakeups;
        self
    }

    /// Sets the shortest time between two wake-up signal writes of this
    /// store (default [`DEFAULT_SIGNAL_INTERVAL`], one second, the write
    /// rate Firestore sustains on one document). Signals raised in between
    /// are written together at the end of the interval, so a shorter one
    /// wakes other processes sooner and costs more writes (and listener
    /// reads in every process); zero writes every signal at once.
    pub fn with_signal_interval(mut self, interval: Duration) -> Self {
        self.signals = Arc::new(Signals::new(interval));
        self
    }

    /// Sets how long one Firestore call may take (default
    /// [`DEFAULT_CALL_TIMEOUT`]); a call without an answer by then fails
    /// with [`StoreError::Unavailable`]. A claim's commit is also cut short
    /// at the end of the lease it writes, so it never lands after that.
    ///
    /// ```no_run
    /// # async fn run(db: firestore::FirestoreDb) {
    /// use std::time::Duration;
    /// let store = oncetask_firestore::FirestoreStore::new(db)
    ///     .with_call_timeout(Duration::from_secs(5));
    /// # let _ = store;
    /// # }
    /// ```
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The per-call deadline ([`FirestoreStore::with_call_timeout`]).
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// A request carrying the database routing header (named databases need
    /// it) and the per-call deadline (as `grpc-timeout`, so the server gives
    /// up too).
    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = crate::routing::request(&self.db, message);
        request.set_timeout(self.call_timeout);
        request
    }

    /// Runs one call (request and whole response) under `limit`, counted as
    /// one request.
    pub(crate) async fn within<T>(
        &self,
        what: &str,
        limit: Duration,
        call: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        Counters::add(&self.counters.requests, 1);
        let late = || {
            Status::deadline_exceeded(format!("{what}: no answer from Firestore within {limit:?}"))
        };
        match tokio::time::timeout(limit, call).await {
            // tonic enforces the request's timeout itself and reports CANCELLED.
            Ok(Err(s)) if s.code() == Code::Cancelled && s.message().contains("Timeout") => {
                Err(late())
            }
            Ok(result) => result,
            Err(_) => Err(late()),
        }
    }

    /// After a RESOURCE_EXHAUSTED answer: waits and returns true while
    /// retries are left ([`BACKOFF_RETRIES`]); false for any other answer.
    pub(crate) async fn backoff(&self, status: &Status, retries: &mut u32) -> bool {
        // A message over the size limit is refused the same way: no retry helps.
        if status.code() != Code::ResourceExhausted
            || status.message().contains("exceeds maximum size")
            || *retries >= BACKOFF_RETRIES
        {
            return false;
        }
        let delay = BACKOFF_FIRST * 2u32.pow(*retries);
        let jitter =
            delay.mul_f64(f64::from(u32::try_from(claim::random_below(50)).unwrap_or(0)) / 100.0);
        *retries += 1;
        Counters::add(&self.counters.retries, 1);
        tracing::warn!(
            message = status.message(),
            ?delay,
            "Firestore answered RESOURCE_EXHAUSTED; backing off"
        );
        tokio::time::sleep(delay + jitter).await;
        true
    }

    /// Runs `attempt` under the per-call deadline, again after a
    /// RESOURCE_EXHAUSTED answer while [`FirestoreStore::backoff`] allows.
    pub(crate) async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut retries = 0;
        loop {
            match self.within(what, self.call_timeout, attempt()).await {
                Err(s) if self.backoff(&s, &mut retries).await => {}
                result => return result,
            }
        }
    }

    /// Billed operations since the store was built, shared by its clones:
    /// document reads and writes as Firestore counts them, and lost claim
    /// races. For cost monitoring and measurements; the counts are this
    /// process's view (retries inside the client library are not seen).
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            reads: self.counters.reads.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            lost_races: self.counters.lost_races.load(Ordering::Relaxed),
            lost_leases: self.counters.lost_leases.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
            listen_reads: self.counters.listen_reads.load(Ordering::Relaxed),
            listen_connects: self.counters.listen_connects.load(Ordering::Relaxed),
            signal_writes: self.counters.signal_writes.load(Ordering::Relaxed),
        }
    }

    /// The side collection of the wake-up signal documents.
    pub(crate) fn signal_collection(&self) -> String {
        format!("{}{}", self.collection, signal::COLLECTION_SUFFIX)
    }

    /// Tells listeners in other processes that work may be available for
    /// each `(env, kind)` (see [`crate::signal`]): written now when this
    /// store has written no signal for a second, else by a write planned at
    /// the end of that second. Call it after the writes it announces landed.
    pub(crate) async fn signal<'a>(&self, changed: impl IntoIterator<Item = (&'a str, &'a str)>) {
        match self.signals.raise(changed) {
            Raised::Now(docs) => self.write_signals(docs).await,
            Raised::Later(at) => {
                let store = self.clone();
                let planned = async move {
                    let mut at = at;
                    loop {
                        tokio::time::sleep_until(at).await;
                        let Some(docs) = store.signals.due() else {
                            return;
                        };
                        store.write_signals(docs).await;
                        at = tokio::time::Instant::now() + store.signals.gap();
                    }
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn(planned)),
                    // Not on a tokio runtime (the gRPC client needs one, so
                    // this is a caller's odd executor): nothing to plan on.
                    Err(_) => tracing::debug!("no tokio runtime: a wake-up signal waits"),
                }
            }
            Raised::Carried => {}
        }
    }

    /// Writes signal documents; a failure is logged, not returned (workers
    /// still find the work at their polls).
    async fn write_signals(&self, docs: Vec<(String, Fields)>) {
        let collection = self.signal_collection();
        let writes = docs
            .into_iter()
            .map(|(id, fields)| Write {
                operation: Some(Operation::Update(Document {
                    name: format!("{}/{collection}/{id}", self.db.get_documents_path()),
                    fields,
                    ..Default::default()
                })),
                ..Default::default()
            })
            .collect();
        for result in self.batch_write(writes).await {
            match result {
                Ok(_) => Counters::add(&self.counters.signal_writes, 1),
                Err(status) => tracing::warn!(code = ?status.code(), message = status.message(),
                    "cannot write a wake-up signal; other processes find the work at their next poll"),
            }
        }
    }

    /// The collection this store uses.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    pub(crate) fn database(&self) -> String {
        self.db.get_database_path().clone()
    }

    fn doc_name(&self, id: &str) -> String {
        format!(
            "{}/{}/{}",
            self.db.get_documents_path(),
            self.collection,
            id
        )
    }

    fn id_of(name: &str) -> String {
        name.rsplit('/').next().unwrap_or(name).to_owned()
    }

    fn stored(doc: Document) -> Stored {
        let id = Self::id_of(&doc.name);
        let update_time = doc.update_time;
        let task = decode_task(&doc.fields)
            .map_err(|e| e.to_string())
            .and_then(|mut t| {
                if t.id == id {
                    t.revision = update_time.map(|u| revision_of(u, t.version));
                    Ok(t)
                } else {
                    Err(format!("field `id` is {:?}, the document key {id:?}", t.id))
                }
            });
        Stored {
            id,
            task,
            update_time: doc.update_time,
            doc,
        }
    }

    /// The whole document of a new task; refused when Firestore could not
    /// store it (see [`crate::limits`]).
    fn encode(&self, task: &Task) -> Result<Document, StoreError> {
        let fields = encode_task(task).map_err(|e| StoreError::Unencodable {
            id: task.id.clone(),
            reason: e.to_string(),
        })?;
        let name = self.doc_name(&task.id);
        let size = limits::document_size(&name, &fields);
        if size > limits::MAX_DOCUMENT_BYTES {
            return Err(StoreError::Unencodable {
                id: task.id.clone(),
                reason: format!(
                    "the document would take {size} bytes; Firestore stores at most {} \
                     (1 MiB) per document",
                    limits::MAX_DOCUMENT_BYTES
                ),
            });
        }
        Ok(Document {
            name,
            fields,
            ..Default::default()
        })
    }

    /// A write of only `fields` (the rest of the document stays as stored),
    /// named by `mask`: a masked field missing from `fields` is removed.
    pub(crate) fn masked_write(&self, id: &str, fields: Fields, mask: &[&str]) -> Write {
        Write {
            operation: Some(Operation::Update(Document {
                name: self.doc_name(id),
                fields,
                ..Default::default()
            })),
            update_mask: Some(DocumentMask {
                field_paths: mask.iter().map(|f| (*f).to_owned()).collect(),
            }),
            ..Default::default()
        }
    }

    /// The masked write of the fields `swap`'s change writes
    /// ([`change_mask`]). A result or error history that would take the
    /// document past Firestore's size limit is shortened first
    /// ([`limits::fit_outcome`]); only changes that write them are sized.
    fn change_write(&self, swap: &Swap) -> Result<Write, StoreError> {
        let task = swap.task();
        let unencodable = |e: crate::document::EncodeError| StoreError::Unencodable {
            id: task.id.clone(),
            reason: e.to_string(),
        };
        // A live lease ends on a whole second, rounded up, as a claim's
        // does: Go compares whole-second strings and would read a lease
        // ending inside a second as over at that second's start.
        let rounded = task
            .leased_until
            .filter(|_| task.lease_token.is_some() && task.done_at.is_none())
            .and_then(round_up_to_second)
            .filter(|up| Some(*up) != task.leased_until)
            .map(|up| {
                let mut rounded = task.clone();
                rounded.leased_until = Some(up);
                rounded
            });
        let task = rounded.as_ref().unwrap_or(task);
        let mut fields = encode_changes(task).map_err(unencodable)?;
        // Only a result or an error history can grow a document toward the
        // limit: other changes write a few small fields, so they skip
        // sizing the payload (which walks all of it).
        let grows = swap.change().writes(oncetask_core::store::Field::Result)
            || swap.change().writes(oncetask_core::store::Field::Errors);
        // Everything but the changed fields, counted once.
        let size_of_rest = || {
            limits::document_size(&self.doc_name(&task.id), &fixed_fields(task))
                + "data".len()
                + 1
                + limits::json_object_size(&task.data)
        };
        if grows
            && let rest = size_of_rest()
            && rest + limits::fields_size(&fields) > limits::MAX_DOCUMENT_BYTES
        {
            let mut fitted = task.clone();
            let size =
                |t: &Task| rest + encode_changes(t).map_or(usize::MAX, |f| limits::fields_size(&f));
            if limits::fit_outcome(&mut fitted, size) {
                tracing::warn!(task_id = %task.id, "the outcome was shortened to fit Firestore's 1 MiB document limit");
                fields = encode_changes(&fitted).map_err(unencodable)?;
            }
        }
        // The size was checked on every changeable field: outside the mask
        // they are as stored (the fence holds, or nothing is written).
        let mask = change_mask(swap.change());
        fields.retain(|name, _| mask.contains(&name.as_str()));
        // Only a prune writes the payload (it empties it): encoded here, so
        // that other swaps never walk it.
        if swap.change().writes(oncetask_core::store::Field::Data) {
            fields.insert(DATA.to_owned(), data_value(task));
        }
        Ok(self.masked_write(&task.id, fields, &mask))
    }

    /// Reads documents by id (deduplicated), optionally in a transaction.
    async fn batch_get(
        &self,
        ids: &[String],
        transaction: Option<&[u8]>,
    ) -> Result<HashMap<String, Stored>, StoreError> {
        let mut seen = HashSet::new();
        let names: Vec<String> = ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .map(|id| self.doc_name(id))
            .collect();
        let found = self.get_documents(names, transaction).await?;
        Ok(found
            .into_iter()
            .map(|doc| {
                let stored = Self::stored(doc);
                (stored.id.clone(), stored)
            })
            .collect())
    }

    /// Reads documents by full name, optionally in a transaction: the ones
    /// found. Firestore bills a read per document asked for, found or not.
    pub(crate) async fn get_documents(
        &self,
        names: Vec<String>,
        transaction: Option<&[u8]>,
    ) -> Result<Vec<Document>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        Counters::add(&self.counters.reads, names.len());
        let request = BatchGetDocumentsRequest {
            database: self.database(),
            documents: names,
            consistency_selector: transaction
                .map(|t| batch_get_documents_request::ConsistencySelector::Transaction(t.to_vec())),
            ..Default::default()
        };
        self.retrying("BatchGetDocuments", || async {
            let mut found = Vec::new();
            let mut stream = self
                .db
                .client()
                .get()
                .batch_get_documents(self.request(request.clone()))
                .await?
                .into_inner();
            while let Some(response) = stream.message().await? {
                if let Some(batch_get_documents_response::Result::Found(doc)) = response.result {
                    found.push(doc);
                }
            }
            Ok(found)
        })
        .await
        .map_err(status_error)
    }

    /// Runs a query on the collection, optionally in a transaction, reading
    /// results until `keep_going` says stop.
    pub(crate) async fn query(
        &self,
        query: StructuredQuery,
        transaction: Option<&[u8]>,
        mut keep_going: impl FnMut(&Stored) -> bool,
    ) -> Result<Vec<Stored>, StoreError> {
        let request = RunQueryRequest {
            parent: self.db.get_documents_path().clone(),
            query_type: Some(run_query_request::QueryType::StructuredQuery(query)),
            consistency_selector: transaction
                .map(|t| run_query_request::ConsistencySelector::Transaction(t.to_vec())),
            ..Default::default()
        };
        let mut out = Vec::new();
        let mut retries = 0;
        loop {
            out.clear();
            let call = async {
                let mut stream = self
                    .db
                    .client()
                    .get()
                    .run_query(self.request(request.clone()))
                    .await?
                    .into_inner();
                while let Some(response) = stream.message().await? {
                    if let Some(doc) = response.document {
                        let stored = Self::stored(doc);
                        let more = keep_going(&stored);
                        out.push(stored);
                        if !more {
                            break;
                        }
                    }
                }
                Ok(())
            };
            let result = self.within("RunQuery", self.call_timeout, call).await;
            // A query that returns nothing is billed one read.
            Counters::add(&self.counters.reads, out.len().max(1));
            match result {
                Ok(()) => return Ok(out),
                Err(s) if self.backoff(&s, &mut retries).await => {}
                Err(s) => return Err(status_error(s)),
            }
        }
    }

    /// Commits `writes` atomically, waiting at most `limit` (and the
    /// per-call deadline); the update time of each written document, in
    /// order. Not retried here: a claim's caller claims again.
    async fn commit(
        &self,
        writes: Vec<Write>,
        transaction: Vec<u8>,
        limit: Duration,
    ) -> Result<Vec<Option<Timestamp>>, Status> {
        let n = writes.len();
        let request = CommitRequest {
            database: self.database(),
            writes,
            transaction,
            ..Default::default()
        };
        let limit = limit.min(self.call_timeout);
        let mut request = self.request(request);
        request.set_timeout(limit);
        let call = async { self.db.client().get().commit(request).await };
        self.within("Commit", limit, call).await.map(|response| {
            Counters::add(&self.counters.writes, n);
            response
                .into_inner()
                .write_results
                .into_iter()
                .map(|r| r.update_time)
                .collect()
        })
    }

    /// Writes `writes` non-atomically, in chunks of [`MAX_WRITES`]; per
    /// write, the written document's update time or the write's status. A
    /// chunk whose call fails gives each of its writes that call's status.
    async fn batch_write(&self, writes: Vec<Write>) -> Vec<Result<Option<Timestamp>, Status>> {
        let mut out = Vec::with_capacity(writes.len());
        let mut writes = writes.into_iter().peekable();
        while writes.peek().is_some() {
            // At most MAX_WRITES writes and REQUEST_BUDGET bytes per request
            // (one write over the budget goes alone; Firestore judges it).
            let mut chunk: Vec<Write> = Vec::new();
            let mut bytes = 0;
            while let Some(next) = writes.peek() {
                let len = next.encoded_len();
                if chunk.len() >= MAX_WRITES
                    || (!chunk.is_empty() && bytes + len > limits::REQUEST_BUDGET)
                {
                    break;
                }
                bytes += len;
                chunk.extend(writes.next());
            }
            let n = chunk.len();
            let request = BatchWriteRequest {
                database: self.database(),
                writes: chunk,
                ..Default::default()
            };
            let response = self
                .retrying("BatchWrite", || async {
                    let response = self
                        .db
                        .client()
                        .get()
                        .batch_write(self.request(request.clone()))
                        .await?;
                    Ok(response.into_inner())
                })
                .await;
            let response = match response {
                Ok(r) => r,
                Err(s) => {
                    out.extend((0..n).map(|_| Err(Status::new(s.code(), s.message()))));
                    continue;
                }
            };
            for i in 0..n {
                out.push(match response.status.get(i) {
                    Some(s) if s.code != 0 => {
                        Err(Status::new(Code::from(s.code), s.message.clone()))
                    }
                    _ => {
                        Counters::add(&self.counters.writes, 1);
                        Ok(response.write_results.get(i).and_then(|r| r.update_time))
                    }
                });
            }
        }
        out
    }

    /// Runs `query` as a COUNT aggregation (billed one read per 1000 index
    /// entries counted, at least one).
    async fn count(&self, query: StructuredQuery) -> Result<u64, StoreError> {
        let request = RunAggregationQueryRequest {
            parent: self.db.get_documents_path().clone(),
            query_type: Some(
                run_aggregation_query_request::QueryType::StructuredAggregationQuery(
                    StructuredAggregationQuery {
                        aggregations: vec![sa::Aggregation {
                            alias: "n".to_owned(),
                            operator: Some(sa::aggregation::Operator::Count(
                                sa::aggregation::Count { up_to: None },
                            )),
                        }],
                        query_type: Some(sa::QueryType::StructuredQuery(query)),
                    },
                ),
            ),
            ..Default::default()
        };
        let count = self
            .retrying("RunAggregationQuery", || async {
                let mut stream = self
                    .db
                    .client()
                    .get()
                    .run_aggregation_query(self.request(request.clone()))
                    .await?
                    .into_inner();
                let mut count = 0;
                while let Some(response) = stream.message().await? {
                    if let Some(Value {
                        value_type: Some(ValueType::IntegerValue(v)),
                    }) = response
                        .result
                        .as_ref()
                        .and_then(|r| r.aggregate_fields.get("n"))
                    {
                        count = u64::try_from(*v).unwrap_or(0);
                    }
                }
                Ok(count)
            })
            .await
            .map_err(status_error)?;
        let billed = usize::try_from(count.div_ceil(1000)).unwrap_or(usize::MAX);
        Counters::add(&self.counters.reads, billed.max(1));
        Ok(count)
    }

    /// The first instant strictly after `after` among the not-done tasks'
    /// values of `field` (`waitUntil` or `leasedUntil`) where that value is
    /// the task's due time.
    async fn earliest_due_by(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
        field: &str,
        best: Option<DateTime<Utc>>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let q = queries::due_query(&self.collection, env, kind, field, &format_time(after));
        let mut best = best;
        self.query(q, None, |s| {
            let Ok(t) = &s.task else { return true };
            let v = if field == "waitUntil" {
                t.wait_until
            } else {
                t.leased_until
            };
            if let Some(due) = t.due_at().filter(|d| *d > after) {
                best = Some(best.map_or(due, |b| b.min(due)));
            }
            match (v, best) {
                (Some(v), Some(b)) => v < read_past(field, b),
                _ => true,
            }
        })
        .await?;
        Ok(best)
    }
}

#[async_trait]
impl Store for FirestoreStore {
    async fn create(&self, tasks: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError> {
        // The first occurrence of an id is written; later ones in the same
        // call are "already exists" (or whatever the first one met).
        let mut first: HashMap<String, usize> = HashMap::new();
        let mut writes = Vec::new();
        let mut slots: Vec<Result<usize, usize>> = Vec::with_capacity(tasks.len());
        let mut encode_errors: HashMap<usize, StoreError> = HashMap::new();
        for (i, task) in tasks.iter().enumerate() {
            if let Some(&j) = first.get(&task.id) {
                slots.push(Err(j));
                continue;
            }
            first.insert(task.id.clone(), i);
            match self.encode(task) {
                Ok(doc) => {
                    slots.push(Ok(writes.len()));
                    writes.push(Write {
                        operation: Some(Operation::Update(doc)),
                        current_document: Some(Precondition {
                            condition_type: Some(ConditionType::Exists(false)),
                        }),
                        ..Default::default()
                    });
                }
                Err(e) => {
                    encode_errors.insert(i, e);
                    slots.push(Err(i));
                }
            }
        }
        let results = self.batch_write(writes).await;
        // Ids that exist already: read their env.
        let existing: Vec<String> = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Ok(w) => match results.get(*w) {
                    Some(Err(st)) if is_exists(st) => Some(tasks[i].id.clone()),
                    _ => None,
                },
                Err(_) => None,
            })
            .collect();
        let envs = self.batch_get(&existing, None).await?;
        let mut outcomes: Vec<CreateOutcome> = Vec::with_capacity(tasks.len());
        for (i, slot) in slots.iter().enumerate() {
            let outcome = match slot {
                Ok(w) => match results.get(*w) {
                    Some(Ok(_)) => CreateOutcome::Created,
                    Some(Err(st)) if is_exists(st) => existing_outcome(&tasks[i], &envs),
                    Some(Err(st)) => CreateOutcome::Failed(item_error(&tasks[i].id, st)),
                    None => {
                        CreateOutcome::Failed(StoreError::Unavailable("no write result".into()))
                    }
                },
                Err(j) if *j == i => match encode_errors.remove(&i) {
                    Some(e) => CreateOutcome::Failed(e),
                    None => CreateOutcome::Failed(StoreError::Unavailable("encode".into())),
                },
                Err(j) => match &outcomes[*j] {
                    CreateOutcome::Created | CreateOutcome::AlreadyExists => {
                        if tasks[*j].env == tasks[i].env {
                            CreateOutcome::AlreadyExists
                        } else {
                            CreateOutcome::ExistsInOtherEnv {
                                env: tasks[*j].env.clone(),
                            }
                        }
                    }
                    CreateOutcome::ExistsInOtherEnv { env } => {
                        if *env == tasks[i].env {
                            CreateOutcome::AlreadyExists
                        } else {
                            CreateOutcome::ExistsInOtherEnv { env: env.clone() }
                        }
                    }
                    CreateOutcome::Failed(e) => {
                        CreateOutcome::Failed(StoreError::Unavailable(e.to_string()))
                    }
                },
            };
            outcomes.push(outcome);
        }
        for (task, outcome) in tasks.iter().zip(&outcomes) {
            if matches!(outcome, CreateOutcome::Created) {
                self.keys.created(task);
            }
        }
        // A task stored already finished may sort before a pruning scan
        // position of its kind (see the `store::pruning` module).
        let finished: Vec<(&str, &str)> = tasks
            .iter()
            .zip(&outcomes)
            .filter(|(t, o)| matches!(o, CreateOutcome::Created) && t.is_done())
            .map(|(t, _)| (t.env.as_str(), t.kind.as_str()))
            .collect();
        if !finished.is_empty() {
            self.forget_positions(finished).await;
        }
        self.wrote_priorities(
            tasks
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| matches!(o, CreateOutcome::Created))
                .map(|(t, _)| t),
        );
        self.signal(
            tasks
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| matches!(o, CreateOutcome::Created))
                .map(|(t, _)| (t.env.as_str(), t.kind.as_str())),
        )
        .await;
        Ok(outcomes)
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
        // Go compares whole-second strings: a lease ending inside a second
        // would read as expired to Go at the start of that second. Leases
        // end on a whole second here, rounded up (never early).
        let mut whole = request.clone();
        whole.grant.leased_until =
            round_up_to_second(request.grant.leased_until).unwrap_or(request.grant.leased_until);
        let request = &whole;
        // Claims of one kind in this store take turns: a key drained under
        // a lock this store keeps is leased on what the key book says (no
        // read), and must not be leased twice by concurrent claims.
        let gate = self.keys.gate(&request.env, &request.kind);
        let _turn = gate.lock().await;
        let mut undecodable = Vec::new();
        // Spread while claimers of this store have been colliding lately.
        let mut spread = self
            .counters
            .spread
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        for _ in 0..CLAIM_ATTEMPTS {
            // `None`: lost a race with a concurrent claim; the retry reads afresh.
            if let Some(tasks) = self.try_claim(request, spread, &mut undecodable).await? {
                return Ok(Claimed { tasks, undecodable });
            }
            Counters::add(&self.counters.lost_races, 1);
            self.counters.spread.store(SPREAD_CLAIMS, Ordering::Relaxed);
            spread = true;
        }
        // Every attempt lost a race: the competing claims took tasks, so
        // this one reports nothing rather than an error.
        Ok(Claimed {
            tasks: Vec::new(),
            undecodable,
        })
    }

    async fn swap(&self, swaps: &[Swap]) -> Result<Vec<SwapOutcome>, StoreError> {
        let mut writes: Vec<Result<Write, Option<StoreError>>> = swaps
            .iter()
            .map(|s| self.change_write(s).map_err(Some))
            .collect();
        // Tasks this store read or wrote carry their revision: they are
        // written at once, conditional on it (no read).
        let fenced: Vec<usize> = (0..swaps.len())
            .filter(|&i| swaps[i].fence().revision().is_some() && writes[i].is_ok())
            .collect();
        let mut outcomes = self.swap_fenced(swaps, &writes, &fenced).await;
        // The others (built elsewhere) are read first and decided on their version.
        let rest: Vec<usize> = (0..swaps.len())
            .filter(|i| outcomes[*i].is_none())
            .collect();
        let ids: Vec<&str> = rest.iter().map(|&i| swaps[i].id()).collect();
        let decided = self
            .write_each_if_unchanged(
                &ids,
                |j, stored| {
                    let i = rest[j];
                    let write = match &mut writes[i] {
                        Ok(write) => write,
                        Err(e) => {
                            let e = e.take().unwrap_or_else(|| {
                                StoreError::Unavailable("cannot encode the task".into())
                            });
                            return Decision::Done(SwapOutcome::Failed(e));
                        }
                    };
                    let Some(stored) = stored else {
                        return Decision::Done(SwapOutcome::NotFound);
                    };
                    match &stored.task {
                        Err(reason) => {
                            Decision::Done(SwapOutcome::Failed(StoreError::Undecodable {
                                id: stored.id.clone(),
                                reason: reason.clone(),
                            }))
                        }
                        Ok(t) if t.version != swaps[i].fence().version() => {
                            Decision::Done(SwapOutcome::Conflict)
                        }
                        Ok(_) => {
                            Decision::Write(write.clone(), SwapOutcome::Applied { revision: None })
                        }
                    }
                },
                |j, outcome, update_time| match outcome {
                    SwapOutcome::Applied { .. } => SwapOutcome::Applied {
                        revision: update_time
                            .map(|u| revision_of(u, swaps[rest[j]].task().version)),
                    },
                    other => other,
                },
                SwapOutcome::Failed,
                |id| {
                    SwapOutcome::Failed(StoreError::Unavailable(format!(
                        "task {id}: the document kept changing during the swap"
                    )))
                },
            )
            .await;
        for (i, outcome) in rest.into_iter().zip(decided) {
            outcomes[i] = Some(outcome);
        }
        let outcomes: Vec<SwapOutcome> = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    SwapOutcome::Failed(StoreError::Unavailable("no swap outcome".into()))
                })
            })
            .collect();
        for (s, o) in swaps.iter().zip(&outcomes) {
            if matches!(o, SwapOutcome::Applied { .. }) {
                self.keys.swapped(s.task());
            }
        }
        self.wrote_priorities(
            swaps
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| matches!(o, SwapOutcome::Applied { .. }))
                .map(|(s, _)| s.task()),
        );
        self.signal(
            swaps
                .iter()
                .zip(&outcomes)
                .filter(|(s, o)| {
                    matches!(o, SwapOutcome::Applied { .. }) && s.announces_work(Utc::now())
                })
                .map(|(s, _)| (s.task().env.as_str(), s.task().kind.as_str())),
        )
        .await;
        Ok(outcomes)
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError> {
        let mut found = self.batch_get(ids, None).await?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(stored) = found.remove(id) {
                out.push(match stored.task {
                    Ok(t) => Fetched::Task(t),
                    Err(reason) => Fetched::Undecodable(Undecodable {
                        id: stored.id,
                        reason,
                    }),
                });
            }
        }
        Ok(out)
    }

    /// One page by cursor and limit: see the `store::listing` module.
    async fn find(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.find_page(filter).await
    }

    /// Serves what a composite index of `firestore.indexes.json` serves:
    /// kind, resource key, a creation-time range, and statuses that
    /// equality filters select (all open tasks, cancellation pending, or
    /// finished tasks by outcome); refuses pending / waiting / leased
    /// alone, a priority and an id prefix (see the `store::listing` module).
    fn check_filter(&self, filter: &TaskFilter) -> Result<(), StoreError> {
        listing::list_statuses(filter).map(|_| ())
    }

    /// One query on `recurrence.rrule`: see the `store::listing` module.
    async fn find_generators(&self, env: &str, limit: usize) -> Result<Vec<Task>, StoreError> {
        self.generators(env, limit).await
    }

    /// Refused: grouping the open tasks by key would read every one.
    async fn open_resource_keys(
        &self,
        _env: &str,
        _kind: Option<&str>,
        _now: DateTime<Utc>,
        _limit: usize,
    ) -> Result<oncetask_core::store::KeyQueues, StoreError> {
        Err(StoreError::Unsupported(
            "Firestore has no query that groups the open tasks by resource key (it would read \
             every open task): open a key by its name to see its queue"
                .to_owned(),
        ))
    }

    /// Refused: no query selects a document by a missing or mistyped field.
    async fn find_undecodable(
        &self,
        _env: &str,
        _limit: usize,
    ) -> Result<Vec<Undecodable>, StoreError> {
        Err(StoreError::Unsupported(
            "Firestore cannot select the documents it cannot decode without reading every \
             document: count_by_status counts them (COUNT queries), claims log and skip each \
             one they meet, and a task's page shows why its document does not decode"
                .to_owned(),
        ))
    }

    /// COUNT aggregations: see `count_statuses` in the `store::listing` module.
    async fn count_by_status(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StatusCounts, StoreError> {
        self.count_statuses(env, kind, now).await
    }

    /// O(kinds) reads: see `inspect_env` in the `store::listing` module.
    async fn inspect(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<oncetask_core::QueueStats, StoreError> {
        self.inspect_env(env, now).await
    }

    async fn delete(&self, deletes: &[Delete]) -> Result<Vec<DeleteOutcome>, StoreError> {
        // Each task being deleted: deleting a not-done one may free its
        // resource key.
        let mut targets: Vec<Option<Task>> = vec![None; deletes.len()];
        // Finished tasks a pruner was just given, deleted at the revision
        // they were read at: written at once, without a read.
        let mut outcomes: Vec<Option<DeleteOutcome>> = deletes.iter().map(|_| None).collect();
        self.delete_returned(deletes, &mut targets, &mut outcomes)
            .await;
        let rest: Vec<usize> = (0..deletes.len())
            .filter(|&i| outcomes[i].is_none())
            .collect();
        let ids: Vec<&str> = rest.iter().map(|&i| deletes[i].id.as_str()).collect();
        let mut rest_targets: Vec<Option<Task>> = vec![None; rest.len()];
        let decided = self
            .write_each_if_unchanged(
                &ids,
                |j, stored| {
                    let i = rest[j];
                    let Some(stored) = stored else {
                        return Decision::Done(DeleteOutcome::NotFound);
                    };
                    if let Some(expected) = deletes[i].expected_version {
                        // The revision too, when the caller read one: a Go
                        // writer changes a task without bumping its version.
                        let revision = deletes[i].expected_revision;
                        match &stored.task {
                            Ok(t)
                                if t.version == expected
                                    && revision.is_none_or(|r| t.revision == Some(r)) => {}
                            _ => return Decision::Done(DeleteOutcome::Conflict),
                        }
                    }
                    rest_targets[j] = stored.task.as_ref().ok().cloned();
                    Decision::Write(
                        Write {
                            operation: Some(Operation::Delete(self.doc_name(&stored.id))),
                            ..Default::default()
                        },
                        DeleteOutcome::Deleted,
                    )
                },
                |_, outcome, _| outcome,
                DeleteOutcome::Failed,
                |id| {
                    DeleteOutcome::Failed(StoreError::Unavailable(format!(
                        "task {id}: the document kept changing during the delete"
                    )))
                },
            )
            .await;
        for ((i, outcome), target) in rest.into_iter().zip(decided).zip(rest_targets) {
            outcomes[i] = Some(outcome);
            targets[i] = target;
        }
        let outcomes: Vec<DeleteOutcome> = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    DeleteOutcome::Failed(StoreError::Unavailable("no delete outcome".into()))
                })
            })
            .collect();
        let deleted: Vec<&Task> = targets
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| matches!(o, DeleteOutcome::Deleted))
            .filter_map(|(t, _)| t.as_ref())
            .collect();
        for task in &deleted {
            self.keys.deleted(task);
        }
        self.signal(
            deleted
                .iter()
                .filter(|t| !t.is_done())
                .map(|t| (t.env.as_str(), t.kind.as_str())),
        )
        .await;
        Ok(outcomes)
    }

    /// The distinct kinds, walked in kind order: one query with limit 1 per
    /// kind (`type > previous`), so one read per kind plus one, instead of
    /// reading every task of the env. A document that cannot be decoded
    /// does not make its kind count; the kind's other tasks are then read
    /// until a decodable one is found.
    async fn kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        let mut kinds = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q = queries::next_kind_query(&self.collection, env, after.as_deref());
            q.limit = Some(1);
            let Some(first) = self.query(q, None, |_| true).await?.into_iter().next() else {
                return Ok(kinds);
            };
            let kind = match &first.task {
                Ok(task) => task.kind.clone(),
                Err(_) => match first
                    .doc
                    .fields
                    .get("type")
                    .and_then(|v| v.value_type.as_ref())
                {
                    Some(ValueType::StringValue(kind)) => {
                        // Only undecodable so far: is any task of this kind a task?
                        let q = queries::scan_query(&self.collection, env, Some(kind), None, false);
                        let mut found = false;
                        self.query(q, None, |s| {
                            found = s.task.is_ok();
                            !found
                        })
                        .await?;
                        if !found {
                            after = Some(kind.clone());
                            continue;
                        }
                        kind.clone()
                    }
                    // The query matches string kinds only.
                    _ => return Ok(kinds),
                },
            };
            kinds.push(kind.clone());
            after = Some(kind);
        }
    }

    /// Pages of the kind's finished tasks in `doneAt` order, from a scan
    /// position kept per query: see the `store::pruning` module.
    async fn find_finished(&self, query: &FinishedQuery) -> Result<Vec<Task>, StoreError> {
        self.finished_page(query).await
    }

    /// One conditional rewrite of the env's controls document, then a
    /// wake-up signal: see the `store::controls` module.
    async fn set_paused(&self, env: &str, kind: &str, paused: bool) -> Result<bool, StoreError> {
        self.set_kind_paused(env, kind, paused).await
    }

    /// One read: see the `store::controls` module.
    async fn paused_kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        self.read_paused_kinds(env).await
    }

    /// A read and a conditional write per limiter document: see the
    /// `store::controls` module.
    async fn take_starts(&self, requests: &[StartsRequest]) -> Result<Vec<u32>, StoreError> {
        self.take_reserved(requests).await
    }

    async fn return_starts(&self, requests: &[StartsRequest]) -> Result<(), StoreError> {
        self.return_reserved(requests);
        Ok(())
    }

    /// COUNT aggregations and a sample sized by Firestore's rules: see the
    /// `store::storage` module.
    async fn storage_stats(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<StorageStats, StoreError> {
        self.storage_of(env, now).await
    }

    /// A Firestore listener on the env's not-done tasks: see the module docs.
    fn subscribe(&self, env: &str) -> Option<BoxStream<'static, Notification>> {
        let source = match self.wakeups {
            Wakeups::Signals => Source::Signals(self.signal_collection()),
            Wakeups::TaskChanges => Source::Tasks(self.collection.clone()),
            Wakeups::Off => return None,
        };
        Some(crate::listen::subscribe(
            self.db.clone(),
            source,
            env.to_owned(),
            self.counters.clone(),
            self.priorities.clone(),
        ))
    }

    async fn next_due(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut best = None;
        for field in queries::DUE_FIELDS {
            best = self.earliest_due_by(env, kind, after, field, best).await?;
        }
        Ok(best)
    }
}

/// How far [`FirestoreStore::earliest_due_by`] reads values of `field` in
/// string order once `best` is known: no document at or past the returned
/// time can be due before `best`.
///
/// A Go whole-second value `TZ` sorts after every Rust value `T.xxxZ` of
/// its second, so while the best is inside a second, that second's Go value
/// may still come: read to its end. A lease (every lease end Rust writes is
/// a whole second) at or past a whole-second best cannot be earlier. A
/// wait's exact time (`waitUntilExact`) may be up to a second before the
/// rounded string it sorts by: read one second past the best.
fn read_past(field: &str, best: DateTime<Utc>) -> DateTime<Utc> {
    if field == "waitUntil" {
        return best + TimeDelta::seconds(1) + TimeDelta::milliseconds(1);
    }
    let second = best.duration_trunc(TimeDelta::seconds(1)).unwrap_or(best);
    if second == best {
        best
    } else {
        second + TimeDelta::seconds(1)
    }
}

/// The revision of a document whose update time is `t` and whose stored
/// `version` is `version`: the version in the high 64 bits, the update time
/// in nanoseconds since the Unix epoch in the low 64. A swap fenced on it
/// writes only on that update time, and only when the caller expects that
/// version.
fn revision_of(t: Timestamp, version: u64) -> Revision {
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    let nanos = u64::try_from(nanos).unwrap_or(0);
    Revision::from_raw((u128::from(version) << 64) | u128::from(nanos))
}

/// The update time and version a revision stands for ([`revision_of`] reversed).
fn fence_of(revision: Revision) -> (Timestamp, u64) {
    let raw = revision.raw();
    let nanos = u64::try_from(raw & u128::from(u64::MAX)).unwrap_or(0);
    let version = u64::try_from(raw >> 64).unwrap_or(0);
    let time = Timestamp {
        seconds: i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: i32::try_from(nanos % 1_000_000_000).unwrap_or(0),
    };
    (time, version)
}

fn existing_outcome(task: &Task, envs: &HashMap<String, Stored>) -> CreateOutcome {
    match envs.get(&task.id).map(|s| &s.task) {
        Some(Ok(stored)) if stored.env != task.env => CreateOutcome::ExistsInOtherEnv {
            env: stored.env.clone(),
        },
        _ => CreateOutcome::AlreadyExists,
    }
}

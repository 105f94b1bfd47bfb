//! # oncetask-sqlite
//!
//! A SQLite [`Store`] for oncetask, built on `sqlx` with a bundled SQLite:
//! one file (or `sqlite::memory:`) holds the tasks of every environment,
//! for a single machine's services, tools and tests.
//!
//! ```no_run
//! use oncetask_sqlite::SqliteStore;
//!
//! # async fn demo() -> Result<(), oncetask_core::StoreError> {
//! // Creates the file if needed and brings its schema up to date.
//! let store = SqliteStore::connect("sqlite:tasks.db").await?;
//! // Build a `Manager` over `Arc::new(store)` as with any other backend.
//! # Ok(())
//! # }
//! ```
//!
//! ## What it relies on
//!
//! * **WAL mode**: readers never wait for the writer, and a commit appends
//!   to the log instead of rewriting pages.
//! * **Durability**: `synchronous = FULL` by default (a commit is on disk
//!   when it returns); [`Durability::Normal`] is the faster opt-in
//!   ([`SqliteOptions::durability`]).
//! * **A busy timeout** (5 s by default, [`SqliteOptions::busy_timeout`]):
//!   a statement that meets a lock held by another process waits for it;
//!   one that waits longer fails with [`StoreError::Unavailable`].
//! * **Short `BEGIN IMMEDIATE` transactions** (module `write`): every write
//!   (create, claim, swap, delete, pause, rate-limit take) is one
//!   transaction that holds SQLite's write lock from its first statement,
//!   so what it reads cannot change before it commits. Within a process,
//!   writers take turns on a mutex first. A transaction runs only the
//!   store's own statements, never a handler or other I/O.
//!
//! ## Claims and resource-key exclusion
//!
//! SQLite has no `SELECT … FOR UPDATE SKIP LOCKED`. A claim walks the
//! ready tasks of the env and kind in the claim's order (by priority or
//! oldest first) with their resource key's busy check in SQL (no live
//! lease of any not-done task of the key), takes at most one task per key
//! (or, in a resource-group claim, the ready group of the first free key),
//! applies [`oncetask_core::lifecycle::claim`] in Rust and writes the
//! leases back in one write transaction. A single-task claim walks before
//! the transaction and writes each lease only where the row's version and
//! its key's freedom still hold, filling up inside the transaction when
//! another claimer was first; a group claim walks inside it. Either way no
//! other write can commit between the checks that decide and the writes,
//! so two claims never both lease tasks of one key, in this process or
//! another: the PostgreSQL backend's per-key claim rows, which guard
//! against writes committed after a statement's snapshot, have nothing to
//! guard against here and are not kept. Claims of one store run one at a
//! time ([`Store::concurrent_claims`] is 1). The claim order is read as
//! index ranges (module `claim`), so the tasks scheduled for later are
//! never stepped over.
//!
//! Rows that are not tasks are skipped and reported by claims and `get`,
//! left out of listings, and counted apart.
//!
//! ## Layout
//!
//! One table, `tasks`, with a column per task field (times as integer
//! microseconds since the epoch, JSON fields as text) and the id as primary
//! key; `paused_kinds`, `rate_limits` and `changes` (module `notify`)
//! beside it. See `migrations/` for
//! the indexes. Migrations are embedded and applied by
//! [`SqliteStore::connect`]; a database migrated by a newer version of this
//! crate is refused with [`StoreError::InvalidConfig`].
//!
//! ## Wake-ups
//!
//! [`Store::subscribe`] hears the writes made through this store and its
//! clones at once (a broadcast channel per env, module `notify`), and those
//! of other processes and stores on the same file within a watch interval
//! (5 ms by default, [`SqliteOptions::watch_interval`]): every write
//! transaction that changes tasks records a row per env and kind in a
//! `changes` table before it commits, and a store with subscribers watches
//! the file for rows other stores wrote (module `watch`: a `stat` of the
//! `-wal` file per tick, a query only when it changed). Writes made by other
//! programs than this crate are not announced.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use oncetask_core::store::{
    ClaimRequest, Claimed, CreateOutcome, Delete, DeleteOutcome, Fetched, FinishedQuery,
    Notification, StartsRequest, StatusCounts, StorageStats, Swap, SwapOutcome, TaskFilter,
};
use oncetask_core::{QueueStats, Store, StoreError, Task};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePool;

mod claim;
mod connect;
mod create;
mod delete;
mod error;
mod filesystem;
mod finished;
mod inspect;
mod listing;
mod notify;
mod operator;
mod options;
mod pause;
mod rate;
mod read;
mod row;
mod sql;
mod storage;
mod swap;
mod values;
mod watch;
mod write;

pub use options::{Durability, SqliteOptions};

/// The `sqlx` crate this backend is built on (for [`SqliteStore::from_pool`]).
pub use sqlx;

use error::db;
use row::{COLUMNS, Decoded};

/// A SQLite [`Store`]. Cloning is cheap; clones share the pool, the writer
/// turn and the change notices.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    /// Writers of this store take turns here before `BEGIN IMMEDIATE`.
    writer: tokio::sync::Mutex<()>,
    /// Change notices (module `notify`).
    hub: notify::Hub,
    /// This store's id in the `changes` table: a watcher skips its rows.
    origin: i64,
    /// How this store watches other processes' writes; `None` when it
    /// does not (an in-memory database).
    watch: Option<watch::Watch>,
    /// The database file, or `:memory:`, for messages.
    location: String,
    /// When (ms since the epoch, by the callers' clock) stale limiter rows
    /// were last swept (module `rate`).
    limiters_swept_at: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.inner.location)
            .finish()
    }
}

impl SqliteStore {
    /// Uses a pool of your own, opened on a database this crate migrated
    /// (call [`SqliteStore::migrate`] to make sure). `location` names the
    /// database in messages. Open it in WAL mode with a busy timeout, as
    /// [`SqliteStore::connect_with`] does: the store relies on both. Other
    /// processes' writes are watched for every
    /// [`SqliteOptions::DEFAULT_WATCH_INTERVAL`] (unless the pool's database
    /// is in memory).
    pub fn from_pool(pool: SqlitePool, location: &str) -> Self {
        let options = pool.connect_options();
        let in_memory = sqlx::ConnectOptions::to_url_lossy(&*options)
            .query_pairs()
            .any(|(key, value)| key == "mode" && value == "memory");
        let watch = (!in_memory).then(|| watch::Watch {
            // Never recreates a file deleted under the store.
            options: (*options).clone().create_if_missing(false),
            wal: wal_path(options.get_filename()),
            period: SqliteOptions::DEFAULT_WATCH_INTERVAL,
        });
        Self::with_watch(pool, location, watch)
    }

    fn with_watch(pool: SqlitePool, location: &str, watch: Option<watch::Watch>) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                writer: tokio::sync::Mutex::new(()),
                hub: notify::Hub::default(),
                origin: random_origin(),
                watch,
                location: location.to_owned(),
                limiters_swept_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            }),
        }
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// The database file this store opened, or `:memory:`.
    pub fn location(&self) -> &str {
        &self.inner.location
    }
}

/// The write-ahead log of the database at `path`.
fn wal_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

/// A store id that no other store on the file is likely to have: the
/// process id, the time and the process's random hash keys, hashed.
fn random_origin() -> i64 {
    use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut hasher);
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
        .hash(&mut hasher);
    // 0 is the origin of the rows `create_in` writes, which every store
    // announces.
    match i64::from_ne_bytes(hasher.finish().to_ne_bytes()) {
        0 => 1,
        origin => origin,
    }
}

/// Reads the row of `id` on `conn`, decoded.
pub(crate) async fn read_row(
    conn: &mut SqliteConnection,
    id: &str,
) -> Result<Option<Decoded>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(db)?;
    row.as_ref()
        .map(row::decode)
        .transpose()
        .map_err(StoreError::backend)
}

#[async_trait]
impl Store for SqliteStore {
    /// One write transaction for the batch: `INSERT … ON CONFLICT DO
    /// NOTHING` per task; a taken id is looked up to tell its env.
    async fn create(&self, tasks: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError> {
        self.create_tasks(tasks).await
    }

    /// One `BEGIN IMMEDIATE` transaction (see the crate docs).
    async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
        self.claim_tasks(request).await
    }

    /// One write transaction for the batch: each item's row read, its
    /// fence checked, its change written (see the `swap` module).
    async fn swap(&self, swaps: &[Swap]) -> Result<Vec<SwapOutcome>, StoreError> {
        self.swap_changes(swaps).await
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError> {
        self.get_tasks(ids).await
    }

    /// Filters and pages in SQL (the status by a `CASE` that mirrors
    /// [`Task::status`], the cursor as a row-value comparison on
    /// `(created_at, id)`); rows that do not decode are left out.
    async fn find(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.find_tasks(filter).await
    }

    /// `tasks_generators_idx`: see the `operator` module.
    async fn find_generators(&self, env: &str, limit: usize) -> Result<Vec<Task>, StoreError> {
        self.generators(env, limit).await
    }

    /// One `GROUP BY`: see the `operator` module.
    async fn open_resource_keys(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<oncetask_core::store::KeyQueues, StoreError> {
        self.key_queues(env, kind, now, limit).await
    }

    /// The rows that are not well-formed: see the `operator` module.
    async fn find_undecodable(
        &self,
        env: &str,
        limit: usize,
    ) -> Result<Vec<oncetask_core::store::Undecodable>, StoreError> {
        self.undecodable(env, limit).await
    }

    async fn count_by_status(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StatusCounts, StoreError> {
        self.count_statuses(env, kind, now).await
    }

    /// One write transaction: each row read, its expected version checked,
    /// then deleted.
    async fn delete(&self, deletes: &[Delete]) -> Result<Vec<DeleteOutcome>, StoreError> {
        self.delete_tasks(deletes).await
    }

    async fn next_due(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.next_due_at(env, kind, after).await
    }

    /// `SELECT DISTINCT kind` of the env's well-formed rows.
    async fn kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        self.distinct_kinds(env).await
    }

    /// Two aggregate queries in one read transaction (one snapshot).
    async fn inspect(&self, env: &str, now: DateTime<Utc>) -> Result<QueueStats, StoreError> {
        self.inspect_env(env, now).await
    }

    /// A range of `tasks_finished_idx` per page (see the `finished` module).
    async fn find_finished(&self, query: &FinishedQuery) -> Result<Vec<Task>, StoreError> {
        self.finished_tasks(query).await
    }

    async fn set_paused(&self, env: &str, kind: &str, paused: bool) -> Result<bool, StoreError> {
        self.pause_kind(env, kind, paused).await
    }

    async fn paused_kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        self.list_paused(env).await
    }

    /// One write transaction for the batch, each limiter read and written
    /// in turn (see the `rate` module).
    async fn take_starts(&self, requests: &[StartsRequest]) -> Result<Vec<u32>, StoreError> {
        self.take(requests).await
    }

    async fn return_starts(&self, requests: &[StartsRequest]) -> Result<(), StoreError> {
        self.give_back(requests).await
    }

    /// Rows counted and sized per status in one aggregate, and the database
    /// file's page figures (see the `storage` module).
    async fn storage_stats(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<StorageStats, StoreError> {
        self.measure(env, now).await
    }

    /// One: claims are write transactions, which SQLite runs one at a time.
    fn concurrent_claims(&self) -> usize {
        1
    }

    /// Yes: claims write their leases one at a time, and one that finds
    /// some of its candidates taken fills up inside its write transaction,
    /// so taking a few more tasks in one costs little and never comes back
    /// short because of another claim.
    fn claims_ahead(&self) -> bool {
        true
    }

    /// The notices of writes made through this store and its clones, at
    /// once, and of other stores' and processes' writes on the same file,
    /// within a watch interval (see the crate docs). Without a tokio
    /// runtime, only the former.
    fn subscribe(&self, env: &str) -> Option<BoxStream<'static, Notification>> {
        let can_watch = self.inner.watch.is_some() && tokio::runtime::Handle::try_current().is_ok();
        let (stream, start) = self.inner.hub.subscribe(env, can_watch);
        if start
            && let Some(watch) = self.inner.watch.clone()
            && !watch::start(self, watch)
        {
            self.inner.hub.stopped_watching();
        }
        Some(stream)
    }
}

//! # oncetask-postgres
//!
//! A PostgreSQL [`Store`] for oncetask, built on `sqlx`.
//!
//! ```no_run
//! use oncetask_postgres::PostgresStore;
//!
//! # async fn demo() -> Result<(), oncetask_core::StoreError> {
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app", "oncetask").await?;
//! store.migrate().await?; // creates the schema and its table once; a no-op afterwards
//! // Build a `Manager` over `Arc::new(store)` as with any other backend.
//! # Ok(())
//! # }
//! ```
//!
//! [`PostgresStore::connect_with`] takes
//! [`ConnectOptions`](oncetask_core::store::ConnectOptions) (connect
//! timeout, default 5 s; pool size): a malformed URL fails at once with
//! [`StoreError::InvalidConfig`], an unreachable server within the timeout
//! with [`StoreError::Unavailable`], naming the URL (password masked) and
//! what to check. [`PostgresStore::from_pool`] takes a pool of your own.
//!
//! ## Layout
//!
//! All tasks live in one table, `<schema>.tasks`, with one column per task
//! field in native types (`timestamptz`, `jsonb`, `integer`, `boolean`,
//! `bigint` for the version, `smallint` for the priority) and the task id
//! as primary key, so ids are unique across environments as the core
//! requires. Among them, `snoozes` (`integer`, 0 by default), `priority`
//! (`smallint`, 0 by default) and `max_attempts` (`integer`, `NULL` for no
//! limit of the task's own) came with migration `0004`, which adds them to
//! an existing table without rewriting it; `pruned_at` (`timestamptz`,
//! `NULL` for a full document) came the same way with migration `0006`.
//! The schema name is
//! checked against `[A-Za-z_][A-Za-z0-9_]{0,62}` and always quoted; every
//! value is a bound parameter. See the `migrations/` directory for the
//! table and its partial indexes:
//!
//! * `tasks_ready_idx`: not-done tasks by `(env, kind, leased_until NULLS
//!   FIRST, wait_until NULLS FIRST, created_at, id)`, the claim order
//!   (claims in [`ClaimOrder::Oldest`]);
//! * `tasks_priority_idx` (migration `0005`): not-done tasks by `(env,
//!   kind, priority, leased_until NULLS FIRST, wait_until NULLS FIRST,
//!   created_at, id)`, the claim order within each priority (claims in
//!   [`ClaimOrder::Priority`], see below); its predicate adds `priority >=
//!   -32768`, true of every row, so that only the claim's walk, which
//!   states it, can use it;
//! * `tasks_key_lease_idx`: not-done keyed tasks by `(env, kind,
//!   resource_key, leased_until)`, for "does this key hold a live lease";
//! * `tasks_key_group_idx`: not-done keyed tasks in group order, for the
//!   resource-key group claim;
//! * `tasks_created_idx` / `tasks_resource_key_idx`: listings;
//! * `tasks_finished_idx` (migration `0006`): finished tasks by `(env,
//!   kind, status, pruned_at IS NOT NULL, done_at, id)`, the status being
//!   the finished branch of the store's status expression, for pruners
//!   ([`Store::find_finished`]: a page of one status, full documents or
//!   tombstones, is one range of it; module `finished`).
//!
//! A second table, `<schema>.task_keys`, holds one *claim row* per (env,
//! kind, resource key) whose tasks have been claimed: a counter, `claims`,
//! that every claim leasing a task of the key bumps (see below).
//! `<schema>.paused_kinds` holds a row per paused env/kind (module
//! `pause`), and `<schema>.rate_limits` a row per rate limiter (env, kind,
//! resource key or none) with its window and the starts taken in it
//! (module `rate`: a batch of takes is one `INSERT … ON CONFLICT DO
//! UPDATE` that computes each grant on the limiter's locked row).
//!
//! ## Claims and resource-key exclusion
//!
//! A single-mode claim is one statement (module `claim::single`), run
//! outside any transaction. It
//!
//! 1. selects candidates in the claim's order (see "Claim order and
//!    priority" below): ready tasks of the env/kind whose resource key
//!    holds no live lease *in the statement's snapshot* (a lease of any of
//!    the key's tasks, whatever its priority), at most one per key, as many
//!    as the limit (index range scans, one per part of the claim order, and
//!    in priority order per priority present), with the claim row of each
//!    candidate's key as the snapshot sees it;
//! 2. locks the candidate rows `FOR UPDATE SKIP LOCKED` by id and keeps
//!    those still ready in their newest version (a locking read returns
//!    it);
//! 3. for each keyed candidate, locks its key's claim row `FOR UPDATE SKIP
//!    LOCKED` and bumps its count only if the newest count is the one the
//!    snapshot saw, or inserts the row (`ON CONFLICT DO NOTHING`) if the
//!    snapshot had none;
//! 4. writes the lease of the candidates that are keyless or whose key row
//!    it got, as [`lifecycle::claim`] does (the grant's `leased_until` and
//!    token, `attempts + 1`, `cancellation_attempts + 1` when cancelled,
//!    `version + 1`), and returns them.
//!
//! Why this is exact. A statement's snapshot is taken when it starts, so
//! step 1 alone could miss a lease of the same key that another claim
//! commits while this one runs; two claims picking *different* tasks of
//! one key never meet on a task row. They meet on the key's claim row:
//! every claim that leases a task of key K writes K's row in the statement
//! that writes the lease, and holds its lock until it commits. So when a
//! claim B gets K's row in step 3 and finds the count its snapshot saw,
//! no claim of K committed after B's snapshot was taken (it would have
//! bumped the count, or B's lock would have found the row gone), and none
//! can commit before B does (it would need the row B holds). Every lease
//! of K that another claim has committed is therefore in B's snapshot,
//! where step 1 found none live. When the snapshot has no row for K, B's
//! insert meets any row another claim created or holds, waits for it if
//! it is not committed yet, and then does nothing: B leaves K alone. The
//! count only grows, so a row seen twice with one count was not written
//! in between. (The bump also finds the row by the location of the
//! version B locked, which B's snapshot cannot see when the row moved on:
//! a second guard.) Keys are never waited for except on such an insert,
//! which waits only for another claim's statement, so claims cannot
//! deadlock.
//!
//! A claim row is a small row per key. The delete that removes a key's last
//! task removes its row too, if the delete's snapshot shows no task of the
//! key at all. That keeps the exclusion: the delete waits for any claim
//! holding the row, so every lease written under the row committed first; a
//! claim that saw the row then finds it gone when it locks it; and a claim
//! whose snapshot has no row either meets, on insert, a row created since,
//! or took its snapshot before the row existed, when the task it picked
//! existed already: the delete's snapshot then showed that task (and the
//! row stayed) unless the delete removed it (and the claim cannot lock it).
//!
//! Candidates that SQL can tell are not tasks (`WELL_FORMED`) are never
//! leased and are reported; a leased row that still fails to decode in Rust
//! (an error time or a recurrence SQL does not check) is reported and its
//! lease taken back at once, fenced on the claim's version and token. A
//! statement takes at most one task per key among its candidates. When it
//! leased fewer tasks than its limit and left out tasks of a key it took, or
//! met rows that are not tasks, the claim runs the statement again (16 times
//! at most), leaving those rows out, so neither a key nor a run of spoiled
//! rows at the head of the queue stops the kind. Each run is exact on its
//! own.
//!
//! A claim statement commits on its own: when its caller dies or loses the
//! connection after sending it, it may still lease its tasks, which then
//! wait, unworked, for their lease to expire (a claim transaction rolled
//! back in that case, unless the failure hit its commit). The chaos test
//! counts these as "claims whose answer was lost".
//!
//! A resource-group claim ([`ClaimMode::ResourceGroup`]) stays a
//! transaction (module `claim::group`): candidates, then the claim row of the
//! first free candidate key locked and bumped in its own statement, then,
//! in new statements (whose snapshots see every lease committed by earlier
//! claims of the key), the key's ready tasks locked `FOR UPDATE SKIP
//! LOCKED` and written back with [`lifecycle::claim`] applied in Rust.
//!
//! Heartbeats are swaps fenced on the task's version: a heartbeat computed
//! before its lease expired but committed after another claim took the key
//! can still revive it. The core's rule (no heartbeat after expiry, with
//! the caller's clock) leaves that window to clock and commit delays, as it
//! did before the claim rows.
//!
//! Upgrading: older versions excluded claimers of a key with advisory locks
//! instead of claim rows. The two do not exclude each other, so stop the
//! workers of an older version before starting those of this one.
//!
//! ### Claim order and priority
//!
//! A claim takes ready tasks in [`ClaimRequest::order`]:
//! [`ClaimOrder::Priority`] (higher [`Task::priority`] first, then the
//! claim order) or [`ClaimOrder::Oldest`] (the claim order alone, which the
//! manager uses for every n-th claim of a kind). The claim order is never
//! leased before expired leases, then `wait_until`, `created_at` and the
//! id; its three parts (never leased and never waiting, never leased and
//! waited until now or earlier, expired leases) are three ranges of an
//! index, each read by a range scan stopped at the limit, so tasks
//! scheduled for later (which, never leased, sort between the ready ones
//! and the expired leases) are never walked.
//!
//! * The oldest order reads the three ranges of `tasks_ready_idx`, as
//!   claims did before priorities (the statement and its plan are
//!   unchanged).
//! * The priority order walks the priorities present, highest first: a
//!   recursive query finds each with one probe of `tasks_priority_idx`
//!   (the highest priority below the last one found), and for each reads
//!   the same three ranges within that priority; the rows stream out in
//!   priority order and a `LIMIT` stops the walk in the priority, and the
//!   part, where it has enough (PostgreSQL evaluates a recursive query and
//!   the inner side of a nested loop only as far as they are read). With
//!   every task at priority 0, the usual case, that is one probe more than
//!   the oldest order, and a range fewer when never-leased tasks fill the
//!   claim; a priority whose tasks all wait for later costs four probes.
//!   Plan tests check that the walk keeps this shape and reads its own
//!   index whatever the statistics (the priority range is also stated as
//!   an inequality pair, whose selectivity the planner estimates at 0.5 %
//!   whatever it knows, so a plan never reads a priority from
//!   `tasks_ready_idx` with the priority as a filter). Its candidates are
//!   exactly the first ones in priority order (twice the limit), where the
//!   oldest order takes twice the limit from each range. The index costs
//!   an entry per create and per claim (BENCHMARKS.md, "Postgres claims by
//!   priority").
//!
//! Nothing in the exclusion above depends on the order: the busy-key
//! check, the claim rows and the lease are the same in both, so the
//! argument holds for both statements and for claims of both orders
//! racing. A resource-group claim reads its candidates in the claim's
//! order (the first decides) and then the chosen key's ready tasks in
//! group order (`wait_until`, `created_at`, id) whatever their
//! priorities.
//!
//! ## Outcomes
//!
//! A swap call is one statement: an `UPDATE … FROM jsonb_to_recordset`
//! of the columns a swap may change (the payload only in a prune, which
//! empties it), each row only if it still has the fence's version, with
//! no `SELECT … FOR UPDATE` first (see the `swap` module).
//!
//! ## Wake-ups
//!
//! Creates and deletes send `pg_notify(channel, kind)` in their
//! transaction, on two channels per schema and env: one for new or freed
//! work, one for changes that may have touched a task a worker holds
//! (deletes of unfinished tasks, pausing and resuming a kind, and an
//! operator's cancel, reset or reprioritize: see
//! [`oncetask_core::store::Change::by_operator`]; deleting a finished task,
//! as pruners do, sends nothing: no worker holds it). Swaps notify as
//! [`oncetask_core::store::Swap::announce`] says: not for a heartbeat or the
//! end of a task without a resource key. [`Store::subscribe`]
//! returns a stream fed by a `PgListener` that reconnects after the server
//! restarts (notices sent while it is away are lost; workers still wake at
//! due times and their poll interval).
//!
//! ## Transactional enqueue
//!
//! [`PostgresStore::create_in`] creates tasks inside a caller's transaction:
//! workers see them, and hear of them, only when it commits.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use oncetask_core::store::{
    ClaimMode, ClaimOrder, ClaimRequest, Claimed, CreateOutcome, Delete, DeleteOutcome, Fetched,
    FinishedQuery, KeyQueues, Notification, StartsRequest, StatusCounts, StorageStats, Swap,
    SwapOutcome, TaskFilter, Undecodable,
};
use oncetask_core::{Store, StoreError, Task, lifecycle};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};

mod claim;
mod connect;
mod create;
mod delete;
mod explain;
mod finished;
mod inspect;
mod listing;
mod notify;
mod operator;
mod pause;
mod rate;
mod reuse;
mod row;
mod schema;
mod storage;
mod swap;

use notify::listen;
use schema::check_schema;

/// The `sqlx` crate this backend is built on: transactional enqueue
/// ([`PostgresStore::create_in`]) takes a transaction of this version.
pub use sqlx;

use row::{COLUMNS, Decoded, RECORD, RECORD_VALUES};

/// How long a pooled connection may sit idle before it is pinged again
/// before use (see [`PostgresStore::pool_options`]).
pub const PING_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// A PostgreSQL [`Store`]. Cloning is cheap and clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    /// Operator queries' own small pool, on first use: see
    /// [`PostgresStore::query_pool`].
    query_pool: tokio::sync::OnceCell<PgPool>,
    schema: String,
    /// `"schema".tasks`, quoted.
    table: String,
    /// `"schema".task_keys`, quoted: the resource-key claim rows.
    keys: String,
    /// The single-row create statement (`create::create_one_sql`).
    create_one: String,
    /// The hot path's connections, kept between statements (module `reuse`).
    reuse: reuse::Reuse,
    /// `"schema".paused_kinds`, quoted (module `pause`).
    paused: String,
    /// `"schema".rate_limits`, quoted (module `rate`).
    limiters: String,
    /// When (ms since the epoch, by the callers' clock) stale limiter rows
    /// were last swept (module `rate`).
    limiters_swept_at: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .finish()
    }
}

fn db(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
        other => StoreError::backend(other),
    }
}

/// The status of a finished row, as [`Task::status`] has it: also the
/// expression `tasks_finished_idx` (migration 0006) indexes, so
/// [`Store::find_finished`] repeats it as it stands. (A `CASE` keeps
/// `jsonb_array_length` from ever seeing an `errors` that is not an
/// array, which an `AND` does not promise.)
const FINISHED_STATUS: &str = "CASE WHEN is_cancelled THEN 'cancelled' \
    WHEN outcome = 'completed' THEN 'completed' \
    WHEN outcome = 'failed' THEN 'failed' \
    WHEN outcome = 'cancelled' THEN 'cancelled' \
    WHEN jsonb_typeof(errors) <> 'array' THEN 'failed' \
    WHEN attempts > jsonb_array_length(errors) THEN 'completed' \
    ELSE 'failed' END";

/// The SQL status of a row at bind parameter `$now`, exactly as [`Task::status`].
fn status_sql(now: &str) -> String {
    format!(
        "CASE WHEN done_at IS NOT NULL THEN ({FINISHED_STATUS}) \
         WHEN is_cancelled THEN 'cancellationPending' \
         WHEN leased_until > {now} THEN 'leased' \
         WHEN wait_until > {now} THEN 'waiting' \
         ELSE 'pending' END"
    )
}

/// Rows whose payload is not a JSON object are not tasks: due times ignore
/// them (claims and `get` report them).
const TASK_LIKE: &str = "jsonb_typeof(data) = 'object'";

/// Rows that decode, as far as SQL can tell: [`TASK_LIKE`], every counter
/// and the attempt limit non-negative, the priority an `i8`, every time
/// finite and within chrono's range (PostgreSQL's earliest time, 4713 BC,
/// is within it), the outcome one oncetask writes, the error history an
/// array of `{at, error}` objects with string values and the recurrence an
/// object. Listings, `kinds`, counts and the inspector count the other
/// rows as undecodable ([`StatusCounts::undecodable`]). What SQL does not
/// check (an `at` that is not an RFC 3339 time, a recurrence whose rule
/// does not parse) still counts by status; `get` and claims decode every
/// row and report those.
const WELL_FORMED: &str = "(jsonb_typeof(data) = 'object' \
    AND jsonb_typeof(errors) = 'array' \
    AND NOT jsonb_path_exists(errors, 'lax $[*] ? (@.type() != \"object\" \
        || !(exists(@.at ? (@.type() == \"string\"))) \
        || !(exists(@.error ? (@.type() == \"string\"))))') \
    AND (recurrence IS NULL OR jsonb_typeof(recurrence) = 'object') \
    AND attempts >= 0 AND cancellation_attempts >= 0 AND version >= 0 \
    AND snoozes >= 0 AND (max_attempts IS NULL OR max_attempts >= 0) \
    AND priority BETWEEN -128 AND 127 \
    AND (outcome IS NULL OR outcome IN ('completed', 'failed', 'cancelled')) \
    AND isfinite(created_at) AND created_at < '262143-01-01Z' \
    AND (wait_until IS NULL OR (isfinite(wait_until) AND wait_until < '262143-01-01Z')) \
    AND (leased_until IS NULL OR (isfinite(leased_until) AND leased_until < '262143-01-01Z')) \
    AND (done_at IS NULL OR (isfinite(done_at) AND done_at < '262143-01-01Z')) \
    AND (cancelled_at IS NULL OR (isfinite(cancelled_at) AND cancelled_at < '262143-01-01Z')) \
    AND (occurrence_timestamp IS NULL \
         OR (isfinite(occurrence_timestamp) AND occurrence_timestamp < '262143-01-01Z')) \
    AND (pruned_at IS NULL OR (isfinite(pruned_at) AND pruned_at < '262143-01-01Z')))";

/// The SQL status of a row at `$now`, or `undecodable` for a row that is
/// not [`WELL_FORMED`].
fn status_or_undecodable_sql(now: &str) -> String {
    format!(
        "CASE WHEN {WELL_FORMED} THEN ({}) ELSE 'undecodable' END",
        status_sql(now)
    )
}

/// Adds `n` to the count named `name`: a status, or `undecodable`.
fn add_count(counts: &mut StatusCounts, name: &str, n: u64) -> Result<(), StoreError> {
    if name == "undecodable" {
        counts.undecodable += n;
    } else {
        counts.add(name.parse().map_err(StoreError::backend)?, n);
    }
    Ok(())
}

/// Env/kind pairs a write changed.
type Changed = BTreeSet<(String, String)>;

impl PostgresStore {
    /// The pool settings [`PostgresStore::connect`] uses: sqlx's defaults,
    /// except four, each measured (BENCHMARKS.md, "Postgres statements"),
    /// and the acquire timeout and pool size, which
    /// [`PostgresStore::connect_with`] sets from its
    /// [`ConnectOptions`](oncetask_core::store::ConnectOptions):
    ///
    /// * A connection is pinged before use only when it has sat idle in the
    ///   pool for [`PING_IDLE_AFTER`] or longer. sqlx pings every connection
    ///   it hands out by default: one more round trip for every statement.
    ///   A connection the server dropped while in steady use fails its next
    ///   statement with [`StoreError::Unavailable`] and sqlx discards it (the
    ///   worker loops retry).
    /// * Each connection runs with `plan_cache_mode = force_generic_plan`:
    ///   the store's prepared statements are planned once per connection
    ///   instead of on every call (PostgreSQL's default re-plans a statement
    ///   whose generic plan looks dearer than the custom ones, which the
    ///   claim statement's always does; planning was ~10 % of the server's
    ///   CPU per task, and draining ran 20-25 % faster without it). Every
    ///   hot-path statement reaches tasks through their primary key or the
    ///   ready index whatever the parameters, which the plan tests check
    ///   on these settings. The store's operator queries, whose optional
    ///   filters need custom plans, run on a small pool of their own.
    /// * Each connection runs with `jit = off`. Once the table holds some
    ///   100k tasks and its statistics say so, the claim statement's
    ///   estimated cost passes `jit_above_cost` and PostgreSQL compiled it
    ///   on every call: ~150 ms per claim (a no-op drain of 100k tasks at
    ///   64 slots ran at 390-820 tasks/s). Statements that touch a few
    ///   dozen rows through indexes never repay compilation.
    /// * Each connection runs with `enable_seqscan = off`. A connection
    ///   plans each statement once, often while the table is still empty
    ///   (a fresh deploy), and keeps that plan as the table grows; on an
    ///   empty table a sequential scan looks cheapest, and the batch create
    ///   then compared every stored row with every id of the batch (seeding
    ///   100k tasks took seconds per 1,000-task call by the end). With it off,
    ///   and the hot-path statements written so that only the primary key
    ///   can serve their lookups by id, a plan made on an empty table reads
    ///   by index too (a test checks it).
    ///
    /// Your own statements on this pool run under the same settings: set
    /// them back on a connection (`SET plan_cache_mode = auto`, `SET jit =
    /// on`, `SET enable_seqscan = on`), or use a pool of your own, if one of
    /// them needs custom plans or scans a table.
    ///
    /// Start from these options to build a pool of your own for
    /// [`PostgresStore::from_pool`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use oncetask_postgres::PostgresStore;
    ///
    /// let pool = PostgresStore::pool_options()
    ///     .max_connections(20)
    ///     .connect("postgres://postgres@127.0.0.1:5432/test")
    ///     .await?;
    /// let store = PostgresStore::from_pool(pool, "oncetask")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool_options() -> PgPoolOptions {
        PgPoolOptions::new()
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(
                        &mut *conn,
                        "SET plan_cache_mode = force_generic_plan; SET jit = off; SET enable_seqscan = off",
                    )
                    .await?;
                    Ok(())
                })
            })
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
    }

    /// Uses an existing pool and the tables in `schema`.
    ///
    /// `schema` must match `[A-Za-z_][A-Za-z0-9_]*` (at most 63 bytes).
    ///
    /// The store's hot-path statements (creates, claims, outcomes) run on
    /// connections it takes out of `pool` and keeps between statements,
    /// because sqlx's pool spends a round trip on every connection given
    /// back to it. Up to the pool's `max_connections` of them exist beside
    /// the pool's own, so the store may open twice that many connections to
    /// the server; one unused for [`PING_IDLE_AFTER`] is closed, and none is
    /// used once the pool is closed.
    pub fn from_pool(pool: PgPool, schema: &str) -> Result<Self, StoreError> {
        check_schema(schema)?;
        let table = format!("\"{schema}\".tasks");
        let reuse = reuse::Reuse::new(pool.options().get_max_connections() as usize);
        Ok(Self {
            inner: Arc::new(Inner {
                reuse,
                pool,
                query_pool: tokio::sync::OnceCell::new(),
                schema: schema.to_owned(),
                create_one: create::create_one_sql(&table),
                table,
                keys: format!("\"{schema}\".task_keys"),
                paused: format!("\"{schema}\".paused_kinds"),
                limiters: format!("\"{schema}\".rate_limits"),
                limiters_swept_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            }),
        })
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The pool of the operator queries (`find`, counts, `inspect`, kinds),
    /// opened on first use: at most two connections to the same server
    /// with PostgreSQL's default planning, and the store pool's acquire
    /// timeout. Their optional filters
    /// (`$2 IS NULL OR kind = $2`) need custom plans to use an index, which
    /// [`PostgresStore::pool_options`]' generic plans would not give them.
    async fn query_pool(&self) -> &PgPool {
        self.inner
            .query_pool
            .get_or_init(|| async {
                PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(self.inner.pool.options().get_acquire_timeout())
                    .connect_lazy_with((*self.inner.pool.connect_options()).clone())
            })
            .await
    }

    /// The schema holding this store's table.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The quoted, schema-qualified name of the task table (`"schema".tasks`).
    pub fn table(&self) -> &str {
        &self.inner.table
    }

    /// A connection for one hot-path statement (module `reuse`): give it
    /// back once the statement completed.
    async fn lend(&self) -> Result<reuse::Lent<'_>, StoreError> {
        self.inner.reuse.lend(&self.inner.pool).await.map_err(db)
    }

    /// The next due time of env `$1` / kind `$2` after `$3`: its `min` is
    /// served by `tasks_due_idx`, whose expression this repeats verbatim.
    pub(crate) fn next_due_sql(&self) -> String {
        let t = &self.inner.table;
        let due = "greatest(coalesce(wait_until, '-infinity'::timestamptz), \
                   coalesce(leased_until, '-infinity'::timestamptz))";
        format!(
            "SELECT min({due}) FROM {t} \
             WHERE env = $1 AND kind = $2 AND done_at IS NULL AND {TASK_LIKE} AND {due} > $3"
        )
    }
}

#[async_trait]
impl Store for PostgresStore {
    /// One statement for the batch (`INSERT ... ON CONFLICT DO NOTHING`,
    /// the notices and the envs of ids already stored; see
    /// [`PostgresStore::create_in`]); a repeated id within one call is
    /// created once and reported as existing afterwards.
    async fn create(&self, tasks: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError> {
        let mut lent = self.lend().await?;
        let outcomes = self.create_in(lent.conn(), tasks).await?;
        lent.give_back();
        Ok(outcomes)
    }

    /// A single-mode claim is one statement (module `claim::single`); a
    /// resource-group claim is one transaction (module `claim::group`). See
    /// the crate docs for the exclusion mechanism. Undecodable candidates
    /// met on the way are reported (and left unleased).
    async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
        match request.mode {
            ClaimMode::Single { limit } => self.claim_single(request, limit).await,
            ClaimMode::ResourceGroup { max_group } => self.claim_group(request, max_group).await,
        }
    }

    /// One statement per call (see the `swap` module): the fenced `UPDATE`
    /// of the changed columns and the notices; rows it did not write are
    /// read afterwards to report why.
    async fn swap(&self, swaps: &[Swap]) -> Result<Vec<SwapOutcome>, StoreError> {
        self.swap_changes(swaps).await
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let t = &self.inner.table;
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM {t} WHERE id = ANY($1)"))
            .bind(ids)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db)?;
        let mut by_id = HashMap::with_capacity(rows.len());
        for r in &rows {
            let Decoded { id, task } = row::decode(r).map_err(db)?;
            let fetched = match task {
                Ok(task) => Fetched::Task(task),
                Err(reason) => Fetched::Undecodable(Undecodable {
                    id: id.clone(),
                    reason,
                }),
            };
            by_id.insert(id, fetched);
        }
        let mut seen = HashSet::new();
        Ok(ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .filter_map(|id| by_id.remove(id))
            .collect())
    }

    /// Filters and pages in SQL (statuses by a `CASE` that mirrors
    /// [`Task::status`], the cursor as a row comparison on the listing
    /// index's `(created_at, id)`); rows that do not decode are left out.
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
    ) -> Result<KeyQueues, StoreError> {
        self.key_queues(env, kind, now, limit).await
    }

    /// The rows that are not well-formed: see the `operator` module.
    async fn find_undecodable(
        &self,
        env: &str,
        limit: usize,
    ) -> Result<Vec<Undecodable>, StoreError> {
        self.undecodable(env, limit).await
    }

    async fn count_by_status(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StatusCounts, StoreError> {
        let t = &self.inner.table;
        let status = status_or_undecodable_sql("$3");
        let rows = sqlx::query(&format!(
            "SELECT s, count(*) FROM (SELECT {status} AS s FROM {t} \
               WHERE env = $1 AND ($2::text IS NULL OR kind = $2)) c \
             GROUP BY s"
        ))
        .bind(env)
        .bind(kind)
        .bind(now)
        .fetch_all(self.query_pool().await)
        .await
        .map_err(db)?;
        let mut counts = StatusCounts::new();
        for r in &rows {
            let name: String = r.try_get(0).map_err(db)?;
            let n: i64 = r.try_get(1).map_err(db)?;
            add_count(&mut counts, &name, u64::try_from(n).unwrap_or(0))?;
        }
        Ok(counts)
    }

    /// Locks the rows, checks expected versions in Rust, deletes with one
    /// statement, in one transaction (see the `delete` module).
    async fn delete(&self, deletes: &[Delete]) -> Result<Vec<DeleteOutcome>, StoreError> {
        self.delete_tasks(deletes).await
    }

    async fn next_due(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = sqlx::query(&self.next_due_sql())
            .bind(env)
            .bind(kind)
            .bind(after)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db)?;
        row::time_column(&row, 0).map_err(StoreError::backend)
    }

    /// `SELECT DISTINCT kind`.
    async fn kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        self.distinct_kinds(env).await
    }

    /// Two aggregate queries (counts by kind and status; oldest pending and
    /// next due time by kind) in one read-only snapshot.
    async fn inspect(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<oncetask_core::QueueStats, StoreError> {
        self.inspect_env(env, now).await
    }

    /// One statement: a range of `tasks_finished_idx`, which keys finished
    /// tasks by env, kind, status, tombstone or not, `done_at` and id, so a
    /// page reads only its own entries (see the `finished` module).
    async fn find_finished(&self, query: &FinishedQuery) -> Result<Vec<Task>, StoreError> {
        self.finished_tasks(query).await
    }

    /// A row of `paused_kinds` inserted or deleted, and the notice on the
    /// env's changes channel, in one statement (see the `pause` module).
    async fn set_paused(&self, env: &str, kind: &str, paused: bool) -> Result<bool, StoreError> {
        self.pause_kind(env, kind, paused).await
    }

    async fn paused_kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        self.list_paused(env).await
    }

    /// One `INSERT … ON CONFLICT DO UPDATE` for the batch, which computes
    /// each grant on the limiter's locked row (see the `rate` module); a
    /// limiter named twice in one call goes in a later statement.
    async fn take_starts(&self, requests: &[StartsRequest]) -> Result<Vec<u32>, StoreError> {
        self.take(requests).await
    }

    /// One statement: the limiter rows locked in a fixed order and their
    /// counts lowered (see the `rate` module).
    async fn return_starts(&self, requests: &[StartsRequest]) -> Result<(), StoreError> {
        self.give_back(requests).await
    }

    /// Rows counted and sized per status (`sum(pg_column_size(row))`) in
    /// one aggregate, and the relation sizes of the store's tables (see the
    /// `storage` module).
    async fn storage_stats(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<StorageStats, StoreError> {
        self.measure(env, now).await
    }
    /// One: the claim statement picks its rows before it locks them
    /// (`FOR UPDATE SKIP LOCKED`), so a second claim in flight picks the
    /// same rows, skips them as locked and mostly comes back empty. With
    /// one claim in flight a no-op handler drained 18-30 % faster at 1, 8
    /// and 64 slots (BENCHMARKS.md, "Postgres statements"); two claims
    /// that read past each other's rows were slower still (session 13:
    /// the server is busy enough that a second claim only splits the
    /// first one's room). Locking the
    /// rows as the index is read instead made claims collide less, but in
    /// the chaos run tasks then ran two to six times as often (every extra
    /// outcome fenced off; cause not yet known, RELIABILITY.md): not used.
    fn concurrent_claims(&self) -> usize {
        1
    }

    fn claims_ahead(&self) -> bool {
        true
    }

    /// A stream fed by a `PgListener` on this env's channel (one connection
    /// per subscriber, reconnecting after errors). `None` outside a tokio
    /// runtime.
    fn subscribe(&self, env: &str) -> Option<BoxStream<'static, Notification>> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Notification>(256);
        let pool = self.inner.pool.clone();
        let (channel, changes) = (self.channel(env), self.changes_channel(env));
        handle.spawn(listen(pool, channel, changes, tx));
        Some(
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|n| (n, rx)) })
                .boxed(),
        )
    }
}

//! # oncetask-redis
//!
//! A Redis [`Store`] for oncetask: every claim, outcome, cancel, reset and
//! delete is one server-side Lua script, and every script touches the keys
//! of one hash slot, so the same code runs on a single server and on a
//! Redis Cluster layout.
//!
//! ```no_run
//! use std::sync::Arc;
//! use oncetask_redis::RedisStore;
//!
//! # async fn demo() -> Result<(), oncetask_core::StoreError> {
//! // One store per key prefix; every key it writes starts with "myapp:oncetask".
//! let store = RedisStore::connect("redis://127.0.0.1:6379", "myapp:oncetask").await?;
//! let manager = oncetask_core::Manager::builder(Arc::new(store)).env("prod").build();
//! # let _ = manager;
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//!
//! Each environment's keys share the hash tag `{e:<env>}`
//! (`<prefix>:{e:<env>}:…`), so one script can read and write all of them
//! atomically. The task itself is a hash (`t:<id>`) whose scheduling fields
//! (times in milliseconds, counters, flags, token, version, resource key)
//! are separate fields the scripts read and write, and whose payload,
//! errors, recurrence and result are JSON that only Rust reads (module
//! `doc`). Snoozes, priority and max attempts are fields of their own
//! (`snz`, `pri`, `maxa`), stored only when they differ from their default
//! (0, 0, none), so a hash without them reads as the default. Next to it,
//! per kind: sorted sets of never-leased tasks by `wait_until` and of
//! leased tasks by lease expiry (the two parts of the claim order), of due
//! times (for [`Store::next_due`]), counters per status and listing
//! indexes in creation order; per resource key: its leases (the
//! *per-key lease*: the key is busy while the latest one is in the future),
//! its never-leased tasks and its whole ready group. The Lua header
//! `src/lua/lib.lua` lists every key; `docs/redis.md` has the table.
//!
//! Names users supply (env, kind, id, resource key) may contain anything:
//! env and kind are percent-encoded inside key names, and ids and resource
//! keys only ever end a key name, so no name can collide with another or
//! move a key out of its env's slot. The key prefix must not contain `{` or
//! `}`.
//!
//! The crate talks to one server (or a proxy) through a
//! [`ConnectionManager`], or, with the `cluster` feature, to a Redis Cluster
//! ([`RedisStore::connect_cluster`]) with the same scripts and keys: each
//! script and command goes to the node owning its keys.
//!
//! [`RedisStore::connect_with`] (and `connect_cluster_with`) take
//! [`ConnectOptions`](oncetask_core::store::ConnectOptions) (connect
//! timeout, default 5 s): a malformed URL fails at once with
//! [`StoreError::InvalidConfig`], an unreachable server within the timeout
//! with [`StoreError::Unavailable`], naming the URL (password masked) and
//! what to check.
//!
//! ## Ids are global: the id registry
//!
//! The contract makes an id unique across environments, but each
//! environment has its own slot. A registry entry per id
//! (`<prefix>:id:<id>`, holding `<generation>:<env>`) says which env holds
//! the task; it is written with `SET … NX` before the task is created in
//! its env's slot (in the same script on a standalone server), and released
//! after a delete. Reads and deletes by id look the env up there first (one
//! extra round trip). Only the creator that set an entry creates the task
//! under it; an entry whose task does not appear (a two-step creator that
//! crashed between its steps, or a delete that crashed before releasing the
//! entry) is *fenced*: a
//! tombstone for its generation in the env's slot makes any late create
//! under it fail, and the entry is released. See module `registry`.
//!
//! ## Claims
//!
//! One script selects and leases: it walks the never-leased tasks up to
//! `now`, then the expired leases, in [`Task::claim_order_key`] order,
//! skipping busy resource keys, and writes exactly the fields
//! [`oncetask_core::lifecycle::claim`] changes (lease expiry, token, attempts, cancellation
//! attempts, version + 1) — so a claim is one round trip, and a
//! resource-group claim leases the whole ready group of the first free key
//! in the same call. A key whose latest lease is live is *parked*: its
//! tasks leave the walk until a claim at or after that lease, so a claim
//! never wades through the backlog of busy keys.
//!
//! The walk's indexes are split into *priority bands*, one per
//! [`Task::priority`] with not-done tasks (band 0 keeps the key names of a
//! store without priorities, and a per-kind hash lists the other bands in
//! use). A claim in [`ClaimOrder::Priority`] walks the bands from the
//! highest down, one in [`ClaimOrder::Oldest`] merges their walks by claim
//! order; with band 0 alone both are the single walk above. A resource
//! key's lease, its group and its parking span the bands, so a busy key
//! blocks its tasks of every priority.
//!
//! Outcomes, snoozes, cancels, resets, priority changes and extensions are
//! [`Store::swap`]s: the core computes the new task (checking the lease
//! token), the script writes it only if the stored version is still the
//! expected one.
//!
//! ## Retention, pause and rate limits
//!
//! Finished tasks are indexed by finish time per kind and terminal status
//! (`fin:<status>:<kind>`, and `pr:<status>:<kind>` for tombstones), kept in
//! line by the same scripts that finish, reset, prune and delete them, so
//! [`Store::find_finished`] is a range read; a kind stored before the
//! index existed is backfilled once ([`RedisStore::backfill_finished`]). A
//! prune writes the payload away (`body` rewritten, `prn` set). Paused
//! kinds are a set per env; rate limiters are one expiring hash per kind
//! (and resource key), updated by a script per call. See `docs/redis.md`.
//!
//! ## Wake-ups
//!
//! Creates, deletes and the swaps that free work or come from an operator
//! `PUBLISH` the changed kinds from inside their script (heartbeats and the
//! end of a task without a resource key publish nothing): on
//! `<prefix>:{e:<env>}:events` for new or freed work (creates, outcomes,
//! releases), on `<prefix>:{e:<env>}:changes` for writes that may have
//! touched a task a worker holds (cancel, reset, priority change, delete),
//! after which workers re-read the tasks they claimed ahead.
//! [`Store::subscribe`] opens a pub/sub connection per subscriber that
//! reconnects after the server restarts, and then announces every kind of
//! the env once, since notices sent while it was away are lost.
//!
//! ## Durability
//!
//! Redis keeps data in memory. With `appendonly yes` (AOF) tasks survive a
//! restart; without persistence a restart loses every task. See `docs/redis.md`.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use oncetask_core::store::{
    Announce, ClaimMode, ClaimOrder, ClaimRequest, Claimed, CreateOutcome, Delete, DeleteOutcome,
    Fetched, FinishedQuery, Notification, StartsRequest, StatusCounts, StorageStats, Swap,
    SwapOutcome, TaskFilter, Undecodable,
};
use oncetask_core::{Store, StoreError, Task, TaskStatus};
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

mod conn;
mod connect;
mod doc;
mod keys;
mod notify;
mod operator;
mod registry;
mod retention;
mod scripts;

pub use conn::Connection;
pub use keys::key_slot;
pub use retention::STATS_SAMPLE;

/// The `redis` crate this backend is built on, for the caller's own
/// commands on [`RedisStore::connection`] with the same version.
pub use redis;

use doc::{Decoded, Fields, decode, encode_change, encode_task};
use keys::{Keys, encode};
use scripts::{SCRIPTS, array, fields, int, named_fields, redis_error, string, unexpected};

/// How long the store's connection waits for a reply before reporting the
/// server unavailable (the `redis` crate's default is 500 ms).
pub const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most script calls one claim makes when leased hashes do not decode.
const CLAIM_ROUNDS: usize = 8;

/// Most undecodable documents one claim reports.
const REPORT_CAP: usize = 100;
/// Tasks one listing page reads.
const LIST_PAGE: usize = 256;
/// Listing members one page reads when the filter wants only done
/// statuses: the script then checks each member's `dst` field and returns
/// only the hashes that match, so it can read further per call.
const LIST_SCAN: usize = 1024;
/// Most items one create, swap or delete script call handles: Redis runs
/// one script at a time, so bulk calls are cut into short scripts.
const SCRIPT_BATCH: usize = 200;

/// A Redis [`Store`]. Cloning is cheap and clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    /// Open the pub/sub connections of [`Store::subscribe`]: the server, or
    /// the cluster's seed nodes (tried in turn). Empty: no wake-ups.
    pubsub: Vec<redis::Client>,
    keys: Keys,
    /// Whether the server said it is a single standalone server (asked once,
    /// see [`RedisStore::single_server`]).
    standalone: tokio::sync::OnceCell<bool>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.keys.prefix())
            .field("cluster", &self.inner.conn.is_cluster())
            .field("wake_ups", &!self.inner.pubsub.is_empty())
            .finish()
    }
}

impl RedisStore {
    /// Uses `client` for a [`ConnectionManager`] (the store's multiplexed,
    /// self-reconnecting connection, waiting at most [`RESPONSE_TIMEOUT`] for
    /// a reply) and for the pub/sub connections of [`Store::subscribe`].
    pub async fn from_client(client: redis::Client, prefix: &str) -> Result<Self, StoreError> {
        let keys = Keys::new(prefix)?;
        let config = ConnectionManagerConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(redis_error)?;
        Ok(Self::from_manager(conn, client, keys))
    }

    /// A store on a standalone server's connection manager; `client` also
    /// opens the pub/sub connections.
    fn from_manager(conn: ConnectionManager, client: redis::Client, keys: Keys) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn: conn.into(),
                pubsub: vec![client],
                keys,
                standalone: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// Uses an existing [`ConnectionManager`]. Without a client the store
    /// cannot open pub/sub connections, so [`Store::subscribe`] returns
    /// `None` (workers then wake at due times and poll intervals only);
    /// add one with [`RedisStore::with_pubsub_client`].
    pub fn from_connection(conn: ConnectionManager, prefix: &str) -> Result<Self, StoreError> {
        Ok(Self {
            inner: Arc::new(Inner {
                conn: conn.into(),
                pubsub: Vec::new(),
                keys: Keys::new(prefix)?,
                standalone: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// This store with `client` opening the pub/sub connections of
    /// [`Store::subscribe`].
    pub fn with_pubsub_client(self, client: redis::Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn: self.inner.conn.clone(),
                pubsub: vec![client],
                keys: self.inner.keys.clone(),
                standalone: self.inner.standalone.clone(),
            }),
        }
    }

    /// Uses an existing cluster connection. Like
    /// [`RedisStore::from_connection`], it has no wake-ups until
    /// [`RedisStore::with_pubsub_client`] names a node to subscribe on.
    #[cfg(feature = "cluster")]
    pub fn from_cluster_connection(
        conn: redis::cluster_async::ClusterConnection,
        prefix: &str,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            inner: Arc::new(Inner {
                conn: conn.into(),
                pubsub: Vec::new(),
                keys: Keys::new(prefix)?,
                standalone: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.conn.is_cluster()
    }

    /// Whether the store talks to one genuine server (`redis_mode:standalone`
    /// in `INFO server`), where a script may touch keys of any slot: then a
    /// create takes its registry entry inside the create script. A cluster,
    /// a server in cluster mode, and a proxy that does not answer `INFO`
    /// (whose shards may hold the registry entry and the task apart) get
    /// the two-step create. Asked once; a failed `INFO` is asked again.
    pub(crate) async fn single_server(&self) -> bool {
        if self.inner.conn.is_cluster() {
            return false;
        }
        if let Some(standalone) = self.inner.standalone.get() {
            return *standalone;
        }
        let mut conn = self.conn();
        let info: Result<String, _> = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await;
        let Ok(info) = info else {
            return false;
        };
        let standalone = info
            .lines()
            .any(|line| line.trim() == "redis_mode:standalone");
        // Another caller may have set it meanwhile, to the same answer.
        let _ = self.inner.standalone.set(standalone);
        standalone
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &str {
        self.inner.keys.prefix()
    }

    /// A handle to the store's connection (for the caller's own commands).
    pub fn connection(&self) -> Connection {
        self.inner.conn.clone()
    }

    /// The key of the hash holding task `id` of `env` (for inspection with
    /// `redis-cli`, e.g. `HGETALL`).
    pub fn task_key(&self, env: &str, id: &str) -> String {
        self.inner.keys.task(env, id)
    }

    /// The common start `<prefix>:{e:<env>}:` of every key of `env`: all
    /// of them hash to one slot.
    pub fn env_key_base(&self, env: &str) -> String {
        self.inner.keys.env_base(env)
    }

    /// Stores a document with this `id`, `env` and `kind` that is not a
    /// valid task, replacing any document with this id. For tests of Go W7:
    /// claims of `env`/`kind` report it in [`Claimed::undecodable`],
    /// [`Store::get`] returns it as [`Fetched::Undecodable`],
    /// [`Store::delete`] removes it, [`Store::find`] does not list it, and
    /// [`Store::count_by_status`] counts it in [`StatusCounts::undecodable`]
    /// only. Not safe against concurrent
    /// writers of the same id.
    pub async fn insert_undecodable(
        &self,
        id: &str,
        env: &str,
        kind: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.delete(&[Delete::any(id)]).await?;
        let generation = registry::new_generation();
        let mut conn = self.conn();
        redis::cmd("SET")
            .arg(self.inner.keys.registry(id))
            .arg(registry::entry(&generation, env))
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_error)?;
        SCRIPTS
            .insert_raw
            .key(self.inner.keys.env_route(env))
            .arg(self.inner.keys.env_base(env))
            .arg(id)
            .arg(&generation)
            .arg(env)
            .arg(kind)
            .arg(encode(kind))
            .arg(reason)
            .invoke_async::<()>(&mut conn)
            .await
            .map_err(redis_error)
    }

    /// Deletes every key of this store (its prefix): tasks, indexes and
    /// registry entries of all environments. Walks the keyspace with `SCAN`,
    /// so it is for tests and tear-downs, not for a hot path. Returns the
    /// number of keys removed.
    pub async fn purge(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let pattern = format!("{}:*", glob_escape(self.prefix()));
        let keys = conn.scan_keys(&pattern).await.map_err(redis_error)?;
        let mut removed = 0;
        // UNLINK splits its keys by slot on a cluster.
        for batch in keys.chunks(1000) {
            removed += redis::cmd("UNLINK")
                .arg(batch)
                .query_async::<u64>(&mut conn)
                .await
                .map_err(redis_error)?;
        }
        Ok(removed)
    }

    fn conn(&self) -> Connection {
        self.inner.conn.clone()
    }

    /// Decodes a task hash a claim returned; a body Rust cannot decode is
    /// set aside (quarantined) so that later claims report it instead of
    /// leasing it again.
    async fn claimed_task(
        &self,
        env: &str,
        stored: Fields,
        undecodable: &mut Vec<Undecodable>,
    ) -> Result<Option<Task>, StoreError> {
        match decode(&stored) {
            Decoded::Task(task) => Ok(Some(*task)),
            Decoded::Raw { id, reason } => {
                let id = id.unwrap_or_default();
                let version = stored
                    .get("ver")
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                let mut conn = self.conn();
                SCRIPTS
                    .quarantine
                    .key(self.inner.keys.env_route(env))
                    .arg(self.inner.keys.env_base(env))
                    .arg(&id)
                    .arg(version)
                    .arg(&reason)
                    .invoke_async::<i64>(&mut conn)
                    .await
                    .map_err(redis_error)?;
                undecodable.push(Undecodable { id, reason });
                Ok(None)
            }
        }
    }

    /// One claim script call. Returns the leased tasks that decode and how
    /// many leased hashes did not (set aside, added to `undecodable`).
    async fn claim_round(
        &self,
        request: &ClaimRequest,
        mode: &str,
        n: usize,
        undecodable: &mut Vec<Undecodable>,
    ) -> Result<(Vec<Task>, usize), StoreError> {
        let keys = &self.inner.keys;
        let mut conn = self.conn();
        let reply: Value = SCRIPTS
            .claim
            .key(keys.env_route(&request.env))
            .arg(keys.env_base(&request.env))
            .arg(encode(&request.kind))
            .arg(millis(request.now))
            .arg(millis(request.grant.leased_until))
            .arg(request.grant.token.as_str())
            .arg(mode)
            .arg(n.to_string())
            .arg(REPORT_CAP)
            .arg(CLAIM_READ)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let mut parts = array(reply, "claim")?.into_iter();
        let (Some(leased), Some(reported)) = (parts.next(), parts.next()) else {
            return Err(StoreError::backend("unexpected reply to claim"));
        };
        let mut tasks = Vec::new();
        let mut set_aside = 0;
        for stored in array(leased, "claim")? {
            let stored = named_fields(CLAIM_READ, stored, "claim")?;
            if let Some(task) = self.claimed_task(&request.env, stored, undecodable).await? {
                tasks.push(task);
            } else {
                set_aside += 1;
            }
        }
        let mut reported = array(reported, "claim")?.into_iter();
        while let (Some(id), Some(reason)) = (reported.next(), reported.next()) {
            let id = string(id, "claim")?;
            if !undecodable.iter().any(|u| u.id == id) {
                undecodable.push(Undecodable {
                    id,
                    reason: string(reason, "claim")?,
                });
            }
        }
        Ok((tasks, set_aside))
    }
}

impl RedisStore {
    /// A swap looks its task up in the env the new task names. When the id
    /// is not there but exists in another env (it was deleted and created
    /// again there), the stored task is another incarnation: the swap is a
    /// conflict, as on a backend that finds tasks by id alone; the caller
    /// re-reads and the core decides (typically "lease lost").
    async fn settle_not_found(
        &self,
        swaps: &[Swap],
        outcomes: &mut [Option<SwapOutcome>],
    ) -> Result<(), StoreError> {
        let missing: Vec<String> = swaps
            .iter()
            .zip(outcomes.iter())
            .filter(|(_, o)| matches!(o, Some(SwapOutcome::NotFound)))
            .map(|(s, _)| s.id().to_owned())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let found = self.get(&missing).await?;
        for (swap, outcome) in swaps.iter().zip(outcomes.iter_mut()) {
            if !matches!(outcome, Some(SwapOutcome::NotFound)) {
                continue;
            }
            let elsewhere = found.iter().find(|f| match f {
                Fetched::Task(t) => t.id == swap.id(),
                Fetched::Undecodable(u) => u.id == swap.id(),
            });
            *outcome = Some(match elsewhere {
                None => SwapOutcome::NotFound,
                Some(Fetched::Task(_)) => SwapOutcome::Conflict,
                Some(Fetched::Undecodable(u)) => SwapOutcome::Failed(StoreError::Undecodable {
                    id: u.id.clone(),
                    reason: u.reason.clone(),
                }),
            });
        }
        Ok(())
    }
}

/// The listing script's status argument and members per call for
/// `filter`: `,completed,failed,` and [`LIST_SCAN`] when it wants only
/// done statuses (whose `dst` field the script can check exactly), else
/// `""` (every task) and [`LIST_PAGE`].
fn done_statuses_of(filter: &TaskFilter) -> (String, usize) {
    let done = [
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];
    // An id prefix is checked in the script, before a hash is read: a
    // call may read many members and return few tasks.
    let page = if filter.id_prefix.is_some() {
        LIST_SCAN
    } else {
        LIST_PAGE
    };
    if filter.statuses.is_empty() || !filter.statuses.iter().all(|s| done.contains(s)) {
        return (String::new(), page);
    }
    let mut wanted = String::from(",");
    for status in &filter.statuses {
        wanted.push_str(status.as_str());
        wanted.push(',');
    }
    (wanted, LIST_SCAN)
}

/// Escapes the glob characters of `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Env/kind pairs, for grouping per env.
type ByEnv<T> = Vec<(String, Vec<T>)>;

/// Groups `items` by env for one script call per group: the input order is
/// kept within each env, and a group holds at most [`SCRIPT_BATCH`] items
/// (an env with more gets several groups, in order).
fn group_by_env<T>(items: impl IntoIterator<Item = (String, T)>) -> ByEnv<T> {
    let mut groups: ByEnv<T> = Vec::new();
    for (env, item) in items {
        match groups
            .iter_mut()
            .rev()
            .find(|(e, list)| *e == env && list.len() < SCRIPT_BATCH)
        {
            Some((_, list)) => list.push(item),
            None => groups.push((env, vec![item])),
        }
    }
    groups
}

/// The hash fields a claim reads of each candidate and returns for each
/// leased task: first the eleven it decides on (in the order claim.lua
/// uses them: it reads them by position, and patches `lease`, `att`,
/// `catt`, `ver` and `token` with what it wrote), then the rest of what
/// [`decode`] needs (claim.lua finds `token` and `pri`, the task's
/// priority band, by name). Never `gen` or the listing member `cord`.
const CLAIM_READ: &[&str] = &[
    "fmt", "bad", "rk", "wait", "lease", "done", "att", "catt", "ver", "canc", "ord", "id", "env",
    "kind", "created", "body", "token", "result", "errs", "out", "cat", "dst", "snz", "pri",
    "maxa", "prn",
];

#[cfg(test)]
#[test]
fn claim_read_starts_with_what_claim_lua_reads_by_position() {
    // claim.lua's `candidate` reads h[1]..h[11] by position and patches
    // lease (5), att (7), catt (8), ver (9) and the `token` position.
    assert_eq!(
        &CLAIM_READ[..11],
        &[
            "fmt", "bad", "rk", "wait", "lease", "done", "att", "catt", "ver", "canc", "ord"
        ]
    );
    assert!(CLAIM_READ.contains(&"token"));
    assert!(CLAIM_READ.contains(&"pri"));
}

#[cfg(test)]
#[test]
fn claim_read_names_every_field_a_task_hash_may_hold() {
    use oncetask_core::task::TaskParts;

    // Every optional field set, so that encode_task writes them all.
    let now = Utc::now();
    let task: Task = TaskParts {
        resource_key: Some("r".into()),
        wait_until: Some(now),
        leased_until: Some(now),
        done_at: Some(now),
        result: Some(serde_json::json!(1)),
        lease_token: Some(oncetask_core::LeaseToken::from_stored("t")),
        outcome: Some(oncetask_core::Outcome::Completed),
        snoozes: 1,
        priority: 1,
        max_attempts: Some(1),
        pruned_at: Some(now),
        ..Task::new("a", "k", "e", now).into_parts()
    }
    .into();
    let written = encode_task(&task).expect("encodable");
    for (name, _) in written {
        // The listing member and the encoded kind: decode never reads them.
        assert!(
            ["cord", "kenc"].contains(&name) || CLAIM_READ.contains(&name),
            "a claimed task would lose field {name}"
        );
    }
    // The body parts a swap writes.
    for name in ["errs", "out", "cat"] {
        assert!(CLAIM_READ.contains(&name), "{name}");
    }
}

/// Appends `task`'s hash fields to a script invocation: their count, then
/// field/value pairs.
fn push_fields(args: &mut Vec<String>, task: &Task) -> Result<(), StoreError> {
    let encoded = encode_task(task).map_err(|reason| StoreError::Unencodable {
        id: task.id.clone(),
        reason,
    })?;
    args.push(encoded.len().to_string());
    for (name, value) in encoded {
        args.push(name.to_owned());
        args.push(value);
    }
    Ok(())
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

#[async_trait]
impl Store for RedisStore {
    /// Per id: claim the registry entry with `SET NX`, then create the task
    /// in its env's slot (one script call per env). A repeated id within
    /// one call is created once and reported as existing afterwards.
    async fn create(&self, tasks: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError> {
        registry::create(self, tasks).await
    }

    /// One script call: selection and lease in one atomic step (see the
    /// crate docs); another only when a leased hash does not decode. A document whose body cannot be decoded is set aside and
    /// reported; set-aside documents of the kind are reported on every
    /// claim (at most 100 per claim).
    async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
        // The mode's letter, then `o` for the oldest order.
        let (mode, n) = match (request.mode, request.order) {
            (ClaimMode::Single { limit }, ClaimOrder::Priority) => ("s", limit),
            (ClaimMode::Single { limit }, ClaimOrder::Oldest) => ("so", limit),
            (ClaimMode::ResourceGroup { max_group }, ClaimOrder::Priority) => ("g", max_group),
            (ClaimMode::ResourceGroup { max_group }, ClaimOrder::Oldest) => ("go", max_group),
        };
        if n == 0 {
            return Ok(Claimed::default());
        }
        let mut undecodable = Vec::new();
        // A leased hash whose body does not decode is set aside, and the
        // claim tries again, so that it does not hide the ready tasks
        // behind it (a worker that gets nothing sleeps). Each round sets at
        // least one document aside for good, so the rounds are bounded.
        for _ in 0..CLAIM_ROUNDS {
            let (tasks, set_aside) = self.claim_round(request, mode, n, &mut undecodable).await?;
            if !tasks.is_empty() || set_aside == 0 {
                return Ok(Claimed { tasks, undecodable });
            }
        }
        Ok(Claimed {
            tasks: Vec::new(),
            undecodable,
        })
    }

    /// One script call per env: each item is written only if the stored
    /// version is still the fenced one. The script writes only the hash
    /// fields of the swap's change (`doc::encode_change`: never the
    /// payload) and moves only the index entries they change.
    /// The task is looked up in the env
    /// it names (a swap never moves a task to another env); an id found
    /// only in another env is a [`SwapOutcome::Conflict`].
    async fn swap(&self, swaps: &[Swap]) -> Result<Vec<SwapOutcome>, StoreError> {
        // Wall time, like the Postgres store: it only decides whether a
        // released or reset task is announced.
        let now = Utc::now();
        let mut outcomes: Vec<Option<SwapOutcome>> = swaps.iter().map(|_| None).collect();
        let groups = group_by_env(
            swaps
                .iter()
                .enumerate()
                .map(|(i, s)| (s.task().env.clone(), i)),
        );
        let keys = &self.inner.keys;
        for (env, items) in groups {
            let mut args = Vec::new();
            let mut sent = Vec::new();
            for i in items {
                let swap = &swaps[i];
                // The notice the write sends: none when it frees no work.
                let notice = match swap.announce(now) {
                    Announce::Nothing => "0",
                    Announce::Work => "1",
                    Announce::TouchingClaimed => "2",
                };
                match encode_change(swap) {
                    Ok(written) => {
                        args.extend([
                            swap.id().to_owned(),
                            swap.fence().version().to_string(),
                            notice.to_owned(),
                            written.set.len().to_string(),
                        ]);
                        for (name, value) in written.set {
                            args.extend([name.to_owned(), value]);
                        }
                        args.push(written.delete.len().to_string());
                        args.extend(written.delete.into_iter().map(str::to_owned));
                        sent.push(i);
                    }
                    Err(reason) => {
                        outcomes[i] = Some(SwapOutcome::Failed(StoreError::Unencodable {
                            id: swap.id().to_owned(),
                            reason,
                        }))
                    }
                }
            }
            if sent.is_empty() {
                continue;
            }
            let mut conn = self.conn();
            let reply: Value = SCRIPTS
                .swap
                .key(keys.env_route(&env))
                .arg(keys.env_base(&env))
                .arg(sent.len())
                .arg(&args)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let results = array(reply, "swap")?;
            if results.len() != sent.len() {
                return Err(StoreError::backend("swap: one result per item expected"));
            }
            for (i, result) in sent.into_iter().zip(results) {
                let result = string(result, "swap")?;
                outcomes[i] = Some(match result.as_str() {
                    "A" => SwapOutcome::Applied { revision: None },
                    "C" => SwapOutcome::Conflict,
                    "N" => SwapOutcome::NotFound,
                    other => match other.strip_prefix('U') {
                        Some(reason) => SwapOutcome::Failed(StoreError::Undecodable {
                            id: swaps[i].id().to_owned(),
                            reason: reason.to_owned(),
                        }),
                        None => return Err(StoreError::backend(format!("swap: {other:?}"))),
                    },
                });
            }
        }
        self.settle_not_found(swaps, &mut outcomes).await?;
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| StoreError::backend("swap: an item got no outcome")))
            .collect()
    }

    /// Two round trips: the registry says which env holds each id, then one
    /// pipeline reads the task hashes.
    async fn get(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError> {
        let mut seen = HashSet::new();
        let unique: Vec<&String> = ids.iter().filter(|id| seen.insert(id.as_str())).collect();
        if unique.is_empty() {
            return Ok(Vec::new());
        }
        let envs = registry::lookup(self, &unique).await?;
        let located: Vec<(&String, &String)> = unique
            .iter()
            .zip(&envs)
            .filter_map(|(id, env)| env.as_ref().map(|(_, env)| (*id, env)))
            .collect();
        if located.is_empty() {
            return Ok(Vec::new());
        }
        let reads = located
            .iter()
            .map(|(id, env)| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(self.inner.keys.task(env, id));
                cmd
            })
            .collect();
        let replies = self.conn().query_each(reads).await.map_err(redis_error)?;
        let mut out = Vec::with_capacity(located.len());
        for ((id, _), reply) in located.into_iter().zip(replies) {
            let stored = fields(reply, "get")?;
            if stored.is_empty() {
                continue;
            }
            out.push(match decode(&stored) {
                Decoded::Task(task) => Fetched::Task(*task),
                Decoded::Raw { reason, .. } => Fetched::Undecodable(Undecodable {
                    id: id.clone(),
                    reason,
                }),
            });
        }
        Ok(out)
    }

    /// Reads the narrowest listing index (resource key, else kind, else
    /// env) in creation order from the filter's cursor on (a lex range of
    /// the index), 256 tasks per script call, and filters in
    /// Rust with [`TaskFilter::matches`]; stops once `offset + limit`
    /// matches are found. When every status the filter wants is a done
    /// status, the script reads 1024 members per call and returns only the
    /// tasks whose stored done status (`dst`, which is the task's status
    /// at any time) is one of them. An id prefix is checked in the script
    /// on the member, which holds the id (1024 members per call, no hash
    /// read for the others); a creation-time end is the range's end. Pages
    /// are read one after the other, not as one snapshot.
    async fn find(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let keys = &self.inner.keys;
        let listing = keys.listing(
            &filter.env,
            filter.kind.as_deref(),
            filter.resource_key.as_deref(),
        );
        let want = filter
            .limit
            .map_or(usize::MAX, |l| l.saturating_add(filter.offset));
        let mut matched = Vec::new();
        // Listing members are the `cord` encoding: creation time, then id.
        let mut start = match &filter.after {
            None => b"-".to_vec(),
            Some(c) => format!("({}{}", doc::order_time(c.created_at), c.id).into_bytes(),
        };
        let (done_statuses, scan) = done_statuses_of(filter);
        // Inclusive: every member of the end time, whatever its id (no
        // UTF-8 id holds the byte 0xff).
        let end = match filter.created_until {
            None => b"+".to_vec(),
            Some(end) => {
                let mut bound = format!("[{}", doc::order_time(end)).into_bytes();
                bound.push(0xff);
                bound
            }
        };
        let mut conn = self.conn();
        while matched.len() < want {
            let reply: Value = SCRIPTS
                .list
                .key(&listing)
                .arg(keys.env_base(&filter.env))
                .arg(&start)
                .arg(scan)
                .arg(&done_statuses)
                .arg(&end)
                .arg(filter.id_prefix.as_deref().unwrap_or(""))
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let mut parts = array(reply, "find")?.into_iter();
            let (Some(last), Some(page), Some(read)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(StoreError::backend("unexpected reply to find"));
            };
            let page = array(page, "find")?;
            let full = usize::try_from(int(read, "find")?).unwrap_or(0) >= scan;
            for stored in page {
                if let Decoded::Task(task) = decode(&fields(stored, "find")?)
                    && filter.matches(&task)
                {
                    matched.push(*task);
                }
            }
            if !full {
                break;
            }
            start = b"(".to_vec();
            start.extend(scripts::bytes(last, "find")?);
        }
        Ok(matched
            .into_iter()
            .skip(filter.offset)
            .take(filter.limit.unwrap_or(usize::MAX))
            .collect())
    }

    /// The `gens` set: see the `operator` module.
    async fn find_generators(&self, env: &str, limit: usize) -> Result<Vec<Task>, StoreError> {
        self.generators(env, limit).await
    }

    /// The per-kind sets of undecodable documents: see the `operator` module.
    async fn find_undecodable(
        &self,
        env: &str,
        limit: usize,
    ) -> Result<Vec<oncetask_core::store::Undecodable>, StoreError> {
        self.undecodable(env, limit).await
    }

    /// One script call: done tasks from counters, open tasks from the
    /// lease and wait indexes at `now` (exactly [`Task::status`]), and the
    /// documents set aside as undecodable (by `insert_undecodable`, or by a
    /// claim that met a task it could not decode) from their per-kind
    /// index. A hash corrupted in place is counted by the status its index
    /// entries give until a claim meets it and sets it aside.
    async fn count_by_status(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StatusCounts, StoreError> {
        let keys = &self.inner.keys;
        let mut conn = self.conn();
        let reply: Value = SCRIPTS
            .count
            .key(keys.env_route(env))
            .arg(keys.env_base(env))
            .arg(millis(now))
            .arg(doc::order_time(now))
            .arg(kind.map_or_else(|| "*".to_owned(), |k| format!("1{}", encode(k))))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let mut counts = StatusCounts::new();
        let mut items = array(reply, "count_by_status")?.into_iter();
        while let (Some(status), Some(n)) = (items.next(), items.next()) {
            let name = string(status, "count_by_status")?;
            let n = u64::try_from(int(n, "count_by_status")?).unwrap_or(0);
            if name == "undecodable" {
                counts.undecodable += n;
                continue;
            }
            let status: TaskStatus = name.parse().map_err(StoreError::backend)?;
            counts.add(status, n);
        }
        Ok(counts)
    }

    /// Looks the ids up in the registry, deletes with one script call per
    /// env (version checks inside it), then releases the registry entries.
    async fn delete(&self, deletes: &[Delete]) -> Result<Vec<DeleteOutcome>, StoreError> {
        registry::delete(self, deletes).await
    }

    /// One `ZRANGEBYSCORE` on the kind's due-time index.
    async fn next_due(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut conn = self.conn();
        let reply: Value = redis::cmd("ZRANGEBYSCORE")
            .arg(self.inner.keys.due(env, kind))
            .arg(format!("({}", millis(after)))
            .arg("+inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let Some(score) = array(reply, "next_due")?.into_iter().nth(1) else {
            return Ok(None);
        };
        let score = match score {
            Value::Double(d) => d,
            other => {
                let text = string(other.clone(), "next_due")?;
                text.parse::<f64>()
                    .map_err(|_| unexpected("next_due", &other))?
            }
        };
        #[allow(clippy::cast_possible_truncation)] // scores are integer milliseconds
        let ms = score as i64;
        Ok(DateTime::<Utc>::from_timestamp_millis(ms))
    }
    /// Lex ranges of the status's finished index (`fin:<status>:<kind>`,
    /// or `pr:<status>:<kind>` for tombstones: members `<done hex><id>`),
    /// from the cursor to `finished_by`, one script call per 500 entries.
    /// On a kind that had tasks before the index existed, the first call
    /// builds it ([`RedisStore::backfill_finished`]).
    async fn find_finished(&self, query: &FinishedQuery) -> Result<Vec<Task>, StoreError> {
        self.finished(query).await
    }

    /// One script: `SADD`/`SREM` on the env's `paused` set and, on a
    /// change, a notice on the `changes` channel.
    async fn set_paused(&self, env: &str, kind: &str, paused: bool) -> Result<bool, StoreError> {
        self.pause(env, kind, paused).await
    }

    /// `SMEMBERS` of the env's `paused` set.
    async fn paused_kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        self.paused(env).await
    }

    /// One script call per env (and 200 requests): each limiter is a hash
    /// (`rl:<kind>`, `rlk:<kind>:<key>`) of its window and starts taken,
    /// updated by the script, and expires two periods after its last take.
    async fn take_starts(&self, requests: &[StartsRequest]) -> Result<Vec<u32>, StoreError> {
        self.starts(requests, true).await
    }

    /// As [`Store::take_starts`], lowering the count of the window.
    async fn return_starts(&self, requests: &[StartsRequest]) -> Result<(), StoreError> {
        self.starts(requests, false).await.map(drop)
    }

    /// Per kind: the counts of [`Store::count_by_status`] (tombstones, from
    /// the pruned-task index, apart), and bytes from `MEMORY USAGE` of up
    /// to [`STATS_SAMPLE`] random task hashes per status, extrapolated;
    /// plus `INFO memory` figures of the whole server.
    async fn storage_stats(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<StorageStats, StoreError> {
        self.storage(env, now).await
    }

    /// A claim is one server-side script, run one at a time: a second
    /// claim in flight never races the first.
    fn concurrent_claims(&self) -> usize {
        2
    }

    fn claims_ahead(&self) -> bool {
        true
    }

    /// A stream fed by a pub/sub connection of its own on the env's channel,
    /// reconnecting (every 500 ms) after errors; after a reconnect every
    /// kind of the env is announced once. `None` outside a tokio runtime or
    /// for a store made with [`RedisStore::from_connection`] alone.
    fn subscribe(&self, env: &str) -> Option<BoxStream<'static, Notification>> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        if self.inner.pubsub.is_empty() {
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Notification>(256);
        handle.spawn(notify::listen(
            self.inner.pubsub.clone(),
            self.conn(),
            self.inner.keys.clone(),
            env.to_owned(),
            tx,
        ));
        Some(
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|n| (n, rx)) })
                .boxed(),
        )
    }
}

//! The id registry: ids are unique across environments although each
//! environment lives in its own hash slot.
//!
//! The entry `<prefix>:id:<id>` holds `<generation>:<env>`: the env whose
//! slot holds the task, and a random generation naming one attempt to
//! create it. The protocol keeps one invariant — *a task stored in env E
//! under generation g implies the entry `g:E`* — with single-slot steps
//! only:
//!
//! * **create**: `SET entry g:E NX GET`. The creator that set the entry
//!   runs the env's create script with g; nobody else ever creates under g.
//!   The script refuses if g has been fenced (below). A creator that finds
//!   an entry instead checks the task in the entry's env: present means
//!   "already exists" (or "exists in another env"); absent means a two-step
//!   creator is between its steps or crashed there, or a delete crashed
//!   before releasing the entry. After a few short waits the
//!   entry is *fenced*: a script in the entry's env writes a tombstone for
//!   its generation (expiring after a day) unless the task appeared
//!   meanwhile; from then on no create under that generation can land, so
//!   the entry is released (compare-and-delete) and the creator starts over.
//!   On a standalone server ([`RedisStore::single_server`]) the create
//!   script runs the `SET` itself, so taking the entry and creating the
//!   task are one step (one round trip); a cluster, or a proxy, keeps the
//!   two steps, since the entry may live on another node.
//! * **delete**: look the entry up, delete the task in its env's slot (the
//!   script returns the task's generation), then compare-and-delete the
//!   entry with that generation. A crash between the two leaves an entry
//!   without a task: reads ignore it and the next create fences it.
//! * **get**: look the entry up, read the task in its env's slot.
//!
//! The only window the protocol cannot close is a creator paused for longer
//! than the tombstone's day between its two steps.

use std::collections::HashMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oncetask_core::store::{CreateOutcome, Delete, DeleteOutcome};
use oncetask_core::{StoreError, Task};
use redis::Value;

use crate::scripts::{REGISTRY_RELEASE, SCRIPTS, array, opt_string, redis_error, string};
use crate::{RedisStore, group_by_env, push_fields};

/// How long a fenced generation's tombstone lives.
const FENCE_TTL_SECS: u64 = 86_400;
/// Rounds a create may take before it gives up on an id.
const ROUNDS: u32 = 24;
/// Rounds a registry entry without its task is waited for before fencing.
const PATIENCE: u32 = 3;
/// Create script calls of one `create` sent before the first answers.
const CREATES_IN_FLIGHT: usize = 4;

/// A fresh generation.
pub(crate) fn new_generation() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The registry value for `generation` in `env`.
pub(crate) fn entry(generation: &str, env: &str) -> String {
    format!("{generation}:{env}")
}

/// `(generation, env)` of a registry value.
fn parse(value: &str) -> Option<(String, String)> {
    value
        .split_once(':')
        .map(|(g, e)| (g.to_owned(), e.to_owned()))
}

/// The registry entries of `ids`: `(generation, env)` or `None`.
pub(crate) async fn lookup(
    store: &RedisStore,
    ids: &[&String],
) -> Result<Vec<Option<(String, String)>>, StoreError> {
    let reads = ids
        .iter()
        .map(|id| {
            let mut cmd = redis::cmd("GET");
            cmd.arg(store.inner.keys.registry(id));
            cmd
        })
        .collect();
    let replies = store.conn().query_each(reads).await.map_err(redis_error)?;
    replies
        .into_iter()
        .map(|v| Ok(opt_string(v, "registry lookup")?.as_deref().and_then(parse)))
        .collect()
}

/// Releases registry entries whose value is still as given.
async fn release(store: &RedisStore, entries: &[(String, String)]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let releases = entries
        .iter()
        .map(|(id, value)| {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(REGISTRY_RELEASE)
                .arg(1)
                .arg(store.inner.keys.registry(id))
                .arg(value);
            cmd
        })
        .collect();
    store
        .conn()
        .query_each(releases)
        .await
        .map(drop)
        .map_err(redis_error)
}

/// One first copy of an id still being created.
struct Pending {
    /// Index in the input.
    index: usize,
    /// The task's encoded hash fields (count first).
    fields: Vec<String>,
    /// The generation tried in this round.
    generation: String,
    /// A registry value seen without its task, and in how many rounds.
    seen: Option<(String, u32)>,
}

/// The outcome for a task whose id is held by env `held_in`.
fn existing(task: &Task, held_in: String) -> CreateOutcome {
    if held_in == task.env {
        CreateOutcome::AlreadyExists
    } else {
        CreateOutcome::ExistsInOtherEnv { env: held_in }
    }
}

/// [`oncetask_core::Store::create`] through the registry (see the module docs).
pub(crate) async fn create(
    store: &RedisStore,
    tasks: Vec<Task>,
) -> Result<Vec<CreateOutcome>, StoreError> {
    let mut outcomes: Vec<Option<CreateOutcome>> = tasks.iter().map(|_| None).collect();
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut pending = Vec::new();
    for (index, task) in tasks.iter().enumerate() {
        if first_of.contains_key(task.id.as_str()) {
            continue;
        }
        first_of.insert(task.id.as_str(), index);
        let mut fields = Vec::new();
        match push_fields(&mut fields, task) {
            Ok(()) => pending.push(Pending {
                index,
                fields,
                generation: String::new(),
                seen: None,
            }),
            Err(e) => outcomes[index] = Some(CreateOutcome::Failed(e)),
        }
    }
    let keys = &store.inner.keys;
    for round in 0..ROUNDS {
        if pending.is_empty() {
            break;
        }
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(2u64 << round.min(6))).await;
        }
        for p in &mut pending {
            p.generation = new_generation();
        }
        let mut conn = store.conn();
        let mut held = Vec::new();
        // 1. On one server the create script takes the registry entries
        // itself (one round trip); on a cluster (or behind a proxy) the
        // entries may live elsewhere, so they are taken first, then the
        // tasks created.
        let registry_prefix = if !store.single_server().await {
            let mut claims = Vec::with_capacity(pending.len());
            for p in &pending {
                let task = &tasks[p.index];
                let mut cmd = redis::cmd("SET");
                cmd.arg(keys.registry(&task.id))
                    .arg(entry(&p.generation, &task.env))
                    .arg("NX")
                    .arg("GET");
                claims.push(cmd);
            }
            let replies = conn.query_each(claims).await.map_err(redis_error)?;
            let mut owned = Vec::new();
            for (p, reply) in std::mem::take(&mut pending).into_iter().zip(replies) {
                match opt_string(reply, "registry")? {
                    None => owned.push(p),
                    Some(value) => held.push((p, value)),
                }
            }
            pending = owned;
            String::new()
        } else {
            keys.registry("")
        };
        // 2. Create the tasks, one script call per env (and batch of
        // SCRIPT_BATCH), CREATES_IN_FLIGHT of them on the wire at once.
        let groups = group_by_env(
            std::mem::take(&mut pending)
                .into_iter()
                .map(|p| (tasks[p.index].env.clone(), p)),
        );
        let calls: Vec<_> = groups
            .iter()
            .map(|(env, group)| {
                let mut args = vec![
                    group.len().to_string(),
                    registry_prefix.clone(),
                    if registry_prefix.is_empty() {
                        String::new()
                    } else {
                        env.clone()
                    },
                ];
                for p in group {
                    args.push(tasks[p.index].id.clone());
                    args.push(p.generation.clone());
                    args.extend(p.fields.iter().cloned());
                }
                let (route, base, mut conn) =
                    (keys.env_route(env), keys.env_base(env), conn.clone());
                // Owns what it sends, so that the calls can be queued.
                async move {
                    let reply: Value = SCRIPTS
                        .create
                        .key(route)
                        .arg(base)
                        .arg(&args)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(redis_error)?;
                    array(reply, "create")
                }
            })
            .collect();
        // A few calls in flight at once: each waits at most
        // RESPONSE_TIMEOUT from when it is sent, and Redis runs them one
        // after another.
        let replies: Vec<Vec<Value>> = futures::stream::iter(calls)
            .buffered(CREATES_IN_FLIGHT)
            .try_collect()
            .await?;
        for ((_, group), results) in groups.into_iter().zip(replies) {
            if results.len() != group.len() {
                return Err(StoreError::backend("create: one result per item expected"));
            }
            for (p, result) in group.into_iter().zip(results) {
                let result = string(result, "create")?;
                match result.as_str() {
                    "C" => outcomes[p.index] = Some(CreateOutcome::Created),
                    "X" => outcomes[p.index] = Some(CreateOutcome::AlreadyExists),
                    "F" => pending.push(p),
                    other => match other.strip_prefix('H') {
                        Some(value) => held.push((p, value.to_owned())),
                        None => return Err(StoreError::backend(format!("create: {other:?}"))),
                    },
                }
            }
        }
        // 3. Entries held by someone else: is their task there?
        let mut probe = Vec::new();
        let mut parsed = Vec::new();
        for (p, value) in held {
            let Some((generation, env)) = parse(&value) else {
                outcomes[p.index] = Some(CreateOutcome::Failed(StoreError::backend(format!(
                    "malformed registry entry {value:?} for task {}",
                    tasks[p.index].id
                ))));
                continue;
            };
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(keys.task(&env, &tasks[p.index].id));
            probe.push(cmd);
            parsed.push((p, value, generation, env));
        }
        let mut to_fence = Vec::new();
        if !parsed.is_empty() {
            let found = conn.query_each(probe).await.map_err(redis_error)?;
            for ((mut p, value, generation, env), exists) in parsed.into_iter().zip(found) {
                if exists == Value::Int(1) {
                    outcomes[p.index] = Some(existing(&tasks[p.index], env));
                    continue;
                }
                let misses = match &p.seen {
                    Some((v, n)) if *v == value => n + 1,
                    _ => 1,
                };
                p.seen = Some((value.clone(), misses));
                if misses >= PATIENCE {
                    to_fence.push((p, value, generation, env));
                } else {
                    pending.push(p);
                }
            }
        }
        // 4. Fence entries whose task never appeared, then release them.
        let mut released = Vec::new();
        let groups = group_by_env(to_fence.into_iter().map(|f| (f.3.clone(), f)));
        for (env, group) in groups {
            let mut args = vec![FENCE_TTL_SECS.to_string()];
            for (p, _, generation, _) in &group {
                args.push(tasks[p.index].id.clone());
                args.push(generation.clone());
            }
            let reply: Value = SCRIPTS
                .fence
                .key(keys.env_route(&env))
                .arg(keys.env_base(&env))
                .arg(&args)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let results = array(reply, "fence")?;
            for ((p, value, _, env), result) in group.into_iter().zip(results) {
                if string(result, "fence")? == "X" {
                    outcomes[p.index] = Some(existing(&tasks[p.index], env));
                } else {
                    released.push((tasks[p.index].id.clone(), value));
                    pending.push(p);
                }
            }
        }
        release(store, &released).await?;
    }
    for p in pending {
        outcomes[p.index] = Some(CreateOutcome::Failed(StoreError::backend(format!(
            "task {}: the id registry kept changing; try again",
            tasks[p.index].id
        ))));
    }
    // Later copies of an id compare with what its first copy found.
    for (index, task) in tasks.iter().enumerate() {
        let Some(&first) = first_of.get(task.id.as_str()) else {
            continue;
        };
        if first == index {
            continue;
        }
        let held_in = match &outcomes[first] {
            Some(CreateOutcome::Created | CreateOutcome::AlreadyExists) => {
                Some(tasks[first].env.clone())
            }
            Some(CreateOutcome::ExistsInOtherEnv { env }) => Some(env.clone()),
            _ => None,
        };
        outcomes[index] = Some(match held_in {
            Some(env) => existing(task, env),
            None => CreateOutcome::Failed(StoreError::backend(format!(
                "task {}: an earlier copy in this call failed",
                task.id
            ))),
        });
    }
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| StoreError::backend("create: an item got no outcome")))
        .collect()
}

/// [`oncetask_core::Store::delete`] through the registry (see the module docs).
pub(crate) async fn delete(
    store: &RedisStore,
    deletes: &[Delete],
) -> Result<Vec<DeleteOutcome>, StoreError> {
    if deletes.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&String> = deletes.iter().map(|d| &d.id).collect();
    let entries = lookup(store, &ids).await?;
    let mut outcomes: Vec<Option<DeleteOutcome>> = deletes.iter().map(|_| None).collect();
    let mut located = Vec::new();
    for (i, found) in entries.into_iter().enumerate() {
        match found {
            Some((_, env)) => located.push((env, i)),
            None => outcomes[i] = Some(DeleteOutcome::NotFound),
        }
    }
    let keys = &store.inner.keys;
    let mut released = Vec::new();
    let mut conn = store.conn();
    for (env, group) in group_by_env(located) {
        let mut args = Vec::new();
        for &i in &group {
            args.push(deletes[i].id.clone());
            args.push(
                deletes[i]
                    .expected_version
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            );
        }
        let reply: Value = SCRIPTS
            .delete
            .key(keys.env_route(&env))
            .arg(keys.env_base(&env))
            .arg(&args)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        for (i, result) in group.into_iter().zip(array(reply, "delete")?) {
            let result = string(result, "delete")?;
            outcomes[i] = Some(match result.as_str() {
                "N" => DeleteOutcome::NotFound,
                "C" => DeleteOutcome::Conflict,
                other => match other.strip_prefix('D') {
                    Some(generation) => {
                        released.push((deletes[i].id.clone(), entry(generation, &env)));
                        DeleteOutcome::Deleted
                    }
                    None => return Err(StoreError::backend(format!("delete: {other:?}"))),
                },
            });
        }
    }
    release(store, &released).await?;
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| StoreError::backend("delete: an item got no outcome")))
        .collect()
}

#[cfg(test)]
mod tests {
    //! The fence protocol against the server at `ONCETASK_REDIS_URL`
    //! (default `redis://127.0.0.1:6379`), each test under its own prefix.

    use super::*;
    use chrono::Utc;
    use oncetask_core::Store;
    use oncetask_core::store::Fetched;

    async fn store() -> RedisStore {
        let url = std::env::var("ONCETASK_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let prefix = format!(
            "oncetask-test:{}:{}",
            Utc::now().timestamp(),
            uuid::Uuid::new_v4().simple()
        );
        RedisStore::connect(&url, &prefix).await.unwrap_or_else(|e| {
            panic!("cannot reach Redis at {url} ({e}); start it (see scripts/test) or set ONCETASK_REDIS_URL")
        })
    }

    async fn set_entry(store: &RedisStore, id: &str, value: &str) {
        let mut conn = store.conn();
        redis::cmd("SET")
            .arg(store.inner.keys.registry(id))
            .arg(value)
            .query_async::<()>(&mut conn)
            .await
            .expect("SET");
    }

    async fn get_entry(store: &RedisStore, id: &str) -> Option<String> {
        let mut conn = store.conn();
        redis::cmd("GET")
            .arg(store.inner.keys.registry(id))
            .query_async(&mut conn)
            .await
            .expect("GET")
    }

    fn task(id: &str, env: &str) -> Task {
        Task::new(id, "kind", env, Utc::now())
    }

    /// An entry left by a creator that died between its two steps (in
    /// another env, or in the same one) does not block the id: it is fenced,
    /// released, and the create goes through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_orphaned_entry_is_fenced_and_the_id_created() {
        let store = store().await;
        set_entry(&store, "x", "dead1:prod").await;
        set_entry(&store, "y", "dead2:test").await;
        let outcomes = store
            .create(vec![task("x", "test"), task("y", "test")])
            .await
            .expect("create");
        assert!(
            outcomes.iter().all(|o| matches!(o, CreateOutcome::Created)),
            "{outcomes:?}"
        );
        for id in ["x", "y"] {
            let entry = get_entry(&store, id).await.expect("an entry");
            assert!(
                entry.ends_with(":test") && !entry.starts_with("dead"),
                "{entry}"
            );
        }
        let fetched = store
            .get(&["x".to_owned(), "y".to_owned()])
            .await
            .expect("get");
        assert!(
            fetched
                .iter()
                .all(|f| matches!(f, Fetched::Task(t) if t.env == "test"))
        );
        // A creator that wakes up late with a fenced generation cannot land.
        let mut fields = Vec::new();
        push_fields(&mut fields, &task("x", "prod")).expect("encode");
        // The cluster's two-step form: the caller holds the entry already.
        let mut args = vec![
            "1".to_owned(),
            String::new(),
            String::new(),
            "x".to_owned(),
            "dead1".to_owned(),
        ];
        args.extend(fields);
        let mut conn = store.conn();
        let reply: Vec<String> = SCRIPTS
            .create
            .key(store.inner.keys.env_route("prod"))
            .arg(store.inner.keys.env_base("prod"))
            .arg(&args)
            .invoke_async(&mut conn)
            .await
            .expect("create script");
        assert_eq!(reply, vec!["F"]);
        let exists: bool = redis::cmd("EXISTS")
            .arg(store.inner.keys.task("prod", "x"))
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        assert!(!exists, "the late create wrote nothing");
        store.purge().await.expect("purge");
    }

    /// The test server is one standalone server: creates take their
    /// registry entry inside the create script (one round trip), and a
    /// task found without its entry is reported, never written over.
    #[tokio::test]
    async fn a_standalone_server_creates_in_one_trip_and_never_overwrites() {
        let store = store().await;
        assert!(store.single_server().await, "INFO server: not standalone");
        let outcomes = store
            .create(vec![task("lone", "test")])
            .await
            .expect("create");
        assert!(matches!(outcomes[..], [CreateOutcome::Created]));
        // Lose the entry (as a hand-made DEL or a partial restore would).
        let mut conn = store.conn();
        let _: () = redis::cmd("DEL")
            .arg(store.inner.keys.registry("lone"))
            .query_async(&mut conn)
            .await
            .expect("DEL");
        let mut again = task("lone", "test");
        again.attempts = 7;
        let outcomes = store.create(vec![again]).await.expect("create");
        assert!(matches!(outcomes[..], [CreateOutcome::AlreadyExists]));
        let attempts: Option<String> = redis::cmd("HGET")
            .arg(store.inner.keys.task("test", "lone"))
            .arg("att")
            .query_async(&mut conn)
            .await
            .expect("HGET");
        assert_eq!(
            attempts.as_deref(),
            Some("0"),
            "the stored task was not rewritten"
        );
        // The entry names the stored task's generation again, so a delete
        // releases it.
        let deleted = store.delete(&[Delete::any("lone")]).await.expect("delete");
        assert!(matches!(deleted[..], [DeleteOutcome::Deleted]));
        assert_eq!(get_entry(&store, "lone").await, None, "entry released");
        store.purge().await.expect("purge");
    }

    /// Creators of one id in two envs at once: exactly one is created, the
    /// other learns where the id lives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creates_in_two_envs_create_the_id_once() {
        let store = store().await;
        for round in 0..20 {
            let id = format!("race-{round}");
            let (a, b) = tokio::join!(
                store.create(vec![task(&id, "a")]),
                store.create(vec![task(&id, "b")])
            );
            let outcomes = [a.expect("create a"), b.expect("create b")];
            let created = outcomes
                .iter()
                .filter(|o| matches!(o[0], CreateOutcome::Created))
                .count();
            let elsewhere = outcomes
                .iter()
                .filter(|o| matches!(o[0], CreateOutcome::ExistsInOtherEnv { .. }))
                .count();
            assert_eq!((created, elsewhere), (1, 1), "{outcomes:?}");
        }
        store.purge().await.expect("purge");
    }
}

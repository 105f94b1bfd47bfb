//! Tests beyond the shared conformance suite: the shared multi-manager
//! scenarios of `oncetask_conformance::fleet` (several managers on separate
//! connections, as separate processes would have; wake-ups across
//! managers), then Redis-specific ones: hostile names, undecodable
//! payloads, round-trip cost, and what a server restart does with and
//! without AOF.
//!
//! Each test works under a key prefix of its own and deletes its keys at
//! the end. The server is `ONCETASK_REDIS_URL` (default
//! `redis://127.0.0.1:6379`); an unreachable server fails the tests. The
//! restart tests start their own `redis-server` on a free loopback port.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use oncetask_conformance::fleet::{
    self, Fleet, Job, KIND, every_task_runs_once_across_managers, wait_for,
    wake_up_latencies_across_managers,
};
use oncetask_conformance::notify::notices_of_writes;
use oncetask_core::lifecycle::{self, LeaseGrant};
use oncetask_core::manager::handler_fn;
use oncetask_core::store::{
    Change, ClaimMode, ClaimRequest, CreateOutcome, Delete, DeleteOutcome, Fetched, Swap,
    SwapOutcome, TaskFilter,
};
use oncetask_core::{HandlerOptions, Manager, Store, StoreError, Task, TaskStatus};
use oncetask_redis::{RedisStore, key_slot};

const ENV: &str = "test";

fn manager(store: &RedisStore, poll: Duration) -> Manager {
    fleet::manager(Arc::new(store.clone()), ENV, poll)
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 6, 8, 0, 0)
        .single()
        .expect("a valid time")
}

/// Every key of the store's prefix.
async fn all_keys(store: &RedisStore) -> Vec<Vec<u8>> {
    let mut conn = store.connection();
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:*", store.prefix()))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        out.extend(keys);
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

/// Three managers, each on its own connection with 8 workers, share 3000
/// tasks on 40 resource keys (and 600 without a key) — the shared fleet
/// scenario: every task completes exactly once, no two tasks of one key
/// ever run at the same time, nothing stays leased. Then, Redis-specific:
/// the claim indexes end empty. Prints the throughput.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_managers_run_every_task_once_and_never_overlap_a_key() {
    let prefix = common::new_prefix();
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(common::store_on(&prefix).await));
    }
    let fleet = Fleet {
        tasks: 3000,
        keys: 40,
        concurrency: 8,
        deadline: Duration::from_secs(240),
    };
    let started = Instant::now();
    every_task_runs_once_across_managers(stores, ENV, fleet).await;
    let elapsed = started.elapsed();
    eprintln!(
        "{} tasks, 3 managers x 8 workers: {elapsed:?} ({:.0} tasks/s, one claim and one swap \
         round trip per task)",
        fleet.tasks,
        f64::from(fleet.tasks) / elapsed.as_secs_f64()
    );
    let store = common::store_on(&prefix).await;
    let base = store.env_key_base(ENV);
    let keys = all_keys(&store).await;
    // "wf", "wl", "kf" and "kh" with every priority band ("wf:", "wf+5:").
    for index in [
        "wf", "wl", "due:", "pk:", "sw:", "kf", "kl:", "kg:", "kh", "pb:",
    ] {
        let left: Vec<String> = keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .filter(|k| k.starts_with(&format!("{base}{index}")))
            .collect();
        assert!(
            left.is_empty(),
            "claim index {index} is empty once every task is done: {left:?}"
        );
    }
    store.purge().await.expect("purge");
}

/// A task created through one manager starts on another (its own
/// connections, idle, polling only every 60 s) at once: the pub/sub
/// wake-up. Prints the latencies; asserts only that each beat the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_on_one_manager_starts_on_another_without_waiting_for_a_poll() {
    let prefix = common::new_prefix();
    let (producer, worker) = (
        common::store_on(&prefix).await,
        common::store_on(&prefix).await,
    );
    let mut latencies =
        wake_up_latencies_across_managers(Arc::new(producer.clone()), Arc::new(worker), ENV, 10)
            .await;
    latencies.sort();
    eprintln!(
        "cross-manager wake-up latency (create -> handler start), sorted: {latencies:?}; \
         median {:?}",
        latencies[latencies.len() / 2]
    );
    producer.purge().await.expect("purge");
}

/// Names with `:`, `{`, `}`, spaces, unicode and 10 000 characters, and
/// pairs that would collide under naive concatenation: every task reads back
/// exactly, every query sees only its own env/kind/key, claims and resource
/// keys stay apart, every key of an env hashes to that env's slot, and
/// deleting the tasks leaves no key behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_never_collide_and_stay_in_their_env_slot() {
    let store = common::store_on(&common::new_prefix()).await;
    let long = "{ü:}".repeat(2500);
    let envs = [
        "a".to_owned(),
        "a:b".to_owned(),
        "{a}".to_owned(),
        "a}{b".to_owned(),
        "".to_owned(),
        "ünï côdé 🚀".to_owned(),
        "%7B".to_owned(),
        long.clone(),
    ];
    let kinds = ["b", "b:c", "{b}", "", " ", "%3A", long.as_str()];
    let keys: [Option<&str>; 5] = [None, Some("k"), Some("{k}"), Some("k:"), Some(&long)];
    let now = base_time();
    let mut tasks = Vec::new();
    let mut n = 0;
    for env in &envs {
        for kind in &kinds {
            for key in keys {
                // Ids are global: make them unique, but hostile too.
                let id = format!("{{id}}:{n}:{env}:{kind}");
                let mut task = Task::new(id, *kind, env.as_str(), now);
                task.resource_key = key.map(str::to_owned);
                task.data.insert("n".into(), serde_json::json!(n));
                tasks.push(task);
                n += 1;
            }
        }
    }
    let outcomes = store.create(tasks.clone()).await.expect("create");
    assert!(
        outcomes.iter().all(|o| matches!(o, CreateOutcome::Created)),
        "{outcomes:?}"
    );
    let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let fetched = store.get(&ids).await.expect("get");
    assert_eq!(fetched.len(), tasks.len());
    for (f, t) in fetched.iter().zip(&tasks) {
        assert!(
            matches!(f, Fetched::Task(got) if got == t),
            "{} read back",
            t.id
        );
    }
    for env in &envs {
        let all = store
            .find(&TaskFilter::env(env.as_str(), now))
            .await
            .expect("find");
        assert_eq!(all.len(), kinds.len() * keys.len(), "env {env:?}");
        assert!(all.iter().all(|t| &t.env == env));
        for kind in &kinds {
            let mut filter = TaskFilter::env(env.as_str(), now);
            filter.kind = Some((*kind).to_owned());
            let of_kind = store.find(&filter).await.expect("find by kind");
            assert_eq!(of_kind.len(), keys.len(), "env {env:?} kind {kind:?}");
            let counts = store
                .count_by_status(env, Some(kind), now)
                .await
                .expect("count");
            assert_eq!(
                counts.get(&TaskStatus::Pending).copied(),
                Some(keys.len() as u64)
            );
            // A single claim takes one task per resource key: all of this env/kind.
            let request = ClaimRequest {
                env: env.clone(),
                kind: (*kind).to_owned(),
                now,
                grant: LeaseGrant::new(now, Duration::from_secs(60)),
                mode: ClaimMode::Single { limit: 100 },
                order: oncetask_core::store::ClaimOrder::Priority,
            };
            let claimed = store.claim(&request).await.expect("claim");
            assert_eq!(claimed.tasks.len(), keys.len(), "env {env:?} kind {kind:?}");
            assert!(
                claimed
                    .tasks
                    .iter()
                    .all(|t| &t.env == env && t.kind == *kind)
            );
            // Every key of this env/kind is busy now, in this env/kind only.
            let again = store.claim(&request).await.expect("claim again");
            assert!(again.tasks.is_empty());
        }
        for key in keys.iter().flatten() {
            let mut filter = TaskFilter::env(env.as_str(), now);
            filter.resource_key = Some((*key).to_owned());
            let of_key = store.find(&filter).await.expect("find by key");
            assert_eq!(of_key.len(), kinds.len(), "env {env:?} key {key:?}");
        }
    }
    // Slot safety: every key but the id registry starts with its env's base
    // and hashes to the slot of that env.
    let bases: BTreeMap<Vec<u8>, u16> = envs
        .iter()
        .map(|env| {
            let base = store.env_key_base(env);
            let slot = key_slot(format!("{base}kinds").as_bytes());
            (base.into_bytes(), slot)
        })
        .collect();
    let registry = format!("{}:id:", store.prefix()).into_bytes();
    let mut per_env: BTreeMap<&[u8], usize> = BTreeMap::new();
    let keys_of_tasks = all_keys(&store).await;
    for key in &keys_of_tasks {
        if key.starts_with(&registry) {
            continue;
        }
        let owners: Vec<(&Vec<u8>, &u16)> = bases
            .iter()
            .filter(|(base, _)| key.starts_with(base))
            .collect();
        assert_eq!(
            owners.len(),
            1,
            "key {:?} belongs to exactly one env",
            String::from_utf8_lossy(key)
        );
        let (base, slot) = owners[0];
        assert_eq!(key_slot(key), *slot, "{}", String::from_utf8_lossy(key));
        *per_env.entry(base.as_slice()).or_default() += 1;
    }
    assert_eq!(per_env.len(), envs.len(), "every env has keys of its own");
    let slots: BTreeSet<u16> = bases.values().copied().collect();
    eprintln!(
        "{} keys for {} tasks in {} envs, spread over {} hash slots",
        keys_of_tasks.len(),
        tasks.len(),
        envs.len(),
        slots.len()
    );
    // Ids stay global across hostile envs.
    let mut copy = tasks[0].clone();
    copy.env = envs[1].clone();
    let outcomes = store.create(vec![copy]).await.expect("create");
    assert!(
        matches!(&outcomes[0], CreateOutcome::ExistsInOtherEnv { env } if *env == envs[0]),
        "{outcomes:?}"
    );
    let deletes: Vec<Delete> = ids.iter().map(Delete::any).collect();
    let outcomes = store.delete(&deletes).await.expect("delete");
    assert!(outcomes.iter().all(|o| matches!(o, DeleteOutcome::Deleted)));
    // Deleting every task leaves no key behind: no index entry, counter,
    // parked key or registry entry.
    let left: Vec<String> = all_keys(&store)
        .await
        .iter()
        .map(|k| String::from_utf8_lossy(k).chars().take(200).collect())
        .collect();
    assert!(
        left.is_empty(),
        "keys left after deleting every task: {left:?}"
    );
}

/// A task whose stored body no longer decodes (written by something else,
/// or by a future version) is leased by the claim script, found
/// undecodable in Rust, set aside and reported, on this and every later
/// claim; the claim goes on to the next task (it holds no resource key), it
/// is not counted, and it can be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_a_corrupt_body_is_set_aside_and_reported_on_every_claim() {
    let store = common::store_on(&common::new_prefix()).await;
    let now = base_time();
    let mut bad = Task::new("bad", KIND, ENV, now);
    bad.resource_key = Some("shared".into());
    let mut good = Task::new("good", KIND, ENV, now + chrono::TimeDelta::seconds(1));
    good.resource_key = Some("shared".into());
    store
        .create(vec![bad.clone(), good.clone()])
        .await
        .expect("create");
    let mut conn = store.connection();
    redis::cmd("HSET")
        .arg(store.task_key(ENV, "bad"))
        .arg("body")
        .arg("{\"data\": 42}")
        .query_async::<()>(&mut conn)
        .await
        .expect("corrupt the body");
    let claim = |limit| ClaimRequest {
        env: ENV.to_owned(),
        kind: KIND.to_owned(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit },
        order: oncetask_core::store::ClaimOrder::Priority,
    };
    // The corrupt task comes first; set aside, it no longer holds "shared",
    // so the same claim goes on and takes "good".
    let first = store.claim(&claim(1)).await.expect("claim");
    assert_eq!(
        first
            .tasks
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        vec!["good"]
    );
    assert_eq!(
        first
            .undecodable
            .iter()
            .map(|u| u.id.as_str())
            .collect::<Vec<_>>(),
        vec!["bad"]
    );
    let second = store.claim(&claim(10)).await.expect("claim");
    assert!(second.tasks.is_empty(), "good is leased, bad set aside");
    assert_eq!(second.undecodable.len(), 1, "reported again");
    let counts = store.count_by_status(ENV, None, now).await.expect("count");
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![(TaskStatus::Leased, 1)]
    );
    assert!(matches!(
        store
            .get(&["bad".to_owned()])
            .await
            .expect("get")
            .as_slice(),
        [Fetched::Undecodable(_)]
    ));
    let swap = store
        .swap(&[Swap::new(&bad, Change::Heartbeat, &bad)])
        .await
        .expect("swap");
    assert!(matches!(
        swap.as_slice(),
        [SwapOutcome::Failed(StoreError::Undecodable { .. })]
    ));
    let deleted = store.delete(&[Delete::any("bad")]).await.expect("delete");
    assert!(matches!(deleted.as_slice(), [DeleteOutcome::Deleted]));
    let third = store.claim(&claim(10)).await.expect("claim");
    assert!(third.undecodable.is_empty(), "gone once deleted");
    store.purge().await.expect("purge");
}

/// Which writes send which notice (`Swap::announce`): creates and a release
/// go on the work channel, a cancel on the changes channel (workers re-read
/// what they claimed ahead only then), and the end of a task without a
/// resource key sends none. Notices of one connection arrive in publish
/// order, so what is heard between the listener's first notice and a
/// closing create says which writes sent what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_sends_the_notice_its_change_calls_for() {
    let store = common::store_on(&common::new_prefix()).await;
    let now = Utc::now();
    let heard = notices_of_writes(
        &store,
        now,
        &["finish", "release", "cancel"],
        |held, grant| {
            let token = &grant.token;
            vec![
                (
                    Change::Outcome,
                    lifecycle::succeed(&held[0], token, now, None).expect("leased"),
                ),
                (
                    Change::Release,
                    lifecycle::release(&held[1], token).expect("leased"),
                ),
                (
                    Change::Cancel,
                    lifecycle::cancel(&held[2], now).expect("not done"),
                ),
            ]
        },
    )
    .await;
    // The listening probes are of the conformance suite's kind.
    let heard: Vec<(String, bool)> = heard
        .into_iter()
        .filter(|n| n.kind != oncetask_conformance::support::KIND)
        .map(|n| (n.kind, n.may_touch_claimed))
        .collect();
    let expected: Vec<(String, bool)> = [
        ("finish", false),
        ("release", false),
        ("cancel", false),
        ("release", false),
        ("cancel", true),
    ]
    .iter()
    .map(|(k, t)| ((*k).to_owned(), *t))
    .collect();
    assert_eq!(
        heard, expected,
        "creates, then the release and the cancel only"
    );
    store.purge().await.expect("purge");
}

/// An unreachable server is a typed `Unavailable` error, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_reported_as_unavailable() {
    let port = free_port();
    let result = RedisStore::connect(&format!("redis://127.0.0.1:{port}"), "x").await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    let result = RedisStore::connect("redis://127.0.0.1:6379", "bad{prefix}").await;
    assert!(
        matches!(result, Err(StoreError::InvalidConfig(_))),
        "{result:?}"
    );
}

/// Claiming and completing one task at a time with one store: the round
/// trips per task and the rate, printed; plus a claim behind a backlog of
/// busy keys, which parking keeps as cheap as an empty claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_and_complete_costs_two_round_trips_per_task() {
    const TASKS: usize = 2000;
    let store = common::store_on(&common::new_prefix()).await;
    let now = base_time();
    let tasks: Vec<Task> = (0..TASKS)
        .map(|i| Task::new(format!("t{i:05}"), KIND, ENV, now))
        .collect();
    store.create(tasks).await.expect("create");
    let started = Instant::now();
    for _ in 0..TASKS {
        let grant = LeaseGrant::new(now, Duration::from_secs(60));
        let request = ClaimRequest {
            env: ENV.to_owned(),
            kind: KIND.to_owned(),
            now,
            grant: grant.clone(),
            mode: ClaimMode::Single { limit: 1 },
            order: oncetask_core::store::ClaimOrder::Priority,
        };
        let claimed = store.claim(&request).await.expect("claim");
        let task = &claimed.tasks[0];
        let done = lifecycle::succeed(task, &grant.token, now, None).expect("succeed");
        let outcome = store
            .swap(&[Swap::new(task, Change::Outcome, &done)])
            .await
            .expect("swap");
        assert!(matches!(outcome[0], SwapOutcome::Applied { .. }));
    }
    let elapsed = started.elapsed();
    eprintln!(
        "claim + complete, one task at a time: {TASKS} tasks in {elapsed:?} ({:.0} tasks/s, \
         {:?} per task for its 2 round trips)",
        TASKS as f64 / elapsed.as_secs_f64(),
        elapsed / TASKS as u32
    );

    // 5000 tasks waiting behind 50 busy keys, then one free task.
    let mut backlog: Vec<Task> = (0..5000)
        .map(|i| {
            let mut t = Task::new(format!("b{i:05}"), "backlog", ENV, now);
            t.resource_key = Some(format!("busy-{}", i % 50));
            t
        })
        .collect();
    backlog.push(Task::new(
        "free",
        "backlog",
        ENV,
        now + chrono::TimeDelta::seconds(1),
    ));
    store.create(backlog).await.expect("create");
    let group = |limit| ClaimRequest {
        env: ENV.to_owned(),
        kind: "backlog".to_owned(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(600)),
        mode: ClaimMode::Single { limit },
        order: oncetask_core::store::ClaimOrder::Priority,
    };
    let first = store.claim(&group(50)).await.expect("claim");
    assert_eq!(first.tasks.len(), 50, "one task per key");
    let started = Instant::now();
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let next = store.claim(&group(1)).await.expect("claim");
        times.push(t.elapsed());
        if let Some(task) = next.tasks.first() {
            assert_eq!(task.id, "free");
        }
    }
    times.sort();
    eprintln!(
        "claims behind 4950 tasks of 50 busy keys: median {:?} (20 claims in {:?})",
        times[10],
        started.elapsed()
    );
    store.purge().await.expect("purge");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `redis-server` of this test's own, on a free loopback port, in a
/// temporary directory; killed when dropped.
struct OwnServer {
    port: u16,
    dir: std::path::PathBuf,
    aof: bool,
    child: Option<std::process::Child>,
}

impl OwnServer {
    fn start(aof: bool) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "oncetask-redis-restart-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = Self {
            port,
            dir,
            aof,
            child: None,
        };
        server.spawn();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut cmd = std::process::Command::new("redis-server");
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(if self.aof { "yes" } else { "no" })
            .arg("--appendfsync")
            .arg("always")
            .stdout(std::process::Stdio::null());
        let child = cmd
            .spawn()
            .expect("start redis-server (is it installed? `apt-get install redis-server`)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: no chance to write anything more) and
    /// starts it again on the same port and directory.
    fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// With AOF on (`appendfsync always`), killing `redis-server` with SIGKILL
/// while two managers work through 300 tasks loses nothing: the workers
/// reconnect and finish every task, and a subscriber from before the crash
/// hears notices after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_aof_a_crash_loses_no_task_and_workers_resume() {
    const TASKS: u32 = 300;
    let mut server = OwnServer::start(true);
    let prefix = "restart-aof";
    let stores = [
        RedisStore::connect(&server.url(), prefix)
            .await
            .expect("connect"),
        RedisStore::connect(&server.url(), prefix)
            .await
            .expect("connect"),
    ];
    let runs = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let managers: Vec<Manager> = stores
        .iter()
        .map(|s| manager(s, Duration::from_millis(200)))
        .collect();
    for m in &managers {
        let runs = runs.clone();
        m.register_dyn(
            KIND,
            handler_fn(move |task: Task| {
                let runs = runs.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    *runs.lock().expect("lock").entry(task.id).or_default() += 1;
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default()
                .concurrency(4)
                .lease_duration(Duration::from_secs(3)),
        )
        .expect("register");
    }
    let mut notices = stores[1].subscribe(ENV).expect("notifications");
    let jobs: Vec<Job> = (0..TASKS)
        .map(|n| Job {
            n,
            key: Some(format!("key-{}", n % 20)),
        })
        .collect();
    managers[0].create_many(&jobs).await.expect("create");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = runs.lock().expect("lock").len();
    server.crash_and_restart();
    eprintln!("killed and restarted redis-server (AOF on) with {before} of {TASKS} tasks run");
    let first = stores[0].clone();
    wait_for(
        "every task to complete after the restart",
        Duration::from_secs(120),
        async || {
            first
                .count_by_status(ENV, Some(KIND), Utc::now())
                .await
                .is_ok_and(|c| c.get(&TaskStatus::Completed).copied() == Some(u64::from(TASKS)))
        },
    )
    .await;
    while tokio::time::timeout(Duration::from_millis(50), notices.next())
        .await
        .is_ok()
    {}
    let mut heard = false;
    for n in 0..100 {
        managers[0]
            .create(&Job {
                n: TASKS + n,
                key: None,
            })
            .await
            .expect("create after the restart");
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), notices.next()).await
        {
            heard = true;
            break;
        }
    }
    assert!(heard, "the subscriber did not reconnect after the restart");
    for m in &managers {
        m.shutdown(Duration::from_secs(10)).await;
    }
    let runs = runs.lock().expect("lock");
    assert!(runs.len() >= TASKS as usize, "every task ran");
    // A handler that finished while the server was down could not record
    // its outcome: its lease expires and the task runs again (at least once).
    let again: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!("tasks run more than once (outcome lost in the crash): {again:?}");
}

/// Without persistence a restart loses every task — the documented cost of
/// running Redis without AOF — and workers carry on with new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_aof_a_restart_loses_the_tasks_and_workers_carry_on() {
    let mut server = OwnServer::start(false);
    let store = RedisStore::connect(&server.url(), "restart-no-aof")
        .await
        .expect("connect");
    let m = manager(&store, Duration::from_millis(100));
    let jobs: Vec<Job> = (0..50).map(|n| Job { n, key: None }).collect();
    m.create_many(&jobs).await.expect("create");
    server.crash_and_restart();
    let ran = Arc::new(Mutex::new(Vec::<String>::new()));
    let r = ran.clone();
    m.register_dyn(
        KIND,
        handler_fn(move |task: Task| {
            let r = r.clone();
            async move {
                r.lock().expect("lock").push(task.id);
                Ok::<_, std::io::Error>(())
            }
        }),
        HandlerOptions::default(),
    )
    .expect("register");
    // The connection manager reconnects on the first failed command.
    wait_for(
        "the store to reconnect",
        Duration::from_secs(20),
        async || store.count_by_status(ENV, None, Utc::now()).await.is_ok(),
    )
    .await;
    let counts = store
        .count_by_status(ENV, None, Utc::now())
        .await
        .expect("count");
    assert!(counts.is_empty(), "no task survives: {counts:?}");
    assert!(
        m.create(&Job { n: 999, key: None })
            .await
            .expect("create")
            .is_created()
    );
    wait_for("the new task to run", Duration::from_secs(20), async || {
        ran.lock().expect("lock").contains(&"job-999".to_owned())
    })
    .await;
    assert_eq!(*ran.lock().expect("lock"), vec!["job-999".to_owned()]);
    m.shutdown(Duration::from_secs(5)).await;
}

/// A claim of `kind` in [`ENV`] at `now` (single mode, up to 10 tasks).
fn claim_at(kind: &str, now: DateTime<Utc>) -> ClaimRequest {
    ClaimRequest {
        env: ENV.to_owned(),
        kind: kind.to_owned(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit: 10 },
        order: oncetask_core::store::ClaimOrder::Priority,
    }
}

/// The one task `get` returns for `id`.
async fn get_one(store: &RedisStore, id: &str) -> Task {
    match store.get(&[id.to_owned()]).await.expect("get").as_slice() {
        [Fetched::Task(task)] => task.clone(),
        other => panic!("{id}: {other:?}"),
    }
}

/// A field of the stored hash of `id` (in [`ENV`]), as `HGET` returns it.
async fn hash_field(store: &RedisStore, id: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(store.task_key(ENV, id))
        .arg(field)
        .query_async(&mut store.connection())
        .await
        .expect("HGET")
}

/// Applies one swap and expects it written.
async fn apply(store: &RedisStore, before: &Task, change: Change, after: &Task) {
    let outcome = store
        .swap(&[Swap::new(before, change, after)])
        .await
        .expect("swap");
    assert!(
        matches!(outcome.as_slice(), [SwapOutcome::Applied { .. }]),
        "{change:?}: {outcome:?}"
    );
}

/// A task's priority and max attempts round-trip through create, get, find
/// and a claim; defaults are not stored at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_and_max_attempts_round_trip() {
    use oncetask_core::task::TaskParts;

    let store = common::store_on(&common::new_prefix()).await;
    let now = base_time();
    let task: Task = TaskParts {
        priority: 7,
        max_attempts: Some(3),
        ..Task::new("p", "prio", ENV, now).into_parts()
    }
    .into();
    let plain = Task::new("plain", "prio", ENV, now + chrono::TimeDelta::seconds(1));
    store
        .create(vec![task.clone(), plain.clone()])
        .await
        .expect("create");
    let back = get_one(&store, "p").await;
    assert_eq!(back, task);
    assert_eq!((back.priority, back.max_attempts), (7, Some(3)));
    assert_eq!(get_one(&store, "plain").await, plain);
    assert_eq!(hash_field(&store, "p", "pri").await.as_deref(), Some("7"));
    assert_eq!(hash_field(&store, "p", "maxa").await.as_deref(), Some("3"));
    for field in ["snz", "pri", "maxa"] {
        assert_eq!(
            hash_field(&store, "plain", field).await,
            None,
            "{field} stored at its default"
        );
    }
    let mut filter = TaskFilter::env(ENV, now);
    filter.kind = Some("prio".to_owned());
    let found = store.find(&filter).await.expect("find");
    assert_eq!(found, vec![task.clone(), plain.clone()]);
    let request = claim_at("prio", now + chrono::TimeDelta::seconds(5));
    let claimed = store.claim(&request).await.expect("claim");
    assert_eq!(claimed.tasks.len(), 2);
    for leased in &claimed.tasks {
        let original = if leased.id == "p" { &task } else { &plain };
        assert_eq!(*leased, lifecycle::claim(original, &request.grant));
    }
    store.purge().await.expect("purge");
}

/// A snooze gives the lease back and counts a snooze, not an attempt; the
/// task is not claimable before its new wait and is once due, with or
/// without a resource key; its due time is the snooze's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snoozed_task_is_claimable_once_due_and_not_before() {
    use oncetask_core::lifecycle::HandlerPath;

    let store = common::store_on(&common::new_prefix()).await;
    let now = base_time();
    let later = now + chrono::TimeDelta::minutes(5);
    let mut keyed = Task::new("keyed", "snooze", ENV, now);
    keyed.resource_key = Some("r".into());
    let loose = Task::new("loose", "snooze", ENV, now);
    store
        .create(vec![keyed.clone(), loose.clone()])
        .await
        .expect("create");
    let first = claim_at("snooze", now);
    let claimed = store.claim(&first).await.expect("claim").tasks;
    assert_eq!(claimed.len(), 2);
    for held in &claimed {
        let snoozed = lifecycle::snooze(held, &first.grant.token, now, later, HandlerPath::Main)
            .expect("leased");
        apply(&store, held, Change::Snooze, &snoozed).await;
        let back = get_one(&store, &held.id).await;
        assert_eq!(back, snoozed);
        assert_eq!((back.snoozes, back.attempts), (1, 0));
        assert_eq!(back.wait_until, Some(later));
        assert!(back.leased_until.is_none() && back.lease_token.is_none());
        assert_eq!(
            hash_field(&store, &held.id, "snz").await.as_deref(),
            Some("1")
        );
    }
    assert_eq!(
        store.next_due(ENV, "snooze", now).await.expect("next_due"),
        Some(later)
    );
    let counts = store
        .count_by_status(ENV, Some("snooze"), now)
        .await
        .expect("count");
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![(TaskStatus::Waiting, 2)]
    );
    for at in [now, later - chrono::TimeDelta::milliseconds(1)] {
        let early = store.claim(&claim_at("snooze", at)).await.expect("claim");
        assert!(early.tasks.is_empty(), "claimed before due at {at}");
        assert!(early.undecodable.is_empty());
    }
    let due = claim_at("snooze", later);
    let mut again = store.claim(&due).await.expect("claim").tasks;
    again.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        again
            .iter()
            .map(|t| (t.id.as_str(), t.snoozes, t.attempts))
            .collect::<Vec<_>>(),
        vec![("keyed", 1, 1), ("loose", 1, 1)]
    );
    store.purge().await.expect("purge");
}

/// An operator's priority change is stored and leaves the task where it
/// was in the claim order: a ready task stays claimable, a leased one
/// stays leased. Back at 0, the field is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_change_is_stored_and_keeps_the_task_where_it_was() {
    let store = common::store_on(&common::new_prefix()).await;
    let now = base_time();
    let mut ready = Task::new("ready", "reprio", ENV, now);
    ready.resource_key = Some("r".into());
    let held = Task::new("held", "reprio", ENV, now - chrono::TimeDelta::seconds(1));
    store
        .create(vec![ready.clone(), held.clone()])
        .await
        .expect("create");
    let grant = LeaseGrant::new(now, Duration::from_secs(60));
    let request = ClaimRequest {
        mode: ClaimMode::Single { limit: 1 },
        grant: grant.clone(),
        ..claim_at("reprio", now)
    };
    let leased = store.claim(&request).await.expect("claim").tasks;
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].id, "held");
    let counts_before = store
        .count_by_status(ENV, Some("reprio"), now)
        .await
        .expect("count");
    for (before, priority) in [(&leased[0], -3), (&ready, 9)] {
        let after = lifecycle::reprioritize(before, priority).expect("not done");
        apply(&store, before, Change::Reprioritize, &after).await;
        let back = get_one(&store, &before.id).await;
        assert_eq!(back, after);
        assert_eq!(back.priority, priority);
        assert_eq!(
            hash_field(&store, &before.id, "pri").await,
            Some(priority.to_string())
        );
    }
    assert_eq!(
        store
            .count_by_status(ENV, Some("reprio"), now)
            .await
            .expect("count"),
        counts_before
    );
    let next = store.claim(&claim_at("reprio", now)).await.expect("claim");
    assert_eq!(
        next.tasks
            .iter()
            .map(|t| (t.id.as_str(), t.priority))
            .collect::<Vec<_>>(),
        vec![("ready", 9)],
        "the leased task stays leased, the ready one stays claimable"
    );
    // Back to the default: the field goes, the task reads 0.
    let current = get_one(&store, "held").await;
    let zero = lifecycle::reprioritize(&current, 0).expect("not done");
    apply(&store, &current, Change::Reprioritize, &zero).await;
    assert_eq!(hash_field(&store, "held", "pri").await, None);
    assert_eq!(get_one(&store, "held").await.priority, 0);
    // The lease still fences the holder's outcome.
    let done = lifecycle::succeed(&zero, &grant.token, now, None).expect("leased");
    apply(&store, &zero, Change::Outcome, &done).await;
    store.purge().await.expect("purge");
}

/// A reset clears the snooze count (the stored field goes) and keeps the
/// priority and max attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_clears_the_snoozes_and_keeps_the_priority() {
    use oncetask_core::lifecycle::HandlerPath;
    use oncetask_core::task::TaskParts;

    let store = common::store_on(&common::new_prefix()).await;
    let now = base_time();
    let task: Task = TaskParts {
        priority: -4,
        max_attempts: Some(2),
        ..Task::new("r", "reset", ENV, now).into_parts()
    }
    .into();
    store.create(vec![task]).await.expect("create");
    let first = claim_at("reset", now);
    let held = store.claim(&first).await.expect("claim").tasks.remove(0);
    let snoozed =
        lifecycle::snooze(&held, &first.grant.token, now, now, HandlerPath::Main).expect("leased");
    apply(&store, &held, Change::Snooze, &snoozed).await;
    let second = claim_at("reset", now);
    let held = store.claim(&second).await.expect("claim").tasks.remove(0);
    assert_eq!(held.snoozes, 1);
    let done = lifecycle::succeed(&held, &second.grant.token, now, None).expect("leased");
    apply(&store, &held, Change::Outcome, &done).await;
    assert_eq!(get_one(&store, "r").await.snoozes, 1);
    let reset = lifecycle::reset(&done).expect("done");
    apply(&store, &done, Change::Reset, &reset).await;
    let back = get_one(&store, "r").await;
    assert_eq!(back, reset);
    assert_eq!(
        (
            back.snoozes,
            back.attempts,
            back.priority,
            back.max_attempts
        ),
        (0, 0, -4, Some(2))
    );
    assert_eq!(hash_field(&store, "r", "snz").await, None);
    // Pending again: claimable at once.
    let again = store.claim(&claim_at("reset", now)).await.expect("claim");
    assert_eq!(again.tasks.len(), 1);
    store.purge().await.expect("purge");
}

/// A stored priority outside `i8` (or not a number) makes the hash
/// undecodable: `get` reports it, a claim sets it aside and reports it,
/// nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_with_a_bad_priority_is_undecodable() {
    let store = common::store_on(&common::new_prefix()).await;
    let now = base_time();
    let tasks: Vec<Task> = ["big", "word", "negative-snoozes"]
        .iter()
        .map(|id| Task::new(*id, "badprio", ENV, now))
        .collect();
    store.create(tasks).await.expect("create");
    let mut conn = store.connection();
    for (id, field, value) in [
        ("big", "pri", "300"),
        ("word", "pri", "urgent"),
        ("negative-snoozes", "snz", "-1"),
    ] {
        redis::cmd("HSET")
            .arg(store.task_key(ENV, id))
            .arg(field)
            .arg(value)
            .query_async::<()>(&mut conn)
            .await
            .expect("corrupt the hash");
        match store.get(&[id.to_owned()]).await.expect("get").as_slice() {
            [Fetched::Undecodable(u)] => {
                assert_eq!(u.id, id);
                assert!(u.reason.contains(field), "{id}: {}", u.reason);
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    let claimed = store.claim(&claim_at("badprio", now)).await.expect("claim");
    assert!(claimed.tasks.is_empty());
    let mut reported: Vec<&str> = claimed.undecodable.iter().map(|u| u.id.as_str()).collect();
    reported.sort_unstable();
    assert_eq!(reported, vec!["big", "negative-snoozes", "word"]);
    let counts = store
        .count_by_status(ENV, Some("badprio"), now)
        .await
        .expect("count");
    assert_eq!(counts.undecodable, 3);
    store.purge().await.expect("purge");
}

/// A listing that wants only done statuses is filtered in the script (by
/// the `dst` field, 1024 members per call): across several calls, from a
/// cursor, with a limit, by kind and by env, it returns exactly what the
/// filter matches in creation order, the same as a mix with an open
/// status (filtered in Rust only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_by_done_status_matches_the_filter_across_script_calls() {
    use oncetask_core::store::TaskCursor;
    use oncetask_core::{AttemptError, Outcome};

    let store = common::store_on(&common::new_prefix()).await;
    let now = base_time();
    let n = 3000i64;
    let tasks: Vec<Task> = (0..n)
        .map(|i| {
            let created = now - chrono::TimeDelta::seconds(n - i);
            let kind = if i % 3 == 0 { "a" } else { "b" };
            let mut task = Task::new(format!("t{i:05}"), kind, ENV, created);
            let done = created + chrono::TimeDelta::milliseconds(500);
            match i % 10 {
                0 => {
                    task.done_at = Some(done);
                    task.attempts = 1;
                    task.outcome = Some(Outcome::Failed);
                    task.errors = vec![AttemptError {
                        at: done,
                        error: "boom".into(),
                    }];
                }
                1 => {
                    task.done_at = Some(done);
                    task.is_cancelled = true;
                    task.cancelled_at = Some(done);
                    task.outcome = Some(Outcome::Cancelled);
                }
                2 => task.wait_until = Some(now + chrono::TimeDelta::days(1)),
                3 => {}
                _ => {
                    task.done_at = Some(done);
                    task.attempts = 1;
                    task.outcome = Some(Outcome::Completed);
                }
            }
            task
        })
        .collect();
    for part in tasks.chunks(500) {
        store.create(part.to_vec()).await.expect("create");
    }
    let cursor_at = 1234usize;
    for kind in [None, Some("a")] {
        for statuses in [
            vec![TaskStatus::Failed],
            vec![TaskStatus::Completed, TaskStatus::Cancelled],
            vec![TaskStatus::Failed, TaskStatus::Pending],
            vec![TaskStatus::Waiting],
        ] {
            for (after, limit) in [
                (None, None),
                (Some(TaskCursor::of(&tasks[cursor_at])), Some(51)),
                (Some(TaskCursor::of(&tasks[cursor_at])), None),
            ] {
                let mut filter = TaskFilter::env(ENV, now);
                filter.kind = kind.map(str::to_owned);
                filter.statuses = statuses.clone();
                filter.after = after.clone();
                filter.limit = limit;
                let expected: Vec<&str> = tasks
                    .iter()
                    .filter(|t| filter.matches(t) && filter.is_after_cursor(t))
                    .take(limit.unwrap_or(usize::MAX))
                    .map(|t| t.id.as_str())
                    .collect();
                assert!(!expected.is_empty());
                let found = store.find(&filter).await.expect("find");
                let ids: Vec<&str> = found.iter().map(|t| t.id.as_str()).collect();
                assert_eq!(ids, expected, "{kind:?} {statuses:?} {after:?} {limit:?}");
                assert_eq!(
                    found.first(),
                    tasks.iter().find(|t| t.id == expected[0]),
                    "the documents read back whole"
                );
            }
        }
    }
    store.purge().await.expect("purge");
}

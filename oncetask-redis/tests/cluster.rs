//! [`RedisStore`] on a Redis Cluster (`ONCETASK_REDIS_CLUSTER_URLS`, set by
//! `scripts/redis-cluster`; without it every test fails saying how to start
//! one): the shared multi-manager scenarios, envs spread over the masters
//! (so every node is really used), script loading after a `SCRIPT FLUSH`,
//! and the wake-up subscriber reconnecting.
//!
//! Each test works under a key prefix of its own and deletes its keys at
//! the end.

#![cfg(feature = "cluster")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use oncetask_conformance::fleet::{
    Fleet, every_task_runs_once_across_managers, wait_for, wake_up_latencies_across_managers,
};
use oncetask_core::lifecycle::{self, LeaseGrant};
use oncetask_core::store::{
    Change, ClaimMode, ClaimRequest, CreateOutcome, Delete, DeleteOutcome, Fetched, FinishedQuery,
    StartsRequest, Swap, SwapOutcome, TaskFilter,
};
use oncetask_core::{Store, Task, TaskStatus};
use oncetask_redis::{RedisStore, key_slot};

const KIND: &str = "job";

/// A master of the cluster: its address and slot ranges.
struct Master {
    addr: String,
    slots: Vec<(u16, u16)>,
}

impl Master {
    fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }

    /// A plain (non-cluster) connection to this node alone.
    async fn node(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://{}", self.addr))
            .expect("a node URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the node")
    }
}

/// The masters and their slots, from `CLUSTER NODES`.
async fn masters(store: &RedisStore) -> Vec<Master> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut store.connection())
        .await
        .expect("CLUSTER NODES");
    let mut out: Vec<Master> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields.get(2)?.split(',').any(|f| f == "master") {
                return None;
            }
            let addr = fields[1].split(['@', ',']).next()?.to_owned();
            let slots = fields[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => r.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(Master { addr, slots })
        })
        .collect();
    out.sort_by(|a, b| a.addr.cmp(&b.addr));
    out
}

/// One env name per master whose keys live on that master.
fn env_per_master(store: &RedisStore, masters: &[Master]) -> Vec<String> {
    masters
        .iter()
        .map(|m| {
            (0..1000)
                .map(|i| format!("env-{i}"))
                .find(|env| m.owns(key_slot(store.env_key_base(env).as_bytes())))
                .expect("an env name in the master's slots")
        })
        .collect()
}

/// The keys of `prefix` on one node only.
async fn keys_on(master: &Master, prefix: &str) -> Vec<String> {
    let mut conn = master.node().await;
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
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

fn claim_request(env: &str, limit: usize) -> ClaimRequest {
    let now = Utc::now();
    ClaimRequest {
        env: env.to_owned(),
        kind: KIND.to_owned(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit },
        order: oncetask_core::store::ClaimOrder::Priority,
    }
}

/// Three managers, each on its own cluster connection with 8 workers,
/// share 1500 tasks on 30 resource keys: every task completes exactly once,
/// no two tasks of one key overlap, nothing stays leased. Prints the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_managers_on_the_cluster_run_every_task_once() {
    let prefix = common::new_prefix();
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(common::cluster_store_on(&prefix).await));
    }
    let fleet = Fleet {
        tasks: 1500,
        keys: 30,
        concurrency: 8,
        deadline: Duration::from_secs(240),
    };
    let started = Instant::now();
    every_task_runs_once_across_managers(stores, "fleet", fleet).await;
    let elapsed = started.elapsed();
    eprintln!(
        "cluster: {} tasks, 3 managers x 8 workers: {elapsed:?} ({:.0} tasks/s)",
        fleet.tasks,
        f64::from(fleet.tasks) / elapsed.as_secs_f64()
    );
    let store = common::cluster_store_on(&prefix).await;
    store.purge().await.expect("purge");
}

/// A task created through one manager starts on another (its own cluster
/// connection and subscriber, idle, polling only every 60 s) at once: the
/// classic pub/sub notice crosses the cluster. Prints the latencies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_on_one_manager_starts_on_another_across_the_cluster() {
    let prefix = common::new_prefix();
    let (producer, worker) = (
        common::cluster_store_on(&prefix).await,
        common::cluster_store_on(&prefix).await,
    );
    let mut latencies =
        wake_up_latencies_across_managers(Arc::new(producer.clone()), Arc::new(worker), "wake", 10)
            .await;
    latencies.sort();
    eprintln!(
        "cluster: cross-manager wake-up latency (create -> handler start), sorted: \
         {latencies:?}; median {:?}",
        latencies[latencies.len() / 2]
    );
    producer.purge().await.expect("purge");
}

/// One env per master: tasks created, read, listed, counted, claimed,
/// completed and deleted in each, in one call where the API allows (so
/// calls span nodes). Every key of an env is on the master owning its slot
/// and nowhere else, each master holds one env's keys, and the id registry
/// spreads over the masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envs_on_different_masters_each_stay_on_their_node() {
    let prefix = common::new_prefix();
    let store = common::cluster_store_on(&prefix).await;
    let masters = masters(&store).await;
    assert!(
        masters.len() >= 3,
        "a cluster of at least 3 masters: {}",
        masters.len()
    );
    let envs = env_per_master(&store, &masters);
    let now = Utc::now();
    let tasks: Vec<Task> = envs
        .iter()
        .flat_map(|env| (0..20).map(move |i| Task::new(format!("{env}-t{i}"), KIND, env, now)))
        .collect();
    let created = store.create(tasks.clone()).await.expect("create");
    assert!(created.iter().all(|o| matches!(o, CreateOutcome::Created)));
    // One id in another env is refused, wherever its registry entry lives.
    let again = store
        .create(vec![Task::new(
            format!("{}-t0", envs[0]),
            KIND,
            &envs[1],
            now,
        )])
        .await
        .expect("create again");
    assert!(
        matches!(&again[0], CreateOutcome::ExistsInOtherEnv { env } if *env == envs[0]),
        "{again:?}"
    );

    let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let fetched = store.get(&ids).await.expect("get across nodes");
    assert_eq!(fetched.len(), ids.len());
    assert!(fetched.iter().all(|f| matches!(f, Fetched::Task(_))));

    for (master, env) in masters.iter().zip(&envs) {
        let listed = store
            .find(&TaskFilter::env(env.clone(), now))
            .await
            .expect("find");
        assert_eq!(listed.len(), 20);
        let counts = store.count_by_status(env, None, now).await.expect("count");
        assert_eq!(counts.get(&TaskStatus::Pending).copied(), Some(20));

        let claimed = store.claim(&claim_request(env, 5)).await.expect("claim");
        assert_eq!(claimed.tasks.len(), 5);
        let grant_token = claimed.tasks[0].lease_token.clone().expect("a token");
        let swaps: Vec<Swap> = claimed
            .tasks
            .iter()
            .map(|t| {
                let done = lifecycle::succeed(t, &grant_token, now, None).expect("succeed");
                Swap::new(t, Change::Outcome, &done)
            })
            .collect();
        let outcomes = store.swap(&swaps).await.expect("swap");
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, SwapOutcome::Applied { .. }))
        );

        // Every key of the env is on its master, and only there.
        let base = store.env_key_base(env);
        let here = keys_on(master, &prefix).await;
        assert!(
            here.iter().any(|k| k.starts_with(&base)),
            "{env}'s keys are on {}",
            master.addr
        );
        for other in masters.iter().filter(|m| m.addr != master.addr) {
            let there = keys_on(other, &prefix).await;
            assert!(
                !there.iter().any(|k| k.starts_with(&base)),
                "{env}'s keys are not on {}",
                other.addr
            );
        }
    }
    // 60 registry entries hash all over: every master holds some.
    for master in &masters {
        let registry = keys_on(master, &format!("{prefix}:id")).await;
        assert!(!registry.is_empty(), "registry entries on {}", master.addr);
    }

    let deletes: Vec<Delete> = ids.iter().map(Delete::any).collect();
    let deleted = store.delete(&deletes).await.expect("delete across nodes");
    assert!(deleted.iter().all(|o| matches!(o, DeleteOutcome::Deleted)));
    store.purge().await.expect("purge");
    let mut left = BTreeSet::new();
    for master in &masters {
        left.extend(keys_on(master, &prefix).await);
    }
    assert!(
        left.is_empty(),
        "purge removed the keys on every master: {left:?}"
    );
}

/// After `SCRIPT FLUSH` on every node, the first script call of an env
/// gets `NOSCRIPT` from the node owning the env's slot; the `redis` crate
/// then sends `SCRIPT LOAD` (to every node) and retries there. Checked per
/// env on every master: the call succeeds and the owning node has the
/// script cached again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_loaded_again_on_the_node_owning_the_slot() {
    let prefix = common::new_prefix();
    let store = common::cluster_store_on(&prefix).await;
    let masters = masters(&store).await;
    let envs = env_per_master(&store, &masters);
    let now = Utc::now();
    let tasks: Vec<Task> = envs
        .iter()
        .map(|env| Task::new(format!("{env}-s"), KIND, env, now))
        .collect();
    store.create(tasks).await.expect("create");
    let cached = async |master: &Master| -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut master.node().await)
            .await
            .expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("number_of_cached_scripts:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("number_of_cached_scripts in INFO memory")
    };
    let mut report = BTreeMap::new();
    for (master, env) in masters.iter().zip(&envs) {
        for m in &masters {
            redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async::<()>(&mut m.node().await)
                .await
                .expect("SCRIPT FLUSH");
        }
        assert_eq!(cached(master).await, 0, "flushed");
        let claimed = store.claim(&claim_request(env, 1)).await.expect("claim");
        assert_eq!(
            claimed.tasks.len(),
            1,
            "the claim script ran on {}",
            master.addr
        );
        assert!(cached(master).await >= 1, "loaded on {}", master.addr);
        let mut counts = Vec::new();
        for m in &masters {
            counts.push(cached(m).await);
        }
        report.insert(master.addr.clone(), counts);
    }
    eprintln!(
        "cached scripts per node after a flush and one claim on each node's env \
         (node -> counts on every node): {report:?}"
    );
    store.purge().await.expect("purge");
}

/// A subscriber whose pub/sub connection is cut (`CLIENT KILL TYPE pubsub`
/// on every node, as a node restart would) reconnects to a seed node,
/// announces the env's kinds once (notices may have been lost), and hears
/// later notices again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_reconnects_after_its_connection_is_cut() {
    let prefix = common::new_prefix();
    let store = common::cluster_store_on(&prefix).await;
    let env = "notify";
    let now = Utc::now();
    store
        .create(vec![Task::new("n0", KIND, env, now)])
        .await
        .expect("create");
    let mut stream = store.subscribe(env).expect("wake-ups on a cluster store");
    let next = async |stream: &mut futures::stream::BoxStream<'static, _>| {
        tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a notice within 10 s")
            .expect("the stream is open")
    };
    // The subscription is live once a create's notice arrives.
    let mut n = 1;
    wait_for(
        "the subscriber to hear a create",
        Duration::from_secs(10),
        async || {
            store
                .create(vec![Task::new(format!("n{n}"), KIND, env, now)])
                .await
                .expect("create");
            n += 1;
            tokio::time::timeout(Duration::from_millis(200), stream.next())
                .await
                .is_ok()
        },
    )
    .await;
    while tokio::time::timeout(Duration::from_millis(300), stream.next())
        .await
        .is_ok()
    {}

    let mut killed = 0;
    for url in common::cluster_urls() {
        let client = redis::Client::open(url).expect("a URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        killed += redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async::<u64>(&mut conn)
            .await
            .expect("CLIENT KILL");
    }
    assert!(killed >= 1, "the subscriber's connection was cut");
    let announced: oncetask_core::store::Notification = next(&mut stream).await;
    assert_eq!(
        announced.kind, KIND,
        "every kind announced after the reconnect"
    );
    while tokio::time::timeout(Duration::from_millis(300), stream.next())
        .await
        .is_ok()
    {}
    store
        .create(vec![Task::new("after", KIND, env, now)])
        .await
        .expect("create");
    let heard = next(&mut stream).await;
    assert_eq!(heard.kind, KIND, "a notice after the reconnect");
    store.purge().await.expect("purge");
}

/// Retention, pause, rate limits and storage figures in one env per
/// master: the finished index, the tombstone a prune writes, a pruner's
/// exact deletes, the paused set, a rate limiter batch spanning the envs
/// (so nodes), and `storage_stats` with the memory of the cluster; every
/// key stays on the env's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_pause_and_rate_limits_work_on_every_master() {
    let prefix = common::new_prefix();
    let store = common::cluster_store_on(&prefix).await;
    let masters = masters(&store).await;
    let envs = env_per_master(&store, &masters);
    // Stored times have millisecond precision.
    let now = oncetask_core::task::truncate_to_millis(Utc::now());
    for env in &envs {
        let tasks: Vec<Task> = (0..5)
            .map(|i| {
                let mut task = Task::new(format!("{env}-{i}"), KIND, env, now);
                task.done_at = Some(now);
                task.attempts = 1;
                task.outcome = Some(oncetask_core::Outcome::Completed);
                task
            })
            .collect();
        store.create(tasks).await.expect("create");
        let query = FinishedQuery::new(env, KIND, TaskStatus::Completed, now);
        let found = store.find_finished(&query).await.expect("find_finished");
        assert_eq!(found.len(), 5, "{env}");
        let tomb = lifecycle::prune(&found[0], now).expect("finished");
        let swapped = store
            .swap(&[Swap::new(&found[0], Change::Prune, &tomb)])
            .await
            .expect("swap");
        assert!(matches!(swapped[..], [SwapOutcome::Applied { .. }]));
        let tombs = store
            .find_finished(&query.clone().tombstones())
            .await
            .expect("find_finished");
        assert_eq!(tombs, std::slice::from_ref(&tomb));
        let stats = store.storage_stats(env, now).await.expect("stats");
        assert_eq!(stats.by_status[&TaskStatus::Completed].documents, 4);
        assert_eq!(stats.tombstones.documents, 1);
        assert!(stats.tombstones.bytes.is_some());
        assert!(
            stats
                .figures
                .iter()
                .any(|f| f.label.contains("cluster") && f.bytes > 0),
            "{:?}",
            stats.figures
        );
        let deleted = store
            .delete(&[Delete::exact(&tomb), Delete::exact(&found[1])])
            .await
            .expect("delete");
        assert!(matches!(
            deleted[..],
            [DeleteOutcome::Deleted, DeleteOutcome::Deleted]
        ));
        assert!(store.set_paused(env, KIND, true).await.expect("pause"));
        assert_eq!(store.paused_kinds(env).await.expect("paused"), [KIND]);
    }
    let requests: Vec<StartsRequest> = envs
        .iter()
        .flat_map(|env| {
            [None, Some("r".to_owned())]
                .into_iter()
                .map(move |key| StartsRequest::new(env, KIND, key, now, 1_000, 3, 5))
        })
        .collect();
    assert_eq!(
        store.take_starts(&requests).await.expect("take"),
        vec![3; requests.len()]
    );
    assert_eq!(
        store.take_starts(&requests).await.expect("take"),
        vec![0; requests.len()]
    );
    for (env, master) in envs.iter().zip(&masters) {
        let base = store.env_key_base(env);
        for other in &masters {
            let keys = keys_on(other, &prefix).await;
            let here = keys.iter().filter(|k| k.starts_with(&base)).count();
            if other.addr == master.addr {
                assert!(here > 0, "{env}'s keys on its master");
            } else {
                assert_eq!(here, 0, "{env}'s keys on another master: {keys:?}");
            }
        }
    }
    store.purge().await.expect("purge");
}

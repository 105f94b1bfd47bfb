//! What claiming costs on the Firestore emulator: document reads and writes
//! per completed task (Firestore bills per document) and lost claim races,
//! for one worker on a deep queue and for 4 concurrent workers.
//!
//! The numbers are printed (`scripts/test -p oncetask-firestore --test
//! claim_cost -- --nocapture`), not asserted, apart from loose ceilings that
//! catch a regression to reading the whole queue; the tests assert that
//! every task completes exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use oncetask_core::Store;
use oncetask_core::lifecycle::{self, LeaseGrant};
use oncetask_core::store::{Change, ClaimMode, ClaimRequest, CreateOutcome, Swap, SwapOutcome};
use oncetask_core::{Task, TaskStatus};
use oncetask_firestore::{FirestoreStore, StoreStats};

mod common;
use common::db;

const ENV: &str = "cost";
const KIND: &str = "job";

async fn store() -> FirestoreStore {
    FirestoreStore::with_collection(
        db().await,
        format!("cost-{}", uuid::Uuid::new_v4().simple()),
    )
}

async fn seed(store: &FirestoreStore, n: usize) {
    let now = Utc::now();
    let tasks = (0..n)
        .map(|i| Task::new(format!("t{i:04}"), KIND, ENV, now))
        .collect();
    for outcome in store.create(tasks).await.expect("create") {
        assert!(matches!(outcome, CreateOutcome::Created), "{outcome:?}");
    }
}

/// Claims and completes tasks until `done` reaches `total`; returns how many
/// this worker completed.
async fn worker(
    store: FirestoreStore,
    limit: usize,
    done: Arc<AtomicUsize>,
    total: usize,
) -> usize {
    let mut mine = 0;
    while done.load(Ordering::SeqCst) < total {
        let now = Utc::now();
        let request = ClaimRequest {
            env: ENV.into(),
            kind: KIND.into(),
            now,
            grant: LeaseGrant::new(now, Duration::from_secs(60)),
            mode: ClaimMode::Single { limit },
            order: oncetask_core::store::ClaimOrder::Priority,
        };
        let claimed = store.claim(&request).await.expect("claim").tasks;
        if claimed.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let swaps: Vec<Swap> = claimed
            .iter()
            .map(|t| {
                let done = lifecycle::succeed(t, &request.grant.token, Utc::now(), None)
                    .expect("own lease");
                Swap::new(t, Change::Outcome, &done)
            })
            .collect();
        for outcome in store.swap(&swaps).await.expect("swap") {
            assert!(
                matches!(outcome, SwapOutcome::Applied { .. }),
                "{outcome:?}"
            );
            mine += 1;
            done.fetch_add(1, Ordering::SeqCst);
        }
    }
    mine
}

/// Runs `workers` workers over `tasks` fresh tasks; prints and returns the
/// claim-and-complete cost (creation excluded).
async fn measure(label: &str, tasks: usize, workers: usize, limit: usize) -> StoreStats {
    let store = store().await;
    seed(&store, tasks).await;
    let before = store.stats();
    let done = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(worker(store.clone(), limit, done.clone(), tasks)))
        .collect();
    let mut completed = 0;
    for h in handles {
        completed += h.await.expect("worker");
    }
    assert_eq!(completed, tasks, "every task completed exactly once");
    let after = store.stats();
    let counts = store
        .count_by_status(ENV, Some(KIND), Utc::now())
        .await
        .expect("count");
    assert_eq!(counts.get(&TaskStatus::Completed), Some(&(tasks as u64)));
    let count_reads = store.stats().reads - after.reads;
    println!("{label}: count_by_status over {tasks} finished tasks: {count_reads} reads");
    // 10 COUNTs: 7 statuses, cancelled by outcome, done-not-cancelled, all.
    assert!(count_reads <= 10, "COUNT aggregations, not a read per task");
    let cost = after.since(&before);
    println!(
        "{label}: {tasks} tasks, {workers} workers, limit {limit}: {:.2} reads and {:.2} writes \
         per completed task, {} lost races",
        cost.reads as f64 / tasks as f64,
        cost.writes as f64 / tasks as f64,
        cost.lost_races
    );
    cost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_worker_on_a_deep_queue() {
    let cost = measure("deep queue", 40, 1, 1).await;
    assert_eq!(cost.lost_races, 0);
    // A claim reads its window, the outcome one document.
    assert!(cost.reads <= 40 * 12, "{cost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_concurrent_workers() {
    let cost = measure("concurrent", 40, 4, 1).await;
    assert!(cost.reads <= 40 * 40, "{cost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_concurrent_workers_claiming_batches() {
    let cost = measure("concurrent batches", 40, 4, 4).await;
    assert!(cost.reads <= 40 * 40, "{cost:?}");
}

/// A claim reads `limit` documents at a time, and pages on past busy
/// resource keys: two waiting tasks of a busy key at the head do not hide
/// the keyless task behind them from a claim of one task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_page_past_busy_keys() {
    let store = store().await;
    let t0 = Utc::now() - chrono::TimeDelta::seconds(10);
    let mut tasks = Vec::new();
    for (i, key) in [Some("a"), Some("a"), Some("a"), None]
        .into_iter()
        .enumerate()
    {
        let mut task = Task::new(
            format!("t{i}"),
            KIND,
            ENV,
            t0 + chrono::TimeDelta::seconds(i as i64),
        );
        task.resource_key = key.map(str::to_owned);
        tasks.push(task);
    }
    store.create(tasks).await.expect("create");
    let claim = |now| ClaimRequest {
        env: ENV.into(),
        kind: KIND.into(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit: 1 },
        order: oncetask_core::store::ClaimOrder::Priority,
    };
    let first = store.claim(&claim(Utc::now())).await.expect("claim").tasks;
    let ids: Vec<&str> = first.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t0"]);
    let before = store.stats();
    let second = store.claim(&claim(Utc::now())).await.expect("claim").tasks;
    let ids: Vec<&str> = second.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t3"], "key a is busy: its other tasks are skipped");
    let reads = store.stats().reads - before.reads;
    println!("paging past a busy key: {reads} reads");
}

/// More busy keys at the head of the queue than one `not-in` filter can
/// leave out (10): the claim pages on in claim order and still finds the
/// keyless task behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_page_past_more_busy_keys_than_a_query_can_exclude() {
    let db = db().await;
    let collection = format!("cost-{}", uuid::Uuid::new_v4().simple());
    let store = FirestoreStore::with_collection(db.clone(), collection.clone());
    let t0 = Utc::now() - chrono::TimeDelta::seconds(100);
    let keys = 12;
    // Each key's first task, then each key's second task, then a keyless one.
    let mut tasks = Vec::new();
    for round in 0..2 {
        for k in 0..keys {
            let i = round * keys + k;
            let mut task = Task::new(
                format!("t{i:02}"),
                KIND,
                ENV,
                t0 + chrono::TimeDelta::seconds(i as i64),
            );
            task.resource_key = Some(format!("key{k:02}"));
            tasks.push(task);
        }
    }
    tasks.push(Task::new(
        "free",
        KIND,
        ENV,
        t0 + chrono::TimeDelta::seconds(50),
    ));
    store.create(tasks).await.expect("create");
    let claim = |limit| {
        let now = Utc::now();
        ClaimRequest {
            env: ENV.into(),
            kind: KIND.into(),
            now,
            grant: LeaseGrant::new(now, Duration::from_secs(60)),
            mode: ClaimMode::Single { limit },
            order: oncetask_core::store::ClaimOrder::Priority,
        }
    };
    let first = store.claim(&claim(keys)).await.expect("claim").tasks;
    assert_eq!(first.len(), keys, "one task of each key");
    // Another process: it knows nothing of the keys' leases.
    let other = FirestoreStore::with_collection(db, collection);
    let second = other.claim(&claim(1)).await.expect("claim").tasks;
    let ids: Vec<&str> = second.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        ["free"],
        "every key is busy: only the keyless task is free"
    );
}

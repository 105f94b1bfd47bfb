//! What a task costs on Firestore with real managers (listeners, polls,
//! claims, outcomes), counted the way Firestore bills: each document a query
//! or a listener delivers, each document written ([`StoreStats`]). Creation is
//! excluded (it is one write per task, by the creator).
//!
//! The rows are printed (`scripts/test -p oncetask-firestore --test cost --
//! --nocapture --test-threads 1`) and recorded in BENCHMARKS.md; the tests
//! assert that every task completed, and loose ceilings that catch a
//! regression to reading per task what should be read per claim.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use oncetask_core::manager::handler_fn;
use oncetask_core::{HandlerOptions, Manager, Store, Task, TaskStatus};
use oncetask_firestore::{FirestoreStore, StoreStats};

mod common;
use common::db;

const ENV: &str = "cost";
const KIND: &str = "job";

struct Row {
    managers: usize,
    keys: usize,
    tasks: usize,
    spent: StoreStats,
}

impl Row {
    fn per_task(&self, n: u64) -> f64 {
        n as f64 / self.tasks as f64
    }

    fn print(&self) {
        let s = &self.spent;
        println!(
            "cost: managers={} keys={} tasks={}: {:.2} reads/task ({:.2} from listeners), \
             {:.2} writes/task ({:.2} signals), {} lost races, {} lost leases, {} requests, \
             {} listen connects",
            self.managers,
            self.keys,
            self.tasks,
            self.per_task(s.reads),
            self.per_task(s.listen_reads),
            self.per_task(s.writes),
            self.per_task(s.signal_writes),
            s.lost_races,
            s.lost_leases,
            s.requests,
            s.listen_connects,
        );
    }
}

fn collection() -> String {
    format!("cost-{}", uuid::Uuid::new_v4().simple())
}

/// Managers with a no-op handler, each with a Firestore client of its own.
async fn fleet(
    collection: &str,
    managers: usize,
    poll: Duration,
) -> Vec<(FirestoreStore, Manager)> {
    let mut fleet = Vec::new();
    for _ in 0..managers {
        let store = FirestoreStore::with_collection(db().await, collection);
        let manager = Manager::builder(Arc::new(store.clone()))
            .env(ENV)
            .poll_interval(poll)
            .build();
        manager
            .register_dyn(
                KIND,
                handler_fn(|_task: Task| async { Ok::<_, std::io::Error>(()) }),
                HandlerOptions::default().concurrency(4),
            )
            .expect("register");
        fleet.push((store, manager));
    }
    fleet
}

/// Waits until every listener is connected.
async fn connected(fleet: &[(FirestoreStore, Manager)]) {
    for _ in 0..600 {
        if fleet.iter().all(|(s, _)| s.stats().listen_connects > 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the listeners did not connect within 60 s");
}

fn total(fleet: &[(FirestoreStore, Manager)]) -> StoreStats {
    fleet
        .iter()
        .map(|(s, _)| s.stats())
        .fold(StoreStats::default(), |a, b| a + b)
}

/// `tasks` tasks (on `keys` resource keys; 0: keyless) created while
/// `managers` managers run, drained to the end.
async fn steady(managers: usize, keys: usize, tasks: usize) -> Row {
    let collection = collection();
    let creator = FirestoreStore::with_collection(db().await, &collection);
    let fleet = fleet(&collection, managers, Duration::from_secs(60)).await;
    connected(&fleet).await;
    let before = total(&fleet);
    let now = Utc::now();
    let batch: Vec<Task> = (0..tasks)
        .map(|i| {
            let mut t = Task::new(format!("t{i:04}"), KIND, ENV, now);
            if keys > 0 {
                t.resource_key = Some(format!("k{}", i % keys));
            }
            t
        })
        .collect();
    creator.create(batch).await.expect("create");
    let mut done = 0;
    for _ in 0..600 {
        let counts = creator
            .count_by_status(ENV, Some(KIND), Utc::now())
            .await
            .expect("count");
        done = counts.get(&TaskStatus::Completed).copied().unwrap_or(0);
        if done == tasks as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if done != tasks as u64 {
        let mut filter = oncetask_core::store::TaskFilter::env(ENV, Utc::now());
        filter.not_done = true;
        let left = creator.find(&filter).await.expect("find");
        for t in &left {
            eprintln!(
                "not done: {} key {:?} leased until {:?} attempts {} wait {:?}",
                t.id, t.resource_key, t.leased_until, t.attempts, t.wait_until
            );
        }
    }
    assert_eq!(done, tasks as u64, "every task completed");
    // After shutdown, so that every outcome's write answer is counted.
    for (_, manager) in &fleet {
        manager.shutdown(Duration::from_secs(10)).await;
    }
    let spent = total(&fleet).since(&before);
    let row = Row {
        managers,
        keys,
        tasks,
        spent,
    };
    row.print();
    row
}

/// Tasks per steady row: 120, or `ONCETASK_COST_TASKS` (a larger drain
/// spreads the reads every manager spends once per drain, its last empty
/// claims and next-due lookups, over more tasks).
fn tasks_per_row() -> usize {
    std::env::var("ONCETASK_COST_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(120)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_tasks_with_1_3_and_6_managers() {
    for managers in [1, 3, 6] {
        let row = steady(managers, 0, tasks_per_row()).await;
        assert!(
            row.per_task(row.spent.writes) < 4.0,
            "two writes per task, some races"
        );
        assert!(
            row.per_task(row.spent.reads) < 10.0 * managers as f64,
            "reads grow with claims and listeners, never with the backlog"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_tasks_on_12_keys_with_3_managers() {
    let row = steady(3, 12, tasks_per_row()).await;
    assert!(row.per_task(row.spent.writes) < 6.0);
}

/// An idle manager: reads per poll cycle, measured at a 1 s poll interval
/// and scaled to the default 60 s interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_manager_per_hour() {
    let collection = collection();
    let fleet = fleet(&collection, 1, Duration::from_secs(1)).await;
    connected(&fleet).await;
    // Past the first poll (which also looks up the next due time).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = total(&fleet);
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let spent = total(&fleet).since(&before);
    fleet[0].1.shutdown(Duration::from_secs(5)).await;
    let cycles = window.as_secs_f64();
    let per_cycle = spent.reads as f64 / cycles;
    println!(
        "cost: idle manager, 1 kind: {:.1} reads per poll cycle ({} reads in {cycles} cycles \
         of 1 s); at the default 60 s poll: {:.0} reads per hour per kind",
        per_cycle,
        spent.reads,
        per_cycle * 60.0
    );
    assert!(spent.reads > 0, "an idle manager polls");
    // One read (an empty claim) per quiet poll; a slow first poll may still
    // land its next-due lookup (2 reads) in the window. Before, every poll
    // cost 3 reads.
    assert!(
        spent.reads <= window.as_secs() + 3,
        "one read per quiet poll: {spent:?}"
    );
    assert_eq!(spent.writes, 0, "an idle manager writes nothing");
}

/// A claim of a task with a resource key reads the candidate, the key's lock
/// and at most one task to tell whether the key is busy: a few documents
/// whatever the key's backlog (it used to read every not-done task of the
/// key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_claim_reads_a_few_documents_whatever_the_keys_backlog() {
    use oncetask_core::lifecycle::LeaseGrant;
    use oncetask_core::store::{ClaimMode, ClaimRequest};
    for backlog in [100, 2_000, 10_000] {
        let store = FirestoreStore::with_collection(db().await, collection());
        let now = Utc::now();
        let tasks: Vec<Task> = (0..backlog)
            .map(|i| {
                let mut t = Task::new(format!("t{i:05}"), KIND, ENV, now);
                t.resource_key = Some("hot".to_owned());
                t
            })
            .collect();
        store.create(tasks).await.expect("create");
        let request = ClaimRequest {
            env: ENV.into(),
            kind: KIND.into(),
            now,
            grant: LeaseGrant::new(now, Duration::from_secs(60)),
            mode: ClaimMode::Single { limit: 1 },
            order: oncetask_core::store::ClaimOrder::Priority,
        };
        let before = store.stats();
        let claimed = store.claim(&request).await.expect("claim").tasks.len();
        let spent = store.stats().since(&before);
        println!(
            "cost: one key, backlog {backlog}: a single claim took {claimed} task with {} reads, \
             {} writes",
            spent.reads, spent.writes
        );
        assert_eq!(claimed, 1);
        assert!(spent.reads <= 5, "{spent:?}");
        assert_eq!(spent.writes, 2, "the lease and the key's lock");
    }
}

/// The kinds of an env cost one read per kind plus one, not one per task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_the_kinds_reads_one_document_per_kind() {
    let store = FirestoreStore::with_collection(db().await, collection());
    let now = Utc::now();
    let tasks: Vec<Task> = (0..300)
        .map(|i| Task::new(format!("t{i:04}"), ["a", "b", "c"][i % 3], ENV, now))
        .collect();
    store.create(tasks).await.expect("create");
    let before = store.stats();
    let kinds = store.kinds(ENV).await.expect("kinds");
    let spent = store.stats().since(&before);
    println!(
        "cost: kinds of an env with 300 tasks of 3 kinds: {} reads",
        spent.reads
    );
    assert_eq!(kinds, ["a", "b", "c"]);
    assert!(spent.reads <= 4, "{spent:?}");
}

/// What a store remembers of the keys it leased spares reads: a key whose
/// lease it holds is skipped without reading its lock or asking for a live
/// lease; a key it freed, whose lock still names its lease, is taken
/// without asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_spares_reads_on_keys_it_holds_or_freed() {
    use oncetask_core::lifecycle::{self, LeaseGrant};
    use oncetask_core::store::{Change, ClaimMode, ClaimRequest, Swap};
    let store = FirestoreStore::with_collection(db().await, collection());
    let now = Utc::now();
    let tasks: Vec<Task> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            let mut t = Task::new(*id, KIND, ENV, now);
            t.resource_key = Some("hot".to_owned());
            t
        })
        .collect();
    store.create(tasks).await.expect("create");
    let claim = || async {
        let request = ClaimRequest {
            env: ENV.into(),
            kind: KIND.into(),
            now: Utc::now(),
            grant: LeaseGrant::new(Utc::now(), Duration::from_secs(60)),
            mode: ClaimMode::Single { limit: 1 },
            order: oncetask_core::store::ClaimOrder::Priority,
        };
        let before = store.stats();
        let tasks = store.claim(&request).await.expect("claim").tasks;
        (tasks, store.stats().since(&before).reads)
    };
    let (first, reads) = claim().await;
    assert_eq!(first.len(), 1);
    assert_eq!(reads, 3, "the candidate, the lock, one live-lease read");
    // Held: the key's tasks are left out of the first page (b and c are
    // not read: the page is empty, billed as one read).
    let (none, reads) = claim().await;
    assert!(none.is_empty());
    assert_eq!(reads, 1, "one empty page");
    // Freed by this store: the lock still names its lease.
    let a = &first[0];
    let token = a.lease_token.clone().expect("leased");
    let done = lifecycle::succeed(a, &token, Utc::now(), None).expect("succeed");
    store
        .swap(&[Swap::new(a, Change::Outcome, &done)])
        .await
        .expect("swap");
    let before = store.stats();
    let (second, reads) = claim().await;
    assert_eq!(second.len(), 1);
    assert_eq!(
        reads, 1,
        "the candidate: the lock this store keeps is neither read nor written"
    );
    assert_eq!(store.stats().since(&before).writes, 1, "the lease alone");
}

/// A busy key drains under one lock write: the store that wrote the lock
/// keeps the key for `LOCK_HOLD` (5 s), leasing its next tasks with no lock
/// read or write while more than `DRAIN_MARGIN` (2 s) of the hold is left;
/// another process takes the kept key as busy after reading the lock alone
/// (no live-lease query), and takes it once the hold is over. The claims
/// give their own `now`, so no wall-clock timing is involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_key_drains_under_one_lock_write_and_others_wait_for_its_hold() {
    use oncetask_core::lifecycle::{self, LeaseGrant};
    use oncetask_core::store::{Change, ClaimMode, ClaimRequest, Swap};
    let collection = collection();
    let holder = FirestoreStore::with_collection(db().await, &collection);
    let other = FirestoreStore::with_collection(db().await, &collection);
    let t0 = Utc::now();
    let tasks: Vec<Task> = (0..4)
        .map(|i| {
            let mut t = Task::new(
                format!("t{i}"),
                KIND,
                ENV,
                t0 + chrono::TimeDelta::milliseconds(i),
            );
            t.resource_key = Some("hot".to_owned());
            t
        })
        .collect();
    holder.create(tasks).await.expect("create");
    let request = |now| ClaimRequest {
        env: ENV.into(),
        kind: KIND.into(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit: 1 },
        order: oncetask_core::store::ClaimOrder::Priority,
    };
    let before = holder.stats();
    for expected in ["t0", "t1", "t2"] {
        let r = request(t0);
        let task = holder.claim(&r).await.expect("claim").tasks.remove(0);
        assert_eq!(task.id, expected);
        let done = lifecycle::succeed(&task, &r.grant.token, t0, None).expect("succeed");
        holder
            .swap(&[Swap::new(&task, Change::Outcome, &done)])
            .await
            .expect("swap");
    }
    let spent = holder.stats().since(&before);
    assert_eq!(
        spent.writes - spent.signal_writes,
        3 + 3 + 1,
        "three leases, three outcomes, one lock write: {spent:?}"
    );

    // Another process, during the hold: the lock says the key is kept.
    let before = other.stats();
    let none = other.claim(&request(t0)).await.expect("claim").tasks;
    assert!(none.is_empty(), "the key is kept by the holder");
    let spent = other.stats().since(&before);
    assert_eq!(spent.writes, 0);
    assert_eq!(
        spent.reads, 3,
        "the candidate, the lock, one empty page past the key: {spent:?}"
    );
    // Remembered: the next claim leaves the key out at once.
    let before = other.stats();
    assert!(
        other
            .claim(&request(t0))
            .await
            .expect("claim")
            .tasks
            .is_empty()
    );
    assert_eq!(other.stats().since(&before).reads, 1, "one empty page");

    // After the hold, the other process asks for a live lease and takes
    // the key with a lock write of its own.
    let later = t0 + chrono::TimeDelta::seconds(6);
    let before = other.stats();
    let taken = other.claim(&request(later)).await.expect("claim").tasks;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, "t3");
    let spent = other.stats().since(&before);
    assert_eq!(
        spent.reads, 3,
        "the candidate, the lock, one live-lease read"
    );
    assert_eq!(spent.writes, 2, "the lease and the lock");
}

/// A claim reaches a free key's task behind the backlogs of more busy keys
/// than one `not-in` can leave out (10): each page goes on after the last
/// document read and leaves out the keys met, so a busy key costs its first
/// task's read and its lock's, never its backlog. (Paging through the
/// backlogs, the claim gave up at its page limit with nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_reads_past_more_busy_keys_than_a_not_in_names() {
    use oncetask_core::lifecycle::LeaseGrant;
    use oncetask_core::store::{ClaimMode, ClaimRequest};
    let collection = collection();
    let holder = FirestoreStore::with_collection(db().await, &collection);
    let other = FirestoreStore::with_collection(db().await, &collection);
    let t0 = Utc::now();
    // Twelve busy keys with a backlog of 5 each, then one free key: all
    // created at once, so the ready order is by key.
    let mut tasks: Vec<Task> = Vec::new();
    for k in 0..12 {
        for i in 0..5 {
            let mut t = Task::new(format!("a{k:02}-{i}"), KIND, ENV, t0);
            t.resource_key = Some(format!("a{k:02}"));
            tasks.push(t);
        }
    }
    let mut free = Task::new("b-0", KIND, ENV, t0);
    free.resource_key = Some("b".to_owned());
    tasks.push(free);
    holder.create(tasks).await.expect("create");
    let request = |limit| ClaimRequest {
        env: ENV.into(),
        kind: KIND.into(),
        now: t0,
        grant: LeaseGrant::new(t0, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit },
        order: oncetask_core::store::ClaimOrder::Priority,
    };
    let held = holder.claim(&request(12)).await.expect("claim").tasks;
    let mut keys: Vec<String> = held.iter().filter_map(|t| t.resource_key.clone()).collect();
    keys.sort();
    assert_eq!(
        keys,
        (0..12).map(|k| format!("a{k:02}")).collect::<Vec<_>>(),
        "the holder takes one task of each busy key"
    );

    let before = other.stats();
    let taken = other.claim(&request(1)).await.expect("claim").tasks;
    let spent = other.stats().since(&before);
    println!(
        "cost: past 12 busy keys with backlogs of 5: a claim of 1 task read {} documents",
        spent.reads
    );
    assert_eq!(taken.len(), 1, "the free key's task is found");
    assert_eq!(taken[0].id, "b-0");
    // Per busy key one page of 1 document and its lock; then the free
    // task, its lock and one live-lease query.
    assert_eq!(spent.reads, 12 * 2 + 3, "{spent:?}");
}

/// Bench row (not run by `scripts/test`: about a minute on the emulator):
/// one resource key with 1,000 ready sub-second tasks, drained by 3
/// managers. The store that takes the key keeps its lock for 5 s and drains
/// the backlog under it, rewriting the lock about every 3 s (Firestore
/// sustains about one write per second on one document in production; the
/// emulator enforces no such limit), so this row shows the throughput, the
/// lock writes per second and the lost races of one hot key.
///
/// `scripts/test -p oncetask-firestore --test cost -- --ignored --nocapture one_hot_key`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bench row: run by hand, recorded in BENCHMARKS.md"]
async fn one_hot_key_with_1000_sub_second_tasks() {
    let started = std::time::Instant::now();
    let row = steady(3, 1, 1000).await;
    let seconds = started.elapsed().as_secs_f64();
    // Each task: one lease and one outcome; the rest are lock writes.
    let locks = row.spent.writes - row.spent.signal_writes - 2 * 1000;
    println!(
        "cost: one key, 1000 tasks, 3 managers: {:.1} tasks/s, {locks} lock writes \
         ({:.2} per second), {} lost races, {} lost leases",
        1000.0 / seconds,
        locks as f64 / seconds,
        row.spent.lost_races,
        row.spent.lost_leases
    );
}

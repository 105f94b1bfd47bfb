//! Concurrent callers on a multi-thread runtime: claims, creates and swaps
//! must stay exclusive under contention (docs/semantics.md S2.6, S7.12; W15).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use oncetask_core::store::ClaimMode;
use oncetask_core::{Outcome, Store, Task, lifecycle};
use serde_json::json;
use tokio::sync::Barrier;

use crate::StoreFactory;
use crate::support::*;

/// Number of concurrent callers in each test.
const CLAIMERS: usize = 8;
/// Upper bound on claim rounds per claimer, so a broken store fails instead of hanging.
const MAX_ROUNDS: usize = 10_000;

fn keyed_and_keyless(keys: usize, per_key: usize, keyless: usize) -> Vec<Task> {
    let mut tasks = Vec::new();
    for k in 0..keys {
        for i in 0..per_key {
            tasks.push(
                TaskBuilder::new(&format!("k{k}-{i}"))
                    .key(&format!("K{k}"))
                    .created_at(at(i as i64))
                    .build(),
            );
        }
    }
    for i in 0..keyless {
        tasks.push(TaskBuilder::new(&format!("n-{i}")).build());
    }
    tasks
}

/// Every stored task is done, completed after exactly one claim.
async fn assert_all_completed_once<S: Store>(store: &S, tasks: &[Task]) {
    for task in tasks {
        let stored = get_existing(store, &task.id).await;
        assert_eq!(
            (stored.outcome, stored.attempts),
            (Some(Outcome::Completed), 1),
            "{} must be completed by exactly one claim",
            task.id
        );
    }
}

/// 8 claimers race over 60 tasks without completing them: every task is
/// leased exactly once, to the claimer whose token it holds.
pub async fn concurrent_claimers_never_lease_a_task_twice(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let tasks: Vec<Task> = (0..60)
        .map(|i| TaskBuilder::new(&format!("t{i:02}")).build())
        .collect();
    seed(&store, tasks.clone()).await;
    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let mut handles = Vec::new();
    for _ in 0..CLAIMERS {
        let (store, barrier) = (store.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut mine = Vec::new();
            for _ in 0..MAX_ROUNDS {
                let claimed = claim(&store, at(0), 3).await;
                if claimed.is_empty() {
                    break;
                }
                mine.extend(claimed);
            }
            mine
        }));
    }
    let mut seen: BTreeMap<String, Task> = BTreeMap::new();
    for handle in handles {
        for task in handle.await.expect("a claimer panicked") {
            let id = task.id.clone();
            assert!(
                seen.insert(id.clone(), task).is_none(),
                "{id} was leased twice"
            );
        }
    }
    assert_eq!(seen.len(), tasks.len(), "every task was claimed");
    for (id, held) in &seen {
        assert_eq!(
            get(&store, id).await.as_ref(),
            Some(held),
            "the stored lease is the claimer's"
        );
    }
}

/// 8 claimers claim, "work" and complete tasks of 4 busy keys: at no moment
/// do two claimers hold live leases in one key, and every task completes once.
pub async fn concurrent_claimers_never_hold_two_live_leases_in_one_resource_key(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let tasks = keyed_and_keyless(4, 6, 8);
    seed(&store, tasks.clone()).await;
    let total = tasks.len();
    let live: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let mut handles = Vec::new();
    for _ in 0..CLAIMERS {
        let (store, barrier, live, done) =
            (store.clone(), barrier.clone(), live.clone(), done.clone());
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            for _ in 0..MAX_ROUNDS {
                if done.load(Ordering::SeqCst) == total {
                    return;
                }
                let claimed = claim(&store, at(0), 2).await;
                for task in &claimed {
                    if let Some(key) = &task.resource_key {
                        let mut live = live.lock().expect("live-lease map");
                        if let Some(other) = live.insert(key.clone(), task.id.clone()) {
                            panic!("{} and {other} hold live leases in key {key}", task.id);
                        }
                    }
                }
                tokio::task::yield_now().await;
                for task in &claimed {
                    if let Some(key) = &task.resource_key {
                        live.lock().expect("live-lease map").remove(key);
                    }
                    complete(&store, task, at(1), json!(null))
                        .await
                        .expect("the claimer still holds its lease");
                    done.fetch_add(1, Ordering::SeqCst);
                }
                if claimed.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
            panic!("claimers made no progress in {MAX_ROUNDS} rounds");
        }));
    }
    for handle in handles {
        handle.await.expect("a claimer panicked");
    }
    assert_all_completed_once(&store, &tasks).await;
}

/// 8 group claimers: every group is one key's, no two live groups share a
/// key, groups respect `max_group`, and every task completes once.
pub async fn concurrent_group_claimers_never_share_a_resource_key(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let tasks = keyed_and_keyless(4, 5, 5);
    seed(&store, tasks.clone()).await;
    let total = tasks.len();
    let live: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let mut handles = Vec::new();
    for _ in 0..CLAIMERS {
        let (store, barrier, live, done) =
            (store.clone(), barrier.clone(), live.clone(), done.clone());
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            for _ in 0..MAX_ROUNDS {
                if done.load(Ordering::SeqCst) == total {
                    return;
                }
                let (_, claimed) = claim_with(
                    &store,
                    ENV,
                    KIND,
                    at(0),
                    ClaimMode::ResourceGroup { max_group: 3 },
                    LEASE,
                )
                .await;
                let group = claimed.tasks;
                if group.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
                assert!(group.len() <= 3, "group larger than max_group");
                let key = group[0].resource_key.clone();
                assert!(
                    group.iter().all(|t| t.resource_key == key),
                    "a group mixes keys"
                );
                assert!(key.is_some() || group.len() == 1, "keyless tasks go alone");
                if let Some(key) = &key {
                    assert!(
                        live.lock().expect("live set").insert(key.clone()),
                        "two live groups in key {key}"
                    );
                }
                tokio::task::yield_now().await;
                if let Some(key) = &key {
                    live.lock().expect("live set").remove(key);
                }
                let swaps = group
                    .iter()
                    .map(|t| {
                        let next = lifecycle::succeed(t, &token(t), at(1), None).expect("holder");
                        (t.clone(), next)
                    })
                    .collect();
                let outcomes = swap_all(&store, swaps).await;
                assert!(outcomes.iter().all(|o| *o == Swapped::Applied));
                done.fetch_add(group.len(), Ordering::SeqCst);
            }
            panic!("group claimers made no progress in {MAX_ROUNDS} rounds");
        }));
    }
    for handle in handles {
        handle.await.expect("a claimer panicked");
    }
    assert_all_completed_once(&store, &tasks).await;
}

/// 8 concurrent creates of one id: exactly one is created, the others see
/// it as existing, and the stored task is the winner's.
pub async fn concurrent_creates_of_one_id_create_it_once(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let mut handles = Vec::new();
    for i in 0..CLAIMERS {
        let (store, barrier) = (store.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            let task = TaskBuilder::new("same").data("writer", json!(i)).build();
            barrier.wait().await;
            let outcome = create(&store, vec![task.clone()]).await.remove(0);
            (outcome, task)
        }));
    }
    let mut winners = Vec::new();
    for handle in handles {
        let (outcome, task) = handle.await.expect("a creator panicked");
        match outcome {
            Created::Created => winners.push(task),
            Created::AlreadyExists => {}
            other => panic!("unexpected create outcome {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins");
    assert_eq!(get(&store, "same").await.as_ref(), winners.first());
}

/// 8 concurrent swaps expecting one version: exactly one applies (this is
/// what makes cancel-vs-complete and worker-vs-worker races safe).
pub async fn concurrent_swaps_with_one_expected_version_apply_once(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let held = claim_one(&store, at(0), "a").await;
    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let mut handles = Vec::new();
    for i in 0..CLAIMERS {
        let (store, barrier, held) = (store.clone(), barrier.clone(), held.clone());
        handles.push(tokio::spawn(async move {
            let next = lifecycle::succeed(&held, &token(&held), at(1), Some(result(i as u64)))
                .expect("holder");
            barrier.wait().await;
            (swap(&store, &held, next.clone()).await, next)
        }));
    }
    let mut applied = Vec::new();
    for handle in handles {
        let (outcome, next) = handle.await.expect("a swapper panicked");
        match outcome {
            Swapped::Applied => applied.push(next),
            Swapped::Conflict => {}
            other => panic!("unexpected swap outcome {other:?}"),
        }
    }
    assert_eq!(applied.len(), 1, "exactly one swap wins");
    assert_eq!(get(&store, "a").await.as_ref(), applied.first());
}

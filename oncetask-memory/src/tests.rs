//! Unit tests of the index logic. The shared behaviour suite lives in the
//! `oncetask-conformance` crate (folder `conformance-tests`).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use futures::StreamExt;
use oncetask_core::lifecycle::{self, LeaseGrant};
use oncetask_core::store::{
    Change, ClaimMode, ClaimOrder, ClaimRequest, CreateOutcome, Delete, DeleteOutcome, Fetched,
    Notification, Swap, SwapOutcome, TaskFilter,
};
use oncetask_core::task::TaskParts;
use oncetask_core::{Store, Task, TaskStatus};
use proptest::prelude::*;

use crate::MemoryStore;

const ENV: &str = "test";
const KIND: &str = "work";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 6, 9, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

/// A pending task created `created` seconds after t0.
fn task(id: &str, key: Option<&str>, created: i64) -> Task {
    let mut t = Task::new(id, KIND, ENV, at(created));
    t.resource_key = key.map(str::to_owned);
    t.version = 0;
    t
}

fn waiting(mut t: Task, until: i64) -> Task {
    t.wait_until = Some(at(until));
    t
}

fn leased(mut t: Task, until: i64) -> Task {
    t.leased_until = Some(at(until));
    t
}

fn request(now: i64, mode: ClaimMode) -> ClaimRequest {
    ClaimRequest {
        env: ENV.to_owned(),
        kind: KIND.to_owned(),
        now: at(now),
        grant: LeaseGrant::new(at(now), Duration::from_secs(60)),
        mode,
        order: oncetask_core::store::ClaimOrder::Priority,
    }
}

fn single(limit: usize) -> ClaimMode {
    ClaimMode::Single { limit }
}

fn group(max_group: usize) -> ClaimMode {
    ClaimMode::ResourceGroup { max_group }
}

async fn store_with(tasks: Vec<Task>) -> MemoryStore {
    let store = MemoryStore::new();
    let outcomes = store.create(tasks).await.unwrap_or_default();
    assert!(outcomes.iter().all(|o| matches!(o, CreateOutcome::Created)));
    store
}

async fn claim_ids(store: &MemoryStore, now: i64, mode: ClaimMode) -> Vec<String> {
    store
        .claim(&request(now, mode))
        .await
        .map(|c| c.tasks.into_iter().map(|t| t.id).collect())
        .unwrap_or_default()
}

async fn fetch(store: &MemoryStore, id: &str) -> Option<Task> {
    match store.get(&[id.to_owned()]).await.ok()?.pop()? {
        Fetched::Task(t) => Some(t),
        Fetched::Undecodable(_) => None,
    }
}

#[tokio::test]
async fn claim_skips_a_busy_key_and_takes_the_next_ready_task() {
    let store = store_with(vec![
        leased(task("holder", Some("k"), 0), 100),
        task("blocked", Some("k"), 1),
        task("free", Some("other"), 2),
        task("plain", None, 3),
    ])
    .await;
    assert_eq!(claim_ids(&store, 10, single(1)).await, ["free"]);
    assert_eq!(claim_ids(&store, 10, single(5)).await, ["plain"]);
    assert!(claim_ids(&store, 10, single(5)).await.is_empty());
}

#[tokio::test]
async fn a_single_claim_takes_at_most_one_task_per_key() {
    let store = store_with(vec![
        task("a1", Some("a"), 0),
        task("a2", Some("a"), 1),
        task("b1", Some("b"), 2),
        task("n1", None, 3),
        task("n2", None, 4),
    ])
    .await;
    assert_eq!(
        claim_ids(&store, 10, single(10)).await,
        ["a1", "b1", "n1", "n2"]
    );
    // a2 waits for a1's lease.
    assert!(claim_ids(&store, 20, single(10)).await.is_empty());
    // Expired leases (all at 70) come after never-leased a2, whose key a1 then loses.
    assert_eq!(
        claim_ids(&store, 80, single(10)).await,
        ["a2", "b1", "n1", "n2"]
    );
}

#[tokio::test]
async fn a_key_leased_by_another_kind_does_not_block() {
    let mut other = leased(task("other-kind", Some("k"), 0), 100);
    other.kind = "elsewhere".to_owned();
    let store = store_with(vec![other, task("mine", Some("k"), 1)]).await;
    assert_eq!(claim_ids(&store, 10, single(1)).await, ["mine"]);
}

#[tokio::test]
async fn expired_leases_are_claimed_after_never_leased_tasks() {
    let store = store_with(vec![
        leased(task("expired-late", None, 0), 8),
        leased(task("expired-early", None, 1), 5),
        leased(task("live", None, 2), 50),
        waiting(task("due", None, 3), 9),
        task("fresh", None, 4),
        waiting(task("future", None, 5), 30),
    ])
    .await;
    assert_eq!(
        claim_ids(&store, 10, single(10)).await,
        ["fresh", "due", "expired-early", "expired-late"]
    );
}

#[tokio::test]
async fn an_expired_lease_still_waiting_is_skipped_not_a_stop() {
    let store = store_with(vec![
        waiting(leased(task("backing-off", None, 0), 1), 50),
        leased(task("expired", None, 1), 2),
    ])
    .await;
    assert_eq!(claim_ids(&store, 10, single(10)).await, ["expired"]);
}

#[tokio::test]
async fn a_claim_applies_the_core_lease_patch() {
    let store = store_with(vec![task("a", None, 0)]).await;
    let req = request(10, single(1));
    let claimed = store.claim(&req).await.map(|c| c.tasks).unwrap_or_default();
    let stored = fetch(&store, "a").await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(stored.as_ref(), claimed.first());
    let stored = stored.unwrap_or_else(|| task("missing", None, 0));
    assert_eq!(stored.leased_until, Some(req.grant.leased_until));
    assert_eq!(stored.lease_token.as_ref(), Some(&req.grant.token));
    assert_eq!((stored.attempts, stored.version), (1, 1));
}

#[tokio::test]
async fn a_group_claim_takes_the_ready_tasks_of_the_first_free_key() {
    let store = store_with(vec![
        leased(task("busy", Some("b"), 0), 100),
        task("b2", Some("b"), 1),
        waiting(task("k-late", Some("k"), 2), 5),
        task("k-first", Some("k"), 3),
        waiting(task("k-future", Some("k"), 4), 50),
        task("k-second", Some("k"), 5),
        task("plain", None, 6),
    ])
    .await;
    // Head in claim order: b2 (busy key, skipped), then k-first.
    assert_eq!(
        claim_ids(&store, 10, group(10)).await,
        ["k-first", "k-second", "k-late"]
    );
    assert_eq!(claim_ids(&store, 10, group(10)).await, ["plain"]);
    assert!(claim_ids(&store, 10, group(10)).await.is_empty());
}

#[tokio::test]
async fn a_group_claim_is_capped() {
    let store = store_with(vec![
        task("k1", Some("k"), 0),
        task("k2", Some("k"), 1),
        task("k3", Some("k"), 2),
    ])
    .await;
    assert_eq!(claim_ids(&store, 10, group(2)).await, ["k1", "k2"]);
    // The key is now busy: k3 waits for the group's lease.
    assert!(claim_ids(&store, 10, group(2)).await.is_empty());
}

#[tokio::test]
async fn a_group_head_without_key_is_claimed_alone() {
    let store = store_with(vec![task("plain", None, 0), task("k1", Some("k"), 1)]).await;
    assert_eq!(claim_ids(&store, 10, group(10)).await, ["plain"]);
    assert_eq!(claim_ids(&store, 10, group(10)).await, ["k1"]);
}

#[tokio::test]
async fn zero_limits_lease_nothing() {
    let store = store_with(vec![task("a", None, 0)]).await;
    assert!(claim_ids(&store, 10, single(0)).await.is_empty());
    assert!(claim_ids(&store, 10, group(0)).await.is_empty());
}

#[tokio::test]
async fn next_due_is_the_first_wait_or_lease_expiry_after_the_instant() {
    let mut done = waiting(task("done", None, 0), 3);
    done.done_at = Some(at(0));
    let mut other = waiting(task("other-kind", None, 0), 4);
    other.kind = "elsewhere".to_owned();
    let store = store_with(vec![
        done,
        other,
        waiting(task("w", None, 1), 20),
        leased(task("l", None, 2), 10),
        waiting(leased(task("both", None, 3), 15), 12),
        task("fresh", None, 4),
    ])
    .await;
    let next = |after: i64| {
        let store = store.clone();
        async move { store.next_due(ENV, KIND, at(after)).await.ok().flatten() }
    };
    assert_eq!(next(0).await, Some(at(10)));
    assert_eq!(next(10).await, Some(at(15)));
    assert_eq!(next(15).await, Some(at(20)));
    assert_eq!(next(20).await, None);
    assert_eq!(
        store.next_due(ENV, "none", at(0)).await.ok().flatten(),
        None
    );
}

#[tokio::test]
async fn create_reports_existing_ids_per_env_and_within_one_call() {
    let store = store_with(vec![task("a", None, 0)]).await;
    let mut elsewhere = task("a", None, 0);
    elsewhere.env = "prod".to_owned();
    let outcomes = store
        .create(vec![
            task("a", None, 0),
            elsewhere,
            task("b", None, 1),
            task("b", None, 2),
        ])
        .await
        .unwrap_or_default();
    assert!(matches!(outcomes[0], CreateOutcome::AlreadyExists));
    assert!(matches!(&outcomes[1], CreateOutcome::ExistsInOtherEnv { env } if env == ENV));
    assert!(matches!(outcomes[2], CreateOutcome::Created));
    assert!(matches!(outcomes[3], CreateOutcome::AlreadyExists));
    assert_eq!(fetch(&store, "b").await.map(|t| t.created_at), Some(at(1)));
}

#[tokio::test]
async fn swap_compares_versions_and_reindexes() {
    let store = store_with(vec![task("a", Some("k"), 0), task("b", Some("k"), 1)]).await;
    let req = request(10, single(1));
    let claimed = store.claim(&req).await.map(|c| c.tasks).unwrap_or_default();
    let held = claimed
        .first()
        .cloned()
        .unwrap_or_else(|| task("x", None, 0));
    assert_eq!(held.id, "a");

    let done = lifecycle::succeed(&held, &req.grant.token, at(11), None);
    let Ok(done) = done else {
        panic!("succeed rejected: {done:?}");
    };
    let outcomes = store
        .swap(&[
            Swap::new(
                &TaskParts {
                    version: held.version - 1,
                    ..held.clone().into_parts()
                }
                .into(),
                Change::Outcome,
                &done,
            ),
            {
                let ghost = task("ghost", None, 0);
                Swap::new(&ghost, Change::Outcome, &ghost)
            },
            Swap::new(&held, Change::Outcome, &done),
            Swap::new(&held, Change::Outcome, &done),
        ])
        .await
        .unwrap_or_default();
    assert!(matches!(outcomes[0], SwapOutcome::Conflict));
    assert!(matches!(outcomes[1], SwapOutcome::NotFound));
    assert!(matches!(outcomes[2], SwapOutcome::Applied { .. }));
    assert!(matches!(outcomes[3], SwapOutcome::Conflict));

    // The key is free again; a is done and no longer a candidate.
    assert_eq!(claim_ids(&store, 12, single(5)).await, ["b"]);
    let counts = store.count_by_status(ENV, None, at(12)).await;
    let counts = counts.unwrap_or_default();
    assert_eq!(counts.get(&TaskStatus::Completed), Some(&1));
    assert_eq!(counts.get(&TaskStatus::Leased), Some(&1));
    assert_eq!(counts.len(), 2);
    assert_eq!(
        store.next_due(ENV, KIND, at(12)).await.ok().flatten(),
        Some(at(72))
    );
}

#[tokio::test]
async fn get_keeps_input_order_once_per_id() {
    let store = store_with(vec![task("a", None, 0), task("b", None, 1)]).await;
    let ids: Vec<String> = ["b", "missing", "a", "b"].map(String::from).to_vec();
    let got: Vec<String> = store
        .get(&ids)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|f| match f {
            Fetched::Task(t) => t.id,
            Fetched::Undecodable(u) => u.id,
        })
        .collect();
    assert_eq!(got, ["b", "a"]);
}

#[tokio::test]
async fn find_orders_by_creation_then_id_and_pages() {
    let mut other_env = task("z-prod", None, 0);
    other_env.env = "prod".to_owned();
    let mut other_kind = task("y-other", None, 1);
    other_kind.kind = "elsewhere".to_owned();
    let store = store_with(vec![
        task("c", Some("k"), 2),
        task("b", None, 1),
        task("a", Some("k"), 1),
        other_env,
        other_kind,
        waiting(task("d", None, 3), 100),
    ])
    .await;
    let ids = |filter: TaskFilter| {
        let store = store.clone();
        async move {
            store
                .find(&filter)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    let all = TaskFilter::env(ENV, at(10));
    assert_eq!(ids(all.clone()).await, ["a", "b", "y-other", "c", "d"]);
    let kind = all.clone().kind(KIND);
    assert_eq!(ids(kind.clone()).await, ["a", "b", "c", "d"]);
    let paged = kind.clone().offset(1).limit(2);
    assert_eq!(ids(paged).await, ["b", "c"]);
    let keyed = kind.clone().resource_key("k");
    assert_eq!(ids(keyed).await, ["a", "c"]);
    let waiting_only = kind.status(TaskStatus::Waiting);
    assert_eq!(ids(waiting_only).await, ["d"]);
}

#[tokio::test]
async fn delete_reports_per_item_and_unindexes() {
    let store = store_with(vec![
        leased(task("a", Some("k"), 0), 100),
        task("b", Some("k"), 1),
    ])
    .await;
    let outcomes = store
        .delete(&[Delete::any("a"), Delete::any("a"), Delete::any("nope")])
        .await
        .unwrap_or_default();
    assert!(matches!(outcomes[0], DeleteOutcome::Deleted));
    assert!(matches!(outcomes[1], DeleteOutcome::NotFound));
    assert!(matches!(outcomes[2], DeleteOutcome::NotFound));
    // The lease of the deleted task no longer holds the key.
    assert_eq!(claim_ids(&store, 10, single(5)).await, ["b"]);
}

#[tokio::test]
async fn undecodable_documents_are_reported_and_skipped() {
    let store = store_with(vec![task("good", None, 0)]).await;
    store.insert_undecodable("bad", ENV, KIND, "expected an object");
    let claimed = store.claim(&request(10, single(5))).await;
    let claimed = claimed.unwrap_or_default();
    assert_eq!(
        claimed
            .tasks
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        ["good"]
    );
    assert_eq!(claimed.undecodable.len(), 1);
    assert_eq!(claimed.undecodable[0].id, "bad");
    assert_eq!(claimed.undecodable[0].reason, "expected an object");

    assert!(matches!(
        store.get(&["bad".to_owned()]).await.unwrap_or_default().first(),
        Some(Fetched::Undecodable(u)) if u.id == "bad"
    ));
    let listed = store.find(&TaskFilter::env(ENV, at(10))).await;
    assert_eq!(listed.map(|l| l.len()).unwrap_or_default(), 1);
    let counts = store.count_by_status(ENV, Some(KIND), at(10)).await;
    assert_eq!(
        counts.map(|c| c.values().sum::<u64>()).unwrap_or_default(),
        1
    );
    let mut clash = task("bad", None, 0);
    clash.env = "prod".to_owned();
    let created = store.create(vec![clash]).await.unwrap_or_default();
    assert!(matches!(&created[0], CreateOutcome::ExistsInOtherEnv { env } if env == ENV));

    let deleted = store
        .delete(&[Delete::any("bad")])
        .await
        .unwrap_or_default();
    assert!(matches!(deleted[0], DeleteOutcome::Deleted));
    let claimed = store
        .claim(&request(10, single(5)))
        .await
        .unwrap_or_default();
    assert!(claimed.undecodable.is_empty());
}

#[tokio::test]
async fn writes_notify_subscribers_of_their_env() {
    let store = MemoryStore::new();
    let Some(mut notices) = store.subscribe(ENV) else {
        panic!("memory store has notifications");
    };
    let mut other = task("elsewhere", None, 0);
    other.env = "prod".to_owned();
    let _ = store
        .create(vec![other, task("a", None, 0), task("b", None, 0)])
        .await;
    let notice = Notification::new;
    // New work touches no held task.
    assert_eq!(notices.next().await, Some(notice(KIND, false)));
    // Finishing a task without a key frees no work: no notice.
    let request = request(1, single(1));
    let claimed = store.claim(&request).await.unwrap_or_default().tasks;
    let [a] = claimed.as_slice() else {
        panic!("one task claimed: {claimed:?}");
    };
    let done = lifecycle::succeed(a, &request.grant.token, at(2), None).expect("holds the lease");
    let _ = store.swap(&[Swap::new(a, Change::Outcome, &done)]).await;
    // An operator's cancel and a delete may touch held tasks.
    let b = task("b", None, 0);
    let cancelled = lifecycle::cancel(&b, at(3)).expect("not done");
    let _ = store
        .swap(&[Swap::new(&b, Change::Cancel, &cancelled)])
        .await;
    assert_eq!(notices.next().await, Some(notice(KIND, true)));
    // Deleting a finished task wakes no one (a pruner's batches); deleting
    // an unfinished one may free a key or drop a task held ahead.
    let _ = store.delete(&[Delete::any("a")]).await;
    let _ = store.create(vec![task("c", None, 0)]).await;
    assert_eq!(notices.next().await, Some(notice(KIND, false)));
    let _ = store.delete(&[Delete::any("c")]).await;
    assert_eq!(notices.next().await, Some(notice(KIND, true)));
}

#[tokio::test]
async fn a_lagging_subscriber_keeps_receiving() {
    let store = MemoryStore::new();
    let Some(mut notices) = store.subscribe(ENV) else {
        panic!("memory store has notifications");
    };
    for i in 0..3000 {
        let _ = store.create(vec![task(&format!("t{i}"), None, 0)]).await;
    }
    assert!(notices.next().await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_share_a_key() {
    let tasks = (0..200)
        .map(|i| task(&format!("t{i}"), Some(&format!("k{}", i % 5)), i))
        .collect();
    let store = store_with(tasks).await;
    let claimers = (0..8).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let mode = if n % 2 == 0 { single(3) } else { group(4) };
            store
                .claim(&request(10, mode))
                .await
                .map(|c| c.tasks)
                .unwrap_or_default()
        })
    });
    let mut keys = Vec::new();
    for claimer in claimers {
        let claimed = claimer.await.unwrap_or_default();
        let mut mine: Vec<_> = claimed.into_iter().filter_map(|t| t.resource_key).collect();
        mine.dedup();
        keys.extend(mine);
    }
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(keys.len(), unique.len(), "a key was leased twice: {keys:?}");
    assert_eq!(unique.len(), 5);
}

// ---- Model check: the index walk against a brute-force selection. ----

/// The contract's selection computed from a full scan.
fn reference_select(
    tasks: &[Task],
    now: DateTime<Utc>,
    mode: ClaimMode,
    order: ClaimOrder,
) -> Vec<String> {
    let live_key = |key: &str| {
        tasks
            .iter()
            .any(|t| t.resource_key.as_deref() == Some(key) && t.is_leased_at(now))
    };
    let mut ready: Vec<&Task> = tasks.iter().filter(|t| t.is_ready_at(now)).collect();
    ready.sort_by(|a, b| match order {
        ClaimOrder::Oldest => a.claim_order_key().cmp(&b.claim_order_key()),
        _ => (std::cmp::Reverse(a.priority), a.claim_order_key())
            .cmp(&(std::cmp::Reverse(b.priority), b.claim_order_key())),
    });
    match mode {
        ClaimMode::Single { limit } => {
            let mut taken: Vec<&str> = Vec::new();
            let mut out = Vec::new();
            for t in ready {
                if out.len() >= limit {
                    break;
                }
                if let Some(key) = t.resource_key.as_deref() {
                    if taken.contains(&key) || live_key(key) {
                        continue;
                    }
                    taken.push(key);
                }
                out.push(t.id.clone());
            }
            out
        }
        ClaimMode::ResourceGroup { max_group } => {
            if max_group == 0 {
                return Vec::new();
            }
            for t in &ready {
                match t.resource_key.as_deref() {
                    None => return vec![t.id.clone()],
                    Some(key) if live_key(key) => continue,
                    Some(key) => {
                        let mut members: Vec<&&Task> = ready
                            .iter()
                            .filter(|m| m.resource_key.as_deref() == Some(key))
                            .collect();
                        members.sort_by(|a, b| {
                            (a.wait_until, a.created_at, &a.id).cmp(&(
                                b.wait_until,
                                b.created_at,
                                &b.id,
                            ))
                        });
                        return members
                            .into_iter()
                            .take(max_group)
                            .map(|m| m.id.clone())
                            .collect();
                    }
                }
            }
            Vec::new()
        }
    }
}

/// The fields a generated task varies.
#[derive(Debug, Clone)]
struct Shape {
    key: Option<usize>,
    wait: Option<i64>,
    lease: Option<i64>,
    created: i64,
    done: bool,
    other_kind: bool,
    priority: i8,
}

fn arb_shape() -> impl Strategy<Value = Shape> {
    (
        prop::option::of(0..3usize),
        prop::option::of(0i64..20),
        prop::option::of(0i64..20),
        0i64..5,
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        prop_oneof![4 => Just(0i8), 1 => Just(-2i8), 1 => Just(3i8)],
    )
        .prop_map(
            |(key, wait, lease, created, done, other_kind, priority)| Shape {
                key,
                wait,
                lease,
                created,
                done,
                other_kind,
                priority,
            },
        )
}

fn shaped(id: &str, shape: &Shape) -> Task {
    let keys = ["a", "b", "c"];
    let mut t = task(id, shape.key.map(|k| keys[k]), shape.created);
    t.wait_until = shape.wait.map(at);
    t.leased_until = shape.lease.map(at);
    if shape.done {
        t.done_at = Some(at(0));
        t.outcome = Some(oncetask_core::Outcome::Completed);
    }
    if shape.other_kind {
        t.kind = "elsewhere".to_owned();
    }
    t.priority = shape.priority;
    t
}

fn arb_mode() -> impl Strategy<Value = ClaimMode> {
    prop_oneof![(0usize..5).prop_map(single), (0usize..5).prop_map(group)]
}

#[derive(Debug, Clone)]
enum Step {
    Claim(i64, ClaimMode, ClaimOrder),
    /// Give the n-th stored task (modulo) a new priority.
    Reprioritize(usize, i8),
    /// Swap the n-th stored task (modulo) into a new shape.
    Rewrite(usize, Shape, i64),
    Delete(usize, i64),
    Create(Shape, i64),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0i64..25, arb_mode(), prop_oneof![3 => Just(ClaimOrder::Priority), 1 => Just(ClaimOrder::Oldest)])
            .prop_map(|(now, mode, order)| Step::Claim(now, mode, order)),
        1 => (any::<usize>(), prop_oneof![Just(0i8), Just(-2i8), Just(3i8)])
            .prop_map(|(n, p)| Step::Reprioritize(n, p)),
        2 => (any::<usize>(), arb_shape(), 0i64..25).prop_map(|(n, s, now)| Step::Rewrite(n, s, now)),
        1 => (any::<usize>(), 0i64..25).prop_map(|(n, now)| Step::Delete(n, now)),
        1 => (arb_shape(), 0i64..25).prop_map(|(s, now)| Step::Create(s, now)),
    ]
}

async fn stored_tasks(store: &MemoryStore, ids: &[String]) -> Vec<Task> {
    store
        .get(ids)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| match f {
            Fetched::Task(t) => Some(t),
            Fetched::Undecodable(_) => None,
        })
        .collect()
}

/// Runs `steps` against a store and checks every read against a full scan.
async fn check_against_full_scan(
    initial: Vec<Shape>,
    steps: Vec<Step>,
) -> Result<(), TestCaseError> {
    let tasks: Vec<Task> = initial
        .iter()
        .enumerate()
        .map(|(i, s)| shaped(&format!("t{i:02}"), s))
        .collect();
    let mut ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let store = store_with(tasks).await;
    for (n, step) in steps.into_iter().enumerate() {
        let current = stored_tasks(&store, &ids).await;
        let now = match step {
            Step::Claim(now, mode, order) => {
                let mine: Vec<Task> = current.iter().filter(|t| t.kind == KIND).cloned().collect();
                let expected = reference_select(&mine, at(now), mode, order);
                let req = ClaimRequest {
                    grant: LeaseGrant::new(at(now), Duration::from_secs(3)),
                    order,
                    ..request(now, mode)
                };
                let claimed: Vec<String> = store
                    .claim(&req)
                    .await
                    .map(|c| c.tasks.into_iter().map(|t| t.id).collect())
                    .unwrap_or_default();
                prop_assert_eq!(claimed, expected);
                now
            }
            Step::Rewrite(pick, shape, now) => {
                if let Some(old) = current.get(pick % current.len().max(1)) {
                    let mut new = shaped(&old.id, &shape);
                    new.version = old.version + 1;
                    let out = store
                        // A reset's change writes every field a swap can
                        // change; the shape's key, kind and creation stay.
                        .swap(&[Swap::new(old, Change::Reset, &new)])
                        .await
                        .unwrap_or_default();
                    let applied = matches!(out.first(), Some(SwapOutcome::Applied { .. }));
                    prop_assert!(applied);
                }
                now
            }
            Step::Reprioritize(pick, priority) => {
                if let Some(old) = current.get(pick % current.len().max(1))
                    && let Ok(new) = lifecycle::reprioritize(old, priority)
                {
                    let out = store
                        .swap(&[Swap::new(old, Change::Reprioritize, &new)])
                        .await
                        .unwrap_or_default();
                    let applied = matches!(out.first(), Some(SwapOutcome::Applied { .. }));
                    prop_assert!(applied);
                }
                0
            }
            Step::Delete(pick, now) => {
                if let Some(old) = current.get(pick % current.len().max(1)) {
                    let out = store
                        .delete(&[Delete::any(old.id.clone())])
                        .await
                        .unwrap_or_default();
                    prop_assert!(matches!(out.first(), Some(DeleteOutcome::Deleted)));
                }
                now
            }
            Step::Create(shape, now) => {
                let id = format!("n{n:02}");
                let out = store
                    .create(vec![shaped(&id, &shape)])
                    .await
                    .unwrap_or_default();
                prop_assert!(matches!(out.first(), Some(CreateOutcome::Created)));
                ids.push(id);
                now
            }
        };

        let after = stored_tasks(&store, &ids).await;
        let mine: Vec<&Task> = after.iter().filter(|t| t.kind == KIND).collect();
        let due = mine
            .iter()
            .filter_map(|t| t.due_at())
            .filter(|d| *d > at(now))
            .min();
        prop_assert_eq!(store.next_due(ENV, KIND, at(now)).await.ok().flatten(), due);
        let mut counts = oncetask_core::store::StatusCounts::new();
        for t in &mine {
            *counts.entry(t.status(at(now))).or_insert(0) += 1;
        }
        prop_assert_eq!(
            store.count_by_status(ENV, Some(KIND), at(now)).await.ok(),
            Some(counts)
        );
        let mut listed: Vec<(DateTime<Utc>, String)> =
            after.iter().map(|t| (t.created_at, t.id.clone())).collect();
        listed.sort();
        let found: Vec<(DateTime<Utc>, String)> = store
            .find(&TaskFilter::env(ENV, at(now)))
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.created_at, t.id))
            .collect();
        prop_assert_eq!(found, listed);
    }
    Ok(())
}

proptest! {
    #[test]
    fn every_read_matches_a_full_scan(
        initial in prop::collection::vec(arb_shape(), 0..16),
        steps in prop::collection::vec(arb_step(), 1..12),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build();
        let Ok(runtime) = runtime else { panic!("no runtime") };
        runtime.block_on(check_against_full_scan(initial, steps))?;
    }
}

/// A wrapper that overrides nothing answers every call as the store it
/// wraps, the provided methods included (not with `Store`'s defaults).
#[tokio::test]
async fn a_forwarding_wrapper_answers_as_the_store_it_wraps() {
    struct Plain(MemoryStore);
    impl oncetask_core::store::Forward for Plain {
        fn inner(&self) -> &dyn Store {
            &self.0
        }
    }
    let inner = MemoryStore::new();
    let wrapped: Box<dyn Store> = Box::new(Plain(inner.clone()));
    wrapped
        .create(vec![Task::new("a", "k", "E", t0())])
        .await
        .expect("create");
    assert_eq!(wrapped.concurrent_claims(), inner.concurrent_claims());
    assert_eq!(wrapped.claims_ahead(), inner.claims_ahead());
    assert!(inner.claims_ahead(), "a default would answer false");
    assert!(
        wrapped.subscribe("E").is_some(),
        "a default would answer None"
    );
    assert_eq!(wrapped.kinds("E").await.expect("kinds"), ["k"]);
    assert_eq!(
        wrapped.inspect("E", t0()).await.expect("inspect"),
        inner.inspect("E", t0()).await.expect("inspect")
    );
    assert_eq!(wrapped.get(&["a".to_owned()]).await.expect("get").len(), 1);
}

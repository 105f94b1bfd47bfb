//! Claims by priority on the Firestore emulator: what a claim reads and
//! ranks (see `oncetask_firestore::priority`). Firestore cannot query by
//! `priority` (a query on the field leaves out every document without it),
//! so a claim by priority ranks the window of the oldest ready tasks, and
//! reads that window only while the kind is known to hold prioritized tasks.
//!
//! `scripts/test -p oncetask-firestore --test priority_window`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use oncetask_core::lifecycle::LeaseGrant;
use oncetask_core::store::{ClaimMode, ClaimOrder, ClaimRequest, CreateOutcome};
use oncetask_core::{Store, Task};
use oncetask_firestore::{DEFAULT_PRIORITY_WINDOW, FirestoreStore};

mod common;
use common::db;

const ENV: &str = "prio";
const KIND: &str = "job";

fn collection() -> String {
    format!("prio-{}", uuid::Uuid::new_v4().simple())
}

/// A task of [`KIND`] created at `created` with `priority`.
fn task(id: &str, created: DateTime<Utc>, priority: i8) -> Task {
    let mut task = Task::new(id, KIND, ENV, created);
    task.priority = priority;
    task
}

async fn create(store: &FirestoreStore, tasks: Vec<Task>) {
    for outcome in store.create(tasks).await.expect("create") {
        assert!(matches!(outcome, CreateOutcome::Created), "{outcome:?}");
    }
}

/// Claims up to `limit` tasks in `order`; the ids taken and the documents read.
async fn claim(store: &FirestoreStore, limit: usize, order: ClaimOrder) -> (Vec<String>, u64) {
    let now = Utc::now();
    let request = ClaimRequest {
        env: ENV.into(),
        kind: KIND.into(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(600)),
        mode: ClaimMode::Single { limit },
        order,
    };
    let before = store.stats();
    let claimed = store.claim(&request).await.expect("claim");
    let reads = store.stats().since(&before).reads;
    (claimed.tasks.into_iter().map(|t| t.id).collect(), reads)
}

/// A kind whose tasks are all at priority 0 is claimed at the cost it always
/// had (`limit` reads); once the store created a prioritized task, a claim
/// by priority reads the window of the 50 oldest ready tasks and ranks it.
/// A prioritized task beyond the window waits until it enters it; then it
/// comes first. An oldest claim reads `limit` documents whatever is known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_ranks_the_window_only_while_the_kind_holds_prioritized_tasks() {
    assert_eq!(DEFAULT_PRIORITY_WINDOW, 50);
    let store = FirestoreStore::with_collection(db().await, collection());
    let t0 = Utc::now() - TimeDelta::minutes(10);
    let plain: Vec<Task> = (0..60)
        .map(|i| task(&format!("t{i:02}"), t0 + TimeDelta::seconds(i), 0))
        .collect();
    create(&store, plain).await;

    let (taken, reads) = claim(&store, 1, ClaimOrder::Priority).await;
    assert_eq!((taken, reads), (vec!["t00".to_owned()], 1), "no priorities");

    // The newest task, 60th in claim order: beyond the window of 50.
    create(&store, vec![task("urgent", Utc::now(), 3)]).await;
    let (taken, reads) = claim(&store, 1, ClaimOrder::Priority).await;
    assert_eq!(taken, ["t01"], "the urgent task is beyond the window");
    assert_eq!(reads, 50, "the window");

    // An oldest claim reads what it takes.
    let (taken, reads) = claim(&store, 9, ClaimOrder::Oldest).await;
    let expected: Vec<String> = (2..11).map(|i| format!("t{i:02}")).collect();
    assert_eq!((taken, reads), (expected, 9));

    // 49 plain tasks are left ahead of it: it is in the window now.
    let (taken, reads) = claim(&store, 1, ClaimOrder::Priority).await;
    assert_eq!((taken, reads), (vec!["urgent".to_owned()], 50));
    // The store still knows the kind holds prioritized tasks (for 10
    // minutes): the window, as many ready tasks as are left.
    let (taken, reads) = claim(&store, 1, ClaimOrder::Priority).await;
    assert_eq!((taken, reads), (vec!["t11".to_owned()], 49));

    // A window of 0 (a clone shares what the store knows) ranks only what
    // a claim reads anyway.
    let narrow = store.clone().with_priority_window(0);
    let (taken, reads) = claim(&narrow, 1, ClaimOrder::Priority).await;
    assert_eq!((taken, reads), (vec!["t12".to_owned()], 1));
}

/// A store that knows nothing of the kind's priorities (another process
/// created its tasks) reads `limit` documents; when those hold a
/// prioritized task, it reads on to the window and ranks it, and keeps
/// reading the window on its next claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prioritized_task_at_the_head_makes_a_claim_read_on_to_the_window() {
    let collection = collection();
    let creator = FirestoreStore::with_collection(db().await, &collection);
    let claimer = FirestoreStore::with_collection(db().await, &collection);
    let t0 = Utc::now() - TimeDelta::minutes(10);
    let at = |i: i64| t0 + TimeDelta::seconds(i);
    let mut tasks = vec![task("t00", at(0), 0), task("mid", at(1), 2)];
    tasks.extend((2..10).map(|i| task(&format!("t{i:02}"), at(i), 0)));
    tasks.push(task("high", at(10), 9));
    create(&creator, tasks).await;

    let (taken, reads) = claim(&claimer, 1, ClaimOrder::Priority).await;
    assert_eq!((taken, reads), (vec!["t00".to_owned()], 1), "the head");
    let (taken, reads) = claim(&claimer, 1, ClaimOrder::Priority).await;
    assert_eq!(taken, ["high"], "ranked over the window");
    assert_eq!(reads, 1 + 9, "the head, then the rest of the window");
    let (taken, reads) = claim(&claimer, 1, ClaimOrder::Priority).await;
    assert_eq!((taken, reads), (vec!["mid".to_owned()], 9));
}

/// Another process's wake-up signal says which kinds it gave prioritized
/// tasks: a listening store's claims rank the window at once, although the
/// head of the queue holds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_tells_other_processes_that_a_kind_holds_prioritized_tasks() {
    let collection = collection();
    let creator = FirestoreStore::with_collection(db().await, &collection)
        .with_signal_interval(Duration::ZERO);
    let claimer = FirestoreStore::with_collection(db().await, &collection);
    let t0 = Utc::now() - TimeDelta::minutes(10);
    create(&creator, vec![task("old", t0, 0)]).await;
    let mut notices = claimer.subscribe(ENV).expect("a listener");
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), notices.next())
            .await
            .expect("a notice within 10 s")
            .expect("the stream goes on")
    };
    assert_eq!(next().await.kind, KIND, "the first snapshot");
    create(&creator, vec![task("new", t0 + TimeDelta::seconds(1), 4)]).await;
    assert_eq!(next().await.kind, KIND);
    let (taken, reads) = claim(&claimer, 1, ClaimOrder::Priority).await;
    assert_eq!(taken, ["new"], "ranked over the window");
    assert_eq!(reads, 2, "the window: both ready tasks");
}

//! Wake-up signals on the emulator: which writes announce work to other
//! processes (a signal document write, heard by their listeners) and which
//! do not (leases, heartbeats, the end of a task without a resource key),
//! and a listener that watches task changes instead (for Go producers).

use std::time::Duration;

use chrono::Utc;
use futures::{Stream, StreamExt};
use oncetask_core::lifecycle::{self, LeaseGrant};
use oncetask_core::store::{Change, ClaimMode, ClaimRequest, Notification, Swap, SwapOutcome};
use oncetask_core::{Store, Task};
use oncetask_firestore::{FirestoreStore, Wakeups};

mod common;
use common::db;

const ENV: &str = "signals";

/// The next notice's kind (a signal write naming two kinds gives two).
async fn next(notices: &mut (impl Stream<Item = Notification> + Unpin)) -> String {
    tokio::time::timeout(Duration::from_secs(30), notices.next())
        .await
        .expect("a notice within 30 s")
        .expect("the stream does not end")
        .kind
}

async fn claim(store: &FirestoreStore, kind: &str) -> Task {
    let now = Utc::now();
    let request = ClaimRequest {
        env: ENV.into(),
        kind: kind.into(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit: 1 },
        order: oncetask_core::store::ClaimOrder::Priority,
    };
    let mut claimed = store.claim(&request).await.expect("claim").tasks;
    assert_eq!(claimed.len(), 1, "one {kind} task claimed");
    claimed.remove(0)
}

/// Swaps `from` for `next`; the written task carries its new revision.
async fn swap(store: &FirestoreStore, from: &Task, mut next: Task) -> Task {
    let outcome = store
        .swap(&[Swap::new(
            from,
            Change::between(from, &next).expect("a lifecycle step"),
            &next,
        )])
        .await
        .expect("swap")
        .remove(0);
    let SwapOutcome::Applied { revision } = outcome else {
        panic!("swap of {} not applied: {outcome:?}", from.id);
    };
    next.revision = revision;
    next
}

fn token(task: &Task) -> oncetask_core::LeaseToken {
    task.lease_token.clone().expect("a leased task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_make_work_available_signal_and_leases_do_not() {
    let collection = format!("signals-{}", uuid::Uuid::new_v4().simple());
    // Every signal written at once, so each can be counted as it happens.
    let store = FirestoreStore::with_collection(db().await, &collection)
        .with_signal_interval(Duration::ZERO);
    let other_process = FirestoreStore::with_collection(db().await, &collection);
    let mut notices = other_process.subscribe(ENV).expect("a listener");
    let signals = || store.stats().signal_writes;

    let now = Utc::now();
    let mut keyed = Task::new("keyed", "keyed", ENV, now);
    keyed.resource_key = Some("r".into());
    store
        .create(vec![Task::new("plain", "plain", ENV, now), keyed])
        .await
        .expect("create");
    assert_eq!(signals(), 1, "one signal write for the whole create");
    let mut heard = vec![next(&mut notices).await, next(&mut notices).await];
    heard.sort();
    assert_eq!(heard, ["keyed", "plain"]);

    // A lease, a heartbeat and the end of a keyless task announce nothing.
    let plain = claim(&store, "plain").await;
    let later = Utc::now() + chrono::TimeDelta::seconds(120);
    let extended =
        lifecycle::extend_lease(&plain, &token(&plain), Utc::now(), later).expect("extend");
    let plain = swap(&store, &plain, extended).await;
    let done = lifecycle::succeed(&plain, &token(&plain), Utc::now(), None).expect("succeed");
    swap(&store, &plain, done).await;
    assert_eq!(signals(), 1, "claim, heartbeat, keyless completion");

    // The end of a keyed task frees its key: announced.
    let keyed = claim(&store, "keyed").await;
    assert_eq!(signals(), 1, "a keyed claim");
    let done = lifecycle::succeed(&keyed, &token(&keyed), Utc::now(), None).expect("succeed");
    swap(&store, &keyed, done).await;
    assert_eq!(signals(), 2, "a keyed completion");
    assert_eq!(next(&mut notices).await, "keyed");

    // A leased task released back to waiting, and a cancel while leased.
    store
        .create(vec![
            Task::new("again", "released", ENV, Utc::now()),
            Task::new("stop", "cancelled", ENV, Utc::now()),
        ])
        .await
        .expect("create");
    assert_eq!(signals(), 3);
    let mut heard = vec![next(&mut notices).await, next(&mut notices).await];
    heard.sort();
    assert_eq!(heard, ["cancelled", "released"]);
    let again = claim(&store, "released").await;
    let released = lifecycle::release(&again, &token(&again)).expect("release");
    swap(&store, &again, released).await;
    assert_eq!(signals(), 4, "a release");
    assert_eq!(next(&mut notices).await, "released");
    let stop = claim(&store, "cancelled").await;
    let cancelled = lifecycle::cancel(&stop, Utc::now()).expect("cancel");
    swap(&store, &stop, cancelled).await;
    assert_eq!(signals(), 5, "a cancel of a running task");
    assert_eq!(next(&mut notices).await, "cancelled");

    // Deleting a not-done task may free its key: announced.
    store
        .delete(&[oncetask_core::store::Delete {
            id: "stop".into(),
            expected_version: None,
            expected_revision: None,
        }])
        .await
        .expect("delete");
    assert_eq!(signals(), 6, "a delete");
    assert_eq!(next(&mut notices).await, "cancelled");
    // The listener paid one read per signal write it heard, not one per
    // task write.
    let heard = other_process.stats();
    assert!(
        heard.listen_reads <= 6,
        "one read per signal write: {heard:?}"
    );
}

/// With the default interval, signals raised within a second of the last
/// write wait for the end of that second and go out together: many creates
/// cost a few signal writes, and the last create is still heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_within_the_interval_are_written_together_and_none_is_lost() {
    let collection = format!("signals-{}", uuid::Uuid::new_v4().simple());
    let store = FirestoreStore::with_collection(db().await, &collection);
    let other_process = FirestoreStore::with_collection(db().await, &collection);
    let mut notices = other_process.subscribe(ENV).expect("a listener");
    let started = std::time::Instant::now();
    for i in 0..20 {
        store
            .create(vec![Task::new(format!("t{i}"), "early", ENV, Utc::now())])
            .await
            .expect("create");
    }
    store
        .create(vec![Task::new("last", "last", ENV, Utc::now())])
        .await
        .expect("create");
    // The last kind is heard (at the latest by the planned write).
    while next(&mut notices).await != "last" {}
    let seconds = started.elapsed().as_secs();
    let written = store.stats().signal_writes;
    assert!(
        written <= seconds + 2,
        "at most one signal write per second (and one at once): {written} in {seconds} s"
    );
}

/// A store listening to task changes hears of tasks it did not signal (as
/// the Go package writes them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_changes_listener_hears_tasks_written_without_a_signal() {
    let collection = format!("signals-{}", uuid::Uuid::new_v4().simple());
    let silent = FirestoreStore::with_collection(db().await, &collection)
        .with_wakeups(Wakeups::Off)
        .with_signal_interval(Duration::from_secs(3600));
    // Uses up the one immediate signal: the next create's is planned an hour out.
    silent
        .create(vec![Task::new("first", "first", ENV, Utc::now())])
        .await
        .expect("create");
    assert!(
        silent.subscribe(ENV).is_none(),
        "Wakeups::Off listens to nothing"
    );
    let watching =
        FirestoreStore::with_collection(db().await, &collection).with_wakeups(Wakeups::TaskChanges);
    let mut notices = watching.subscribe(ENV).expect("a listener");
    assert_eq!(next(&mut notices).await, "first", "the initial snapshot");
    silent
        .create(vec![Task::new("quiet", "quiet", ENV, Utc::now())])
        .await
        .expect("create");
    assert_eq!(next(&mut notices).await, "quiet");
    assert_eq!(silent.stats().signal_writes, 1);
}

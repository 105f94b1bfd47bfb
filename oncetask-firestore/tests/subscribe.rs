//! `subscribe` on the Firestore emulator: a Listen on the env's wake-up
//! signals notices tasks created and deleted through another store instance.

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use oncetask_core::store::Notification;
use oncetask_core::{Store, Task};
use oncetask_firestore::FirestoreStore;

mod common;
use common::db;

async fn next(stream: &mut (impl futures::Stream<Item = Notification> + Unpin)) -> Notification {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a notice within 10 s")
        .expect("the stream does not end")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_by_another_instance_is_noticed() {
    let collection = format!("listen-{}", uuid::Uuid::new_v4().simple());
    let listening = FirestoreStore::with_collection(db().await, collection.clone());
    let writer = FirestoreStore::with_collection(db().await, collection);
    // A task that exists before the subscription: reported once, when the
    // listener's first snapshot completes.
    writer
        .create(vec![Task::new("old", "before", "E", Utc::now())])
        .await
        .expect("create");
    let mut notices = listening.subscribe("E").expect("a listener");
    assert_eq!(next(&mut notices).await.kind, "before");
    // Live changes: a create in another env is not reported, one in this env is.
    writer
        .create(vec![
            Task::new("elsewhere", "other-env", "F", Utc::now()),
            Task::new("new", "mail", "E", Utc::now()),
        ])
        .await
        .expect("create");
    let created = next(&mut notices).await;
    assert_eq!(created.kind, "mail");
    // A signal does not say which write it was (and a Go writer sends
    // none), so every notice may have touched held tasks: workers re-read
    // what they claimed ahead, as before notices carried the flag.
    assert!(created.may_touch_claimed);
    // Deleting a not-done task is a change too.
    writer
        .delete(&[oncetask_core::store::Delete {
            id: "old".into(),
            expected_version: None,
            expected_revision: None,
        }])
        .await
        .expect("delete");
    let deleted = next(&mut notices).await;
    assert_eq!(deleted.kind, "before");
    assert!(deleted.may_touch_claimed);
}

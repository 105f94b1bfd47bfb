//! A store on a named (non-default) database: its documents live there and
//! only there, and queries and subscriptions run against it. The emulator
//! accepts any database id; the routing header production needs is checked
//! on the wire by the `routing` unit test.

use std::time::Duration;

use chrono::Utc;
use firestore::{FirestoreDb, FirestoreDbOptions};
use futures::StreamExt;
use oncetask_core::store::{CreateOutcome, Fetched};
use oncetask_core::{Store, Task, TaskStatus};
use oncetask_firestore::FirestoreStore;

mod common;
use common::{PROJECT, db, emulator_host};

const DATABASE: &str = "oncetask-named";

async fn named_db() -> FirestoreDb {
    emulator_host();
    FirestoreDb::with_options(
        FirestoreDbOptions::new(PROJECT.to_owned()).with_database_id(DATABASE.to_owned()),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot connect to the Firestore emulator: {e}"))
}

#[tokio::test]
async fn a_store_on_a_named_database_keeps_its_tasks_there() {
    let collection = format!("named-{}", uuid::Uuid::new_v4().simple());
    let named = FirestoreStore::with_collection(named_db().await, &collection);
    let default = FirestoreStore::with_collection(db().await, &collection);
    assert!(format!("{named:?}").contains(&format!("databases/{DATABASE}")));

    // A subscription on the named database sees a create there.
    let mut notices = named.subscribe("prod").expect("Firestore subscribes");
    let now = Utc::now();
    let created = named
        .create(vec![Task::new("t1", "job", "prod", now)])
        .await
        .expect("create");
    assert!(
        matches!(created[..], [CreateOutcome::Created]),
        "{created:?}"
    );
    let notice = tokio::time::timeout(Duration::from_secs(60), notices.next())
        .await
        .expect("a notice")
        .expect("the stream goes on");
    assert_eq!(notice.kind, "job");

    let ids = vec!["t1".to_owned()];
    let got = named.get(&ids).await.expect("get");
    assert!(
        matches!(&got[..], [Fetched::Task(t)] if t.id == "t1" && t.env == "prod"),
        "{got:?}"
    );
    // Not in the default database's collection of the same name.
    assert!(default.get(&ids).await.expect("get").is_empty());

    let counts = named
        .count_by_status("prod", Some("job"), Utc::now())
        .await
        .expect("count");
    assert_eq!(counts.get(&TaskStatus::Pending), Some(&1));
    let counts = default
        .count_by_status("prod", Some("job"), Utc::now())
        .await
        .expect("count");
    assert!(counts.is_empty(), "{counts:?}");
}

//! Bulk swaps and deletes on the Firestore emulator: one BatchGet and one
//! BatchWrite for the whole call (reads and writes = items), per-item
//! outcomes in input order, and ids named twice decided in order. Also the
//! key-lock documents' `expireAt`, which a TTL policy can use.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use firestore::gcloud_sdk::google::firestore::v1::structured_query::CollectionSelector;
use firestore::gcloud_sdk::google::firestore::v1::{
    RunQueryRequest, StructuredQuery, run_query_request, value::ValueType,
};
use firestore::gcloud_sdk::tonic::Request;
use oncetask_core::lifecycle::LeaseGrant;
use oncetask_core::store::{
    Change, ClaimMode, ClaimRequest, CreateOutcome, Delete, DeleteOutcome, Fetched, Swap,
    SwapOutcome,
};
use oncetask_core::task::TaskParts;
use oncetask_core::{Store, StoreError, Task};
use oncetask_firestore::{FirestoreStore, StoreStats};

mod common;
use common::db;

fn collection() -> String {
    format!("bulk-{}", uuid::Uuid::new_v4().simple())
}

async fn stored(store: &FirestoreStore, id: &str) -> Task {
    match store.get(&[id.to_owned()]).await.expect("get").pop() {
        Some(Fetched::Task(t)) => t,
        other => panic!("{id}: {other:?}"),
    }
}

/// `task` with a new version and a visible change.
fn changed(task: &Task, note: &str) -> Swap {
    let mut next = task.clone();
    next.version = task.version + 1;
    next.result = Some(serde_json::json!(note));
    Swap::new(task, Change::Outcome, &next)
}

fn spent(before: StoreStats, after: StoreStats) -> (u64, u64) {
    (after.reads - before.reads, after.writes - before.writes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_swap_reads_and_writes_each_item_once_and_reports_each() {
    let store = FirestoreStore::with_collection(db().await, collection());
    let now = Utc::now();
    let tasks: Vec<Task> = (0..4)
        .map(|i| Task::new(format!("t{i}"), "job", "E", now))
        .collect();
    store.create(tasks.clone()).await.expect("create");

    let stale = changed(
        &TaskParts {
            version: tasks[3].version + 7,
            ..tasks[3].clone().into_parts()
        }
        .into(),
        "stale",
    );
    let missing = changed(
        &TaskParts {
            id: "nope".into(),
            ..tasks[0].clone().into_parts()
        }
        .into(),
        "missing",
    );
    let before = store.stats();
    let outcomes = store
        .swap(&[
            changed(&tasks[0], "a"),
            changed(&tasks[1], "b"),
            changed(&tasks[2], "c"),
            stale,
            missing,
        ])
        .await
        .expect("swap");
    let (reads, writes) = spent(before, store.stats());
    assert!(
        matches!(
            outcomes.as_slice(),
            [
                SwapOutcome::Applied { .. },
                SwapOutcome::Applied { .. },
                SwapOutcome::Applied { .. },
                SwapOutcome::Conflict,
                SwapOutcome::NotFound
            ]
        ),
        "{outcomes:?}"
    );
    assert_eq!(
        (reads, writes),
        (5, 3),
        "one read per item, one write per applied swap"
    );
    assert_eq!(
        stored(&store, "t1").await.result,
        Some(serde_json::json!("b"))
    );
    assert_eq!(stored(&store, "t3").await.version, tasks[3].version);

    // The same id twice in one call: the items apply in order, so the
    // second (which expected the first's starting version) conflicts.
    let t0 = stored(&store, "t0").await;
    let outcomes = store
        .swap(&[changed(&t0, "first"), changed(&t0, "second")])
        .await
        .expect("swap");
    assert!(
        matches!(
            outcomes.as_slice(),
            [SwapOutcome::Applied { .. }, SwapOutcome::Conflict]
        ),
        "{outcomes:?}"
    );
    assert_eq!(
        stored(&store, "t0").await.result,
        Some(serde_json::json!("first"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_delete_checks_versions_per_item() {
    let store = FirestoreStore::with_collection(db().await, collection());
    let now = Utc::now();
    let tasks: Vec<Task> = (0..3)
        .map(|i| Task::new(format!("d{i}"), "job", "E", now))
        .collect();
    store.create(tasks.clone()).await.expect("create");

    let before = store.stats();
    let outcomes = store
        .delete(&[
            Delete::exact(&tasks[0]),
            Delete {
                id: "d1".into(),
                expected_version: Some(tasks[1].version + 1),
                expected_revision: None,
            },
            Delete::any("d2"),
            Delete::any("d2"),
            Delete::any("never"),
        ])
        .await
        .expect("delete");
    assert!(
        matches!(
            outcomes.as_slice(),
            [
                DeleteOutcome::Deleted,
                DeleteOutcome::Conflict,
                DeleteOutcome::Deleted,
                DeleteOutcome::NotFound,
                DeleteOutcome::NotFound
            ]
        ),
        "{outcomes:?}"
    );
    let (reads, writes) = spent(before, store.stats());
    // d2's second item is read again in a second round.
    assert_eq!((reads, writes), (5, 2));
    let left = store
        .get(&["d0".into(), "d1".into(), "d2".into()])
        .await
        .expect("get");
    assert_eq!(left.len(), 1, "only the conflicting delete left its task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_locks_carry_an_expiry_for_a_ttl_policy() {
    let db = db().await;
    let collection = collection();
    let store = FirestoreStore::with_collection(db.clone(), collection.clone());
    let now = Utc::now();
    let mut task = Task::new("k1", "sync", "E", now);
    task.resource_key = Some("calendar-7".into());
    store.create(vec![task]).await.expect("create");
    let grant = LeaseGrant::new(now, Duration::from_secs(60));
    let claimed = store
        .claim(&ClaimRequest {
            env: "E".into(),
            kind: "sync".into(),
            now,
            grant: grant.clone(),
            mode: ClaimMode::Single { limit: 1 },
            order: oncetask_core::store::ClaimOrder::Priority,
        })
        .await
        .expect("claim");
    assert_eq!(claimed.tasks.len(), 1);

    let request = RunQueryRequest {
        parent: db.get_documents_path().clone(),
        query_type: Some(run_query_request::QueryType::StructuredQuery(
            StructuredQuery {
                from: vec![CollectionSelector {
                    collection_id: format!("{collection}-resourceKeys"),
                    all_descendants: false,
                }],
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let mut stream = db
        .client()
        .get()
        .run_query(Request::new(request))
        .await
        .expect("query")
        .into_inner();
    let mut locks = Vec::new();
    while let Some(response) = stream.message().await.expect("stream") {
        locks.extend(response.document);
    }
    assert_eq!(locks.len(), 1, "one lock document per key");
    let expire = match locks[0]
        .fields
        .get("expireAt")
        .and_then(|v| v.value_type.as_ref())
    {
        Some(ValueType::TimestampValue(t)) => t.seconds,
        other => panic!("expireAt is a timestamp: {other:?}"),
    };
    let lease_end = grant.leased_until.timestamp();
    assert!(
        expire >= lease_end + TimeDelta::days(1).num_seconds(),
        "the lock outlives its lease by days: {expire} vs {lease_end}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_resource_key_still_locks_and_one_firestore_cannot_query_is_refused() {
    let store = FirestoreStore::with_collection(db().await, collection());
    let now = Utc::now();
    // Hex of env + kind + key would pass Firestore's 1 500-byte id limit,
    // the key itself (1 400 bytes) does not.
    let key = "ключ/{x}:".repeat(100);
    let keyed = |id: &str, key: &str| {
        let mut t = Task::new(id, "sync", "E", now);
        t.resource_key = Some(key.to_owned());
        t
    };
    let outcomes = store
        .create(vec![
            keyed("long0", &key),
            keyed("long1", &key),
            keyed("too-long", &key.repeat(2)),
            Task::new("a/b", "sync", "E", now),
        ])
        .await
        .expect("create");
    assert!(
        matches!(
            outcomes.as_slice(),
            [
                CreateOutcome::Created,
                CreateOutcome::Created,
                CreateOutcome::Failed(StoreError::Unencodable { .. }),
                CreateOutcome::Failed(StoreError::Unencodable { .. }),
            ]
        ),
        "{outcomes:?}"
    );
    let claim = || ClaimRequest {
        env: "E".into(),
        kind: "sync".into(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit: 2 },
        order: oncetask_core::store::ClaimOrder::Priority,
    };
    let first = store.claim(&claim()).await.expect("claim");
    assert_eq!(first.tasks.len(), 1, "one task per key");
    let second = store.claim(&claim()).await.expect("claim");
    assert!(
        second.tasks.is_empty(),
        "the key is busy: {:?}",
        second.tasks
    );
}

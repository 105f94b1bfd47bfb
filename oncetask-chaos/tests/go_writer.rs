//! The Go-shaped writer on the emulator: it follows Go's rules, writes
//! without touching the Rust-only fields, and records what the store
//! answered; and the revision reading the checks rely on
//! (`go_writer::parse_revision`) matches the documents' update times.
//!
//! Needs the emulator (`FIRESTORE_EMULATOR_HOST`, set by `scripts/test`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use firestore::FirestoreDb;
use firestore::gcloud_sdk::google::firestore::v1::GetDocumentRequest;
use firestore::gcloud_sdk::tonic::Request;
use oncetask::backend::lifecycle::{self, LeaseGrant};
use oncetask::backend::{Change, ClaimMode, ClaimRequest, Fetched, Swap, SwapOutcome};
use oncetask::firestore::FirestoreStore;
use oncetask::{Store, Task};
use oncetask_chaos::backend::FIRESTORE_PROJECT;
use oncetask_chaos::go_writer::{GoWriter, nanos_of, parse_revision};
use oncetask_chaos::ledger::{self, GoOp, GoOutcome, Record};

const ENV: &str = "go-writer-test";

async fn update_time(db: &FirestoreDb, collection: &str, id: &str) -> i64 {
    let doc = db
        .client()
        .get()
        .get_document(Request::new(GetDocumentRequest {
            name: format!("{}/{collection}/{id}", db.get_documents_path()),
            ..Default::default()
        }))
        .await
        .expect("read the document")
        .into_inner();
    nanos_of(doc.update_time.as_ref().expect("an update time"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_writer_cancels_as_go_does_and_records_the_update_time_it_made() {
    let db = FirestoreDb::new(FIRESTORE_PROJECT)
        .await
        .expect("the emulator (FIRESTORE_EMULATOR_HOST)");
    let collection = format!("go-writer-{}", ledger::now_micros());
    let store = FirestoreStore::with_collection(db.clone(), collection.clone());
    let now = chrono::Utc::now();
    store
        .create(vec![Task::new("t-1", "chaos", ENV, now)])
        .await
        .expect("create");
    let claimed = store
        .claim(&ClaimRequest {
            env: ENV.into(),
            kind: "chaos".into(),
            now,
            grant: LeaseGrant::new(now, Duration::from_secs(60)),
            mode: ClaimMode::Single { limit: 1 },
            order: oncetask::backend::ClaimOrder::Priority,
        })
        .await
        .expect("claim")
        .tasks
        .remove(0);

    // The revision reads as (version, the document's update time).
    let revision = claimed.revision.expect("a claim returns its revision");
    let (version, claimed_at) = parse_revision(&revision.raw().to_string()).expect("decodes");
    assert_eq!(version, claimed.version);
    assert_eq!(claimed_at, update_time(&db, &collection, "t-1").await);

    let dir = tempfile::tempdir().expect("temp dir");
    let mut go = GoWriter::connect(
        FIRESTORE_PROJECT,
        collection.clone(),
        ENV.into(),
        dir.path(),
    )
    .await
    .expect("connect");
    // Go resets only finished tasks, and cancels only open ones, once.
    assert_eq!(go.apply(GoOp::Reset, "t-1").await, Some(GoOutcome::Skipped));
    assert_eq!(
        go.apply(GoOp::Cancel, "t-1").await,
        Some(GoOutcome::Accepted)
    );
    assert_eq!(
        go.apply(GoOp::Cancel, "t-1").await,
        Some(GoOutcome::Skipped)
    );
    assert_eq!(go.apply(GoOp::Cancel, "missing").await, None);
    let cancelled_at = update_time(&db, &collection, "t-1").await;

    // Rust sees the cancel; the Rust-only fields are as the claim left them.
    let Some(Fetched::Task(stored)) = store.get(&["t-1".into()]).await.unwrap().pop() else {
        panic!("the task is there");
    };
    assert!(stored.is_cancelled);
    assert_eq!(stored.version, claimed.version);
    assert_eq!(stored.lease_token, claimed.lease_token);

    // A Rust write decided on the claim conflicts: it cannot erase the cancel.
    let token = claimed.lease_token.clone().unwrap();
    let done = lifecycle::succeed(&claimed, &token, chrono::Utc::now(), None).unwrap();
    let outcome = store
        .swap(&[Swap::new(&claimed, Change::Outcome, &done)])
        .await
        .unwrap()
        .remove(0);
    assert!(matches!(outcome, SwapOutcome::Conflict), "{outcome:?}");

    // The ledger holds the three operations, the accepted one with its
    // update time, after the claim's.
    let (records, torn) = ledger::read_all(dir.path()).expect("read the ledger");
    assert_eq!(torn, 0);
    let ops: Vec<(GoOp, GoOutcome, Option<i64>, bool, bool)> = records
        .iter()
        .filter_map(|r| match r {
            Record::GoWrite {
                op,
                outcome,
                update_time,
                read_leased,
                read_cancelled,
                ..
            } => Some((*op, *outcome, *update_time, *read_leased, *read_cancelled)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            (GoOp::Reset, GoOutcome::Skipped, None, true, false),
            (
                GoOp::Cancel,
                GoOutcome::Accepted,
                Some(cancelled_at),
                true,
                false
            ),
            (GoOp::Cancel, GoOutcome::Skipped, None, true, true),
        ]
    );
    assert!(cancelled_at > claimed_at);
    assert_eq!(go.counts().accepted, 1);
}

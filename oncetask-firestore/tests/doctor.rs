//! `FirestoreStore::doctor` on the emulator, which needs no index and grants
//! every permission: every check passes and the probe document is gone
//! afterwards.

use oncetask_core::{Store, TaskStatus};
use oncetask_firestore::FirestoreStore;
use oncetask_firestore::doctor::{CheckKind, CheckOutcome, PROBE_ENV};

mod common;
use common::db;

#[tokio::test]
async fn on_the_emulator_every_check_passes_and_the_probe_is_removed() {
    let collection = format!("doctor-{}", uuid::Uuid::new_v4().simple());
    let store = FirestoreStore::with_collection(db().await, &collection);
    let report = store
        .doctor("prod", &["job".to_owned()])
        .await
        .expect("the emulator answers");
    println!("{report}");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.collection, collection);
    assert!(
        report.database.ends_with("/databases/(default)"),
        "{report}"
    );
    let queries = report
        .checks
        .iter()
        .filter(|c| c.kind == CheckKind::Query)
        .count();
    assert!(queries >= 20, "every query shape: {report}");
    let permissions: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.kind == CheckKind::Permission)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(permissions.len(), 3, "read, create, delete: {report}");
    assert!(
        report.checks.iter().all(|c| c.outcome == CheckOutcome::Ok),
        "{report}"
    );
    assert!(
        report
            .to_string()
            .ends_with("Everything the store needs is in place.\n")
    );
    // The probe was created in its own env and deleted again.
    let counts = store
        .count_by_status(PROBE_ENV, None, chrono::Utc::now())
        .await
        .expect("count");
    assert_eq!(counts.get(&TaskStatus::Pending), None, "{counts:?}");
    let probe_id = permissions[1]
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .expect("the probe id in the check name");
    assert!(
        store
            .get(&[probe_id.to_owned()])
            .await
            .expect("get")
            .is_empty()
    );
}

//! Go compatibility on the Firestore emulator: documents exactly as the Go
//! package writes them (tests/fixtures) are claimed, completed and read back.
//!
//! Needs the emulator: `scripts/test -p oncetask-firestore --test
//! go_on_emulator`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use firestore::FirestoreDb;
use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
use firestore::gcloud_sdk::google::firestore::v1::{CommitRequest, Document, Write, write};
use firestore::gcloud_sdk::tonic::Request;
use oncetask_core::lifecycle::{self, LeaseGrant};
use oncetask_core::store::{Change, ClaimMode, ClaimRequest, Swap, SwapOutcome};
use oncetask_core::{Store, TaskStatus};
use oncetask_firestore::FirestoreStore;
use oncetask_firestore::document::Fields;
use serde_json::json;

mod common;
use common::{db, t, tag};

/// The fields of a fixture.
fn fixture(name: &str) -> Fields {
    common::fixture(name).1
}

/// A fresh collection holding the given Go fixtures, as Go wrote them.
async fn seeded(files: &[&str]) -> (FirestoreDb, FirestoreStore) {
    let db = db().await;
    let collection = format!("go-{}", uuid::Uuid::new_v4().simple());
    let writes = files
        .iter()
        .map(|f| {
            let fields = fixture(f);
            let Some(ValueType::StringValue(id)) = fields["id"].value_type.clone() else {
                panic!("{f}: no id");
            };
            Write {
                operation: Some(write::Operation::Update(Document {
                    name: format!("{}/{collection}/{id}", db.get_documents_path()),
                    fields,
                    ..Default::default()
                })),
                ..Default::default()
            }
        })
        .collect();
    db.client()
        .get()
        .commit(Request::new(CommitRequest {
            database: db.get_database_path().clone(),
            writes,
            ..Default::default()
        }))
        .await
        .expect("seed");
    let store = FirestoreStore::with_collection(db.clone(), collection);
    (db, store)
}

async fn raw(db: &FirestoreDb, store: &FirestoreStore, id: &str) -> Fields {
    common::raw(db, store.collection(), id).await
}

fn claim_at(now: &str) -> ClaimRequest {
    let now = t(now);
    ClaimRequest {
        env: "DEFAULT".into(),
        kind: "send_email".into(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit: 10 },
    }
}

fn run<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f);
}

/// A pending Go task is claimed, completed, and stored with Go's field types.
#[test]
fn a_go_task_is_claimed_completed_and_stays_readable_by_go() {
    run(async {
        let (db, store) = seeded(&["pending.json", "other-env.json", "completed.json"]).await;
        let claimed = store
            .claim(&claim_at("2026-01-01T00:00:01Z"))
            .await
            .unwrap();
        let ids: Vec<&str> = claimed.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["email-u1"], "other env and done tasks stay out");
        let task = &claimed.tasks[0];
        assert_eq!(task.attempts, 1);
        let token = task.lease_token.clone().unwrap();
        let done = lifecycle::succeed(
            task,
            &token,
            t("2026-01-01T00:00:02Z"),
            Some(json!({"messageId": "m-1"})),
        )
        .unwrap();
        let out = store
            .swap(&[Swap::new(task, Change::Outcome, &done)])
            .await
            .unwrap();
        assert!(matches!(out[0], SwapOutcome::Applied { .. }));
        let fields = raw(&db, &store, "email-u1").await;
        // Go's types for every Go field, and values Go parses.
        for (name, ty) in [
            ("id", "stringValue"),
            ("type", "stringValue"),
            ("data", "mapValue"),
            ("resourceKey", "stringValue"),
            ("env", "stringValue"),
            ("waitUntil", "stringValue"),
            ("leasedUntil", "stringValue"),
            ("createdAt", "stringValue"),
            ("doneAt", "stringValue"),
            ("attempts", "integerValue"),
            ("result", "mapValue"),
            ("parentRecurrenceId", "stringValue"),
            ("occurrenceTimestamp", "stringValue"),
            ("isCancelled", "booleanValue"),
            ("cancelledAt", "stringValue"),
        ] {
            assert_eq!(tag(&fields[name]), ty, "{name}");
        }
        let s = |n: &str| match fields[n].value_type.clone() {
            Some(ValueType::StringValue(s)) => s,
            _ => String::new(),
        };
        assert_eq!(s("waitUntil"), "0001-01-01T00:00:00Z");
        assert_eq!(s("leasedUntil"), "");
        assert_eq!(s("doneAt"), "2026-01-01T00:00:02.000Z");
        // Fields a run does not change stay exactly as Go wrote them.
        assert_eq!(s("createdAt"), "2026-01-01T00:00:00Z");
        assert_eq!(s("outcome"), "completed");
        let back = store.get(&["email-u1".to_owned()]).await.unwrap();
        let oncetask_core::store::Fetched::Task(back) = &back[0] else {
            panic!("decodes");
        };
        assert_eq!(
            back.status(t("2026-01-01T00:00:03Z")),
            TaskStatus::Completed
        );
    });
}

/// Go whole-second times are honoured on the second by Rust claims: they
/// query up to the end of the current second and check the exact times they
/// read. A Go backoff until `00:00:02Z` is ready from `00:00:02`, not at
/// `00:00:01.500`; a Go lease until `00:10:00Z` is live at `00:09:59.500`
/// and over at `00:10:00`.
#[test]
fn go_times_are_honoured_on_the_second() {
    run(async {
        let (_, store) = seeded(&["retry-backoff.json", "expired-lease.json"]).await;
        let ids = |c: oncetask_core::store::Claimed| {
            c.tasks.into_iter().map(|t| t.id).collect::<Vec<_>>()
        };
        let early = store
            .claim(&claim_at("2026-01-01T00:00:01.500Z"))
            .await
            .unwrap();
        assert!(ids(early).is_empty());
        let ready = store
            .claim(&claim_at("2026-01-01T00:00:02Z"))
            .await
            .unwrap();
        assert_eq!(ids(ready), ["email-u2"]);
        // email-u2's lease from the claim above has expired by now, so it
        // is claimed again; email-u3's Go lease is still live.
        let still_leased = store
            .claim(&claim_at("2026-01-01T00:09:59.500Z"))
            .await
            .unwrap();
        assert_eq!(ids(still_leased), ["email-u2"]);
        let expired = store
            .claim(&claim_at("2026-01-01T00:10:00Z"))
            .await
            .unwrap();
        let claimed = expired.tasks;
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, "email-u3");
        assert_eq!(claimed[0].attempts, 2, "Go's attempt count continues");
    });
}

/// `count_by_status` over documents the Go package wrote. Not-done ones are
/// counted with COUNT aggregations; finished ones carry no outcome (COUNT
/// cannot tell completed from failed), so with them the store falls back to
/// reading. Either way the counts match each task's own status.
#[test]
fn counts_of_go_documents_match_their_statuses() {
    run(async {
        let not_done = [
            "pending.json",
            "cancellation-pending.json",
            "expired-lease.json",
            "retry-backoff.json",
            "pending-resource-key.json",
        ];
        let all = [
            &not_done[..],
            &["completed.json", "failed.json", "cancelled.json"],
        ]
        .concat();
        for files in [&not_done[..], &all[..]] {
            let (_db, store) = seeded(files).await;
            for now in [
                "2024-01-01T00:00:00.500Z",
                "2026-01-01T00:00:01Z",
                "2026-01-01T00:05:00Z",
                "2030-01-01T00:00:00Z",
            ] {
                let now = t(now);
                let filter = oncetask_core::store::TaskFilter::env("DEFAULT", now);
                let mut expected = oncetask_core::store::StatusCounts::new();
                for task in store.find(&filter).await.unwrap() {
                    *expected.entry(task.status(now)).or_insert(0) += 1;
                }
                assert!(!expected.is_empty());
                let counts = store.count_by_status("DEFAULT", None, now).await.unwrap();
                assert_eq!(counts, expected, "{files:?} at {now}");
            }
        }
    });
}

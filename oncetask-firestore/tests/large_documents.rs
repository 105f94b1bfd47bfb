//! Cloud Firestore's size limits on the emulator (which enforces none of
//! them): a request of at most 10 MiB, a document of at most 1 MiB.
//!
//! Needs the emulator: `scripts/test -p oncetask-firestore --test large_documents`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use oncetask_core::lifecycle::{self, LeaseGrant};
use oncetask_core::manager::handler_fn;
use oncetask_core::store::{
    Change, ClaimMode, ClaimRequest, CreateOutcome, Fetched, Swap, SwapOutcome,
};
use oncetask_core::{
    HandlerOptions, Manager, ManualClock, NoRetry, Store, StoreError, Task, TaskStatus,
};
use oncetask_firestore::FirestoreStore;
use oncetask_firestore::limits::MAX_DOCUMENT_BYTES;
use serde_json::json;

mod common;
use common::{db, t};

const ENV: &str = "big";
const KIND: &str = "blob";

async fn store() -> FirestoreStore {
    let collection = format!("big-{}", uuid::Uuid::new_v4().simple());
    FirestoreStore::with_collection(db().await, collection)
}

fn task(id: &str, payload_bytes: usize, now: DateTime<Utc>) -> Task {
    let mut t = Task::new(id, KIND, ENV, now);
    t.data
        .insert("blob".into(), json!("x".repeat(payload_bytes)));
    t
}

async fn fetch(store: &FirestoreStore, id: &str) -> Option<Task> {
    match store.get(&[id.to_owned()]).await.unwrap().pop() {
        Some(Fetched::Task(t)) => Some(t),
        Some(other) => panic!("{other:?}"),
        None => None,
    }
}

/// 100 tasks of ~300 KiB (30 MiB in all: more than one request may carry)
/// are created in one call, claimed in one claim and completed in one swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_tasks_of_300_kib_are_created_claimed_and_completed() {
    let store = store().await;
    let now = t("2026-01-01T00:00:00Z");
    let tasks: Vec<Task> = (0..100)
        .map(|i| task(&format!("t{i:03}"), 300 * 1024, now))
        .collect();
    let before = store.stats();
    let created = store.create(tasks).await.unwrap();
    let spent = store.stats().since(&before);
    assert!(
        spent.requests >= 9,
        "30 MiB go in requests of at most 3.5 MiB: {spent:?}"
    );
    let failed: Vec<_> = created
        .iter()
        .filter(|o| !matches!(o, CreateOutcome::Created))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");

    let grant = LeaseGrant::new(now, Duration::from_secs(60));
    let claimed = store
        .claim(&ClaimRequest {
            env: ENV.into(),
            kind: KIND.into(),
            now,
            grant: grant.clone(),
            mode: ClaimMode::Single { limit: 100 },
            order: oncetask_core::store::ClaimOrder::Priority,
        })
        .await
        .unwrap()
        .tasks;
    assert_eq!(claimed.len(), 100);

    let swaps: Vec<Swap> = claimed
        .iter()
        .map(|c| {
            let done = lifecycle::succeed(c, &grant.token, now, Some(json!({"ok": c.id}))).unwrap();
            Swap::new(c, Change::Outcome, &done)
        })
        .collect();
    let outcomes = store.swap(&swaps).await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, SwapOutcome::Applied { .. })),
        "{outcomes:?}"
    );
    let done = fetch(&store, "t042").await.unwrap();
    assert_eq!(done.status(now), TaskStatus::Completed);
    assert_eq!(done.data["blob"].as_str().map(str::len), Some(300 * 1024));
}

/// A task whose document would pass 1 MiB is refused at create with a
/// typed error, and nothing is stored; the other tasks of the call are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_mib_payload_is_refused_at_create_and_nothing_is_stored() {
    let store = store().await;
    let now = t("2026-01-01T00:00:00Z");
    let outcomes = store
        .create(vec![task("huge", 2 << 20, now), task("fine", 10, now)])
        .await
        .unwrap();
    match &outcomes[0] {
        CreateOutcome::Failed(StoreError::Unencodable { id, reason }) => {
            assert_eq!(id, "huge");
            assert!(reason.contains("1 MiB"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(outcomes[1], CreateOutcome::Created));
    assert!(fetch(&store, "huge").await.is_none());
    // Just under the limit is accepted.
    let near = MAX_DOCUMENT_BYTES - 4096;
    let outcomes = store.create(vec![task("near", near, now)]).await.unwrap();
    assert!(
        matches!(outcomes[0], CreateOutcome::Created),
        "{outcomes:?}"
    );
}

/// A manager whose handler returns (or fails with) 2 MiB: the outcome is
/// still recorded, shortened by the documented rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_mib_result_or_error_is_shortened_and_the_outcome_stored() {
    let store = store().await;
    let clock = Arc::new(ManualClock::new(t("2026-01-01T00:00:00Z")));
    let manager = Manager::builder(Arc::new(store.clone()))
        .env(ENV)
        .clock(clock.clone())
        .start_workers(false)
        .build();
    manager
        .register_dyn(
            KIND,
            handler_fn(|task: Task| async move {
                let big = "r".repeat(2 << 20);
                if task.id == "fails" {
                    Err(std::io::Error::other(big))
                } else {
                    Ok(big)
                }
            }),
            HandlerOptions::default().retry_policy(NoRetry),
        )
        .unwrap();
    let now = clock.now();
    store
        .create(vec![task("returns", 10, now), task("fails", 10, now)])
        .await
        .unwrap();
    for _ in 0..2 {
        let report = manager.process_next(KIND).await.unwrap().expect("ran");
        assert!(report.outcomes[0].status.is_ok(), "stored: {report:?}");
    }

    let returned = fetch(&store, "returns").await.unwrap();
    assert_eq!(returned.status(now), TaskStatus::Completed);
    let marker = &returned.result.expect("a result")["oncetaskTruncated"];
    assert_eq!(marker["bytes"], json!((2 << 20) + 2));
    assert!(marker["prefix"].as_str().unwrap().starts_with("\"rrr"));

    let failed = fetch(&store, "fails").await.unwrap();
    assert_eq!(failed.status(now), TaskStatus::Failed);
    let message = &failed.errors.last().expect("an error").error;
    assert!(
        message.ends_with(&format!("[truncated from {} bytes]", 2 << 20)),
        "{}",
        &message[message.len().saturating_sub(80)..]
    );
}

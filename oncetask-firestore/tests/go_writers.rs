//! A Go service and a Rust service on one collection: the Go package's
//! field-masked writes (cancel, reset, a re-lease after expiry, exactly as
//! docs/semantics.md S7.5, S8.1 and S10 describe them) land while a Rust worker
//! holds a task, and no later Rust write erases them.
//!
//! Needs the emulator: `scripts/test -p oncetask-firestore --test go_writers`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use firestore::FirestoreDb;
use firestore::gcloud_sdk::google::firestore::v1::document_transform::FieldTransform;
use firestore::gcloud_sdk::google::firestore::v1::document_transform::field_transform::TransformType;
use firestore::gcloud_sdk::google::firestore::v1::precondition::ConditionType;
use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
use firestore::gcloud_sdk::google::firestore::v1::{
    CommitRequest, Document, DocumentMask, Precondition, Value, Write, write,
};
use firestore::gcloud_sdk::tonic::Request;
use oncetask_core::lifecycle::{self, LeaseGrant, Rejection};
use oncetask_core::manager::{NotStored, handler_fn};
use oncetask_core::store::{Change, ClaimMode, ClaimRequest, Fetched, Swap, SwapOutcome};
use oncetask_core::{HandlerOptions, Manager, ManualClock, Store, Task, TaskStatus};
use oncetask_firestore::FirestoreStore;
use oncetask_firestore::document::{Fields, NO_WAIT};
use tokio::sync::Notify;

mod common;
use common::{db, t, tag};

/// A fresh collection holding `pending.json` (task `email-u1`, kind
/// `send_email`, env `DEFAULT`) as Go wrote it.
async fn seeded() -> (FirestoreDb, FirestoreStore) {
    let db = db().await;
    let collection = format!("gow-{}", uuid::Uuid::new_v4().simple());
    let fields = common::fixture("pending.json").1;
    commit(
        &db,
        Write {
            operation: Some(write::Operation::Update(Document {
                name: name(&db, &collection),
                fields,
                ..Default::default()
            })),
            ..Default::default()
        },
    )
    .await;
    let store = FirestoreStore::with_collection(db.clone(), collection);
    (db, store)
}

const ID: &str = "email-u1";

fn name(db: &FirestoreDb, collection: &str) -> String {
    format!("{}/{collection}/{ID}", db.get_documents_path())
}

async fn commit(db: &FirestoreDb, write: Write) {
    db.client()
        .get()
        .commit(Request::new(CommitRequest {
            database: db.get_database_path().clone(),
            writes: vec![write],
            ..Default::default()
        }))
        .await
        .expect("commit");
}

fn s(v: &str) -> Value {
    Value {
        value_type: Some(ValueType::StringValue(v.to_owned())),
    }
}

/// What the Go package writes: an update of `fields` only (its field paths),
/// on an existing document, plus `attempts + 1` as a server-side increment
/// when `increment_attempts`.
async fn go_update(
    db: &FirestoreDb,
    store: &FirestoreStore,
    fields: Vec<(&str, Value)>,
    increment_attempts: bool,
) {
    let mask = fields.iter().map(|(f, _)| (*f).to_owned()).collect();
    let write = Write {
        operation: Some(write::Operation::Update(Document {
            name: name(db, store.collection()),
            fields: fields.into_iter().map(|(f, v)| (f.to_owned(), v)).collect(),
            ..Default::default()
        })),
        update_mask: Some(DocumentMask { field_paths: mask }),
        update_transforms: if increment_attempts {
            vec![FieldTransform {
                field_path: "attempts".into(),
                transform_type: Some(TransformType::Increment(Value {
                    value_type: Some(ValueType::IntegerValue(1)),
                })),
            }]
        } else {
            Vec::new()
        },
        current_document: Some(Precondition {
            condition_type: Some(ConditionType::Exists(true)),
        }),
    };
    commit(db, write).await;
}

/// Go's `CancelTask` (S8.1): `isCancelled`, `cancelledAt`, `waitUntil`;
/// the lease is left alone.
async fn go_cancel(db: &FirestoreDb, store: &FirestoreStore, at: &str) {
    let fields = vec![
        ("isCancelled", bool_value(true)),
        ("cancelledAt", s(at)),
        ("waitUntil", s(NO_WAIT)),
    ];
    go_update(db, store, fields, false).await;
}

/// Go's claim of a task whose lease expired (S7.5): `leasedUntil` and a
/// server-side `attempts + 1`.
async fn go_release(db: &FirestoreDb, store: &FirestoreStore, until: &str) {
    go_update(db, store, vec![("leasedUntil", s(until))], true).await;
}

/// Go's `ResetTask` (S10) of a finished task.
async fn go_reset(db: &FirestoreDb, store: &FirestoreStore) {
    let null = Value {
        value_type: Some(ValueType::NullValue(0)),
    };
    let fields = vec![
        (
            "attempts",
            Value {
                value_type: Some(ValueType::IntegerValue(0)),
            },
        ),
        (
            "errors",
            Value {
                value_type: Some(ValueType::ArrayValue(Default::default())),
            },
        ),
        ("doneAt", s("")),
        ("leasedUntil", s("")),
        ("waitUntil", s(NO_WAIT)),
        ("isCancelled", bool_value(false)),
        ("cancelledAt", s("")),
        ("result", null),
    ];
    go_update(db, store, fields, false).await;
}

fn bool_value(b: bool) -> Value {
    Value {
        value_type: Some(ValueType::BooleanValue(b)),
    }
}

async fn raw(db: &FirestoreDb, store: &FirestoreStore) -> Fields {
    common::raw(db, store.collection(), ID).await
}

fn string_of(fields: &Fields, name: &str) -> String {
    match &fields[name].value_type {
        Some(ValueType::StringValue(s)) => s.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

/// A stored time string as an instant (Rust rewrites a Go time it keeps in
/// its own format: the same instant).
fn time_of(fields: &Fields, name: &str) -> chrono::DateTime<chrono::Utc> {
    t(&string_of(fields, name))
}

fn integer_of(fields: &Fields, name: &str) -> i64 {
    match &fields[name].value_type {
        Some(ValueType::IntegerValue(n)) => *n,
        other => panic!("{name}: {other:?}"),
    }
}

async fn stored(store: &FirestoreStore) -> Task {
    match store.get(&[ID.to_owned()]).await.unwrap().pop() {
        Some(Fetched::Task(t)) => t,
        other => panic!("{other:?}"),
    }
}

async fn claim(store: &FirestoreStore, now: &str) -> Task {
    let now = t(now);
    let mut claimed = store
        .claim(&ClaimRequest {
            env: "DEFAULT".into(),
            kind: "send_email".into(),
            now,
            grant: LeaseGrant::new(now, Duration::from_secs(60)),
            mode: ClaimMode::Single { limit: 1 },
            order: oncetask_core::store::ClaimOrder::Priority,
        })
        .await
        .unwrap()
        .tasks;
    assert_eq!(claimed.len(), 1, "the task is ready");
    claimed.remove(0)
}

/// `lifecycle::succeed` of `from` at `at` (no result), swapped in.
async fn complete(
    store: &FirestoreStore,
    from: &Task,
    token: &oncetask_core::LeaseToken,
    at: &str,
) -> SwapOutcome {
    let done = lifecycle::succeed(from, token, t(at), None).expect("the lease holder succeeds");
    swap(store, from, done).await
}

async fn swap(store: &FirestoreStore, from: &Task, next: Task) -> SwapOutcome {
    store
        .swap(&[Swap::new(
            from,
            Change::between(from, &next).expect("a lifecycle step"),
            &next,
        )])
        .await
        .unwrap()
        .remove(0)
}

/// A Go cancel lands while the Rust handler runs: Rust's completion, fenced
/// on the document as the claim left it, conflicts; decided again on the
/// fresh document, the task ends `cancelled`, and Go's cancel fields stay.
#[test]
fn a_go_cancel_during_a_rust_run_survives_and_the_task_ends_cancelled() {
    run(async {
        let (db, store) = seeded().await;
        let claimed = claim(&store, "2026-01-01T00:00:01Z").await;
        assert!(claimed.revision.is_some(), "a claim returns revisions");
        go_cancel(&db, &store, "2026-01-01T00:00:05Z").await;

        let token = claimed.lease_token.clone().unwrap();
        assert!(matches!(
            complete(&store, &claimed, &token, "2026-01-01T00:00:06Z").await,
            SwapOutcome::Conflict
        ));

        let fresh = stored(&store).await;
        assert!(fresh.is_cancelled);
        assert_eq!(
            fresh.lease_token,
            Some(token.clone()),
            "Go's cancel keeps the lease"
        );
        assert!(matches!(
            complete(&store, &fresh, &token, "2026-01-01T00:00:06Z").await,
            SwapOutcome::Applied { revision: Some(_) }
        ));
        let fields = raw(&db, &store).await;
        assert_eq!(time_of(&fields, "cancelledAt"), t("2026-01-01T00:00:05Z"));
        assert_eq!(string_of(&fields, "waitUntil"), NO_WAIT);
        assert_eq!(string_of(&fields, "outcome"), "cancelled");
        assert_eq!(
            stored(&store).await.status(t("2026-01-01T00:00:07Z")),
            TaskStatus::Cancelled
        );
    });
}

/// The same through a manager, as a user sees it: the handler is running
/// when the Go cancel lands; the run ends with the task `cancelled`.
#[test]
fn a_manager_reports_a_go_cancel_that_landed_while_its_handler_ran() {
    run(async {
        let (db, store) = seeded().await;
        let run = Running::start(&store).await;
        let (clock, manager) = (run.clock.clone(), run.manager.clone());
        go_cancel(&db, &store, "2026-01-01T00:00:02Z").await;
        let report = run.finish().await;
        assert_eq!(report.outcomes.len(), 1);
        assert_eq!(report.outcomes[0].status, Ok(TaskStatus::Cancelled));
        let task = manager.get_task(ID).await.unwrap().unwrap();
        assert_eq!(task.status(clock.now()), TaskStatus::Cancelled);
        assert_eq!(task.result, Some(serde_json::json!("sent")), "§8.6: kept");
        let fields = raw(&db, &store).await;
        assert_eq!(time_of(&fields, "cancelledAt"), t("2026-01-01T00:00:02Z"));
    });
}

/// A Go worker re-leases the task after the Rust lease expired: the late
/// Rust completion is fenced off (the Go claim voided the Rust token), and
/// the Go lease and attempt count stay as Go wrote them.
#[test]
fn a_late_rust_completion_never_overwrites_a_go_re_lease() {
    run(async {
        let (db, store) = seeded().await;
        let claimed = claim(&store, "2026-01-01T00:00:01Z").await;
        go_release(&db, &store, "2026-01-01T00:03:00Z").await;

        let token = claimed.lease_token.clone().unwrap();
        assert!(matches!(
            complete(&store, &claimed, &token, "2026-01-01T00:02:30Z").await,
            SwapOutcome::Conflict
        ));
        let fresh = stored(&store).await;
        assert_eq!(fresh.attempts, 2);
        assert_eq!(
            fresh.lease_token, None,
            "the Go claim voided the Rust token"
        );
        assert_eq!(
            lifecycle::succeed(&fresh, &token, t("2026-01-01T00:02:30Z"), None),
            Err(Rejection::LeaseLost)
        );
        // A heartbeat is fenced off the same way.
        assert_eq!(
            lifecycle::extend_lease(
                &fresh,
                &token,
                t("2026-01-01T00:02:30Z"),
                t("2026-01-01T00:05:00Z")
            ),
            Err(Rejection::LeaseLost)
        );
        let fields = raw(&db, &store).await;
        assert_eq!(string_of(&fields, "leasedUntil"), "2026-01-01T00:03:00Z");
        assert_eq!(integer_of(&fields, "attempts"), 2);
        assert_eq!(string_of(&fields, "doneAt"), "");
    });
}

/// The same through a manager: the handler is running when its lease is
/// taken over by a Go worker; its outcome is not stored.
#[test]
fn a_manager_run_whose_lease_a_go_worker_took_over_stores_nothing() {
    run(async {
        let (db, store) = seeded().await;
        let run = Running::start(&store).await;
        go_release(&db, &store, "2026-01-02T00:00:00Z").await;
        let report = run.finish().await;
        assert_eq!(
            report.outcomes[0].status,
            Err(NotStored::LeaseLost),
            "fenced off: {report:?}"
        );
        let fields = raw(&db, &store).await;
        assert_eq!(string_of(&fields, "leasedUntil"), "2026-01-02T00:00:00Z");
        assert_eq!(string_of(&fields, "doneAt"), "");
        assert_eq!(integer_of(&fields, "attempts"), 2);
    });
}

/// A heartbeat after a Go cancel keeps the cancel: it conflicts, and
/// decided again on the fresh document it extends the lease only.
#[test]
fn a_rust_heartbeat_keeps_a_go_cancel() {
    run(async {
        let (db, store) = seeded().await;
        let claimed = claim(&store, "2026-01-01T00:00:01Z").await;
        go_cancel(&db, &store, "2026-01-01T00:00:05Z").await;
        let token = claimed.lease_token.clone().unwrap();
        let until = t("2026-01-01T00:02:00Z");
        let now = t("2026-01-01T00:00:30Z");
        let beat = lifecycle::extend_lease(&claimed, &token, now, until).unwrap();
        assert!(matches!(
            swap(&store, &claimed, beat).await,
            SwapOutcome::Conflict
        ));
        let fresh = stored(&store).await;
        let beat = lifecycle::extend_lease(&fresh, &token, now, until).unwrap();
        let SwapOutcome::Applied {
            revision: Some(revision),
        } = swap(&store, &fresh, beat.clone()).await
        else {
            panic!("applied");
        };
        let after = stored(&store).await;
        assert_eq!(
            after.revision,
            Some(revision),
            "the swap returns the new revision"
        );
        assert!(after.is_cancelled);
        assert_eq!(after.leased_until, Some(until));
        // The next write is fenced on the heartbeat's revision: it applies.
        let mut next = beat;
        next.revision = Some(revision);
        let done = lifecycle::succeed(&next, &token, now, None).unwrap();
        assert!(matches!(
            swap(&store, &next, done).await,
            SwapOutcome::Applied { .. }
        ));
        let fields = raw(&db, &store).await;
        assert_eq!(time_of(&fields, "cancelledAt"), t("2026-01-01T00:00:05Z"));
        assert_eq!(string_of(&fields, "outcome"), "cancelled");
    });
}

/// Go resets a task Rust finished; a retried Rust write of that finished
/// run (fenced on the old revision) cannot undo the reset, and the next
/// Rust claim runs it again from attempt 1.
#[test]
fn a_go_reset_survives_a_stale_rust_write_and_the_task_runs_again() {
    run(async {
        let (db, store) = seeded().await;
        let claimed = claim(&store, "2026-01-01T00:00:01Z").await;
        let token = claimed.lease_token.clone().unwrap();
        let done = lifecycle::succeed(&claimed, &token, t("2026-01-01T00:00:02Z"), None).unwrap();
        assert!(matches!(
            swap(&store, &claimed, done.clone()).await,
            SwapOutcome::Applied { .. }
        ));
        go_reset(&db, &store).await;
        // The same write again (a retry after a lost answer).
        assert!(matches!(
            swap(&store, &claimed, done).await,
            SwapOutcome::Conflict
        ));
        let fresh = stored(&store).await;
        assert_eq!(fresh.status(t("2026-01-01T00:00:03Z")), TaskStatus::Pending);
        let again = claim(&store, "2026-01-01T00:00:03Z").await;
        assert_eq!(again.attempts, 1);
    });
}

/// A Go reset lands between a pruner's read and its writes: Go does not
/// bump the version, but the pruner's tombstone swap and its delete are
/// fenced on the revision it read too, so neither touches the reset task.
#[test]
fn a_go_reset_after_a_pruner_read_stops_its_tombstone_and_its_delete() {
    run(async {
        let (db, store) = seeded().await;
        let claimed = claim(&store, "2026-01-01T00:00:01Z").await;
        let token = claimed.lease_token.clone().unwrap();
        complete(&store, &claimed, &token, "2026-01-01T00:00:02Z").await;
        let query = oncetask_core::store::FinishedQuery::new(
            "DEFAULT",
            "send_email",
            TaskStatus::Completed,
            t("2026-01-02T00:00:00Z"),
        );
        let read = store.find_finished(&query).await.unwrap();
        assert_eq!(read.len(), 1, "the pruner reads the finished task");
        let finished = read[0].clone();
        go_reset(&db, &store).await;

        let tombstone = lifecycle::prune(&finished, t("2026-01-02T00:00:00Z")).unwrap();
        assert!(matches!(
            swap(&store, &finished, tombstone).await,
            SwapOutcome::Conflict
        ));
        let deleted = store
            .delete(&[oncetask_core::store::Delete::exact(&finished)])
            .await
            .unwrap();
        assert!(
            matches!(
                deleted.as_slice(),
                [oncetask_core::store::DeleteOutcome::Conflict]
            ),
            "{deleted:?}"
        );
        let fresh = stored(&store).await;
        assert_eq!(fresh.status(t("2026-01-02T00:00:00Z")), TaskStatus::Pending);
        assert!(!fresh.is_tombstone());
    });
}

/// A Go reset leaves the Rust-only `outcome` in place; when a Go worker then
/// runs the task and it fails for good, the stale "completed" must not
/// decide its status: Go's count rule does (failed: done with errors).
#[test]
fn an_outcome_from_before_a_go_reset_does_not_outlive_the_next_go_finish() {
    run(async {
        let (db, store) = seeded().await;
        let claimed = claim(&store, "2026-01-01T00:00:01Z").await;
        let token = claimed.lease_token.clone().unwrap();
        complete(&store, &claimed, &token, "2026-01-01T00:00:02Z").await;
        assert_eq!(
            stored(&store).await.status(t("2026-01-01T00:00:03Z")),
            TaskStatus::Completed
        );
        go_reset(&db, &store).await;
        // A Go worker claims it, and its run fails for good.
        go_release(&db, &store, "2026-01-01T00:01:03Z").await;
        let error = Value {
            value_type: Some(ValueType::MapValue(
                firestore::gcloud_sdk::google::firestore::v1::MapValue {
                    fields: [
                        ("at".to_owned(), s("2026-01-01T00:00:04Z")),
                        ("error".to_owned(), s("boom")),
                    ]
                    .into(),
                },
            )),
        };
        let errors = Value {
            value_type: Some(ValueType::ArrayValue(
                firestore::gcloud_sdk::google::firestore::v1::ArrayValue {
                    values: vec![error],
                },
            )),
        };
        let fields = vec![
            ("doneAt", s("2026-01-01T00:00:04Z")),
            ("leasedUntil", s("")),
            ("errors", errors),
        ];
        go_update(&db, &store, fields, false).await;
        let fresh = stored(&store).await;
        assert_eq!(fresh.outcome, None, "the stale outcome is ignored");
        assert_eq!(fresh.status(t("2026-01-01T00:00:05Z")), TaskStatus::Failed);
    });
}

/// A Rust lease ends on a whole second, rounded up: Go compares
/// whole-second strings (`leasedUntil <= ts(now)`), and a lease ending at
/// `00:01:01.250` would read as expired to Go from `00:01:01`.
#[test]
fn a_rust_lease_never_reads_as_expired_to_go_before_it_ends() {
    run(async {
        let (db, store) = seeded().await;
        let claimed = claim(&store, "2026-01-01T00:00:01.250Z").await;
        assert_eq!(claimed.leased_until, Some(t("2026-01-01T00:01:02Z")));
        let until = string_of(&raw(&db, &store).await, "leasedUntil");
        // Go's ready predicate, as strings, during the lease and at its end.
        assert!(until.as_str() > "2026-01-01T00:01:01Z", "{until}");
        assert!(until.as_str() <= "2026-01-01T00:01:02Z", "{until}");
        assert_eq!(stored(&store).await.leased_until, claimed.leased_until);
    });
}

/// A heartbeat's extension ends on a whole second too, rounded up.
#[test]
fn a_rust_heartbeat_never_reads_as_expired_to_go_before_it_ends() {
    run(async {
        let (db, store) = seeded().await;
        let claimed = claim(&store, "2026-01-01T00:00:01Z").await;
        let token = claimed.lease_token.clone().unwrap();
        let extended = lifecycle::extend_lease(
            &claimed,
            &token,
            t("2026-01-01T00:00:30Z"),
            t("2026-01-01T00:01:30.250Z"),
        )
        .unwrap();
        assert!(matches!(
            swap(&store, &claimed, extended).await,
            SwapOutcome::Applied { .. }
        ));
        let until = string_of(&raw(&db, &store).await, "leasedUntil");
        assert!(until.as_str() > "2026-01-01T00:01:30Z", "{until}");
        assert_eq!(
            time_of(&raw(&db, &store).await, "leasedUntil"),
            t("2026-01-01T00:01:31Z")
        );
    });
}

/// A Rust wait inside a second is stored rounded up, so Go's whole-second
/// comparison (`waitUntil <= ts(now)`) never finds the task due early; Rust
/// reads and claims keep the exact time. A Go write of `waitUntil` then
/// wins over the exact time Rust kept beside it.
#[test]
fn a_rust_wait_never_reads_as_due_to_go_early_and_stays_exact_for_rust() {
    run(async {
        let (db, store) = seeded().await;
        let claimed = claim(&store, "2026-01-01T00:00:01Z").await;
        let token = claimed.lease_token.clone().unwrap();
        // A retry 250 ms after a failure at 00:00:02.100.
        let mut retry = lifecycle::release(&claimed, &token).unwrap();
        retry.wait_until = Some(t("2026-01-01T00:00:02.350Z"));
        assert!(matches!(
            swap(&store, &claimed, retry).await,
            SwapOutcome::Applied { .. }
        ));
        let fields = raw(&db, &store).await;
        let wait = string_of(&fields, "waitUntil");
        assert!(
            wait.as_str() > "2026-01-01T00:00:02Z",
            "due early for Go: {wait}"
        );
        assert!(wait.as_str() <= "2026-01-01T00:00:03Z", "{wait}");
        assert_eq!(
            stored(&store).await.wait_until,
            Some(t("2026-01-01T00:00:02.350Z"))
        );
        // Rust: not due at .300, due at .350 (inside the stored second).
        let request = |now: &str| ClaimRequest {
            env: "DEFAULT".into(),
            kind: "send_email".into(),
            now: t(now),
            grant: LeaseGrant::new(t(now), Duration::from_secs(60)),
            mode: ClaimMode::Single { limit: 1 },
            order: oncetask_core::store::ClaimOrder::Priority,
        };
        let early = store
            .claim(&request("2026-01-01T00:00:02.300Z"))
            .await
            .unwrap();
        assert!(early.tasks.is_empty(), "claimed before its wait");
        claim(&store, "2026-01-01T00:00:02.350Z").await;

        // A Go write of `waitUntil` (as Go's cancel does) is what counts.
        let (db, store) = seeded().await;
        let claimed = claim(&store, "2026-01-01T00:00:01Z").await;
        let token = claimed.lease_token.clone().unwrap();
        let mut retry = lifecycle::release(&claimed, &token).unwrap();
        retry.wait_until = Some(t("2026-01-01T00:00:02.350Z"));
        swap(&store, &claimed, retry).await;
        go_update(
            &db,
            &store,
            vec![("waitUntil", s("2026-01-01T00:00:09Z"))],
            false,
        )
        .await;
        assert_eq!(
            stored(&store).await.wait_until,
            Some(t("2026-01-01T00:00:09Z"))
        );
    });
}

/// Lease and outcome writes are masked: the Go payload's doubles stay
/// doubles after a Rust run.
#[test]
fn a_rust_run_leaves_the_go_payload_as_go_wrote_it() {
    run(async {
        let (db, store) = seeded().await;
        let claimed = claim(&store, "2026-01-01T00:00:01Z").await;
        let token = claimed.lease_token.clone().unwrap();
        assert!(matches!(
            complete(&store, &claimed, &token, "2026-01-01T00:00:02Z").await,
            SwapOutcome::Applied { .. }
        ));
        let fields = raw(&db, &store).await;
        let Some(ValueType::MapValue(data)) = &fields["data"].value_type else {
            panic!("data is a map");
        };
        assert_eq!(tag(&data.fields["retries"]), "doubleValue");
    });
}

/// A manager (manual clock at 00:00:01) whose `send_email` handler has
/// started on `email-u1` and waits until [`Running::finish`] lets it return
/// `"sent"`.
struct Running {
    clock: Arc<ManualClock>,
    manager: Manager,
    release: Arc<Notify>,
    worker: tokio::task::JoinHandle<
        Result<Option<oncetask_core::manager::RunReport>, oncetask_core::Error>,
    >,
}

impl Running {
    async fn start(store: &FirestoreStore) -> Running {
        let clock = Arc::new(ManualClock::new(t("2026-01-01T00:00:01Z")));
        let manager = Manager::builder(Arc::new(store.clone()))
            .env("DEFAULT")
            .clock(clock.clone())
            .start_workers(false)
            .build();
        let started = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (s, r) = (started.clone(), release.clone());
        manager
            .register_dyn(
                "send_email",
                handler_fn(move |_task: Task| {
                    let (s, r) = (s.clone(), r.clone());
                    async move {
                        s.notify_one();
                        r.notified().await;
                        Ok::<_, std::io::Error>("sent")
                    }
                }),
                HandlerOptions::default(),
            )
            .unwrap();
        let worker = {
            let manager = manager.clone();
            tokio::spawn(async move { manager.process_next("send_email").await })
        };
        started.notified().await;
        Running {
            clock,
            manager,
            release,
            worker,
        }
    }

    /// Lets the handler return and waits for the run's report.
    async fn finish(self) -> oncetask_core::manager::RunReport {
        self.release.notify_one();
        self.worker.await.unwrap().unwrap().expect("a task ran")
    }
}

fn run<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f);
}

//! Go compatibility on the Firestore emulator: documents exactly as the Go
//! package writes them (tests/fixtures) are claimed, completed and read back.
//!
//! Needs the emulator: `scripts/test -p oncetask-firestore --test
//! go_on_emulator`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use firestore::FirestoreDb;
use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
use oncetask_core::lifecycle::{self, HandlerPath, LeaseGrant};
use oncetask_core::store::{
    Change, ClaimMode, ClaimRequest, CreateOutcome, Fetched, Swap, SwapOutcome,
};
use oncetask_core::{Store, Task, TaskStatus};
use oncetask_firestore::FirestoreStore;
use oncetask_firestore::document::Fields;
use serde_json::json;

mod common;
use common::{assert_go_readable, t, tag};

/// The fields of a fixture.
fn fixture(name: &str) -> Fields {
    common::fixture(name).1
}

/// A fresh collection holding the given Go fixtures, as Go wrote them.
async fn seeded(files: &[&str]) -> (FirestoreDb, FirestoreStore) {
    common::seeded("go", files).await
}

/// A fresh collection holding the given documents.
async fn seeded_with(documents: Vec<Fields>) -> (FirestoreDb, FirestoreStore) {
    common::seeded_with("go", documents).await
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
        order: oncetask_core::store::ClaimOrder::Priority,
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
        // Go writes no snoozes, priority or attempt limit: the defaults.
        assert_eq!(
            (task.snoozes, task.priority, task.max_attempts),
            (0, 0, None)
        );
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
        assert_go_readable(&fields);
        assert_eq!(tag(&fields["result"]), "mapValue");
        // The defaults are not written (see `document`'s docs).
        for name in ["snoozes", "priority", "maxAttempts"] {
            assert!(!fields.contains_key(name), "{name}");
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
        assert_eq!(
            (back.snoozes, back.priority, back.max_attempts),
            (0, 0, None)
        );
    });
}

/// The task of `id` as the store reads it (with the revision to swap on).
async fn stored(store: &FirestoreStore, id: &str) -> Task {
    match store.get(&[id.to_owned()]).await.unwrap().pop() {
        Some(Fetched::Task(task)) => task,
        other => panic!("{id}: {other:?}"),
    }
}

/// Swaps `next` onto `from` with `change`, which must apply.
async fn apply(store: &FirestoreStore, from: &Task, change: Change, next: &Task) {
    let out = store.swap(&[Swap::new(from, change, next)]).await.unwrap();
    assert!(
        matches!(out[0], SwapOutcome::Applied { .. }),
        "{change:?}: {:?}",
        out[0]
    );
}

fn integer_field(fields: &Fields, name: &str) -> Option<i64> {
    fields.get(name).map(|v| match v.value_type {
        Some(ValueType::IntegerValue(n)) => n,
        ref other => panic!("{name}: {other:?}"),
    })
}

/// A Rust task's priority and attempt limit are stored as integers, read
/// back, and kept by a claim; the document stays one Go reads.
#[test]
fn a_rust_task_with_a_priority_and_an_attempt_limit_round_trips() {
    run(async {
        let (db, store) = seeded(&[]).await;
        let mut task = Task::new("prio-1", "send_email", "DEFAULT", t("2026-01-01T00:00:00Z"));
        task.priority = 7;
        task.max_attempts = Some(3);
        let out = store.create(vec![task.clone()]).await.unwrap();
        assert!(matches!(out[0], CreateOutcome::Created), "{:?}", out[0]);
        let fields = raw(&db, &store, "prio-1").await;
        assert_eq!(integer_field(&fields, "priority"), Some(7));
        assert_eq!(integer_field(&fields, "maxAttempts"), Some(3));
        assert_eq!(integer_field(&fields, "snoozes"), None, "0 is not written");
        assert_go_readable(&fields);
        assert_eq!(stored(&store, "prio-1").await, task);
        let claimed = store
            .claim(&claim_at("2026-01-01T00:00:01Z"))
            .await
            .unwrap();
        assert_eq!(claimed.tasks.len(), 1);
        let claimed = &claimed.tasks[0];
        assert_eq!((claimed.priority, claimed.max_attempts), (7, Some(3)));
        assert_eq!(stored(&store, "prio-1").await, *claimed);
    });
}

/// A snooze of a Go task stores its count and leaves the document one Go
/// reads; an operator's priority is stored; a reset clears the snoozes and
/// keeps the priority; a priority set back to 0 leaves no field behind.
#[test]
fn snoozes_and_priorities_of_a_go_task_are_stored_and_reset() {
    run(async {
        let (db, store) = seeded(&["pending.json"]).await;
        let id = "email-u1";
        let claimed = store
            .claim(&claim_at("2026-01-01T00:00:01Z"))
            .await
            .unwrap()
            .tasks
            .remove(0);
        assert_eq!(claimed.attempts, 1);
        let token = claimed.lease_token.clone().unwrap();
        let later = t("2026-01-01T00:00:30Z");
        let snoozed = lifecycle::snooze(
            &claimed,
            &token,
            t("2026-01-01T00:00:02Z"),
            later,
            HandlerPath::Main,
        )
        .unwrap();
        apply(&store, &claimed, Change::Snooze, &snoozed).await;
        let fields = raw(&db, &store, id).await;
        assert_eq!(integer_field(&fields, "snoozes"), Some(1));
        assert_eq!(
            integer_field(&fields, "attempts"),
            Some(0),
            "not an attempt"
        );
        assert_go_readable(&fields);
        let back = stored(&store, id).await;
        assert_eq!(back, snoozed);
        assert_eq!((back.snoozes, back.attempts), (1, 0));
        assert_eq!(back.wait_until, Some(later));
        assert!(
            store
                .claim(&claim_at("2026-01-01T00:00:29Z"))
                .await
                .unwrap()
                .tasks
                .is_empty()
        );

        let raised = lifecycle::reprioritize(&back, 5).unwrap();
        apply(&store, &back, Change::Reprioritize, &raised).await;
        let fields = raw(&db, &store, id).await;
        assert_eq!(integer_field(&fields, "priority"), Some(5));
        assert_eq!(integer_field(&fields, "snoozes"), Some(1));
        assert_go_readable(&fields);
        assert_eq!(stored(&store, id).await, raised);

        // Run again when the snooze is over, and finish.
        let again = store
            .claim(&claim_at("2026-01-01T00:00:30Z"))
            .await
            .unwrap()
            .tasks
            .remove(0);
        assert_eq!((again.snoozes, again.priority, again.attempts), (1, 5, 1));
        let token = again.lease_token.clone().unwrap();
        let done = lifecycle::succeed(&again, &token, t("2026-01-01T00:00:31Z"), None).unwrap();
        apply(&store, &again, Change::Outcome, &done).await;
        let done = stored(&store, id).await;
        assert_eq!(
            done.status(t("2026-01-01T00:00:32Z")),
            TaskStatus::Completed
        );

        // A reset clears the snoozes (the field goes), not the priority.
        let reset = lifecycle::reset(&done).unwrap();
        apply(&store, &done, Change::Reset, &reset).await;
        let fields = raw(&db, &store, id).await;
        assert_eq!(integer_field(&fields, "snoozes"), None);
        assert_eq!(integer_field(&fields, "priority"), Some(5));
        assert_go_readable(&fields);
        let back = stored(&store, id).await;
        assert_eq!((back.snoozes, back.priority, back.attempts), (0, 5, 0));

        // The default priority is no field, as in a Go document.
        let lowered = lifecycle::reprioritize(&back, 0).unwrap();
        apply(&store, &back, Change::Reprioritize, &lowered).await;
        let fields = raw(&db, &store, id).await;
        for name in ["snoozes", "priority", "maxAttempts"] {
            assert!(!fields.contains_key(name), "{name}");
        }
        assert_go_readable(&fields);
        assert_eq!(stored(&store, id).await.priority, 0);
    });
}

/// A priority outside the range (99 fits an i8, but no oncetask writes it)
/// makes the document undecodable, with the reason: reads report it, and a
/// claim reports it and leases the other tasks.
#[test]
fn a_document_with_an_out_of_range_priority_is_undecodable() {
    run(async {
        let mut bad = fixture("pending.json");
        bad.insert(
            "priority".into(),
            firestore::gcloud_sdk::google::firestore::v1::Value {
                value_type: Some(ValueType::IntegerValue(99)),
            },
        );
        let (_db, store) = seeded_with(vec![bad, fixture("expired-lease.json")]).await;
        let got = store.get(&["email-u1".to_owned()]).await.unwrap();
        let [Fetched::Undecodable(u)] = &got[..] else {
            panic!("undecodable: {got:?}");
        };
        assert_eq!(u.id, "email-u1");
        assert!(
            u.reason.contains("priority") && u.reason.contains("99"),
            "{}",
            u.reason
        );
        let claimed = store
            .claim(&claim_at("2026-01-01T00:10:01Z"))
            .await
            .unwrap();
        let ids: Vec<&str> = claimed.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["email-u3"]);
        let reported: Vec<&str> = claimed.undecodable.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(reported, ["email-u1"]);
    });
}

/// A Go task (Go writes no `priority`: it reads as 0) is claimed while a
/// stream of prioritized Rust tasks is pending. The claims of a manager take
/// the prioritized tasks first, but every 10th
/// ([`oncetask_core::manager::DEFAULT_OLDEST_CLAIM_EVERY`]) takes the oldest ready
/// task whatever its priority, so the Go task waits at most 10 claims: a
/// claim query ordered or filtered by `priority` would never find it.
#[test]
fn a_go_task_is_claimed_while_a_stream_of_prioritized_rust_tasks_is_pending() {
    use std::sync::{Arc, Mutex};

    use oncetask_core::manager::handler_fn;
    use oncetask_core::{HandlerOptions, Manager, ManualClock};

    run(async {
        let (db, store) = seeded(&["pending.json"]).await;
        assert!(!raw(&db, &store, "email-u1").await.contains_key("priority"));
        // Created in the seconds after the Go task's (a Go whole-second
        // time sorts after the Rust times of its own second, see
        // `oncetask_firestore::document`).
        let created = t("2026-01-01T00:00:01Z");
        let urgent = |id: String, after_ms: i64| {
            let mut task = Task::new(
                id,
                "send_email",
                "DEFAULT",
                created + chrono::TimeDelta::milliseconds(after_ms),
            );
            task.priority = 5;
            task
        };
        // A backlog of prioritized tasks, all newer than the Go task.
        let backlog: Vec<Task> = (0..20)
            .map(|i| urgent(format!("urgent-{i:02}"), 10 * (i + 1)))
            .collect();
        for outcome in store.create(backlog).await.unwrap() {
            assert!(matches!(outcome, CreateOutcome::Created), "{outcome:?}");
        }
        let manager = Manager::builder(Arc::new(store.clone()))
            .env("DEFAULT")
            .clock(Arc::new(ManualClock::new(t("2026-01-01T00:00:05Z"))))
            .start_workers(false)
            .build();
        let ran = Arc::new(Mutex::new(Vec::<(String, i8)>::new()));
        let log = ran.clone();
        manager
            .register_dyn(
                "send_email",
                handler_fn(move |task: Task| {
                    log.lock().unwrap().push((task.id, task.priority));
                    async { Ok::<_, std::io::Error>(()) }
                }),
                HandlerOptions::default().claim_ahead(0),
            )
            .unwrap();
        let every = oncetask_core::manager::DEFAULT_OLDEST_CLAIM_EVERY as usize;
        let mut started_at = None;
        for claim in 1..=2 * every {
            // The stream: one more prioritized task before every claim.
            let more = urgent(format!("stream-{claim:02}"), 500 + claim as i64);
            store.create(vec![more]).await.unwrap();
            let report = manager.process_next("send_email").await.unwrap();
            assert!(report.is_some(), "claim {claim} ran a task");
            if ran.lock().unwrap().iter().any(|(id, _)| id == "email-u1") {
                started_at = Some(claim);
                break;
            }
        }
        let ran = ran.lock().unwrap().clone();
        let started_at = started_at.unwrap_or_else(|| panic!("the Go task never ran: {ran:?}"));
        assert!(
            (2..=every).contains(&started_at),
            "the Go task ran at claim {started_at}: {ran:?}"
        );
        // Before it, only prioritized tasks, the oldest first.
        let before: Vec<&str> = ran[..started_at - 1]
            .iter()
            .map(|(id, priority)| {
                assert_eq!(*priority, 5, "{id}");
                id.as_str()
            })
            .collect();
        let expected: Vec<String> = (0..started_at - 1)
            .map(|i| format!("urgent-{i:02}"))
            .collect();
        assert_eq!(before, expected);
        assert_eq!(ran[started_at - 1], ("email-u1".to_owned(), 0));
        // Finished, and still a document Go reads, with no priority field.
        let fields = raw(&db, &store, "email-u1").await;
        assert_go_readable(&fields);
        assert!(!fields.contains_key("priority"));
        assert_eq!(
            stored(&store, "email-u1")
                .await
                .status(t("2026-01-01T00:00:06Z")),
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

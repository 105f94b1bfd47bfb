//! Creating, inspecting, resetting and deleting through the manager; input
//! validation; environment isolation.

use std::sync::Arc;

use oncetask_core::manager::{HandlerOptions, handler_fn};
use oncetask_core::{CreateStatus, Error, Recurrence, Task, TaskStatus};
use serde::Serialize;

use super::{ENV, Job, create, manual, register_ok};
use crate::StoreFactory;

const KIND: &str = "invoice";

/// Creating the same id twice stores one task; the second call reports it
/// exists.
pub async fn creating_the_same_task_twice_is_a_no_op(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default());
    assert_eq!(
        h.manager
            .create(&Job::new(KIND, "i1").n(1))
            .await
            .expect("create"),
        CreateStatus::Created
    );
    assert_eq!(
        h.manager
            .create(&Job::new(KIND, "i1").n(2))
            .await
            .expect("create"),
        CreateStatus::AlreadyExists
    );
    assert_eq!(
        h.task("i1").await.data.get("n"),
        Some(&serde_json::json!(1))
    );
}

/// Bulk create reports per item: created, skipped (existing or repeated), failed.
pub async fn create_many_reports_each_item(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default());
    create(&h.manager, &Job::new(KIND, "old")).await;
    let jobs = [
        Job::new(KIND, "new"),
        Job::new(KIND, "old"),
        Job::new(KIND, "new"),
        Job::new(KIND, ""),
        Job::new("unknown_kind", "x"),
    ];
    let report = h.manager.create_many(&jobs).await.expect("create");
    assert_eq!(report.succeeded, ["new"]);
    let mut skipped = report.skipped.clone();
    skipped.sort();
    assert_eq!(skipped, ["new", "old"]);
    assert_eq!(report.failed.len(), 2);
    assert!(matches!(report.failed[0].1, Error::EmptyId));
    assert!(matches!(report.failed[1].1, Error::UnknownKind { .. }));
}

#[derive(Serialize)]
struct NotAnObject(u32);

impl oncetask_core::TaskData for NotAnObject {
    type Kind = &'static str;
    fn kind(&self) -> &'static str {
        KIND
    }
    fn idempotent_id(&self) -> String {
        "scalar".into()
    }
}

/// Bad input gets a typed error and stores nothing.
pub async fn invalid_tasks_are_rejected_with_typed_errors_and_nothing_is_stored(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default());
    let rule = Recurrence::new("FREQ=DAILY", "2025-01-06T09:00:00Z").expect("valid");
    // Built field by field, bypassing `Recurrence::new`'s validation.
    let bad_rule = Recurrence {
        rrule: "FREQ=FORTNIGHTLY".into(),
        ..rule.clone()
    };
    let cases: Vec<(&str, Result<CreateStatus, Error>)> = vec![
        ("empty id", h.manager.create(&Job::new(KIND, "")).await),
        (
            "unknown kind",
            h.manager
                .create(&Job::new("nobody_handles_this", "u"))
                .await,
        ),
        ("not an object", h.manager.create(&NotAnObject(7)).await),
        (
            "recurrence and schedule",
            h.manager
                .create(&Job::new(KIND, "both").recurring(rule).at(super::start()))
                .await,
        ),
        (
            "invalid rule",
            h.manager
                .create(&Job::new(KIND, "bad-rule").recurring(bad_rule))
                .await,
        ),
        (
            "a typo in a rule",
            h.manager
                .create(
                    &Job::new(KIND, "typo")
                        .recurring_by("FREQ=WEEKLY;BYDAY=MOO", "2025-01-06T09:00:00Z"),
                )
                .await,
        ),
    ];
    for (name, result) in &cases {
        assert!(
            result.is_err(),
            "{name}: should be rejected, got {result:?}"
        );
    }
    assert!(matches!(cases[0].1, Err(Error::EmptyId)));
    assert!(matches!(cases[1].1, Err(Error::UnknownKind { .. })));
    assert!(matches!(cases[2].1, Err(Error::InvalidData { .. })));
    assert!(matches!(cases[3].1, Err(Error::ScheduleConflict { .. })));
    assert!(matches!(cases[4].1, Err(Error::InvalidRecurrence { .. })));
    assert!(matches!(
        cases[5].1,
        Err(Error::InvalidRecurrence { ref id, .. }) if id == "typo"
    ));
    assert!(
        h.manager
            .find(h.manager.filter())
            .await
            .expect("find")
            .is_empty(),
        "nothing stored"
    );
    // In a bulk create, the same typo fails its own item only.
    let report = h
        .manager
        .create_many(&[
            Job::new(KIND, "typo").recurring_by("FREQ=WEEKLY;BYDAY=MOO", "2025-01-06T09:00:00Z"),
            Job::new(KIND, "fine"),
        ])
        .await
        .expect("create_many");
    assert_eq!(report.succeeded, ["fine"]);
    assert!(matches!(
        report.failed.as_slice(),
        [(id, Error::InvalidRecurrence { .. })] if id == "typo"
    ));
    let stored: Vec<String> = h
        .manager
        .find(h.manager.filter())
        .await
        .expect("find")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(stored, ["fine"], "the typo stored nothing");
}

/// Registering a second handler for a kind is a typed error.
pub async fn a_second_handler_for_a_kind_is_rejected(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default());
    let again = h.manager.register_dyn(
        KIND,
        handler_fn(|_t: Task| async { Ok::<_, std::io::Error>(()) }),
        HandlerOptions::default(),
    );
    assert!(
        matches!(again, Err(Error::HandlerAlreadyExists { .. })),
        "{again:?}"
    );
    let invalid = h.manager.register_dyn(
        "other",
        handler_fn(|_t: Task| async { Ok::<_, std::io::Error>(()) }),
        HandlerOptions::default().concurrency(0),
    );
    assert!(
        matches!(invalid, Err(Error::InvalidConfig(_))),
        "{invalid:?}"
    );
}

/// A failed task, once reset, runs again from attempt 1 and can complete.
pub async fn a_reset_failed_task_runs_again_and_completes(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = fail.clone();
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |_t: Task| {
                let flag = flag.clone();
                async move {
                    if flag.load(std::sync::atomic::Ordering::SeqCst) {
                        Err("ledger closed")
                    } else {
                        Ok(())
                    }
                }
            }),
            HandlerOptions::default().no_retry(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "i1")).await;
    h.drain(KIND).await;
    assert_eq!(h.status("i1").await, TaskStatus::Failed);
    // Resetting a non-terminal task is a no-op; a terminal one is reset.
    create(
        &h.manager,
        &Job::new(KIND, "pending").at(super::start() + chrono::TimeDelta::hours(1)),
    )
    .await;
    let report = h
        .manager
        .reset_many(&["i1".to_owned(), "pending".to_owned()])
        .await
        .expect("reset");
    assert_eq!(report.succeeded, ["i1"]);
    assert_eq!(report.skipped, ["pending"]);
    let task = h.task("i1").await;
    assert_eq!((task.attempts, task.errors.len()), (0, 0));
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    h.drain(KIND).await;
    let task = h.task("i1").await;
    assert_eq!(task.status(h.clock.now()), TaskStatus::Completed);
    assert_eq!(task.attempts, 1);
}

/// A task whose handler is running cannot be deleted (its resource key
/// would be freed while the handler runs); once it finished it can.
pub async fn a_running_task_cannot_be_deleted(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let manager = h.manager.clone();
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |task: Task| {
                let manager = manager.clone();
                async move {
                    let refused = manager.delete(&task.id).await;
                    assert!(
                        matches!(refused, Err(Error::TaskRunning { .. })),
                        "{refused:?}"
                    );
                    Ok::<_, Error>(())
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "i1")).await;
    let report = h
        .manager
        .process_next(KIND)
        .await
        .expect("run")
        .expect("claimed");
    assert_eq!(report.outcomes[0].status, Ok(TaskStatus::Completed));
    h.manager
        .delete("i1")
        .await
        .expect("delete a finished task");
    assert!(h.manager.get_task("i1").await.expect("get").is_none());
    let report = h
        .manager
        .delete_many(&["i1".to_owned()])
        .await
        .expect("delete");
    assert_eq!(report.not_found, ["i1"], "deleting a missing id is a no-op");
}

/// An undecodable document can be deleted by id (the way out of a poison pill).
pub async fn an_undecodable_document_can_be_deleted(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    if !h.insert_undecodable(factory, "junk", KIND).await {
        return;
    }
    let report = h
        .manager
        .cancel_many(&["junk".to_owned()])
        .await
        .expect("cancel");
    assert_eq!(report.failed.len(), 1, "only delete applies to it");
    let report = h
        .manager
        .delete_many(&["junk".to_owned()])
        .await
        .expect("delete");
    assert_eq!(report.succeeded, ["junk"]);
    assert!(h.manager.get_task("junk").await.expect("get").is_none());
}

/// Tasks of another environment are invisible to reads and claims, and
/// id-based actions on them fail with a typed error.
pub async fn environments_are_isolated(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default());
    let staging = h.peer("staging", false);
    register_ok(&staging, KIND, HandlerOptions::default());
    create(&staging, &Job::new(KIND, "s1").key("k")).await;

    assert!(h.manager.get_task("s1").await.expect("get").is_none());
    assert!(
        h.manager
            .get_tasks_by_resource_key("k")
            .await
            .expect("get")
            .is_empty()
    );
    assert!(h.manager.process_next(KIND).await.expect("run").is_none());
    assert!(
        h.manager
            .count_by_status(None)
            .await
            .expect("count")
            .is_empty()
    );
    for result in [
        h.manager.cancel("s1").await.map(|_| ()),
        h.manager.reset("s1").await,
        h.manager.delete("s1").await,
    ] {
        assert!(
            matches!(result, Err(Error::WrongEnvironment { .. })),
            "{result:?}"
        );
    }
    let clash = h.manager.create(&Job::new(KIND, "s1")).await;
    assert!(
        matches!(clash, Err(Error::WrongEnvironment { .. })),
        "W13: {clash:?}"
    );
    assert_eq!(h.manager.env(), ENV);
    assert_eq!(
        staging
            .get_task("s1")
            .await
            .expect("get")
            .map(|t| t.attempts),
        Some(0)
    );
}

/// Counts and queue depth reflect the derived statuses.
pub async fn counts_reflect_statuses(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default());
    create(&h.manager, &Job::new(KIND, "now1")).await;
    create(&h.manager, &Job::new(KIND, "now2")).await;
    create(
        &h.manager,
        &Job::new(KIND, "later").at(super::start() + chrono::TimeDelta::hours(1)),
    )
    .await;
    create(&h.manager, &Job::new(KIND, "gone")).await;
    h.manager.cancel("gone").await.expect("cancel");
    assert_eq!(h.manager.pending_count(KIND).await.expect("count"), 3);
    let counts = h.manager.count_by_status(Some(KIND)).await.expect("count");
    assert_eq!(counts.get(&TaskStatus::Pending), Some(&2));
    assert_eq!(counts.get(&TaskStatus::Waiting), Some(&1));
    assert_eq!(counts.get(&TaskStatus::CancellationPending), Some(&1));
    let by_key = {
        create(&h.manager, &Job::new(KIND, "k2").key("acct")).await;
        create(&h.manager, &Job::new(KIND, "k1").key("acct")).await;
        h.manager
            .get_tasks_by_resource_key("acct")
            .await
            .expect("get")
    };
    let ids: Vec<&str> = by_key.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["k1", "k2"], "same created_at: ordered by id");
}

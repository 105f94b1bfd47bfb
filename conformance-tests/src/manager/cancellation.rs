//! Cancellation at manager level (docs/semantics.md S8).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oncetask_core::manager::{CancelStatus, HandlerOptions, group_handler_fn, handler_fn};
use oncetask_core::{FixedDelay, Task, TaskStatus};
use tokio::sync::Notify;

use super::{Job, create, manual};
use crate::StoreFactory;

const KIND: &str = "reminder";

fn counting() -> (
    Arc<AtomicU32>,
    impl oncetask_core::manager::Handler<oncetask_core::Task>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let handler = handler_fn(move |_t: Task| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        }
    });
    (calls, handler)
}

/// Without a cancellation handler a cancelled task is finished at its next
/// claim; the main handler never runs.
pub async fn a_cancelled_task_without_a_cancellation_handler_is_finished_without_running(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let (main_calls, main) = counting();
    h.manager
        .register_dyn(KIND, main, HandlerOptions::default())
        .expect("register");
    create(
        &h.manager,
        &Job::new(KIND, "r1").at(super::start() + chrono::TimeDelta::hours(1)),
    )
    .await;
    h.manager.cancel("r1").await.expect("cancel");
    assert_eq!(h.status("r1").await, TaskStatus::CancellationPending);
    h.drain(KIND).await;
    assert_eq!(h.status("r1").await, TaskStatus::Cancelled);
    assert_eq!(main_calls.load(Ordering::SeqCst), 0);
}

/// A cancellation handler runs once per cancelled task and is retried by
/// the cancellation retry policy.
pub async fn a_cancellation_handler_runs_and_is_retried_by_its_own_policy(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let (main_calls, main) = counting();
    let cleanups = Arc::new(AtomicU32::new(0));
    let seen = cleanups.clone();
    h.manager
        .register_dyn(
            KIND,
            main,
            HandlerOptions::default()
                .cancellation_handler(handler_fn(move |_t: Task| {
                    let seen = seen.clone();
                    async move {
                        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                            Err("outbox locked")
                        } else {
                            Ok("removed")
                        }
                    }
                }))
                .cancellation_retry_policy(FixedDelay {
                    max_attempts: 3,
                    delay: Duration::from_secs(10),
                }),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "r1")).await;
    h.manager.cancel("r1").await.expect("cancel");
    h.drain(KIND).await;
    let task = h.task("r1").await;
    assert_eq!(task.status(h.clock.now()), TaskStatus::CancellationPending);
    assert_eq!(task.errors[0].error, "outbox locked");
    h.advance(Duration::from_secs(10));
    h.drain(KIND).await;
    let task = h.task("r1").await;
    assert_eq!(task.status(h.clock.now()), TaskStatus::Cancelled);
    assert_eq!(task.result, Some(serde_json::json!("removed")));
    assert_eq!(cleanups.load(Ordering::SeqCst), 2);
    assert_eq!(main_calls.load(Ordering::SeqCst), 0);
}

/// Cancelling a running task lets its handler finish; a success then ends
/// the task as cancelled, keeping the result.
pub async fn cancelling_a_running_task_lets_it_finish_and_ends_it_cancelled(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |_t: Task| {
                let g = g.clone();
                async move {
                    g.notified().await;
                    Ok::<_, std::io::Error>("sent")
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "r1")).await;
    let run = h.start_running(KIND, "r1").await;
    h.manager.cancel("r1").await.expect("cancel");
    let task = h.task("r1").await;
    assert!(
        task.is_cancelled && task.leased_until.is_some(),
        "cancel keeps the lease"
    );
    gate.notify_one();
    run.await.expect("join").expect("run");
    let task = h.task("r1").await;
    assert_eq!(task.status(h.clock.now()), TaskStatus::Cancelled);
    assert_eq!(task.result, Some(serde_json::json!("sent")));
}

/// Cancelling by resource key cancels the not-done tasks of that kind and
/// key only; for a group kind, cancelled tasks go one by one through the
/// cancellation path, not to the group handler.
pub async fn cancel_by_resource_key_cancels_only_that_key(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let groups = Arc::new(Mutex::new(Vec::new()));
    let sink = groups.clone();
    h.manager
        .register_dyn_group(
            KIND,
            group_handler_fn(move |tasks: Vec<Task>| {
                let sink = sink.clone();
                async move {
                    sink.lock().expect("lock").push(tasks.len());
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "a1").key("a")).await;
    create(&h.manager, &Job::new(KIND, "a2").key("a")).await;
    create(&h.manager, &Job::new(KIND, "b1").key("b")).await;
    let report = h
        .manager
        .cancel_by_resource_key(KIND, "a")
        .await
        .expect("cancel");
    let mut cancelled = report.succeeded.clone();
    cancelled.sort();
    assert_eq!(cancelled, ["a1", "a2"]);
    h.drain(KIND).await;
    assert_eq!(h.status("a1").await, TaskStatus::Cancelled);
    assert_eq!(h.status("a2").await, TaskStatus::Cancelled);
    assert_eq!(h.status("b1").await, TaskStatus::Completed);
    assert_eq!(
        *groups.lock().expect("lock"),
        vec![1],
        "only b1 reached the group handler"
    );
}

/// Cancel is idempotent: done, already cancelled and missing ids are no-ops.
pub async fn cancel_skips_done_cancelled_and_missing_tasks(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let (_, main) = counting();
    h.manager
        .register_dyn(KIND, main, HandlerOptions::default())
        .expect("register");
    create(&h.manager, &Job::new(KIND, "done")).await;
    h.drain(KIND).await;
    create(&h.manager, &Job::new(KIND, "live")).await;
    let ids: Vec<String> = ["done", "live", "live", "missing"]
        .map(String::from)
        .to_vec();
    let report = h.manager.cancel_many(&ids).await.expect("cancel");
    assert_eq!(report.succeeded, ["live"]);
    assert_eq!(report.skipped, ["live", "done"]);
    assert_eq!(report.not_found, ["missing"]);
    assert!(report.is_ok());
    let again = h.manager.cancel_many(&ids[1..2]).await.expect("cancel");
    assert_eq!(again.skipped, ["live"]);
    assert_eq!(h.status("done").await, TaskStatus::Completed);

    // One at a time, the answer says which happened.
    create(&h.manager, &Job::new(KIND, "fresh")).await;
    let cancel = |id: &'static str| h.manager.cancel(id);
    assert_eq!(
        cancel("fresh").await.expect("cancel"),
        CancelStatus::Pending
    );
    assert_eq!(h.status("fresh").await, TaskStatus::CancellationPending);
    assert_eq!(
        cancel("fresh").await.expect("cancel"),
        CancelStatus::NotApplicable
    );
    assert_eq!(
        cancel("done").await.expect("cancel"),
        CancelStatus::NotApplicable
    );
    assert_eq!(
        cancel("missing").await.expect("cancel"),
        CancelStatus::NotFound
    );
}

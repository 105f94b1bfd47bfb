//! The worker loops: wake-ups without polling, and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use oncetask_core::manager::{HandlerOptions, handler_fn};
use oncetask_core::{Task, TaskStatus};
use tokio::sync::Notify;

use super::{Job, create, eventually, register_ok, running};
use crate::StoreFactory;

const KIND: &str = "notify";

/// An idle worker runs a new task at once (no poll interval passes: the
/// clock stands still and polling is set to a day).
pub async fn a_create_wakes_idle_workers_at_once(factory: &impl StoreFactory) {
    let h = running(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default().concurrency(2));
    tokio::task::yield_now().await;
    create(&h.manager, &Job::new(KIND, "n1")).await;
    eventually("n1 completed", || async {
        h.status("n1").await == TaskStatus::Completed
    })
    .await;
    h.manager.shutdown(Duration::from_secs(5)).await;
}

/// An idle worker sleeps until the earliest due time of its kind, and runs
/// a scheduled task when the clock reaches it (Go polled every minute, W5).
pub async fn idle_workers_wake_at_the_next_due_time(factory: &impl StoreFactory) {
    let h = running(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default());
    let due = super::start() + chrono::TimeDelta::minutes(5);
    create(&h.manager, &Job::new(KIND, "later").at(due)).await;
    h.advance(Duration::from_secs(299));
    // Let the loop see the clock move; the task must not run early.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(h.status("later").await, TaskStatus::Waiting);
    h.advance(Duration::from_secs(1));
    eventually("the scheduled task completed", || async {
        h.status("later").await == TaskStatus::Completed
    })
    .await;
    h.manager.shutdown(Duration::from_secs(5)).await;
}

/// A retry after a backoff runs when the clock passes the backoff.
pub async fn a_backoff_retry_runs_when_the_clock_passes_it(factory: &impl StoreFactory) {
    let h = running(factory).await;
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = calls.clone();
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |_t: Task| {
                let seen = seen.clone();
                async move {
                    if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        Err("first try fails")
                    } else {
                        Ok(())
                    }
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "r1")).await;
    eventually("the first attempt failed", || async {
        h.status("r1").await == TaskStatus::Waiting
    })
    .await;
    h.advance(Duration::from_secs(1));
    eventually("the retry completed", || async {
        h.status("r1").await == TaskStatus::Completed
    })
    .await;
    h.manager.shutdown(Duration::from_secs(5)).await;
}

/// Shutdown stops claiming, waits for running handlers and records their outcomes.
pub async fn shutdown_drains_running_handlers_and_records_their_outcomes(
    factory: &impl StoreFactory,
) {
    let h = running(factory).await;
    let started = Arc::new(Notify::new());
    let finish = Arc::new(Notify::new());
    let (s, f) = (started.clone(), finish.clone());
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |_t: Task| {
                let (s, f) = (s.clone(), f.clone());
                async move {
                    s.notify_one();
                    f.notified().await;
                    Ok::<_, std::io::Error>("finished during shutdown")
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "busy")).await;
    started.notified().await;
    let manager = h.manager.clone();
    let shutdown = tokio::spawn(async move { manager.shutdown(Duration::from_secs(30)).await });
    eventually("shutdown began", || async { h.manager.is_shutting_down() }).await;
    // Shutdown must wait for the handler.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(
        !shutdown.is_finished(),
        "shutdown returned before the handler finished"
    );
    // No new claims while draining.
    create(&h.manager, &Job::new(KIND, "late")).await;
    finish.notify_one();
    let report = shutdown.await.expect("join");
    assert!(report.drained);
    assert!(report.interrupted.is_empty());
    let busy = h.task("busy").await;
    assert_eq!(busy.status(h.clock.now()), TaskStatus::Completed);
    assert_eq!(
        busy.result,
        Some(serde_json::json!("finished during shutdown"))
    );
    assert_eq!(h.status("late").await, TaskStatus::Pending);
}

/// Handlers still running when the grace period ends are interrupted and
/// their leases released, so the task is ready again at once, with no error.
pub async fn shutdown_releases_handlers_that_outlive_the_grace_period(factory: &impl StoreFactory) {
    let h = running(factory).await;
    let started = Arc::new(Notify::new());
    let s = started.clone();
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |_t: Task| {
                let s = s.clone();
                async move {
                    s.notify_one();
                    std::future::pending::<()>().await;
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "stuck")).await;
    started.notified().await;
    let report = h.manager.shutdown(Duration::from_millis(20)).await;
    assert!(!report.drained);
    assert_eq!(report.interrupted, ["stuck"]);
    let task = h.task("stuck").await;
    assert_eq!(task.status(h.clock.now()), TaskStatus::Pending);
    assert_eq!(task.attempts, 1);
    assert!(task.errors.is_empty());
}

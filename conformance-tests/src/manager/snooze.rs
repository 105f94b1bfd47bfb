//! Snooze: a handler puts its task off without failing it. The attempt does
//! not count, no error is recorded, the backoff stays where it was, the
//! lease and resource key are free at once, and the task's snooze count
//! goes up.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use oncetask_core::manager::{HandlerOptions, HandlerOutcome, group_handler_fn, handler_fn};
use oncetask_core::{Snooze, Task, TaskStatus};
use tokio::sync::Notify;

use super::{Job, create, manual};
use crate::StoreFactory;

const KIND: &str = "poll_export";

/// Counts calls; the `n`-th call (from 1) returns `outcome(n)`.
fn scripted(
    outcome: impl Fn(u32) -> HandlerOutcome + Send + Sync + 'static,
) -> (
    Arc<AtomicU32>,
    impl oncetask_core::manager::Handler<oncetask_core::Task>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let outcome = Arc::new(outcome);
    let handler = handler_fn(move |_task: Task| {
        let call = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let outcome = outcome.clone();
        async move { outcome(call) }
    });
    (calls, handler)
}

/// A snoozed task waits for its time, then runs again; the snooze counted
/// no attempt and recorded no error.
pub async fn a_snoozed_task_runs_again_later_without_counting_an_attempt(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let (calls, handler) = scripted(|call| match call {
        1 => HandlerOutcome::snooze(Duration::from_secs(30)),
        _ => HandlerOutcome::completed(),
    });
    h.manager
        .register_dyn(KIND, handler, HandlerOptions::default())
        .expect("register");
    create(&h.manager, &Job::new(KIND, "s1")).await;

    let report = h
        .manager
        .process_next(KIND)
        .await
        .expect("run")
        .expect("claimed");
    assert_eq!(report.outcomes[0].status, Ok(TaskStatus::Waiting));
    assert_eq!(report.outcomes[0].error, None, "a snooze is not an error");
    let task = h.task("s1").await;
    assert_eq!((task.attempts, task.snoozes), (0, 1));
    assert!(task.errors.is_empty());
    assert_eq!(task.lease_token, None);
    assert_eq!(task.leased_until, None);
    assert_eq!(
        task.wait_until,
        Some(h.clock.now() + TimeDelta::seconds(30))
    );

    h.advance(Duration::from_secs(29));
    assert!(
        h.manager.process_next(KIND).await.expect("run").is_none(),
        "snoozed for 30 s"
    );
    h.advance(Duration::from_secs(1));
    h.drain(KIND).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let task = h.kit.assert_completed("s1").await;
    assert_eq!((task.attempts, task.snoozes), (1, 1));
}

/// Snoozes between failures leave the backoff where the failures put it:
/// the default policy waits 1 s after the first failure and 2 s after the
/// second, however many snoozes came between.
pub async fn a_snooze_leaves_the_retry_backoff_alone(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let (calls, handler) = scripted(|call| match call {
        1 | 4 => HandlerOutcome::failed(format!("unavailable #{call}")),
        2 | 3 => HandlerOutcome::snooze(Duration::from_secs(10)),
        _ => HandlerOutcome::completed(),
    });
    h.manager
        .register_dyn(KIND, handler, HandlerOptions::default())
        .expect("register");
    create(&h.manager, &Job::new(KIND, "s1")).await;
    h.kit.run_for(3, Duration::from_secs(10)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let task = h.task("s1").await;
    assert_eq!((task.attempts, task.snoozes), (2, 2));
    assert_eq!(task.errors.len(), 2);
    assert_eq!(
        task.wait_until,
        Some(h.clock.now() + TimeDelta::seconds(2)),
        "the second failure's backoff, as if no snooze happened"
    );
}

/// A snooze gives the resource key back at once: the next task of the key
/// runs while the snoozed one waits.
pub async fn a_snooze_frees_the_resource_key_at_once(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let ran = Arc::new(Mutex::new(Vec::new()));
    let log = ran.clone();
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |task: Task| {
                log.lock().expect("log").push(task.id.clone());
                async move {
                    if task.id == "first" {
                        HandlerOutcome::snooze(Duration::from_secs(3600))
                    } else {
                        HandlerOutcome::completed()
                    }
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "first").key("acct")).await;
    h.advance(Duration::from_millis(1));
    create(&h.manager, &Job::new(KIND, "second").key("acct")).await;
    h.drain(KIND).await;
    assert_eq!(*ran.lock().expect("log"), ["first", "second"]);
    assert_eq!(h.status("first").await, TaskStatus::Waiting);
    h.kit.assert_completed("second").await;
}

/// A group handler's snooze puts off every task of the group.
pub async fn a_group_handler_snoozes_its_whole_group(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let groups = Arc::new(AtomicU32::new(0));
    let seen = groups.clone();
    h.manager
        .register_dyn_group(
            KIND,
            group_handler_fn(move |_tasks: Vec<Task>| {
                seen.fetch_add(1, Ordering::SeqCst);
                async { HandlerOutcome::snooze(Duration::from_secs(60)) }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    for id in ["g1", "g2", "g3"] {
        create(&h.manager, &Job::new(KIND, id).key("cal")).await;
    }
    let report = h
        .manager
        .process_next(KIND)
        .await
        .expect("run")
        .expect("claimed");
    assert_eq!(report.claimed.len(), 3, "{report:?}");
    assert_eq!(groups.load(Ordering::SeqCst), 1);
    for id in ["g1", "g2", "g3"] {
        let task = h.task(id).await;
        assert_eq!((task.attempts, task.snoozes), (0, 1), "{id}");
        assert_eq!(
            task.wait_until,
            Some(h.clock.now() + TimeDelta::seconds(60)),
            "{id}"
        );
    }
}

/// A snooze to now or the past runs the task again at once; a snooze more
/// than 10 years ahead is refused and the attempt fails with the reason.
pub async fn a_snooze_to_the_past_runs_at_once_and_one_beyond_ten_years_fails(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let past = h.clock.now() - TimeDelta::days(1);
    let (calls, handler) = scripted(move |call| match call {
        1 => HandlerOutcome::snooze_until(past),
        2 => HandlerOutcome::snooze(Duration::from_secs(11 * 365 * 24 * 3600)),
        _ => HandlerOutcome::completed(),
    });
    h.manager
        .register_dyn(KIND, handler, HandlerOptions::default().no_retry())
        .expect("register");
    create(&h.manager, &Job::new(KIND, "s1")).await;
    h.manager.process_next(KIND).await.expect("run");
    let task = h.task("s1").await;
    assert_eq!(task.snoozes, 1);
    assert_eq!(task.status(h.clock.now()), TaskStatus::Pending);
    h.manager.process_next(KIND).await.expect("run");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "ran again at once");
    let task = h.kit.assert_failed("s1").await;
    assert_eq!(task.snoozes, 1, "the refused snooze is not stored");
    assert_eq!(task.errors.len(), 1);
    assert!(
        task.errors[0].error.contains("more than 10 years ahead"),
        "{:?}",
        task.errors
    );
}

/// A closure handler returning `Result` snoozes with a [`Snooze`] as its
/// error, and that is recorded as a snooze, not as a failure.
pub async fn a_snooze_returned_as_an_error_is_a_snooze(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |_task: Task| {
                let call = seen.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if call == 1 {
                        Err::<(), Box<dyn std::error::Error + Send + Sync>>(
                            Snooze::after(Duration::from_secs(5)).into(),
                        )
                    } else {
                        Ok(())
                    }
                }
            }),
            HandlerOptions::default().no_retry(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "s1")).await;
    h.kit.run_for(1, Duration::from_secs(5)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let task = h.kit.assert_completed("s1").await;
    assert_eq!((task.attempts, task.snoozes), (1, 1));
    assert!(task.errors.is_empty());
}

/// A task cancelled while its handler ran is not snoozed: it takes its
/// cancellation path at once and ends cancelled.
pub async fn a_snooze_after_a_cancel_ends_the_task_cancelled(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let cleanups = Arc::new(AtomicU32::new(0));
    let cleaned = cleanups.clone();
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |_task: Task| {
                let g = g.clone();
                async move {
                    g.notified().await;
                    HandlerOutcome::snooze(Duration::from_secs(3600))
                }
            }),
            HandlerOptions::default().cancellation_handler(handler_fn(move |_task: Task| {
                cleaned.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, std::io::Error>(()) }
            })),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "s1")).await;
    let run = h.start_running(KIND, "s1").await;
    h.manager.cancel("s1").await.expect("cancel");
    gate.notify_one();
    run.await.expect("join").expect("run");
    let task = h.task("s1").await;
    assert_eq!(task.status(h.clock.now()), TaskStatus::CancellationPending);
    assert_eq!(task.snoozes, 0);
    h.drain(KIND).await;
    assert_eq!(cleanups.load(Ordering::SeqCst), 1);
    h.kit.assert_cancelled("s1").await;
}

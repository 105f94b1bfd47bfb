//! Running handlers: retries, permanent failure, panics, time limits,
//! heartbeats, lease expiry, the current-task context.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oncetask_core::lifecycle::{self, LeaseGrant};
use oncetask_core::manager::{
    HandlerOptions, HandlerTimeout, NotStored, current_resource_key, current_task_id, handler_fn,
};
use oncetask_core::store::{Change, ClaimMode, ClaimRequest, Delete, Swap, SwapOutcome};
use oncetask_core::{Outcome, Store, Task, TaskStatus};
use tokio::sync::Notify;

use super::{ENV, Job, create, manual};
use crate::StoreFactory;

const KIND: &str = "charge";

/// Fails the first `failures` calls, then succeeds with the call number.
fn flaky(
    failures: u32,
) -> (
    Arc<AtomicU32>,
    impl oncetask_core::manager::Handler<oncetask_core::Task>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let handler = handler_fn(move |_task: Task| {
        let calls = seen.clone();
        async move {
            let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if call <= failures {
                Err(format!("gateway timeout #{call}"))
            } else {
                Ok(call)
            }
        }
    });
    (calls, handler)
}

/// The default policy retries after 1 s, then 2 s; the third attempt succeeds.
pub async fn failed_attempts_follow_the_default_backoff_schedule(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let (calls, handler) = flaky(2);
    h.manager
        .register_dyn(KIND, handler, HandlerOptions::default())
        .expect("register");
    create(&h.manager, &Job::new(KIND, "c1")).await;

    let report = h
        .manager
        .process_next(KIND)
        .await
        .expect("run")
        .expect("claimed");
    assert_eq!(
        report.outcomes[0].error.as_deref(),
        Some("gateway timeout #1")
    );
    assert_eq!(report.outcomes[0].status, Ok(TaskStatus::Waiting));
    assert!(
        h.manager.process_next(KIND).await.expect("run").is_none(),
        "backing off"
    );

    h.advance(Duration::from_millis(999));
    assert!(
        h.manager.process_next(KIND).await.expect("run").is_none(),
        "1 s not over"
    );
    h.advance(Duration::from_millis(1));
    h.drain(KIND).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let task = h.task("c1").await;
    assert_eq!(
        task.wait_until,
        Some(h.clock.now() + chrono::TimeDelta::seconds(2))
    );

    h.advance(Duration::from_secs(2));
    h.drain(KIND).await;
    let task = h.task("c1").await;
    assert_eq!(task.status(h.clock.now()), TaskStatus::Completed);
    assert_eq!(task.attempts, 3);
    assert_eq!(task.errors.len(), 2);
    assert_eq!(task.result, Some(serde_json::json!(3)));
}

/// After `max_attempts` failures the task is failed, with every error kept.
pub async fn a_task_fails_permanently_after_max_attempts(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let (calls, handler) = flaky(u32::MAX);
    h.manager
        .register_dyn(KIND, handler, HandlerOptions::default())
        .expect("register");
    create(&h.manager, &Job::new(KIND, "c1")).await;
    h.kit.run_for(5, Duration::from_secs(60)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "3 attempts in all");
    let task = h.kit.assert_failed("c1").await;
    assert_eq!(task.outcome, Some(Outcome::Failed));
    let errors: Vec<&str> = task.errors.iter().map(|e| e.error.as_str()).collect();
    assert_eq!(
        errors,
        [
            "gateway timeout #1",
            "gateway timeout #2",
            "gateway timeout #3"
        ]
    );
}

/// `no_retry` makes the first failure permanent.
pub async fn no_retry_fails_on_the_first_error(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let (_, handler) = flaky(u32::MAX);
    h.manager
        .register_dyn(KIND, handler, HandlerOptions::default().no_retry())
        .expect("register");
    create(&h.manager, &Job::new(KIND, "c1")).await;
    h.drain(KIND).await;
    assert_eq!(h.status("c1").await, TaskStatus::Failed);
}

/// A panicking handler fails its attempt with `panic: <message>`; the manager goes on.
pub async fn a_panicking_handler_becomes_a_task_error(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    h.manager
        .register_dyn(
            KIND,
            handler_fn(|task: Task| async move {
                if task.id == "boom" {
                    panic!("card reader exploded");
                }
                Ok::<_, std::io::Error>(())
            }),
            HandlerOptions::default().no_retry(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "boom")).await;
    create(&h.manager, &Job::new(KIND, "fine")).await;
    h.drain(KIND).await;
    let boom = h.task("boom").await;
    assert_eq!(boom.status(h.clock.now()), TaskStatus::Failed);
    assert_eq!(boom.errors[0].error, "panic: card reader exploded");
    assert_eq!(h.status("fine").await, TaskStatus::Completed);
}

/// A result nested deeper than any backend can read back fails the attempt
/// (stored, it would leave a completed task nobody can read). A result at
/// the limit is stored and read back, or, where the backend refuses it
/// (Firestore holds fewer levels), fails the attempt too: never is the task
/// left leased to run again.
pub async fn a_result_too_deep_to_read_back_fails_the_attempt(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    h.manager
        .register_dyn(
            KIND,
            handler_fn(|task: Task| async move {
                if task.id == "nul" {
                    // PostgreSQL's jsonb cannot hold U+0000.
                    return Ok(serde_json::json!({ "text": "a\u{0}b" }));
                }
                let levels = if task.id == "deep" {
                    oncetask_core::MAX_DATA_DEPTH + 1
                } else {
                    oncetask_core::MAX_DATA_DEPTH
                };
                let nested =
                    (1..levels).fold(serde_json::json!([]), |inner, _| serde_json::json!([inner]));
                Ok::<_, std::io::Error>(nested)
            }),
            HandlerOptions::default().no_retry(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "deep")).await;
    create(&h.manager, &Job::new(KIND, "at-limit")).await;
    create(&h.manager, &Job::new(KIND, "nul")).await;
    h.drain(KIND).await;
    let deep = h.task("deep").await;
    assert_eq!(deep.status(h.clock.now()), TaskStatus::Failed);
    assert!(
        deep.errors[0].error.contains("nested 101 levels deep"),
        "{:?}",
        deep.errors
    );
    for id in ["at-limit", "nul"] {
        let task = h.task(id).await;
        match task.status(h.clock.now()) {
            TaskStatus::Completed => assert!(task.result.is_some()),
            TaskStatus::Failed => assert!(
                task.errors[0]
                    .error
                    .starts_with("result cannot be stored: "),
                "{id}: {:?}",
                task.errors
            ),
            other => panic!("{id}: its result left the task {other}"),
        }
    }
    let nul = h.task("nul").await;
    if nul.status(h.clock.now()) == TaskStatus::Completed {
        assert_eq!(nul.result, Some(serde_json::json!({ "text": "a\u{0}b" })));
    }
}

/// An error message the store cannot hold (U+0000 on PostgreSQL) still
/// ends the attempt: the task fails, with the message or with one saying it
/// could not be stored, and is never left leased to run again.
pub async fn an_error_message_the_store_cannot_hold_still_fails_the_task(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    h.manager
        .register_dyn(
            KIND,
            handler_fn(|_task: Task| async move { Err::<(), _>("card\u{0}declined".to_owned()) }),
            HandlerOptions::default().no_retry(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "nul-error")).await;
    h.drain(KIND).await;
    let task = h.task("nul-error").await;
    assert_eq!(task.status(h.clock.now()), TaskStatus::Failed);
    let error = &task.errors[0].error;
    assert!(
        error == "card\u{0}declined" || error.starts_with("error cannot be stored: "),
        "{error:?}"
    );
}

/// A handler still running near the end of its lease is stopped and the
/// attempt fails, before another worker could take the task.
pub async fn a_handler_outliving_its_lease_is_timed_out(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    h.manager
        .register_dyn(
            KIND,
            handler_fn(|_task: Task| async move {
                std::future::pending::<()>().await;
                Ok::<_, std::io::Error>(())
            }),
            HandlerOptions::default()
                .lease_duration(Duration::from_secs(10))
                .no_retry(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "slow")).await;
    let run = h.start_running(KIND, "slow").await;
    // Lease 10 s, margin 1 s: the limit is 9 s after the claim.
    h.advance(Duration::from_secs(9));
    let report = run.await.expect("join").expect("run").expect("claimed");
    assert_eq!(
        report.outcomes[0].error.as_deref(),
        Some("handler timed out after 9s")
    );
    let task = h.task("slow").await;
    assert_eq!(task.status(h.clock.now()), TaskStatus::Failed);
    assert!(task.leased_until.is_none());
}

/// With a heartbeat, a long handler keeps its lease past the lease duration:
/// no other manager can claim the task meanwhile.
pub async fn a_heartbeat_keeps_a_long_handler_leased(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |_task: Task| {
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    Ok::<_, std::io::Error>("done")
                }
            }),
            HandlerOptions::default()
                .lease_duration(Duration::from_secs(10))
                .heartbeat(Duration::from_secs(3)),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "long")).await;
    let run = h.start_running(KIND, "long").await;
    let other = h.peer(ENV, false);
    other
        .register_dyn(
            KIND,
            handler_fn(|_t: Task| async { Ok::<_, std::io::Error>(()) }),
            HandlerOptions::default(),
        )
        .expect("register");
    for beat in 1..=10u32 {
        let before = h.task("long").await.version;
        h.advance(Duration::from_secs(3));
        super::eventually("the heartbeat extends the lease", || async {
            h.task("long").await.version > before
        })
        .await;
        assert!(
            other.process_next(KIND).await.expect("claim").is_none(),
            "beat {beat}: the task must stay leased"
        );
    }
    release.notify_one();
    let report = run.await.expect("join").expect("run").expect("claimed");
    assert_eq!(report.outcomes[0].status, Ok(TaskStatus::Completed));
    assert_eq!(h.task("long").await.attempts, 1);
}

/// A worker that crashed holds its lease until expiry; then the task is
/// claimed again (one more attempt) and the crashed worker's late outcome is
/// fenced off.
pub async fn an_expired_lease_is_reclaimed_and_the_old_worker_is_fenced(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let (calls, handler) = flaky(0);
    h.manager
        .register_dyn(
            KIND,
            handler,
            HandlerOptions::default().lease_duration(Duration::from_secs(60)),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "c1")).await;
    // The "crashed" worker: a claim made directly on the store.
    let now = h.clock.now();
    let grant = LeaseGrant::new(now, Duration::from_secs(60));
    let crashed = h
        .store
        .claim(&ClaimRequest {
            env: ENV.into(),
            kind: KIND.into(),
            now,
            grant: grant.clone(),
            mode: ClaimMode::Single { limit: 1 },
            order: oncetask_core::store::ClaimOrder::Priority,
        })
        .await
        .expect("claim")
        .tasks
        .pop()
        .expect("claimed");
    assert!(
        h.manager.process_next(KIND).await.expect("run").is_none(),
        "still leased"
    );
    h.advance(Duration::from_secs(60));
    h.drain(KIND).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let task = h.task("c1").await;
    assert_eq!(task.status(h.clock.now()), TaskStatus::Completed);
    assert_eq!(task.attempts, 2);
    // The crashed worker wakes up and tries to record a failure.
    let late = lifecycle::succeed(&task, &grant.token, h.clock.now(), None);
    assert!(late.is_err(), "the core refuses a stale token");
    let blind = Swap::new(
        &crashed,
        Change::Release,
        &lifecycle::release(&crashed, &grant.token).expect("token of its own claim"),
    );
    let outcome = h.store.swap(&[blind]).await.expect("swap");
    assert!(
        matches!(outcome.as_slice(), [SwapOutcome::Conflict]),
        "{outcome:?}"
    );
    assert_eq!(h.task("c1").await, task, "nothing changed");
}

/// A run whose task was deleted, or taken over by another worker, while
/// its handler ran reports why its outcome was not stored.
pub async fn a_run_report_says_why_an_outcome_was_not_stored(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let store: Arc<dyn Store> = Arc::new(h.store.clone());
    let clock = h.clock.clone();
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |task: Task| {
                let (store, clock) = (store.clone(), clock.clone());
                async move {
                    if task.id == "deleted" {
                        store.delete(&[Delete::any(task.id.clone())]).await?;
                    } else {
                        // Another worker, after this run's lease expired.
                        let later = clock.now() + chrono::TimeDelta::seconds(61);
                        let taken = store
                            .claim(&ClaimRequest {
                                env: ENV.into(),
                                kind: KIND.into(),
                                now: later,
                                grant: LeaseGrant::new(later, Duration::from_secs(60)),
                                mode: ClaimMode::Single { limit: 1 },
                                order: oncetask_core::store::ClaimOrder::Priority,
                            })
                            .await?;
                        assert_eq!(taken.tasks.len(), 1, "the other worker took the task");
                    }
                    Ok::<_, oncetask_core::StoreError>(())
                }
            }),
            HandlerOptions::default().lease_duration(Duration::from_secs(60)),
        )
        .expect("register");
    for (id, why) in [
        ("deleted", NotStored::Deleted),
        ("taken", NotStored::LeaseLost),
    ] {
        create(&h.manager, &Job::new(KIND, id)).await;
        let report = h
            .manager
            .process_next(KIND)
            .await
            .expect("run")
            .expect("claimed");
        assert_eq!(report.outcomes.len(), 1, "{report:?}");
        assert_eq!(report.outcomes[0].status, Err(why), "{id}: {report:?}");
    }
    assert!(h.manager.get_task("deleted").await.expect("get").is_none());
    let taken = h.task("taken").await;
    assert_eq!(taken.attempts, 2, "the other worker's claim stands");
    assert!(!taken.is_done(), "the fenced-off outcome wrote nothing");
}

/// Handler code sees its task id and resource key.
pub async fn handlers_see_their_task_id_and_resource_key(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |_task: Task| {
                let sink = sink.clone();
                async move {
                    sink.lock()
                        .expect("lock")
                        .push((current_task_id(), current_resource_key()));
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "plain")).await;
    h.drain(KIND).await;
    create(&h.manager, &Job::new(KIND, "keyed").key("cal-7")).await;
    h.drain(KIND).await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![
            (Some("plain".to_owned()), None),
            (Some("keyed".to_owned()), Some("cal-7".to_owned())),
        ]
    );
    assert_eq!(current_task_id(), None, "nothing outside a handler");
}

/// A handler's explicit time limit applies whatever the lease.
pub async fn an_explicit_timeout_overrides_the_lease_derived_one(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    h.manager
        .register_dyn(
            KIND,
            handler_fn(|_task: Task| async move {
                std::future::pending::<()>().await;
                Ok::<_, std::io::Error>(())
            }),
            HandlerOptions::default()
                .timeout(HandlerTimeout::After(Duration::from_secs(2)))
                .no_retry(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "slow")).await;
    let run = h.start_running(KIND, "slow").await;
    h.advance(Duration::from_secs(2));
    let report = run.await.expect("join").expect("run").expect("claimed");
    assert_eq!(
        report.outcomes[0].error.as_deref(),
        Some("handler timed out after 2s")
    );
}

/// Times keep milliseconds (Go truncated to seconds, W3): a 250 ms backoff
/// is neither collapsed nor rounded up.
pub async fn a_sub_second_backoff_is_kept_to_the_millisecond(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let (calls, handler) = flaky(1);
    h.manager
        .register_dyn(
            KIND,
            handler,
            HandlerOptions::default().retry_policy(oncetask_core::FixedDelay {
                max_attempts: 0,
                delay: Duration::from_millis(250),
            }),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "c1")).await;
    h.drain(KIND).await;
    let waiting = h.task("c1").await;
    assert_eq!(
        waiting.wait_until,
        Some(super::start() + chrono::TimeDelta::milliseconds(250))
    );
    h.advance(Duration::from_millis(249));
    assert!(h.manager.process_next(KIND).await.expect("run").is_none());
    h.advance(Duration::from_millis(1));
    h.drain(KIND).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(h.status("c1").await, TaskStatus::Completed);
}

/// The error history keeps only the most recent errors (W24).
pub async fn the_error_history_is_capped(factory: &impl StoreFactory) {
    let h = super::manual_with(factory, |b| b.error_history_limit(2)).await;
    let (_, handler) = flaky(u32::MAX);
    h.manager
        .register_dyn(
            KIND,
            handler,
            HandlerOptions::default().retry_policy(oncetask_core::FixedDelay {
                max_attempts: 4,
                delay: Duration::ZERO,
            }),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "c1")).await;
    h.drain(KIND).await;
    let task = h.task("c1").await;
    assert_eq!(task.status(h.clock.now()), TaskStatus::Failed);
    assert_eq!(task.attempts, 4);
    let errors: Vec<&str> = task.errors.iter().map(|e| e.error.as_str()).collect();
    assert_eq!(errors, ["gateway timeout #3", "gateway timeout #4"]);
}

/// A stored document that cannot be decoded is skipped; the other tasks of
/// its kind still run (Go's poison pill, W7).
pub async fn an_undecodable_task_does_not_stop_its_kind(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let (calls, handler) = flaky(0);
    h.manager
        .register_dyn(KIND, handler, HandlerOptions::default())
        .expect("register");
    if !h.insert_undecodable(factory, "poison", KIND).await {
        return;
    }
    create(&h.manager, &Job::new(KIND, "good")).await;
    h.drain(KIND).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(h.status("good").await, TaskStatus::Completed);
    let err = h.manager.get_task("poison").await;
    assert!(
        matches!(
            err,
            Err(oncetask_core::Error::Store(
                oncetask_core::StoreError::Undecodable { .. }
            ))
        ),
        "{err:?}"
    );
}

/// A claim that meets only an undecodable document still reports it, once:
/// the next call says nothing is ready, so a loop until `None` ends.
pub async fn an_undecodable_document_alone_is_reported_once(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let (calls, handler) = flaky(0);
    h.manager
        .register_dyn(KIND, handler, HandlerOptions::default())
        .expect("register");
    if !h.insert_undecodable(factory, "poison", KIND).await {
        return;
    }
    let report = h
        .manager
        .process_next(KIND)
        .await
        .expect("run")
        .expect("the bad document is reported");
    assert!(report.claimed.is_empty(), "{report:?}");
    let ids: Vec<&str> = report.undecodable.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["poison"]);
    assert!(!report.undecodable[0].reason.is_empty());
    let again = h.manager.process_next(KIND).await.expect("run");
    assert!(again.is_none(), "reported once: {again:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A retry policy that panics does not take the worker down: the failure is
/// recorded and the task retried later.
pub async fn a_panicking_retry_policy_still_records_the_failure(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let (_, handler) = flaky(u32::MAX);
    h.manager
        .register_dyn(
            KIND,
            handler,
            HandlerOptions::default().retry_policy(oncetask_core::CustomRetry::new(|_, _| {
                // A realistic mistake: a negative delay panics in std.
                Some(Duration::from_secs_f64(-1.0))
            })),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "c1")).await;
    let report = h
        .manager
        .process_next(KIND)
        .await
        .expect("run")
        .expect("claimed");
    assert_eq!(report.outcomes[0].status, Ok(TaskStatus::Waiting));
    let task = h.task("c1").await;
    assert_eq!(task.errors.len(), 1);
    assert!(task.leased_until.is_none(), "the lease was released");
}

/// In a group claim, a slow cancellation handler does not eat the lease of
/// the tasks that run after it (Go W12): their lease and time limit are
/// renewed before the main handler starts.
pub async fn a_slow_cancellation_handler_does_not_starve_the_rest_of_its_group(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let sink = ran.clone();
    let clock = h.clock.clone();
    h.manager
        .register_dyn_group(
            KIND,
            oncetask_core::manager::group_handler_fn(move |tasks: Vec<Task>| {
                let (sink, clock) = (sink.clone(), clock.clone());
                async move {
                    sink.lock()
                        .expect("lock")
                        .extend(tasks.iter().map(|t| t.id.clone()));
                    // The main work takes 5 s.
                    let done = clock.now() + chrono::TimeDelta::seconds(5);
                    oncetask_core::Clock::sleep_until(&clock, done).await;
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default()
                .lease_duration(Duration::from_secs(10))
                .cancellation_handler(handler_fn(move |_t: Task| {
                    let g = g.clone();
                    async move {
                        g.notified().await;
                        Ok::<_, std::io::Error>(())
                    }
                })),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "doomed").key("cal")).await;
    create(&h.manager, &Job::new(KIND, "normal").key("cal")).await;
    h.manager.cancel("doomed").await.expect("cancel");
    let run = h.start_running(KIND, "normal").await; // claimed in the same group
    // The cleanup takes 8 of the 10 lease seconds (time limit 9 s).
    h.advance(Duration::from_secs(8));
    gate.notify_one();
    super::eventually("the main handler started", || async {
        !ran.lock().expect("lock").is_empty()
    })
    .await;
    // The main handler got a fresh lease when it started (8 s + 10 s), so
    // it may run past the first lease's end.
    assert_eq!(
        h.task("normal").await.leased_until,
        Some(super::start() + chrono::TimeDelta::seconds(18))
    );
    h.advance(Duration::from_secs(5));
    let report = run.await.expect("join").expect("run").expect("claimed");
    assert_eq!(*ran.lock().expect("lock"), ["normal"]);
    let normal = report.outcomes.iter().find(|o| o.task_id == "normal");
    assert_eq!(
        normal.map(|o| o.status.clone()),
        Some(Ok(TaskStatus::Completed)),
        "{report:?}"
    );
    assert_eq!(h.status("doomed").await, TaskStatus::Cancelled);
}

/// A permanent error fails the task on its first attempt under every
/// built-in retry policy, even ones that would retry for ever, and even a
/// custom policy that always says "retry at once".
pub async fn a_permanent_error_fails_at_once_under_every_retry_policy(factory: &impl StoreFactory) {
    let policies: Vec<(&str, HandlerOptions)> = vec![
        ("default backoff", HandlerOptions::default()),
        (
            "unlimited backoff",
            HandlerOptions::default().retry_policy(oncetask_core::ExponentialBackoff {
                max_attempts: 0,
                ..oncetask_core::ExponentialBackoff::default()
            }),
        ),
        (
            "fixed delay",
            HandlerOptions::default().retry_policy(oncetask_core::FixedDelay {
                max_attempts: 10,
                delay: Duration::ZERO,
            }),
        ),
        ("no retry", HandlerOptions::default().no_retry()),
        (
            "custom, always at once",
            HandlerOptions::default()
                .retry_policy(oncetask_core::CustomRetry::new(|_, _| Some(Duration::ZERO))),
        ),
    ];
    for (name, options) in policies {
        let h = manual(factory).await;
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        h.manager
            .register_dyn(
                KIND,
                handler_fn(move |_task: Task| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    async {
                        Err::<(), _>(oncetask_core::HandlerError::permanent(
                            "the card was reported stolen",
                        ))
                    }
                }),
                options,
            )
            .expect("register");
        create(&h.manager, &Job::new(KIND, "c1")).await;
        h.kit.run_for(3, Duration::from_secs(3600)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{name}: one attempt");
        let task = h.kit.assert_failed("c1").await;
        assert_eq!(task.outcome, Some(Outcome::Failed), "{name}");
        assert_eq!(
            task.errors
                .iter()
                .map(|e| e.error.as_str())
                .collect::<Vec<_>>(),
            ["the card was reported stolen"],
            "{name}"
        );
    }
}

/// A cancellation handler's permanent error ends the task cancelled at
/// once, whatever the cancellation retry policy.
pub async fn a_permanent_error_of_a_cancellation_handler_ends_the_task_at_once(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let cleanups = Arc::new(AtomicU32::new(0));
    let seen = cleanups.clone();
    let (_, main) = flaky(0);
    h.manager
        .register_dyn(
            KIND,
            main,
            HandlerOptions::default()
                .cancellation_handler(handler_fn(move |_task: Task| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    async { Err::<(), _>(oncetask_core::HandlerError::permanent("outbox gone")) }
                }))
                .cancellation_retry_policy(oncetask_core::FixedDelay {
                    max_attempts: 0,
                    delay: Duration::ZERO,
                }),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "c1")).await;
    h.manager.cancel("c1").await.expect("cancel");
    h.kit.run_for(3, Duration::from_secs(60)).await;
    assert_eq!(cleanups.load(Ordering::SeqCst), 1);
    let task = h.kit.assert_cancelled("c1").await;
    assert_eq!(task.errors.len(), 1);
    assert_eq!(task.errors[0].error, "outbox gone");
}

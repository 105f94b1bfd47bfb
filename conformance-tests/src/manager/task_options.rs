//! Options a task carries itself, set at create: its own attempt limit and
//! its claim priority (which an operator may change while it is not done),
//! and the manager's rule that keeps low priorities from starving.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oncetask_core::manager::{HandlerOptions, handler_fn};
use oncetask_core::{Error, Task, TaskStatus};

use super::{Job, create, manual};
use crate::StoreFactory;

const KIND: &str = "sync_account";

/// Registers a handler of [`KIND`] that always fails; returns its call count.
fn always_failing(manager: &oncetask_core::Manager, options: HandlerOptions) -> Arc<AtomicU32> {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    manager
        .register_dyn(
            KIND,
            handler_fn(move |_task: Task| {
                seen.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>("upstream down") }
            }),
            options,
        )
        .expect("register");
    calls
}

/// A task's own max attempts overrides the handler's retry policy in both
/// directions: fewer attempts than the policy allows, and more than
/// `no_retry` allows. The policy still sets the delays.
pub async fn a_tasks_own_max_attempts_overrides_the_handlers_policy(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let calls = always_failing(
        &h.manager,
        HandlerOptions::default().retry_policy(oncetask_core::FixedDelay {
            max_attempts: 10,
            delay: Duration::from_secs(1),
        }),
    );
    create(&h.manager, &Job::new(KIND, "fewer").max_attempts(2)).await;
    h.kit.run_for(5, Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let task = h.kit.assert_failed("fewer").await;
    assert_eq!((task.attempts, task.max_attempts), (2, Some(2)));

    let h = manual(factory).await;
    let calls = always_failing(&h.manager, HandlerOptions::default().no_retry());
    create(&h.manager, &Job::new(KIND, "more").max_attempts(3)).await;
    h.kit.run_for(10, Duration::from_secs(60)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "3 attempts under no_retry");
    h.kit.assert_failed("more").await;
}

/// A priority outside the documented range and max attempts of 0 are typed
/// errors, and nothing is stored.
pub async fn bad_task_options_are_typed_errors_that_store_nothing(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    super::register_ok(&h.manager, KIND, HandlerOptions::default());
    let too_high = Job::new(KIND, "too-high").priority(11);
    assert!(matches!(
        h.manager.create(&too_high).await,
        Err(Error::InvalidPriority { priority: 11, .. })
    ));
    let too_low = Job::new(KIND, "too-low").priority(-11);
    assert!(matches!(
        h.manager.create(&too_low).await,
        Err(Error::InvalidPriority { priority: -11, .. })
    ));
    let never = Job::new(KIND, "never").max_attempts(0);
    assert!(matches!(
        h.manager.create(&never).await,
        Err(Error::InvalidMaxAttempts { .. })
    ));
    for id in ["too-high", "too-low", "never"] {
        assert!(
            h.manager.get_task(id).await.expect("get").is_none(),
            "{id} was stored"
        );
    }
    create(&h.manager, &Job::new(KIND, "p").priority(3)).await;
    assert!(matches!(
        h.manager.reprioritize_many(&["p".to_owned()], 11).await,
        Err(Error::InvalidPriority { priority: 11, .. })
    ));
    assert_eq!(
        h.task("p").await.priority,
        3,
        "a refused change changes nothing"
    );
}

/// Priority and max attempts are stored as created; an operator changes
/// the priority of tasks that are not done, and done ones are skipped.
pub async fn task_options_are_stored_and_an_operator_can_reprioritize(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    super::register_ok(&h.manager, KIND, HandlerOptions::default());
    create(
        &h.manager,
        &Job::new(KIND, "urgent").priority(10).max_attempts(4),
    )
    .await;
    create(&h.manager, &Job::new(KIND, "later").priority(-10)).await;
    create(&h.manager, &Job::new(KIND, "plain")).await;
    let urgent = h.task("urgent").await;
    assert_eq!((urgent.priority, urgent.max_attempts), (10, Some(4)));
    let later = h.task("later").await;
    assert_eq!((later.priority, later.max_attempts), (-10, None));
    let plain = h.task("plain").await;
    assert_eq!(
        (plain.priority, plain.max_attempts, plain.snoozes),
        (0, None, 0)
    );

    // "plain" runs and is done; the two others wait.
    h.manager.cancel("urgent").await.expect("cancel");
    let report = h
        .manager
        .reprioritize_many(
            &[
                "later".to_owned(),
                "urgent".to_owned(),
                "missing".to_owned(),
            ],
            5,
        )
        .await
        .expect("reprioritize");
    let mut changed = report.succeeded.clone();
    changed.sort();
    assert_eq!(changed, ["later", "urgent"]);
    assert_eq!(report.not_found, ["missing"]);
    assert_eq!(h.task("later").await.priority, 5);
    assert_eq!(h.task("urgent").await.priority, 5);

    h.drain(KIND).await;
    assert_eq!(h.status("plain").await, TaskStatus::Completed);
    let report = h
        .manager
        .reprioritize_many(&["plain".to_owned()], 1)
        .await
        .expect("reprioritize");
    assert_eq!(report.skipped, ["plain"], "a done task keeps its priority");
    assert_eq!(h.task("plain").await.priority, 0);
}

/// Registers a handler of [`KIND`] (one task per claim) that logs the ids
/// it runs.
fn logging(manager: &oncetask_core::Manager, options: HandlerOptions) -> Arc<Mutex<Vec<String>>> {
    let ran = Arc::new(Mutex::new(Vec::new()));
    let log = ran.clone();
    manager
        .register_dyn(
            KIND,
            handler_fn(move |task: Task| {
                log.lock().expect("log").push(task.id);
                async { Ok::<_, std::io::Error>(()) }
            }),
            options.claim_ahead(0),
        )
        .expect("register");
    ran
}

/// The manager runs higher priorities first.
pub async fn higher_priority_tasks_run_first(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let ran = logging(&h.manager, HandlerOptions::default());
    create(&h.manager, &Job::new(KIND, "plain")).await;
    h.advance(Duration::from_millis(1));
    create(&h.manager, &Job::new(KIND, "low").priority(-5)).await;
    h.advance(Duration::from_millis(1));
    create(&h.manager, &Job::new(KIND, "urgent").priority(8)).await;
    h.drain(KIND).await;
    assert_eq!(*ran.lock().expect("log"), ["urgent", "plain", "low"]);
}

/// Under a stream of high-priority tasks that never lets up, a priority-0
/// task still starts within 10 claims (the default
/// `oldest_claim_every`); with `oldest_claim_every(0)` it waits for the
/// stream to end.
pub async fn a_low_priority_task_starts_within_n_claims_under_a_high_priority_stream(
    factory: &impl StoreFactory,
) {
    for (every, starts_by) in [(None, Some(10)), (Some(3), Some(3)), (Some(0), None)] {
        let h = manual(factory).await;
        let options = match every {
            Some(n) => HandlerOptions::default().oldest_claim_every(n),
            None => HandlerOptions::default(),
        };
        let ran = logging(&h.manager, options);
        create(&h.manager, &Job::new(KIND, "patient")).await;
        let mut started_at = None;
        for claim in 1..=20 {
            // Always a newer high-priority task ready than the claim takes.
            h.advance(Duration::from_millis(1));
            create(
                &h.manager,
                &Job::new(KIND, &format!("urgent-{claim}")).priority(5),
            )
            .await;
            h.manager.process_next(KIND).await.expect("run");
            if ran.lock().expect("log").iter().any(|id| id == "patient") {
                started_at = Some(claim);
                break;
            }
        }
        let ran = ran.lock().expect("log").clone();
        assert_ne!(
            ran.first().map(String::as_str),
            Some("patient"),
            "{every:?}: {ran:?}"
        );
        match starts_by {
            Some(n) => assert!(
                started_at.is_some_and(|at| at <= n),
                "{every:?}: started at claim {started_at:?}, not within {n}: {ran:?}"
            ),
            None => assert_eq!(started_at, None, "{every:?}: strict priority: {ran:?}"),
        }
    }
}

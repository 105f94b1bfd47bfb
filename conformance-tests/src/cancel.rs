//! Cancellation at store level: `lifecycle::cancel` + version-checked swap,
//! re-read on conflict (docs/semantics.md S8; W19, W23).

use oncetask_core::lifecycle::{self, HandlerPath, Rejection};
use oncetask_core::{HandlerError, Outcome, TaskStatus};

use crate::StoreFactory;
use crate::support::*;

/// Cancelling a pending task flags it, stamps `cancelled_at` and makes it
/// due at once: status cancellation pending.
pub async fn cancelling_a_pending_task_makes_it_cancellation_pending(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let task = TaskBuilder::new("a").build();
    seed(&store, vec![task.clone()]).await;
    let cancelled = apply(&store, "a", |t| lifecycle::cancel(t, at(5)))
        .await
        .expect("a pending task can be cancelled");
    let stored = get_existing(&store, "a").await;
    assert_eq!(stored, cancelled);
    assert!(stored.is_cancelled);
    assert_eq!(stored.cancelled_at, Some(at(5)));
    assert_eq!(stored.version, task.version + 1);
    assert_eq!(stored.status(at(5)), TaskStatus::CancellationPending);
}

/// A waiting task that is cancelled is ready at once: its cancellation path
/// need not wait for the original schedule.
pub async fn cancelling_a_waiting_task_makes_it_ready_at_once(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![TaskBuilder::new("a").wait_until(at(3600)).build()],
    )
    .await;
    apply(&store, "a", |t| lifecycle::cancel(t, at(0)))
        .await
        .expect("cancel");
    assert_eq!(get_existing(&store, "a").await.wait_until, None);
    claim_one(&store, at(0), "a").await;
}

/// Cancel of a leased task keeps the lease: the running handler finishes,
/// nobody else claims the task before the lease ends.
pub async fn cancel_while_leased_keeps_the_lease(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let held = claim_one(&store, at(0), "a").await;
    let cancelled = apply(&store, "a", |t| lifecycle::cancel(t, at(10)))
        .await
        .expect("a leased task can be cancelled");
    assert_eq!(cancelled.leased_until, held.leased_until);
    assert_eq!(cancelled.lease_token, held.lease_token);
    assert_eq!(get(&store, "a").await, Some(cancelled));
    assert!(claim(&store, at(10), 10).await.is_empty());
    let again = claim_one(&store, after(at(0), LEASE), "a").await;
    assert!(again.is_cancelled);
}

/// A claimed cancelled task whose cancellation handler succeeds ends
/// cancelled; a failing handler is retried by the cancellation policy on
/// its own attempt counter (W23), and ends cancelled when it gives up.
pub async fn cancelled_task_finished_by_its_cancellation_handler_is_cancelled(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("ok").created_at(at(-10)).build(),
            TaskBuilder::new("bad").build(),
        ],
    )
    .await;
    for id in ["ok", "bad"] {
        apply(&store, id, |t| lifecycle::cancel(t, at(0)))
            .await
            .expect("cancel");
    }
    let ok = claim_one(&store, at(1), "ok").await;
    complete(&store, &ok, at(2), result(1))
        .await
        .expect("the holder completes");
    let stored = get_existing(&store, "ok").await;
    assert_eq!(stored.outcome, Some(Outcome::Cancelled));
    assert_eq!(stored.status(at(2)), TaskStatus::Cancelled);

    let mut now = at(1);
    for round in 1..=2 {
        let held = claim_one(&store, now, "bad").await;
        assert_eq!(held.cancellation_attempts, round);
        let next = lifecycle::fail(
            &held,
            &token(&held),
            now,
            &HandlerError::msg("cleanup failed"),
            HandlerPath::Cancellation,
            policy(),
        )
        .expect("the holder's failure applies");
        assert_eq!(swap(&store, &held, next.clone()).await, Swapped::Applied);
        now = next.wait_until.unwrap_or(now);
    }
    let stored = get_existing(&store, "bad").await;
    assert_eq!(stored.status(now), TaskStatus::Cancelled);
    assert_eq!(stored.errors.len(), 2);
    assert!(claim(&store, at(86_400), 10).await.is_empty());
}

/// S8.6: a task cancelled while its main handler runs ends cancelled when
/// that handler succeeds, keeping the result. The worker's first swap
/// conflicts (the cancel moved the version), it re-reads and re-applies.
pub async fn success_of_a_task_cancelled_while_running_ends_cancelled_with_its_result(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let held = claim_one(&store, at(0), "a").await;
    apply(&store, "a", |t| lifecycle::cancel(t, at(5)))
        .await
        .expect("cancel");
    let first_try = lifecycle::succeed(&held, &token(&held), at(6), Some(result(3)))
        .expect("from the worker's copy");
    assert_eq!(swap(&store, &held, first_try).await, Swapped::Conflict);
    let done = complete(&store, &held, at(6), result(3))
        .await
        .expect("the lease is still the worker's");
    assert_eq!(done.outcome, Some(Outcome::Cancelled));
    assert_eq!(done.result, Some(result(3)));
    assert_eq!(get(&store, "a").await, Some(done));
}

/// A done task cannot be cancelled; nothing is written.
pub async fn cancelling_a_done_task_is_not_applicable_and_writes_nothing(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let held = claim_one(&store, at(0), "a").await;
    let done = complete(&store, &held, at(1), result(1))
        .await
        .expect("the holder completes");
    assert_eq!(
        apply(&store, "a", |t| lifecycle::cancel(t, at(2))).await,
        Err(Rejection::NotApplicable)
    );
    assert_eq!(get(&store, "a").await, Some(done));
}

/// Cancel is idempotent: the second cancel does not apply and keeps the
/// first `cancelled_at`.
pub async fn cancelling_twice_is_not_applicable(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let first = apply(&store, "a", |t| lifecycle::cancel(t, at(1)))
        .await
        .expect("cancel");
    assert_eq!(
        apply(&store, "a", |t| lifecycle::cancel(t, at(2))).await,
        Err(Rejection::NotApplicable)
    );
    assert_eq!(get(&store, "a").await, Some(first));
}

/// W19: a cancel computed from a read taken before the task completed
/// conflicts; recomputed from the fresh (completed) task it does not apply,
/// so a completed task never turns cancelled.
pub async fn cancel_racing_a_completion_conflicts_and_never_turns_completed_into_cancelled(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let held = claim_one(&store, at(0), "a").await;

    let read_by_canceller = get_existing(&store, "a").await;
    let cancel = lifecycle::cancel(&read_by_canceller, at(5)).expect("leased: cancellable");
    let done = complete(&store, &held, at(5), result(1))
        .await
        .expect("the worker completes first");
    assert_eq!(
        swap(&store, &read_by_canceller, cancel).await,
        Swapped::Conflict
    );
    let fresh = get_existing(&store, "a").await;
    assert_eq!(
        lifecycle::cancel(&fresh, at(5)),
        Err(Rejection::NotApplicable)
    );
    assert_eq!(fresh, done);
    assert_eq!(fresh.status(at(5)), TaskStatus::Completed);
}

//! Reset at store level: `lifecycle::reset` + version-checked swap
//! (docs/semantics.md S10; W1).

use oncetask_core::lifecycle::{self, HandlerPath, Rejection};
use oncetask_core::{HandlerError, Outcome, Store, Task, TaskStatus};
use serde_json::json;

use crate::StoreFactory;
use crate::support::*;

/// Brings the seeded, ready task `id` to a terminal state with `outcome`
/// through a claim and the holder's swap; returns it as stored.
async fn finish<S: Store>(store: &S, id: &str, outcome: Outcome) -> Task {
    if outcome == Outcome::Cancelled {
        apply(store, id, |t| lifecycle::cancel(t, at(0)))
            .await
            .expect("cancel");
    }
    let held = claim_one(store, at(0), id).await;
    let tok = token(&held);
    let next = match outcome {
        Outcome::Failed => lifecycle::fail(
            &held,
            &tok,
            at(1),
            &HandlerError::msg("boom"),
            HandlerPath::Main,
            policy_with(&NO_RETRY),
        ),
        _ => lifecycle::succeed(&held, &tok, at(1), Some(result(1))),
    }
    .expect("the holder's outcome applies");
    assert_eq!(swap(store, &held, next.clone()).await, Swapped::Applied);
    assert_eq!(next.outcome, Some(outcome));
    next
}

/// Completed, failed and cancelled tasks reset to pending with attempts,
/// errors, result, outcome, lease and cancellation cleared; they are
/// claimable at once and count from attempt 1 again.
pub async fn reset_puts_each_terminal_status_back_to_pending_with_history_cleared(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    for (id, outcome) in [
        ("completed", Outcome::Completed),
        ("failed", Outcome::Failed),
        ("cancelled", Outcome::Cancelled),
    ] {
        seed(&store, vec![TaskBuilder::new(id).build()]).await;
        finish(&store, id, outcome).await;
        let reset = apply(&store, id, lifecycle::reset)
            .await
            .expect("a terminal task can be reset");
        let stored = get_existing(&store, id).await;
        assert_eq!(stored, reset);
        assert_eq!(stored.status(at(2)), TaskStatus::Pending, "{id}");
        assert_eq!(
            (stored.attempts, stored.cancellation_attempts),
            (0, 0),
            "{id}"
        );
        assert!(stored.errors.is_empty(), "{id}");
        assert_eq!(stored.done_at, None, "{id}");
        assert_eq!((stored.leased_until, stored.lease_token), (None, None));
        assert_eq!(stored.wait_until, None, "{id}");
        assert!(
            !stored.is_cancelled && stored.cancelled_at.is_none(),
            "{id}"
        );
        assert_eq!((stored.result, stored.outcome), (None, None), "{id}");
        let again = claim_one(&store, at(2), id).await;
        assert_eq!(again.attempts, 1, "{id}");
    }
}

/// Reset keeps id, kind, env, payload, key, creation time and the
/// occurrence fields.
pub async fn reset_keeps_structural_fields(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let mut task = TaskBuilder::new("gen_occ_2025-01-06T09:00:00Z")
        .key("K")
        .created_at(at(-50))
        .data("payload", json!({"x": [1, 2]}))
        .build();
    task.parent_recurrence_id = Some("gen".to_owned());
    task.occurrence_timestamp = Some(at(3600));
    seed(&store, vec![task.clone()]).await;
    finish(&store, &task.id, Outcome::Completed).await;
    let reset = apply(&store, &task.id, lifecycle::reset)
        .await
        .expect("reset");
    assert_eq!(
        (
            &reset.id,
            &reset.kind,
            &reset.env,
            &reset.data,
            &reset.resource_key,
            reset.created_at,
            &reset.parent_recurrence_id,
            reset.occurrence_timestamp
        ),
        (
            &task.id,
            &task.kind,
            &task.env,
            &task.data,
            &task.resource_key,
            task.created_at,
            &task.parent_recurrence_id,
            task.occurrence_timestamp
        )
    );
    assert_eq!(get(&store, &task.id).await, Some(reset));
}

/// Pending, waiting, leased and cancellation-pending tasks are not reset;
/// nothing is written.
pub async fn reset_of_a_non_terminal_task_is_not_applicable(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("pending").build(),
            TaskBuilder::new("waiting").wait_until(at(600)).build(),
            TaskBuilder::new("leased").build(),
            TaskBuilder::new("cancelling").wait_until(at(600)).build(),
        ],
    )
    .await;
    claim_one(&store, at(0), "leased").await;
    apply(&store, "cancelling", |t| lifecycle::cancel(t, at(0)))
        .await
        .expect("cancel");
    for id in ["pending", "waiting", "leased", "cancelling"] {
        let before = get_existing(&store, id).await;
        assert_eq!(
            apply(&store, id, lifecycle::reset).await,
            Err(Rejection::NotApplicable),
            "{id}"
        );
        assert_eq!(get(&store, id).await, Some(before), "{id}");
    }
}

/// Reset is idempotent: the second reset finds a pending task and does not apply.
pub async fn resetting_twice_is_not_applicable_the_second_time(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    finish(&store, "a", Outcome::Completed).await;
    let first = apply(&store, "a", lifecycle::reset).await.expect("reset");
    assert_eq!(
        apply(&store, "a", lifecycle::reset).await,
        Err(Rejection::NotApplicable)
    );
    assert_eq!(get(&store, "a").await, Some(first));
}

/// W1: a worker whose lease expired cannot complete the task after another
/// worker finished it and the user reset it (Go's stale completion finished
/// the reset task).
pub async fn a_stale_worker_cannot_complete_a_task_reset_after_its_lease_was_lost(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let worker_a = claim_one(&store, at(0), "a").await;
    let worker_b = claim_one(&store, after(at(0), LEASE), "a").await;
    complete(&store, &worker_b, at(301), result(2))
        .await
        .expect("B completes");
    let reset = apply(&store, "a", lifecycle::reset).await.expect("reset");
    assert_eq!(
        complete(&store, &worker_a, at(302), result(1)).await,
        None,
        "A's lease was lost"
    );
    assert_eq!(get(&store, "a").await, Some(reset));
}

//! Outcomes written with version-checked swaps: success, failure, release,
//! lease extension, and the fence against stale workers (docs/semantics.md S5.6,
//! S7.10, S7.11; W1, W4, W11).

use oncetask_core::lifecycle::{self, HandlerPath, Rejection};
use oncetask_core::task::TaskParts;
use oncetask_core::{HandlerError, Outcome, Task, TaskStatus};

use crate::StoreFactory;
use crate::support::*;

fn failed(held: &Task, now: chrono::DateTime<chrono::Utc>) -> Result<Task, Rejection> {
    lifecycle::fail(
        held,
        &token(held),
        now,
        &HandlerError::msg("boom"),
        HandlerPath::Main,
        policy(),
    )
}

/// Seeds one task `a` and has "worker A" claim it at 0, then lets the lease
/// expire and "worker B" claim it again. Returns (A's task, B's task).
async fn reclaimed<S: oncetask_core::Store>(store: &S) -> (Task, Task) {
    seed(store, vec![TaskBuilder::new("a").build()]).await;
    let worker_a = claim_one(store, at(0), "a").await;
    let worker_b = claim_one(store, after(at(0), LEASE), "a").await;
    assert_ne!(worker_a.lease_token, worker_b.lease_token);
    (worker_a, worker_b)
}

/// The worker's success, swapped with the version its claim returned,
/// applies: done, outcome completed, result stored, lease cleared.
pub async fn success_swapped_with_the_claim_version_completes_the_task(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let held = claim_one(&store, at(0), "a").await;
    let next = lifecycle::succeed(&held, &token(&held), at(10), Some(result(7)))
        .expect("the holder's success applies");
    assert_eq!(swap(&store, &held, next.clone()).await, Swapped::Applied);
    let stored = get_existing(&store, "a").await;
    assert_eq!(stored, next);
    assert_eq!(stored.status(at(10)), TaskStatus::Completed);
    assert_eq!(stored.outcome, Some(Outcome::Completed));
    assert_eq!(stored.done_at, Some(at(10)));
    assert_eq!((stored.leased_until, stored.lease_token), (None, None));
    assert_eq!(stored.result, Some(result(7)));
}

/// A failure the policy retries is stored as a backoff: waiting until
/// `now + delay`, error recorded; claimable again from then on.
pub async fn retryable_failure_backs_off_and_the_task_is_claimable_after_the_delay(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let held = claim_one(&store, at(0), "a").await;
    let next = failed(&held, at(10)).expect("the holder's failure applies");
    assert_eq!(swap(&store, &held, next.clone()).await, Swapped::Applied);
    let stored = get_existing(&store, "a").await;
    assert_eq!(stored, next);
    assert_eq!(
        stored.wait_until,
        Some(at(11)),
        "1 s after the first failure"
    );
    assert_eq!(stored.errors.len(), 1);
    assert_eq!(stored.status(at(10)), TaskStatus::Waiting);
    assert!(claim(&store, at(10), 10).await.is_empty());
    let again = claim_one(&store, at(11), "a").await;
    assert_eq!(again.attempts, 2);
}

/// The failure of the last allowed attempt is permanent: done, outcome
/// failed, never claimed again.
pub async fn failure_at_max_attempts_is_permanent(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let mut now = at(0);
    for attempt in 1..=3 {
        let held = claim_one(&store, now, "a").await;
        assert_eq!(held.attempts, attempt);
        let next = failed(&held, now).expect("the holder's failure applies");
        assert_eq!(swap(&store, &held, next.clone()).await, Swapped::Applied);
        now = next.wait_until.unwrap_or(now);
    }
    let stored = get_existing(&store, "a").await;
    assert_eq!(stored.status(now), TaskStatus::Failed);
    assert_eq!(stored.outcome, Some(Outcome::Failed));
    assert_eq!(stored.errors.len(), 3);
    assert!(claim(&store, at(86_400), 10).await.is_empty());
}

/// W1: worker A's lease expired and worker B re-claimed the task. A's late
/// success conflicts on the version, and recomputed from the fresh task the
/// core rejects it (token mismatch): B's lease stands, untouched.
pub async fn stale_lease_token_cannot_complete_a_reclaimed_task(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let (worker_a, worker_b) = reclaimed(&store).await;
    let now = at(301);

    let late = lifecycle::succeed(&worker_a, &token(&worker_a), now, Some(result(1)))
        .expect("from A's own (stale) copy the success looks fine");
    assert_eq!(
        swap(&store, &worker_a, late).await,
        Swapped::Conflict,
        "A's copy is stale: the version moved on"
    );
    let fresh = get_existing(&store, "a").await;
    assert_eq!(fresh, worker_b);
    assert_eq!(
        lifecycle::succeed(&fresh, &token(&worker_a), now, Some(result(1))),
        Err(Rejection::LeaseLost)
    );
    assert_eq!(get(&store, "a").await, Some(worker_b.clone()));

    let done = complete(&store, &worker_b, now, result(2))
        .await
        .expect("B still holds the lease");
    assert_eq!(done.result, Some(result(2)));
}

/// W1: a stale failure cannot clear the new holder's lease (which in Go
/// let a third worker run the task concurrently).
pub async fn stale_failure_cannot_clear_the_new_lease(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let (worker_a, worker_b) = reclaimed(&store).await;
    let late = failed(&worker_a, at(301)).expect("from A's stale copy");
    assert_eq!(swap(&store, &worker_a, late).await, Swapped::Conflict);
    let fresh = get_existing(&store, "a").await;
    assert_eq!(fresh, worker_b);
    assert_eq!(
        lifecycle::fail(
            &fresh,
            &token(&worker_a),
            at(301),
            &HandlerError::msg("boom"),
            HandlerPath::Main,
            policy()
        ),
        Err(Rejection::LeaseLost)
    );
    assert_eq!(get(&store, "a").await, Some(worker_b));
    assert!(
        claim(&store, at(302), 10).await.is_empty(),
        "B's lease still holds the task"
    );
}

/// A write computed from an old version (e.g. a retried request whose first
/// try did apply) conflicts and writes nothing.
pub async fn blind_swap_with_a_stale_version_conflicts_and_writes_nothing(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let held = claim_one(&store, at(0), "a").await;
    let success = lifecycle::succeed(&held, &token(&held), at(1), Some(result(1)))
        .expect("the holder's success applies");
    assert_eq!(swap(&store, &held, success.clone()).await, Swapped::Applied);
    let failure = failed(&held, at(2)).expect("from the stale copy");
    assert_eq!(swap(&store, &held, failure).await, Swapped::Conflict);
    assert_eq!(
        swap(&store, &held, success.clone()).await,
        Swapped::Conflict
    );
    assert_eq!(get(&store, "a").await, Some(success));
}

/// W4: a lost attempt (lease expiry) raises `attempts` without an error;
/// the stored outcome keeps a permanent failure `failed` anyway.
pub async fn a_lost_attempt_never_turns_a_permanent_failure_into_completed(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let (_lost, worker_b) = reclaimed(&store).await;
    let next = lifecycle::fail(
        &worker_b,
        &token(&worker_b),
        at(301),
        &HandlerError::msg("fatal"),
        HandlerPath::Main,
        policy_with(&NO_RETRY),
    )
    .expect("B holds the lease");
    assert_eq!(swap(&store, &worker_b, next).await, Swapped::Applied);
    let stored = get_existing(&store, "a").await;
    assert!(stored.attempts as usize > stored.errors.len());
    assert_eq!(stored.outcome, Some(Outcome::Failed));
    assert_eq!(stored.status(at(301)), TaskStatus::Failed);
}

/// A swap never resurrects a deleted task.
pub async fn swap_of_a_deleted_task_reports_not_found(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let held = claim_one(&store, at(0), "a").await;
    assert_eq!(delete(&store, &["a"]).await, vec![Deleted::Deleted]);
    let next = lifecycle::succeed(&held, &token(&held), at(1), None).expect("from the copy");
    assert_eq!(swap(&store, &held, next).await, Swapped::NotFound);
    assert_eq!(get(&store, "a").await, None);
}

/// Releasing a lease (shutdown) makes the task ready at once, with no error
/// recorded; the next claim counts another attempt.
pub async fn release_makes_the_task_ready_at_once_without_an_error(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let held = claim_one(&store, at(0), "a").await;
    let next = lifecycle::release(&held, &token(&held)).expect("the holder releases");
    assert_eq!(swap(&store, &held, next.clone()).await, Swapped::Applied);
    let stored = get_existing(&store, "a").await;
    assert_eq!(stored, next);
    assert_eq!(stored.status(at(1)), TaskStatus::Pending);
    assert!(stored.errors.is_empty());
    let again = claim_one(&store, at(1), "a").await;
    assert_eq!(again.attempts, 2);
}

/// A heartbeat moves the lease expiry later; the task is not re-claimable
/// until the new expiry.
pub async fn extend_lease_keeps_the_task_from_being_reclaimed(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let held = claim_one(&store, at(0), "a").await;
    let next =
        lifecycle::extend_lease(&held, &token(&held), at(0), at(600)).expect("the holder extends");
    assert_eq!(swap(&store, &held, next.clone()).await, Swapped::Applied);
    assert_eq!(get_existing(&store, "a").await.leased_until, Some(at(600)));
    assert!(claim(&store, after(at(0), LEASE), 10).await.is_empty());
    assert!(claim(&store, at(599), 10).await.is_empty());
    claim_one(&store, at(600), "a").await;
}

/// A worker whose lease was lost cannot extend the new holder's lease.
pub async fn stale_token_cannot_extend_a_reclaimed_lease(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let (worker_a, worker_b) = reclaimed(&store).await;
    let late = lifecycle::extend_lease(&worker_a, &token(&worker_a), at(0), at(10_000))
        .expect("from A's stale copy");
    assert_eq!(swap(&store, &worker_a, late).await, Swapped::Conflict);
    let fresh = get_existing(&store, "a").await;
    assert_eq!(
        lifecycle::extend_lease(&fresh, &token(&worker_a), at(0), at(10_000)),
        Err(Rejection::LeaseLost)
    );
    assert_eq!(get(&store, "a").await, Some(worker_b));
}

/// A bulk swap is per item: applied, conflicting and missing items each get
/// their own outcome, in input order, and only applied items are written.
pub async fn bulk_swap_reports_one_outcome_per_item_in_input_order(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("a").build(),
            TaskBuilder::new("b").build(),
            TaskBuilder::new("c").build(),
        ],
    )
    .await;
    let held = claim(&store, at(0), 3).await;
    let by_id = |id: &str| {
        held.iter()
            .find(|t| t.id == id)
            .cloned()
            .expect("claimed task")
    };
    let (a, b, c) = (by_id("a"), by_id("b"), by_id("c"));
    let done = |t: &Task| lifecycle::succeed(t, &token(t), at(1), None).expect("holder");
    let outcomes = swap_all(
        &store,
        vec![
            (a.clone(), done(&a)),
            (
                TaskParts {
                    version: b.version + 5,
                    ..b.clone().into_parts()
                }
                .into(),
                done(&b),
            ),
            {
                let missing = TaskBuilder::new("missing").build();
                (
                    missing.clone(),
                    lifecycle::cancel(&missing, at(1)).expect("pending"),
                )
            },
            (c.clone(), done(&c)),
        ],
    )
    .await;
    assert_eq!(
        outcomes,
        vec![
            Swapped::Applied,
            Swapped::Conflict,
            Swapped::NotFound,
            Swapped::Applied
        ]
    );
    assert_eq!(get(&store, "a").await, Some(done(&a)));
    assert_eq!(get(&store, "b").await, Some(b));
    assert_eq!(get(&store, "c").await, Some(done(&c)));
    assert_eq!(get(&store, "missing").await, None);
}

/// Two writes of one task in one bulk call, both expecting the same
/// version: the first applies, the second must not.
pub async fn two_swaps_of_one_task_with_the_same_expected_version_apply_once(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    let held = claim_one(&store, at(0), "a").await;
    let success = lifecycle::succeed(&held, &token(&held), at(1), Some(result(1))).expect("holder");
    let failure = failed(&held, at(1)).expect("holder");
    let outcomes = swap_all(
        &store,
        vec![(held.clone(), success.clone()), (held.clone(), failure)],
    )
    .await;
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0], Swapped::Applied);
    assert_ne!(outcomes[1], Swapped::Applied, "the second write is stale");
    assert_eq!(get(&store, "a").await, Some(success));
}

/// A task data type for the incarnation test: built through `Task::from_data`,
/// the way the manager builds tasks.
#[derive(serde::Serialize)]
struct Invoice {
    number: u32,
}

impl oncetask_core::TaskData for Invoice {
    type Kind = &'static str;
    fn kind(&self) -> &'static str {
        KIND
    }
    fn idempotent_id(&self) -> String {
        format!("invoice-{}", self.number)
    }
}

/// Delete and re-create of an idempotent id while an old worker still runs:
/// the old worker's outcome must not land on the new task, even though both
/// incarnations were created and claimed the same way (ABA on `version`).
///
/// Fails while `Task::from_data` starts every task at version 0: the old
/// worker's swap then expects exactly the new task's version.
pub async fn a_stale_write_from_a_deleted_incarnation_cannot_land_on_the_recreated_task(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let build = || Task::from_data(&Invoice { number: 7 }, ENV, at(0)).expect("valid task");
    seed(&store, vec![build()]).await;
    let old_worker = claim_one(&store, at(0), "invoice-7").await;
    assert_eq!(delete(&store, &["invoice-7"]).await, vec![Deleted::Deleted]);
    seed(&store, vec![build()]).await;
    let new_worker = claim_one(&store, at(0), "invoice-7").await;

    let late = lifecycle::succeed(&old_worker, &token(&old_worker), at(1), Some(result(1)))
        .expect("from the old worker's copy");
    assert_ne!(
        swap(&store, &old_worker, late).await,
        Swapped::Applied,
        "the old incarnation's outcome landed on the re-created task"
    );
    assert_eq!(get(&store, "invoice-7").await, Some(new_worker));
}

/// A swap onto a stored document that cannot be decoded fails for that item
/// (with `StoreError::Undecodable`) and leaves the other items alone.
pub async fn a_swap_onto_an_undecodable_document_fails_for_that_item_only(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    if !factory.insert_undecodable(&store, "bad", ENV, KIND).await {
        eprintln!("note: backend cannot store undecodable documents; test skipped");
        return;
    }
    let good = TaskBuilder::new("good").build();
    seed(&store, vec![good.clone()]).await;
    let cancel = |t: &Task| lifecycle::cancel(t, at(1)).expect("cancel a pending task");
    let outcomes = store
        .swap(&[
            {
                let bad = TaskBuilder::new("bad").build();
                swap_of(&bad, &cancel(&bad))
            },
            swap_of(&good, &cancel(&good)),
        ])
        .await
        .expect("one undecodable item must not fail the whole swap");
    assert_eq!(outcomes.len(), 2);
    assert!(
        matches!(
            &outcomes[0],
            oncetask_core::store::SwapOutcome::Failed(oncetask_core::StoreError::Undecodable {
                id,
                ..
            }) if id == "bad"
        ),
        "got {:?}",
        outcomes[0]
    );
    assert!(matches!(
        outcomes[1],
        oncetask_core::store::SwapOutcome::Applied { .. }
    ));
    assert_eq!(get(&store, "good").await, Some(cancel(&good)));
    assert!(matches!(
        get_all(&store, &["bad"]).await.as_slice(),
        [oncetask_core::store::Fetched::Undecodable(_)]
    ));
}

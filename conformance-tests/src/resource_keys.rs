//! Resource keys: mutual exclusion per (env, kind, key) in single mode, and
//! resource-group claims (docs/semantics.md S7.5, S7.6; W6, W29).

use oncetask_core::lifecycle;
use oncetask_core::store::ClaimMode;

use crate::StoreFactory;
use crate::support::*;

/// W6: a busy key no longer blocks the head of the queue: the claim skips
/// it and takes the next ready task of another key.
pub async fn claim_skips_a_busy_resource_key_and_takes_the_next_ready_task(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let blocked = TaskBuilder::new("k-next")
        .key("K")
        .created_at(at(-100))
        .build();
    seed(
        &store,
        vec![
            TaskBuilder::new("k-busy")
                .key("K")
                .leased_until(at(100))
                .build(),
            blocked.clone(),
            TaskBuilder::new("l").key("L").wait_until(at(-1)).build(),
        ],
    )
    .await;
    claim_one(&store, at(0), "l").await;
    assert_eq!(get(&store, "k-next").await, Some(blocked));
    assert!(claim(&store, at(0), 10).await.is_empty());
}

/// In one single-mode claim, at most one task per key is taken; keyless
/// tasks are unconstrained.
pub async fn single_claim_never_takes_two_tasks_of_one_resource_key(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("k1").key("K").created_at(at(-10)).build(),
            TaskBuilder::new("k2").key("K").build(),
            TaskBuilder::new("k3").key("K").build(),
            TaskBuilder::new("l1").key("L").build(),
            TaskBuilder::new("n1").build(),
            TaskBuilder::new("n2").build(),
        ],
    )
    .await;
    assert_eq!(
        sorted_ids(&claim(&store, at(0), 10).await),
        vec!["k1", "l1", "n1", "n2"]
    );
}

/// A key stays busy while its lease lives; once it expires the next task of
/// the key (never leased, so ahead of the expired one) is claimable.
pub async fn a_resource_key_stays_busy_for_later_single_claims(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("k1").key("K").created_at(at(-10)).build(),
            TaskBuilder::new("k2").key("K").build(),
        ],
    )
    .await;
    claim_one(&store, at(0), "k1").await;
    assert!(claim(&store, at(0), 10).await.is_empty());
    assert!(claim(&store, at(299), 10).await.is_empty());
    claim_one(&store, after(at(0), LEASE), "k2").await;
}

/// A lease that has expired does not hold the key; but one claim still takes
/// only one task of the key.
pub async fn an_expired_lease_does_not_hold_its_resource_key(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("old")
                .key("K")
                .leased_until(at(-1))
                .build(),
            TaskBuilder::new("new").key("K").build(),
        ],
    )
    .await;
    assert_eq!(ids(&claim(&store, at(0), 10).await), vec!["new"]);
    assert!(claim(&store, at(0), 10).await.is_empty(), "K is busy now");
}

/// When the key's leased task completes, the key is free at once.
pub async fn a_done_task_does_not_hold_its_resource_key(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("k1").key("K").created_at(at(-10)).build(),
            TaskBuilder::new("k2").key("K").build(),
        ],
    )
    .await;
    let held = claim_one(&store, at(0), "k1").await;
    complete(&store, &held, at(1), result(1))
        .await
        .expect("the holder completes");
    claim_one(&store, at(1), "k2").await;
}

/// Exclusion is per kind: a live lease on key K in another kind does not
/// block this kind's tasks of K.
pub async fn other_kinds_sharing_a_resource_key_do_not_block(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("sms")
                .kind(OTHER_KIND)
                .key("K")
                .leased_until(at(100))
                .build(),
            TaskBuilder::new("email").key("K").build(),
        ],
    )
    .await;
    claim_one(&store, at(0), "email").await;
}

/// Group mode: the first ready candidate's key decides; every ready task of
/// that key is leased with the one grant, ordered by `wait_until`.
pub async fn group_claim_takes_every_ready_task_of_the_first_free_key_in_wait_until_order(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let k_a = TaskBuilder::new("k-a").key("K").wait_until(at(-10)).build();
    let k_b = TaskBuilder::new("k-b")
        .key("K")
        .created_at(at(-100))
        .build();
    let k_c = TaskBuilder::new("k-c").key("K").wait_until(at(-20)).build();
    let l_a = TaskBuilder::new("l-a").key("L").created_at(at(-50)).build();
    let n = TaskBuilder::new("n").created_at(at(-40)).build();
    seed(
        &store,
        vec![
            k_a.clone(),
            k_b.clone(),
            k_c.clone(),
            l_a.clone(),
            n.clone(),
        ],
    )
    .await;

    let (grant, claimed) = claim_with(
        &store,
        ENV,
        KIND,
        at(0),
        ClaimMode::ResourceGroup { max_group: 10 },
        LEASE,
    )
    .await;
    let expected: Vec<_> = [&k_b, &k_c, &k_a]
        .into_iter()
        .map(|t| lifecycle::claim(t, &grant))
        .collect();
    assert_eq!(claimed.tasks, expected);
    for task in &expected {
        assert_eq!(get(&store, &task.id).await.as_ref(), Some(task));
    }
    assert_eq!(get(&store, "l-a").await, Some(l_a));
    assert_eq!(get(&store, "n").await, Some(n));
}

/// W29: a group is capped at `max_group` (earliest first); the rest of the
/// key waits, since the key is busy until the group's lease ends.
pub async fn group_claim_is_capped_by_max_group_and_keeps_the_key_busy(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("k1").key("K").wait_until(at(-3)).build(),
            TaskBuilder::new("k2").key("K").wait_until(at(-2)).build(),
            TaskBuilder::new("k3").key("K").wait_until(at(-1)).build(),
            TaskBuilder::new("l1").key("L").wait_until(at(0)).build(),
        ],
    )
    .await;
    assert_eq!(ids(&claim_group(&store, at(0), 2).await), vec!["k1", "k2"]);
    assert_eq!(ids(&claim_group(&store, at(0), 2).await), vec!["l1"]);
    assert!(claim_group(&store, at(0), 2).await.is_empty());
    assert_eq!(get_existing(&store, "k3").await.attempts, 0);
}

/// A task of the key that is still waiting is not part of the group.
pub async fn group_claim_leaves_waiting_tasks_of_the_key_out(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let later = TaskBuilder::new("k-later")
        .key("K")
        .wait_until(at(100))
        .build();
    seed(
        &store,
        vec![TaskBuilder::new("k-now").key("K").build(), later.clone()],
    )
    .await;
    assert_eq!(ids(&claim_group(&store, at(0), 10).await), vec!["k-now"]);
    assert_eq!(get(&store, "k-later").await, Some(later));
}

/// A keyless head is claimed alone, even in group mode.
pub async fn group_claim_takes_a_keyless_head_alone(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("n1").created_at(at(-10)).build(),
            TaskBuilder::new("n2").created_at(at(-9)).build(),
            TaskBuilder::new("k1").key("K").build(),
            TaskBuilder::new("k2").key("K").build(),
        ],
    )
    .await;
    assert_eq!(ids(&claim_group(&store, at(0), 10).await), vec!["n1"]);
    assert_eq!(ids(&claim_group(&store, at(0), 10).await), vec!["n2"]);
    assert_eq!(ids(&claim_group(&store, at(0), 10).await), vec!["k1", "k2"]);
}

/// A key with a live lease is skipped (not blocking); the next free key's
/// group is claimed instead.
pub async fn group_claim_skips_a_key_with_a_live_lease(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let k_ready = TaskBuilder::new("k-ready")
        .key("K")
        .created_at(at(-100))
        .build();
    seed(
        &store,
        vec![
            TaskBuilder::new("k-busy")
                .key("K")
                .leased_until(at(100))
                .build(),
            k_ready.clone(),
            TaskBuilder::new("l1").key("L").build(),
            TaskBuilder::new("l2").key("L").wait_until(at(-5)).build(),
        ],
    )
    .await;
    assert_eq!(ids(&claim_group(&store, at(0), 10).await), vec!["l1", "l2"]);
    assert_eq!(get(&store, "k-ready").await, Some(k_ready));
}

/// The group holds every ready task of the key: expired leases and
/// cancelled tasks too; the group's order is `wait_until`, then
/// `created_at`, then id (leases play no part in it).
pub async fn group_claim_includes_expired_leases_and_cancelled_tasks_of_the_key(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("k-exp")
                .key("K")
                .created_at(at(-30))
                .leased_until(at(-5))
                .build(),
            TaskBuilder::new("k-can")
                .key("K")
                .created_at(at(-20))
                .wait_until(at(50))
                .build(),
            TaskBuilder::new("k-new")
                .key("K")
                .created_at(at(-40))
                .wait_until(at(-1))
                .build(),
        ],
    )
    .await;
    apply(&store, "k-can", |t| lifecycle::cancel(t, at(0)))
        .await
        .expect("cancel a waiting task");
    let group = claim_group(&store, at(0), 10).await;
    assert_eq!(ids(&group), vec!["k-exp", "k-can", "k-new"]);
    assert!(group[1].is_cancelled);
    assert_eq!(
        group[0].attempts, 2,
        "the expired lease counts its new claim"
    );
}

/// Tasks of another kind that share the key are not part of the group.
pub async fn group_claim_leaves_other_kinds_sharing_the_key_out(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let sms = TaskBuilder::new("sms").kind(OTHER_KIND).key("K").build();
    seed(
        &store,
        vec![
            sms.clone(),
            TaskBuilder::new("e1").key("K").build(),
            TaskBuilder::new("e2").key("K").build(),
        ],
    )
    .await;
    assert_eq!(ids(&claim_group(&store, at(0), 10).await), vec!["e1", "e2"]);
    assert_eq!(get(&store, "sms").await, Some(sms));
}

/// A heartbeat that arrives after its lease expired must not revive it: by
/// then another task of the key may hold the key, and two live leases in one
/// key would let two handlers of the key run at once. (Found by the model
/// test, when `lifecycle::extend_lease` took no `now`.)
pub async fn a_heartbeat_after_expiry_cannot_revive_a_lease_whose_key_moved_on(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("k1").key("K").created_at(at(-10)).build(),
            TaskBuilder::new("k2").key("K").build(),
        ],
    )
    .await;
    let slow = claim_one(&store, at(0), "k1").await;
    let expiry = after(at(0), LEASE);
    let next = claim_one(&store, expiry, "k2").await;

    // k1's lease expired but nobody re-claimed k1: its token still matches.
    let late = after(expiry, std::time::Duration::from_secs(1));
    let stored = get_existing(&store, "k1").await;
    if let Ok(revived) = lifecycle::extend_lease(&stored, &token(&slow), late, after(late, LEASE)) {
        swap(&store, &stored, revived).await;
    }
    let live: Vec<String> = get_all(&store, &["k1", "k2"])
        .await
        .into_iter()
        .filter_map(|f| match f {
            oncetask_core::store::Fetched::Task(t) if t.is_leased_at(late) => Some(t.id),
            _ => None,
        })
        .collect();
    assert_eq!(
        live,
        vec![next.id],
        "an expired lease was extended while its key was held by another task"
    );
}

/// A group's key is free once every lease of the group ended or ran out,
/// even when a member that already finished had its lease extended far
/// beyond the others'. (Found by the model test on Firestore, whose store
/// remembered only the latest lease end of a group it claimed.)
pub async fn a_finished_member_whose_lease_was_extended_does_not_hold_its_key(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("k1").key("K").created_at(at(-3)).build(),
            TaskBuilder::new("k2").key("K").created_at(at(-2)).build(),
            TaskBuilder::new("k3").key("K").created_at(at(-1)).build(),
        ],
    )
    .await;
    let group = claim_group(&store, at(0), 2).await;
    assert_eq!(ids(&group), vec!["k1", "k2"]);
    let long = lifecycle::extend_lease(&group[0], &token(&group[0]), at(1), at(3600))
        .expect("the holder extends its lease");
    assert_eq!(
        swap(&store, &group[0], long.clone()).await,
        Swapped::Applied
    );
    complete(&store, &long, at(2), result(1))
        .await
        .expect("the holder completes");
    // k2's lease ran out, k1 is done: nothing holds K.
    let expiry = after(at(0), LEASE);
    let next = claim(&store, expiry, 10).await;
    assert_eq!(
        next.iter()
            .map(|t| t.resource_key.as_deref())
            .collect::<Vec<_>>(),
        vec![Some("K")],
        "K is free once k2's lease ran out; got {:?}",
        ids(&next)
    );
}

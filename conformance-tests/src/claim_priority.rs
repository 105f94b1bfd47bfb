//! `Store::claim` by priority: higher [`Task::priority`] first, then the
//! claim order; the oldest order ignores priority; resource-key exclusion
//! and group rules are the same in both orders.

use oncetask_core::Task;
use oncetask_core::store::{ClaimMode, ClaimOrder};

use crate::StoreFactory;
use crate::support::*;

/// Claims of [`ENV`]/[`KIND`] at `now` in `order`.
async fn claim_in<S: oncetask_core::Store>(
    store: &S,
    now: chrono::DateTime<chrono::Utc>,
    mode: ClaimMode,
    order: ClaimOrder,
) -> Vec<Task> {
    let (_, claimed) = claim_ordered(store, ENV, KIND, now, mode, order, LEASE).await;
    claimed.tasks
}

fn single(limit: usize) -> ClaimMode {
    ClaimMode::Single { limit }
}

/// Higher priorities first; within a priority, the claim order
/// (never-leased by `wait_until`, then `created_at`).
pub async fn a_claim_takes_higher_priorities_first_then_claim_order(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("old-plain").created_at(at(-30)).build(),
            TaskBuilder::new("low")
                .priority(-3)
                .created_at(at(-40))
                .build(),
            TaskBuilder::new("high-b")
                .priority(5)
                .created_at(at(-10))
                .build(),
            TaskBuilder::new("high-a")
                .priority(5)
                .created_at(at(-20))
                .build(),
            TaskBuilder::new("top")
                .priority(10)
                .created_at(at(-5))
                .build(),
        ],
    )
    .await;
    let first = claim_in(&store, at(0), single(3), ClaimOrder::Priority).await;
    assert_eq!(ids(&first), ["top", "high-a", "high-b"]);
    let rest = claim_in(&store, at(0), single(10), ClaimOrder::Priority).await;
    assert_eq!(ids(&rest), ["old-plain", "low"]);
}

/// The oldest order is the claim order alone, whatever the priorities.
pub async fn an_oldest_claim_ignores_priority(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("newest-high")
                .priority(9)
                .created_at(at(-1))
                .build(),
            TaskBuilder::new("oldest-low")
                .priority(-9)
                .created_at(at(-60))
                .build(),
            TaskBuilder::new("middle").created_at(at(-30)).build(),
        ],
    )
    .await;
    let first = claim_in(&store, at(0), single(2), ClaimOrder::Oldest).await;
    assert_eq!(ids(&first), ["oldest-low", "middle"]);
    let rest = claim_in(&store, at(0), single(2), ClaimOrder::Oldest).await;
    assert_eq!(ids(&rest), ["newest-high"]);
}

/// A high-priority task that is not ready (waiting, or leased by a live
/// lease) is passed over, not waited for; one whose lease expired is ready
/// again and comes first.
pub async fn a_high_priority_task_that_is_not_ready_does_not_hold_back_lower_ones(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("high-waiting")
                .priority(10)
                .wait_until(at(600))
                .build(),
            TaskBuilder::new("high-leased")
                .priority(10)
                .leased_until(at(600))
                .build(),
            TaskBuilder::new("mid-expired")
                .priority(4)
                .leased_until(at(-1))
                .build(),
            TaskBuilder::new("plain").created_at(at(-100)).build(),
        ],
    )
    .await;
    let claimed = claim_in(&store, at(0), single(10), ClaimOrder::Priority).await;
    assert_eq!(ids(&claimed), ["mid-expired", "plain"]);
}

/// A busy resource key blocks its ready tasks of every priority, and a
/// claim takes at most one task per key whatever their priorities.
pub async fn a_resource_key_is_exclusive_across_priorities(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("busy-holder")
                .key("busy")
                .leased_until(at(600))
                .build(),
            TaskBuilder::new("busy-urgent")
                .key("busy")
                .priority(9)
                .build(),
            TaskBuilder::new("free-high")
                .key("free")
                .priority(7)
                .build(),
            TaskBuilder::new("free-low")
                .key("free")
                .priority(-7)
                .created_at(at(-50))
                .build(),
            TaskBuilder::new("keyless").build(),
        ],
    )
    .await;
    let claimed = claim_in(&store, at(0), single(10), ClaimOrder::Priority).await;
    assert_eq!(ids(&claimed), ["free-high", "keyless"]);
    // The oldest order takes the key's oldest task instead.
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("free-high")
                .key("free")
                .priority(7)
                .build(),
            TaskBuilder::new("free-low")
                .key("free")
                .priority(-7)
                .created_at(at(-50))
                .build(),
        ],
    )
    .await;
    let claimed = claim_in(&store, at(0), single(10), ClaimOrder::Oldest).await;
    assert_eq!(ids(&claimed), ["free-low"]);
}

/// In group mode the first candidate in the claim's order picks the key;
/// the group is then every ready task of that key in group order
/// (`wait_until`, then `created_at`), whatever their priorities.
pub async fn a_group_claim_picks_the_key_of_the_first_candidate_in_its_order(
    factory: &impl StoreFactory,
) {
    let seeded = || {
        vec![
            TaskBuilder::new("a-old")
                .key("a")
                .created_at(at(-90))
                .build(),
            TaskBuilder::new("b-low")
                .key("b")
                .priority(-2)
                .created_at(at(-80))
                .build(),
            TaskBuilder::new("b-high")
                .key("b")
                .priority(6)
                .created_at(at(-10))
                .build(),
        ]
    };
    let store = factory.new_store().await;
    seed(&store, seeded()).await;
    let group = claim_in(
        &store,
        at(0),
        ClaimMode::ResourceGroup { max_group: 10 },
        ClaimOrder::Priority,
    )
    .await;
    assert_eq!(
        ids(&group),
        ["b-low", "b-high"],
        "group order, not priority"
    );

    let store = factory.new_store().await;
    seed(&store, seeded()).await;
    let group = claim_in(
        &store,
        at(0),
        ClaimMode::ResourceGroup { max_group: 10 },
        ClaimOrder::Oldest,
    )
    .await;
    assert_eq!(ids(&group), ["a-old"]);
}

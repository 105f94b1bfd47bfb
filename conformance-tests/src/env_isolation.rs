//! Environments: every query is scoped to one env; ids are global
//! (docs/semantics.md S2.4, S2.5; W13, W14).

use oncetask_core::store::{ClaimMode, StatusCounts, TaskFilter};
use oncetask_core::{Store, TaskStatus};

use crate::StoreFactory;
use crate::support::*;

/// Single and group claims of one env never take or touch another env's
/// tasks, even ones ahead in claim order.
pub async fn claim_never_takes_tasks_of_another_env(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let prod = TaskBuilder::new("prod")
        .env(OTHER_ENV)
        .created_at(at(-100))
        .build();
    seed(&store, vec![prod.clone(), TaskBuilder::new("test").build()]).await;
    assert_eq!(ids(&claim(&store, at(0), 10).await), vec!["test"]);
    assert!(claim_group(&store, at(0), 10).await.is_empty());
    assert_eq!(get(&store, "prod").await, Some(prod));
    let (_, claimed) = claim_with(
        &store,
        OTHER_ENV,
        KIND,
        at(0),
        ClaimMode::Single { limit: 10 },
        LEASE,
    )
    .await;
    assert_eq!(ids(&claimed.tasks), vec!["prod"]);
}

/// Resource-key exclusion is per env: a live lease on K in another env does
/// not block K here.
pub async fn a_live_lease_in_another_env_does_not_hold_a_resource_key(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("prod")
                .env(OTHER_ENV)
                .key("K")
                .leased_until(at(100))
                .build(),
            TaskBuilder::new("test-1").key("K").build(),
            TaskBuilder::new("test-2").key("K").build(),
        ],
    )
    .await;
    assert_eq!(ids(&claim(&store, at(0), 10).await), vec!["test-1"]);
    delete(&store, &["test-1"]).await;
    assert_eq!(ids(&claim_group(&store, at(0), 10).await), vec!["test-2"]);
}

/// A resource group holds only tasks of the claim's env.
pub async fn group_claim_never_mixes_envs(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let prod = TaskBuilder::new("prod").env(OTHER_ENV).key("K").build();
    seed(
        &store,
        vec![
            prod.clone(),
            TaskBuilder::new("test-1").key("K").build(),
            TaskBuilder::new("test-2").key("K").build(),
        ],
    )
    .await;
    assert_eq!(
        ids(&claim_group(&store, at(0), 10).await),
        vec!["test-1", "test-2"]
    );
    assert_eq!(get(&store, "prod").await, Some(prod));
}

/// `find`, `count_by_status` and `next_due` see only their env.
pub async fn find_count_and_next_due_see_only_their_env(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("prod-1")
                .env(OTHER_ENV)
                .key("K")
                .wait_until(at(10))
                .build(),
            TaskBuilder::new("prod-2").env(OTHER_ENV).build(),
            TaskBuilder::new("test-1")
                .key("K")
                .wait_until(at(20))
                .build(),
        ],
    )
    .await;
    let listed: Vec<String> = store
        .find(&TaskFilter::env(ENV, at(0)))
        .await
        .expect("find")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, vec!["test-1"]);
    let mut by_key = TaskFilter::env(OTHER_ENV, at(0));
    by_key.resource_key = Some("K".to_owned());
    assert_eq!(
        store.find(&by_key).await.expect("find").len(),
        1,
        "only prod-1"
    );
    assert_eq!(
        store
            .count_by_status(ENV, Some(KIND), at(0))
            .await
            .expect("count"),
        StatusCounts::from([(TaskStatus::Waiting, 1)])
    );
    assert_eq!(
        store.next_due(ENV, KIND, at(0)).await.expect("next_due"),
        Some(at(20))
    );
    assert_eq!(
        store
            .next_due(OTHER_ENV, KIND, at(0))
            .await
            .expect("next_due"),
        Some(at(10))
    );
}

/// `get` by id is not env-scoped: it returns the task with its env, so the
/// manager can report "task is in a different environment" (S12).
pub async fn get_returns_a_task_whatever_its_env(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let prod = TaskBuilder::new("prod").env(OTHER_ENV).build();
    seed(&store, vec![prod.clone()]).await;
    assert_eq!(get(&store, "prod").await, Some(prod));
}

/// W13: ids are one namespace across envs; the create reports which env
/// holds the id, and the other env's task stays invisible to this env.
pub async fn ids_are_global_across_envs(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let test = TaskBuilder::new("a").build();
    seed(&store, vec![test.clone()]).await;
    assert_eq!(
        create(&store, vec![TaskBuilder::new("a").env(OTHER_ENV).build()]).await,
        vec![Created::ExistsInOtherEnv(ENV.to_owned())]
    );
    assert_eq!(get(&store, "a").await, Some(test));
    let counts: StatusCounts = Store::count_by_status(&store, OTHER_ENV, None, at(0))
        .await
        .expect("count");
    assert!(counts.is_empty());
}

//! `Store::storage_stats`: what the tasks of an environment take up.

use oncetask_core::lifecycle;
use oncetask_core::store::{Change, Swap};
use oncetask_core::{Store, TaskStatus};

use crate::StoreFactory;
use crate::support::*;

/// Documents per status (full documents), tombstones apart, the env's
/// only; every backend says how it got them.
pub async fn storage_stats_count_documents_per_status_with_tombstones_apart(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("c1")
                .finished(TaskStatus::Completed, at(10))
                .build(),
            TaskBuilder::new("c2")
                .finished(TaskStatus::Completed, at(10))
                .build(),
            TaskBuilder::new("c3")
                .finished(TaskStatus::Completed, at(10))
                .build(),
            TaskBuilder::new("f1")
                .finished(TaskStatus::Failed, at(10))
                .build(),
            TaskBuilder::new("p1").build(),
            TaskBuilder::new("o1").env(OTHER_ENV).build(),
        ],
    )
    .await;
    let stored = get_existing(&store, "c3").await;
    let tombstone = lifecycle::prune(&stored, at(20)).expect("finished");
    store
        .swap(&[Swap::new(&stored, Change::Prune, &tombstone)])
        .await
        .expect("swap");

    let stats = store
        .storage_stats(ENV, at(30))
        .await
        .expect("storage_stats");
    let documents = |status| stats.by_status.get(&status).map_or(0, |s| s.documents);
    assert_eq!(documents(TaskStatus::Completed), 2, "{stats:?}");
    assert_eq!(documents(TaskStatus::Failed), 1, "{stats:?}");
    assert_eq!(documents(TaskStatus::Pending), 1, "{stats:?}");
    assert_eq!(stats.tombstones.documents, 1, "{stats:?}");
    assert_eq!(stats.documents(), 5, "the other env's task is not counted");
    assert!(!stats.method.is_empty(), "says how it was obtained");
    if let (Some(full), Some(pruned)) = (
        stats
            .by_status
            .get(&TaskStatus::Completed)
            .and_then(|s| s.bytes),
        stats.tombstones.bytes,
    ) {
        assert!(full > 0 && pruned > 0, "{stats:?}");
        assert!(
            pruned < full,
            "a tombstone is smaller than two full documents: {stats:?}"
        );
    }
}

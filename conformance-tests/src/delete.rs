//! `Store::delete`: per-item removal, no tombstones (docs/semantics.md S11; W11, W21).

use oncetask_core::lifecycle;
use oncetask_core::store::TaskFilter;
use serde_json::json;

use crate::StoreFactory;
use crate::support::*;

/// A deleted task is gone from every read and from claims.
pub async fn delete_removes_a_task(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let keep = TaskBuilder::new("keep").build();
    seed(&store, vec![TaskBuilder::new("a").build(), keep.clone()]).await;
    assert_eq!(delete(&store, &["a"]).await, vec![Deleted::Deleted]);
    assert_eq!(get(&store, "a").await, None);
    let listed = store
        .find(&TaskFilter::env(ENV, at(0)))
        .await
        .expect("find");
    assert_eq!(listed, vec![keep.clone()]);
    assert_eq!(ids(&claim(&store, at(0), 10).await), vec!["keep"]);
}

/// Deleting an id that does not exist reports `NotFound`.
pub async fn deleting_a_missing_id_reports_not_found(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    assert_eq!(delete(&store, &["nope"]).await, vec![Deleted::NotFound]);
}

/// A bulk delete is per item, in input order; a repeated id is deleted once
/// and then reported missing (W21: duplicates must not crash anything).
pub async fn bulk_delete_reports_one_outcome_per_item_in_input_order(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![TaskBuilder::new("a").build(), TaskBuilder::new("b").build()],
    )
    .await;
    assert_eq!(
        delete(&store, &["a", "missing", "a", "b"]).await,
        vec![
            Deleted::Deleted,
            Deleted::NotFound,
            Deleted::NotFound,
            Deleted::Deleted
        ]
    );
    assert!(get_all(&store, &["a", "b"]).await.is_empty());
    assert!(delete(&store, &[]).await.is_empty());
}

/// A write computed before the delete reports `NotFound` and does not
/// bring the task back.
pub async fn swap_after_delete_reports_not_found(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let task = TaskBuilder::new("a").build();
    seed(&store, vec![task.clone()]).await;
    let cancel = lifecycle::cancel(&task, at(1)).expect("cancel a pending task");
    assert_eq!(delete(&store, &["a"]).await, vec![Deleted::Deleted]);
    assert_eq!(swap(&store, &task, cancel).await, Swapped::NotFound);
    assert_eq!(get(&store, "a").await, None);
}

/// No tombstone: a deleted id can be created again, with new content.
pub async fn a_deleted_id_can_be_created_again(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![TaskBuilder::new("a").data("v", json!(1)).build()],
    )
    .await;
    assert_eq!(delete(&store, &["a"]).await, vec![Deleted::Deleted]);
    let again = TaskBuilder::new("a").data("v", json!(2)).build();
    assert_eq!(
        create(&store, vec![again.clone()]).await,
        vec![Created::Created]
    );
    assert_eq!(get(&store, "a").await, Some(again));
}

/// Deleting a leased task does not stop its worker, but the worker's
/// completion finds nothing and writes nothing (and its siblings are
/// unaffected: each swap item stands alone, W11).
pub async fn deleting_a_leased_task_makes_its_completion_report_not_found(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("a").key("K").build(),
            TaskBuilder::new("b").key("K").build(),
        ],
    )
    .await;
    let group = claim_group(&store, at(0), 10).await;
    assert_eq!(ids(&group), vec!["a", "b"]);
    assert_eq!(delete(&store, &["a"]).await, vec![Deleted::Deleted]);
    let swaps = group
        .iter()
        .map(|t| {
            let next = lifecycle::succeed(t, &token(t), at(1), None).expect("holder");
            (t.clone(), next)
        })
        .collect();
    assert_eq!(
        swap_all(&store, swaps).await,
        vec![Swapped::NotFound, Swapped::Applied]
    );
    assert_eq!(get(&store, "a").await, None);
    assert!(get_existing(&store, "b").await.is_done());
}

/// An undecodable document (a poison pill) can be removed by id.
pub async fn an_undecodable_document_can_be_deleted(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    if !factory.insert_undecodable(&store, "bad", ENV, KIND).await {
        eprintln!("note: backend cannot store undecodable documents; test skipped");
        return;
    }
    assert_eq!(get_all(&store, &["bad"]).await.len(), 1);
    assert_eq!(delete(&store, &["bad"]).await, vec![Deleted::Deleted]);
    assert!(get_all(&store, &["bad"]).await.is_empty());
}

/// A delete with an expected version removes the task only if it is still
/// stored at that version (so a task claimed after it was read survives).
pub async fn a_versioned_delete_of_a_changed_task_conflicts_and_removes_nothing(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![TaskBuilder::new("a").build(), TaskBuilder::new("b").build()],
    )
    .await;
    let read = get_existing(&store, "a").await;
    let b = get_existing(&store, "b").await;
    claim_one(&store, at(0), "a").await;
    let outcomes = delete_all(
        &store,
        &[
            oncetask_core::store::Delete::exact(&read),
            oncetask_core::store::Delete::exact(&b),
        ],
    )
    .await;
    assert_eq!(outcomes, vec![Deleted::Conflict, Deleted::Deleted]);
    assert!(
        get(&store, "a").await.is_some(),
        "the claimed task survives"
    );
    assert!(get(&store, "b").await.is_none());
}

/// A versioned delete of an undecodable document conflicts (it has no
/// version); an unversioned one removes it.
pub async fn only_an_unversioned_delete_removes_an_undecodable_document(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    if !factory.insert_undecodable(&store, "bad", ENV, KIND).await {
        eprintln!("note: backend cannot store undecodable documents; test skipped");
        return;
    }
    let versioned = oncetask_core::store::Delete {
        id: "bad".into(),
        expected_version: Some(0),
        expected_revision: None,
    };
    assert_eq!(
        delete_all(&store, &[versioned]).await,
        vec![Deleted::Conflict]
    );
    assert_eq!(delete(&store, &["bad"]).await, vec![Deleted::Deleted]);
}

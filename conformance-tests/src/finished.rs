//! `Store::find_finished`: what a pruner reads. Finished tasks of one kind
//! and status, full documents or tombstones, finished at or before a
//! cutoff, in `(done_at, id)` order, paged by cursor.

use oncetask_core::lifecycle;
use oncetask_core::store::{Change, FinishedQuery, Swap, SwapOutcome};
use oncetask_core::{Store, Task, TaskStatus};

use crate::StoreFactory;
use crate::support::*;

fn done(id: &str, status: TaskStatus, secs: i64) -> Task {
    TaskBuilder::new(id).finished(status, at(secs)).build()
}

fn query(status: TaskStatus, by_secs: i64) -> FinishedQuery {
    FinishedQuery::new(ENV, KIND, status, at(by_secs))
}

async fn found<S: Store>(store: &S, query: &FinishedQuery) -> Vec<String> {
    store
        .find_finished(query)
        .await
        .expect("find_finished")
        .into_iter()
        .map(|t| t.id)
        .collect()
}

/// Turns a stored finished task into a tombstone, as a pruner does.
async fn prune<S: Store>(store: &S, id: &str, now_secs: i64) -> Task {
    let stored = get_existing(store, id).await;
    let tombstone = lifecycle::prune(&stored, at(now_secs)).expect("finished");
    let swap = Swap::new(&stored, Change::Prune, &tombstone);
    let outcomes = store.swap(std::slice::from_ref(&swap)).await.expect("swap");
    assert!(
        matches!(outcomes.as_slice(), [SwapOutcome::Applied { .. }]),
        "prune of {id}: {outcomes:?}"
    );
    get_existing(store, id).await
}

/// One status at a time, up to the cutoff, oldest finish first; other
/// kinds, envs and unfinished tasks never appear.
pub async fn find_finished_selects_one_status_up_to_the_cutoff_in_finish_order(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            done("c3", TaskStatus::Completed, 30),
            done("c1", TaskStatus::Completed, 10),
            done("c2", TaskStatus::Completed, 20),
            done("f1", TaskStatus::Failed, 15),
            done("x1", TaskStatus::Cancelled, 5),
            TaskBuilder::new("p1").build(),
            TaskBuilder::new("l1").leased_until(at(1_000)).build(),
            TaskBuilder::new("o1")
                .kind(OTHER_KIND)
                .finished(TaskStatus::Completed, at(1))
                .build(),
            TaskBuilder::new("e1")
                .env(OTHER_ENV)
                .finished(TaskStatus::Completed, at(1))
                .build(),
        ],
    )
    .await;
    assert_eq!(
        found(&store, &query(TaskStatus::Completed, 20)).await,
        ["c1", "c2"]
    );
    assert_eq!(
        found(&store, &query(TaskStatus::Completed, 100)).await,
        ["c1", "c2", "c3"]
    );
    assert_eq!(
        found(&store, &query(TaskStatus::Completed, 9)).await,
        Vec::<String>::new()
    );
    assert_eq!(found(&store, &query(TaskStatus::Failed, 100)).await, ["f1"]);
    assert_eq!(
        found(&store, &query(TaskStatus::Cancelled, 100)).await,
        ["x1"]
    );
    assert_eq!(
        found(&store, &query(TaskStatus::Completed, 100).tombstones()).await,
        Vec::<String>::new(),
        "no tombstones yet"
    );
}

/// Pages of `limit`, each after the last task of the one before; equal
/// finish times are ordered by id.
pub async fn find_finished_pages_by_cursor_with_ties_by_id(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let mut tasks: Vec<Task> = ["e", "b", "d", "a", "c"]
        .iter()
        .map(|id| done(id, TaskStatus::Completed, 10))
        .collect();
    tasks.push(done("f", TaskStatus::Completed, 11));
    tasks.push(done("0", TaskStatus::Completed, 12));
    seed(&store, tasks).await;
    let mut page = query(TaskStatus::Completed, 100).limit(2);
    let mut pages = Vec::new();
    loop {
        let tasks = store.find_finished(&page).await.expect("find_finished");
        let Some(last) = tasks.last() else { break };
        page = page.clone().after_task(last);
        pages.push(tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>());
    }
    assert_eq!(
        pages,
        [vec!["a", "b"], vec!["c", "d"], vec!["e", "f"], vec!["0"]]
    );
}

/// A tombstone keeps its identity, status and finish time and loses its
/// payload, result and errors; queries tell it from full documents; and
/// its id still exists for a create.
pub async fn a_tombstone_is_found_apart_and_still_holds_its_id(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("c1")
                .key("acct-1")
                .finished(TaskStatus::Completed, at(10))
                .build(),
            done("f1", TaskStatus::Failed, 10),
            done("c2", TaskStatus::Completed, 11),
        ],
    )
    .await;
    let before = get_existing(&store, "c1").await;
    let tombstone = prune(&store, "c1", 100).await;
    let failed = prune(&store, "f1", 100).await;

    assert!(tombstone.is_tombstone());
    assert_eq!(tombstone.pruned_at, Some(at(100)));
    assert!(tombstone.data.is_empty() && tombstone.result.is_none());
    assert_eq!(
        (&tombstone.kind, &tombstone.env, &tombstone.resource_key),
        (&before.kind, &before.env, &before.resource_key)
    );
    assert_eq!(
        (tombstone.created_at, tombstone.done_at),
        (before.created_at, before.done_at)
    );
    assert_eq!(tombstone.status(at(200)), TaskStatus::Completed);
    assert!(failed.errors.is_empty());
    assert_eq!(failed.status(at(200)), TaskStatus::Failed);

    assert_eq!(
        found(&store, &query(TaskStatus::Completed, 100)).await,
        ["c2"]
    );
    assert_eq!(
        found(&store, &query(TaskStatus::Completed, 100).tombstones()).await,
        ["c1"]
    );
    assert_eq!(
        found(&store, &query(TaskStatus::Failed, 100).tombstones()).await,
        ["f1"]
    );
    let again = create(&store, vec![done("c1", TaskStatus::Completed, 500)]).await;
    assert_eq!(again, [Created::AlreadyExists], "a tombstone keeps its id");
    assert_eq!(
        get_existing(&store, "c1").await,
        tombstone,
        "and is unchanged"
    );
}

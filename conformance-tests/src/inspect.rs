//! The queue inspector: `kinds` and `inspect` (issue 7). Backends inherit
//! both from the trait's defaults or override them; either way the answers
//! must agree with `find`, `count_by_status` and `next_due`.

use oncetask_core::lifecycle;
use oncetask_core::store::StatusCounts;
use oncetask_core::{Outcome, QueueStats, Store, Task, TaskStatus};

use crate::StoreFactory;
use crate::support::*;

async fn kinds<S: Store>(store: &S, env: &str) -> Vec<String> {
    store.kinds(env).await.expect("store.kinds failed")
}

async fn inspect<S: Store>(store: &S, now: chrono::DateTime<chrono::Utc>) -> QueueStats {
    store.inspect(ENV, now).await.expect("store.inspect failed")
}

/// A task that finished with `outcome` at `at(0)`.
fn finished(id: &str, kind: &str, outcome: Outcome) -> Task {
    let mut task = TaskBuilder::new(id).kind(kind).build();
    task.attempts = 1;
    task.done_at = Some(at(0));
    task.outcome = Some(outcome);
    task
}

/// `kinds` names every kind with a task in the env once, sorted, whatever
/// the tasks' statuses (a kind whose tasks all finished is still a kind).
pub async fn kinds_lists_each_kind_of_the_env_once_in_order(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    assert!(
        kinds(&store, ENV).await.is_empty(),
        "an empty store has no kinds"
    );
    seed(
        &store,
        vec![
            TaskBuilder::new("z1").kind("zeta").build(),
            TaskBuilder::new("a1").kind("alpha").build(),
            TaskBuilder::new("z2")
                .kind("zeta")
                .wait_until(at(100))
                .build(),
            finished("done", "omega", Outcome::Completed),
            TaskBuilder::new("other-env")
                .kind("beta")
                .env(OTHER_ENV)
                .build(),
        ],
    )
    .await;
    assert_eq!(kinds(&store, ENV).await, vec!["alpha", "omega", "zeta"]);
    assert_eq!(kinds(&store, OTHER_ENV).await, vec!["beta"]);
    delete(&store, &["a1"]).await;
    assert_eq!(
        kinds(&store, ENV).await,
        vec!["omega", "zeta"],
        "a kind whose last task was deleted is gone"
    );
}

/// A document that cannot be decoded is not a task: its kind is not listed
/// (as `find` and `count_by_status` ignore it).
pub async fn an_undecodable_document_adds_no_kind(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    if !factory
        .insert_undecodable(&store, "bad", ENV, "ghost")
        .await
    {
        eprintln!("note: backend cannot store undecodable documents; test skipped");
        return;
    }
    seed(&store, vec![TaskBuilder::new("good").build()]).await;
    assert_eq!(kinds(&store, ENV).await, vec![KIND]);
    let stats = inspect(&store, at(0)).await;
    assert_eq!(stats.kinds.keys().collect::<Vec<_>>(), vec![KIND]);
}

/// Inspecting an empty env reports no kinds, with the env and time asked for.
pub async fn inspect_of_an_empty_env_reports_no_kinds(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![TaskBuilder::new("elsewhere").env(OTHER_ENV).build()],
    )
    .await;
    let stats = inspect(&store, at(0)).await;
    assert_eq!(stats.env, ENV);
    assert_eq!(stats.now, at(0));
    assert!(stats.kinds.is_empty(), "{stats:?}");
}

/// Per kind, the counts are `count_by_status` of that kind at `now`,
/// terminal statuses included.
pub async fn inspect_counts_each_kind_by_status_at_now(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("p1").build(),
            TaskBuilder::new("p2").build(),
            TaskBuilder::new("w").wait_until(at(100)).build(),
            TaskBuilder::new("l").leased_until(at(100)).build(),
            TaskBuilder::new("c").wait_until(at(100)).build(),
            finished("ok", KIND, Outcome::Completed),
            finished("ko", KIND, Outcome::Failed),
            TaskBuilder::new("s1").kind(OTHER_KIND).build(),
            finished("s2", OTHER_KIND, Outcome::Cancelled),
            finished("r1", "report", Outcome::Completed),
            TaskBuilder::new("elsewhere").env(OTHER_ENV).build(),
        ],
    )
    .await;
    apply(&store, "c", |t| lifecycle::cancel(t, at(0)))
        .await
        .expect("cancel");

    let stats = inspect(&store, at(0)).await;
    assert_eq!(
        stats.kinds[KIND].counts,
        StatusCounts::from([
            (TaskStatus::Pending, 2),
            (TaskStatus::Waiting, 1),
            (TaskStatus::Leased, 1),
            (TaskStatus::CancellationPending, 1),
            (TaskStatus::Completed, 1),
            (TaskStatus::Failed, 1),
        ])
    );
    assert_eq!(
        stats.kinds[OTHER_KIND].counts,
        StatusCounts::from([(TaskStatus::Pending, 1), (TaskStatus::Cancelled, 1)])
    );
    assert_eq!(
        stats.kinds["report"].counts,
        StatusCounts::from([(TaskStatus::Completed, 1)]),
        "a kind with only finished tasks is reported"
    );
    assert_eq!(stats.kinds.len(), 3);
    for (kind, k) in &stats.kinds {
        let counted = store
            .count_by_status(ENV, Some(kind), at(0))
            .await
            .expect("count_by_status");
        assert_eq!(
            k.counts, counted,
            "inspect and count_by_status agree on {kind}"
        );
    }

    let later = inspect(&store, at(100)).await;
    assert_eq!(
        later.kinds[KIND].count(TaskStatus::Pending),
        4,
        "at 100 the wait and the lease are over"
    );
}

/// The oldest pending time is the earliest [`Task::ready_since`] among
/// tasks pending at `now`: creation for a fresh task, the end of its wait
/// for a scheduled or retried one, the expiry of a lost lease. Waiting,
/// leased and cancelled tasks do not count; a kind with nothing pending has none.
pub async fn inspect_reports_when_the_longest_waiting_pending_task_became_ready(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            // Pending since its creation at -50.
            TaskBuilder::new("fresh").created_at(at(-50)).build(),
            // Created long ago, but only due since -10 (a backoff that ended).
            TaskBuilder::new("retried")
                .created_at(at(-400))
                .wait_until(at(-10))
                .build(),
            // Its lease expired at -5.
            TaskBuilder::new("lost-lease")
                .created_at(at(-300))
                .leased_until(at(-5))
                .build(),
            // Not pending: waiting, leased, cancelled.
            TaskBuilder::new("waiting")
                .created_at(at(-900))
                .wait_until(at(60))
                .build(),
            TaskBuilder::new("leased")
                .created_at(at(-900))
                .leased_until(at(60))
                .build(),
            TaskBuilder::new("cancelling").created_at(at(-900)).build(),
            // Another kind with nothing pending.
            TaskBuilder::new("sms-waiting")
                .kind(OTHER_KIND)
                .created_at(at(-900))
                .wait_until(at(60))
                .build(),
        ],
    )
    .await;
    apply(&store, "cancelling", |t| lifecycle::cancel(t, at(-1)))
        .await
        .expect("cancel");

    let stats = inspect(&store, at(0)).await;
    assert_eq!(stats.kinds[KIND].oldest_pending_since, Some(at(-50)));
    assert_eq!(
        stats.kinds[KIND].oldest_pending_age(stats.now),
        Some(std::time::Duration::from_secs(50))
    );
    assert_eq!(stats.kinds[OTHER_KIND].oldest_pending_since, None);

    delete(&store, &["fresh"]).await;
    let stats = inspect(&store, at(0)).await;
    assert_eq!(stats.kinds[KIND].oldest_pending_since, Some(at(-10)));
    let stats = inspect(&store, at(100)).await;
    assert_eq!(
        stats.kinds[OTHER_KIND].oldest_pending_since,
        Some(at(60)),
        "at 100 the scheduled task has been pending since 60"
    );
}

/// Per kind, the next due time is `next_due` after `now`: the earliest
/// future wait or lease expiry of a not-done task, `None` if there is none.
pub async fn inspect_reports_each_kinds_next_due_time_after_now(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("now").wait_until(at(0)).build(),
            TaskBuilder::new("soon").wait_until(at(50)).build(),
            TaskBuilder::new("lease").leased_until(at(30)).build(),
            TaskBuilder::new("sms").kind(OTHER_KIND).build(),
            {
                let mut done = finished("done", "report", Outcome::Completed);
                done.wait_until = Some(at(10));
                done
            },
        ],
    )
    .await;
    let stats = inspect(&store, at(0)).await;
    assert_eq!(stats.kinds[KIND].next_due, Some(at(30)));
    assert_eq!(stats.kinds[OTHER_KIND].next_due, None);
    assert_eq!(
        stats.kinds["report"].next_due, None,
        "done tasks are never due"
    );
    assert_eq!(stats.next_due(), Some(at(30)));
    let stats = inspect(&store, at(30)).await;
    assert_eq!(stats.kinds[KIND].next_due, Some(at(50)));
}

/// Nothing of another env shows: kinds, counts, pending times and due times.
pub async fn inspect_sees_only_its_env(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("mine").created_at(at(-10)).build(),
            TaskBuilder::new("theirs")
                .env(OTHER_ENV)
                .created_at(at(-500))
                .build(),
            TaskBuilder::new("theirs-later")
                .env(OTHER_ENV)
                .wait_until(at(5))
                .build(),
            TaskBuilder::new("theirs-sms")
                .env(OTHER_ENV)
                .kind(OTHER_KIND)
                .build(),
        ],
    )
    .await;
    let stats = inspect(&store, at(0)).await;
    assert_eq!(stats.kinds.keys().collect::<Vec<_>>(), vec![KIND]);
    let k = &stats.kinds[KIND];
    assert_eq!(k.counts, StatusCounts::from([(TaskStatus::Pending, 1)]));
    assert_eq!(k.oldest_pending_since, Some(at(-10)));
    assert_eq!(k.next_due, None);
}

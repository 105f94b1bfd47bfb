//! What operators read besides listings: the filters a store serves
//! (`check_filter`), the creation-time range and id prefix of `find`, the
//! recurrence generators, the queues of resource keys and the documents
//! that are not tasks.
//!
//! A store may refuse a filter or a read it cannot serve from an index
//! ([`StoreError::Unsupported`], Firestore); these tests check that the
//! refusal is said up front and kept by the read itself, and that what is
//! served is right.

use oncetask_core::store::TaskFilter;
use oncetask_core::{Recurrence, Store, StoreError, Task, TaskStatus};

use crate::StoreFactory;
use crate::support::*;

/// `find`'s ids for `filter`, or `None` when the store refuses it: then
/// `check_filter` said so first, and `find` refuses it the same way.
pub(crate) async fn served_ids<S: Store>(store: &S, filter: &TaskFilter) -> Option<Vec<String>> {
    match store.check_filter(filter) {
        Ok(()) => Some(
            store
                .find(filter)
                .await
                .expect("store.find failed")
                .into_iter()
                .map(|t| t.id)
                .collect(),
        ),
        Err(StoreError::Unsupported(why)) => {
            assert!(!why.is_empty(), "a refusal says why");
            let found = store.find(filter).await;
            assert!(
                matches!(found, Err(StoreError::Unsupported(_))),
                "check_filter refused {filter:?} but find answered {found:?}"
            );
            None
        }
        Err(other) => panic!("check_filter answers Ok or Unsupported, not {other:?}"),
    }
}

/// Every store serves the filters an operator starts from: kind, resource
/// key, open tasks and a creation-time range, alone and together.
pub async fn every_store_serves_kind_key_open_tasks_and_a_time_range(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let base = TaskFilter::env(ENV, at(0));
    let shapes = [
        base.clone(),
        base.clone().kind(KIND),
        base.clone().resource_key("K"),
        base.clone().kind(KIND).resource_key("K").not_done(),
        base.clone().not_done(),
        base.clone()
            .kind(KIND)
            .created_from(at(1))
            .created_until(at(2)),
        base.clone().status(TaskStatus::Failed),
    ];
    for filter in shapes {
        assert!(
            store.check_filter(&filter).is_ok(),
            "{filter:?} must be served"
        );
    }
}

/// A filter `check_filter` refuses is refused by `find` too, with nothing
/// read; one it serves is answered.
pub async fn a_filter_the_store_refuses_is_refused_by_find_too(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("a-1").priority(3).build(),
            TaskBuilder::new("b-1").build(),
        ],
    )
    .await;
    let base = TaskFilter::env(ENV, at(0));
    let mut filters = vec![base.clone().priority(3), base.clone().id_prefix("a-")];
    for status in TaskStatus::ALL {
        filters.push(base.clone().status(status));
    }
    for filter in filters {
        served_ids(&store, &filter).await;
    }
}

/// `created_from` and `created_until` bound the listing at both ends,
/// inclusively.
pub async fn find_filters_by_a_creation_time_range_inclusive_at_both_ends(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let tasks = (0..5)
        .map(|i| {
            TaskBuilder::new(&format!("t{i}"))
                .created_at(at(i * 10))
                .build()
        })
        .collect();
    seed(&store, tasks).await;
    let filter = TaskFilter::env(ENV, at(0))
        .created_from(at(10))
        .created_until(at(30));
    assert_eq!(
        served_ids(&store, &filter).await,
        Some(vec!["t1".to_owned(), "t2".to_owned(), "t3".to_owned()])
    );
    let until = TaskFilter::env(ENV, at(0)).created_until(at(5)).limit(10);
    assert_eq!(
        served_ids(&store, &until).await,
        Some(vec!["t0".to_owned()])
    );
}

/// An id prefix lists only ids that start with it, in listing order (or
/// is refused).
pub async fn find_filters_by_id_prefix(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("user-2").created_at(at(2)).build(),
            TaskBuilder::new("order-1").created_at(at(1)).build(),
            TaskBuilder::new("user-1").created_at(at(3)).build(),
            TaskBuilder::new("use").created_at(at(0)).build(),
            TaskBuilder::new("user-3").env(OTHER_ENV).build(),
        ],
    )
    .await;
    let filter = TaskFilter::env(ENV, at(0)).id_prefix("user-");
    if let Some(ids) = served_ids(&store, &filter).await {
        assert_eq!(ids, vec!["user-2", "user-1"]);
        let paged = filter.clone().limit(1);
        assert_eq!(
            served_ids(&store, &paged).await,
            Some(vec!["user-2".into()])
        );
    }
}

fn generator(id: &str, env: &str) -> Task {
    let mut task = TaskBuilder::new(id).env(env).build();
    task.recurrence =
        Some(Recurrence::new("FREQ=DAILY", "2025-01-06T09:00:00Z").expect("a valid rule"));
    task
}

/// `find_generators` lists the tasks with a recurrence of its env only,
/// up to its limit, and forgets deleted ones.
pub async fn find_generators_lists_the_envs_generators_up_to_the_limit(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            generator("daily-a", ENV),
            TaskBuilder::new("plain").build(),
            generator("daily-b", ENV),
            generator("daily-prod", OTHER_ENV),
            TaskBuilder::new("occurrence").build(),
        ],
    )
    .await;
    let found = store
        .find_generators(ENV, 10)
        .await
        .expect("find_generators");
    assert_eq!(sorted_ids(&found), vec!["daily-a", "daily-b"]);
    assert!(found.iter().all(Task::is_generator));
    let one = store
        .find_generators(ENV, 1)
        .await
        .expect("find_generators");
    assert_eq!(one.len(), 1);
    delete(&store, &["daily-a"]).await;
    let left = store
        .find_generators(ENV, 10)
        .await
        .expect("find_generators");
    assert_eq!(ids(&left), vec!["daily-b"]);
}

/// `open_resource_keys` groups the open tasks by key, busiest first, with
/// their leased count, kinds and oldest creation; finished tasks and tasks
/// without a key do not count. A store may refuse it.
pub async fn open_resource_keys_groups_open_tasks_busiest_first(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("k1").key("K").created_at(at(5)).build(),
            TaskBuilder::new("k2")
                .key("K")
                .kind(OTHER_KIND)
                .created_at(at(2))
                .leased_until(at(100))
                .build(),
            TaskBuilder::new("l1").key("L").created_at(at(1)).build(),
            TaskBuilder::new("m-done")
                .key("M")
                .finished(TaskStatus::Completed, at(3))
                .build(),
            TaskBuilder::new("none").build(),
            TaskBuilder::new("k-prod").key("K").env(OTHER_ENV).build(),
        ],
    )
    .await;
    let queues = match store.open_resource_keys(ENV, None, at(10), 10).await {
        Ok(queues) => queues,
        Err(StoreError::Unsupported(why)) => {
            assert!(!why.is_empty());
            return;
        }
        Err(e) => panic!("open_resource_keys: {e}"),
    };
    assert!(queues.complete);
    let keys: Vec<(&str, u64, u64)> = queues
        .keys
        .iter()
        .map(|q| (q.resource_key.as_str(), q.open, q.leased))
        .collect();
    assert_eq!(keys, vec![("K", 2, 1), ("L", 1, 0)]);
    assert_eq!(queues.keys[0].kinds, vec![KIND, OTHER_KIND]);
    assert_eq!(queues.keys[0].oldest_created_at, at(2));
    let of_kind = store
        .open_resource_keys(ENV, Some(OTHER_KIND), at(10), 10)
        .await
        .expect("open_resource_keys");
    let keys: Vec<(&str, u64)> = of_kind
        .keys
        .iter()
        .map(|q| (q.resource_key.as_str(), q.open))
        .collect();
    assert_eq!(keys, vec![("K", 1)]);
    let top = store
        .open_resource_keys(ENV, None, at(10), 1)
        .await
        .expect("open_resource_keys");
    assert_eq!(top.keys.len(), 1);
    assert_eq!(top.keys[0].resource_key, "K");
}

/// `find_undecodable` lists the documents of its env that are not tasks,
/// with a reason, and no task. A store may refuse it.
pub async fn find_undecodable_lists_documents_that_are_not_tasks_with_reasons(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    if !factory.insert_undecodable(&store, "bad", ENV, KIND).await {
        eprintln!("note: backend cannot store undecodable documents; test skipped");
        return;
    }
    factory
        .insert_undecodable(&store, "bad-prod", OTHER_ENV, KIND)
        .await;
    seed(&store, vec![TaskBuilder::new("good").build()]).await;
    match store.find_undecodable(ENV, 10).await {
        Ok(found) => {
            let ids: Vec<&str> = found.iter().map(|u| u.id.as_str()).collect();
            assert_eq!(ids, vec!["bad"]);
            assert!(!found[0].reason.is_empty(), "{found:?}");
        }
        Err(StoreError::Unsupported(why)) => assert!(!why.is_empty()),
        Err(e) => panic!("find_undecodable: {e}"),
    }
}

//! Reads: `get`, `find`, `count_by_status`, `next_due` (docs/semantics.md S6.5,
//! S6.6; W5, W17).

use oncetask_core::lifecycle;
use oncetask_core::store::{Fetched, StatusCounts, TaskCursor, TaskFilter};
use oncetask_core::{Outcome, Store, Task, TaskStatus};

use crate::StoreFactory;
use crate::operator::served_ids;
use crate::support::*;

async fn find<S: Store>(store: &S, filter: &TaskFilter) -> Vec<Task> {
    store.find(filter).await.expect("store.find failed")
}

async fn find_ids<S: Store>(store: &S, filter: &TaskFilter) -> Vec<String> {
    find(store, filter)
        .await
        .into_iter()
        .map(|t| t.id)
        .collect()
}

async fn next_due<S: Store>(
    store: &S,
    after: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    store
        .next_due(ENV, KIND, after)
        .await
        .expect("store.next_due failed")
}

/// A task in each status at `at(0)`: pending ×2, waiting, leased,
/// cancellation pending, completed, failed. Returns nothing; ids are the
/// status names (`pending`, `pending-2`, ...).
async fn seed_every_status<S: Store>(store: &S, kind: &str) {
    let p = |id: &str| format!("{kind}-{id}");
    seed(
        store,
        vec![
            TaskBuilder::new(&p("pending")).kind(kind).build(),
            TaskBuilder::new(&p("pending-2")).kind(kind).build(),
            TaskBuilder::new(&p("waiting"))
                .kind(kind)
                .wait_until(at(100))
                .build(),
            TaskBuilder::new(&p("leased"))
                .kind(kind)
                .leased_until(at(100))
                .build(),
            TaskBuilder::new(&p("cancelling"))
                .kind(kind)
                .wait_until(at(100))
                .build(),
            TaskBuilder::new(&p("completed"))
                .kind(kind)
                .wait_until(at(100))
                .build(),
            TaskBuilder::new(&p("failed"))
                .kind(kind)
                .wait_until(at(100))
                .build(),
        ],
    )
    .await;
    apply(store, &p("cancelling"), |t| lifecycle::cancel(t, at(0)))
        .await
        .expect("cancel");
    for (id, outcome) in [
        ("completed", Outcome::Completed),
        ("failed", Outcome::Failed),
    ] {
        apply(store, &p(id), |t| {
            let mut done = t.clone();
            done.version += 1;
            done.attempts = 1;
            done.done_at = Some(at(0));
            done.outcome = Some(outcome);
            Ok(done)
        })
        .await
        .expect("finish");
    }
}

/// `get` answers in input order, omits missing ids and reads a repeated id once.
pub async fn get_returns_tasks_in_input_order_omitting_missing_and_duplicate_ids(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let [a, b, c] = ["a", "b", "c"].map(|id| TaskBuilder::new(id).build());
    seed(&store, vec![a.clone(), b.clone(), c.clone()]).await;
    let fetched: Vec<Task> = get_all(&store, &["c", "missing", "a", "c", "b"])
        .await
        .into_iter()
        .map(|f| match f {
            Fetched::Task(t) => t,
            Fetched::Undecodable(u) => panic!("unexpected undecodable {u:?}"),
        })
        .collect();
    assert_eq!(fetched, vec![c, a, b]);
}

/// `get` of no ids is empty.
pub async fn get_of_no_ids_returns_nothing(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(&store, vec![TaskBuilder::new("a").build()]).await;
    assert!(get_all(&store, &[]).await.is_empty());
}

/// `get` reports a document that is not a valid task instead of failing.
pub async fn get_reports_an_undecodable_document(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    if !factory.insert_undecodable(&store, "bad", ENV, KIND).await {
        eprintln!("note: backend cannot store undecodable documents; test skipped");
        return;
    }
    let good = TaskBuilder::new("good").build();
    seed(&store, vec![good.clone()]).await;
    let fetched = get_all(&store, &["good", "bad"]).await;
    assert_eq!(fetched.len(), 2, "{fetched:?}");
    assert!(matches!(&fetched[0], Fetched::Task(t) if *t == good));
    assert!(matches!(&fetched[1], Fetched::Undecodable(u) if u.id == "bad"));
}

/// `find` with a kind lists only that kind.
pub async fn find_filters_by_kind(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("e1").build(),
            TaskBuilder::new("s1").kind(OTHER_KIND).build(),
            TaskBuilder::new("e2").build(),
        ],
    )
    .await;
    let mut filter = TaskFilter::env(ENV, at(0));
    filter.kind = Some(KIND.to_owned());
    assert_eq!(find_ids(&store, &filter).await, vec!["e1", "e2"]);
    filter.kind = Some(OTHER_KIND.to_owned());
    assert_eq!(find_ids(&store, &filter).await, vec!["s1"]);
}

/// `find` with a priority lists only tasks of that priority, oldest first.
pub async fn find_filters_by_priority(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("high-1").priority(5).build(),
            TaskBuilder::new("plain").build(),
            TaskBuilder::new("low").priority(-3).build(),
            TaskBuilder::new("high-2")
                .priority(5)
                .created_at(at(1))
                .build(),
        ],
    )
    .await;
    let mut filter = TaskFilter::env(ENV, at(0)).priority(5);
    // A store may refuse a priority filter (see `operator`).
    let Some(found) = served_ids(&store, &filter).await else {
        return;
    };
    assert_eq!(found, vec!["high-1", "high-2"]);
    filter.priority = Some(0);
    assert_eq!(find_ids(&store, &filter).await, vec!["plain"]);
    filter.priority = Some(-3);
    assert_eq!(find_ids(&store, &filter).await, vec!["low"]);
    filter.priority = Some(10);
    assert!(find_ids(&store, &filter).await.is_empty());
}

/// `find` by resource key lists that key's tasks of every kind and status,
/// oldest first (W17: Go claimed this order but did not sort).
pub async fn find_filters_by_resource_key_across_kinds(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("k-late")
                .key("K")
                .created_at(at(30))
                .build(),
            TaskBuilder::new("k-sms")
                .kind(OTHER_KIND)
                .key("K")
                .created_at(at(10))
                .build(),
            TaskBuilder::new("l").key("L").created_at(at(0)).build(),
            TaskBuilder::new("k-early")
                .key("K")
                .created_at(at(20))
                .leased_until(at(100))
                .build(),
            TaskBuilder::new("none").created_at(at(0)).build(),
        ],
    )
    .await;
    let mut filter = TaskFilter::env(ENV, at(0));
    filter.resource_key = Some("K".to_owned());
    assert_eq!(
        find_ids(&store, &filter).await,
        vec!["k-sms", "k-early", "k-late"]
    );
}

/// Status filters use the status at the filter's `now` (each filter
/// checked where the store serves it: see `operator`).
pub async fn find_filters_by_status_at_now(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed_every_status(&store, KIND).await;
    let sorted = |found: Option<Vec<String>>| {
        found.map(|mut ids| {
            ids.sort();
            ids
        })
    };
    let mut filter = TaskFilter::env(ENV, at(0));
    filter.statuses = vec![TaskStatus::Waiting, TaskStatus::Leased];
    if let Some(found) = sorted(served_ids(&store, &filter).await) {
        assert_eq!(found, vec!["email-leased", "email-waiting"]);
    }

    filter.now = at(100);
    filter.statuses = vec![TaskStatus::Pending];
    if let Some(found) = sorted(served_ids(&store, &filter).await) {
        assert_eq!(
            found,
            vec![
                "email-leased",
                "email-pending",
                "email-pending-2",
                "email-waiting"
            ],
            "at 100 the wait and the lease are over"
        );
    }

    filter.statuses = vec![TaskStatus::Completed, TaskStatus::Failed];
    let found = sorted(served_ids(&store, &filter).await);
    assert_eq!(
        found,
        Some(vec![
            "email-completed".to_owned(),
            "email-failed".to_owned()
        ]),
        "every store lists finished tasks by outcome"
    );

    filter.statuses = vec![TaskStatus::CancellationPending];
    let found = served_ids(&store, &filter).await;
    assert_eq!(found, Some(vec!["email-cancelling".to_owned()]));

    filter.statuses = vec![
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::CancellationPending,
    ];
    if let Some(found) = sorted(served_ids(&store, &filter).await) {
        assert_eq!(
            found,
            vec!["email-cancelling", "email-completed", "email-failed"]
        );
    }
}

/// `not_done` leaves terminal tasks out.
pub async fn find_not_done_excludes_terminal_tasks(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed_every_status(&store, KIND).await;
    let mut filter = TaskFilter::env(ENV, at(0));
    filter.not_done = true;
    let mut found = find_ids(&store, &filter).await;
    found.sort();
    assert_eq!(
        found,
        vec![
            "email-cancelling",
            "email-leased",
            "email-pending",
            "email-pending-2",
            "email-waiting"
        ]
    );
}

/// `find` lists oldest `created_at` first, ties by id.
pub async fn find_orders_by_created_at_then_id(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("c").created_at(at(5)).build(),
            TaskBuilder::new("b").created_at(at(-5)).build(),
            TaskBuilder::new("z").created_at(at(0)).build(),
            TaskBuilder::new("a").created_at(at(0)).build(),
        ],
    )
    .await;
    assert_eq!(
        find_ids(&store, &TaskFilter::env(ENV, at(0))).await,
        vec!["b", "a", "z", "c"]
    );
}

/// `offset` skips matches and `limit` caps them, after ordering.
pub async fn find_pages_with_offset_and_limit(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let tasks = (0..5)
        .map(|i| TaskBuilder::new(&format!("t{i}")).created_at(at(i)).build())
        .collect();
    seed(&store, tasks).await;
    let page = |offset: usize, limit: Option<usize>| {
        let mut filter = TaskFilter::env(ENV, at(0));
        filter.offset = offset;
        filter.limit = limit;
        filter
    };
    assert_eq!(find_ids(&store, &page(1, Some(2))).await, vec!["t1", "t2"]);
    assert_eq!(find_ids(&store, &page(4, Some(10))).await, vec!["t4"]);
    assert_eq!(
        find_ids(&store, &page(2, None)).await,
        vec!["t2", "t3", "t4"]
    );
    assert!(find_ids(&store, &page(5, None)).await.is_empty());
    assert!(find_ids(&store, &page(0, Some(0))).await.is_empty());
}

/// Pages `filter` `limit` tasks at a time by cursor ([`TaskFilter::after`]),
/// checking that each page but the last is full; the ids in order.
async fn page_through<S: Store>(store: &S, filter: &TaskFilter, limit: usize) -> Vec<String> {
    let mut filter = filter.clone();
    filter.limit = Some(limit);
    let mut seen = Vec::new();
    for _ in 0..100 {
        let page = find(store, &filter).await;
        assert!(page.len() <= limit, "a page holds at most its limit");
        seen.extend(page.iter().map(|t| t.id.clone()));
        match page.last() {
            Some(last) if page.len() == limit => filter.after = Some(TaskCursor::of(last)),
            _ => return seen,
        }
    }
    panic!("paging did not end: {seen:?}");
}

/// Keyset paging: `after` starts just past a cursor in listing order
/// (`created_at`, then id: ties on the time are broken by id), with
/// `offset` and `limit` applied after it. Paging through a listing by
/// cursor yields each task once, in order, with a kind or status filter
/// too; a cursor need not name a stored task; tasks created before the
/// cursor meanwhile do not shift the pages after it.
pub async fn find_pages_with_a_cursor(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let ms = chrono::TimeDelta::milliseconds(250);
    // Created at 0, 0, 1.25, 1.25, 2, 2, 3 s; every third another kind; t4
    // and t5 waiting.
    let tasks = (0..7i64)
        .map(|i| {
            let created = at(i / 2)
                + if i / 2 == 1 {
                    ms
                } else {
                    chrono::TimeDelta::zero()
                };
            let mut b = TaskBuilder::new(&format!("t{i}"))
                .created_at(created)
                .kind(if i % 3 == 0 { OTHER_KIND } else { KIND });
            if i == 4 || i == 5 {
                b = b.wait_until(at(100));
            }
            b.build()
        })
        .collect();
    seed(&store, tasks).await;
    let all = TaskFilter::env(ENV, at(0));
    let every = ["t0", "t1", "t2", "t3", "t4", "t5", "t6"];
    assert_eq!(find_ids(&store, &all).await, every);
    for limit in [1, 2, 3, 7, 8] {
        assert_eq!(
            page_through(&store, &all, limit).await,
            every,
            "limit {limit}"
        );
    }
    let mut of_kind = all.clone();
    of_kind.kind = Some(KIND.to_owned());
    assert_eq!(
        page_through(&store, &of_kind, 2).await,
        ["t1", "t2", "t4", "t5"]
    );
    let mut pending = all.clone();
    pending.statuses = vec![TaskStatus::Pending];
    // Where the store serves a pending listing (see `operator`).
    if store.check_filter(&pending).is_ok() {
        assert_eq!(
            page_through(&store, &pending, 2).await,
            ["t0", "t1", "t2", "t3", "t6"]
        );
    }

    let after = |created_at, id: &str| {
        let mut f = all.clone();
        f.after = Some(TaskCursor {
            created_at,
            id: id.to_owned(),
        });
        f
    };
    // Within a tie, after the cursor's id; a cursor of no stored task.
    assert_eq!(
        find_ids(&store, &after(at(0), "t0")).await[..2],
        ["t1", "t2"]
    );
    assert_eq!(
        find_ids(&store, &after(at(0), "t05")).await[..2],
        ["t1", "t2"]
    );
    assert_eq!(
        find_ids(&store, &after(at(1) + ms, "t3")).await,
        ["t4", "t5", "t6"]
    );
    assert!(find_ids(&store, &after(at(3), "t6")).await.is_empty());
    let mut skipped = after(at(0), "t1");
    skipped.offset = 1;
    skipped.limit = Some(2);
    assert_eq!(find_ids(&store, &skipped).await, ["t3", "t4"]);

    // A task created before the cursor is not on the next page; one after it is.
    seed(
        &store,
        vec![
            TaskBuilder::new("early").created_at(at(-10)).build(),
            TaskBuilder::new("late").created_at(at(10)).build(),
        ],
    )
    .await;
    assert_eq!(find_ids(&store, &after(at(2), "t5")).await, ["t6", "late"]);
}

/// Documents that cannot be decoded have a count of their own and are in
/// no status, with a kind and without, and in the inspector: a kind's
/// tasks count as before.
pub async fn undecodable_documents_are_counted_apart_from_every_status(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed_every_status(&store, KIND).await;
    if !factory.insert_undecodable(&store, "bad-1", ENV, KIND).await {
        eprintln!("note: backend cannot hold an undecodable document; not checked");
        return;
    }
    assert!(
        factory
            .insert_undecodable(&store, "bad-2", ENV, OTHER_KIND)
            .await
    );
    assert!(
        factory
            .insert_undecodable(&store, "bad-3", OTHER_ENV, KIND)
            .await
    );
    let mut expected = StatusCounts::from([
        (TaskStatus::Pending, 2),
        (TaskStatus::Waiting, 1),
        (TaskStatus::Leased, 1),
        (TaskStatus::CancellationPending, 1),
        (TaskStatus::Completed, 1),
        (TaskStatus::Failed, 1),
    ]);
    expected.undecodable = 1;
    let of_kind = store
        .count_by_status(ENV, Some(KIND), at(0))
        .await
        .expect("count_by_status");
    assert_eq!(of_kind, expected);
    assert_eq!(of_kind.tasks(), 7);
    // Without a kind, also the one of a kind that has no task.
    expected.undecodable = 2;
    let everything = store
        .count_by_status(ENV, None, at(0))
        .await
        .expect("count_by_status");
    assert_eq!(everything, expected);
    let only_bad = store
        .count_by_status(ENV, Some(OTHER_KIND), at(0))
        .await
        .expect("count_by_status");
    assert_eq!(only_bad.tasks(), 0);
    assert_eq!(only_bad.undecodable, 1);

    let stats = store.inspect(ENV, at(0)).await.expect("inspect");
    let kind = stats.kind(KIND).expect("the kind is inspected");
    assert_eq!(kind.total(), 7);
    assert_eq!(kind.undecodable(), 1);
    assert_eq!(kind.count(TaskStatus::Pending), 2);
}

/// Counts per status at `now`; statuses with no task are absent; other
/// envs are not counted.
pub async fn count_by_status_counts_each_status_at_now(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed_every_status(&store, KIND).await;
    seed(
        &store,
        vec![TaskBuilder::new("elsewhere").env(OTHER_ENV).build()],
    )
    .await;
    let counts = store
        .count_by_status(ENV, None, at(0))
        .await
        .expect("count_by_status");
    let expected = StatusCounts::from([
        (TaskStatus::Pending, 2),
        (TaskStatus::Waiting, 1),
        (TaskStatus::Leased, 1),
        (TaskStatus::CancellationPending, 1),
        (TaskStatus::Completed, 1),
        (TaskStatus::Failed, 1),
    ]);
    assert_eq!(counts, expected);
    let later = store
        .count_by_status(ENV, None, at(100))
        .await
        .expect("count_by_status");
    assert_eq!(later.get(&TaskStatus::Pending), Some(&4));
    assert_eq!(later.get(&TaskStatus::Waiting), None);
    assert_eq!(later.get(&TaskStatus::Leased), None);
}

/// With a kind, only that kind is counted; without, every kind.
pub async fn count_by_status_filters_by_kind(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed_every_status(&store, KIND).await;
    seed(
        &store,
        vec![
            TaskBuilder::new("s1").kind(OTHER_KIND).build(),
            TaskBuilder::new("s2").kind(OTHER_KIND).build(),
        ],
    )
    .await;
    let only_sms = store
        .count_by_status(ENV, Some(OTHER_KIND), at(0))
        .await
        .expect("count_by_status");
    assert_eq!(only_sms, StatusCounts::from([(TaskStatus::Pending, 2)]));
    let all = store
        .count_by_status(ENV, None, at(0))
        .await
        .expect("count_by_status");
    assert_eq!(all.get(&TaskStatus::Pending), Some(&4));
    assert_eq!(all.values().sum::<u64>(), 9);
}

/// `next_due` is the earliest future `wait_until` of a not-done task.
pub async fn next_due_returns_the_earliest_wait_until_after_the_given_time(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("ready").build(),
            TaskBuilder::new("later").wait_until(at(100)).build(),
            TaskBuilder::new("sooner").wait_until(at(50)).build(),
        ],
    )
    .await;
    assert_eq!(next_due(&store, at(0)).await, Some(at(50)));
}

/// A lease expiry is a due time too (the task can be re-claimed then).
pub async fn next_due_includes_lease_expiries(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("waiting").wait_until(at(50)).build(),
            TaskBuilder::new("leased").leased_until(at(30)).build(),
        ],
    )
    .await;
    assert_eq!(next_due(&store, at(0)).await, Some(at(30)));
}

/// Only due times strictly after `after` count; none left gives `None`.
pub async fn next_due_is_strictly_after_the_given_time(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("a").wait_until(at(50)).build(),
            TaskBuilder::new("b").wait_until(at(60)).build(),
        ],
    )
    .await;
    assert_eq!(next_due(&store, at(49)).await, Some(at(50)));
    assert_eq!(next_due(&store, at(50)).await, Some(at(60)));
    assert_eq!(next_due(&store, at(60)).await, None);
}

/// A task both waiting and leased is due at the later of the two.
pub async fn next_due_uses_the_later_of_wait_and_lease(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("wait-later")
                .wait_until(at(100))
                .leased_until(at(30))
                .build(),
            TaskBuilder::new("lease-later")
                .wait_until(at(150))
                .leased_until(at(200))
                .build(),
        ],
    )
    .await;
    assert_eq!(next_due(&store, at(0)).await, Some(at(100)));
    assert_eq!(next_due(&store, at(100)).await, Some(at(200)));
}

/// Done tasks, other kinds and other envs never make a kind's workers wake.
pub async fn next_due_ignores_done_tasks_other_kinds_and_envs(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let mut done = TaskBuilder::new("done").wait_until(at(10)).build();
    done.done_at = Some(at(0));
    done.attempts = 1;
    done.outcome = Some(Outcome::Completed);
    seed(
        &store,
        vec![
            done,
            TaskBuilder::new("sms")
                .kind(OTHER_KIND)
                .wait_until(at(20))
                .build(),
            TaskBuilder::new("prod")
                .env(OTHER_ENV)
                .wait_until(at(30))
                .build(),
            TaskBuilder::new("mine").wait_until(at(40)).build(),
        ],
    )
    .await;
    assert_eq!(next_due(&store, at(0)).await, Some(at(40)));
    assert_eq!(next_due(&store, at(40)).await, None);
}

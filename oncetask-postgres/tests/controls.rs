//! Postgres-specific tests of retention, pause and rate limits (issue 21)
//! beyond the shared conformance suite: rate limiters exact across pools
//! (as separate processes would have), the limiter rule on one row, the
//! pause notice, the prune swap's columns, pruner pages and storage
//! figures.
//!
//! Each test works in a schema of its own and drops it at the end. The
//! server is `ONCETASK_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); an unreachable server fails
//! the tests.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use oncetask_core::lifecycle;
use oncetask_core::store::{Change, Fetched, FinishedQuery, StartsRequest, Swap, SwapOutcome};
use oncetask_core::{AttemptError, Outcome, Store, Task, TaskStatus};
use oncetask_postgres::PostgresStore;

mod common;

use common::{ENV, drop_schema, new_schema, store};

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

/// A task of `kind` that ended with `status` at `done` (seconds after
/// [`at`]'s origin), with a payload and what its end left.
fn finished(id: &str, kind: &str, status: TaskStatus, done: i64) -> Task {
    let mut task = Task::new(id, kind, ENV, at(done - 100));
    task.data
        .insert("to".into(), serde_json::json!("someone@example.com"));
    task.done_at = Some(at(done));
    match status {
        TaskStatus::Completed => {
            task.outcome = Some(Outcome::Completed);
            task.attempts = 1;
            task.result = Some(serde_json::json!({"sent": true}));
        }
        TaskStatus::Failed => {
            task.outcome = Some(Outcome::Failed);
            task.attempts = 2;
            task.errors = vec![
                AttemptError {
                    at: at(done - 1),
                    error: "first".into(),
                },
                AttemptError {
                    at: at(done),
                    error: "second".into(),
                },
            ];
        }
        TaskStatus::Cancelled => {
            task.outcome = Some(Outcome::Cancelled);
            task.is_cancelled = true;
            task.cancelled_at = Some(at(done - 1));
        }
        other => panic!("{other:?} is not a terminal status"),
    }
    task
}

/// Prunes stored tasks with one swap call; every swap applies.
async fn prune(store: &PostgresStore, tasks: &[Task], now: DateTime<Utc>) -> Vec<Task> {
    let swaps: Vec<Swap> = tasks
        .iter()
        .map(|t| {
            Swap::new(
                t,
                Change::Prune,
                &lifecycle::prune(t, now).expect("finished"),
            )
        })
        .collect();
    for outcome in store.swap(&swaps).await.expect("swap") {
        assert!(
            matches!(outcome, SwapOutcome::Applied { .. }),
            "{outcome:?}"
        );
    }
    swaps.into_iter().map(Swap::into_task).collect()
}

async fn get(store: &PostgresStore, id: &str) -> Task {
    match store.get(&[id.to_owned()]).await.expect("get").as_slice() {
        [Fetched::Task(task)] => task.clone(),
        other => panic!("{id}: {other:?}"),
    }
}

/// A prune swap writes the emptied payload, result and errors, the
/// rewritten attempts and `pruned_at`, and nothing else; swaps of other
/// changes never write the payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_swap_writes_the_tombstone_and_other_swaps_keep_the_payload() {
    let store = store(&new_schema()).await;
    let tasks = vec![
        finished("c", "k", TaskStatus::Completed, 10),
        finished("f", "k", TaskStatus::Failed, 10),
        finished("x", "k", TaskStatus::Cancelled, 10),
    ];
    store.create(tasks.clone()).await.expect("create");
    let pruned = prune(&store, &tasks, at(1_000)).await;
    for (before, after) in tasks.iter().zip(&pruned) {
        let stored = get(&store, &before.id).await;
        assert_eq!(&stored, after);
        assert!(
            stored.is_tombstone() && stored.data.is_empty(),
            "{stored:?}"
        );
        assert_eq!(stored.status(at(2_000)), before.status(at(2_000)));
        assert_eq!(stored.pruned_at, Some(at(1_000)));
    }
    // A reset (not a prune) writes neither the payload nor pruned_at: the
    // task created with a payload keeps it.
    let live = finished("live", "k", TaskStatus::Failed, 10);
    store.create(vec![live.clone()]).await.expect("create");
    let reset = lifecycle::reset(&live).expect("done");
    let outcome = store
        .swap(&[Swap::new(&live, Change::Reset, &reset)])
        .await
        .expect("swap");
    assert!(matches!(outcome.as_slice(), [SwapOutcome::Applied { .. }]));
    let stored = get(&store, "live").await;
    assert_eq!(stored.data, live.data);
    assert_eq!(stored.pruned_at, None);
    drop_schema(&store).await;
}

/// Pages of `find_finished` of every status, full documents and
/// tombstones, are exactly what [`FinishedQuery::matches`] keeps of the
/// stored tasks, in `(done_at, id)` order, page after page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruner_pages_are_what_the_query_matches_in_finish_order() {
    let store = store(&new_schema()).await;
    let statuses = [
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];
    let mut tasks = Vec::new();
    for i in 0..60i64 {
        let kind = if i % 7 == 0 { "other" } else { "k" };
        // Several tasks end at the same instant: the id breaks ties.
        tasks.push(finished(
            &format!("t{i:02}"),
            kind,
            statuses[(i % 3) as usize],
            i / 4,
        ));
    }
    let mut pending = Task::new("pending", "k", ENV, at(0));
    pending.data.insert("n".into(), serde_json::json!(1));
    tasks.push(pending);
    store.create(tasks.clone()).await.expect("create");
    let to_prune: Vec<Task> = tasks
        .iter()
        .filter(|t| t.is_done())
        .step_by(4)
        .cloned()
        .collect();
    let pruned = prune(&store, &to_prune, at(100)).await;
    for t in &mut tasks {
        if let Some(p) = pruned.iter().find(|p| p.id == t.id) {
            *t = p.clone();
        }
    }
    for status in statuses {
        for tombstones in [false, true] {
            let mut query = FinishedQuery::new(ENV, "k", status, at(11)).limit(3);
            if tombstones {
                query = query.tombstones();
            }
            let mut expected: Vec<&Task> = tasks.iter().filter(|t| query.matches(t)).collect();
            expected.sort_by(|a, b| (a.done_at, &a.id).cmp(&(b.done_at, &b.id)));
            let mut found = Vec::new();
            loop {
                let page = store.find_finished(&query).await.expect("find_finished");
                assert!(page.len() <= 3);
                let Some(last) = page.last() else { break };
                query = query.after_task(last);
                found.extend(page);
            }
            let found: Vec<&str> = found.iter().map(|t| t.id.as_str()).collect();
            let expected: Vec<&str> = expected.iter().map(|t| t.id.as_str()).collect();
            assert!(!expected.is_empty());
            assert_eq!(found, expected, "{status:?}, tombstones: {tombstones}");
        }
    }
    let none = FinishedQuery::new(ENV, "k", TaskStatus::Completed, at(11)).limit(0);
    assert!(
        store
            .find_finished(&none)
            .await
            .expect("limit 0")
            .is_empty()
    );
    drop_schema(&store).await;
}

/// Eight callers on four pools (as separate processes would have) take
/// from one kind limiter of 100 and one key limiter of 30 in the same
/// window, in batches naming both, until nothing is left; the first takes
/// race to insert the rows. Each limiter grants exactly its limit in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limiters_grant_exactly_their_limit_to_concurrent_callers() {
    let schema = new_schema();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(store(&schema).await);
    }
    let now = Utc::now();
    let callers = (0..8u32).map(|c| {
        let store = stores[c as usize % 4].clone();
        async move {
            let (mut kind_total, mut key_total) = (0u32, 0u32);
            let mut round = 0u32;
            loop {
                let count = 1 + (c * 7 + round) % 6;
                round += 1;
                let requests = [
                    StartsRequest::new(ENV, "k", None, now, 3_600_000, 100, count),
                    StartsRequest::new(ENV, "k", Some("r".into()), now, 3_600_000, 30, count),
                ];
                let granted = store.take_starts(&requests).await.expect("take");
                assert!(granted[0] <= count && granted[1] <= count, "{granted:?}");
                kind_total += granted[0];
                key_total += granted[1];
                if granted == [0, 0] {
                    return (kind_total, key_total);
                }
            }
        }
    });
    let totals = futures::future::join_all(callers).await;
    let kind: u32 = totals.iter().map(|t| t.0).sum();
    let key: u32 = totals.iter().map(|t| t.1).sum();
    assert_eq!((kind, key), (100, 30), "{totals:?}");
    drop_schema(&stores[0]).await;
}

/// The limiter rule of [`StartsRequest::grant`] and
/// [`StartsRequest::give_back`] on one row: a limiter named twice in a
/// batch is decided in order, a new window starts afresh, a lagging
/// caller's older window gets nothing and changes nothing, starts given
/// back are taken again, and a key `""` is not the kind's own limiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiters_follow_the_window_rule() {
    let store = store(&new_schema()).await;
    let period = 1_000;
    let t0 = at(0);
    let t1 = at(1);
    let take = |now, key: Option<&str>, limit, count| {
        StartsRequest::new(ENV, "k", key.map(str::to_owned), now, period, limit, count)
    };
    let granted = store
        .take_starts(&[
            take(t0, None, 100, 60),
            take(t0, None, 100, 60),
            take(t0, Some(""), 10, 4),
            take(t0, None, 100, 0),
        ])
        .await
        .expect("take");
    assert_eq!(granted, [60, 40, 4, 0]);
    store
        .return_starts(&[take(t0, None, 100, 15), take(t0, None, 100, 5)])
        .await
        .expect("give back");
    assert_eq!(
        store
            .take_starts(&[take(t0, None, 100, 50)])
            .await
            .expect("take"),
        [20],
        "the 20 given back"
    );
    assert_eq!(
        store
            .take_starts(&[take(t1, None, 100, 70)])
            .await
            .expect("take"),
        [70],
        "a new window"
    );
    // A lagging clock: the old window is gone for everyone.
    assert_eq!(
        store
            .take_starts(&[take(t0, None, 100, 5)])
            .await
            .expect("take"),
        [0]
    );
    store
        .return_starts(&[take(t0, None, 100, 70)])
        .await
        .expect("a give-back to a past window changes nothing");
    assert_eq!(
        store
            .take_starts(&[take(t1, None, 100, 50)])
            .await
            .expect("take"),
        [30]
    );
    store
        .return_starts(&[take(t1, None, 100, 500)])
        .await
        .expect("never below 0");
    assert_eq!(
        store
            .take_starts(&[take(t1, None, 100, 500)])
            .await
            .expect("take"),
        [100]
    );
    // The per-key limiter of key "" kept its own count.
    assert_eq!(
        store
            .take_starts(&[take(t0, Some(""), 10, 9)])
            .await
            .expect("take"),
        [6]
    );
    assert_eq!(
        store
            .take_starts(&[take(t1, Some("r"), 0, 3)])
            .await
            .expect("take"),
        [0],
        "a limit of 0"
    );
    drop_schema(&store).await;
}

/// A subscription to [`ENV`] that hears: the listener connects in the
/// background, so probes (kind `probe`) are created until one is heard.
async fn listening(
    store: &PostgresStore,
) -> futures::stream::BoxStream<'static, oncetask_core::store::Notification> {
    let mut notices = store.subscribe(ENV).expect("a runtime");
    let probe = async {
        loop {
            store
                .create(vec![Task::new(
                    format!("probe-{}", uuid::Uuid::new_v4()),
                    "probe",
                    ENV,
                    Utc::now(),
                )])
                .await
                .expect("create");
            if let Ok(Some(n)) =
                tokio::time::timeout(Duration::from_millis(200), notices.next()).await
                && n.kind == "probe"
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), probe)
        .await
        .expect("the listener hears");
    notices
}

/// The next notice not of a probe, within 5 s.
async fn next_notice(
    notices: &mut futures::stream::BoxStream<'static, oncetask_core::store::Notification>,
) -> oncetask_core::store::Notification {
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), notices.next())
            .await
            .expect("a notice")
            .expect("open");
        if n.kind != "probe" {
            return n;
        }
    }
}

/// Pausing stores the kind (once), resuming removes it, and each change,
/// not a repeat, is announced on the env's changes channel as touching
/// held tasks; other envs see nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_is_stored_and_announced_as_touching_held_tasks() {
    let store = store(&new_schema()).await;
    let mut notices = listening(&store).await;
    assert!(store.set_paused(ENV, "zeta", true).await.expect("pause"));
    assert!(store.set_paused(ENV, "alpha", true).await.expect("pause"));
    assert!(!store.set_paused(ENV, "alpha", true).await.expect("again"));
    assert!(
        store
            .set_paused("other", "beta", true)
            .await
            .expect("pause")
    );
    assert_eq!(
        store.paused_kinds(ENV).await.expect("paused"),
        ["alpha", "zeta"]
    );
    assert!(store.set_paused(ENV, "zeta", false).await.expect("resume"));
    assert!(!store.set_paused(ENV, "zeta", false).await.expect("again"));
    assert_eq!(store.paused_kinds(ENV).await.expect("paused"), ["alpha"]);
    assert_eq!(store.paused_kinds("other").await.expect("paused"), ["beta"]);
    let mut heard = Vec::new();
    while heard.len() < 3 {
        heard.push(next_notice(&mut notices).await);
    }
    let kinds: Vec<&str> = heard.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(kinds, ["zeta", "alpha", "zeta"], "{heard:?}");
    assert!(heard.iter().all(|n| n.may_touch_claimed), "{heard:?}");
    // Nothing more: the repeats and the other env sent nothing.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), notices.next())
            .await
            .is_err()
    );
    drop_schema(&store).await;
}

/// Storage figures: rows and bytes per status (tombstones apart, other
/// envs and undecodable rows left out of them), and the relation sizes,
/// each labelled with the function that measured it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_stats_count_and_size_rows_per_status_and_report_relations() {
    let store = store(&new_schema()).await;
    let mut big = finished("big", "k", TaskStatus::Completed, 10);
    // Random text, which compression cannot shrink much.
    let blob: String = (0..100).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    big.data.insert("blob".into(), serde_json::json!(blob));
    let tasks = vec![
        Task::new("p1", "k", ENV, at(0)),
        Task::new("p2", "k", ENV, at(0)),
        big.clone(),
        finished("c", "k", TaskStatus::Completed, 10),
        finished("f", "k", TaskStatus::Failed, 10),
        finished("gone", "k", TaskStatus::Completed, 10),
        Task::new("elsewhere", "k", "other", at(0)),
    ];
    store.create(tasks.clone()).await.expect("create");
    prune(&store, &tasks[5..6], at(20)).await;
    sqlx::query(&format!(
        "INSERT INTO {} (id, kind, env, data, created_at, attempts, cancellation_attempts, \
           errors, is_cancelled, version) \
         VALUES ('broken', 'k', '{ENV}', '[]'::jsonb, now(), 0, 0, '[]'::jsonb, false, 0)",
        store.table()
    ))
    .execute(store.pool())
    .await
    .expect("an undecodable row");
    let stats = store.storage_stats(ENV, at(30)).await.expect("stats");
    eprintln!("{stats:#?}");
    let of = |s: TaskStatus| stats.by_status.get(&s).copied().unwrap_or_default();
    assert_eq!(of(TaskStatus::Pending).documents, 2);
    assert_eq!(of(TaskStatus::Completed).documents, 2);
    assert_eq!(of(TaskStatus::Failed).documents, 1);
    assert_eq!(stats.tombstones.documents, 1);
    assert_eq!(stats.documents(), 6, "other envs and the broken row apart");
    let completed = of(TaskStatus::Completed).bytes.expect("sized");
    let tombstone = stats.tombstones.bytes.expect("sized");
    assert!(tombstone > 0 && completed > 2 * tombstone, "{stats:#?}");
    assert!(stats.method.contains("pg_column_size"), "{}", stats.method);
    for function in ["pg_table_size", "pg_indexes_size", "pg_total_relation_size"] {
        let figure = stats
            .figures
            .iter()
            .find(|f| f.label.contains(function) && f.label.contains(store.table()))
            .unwrap_or_else(|| panic!("no {function} figure: {stats:#?}"));
        assert!(figure.bytes > 0, "{figure:?}");
        assert!(figure.label.contains("every env"), "{figure:?}");
    }
    assert!(
        stats
            .figures
            .iter()
            .any(|f| f.label.contains("do not decode")),
        "{stats:#?}"
    );
    drop_schema(&store).await;
}

/// A pruner's deletes of finished tasks (versioned, in one batch) wake no
/// one: no worker holds such a task and none frees a key. A delete of an
/// unfinished task is still announced as touching held tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_of_finished_tasks_send_no_notice() {
    use oncetask_core::store::{Delete, DeleteOutcome};

    let store = store(&new_schema()).await;
    let mut done: Vec<Task> = (0..20)
        .map(|i| finished(&format!("d{i}"), "done", TaskStatus::Completed, 10))
        .collect();
    done[3].resource_key = Some("r".into());
    let pending = Task::new("p", "pending", ENV, at(0));
    let mut all = done.clone();
    all.push(pending.clone());
    store.create(all).await.expect("create");
    let mut notices = listening(&store).await;
    let deletes: Vec<Delete> = done.iter().map(Delete::exact).collect();
    let outcomes = store.delete(&deletes).await.expect("delete");
    assert!(outcomes.iter().all(|o| matches!(o, DeleteOutcome::Deleted)));
    store
        .delete(&[Delete::exact(&pending)])
        .await
        .expect("delete");
    let n = next_notice(&mut notices).await;
    assert_eq!(n.kind, "pending", "the finished tasks' delete sent {n:?}");
    assert!(n.may_touch_claimed);
    drop_schema(&store).await;
}

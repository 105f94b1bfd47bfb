//! Redis-specific tests of retention, pause and rate limits: the stored
//! form of tombstones, the finished index (`fin:`/`pr:` sorted sets) kept in
//! line by every script that finishes, resets, prunes or deletes a task,
//! the backfill of a store older than that index, rate limiters under
//! concurrent callers, the paused-kinds set and its notices, and the
//! storage figures.
//!
//! Each test works under a key prefix of its own and deletes its keys at
//! the end. The server is `ONCETASK_REDIS_URL` (default
//! `redis://127.0.0.1:6379`).

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use futures::StreamExt;
use oncetask_core::lifecycle::{self, LeaseGrant};
use oncetask_core::store::{
    Change, ClaimMode, ClaimOrder, ClaimRequest, Delete, DeleteOutcome, Fetched, FinishedQuery,
    StartsRequest, Swap, SwapOutcome,
};
use oncetask_core::{AttemptError, Outcome, Store, Task, TaskStatus};
use oncetask_redis::RedisStore;

const ENV: &str = "test";
const KIND: &str = "job";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 6, 8, 0, 0)
        .single()
        .expect("a valid time")
}

async fn swap_one(store: &RedisStore, before: &Task, change: Change, after: &Task) {
    let outcome = store
        .swap(&[Swap::new(before, change, after)])
        .await
        .expect("swap");
    assert!(
        matches!(outcome[..], [SwapOutcome::Applied { .. }]),
        "{change:?} of {}: {outcome:?}",
        before.id
    );
}

/// Claims every ready task of the kind at `now`.
async fn claim_all(store: &RedisStore, now: DateTime<Utc>) -> Vec<(Task, LeaseGrant)> {
    let grant = LeaseGrant::new(now, Duration::from_secs(60));
    let claimed = store
        .claim(&ClaimRequest {
            env: ENV.into(),
            kind: KIND.into(),
            now,
            grant: grant.clone(),
            mode: ClaimMode::Single { limit: 1000 },
            order: ClaimOrder::Priority,
        })
        .await
        .expect("claim");
    claimed
        .tasks
        .into_iter()
        .map(|t| (t, grant.clone()))
        .collect()
}

/// `claimed` ended at `at` with a permanent failure, as lifecycle::fail writes it.
fn failed(claimed: &Task, at: DateTime<Utc>) -> Task {
    let mut next = claimed.clone();
    next.version += 1;
    next.leased_until = None;
    next.lease_token = None;
    next.done_at = Some(at);
    next.outcome = Some(Outcome::Failed);
    next.errors.push(AttemptError {
        at,
        error: "boom".into(),
    });
    next
}

async fn zset(store: &RedisStore, what: &str) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(format!("{}{what}", store.env_key_base(ENV)))
        .arg(0)
        .arg(-1)
        .query_async(&mut store.connection())
        .await
        .expect("ZRANGE")
}

/// The ids in a finished index, in its order.
async fn index_ids(store: &RedisStore, what: &str) -> Vec<String> {
    zset(store, &format!("{what}:{KIND}"))
        .await
        .into_iter()
        .map(|m| m[16..].to_owned())
        .collect()
}

async fn finished(store: &RedisStore, query: FinishedQuery) -> Vec<String> {
    store
        .find_finished(&query)
        .await
        .expect("find_finished")
        .into_iter()
        .map(|t| t.id)
        .collect()
}

/// Finishes tasks a..f through claims and outcome swaps (a, b, c complete
/// at t0+1s, t0+1s, t0+2s; d, e fail at t0+3s; f stays pending), then
/// checks the finished index through pruning, a reset and deletes: the
/// index sets always hold exactly the finished tasks of their status, and
/// `find_finished` pages in (done_at, id) order up to `finished_by`.
#[tokio::test]
async fn the_finished_index_follows_finish_prune_reset_and_delete() {
    let store = common::store_on(&common::new_prefix()).await;
    let mut tasks = Vec::new();
    for id in ["a", "b", "c", "d", "e", "f"] {
        let mut task = Task::new(id, KIND, ENV, t0());
        task.data
            .insert("payload".into(), serde_json::json!("x".repeat(500)));
        tasks.push(task);
    }
    store.create(tasks).await.expect("create");
    let claimed = claim_all(&store, t0()).await;
    assert_eq!(claimed.len(), 6);
    let secs = |s: i64| t0() + TimeDelta::seconds(s);
    for (task, grant) in &claimed {
        let done = match task.id.as_str() {
            // c first, so that the index order is not the finish order.
            "c" => lifecycle::succeed(task, &grant.token, secs(2), None).expect("leased"),
            "a" | "b" => {
                lifecycle::succeed(task, &grant.token, secs(1), Some(serde_json::json!(1)))
                    .expect("leased")
            }
            "d" | "e" => failed(task, secs(3)),
            _ => continue,
        };
        swap_one(&store, task, Change::Outcome, &done).await;
    }
    assert_eq!(index_ids(&store, "fin:completed").await, ["a", "b", "c"]);
    assert_eq!(index_ids(&store, "fin:failed").await, ["d", "e"]);

    let by = |status, s: i64| FinishedQuery::new(ENV, KIND, status, secs(s));
    assert_eq!(
        finished(&store, by(TaskStatus::Completed, 0)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        finished(&store, by(TaskStatus::Completed, 1)).await,
        ["a", "b"]
    );
    assert_eq!(
        finished(&store, by(TaskStatus::Completed, 9)).await,
        ["a", "b", "c"]
    );
    assert_eq!(
        finished(&store, by(TaskStatus::Completed, 9).limit(1)).await,
        ["a"]
    );
    let a = store
        .find_finished(&by(TaskStatus::Completed, 9).limit(1))
        .await
        .expect("find_finished");
    assert_eq!(
        finished(&store, by(TaskStatus::Completed, 9).after_task(&a[0])).await,
        ["b", "c"],
        "the page after a"
    );
    assert_eq!(
        finished(&store, by(TaskStatus::Failed, 9)).await,
        ["d", "e"]
    );
    assert!(
        finished(&store, by(TaskStatus::Cancelled, 9))
            .await
            .is_empty()
    );
    assert!(
        finished(&store, by(TaskStatus::Pending, 9))
            .await
            .is_empty()
    );

    // Prune a: it moves to the tombstones, its payload, result and errors gone.
    let stored_a = &a[0];
    let tombstone = lifecycle::prune(stored_a, secs(10)).expect("finished");
    swap_one(&store, stored_a, Change::Prune, &tombstone).await;
    assert_eq!(index_ids(&store, "fin:completed").await, ["b", "c"]);
    assert_eq!(index_ids(&store, "pr:completed").await, ["a"]);
    assert_eq!(
        finished(&store, by(TaskStatus::Completed, 9)).await,
        ["b", "c"]
    );
    let tombstones = store
        .find_finished(&by(TaskStatus::Completed, 9).tombstones())
        .await
        .expect("find_finished");
    assert_eq!(
        tombstones,
        std::slice::from_ref(&tombstone),
        "round trip of the tombstone"
    );
    assert!(tombstones[0].is_tombstone() && tombstones[0].data.is_empty());
    match &store.get(&["a".to_owned()]).await.expect("get")[..] {
        [Fetched::Task(task)] => assert_eq!(task, &tombstone),
        other => panic!("{other:?}"),
    }

    // Prune d (failed, with errors): the errors override field goes too.
    let d = store
        .find_finished(&by(TaskStatus::Failed, 9).limit(1))
        .await
        .expect("find_finished")
        .remove(0);
    assert_eq!(d.errors.len(), 1);
    let d_tomb = lifecycle::prune(&d, secs(10)).expect("finished");
    swap_one(&store, &d, Change::Prune, &d_tomb).await;
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(store.task_key(ENV, "d"))
        .query_async(&mut store.connection())
        .await
        .expect("HKEYS");
    for gone in ["errs", "result", "out", "cat"] {
        assert!(
            !fields.iter().any(|f| f == gone),
            "{gone} left in {fields:?}"
        );
    }
    assert!(fields.iter().any(|f| f == "prn"));
    let body: String = redis::cmd("HGET")
        .arg(store.task_key(ENV, "d"))
        .arg("body")
        .query_async(&mut store.connection())
        .await
        .expect("HGET");
    assert!(!body.contains("boom") && !body.contains("xxxx"), "{body}");
    assert_eq!(index_ids(&store, "pr:failed").await, ["d"]);

    // Reset e: it leaves the finished index.
    let e = store
        .find_finished(&by(TaskStatus::Failed, 9))
        .await
        .expect("find_finished")
        .remove(0);
    assert_eq!(e.id, "e");
    let reset = lifecycle::reset(&e).expect("done");
    swap_one(&store, &e, Change::Reset, &reset).await;
    assert!(index_ids(&store, "fin:failed").await.is_empty());

    // The pruner's delete: exact versions, tombstones and full documents.
    let b = store
        .find_finished(&by(TaskStatus::Completed, 9).limit(1))
        .await
        .expect("find_finished")
        .remove(0);
    let stale = Delete {
        id: "c".into(),
        expected_version: Some(1),
        expected_revision: None,
    };
    let outcomes = store
        .delete(&[
            Delete::exact(&tombstone),
            Delete::exact(&d_tomb),
            Delete::exact(&b),
            stale,
        ])
        .await
        .expect("delete");
    assert!(
        matches!(
            outcomes[..],
            [
                DeleteOutcome::Deleted,
                DeleteOutcome::Deleted,
                DeleteOutcome::Deleted,
                DeleteOutcome::Conflict
            ]
        ),
        "{outcomes:?}"
    );
    assert_eq!(index_ids(&store, "fin:completed").await, ["c"]);
    assert!(index_ids(&store, "pr:completed").await.is_empty());
    assert!(index_ids(&store, "pr:failed").await.is_empty());
    store.purge().await.expect("purge");
}

/// A store written before the finished index existed: the index sets and
/// the marker are removed by hand; the first `find_finished` builds the
/// index (in pages), and finds every finished task.
#[tokio::test]
async fn a_store_older_than_the_finished_index_is_backfilled() {
    let store = common::store_on(&common::new_prefix()).await;
    let done = |i: usize| {
        let mut task = Task::new(format!("t{i:04}"), KIND, ENV, t0());
        if !i.is_multiple_of(3) {
            task.done_at = Some(t0() + TimeDelta::seconds(i64::try_from(i).expect("small")));
            task.attempts = 1;
            task.outcome = Some(if i % 3 == 1 {
                Outcome::Completed
            } else {
                Outcome::Failed
            });
        }
        task
    };
    store
        .create((0..1200).map(done).collect())
        .await
        .expect("create");
    let base = store.env_key_base(ENV);
    let mut conn = store.connection();
    let removed: u64 = redis::cmd("DEL")
        .arg(format!("{base}fin:completed:{KIND}"))
        .arg(format!("{base}fin:failed:{KIND}"))
        .arg(format!("{base}finb:{KIND}"))
        .query_async(&mut conn)
        .await
        .expect("DEL");
    assert_eq!(
        removed, 3,
        "a kind created by this version has a complete index"
    );
    let query = FinishedQuery::new(ENV, KIND, TaskStatus::Completed, t0() + TimeDelta::days(1))
        .limit(10_000);
    let found = finished(&store, query).await;
    let expected: Vec<String> = (0..1200)
        .filter(|i| i % 3 == 1)
        .map(|i| format!("t{i:04}"))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(index_ids(&store, "fin:failed").await.len(), 400);
    let marker: String = redis::cmd("GET")
        .arg(format!("{base}finb:{KIND}"))
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(marker, "+");
    store.purge().await.expect("purge");
}

/// 8 callers on their own connections take starts (7 at a time) from one
/// limiter of limit 100 until it grants nothing: exactly 100 are granted.
/// Then the window rules: a new window starts again, a lagging caller gets
/// nothing from a window that has passed, returns lower the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_takes_never_grant_more_than_the_limit() {
    let prefix = common::new_prefix();
    let now = Utc::now();
    let request = |key: Option<&str>, at: DateTime<Utc>, count: u32| {
        StartsRequest::new(ENV, KIND, key.map(str::to_owned), at, 60_000, 100, count)
    };
    let mut callers = Vec::new();
    for _ in 0..8 {
        let store = common::store_on(&prefix).await;
        let req = request(None, now, 7);
        callers.push(tokio::spawn(async move {
            let mut total = 0u32;
            loop {
                let granted = store
                    .take_starts(std::slice::from_ref(&req))
                    .await
                    .expect("take");
                if granted[0] == 0 {
                    return total;
                }
                total += granted[0];
            }
        }));
    }
    let mut sum = 0;
    for caller in callers {
        sum += caller.await.expect("caller");
    }
    assert_eq!(sum, 100);

    let store = common::store_on(&prefix).await;
    let next = now + TimeDelta::minutes(1);
    let earlier = now - TimeDelta::minutes(1);
    // A batch: the kind's limiter (full), a key's (fresh), the next window.
    let granted = store
        .take_starts(&[
            request(None, now, 5),
            request(Some("r:{1}"), now, 150),
            request(Some("r:{2}"), now, 3),
        ])
        .await
        .expect("take");
    assert_eq!(granted, [0, 100, 3]);
    store
        .return_starts(&[request(Some("r:{1}"), now, 30)])
        .await
        .expect("return");
    assert_eq!(
        store
            .take_starts(&[request(Some("r:{1}"), now, 50)])
            .await
            .expect("take"),
        [30]
    );
    assert_eq!(
        store
            .take_starts(&[request(None, next, 40)])
            .await
            .expect("take"),
        [40],
        "the next window"
    );
    assert_eq!(
        store
            .take_starts(&[request(None, earlier, 40)])
            .await
            .expect("take"),
        [0],
        "a window that has passed"
    );
    store
        .return_starts(&[request(None, now, 40)])
        .await
        .expect("return to a passed window: nothing");
    assert_eq!(
        store
            .take_starts(&[request(None, next, 100)])
            .await
            .expect("take"),
        [60]
    );
    // The limiter expires a couple of periods after its last take.
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}rl:{KIND}", store.env_key_base(ENV)))
        .query_async(&mut store.connection())
        .await
        .expect("PTTL");
    assert!(ttl > 60_000 && ttl <= 120_000, "{ttl}");
    store.purge().await.expect("purge");
}

/// Pause and resume: the set, the answers, and a notice touching claimed
/// tasks for each change.
#[tokio::test]
async fn pausing_is_stored_and_announced() {
    let store = common::store_on(&common::new_prefix()).await;
    let mut notices = store.subscribe(ENV).expect("wake-ups");
    // Let the subscriber connect.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(store.set_paused(ENV, "b:{x}", true).await.expect("pause"));
    assert!(store.set_paused(ENV, KIND, true).await.expect("pause"));
    assert!(
        !store
            .set_paused(ENV, KIND, true)
            .await
            .expect("pause again")
    );
    assert_eq!(
        store.paused_kinds(ENV).await.expect("paused"),
        ["b:{x}", KIND]
    );
    assert!(
        store
            .paused_kinds("other")
            .await
            .expect("paused")
            .is_empty()
    );
    assert!(store.set_paused(ENV, KIND, false).await.expect("resume"));
    assert!(
        !store
            .set_paused(ENV, KIND, false)
            .await
            .expect("resume again")
    );
    assert_eq!(store.paused_kinds(ENV).await.expect("paused"), ["b:{x}"]);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let notice = tokio::time::timeout(Duration::from_secs(5), notices.next())
            .await
            .expect("a notice in time")
            .expect("open");
        seen.push((notice.kind, notice.may_touch_claimed));
    }
    assert_eq!(
        seen,
        [
            ("b:{x}".to_owned(), true),
            (KIND.to_owned(), true),
            (KIND.to_owned(), true)
        ]
    );
    store.purge().await.expect("purge");
}

/// Storage figures: documents per status from the counters, tombstones
/// apart, bytes for every part, and the server's memory.
#[tokio::test]
async fn storage_stats_count_every_status_and_sample_bytes() {
    let store = common::store_on(&common::new_prefix()).await;
    let now = t0();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let mut task = Task::new(format!("t{i}"), KIND, ENV, now);
        task.data
            .insert("payload".into(), serde_json::json!("y".repeat(2000)));
        if i < 20 {
            task.done_at = Some(now);
            task.attempts = 1;
            task.outcome = Some(Outcome::Completed);
        }
        tasks.push(task);
    }
    store.create(tasks).await.expect("create");
    let full = store
        .find_finished(&FinishedQuery::new(ENV, KIND, TaskStatus::Completed, now).limit(5))
        .await
        .expect("find_finished");
    for task in &full {
        let tomb = lifecycle::prune(task, now).expect("finished");
        swap_one(&store, task, Change::Prune, &tomb).await;
    }
    let stats = store.storage_stats(ENV, now).await.expect("stats");
    let completed = stats.by_status[&TaskStatus::Completed];
    let pending = stats.by_status[&TaskStatus::Pending];
    assert_eq!(completed.documents, 15);
    assert_eq!(pending.documents, 10);
    assert_eq!(stats.tombstones.documents, 5);
    let (c, p, t) = (
        completed.bytes.expect("sampled"),
        pending.bytes.expect("sampled"),
        stats.tombstones.bytes.expect("sampled"),
    );
    assert!(c > 15 * 2000 && p > 10 * 2000, "{c} {p}");
    assert!(t / 5 + 1000 < c / 15, "tombstones are smaller: {t} vs {c}");
    assert!(stats.method.contains("MEMORY USAGE"), "{}", stats.method);
    assert!(
        stats.figures.iter().any(|f| f.label.contains("used_memory")
            && f.label.contains("whole server")
            && f.bytes > 0),
        "{:?}",
        stats.figures
    );
    store.purge().await.expect("purge");
}

/// A pruner's delete batch of 500 finished tasks: every one goes, with
/// every index entry (nothing of the env is left, not even the kind's
/// finished-index marker).
#[tokio::test]
async fn a_batch_of_500_exact_deletes_leaves_no_index_entry() {
    let store = common::store_on(&common::new_prefix()).await;
    let now = t0();
    let tasks: Vec<Task> = (0..500)
        .map(|i| {
            let mut task = Task::new(format!("t{i}"), KIND, ENV, now);
            task.resource_key = Some(format!("r{}", i % 7));
            task.done_at = Some(now);
            task.attempts = 1;
            task.outcome = Some(Outcome::Completed);
            task
        })
        .collect();
    store.create(tasks).await.expect("create");
    let query = FinishedQuery::new(ENV, KIND, TaskStatus::Completed, now);
    let page = store.find_finished(&query).await.expect("find_finished");
    assert_eq!(page.len(), 500);
    let deletes: Vec<Delete> = page.iter().map(Delete::exact).collect();
    let outcomes = store.delete(&deletes).await.expect("delete");
    assert!(outcomes.iter().all(|o| matches!(o, DeleteOutcome::Deleted)));
    let keys: Vec<String> = store
        .connection()
        .scan_keys(&format!(
            "{}*",
            store
                .env_key_base(ENV)
                .replace('{', "\\{")
                .replace('}', "\\}")
        ))
        .await
        .expect("scan")
        .into_iter()
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .collect();
    assert!(keys.is_empty(), "{keys:?}");
    store.purge().await.expect("purge");
}

//! Retention, pause and rate limits on the emulator: tombstones (and what
//! the Go package reads of them), `find_finished` paging and its scan
//! positions, paused kinds, rate limiter documents under concurrent
//! callers, and storage figures.
//!
//! Needs the emulator: `scripts/firestore-emulator cargo test -p
//! oncetask-firestore --test retention`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use firestore::FirestoreDb;
use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
use futures::StreamExt;
use oncetask_core::lifecycle::{self, LeaseGrant};
use oncetask_core::store::{
    Change, ClaimMode, ClaimOrder, ClaimRequest, CreateOutcome, Fetched, FinishedQuery,
    StartsRequest, Swap, SwapOutcome,
};
use oncetask_core::{AttemptError, Outcome, Store, Task, TaskStatus};
use oncetask_firestore::FirestoreStore;
use oncetask_firestore::document::{Fields, format_time};
use serde_json::json;

mod common;
use common::{GO_FIELDS, assert_go_readable, db, t, tag};

/// A fresh collection holding the given Go fixtures, as Go wrote them.
async fn seeded(files: &[&str]) -> (FirestoreDb, FirestoreStore) {
    common::seeded("retention", files).await
}

/// A task of `kind` in `env` that ended with `status` at `done`.
fn finished(id: &str, kind: &str, env: &str, done: DateTime<Utc>, status: TaskStatus) -> Task {
    let mut task = Task::new(id, kind, env, done - TimeDelta::seconds(60));
    task.data = serde_json::Map::from_iter([("to".to_owned(), json!(format!("{id}@example.com")))]);
    task.done_at = Some(done);
    match status {
        TaskStatus::Completed => {
            task.attempts = 2;
            task.errors = vec![AttemptError {
                at: done,
                error: "timeout".into(),
            }];
            task.result = Some(json!({"messageId": id}));
            task.outcome = Some(Outcome::Completed);
        }
        TaskStatus::Failed => {
            task.attempts = 3;
            task.errors = (0..3)
                .map(|i| AttemptError {
                    at: done,
                    error: format!("error {i}"),
                })
                .collect();
            task.outcome = Some(Outcome::Failed);
        }
        TaskStatus::Cancelled => {
            task.attempts = 1;
            task.is_cancelled = true;
            task.cancelled_at = Some(done);
            task.outcome = Some(Outcome::Cancelled);
        }
        other => panic!("{other:?} is not terminal"),
    }
    task
}

async fn create(store: &FirestoreStore, tasks: Vec<Task>) {
    for (i, out) in store.create(tasks).await.unwrap().iter().enumerate() {
        assert!(matches!(out, CreateOutcome::Created), "{i}: {out:?}");
    }
}

async fn stored(store: &FirestoreStore, id: &str) -> Task {
    match store.get(&[id.to_owned()]).await.unwrap().pop() {
        Some(Fetched::Task(task)) => task,
        other => panic!("{id}: {other:?}"),
    }
}

/// Prunes the stored task `id` at `now` (one fenced swap); the tombstone.
async fn prune(store: &FirestoreStore, id: &str, now: DateTime<Utc>) -> Task {
    let before = stored(store, id).await;
    let mut tombstone = lifecycle::prune(&before, now).expect("finished, not pruned");
    let out = store
        .swap(&[Swap::new(&before, Change::Prune, &tombstone)])
        .await
        .unwrap();
    let SwapOutcome::Applied { revision } = out[0] else {
        panic!("prune of {id}: {:?}", out[0]);
    };
    tombstone.revision = revision;
    tombstone
}

fn ids(tasks: &[Task]) -> Vec<&str> {
    tasks.iter().map(|t| t.id.as_str()).collect()
}

/// A tombstone keeps every field Go reads, with Go's types; Go's count
/// rule (on the fields Go knows, without `outcome`) gives the status the
/// task had; the store reads it back as a tombstone; its id stays taken.
#[tokio::test]
async fn a_tombstone_stays_a_task_go_reads_with_the_same_status_and_keeps_its_id() {
    let (db, store) = seeded(&["completed.json", "failed.json", "cancelled.json"]).await;
    let done = t("2026-01-02T00:00:00.250Z");
    create(
        &store,
        vec![
            finished(
                "rust-completed",
                "send_email",
                "DEFAULT",
                done,
                TaskStatus::Completed,
            ),
            finished(
                "rust-failed",
                "send_email",
                "DEFAULT",
                done,
                TaskStatus::Failed,
            ),
            finished(
                "rust-cancelled",
                "send_email",
                "DEFAULT",
                done,
                TaskStatus::Cancelled,
            ),
        ],
    )
    .await;
    let now = t("2026-02-01T00:00:00.500Z");
    for id in [
        "email-u4",
        "email-u5",
        "email-u7",
        "rust-completed",
        "rust-failed",
        "rust-cancelled",
    ] {
        let before = stored(&store, id).await;
        let status = before.status(now);
        assert!(before.pruned_at.is_none());
        let tombstone = prune(&store, id, now).await;
        let fields = common::raw(&db, store.collection(), id).await;
        assert_eq!(
            fields["prunedAt"].value_type,
            Some(ValueType::StringValue(format_time(now))),
            "{id}"
        );
        assert_eq!(tag(&fields["data"]), "mapValue");
        assert!(
            matches!(&fields["data"].value_type, Some(ValueType::MapValue(m)) if m.fields.is_empty())
        );
        assert!(
            matches!(&fields["errors"].value_type, Some(ValueType::ArrayValue(a)) if a.values.is_empty())
        );
        assert_eq!(tag(&fields["result"]), "nullValue");
        assert_go_readable(&fields);
        // What the Go package sees: its own fields only, no outcome.
        let go_view: Fields = fields
            .iter()
            .filter(|(name, _)| GO_FIELDS.iter().any(|(go, _)| go == name))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let as_go = oncetask_firestore::decode_task(&go_view).unwrap();
        assert_eq!(as_go.status(now), status, "{id}: Go's count rule");
        assert_eq!(as_go.done_at, before.done_at, "{id}");
        // The store reads the tombstone back, and its id stays taken.
        let back = stored(&store, id).await;
        assert_eq!(back, tombstone, "{id}");
        assert!(back.is_tombstone() && back.data.is_empty() && back.errors.is_empty());
        assert_eq!(back.status(now), status, "{id}");
        assert!(lifecycle::prune(&back, now).is_err(), "{id}: pruned once");
        let mut again = Task::new(id, "send_email", "DEFAULT", now);
        again.data = before.data.clone();
        let out = store.create(vec![again]).await.unwrap();
        assert!(
            matches!(out[0], CreateOutcome::AlreadyExists),
            "{id}: {:?}",
            out[0]
        );
    }
}

/// Full pages in (done_at, id) order from a cursor; status, tombstones,
/// kind, env and cutoff told apart; a Go whole-second `doneAt` (which sorts
/// after the Rust times of its second) comes in time order.
#[tokio::test]
async fn find_finished_pages_in_finish_order_and_tells_statuses_and_tombstones_apart() {
    let (_db, store) = seeded(&["completed.json"]).await; // email-u4, done 00:00:03Z
    let (env, kind) = ("DEFAULT", "send_email");
    let at = |s: &str| t(&format!("2026-01-01T00:00:{s}Z"));
    let mut tasks = vec![
        finished("c-a", kind, env, at("01.000"), TaskStatus::Completed),
        finished("c-b", kind, env, at("02.900"), TaskStatus::Completed),
        finished("c-c", kind, env, at("03.500"), TaskStatus::Completed),
        finished("c-d", kind, env, at("03.500"), TaskStatus::Completed),
        finished("c-e", kind, env, at("04.000"), TaskStatus::Completed),
        finished("c-late", kind, env, at("30.000"), TaskStatus::Completed),
        finished("f-a", kind, env, at("02.000"), TaskStatus::Failed),
        finished("x-a", kind, env, at("05.000"), TaskStatus::Cancelled),
        finished(
            "other-kind",
            "other",
            env,
            at("02.000"),
            TaskStatus::Completed,
        ),
        finished(
            "other-env",
            kind,
            "staging",
            at("02.000"),
            TaskStatus::Completed,
        ),
    ];
    tasks.push(Task::new("not-done", kind, env, at("00.000")));
    create(&store, tasks).await;
    let now = t("2026-03-01T00:00:00Z");
    prune(&store, "c-a", now).await;
    let by = at("10.000");
    let first = FinishedQuery::new(env, kind, TaskStatus::Completed, by).limit(2);
    let mut pages = Vec::new();
    let mut query = first.clone();
    loop {
        let page = store.find_finished(&query).await.unwrap();
        let Some(last) = page.last().cloned() else {
            break;
        };
        pages.push(ids(&page).join(","));
        query = first.clone().after_task(&last);
    }
    assert_eq!(pages, ["c-b,email-u4", "c-c,c-d", "c-e"]);
    let tombs = store
        .find_finished(&first.clone().tombstones().limit(10))
        .await
        .unwrap();
    assert_eq!(ids(&tombs), ["c-a"]);
    assert!(tombs[0].is_tombstone());
    for (status, expected) in [
        (TaskStatus::Failed, vec!["f-a"]),
        (TaskStatus::Cancelled, vec!["x-a"]),
    ] {
        let q = FinishedQuery::new(env, kind, status, by);
        assert_eq!(ids(&store.find_finished(&q).await.unwrap()), expected);
    }
    let none = FinishedQuery::new(env, kind, TaskStatus::Completed, at("00.500"));
    assert!(store.find_finished(&none).await.unwrap().is_empty());
    let zero = first.clone().limit(0);
    assert!(store.find_finished(&zero).await.unwrap().is_empty());
}

fn claim_one(env: &str, kind: &str, now: DateTime<Utc>) -> ClaimRequest {
    ClaimRequest {
        env: env.into(),
        kind: kind.into(),
        now,
        grant: LeaseGrant::new(now, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit: 50 },
        order: ClaimOrder::Oldest,
    }
}

/// Runs one pruner pass (every full completed task finished by `by` made
/// a tombstone); the tasks pruned and the reads the pass cost.
async fn pass(store: &FirestoreStore, env: &str, by: DateTime<Utc>) -> (usize, u64) {
    let reads = store.stats().reads;
    let first = FinishedQuery::new(env, "k", TaskStatus::Completed, by).limit(20);
    let mut query = first.clone();
    let mut pruned = 0;
    loop {
        let page = store.find_finished(&query).await.unwrap();
        let Some(last) = page.last().cloned() else {
            break;
        };
        let swaps: Vec<(Task, Task)> = page
            .iter()
            .map(|t| (t.clone(), lifecycle::prune(t, by).unwrap()))
            .collect();
        let swaps: Vec<Swap> = swaps
            .iter()
            .map(|(a, b)| Swap::new(a, Change::Prune, b))
            .collect();
        for out in store.swap(&swaps).await.unwrap() {
            assert!(matches!(out, SwapOutcome::Applied { .. }), "{out:?}");
        }
        pruned += page.len();
        query = first.clone().after_task(&last);
    }
    // The swaps are fenced on the revision the query read: no reads.
    (pruned, store.stats().reads - reads)
}

/// A pass starts where the previous one left off: tombstones already made
/// are read once more by the next pass, then no longer; a task stored
/// already finished before that place is still found.
#[tokio::test]
async fn pruner_passes_do_not_read_every_tombstone_again() {
    let (_db, store) = seeded(&[]).await;
    let env = "E";
    let t0 = t("2026-01-01T00:00:00Z");
    let old: Vec<Task> = (0..60)
        .map(|i| {
            let done = t0 + TimeDelta::milliseconds(100 * i);
            finished(
                &format!("old-{i:02}"),
                "k",
                env,
                done,
                TaskStatus::Completed,
            )
        })
        .collect();
    create(&store, old).await;
    let by = t0 + TimeDelta::days(8);
    let (pruned, first_reads) = pass(&store, env, by).await;
    assert_eq!(pruned, 60);
    let (pruned, second_reads) = pass(&store, env, by).await;
    assert_eq!(pruned, 0);
    let (pruned, third_reads) = pass(&store, env, by).await;
    assert_eq!(pruned, 0);
    println!("reads: first pass {first_reads}, second {second_reads}, third {third_reads}");
    assert!(
        second_reads <= 60 + 5,
        "the tombstones once more: {second_reads}"
    );
    assert!(third_reads <= 3, "then no more: {third_reads}");
    // Tasks that finish later (by a claim and an outcome) are found.
    let later = t0 + TimeDelta::days(1);
    create(
        &store,
        (0..3)
            .map(|i| Task::new(format!("new-{i}"), "k", env, later))
            .collect(),
    )
    .await;
    for task in store
        .claim(&claim_one(env, "k", later))
        .await
        .unwrap()
        .tasks
    {
        let token = task.lease_token.clone().unwrap();
        let done = lifecycle::succeed(&task, &token, later, None).unwrap();
        let out = store
            .swap(&[Swap::new(&task, Change::Outcome, &done)])
            .await
            .unwrap();
        assert!(
            matches!(out[0], SwapOutcome::Applied { .. }),
            "{:?}",
            out[0]
        );
    }
    let (pruned, reads) = pass(&store, env, by).await;
    assert_eq!(pruned, 3);
    assert!(reads <= 3 + 6, "{reads}");
    // A task stored already finished, before the place the passes reached.
    create(
        &store,
        vec![finished("imported", "k", env, t0, TaskStatus::Completed)],
    )
    .await;
    let (pruned, _) = pass(&store, env, by).await;
    assert_eq!(pruned, 1, "an imported finished task is found");
}

/// Eight processes draw from one limiter at once: exactly the limit is
/// granted; returns give starts back; per-key limiters are their own; a
/// lagging window is granted nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn take_starts_grants_exactly_the_limit_to_concurrent_callers() {
    let collection = format!("limits-{}", uuid::Uuid::new_v4().simple());
    let now = Utc::now();
    let request = StartsRequest::new("E", "k", None, now, 60_000, 100, 30);
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(FirestoreStore::with_collection(db().await, &collection));
    }
    let draws = stores.iter().map(|store| {
        let request = request.clone();
        async move { store.take_starts(&[request]).await.unwrap()[0] }
    });
    let granted: Vec<u32> = futures::future::join_all(draws).await;
    println!("granted {granted:?}");
    assert_eq!(granted.iter().sum::<u32>(), 100, "{granted:?}");
    let store = &stores[0];
    assert_eq!(
        store
            .take_starts(std::slice::from_ref(&request))
            .await
            .unwrap(),
        [0]
    );
    let mut back = request.clone();
    back.count = 10;
    store.return_starts(&[back]).await.unwrap();
    // One call: the kind's limiter (10 left) and a key's (limit 5).
    let key = StartsRequest::new("E", "k", Some("r".into()), now, 60_000, 5, 30);
    let other_key = StartsRequest::new("E", "k", Some("s".into()), now, 60_000, 5, 2);
    let answers = store
        .take_starts(&[request.clone(), key.clone(), other_key, key])
        .await
        .unwrap();
    assert_eq!(answers, [10, 5, 2, 0]);
    // A caller whose clock lags asks for a window that has passed.
    let mut lagging = request.clone();
    lagging.window_start -= TimeDelta::minutes(1);
    assert_eq!(store.take_starts(&[lagging]).await.unwrap(), [0]);
    // The next window starts afresh.
    let next = StartsRequest::new("E", "k", None, now + TimeDelta::minutes(1), 60_000, 100, 30);
    assert_eq!(store.take_starts(&[next]).await.unwrap(), [30]);
}

/// Pausing is stored, idempotent, per env, heard by another process's
/// listener as a notice that may touch claimed tasks, and undone by a resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_kinds_round_trip_and_reach_other_processes() {
    let collection = format!("pause-{}", uuid::Uuid::new_v4().simple());
    let store = FirestoreStore::with_collection(db().await, &collection)
        .with_signal_interval(Duration::ZERO);
    let other = FirestoreStore::with_collection(db().await, &collection);
    let mut notices = other.subscribe("E").expect("a listener");
    assert!(other.paused_kinds("E").await.unwrap().is_empty());
    // Let the listener take its (empty) first snapshot.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(store.set_paused("E", "k", true).await.unwrap());
    assert!(
        !store.set_paused("E", "k", true).await.unwrap(),
        "already paused"
    );
    assert!(store.set_paused("E", "a", true).await.unwrap());
    assert!(store.set_paused("F", "z", true).await.unwrap());
    assert_eq!(other.paused_kinds("E").await.unwrap(), ["a", "k"]);
    assert_eq!(other.paused_kinds("F").await.unwrap(), ["z"]);
    let notice = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = notices.next().await.expect("the stream does not end");
            if n.kind == "k" {
                return n;
            }
        }
    })
    .await
    .expect("a notice within 30 s");
    assert!(notice.may_touch_claimed);
    assert!(store.set_paused("E", "k", false).await.unwrap());
    assert!(
        !store.set_paused("E", "k", false).await.unwrap(),
        "not paused"
    );
    assert_eq!(other.paused_kinds("E").await.unwrap(), ["a"]);
    // One read whatever the number of kinds.
    let reads = other.stats().reads;
    other.paused_kinds("E").await.unwrap();
    assert_eq!(other.stats().reads - reads, 1);
}

/// Documents per status (tombstones apart, Go-finished ones included) and
/// estimated bytes; a tombstone is smaller than the full document it was.
#[tokio::test]
async fn storage_stats_count_statuses_and_tombstones_and_estimate_bytes() {
    let (_db, store) = seeded(&["completed.json", "failed.json", "pending.json"]).await;
    let (env, kind) = ("DEFAULT", "send_email");
    let done = t("2026-01-01T00:01:00Z");
    create(
        &store,
        vec![
            Task::new("p-1", kind, env, done),
            finished("c-1", kind, env, done, TaskStatus::Completed),
            finished("c-2", kind, env, done, TaskStatus::Completed),
            finished("c-3", kind, env, done, TaskStatus::Completed),
            finished("f-1", kind, env, done, TaskStatus::Failed),
            finished("x-1", kind, env, done, TaskStatus::Cancelled),
        ],
    )
    .await;
    let now = t("2026-03-01T00:00:00Z");
    prune(&store, "c-3", now).await;
    prune(&store, "x-1", now).await;
    prune(&store, "email-u5", now).await; // Go-finished, failed
    let reads = store.stats().reads;
    let stats = store.storage_stats(env, now).await.unwrap();
    println!("{stats:#?}\nreads: {}", store.stats().reads - reads);
    let documents = |s: TaskStatus| stats.by_status.get(&s).map_or(0, |x| x.documents);
    assert_eq!(documents(TaskStatus::Pending), 2, "p-1 and Go's email-u1");
    assert_eq!(
        documents(TaskStatus::Completed),
        3,
        "c-1, c-2 and Go's email-u4"
    );
    assert_eq!(documents(TaskStatus::Failed), 1);
    assert_eq!(documents(TaskStatus::Cancelled), 0);
    assert_eq!(stats.tombstones.documents, 3);
    assert_eq!(stats.documents(), 9);
    let per = |s: &oncetask_core::store::StoredSize| s.bytes.unwrap() / s.documents;
    let completed = per(&stats.by_status[&TaskStatus::Completed]);
    let tombstone = per(&stats.tombstones);
    assert!(
        tombstone > 100 && completed > tombstone,
        "{completed} > {tombstone}"
    );
    assert!(stats.bytes().is_some());
    assert!(stats.method.contains("COUNT"), "{}", stats.method);
}

/// A manager's prune passes over finished tasks of every status: about
/// one read and one write per task per pass (the statuses' queries share
/// one scan, the deletes read nothing).
#[tokio::test]
async fn a_prune_pass_costs_about_one_read_and_one_write_per_task() {
    use oncetask_core::manager::{PrunePlan, Retention};
    let (_db, store) = seeded(&[]).await;
    let env = "E";
    let base = Utc::now() - TimeDelta::days(2);
    // More than a call reads without a match (2,500): the delete pass's
    // queries of full documents stop there, and the tombstone queries
    // still read each tombstone once.
    let n: u64 = 3_000;
    let tasks: Vec<Task> = (0..n)
        .map(|i| {
            let status = match i % 20 {
                0 => TaskStatus::Failed,
                1 => TaskStatus::Cancelled,
                _ => TaskStatus::Completed,
            };
            let done = base - TimeDelta::milliseconds(i as i64 * 7);
            finished(&format!("t-{i:05}"), "k", env, done, status)
        })
        .collect();
    for chunk in tasks.chunks(400) {
        create(&store, chunk.to_vec()).await;
    }
    let manager = oncetask_core::Manager::builder(std::sync::Arc::new(store.clone()))
        .env(env)
        .start_workers(false)
        .declare_kinds(["k"])
        .build();
    let keep = Duration::from_secs(3_600);
    let passes = [
        ("tombstone", Retention::default().finished(keep)),
        (
            "delete",
            Retention::default()
                .finished(keep)
                .tombstones_for(Duration::from_secs(86_400)),
        ),
    ];
    let mut costs = Vec::new();
    for (name, retention) in passes {
        let before = store.stats();
        let report = manager
            .prune(PrunePlan::kind("k", retention).rest(0.0))
            .await
            .unwrap();
        let cost = store.stats().since(&before);
        let total = report.total();
        println!(
            "{name}: {total:?}, {} reads, {} writes",
            cost.reads, cost.writes
        );
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        costs.push((total, cost));
    }
    let (tombstoned, cost) = &costs[0];
    assert_eq!(tombstoned.tombstoned, n);
    assert!(
        cost.reads <= n + n / 10,
        "{} reads for {n} tasks",
        cost.reads
    );
    assert!(cost.writes <= n + 20, "{} writes", cost.writes);
    let (deleted, cost) = &costs[1];
    assert_eq!(deleted.deleted, n);
    assert!(
        cost.reads <= n + n / 10,
        "{} reads for {n} tasks",
        cost.reads
    );
    assert!(cost.writes <= n + 20, "{} writes", cost.writes);
    manager.shutdown(Duration::from_secs(5)).await;
}

/// A time at least 6 s before the end of its `period_ms` window.
async fn early_in_window(period_ms: u64) -> DateTime<Utc> {
    let now = Utc::now();
    let end = StartsRequest::new("E", "k", None, now, period_ms, 1, 1).window_end();
    if end - now < TimeDelta::seconds(6) {
        tokio::time::sleep((end - now).to_std().unwrap() + Duration::from_millis(50)).await;
    }
    Utc::now()
}

/// Starts are taken from the limiter document in chunks (a second's worth
/// at the limit's rate) and handed out from the store's reserve: one
/// document write per chunk, exactly the limit granted, and starts given
/// back stay in the reserve for the window (no write).
#[tokio::test]
async fn a_store_takes_starts_in_chunks_and_hands_them_out_from_its_reserve() {
    let collection = format!("limits-{}", uuid::Uuid::new_v4().simple());
    let store = FirestoreStore::with_collection(db().await, &collection);
    let now = early_in_window(10_000).await;
    // 100 per 10 s: chunks of 10.
    let one = StartsRequest::new("E", "k", None, now, 10_000, 100, 1);
    let before = store.stats();
    let mut total = 0;
    loop {
        let got = store.take_starts(std::slice::from_ref(&one)).await.unwrap()[0];
        if got == 0 {
            break;
        }
        total += got;
    }
    let cost = store.stats().since(&before);
    assert_eq!(total, 100);
    assert_eq!(cost.writes, 10, "one write per chunk of 10: {cost:?}");
    let mut back = one.clone();
    back.count = 3;
    store.return_starts(&[back]).await.unwrap();
    let mut five = one.clone();
    five.count = 5;
    let writes = store.stats().writes;
    assert_eq!(store.take_starts(&[five]).await.unwrap(), [3]);
    assert_eq!(store.stats().writes, writes, "the document stays full");
}

/// Several stores (processes) drawing from one limiter at once in small
/// takes: never more than the limit in the window, and, since each draws
/// until it is refused, exactly the limit; the document is written about
/// once per chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_sharing_a_limiter_never_grant_more_than_its_limit() {
    let collection = format!("limits-{}", uuid::Uuid::new_v4().simple());
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(FirestoreStore::with_collection(db().await, &collection));
    }
    let now = early_in_window(10_000).await;
    // 200 per 10 s: chunks of 20.
    let request = StartsRequest::new("E", "k", None, now, 10_000, 200, 1);
    let draws = stores.iter().flat_map(|store| {
        let request = request.clone();
        (1..=3u32).map(move |count| {
            let mut request = request.clone();
            request.count = count;
            async move {
                let mut total = 0;
                loop {
                    let got = store
                        .take_starts(std::slice::from_ref(&request))
                        .await
                        .unwrap()[0];
                    if got == 0 {
                        return total;
                    }
                    total += got;
                }
            }
        })
    });
    let granted: Vec<u32> = futures::future::join_all(draws).await;
    let writes: u64 = stores.iter().map(|s| s.stats().writes).sum();
    println!("granted {granted:?}, {writes} limiter writes");
    assert_eq!(granted.iter().sum::<u32>(), 200, "{granted:?}");
    assert!(writes <= 200 / 20 + 4, "{writes} writes");
}

//! What listing, counting and inspecting cost on the Firestore emulator,
//! counted by [`FirestoreStore::stats`] the way Firestore bills: a query
//! bills max(1, documents returned), a COUNT 1 per 1,000 documents counted.
//! A page costs its size however deep it is, and counts and the inspector
//! cost O(kinds) reads, however long the backlog and whatever the Go
//! package finished. Reads are asserted, never timings.
//!
//! `scripts/test -p oncetask-firestore --test list_cost -- --nocapture`
//! prints the measured reads.

use chrono::{DateTime, TimeDelta, Utc};
use firestore::gcloud_sdk::google::firestore::v1::{
    CommitRequest, Document, DocumentMask, Write, write,
};
use firestore::gcloud_sdk::tonic::Request;
use oncetask_core::store::{CreateOutcome, StatusCounts, TaskCursor, TaskFilter};
use oncetask_core::{Outcome, Store, Task, TaskStatus};
use oncetask_firestore::{FirestoreStore, StoreStats};

mod common;
use common::db;

const ENV: &str = "cost";

async fn store() -> FirestoreStore {
    FirestoreStore::with_collection(
        db().await,
        format!("list-cost-{}", uuid::Uuid::new_v4().simple()),
    )
}

/// A base time with a fraction of a second, so cursors need no extra read.
fn base() -> DateTime<Utc> {
    "2026-03-01T08:00:00.125Z".parse().expect("a time")
}

async fn create(store: &FirestoreStore, tasks: Vec<Task>) {
    for chunk in tasks.chunks(500) {
        for outcome in store.create(chunk.to_vec()).await.expect("create") {
            assert!(matches!(outcome, CreateOutcome::Created), "{outcome:?}");
        }
    }
}

/// A task finished at `done` with `outcome` (`None`: as the Go package
/// leaves it, status by its count rule: `errors` failed ones make it failed).
fn finished(
    id: String,
    kind: &str,
    done: DateTime<Utc>,
    outcome: Option<Outcome>,
    errors: usize,
) -> Task {
    let mut t = Task::new(id, kind, ENV, base());
    t.attempts = 1;
    t.done_at = Some(done);
    t.outcome = outcome;
    t.errors = (0..errors)
        .map(|_| oncetask_core::AttemptError {
            at: done,
            error: "boom".into(),
        })
        .collect();
    t
}

/// Removes the `outcome` field of `ids`, as on a document the Go package
/// created and finished (Rust writes `""` for no outcome).
async fn drop_outcome(store: &FirestoreStore, ids: &[String]) {
    let db = db().await;
    let writes = ids
        .iter()
        .map(|id| Write {
            operation: Some(write::Operation::Update(Document {
                name: format!("{}/{}/{id}", db.get_documents_path(), store.collection()),
                ..Default::default()
            })),
            update_mask: Some(DocumentMask {
                field_paths: vec!["outcome".to_owned()],
            }),
            ..Default::default()
        })
        .collect();
    let request = CommitRequest {
        database: db.get_database_path().clone(),
        writes,
        ..Default::default()
    };
    db.client()
        .get()
        .commit(Request::new(request))
        .await
        .expect("drop outcomes");
}

async fn measured<T>(
    store: &FirestoreStore,
    f: impl std::future::Future<Output = T>,
) -> (T, StoreStats) {
    let before = store.stats();
    let out = f.await;
    (out, store.stats().since(&before))
}

/// A page of 50 from 2,000 tasks costs 50 reads, at the start or deep in
/// the listing (by cursor), with a kind and the open tasks only too (a
/// status no index lists is refused, unread); a cursor on a whole second
/// costs one read more.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_costs_its_size_however_deep() {
    let store = store().await;
    let tasks: Vec<Task> = (0..2000)
        .map(|i| {
            let created = base() + TimeDelta::milliseconds(1001 * i);
            let kind = if i % 2 == 0 { "even" } else { "odd" };
            Task::new(format!("t{i:04}"), kind, ENV, created)
        })
        .collect();
    create(&store, tasks.clone()).await;
    let now = base() + TimeDelta::hours(2);
    let mut filter = TaskFilter::env(ENV, now);
    filter.limit = Some(50);

    let (first, cost) = measured(&store, store.find(&filter)).await;
    let first = first.expect("find");
    println!("first page of 50 of 2,000: {} reads", cost.reads);
    assert_eq!(first.len(), 50);
    assert_eq!(first[0].id, "t0000");
    assert_eq!(cost.reads, 50);

    filter.after = Some(TaskCursor::of(&tasks[1499]));
    let (deep, cost) = measured(&store, store.find(&filter)).await;
    let deep = deep.expect("find");
    println!("page of 50 after task 1,500: {} reads", cost.reads);
    let ids: Vec<&str> = deep.iter().map(|t| t.id.as_str()).collect();
    let expected: Vec<String> = (1500..1550).map(|i| format!("t{i:04}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(cost.reads, 50);

    let mut odd = filter.clone();
    odd.kind = Some("odd".into());
    odd.not_done = true;
    let (page, cost) = measured(&store, store.find(&odd)).await;
    println!(
        "page of 50 open odd tasks after task 1,500: {} reads",
        cost.reads
    );
    assert_eq!(page.expect("find").len(), 50);
    assert_eq!(cost.reads, 50);

    // Pending alone has no index in creation order: refused, unread.
    let mut pending = odd.clone();
    pending.statuses = vec![TaskStatus::Pending];
    let (page, cost) = measured(&store, store.find(&pending)).await;
    assert!(
        matches!(page, Err(oncetask_core::StoreError::Unsupported(_))),
        "{page:?}"
    );
    assert_eq!(cost.reads, 0);

    // A cursor on a whole second: the stored string is read to place it.
    let mut whole = filter.clone();
    whole.after = Some(TaskCursor {
        created_at: "2026-03-01T08:10:00Z".parse().expect("a time"),
        id: "none".into(),
    });
    let (page, cost) = measured(&store, store.find(&whole)).await;
    println!(
        "page of 50 after a whole-second cursor: {} reads",
        cost.reads
    );
    assert_eq!(page.expect("find").len(), 50);
    assert!(cost.reads <= 51, "{cost:?}");
}

/// `count_by_status` and `inspect` over 2 kinds of 1,000 tasks each cost
/// O(kinds) reads: COUNTs, plus the documents the Go package finished
/// (found first in `doneAt` order) and no other. Go-finished documents met
/// within the read bound get their own status; beyond it (kind `late`,
/// whose Go documents finished last, behind 600 others) the read stops at
/// the bound and they count as completed, as documented.
#[tokio::test(flavor = "multi_thread")]
async fn counts_and_the_inspector_cost_o_kinds_with_go_finished_documents() {
    let store = store().await;
    let mut tasks = Vec::new();
    let mut go = Vec::new();
    for kind in ["early", "late"] {
        let (go_at, rust_at) = if kind == "early" {
            (base(), base() + TimeDelta::hours(1))
        } else {
            (base() + TimeDelta::hours(1), base())
        };
        for i in 0..880 {
            let done = rust_at + TimeDelta::milliseconds(i);
            tasks.push(finished(
                format!("{kind}-done-{i}"),
                kind,
                done,
                Some(Outcome::Completed),
                0,
            ));
        }
        for i in 0..100 {
            tasks.push(Task::new(format!("{kind}-pending-{i}"), kind, ENV, base()));
        }
        // 10 finished by Go on a Rust-created document (outcome ""): completed;
        // 10 created and finished by Go (no outcome field): failed.
        for i in 0..20 {
            let done = go_at + TimeDelta::milliseconds(i);
            let id = format!("{kind}-go-{i}");
            if i >= 10 {
                go.push(id.clone());
            }
            tasks.push(finished(id, kind, done, None, usize::from(i >= 10)));
        }
    }
    create(&store, tasks).await;
    drop_outcome(&store, &go).await;
    let now = base() + TimeDelta::hours(2);

    let (early, cost) = measured(&store, store.count_by_status(ENV, Some("early"), now)).await;
    println!(
        "count_by_status, 1,000 tasks, 20 Go-finished first: {} reads",
        cost.reads
    );
    let expected = StatusCounts::from([
        (TaskStatus::Pending, 100),
        (TaskStatus::Completed, 890),
        (TaskStatus::Failed, 10),
    ]);
    assert_eq!(early.expect("count"), expected);
    // 11 COUNTs and the 20 Go documents.
    assert!(cost.reads <= 11 + 20, "{cost:?}");

    let (late, cost) = measured(&store, store.count_by_status(ENV, Some("late"), now)).await;
    println!(
        "count_by_status, 1,000 tasks, 20 Go-finished last: {} reads (bounded)",
        cost.reads
    );
    let late = late.expect("count");
    assert_eq!(late.tasks(), 1000);
    assert_eq!(late.count(TaskStatus::Pending), 100);
    assert!(cost.reads <= 11 + 500, "{cost:?}");

    let (stats, cost) = measured(&store, store.inspect(ENV, now)).await;
    println!("inspect, 2 kinds, 2,000 tasks: {} reads", cost.reads);
    let stats = stats.expect("inspect");
    assert_eq!(stats.kinds.len(), 2);
    assert_eq!(
        stats.kind("early").map(|k| k.counts.clone()),
        Some(expected)
    );
    assert_eq!(
        stats.kind("early").and_then(|k| k.oldest_pending_since),
        Some(base())
    );
    // kinds (3), then per kind the counts, two next_due queries and the
    // oldest pending task: the bounded Go read of `late` dominates.
    assert!(
        cost.reads <= 3 + (11 + 20 + 2 + 8) + (11 + 500 + 2 + 8),
        "{cost:?}"
    );

    // Without Go-finished documents, only COUNTs.
    let fresh = self::store().await;
    let tasks = (0..2000)
        .map(|i| {
            let kind = if i % 2 == 0 { "a" } else { "b" };
            if i % 4 < 2 {
                finished(format!("t{i}"), kind, base(), Some(Outcome::Completed), 0)
            } else {
                Task::new(format!("t{i}"), kind, ENV, base())
            }
        })
        .collect();
    create(&fresh, tasks).await;
    let (_, cost) = measured(&fresh, fresh.count_by_status(ENV, None, now)).await;
    println!(
        "count_by_status, 2,000 tasks, no Go document: {} reads",
        cost.reads
    );
    assert!(cost.reads <= 11 + 2, "{cost:?}");
    let (stats, cost) = measured(&fresh, fresh.inspect(ENV, now)).await;
    println!(
        "inspect, 2 kinds, 2,000 tasks, no Go document: {} reads",
        cost.reads
    );
    assert_eq!(stats.expect("inspect").kinds.len(), 2);
    assert!(cost.reads <= 3 + 2 * (11 + 2 + 8), "{cost:?}");
}

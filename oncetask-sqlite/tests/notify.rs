//! Change notices between stores on one file (as between processes): what
//! another store wrote arrives, classified as the writer classified it, in
//! the env it was written in; a store's own writes arrive once.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use oncetask_core::store::Notification;
use oncetask_core::{Store, Task};
use oncetask_sqlite::{SqliteOptions, SqliteStore};

fn url() -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "oncetask-sqlite-notify-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    let url = format!("sqlite://{}", dir.join("tasks.db").display());
    (dir, url)
}

async fn next(notices: &mut BoxStream<'static, Notification>) -> Notification {
    tokio::time::timeout(Duration::from_secs(10), notices.next())
        .await
        .expect("a notice within 10 s")
        .expect("the stream goes on")
}

async fn nothing_more(notices: &mut BoxStream<'static, Notification>) {
    let more = tokio::time::timeout(Duration::from_millis(300), notices.next()).await;
    assert!(more.is_err(), "no further notice: {more:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stores_writes_arrive_classified_and_own_writes_once() {
    let (dir, url) = url();
    let writer = SqliteStore::connect(&url).await.expect("connect");
    let watcher = SqliteStore::connect(&url).await.expect("connect");
    let mut notices = watcher.subscribe("E").expect("notices");
    // Let the watcher's first look pass: what comes after it is news.
    tokio::time::sleep(Duration::from_millis(200)).await;

    writer
        .create(vec![Task::new("a", "k", "E", chrono::Utc::now())])
        .await
        .expect("create");
    let notice = next(&mut notices).await;
    assert_eq!(
        (notice.kind.as_str(), notice.may_touch_claimed),
        ("k", false)
    );

    // Another env's write is not this subscriber's.
    writer
        .create(vec![Task::new("b", "k", "other", chrono::Utc::now())])
        .await
        .expect("create");
    assert!(writer.set_paused("E", "k2", true).await.expect("pause"));
    let notice = next(&mut notices).await;
    assert_eq!(
        (notice.kind.as_str(), notice.may_touch_claimed),
        ("k2", true)
    );
    nothing_more(&mut notices).await;

    // The subscriber's own store: announced at its commit, not again by
    // its watcher.
    watcher
        .create(vec![Task::new("c", "k3", "E", chrono::Utc::now())])
        .await
        .expect("create");
    let notice = next(&mut notices).await;
    assert_eq!(
        (notice.kind.as_str(), notice.may_touch_claimed),
        ("k3", false)
    );
    nothing_more(&mut notices).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watching_off_only_own_writes_arrive() {
    let (dir, url) = url();
    let writer = SqliteStore::connect(&url).await.expect("connect");
    let options = SqliteOptions::new().watch_interval(None);
    let deaf = SqliteStore::connect_with(&url, &options)
        .await
        .expect("connect");
    let mut notices = deaf.subscribe("E").expect("notices");
    tokio::time::sleep(Duration::from_millis(200)).await;
    writer
        .create(vec![Task::new("a", "k", "E", chrono::Utc::now())])
        .await
        .expect("create");
    nothing_more(&mut notices).await;
    deaf.create(vec![Task::new("b", "k", "E", chrono::Utc::now())])
        .await
        .expect("create");
    assert_eq!(next(&mut notices).await.kind, "k");
    let _ = std::fs::remove_dir_all(dir);
}

/// A watcher that finds rows it never read deleted cannot tell what they
/// announced: it announces every kind of its env as a change that may touch
/// held tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_rows_are_announced_as_changes_that_may_touch_held_tasks() {
    let (dir, url) = url();
    let writer = SqliteStore::connect(&url).await.expect("connect");
    // Looks once at once, then every 2 s: the writes below fall between.
    let options = SqliteOptions::new().watch_interval(Some(Duration::from_secs(2)));
    let watcher = SqliteStore::connect_with(&url, &options)
        .await
        .expect("connect");
    writer
        .create(vec![Task::new(
            "old",
            "other-kind",
            "E",
            chrono::Utc::now(),
        )])
        .await
        .expect("create");
    let mut notices = watcher.subscribe("E").expect("notices");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in ["a", "b"] {
        writer
            .create(vec![Task::new(id, "k", "E", chrono::Utc::now())])
            .await
            .expect("create");
    }
    // Pruned before the watcher read it (as if it had fallen far behind).
    sqlx::query("DELETE FROM changes WHERE seq = (SELECT max(seq) - 1 FROM changes)")
        .execute(writer.pool())
        .await
        .expect("delete a row");
    let mut seen = [next(&mut notices).await, next(&mut notices).await];
    seen.sort_by(|a, b| a.kind.cmp(&b.kind));
    let seen: Vec<(&str, bool)> = seen
        .iter()
        .map(|n| (n.kind.as_str(), n.may_touch_claimed))
        .collect();
    assert_eq!(seen, vec![("k", true), ("other-kind", true)]);
    let _ = std::fs::remove_dir_all(dir);
}

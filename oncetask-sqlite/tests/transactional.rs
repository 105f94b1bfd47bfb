//! Tasks created inside the caller's own transaction
//! ([`SqliteStore::create_in`]): they exist, and every store on the file
//! hears of them (this one included), only once it commits.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use oncetask_core::store::Notification;
use oncetask_core::{Store, Task};
use oncetask_sqlite::SqliteStore;

fn url() -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "oncetask-sqlite-transactional-{}",
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

async fn exists(store: &SqliteStore, id: &str) -> bool {
    !store.get(&[id.to_owned()]).await.expect("get").is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_created_in_a_transaction_exist_and_are_announced_only_once_it_commits() {
    let (dir, url) = url();
    let store = SqliteStore::connect(&url).await.expect("connect");
    let other = SqliteStore::connect(&url).await.expect("connect");
    let mut own = store.subscribe("E").expect("notices");
    let mut others = other.subscribe("E").expect("notices");
    let now = chrono::Utc::now();

    // Rolled back: no task, and nothing to announce.
    let mut tx = store
        .pool()
        .begin_with("BEGIN IMMEDIATE")
        .await
        .expect("begin");
    store
        .create_in(&mut tx, vec![Task::new("gone", "k", "E", now)])
        .await
        .expect("create in the transaction");
    tx.rollback().await.expect("rollback");
    assert!(
        !exists(&store, "gone").await,
        "a rolled-back create leaves no task"
    );

    // Committed: the task, and a notice for every store on the file.
    let mut tx = store
        .pool()
        .begin_with("BEGIN IMMEDIATE")
        .await
        .expect("begin");
    sqlx::query("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY)")
        .execute(&mut *tx)
        .await
        .expect("the caller's own write");
    sqlx::query("INSERT INTO orders (id) VALUES ('o-1')")
        .execute(&mut *tx)
        .await
        .expect("the caller's own write");
    let outcomes = store
        .create_in(&mut tx, vec![Task::new("kept", "k", "E", now)])
        .await
        .expect("create in the transaction");
    assert!(matches!(
        outcomes.as_slice(),
        [oncetask_core::store::CreateOutcome::Created]
    ));
    assert!(
        !exists(&other, "kept").await,
        "not visible before the commit"
    );
    tx.commit().await.expect("commit");
    assert!(exists(&other, "kept").await);
    for notices in [&mut own, &mut others] {
        let notice = next(notices).await;
        assert_eq!(notice.kind, "k");
        assert!(!notice.may_touch_claimed);
    }
    let _ = std::fs::remove_dir_all(dir);
}

//! Opening a database: the URL forms, and the typed errors of a file that
//! is not SQLite, a path where no database can be created, a schema newer
//! than the library, and a lock held past the busy timeout.

use std::path::PathBuf;
use std::time::Duration;

use oncetask_conformance::connect::{invalid_config, unavailable};
use oncetask_core::store::{ClaimMode, ClaimOrder, ClaimRequest};
use oncetask_core::{Store, Task, lifecycle};
use oncetask_sqlite::{Durability, SqliteOptions, SqliteStore};
use sqlx::Connection;

/// A fresh, empty directory for one test.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "oncetask-sqlite-connect-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

fn url(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

fn pending(id: &str) -> Task {
    Task::new(id, "k", "E", chrono::Utc::now())
}

async fn claim_one(store: &SqliteStore) -> Vec<Task> {
    let now = chrono::Utc::now();
    let request = ClaimRequest {
        env: "E".into(),
        kind: "k".into(),
        now,
        grant: lifecycle::LeaseGrant::new(now, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit: 1 },
        order: ClaimOrder::Priority,
    };
    store.claim(&request).await.expect("claim").tasks
}

#[tokio::test]
async fn a_new_file_is_created_migrated_and_kept_across_connects() {
    let dir = scratch();
    let path = dir.join("tasks.db");
    let store = SqliteStore::connect(&url(&path)).await.expect("connect");
    store.create(vec![pending("a")]).await.expect("create");
    store.pool().close().await;
    let again = SqliteStore::connect_with(
        &url(&path),
        &SqliteOptions::new().durability(Durability::Normal),
    )
    .await
    .expect("connect again");
    assert_eq!(claim_one(&again).await.len(), 1, "the task survived");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(again.pool())
        .await
        .expect("journal mode");
    assert_eq!(mode, "wal");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_missing_file_is_refused_when_it_may_not_be_created() {
    let dir = scratch();
    let path = dir.join("missing.db");
    let options = SqliteOptions::new().create_if_missing(false);
    let err = SqliteStore::connect_with(&url(&path), &options)
        .await
        .expect_err("no file");
    let message = invalid_config(&err);
    assert!(message.contains("no SQLite database at"), "{message}");
    assert!(!path.exists(), "nothing was created");
    SqliteStore::connect(&url(&path)).await.expect("create it");
    SqliteStore::connect_with(&url(&path), &options)
        .await
        .expect("an existing file opens");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn without_migrations_only_the_current_schema_opens() {
    let dir = scratch();
    let path = dir.join("tasks.db");
    let options = SqliteOptions::new().migrate(false);
    // A SQLite file oncetask never set up.
    let conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("create a bare file");
    conn.close().await.expect("close");
    let err = SqliteStore::connect_with(&url(&path), &options)
        .await
        .expect_err("no schema");
    let message = invalid_config(&err);
    assert!(message.contains("has no oncetask schema"), "{message}");
    let store = SqliteStore::connect(&url(&path)).await.expect("migrate");
    // What an older version of this crate would have left: a migration short.
    sqlx::query("DROP INDEX tasks_leased_idx")
        .execute(store.pool())
        .await
        .expect("undo the last migration");
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(store.pool())
    .await
    .expect("forget the last migration");
    store.pool().close().await;
    let err = SqliteStore::connect_with(&url(&path), &options)
        .await
        .expect_err("an older schema");
    let message = invalid_config(&err);
    assert!(message.contains("older than this library's"), "{message}");
    let store = SqliteStore::connect(&url(&path))
        .await
        .expect("migrate again");
    store.pool().close().await;
    SqliteStore::connect_with(&url(&path), &options)
        .await
        .expect("the current schema opens");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_default_durability_is_full_and_normal_is_an_opt_in() {
    let dir = scratch();
    let synchronous = |store: SqliteStore| async move {
        let n: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(store.pool())
            .await
            .expect("synchronous");
        n
    };
    let full = SqliteStore::connect(&url(&dir.join("full.db")))
        .await
        .expect("connect");
    assert_eq!(synchronous(full).await, 2, "FULL");
    let normal = SqliteStore::connect_with(
        &url(&dir.join("normal.db")),
        &SqliteOptions::new().durability(Durability::Normal),
    )
    .await
    .expect("connect");
    assert_eq!(synchronous(normal).await, 1, "NORMAL");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_in_memory_database_is_shared_by_the_pool() {
    let store = SqliteStore::connect("sqlite::memory:")
        .await
        .expect("connect");
    store.create(vec![pending("a")]).await.expect("create");
    // Reads on every pooled connection see it.
    let ids = ["a".to_owned()];
    let reads = (0..8).map(|_| store.get(&ids));
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.expect("get").len(), 1);
    }
    assert_eq!(claim_one(&store).await.len(), 1);
}

#[tokio::test]
async fn a_relative_url_opens_a_file_relative_to_the_working_directory() {
    let name = format!(
        "oncetask-sqlite-relative-{}.db",
        uuid::Uuid::new_v4().simple()
    );
    let store = SqliteStore::connect(&format!("sqlite:{name}"))
        .await
        .expect("connect");
    assert!(std::path::Path::new(&name).exists());
    store.pool().close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{name}{suffix}"));
    }
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_refused_by_name() {
    let dir = scratch();
    let path = dir.join("notes.txt");
    std::fs::write(&path, "these are my notes, not a database; ".repeat(100)).expect("write");
    let err = SqliteStore::connect(&url(&path))
        .await
        .expect_err("not SQLite");
    let message = invalid_config(&err);
    assert!(message.contains("is not a SQLite database"), "{message}");
    assert!(message.contains("notes.txt"), "{message}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_path_in_a_missing_directory_is_refused_by_name() {
    let dir = scratch();
    let path = dir.join("no-such-dir").join("tasks.db");
    let err = SqliteStore::connect(&url(&path))
        .await
        .expect_err("no directory");
    let message = invalid_config(&err);
    assert!(message.contains("no-such-dir"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_path_under_a_file_is_refused_by_name() {
    let dir = scratch();
    let file = dir.join("plain-file");
    std::fs::write(&file, "x").expect("write");
    let err = SqliteStore::connect(&url(&file.join("tasks.db")))
        .await
        .expect_err("a file is no directory");
    let message = invalid_config(&err);
    assert!(message.contains("plain-file"), "{message}");
    assert!(message.contains("is not a directory"), "{message}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A path SQLite cannot create a file at even where its directory exists
/// (running as root, permissions would not stop it): a directory.
#[tokio::test]
async fn a_path_where_no_file_can_be_created_is_refused_by_name() {
    let dir = scratch();
    let taken = dir.join("a-directory.db");
    std::fs::create_dir(&taken).expect("mkdir");
    let err = SqliteStore::connect(&url(&taken))
        .await
        .expect_err("a directory is no database");
    let message = invalid_config(&err);
    assert!(message.contains("a-directory.db"), "{message}");
    assert!(message.contains("cannot open or create"), "{message}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_schema_newer_than_the_library_is_refused() {
    let dir = scratch();
    let path = dir.join("tasks.db");
    let store = SqliteStore::connect(&url(&path)).await.expect("connect");
    // What a later version's migration would leave behind.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(store.pool())
    .await
    .expect("record a future migration");
    store.pool().close().await;
    let err = SqliteStore::connect(&url(&path))
        .await
        .expect_err("newer schema");
    let message = invalid_config(&err);
    assert!(message.contains("schema version 9999"), "{message}");
    assert!(message.contains("newer than this library"), "{message}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_malformed_url_is_refused_before_anything_is_opened() {
    for bad in [
        "postgres://localhost/db",
        "tasks.db",
        "sqlite:x.db?mode=bogus",
    ] {
        let err = SqliteStore::connect(bad).await.expect_err(bad);
        let message = invalid_config(&err);
        assert!(message.contains("SQLite URL"), "{bad}: {message}");
    }
    let err = SqliteStore::connect_with("sqlite::memory:", &SqliteOptions::new().pool_size(0))
        .await
        .expect_err("pool size 0");
    assert!(invalid_config(&err).contains("pool size 0"));
}

/// Another process holding the write lock past the busy timeout: the write
/// waits for it, then fails as unavailable, and succeeds once it is free.
#[tokio::test]
async fn a_lock_held_past_the_busy_timeout_is_unavailable() {
    let dir = scratch();
    let path = dir.join("tasks.db");
    let store = SqliteStore::connect_with(
        &url(&path),
        &SqliteOptions::new().busy_timeout(Duration::from_millis(300)),
    )
    .await
    .expect("connect");
    let mut other = sqlx::SqliteConnection::connect(&url(&path))
        .await
        .expect("another connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("take the write lock");
    let started = std::time::Instant::now();
    let err = store.create(vec![pending("a")]).await.expect_err("locked");
    assert!(started.elapsed() >= Duration::from_millis(250), "it waited");
    let message = unavailable(&err);
    assert!(message.contains("busy timeout"), "{message}");
    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("release the lock");
    let created = store.create(vec![pending("a")]).await.expect("create");
    assert!(matches!(
        created[..],
        [oncetask_core::store::CreateOutcome::Created]
    ));
    let _ = std::fs::remove_dir_all(dir);
}

/// Processes opening a new file at the same moment take turns migrating it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_opening_a_new_file_at_once_all_get_the_schema() {
    let dir = scratch();
    let url = url(&dir.join("tasks.db"));
    let opens = (0..6).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { SqliteStore::connect(&url).await })
    });
    for opened in futures::future::join_all(opens).await {
        let store = opened.expect("join").expect("connect");
        store.create(vec![pending("a")]).await.expect("create");
    }
    let _ = std::fs::remove_dir_all(dir);
}

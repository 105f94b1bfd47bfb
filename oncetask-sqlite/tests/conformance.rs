//! The shared store conformance suite, run against [`SqliteStore`].
//!
//! Every test gets a fresh database file in this run's temporary directory,
//! so tests run in parallel without sharing tasks. The suite cannot tell
//! when a test is done with its store, so instead the first store of a run
//! removes the directories of runs older than an hour. Undecodable and
//! corrupted rows are written with raw SQL, past the store's encoder.

use std::path::PathBuf;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use oncetask_conformance::{Corruption, StoreFactory, async_trait, store_conformance_suite};
use oncetask_core::Store;
use oncetask_sqlite::SqliteStore;

/// The prefix of the runs' directories in the temporary directory.
const PREFIX: &str = "oncetask-sqlite-conformance-";

/// The directory of this test process's databases.
fn test_dir() -> PathBuf {
    std::env::temp_dir().join(format!("{PREFIX}{}", std::process::id()))
}

/// Set once the directories of earlier runs are gone.
static CLEANED: Once = Once::new();

/// Removes the run directories last changed over an hour ago.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(PREFIX)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < hour_ago);
        if stale {
            // Another run may remove it at the same moment: ignore failures.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Hands out a fresh database file per test.
struct SqliteFactory;

#[async_trait]
impl StoreFactory for SqliteFactory {
    type Store = SqliteStore;

    async fn new_store(&self) -> SqliteStore {
        CLEANED.call_once(remove_stale_dirs);
        let dir = test_dir();
        std::fs::create_dir_all(&dir).expect("create the test directory");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{n}-{}.db", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", path.display());
        SqliteStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"))
    }

    async fn insert_undecodable(
        &self,
        store: &SqliteStore,
        id: &str,
        env: &str,
        kind: &str,
    ) -> bool {
        sqlx::query("DELETE FROM tasks WHERE id = ?1")
            .bind(id)
            .execute(store.pool())
            .await
            .expect("delete");
        // A payload that is not a JSON object: the row is not a task.
        sqlx::query(
            "INSERT INTO tasks (id, kind, env, data, created_at, attempts, \
             cancellation_attempts, errors, is_cancelled, version) \
             VALUES (?1, ?2, ?3, '\"conformance suite: not a task\"', 0, 0, 0, '[]', 0, 0)",
        )
        .bind(id)
        .bind(kind)
        .bind(env)
        .execute(store.pool())
        .await
        .expect("insert an undecodable row");
        true
    }

    /// Stores the healthy original, then breaks one column in SQL. SQLite
    /// keeps whatever value a column is given (the table is not STRICT), so
    /// each corruption is the real thing.
    async fn insert_corrupted(
        &self,
        store: &SqliteStore,
        id: &str,
        env: &str,
        kind: &str,
        corruption: Corruption,
    ) -> bool {
        let original = oncetask_conformance::corruption::original(id, env, kind);
        store
            .create(vec![original])
            .await
            .expect("create the original");
        let set = match corruption {
            // NOT NULL columns cannot lose their value: a JSON null is the
            // absent error history.
            Corruption::MissingField => "errors = 'null'",
            // Text in a counter.
            Corruption::WrongType => "attempts = 'three'",
            // Before the earliest time a task can hold (it still sorts first).
            Corruption::BadTimestamp => "created_at = -9223372036854775807",
            Corruption::UnknownStatus => "outcome = 'exploded'",
            Corruption::NegativeCount => "attempts = -1",
        };
        sqlx::query(&format!("UPDATE tasks SET {set} WHERE id = ?1"))
            .bind(id)
            .execute(store.pool())
            .await
            .expect("corrupt the row");
        true
    }
}

store_conformance_suite!(SqliteFactory);

//! The shared store conformance suite, run against [`PostgresStore`] on the
//! server at `ONCETASK_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).
//!
//! Every test gets its own schema (`oncetask_test_<unix seconds>_<random>`),
//! so tests run in parallel without sharing tasks. The suite cannot tell
//! when a test is done with its store, so instead the first store of a run
//! drops the test schemas older than an hour (left by earlier runs). `scripts/test` starts a local server
//! when none answers; an unreachable server fails the tests, never skips them.

use oncetask_conformance::{Corruption, StoreFactory, async_trait, store_conformance_suite};
use oncetask_core::Store;
use oncetask_postgres::PostgresStore;
use sqlx::postgres::PgPoolOptions;

/// The server the tests use when `ONCETASK_POSTGRES_URL` is not set.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Set once the stale test schemas of earlier runs are gone.
static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Drops `oncetask_test_<unix seconds>_*` schemas created over an hour ago.
async fn drop_stale_schemas(pool: &sqlx::PgPool) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'oncetask\\_test\\_%'",
    )
    .fetch_all(pool)
    .await
    .expect("list test schemas");
    let cutoff = chrono::Utc::now().timestamp() - 3600;
    for name in names {
        let created = name
            .strip_prefix("oncetask_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<i64>().ok());
        let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid && created.is_some_and(|t| t < cutoff) {
            // Another run may drop it at the same moment: ignore failures.
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .execute(pool)
                .await;
        }
    }
}

/// Hands out a fresh, migrated schema per test.
struct PostgresFactory;

#[async_trait]
impl StoreFactory for PostgresFactory {
    type Store = PostgresStore;

    async fn new_store(&self) -> PostgresStore {
        let url = std::env::var("ONCETASK_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let pool = PgPoolOptions::new()
            .max_connections(6)
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot reach PostgreSQL at {url} ({e}). Start it (on this machine: \
                     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                     or run `scripts/test`), or set ONCETASK_POSTGRES_URL."
                )
            });
        CLEANED.get_or_init(|| drop_stale_schemas(&pool)).await;
        let schema = format!(
            "oncetask_test_{}_{}",
            chrono::Utc::now().timestamp(),
            uuid::Uuid::new_v4().simple()
        );
        let store = PostgresStore::from_pool(pool, &schema).expect("a valid schema name");
        store.migrate().await.expect("migrate a fresh schema");
        store
    }

    async fn insert_undecodable(
        &self,
        store: &PostgresStore,
        id: &str,
        env: &str,
        kind: &str,
    ) -> bool {
        let table = store.table();
        sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
            .bind(id)
            .execute(store.pool())
            .await
            .expect("delete");
        // A payload that is not a JSON object: the row is not a task.
        sqlx::query(&format!(
            "INSERT INTO {table} (id, kind, env, data, created_at, attempts, \
             cancellation_attempts, errors, is_cancelled, version) \
             VALUES ($1, $2, $3, '\"conformance suite: not a task\"'::jsonb, now(), 0, 0, \
             '[]'::jsonb, false, 0)"
        ))
        .bind(id)
        .bind(kind)
        .bind(env)
        .execute(store.pool())
        .await
        .expect("insert an undecodable row");
        true
    }

    /// Stores the healthy original, then breaks one column in SQL. The
    /// column types refuse most breakage, so each corruption is the closest
    /// one a row can hold.
    async fn insert_corrupted(
        &self,
        store: &PostgresStore,
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
            Corruption::MissingField => "errors = 'null'::jsonb",
            Corruption::WrongType => "errors = '{\"not\": \"a list\"}'::jsonb",
            // Beyond the range of a chrono time.
            Corruption::BadTimestamp => "created_at = 'infinity'",
            Corruption::UnknownStatus => "outcome = 'exploded'",
            Corruption::NegativeCount => "attempts = -1",
        };
        let table = store.table();
        sqlx::query(&format!("UPDATE {table} SET {set} WHERE id = $1"))
            .bind(id)
            .execute(store.pool())
            .await
            .expect("corrupt the row");
        true
    }
}

store_conformance_suite!(PostgresFactory);

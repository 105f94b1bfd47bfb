//! The shared store conformance suite, run against [`PostgresStore`] on the
//! server at `ONCETASK_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).
//!
//! Every test gets its own schema (`oncetask_test_<random>`), so tests run
//! in parallel without sharing tasks. `scripts/test` starts a local server
//! when none answers; an unreachable server fails the tests, never skips them.

use conformance_tests::{StoreFactory, async_trait, store_conformance_suite};
use oncetask_postgres::PostgresStore;
use sqlx::postgres::PgPoolOptions;

/// The server the tests use when `ONCETASK_POSTGRES_URL` is not set.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

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
        let schema = format!("oncetask_test_{}", uuid::Uuid::new_v4().simple());
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
}

store_conformance_suite!(PostgresFactory);

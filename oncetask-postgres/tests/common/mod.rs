//! Setup shared by the Postgres test binaries that declare `mod common;`
//! (`backend`, `controls`): the server, a schema per test, a migrated store
//! on it and its removal.
//!
//! The server is `ONCETASK_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); a test that cannot reach it
//! fails, saying how to start it, and never passes without it.

use oncetask_postgres::PostgresStore;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The env the tests' tasks live in.
pub const ENV: &str = "test";

/// The server the tests use.
pub fn url() -> String {
    std::env::var("ONCETASK_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A fresh schema name.
pub fn new_schema() -> String {
    // The conformance test's clean-up drops these after an hour if a failing
    // test left one behind.
    format!(
        "oncetask_test_{}_{}",
        chrono::Utc::now().timestamp(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A store with its own pool on `schema`, migrated.
pub async fn store(schema: &str) -> PostgresStore {
    let url = url();
    let store = PostgresStore::connect(&url, schema)
        .await
        .unwrap_or_else(|e| unreachable_server(&url, e));
    store.migrate().await.expect("migrate");
    store
}

/// Fails the test, saying what to start.
pub fn unreachable_server(url: &str, e: impl std::fmt::Display) -> ! {
    panic!(
        "cannot reach PostgreSQL at {url} ({e}). Start it (on this machine: \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
         or run `scripts/test`), or set ONCETASK_POSTGRES_URL."
    )
}

/// Drops the store's schema.
pub async fn drop_schema(store: &PostgresStore) {
    sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", store.schema()))
        .execute(store.pool())
        .await
        .expect("drop the test schema");
}

//! Connecting with `PostgresStore::connect_with`: a malformed URL or setting
//! is `InvalidConfig` at once; a closed port is `Unavailable` naming the URL
//! (password masked), the timeout and what to check. The tests check the
//! error and its message, never how long it took.
//!
//! The closed-port and malformed-URL tests need no server; the others use
//! `ONCETASK_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
//! and fail when it cannot be reached.

use std::time::Duration;

use oncetask_conformance::connect::{PASSWORD, closed_port, quick, silent_listener};
use oncetask_core::StoreError;
use oncetask_core::store::ConnectOptions;
use oncetask_postgres::PostgresStore;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("ONCETASK_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

#[tokio::test]
async fn a_closed_port_is_unavailable_naming_the_masked_url_and_what_to_check() {
    let port = closed_port();
    let url = format!("postgres://app:{PASSWORD}@127.0.0.1:{port}/app");
    let err = PostgresStore::connect_with(&url, "oncetask", &quick())
        .await
        .expect_err("nothing listens");
    let StoreError::Unavailable(message) = &err else {
        panic!("expected Unavailable, got {err:?}");
    };
    assert!(
        message.contains(&format!(
            "cannot reach PostgreSQL at postgres://app:***@127.0.0.1:{port}/app"
        )),
        "{message}"
    );
    assert!(message.contains("connect timeout 1s"), "{message}");
    assert!(
        message.contains("check that the PostgreSQL server is running"),
        "{message}"
    );
    assert!(!err.to_string().contains(PASSWORD), "{err}");
    assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_is_unavailable_not_a_hang() {
    let (_listener, port) = silent_listener();
    let url = format!("postgres://app:{PASSWORD}@127.0.0.1:{port}/app");
    let err = PostgresStore::connect_with(&url, "oncetask", &quick())
        .await
        .expect_err("nothing answers");
    let StoreError::Unavailable(message) = &err else {
        panic!("expected Unavailable, got {err:?}");
    };
    assert!(
        message.contains(&format!(
            "cannot reach PostgreSQL at postgres://app:***@127.0.0.1:{port}/app \
             (connect timeout 1s): no answer"
        )),
        "{message}"
    );
    assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
}

#[tokio::test]
async fn malformed_settings_are_invalid_config_at_once() {
    let port = closed_port();
    for (url, schema, options, expected) in [
        (
            format!("postgres://app:{PASSWORD}@127.0.0.1:notaport/app"),
            "oncetask",
            quick(),
            "invalid PostgreSQL URL postgres://app:***@127.0.0.1:notaport/app",
        ),
        (
            format!("postgres://app:{PASSWORD}@127.0.0.1:{port}/app"),
            "no such;schema",
            quick(),
            "invalid schema name",
        ),
        (
            format!("postgres://app:{PASSWORD}@127.0.0.1:{port}/app"),
            "oncetask",
            quick().pool_size(0),
            "pool size 0",
        ),
    ] {
        let err = PostgresStore::connect_with(&url, schema, &options)
            .await
            .expect_err("invalid");
        let StoreError::InvalidConfig(message) = &err else {
            panic!("{url} {schema}: expected InvalidConfig, got {err:?}");
        };
        assert!(message.contains(expected), "{message}");
        assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
    }
    // `connect` (the defaults) takes the same path.
    let err = PostgresStore::connect("postgres://app@127.0.0.1:notaport/app", "oncetask")
        .await
        .expect_err("invalid");
    assert!(matches!(err, StoreError::InvalidConfig(_)), "{err:?}");
}

/// A database the server does not have: the server refuses the URL, a
/// configuration error.
#[tokio::test]
async fn a_missing_database_is_invalid_config() {
    let url = url();
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    let mut missing = format!("{server}/oncetask_no_such_database");
    if !query.is_empty() {
        missing = format!("{missing}?{query}");
    }
    let err = PostgresStore::connect_with(&missing, "oncetask", &quick())
        .await
        .expect_err("no such database");
    match &err {
        StoreError::InvalidConfig(message) => {
            assert!(message.contains("oncetask_no_such_database"), "{message}");
            assert!(message.contains("check the URL's"), "{message}");
        }
        StoreError::Unavailable(message) => panic!(
            "cannot reach PostgreSQL at {url} ({message}). Start it (on this machine: \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or run \
             `scripts/test`), or set ONCETASK_POSTGRES_URL."
        ),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

/// The options reach the pool: its size; the connect timeout does not
/// become the acquire timeout of later calls (waiting for a free connection
/// under load is not a connect failure).
#[tokio::test]
async fn the_options_set_the_pool() {
    let url = url();
    let options = ConnectOptions::default()
        .connect_timeout(Duration::from_secs(3))
        .pool_size(3);
    let store = PostgresStore::connect_with(&url, "oncetask_connect_test", &options)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {url} ({e}). Start it (on this machine: \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                 or run `scripts/test`), or set ONCETASK_POSTGRES_URL."
            )
        });
    let pool = store.pool().options();
    assert_eq!(pool.get_max_connections(), 3);
    assert_eq!(
        pool.get_acquire_timeout(),
        PostgresStore::pool_options().get_acquire_timeout()
    );
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(store.pool())
        .await
        .expect("a query");
    assert_eq!(one, 1);
    store.pool().close().await;
}

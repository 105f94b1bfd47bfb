//! Connecting with `RedisStore::connect_with` and `connect_cluster_with`: a
//! malformed URL or prefix is `InvalidConfig` at once; a closed port is
//! `Unavailable` naming the URL (password masked), the timeout and what to
//! check. The tests check the error and its message, never how long it took.
//!
//! The closed-port and malformed-URL tests need no server; the last one uses
//! `ONCETASK_REDIS_URL` (default `redis://127.0.0.1:6379`) and fails when it
//! cannot be reached.

use oncetask_conformance::connect::{
    PASSWORD, closed_port, invalid_config, quick, silent_listener, unavailable,
};
use oncetask_core::Store;
use oncetask_redis::RedisStore;

mod common;

#[tokio::test]
async fn a_closed_port_is_unavailable_naming_the_masked_url_and_what_to_check() {
    let port = closed_port();
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:{port}/0");
    let err = RedisStore::connect_with(&url, "oncetask", &quick())
        .await
        .expect_err("nothing listens");
    let message = unavailable(&err);
    assert!(
        message.contains(&format!(
            "cannot reach Redis at redis://app:***@127.0.0.1:{port}/0"
        )),
        "{message}"
    );
    assert!(message.contains("connect timeout 1s"), "{message}");
    assert!(
        message.contains("check that the Redis server is running"),
        "{message}"
    );
    assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_is_unavailable_not_a_hang() {
    let (_listener, port) = silent_listener();
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:{port}/0");
    let err = RedisStore::connect_with(&url, "oncetask", &quick())
        .await
        .expect_err("nothing answers");
    let message = unavailable(&err);
    assert!(
        message.contains(&format!(
            "cannot reach Redis at redis://app:***@127.0.0.1:{port}/0 (connect timeout 1s)"
        )),
        "{message}"
    );
    assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
}

#[tokio::test]
async fn a_cluster_of_closed_ports_is_unavailable_naming_every_seed() {
    let (a, b) = (closed_port(), closed_port());
    let seeds = [
        format!("redis://:{PASSWORD}@127.0.0.1:{a}"),
        format!("redis://:{PASSWORD}@127.0.0.1:{b}"),
    ];
    let err = RedisStore::connect_cluster_with(&seeds, "oncetask", &quick())
        .await
        .expect_err("nothing listens");
    let message = unavailable(&err);
    assert!(
        message.contains(&format!(
            "cannot reach the Redis Cluster at redis://:***@127.0.0.1:{a}, \
             redis://:***@127.0.0.1:{b}"
        )),
        "{message}"
    );
    assert!(message.contains("connect timeout 1s"), "{message}");
    assert!(
        message.contains("check that the cluster's nodes are running"),
        "{message}"
    );
    assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
}

#[tokio::test]
async fn malformed_settings_are_invalid_config_at_once() {
    let port = closed_port();
    for (url, prefix, expected) in [
        (
            format!("redis://app:{PASSWORD}@127.0.0.1:notaport/0"),
            "oncetask",
            "invalid Redis URL redis://app:***@127.0.0.1:notaport/0",
        ),
        (
            format!("http://app:{PASSWORD}@127.0.0.1:{port}"),
            "oncetask",
            "invalid Redis URL http://app:***@127.0.0.1",
        ),
        (
            format!("redis://127.0.0.1:{port}"),
            "bad{prefix}",
            "invalid key prefix",
        ),
    ] {
        let err = RedisStore::connect_with(&url, prefix, &quick())
            .await
            .expect_err("invalid");
        let message = invalid_config(&err);
        assert!(message.contains(expected), "{message}");
        assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
    }
    let none: [&str; 0] = [];
    let err = RedisStore::connect_cluster_with(&none, "oncetask", &quick())
        .await
        .expect_err("no seeds");
    assert!(invalid_config(&err).contains("seed"), "{err:?}");
    let seeds = [format!("redis://:{PASSWORD}@127.0.0.1:notaport")];
    let err = RedisStore::connect_cluster_with(&seeds, "oncetask", &quick())
        .await
        .expect_err("malformed seed");
    assert!(
        invalid_config(&err).contains("invalid Redis URL redis://:***@127.0.0.1:notaport"),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
    // `connect` (the defaults) takes the same path.
    let err = RedisStore::connect("redis://127.0.0.1:notaport", "oncetask")
        .await
        .expect_err("invalid");
    invalid_config(&err);
}

#[tokio::test]
async fn connect_with_reaches_a_running_server() {
    let url = common::url();
    let store = RedisStore::connect_with(&url, &common::new_prefix(), &quick())
        .await
        .unwrap_or_else(|e| panic!("{}", common::unreachable(&url, e)));
    let found = store
        .get(&["connect-test-no-such-task".to_owned()])
        .await
        .expect("a call");
    assert!(found.is_empty());
    store.purge().await.expect("purge");
}

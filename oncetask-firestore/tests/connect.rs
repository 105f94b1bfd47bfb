//! Connecting with `FirestoreStore::connect_with`: a malformed setting is
//! `InvalidConfig` at once; a closed port is `Unavailable` naming the
//! endpoint (password masked), the timeout and what to check. The tests
//! check the error and its message, never how long it took.
//!
//! The closed-port and malformed-setting tests point the client at an
//! explicit API URL and need no emulator. The last test connects to the
//! emulator (`FIRESTORE_EMULATOR_HOST`: run it with `scripts/firestore-emulator
//! cargo test -p oncetask-firestore --test connect`, or `scripts/test`) and
//! fails without it.

use firestore::FirestoreDbOptions;
use oncetask_conformance::connect::{PASSWORD, closed_port, quick, silent_listener};
use oncetask_core::store::ConnectOptions;
use oncetask_core::{Store, StoreError};
use oncetask_firestore::FirestoreStore;

fn at(url: &str) -> FirestoreDbOptions {
    FirestoreDbOptions::new("demo-oncetask".to_owned()).with_firebase_api_url(url.to_owned())
}

#[tokio::test]
async fn a_closed_port_is_unavailable_naming_the_endpoint_and_what_to_check() {
    let port = closed_port();
    let url = format!("http://probe:{PASSWORD}@127.0.0.1:{port}");
    let err = FirestoreStore::connect_with(at(&url), "onceTasks", &quick())
        .await
        .expect_err("nothing listens");
    let StoreError::Unavailable(message) = &err else {
        panic!("expected Unavailable, got {err:?}");
    };
    assert!(
        message.contains(&format!(
            "cannot reach Firestore (project demo-oncetask, database (default)) at \
             http://probe:***@127.0.0.1:{port}"
        )),
        "{message}"
    );
    assert!(message.contains("connect timeout 1s"), "{message}");
    assert!(
        message.contains("check that a Firestore API (or emulator) listens at that URL"),
        "{message}"
    );
    assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
}

/// An endpoint that takes the connection and never answers: the client
/// opens its channel, and the first read fails within the connect timeout.
#[tokio::test]
async fn an_endpoint_that_never_answers_is_unavailable_not_a_hang() {
    let (_listener, port) = silent_listener();
    let url = format!("http://127.0.0.1:{port}");
    let err = FirestoreStore::connect_with(at(&url), "onceTasks", &quick())
        .await
        .expect_err("nothing answers");
    let StoreError::Unavailable(message) = &err else {
        panic!("expected Unavailable, got {err:?}");
    };
    assert!(
        message.contains(&format!(
            "cannot reach Firestore (project demo-oncetask, database (default)) at {url} \
             (connect timeout 1s)"
        )),
        "{message}"
    );
    assert!(message.contains("listens at that URL"), "{message}");
}

#[tokio::test]
async fn malformed_settings_are_invalid_config_at_once() {
    let port = closed_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    for (db, collection, expected) in [
        (at("not a url"), "onceTasks", "invalid Firestore endpoint"),
        (
            at("ftp://127.0.0.1:1"),
            "onceTasks",
            "invalid Firestore endpoint",
        ),
        (
            FirestoreDbOptions::new(String::new()).with_firebase_api_url(endpoint.clone()),
            "onceTasks",
            "invalid Google Cloud project id",
        ),
        (
            at(&endpoint).with_database_id("Tasks_EU".to_owned()),
            "onceTasks",
            "invalid Firestore database id",
        ),
        (
            at(&endpoint),
            "tasks/nested",
            "invalid Firestore collection id",
        ),
        (at(&endpoint), "", "invalid Firestore collection id"),
    ] {
        let err = FirestoreStore::connect_with(db, collection, &quick())
            .await
            .expect_err("invalid");
        let StoreError::InvalidConfig(message) = &err else {
            panic!("{collection:?}: expected InvalidConfig, got {err:?}");
        };
        assert!(message.contains(expected), "{message}");
    }
    // `connect` (the defaults) checks the same way.
    let err = FirestoreStore::connect("", "onceTasks")
        .await
        .expect_err("no project");
    assert!(matches!(err, StoreError::InvalidConfig(_)), "{err:?}");
}

/// On the emulator: `connect_with` builds the client and the store (its
/// first read answered), and the next call answers too.
#[tokio::test]
async fn connect_with_reaches_the_emulator_and_calls_answer() {
    if std::env::var_os("FIRESTORE_EMULATOR_HOST").is_none() {
        panic!(
            "FIRESTORE_EMULATOR_HOST is not set: run `scripts/firestore-emulator cargo test -p \
             oncetask-firestore --test connect` (or `scripts/test`), which starts the emulator"
        );
    }
    let collection = format!("connect-{}", uuid::Uuid::new_v4().simple());
    let store = FirestoreStore::connect_with(
        FirestoreDbOptions::new("demo-oncetask".to_owned()),
        &collection,
        // The defaults: the emulator's first answer can take over a second.
        &ConnectOptions::default(),
    )
    .await
    .expect("the emulator answers");
    assert_eq!(store.collection(), collection);
    assert_eq!(
        store.call_timeout(),
        oncetask_firestore::store::DEFAULT_CALL_TIMEOUT
    );
    let found = store
        .get(&["no-such-task".to_owned()])
        .await
        .expect("a call answers");
    assert!(found.is_empty());
}

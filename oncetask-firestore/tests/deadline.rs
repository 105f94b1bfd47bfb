//! A connection that stops answering (a black hole, as a dead load balancer
//! or a half-open TCP connection leaves it): every call fails with
//! `Unavailable` once the store's per-call deadline passes, instead of
//! hanging. The client reaches the emulator through a loopback proxy that
//! the test can stop forwarding.
//!
//! Needs the emulator: `scripts/test -p oncetask-firestore --test deadline`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use firestore::{FirestoreDb, FirestoreDbOptions};
use oncetask_core::lifecycle::{self, LeaseGrant};
use oncetask_core::store::{Change, ClaimMode, ClaimRequest, CreateOutcome, Swap, SwapOutcome};
use oncetask_core::{Store, StoreError, Task};
use oncetask_firestore::FirestoreStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;

/// Forwards loopback connections to `upstream` while `forwarding` is set;
/// afterwards reads and drops every byte in both directions, keeping the
/// connections open.
struct Proxy {
    addr: String,
    forwarding: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let forwarding = Arc::new(AtomicBool::new(true));
        let flag = forwarding.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, flag.clone()));
                tokio::spawn(pipe(sr, cw, flag.clone()));
            }
        });
        Proxy { addr, forwarding }
    }

    fn black_hole(&self) {
        self.forwarding.store(false, Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    forwarding: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if forwarding.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

const DEADLINE: Duration = Duration::from_secs(1);

/// The test's own limit for each call: ten times the deadline.
const TEST_LIMIT: Duration = Duration::from_secs(10);

/// `call`'s answer, which must come within [`TEST_LIMIT`].
async fn answer<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, call)
        .await
        .unwrap_or_else(|_| panic!("{what} still waiting after {TEST_LIMIT:?}"))
}

fn unavailable(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m) if m.contains("DEADLINE_EXCEEDED"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_a_black_holed_connection_fail_unavailable_within_the_deadline() {
    let proxy = Proxy::start(common::emulator_host()).await;
    let options = FirestoreDbOptions {
        firebase_api_url: Some(format!("http://{}", proxy.addr)),
        ..FirestoreDbOptions::new(common::PROJECT.to_owned())
    };
    let db = FirestoreDb::with_options(options).await.unwrap();
    let collection = format!("deadline-{}", uuid::Uuid::new_v4().simple());
    // Set up with the default deadline (the first call also connects).
    let store = FirestoreStore::with_collection(db, collection);

    // Through the proxy, everything works.
    let now = Utc::now();
    let created = store
        .create(vec![
            Task::new("a", "k", "e", now),
            Task::new("b", "k", "e", now),
        ])
        .await
        .unwrap();
    assert!(
        created.iter().all(|c| matches!(c, CreateOutcome::Created)),
        "{created:?}"
    );
    let grant = LeaseGrant::new(now, Duration::from_secs(60));
    let claim = ClaimRequest {
        env: "e".into(),
        kind: "k".into(),
        now,
        grant: grant.clone(),
        mode: ClaimMode::Single { limit: 1 },
        order: oncetask_core::store::ClaimOrder::Priority,
    };
    let held = store.claim(&claim).await.unwrap().tasks;
    assert_eq!(held.len(), 1);

    proxy.black_hole();
    let store = store.with_call_timeout(DEADLINE);
    assert_eq!(store.call_timeout(), DEADLINE);
    let before = store.stats();

    let err = answer("get", store.get(&["a".to_owned()]))
        .await
        .unwrap_err();
    assert!(unavailable(&err), "get: {err}");

    let err = answer("claim", store.claim(&claim)).await.unwrap_err();
    assert!(unavailable(&err), "claim: {err}");

    let err = answer("count", store.count_by_status("e", None, now))
        .await
        .unwrap_err();
    assert!(unavailable(&err), "count_by_status: {err}");

    let done = lifecycle::succeed(&held[0], &grant.token, now, None).unwrap();
    let swapped = answer(
        "swap",
        store.swap(&[Swap::new(&held[0], Change::Outcome, &done)]),
    )
    .await;
    match swapped.unwrap().remove(0) {
        SwapOutcome::Failed(e) => assert!(unavailable(&e), "swap: {e}"),
        other => panic!("swap: {other:?}"),
    }

    let created = answer("create", store.create(vec![Task::new("c", "k", "e", now)])).await;
    match created.unwrap().remove(0) {
        CreateOutcome::Failed(e) => assert!(unavailable(&e), "create: {e}"),
        other => panic!("create: {other:?}"),
    }
    let spent = store.stats().since(&before);
    assert!(spent.requests >= 5, "each call was sent: {spent:?}");
}

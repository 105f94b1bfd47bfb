//! Quota and overload: when Firestore answers RESOURCE_EXHAUSTED, reads,
//! queries and batched writes back off and try again (up to 3 retries,
//! after 0.5 s, 1 s and 2 s plus jitter); past the last retry the call fails
//! with a transient `Unavailable` error naming the code. The client reaches
//! the emulator through a loopback gRPC server that refuses as many calls as
//! the test tells it to and forwards the rest.
//!
//! Needs the emulator: `scripts/test -p oncetask-firestore --test resource_exhausted`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use chrono::Utc;
use firestore::gcloud_sdk::tonic::body::Body;
use firestore::gcloud_sdk::tonic::server::NamedService;
use firestore::gcloud_sdk::tonic::transport::server::TcpIncoming;
use firestore::gcloud_sdk::tonic::transport::{Channel, Server};
use firestore::gcloud_sdk::tonic::{self, Status};
use firestore::{FirestoreDb, FirestoreDbOptions};
use oncetask_core::store::{CreateOutcome, Fetched, TaskFilter};
use oncetask_core::{Store, StoreError, Task};
use oncetask_firestore::FirestoreStore;

mod common;

/// Firestore's gRPC service, in front of the emulator: refuses the next
/// `refuse` calls with RESOURCE_EXHAUSTED, forwards the others.
#[derive(Clone)]
struct Quota {
    upstream: Channel,
    refuse: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl NamedService for Quota {
    const NAME: &'static str = "google.firestore.v1.Firestore";
}

impl tower::Service<http::Request<Body>> for Quota {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let refuse = self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            self.refused.fetch_add(1, Ordering::SeqCst);
            let quota = Status::resource_exhausted("Quota exceeded.").into_http();
            return Box::pin(async move { Ok(quota) });
        }
        let mut upstream = self.upstream.clone();
        Box::pin(async move {
            let unavailable =
                |e: tonic::transport::Error| Status::unavailable(e.to_string()).into_http();
            if let Err(e) =
                std::future::poll_fn(|cx| tower::Service::poll_ready(&mut upstream, cx)).await
            {
                return Ok(unavailable(e));
            }
            Ok(tower::Service::call(&mut upstream, request)
                .await
                .unwrap_or_else(unavailable))
        })
    }
}

/// A store whose calls go through a [`Quota`] server.
async fn store_behind_quota() -> (FirestoreStore, Quota) {
    let upstream = Channel::from_shared(format!("http://{}", common::emulator_host()))
        .unwrap()
        .connect_lazy();
    let quota = Quota {
        upstream,
        refuse: Arc::default(),
        refused: Arc::default(),
    };
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let server = Server::builder().add_service(quota.clone());
    tokio::spawn(server.serve_with_incoming(incoming));
    let options = FirestoreDbOptions {
        firebase_api_url: Some(format!("http://{addr}")),
        ..FirestoreDbOptions::new(common::PROJECT.to_owned())
    };
    let db = FirestoreDb::with_options(options).await.unwrap();
    let collection = format!("quota-{}", uuid::Uuid::new_v4().simple());
    (FirestoreStore::with_collection(db, collection), quota)
}

impl Quota {
    /// Refuses the next `n` calls; returns how many were refused so far.
    fn refuse_next(&self, n: usize) -> usize {
        self.refuse.store(n, Ordering::SeqCst);
        self.refused.load(Ordering::SeqCst)
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_back_off_on_resource_exhausted_and_then_give_up_unavailable() {
    let (store, quota) = store_behind_quota().await;
    let now = Utc::now();
    let ids = ["a".to_owned()];

    // Batched writes: two refusals, then the create goes through.
    let before = (quota.refuse_next(2), store.stats());
    let created = store
        .create(vec![Task::new("a", "k", "e", now)])
        .await
        .unwrap();
    assert!(
        matches!(created[..], [CreateOutcome::Created]),
        "{created:?}"
    );
    assert_eq!(quota.refused() - before.0, 2);
    assert_eq!(store.stats().since(&before.1).retries, 2);

    // Reads by id.
    let before = (quota.refuse_next(2), store.stats());
    let got = store.get(&ids).await.unwrap();
    assert!(
        matches!(&got[..], [Fetched::Task(t)] if t.id == "a"),
        "{got:?}"
    );
    assert_eq!(quota.refused() - before.0, 2);
    assert_eq!(store.stats().since(&before.1).retries, 2);

    // Queries.
    let before = (quota.refuse_next(1), store.stats());
    let found = store.find(&TaskFilter::env("e", now)).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(quota.refused() - before.0, 1);
    assert_eq!(store.stats().since(&before.1).retries, 1);

    // A quota that does not recover: three retries, then `Unavailable`.
    let before = (quota.refuse_next(usize::MAX), store.stats());
    let err = store.get(&ids).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("RESOURCE_EXHAUSTED")),
        "{err}"
    );
    assert_eq!(quota.refused() - before.0, 4, "the call and three retries");
    assert_eq!(store.stats().since(&before.1).retries, 3);
    quota.refuse_next(0);
    assert!(
        store.get(&ids).await.is_ok(),
        "answers again once the quota recovers"
    );
}

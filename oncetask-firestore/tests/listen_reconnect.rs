//! The listener behind `subscribe` survives a dropped connection: the
//! listening store talks to the emulator through a TCP proxy in this test,
//! the test cuts every proxied connection, and a task created afterwards
//! (through a direct connection) is still noticed, over a new connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use firestore::{FirestoreDb, FirestoreDbOptions};
use futures::{Stream, StreamExt};
use oncetask_core::store::Notification;
use oncetask_core::{Store, Task};
use oncetask_firestore::FirestoreStore;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

mod common;
use common::{PROJECT, emulator_host};

/// A loopback TCP proxy to the emulator whose connections can be cut.
struct Proxy {
    address: String,
    accepted: Arc<AtomicUsize>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a port");
        let address = listener.local_addr().expect("address").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let pipes: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (counter, handles) = (accepted.clone(), pipes.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                handles.lock().expect("lock").push(pipe);
            }
        });
        Self {
            address,
            accepted,
            pipes,
        }
    }

    /// Drops every open connection (both ends see a reset/EOF).
    fn cut(&self) {
        for pipe in self.pipes.lock().expect("lock").drain(..) {
            pipe.abort();
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// The next notice of `kind`, skipping others (a resumed listener may
/// re-report documents it already knew).
async fn notice_of(stream: &mut (impl Stream<Item = Notification> + Unpin), kind: &str) {
    let wait = async {
        while let Some(n) = stream.next().await {
            if n.kind == kind {
                return;
            }
        }
        panic!("the notice stream ended");
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("no notice of kind {kind} within 60 s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_after_its_connection_drops() {
    let proxy = Proxy::start(emulator_host()).await;
    let mut options = FirestoreDbOptions::new(PROJECT.to_owned());
    options.firebase_api_url = Some(format!("http://{}", proxy.address));
    let proxied = FirestoreDb::with_options(options)
        .await
        .expect("a client through the proxy");
    let direct = FirestoreDb::new(PROJECT).await.expect("a client");

    let collection = format!("reconnect-{}", uuid::Uuid::new_v4().simple());
    let listening = FirestoreStore::with_collection(proxied, collection.clone());
    let writer = FirestoreStore::with_collection(direct, collection);

    let mut notices = listening.subscribe("E").expect("a listener");
    writer
        .create(vec![Task::new("a", "before-cut", "E", Utc::now())])
        .await
        .expect("create");
    notice_of(&mut notices, "before-cut").await;
    let connections = proxy.accepted();
    assert!(connections >= 1, "the listener goes through the proxy");

    proxy.cut();
    writer
        .create(vec![Task::new("b", "after-cut", "E", Utc::now())])
        .await
        .expect("create");
    notice_of(&mut notices, "after-cut").await;
    assert!(
        proxy.accepted() > connections,
        "the notice came over a new connection"
    );
}

//! Several managers on the Firestore emulator, each with its own client (as
//! separate processes would have): every task completes exactly once, no
//! two tasks of one resource key run at once, nothing stays leased; and a
//! task created through one manager wakes another through the listener.
//!
//! Sized for the emulator (one JVM on a shared 2-core machine), not for
//! throughput.

use std::sync::Arc;
use std::time::Duration;

use oncetask_conformance::fleet::{
    Fleet, every_task_runs_once_across_managers, wake_up_latencies_across_managers,
};
use oncetask_core::Store;
use oncetask_firestore::FirestoreStore;

mod common;
use common::db;

const ENV: &str = "fleet";

/// A store with a client of its own on `collection`.
async fn store(collection: &str) -> FirestoreStore {
    FirestoreStore::with_collection(db().await, collection)
}

fn collection() -> String {
    format!("fleet-{}", uuid::Uuid::new_v4().simple())
}

/// Three managers with 4 workers each share 300 tasks on 12 keys (and 60
/// without a key).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_managers_run_every_task_once_and_never_overlap_a_key() {
    let collection = collection();
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let s = store(&collection).await;
        clients.push(s.clone());
        stores.push(Arc::new(s));
    }
    let fleet = Fleet {
        tasks: 300,
        keys: 12,
        concurrency: 4,
        deadline: Duration::from_secs(240),
    };
    every_task_runs_once_across_managers(stores, ENV, fleet).await;
    let (mut reads, mut writes, mut lost) = (0, 0, 0);
    for c in &clients {
        let s = c.stats();
        (reads, writes, lost) = (reads + s.reads, writes + s.writes, lost + s.lost_races);
    }
    eprintln!(
        "3 managers x 4 workers, {} tasks: {reads} reads, {writes} writes, {lost} lost claim races \
         (incl. creates, listeners, idle polls and the checks)",
        fleet.tasks
    );
}

/// The listener wakes an idle manager (60 s poll) when another creates a task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_on_one_manager_starts_on_another_without_waiting_for_a_poll() {
    let collection = collection();
    let latencies = wake_up_latencies_across_managers(
        Arc::new(store(&collection).await),
        Arc::new(store(&collection).await),
        ENV,
        5,
    )
    .await;
    eprintln!("cross-manager wake-up latencies (create -> handler start): {latencies:?}");
}

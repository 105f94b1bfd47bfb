//! Several managers on one database file, each on a store of its own (its
//! own pool and writer turn, as separate processes would have): SQLite's
//! write lock and busy timeout are all that coordinates their claims.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use oncetask_conformance::fleet::{
    Fleet, drain_time, every_task_runs_once_across_managers, wake_up_latencies_across_managers,
};
use oncetask_core::Store;
use oncetask_sqlite::SqliteStore;

const ENV: &str = "fleet";

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "oncetask-sqlite-managers-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Three managers with 4 workers each share 1,500 tasks on 30 resource
/// keys (and some without a key): every task completes exactly once and no
/// two tasks of one key ever run at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_stores_on_one_file_run_every_task_once_and_never_overlap_a_key() {
    let dir = scratch();
    let url = format!("sqlite://{}", dir.join("tasks.db").display());
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(SqliteStore::connect(&url).await.expect("connect")));
    }
    let fleet = Fleet {
        tasks: 1_500,
        keys: 30,
        concurrency: 4,
        deadline: Duration::from_secs(240),
    };
    every_task_runs_once_across_managers(stores, ENV, fleet).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Prints how long one manager takes to drain 2,000 keyless no-op tasks
/// (no timing asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_throughput() {
    let dir = scratch();
    let url = format!("sqlite://{}", dir.join("tasks.db").display());
    let store = SqliteStore::connect(&url).await.expect("connect");
    drain_time(Arc::new(store), ENV, 2_000, 16, Duration::from_secs(240)).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A task created through one store starts on a manager over another store
/// of the same file (as another process would have it) that polls only
/// every 60 s: the watcher's notice woke it. Prints the latencies (no
/// timing asserted beyond the 20 s the helper allows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stores_writes_wake_an_idle_manager() {
    let dir = scratch();
    let url = format!("sqlite://{}", dir.join("tasks.db").display());
    let producer = SqliteStore::connect(&url).await.expect("connect");
    let worker = SqliteStore::connect(&url).await.expect("connect");
    let mut latencies =
        wake_up_latencies_across_managers(Arc::new(producer), Arc::new(worker), ENV, 40).await;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "create-to-start across stores: p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    let _ = std::fs::remove_dir_all(dir);
}

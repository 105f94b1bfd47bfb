//! Throughput measurement, not a test: `cargo test -p oncetask-memory --release
//! --test throughput -- --ignored --nocapture` prints tasks/s.

use std::sync::Arc;
use std::time::Duration;

use oncetask_conformance::fleet::drain_time;
use oncetask_memory::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run on demand"]
async fn drain_no_op_tasks() {
    for concurrency in [8, 64] {
        let store = Arc::new(MemoryStore::new());
        drain_time(
            store,
            "bench",
            100_000,
            concurrency,
            Duration::from_secs(120),
        )
        .await;
    }
}

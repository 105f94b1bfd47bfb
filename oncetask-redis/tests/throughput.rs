//! Throughput measurement, not a test: `scripts/test -p oncetask-redis
//! --release --test throughput -- --ignored --nocapture` prints tasks/s.

mod common;

use std::sync::Arc;
use std::time::Duration;

use oncetask_conformance::fleet::drain_time;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run on demand"]
async fn drain_no_op_tasks() {
    for concurrency in [8, 64] {
        let prefix = common::new_prefix();
        let store = common::store_on(&prefix).await;
        drain_time(
            Arc::new(store.clone()),
            "bench",
            5_000,
            concurrency,
            Duration::from_secs(300),
        )
        .await;
        store.purge().await.expect("purge");
    }
}

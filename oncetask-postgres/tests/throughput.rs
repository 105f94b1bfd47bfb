//! Throughput measurement, not a test: `scripts/test -p oncetask-postgres
//! --release --test throughput -- --ignored --nocapture` prints tasks/s.

use std::sync::Arc;
use std::time::Duration;

use conformance_tests::fleet::drain_time;
use oncetask_postgres::PostgresStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run on demand"]
async fn drain_no_op_tasks() {
    let url = std::env::var("ONCETASK_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    for concurrency in [8, 64] {
        let schema = format!(
            "oncetask_test_{}_{}",
            chrono::Utc::now().timestamp(),
            uuid::Uuid::new_v4().simple()
        );
        let store = PostgresStore::connect(&url, &schema)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url} ({e}): run scripts/test"));
        store.migrate().await.expect("migrate");
        drain_time(
            Arc::new(store.clone()),
            "bench",
            5_000,
            concurrency,
            Duration::from_secs(300),
        )
        .await;
        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(store.pool())
            .await
            .expect("drop the schema");
    }
}

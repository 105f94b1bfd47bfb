//! Throughput measurement, not a test: `scripts/test -p oncetask-postgres
//! --release --test throughput -- --ignored --nocapture` prints tasks/s.

use std::sync::Arc;
use std::time::Duration;

use oncetask_conformance::fleet::drain_time;
use oncetask_postgres::PostgresStore;

/// A migrated store in a schema of its own, and the schema's name.
async fn fresh_store() -> (PostgresStore, String) {
    let url = std::env::var("ONCETASK_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!(
        "oncetask_test_{}_{}",
        chrono::Utc::now().timestamp(),
        uuid::Uuid::new_v4().simple()
    );
    let store = PostgresStore::connect(&url, &schema)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url} ({e}): run scripts/test"));
    store.migrate().await.expect("migrate");
    (store, schema)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run on demand"]
async fn drain_no_op_tasks() {
    for concurrency in [8, 64] {
        let (store, schema) = fresh_store().await;
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

/// Claim-and-complete cycles through the store alone (no manager): 4000
/// tasks, keyless or on 400 resource keys (10 tasks each), drained by 8 or
/// 32 claimers taking up to 4 tasks per claim and completing them with one
/// swap. Prints tasks/s and the mean claim call. Run it on demand:
/// `scripts/test -p oncetask-postgres --release --test throughput --
/// --ignored --nocapture claim_cycles`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run on demand"]
async fn claim_cycles() {
    use std::sync::atomic::{AtomicU64, Ordering};

    use chrono::Utc;
    use oncetask_core::lifecycle::{self, LeaseGrant};
    use oncetask_core::store::{Change, ClaimMode, ClaimRequest, Swap};
    use oncetask_core::{Store, Task};

    const TASKS: usize = 4000;
    for keyed in [false, true] {
        for claimers in [8, 32] {
            let (store, schema) = fresh_store().await;
            let now = Utc::now();
            let tasks: Vec<Task> = (0..TASKS)
                .map(|i| {
                    let mut task = Task::new(format!("t{i:05}"), "bench", "bench", now);
                    if keyed {
                        task.resource_key = Some(format!("key-{}", i % 400));
                    }
                    task
                })
                .collect();
            for chunk in tasks.chunks(1000) {
                store.create(chunk.to_vec()).await.expect("create");
            }
            sqlx::query(&format!("ANALYZE {}", store.table()))
                .execute(store.pool())
                .await
                .expect("analyze");
            let done = Arc::new(AtomicU64::new(0));
            let claims = Arc::new(AtomicU64::new(0));
            let claim_micros = Arc::new(AtomicU64::new(0));
            let started = std::time::Instant::now();
            let mut workers = Vec::new();
            for _ in 0..claimers {
                let (store, done) = (store.clone(), done.clone());
                let (claims, claim_micros) = (claims.clone(), claim_micros.clone());
                workers.push(tokio::spawn(async move {
                    while done.load(Ordering::Relaxed) < TASKS as u64 {
                        let now = Utc::now();
                        let grant = LeaseGrant::new(now, Duration::from_secs(60));
                        let request = ClaimRequest {
                            env: "bench".into(),
                            kind: "bench".into(),
                            now,
                            grant: grant.clone(),
                            mode: ClaimMode::Single { limit: 4 },
                            order: oncetask_core::store::ClaimOrder::Priority,
                        };
                        let t0 = std::time::Instant::now();
                        let claimed = store.claim(&request).await.expect("claim").tasks;
                        claim_micros.fetch_add(
                            u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX),
                            Ordering::Relaxed,
                        );
                        claims.fetch_add(1, Ordering::Relaxed);
                        if claimed.is_empty() {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                        let swaps: Vec<Swap> = claimed
                            .iter()
                            .map(|task| {
                                let next = lifecycle::succeed(task, &grant.token, Utc::now(), None)
                                    .expect("held");
                                Swap::new(task, Change::Outcome, &next)
                            })
                            .collect();
                        store.swap(&swaps).await.expect("swap");
                        done.fetch_add(claimed.len() as u64, Ordering::Relaxed);
                    }
                }));
            }
            for worker in workers {
                worker.await.expect("a claimer panicked");
            }
            let seconds = started.elapsed().as_secs_f64();
            let claims = claims.load(Ordering::Relaxed);
            println!(
                "claim cycles: {TASKS} tasks, {}, {claimers} claimers: {:.0} tasks/s, \
                 {claims} claims, mean claim {:.2} ms",
                if keyed { "400 keys" } else { "no keys" },
                TASKS as f64 / seconds,
                claim_micros.load(Ordering::Relaxed) as f64 / claims.max(1) as f64 / 1000.0
            );
            sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .execute(store.pool())
                .await
                .expect("drop the schema");
        }
    }
}

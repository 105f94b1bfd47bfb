//! The example service on every backend: the same handlers, the same
//! outcome. Postgres and Redis need `ONCETASK_POSTGRES_URL` and
//! `ONCETASK_REDIS_URL`, Firestore `FIRESTORE_EMULATOR_HOST` (scripts/test
//! sets all three); without them the test fails and says what to start.

use std::time::Duration;

use oncetask::TaskStatus;
use oncetask_example_service::{Summary, connect, run};

fn env_or_fail(var: &str, what: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: start {what} or run the tests with scripts/test")
    })
}

/// A fresh namespace (schema, key prefix or collection) per run: task ids
/// are unique per store, so runs on a shared server must not meet.
fn fresh_namespace(backend: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("example_{backend}_{}_{nanos}", std::process::id())
}

async fn run_on(url: &str, backend: &str) -> Summary {
    let store = connect(url, &fresh_namespace(backend))
        .await
        .expect("connect");
    run(store, "example", Duration::from_secs(60))
        .await
        .expect("run")
}

fn assert_every_task_ended_as_expected(summary: &Summary) {
    let status = |id: &str| summary.get(id).copied();
    assert_eq!(
        status("welcome-ada@example.com"),
        Some(TaskStatus::Completed)
    );
    assert_eq!(status("charge-1"), Some(TaskStatus::Completed));
    assert_eq!(status("charge-2"), Some(TaskStatus::Failed), "declined");
    assert_eq!(status("charge-3"), Some(TaskStatus::Cancelled));
    let occurrences: Vec<_> = summary
        .iter()
        .filter(|(id, _)| id.starts_with("weekly-digest_occ_"))
        .collect();
    assert_eq!(occurrences.len(), 1, "{summary:?}");
    assert_eq!(*occurrences[0].1, TaskStatus::Completed);
    assert_eq!(status("weekly-digest"), Some(TaskStatus::Waiting));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_on_memory() {
    assert_every_task_ended_as_expected(&run_on("memory", "memory").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_on_postgres() {
    let url = env_or_fail("ONCETASK_POSTGRES_URL", "PostgreSQL");
    assert_every_task_ended_as_expected(&run_on(&url, "postgres").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_on_redis() {
    let url = env_or_fail("ONCETASK_REDIS_URL", "Redis");
    assert_every_task_ended_as_expected(&run_on(&url, "redis").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_on_the_firestore_emulator() {
    env_or_fail("FIRESTORE_EMULATOR_HOST", "the Firestore emulator");
    assert_every_task_ended_as_expected(&run_on("firestore://example-service", "firestore").await);
}

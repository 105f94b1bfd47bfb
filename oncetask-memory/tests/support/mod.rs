//! Helpers shared by the memory backend's manager-level tests.

use std::time::Duration;

use chrono::{DateTime, Utc};
use oncetask_core::TaskData;

/// A task of kind `job` with the given id.
#[derive(serde::Serialize)]
pub struct Job {
    pub id: &'static str,
}

impl TaskData for Job {
    type Kind = &'static str;
    fn kind(&self) -> &'static str {
        "job"
    }
    fn idempotent_id(&self) -> String {
        self.id.to_owned()
    }
}

/// The tests' start time: 2025-01-06T09:00:00Z.
pub fn start() -> DateTime<Utc> {
    "2025-01-06T09:00:00Z".parse().expect("a time")
}

/// Polls `f` until it holds, failing after 10 s of wall time (worker loops
/// run on their own; task time never passes by waiting).
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut f: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

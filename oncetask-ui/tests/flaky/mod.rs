//! A store that fails while told to (the database is down), for the
//! tests of what the dashboard says and does then.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oncetask::backend::{Fetched, Forward};
use oncetask::{QueueStats, Store, StoreError, Task, TaskFilter};

/// Fails the reads the dashboard makes (`get`, `find`, `inspect`,
/// `paused_kinds`) while `failing` is set; otherwise the inner store.
pub struct Flaky {
    /// The store behind it.
    pub inner: Arc<dyn Store>,
    /// Whether the store is "down".
    pub failing: AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(
                "connection refused (os error 111)".to_owned(),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Forward for Flaky {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError> {
        self.check()?;
        self.inner.get(ids).await
    }

    async fn find(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.check()?;
        self.inner.find(filter).await
    }

    async fn inspect(&self, env: &str, now: DateTime<Utc>) -> Result<QueueStats, StoreError> {
        self.check()?;
        self.inner.inspect(env, now).await
    }

    async fn paused_kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        self.check()?;
        self.inner.paused_kinds(env).await
    }
}

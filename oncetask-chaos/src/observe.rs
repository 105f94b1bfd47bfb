//! How a worker learns what the store confirmed, without changing the core:
//! a [`Store`] decorator that writes a [`Record::Completed`] line for every
//! stored write that completed a task, and a `metrics` recorder that writes
//! a [`Record::Fenced`] line for every stale outcome the manager discarded.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use oncetask::store::{
    ClaimRequest, Claimed, CreateOutcome, Delete, DeleteOutcome, Fetched, Notification,
    StatusCounts, Swap, SwapOutcome, TaskFilter,
};
use oncetask::{QueueStats, Store, StoreError, Task, TaskStatus};

use crate::ledger::{LedgerWriter, Record, now_micros};

/// Passes every call to the wrapped store and, after a `swap` the store
/// applied that left a task completed, appends [`Record::Completed`].
///
/// A worker killed between the store's answer and the ledger write leaves a
/// completion unrecorded (the checker reports those as unconfirmed); a
/// completion is never recorded that the store did not confirm.
pub struct ConfirmingStore {
    inner: Arc<dyn Store>,
    worker: u32,
    ledger: Arc<LedgerWriter>,
}

impl ConfirmingStore {
    /// Wraps `inner` for worker `worker`.
    pub fn new(inner: Arc<dyn Store>, worker: u32, ledger: Arc<LedgerWriter>) -> Self {
        Self {
            inner,
            worker,
            ledger,
        }
    }
}

#[async_trait::async_trait]
impl Store for ConfirmingStore {
    async fn create(&self, tasks: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError> {
        self.inner.create(tasks).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
        self.inner.claim(request).await
    }

    async fn swap(&self, swaps: Vec<Swap>) -> Result<Vec<SwapOutcome>, StoreError> {
        let now = Utc::now();
        let completing: Vec<Option<String>> = swaps
            .iter()
            .map(|s| {
                (s.task.status(now) == TaskStatus::Completed && !s.task.is_generator())
                    .then(|| s.task.id.clone())
            })
            .collect();
        let outcomes = self.inner.swap(swaps).await?;
        for (id, outcome) in completing.into_iter().zip(&outcomes) {
            if let (Some(id), SwapOutcome::Applied) = (id, outcome) {
                self.ledger.append(&Record::Completed {
                    worker: self.worker,
                    id,
                    at: now_micros(),
                });
            }
        }
        Ok(outcomes)
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError> {
        self.inner.get(ids).await
    }

    async fn find(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.inner.find(filter).await
    }

    async fn count_by_status(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StatusCounts, StoreError> {
        self.inner.count_by_status(env, kind, now).await
    }

    async fn delete(&self, deletes: &[Delete]) -> Result<Vec<DeleteOutcome>, StoreError> {
        self.inner.delete(deletes).await
    }

    async fn next_due(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.inner.next_due(env, kind, after).await
    }

    async fn kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        self.inner.kinds(env).await
    }

    async fn inspect(&self, env: &str, now: DateTime<Utc>) -> Result<QueueStats, StoreError> {
        self.inner.inspect(env, now).await
    }

    fn subscribe(&self, env: &str) -> Option<BoxStream<'static, Notification>> {
        self.inner.subscribe(env)
    }
}

/// A `metrics` recorder that turns increments of
/// [`oncetask::metrics::TASKS_FENCED_OFF`] into [`Record::Fenced`] lines and
/// ignores every other metric.
pub struct FencedRecorder {
    counter: Arc<FencedCounter>,
}

impl FencedRecorder {
    /// Writes to `ledger` as worker `worker`.
    pub fn new(worker: u32, ledger: Arc<LedgerWriter>) -> Self {
        Self {
            counter: Arc::new(FencedCounter { worker, ledger }),
        }
    }
}

struct FencedCounter {
    worker: u32,
    ledger: Arc<LedgerWriter>,
}

impl CounterFn for FencedCounter {
    fn increment(&self, value: u64) {
        for _ in 0..value {
            self.ledger.append(&Record::Fenced {
                worker: self.worker,
                at: now_micros(),
            });
        }
    }

    fn absolute(&self, _value: u64) {}
}

impl Recorder for FencedRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() == oncetask::metrics::TASKS_FENCED_OFF {
            Counter::from_arc(self.counter.clone())
        } else {
            Counter::noop()
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

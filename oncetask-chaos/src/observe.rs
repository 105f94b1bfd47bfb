//! How the checks learn what the store did, without changing the core: a
//! [`Store`] decorator that writes every create, claim and conditional
//! write (and the store's answer) to the ledger, and a `metrics` recorder
//! that writes a [`Record::Fenced`] line for every stale outcome the manager
//! discarded.
//!
//! Every write oncetask makes moves a task from version `v` to `v + 1`, so
//! these lines let [`crate::history`] rebuild each task's chain of writes
//! from its created version to its stored one, including writes whose answer
//! was lost. On backends with revisions (Firestore) a write line also names
//! the revision it is conditional on and its answer the revision it made,
//! so the checks can place it among the Go-shaped writer's writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use oncetask::backend::{ClaimRequest, Claimed, CreateOutcome, Forward, Swap, SwapOutcome};
use oncetask::{Store, StoreError, Task};

use crate::ledger::{LedgerWriter, Record, now_micros};

/// Passes every call to the wrapped store and records, in the ledger:
/// [`Record::Create`] before a create, [`Record::Claimed`] for each task a
/// claim returned, [`Record::Write`] before each conditional write and
/// [`Record::Answer`] for each answer the store gave.
///
/// Lines are written before a call goes out, so a worker killed mid-call
/// leaves the intent without an answer, never an answer without an intent.
pub struct RecordingStore {
    inner: Arc<dyn Store>,
    worker: u32,
    ledger: Arc<LedgerWriter>,
    next_write: AtomicU64,
}

impl RecordingStore {
    /// Wraps `inner` for worker `worker` (0 is the coordinator).
    pub fn new(inner: Arc<dyn Store>, worker: u32, ledger: Arc<LedgerWriter>) -> Self {
        Self {
            inner,
            worker,
            ledger,
            next_write: AtomicU64::new(0),
        }
    }
}

#[async_trait::async_trait]
impl Forward for RecordingStore {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }

    async fn create(&self, tasks: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError> {
        for task in &tasks {
            self.ledger.append(&Record::Create {
                worker: self.worker,
                id: task.id.clone(),
                version: task.version,
                at: now_micros(),
            });
        }
        self.inner.create(tasks).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
        let claimed = self.inner.claim(request).await?;
        for task in &claimed.tasks {
            self.ledger.append(&Record::Claimed {
                worker: self.worker,
                id: task.id.clone(),
                version: task.version,
                at: now_micros(),
            });
        }
        Ok(claimed)
    }

    async fn swap(&self, swaps: &[Swap]) -> Result<Vec<SwapOutcome>, StoreError> {
        let now = Utc::now();
        let mut seqs = Vec::with_capacity(swaps.len());
        for swap in swaps {
            let seq = self.next_write.fetch_add(1, Ordering::Relaxed);
            let status = swap.task().status(now);
            self.ledger.append(&Record::Write {
                worker: self.worker,
                seq,
                id: swap.id().to_owned(),
                expected: swap.fence().version(),
                status: status.as_str().to_owned(),
                finishes: status.is_terminal(),
                fence: swap.fence().revision().map(|r| r.raw().to_string()),
                at: now_micros(),
            });
            seqs.push(seq);
        }
        let outcomes = self.inner.swap(swaps).await?;
        for (seq, outcome) in seqs.into_iter().zip(&outcomes) {
            let (applied, revision) = match outcome {
                SwapOutcome::Applied { revision } => (true, *revision),
                SwapOutcome::Conflict | SwapOutcome::NotFound => (false, None),
                // The item failed: whether it was applied is unknown.
                SwapOutcome::Failed(_) => continue,
            };
            self.ledger.append(&Record::Answer {
                worker: self.worker,
                seq,
                applied,
                revision: revision.map(|r| r.raw().to_string()),
                at: now_micros(),
            });
        }
        Ok(outcomes)
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

//! A store wrapper that counts and times every call: the bench's profile of
//! where a worker's time goes (round trips per task, empty claims, due-time
//! lookups), without a sampling profiler.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oncetask::backend::{
    ClaimRequest, Claimed, CreateOutcome, Delete, DeleteOutcome, Fetched, Forward, StatusCounts,
    Swap, SwapOutcome, TaskFilter,
};
use oncetask::{Store, StoreError, Task};
use serde::Serialize;

/// Calls and time of one store method.
#[derive(Debug, Default)]
struct Op {
    calls: AtomicU64,
    nanos: AtomicU64,
}

impl Op {
    fn record(&self, started: Instant) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Shared counters of the stores of one row.
#[derive(Debug, Default)]
pub struct CallStats {
    claim: Op,
    empty_claims: AtomicU64,
    swap: Op,
    next_due: Op,
    other: Op,
}

/// Store calls per task and their mean durations, for one row.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CallProfile {
    /// Claim calls per task.
    pub claims_per_task: f64,
    /// Claims that leased nothing, per task (workers racing for the same rows).
    pub empty_claims_per_task: f64,
    /// Swap calls (outcome writes) per task.
    pub swaps_per_task: f64,
    /// `next_due` lookups per task (a worker found nothing and went idle).
    pub next_due_per_task: f64,
    /// Mean claim duration, milliseconds.
    pub claim_ms: f64,
    /// Mean swap duration, milliseconds.
    pub swap_ms: f64,
}

impl CallStats {
    /// New, zeroed counters.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The profile of `tasks` tasks.
    pub fn profile(&self, tasks: u64) -> CallProfile {
        let per = |n: u64| n as f64 / tasks.max(1) as f64;
        let mean_ms = |op: &Op| {
            let calls = op.calls.load(Ordering::Relaxed);
            op.nanos.load(Ordering::Relaxed) as f64 / 1e6 / calls.max(1) as f64
        };
        CallProfile {
            claims_per_task: per(self.claim.calls.load(Ordering::Relaxed)),
            empty_claims_per_task: per(self.empty_claims.load(Ordering::Relaxed)),
            swaps_per_task: per(self.swap.calls.load(Ordering::Relaxed)),
            next_due_per_task: per(self.next_due.calls.load(Ordering::Relaxed)),
            claim_ms: mean_ms(&self.claim),
            swap_ms: mean_ms(&self.swap),
        }
    }
}

impl CallProfile {
    /// A short text for the table's note column.
    pub fn summary(&self) -> String {
        format!(
            "per task: {:.2} claims ({:.2} empty), {:.2} swaps, {:.2} next_due; claim {:.2} ms, swap {:.2} ms",
            self.claims_per_task,
            self.empty_claims_per_task,
            self.swaps_per_task,
            self.next_due_per_task,
            self.claim_ms,
            self.swap_ms
        )
    }
}

/// `inner`, counting its calls into `stats`.
pub struct Counted {
    inner: Arc<dyn Store>,
    stats: Arc<CallStats>,
}

impl Counted {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<dyn Store>, stats: Arc<CallStats>) -> Arc<dyn Store> {
        Arc::new(Self { inner, stats })
    }
}

#[async_trait]
impl Forward for Counted {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }

    async fn create(&self, tasks: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError> {
        let started = Instant::now();
        let out = self.inner.create(tasks).await;
        self.stats.other.record(started);
        out
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
        let started = Instant::now();
        let out = self.inner.claim(request).await;
        self.stats.claim.record(started);
        if matches!(&out, Ok(c) if c.tasks.is_empty()) {
            self.stats.empty_claims.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    async fn swap(&self, swaps: &[Swap]) -> Result<Vec<SwapOutcome>, StoreError> {
        let started = Instant::now();
        let out = self.inner.swap(swaps).await;
        self.stats.swap.record(started);
        out
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError> {
        let started = Instant::now();
        let out = self.inner.get(ids).await;
        self.stats.other.record(started);
        out
    }

    async fn find(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let started = Instant::now();
        let out = self.inner.find(filter).await;
        self.stats.other.record(started);
        out
    }

    async fn count_by_status(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StatusCounts, StoreError> {
        let started = Instant::now();
        let out = self.inner.count_by_status(env, kind, now).await;
        self.stats.other.record(started);
        out
    }

    async fn delete(&self, deletes: &[Delete]) -> Result<Vec<DeleteOutcome>, StoreError> {
        let started = Instant::now();
        let out = self.inner.delete(deletes).await;
        self.stats.other.record(started);
        out
    }

    async fn next_due(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let started = Instant::now();
        let out = self.inner.next_due(env, kind, after).await;
        self.stats.next_due.record(started);
        out
    }
}

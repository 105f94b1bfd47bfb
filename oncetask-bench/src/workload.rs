//! The bench's task and the moves every scenario makes: seed tasks, start
//! managers with a no-op handler, wait for them to drain.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use oncetask::backend::CreateOutcome;
use oncetask::manager::handler_fn;
use oncetask::{HandlerOptions, Manager, Store, Task, TaskData};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::error::BenchError;
use crate::measure::{self, Counter};
use crate::profile::{CallProfile, CallStats, Counted};
use crate::target::Namespace;

/// The kind of every bench task.
pub const KIND: &str = "bench_noop";

/// Most `create_many` calls one seeding keeps in flight.
const SEED_CALLS_IN_FLIGHT: usize = 4;

/// Grace period of the managers' shutdown at the end of a row.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A bench task: a number, and for scheduled tasks their due time (also
/// in the payload, so handlers can measure lateness).
#[derive(Debug, Clone, Serialize)]
pub struct BenchTask {
    n: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    due_ms: Option<i64>,
    #[serde(skip)]
    id: String,
    #[serde(skip)]
    at: Option<DateTime<Utc>>,
}

impl BenchTask {
    /// Task `n` of `env` (ids are unique across environments too), due at
    /// `at` (`None`: ready now).
    pub fn new(env: &str, n: u64, at: Option<DateTime<Utc>>) -> Self {
        Self {
            n,
            due_ms: at.map(|t| t.timestamp_millis()),
            id: format!("{env}-{n}"),
            at,
        }
    }
}

impl TaskData for BenchTask {
    type Kind = &'static str;
    fn kind(&self) -> &'static str {
        KIND
    }
    fn idempotent_id(&self) -> String {
        self.id.clone()
    }
    fn scheduled_at(&self) -> Option<DateTime<Utc>> {
        self.at
    }
}

/// A manager that only creates (no workers), for seeding and enqueueing.
pub fn creator(store: Arc<dyn Store>, env: &str) -> Manager {
    Manager::builder(store)
        .env(env)
        .start_workers(false)
        .declare_kinds([KIND])
        .build()
}

/// A manager running a handler for [`KIND`] with `concurrency` worker loops.
pub fn worker(
    store: Arc<dyn Store>,
    env: &str,
    concurrency: usize,
    handler: impl Fn(Task) + Send + Sync + 'static,
) -> Result<Manager, BenchError> {
    let manager = Manager::builder(store).env(env).build();
    let handler = Arc::new(handler);
    manager.register_dyn(
        KIND,
        handler_fn(move |task: Task| {
            handler(task);
            std::future::ready(Ok::<(), std::convert::Infallible>(()))
        }),
        HandlerOptions::default()
            .concurrency(concurrency)
            .no_retry(),
    )?;
    Ok(manager)
}

/// Creates tasks `range` of `env` with `create_many`, `batch` per call,
/// due at `at`.
pub async fn seed(
    creator: &Manager,
    env: &str,
    range: Range<u64>,
    at: Option<DateTime<Utc>>,
    batch: usize,
) -> Result<(), BenchError> {
    let creator = creator.clone();
    let env = env.to_owned();
    in_batches(range, batch, move |part| {
        let tasks: Vec<BenchTask> = part.map(|n| BenchTask::new(&env, n, at)).collect();
        let manager = creator.clone();
        async move {
            let report = manager.create_many(&tasks).await?;
            match report.failed.into_iter().next() {
                Some((id, e)) => Err(BenchError::Raw(format!("seeding: {id}: {e}"))),
                None => Ok(()),
            }
        }
    })
    .await
}

/// Runs `call` over `range` in parts of `batch`, up to
/// `SEED_CALLS_IN_FLIGHT` at a time; the first error ends it.
pub async fn in_batches<F, Fut>(
    range: Range<u64>,
    batch: usize,
    mut call: F,
) -> Result<(), BenchError>
where
    F: FnMut(Range<u64>) -> Fut,
    Fut: std::future::Future<Output = Result<(), BenchError>> + Send + 'static,
{
    let settle = |done: Option<Result<Result<(), BenchError>, tokio::task::JoinError>>| match done {
        None => Ok(()),
        Some(done) => done.map_err(|e| BenchError::Raw(format!("seeding task failed: {e}")))?,
    };
    let mut calls = JoinSet::new();
    let mut start = range.start;
    while start < range.end {
        let end = range.end.min(start + batch.max(1) as u64);
        calls.spawn(call(start..end));
        if calls.len() >= SEED_CALLS_IN_FLIGHT {
            settle(calls.join_next().await)?;
        }
        start = end;
    }
    while let Some(done) = calls.join_next().await {
        settle(Some(done))?;
    }
    Ok(())
}

/// Stores the tasks `make` builds for the numbers of `range` through
/// [`Store::create`] (bypassing the manager: tasks in any state), `batch`
/// per call with [`in_batches`]; a task not created (say, already there)
/// ends it with an error.
pub async fn create_tasks<F>(
    store: Arc<dyn Store>,
    range: Range<u64>,
    batch: usize,
    make: F,
) -> Result<(), BenchError>
where
    F: Fn(u64) -> Task + Clone + Send + 'static,
{
    in_batches(range, batch, move |part| {
        let tasks: Vec<Task> = part.map(&make).collect();
        let store = store.clone();
        async move {
            let outcomes = store.create(tasks).await?;
            match outcomes
                .into_iter()
                .find(|o| !matches!(o, CreateOutcome::Created))
            {
                Some(other) => Err(BenchError::Raw(format!("seeding: {other:?}"))),
                None => Ok(()),
            }
        }
    })
    .await
}

/// What a drain measured.
#[derive(Debug, Clone, Copy)]
pub struct Drained {
    /// From starting the workers until every handler ran and the managers
    /// shut down (outcomes stored).
    pub seconds: f64,
    /// This process's CPU time per task, microseconds.
    pub cpu_us_per_task: Option<f64>,
    /// Store calls per task, and their durations.
    pub calls: CallProfile,
}

/// Starts `managers` managers (each on its own store instance) with
/// `concurrency` no-op workers on `env`, and waits until `tasks` handlers
/// ran and the managers shut down.
pub async fn drain(
    ns: &Namespace,
    env: &str,
    tasks: u64,
    managers: usize,
    concurrency: usize,
    timeout: Duration,
) -> Result<Drained, BenchError> {
    drain_counted(ns, env, Counter::new(tasks), managers, concurrency, timeout).await
}

/// [`drain`] counting handler runs into `counter` (whose target is the
/// number of tasks), so that others can watch the drain's progress.
pub async fn drain_counted(
    ns: &Namespace,
    env: &str,
    counter: Arc<Counter>,
    managers: usize,
    concurrency: usize,
    timeout: Duration,
) -> Result<Drained, BenchError> {
    let tasks = counter.target();
    let stats = CallStats::new();
    let mut stores = Vec::with_capacity(managers);
    for _ in 0..managers {
        stores.push(Counted::wrap(ns.store().await?, stats.clone()));
    }
    let cpu = measure::process_cpu();
    let started = Instant::now();
    let mut running = Vec::with_capacity(managers);
    for store in stores {
        let counter = counter.clone();
        running.push(worker(store, env, concurrency, move |_| counter.add())?);
    }
    let waited = counter.wait("drain", timeout).await;
    for manager in &running {
        manager.shutdown(SHUTDOWN_GRACE).await;
    }
    waited?;
    Ok(Drained {
        seconds: started.elapsed().as_secs_f64(),
        cpu_us_per_task: measure::cpu_per_task(cpu, tasks),
        calls: stats.profile(tasks),
    })
}

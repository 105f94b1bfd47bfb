//! Scenarios with several real managers on one backend, as separate
//! processes would run them: each manager gets its own store (its own pool,
//! client or connection) on the same data, runs on the system clock and
//! polls at real intervals.
//!
//! These are not part of [`store_conformance_suite!`](crate::store_conformance_suite)
//! (its factory hands out *isolated* stores); a backend calls them from its
//! own integration tests with stores that share data, at a size its server
//! can take.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oncetask_core::manager::handler_fn;
use oncetask_core::store::TaskFilter;
use oncetask_core::{HandlerOptions, Manager, Store, Task, TaskData, TaskStatus};
use serde::Serialize;

/// The kind of [`Job`].
pub const KIND: &str = "fleet-job";

/// The size of a [`every_task_runs_once_across_managers`] run.
#[derive(Debug, Clone, Copy)]
pub struct Fleet {
    /// Tasks created.
    pub tasks: u32,
    /// Resource keys they spread over (every fifth task has no key).
    pub keys: u32,
    /// Workers per manager.
    pub concurrency: usize,
    /// How long the run may take before the test fails.
    pub deadline: Duration,
}

/// The task of these scenarios (kind [`KIND`], id `job-<n>`), also for
/// backends' own multi-manager tests.
#[derive(Serialize)]
pub struct Job {
    /// Makes the id.
    pub n: u32,
    /// The resource key, if any.
    #[serde(skip)]
    pub key: Option<String>,
}

impl TaskData for Job {
    type Kind = &'static str;
    fn kind(&self) -> &'static str {
        KIND
    }
    fn idempotent_id(&self) -> String {
        format!("job-{}", self.n)
    }
    fn resource_key(&self) -> Option<String> {
        self.key.clone()
    }
}

/// A manager on `store` in `env` polling every `poll`, with [`KIND`] declared.
pub fn manager(store: Arc<dyn Store>, env: &str, poll: Duration) -> Manager {
    Manager::builder(store)
        .env(env)
        .poll_interval(poll)
        .declare_kinds([KIND])
        .build()
}

/// Waits (polling every 20 ms) until `done`, failing the test after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Per-key overlap and per-task run counts, as seen by the handlers.
#[derive(Default)]
struct Seen {
    running: HashMap<String, u32>,
    worst_overlap: u32,
    runs: HashMap<String, u32>,
}

/// One manager per store in `stores` (all on the same data, env `env`), each
/// with `fleet.concurrency` workers and 60 s leases, share `fleet.tasks`
/// tasks: every task completes exactly once, no two tasks of one resource
/// key ever run at the same time, and nothing stays leased or pending.
///
/// # Panics
/// When any of that fails, or the run exceeds `fleet.deadline`.
pub async fn every_task_runs_once_across_managers(
    stores: Vec<Arc<dyn Store>>,
    env: &str,
    fleet: Fleet,
) {
    let first = stores.first().expect("at least one store").clone();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let managers: Vec<Manager> = stores
        .into_iter()
        .map(|s| manager(s, env, Duration::from_millis(200)))
        .collect();
    for m in &managers {
        let seen = seen.clone();
        m.register_dyn(
            KIND,
            handler_fn(move |task: Task| {
                let seen = seen.clone();
                async move {
                    let key = task.resource_key.clone();
                    {
                        let mut s = seen.lock().expect("lock");
                        *s.runs.entry(task.id.clone()).or_default() += 1;
                        if let Some(key) = &key {
                            let n = s.running.entry(key.clone()).or_default();
                            *n += 1;
                            let n = *n;
                            s.worst_overlap = s.worst_overlap.max(n);
                        }
                    }
                    // Hold the key for a moment, so an overlap would show.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if let Some(key) = key {
                        let mut s = seen.lock().expect("lock");
                        *s.running.entry(key).or_default() -= 1;
                    }
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default()
                .concurrency(fleet.concurrency)
                .lease_duration(Duration::from_secs(60)),
        )
        .expect("register");
    }
    let jobs: Vec<Job> = (0..fleet.tasks)
        .map(|n| Job {
            n,
            key: (n % 5 != 0).then(|| format!("key-{}", n % fleet.keys.max(1))),
        })
        .collect();
    for (i, chunk) in jobs.chunks(500).enumerate() {
        let report = managers[i % managers.len()]
            .create_many(chunk)
            .await
            .expect("create");
        assert_eq!(report.count(), chunk.len());
    }
    let total = u64::from(fleet.tasks);
    wait_for("every task to complete", fleet.deadline, async || {
        let counts = first
            .count_by_status(env, Some(KIND), chrono::Utc::now())
            .await
            .expect("count");
        counts.get(&TaskStatus::Completed).copied() == Some(total)
    })
    .await;
    for m in &managers {
        m.shutdown(Duration::from_secs(10)).await;
    }
    let counts = first
        .count_by_status(env, Some(KIND), chrono::Utc::now())
        .await
        .expect("count");
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![(TaskStatus::Completed, total)],
        "everything completed, nothing left leased or pending"
    );
    let tasks = first
        .find(&TaskFilter::env(env, chrono::Utc::now()))
        .await
        .expect("find");
    let leased: Vec<&str> = tasks
        .iter()
        .filter(|t| !t.is_done() || t.leased_until.is_some() || t.lease_token.is_some())
        .map(|t| t.id.as_str())
        .collect();
    assert!(leased.is_empty(), "tasks kept a lease: {leased:?}");
    let s = seen.lock().expect("lock");
    assert_eq!(s.runs.len(), tasks.len(), "every task ran");
    let twice: Vec<_> = s.runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "tasks ran more than once: {twice:?}");
    assert_eq!(s.worst_overlap, 1, "two tasks of one key ran at once");
}

/// Creates tasks through `producer` one at a time while `worker` (its own
/// store on the same data, idle, polling only every 60 s) runs them, and
/// returns each task's create-to-handler-start latency. Fails if a task does
/// not start within 20 s, i.e. if the backend's cross-process wake-up
/// ([`Store::subscribe`]) did not reach the idle worker.
pub async fn wake_up_latencies_across_managers(
    producer: Arc<dyn Store>,
    worker: Arc<dyn Store>,
    env: &str,
    samples: u32,
) -> Vec<Duration> {
    let producer = manager(producer, env, Duration::from_secs(60));
    let worker = manager(worker, env, Duration::from_secs(60));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    worker
        .register_dyn(
            KIND,
            handler_fn(move |_task: Task| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Instant::now());
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    // Let the idle worker's subscription connect and the worker go to sleep.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut latencies = Vec::new();
    for n in 0..samples {
        let created = Instant::now();
        assert!(
            producer
                .create(&Job { n, key: None })
                .await
                .expect("create")
                .is_created()
        );
        let started = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the task started on the other manager well before its 60 s poll")
            .expect("handler channel open");
        latencies.push(started.duration_since(created));
        // Let the worker settle back to sleep before the next sample.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    producer.shutdown(Duration::from_secs(5)).await;
    worker.shutdown(Duration::from_secs(5)).await;
    latencies
}

/// A throughput measurement (not a test: no timing is asserted): creates
/// `tasks` tasks without resource keys, then times one manager with
/// `concurrency` workers and a no-op handler draining them. Returns the
/// drain time; panics if a task is not done within `deadline`.
pub async fn drain_time(
    store: Arc<dyn Store>,
    env: &str,
    tasks: u32,
    concurrency: usize,
    deadline: Duration,
) -> Duration {
    let creator = Manager::builder(store.clone())
        .env(env)
        .declare_kinds([KIND])
        .start_workers(false)
        .build();
    let jobs: Vec<Job> = (0..tasks).map(|n| Job { n, key: None }).collect();
    for chunk in jobs.chunks(1000) {
        let report = creator.create_many(chunk).await.expect("create");
        assert!(
            report.failed.is_empty(),
            "create failed: {:?}",
            report.failed
        );
    }
    let done = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let manager = manager(store, env, Duration::from_millis(500));
    let started = Instant::now();
    let counter = done.clone();
    manager
        .register_dyn(
            KIND,
            handler_fn(move |_task: Task| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default().concurrency(concurrency),
        )
        .expect("register");
    // Only the handlers' counter is polled while they run: a store-wide
    // count would compete with the workers for the store.
    let until = Instant::now() + deadline;
    while done.load(std::sync::atomic::Ordering::Relaxed) < tasks {
        assert!(
            Instant::now() < until,
            "timed out waiting for every task to run"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ran = started.elapsed();
    wait_for("every outcome to be stored", deadline, async || {
        let counts = creator.count_by_status(Some(KIND)).await.expect("count");
        counts.get(&TaskStatus::Completed).copied().unwrap_or(0) == u64::from(tasks)
    })
    .await;
    let stored = started.elapsed();
    manager.shutdown(Duration::from_secs(10)).await;
    println!(
        "drain: {tasks} tasks, concurrency {concurrency}: handlers done in {ran:?}, \
         outcomes stored in {stored:?} = {:.0} tasks/s",
        f64::from(tasks) / stored.as_secs_f64()
    );
    stored
}

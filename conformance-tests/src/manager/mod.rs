//! Manager-level conformance: the [`Manager`] running real handlers over the
//! store under test, with time driven by a [`ManualClock`].
//!
//! Most scenarios build the manager without worker loops and drive it with
//! [`Manager::process_next`], so every step is deterministic; the scenarios
//! about concurrency, wake-ups and shutdown run the real worker loops.

pub mod admin;
pub mod bulk;
pub mod cancel_running;
pub mod cancellation;
pub mod execution;
pub mod isolation;
pub mod pause;
pub mod rate_limit;
pub mod recurrence;
pub mod resource_keys;
pub mod retention;
pub mod runtime;
pub mod shutdown;
pub mod snooze;
pub mod task_options;
pub mod typed;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use oncetask_core::manager::{HandlerOptions, Manager, ManagerBuilder, RunReport, handler_fn};
use oncetask_core::testing::TestKit;
use oncetask_core::{Error, ManualClock, Recurrence, Store, Task, TaskData, TaskStatus};
use serde::Serialize;

use crate::StoreFactory;

/// Where the manager scenarios' clock starts: Monday 2025-01-06 09:00 UTC,
/// the first slot of their weekly rules.
pub fn start() -> DateTime<Utc> {
    "2025-01-06T09:00:00Z"
        .parse()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Environment of the manager scenarios.
pub const ENV: &str = "manager-test";

/// A manager over a fresh store, with its manual clock.
pub struct Harness<S> {
    /// The store under test.
    pub store: S,
    /// The test kit driving the manager (the same one users get).
    pub kit: TestKit,
    /// The clock the manager reads; tests move it.
    pub clock: ManualClock,
    /// The manager under test.
    pub manager: Manager,
}

impl<S: Store + Clone> Harness<S> {
    /// A manager in `env` over the same store and clock (a second process).
    pub fn peer(&self, env: &str, start_workers: bool) -> Manager {
        Manager::builder(Arc::new(self.store.clone()))
            .env(env)
            .clock(Arc::new(self.clock.clone()))
            .start_workers(start_workers)
            .accept_any_kind()
            .build()
    }

    /// The stored task, which must exist.
    pub async fn task(&self, id: &str) -> Task {
        match self.manager.get_task(id).await {
            Ok(Some(task)) => task,
            other => panic!("task {id} should exist, got {other:?}"),
        }
    }

    /// The status of a stored task now.
    pub async fn status(&self, id: &str) -> TaskStatus {
        self.task(id).await.status(self.clock.now())
    }

    /// Stores a document that is not a task under `id` (`kind`, this
    /// harness's env). False, with a note, for a backend that cannot store
    /// one: the caller then skips its test.
    pub async fn insert_undecodable<F: StoreFactory<Store = S>>(
        &self,
        factory: &F,
        id: &str,
        kind: &str,
    ) -> bool {
        let stored = factory.insert_undecodable(&self.store, id, ENV, kind).await;
        if !stored {
            eprintln!("note: backend cannot store undecodable documents; test skipped");
        }
        stored
    }

    /// Moves the clock.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Runs one `process_next` of `kind` in the background and returns once
    /// task `id` is leased by it (its handler is running).
    pub async fn start_running(
        &self,
        kind: &str,
        id: &str,
    ) -> tokio::task::JoinHandle<Result<Option<RunReport>, Error>> {
        let manager = self.manager.clone();
        let kind = kind.to_owned();
        let run = tokio::spawn(async move { manager.process_next(kind).await });
        eventually(&format!("{id} is leased"), || async {
            self.status(id).await == TaskStatus::Leased
        })
        .await;
        run
    }

    /// Runs `kind` until nothing is ready (the kit's drain); returns how many claims ran.
    pub async fn drain(&self, kind: &str) -> usize {
        let report = self.kit.drain(kind).await;
        assert!(!report.limit_reached, "drain of {kind} does not terminate");
        report.runs.len()
    }
}

/// A harness whose manager runs no worker loops (drive it with `process_next`).
pub async fn manual<F: StoreFactory>(factory: &F) -> Harness<F::Store> {
    build(factory, false).await
}

/// A harness whose manager runs worker loops for every registered kind.
pub async fn running<F: StoreFactory>(factory: &F) -> Harness<F::Store> {
    build(factory, true).await
}

/// A manual harness whose manager builder is adjusted by `configure`.
pub async fn manual_with<F: StoreFactory>(
    factory: &F,
    configure: impl FnOnce(ManagerBuilder) -> ManagerBuilder + 'static,
) -> Harness<F::Store> {
    build_with(factory, false, configure).await
}

async fn build<F: StoreFactory>(factory: &F, start_workers: bool) -> Harness<F::Store> {
    build_with(factory, start_workers, |b| b).await
}

async fn build_with<F: StoreFactory>(
    factory: &F,
    start_workers: bool,
    configure: impl FnOnce(ManagerBuilder) -> ManagerBuilder + 'static,
) -> Harness<F::Store> {
    let store = factory.new_store().await;
    let mut builder = TestKit::builder(Arc::new(store.clone()))
        .start_at(start())
        .configure(|b| {
            // Idle loops must be woken by due times and notices, not by polling.
            configure(b.env(ENV).poll_interval(Duration::from_secs(24 * 3600)))
        });
    if start_workers {
        builder = builder.workers();
    }
    let kit = builder.build();
    Harness {
        store,
        clock: kit.clock().clone(),
        manager: kit.manager().clone(),
        kit,
    }
}

/// A task definition for scenarios: any kind, id, key, schedule or recurrence.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// Payload field.
    pub n: u32,
    #[serde(skip)]
    kind: String,
    #[serde(skip)]
    id: String,
    #[serde(skip)]
    key: Option<String>,
    #[serde(skip)]
    at: Option<DateTime<Utc>>,
    #[serde(skip)]
    recurrence: Option<Result<Recurrence, oncetask_core::RecurrenceError>>,
    #[serde(skip)]
    priority: i8,
    #[serde(skip)]
    max_attempts: Option<u32>,
}

impl Job {
    /// A job of `kind` with `id`.
    pub fn new(kind: &str, id: &str) -> Self {
        Self {
            n: 0,
            kind: kind.into(),
            id: id.into(),
            key: None,
            at: None,
            recurrence: None,
            priority: 0,
            max_attempts: None,
        }
    }

    /// With a claim priority.
    pub fn priority(mut self, priority: i8) -> Self {
        self.priority = priority;
        self
    }

    /// With its own attempt limit.
    pub fn max_attempts(mut self, max: u32) -> Self {
        self.max_attempts = Some(max);
        self
    }

    /// With a resource key.
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Scheduled at `at`.
    pub fn at(mut self, at: DateTime<Utc>) -> Self {
        self.at = Some(at);
        self
    }

    /// Recurring.
    pub fn recurring(mut self, recurrence: Recurrence) -> Self {
        self.recurrence = Some(Ok(recurrence));
        self
    }

    /// Recurring by `rule` from `dtstart`, as a user's `TaskData` would
    /// build it (a rule that does not parse is the job's error).
    pub fn recurring_by(mut self, rule: &str, dtstart: &str) -> Self {
        self.recurrence = Some(Recurrence::new(rule, dtstart));
        self
    }

    /// With payload `n`.
    pub fn n(mut self, n: u32) -> Self {
        self.n = n;
        self
    }
}

impl TaskData for Job {
    type Kind = String;
    fn kind(&self) -> String {
        self.kind.clone()
    }
    fn idempotent_id(&self) -> String {
        self.id.clone()
    }
    fn resource_key(&self) -> Option<String> {
        self.key.clone()
    }
    fn scheduled_at(&self) -> Option<DateTime<Utc>> {
        self.at
    }
    fn recurrence(&self) -> Result<Option<Recurrence>, oncetask_core::RecurrenceError> {
        self.recurrence.clone().transpose()
    }
    fn priority(&self) -> i8 {
        self.priority
    }
    fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }
}

/// Registers a handler on `kind` that always succeeds.
pub fn register_ok(manager: &Manager, kind: &str, options: HandlerOptions) {
    manager
        .register_dyn(
            kind.to_owned(),
            handler_fn(|_task: Task| async { Ok::<_, std::io::Error>(()) }),
            options,
        )
        .expect("registration");
}

/// Creates `job`, which must be new.
pub async fn create(manager: &Manager, job: &Job) {
    let created = manager.create(job).await.expect("create");
    assert_eq!(
        created,
        oncetask_core::CreateStatus::Created,
        "{job:?} should be new"
    );
}

/// Polls `condition` (on a multi-thread runtime where workers run) until it
/// holds, failing after 10 s of wall time. Used only to wait for worker loops;
/// task time never passes by waiting.
pub async fn eventually<Fut: std::future::Future<Output = bool>>(
    what: &str,
    mut condition: impl FnMut() -> Fut,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

//! The manager runtime: handler registry, worker loops, task creation,
//! inspection and operator actions.
//!
//! ```
//! use std::sync::Arc;
//! use oncetask_core::manager::{HandlerOptions, Manager, TaskContext};
//! use oncetask_core::{CreateStatus, Store, TaskArgs};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Welcome { user: String }
//! impl TaskArgs for Welcome {
//!     const KIND: &'static str = "welcome_email";
//!     fn idempotent_id(&self) -> String { format!("welcome-{}", self.user) }
//! }
//!
//! async fn run(store: Arc<dyn Store>) -> Result<(), oncetask_core::Error> {
//!     let manager = Manager::builder(store).env("prod").build();
//!     manager.register(
//!         |welcome: Welcome, cx: TaskContext| async move {
//!             println!("welcoming {} ({})", welcome.user, cx.id);
//!             Ok::<_, std::io::Error>(())
//!         },
//!         HandlerOptions::default().concurrency(4),
//!     )?;
//!     // Creating the same task twice is a no-op: the id is the idempotency key.
//!     assert_eq!(manager.create(&Welcome { user: "ada".into() }).await?, CreateStatus::Created);
//!     // The same id again: nothing changes.
//!     assert_eq!(
//!         manager.create(&Welcome { user: "ada".into() }).await?,
//!         CreateStatus::AlreadyExists
//!     );
//!     manager.shutdown(std::time::Duration::from_secs(30)).await;
//!     Ok(())
//! }
//! ```

mod admin;
mod answer;
mod apply;
mod bulk;
mod context;
mod erased;
mod handler;
mod options;
mod pause;
mod prune;
mod rate_limit;
mod retention;
mod running;
mod task_context;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use admin::{BULK_BATCH, BulkReport, CancelStatus};
pub use bulk::BulkAction;
pub use context::{CurrentTask, current_resource_key, current_task_id};
#[cfg(feature = "testing")]
pub(crate) use erased::decode as decode_args;
pub use handler::{
    FromTask, GroupHandler, Handler, HandlerOutcome, IntoOutcome, group_handler_fn, handler_fn,
};
pub use options::{DEFAULT_OLDEST_CLAIM_EVERY, HandlerOptions, HandlerTimeout};
pub use prune::{DEFAULT_PRUNE_BATCH, DEFAULT_PRUNE_REST, PruneCounts, PrunePlan, PruneReport};
pub use rate_limit::RateLimit;
pub use retention::{Retention, parse_period};
pub use task_context::TaskContext;
#[cfg(feature = "testing")]
pub(crate) use worker::run_captured;
pub use worker::{NotStored, RunOutcome, RunReport, ShutdownReport};

use crate::clock::{Clock, SystemClock};
use crate::create::CreateStatus;
use crate::data::{TaskArgs, TaskData, TaskKind};
use crate::error::Error;
use crate::inspect::QueueStats;
use crate::metrics;
use crate::status::TaskStatus;
use crate::store::{
    ClaimOrder, CreateOutcome, Fetched, StatusCounts, StorageStats, Store, TaskFilter,
};
use crate::task::Task;

/// Environment variable selecting the logical environment.
pub const ENV_VARIABLE: &str = "ONCE_TASK_ENV";
/// Most claims one inline `create` runs before returning.
const INLINE_RUN_LIMIT: usize = 1000;

/// Environment used when [`ENV_VARIABLE`] is unset or empty.
pub const DEFAULT_ENV: &str = "DEFAULT";

/// Runs handlers for registered kinds and offers the task API of one environment.
///
/// Cheap to clone; clones share everything. Must be built and used inside a
/// tokio runtime (worker loops are tokio tasks).
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    env: String,
    config: ManagerConfig,
    registry: RwLock<HashMap<String, Arc<Registration>>>,
    declared_kinds: HashSet<String>,
    /// Per kind: wakes its loops on every send; the value counts the
    /// wake-ups for changes its own workers did not make.
    wakeups: Mutex<HashMap<String, watch::Sender<u64>>>,
    shutdown: watch::Sender<ShutdownPhase>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Outcomes of concurrent runs, written in shared batches.
    outcomes: apply::Committer,
    /// Tasks interrupted by shutdown, for the shutdown report.
    interrupted: Mutex<Vec<String>>,
    /// The report of the one shutdown: later and concurrent calls wait for it.
    stopped: tokio::sync::OnceCell<ShutdownReport>,
    /// Undecodable documents already logged (they are met on every claim).
    reported_undecodable: Mutex<HashSet<String>>,
    /// Tasks this process's main handlers run, with their cancel signals.
    running: running::Running,
    /// The paused kinds of the environment, as last read.
    paused: pause::PausedView,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ShutdownPhase {
    Running,
    /// Stop claiming; let running handlers finish.
    Draining,
    /// Grace period over: interrupt handlers and release their leases.
    Aborting,
}

/// Default [`ManagerBuilder::prune_interval`].
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Default [`ManagerBuilder::outcome_batching`] delay.
const DEFAULT_OUTCOME_BATCH_DELAY: Duration = Duration::from_millis(2);
/// Default [`ManagerBuilder::outcome_batching`] size.
const DEFAULT_OUTCOME_BATCH_MAX: usize = 100;

#[derive(Debug, Clone)]
struct ManagerConfig {
    poll_interval: Duration,
    error_history_limit: usize,
    accept_any_kind: bool,
    start_workers: bool,
    inline: bool,
    queue_metrics_interval: Option<Duration>,
    outcome_batching: apply::Batching,
    /// Default retention of every kind.
    retention: Retention,
    /// How often the background pruner runs (`None`: never).
    prune_interval: Option<Duration>,
}

pub(crate) enum HandlerShape {
    Single(erased::Erased),
    Group(erased::Erased),
}

pub(crate) struct Registration {
    kind: String,
    shape: HandlerShape,
    options: HandlerOptions,
    /// How long the kind's handlers take (sizes the claim-ahead).
    pace: worker::Pace,
    /// Claims made so far (every n-th is in the oldest order).
    claims: std::sync::atomic::AtomicU64,
    /// Until when the kind's rate limit window is spent.
    spent: rate_limit::Spent,
}

impl Registration {
    /// The order of the kind's next claim: every
    /// [`HandlerOptions::oldest_claim_every`]-th is [`ClaimOrder::Oldest`].
    fn next_claim_order(&self) -> ClaimOrder {
        let n = self
            .claims
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let every = u64::from(self.options.oldest_claim_every);
        if every > 0 && n % every == every - 1 {
            ClaimOrder::Oldest
        } else {
            ClaimOrder::Priority
        }
    }
}

/// Builds a [`Manager`]; see [`Manager::builder`].
pub struct ManagerBuilder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    env: Option<String>,
    declared_kinds: HashSet<String>,
    config: ManagerConfig,
}

impl ManagerBuilder {
    /// The logical environment. Default: `ONCE_TASK_ENV`, or `DEFAULT` when
    /// unset or empty, read once here (Go read it on every call, W14).
    pub fn env(mut self, env: impl Into<String>) -> Self {
        self.env = Some(env.into());
        self
    }

    /// The time source. Default: [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Longest idle wait of a worker loop before it checks the store again,
    /// for changes made by other processes on stores without notifications.
    /// Default 30 s. Due times known to the store are never waited past.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Most recent errors kept per task (default 50; Go kept all, W24).
    pub fn error_history_limit(mut self, limit: usize) -> Self {
        self.config.error_history_limit = limit.max(1);
        self
    }

    /// Kinds this manager may create without handling them (producers of
    /// tasks that other processes run).
    pub fn declare_kinds<K: TaskKind>(mut self, kinds: impl IntoIterator<Item = K>) -> Self {
        self.declared_kinds
            .extend(kinds.into_iter().map(|k| k.as_str().to_owned()));
        self
    }

    /// Declares the kind of the task type `A`, for a manager that creates
    /// such tasks without handling them (a producer): without a handler or a
    /// declaration, `create` refuses a kind with [`Error::UnknownKind`], so a
    /// typo in a kind name cannot store tasks nobody runs.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use oncetask_core::{Manager, Store, TaskArgs};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct SendEmail { to: String }
    /// # impl TaskArgs for SendEmail {
    /// #     const KIND: &'static str = "send_email";
    /// #     fn idempotent_id(&self) -> String { format!("email-{}", self.to) }
    /// # }
    /// # fn demo(store: Arc<dyn Store>) {
    /// let producer = Manager::builder(store).declare::<SendEmail>().build();
    /// # let _ = producer;
    /// # }
    /// ```
    pub fn declare<A: TaskArgs>(self) -> Self {
        self.declare_kinds([A::KIND])
    }

    /// Accept tasks of any kind on create, registered or not.
    pub fn accept_any_kind(mut self) -> Self {
        self.config.accept_any_kind = true;
        self
    }

    /// Whether registering a handler starts its worker loops (default true).
    /// With `false`, tasks run only through [`Manager::process_next`]: for
    /// deterministic tests.
    pub fn start_workers(mut self, start: bool) -> Self {
        self.config.start_workers = start;
        self
    }

    /// Refreshes the `oncetask_tasks_pending` gauge of every registered kind
    /// this often, from a background loop (one
    /// [`Store::count_by_status`] per registered kind per interval). Off by
    /// default; see [`crate::metrics`] for the other way to refresh it.
    /// Runs only with worker loops enabled, and stops at shutdown.
    pub fn queue_metrics_interval(mut self, interval: Duration) -> Self {
        self.config.queue_metrics_interval = Some(interval.max(Duration::from_millis(1)));
        self
    }

    /// Group commit of outcomes: the outcomes of handlers that finish close
    /// together are written in one batch (one store call), fenced per task
    /// as always. A batch that finds no batch being written waits up to
    /// `delay` for more outcomes, or until `max` are queued; while one batch
    /// is written the next gathers and starts as soon as it is done.
    /// Default: 2 ms and 100 (see BENCHMARKS.md). A zero `delay` writes a
    /// lone outcome at once.
    ///
    /// The trade-off: a crash loses the outcomes not yet written (at most
    /// one batch per manager, plus the one being written); their tasks run
    /// again after their leases expire, and a task is still never completed
    /// twice (each write is fenced).
    pub fn outcome_batching(mut self, delay: Duration, max: usize) -> Self {
        self.config.outcome_batching = apply::Batching {
            delay,
            max: max.max(1),
        };
        self
    }

    /// Inline mode, for integration tests of services: creating a task runs
    /// the due tasks of its kind at once, in the caller's task, before
    /// `create` returns (Sidekiq's inline testing). No worker loops run.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use oncetask_core::{Manager, Store};
    /// # fn demo(store: Arc<dyn Store>) {
    /// let manager = Manager::builder(store).inline().build();
    /// # let _ = manager; }
    /// ```
    pub fn inline(mut self) -> Self {
        self.config.inline = true;
        self.config.start_workers = false;
        self
    }

    /// The retention of every kind without its own
    /// ([`HandlerOptions::retention`]); default: keep everything. Kinds
    /// declared with [`ManagerBuilder::declare_kinds`] are pruned with it
    /// too. Registration of an invalid retention fails; see
    /// [`Retention::validate`].
    pub fn retention(mut self, retention: Retention) -> Self {
        self.config.retention = retention;
        self
    }

    /// How often the background pruner runs a pass over the kinds with a
    /// retention ([`Manager::prune`] with [`PrunePlan::configured`]);
    /// default [`DEFAULT_PRUNE_INTERVAL`]. `None` runs none (prune from a
    /// job of your own, or from one process only). Any number of processes
    /// may prune the same store: their writes are fenced.
    pub fn prune_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.prune_interval = interval;
        self
    }

    /// Builds the manager. With workers enabled and a store that publishes
    /// change notices, this subscribes to them (needs a tokio runtime).
    pub fn build(self) -> Manager {
        let env = self.env.unwrap_or_else(env_from_process);
        let (shutdown, _) = watch::channel(ShutdownPhase::Running);
        let outcomes = apply::Committer::new(self.config.outcome_batching);
        let manager = Manager {
            inner: Arc::new(Inner {
                store: self.store,
                clock: self.clock,
                env,
                config: self.config,
                registry: RwLock::new(HashMap::new()),
                declared_kinds: self.declared_kinds,
                wakeups: Mutex::new(HashMap::new()),
                shutdown,
                workers: Mutex::new(Vec::new()),
                outcomes,
                interrupted: Mutex::new(Vec::new()),
                stopped: tokio::sync::OnceCell::new(),
                reported_undecodable: Mutex::new(HashSet::new()),
                running: running::Running::default(),
                paused: pause::PausedView::default(),
            }),
        };
        if manager.inner.config.start_workers {
            manager.forward_store_notifications();
            if let Some(interval) = manager.inner.config.queue_metrics_interval {
                manager.refresh_queue_metrics(interval);
            }
            if let Some(interval) = manager.inner.config.prune_interval {
                prune::spawn_pruner(&manager.inner, interval);
            }
        }
        manager
    }
}

fn env_from_process() -> String {
    resolve_env(std::env::var(ENV_VARIABLE).ok())
}

/// The environment for a value of `ONCE_TASK_ENV`: unset or empty means `DEFAULT`.
fn resolve_env(value: Option<String>) -> String {
    value
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_ENV.to_owned())
}

impl Manager {
    /// Starts building a manager over `store`.
    pub fn builder(store: Arc<dyn Store>) -> ManagerBuilder {
        ManagerBuilder {
            store,
            clock: Arc::new(SystemClock),
            env: None,
            declared_kinds: HashSet::new(),
            config: ManagerConfig {
                poll_interval: Duration::from_secs(30),
                error_history_limit: 50,
                accept_any_kind: false,
                start_workers: true,
                inline: false,
                queue_metrics_interval: None,
                outcome_batching: apply::Batching {
                    delay: DEFAULT_OUTCOME_BATCH_DELAY,
                    max: DEFAULT_OUTCOME_BATCH_MAX,
                },
                retention: Retention::default(),
                prune_interval: Some(DEFAULT_PRUNE_INTERVAL),
            },
        }
    }

    /// The environment this manager works in.
    pub fn env(&self) -> &str {
        &self.inner.env
    }

    /// The manager's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The store under this manager.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Registers the handler of the task type `A` (its kind is
    /// [`A::KIND`](TaskArgs::KIND)) and starts its workers. The handler
    /// receives each task's payload decoded as `A` and its [`TaskContext`];
    /// a payload that does not decode fails its task permanently with a
    /// [`PayloadError`](crate::error::PayloadError) naming the type.
    ///
    /// Tasks with a resource key still run one at a time per key.
    /// A second registration for a kind fails with [`Error::HandlerAlreadyExists`].
    ///
    /// ```
    /// use oncetask_core::manager::{HandlerOptions, Manager, TaskContext};
    /// use oncetask_core::TaskArgs;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct SendEmail { to: String }
    /// impl TaskArgs for SendEmail {
    ///     const KIND: &'static str = "send_email";
    ///     fn idempotent_id(&self) -> String { format!("email-{}", self.to) }
    /// }
    ///
    /// # fn demo(manager: &Manager) -> Result<(), oncetask_core::Error> {
    /// manager.register(
    ///     |email: SendEmail, cx: TaskContext| async move {
    ///         println!("to {} (attempt {})", email.to, cx.attempt);
    ///         Ok::<_, std::io::Error>(())
    ///     },
    ///     HandlerOptions::default(),
    /// )?;
    /// # Ok(()) }
    /// ```
    pub fn register<A, H>(&self, handler: H, options: HandlerOptions) -> Result<(), Error>
    where
        A: TaskArgs,
        H: Handler<A>,
    {
        self.register_dyn(A::KIND, handler, options)
    }

    /// Registers a group handler of the task type `A`: all ready tasks of one
    /// resource key are claimed and handled together (in one call, one
    /// outcome). Tasks without a key are handled one by one through the same
    /// handler. A task whose payload does not decode fails permanently on
    /// its own; the group runs without it.
    pub fn register_group<A, H>(&self, handler: H, options: HandlerOptions) -> Result<(), Error>
    where
        A: TaskArgs,
        H: GroupHandler<A>,
    {
        self.register_dyn_group(A::KIND, handler, options)
    }

    /// [`Manager::register`] for a kind named at run time. The handler takes
    /// the raw [`Task`] (see [`handler_fn`]) or any [`FromTask`] type.
    pub fn register_dyn<A, H>(
        &self,
        kind: impl TaskKind,
        handler: H,
        options: HandlerOptions,
    ) -> Result<(), Error>
    where
        A: FromTask,
        H: Handler<A>,
    {
        self.add_registration(
            kind.as_str(),
            HandlerShape::Single(Arc::new(erased::One::new(handler))),
            options,
        )
    }

    /// [`Manager::register_group`] for a kind named at run time (see
    /// [`group_handler_fn`]).
    pub fn register_dyn_group<A, H>(
        &self,
        kind: impl TaskKind,
        handler: H,
        options: HandlerOptions,
    ) -> Result<(), Error>
    where
        A: FromTask,
        H: GroupHandler<A>,
    {
        self.add_registration(
            kind.as_str(),
            HandlerShape::Group(Arc::new(erased::Group::new(handler))),
            options,
        )
    }

    fn add_registration(
        &self,
        kind: &str,
        shape: HandlerShape,
        options: HandlerOptions,
    ) -> Result<(), Error> {
        if kind.is_empty() {
            return Err(Error::InvalidConfig("task kind must not be empty".into()));
        }
        options.validate()?;
        if *self.inner.shutdown.borrow() != ShutdownPhase::Running {
            return Err(Error::ShuttingDown);
        }
        let registration = {
            let mut registry = self
                .inner
                .registry
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if registry.contains_key(kind) {
                return Err(Error::HandlerAlreadyExists {
                    kind: kind.to_owned(),
                });
            }
            let registration = Arc::new(Registration {
                kind: kind.to_owned(),
                shape,
                options,
                pace: worker::Pace::default(),
                claims: std::sync::atomic::AtomicU64::new(0),
                spent: rate_limit::Spent::default(),
            });
            registry.insert(kind.to_owned(), registration.clone());
            registration
        };
        if self.inner.config.start_workers {
            worker::spawn_workers(&self.inner, registration);
        }
        Ok(())
    }

    pub(crate) fn registration(&self, kind: &str) -> Option<Arc<Registration>> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kind)
            .cloned()
    }

    fn check_kind(&self, kind: &str) -> Result<(), Error> {
        if self.inner.config.accept_any_kind
            || self.inner.declared_kinds.contains(kind)
            || self.registration(kind).is_some()
        {
            Ok(())
        } else {
            Err(Error::UnknownKind {
                kind: kind.to_owned(),
            })
        }
    }

    /// Builds a task from `data` in this manager's environment, validating it.
    pub fn new_task<D: TaskData + ?Sized>(&self, data: &D) -> Result<Task, Error> {
        let task = Task::from_data(data, &self.inner.env, self.inner.clock.now())?;
        self.check_kind(&task.kind)?;
        Ok(task)
    }

    /// Creates a task unless one with its id exists: [`CreateStatus::Created`],
    /// or [`CreateStatus::AlreadyExists`] with nothing changed (idempotent).
    /// An id taken in another environment is [`Error::WrongEnvironment`];
    /// invalid data (an empty id, a payload that is not an object, a rule
    /// that does not parse, an unknown kind) is an error and stores nothing.
    pub async fn create<D: TaskData + ?Sized>(&self, data: &D) -> Result<CreateStatus, Error> {
        let task = self.new_task(data)?;
        let kind = task.kind.clone();
        let id = task.id.clone();
        let outcome = answer::checked(1, self.inner.store.create(vec![task]).await?)?
            .pop()
            .ok_or_else(|| Error::Internal("backend returned no create outcome".into()))?;
        match outcome {
            CreateOutcome::Created => {
                metrics::count(metrics::TASKS_CREATED, &self.inner.env, &kind, 1);
                self.inner.wake(&kind);
                self.run_inline(&kind).await?;
                Ok(CreateStatus::Created)
            }
            CreateOutcome::AlreadyExists => {
                tracing::info!(task_id = %id, kind = %kind, "task already exists");
                Ok(CreateStatus::AlreadyExists)
            }
            CreateOutcome::ExistsInOtherEnv { env } => Err(Error::WrongEnvironment {
                id,
                task_env: env,
                expected_env: self.inner.env.clone(),
            }),
            CreateOutcome::Failed(e) => Err(e.into()),
        }
    }

    /// Creates many tasks, non-atomically: each item succeeds or fails alone.
    /// Existing ids and repeated ids within the call are skipped (Go W30).
    pub async fn create_many<'a, D, I>(&self, items: I) -> Result<BulkReport, Error>
    where
        D: TaskData + ?Sized + 'a,
        I: IntoIterator<Item = &'a D>,
    {
        let mut report = BulkReport::default();
        let mut tasks = Vec::new();
        let mut seen = HashSet::new();
        for (index, data) in items.into_iter().enumerate() {
            match self.new_task(data) {
                Ok(task) if !seen.insert(task.id.clone()) => report.skipped.push(task.id),
                Ok(task) => tasks.push(task),
                Err(e) => {
                    let id = data.idempotent_id();
                    let label = if id.is_empty() {
                        format!("#{index}")
                    } else {
                        id
                    };
                    report.failed.push((label, e));
                }
            }
        }
        if tasks.is_empty() {
            return Ok(report);
        }
        let kinds: HashSet<String> = tasks.iter().map(|t| t.kind.clone()).collect();
        let keys: Vec<(String, String)> = tasks
            .iter()
            .map(|t| (t.id.clone(), t.kind.clone()))
            .collect();
        let outcomes = answer::checked(tasks.len(), self.inner.store.create(tasks).await?)?;
        let mut created: HashMap<String, usize> = HashMap::new();
        for ((id, kind), outcome) in keys.into_iter().zip(outcomes) {
            match outcome {
                CreateOutcome::Created => {
                    *created.entry(kind).or_insert(0) += 1;
                    report.succeeded.push(id)
                }
                CreateOutcome::AlreadyExists => report.skipped.push(id),
                CreateOutcome::ExistsInOtherEnv { env } => {
                    let e = Error::WrongEnvironment {
                        id: id.clone(),
                        task_env: env,
                        expected_env: self.inner.env.clone(),
                    };
                    report.failed.push((id, e));
                }
                CreateOutcome::Failed(e) => report.failed.push((id, e.into())),
            }
        }
        for (kind, n) in &created {
            metrics::count(metrics::TASKS_CREATED, &self.inner.env, kind, *n);
        }
        for kind in kinds {
            self.inner.wake(&kind);
            self.run_inline(&kind).await?;
        }
        Ok(report)
    }

    /// Tasks by id in this environment, in input order. Missing ids and tasks
    /// of other environments are omitted; an undecodable document is an error.
    pub async fn get_tasks(&self, ids: &[String]) -> Result<Vec<Task>, Error> {
        let mut out = Vec::new();
        for fetched in self.inner.store.get(ids).await? {
            match fetched {
                Fetched::Task(t) if t.env == self.inner.env => out.push(t),
                Fetched::Task(_) => {}
                Fetched::Undecodable(u) => {
                    return Err(Error::Store(crate::error::StoreError::Undecodable {
                        id: u.id,
                        reason: u.reason,
                    }));
                }
            }
        }
        Ok(out)
    }

    /// One task by id, if it exists in this environment.
    pub async fn get_task(&self, id: &str) -> Result<Option<Task>, Error> {
        Ok(self.get_tasks(&[id.to_owned()]).await?.pop())
    }

    /// All tasks of every kind with `resource_key`, oldest first (Go W17).
    pub async fn get_tasks_by_resource_key(&self, resource_key: &str) -> Result<Vec<Task>, Error> {
        let mut filter = self.filter();
        filter.resource_key = Some(resource_key.to_owned());
        self.find(filter).await
    }

    /// A filter over this environment at the current time, to refine with
    /// its builder methods and pass to [`Manager::find`].
    ///
    /// ```
    /// # use oncetask_core::{Manager, TaskStatus};
    /// # async fn demo(manager: &Manager) -> Result<(), oncetask_core::Error> {
    /// let failed = manager
    ///     .find(manager.filter().kind("send_email").status(TaskStatus::Failed).limit(100))
    ///     .await?;
    /// # let _ = failed;
    /// # Ok(()) }
    /// ```
    pub fn filter(&self) -> TaskFilter {
        TaskFilter::env(self.inner.env.clone(), self.inner.clock.now())
    }

    /// Lists tasks, oldest first. A filter of another environment than this
    /// manager's is [`Error::FilterEnvironment`] (start from
    /// [`Manager::filter`]).
    pub async fn find(&self, filter: TaskFilter) -> Result<Vec<Task>, Error> {
        self.check_filter(&filter)?;
        Ok(self.inner.store.find(&filter).await?)
    }

    /// Whether [`Manager::find`] serves `filter` (its environment, and
    /// [`Store::check_filter`]), reading nothing: a user interface asks it
    /// before offering a filter.
    pub fn check_filter(&self, filter: &TaskFilter) -> Result<(), Error> {
        if filter.env != self.inner.env {
            return Err(Error::FilterEnvironment {
                filter_env: filter.env.clone(),
                manager_env: self.inner.env.clone(),
            });
        }
        Ok(self.inner.store.check_filter(filter)?)
    }

    /// Task counts by status, for one kind or all.
    pub async fn count_by_status(&self, kind: Option<&str>) -> Result<StatusCounts, Error> {
        let now = self.inner.clock.now();
        Ok(self
            .inner
            .store
            .count_by_status(&self.inner.env, kind, now)
            .await?)
    }

    /// The queue inspector: for every kind of this environment, its counts
    /// by status, when its longest-waiting pending task became ready, and
    /// its next due time, at the manager's current time ([`Store::inspect`]).
    ///
    /// Also sets the `oncetask_tasks_pending` and
    /// `oncetask_oldest_pending_age_seconds` gauges of every kind it reports
    /// (see [`crate::metrics`]).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use oncetask_core::{Manager, Store, TaskStatus};
    /// # async fn demo(store: Arc<dyn Store>) -> Result<(), oncetask_core::Error> {
    /// let manager = Manager::builder(store).env("prod").build();
    /// let stats = manager.inspect().await?;
    /// for (kind, k) in &stats.kinds {
    ///     println!(
    ///         "{kind}: {} pending (oldest ready for {:?}), {} failed, next due {:?}",
    ///         k.count(TaskStatus::Pending),
    ///         k.oldest_pending_age(stats.now),
    ///         k.count(TaskStatus::Failed),
    ///         k.next_due,
    ///     );
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn inspect(&self) -> Result<QueueStats, Error> {
        let now = self.inner.clock.now();
        let stats = self.inner.store.inspect(&self.inner.env, now).await?;
        metrics::queue(&stats);
        Ok(stats)
    }

    /// What this environment's tasks take up in the store: documents and
    /// bytes per status, tombstones apart, and the backend's own figures,
    /// each labelled with how it was obtained ([`StorageStats`]).
    pub async fn storage_stats(&self) -> Result<StorageStats, Error> {
        let now = self.inner.clock.now();
        Ok(self.inner.store.storage_stats(&self.inner.env, now).await?)
    }

    /// Queue depth of a kind: pending tasks plus cancelled tasks whose
    /// cancellation path has not finished (close to Go's `GetPendingCount`).
    /// [`Manager::count_by_status`] gives the exact breakdown.
    pub async fn pending_count(&self, kind: impl TaskKind) -> Result<u64, Error> {
        let counts = self.count_by_status(Some(kind.as_str())).await?;
        Ok([TaskStatus::Pending, TaskStatus::CancellationPending]
            .iter()
            .filter_map(|s| counts.get(s))
            .sum())
    }

    /// Claims and processes one claim of `kind` now, in the caller's task, and
    /// reports what ran. `Ok(None)` when nothing was ready. A document of the
    /// kind that cannot be decoded is reported in
    /// [`RunReport::undecodable`] the first time this manager meets it, in a
    /// report of its own when nothing else was claimed (so a loop until
    /// `None` ends). For tests and tools; the worker loops call the same code.
    ///
    /// A manager without worker loops hears no store notices, so it reads
    /// the paused kinds before each call (one small read) to see a pause made
    /// elsewhere; one with loops keeps its notice-driven view.
    pub async fn process_next(&self, kind: impl TaskKind) -> Result<Option<RunReport>, Error> {
        self.process_next_with(kind.as_str(), !self.inner.config.start_workers)
            .await
    }

    /// [`Manager::process_next`], reading the paused kinds first only with
    /// `fresh_pauses` (or when the view is due anyway).
    pub(crate) async fn process_next_with(
        &self,
        kind: &str,
        fresh_pauses: bool,
    ) -> Result<Option<RunReport>, Error> {
        let registration = self.registration(kind).ok_or_else(|| Error::UnknownKind {
            kind: kind.to_owned(),
        })?;
        worker::process_next(&self.inner, &registration, fresh_pauses).await
    }

    /// True once [`Manager::shutdown`] was called: workers claim nothing more
    /// (for readiness probes).
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow() != ShutdownPhase::Running
    }

    /// The kinds with a registered handler, sorted.
    pub fn registered_kinds(&self) -> Vec<String> {
        let registry = self
            .inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut kinds: Vec<String> = registry.keys().cloned().collect();
        kinds.sort();
        kinds
    }

    /// In inline mode, runs the due tasks of `kind` now.
    async fn run_inline(&self, kind: &str) -> Result<(), Error> {
        if !self.inner.config.inline || self.registration(kind).is_none() {
            return Ok(());
        }
        // Bounded: a handler that keeps making itself due again must not hang the caller.
        for _ in 0..INLINE_RUN_LIMIT {
            if self.process_next(kind).await?.is_none() {
                return Ok(());
            }
        }
        tracing::warn!(kind, "inline mode stopped after {INLINE_RUN_LIMIT} runs");
        Ok(())
    }

    /// Stops claiming, waits up to `grace` for running handlers and records
    /// their outcomes; handlers still running after that are interrupted and
    /// their leases released, so other workers can run the tasks at once.
    ///
    /// Shutdown happens once: a concurrent or later call waits for that one
    /// to end and returns its report (its `grace` is ignored), so a report
    /// saying `drained` always means no handler of this manager runs.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        worker::shutdown(&self.inner, grace).await
    }

    /// Sets the pending gauge of every registered kind every `interval`
    /// until shutdown (see [`ManagerBuilder::queue_metrics_interval`]).
    fn refresh_queue_metrics(&self, interval: Duration) {
        let weak = Arc::downgrade(&self.inner);
        let mut phase = self.inner.shutdown.subscribe();
        let clock = self.inner.clock.clone();
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { break };
                let kinds: Vec<String> = inner
                    .registry
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .keys()
                    .cloned()
                    .collect();
                let now = inner.now();
                for kind in kinds {
                    match inner
                        .store
                        .count_by_status(&inner.env, Some(&kind), now)
                        .await
                    {
                        Ok(counts) => {
                            let pending = counts.get(&TaskStatus::Pending).copied().unwrap_or(0);
                            metrics::pending(&inner.env, &kind, pending);
                        }
                        Err(e) => {
                            tracing::warn!(kind = %kind, error = %e, "pending gauge not refreshed")
                        }
                    }
                }
                let next = worker::add(now, interval);
                drop(inner);
                tokio::select! {
                    _ = clock.sleep_until(next) => {}
                    changed = phase.changed() => {
                        if changed.is_err() || *phase.borrow() != ShutdownPhase::Running { break; }
                    }
                }
            }
        });
    }

    fn forward_store_notifications(&self) {
        let Some(mut notices) = self.inner.store.subscribe(&self.inner.env) else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let mut phase = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    notice = notices.next() => {
                        let (Some(notice), Some(inner)) = (notice, weak.upgrade()) else { break };
                        // Only a change that may have touched held tasks
                        // makes workers re-read the ones they claimed ahead.
                        if notice.may_touch_claimed {
                            inner.wake_outside(&notice.kind);
                            inner.recheck_running(&notice.kind);
                            // It may be a pause or a resume: re-read them,
                            // then wake the kind again to act on it.
                            inner.paused.mark_stale();
                            let inner = inner.clone();
                            tokio::spawn(async move {
                                inner.refresh_paused(true).await;
                                inner.wake_outside(&notice.kind);
                            });
                        } else {
                            inner.wake(&notice.kind);
                        }
                    }
                    changed = phase.changed() => {
                        if changed.is_err() || *phase.borrow() != ShutdownPhase::Running { break; }
                    }
                }
            }
        });
    }
}

impl Inner {
    /// Wakes every idle worker loop of `kind` in this process.
    pub(crate) fn wake(&self, kind: &str) {
        let wakeups = self.wakeups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = wakeups.get(kind) {
            tx.send_modify(|_| {});
        }
    }

    /// Wakes the kind's loops for a change this manager's workers did not
    /// make (an operator's action, another process's write): it may have
    /// changed a task they hold but have not started.
    pub(crate) fn wake_outside(&self, kind: &str) {
        let wakeups = self.wakeups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = wakeups.get(kind) {
            tx.send_modify(|outside| *outside = outside.wrapping_add(1));
        }
    }

    /// Wakes every idle worker loop of every kind in this process, for
    /// changes made outside them.
    pub(crate) fn wake_all(&self) {
        let wakeups = self.wakeups.lock().unwrap_or_else(PoisonError::into_inner);
        for tx in wakeups.values() {
            tx.send_modify(|outside| *outside = outside.wrapping_add(1));
        }
    }

    /// Re-reads the tasks of `kind` this process is running (an operator's
    /// change may have cancelled one) and raises the signal of each one
    /// found cancelled. In the background: a notice never waits on a read.
    pub(crate) fn recheck_running(self: &Arc<Self>, kind: &str) {
        let ids = self.running.unsignalled(kind);
        if ids.is_empty() {
            return;
        }
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            match inner.store.get(&ids).await {
                Ok(fetched) => {
                    for found in fetched {
                        if let Fetched::Task(task) = found {
                            inner.running.observe(&task);
                        }
                    }
                }
                // The next heartbeat reads the task anyway.
                Err(e) => {
                    tracing::warn!(error = %e, "re-reading running tasks after a change notice failed")
                }
            }
        });
    }

    pub(crate) fn wake_receiver(&self, kind: &str) -> watch::Receiver<u64> {
        let mut wakeups = self.wakeups.lock().unwrap_or_else(PoisonError::into_inner);
        wakeups
            .entry(kind.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_empty_env_variable_means_default() {
        assert_eq!(resolve_env(None), "DEFAULT");
        assert_eq!(resolve_env(Some(String::new())), "DEFAULT");
        assert_eq!(resolve_env(Some("prod".into())), "prod");
    }
}

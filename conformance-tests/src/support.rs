//! Helpers shared by the suite's modules: a fixed clock, a task builder,
//! comparable mirrors of the store's outcome enums and one-line wrappers
//! around the store calls.
//!
//! Every time a test uses is derived from [`base_time`]; no test reads the
//! wall clock for task times or sleeps to let time pass: it passes a later
//! `now` instead.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
pub use oncetask_core::Store;
use oncetask_core::lifecycle::{self, FailurePolicy, LeaseGrant};
use oncetask_core::retry::{ExponentialBackoff, FixedDelay, NoRetry, RetryPolicy};
use oncetask_core::store::{
    Change, ClaimMode, ClaimOrder, ClaimRequest, Claimed, CreateOutcome, Delete, DeleteOutcome,
    Fetched, Swap, SwapOutcome,
};
use oncetask_core::{AttemptError, JsonObject, LeaseToken, Outcome, Task, TaskStatus};
use serde_json::{Value, json};

/// Environment most tests run in.
pub const ENV: &str = "test";
/// A second environment, for isolation tests.
pub const OTHER_ENV: &str = "prod";
/// Kind most tests use.
pub const KIND: &str = "email";
/// A second kind, for isolation tests.
pub const OTHER_KIND: &str = "sms";
/// The lease most claims take.
pub const LEASE: Duration = Duration::from_secs(300);

/// The suite's fixed "now": Monday 2025-01-06 08:00:00 UTC.
pub fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 6, 8, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// [`base_time`] plus `secs` seconds (negative for earlier).
pub fn at(secs: i64) -> DateTime<Utc> {
    base_time() + TimeDelta::seconds(secs)
}

/// A point `lease` after `now`: the expiry of a lease taken at `now`.
pub fn after(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX)
}

/// Runs a future on a fresh multi-thread runtime with 4 workers, like
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]`.
///
/// The suite's macro uses it so that backends need no `tokio` macros of
/// their own.
pub fn run_multi_thread<F: Future<Output = ()>>(future: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("build a multi-thread tokio runtime")
        .block_on(future);
}

/// Builds test tasks by direct construction: a fresh pending task of
/// [`KIND`] in [`ENV`], created at [`base_time`], until told otherwise.
#[derive(Debug, Clone)]
pub struct TaskBuilder {
    task: Task,
}

impl TaskBuilder {
    /// A new pending task with this id.
    pub fn new(id: &str) -> Self {
        let mut data = JsonObject::new();
        data.insert("id".to_owned(), Value::String(id.to_owned()));
        let mut task = Task::new(id, KIND, ENV, base_time());
        task.data = data;
        task.version = 0;
        Self { task }
    }

    /// Sets the kind.
    pub fn kind(mut self, kind: &str) -> Self {
        self.task.kind = kind.to_owned();
        self
    }

    /// Sets the environment.
    pub fn env(mut self, env: &str) -> Self {
        self.task.env = env.to_owned();
        self
    }

    /// Sets the resource key.
    pub fn key(mut self, key: &str) -> Self {
        self.task.resource_key = Some(key.to_owned());
        self
    }

    /// Sets `wait_until` (not ready before it).
    pub fn wait_until(mut self, at: DateTime<Utc>) -> Self {
        self.task.wait_until = Some(at);
        self
    }

    /// Sets `created_at`.
    pub fn created_at(mut self, at: DateTime<Utc>) -> Self {
        self.task.created_at = at;
        self
    }

    /// Sets the claim priority.
    pub fn priority(mut self, priority: i8) -> Self {
        self.task.priority = priority;
        self
    }

    /// Puts one more field into the payload.
    pub fn data(mut self, field: &str, value: Value) -> Self {
        self.task.data.insert(field.to_owned(), value);
        self
    }

    /// Gives the task a lease as a claim would have (a fresh token,
    /// `attempts + 1`), expiring at `until`. Use it to set up "leased
    /// elsewhere" or "lease expired" states without a claim.
    pub fn leased_until(mut self, until: DateTime<Utc>) -> Self {
        self.task.leased_until = Some(until);
        self.task.lease_token = Some(LeaseToken::generate());
        self.task.attempts += 1;
        self
    }

    /// Makes the task finished at `at` with `status` (completed, failed or
    /// cancelled), as a run would have left it: one attempt, an error for
    /// a failure, the cancel flag for a cancel.
    pub fn finished(mut self, status: TaskStatus, at: DateTime<Utc>) -> Self {
        let task = &mut self.task;
        task.done_at = Some(at);
        task.attempts = 1;
        match status {
            TaskStatus::Completed => {
                task.outcome = Some(Outcome::Completed);
                task.result = Some(Value::String("done".into()));
            }
            TaskStatus::Failed => {
                task.outcome = Some(Outcome::Failed);
                task.errors = vec![AttemptError {
                    at,
                    error: "boom".into(),
                }];
            }
            _ => {
                task.outcome = Some(Outcome::Cancelled);
                task.is_cancelled = true;
                task.cancelled_at = Some(at);
            }
        }
        self
    }

    /// The task.
    pub fn build(self) -> Task {
        self.task
    }
}

/// A comparable mirror of [`CreateOutcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// [`CreateOutcome::Created`].
    Created,
    /// [`CreateOutcome::AlreadyExists`].
    AlreadyExists,
    /// [`CreateOutcome::ExistsInOtherEnv`], with the existing task's env.
    ExistsInOtherEnv(String),
    /// [`CreateOutcome::Failed`], with the error text.
    Failed(String),
}

impl From<&CreateOutcome> for Created {
    fn from(o: &CreateOutcome) -> Self {
        match o {
            CreateOutcome::Created => Created::Created,
            CreateOutcome::AlreadyExists => Created::AlreadyExists,
            CreateOutcome::ExistsInOtherEnv { env } => Created::ExistsInOtherEnv(env.clone()),
            CreateOutcome::Failed(e) => Created::Failed(e.to_string()),
        }
    }
}

/// A comparable mirror of [`SwapOutcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swapped {
    /// [`SwapOutcome::Applied`].
    Applied,
    /// [`SwapOutcome::Conflict`].
    Conflict,
    /// [`SwapOutcome::NotFound`].
    NotFound,
    /// [`SwapOutcome::Failed`], with the error text.
    Failed(String),
}

impl From<&SwapOutcome> for Swapped {
    fn from(o: &SwapOutcome) -> Self {
        match o {
            SwapOutcome::Applied { .. } => Swapped::Applied,
            SwapOutcome::Conflict => Swapped::Conflict,
            SwapOutcome::NotFound => Swapped::NotFound,
            SwapOutcome::Failed(e) => Swapped::Failed(e.to_string()),
        }
    }
}

/// A comparable mirror of [`DeleteOutcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// [`DeleteOutcome::Deleted`].
    Deleted,
    /// [`DeleteOutcome::NotFound`].
    NotFound,
    /// [`DeleteOutcome::Conflict`].
    Conflict,
    /// [`DeleteOutcome::Failed`], with the error text.
    Failed(String),
}

impl From<&DeleteOutcome> for Deleted {
    fn from(o: &DeleteOutcome) -> Self {
        match o {
            DeleteOutcome::Deleted => Deleted::Deleted,
            DeleteOutcome::NotFound => Deleted::NotFound,
            DeleteOutcome::Conflict => Deleted::Conflict,
            DeleteOutcome::Failed(e) => Deleted::Failed(e.to_string()),
        }
    }
}

/// Creates `tasks` and returns the per-item outcomes.
pub async fn create<S: Store>(store: &S, tasks: Vec<Task>) -> Vec<Created> {
    let outcomes = store.create(tasks).await.expect("store.create failed");
    outcomes.iter().map(Created::from).collect()
}

/// Creates `tasks`, asserting that every one of them is new.
pub async fn seed<S: Store>(store: &S, tasks: Vec<Task>) {
    let n = tasks.len();
    let outcomes = create(store, tasks).await;
    assert_eq!(
        outcomes,
        vec![Created::Created; n],
        "seeding the store must create every task"
    );
}

/// The swap that turns `before` (the state it is fenced on) into `after`,
/// as the narrowest change that does it ([`Change::between`]).
pub fn swap_of(before: &Task, after: &Task) -> Swap {
    let change = Change::between(before, after)
        .unwrap_or_else(|| panic!("no swap turns {before:?} into {after:?}"));
    Swap::new(before, change, after)
}

/// Swaps each `(before, after)` (see [`swap_of`]) and returns the per-item outcomes.
pub async fn swap_all<S: Store>(store: &S, swaps: Vec<(Task, Task)>) -> Vec<Swapped> {
    let swaps: Vec<Swap> = swaps
        .into_iter()
        .map(|(before, after)| swap_of(&before, &after))
        .collect();
    let outcomes = store.swap(&swaps).await.expect("store.swap failed");
    outcomes.iter().map(Swapped::from).collect()
}

/// Swaps one task from `before` (the state the change was decided on) to
/// `after` and returns the outcome.
pub async fn swap<S: Store>(store: &S, before: &Task, after: Task) -> Swapped {
    let mut outcomes = swap_all(store, vec![(before.clone(), after)]).await;
    assert_eq!(outcomes.len(), 1, "swap must report one outcome per item");
    outcomes.remove(0)
}

/// Deletes `ids` whatever their version and returns the per-item outcomes.
pub async fn delete<S: Store>(store: &S, ids: &[&str]) -> Vec<Deleted> {
    let deletes: Vec<Delete> = ids.iter().map(|id| Delete::any(*id)).collect();
    delete_all(store, &deletes).await
}

/// Runs `deletes` and returns the per-item outcomes.
pub async fn delete_all<S: Store>(store: &S, deletes: &[Delete]) -> Vec<Deleted> {
    let outcomes = store.delete(deletes).await.expect("store.delete failed");
    assert_eq!(outcomes.len(), deletes.len(), "one outcome per delete");
    outcomes.iter().map(Deleted::from).collect()
}

/// Reads `ids` (as the store returns them, undecodable documents included).
pub async fn get_all<S: Store>(store: &S, ids: &[&str]) -> Vec<Fetched> {
    let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    store.get(&ids).await.expect("store.get failed")
}

/// Reads one task; `None` when it does not exist. Panics on an undecodable document.
pub async fn get<S: Store>(store: &S, id: &str) -> Option<Task> {
    let mut fetched = get_all(store, &[id]).await;
    assert!(fetched.len() <= 1, "get of one id returned {fetched:?}");
    match fetched.pop() {
        None => None,
        Some(Fetched::Task(task)) => {
            assert_eq!(task.id, id, "get returned another task");
            Some(task)
        }
        Some(Fetched::Undecodable(u)) => panic!("task {id} is unexpectedly undecodable: {u:?}"),
    }
}

/// Reads one task that must exist.
pub async fn get_existing<S: Store>(store: &S, id: &str) -> Task {
    get(store, id)
        .await
        .unwrap_or_else(|| panic!("task {id} should exist"))
}

/// Claims with a fresh grant of `lease` at `now`, in priority order.
pub async fn claim_with<S: Store>(
    store: &S,
    env: &str,
    kind: &str,
    now: DateTime<Utc>,
    mode: ClaimMode,
    lease: Duration,
) -> (LeaseGrant, Claimed) {
    claim_ordered(store, env, kind, now, mode, ClaimOrder::Priority, lease).await
}

/// Claims with a fresh grant of `lease` at `now`, in `order`.
pub async fn claim_ordered<S: Store>(
    store: &S,
    env: &str,
    kind: &str,
    now: DateTime<Utc>,
    mode: ClaimMode,
    order: ClaimOrder,
    lease: Duration,
) -> (LeaseGrant, Claimed) {
    let grant = LeaseGrant::new(now, lease);
    let request = ClaimRequest {
        env: env.to_owned(),
        kind: kind.to_owned(),
        now,
        grant: grant.clone(),
        mode,
        order,
    };
    let claimed = store.claim(&request).await.expect("store.claim failed");
    (grant, claimed)
}

/// Claims up to `limit` tasks of [`ENV`]/[`KIND`] at `now` with [`LEASE`].
pub async fn claim<S: Store>(store: &S, now: DateTime<Utc>, limit: usize) -> Vec<Task> {
    let (_, claimed) = claim_with(store, ENV, KIND, now, ClaimMode::Single { limit }, LEASE).await;
    assert!(
        claimed.undecodable.is_empty(),
        "no undecodable document was stored, yet the claim reported {:?}",
        claimed.undecodable
    );
    claimed.tasks
}

/// Claims exactly one task of [`ENV`]/[`KIND`] at `now`, asserting its id.
pub async fn claim_one<S: Store>(store: &S, now: DateTime<Utc>, id: &str) -> Task {
    let tasks = claim(store, now, 1).await;
    assert_eq!(ids(&tasks), vec![id], "claim at {now} should take {id}");
    tasks.into_iter().next().expect("one claimed task")
}

/// Claims a resource-key group of [`ENV`]/[`KIND`] at `now`.
pub async fn claim_group<S: Store>(store: &S, now: DateTime<Utc>, max_group: usize) -> Vec<Task> {
    let (_, claimed) = claim_with(
        store,
        ENV,
        KIND,
        now,
        ClaimMode::ResourceGroup { max_group },
        LEASE,
    )
    .await;
    claimed.tasks
}

/// The ids of `tasks`, in order.
pub fn ids(tasks: &[Task]) -> Vec<&str> {
    tasks.iter().map(|t| t.id.as_str()).collect()
}

/// The ids of `tasks`, sorted.
pub fn sorted_ids(tasks: &[Task]) -> Vec<&str> {
    let mut ids = ids(tasks);
    ids.sort_unstable();
    ids
}

/// The token a claimed task holds.
pub fn token(task: &Task) -> LeaseToken {
    task.lease_token
        .clone()
        .expect("a claimed task carries a lease token")
}

/// Main retry policy of [`policy`]: 3 attempts, 1 s base, x2.
pub static RETRY: ExponentialBackoff = ExponentialBackoff {
    max_attempts: 3,
    base_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(300),
    multiplier: 2.0,
};

/// Cancellation retry policy of [`policy`]: 2 attempts, 5 s apart.
pub static CANCEL_RETRY: FixedDelay = FixedDelay {
    max_attempts: 2,
    delay: Duration::from_secs(5),
};

/// A policy that never retries.
pub static NO_RETRY: NoRetry = NoRetry;

/// The failure policy most tests use: [`RETRY`] and [`CANCEL_RETRY`], 10 errors kept.
pub fn policy() -> FailurePolicy<'static> {
    policy_with(&RETRY)
}

/// A failure policy with this main retry policy.
pub fn policy_with(retry: &'static dyn RetryPolicy) -> FailurePolicy<'static> {
    FailurePolicy {
        retry,
        cancellation_retry: &CANCEL_RETRY,
        error_history_limit: 10,
    }
}

/// Records success for a task the caller holds as claimed, like a worker:
/// swap with the claimed version; on conflict re-read and recompute.
/// Returns the task as stored afterwards, or `None` if the lease was lost.
pub async fn complete<S: Store>(
    store: &S,
    held: &Task,
    now: DateTime<Utc>,
    result: Value,
) -> Option<Task> {
    let token = token(held);
    let mut current = held.clone();
    loop {
        let next = lifecycle::succeed(&current, &token, now, Some(result.clone())).ok()?;
        match swap(store, &current, next.clone()).await {
            Swapped::Applied => return Some(next),
            Swapped::Conflict => current = get(store, &held.id).await?,
            other => panic!("completing {} got {other:?}", held.id),
        }
    }
}

/// Applies a user-side transition (cancel, reset) the way a manager does:
/// read, let the core decide, swap; on conflict read again.
/// Returns `Ok(stored)` when applied, `Err(rejection)` when the core said no.
pub async fn apply<S: Store>(
    store: &S,
    id: &str,
    transition: impl Fn(&Task) -> Result<Task, lifecycle::Rejection>,
) -> Result<Task, lifecycle::Rejection> {
    for _ in 0..16 {
        let current = get_existing(store, id).await;
        let next = transition(&current)?;
        match swap(store, &current, next.clone()).await {
            Swapped::Applied => return Ok(next),
            Swapped::Conflict => continue,
            other => panic!("applying a transition to {id} got {other:?}"),
        }
    }
    panic!("transition of {id} kept conflicting without any concurrent writer")
}

/// A small JSON result value.
pub fn result(n: u64) -> Value {
    json!({ "n": n })
}

//! The test kit: a manager on a manual clock, driven step by step.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::Value;

use crate::clock::ManualClock;
use crate::data::TaskData;
use crate::error::Error;
use crate::lifecycle::{self, FailurePolicy, Finished, HandlerPath, LeaseGrant, RunResult};
use crate::manager::{
    CurrentTask, FromTask, Handler, HandlerOptions, HandlerOutcome, IntoOutcome, Manager,
    ManagerBuilder, RunOutcome, RunReport, TaskContext,
};
use crate::status::TaskStatus;
use crate::store::Store;
use crate::task::Task;

/// Default safety limit of [`TestKit::run_until_idle`]: claims processed
/// before it gives up (a task that reschedules itself forever).
const DEFAULT_MAX_RUNS: usize = 1000;

/// Environment of a kit's manager unless set otherwise.
const TEST_ENV: &str = "test";

/// A [`Manager`] on a [`ManualClock`]: time passes only when the test moves
/// it, and (unless built with [`TestKitBuilder::workers`]) tasks run only
/// when the test says so.
#[derive(Clone)]
pub struct TestKit {
    manager: Manager,
    clock: ManualClock,
    max_runs: usize,
}

/// Builds a [`TestKit`]; see [`TestKit::builder`].
pub struct TestKitBuilder {
    store: Arc<dyn Store>,
    start: Option<DateTime<Utc>>,
    max_runs: usize,
    inline: bool,
    workers: bool,
    configure: Option<Box<dyn FnOnce(ManagerBuilder) -> ManagerBuilder>>,
}

impl TestKitBuilder {
    /// Where the clock starts. Default: the current time, whole seconds.
    pub fn start_at(mut self, start: DateTime<Utc>) -> Self {
        self.start = Some(start);
        self
    }

    /// Safety limit of [`TestKit::run_until_idle`] (default 1000 claims).
    pub fn max_runs(mut self, runs: usize) -> Self {
        self.max_runs = runs.max(1);
        self
    }

    /// Inline mode: creating a task runs it at once, in the caller's task
    /// (see [`ManagerBuilder::inline`]).
    pub fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    /// Runs the manager's worker loops, for tests of concurrency, wake-ups
    /// and shutdown: moving the clock wakes the loops whose tasks became
    /// due. Without this (the default) tasks run only when the test calls
    /// [`TestKit::run_until_idle`] or friends.
    pub fn workers(mut self) -> Self {
        self.workers = true;
        self
    }

    /// Adjusts the manager (env, error history, declared kinds, ...). The
    /// clock and worker settings are the kit's.
    pub fn configure(
        mut self,
        configure: impl FnOnce(ManagerBuilder) -> ManagerBuilder + 'static,
    ) -> Self {
        self.configure = Some(Box::new(configure));
        self
    }

    /// Builds the kit.
    pub fn build(self) -> TestKit {
        let start = self.start.unwrap_or_else(|| {
            let now = Utc::now();
            now.duration_trunc(TimeDelta::seconds(1)).unwrap_or(now)
        });
        let clock = ManualClock::new(start);
        let mut builder = Manager::builder(self.store).env(TEST_ENV);
        if let Some(configure) = self.configure {
            builder = configure(builder);
        }
        builder = builder
            .clock(Arc::new(clock.clone()))
            .start_workers(self.workers && !self.inline);
        if self.inline {
            builder = builder.inline();
        }
        TestKit {
            manager: builder.build(),
            clock,
            max_runs: self.max_runs,
        }
    }
}

/// What [`TestKit::run_until_idle`] and friends ran.
#[derive(Debug, Clone, Default)]
pub struct DrainReport {
    /// Every claim processed, in order.
    pub runs: Vec<RunReport>,
    /// True when the safety limit stopped the drain with work left.
    pub limit_reached: bool,
}

impl DrainReport {
    /// Every task outcome, in order.
    pub fn outcomes(&self) -> impl Iterator<Item = &RunOutcome> {
        self.runs.iter().flat_map(|r| r.outcomes.iter())
    }

    /// Ids of the tasks whose outcome was stored with `status`, in order.
    pub fn with_status(&self, status: TaskStatus) -> Vec<&str> {
        self.outcomes()
            .filter(|o| o.status == Ok(status))
            .map(|o| o.task_id.as_str())
            .collect()
    }

    /// Ids of the occurrences spawned by generators, in order.
    pub fn spawned(&self) -> Vec<&str> {
        self.runs
            .iter()
            .flat_map(|r| r.spawned.iter().map(String::as_str))
            .collect()
    }
}

/// The result of [`TestKit::perform`]: what the handler returned and the
/// task as the manager would store it after this attempt.
#[derive(Debug, Clone)]
pub struct Performed {
    /// The handler's result, or its error message (`Ok(None)` for a snooze,
    /// which shows in the task's [`snoozes`](Task::snoozes) and status).
    pub result: Result<Option<Value>, String>,
    /// The task after the attempt (completed, failed, or waiting for a retry).
    pub task: Task,
    /// The task's status after the attempt, at the kit's time.
    pub status: TaskStatus,
}

impl TestKit {
    /// A kit over `store` (any backend; usually a fresh `MemoryStore`).
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::builder(store).build()
    }

    /// A kit builder over `store`.
    pub fn builder(store: Arc<dyn Store>) -> TestKitBuilder {
        TestKitBuilder {
            store,
            start: None,
            max_runs: DEFAULT_MAX_RUNS,
            inline: false,
            workers: false,
            configure: None,
        }
    }

    /// The manager: register handlers on it and hand it to the code under test.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// The clock the manager reads.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The kit's current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Moves time forward (nothing runs until you ask).
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Sets the time.
    pub fn set_time(&self, to: DateTime<Utc>) {
        self.clock.set(to);
    }

    /// Processes everything of every registered kind that is due now,
    /// including retries and occurrences that become due as a result,
    /// until nothing is left (or the safety limit is reached).
    pub async fn run_until_idle(&self) -> DrainReport {
        let kinds = self.manager.registered_kinds();
        self.drain_kinds(&kinds).await
    }

    /// [`TestKit::run_until_idle`] for one kind.
    pub async fn drain(&self, kind: &str) -> DrainReport {
        self.drain_kinds(&[kind.to_owned()]).await
    }

    /// Moves time forward by `by`, then runs until idle.
    pub async fn advance_and_run(&self, by: Duration) -> DrainReport {
        self.advance(by);
        self.run_until_idle().await
    }

    /// Moves time forward `steps` times by `step`, running until idle after
    /// each step (e.g. one week at a time through a recurrence).
    pub async fn run_for(&self, steps: usize, step: Duration) -> DrainReport {
        let mut all = self.run_until_idle().await;
        for _ in 0..steps {
            let report = self.advance_and_run(step).await;
            all.limit_reached |= report.limit_reached;
            all.runs.extend(report.runs);
        }
        all
    }

    async fn drain_kinds(&self, kinds: &[String]) -> DrainReport {
        let mut report = DrainReport::default();
        // One read of the paused kinds per drain, not one per claim: a pause
        // made during a drain is seen by the next one.
        let mut fresh_pauses = true;
        loop {
            let mut progressed = false;
            for kind in kinds {
                loop {
                    if report.runs.len() >= self.max_runs {
                        tracing::warn!(runs = self.max_runs, "run_until_idle reached its limit");
                        report.limit_reached = true;
                        return report;
                    }
                    let next = self.manager.process_next_with(kind, fresh_pauses).await;
                    fresh_pauses = false;
                    match next {
                        Ok(Some(run)) => {
                            progressed = true;
                            report.runs.push(run);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(kind = %kind, error = %e, "process_next failed");
                            break;
                        }
                    }
                }
            }
            if !progressed {
                return report;
            }
        }
    }

    /// Runs `handler` once on a task built from `data`, in isolation: no
    /// store, no manager loop (River's worker helper, Oban's `perform_job`).
    /// Returns what the manager would record with `options`' retry policy.
    pub async fn perform<A, H, D>(
        &self,
        handler: &H,
        data: &D,
        options: &HandlerOptions,
    ) -> Result<Performed, Error>
    where
        A: FromTask,
        H: Handler<A>,
        D: TaskData + ?Sized,
    {
        let task = Task::from_data(data, self.manager.env(), self.now())?;
        Ok(self.perform_task(handler, task, options).await)
    }

    /// [`TestKit::perform`] on a task as given (e.g. with earlier attempts).
    pub async fn perform_task<A, H>(
        &self,
        handler: &H,
        task: Task,
        options: &HandlerOptions,
    ) -> Performed
    where
        A: FromTask,
        H: Handler<A>,
    {
        let now = self.now();
        let grant = LeaseGrant::new(now, options.lease_duration);
        let claimed = lifecycle::claim(&task, &grant);
        let current = CurrentTask {
            task_id: Some(claimed.id.clone()),
            resource_key: claimed.resource_key.clone(),
            kind: claimed.kind.clone(),
        };
        let work = async {
            // Decoded as a worker decodes it (a panic included).
            match crate::manager::decode_args::<A>(&claimed) {
                Ok(args) => handler
                    .handle(args, TaskContext::of(&claimed))
                    .await
                    .into_outcome(),
                Err(error) => HandlerOutcome::Failed(error),
            }
        };
        let result = crate::manager::run_captured(current, work)
            .await
            .into_run(now);
        let policy = FailurePolicy {
            retry: options.retry.as_ref(),
            cancellation_retry: options.cancellation_retry.as_ref(),
            error_history_limit: usize::MAX,
        };
        let run = Finished {
            token: &grant.token,
            now,
            path: HandlerPath::Main,
            result: &result,
        };
        // The claim above was ours, so the fence cannot refuse.
        let task = lifecycle::record(&claimed, &run, policy, None).unwrap_or(claimed);
        Performed {
            status: task.status(now),
            result: match result {
                RunResult::Completed(value) => Ok(value),
                RunResult::Failed(e) => Err(e.message().to_owned()),
                RunResult::Snoozed(_) => Ok(None),
            },
            task,
        }
    }
}

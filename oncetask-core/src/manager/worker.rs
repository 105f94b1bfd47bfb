//! Worker loops: claim, run the handler under guard (panic capture, time
//! limit, heartbeat, shutdown), and record the outcome through fenced swaps.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::error::{Error, HandlerError};
use crate::lifecycle::{self, FailurePolicy, GeneratorError, HandlerPath, LeaseGrant, Rejection};
use crate::manager::apply::{Applied, apply_many, apply_one};
use crate::manager::context::{self, CurrentTask};
use crate::manager::handler::{HandlerResult, NoopCancellation, TaskHandler};
use crate::manager::{HandlerShape, Inner, Registration, ShutdownPhase};
use crate::metrics;
use crate::retry::{FixedDelay, NoRetry, RetryPolicy};
use crate::status::TaskStatus;
use crate::store::{ClaimMode, ClaimRequest, CreateOutcome, Undecodable};
use crate::task::{LeaseToken, Task};

/// Retry delay after a generator's bookkeeping failed (e.g. the occurrence
/// could not be stored). The failure is recorded on the generator (Go W27).
const GENERATOR_RETRY: Duration = Duration::from_secs(60);

/// Longest wait of shutdown for interrupted handlers to release their
/// leases (it waits as long as the grace period, within
/// [`MIN_RELEASE_WAIT`] ..= this).
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Shortest wait for releases: a release is a store round trip or two, which
/// a short grace period (or a loaded server) must not cut off.
const MIN_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Longest back-off of a loop whose claims keep failing (store unreachable).
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(30);

/// What one [`crate::manager::Manager::process_next`] call did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// The kind processed.
    pub kind: String,
    /// Ids leased by the claim, in claim order.
    pub claimed: Vec<String>,
    /// Occurrence ids created by generators of the claim.
    pub spawned: Vec<String>,
    /// One entry per task that went through a handler (or generator bookkeeping).
    pub outcomes: Vec<RunOutcome>,
    /// Documents the claim skipped because they cannot be decoded.
    pub undecodable: Vec<Undecodable>,
}

/// How one task of a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// Task id.
    pub task_id: String,
    /// Which path ran: generator bookkeeping counts as [`HandlerPath::Main`].
    pub path: HandlerPath,
    /// The handler's error message, if it failed.
    pub error: Option<String>,
    /// Status after the outcome was stored; `None` if it was not stored
    /// (lease lost, task deleted, storage failure, shutdown interruption).
    pub status: Option<TaskStatus>,
}

/// What [`crate::manager::Manager::shutdown`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// True when every running handler finished within the grace period.
    pub drained: bool,
    /// Tasks whose handler was interrupted; their leases were released.
    pub interrupted: Vec<String>,
}

pub(crate) fn spawn_workers(inner: &Arc<Inner>, registration: Arc<Registration>) {
    let mut workers = inner.workers.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..registration.options.concurrency {
        let wake = inner.wake_receiver(&registration.kind);
        let phase = inner.shutdown.subscribe();
        workers.push(tokio::spawn(worker_loop(
            Arc::downgrade(inner),
            registration.clone(),
            wake,
            phase,
        )));
    }
}

/// One loop: claim and run until nothing is ready, then sleep until the next
/// due time, a wake-up, or the poll interval. The loop holds only a weak
/// reference while idle, so dropping the last `Manager` stops it.
async fn worker_loop(
    manager: Weak<Inner>,
    registration: Arc<Registration>,
    mut wake: watch::Receiver<u64>,
    mut phase: watch::Receiver<ShutdownPhase>,
) {
    let mut failures: u32 = 0;
    loop {
        if *phase.borrow() != ShutdownPhase::Running {
            break;
        }
        let Some(inner) = manager.upgrade() else {
            break;
        };
        wake.borrow_and_update();
        let poll = inner.config.poll_interval;
        // Due times are looked up after this instant, not after "now" once
        // the claim returned: the clock may pass a due time in between, and
        // that task would then be slept past.
        let checked_at = inner.now();
        let run = AssertUnwindSafe(process_next(&inner, &registration)).catch_unwind();
        let outcome = run.await.unwrap_or_else(|panic| {
            // A bug must not silently stop the kind: log it and carry on; the
            // task in hand stays leased until its lease expires.
            Err(Error::Internal(format!(
                "worker panicked: {}",
                panic_message(panic.as_ref())
            )))
        });
        let idle_until = match outcome {
            Ok(Some(_)) => {
                failures = 0;
                continue;
            }
            Ok(None) => {
                failures = 0;
                let horizon = add(inner.now(), poll);
                match inner
                    .store
                    .next_due(&inner.env, &registration.kind, checked_at)
                    .await
                {
                    Ok(Some(due)) => due.min(horizon),
                    Ok(None) => horizon,
                    Err(e) => {
                        tracing::warn!(kind = %registration.kind, error = %e, "next due time unavailable");
                        horizon
                    }
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(kind = %registration.kind, error = %e, "claim failed");
                let backoff = Duration::from_millis(100)
                    .saturating_mul(2u32.saturating_pow(failures.min(16)))
                    .min(MAX_ERROR_BACKOFF)
                    .min(poll);
                add(inner.now(), backoff)
            }
        };
        let clock = inner.clock.clone();
        drop(inner);
        tokio::select! {
            _ = clock.sleep_until(idle_until) => {}
            changed = wake.changed() => if changed.is_err() { break },
            changed = phase.changed() => if changed.is_err() { break },
        }
    }
}

pub(crate) fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(crate) async fn process_next(
    inner: &Arc<Inner>,
    registration: &Registration,
) -> Result<Option<RunReport>, Error> {
    let claimed_at = inner.now();
    let options = &registration.options;
    let grant = LeaseGrant::new(claimed_at, options.lease_duration);
    let mode = match registration.shape {
        HandlerShape::Single(_) => ClaimMode::Single { limit: 1 },
        HandlerShape::Group(_) => ClaimMode::ResourceGroup {
            max_group: options.max_group_size,
        },
    };
    let request = ClaimRequest {
        env: inner.env.clone(),
        kind: registration.kind.clone(),
        now: claimed_at,
        grant,
        mode,
    };
    let span = tracing::debug_span!(
        "oncetask.claim",
        env = %inner.env,
        kind = %registration.kind,
        claimed = tracing::field::Empty,
    );
    let claimed = inner.store.claim(&request).instrument(span.clone()).await?;
    span.record("claimed", claimed.tasks.len());
    metrics::claimed(&inner.env, &registration.kind, &claimed.tasks, claimed_at);
    for bad in &claimed.undecodable {
        let first_time = inner
            .reported_undecodable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(bad.id.clone());
        if first_time {
            tracing::error!(task_id = %bad.id, kind = %registration.kind, reason = %bad.reason,
                "skipping a task that cannot be decoded");
        }
    }
    if claimed.tasks.is_empty() {
        return Ok(None);
    }
    let token = request.grant.token;
    let mut run = Run {
        inner,
        registration,
        token: &token,
        claimed_at,
        executions: 0,
        report: RunReport {
            kind: registration.kind.clone(),
            claimed: claimed.tasks.iter().map(|t| t.id.clone()).collect(),
            undecodable: claimed.undecodable,
            ..RunReport::default()
        },
    };

    let (generators, rest): (Vec<Task>, Vec<Task>) =
        claimed.tasks.into_iter().partition(Task::is_generator);
    for generator in generators {
        run.advance_generator(generator).await;
    }
    let (cancelled, normal): (Vec<Task>, Vec<Task>) =
        rest.into_iter().partition(|t| t.is_cancelled);
    for task in cancelled {
        let handler: Arc<dyn TaskHandler> = options
            .cancellation_handler
            .clone()
            .unwrap_or_else(|| Arc::new(NoopCancellation));
        let current = CurrentTask {
            task_id: Some(task.id.clone()),
            resource_key: task.resource_key.clone(),
            kind: registration.kind.clone(),
        };
        let input = task.clone();
        run.execute(vec![task], HandlerPath::Cancellation, current, async move {
            handler.handle(input).await
        })
        .await;
    }
    if !normal.is_empty() {
        let current = CurrentTask {
            task_id: (normal.len() == 1).then(|| normal[0].id.clone()),
            resource_key: normal[0].resource_key.clone(),
            kind: registration.kind.clone(),
        };
        let input = normal.clone();
        let work: BoxFuture<'static, HandlerResult> = match &registration.shape {
            HandlerShape::Single(handler) => {
                let handler = handler.clone();
                async move {
                    match <[Task; 1]>::try_from(input) {
                        Ok([task]) => handler.handle(task).await,
                        Err(tasks) => Err(HandlerError::msg(format!(
                            "expected 1 task, got {}",
                            tasks.len()
                        ))),
                    }
                }
                .boxed()
            }
            HandlerShape::Group(handler) => {
                let handler = handler.clone();
                async move { handler.handle(input).await }.boxed()
            }
        };
        run.execute(normal, HandlerPath::Main, current, work).await;
    }
    Ok(Some(run.report))
}

/// How a guarded handler run ended.
enum Ended {
    Finished(HandlerResult),
    /// Shutdown grace period over: leases must be released.
    Interrupted,
    /// A heartbeat found the lease taken over: nothing may be written.
    LeaseLost,
}

/// The state of one claim being processed.
struct Run<'a> {
    inner: &'a Arc<Inner>,
    registration: &'a Registration,
    token: &'a LeaseToken,
    claimed_at: DateTime<Utc>,
    /// Handler runs done so far for this claim (cancellation handlers run
    /// before the main handler, on the same lease).
    executions: usize,
    report: RunReport,
}

impl Run<'_> {
    /// Runs `work` for `held` and records the outcome on every task of `held`.
    async fn execute(
        &mut self,
        mut held: Vec<Task>,
        path: HandlerPath,
        current: CurrentTask,
        work: impl std::future::Future<Output = HandlerResult> + Send,
    ) {
        let mut anchor = self.claimed_at;
        if self.executions > 0 {
            // An earlier handler of this claim used part of the shared lease
            // (Go W12): renew it, so this handler gets a whole lease and time limit.
            anchor = self.inner.now();
            held = self.renew(held, anchor).await;
            if held.is_empty() {
                return;
            }
        }
        self.executions += 1;
        let mut lost = Vec::new();
        let ended = self
            .guard(&mut held, &mut lost, anchor, current, work)
            .await;
        metrics::count(
            metrics::TASKS_FENCED_OFF,
            &self.inner.env,
            &self.registration.kind,
            lost.len(),
        );
        for id in lost {
            tracing::warn!(task_id = %id, "lease lost while running; outcome discarded");
            self.note(id, path, Some("lease lost".into()), None);
        }
        match ended {
            Ended::Finished(result) => self.record(held, path, &result, None).await,
            Ended::Interrupted => self.release(held, path, "interrupted by shutdown").await,
            Ended::LeaseLost => {
                self.release(held, path, "lease could not be extended")
                    .await
            }
        }
    }

    /// Extends the leases of `held` from `now`; tasks whose lease was lost are
    /// noted and dropped.
    async fn renew(&mut self, held: Vec<Task>, now: DateTime<Utc>) -> Vec<Task> {
        let until = add(now, self.registration.options.lease_duration);
        let token = self.token;
        let ids: Vec<String> = held.iter().map(|t| t.id.clone()).collect();
        let results = apply_many(self.inner.store.as_ref(), held, |t| {
            lifecycle::extend_lease(t, token, now, until)
        })
        .await;
        let mut kept = Vec::new();
        for (id, applied) in ids.into_iter().zip(results) {
            match applied {
                Applied::Written(task) => kept.push(task),
                other => {
                    self.written(&id, other, now);
                    self.note(id, HandlerPath::Main, Some("lease lost".into()), None);
                }
            }
        }
        kept
    }

    /// Runs the handler future with panic capture, the time limit, the
    /// heartbeat and the shutdown abort, whichever ends first. A finished
    /// handler wins a tie, so its outcome is never thrown away.
    async fn guard(
        &self,
        held: &mut Vec<Task>,
        lost: &mut Vec<String>,
        anchor: DateTime<Utc>,
        current: CurrentTask,
        work: impl std::future::Future<Output = HandlerResult> + Send,
    ) -> Ended {
        let options = &self.registration.options;
        let limit = options.time_limit();
        let clock = self.inner.clock.clone();
        let timeout = async {
            match limit {
                Some(d) => clock.sleep_until(add(anchor, d)).await,
                None => std::future::pending().await,
            }
        };
        let mut phase = self.inner.shutdown.subscribe();
        let aborted = async {
            // An error means the manager is gone: treat as abort.
            let _ = phase.wait_for(|p| *p == ShutdownPhase::Aborting).await;
        };
        let started = std::time::Instant::now();
        let timed = run_captured(current, work).inspect(|_| {
            metrics::handler_duration(
                &self.inner.env,
                &self.registration.kind,
                started.elapsed().as_secs_f64(),
            );
        });
        tokio::select! {
            biased;
            result = timed => Ended::Finished(result),
            _ = timeout => Ended::Finished(Err(HandlerError::msg(format!(
                "handler timed out after {:?}",
                limit.unwrap_or_default()
            )))),
            _ = aborted => Ended::Interrupted,
            _ = self.heartbeat(held, lost, anchor) => Ended::LeaseLost,
        }
    }

    /// Extends the leases of `held` every heartbeat interval. Tasks whose
    /// lease was lost leave `held` (into `lost`); returns when none is left,
    /// or when extensions kept failing until the last confirmed lease is
    /// about to end, so the handler never outlives its lease. Never returns
    /// when heartbeats are off.
    async fn heartbeat(&self, held: &mut Vec<Task>, lost: &mut Vec<String>, anchor: DateTime<Utc>) {
        let options = &self.registration.options;
        let Some(interval) = options.heartbeat else {
            return std::future::pending().await;
        };
        let margin = TimeDelta::from_std(options.lease_margin()).unwrap_or(TimeDelta::MAX);
        // Beats are anchored like the lease itself, so a slow start of the
        // handler cannot push the first extension past expiry.
        let mut next_beat = add(anchor, interval);
        loop {
            let Some(expiry) = held.iter().filter_map(|t| t.leased_until).min() else {
                return;
            };
            let stop_at = expiry.checked_sub_signed(margin).unwrap_or(expiry);
            self.inner.clock.sleep_until(next_beat.min(stop_at)).await;
            if self.inner.now() >= stop_at {
                tracing::error!(kind = %self.registration.kind,
                    "lease extensions failed until the lease was about to end; stopping the handler");
                return;
            }
            next_beat = add(next_beat, interval);
            let now = self.inner.now();
            let until = add(now, options.lease_duration);
            let token = self.token;
            let results = apply_many(self.inner.store.as_ref(), held.clone(), |t| {
                lifecycle::extend_lease(t, token, now, until)
            })
            .await;
            let mut kept = Vec::with_capacity(held.len());
            for (task, applied) in held.drain(..).zip(results) {
                match applied {
                    Applied::Written(extended) => kept.push(extended),
                    Applied::Rejected(_) | Applied::Missing => lost.push(task.id),
                    Applied::Failed(e) => {
                        tracing::warn!(task_id = %task.id, error = %e, "lease extension failed");
                        kept.push(task);
                    }
                }
            }
            *held = kept;
            if held.is_empty() {
                return;
            }
        }
    }

    /// Stores the outcome of a run on each task: one swap for the whole group,
    /// each task decided on its own (Go W11).
    async fn record(
        &mut self,
        held: Vec<Task>,
        path: HandlerPath,
        result: &HandlerResult,
        retry_override: Option<&dyn RetryPolicy>,
    ) {
        let now = self.inner.now();
        let options = &self.registration.options;
        let retry = PanicSafe(retry_override.unwrap_or(options.retry.as_ref()));
        let cancellation_retry = PanicSafe(options.cancellation_retry.as_ref());
        let policy = FailurePolicy {
            retry: &retry,
            cancellation_retry: &cancellation_retry,
            error_history_limit: self.inner.config.error_history_limit,
        };
        let token = self.token;
        let ids: Vec<String> = held.iter().map(|t| t.id.clone()).collect();
        let span = tracing::debug_span!(
            "oncetask.outcome",
            env = %self.inner.env,
            kind = %self.registration.kind,
            tasks = ids.len(),
            path = ?path,
            ok = result.is_ok(),
        );
        let results = apply_many(self.inner.store.as_ref(), held, |t| match result {
            Ok(value) => lifecycle::succeed(t, token, now, value.clone()),
            Err(e) => lifecycle::fail(t, token, now, e, path, policy),
        })
        .instrument(span)
        .await;
        let error = result.as_ref().err().map(|e| e.message().to_owned());
        for (id, applied) in ids.into_iter().zip(results) {
            let status = self.written(&id, applied, now);
            if let Some(status) = status {
                metrics::outcome(
                    &self.inner.env,
                    &self.registration.kind,
                    status,
                    result.is_err(),
                );
            }
            self.note(id, path, error.clone(), status);
        }
    }

    /// Gives the leases of `held` back without an outcome (shutdown, or a
    /// lease that could not be kept): the tasks are ready again at once.
    async fn release(&mut self, held: Vec<Task>, path: HandlerPath, why: &str) {
        let now = self.inner.now();
        let token = self.token;
        let ids: Vec<String> = held.iter().map(|t| t.id.clone()).collect();
        let span = tracing::debug_span!(
            "oncetask.outcome",
            env = %self.inner.env,
            kind = %self.registration.kind,
            tasks = ids.len(),
            path = ?path,
            released = why,
        );
        let results = apply_many(self.inner.store.as_ref(), held, |t| {
            lifecycle::release(t, token)
        })
        .instrument(span)
        .await;
        for (id, applied) in ids.into_iter().zip(results) {
            self.written(&id, applied, now);
            if *self.inner.shutdown.borrow() == ShutdownPhase::Aborting {
                self.inner
                    .interrupted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(id.clone());
            }
            self.note(id, path, Some(why.to_owned()), None);
        }
    }

    /// Logs a write's result, wakes the kind's loops when the write made work
    /// for them, and returns the stored status.
    fn written(&self, id: &str, applied: Applied, now: DateTime<Utc>) -> Option<TaskStatus> {
        match applied {
            Applied::Written(task) => {
                // Other idle loops only have new work if a resource key was
                // freed or the task is ready again at once (this loop looks
                // for work next anyway): no claim storm after every success.
                if task.resource_key.is_some() || task.is_ready_at(now) {
                    self.inner.wake(&task.kind);
                }
                Some(task.status(now))
            }
            Applied::Rejected(Rejection::LeaseLost) => {
                metrics::count(
                    metrics::TASKS_FENCED_OFF,
                    &self.inner.env,
                    &self.registration.kind,
                    1,
                );
                tracing::warn!(task_id = %id, "lease lost before the outcome was stored; outcome discarded");
                None
            }
            Applied::Rejected(Rejection::NotApplicable) => None,
            Applied::Missing => {
                tracing::info!(task_id = %id, "task deleted while running; outcome discarded");
                None
            }
            Applied::Failed(e) => {
                tracing::error!(task_id = %id, error = %e, "failed to store task outcome");
                None
            }
        }
    }

    fn note(
        &mut self,
        task_id: String,
        path: HandlerPath,
        error: Option<String>,
        status: Option<TaskStatus>,
    ) {
        self.report.outcomes.push(RunOutcome {
            task_id,
            path,
            error,
            status,
        });
    }

    /// Spawns the generator's occurrence and moves it to its next slot.
    /// Bookkeeping errors are recorded on the generator, not only logged (Go W27).
    async fn advance_generator(&mut self, generator: Task) {
        let now = self.inner.now();
        let token = self.token;
        let step = match lifecycle::advance_generator(&generator, token, now) {
            Ok(step) => step,
            Err(GeneratorError::Recurrence(e)) => {
                let error = HandlerError::msg(format!("invalid recurrence: {e}"));
                return self
                    .record(
                        vec![generator],
                        HandlerPath::Main,
                        &Err(error),
                        Some(&NoRetry),
                    )
                    .await;
            }
            Err(e) => {
                tracing::warn!(task_id = %generator.id, error = %e, "generator not advanced");
                return;
            }
        };
        if let Some(occurrence) = step.occurrence {
            let id = occurrence.id.clone();
            let failure = match self.inner.store.create(vec![occurrence]).await {
                Ok(mut outcomes) => match outcomes.pop() {
                    Some(CreateOutcome::Created) => {
                        metrics::count(metrics::TASKS_CREATED, &self.inner.env, &generator.kind, 1);
                        self.inner.wake(&generator.kind);
                        self.report.spawned.push(id);
                        None
                    }
                    Some(CreateOutcome::AlreadyExists) => None,
                    None => Some("backend returned no create outcome".to_owned()),
                    Some(CreateOutcome::ExistsInOtherEnv { env }) => {
                        Some(format!("occurrence id {id} is taken in environment {env}"))
                    }
                    Some(CreateOutcome::Failed(e)) => Some(e.to_string()),
                },
                Err(e) => Some(e.to_string()),
            };
            if let Some(message) = failure {
                let error =
                    HandlerError::msg(format!("failed to create occurrence task: {message}"));
                let retry = FixedDelay {
                    max_attempts: 0,
                    delay: GENERATOR_RETRY,
                };
                return self
                    .record(
                        vec![generator],
                        HandlerPath::Main,
                        &Err(error),
                        Some(&retry),
                    )
                    .await;
            }
        }
        let id = generator.id.clone();
        let applied = apply_one(self.inner.store.as_ref(), generator, |t| {
            lifecycle::advance_generator(t, token, now)
                .map(|s| s.generator)
                .map_err(|e| match e {
                    GeneratorError::Rejected(r) => r,
                    _ => Rejection::NotApplicable,
                })
        })
        .await;
        let status = self.written(&id, applied, now);
        if let Some(status) = status {
            // Only a generator's end counts: advancing to its next slot is bookkeeping.
            metrics::outcome(&self.inner.env, &self.registration.kind, status, false);
        }
        self.note(id, HandlerPath::Main, None, status);
    }
}

/// Runs a handler future as the current task, turning a panic into the
/// error `panic: <message>`.
pub(crate) async fn run_captured(
    current: CurrentTask,
    work: impl std::future::Future<Output = HandlerResult> + Send,
) -> HandlerResult {
    let kind = current.kind.clone();
    match AssertUnwindSafe(context::scope(current, work))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(kind = %kind, panic = %message, "handler panicked");
            Err(HandlerError::msg(format!("panic: {message}")))
        }
    }
}

/// Delay used when a user retry policy panics: the failure is still
/// recorded and retried, instead of the worker loop dying with the task leased.
const PANICKED_POLICY_DELAY: Duration = Duration::from_secs(60);

/// A user retry policy run with panic capture.
#[derive(Debug)]
struct PanicSafe<'a>(&'a dyn RetryPolicy);

impl RetryPolicy for PanicSafe<'_> {
    fn should_retry(&self, attempts: u32, error: &HandlerError) -> bool {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.0.should_retry(attempts, error)))
            .unwrap_or_else(|panic| {
                tracing::error!(panic = %panic_message(panic.as_ref()), "retry policy panicked; retrying later");
                true
            })
    }

    fn next_retry_delay(&self, attempts: u32, error: &HandlerError) -> Duration {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.0.next_retry_delay(attempts, error)))
            .unwrap_or_else(|panic| {
                tracing::error!(panic = %panic_message(panic.as_ref()), "retry policy panicked; retrying later");
                PANICKED_POLICY_DELAY
            })
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

pub(crate) async fn shutdown(inner: &Arc<Inner>, grace: Duration) -> ShutdownReport {
    // Once: a second caller must not see an empty worker list and report
    // "drained" while the first one still waits for running handlers.
    inner
        .stopped
        .get_or_init(|| stop(inner, grace))
        .await
        .clone()
}

async fn stop(inner: &Arc<Inner>, grace: Duration) -> ShutdownReport {
    inner.shutdown.send_if_modified(|phase| {
        let running = *phase == ShutdownPhase::Running;
        if running {
            *phase = ShutdownPhase::Draining;
        }
        running
    });
    let handles =
        std::mem::take(&mut *inner.workers.lock().unwrap_or_else(PoisonError::into_inner));
    let aborts: Vec<_> = handles.iter().map(JoinHandle::abort_handle).collect();
    let mut all = futures::future::join_all(handles);
    let joined = match tokio::time::timeout(grace, &mut all).await {
        Ok(joined) => Some(joined),
        Err(_) => {
            inner.shutdown.send_replace(ShutdownPhase::Aborting);
            // Releasing leases needs the store; do not wait on it forever.
            let release_wait = grace.clamp(MIN_RELEASE_WAIT, RELEASE_WAIT);
            let joined = tokio::time::timeout(release_wait, &mut all).await.ok();
            if joined.is_none() {
                tracing::error!("workers did not stop after shutdown; aborting them");
                aborts.iter().for_each(|a| a.abort());
            }
            joined
        }
    };
    let drained = joined.is_some() && *inner.shutdown.borrow() == ShutdownPhase::Draining;
    for result in joined.into_iter().flatten() {
        if let Err(e) = result {
            tracing::error!(error = %e, "worker loop ended abnormally");
        }
    }
    let interrupted = std::mem::take(
        &mut *inner
            .interrupted
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    ShutdownReport {
        drained,
        interrupted,
    }
}

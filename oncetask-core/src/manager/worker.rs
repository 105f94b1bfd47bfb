//! Worker loops: claim, run the handler under guard (panic capture, time
//! limit, heartbeat, shutdown), and record the outcome through fenced swaps.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::error::{Error, HandlerError, StoreError};
use crate::lifecycle::{self, FailurePolicy, GeneratorError, HandlerPath, LeaseGrant, Rejection};
use crate::manager::apply::{Applied, Transition, apply_many, apply_one};
use crate::manager::context::{self, CurrentTask};
use crate::manager::handler::{HandlerResult, NoopCancellation, TaskHandler};
use crate::manager::{HandlerShape, Inner, Registration, ShutdownPhase};
use crate::metrics;
use crate::retry::{FixedDelay, NoRetry, RetryPolicy};
use crate::status::TaskStatus;
use crate::store::{Change, ClaimMode, ClaimRequest, CreateOutcome, Fetched, Undecodable};
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
    let wake = inner.wake_receiver(&registration.kind);
    let phase = inner.shutdown.subscribe();
    workers.push(tokio::spawn(dispatch_loop(
        Arc::downgrade(inner),
        registration,
        wake,
        phase,
    )));
}

/// The one claiming loop of a kind: it claims as many tasks as it has free
/// slots (up to the kind's concurrency) in one claim, runs each in a slot of
/// its own, and sleeps until the next due time, a wake-up, or the poll
/// interval when nothing is ready. A task is leased only when a slot is free
/// to run it at once (its lease clock runs from the claim); a wake-up wakes
/// this one loop, not one loop per slot. The loop holds only a weak
/// reference while idle, so dropping the last `Manager` stops it; on
/// shutdown it stops claiming and waits for its running tasks.
async fn dispatch_loop(
    manager: Weak<Inner>,
    registration: Arc<Registration>,
    mut wake: watch::Receiver<u64>,
    mut phase: watch::Receiver<ShutdownPhase>,
) {
    let slots = Arc::new(Semaphore::new(registration.options.concurrency));
    let mut running: JoinSet<()> = JoinSet::new();
    let mut failures: u32 = 0;
    // The last next-due answer, kept while nothing happened: after an idle
    // period that ended on the poll timer with no wake-up and no task of
    // this loop running, and a claim that found nothing, the answer cannot
    // have changed (another writer's change arrives as a wake-up through the
    // store's notifications), so the poll costs one claim, not a claim and a
    // next-due lookup (on Firestore: 1 read instead of 3). Without
    // notifications, a task scheduled meanwhile by another process is found
    // by the claim of the first poll after it is due.
    let mut quiet_due: Option<Option<DateTime<Utc>>> = None;
    loop {
        while let Some(ended) = running.try_join_next() {
            log_abnormal_end(ended);
        }
        if *phase.borrow() != ShutdownPhase::Running {
            break;
        }
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            changed = phase.changed() => if changed.is_err() { break } else { continue },
        };
        let mut permits = vec![first];
        let wanted = match registration.shape {
            // Every free slot: one claim fills them all.
            HandlerShape::Single(_) => 1 + slots.available_permits(),
            // A claim is one group, run in one slot.
            HandlerShape::Group(_) => 1,
        };
        while permits.len() < wanted {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
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
        let mode = match registration.shape {
            HandlerShape::Single(_) => ClaimMode::Single {
                limit: permits.len(),
            },
            HandlerShape::Group(_) => ClaimMode::ResourceGroup {
                max_group: registration.options.max_group_size,
            },
        };
        let attempt = AssertUnwindSafe(claim(&inner, &registration, mode)).catch_unwind();
        let outcome = attempt.await.unwrap_or_else(|panic| {
            Err(Error::Internal(format!(
                "claim panicked: {}",
                panic_message(panic.as_ref())
            )))
        });
        let known_due = quiet_due.take();
        let mut found_nothing = false;
        match outcome {
            Ok(Some(claim)) => {
                failures = 0;
                let parts = claim.split(&registration.shape);
                let filled = parts.len() >= permits.len();
                for part in parts {
                    // A backend returning more than asked still gets every
                    // task run; only the slot accounting is off for it.
                    let permit = permits.pop();
                    let inner = inner.clone();
                    let registration = registration.clone();
                    running.spawn(async move {
                        // The run gives the slot back when its last handler
                        // returns, before the outcome is written.
                        let run =
                            AssertUnwindSafe(run_claimed(&inner, &registration, part, permit));
                        if let Err(panic) = run.catch_unwind().await {
                            // A bug must not silently stop the kind: log it and
                            // carry on; the task stays leased until its lease expires.
                            tracing::error!(kind = %registration.kind,
                                panic = %panic_message(panic.as_ref()), "worker panicked");
                        }
                    });
                }
                if filled {
                    // Every slot asked for got work: look for more as soon
                    // as a slot frees up.
                    continue;
                }
            }
            Ok(None) => {
                failures = 0;
                found_nothing = true;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(kind = %registration.kind, error = %e, "claim failed");
                let backoff = Duration::from_millis(100)
                    .saturating_mul(2u32.saturating_pow(failures.min(16)))
                    .min(MAX_ERROR_BACKOFF)
                    .min(poll);
                drop(permits);
                let clock = inner.clock.clone();
                let until = add(inner.now(), backoff);
                drop(inner);
                if idle(&*clock, until, &mut wake, &mut phase).await.is_err() {
                    break;
                }
                continue;
            }
        }
        // Fewer tasks than free slots: nothing else is ready now.
        drop(permits);
        let horizon = add(inner.now(), poll);
        let quiet = found_nothing && running.is_empty();
        let due = match known_due.filter(|d| quiet && d.is_none_or(|t| t > checked_at)) {
            Some(known) => Ok(known),
            None => {
                inner
                    .store
                    .next_due(&inner.env, &registration.kind, checked_at)
                    .await
            }
        };
        let (idle_until, answer) = match due {
            Ok(Some(due)) => (due.min(horizon), Some(Some(due))),
            Ok(None) => (horizon, Some(None)),
            Err(e) => {
                tracing::warn!(kind = %registration.kind, error = %e, "next due time unavailable");
                (horizon, None)
            }
        };
        let clock = inner.clock.clone();
        drop(inner);
        // A slot freeing up ends the wait too: a claim that came back short
        // may have lost tasks to concurrent claimers (an optimistic backend
        // cannot tell that from "nothing else is ready"), and without this
        // the free slots would wait for a wake-up or the poll.
        let idled = tokio::select! {
            idled = idle(&*clock, idle_until, &mut wake, &mut phase) => idled,
            Some(ended) = running.join_next(), if !running.is_empty() => {
                log_abnormal_end(ended);
                Ok(Idled::Woken)
            }
        };
        match idled {
            Err(_) => break,
            // The poll timer ran out and nothing woke the loop: keep the answer.
            Ok(Idled::Timer) if idle_until == horizon && running.is_empty() => quiet_due = answer,
            Ok(_) => {}
        }
    }
    // Shutdown (or the manager is gone): the running tasks finish, or are
    // interrupted and release their leases, on their own.
    while let Some(ended) = running.join_next().await {
        log_abnormal_end(ended);
    }
}

/// Why [`idle`] returned.
enum Idled {
    /// `until` was reached.
    Timer,
    /// A wake-up or a shutdown phase change.
    Woken,
}

/// Sleeps until `until`, a wake-up or a shutdown phase change; `Err` when
/// the manager is gone.
async fn idle(
    clock: &dyn crate::clock::Clock,
    until: DateTime<Utc>,
    wake: &mut watch::Receiver<u64>,
    phase: &mut watch::Receiver<ShutdownPhase>,
) -> Result<Idled, watch::error::RecvError> {
    tokio::select! {
        _ = clock.sleep_until(until) => Ok(Idled::Timer),
        changed = wake.changed() => changed.map(|()| Idled::Woken),
        changed = phase.changed() => changed.map(|()| Idled::Woken),
    }
}

fn log_abnormal_end(ended: Result<(), tokio::task::JoinError>) {
    if let Err(e) = ended {
        tracing::error!(error = %e, "task execution ended abnormally");
    }
}

pub(crate) fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Tasks one claim leased, under one lease token.
struct Claim {
    token: LeaseToken,
    claimed_at: DateTime<Utc>,
    tasks: Vec<Task>,
    undecodable: Vec<Undecodable>,
}

impl Claim {
    /// The units that run in one slot each: every task of a single-task
    /// kind alone (they share the claim's lease token, which fences each
    /// task on its own), a resource-key group as a whole.
    fn split(self, shape: &HandlerShape) -> Vec<Claim> {
        match shape {
            HandlerShape::Group(_) => vec![self],
            HandlerShape::Single(_) => {
                let Claim {
                    token,
                    claimed_at,
                    tasks,
                    mut undecodable,
                } = self;
                tasks
                    .into_iter()
                    .map(|task| Claim {
                        token: token.clone(),
                        claimed_at,
                        tasks: vec![task],
                        undecodable: std::mem::take(&mut undecodable),
                    })
                    .collect()
            }
        }
    }
}

pub(crate) async fn process_next(
    inner: &Arc<Inner>,
    registration: &Arc<Registration>,
) -> Result<Option<RunReport>, Error> {
    let mode = match registration.shape {
        HandlerShape::Single(_) => ClaimMode::Single { limit: 1 },
        HandlerShape::Group(_) => ClaimMode::ResourceGroup {
            max_group: registration.options.max_group_size,
        },
    };
    match claim(inner, registration, mode).await? {
        Some(claim) => Ok(Some(run_claimed(inner, registration, claim, None).await)),
        None => Ok(None),
    }
}

/// Claims ready tasks of the registration's kind; `None` when none was ready.
async fn claim(
    inner: &Arc<Inner>,
    registration: &Registration,
    mode: ClaimMode,
) -> Result<Option<Claim>, Error> {
    let claimed_at = inner.now();
    let grant = LeaseGrant::new(claimed_at, registration.options.lease_duration);
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
    Ok(Some(Claim {
        token: request.grant.token,
        claimed_at,
        tasks: claimed.tasks,
        undecodable: claimed.undecodable,
    }))
}

/// Runs the handlers of a claim's tasks and stores their outcomes. The
/// worker slot (`slot`) is given back as soon as the last handler returns:
/// writing the outcome keeps no slot busy, so the dispatch loop claims the
/// next task while it is written (the task stays leased, its resource key
/// held, until then).
async fn run_claimed(
    inner: &Arc<Inner>,
    registration: &Arc<Registration>,
    claim: Claim,
    slot: Option<OwnedSemaphorePermit>,
) -> RunReport {
    let options = &registration.options;
    let token = claim.token;
    let mut run = Run {
        inner,
        registration,
        token: &token,
        claimed_at: claim.claimed_at,
        executions: 0,
        slot,
        report: RunReport {
            kind: registration.kind.clone(),
            claimed: claim.tasks.iter().map(|t| t.id.clone()).collect(),
            undecodable: claim.undecodable,
            ..RunReport::default()
        },
    };

    let (generators, rest): (Vec<Task>, Vec<Task>) =
        claim.tasks.into_iter().partition(Task::is_generator);
    for generator in generators {
        run.advance_generator(generator).await;
    }
    let (cancelled, normal): (Vec<Task>, Vec<Task>) =
        rest.into_iter().partition(|t| t.is_cancelled);
    let handlers = cancelled.len() + usize::from(!normal.is_empty());
    for (i, task) in cancelled.into_iter().enumerate() {
        let last = i + 1 == handlers;
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
        run.execute(
            vec![task],
            HandlerPath::Cancellation,
            current,
            last,
            async move { handler.handle(input).await },
        )
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
        run.execute(normal, HandlerPath::Main, current, true, work)
            .await;
    }
    run.report
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
    registration: &'a Arc<Registration>,
    token: &'a LeaseToken,
    claimed_at: DateTime<Utc>,
    /// Handler runs done so far for this claim (cancellation handlers run
    /// before the main handler, on the same lease).
    executions: usize,
    /// The worker slot this claim runs in, until its last handler returns.
    slot: Option<OwnedSemaphorePermit>,
    report: RunReport,
}

impl Run<'_> {
    /// Runs `work` for `held` and records the outcome on every task of `held`;
    /// `last`: the claim's last handler, whose return frees the slot.
    async fn execute(
        &mut self,
        mut held: Vec<Task>,
        path: HandlerPath,
        current: CurrentTask,
        last: bool,
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
        if last {
            self.slot = None;
        }
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
            Ended::Finished(result) => self.record(held, path, result, None).await,
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
        let results = apply_many(self.inner.store.as_ref(), held, Change::Heartbeat, |t| {
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
            let results = apply_many(
                self.inner.store.as_ref(),
                held.clone(),
                Change::Heartbeat,
                |t| lifecycle::extend_lease(t, token, now, until),
            )
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

    /// Stores the outcome of a run on each task, each task decided on its
    /// own (Go W11), in one swap with other runs' outcomes (group commit).
    async fn record(
        &mut self,
        held: Vec<Task>,
        path: HandlerPath,
        result: HandlerResult,
        retry_override: Option<Arc<dyn RetryPolicy>>,
    ) {
        let now = self.inner.now();
        let result = Arc::new(result);
        let ids: Vec<String> = held.iter().map(|t| t.id.clone()).collect();
        let span = tracing::debug_span!(
            "oncetask.outcome",
            env = %self.inner.env,
            kind = %self.registration.kind,
            tasks = ids.len(),
            path = ?path,
            ok = result.is_ok(),
        );
        let items = held
            .into_iter()
            .map(|task| {
                let transition = self.outcome(&result, path, now, retry_override.clone());
                (task, Change::Outcome, transition)
            })
            .collect();
        let mut results = self
            .inner
            .outcomes
            .apply(self.inner.store.as_ref(), items)
            .instrument(span)
            .await;
        let mut refused: Vec<Option<String>> = vec![None; results.len()];
        let what = if result.is_ok() { "result" } else { "error" };
        self.fail_refused_outcomes(
            &ids,
            &mut results,
            &mut refused,
            what,
            path,
            now,
            retry_override,
        )
        .await;
        let error = result
            .as_ref()
            .as_ref()
            .err()
            .map(|e| e.message().to_owned());
        for ((id, applied), refused) in ids.into_iter().zip(results).zip(refused) {
            let failed = result.is_err() || refused.is_some();
            let status = self.written(&id, applied, now);
            if let Some(status) = status {
                metrics::outcome(&self.inner.env, &self.registration.kind, status, failed);
            }
            self.note(id, path, refused.or_else(|| error.clone()), status);
        }
    }

    /// Fails the attempts whose outcome the store refused to hold (a result
    /// or an error message too large, or with a value the backend cannot
    /// store), recording `"<what> cannot be stored: <reason>"` instead: left
    /// alone, the task would stay leased, run again and be refused again,
    /// forever. Sets `refused[i]` to the error recorded for the i-th task.
    #[allow(clippy::too_many_arguments)] // one call site, all of it the run's own state
    async fn fail_refused_outcomes(
        &self,
        ids: &[String],
        results: &mut [Applied],
        refused: &mut [Option<String>],
        what: &str,
        path: HandlerPath,
        now: DateTime<Utc>,
        retry_override: Option<Arc<dyn RetryPolicy>>,
    ) {
        for ((id, applied), refused) in ids.iter().zip(results.iter_mut()).zip(refused) {
            let Applied::Failed(Error::Store(StoreError::Unencodable { reason, .. })) = applied
            else {
                continue;
            };
            let message = format!("{what} cannot be stored: {reason}");
            let held = match self.inner.store.get(std::slice::from_ref(id)).await {
                Ok(mut fetched) => match fetched.pop() {
                    Some(Fetched::Task(task)) => task,
                    _ => continue,
                },
                Err(e) => {
                    tracing::warn!(task_id = %id, error = %e, "re-reading a task whose result was refused failed");
                    continue;
                }
            };
            let failure: Arc<HandlerResult> = Arc::new(Err(HandlerError::msg(message.clone())));
            let transition = self.outcome(&failure, path, now, retry_override.clone());
            *applied =
                apply_one(self.inner.store.as_ref(), held, Change::Outcome, transition).await;
            *refused = Some(message);
        }
    }

    /// The transition storing `result` on a task: an owned closure, as
    /// another run's task may apply it in a batch of several runs.
    fn outcome(
        &self,
        result: &Arc<HandlerResult>,
        path: HandlerPath,
        now: DateTime<Utc>,
        retry_override: Option<Arc<dyn RetryPolicy>>,
    ) -> Transition {
        let result = result.clone();
        let registration = self.registration.clone();
        let token = self.token.clone();
        let error_history_limit = self.inner.config.error_history_limit;
        Box::new(move |task| match result.as_ref() {
            Ok(value) => lifecycle::succeed(task, &token, now, value.clone()),
            Err(e) => {
                let options = &registration.options;
                let retry = PanicSafe(retry_override.as_deref().unwrap_or(options.retry.as_ref()));
                let cancellation_retry = PanicSafe(options.cancellation_retry.as_ref());
                let policy = FailurePolicy {
                    retry: &retry,
                    cancellation_retry: &cancellation_retry,
                    error_history_limit,
                };
                lifecycle::fail(task, &token, now, e, path, policy)
            }
        })
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
        let results = apply_many(self.inner.store.as_ref(), held, Change::Release, |t| {
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
                        Err(error),
                        Some(Arc::new(NoRetry)),
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
                        Err(error),
                        Some(Arc::new(retry)),
                    )
                    .await;
            }
        }
        let id = generator.id.clone();
        let applied = apply_one(self.inner.store.as_ref(), generator, Change::Outcome, |t| {
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
/// error `panic: <message>`, and a result too deeply nested to be read back
/// into an error (stored, it would make the completed task unreadable).
pub(crate) async fn run_captured(
    current: CurrentTask,
    work: impl std::future::Future<Output = HandlerResult> + Send,
) -> HandlerResult {
    let kind = current.kind.clone();
    match AssertUnwindSafe(context::scope(current, work))
        .catch_unwind()
        .await
    {
        Ok(Ok(Some(value))) => match crate::create::value_too_deep(&value) {
            Some(depth) => Err(HandlerError::msg(format!(
                "result nested {depth} levels deep; at most {} can be read back",
                crate::create::MAX_DATA_DEPTH
            ))),
            None => Ok(Some(value)),
        },
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

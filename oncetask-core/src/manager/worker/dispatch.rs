//! The claiming loop of a kind: claims as slots free up and hands each
//! claimed unit to a slot.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::add;
use super::guard::panic_message;
use super::run::{RunReport, run_claimed};
use crate::error::Error;
use crate::lifecycle::LeaseGrant;
use crate::manager::{HandlerShape, Inner, Registration, ShutdownPhase};
use crate::metrics;
use crate::store::{ClaimMode, ClaimRequest, Undecodable};
use crate::task::{LeaseToken, Task};

/// Longest back-off of a loop whose claims keep failing (store unreachable).
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(30);

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

/// Tasks one claim leased, under one lease token.
pub(super) struct Claim {
    pub(super) token: LeaseToken,
    pub(super) claimed_at: DateTime<Utc>,
    pub(super) tasks: Vec<Task>,
    pub(super) undecodable: Vec<Undecodable>,
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

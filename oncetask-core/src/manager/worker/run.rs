//! One claim being processed: its handlers in order, each outcome recorded,
//! leases released when a run cannot finish.

use std::sync::{Arc, PoisonError};

use chrono::{DateTime, Utc};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::add;
use super::dispatch::Claim;
use crate::lifecycle::{self, HandlerPath, Rejection};
use crate::manager::apply::{Applied, apply_many};
use crate::manager::context::CurrentTask;
use crate::manager::erased::{Noop, Start, Started};
use crate::manager::handler::HandlerOutcome;
use crate::manager::{HandlerShape, Inner, Registration, ShutdownPhase};
use crate::metrics;
use crate::status::TaskStatus;
use crate::store::{Change, Undecodable};
use crate::task::{LeaseToken, Task};

/// What one [`crate::manager::Manager::process_next`] call did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunReport {
    /// The kind processed.
    pub kind: String,
    /// Ids leased by the claim, in claim order.
    pub claimed: Vec<String>,
    /// Occurrence ids created by generators of the claim.
    pub spawned: Vec<String>,
    /// One entry per task that went through a handler (or generator bookkeeping).
    pub outcomes: Vec<RunOutcome>,
    /// Documents the claim skipped because they cannot be decoded, the
    /// first time this manager met each (they are met on every claim).
    pub undecodable: Vec<Undecodable>,
}

/// How one task of a run ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunOutcome {
    /// Task id.
    pub task_id: String,
    /// Which path ran: generator bookkeeping counts as [`HandlerPath::Main`].
    pub path: HandlerPath,
    /// The handler's error message, if it failed.
    pub error: Option<String>,
    /// The task's status once the outcome was stored, or why it was not.
    pub status: Result<TaskStatus, NotStored>,
}

/// Why a run's outcome was not stored ([`RunOutcome::status`]).
///
/// ```
/// use oncetask_core::manager::NotStored;
/// let why = NotStored::LeaseLost;
/// assert_eq!(why.to_string(), "the lease was lost: another worker holds the task");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotStored {
    /// The run's lease is gone (it expired and another worker claimed the
    /// task, or finished it): the write was fenced off, and the newer
    /// holder's state stands.
    #[error("the lease was lost: another worker holds the task")]
    LeaseLost,
    /// The write does not apply to the task as stored, and nothing was
    /// written instead (a store that refused a value with no fallback, a
    /// generator whose rule failed on a re-read).
    #[error("the task no longer takes this outcome")]
    NotApplicable,
    /// The task was deleted while it ran.
    #[error("the task was deleted")]
    Deleted,
    /// The store failed to write it; the task runs again when its lease
    /// expires.
    #[error("storage failed: {0}")]
    StorageFailed(String),
    /// No outcome was recorded and the lease was given back, so the task is
    /// ready again: the manager shut down, or the lease could not be
    /// extended. (A hand-back that could not be written is reported as
    /// what stopped it, e.g. [`NotStored::StorageFailed`]: that task stays
    /// leased until its lease expires.)
    #[error("released: {0}")]
    Released(String),
}

/// Runs the handlers of a claim's tasks and stores their outcomes. The
/// worker slot (`slot`) is given back as soon as the last handler returns:
/// writing the outcome keeps no slot busy, so the dispatch loop claims the
/// next task while it is written (the task stays leased, its resource key
/// held, until then).
pub(super) async fn run_claimed(
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
        lease_fresh: !claim.waited,
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
    let cancellation: &dyn Start = match &options.cancellation_handler {
        Some(handler) => handler.as_ref(),
        None => &Noop,
    };
    for (i, task) in cancelled.into_iter().enumerate() {
        let last = i + 1 == handlers;
        let current = CurrentTask {
            task_id: Some(task.id.clone()),
            resource_key: task.resource_key.clone(),
            kind: registration.kind.clone(),
        };
        run.execute(
            vec![task],
            HandlerPath::Cancellation,
            current,
            last,
            cancellation,
        )
        .await;
    }
    if !normal.is_empty() {
        let current = CurrentTask {
            task_id: (normal.len() == 1).then(|| normal[0].id.clone()),
            resource_key: normal[0].resource_key.clone(),
            kind: registration.kind.clone(),
        };
        let handler: &dyn Start = match &registration.shape {
            HandlerShape::Single(handler) | HandlerShape::Group(handler) => handler.as_ref(),
        };
        run.execute(normal, HandlerPath::Main, current, true, handler)
            .await;
    }
    run.report
}

/// Whether tasks given back never started (their attempt is taken back).
#[derive(Clone, Copy)]
enum Unstarted {
    Yes,
    No,
}

/// How a guarded handler run ended.
pub(super) enum Ended {
    Finished(HandlerOutcome),
    /// Shutdown grace period over: leases must be released.
    Interrupted,
    /// A heartbeat found the lease taken over: nothing may be written.
    LeaseLost,
}

/// The state of one claim being processed.
pub(super) struct Run<'a> {
    pub(super) inner: &'a Arc<Inner>,
    pub(super) registration: &'a Arc<Registration>,
    pub(super) token: &'a LeaseToken,
    pub(super) claimed_at: DateTime<Utc>,
    /// Whether the lease is as granted by the claim, unused: false once a
    /// handler ran (cancellation handlers run before the main handler, on
    /// the same lease) or the claim waited for a slot.
    pub(super) lease_fresh: bool,
    /// The worker slot this claim runs in, until its last handler returns.
    pub(super) slot: Option<OwnedSemaphorePermit>,
    pub(super) report: RunReport,
}

impl Run<'_> {
    /// Runs `handler` on `held` and records the outcome on every task of
    /// `held`; `last`: the claim's last handler, whose return frees the slot.
    pub(super) async fn execute(
        &mut self,
        mut held: Vec<Task>,
        path: HandlerPath,
        current: CurrentTask,
        last: bool,
        handler: &dyn Start,
    ) {
        let mut anchor = self.claimed_at;
        if !self.lease_fresh {
            // An earlier handler of this claim, or the wait for a slot, used
            // part of the lease (Go W12): renew it, so this handler gets a
            // whole lease and time limit.
            anchor = self.inner.now();
            held = self.renew(held, anchor, path).await;
            if held.is_empty() {
                return;
            }
        }
        self.lease_fresh = false;
        if path == HandlerPath::Main {
            // Cancelled since the claim (seen by the renewal or a re-read
            // while it waited for a slot): its main handler never starts.
            let (cancelled, live): (Vec<Task>, Vec<Task>) =
                held.into_iter().partition(|t| t.is_cancelled);
            held = live;
            if !cancelled.is_empty() {
                // Handed back unrun, the attempt taken back: the next
                // claim runs its cancellation path.
                let why = "cancelled before its handler started";
                self.give_back(cancelled, path, Unstarted::Yes, why).await;
            }
            if held.is_empty() {
                if last {
                    self.slot = None;
                }
                return;
            }
        }
        // The registry entry lives as long as the run; a cancellation
        // handler cannot be cancelled.
        let inner = self.inner;
        let (_running, signals) = match path {
            HandlerPath::Main => {
                let (entered, signals) = inner.running.enter(&held, self.token);
                (Some(entered), signals)
            }
            HandlerPath::Cancellation => (None, Vec::new()),
        };
        // Started on the tasks as held now: after a renewal, the handler
        // sees its new lease and none of the tasks the renewal lost.
        let Started { work, rejected } = handler.start(&held, &signals);
        // Tasks whose payload does not decode fail on their own (rejected
        // indexes ascend, so removing from the back keeps the rest valid).
        let mut refused = Vec::with_capacity(rejected.len());
        for (i, error) in rejected.into_iter().rev() {
            if i < held.len() {
                refused.push((held.remove(i), error));
            }
        }
        for (task, error) in refused.into_iter().rev() {
            self.record(vec![task], path, HandlerOutcome::Failed(error), None)
                .await;
        }
        let Some(work) = work else {
            if last {
                self.slot = None;
            }
            return;
        };
        let mut lost = Vec::new();
        let ended = self
            .guard(&mut held, &mut lost, anchor, current, work)
            .await;
        if last {
            self.slot = None;
        }
        let fenced = lost
            .iter()
            .filter(|(_, why)| *why == NotStored::LeaseLost)
            .count();
        metrics::count(
            metrics::TASKS_FENCED_OFF,
            &self.inner.env,
            &self.registration.kind,
            fenced,
        );
        for (id, why) in lost {
            tracing::warn!(task_id = %id, reason = %why, "task lost while running; outcome discarded");
            self.note(id, path, Some(why.to_string()), Err(why));
        }
        match ended {
            Ended::Finished(result) => self.record(held, path, result, None).await,
            Ended::Interrupted => {
                let why = "interrupted by shutdown";
                self.give_back(held, path, Unstarted::No, why).await
            }
            Ended::LeaseLost => {
                self.give_back(held, path, Unstarted::No, "lease could not be extended")
                    .await
            }
        }
    }

    /// Extends the leases of `held` from `now`; tasks whose lease was lost are
    /// noted and dropped.
    async fn renew(&mut self, held: Vec<Task>, now: DateTime<Utc>, path: HandlerPath) -> Vec<Task> {
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
                    // A heartbeat that was not written: the run cannot start.
                    let why = self.written(&id, other, now).err();
                    let why = why.unwrap_or(NotStored::LeaseLost);
                    self.note(id, path, Some(why.to_string()), Err(why));
                }
            }
        }
        kept
    }

    /// The span of one write of a run's tasks (an outcome or a release):
    /// its `ok` or `released` field is recorded by the caller.
    pub(super) fn outcome_span(&self, tasks: usize, path: HandlerPath) -> tracing::Span {
        tracing::debug_span!(
            "oncetask.outcome",
            env = %self.inner.env,
            kind = %self.registration.kind,
            tasks,
            path = ?path,
            ok = tracing::field::Empty,
            released = tracing::field::Empty,
        )
    }

    /// Gives the leases of `held` back without an outcome (shutdown, a
    /// lease that could not be kept, or a task cancelled before its handler
    /// started, which also takes the claim's attempt back): the tasks are
    /// ready again at once.
    async fn give_back(
        &mut self,
        held: Vec<Task>,
        path: HandlerPath,
        unstarted: Unstarted,
        why: &str,
    ) {
        let now = self.inner.now();
        let token = self.token;
        let ids: Vec<String> = held.iter().map(|t| t.id.clone()).collect();
        let span = self.outcome_span(ids.len(), path);
        span.record("released", why);
        let results =
            apply_many(
                self.inner.store.as_ref(),
                held,
                Change::Release,
                |t| match unstarted {
                    Unstarted::Yes => lifecycle::unclaim(t, token),
                    Unstarted::No => lifecycle::release(t, token),
                },
            )
            .instrument(span)
            .await;
        for (id, applied) in ids.into_iter().zip(results) {
            let reason = match self.written(&id, applied, now) {
                Ok(_) => NotStored::Released(why.to_owned()),
                // Not given back (taken over, deleted, or the write failed
                // and the task stays leased until its lease expires).
                Err(not_released) => not_released,
            };
            if *self.inner.shutdown.borrow() == ShutdownPhase::Aborting {
                self.inner
                    .interrupted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(id.clone());
            }
            self.note(id, path, Some(why.to_owned()), Err(reason));
        }
    }

    /// Logs a write's result, wakes the kind's loops when the write made work
    /// for them, and returns the stored status.
    pub(super) fn written(
        &self,
        id: &str,
        applied: Applied,
        now: DateTime<Utc>,
    ) -> Result<TaskStatus, NotStored> {
        match applied {
            Applied::Written(task) | Applied::WrittenInstead { task, .. } => {
                // Other idle loops only have new work if a resource key was
                // freed or the task is ready again at once (this loop looks
                // for work next anyway): no claim storm after every success.
                if task.resource_key.is_some() || task.is_ready_at(now) {
                    self.inner.wake(&task.kind);
                }
                Ok(task.status(now))
            }
            Applied::Rejected(Rejection::LeaseLost) => {
                metrics::count(
                    metrics::TASKS_FENCED_OFF,
                    &self.inner.env,
                    &self.registration.kind,
                    1,
                );
                tracing::warn!(task_id = %id, "lease lost before the outcome was stored; outcome discarded");
                Err(NotStored::LeaseLost)
            }
            Applied::Rejected(Rejection::NotApplicable) => Err(NotStored::NotApplicable),
            Applied::Missing => {
                tracing::info!(task_id = %id, "task deleted while running; outcome discarded");
                Err(NotStored::Deleted)
            }
            Applied::Failed(e) => {
                tracing::error!(task_id = %id, error = %e, "failed to store task outcome");
                Err(NotStored::StorageFailed(e.to_string()))
            }
        }
    }

    pub(super) fn note(
        &mut self,
        task_id: String,
        path: HandlerPath,
        error: Option<String>,
        status: Result<TaskStatus, NotStored>,
    ) {
        self.report.outcomes.push(RunOutcome {
            task_id,
            path,
            error,
            status,
        });
    }
}

//! A handler run under guard: panic capture, time limit, heartbeat and
//! shutdown abort.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::FutureExt;

use super::add;
use super::run::{Ended, NotStored, Run};
use crate::error::HandlerError;
use crate::lifecycle;
use crate::manager::ShutdownPhase;
use crate::manager::apply::{Applied, apply_many};
use crate::manager::context::{self, CurrentTask};
use crate::manager::handler::HandlerOutcome;
use crate::metrics;
use crate::retry::RetryPolicy;
use crate::store::Change;
use crate::task::Task;

impl Run<'_> {
    /// Runs the handler future with panic capture, the time limit, the
    /// heartbeat and the shutdown abort, whichever ends first. A finished
    /// handler wins a tie, so its outcome is never thrown away.
    pub(super) async fn guard(
        &self,
        held: &mut Vec<Task>,
        lost: &mut Vec<(String, NotStored)>,
        anchor: DateTime<Utc>,
        current: CurrentTask,
        work: impl std::future::Future<Output = HandlerOutcome> + Send,
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
            let took = started.elapsed();
            self.registration.pace.record(took);
            metrics::handler_duration(&self.inner.env, &self.registration.kind, took.as_secs_f64());
        });
        tokio::select! {
            biased;
            result = timed => Ended::Finished(result),
            _ = timeout => Ended::Finished(HandlerOutcome::Failed(HandlerError::msg(format!(
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
    async fn heartbeat(
        &self,
        held: &mut Vec<Task>,
        lost: &mut Vec<(String, NotStored)>,
        anchor: DateTime<Utc>,
    ) {
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
                    Applied::Written(extended) | Applied::WrittenInstead { task: extended, .. } => {
                        // Decided on the task as stored: a cancel made
                        // elsewhere shows here at the latest.
                        self.inner.running.observe(&extended);
                        kept.push(extended)
                    }
                    Applied::Missing => lost.push((task.id, NotStored::Deleted)),
                    Applied::Rejected(_) => lost.push((task.id, NotStored::LeaseLost)),
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
}

/// Runs a handler future as the current task, turning a panic into the
/// error `panic: <message>`, and a result too deeply nested to be read back
/// into an error (stored, it would make the completed task unreadable).
pub(crate) async fn run_captured(
    current: CurrentTask,
    work: impl std::future::Future<Output = HandlerOutcome> + Send,
) -> HandlerOutcome {
    let kind = current.kind.clone();
    match AssertUnwindSafe(context::scope(current, work))
        .catch_unwind()
        .await
    {
        Ok(HandlerOutcome::Completed(Some(value))) => match crate::create::value_too_deep(&value) {
            Some(depth) => HandlerOutcome::Failed(HandlerError::msg(format!(
                "result nested {depth} levels deep; at most {} can be read back",
                crate::create::MAX_DATA_DEPTH
            ))),
            None => HandlerOutcome::Completed(Some(value)),
        },
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(kind = %kind, panic = %message, "handler panicked");
            HandlerOutcome::Failed(HandlerError::msg(format!("panic: {message}")))
        }
    }
}

/// Delay used when a user retry policy panics: the failure is still
/// recorded and retried, instead of the worker loop dying with the task leased.
const PANICKED_POLICY_DELAY: Duration = Duration::from_secs(60);

/// A user retry policy run with panic capture.
#[derive(Debug)]
pub(super) struct PanicSafe<'a>(pub(super) &'a dyn RetryPolicy);

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

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

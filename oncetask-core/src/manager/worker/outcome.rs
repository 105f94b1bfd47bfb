//! Recording a finished run's outcome: decided by [`lifecycle::record`]
//! (with its fallback for an outcome the store refuses), written through the
//! manager's group commit.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::Instrument;

use super::guard::PanicSafe;
use super::run::Run;
use crate::lifecycle::{self, FailurePolicy, Finished, HandlerPath, Rejection, RunResult};
use crate::manager::Registration;
use crate::manager::apply::{Applied, Transition};
use crate::manager::handler::HandlerOutcome;
use crate::metrics;
use crate::retry::RetryPolicy;
use crate::store::Change;
use crate::task::{LeaseToken, Task};

/// The outcome of a finished run on one task, with the kind's retry
/// policies: owned, as the batch that writes it may be another run's.
pub(super) struct RecordOutcome {
    result: Arc<RunResult>,
    token: LeaseToken,
    now: DateTime<Utc>,
    path: HandlerPath,
    registration: Arc<Registration>,
    /// Replaces the kind's retry policy (generator bookkeeping failures).
    retry_override: Option<Arc<dyn RetryPolicy>>,
    error_history_limit: usize,
}

impl RecordOutcome {
    /// Writes the outcome onto `task` (unchanged on `Err`).
    fn decide(&self, task: &mut Task, refused: Option<&str>) -> Result<(), Rejection> {
        let options = &self.registration.options;
        let retry = PanicSafe(
            self.retry_override
                .as_deref()
                .unwrap_or(options.retry.as_ref()),
        );
        let cancellation_retry = PanicSafe(options.cancellation_retry.as_ref());
        let policy = FailurePolicy {
            retry: &retry,
            cancellation_retry: &cancellation_retry,
            error_history_limit: self.error_history_limit,
        };
        let run = Finished {
            token: &self.token,
            now: self.now,
            path: self.path,
            result: &self.result,
        };
        lifecycle::record_in_place(task, &run, policy, refused)
    }
}

impl RecordOutcome {
    /// [`RecordOutcome::decide`] onto a copy of `stored`.
    fn decided(&self, stored: &Task, refused: Option<&str>) -> Result<Task, Rejection> {
        let mut next = stored.clone();
        self.decide(&mut next, refused).map(|()| next)
    }
}

impl Transition for RecordOutcome {
    fn apply(&self, stored: &Task) -> Result<Task, Rejection> {
        self.decided(stored, None)
    }

    fn apply_in_place(&self, task: &mut Task) -> Option<Result<(), Rejection>> {
        Some(self.decide(task, None))
    }

    fn if_refused(&self, stored: &Task, reason: &str) -> Option<Result<Task, Rejection>> {
        Some(self.decided(stored, Some(reason)))
    }

    fn falls_back(&self) -> bool {
        // A snooze stores no value a store could refuse, and its fallback
        // (a failure) would write fields a snooze does not own.
        !matches!(*self.result, RunResult::Snoozed(_))
    }
}

impl Run<'_> {
    /// Stores the outcome of a run on each task, each task decided on its
    /// own (Go W11), in one swap with other runs' outcomes (group commit).
    pub(super) async fn record(
        &mut self,
        held: Vec<Task>,
        path: HandlerPath,
        outcome: HandlerOutcome,
        retry_override: Option<Arc<dyn RetryPolicy>>,
    ) {
        let now = self.inner.now();
        let result = Arc::new(outcome.into_run(now));
        // A snooze writes the attempt counters an outcome does not own.
        let change = match *result {
            RunResult::Snoozed(_) => Change::Snooze,
            _ => Change::Outcome,
        };
        let ids: Vec<String> = held.iter().map(|t| t.id.clone()).collect();
        let span = self.outcome_span(ids.len(), path);
        span.record("ok", !matches!(*result, RunResult::Failed(_)));
        let items = held
            .into_iter()
            .map(|task| {
                let transition: Box<dyn Transition> = Box::new(RecordOutcome {
                    result: result.clone(),
                    token: self.token.clone(),
                    now,
                    path,
                    registration: self.registration.clone(),
                    retry_override: retry_override.clone(),
                    error_history_limit: self.inner.config.error_history_limit,
                });
                (task, change, transition)
            })
            .collect();
        let results = self
            .inner
            .outcomes
            .apply(self.inner.store.as_ref(), items)
            .instrument(span)
            .await;
        let error = match result.as_ref() {
            RunResult::Failed(e) => Some(e.message().to_owned()),
            _ => None,
        };
        for (id, applied) in ids.into_iter().zip(results) {
            let (applied, error) = match applied {
                Applied::WrittenInstead { task, reason } => {
                    let refused = lifecycle::refused_error(&result, &reason);
                    (Applied::Written(task), Some(refused.message().to_owned()))
                }
                other => (other, error.clone()),
            };
            let status = self.written(&id, applied, now);
            if let Ok(status) = status {
                metrics::outcome(
                    &self.inner.env,
                    &self.registration.kind,
                    status,
                    error.is_some(),
                );
            }
            self.note(id, path, error, status);
        }
    }
}

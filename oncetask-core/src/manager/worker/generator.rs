//! Generator bookkeeping: spawn the occurrence, advance to the next slot.

use std::sync::Arc;
use std::time::Duration;

use super::run::{NotStored, Run};
use crate::error::HandlerError;
use crate::lifecycle::{self, GeneratorError, HandlerPath, Rejection};
use crate::manager::HandlerOutcome;
use crate::manager::apply::apply_one;
use crate::metrics;
use crate::retry::{FixedDelay, NoRetry};
use crate::store::{Change, CreateOutcome};
use crate::task::Task;

/// Retry delay after a generator's bookkeeping failed (e.g. the occurrence
/// could not be stored). The failure is recorded on the generator (Go W27).
const GENERATOR_RETRY: Duration = Duration::from_secs(60);

impl Run<'_> {
    /// Spawns the generator's occurrence and moves it to its next slot.
    /// Bookkeeping errors are recorded on the generator, not only logged (Go W27).
    pub(super) async fn advance_generator(&mut self, generator: Task) {
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
                        HandlerOutcome::Failed(error),
                        Some(Arc::new(NoRetry)),
                    )
                    .await;
            }
            Err(e) => {
                tracing::warn!(task_id = %generator.id, error = %e, "generator not advanced");
                let why = match &e {
                    GeneratorError::Rejected(Rejection::LeaseLost) => NotStored::LeaseLost,
                    _ => NotStored::NotApplicable,
                };
                self.note(
                    generator.id,
                    HandlerPath::Main,
                    Some(e.to_string()),
                    Err(why),
                );
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
                        HandlerOutcome::Failed(error),
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
        if let Ok(status) = status {
            // Only a generator's end counts: advancing to its next slot is bookkeeping.
            metrics::outcome(&self.inner.env, &self.registration.kind, status, false);
        }
        self.note(id, HandlerPath::Main, None, status);
    }
}

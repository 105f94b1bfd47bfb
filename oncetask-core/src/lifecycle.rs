//! The lease/retry state machine as pure functions.
//!
//! Each function takes a task *as stored* and returns the task as it must be
//! stored next (with `version + 1`), or says why the event does not apply.
//! Backends never decide anything: they apply [`claim`] inside their atomic
//! claim and write other results with a version-checked swap.
//!
//! | Event | Applies to | Result |
//! |---|---|---|
//! | [`claim`] | ready task | lease + token, `attempts + 1` |
//! | [`succeed`] | task leased with this token | done, outcome completed (or cancelled) |
//! | [`fail`] | task leased with this token | backoff, or done with outcome failed / cancelled |
//! | [`release`] | task leased with this token | lease dropped, ready at once (shutdown) |
//! | [`extend_lease`] | task leased with this token | later `leased_until` |
//! | [`cancel`] | not done, not cancelled | cancellation pending, ready at once |
//! | [`reset`] | done | pending, history cleared |
//! | [`advance_generator`] | generator leased with this token | occurrence + next slot, or done |

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use crate::error::HandlerError;
use crate::recurrence::RecurrenceError;
use crate::retry::RetryPolicy;
use crate::task::{AttemptError, LeaseToken, Outcome, Task, format_timestamp};

/// The lease a claim hands out: one fresh token for every task of the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    /// Fresh token of this claim.
    pub token: LeaseToken,
    /// Lease expiry.
    pub leased_until: DateTime<Utc>,
}

impl LeaseGrant {
    /// A new grant with a fresh token, expiring `lease` after `now`.
    pub fn new(now: DateTime<Utc>, lease: std::time::Duration) -> Self {
        let lease = TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX);
        Self {
            token: LeaseToken::generate(),
            leased_until: now
                .checked_add_signed(lease)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }
}

/// Why an outcome was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The task is no longer leased with the caller's token: another worker
    /// re-claimed it after the lease expired, or it was reset (Go W1).
    #[error("lease token no longer matches: the lease was lost")]
    LeaseLost,
    /// The event does not apply to the task's current state (e.g. reset of a
    /// pending task, cancel of a done task); applying it is a no-op.
    #[error("event does not apply to the task's current state")]
    NotApplicable,
}

/// Which handler produced an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerPath {
    /// The kind's main handler.
    Main,
    /// The cancellation handler (or the built-in no-op).
    Cancellation,
}

/// The policies that turn a failure into a retry or a permanent failure.
#[derive(Debug, Clone, Copy)]
pub struct FailurePolicy<'a> {
    /// Policy for the main handler.
    pub retry: &'a dyn RetryPolicy,
    /// Policy for the cancellation handler.
    pub cancellation_retry: &'a dyn RetryPolicy,
    /// Most recent errors kept in the history (Go kept all, W24).
    pub error_history_limit: usize,
}

fn next_version(task: &Task) -> Task {
    let mut next = task.clone();
    next.version = task.version.wrapping_add(1);
    next
}

fn check_lease(task: &Task, token: &LeaseToken) -> Result<(), Rejection> {
    if task.is_done() || task.lease_token.as_ref() != Some(token) {
        return Err(Rejection::LeaseLost);
    }
    Ok(())
}

/// Leases a ready task: `leased_until`, a fresh token, `attempts + 1`
/// (and `cancellation_attempts + 1` when it is cancelled).
///
/// Backends call this inside their atomic claim on each task they select;
/// they must select only tasks for which [`Task::is_ready_at`] holds.
pub fn claim(task: &Task, grant: &LeaseGrant) -> Task {
    let mut next = next_version(task);
    next.leased_until = Some(grant.leased_until);
    next.lease_token = Some(grant.token.clone());
    next.attempts = task.attempts.saturating_add(1);
    if task.is_cancelled {
        next.cancellation_attempts = task.cancellation_attempts.saturating_add(1);
    }
    next
}

fn finish(next: &mut Task, now: DateTime<Utc>, outcome: Outcome) {
    next.done_at = Some(now);
    next.leased_until = None;
    next.lease_token = None;
    next.outcome = Some(if next.is_cancelled {
        Outcome::Cancelled
    } else {
        outcome
    });
}

/// Records a successful run. A task cancelled while its main handler ran
/// ends as cancelled, keeping the result (behavior.md §8.6).
pub fn succeed(
    stored: &Task,
    token: &LeaseToken,
    now: DateTime<Utc>,
    result: Option<Value>,
) -> Result<Task, Rejection> {
    check_lease(stored, token)?;
    let mut next = next_version(stored);
    next.result = result;
    finish(&mut next, now, Outcome::Completed);
    Ok(next)
}

/// Records a failed run and applies the retry policy.
///
/// * main-handler failure on a live task: `policy.retry` with `attempts`;
/// * cancellation-handler failure: `policy.cancellation_retry` with
///   `cancellation_attempts` (its own counter, W23);
/// * main-handler failure on a task cancelled meanwhile: no policy; the
///   cancellation path is due at once.
pub fn fail(
    stored: &Task,
    token: &LeaseToken,
    now: DateTime<Utc>,
    error: &HandlerError,
    path: HandlerPath,
    policy: FailurePolicy<'_>,
) -> Result<Task, Rejection> {
    check_lease(stored, token)?;
    let mut next = next_version(stored);
    next.errors.push(AttemptError {
        at: now,
        error: error.message().to_owned(),
    });
    let overflow = next
        .errors
        .len()
        .saturating_sub(policy.error_history_limit.max(1));
    next.errors.drain(..overflow);
    next.leased_until = None;
    next.lease_token = None;

    let retry_after = match (path, stored.is_cancelled) {
        (HandlerPath::Main, true) => Some(None),
        (HandlerPath::Main, false) => decide(policy.retry, stored.attempts, error),
        (HandlerPath::Cancellation, _) => decide(
            policy.cancellation_retry,
            stored.cancellation_attempts.max(1),
            error,
        ),
    };
    match retry_after {
        Some(delay) => {
            next.wait_until = delay.map(|d| now.checked_add_signed(d).unwrap_or(now));
        }
        None => finish(&mut next, now, Outcome::Failed),
    }
    Ok(next)
}

/// `None`: give up. `Some(None)`: retry at once. `Some(Some(d))`: retry after `d`.
fn decide(
    policy: &dyn RetryPolicy,
    attempts: u32,
    error: &HandlerError,
) -> Option<Option<TimeDelta>> {
    if !policy.should_retry(attempts, error) {
        return None;
    }
    let delay = policy.next_retry_delay(attempts, error);
    Some(Some(TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX)))
}

/// Gives a lease back without an outcome (graceful shutdown past its deadline):
/// the task is ready again at once, with no error recorded.
pub fn release(stored: &Task, token: &LeaseToken) -> Result<Task, Rejection> {
    check_lease(stored, token)?;
    let mut next = next_version(stored);
    next.leased_until = None;
    next.lease_token = None;
    Ok(next)
}

/// Extends a live lease (heartbeat). Fails if the lease was lost.
pub fn extend_lease(
    stored: &Task,
    token: &LeaseToken,
    leased_until: DateTime<Utc>,
) -> Result<Task, Rejection> {
    check_lease(stored, token)?;
    let mut next = next_version(stored);
    next.leased_until = Some(leased_until.max(stored.leased_until.unwrap_or(leased_until)));
    Ok(next)
}

/// Marks a task cancelled and due at once. The lease, if any, is kept: a
/// running handler finishes, then the cancellation path runs.
pub fn cancel(stored: &Task, now: DateTime<Utc>) -> Result<Task, Rejection> {
    if stored.is_done() || stored.is_cancelled {
        return Err(Rejection::NotApplicable);
    }
    let mut next = next_version(stored);
    next.is_cancelled = true;
    next.cancelled_at = Some(now);
    next.wait_until = None;
    Ok(next)
}

/// Puts a terminal task back to pending with its execution history cleared.
/// A reset generator resumes from the first slot after the reset (W26).
pub fn reset(stored: &Task) -> Result<Task, Rejection> {
    if !stored.is_done() {
        return Err(Rejection::NotApplicable);
    }
    let mut next = next_version(stored);
    next.attempts = 0;
    next.cancellation_attempts = 0;
    next.errors.clear();
    next.done_at = None;
    next.leased_until = None;
    next.lease_token = None;
    next.wait_until = None;
    next.is_cancelled = false;
    next.cancelled_at = None;
    next.result = None;
    next.outcome = None;
    Ok(next)
}

/// What processing a claimed generator produces.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorStep {
    /// The occurrence for the slot the generator was waiting for, if any.
    pub occurrence: Option<Task>,
    /// The generator rescheduled to its next slot, or done.
    pub generator: Task,
}

/// Why a generator cannot advance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeneratorError {
    /// See [`Rejection`].
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The task has no recurrence.
    #[error("task is not a recurrence generator")]
    NotAGenerator,
    /// The stored recurrence is invalid.
    #[error(transparent)]
    Recurrence(#[from] RecurrenceError),
}

/// The id of the occurrence a generator spawns for `slot`: `<generator>_occ_<slot>`.
pub fn occurrence_id(generator_id: &str, slot: DateTime<Utc>) -> String {
    format!("{generator_id}_occ_{}", format_timestamp(slot))
}

/// Spawns the occurrence for the generator's current slot and moves it to
/// the first slot after `max(slot, now)`; missed slots are skipped (no backfill).
///
/// A cancelled generator is finished instead, spawning nothing. A generator
/// with no slot (just reset) resumes at the first slot at or after `now`
/// without a bogus occurrence (Go W26).
pub fn advance_generator(
    stored: &Task,
    token: &LeaseToken,
    now: DateTime<Utc>,
) -> Result<GeneratorStep, GeneratorError> {
    check_lease(stored, token)?;
    let recurrence = stored
        .recurrence
        .as_ref()
        .ok_or(GeneratorError::NotAGenerator)?;
    let mut generator = next_version(stored);
    generator.leased_until = None;
    generator.lease_token = None;
    if stored.is_cancelled {
        finish(&mut generator, now, Outcome::Cancelled);
        return Ok(GeneratorStep {
            occurrence: None,
            generator,
        });
    }
    let schedule = recurrence.schedule()?;
    let (occurrence, next) = match stored.wait_until {
        Some(slot) => (
            Some(occurrence_of(stored, slot, now)),
            schedule.next_after(slot.max(now)),
        ),
        None => (None, schedule.next_after(now - TimeDelta::milliseconds(1))),
    };
    match next {
        Some(next) => generator.wait_until = Some(next),
        None => finish(&mut generator, now, Outcome::Completed),
    }
    Ok(GeneratorStep {
        occurrence,
        generator,
    })
}

fn occurrence_of(generator: &Task, slot: DateTime<Utc>, now: DateTime<Utc>) -> Task {
    Task {
        id: occurrence_id(&generator.id, slot),
        kind: generator.kind.clone(),
        data: generator.data.clone(),
        resource_key: generator.resource_key.clone(),
        env: generator.env.clone(),
        wait_until: Some(slot),
        leased_until: None,
        created_at: now,
        done_at: None,
        attempts: 0,
        cancellation_attempts: 0,
        errors: Vec::new(),
        result: None,
        recurrence: None,
        parent_recurrence_id: Some(generator.id.clone()),
        occurrence_timestamp: Some(slot),
        is_cancelled: false,
        cancelled_at: None,
        lease_token: None,
        version: 0,
        outcome: None,
    }
}

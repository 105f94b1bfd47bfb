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
//! | [`record`] | task leased with this token | [`succeed`], [`fail`] or [`snooze`] for a finished run, or its fallback |
//! | [`snooze`] | task leased with this token | lease dropped, ready at the given time, the attempt not counted |
//! | [`release`] | task leased with this token | lease dropped, ready at once (shutdown) |
//! | [`unclaim`] | task leased with this token, never started | as release, the claim's attempt taken back |
//! | [`extend_lease`] | task leased with this token | later `leased_until` |
//! | [`cancel`] | not done, not cancelled | cancellation pending, ready at once |
//! | [`reset`] | done | pending, history cleared |
//! | [`reprioritize`] | not done | new priority |
//! | [`advance_generator`] | generator leased with this token | occurrence + next slot, or done |

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use crate::error::HandlerError;
use crate::recurrence::RecurrenceError;
use crate::retry::RetryPolicy;
use crate::status::TaskStatus;
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
    bump_version(&mut next);
    next
}

fn bump_version(task: &mut Task) {
    task.version = task.version.wrapping_add(1);
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
    let mut next = task.clone();
    claim_in_place(&mut next, grant);
    next
}

/// [`claim`] written onto the task itself, for a backend that holds the
/// stored task and would otherwise copy it only to replace it.
///
/// ```
/// use std::time::Duration;
/// use chrono::Utc;
/// use oncetask_core::Task;
/// use oncetask_core::lifecycle::{self, LeaseGrant};
///
/// let now = Utc::now();
/// let grant = LeaseGrant::new(now, Duration::from_secs(60));
/// let task = Task::new("a", "k", "E", now);
/// let mut stored = task.clone();
/// lifecycle::claim_in_place(&mut stored, &grant);
/// assert_eq!(stored, lifecycle::claim(&task, &grant));
/// ```
pub fn claim_in_place(task: &mut Task, grant: &LeaseGrant) {
    task.version = task.version.wrapping_add(1);
    task.leased_until = Some(grant.leased_until);
    task.lease_token = Some(grant.token.clone());
    task.attempts = task.attempts.saturating_add(1);
    if task.is_cancelled {
        task.cancellation_attempts = task.cancellation_attempts.saturating_add(1);
    }
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
/// ends as cancelled, keeping the result (docs/semantics.md S8.6).
pub fn succeed(
    stored: &Task,
    token: &LeaseToken,
    now: DateTime<Utc>,
    result: Option<Value>,
) -> Result<Task, Rejection> {
    check_lease(stored, token)?;
    let mut next = stored.clone();
    succeed_leased(&mut next, now, result);
    Ok(next)
}

/// [`succeed`] on a task whose lease was checked.
fn succeed_leased(task: &mut Task, now: DateTime<Utc>, result: Option<Value>) {
    bump_version(task);
    task.result = result;
    finish(task, now, Outcome::Completed);
}

/// Records a failed run and applies the retry policy.
///
/// * main-handler failure on a live task: `policy.retry` with `attempts`,
///   except that a task with its own [`Task::max_attempts`] retries (after
///   the policy's delay) exactly while `attempts < max_attempts`;
/// * cancellation-handler failure: `policy.cancellation_retry` with
///   `cancellation_attempts` (its own counter, W23);
/// * main-handler failure on a task cancelled meanwhile: no policy; the
///   cancellation path is due at once;
/// * otherwise a [permanent](HandlerError::permanent) error ends the task
///   without asking the policy.
pub fn fail(
    stored: &Task,
    token: &LeaseToken,
    now: DateTime<Utc>,
    error: &HandlerError,
    path: HandlerPath,
    policy: FailurePolicy<'_>,
) -> Result<Task, Rejection> {
    check_lease(stored, token)?;
    let mut next = stored.clone();
    fail_leased(&mut next, now, error, path, policy);
    Ok(next)
}

/// [`fail`] on a task whose lease was checked.
fn fail_leased(
    task: &mut Task,
    now: DateTime<Utc>,
    error: &HandlerError,
    path: HandlerPath,
    policy: FailurePolicy<'_>,
) {
    // Decided on the counts as stored (a failure changes neither).
    let retry_after = match (path, task.is_cancelled) {
        (HandlerPath::Main, true) => Some(None),
        // A permanent error ends the task whatever the policy says.
        (_, _) if error.is_permanent() => None,
        (HandlerPath::Main, false) => match task.max_attempts {
            Some(max) if task.attempts >= max => None,
            Some(_) => Some(Some(delay(policy.retry, task.attempts, error))),
            None => decide(policy.retry, task.attempts, error),
        },
        (HandlerPath::Cancellation, _) => decide(
            policy.cancellation_retry,
            task.cancellation_attempts.max(1),
            error,
        ),
    };
    bump_version(task);
    task.errors.push(AttemptError {
        at: now,
        error: error.message().to_owned(),
    });
    let overflow = task
        .errors
        .len()
        .saturating_sub(policy.error_history_limit.max(1));
    task.errors.drain(..overflow);
    task.leased_until = None;
    task.lease_token = None;
    match retry_after {
        Some(delay) => {
            // A delay too large to represent means "not in this era", not "now".
            task.wait_until = delay.map(|d| {
                now.checked_add_signed(d)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC)
            });
        }
        None => finish(task, now, Outcome::Failed),
    }
}

/// How a handler run ended, as the state machine records it.
#[derive(Debug)]
pub enum RunResult {
    /// Done, with an optional result.
    Completed(Option<Value>),
    /// The attempt failed.
    Failed(HandlerError),
    /// Put off until this time (see [`snooze`]).
    Snoozed(DateTime<Utc>),
}

impl RunResult {
    /// True for [`RunResult::Failed`].
    pub fn is_failure(&self) -> bool {
        matches!(self, RunResult::Failed(_))
    }
}

/// Records a snoozed run: the lease is given back, the task is ready again
/// at `until` (at once if that is not after `now`), the claim's attempt is
/// taken back (and the cancellation counter's, on the cancellation path),
/// and [`Task::snoozes`] goes up. No error is recorded and nothing the retry
/// policy reads changes.
///
/// A task cancelled while its main handler ran is not snoozed: its
/// cancellation path is due at once, as after a failure, with no error
/// recorded and the attempt counted.
///
/// ```
/// use chrono::{TimeDelta, Utc};
/// use oncetask_core::lifecycle::{self, HandlerPath, LeaseGrant};
/// use oncetask_core::Task;
///
/// let now = Utc::now();
/// let grant = LeaseGrant::new(now, std::time::Duration::from_secs(60));
/// let leased = lifecycle::claim(&Task::new("t1", "poll", "prod", now), &grant);
/// let later = now + TimeDelta::minutes(5);
/// let snoozed = lifecycle::snooze(&leased, &grant.token, now, later, HandlerPath::Main).unwrap();
/// assert_eq!((snoozed.attempts, snoozed.snoozes), (0, 1));
/// assert_eq!(snoozed.wait_until, Some(later));
/// assert!(snoozed.lease_token.is_none() && snoozed.errors.is_empty());
/// ```
pub fn snooze(
    stored: &Task,
    token: &LeaseToken,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    path: HandlerPath,
) -> Result<Task, Rejection> {
    check_lease(stored, token)?;
    let mut next = stored.clone();
    snooze_leased(&mut next, now, until, path);
    Ok(next)
}

/// [`snooze`] on a task whose lease was checked.
fn snooze_leased(task: &mut Task, now: DateTime<Utc>, until: DateTime<Utc>, path: HandlerPath) {
    bump_version(task);
    task.leased_until = None;
    task.lease_token = None;
    if path == HandlerPath::Main && task.is_cancelled {
        // Cancelled meanwhile: the cancellation path takes over at once.
        task.wait_until = None;
        return;
    }
    task.attempts = task.attempts.saturating_sub(1);
    if task.is_cancelled {
        task.cancellation_attempts = task.cancellation_attempts.saturating_sub(1);
    }
    task.snoozes = task.snoozes.saturating_add(1);
    task.wait_until = Some(until.max(now));
}

/// A finished handler run, as [`record`] stores it.
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    /// The lease token the run held.
    pub token: &'a LeaseToken,
    /// When the run finished.
    pub now: DateTime<Utc>,
    /// Which handler ran.
    pub path: HandlerPath,
    /// What the handler returned.
    pub result: &'a RunResult,
}

/// The outcome decision of a finished run: [`succeed`], [`fail`] under
/// `policy`, or [`snooze`].
///
/// With `refused: Some(reason)` it is the fallback for a store that refused
/// to hold that write (a result or error message too large, or a value the
/// backend cannot store): the attempt fails with [`refused_error`] under the
/// same policy. Left alone, such a task would stay leased, run again and be
/// refused again, forever. Both writes are decided here, from the task as
/// stored, so recording an outcome needs no second read or write path.
///
/// ```
/// use chrono::Utc;
/// use oncetask_core::lifecycle::{self, FailurePolicy, Finished, HandlerPath, LeaseGrant, RunResult};
/// use oncetask_core::{NoRetry, Outcome, Task};
///
/// let now = Utc::now();
/// let grant = LeaseGrant::new(now, std::time::Duration::from_secs(60));
/// let leased = lifecycle::claim(&Task::new("t1", "email", "prod", now), &grant);
/// let result = RunResult::Completed(Some(serde_json::json!({ "big": "..." })));
/// let run = Finished { token: &grant.token, now, path: HandlerPath::Main, result: &result };
/// let policy = FailurePolicy { retry: &NoRetry, cancellation_retry: &NoRetry, error_history_limit: 10 };
///
/// let done = lifecycle::record(&leased, &run, policy, None).unwrap();
/// assert_eq!(done.outcome, Some(Outcome::Completed));
/// // The store said the result is too large: the attempt fails instead.
/// let instead = lifecycle::record(&leased, &run, policy, Some("too large")).unwrap();
/// assert_eq!(instead.outcome, Some(Outcome::Failed));
/// assert_eq!(instead.errors[0].error, "result cannot be stored: too large");
/// ```
pub fn record(
    stored: &Task,
    run: &Finished<'_>,
    policy: FailurePolicy<'_>,
    refused: Option<&str>,
) -> Result<Task, Rejection> {
    check_lease(stored, run.token)?;
    let mut next = stored.clone();
    record_in_place(&mut next, run, policy, refused)?;
    Ok(next)
}

/// [`record`] written onto the task itself: the core records outcomes
/// this way, so that it never copies a task to replace it. On `Err` the
/// task is unchanged.
///
/// ```
/// use chrono::Utc;
/// use oncetask_core::lifecycle::{self, FailurePolicy, Finished, HandlerPath, LeaseGrant, RunResult};
/// use oncetask_core::{NoRetry, Task};
///
/// let now = Utc::now();
/// let grant = LeaseGrant::new(now, std::time::Duration::from_secs(60));
/// let leased = lifecycle::claim(&Task::new("t1", "email", "prod", now), &grant);
/// let result = RunResult::Completed(None);
/// let run = Finished { token: &grant.token, now, path: HandlerPath::Main, result: &result };
/// let policy = FailurePolicy { retry: &NoRetry, cancellation_retry: &NoRetry, error_history_limit: 10 };
///
/// let mut task = leased.clone();
/// lifecycle::record_in_place(&mut task, &run, policy, None).unwrap();
/// assert_eq!(task, lifecycle::record(&leased, &run, policy, None).unwrap());
/// ```
pub fn record_in_place(
    task: &mut Task,
    run: &Finished<'_>,
    policy: FailurePolicy<'_>,
    refused: Option<&str>,
) -> Result<(), Rejection> {
    check_lease(task, run.token)?;
    match (run.result, refused) {
        (RunResult::Completed(value), None) => succeed_leased(task, run.now, value.clone()),
        (RunResult::Failed(e), None) => fail_leased(task, run.now, e, run.path, policy),
        (RunResult::Snoozed(until), None) => snooze_leased(task, run.now, *until, run.path),
        (result, Some(reason)) => {
            let error = refused_error(result, reason);
            fail_leased(task, run.now, &error, run.path, policy)
        }
    }
    Ok(())
}

/// The error recorded when the store refused to hold a run's outcome:
/// `"result cannot be stored: <reason>"` (or `"error …"` for a failed run).
pub fn refused_error(result: &RunResult, reason: &str) -> HandlerError {
    let what = if result.is_failure() {
        "error"
    } else {
        "result"
    };
    HandlerError::msg(format!("{what} cannot be stored: {reason}"))
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
    Some(Some(delay(policy, attempts, error)))
}

/// The policy's delay before the next attempt.
fn delay(policy: &dyn RetryPolicy, attempts: u32, error: &HandlerError) -> TimeDelta {
    TimeDelta::from_std(policy.next_retry_delay(attempts, error)).unwrap_or(TimeDelta::MAX)
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

/// Gives back the lease of a task claimed ahead that never started (its
/// manager shut down first): like [`release`], and the claim's attempt is
/// taken back, so a task handed back unrun keeps its retry budget.
///
/// The cancellation counter is taken back too when the task is cancelled:
/// either the claim counted it, or the task was cancelled after the claim
/// and has never run a cancellation handler (a task is cancelled once, and
/// a reset clears both), so the counter is 0 and stays 0.
pub fn unclaim(stored: &Task, token: &LeaseToken) -> Result<Task, Rejection> {
    let mut next = release(stored, token)?;
    next.attempts = stored.attempts.saturating_sub(1);
    if stored.is_cancelled {
        next.cancellation_attempts = stored.cancellation_attempts.saturating_sub(1);
    }
    Ok(next)
}

/// Gives back the lease of a task that may not start yet (its resource
/// key's rate limit is spent): like [`unclaim`] (the attempt is taken back),
/// and the task waits until `until`, when the limit's next window opens.
/// Written as a [`Change::Snooze`](crate::store::Change::Snooze) that counts
/// no snooze.
///
/// ```
/// use chrono::{TimeDelta, Utc};
/// use oncetask_core::lifecycle::{self, LeaseGrant};
/// use oncetask_core::Task;
///
/// let now = Utc::now();
/// let grant = LeaseGrant::new(now, std::time::Duration::from_secs(60));
/// let leased = lifecycle::claim(&Task::new("t1", "sync", "prod", now), &grant);
/// let next_window = now + TimeDelta::seconds(1);
/// let deferred = lifecycle::defer(&leased, &grant.token, next_window).unwrap();
/// assert_eq!((deferred.attempts, deferred.snoozes), (0, 0));
/// assert_eq!(deferred.wait_until, Some(next_window));
/// ```
pub fn defer(stored: &Task, token: &LeaseToken, until: DateTime<Utc>) -> Result<Task, Rejection> {
    let mut next = unclaim(stored, token)?;
    next.wait_until = Some(until);
    Ok(next)
}

/// Extends a live lease (heartbeat). Fails if the lease was lost, including
/// when it already expired at `now`: by then another task of its resource key
/// may hold the key, and reviving the lease would give the key two holders.
pub fn extend_lease(
    stored: &Task,
    token: &LeaseToken,
    now: DateTime<Utc>,
    leased_until: DateTime<Utc>,
) -> Result<Task, Rejection> {
    check_lease(stored, token)?;
    if !stored.is_leased_at(now) {
        return Err(Rejection::LeaseLost);
    }
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
    // A tombstone has lost its payload: running it again would run nothing.
    if !stored.is_done() || stored.is_tombstone() {
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
    next.snoozes = 0;
    Ok(next)
}

/// Turns a finished task into a tombstone (a pruner's change): the
/// payload, result and error history are emptied and [`Task::pruned_at`]
/// set to `now`; identity, kind, env, resource key, lineage, status and
/// finish time stay, so a create of the same id still answers "already
/// exists".
///
/// The attempt count is rewritten so that readers without the explicit
/// [`Task::outcome`] (the Go package, which tells completed from failed by
/// "more attempts than errors") derive the same status from the tombstone:
/// at least 1 for a completed task, 0 for a failed one; a cancelled task
/// keeps its count (its cancel flag decides).
///
/// ```
/// use chrono::Utc;
/// use oncetask_core::{Task, TaskStatus};
/// use oncetask_core::lifecycle;
///
/// let now = Utc::now();
/// let mut task = Task::new("a", "k", "E", now);
/// assert!(lifecycle::prune(&task, now).is_err(), "not finished");
/// task.done_at = Some(now);
/// task.outcome = Some(oncetask_core::Outcome::Failed);
/// task.attempts = 3;
/// let tombstone = lifecycle::prune(&task, now).unwrap();
/// assert!(tombstone.is_tombstone());
/// assert_eq!(tombstone.status(now), TaskStatus::Failed);
/// assert!(lifecycle::prune(&tombstone, now).is_err(), "already a tombstone");
/// ```
pub fn prune(stored: &Task, now: DateTime<Utc>) -> Result<Task, Rejection> {
    if !stored.is_done() || stored.is_tombstone() {
        return Err(Rejection::NotApplicable);
    }
    let status = stored.status(now);
    let mut next = next_version(stored);
    next.data = crate::task::JsonObject::new();
    next.result = None;
    next.errors = Vec::new();
    next.attempts = match status {
        TaskStatus::Completed => stored.attempts.max(1),
        TaskStatus::Failed => 0,
        _ => stored.attempts,
    };
    next.pruned_at = Some(now);
    Ok(next)
}

/// Sets the priority of a task that is not done (an operator's change; a
/// leased task keeps running and is claimed with the new priority if it
/// runs again). The caller checks `priority` against
/// [`PRIORITY_RANGE`](crate::PRIORITY_RANGE).
pub fn reprioritize(stored: &Task, priority: i8) -> Result<Task, Rejection> {
    if stored.is_done() {
        return Err(Rejection::NotApplicable);
    }
    let mut next = next_version(stored);
    next.priority = priority;
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
        data: generator.data.clone(),
        resource_key: generator.resource_key.clone(),
        wait_until: Some(slot),
        parent_recurrence_id: Some(generator.id.clone()),
        occurrence_timestamp: Some(slot),
        ..Task::new(
            occurrence_id(&generator.id, slot),
            generator.kind.clone(),
            generator.env.clone(),
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recurrence::Recurrence;
    use crate::retry::{ExponentialBackoff, FixedDelay, NoRetry};
    use crate::status::TaskStatus;
    use crate::test_support::{t0, task};
    use std::time::Duration;

    fn grant() -> LeaseGrant {
        LeaseGrant::new(t0(), Duration::from_secs(600))
    }

    fn policy<'a>(retry: &'a dyn RetryPolicy, cancel: &'a dyn RetryPolicy) -> FailurePolicy<'a> {
        FailurePolicy {
            retry,
            cancellation_retry: cancel,
            error_history_limit: 3,
        }
    }

    /// In place or on a copy, recording decides the same task; a lost lease
    /// leaves the task as it was.
    #[test]
    fn record_in_place_writes_what_record_returns_and_nothing_on_a_lost_lease() {
        let g = grant();
        let mut leased = claim(&task("a"), &g);
        // A history and a value already there, which the outcome must
        // extend or replace exactly as `record` does.
        leased.errors.push(AttemptError {
            at: t0(),
            error: "earlier".into(),
        });
        leased.result = Some(serde_json::json!("stale"));
        let retry = FixedDelay {
            max_attempts: 0,
            delay: Duration::from_secs(5),
        };
        let ok = RunResult::Completed(Some(serde_json::json!(1)));
        let err = RunResult::Failed(HandlerError::msg("boom"));
        let snoozed = RunResult::Snoozed(t0() + TimeDelta::minutes(1));
        for (name, result, retry, refused) in [
            ("success", &ok, &retry as &dyn RetryPolicy, None),
            ("retried failure", &err, &retry, None),
            ("final failure", &err, &NoRetry, None),
            ("refused result", &ok, &retry, Some("too large")),
            ("snooze", &snoozed, &retry, None),
        ] {
            let run = Finished {
                token: &g.token,
                now: t0(),
                path: HandlerPath::Main,
                result,
            };
            let policy = policy(retry, &NoRetry);
            let mut in_place = leased.clone();
            record_in_place(&mut in_place, &run, policy, refused).expect(name);
            assert_eq!(
                Ok(in_place),
                record(&leased, &run, policy, refused),
                "{name}"
            );
        }
        let other = LeaseToken::generate();
        let run = Finished {
            token: &other,
            now: t0(),
            path: HandlerPath::Main,
            result: &ok,
        };
        let mut held = leased.clone();
        assert_eq!(
            record_in_place(&mut held, &run, policy(&NoRetry, &NoRetry), None),
            Err(Rejection::LeaseLost)
        );
        assert_eq!(held, leased, "a rejected outcome changed the task");
    }

    #[test]
    fn claim_leases_counts_the_attempt_and_bumps_the_version() {
        let g = grant();
        let claimed = claim(&task("a"), &g);
        assert_eq!(claimed.attempts, 1);
        assert_eq!(claimed.cancellation_attempts, 0);
        assert_eq!(claimed.leased_until, Some(g.leased_until));
        assert_eq!(claimed.lease_token.as_ref(), Some(&g.token));
        assert_eq!(claimed.version, 1);
        assert_eq!(claimed.status(t0()), TaskStatus::Leased);
        let cancelled = claim(
            &Task {
                is_cancelled: true,
                ..task("b")
            },
            &g,
        );
        assert_eq!(cancelled.cancellation_attempts, 1);
    }

    #[test]
    fn success_completes_and_clears_the_lease() {
        let g = grant();
        let claimed = claim(&task("a"), &g);
        let done = succeed(&claimed, &g.token, t0(), Some(serde_json::json!(7)));
        let done = done.expect("token matches");
        assert_eq!(done.status(t0()), TaskStatus::Completed);
        assert_eq!(done.outcome, Some(Outcome::Completed));
        assert_eq!(done.leased_until, None);
        assert_eq!(done.lease_token, None);
        assert_eq!(done.result, Some(serde_json::json!(7)));
        assert_eq!(done.version, 2);
    }

    #[test]
    fn a_stale_token_is_fenced_off() {
        let first = grant();
        let second = grant();
        let reclaimed = claim(&claim(&task("a"), &first), &second);
        let err = HandlerError::msg("late");
        let no = NoRetry;
        assert_eq!(
            succeed(&reclaimed, &first.token, t0(), None),
            Err(Rejection::LeaseLost)
        );
        assert_eq!(
            fail(
                &reclaimed,
                &first.token,
                t0(),
                &err,
                HandlerPath::Main,
                policy(&no, &no)
            ),
            Err(Rejection::LeaseLost)
        );
        assert_eq!(release(&reclaimed, &first.token), Err(Rejection::LeaseLost));
        assert_eq!(
            extend_lease(&reclaimed, &first.token, t0(), t0()),
            Err(Rejection::LeaseLost)
        );
        // A done task cannot be completed again, even with its last token.
        let done = succeed(&reclaimed, &second.token, t0(), None).expect("current token");
        assert_eq!(
            succeed(&done, &second.token, t0(), None),
            Err(Rejection::LeaseLost)
        );
    }

    #[test]
    fn failures_back_off_then_fail_permanently() {
        let g = grant();
        let retry = ExponentialBackoff::default();
        let cancel = ExponentialBackoff::cancellation_default();
        let err = HandlerError::msg("boom");
        let mut t = task("a");
        let mut waits = Vec::new();
        for _ in 0..3 {
            let claimed = claim(&t, &g);
            t = fail(
                &claimed,
                &g.token,
                t0(),
                &err,
                HandlerPath::Main,
                policy(&retry, &cancel),
            )
            .expect("token matches");
            waits.push(t.wait_until.map(|w| (w - t0()).num_seconds()));
        }
        assert_eq!(waits[..2], [Some(1), Some(2)]);
        assert_eq!(t.status(t0()), TaskStatus::Failed);
        assert_eq!(t.outcome, Some(Outcome::Failed));
        assert_eq!(t.attempts, 3);
        assert_eq!(t.errors.len(), 3);
        assert_eq!(t.errors[0].error, "boom");
    }

    #[test]
    fn a_permanent_error_fails_at_once_whatever_the_policy() {
        let g = grant();
        let retry = FixedDelay {
            max_attempts: 0,
            delay: Duration::ZERO,
        };
        let cancel = ExponentialBackoff::cancellation_default();
        let err = HandlerError::permanent("account closed");
        let failed = fail(
            &claim(&task("a"), &g),
            &g.token,
            t0(),
            &err,
            HandlerPath::Main,
            policy(&retry, &cancel),
        )
        .expect("token matches");
        assert_eq!(failed.outcome, Some(Outcome::Failed));
        assert_eq!(failed.attempts, 1);
        assert_eq!(failed.errors[0].error, "account closed");

        // From the cancellation handler: the task ends cancelled at once.
        let cancelled = Task {
            is_cancelled: true,
            ..task("b")
        };
        let leased = claim(&cancelled, &g);
        let ended = fail(
            &leased,
            &g.token,
            t0(),
            &err,
            HandlerPath::Cancellation,
            policy(&retry, &cancel),
        )
        .expect("token matches");
        assert_eq!(ended.outcome, Some(Outcome::Cancelled));

        // A main-handler failure after a cancel still hands over to the
        // cancellation path instead of ending the task.
        let handed_over = fail(
            &claim(&cancelled, &g),
            &g.token,
            t0(),
            &err,
            HandlerPath::Main,
            policy(&retry, &cancel),
        )
        .expect("token matches");
        assert!(handed_over.done_at.is_none());
    }

    #[test]
    fn error_history_is_capped_to_the_most_recent() {
        let g = grant();
        let retry = FixedDelay {
            max_attempts: 0,
            delay: Duration::ZERO,
        };
        let mut t = task("a");
        for n in 0..5 {
            let claimed = claim(&t, &g);
            let err = HandlerError::msg(format!("e{n}"));
            t = fail(
                &claimed,
                &g.token,
                t0(),
                &err,
                HandlerPath::Main,
                policy(&retry, &retry),
            )
            .expect("token matches");
        }
        let kept: Vec<&str> = t.errors.iter().map(|e| e.error.as_str()).collect();
        assert_eq!(kept, ["e2", "e3", "e4"]);
        assert_eq!(t.attempts, 5);
    }

    #[test]
    fn cancellation_failures_use_their_own_policy_and_counter() {
        let g = grant();
        let main = NoRetry;
        let cancel = FixedDelay {
            max_attempts: 2,
            delay: Duration::from_secs(5),
        };
        let err = HandlerError::msg("cleanup failed");
        // Two main attempts were used before the cancel (W23: they do not count).
        let t = Task {
            attempts: 2,
            is_cancelled: true,
            ..task("a")
        };
        let claimed = claim(&t, &g);
        let t = fail(
            &claimed,
            &g.token,
            t0(),
            &err,
            HandlerPath::Cancellation,
            policy(&main, &cancel),
        )
        .expect("token matches");
        assert_eq!(t.status(t0()), TaskStatus::CancellationPending);
        assert_eq!(t.wait_until, Some(t0() + TimeDelta::seconds(5)));
        let claimed = claim(&t, &g);
        let t = fail(
            &claimed,
            &g.token,
            t0(),
            &err,
            HandlerPath::Cancellation,
            policy(&main, &cancel),
        )
        .expect("token matches");
        assert_eq!(t.status(t0()), TaskStatus::Cancelled);
        assert_eq!(t.outcome, Some(Outcome::Cancelled));
    }

    #[test]
    fn a_main_failure_after_a_cancel_makes_the_cancellation_path_due_at_once() {
        let g = grant();
        let claimed = claim(&task("a"), &g);
        let cancelled = cancel(&claimed, t0()).expect("not done");
        assert_eq!(
            cancelled.leased_until, claimed.leased_until,
            "cancel keeps the lease"
        );
        let err = HandlerError::msg("boom");
        let no = NoRetry;
        let t = fail(
            &cancelled,
            &g.token,
            t0(),
            &err,
            HandlerPath::Main,
            policy(&no, &no),
        )
        .expect("token matches");
        assert_eq!(t.wait_until, None);
        assert_eq!(t.status(t0()), TaskStatus::CancellationPending);
    }

    #[test]
    fn success_of_a_task_cancelled_while_running_ends_cancelled() {
        let g = grant();
        let cancelled = cancel(&claim(&task("a"), &g), t0()).expect("not done");
        let done = succeed(&cancelled, &g.token, t0(), None).expect("token matches");
        assert_eq!(done.status(t0()), TaskStatus::Cancelled);
    }

    #[test]
    fn cancel_and_reset_apply_only_where_the_go_rules_say() {
        let g = grant();
        let done = succeed(&claim(&task("a"), &g), &g.token, t0(), None).expect("token");
        assert_eq!(cancel(&done, t0()), Err(Rejection::NotApplicable));
        let cancelled = cancel(&task("b"), t0()).expect("pending task");
        assert_eq!(cancel(&cancelled, t0()), Err(Rejection::NotApplicable));
        assert_eq!(cancelled.cancelled_at, Some(t0()));
        assert_eq!(reset(&task("c")), Err(Rejection::NotApplicable));
        assert_eq!(reset(&cancelled), Err(Rejection::NotApplicable));
    }

    #[test]
    fn reset_clears_execution_state_and_keeps_identity() {
        let g = grant();
        let mut t = Task {
            resource_key: Some("cal-1".into()),
            parent_recurrence_id: Some("gen".into()),
            ..task("a")
        };
        t = claim(&t, &g);
        t = fail(
            &t,
            &g.token,
            t0(),
            &HandlerError::msg("x"),
            HandlerPath::Main,
            policy(&NoRetry, &NoRetry),
        )
        .expect("token");
        let r = reset(&t).expect("terminal");
        assert_eq!(r.status(t0()), TaskStatus::Pending);
        assert_eq!((r.attempts, r.errors.len(), r.result.clone()), (0, 0, None));
        assert_eq!(
            (r.done_at, r.leased_until, r.wait_until, r.outcome),
            (None, None, None, None)
        );
        assert!(!r.is_cancelled && r.cancelled_at.is_none());
        assert_eq!(
            (r.id.as_str(), r.kind.as_str(), r.env.as_str()),
            ("a", "k", "E")
        );
        assert_eq!(r.resource_key.as_deref(), Some("cal-1"));
        assert_eq!(r.parent_recurrence_id.as_deref(), Some("gen"));
        assert_eq!(r.created_at, t0());
        assert_eq!(
            reset(&r),
            Err(Rejection::NotApplicable),
            "second reset is a no-op"
        );
    }

    fn weekly_generator() -> Task {
        let rec = Recurrence::new("FREQ=WEEKLY;BYDAY=MO", "2025-01-06T09:00:00Z").expect("valid");
        Task {
            wait_until: Some(t0()),
            recurrence: Some(rec),
            ..task("report")
        }
    }

    #[test]
    fn a_generator_spawns_the_occurrence_of_its_slot_and_moves_on() {
        let g = grant();
        let step = advance_generator(&claim(&weekly_generator(), &g), &g.token, t0()).expect("ok");
        let occ = step.occurrence.expect("an occurrence");
        assert_eq!(occ.id, "report_occ_2025-01-06T09:00:00Z");
        assert_eq!(occ.parent_recurrence_id.as_deref(), Some("report"));
        assert_eq!(occ.occurrence_timestamp, Some(t0()));
        assert_eq!(occ.wait_until, Some(t0()));
        assert!(occ.recurrence.is_none() && occ.attempts == 0);
        assert_eq!(step.generator.wait_until, Some(t0() + TimeDelta::days(7)));
        assert_eq!(step.generator.status(t0()), TaskStatus::Waiting);
    }

    #[test]
    fn a_reset_generator_resumes_without_a_bogus_occurrence() {
        let g = grant();
        let generator = Task {
            wait_until: None,
            ..weekly_generator()
        };
        let now = t0() + TimeDelta::days(2);
        let step = advance_generator(&claim(&generator, &g), &g.token, now).expect("ok");
        assert!(step.occurrence.is_none());
        assert_eq!(step.generator.wait_until, Some(t0() + TimeDelta::days(7)));
    }

    #[test]
    fn a_cancelled_generator_finishes_without_spawning() {
        let g = grant();
        let generator = cancel(&weekly_generator(), t0()).expect("live");
        let step = advance_generator(&claim(&generator, &g), &g.token, t0()).expect("ok");
        assert!(step.occurrence.is_none());
        assert_eq!(step.generator.status(t0()), TaskStatus::Cancelled);
    }

    #[test]
    fn a_snooze_gives_the_attempt_back_and_records_nothing_the_policy_reads() {
        let g = grant();
        let mut leased = claim(&task("a"), &g);
        leased.errors.push(AttemptError {
            at: t0(),
            error: "earlier".into(),
        });
        let later = t0() + TimeDelta::minutes(10);
        let snoozed = snooze(&leased, &g.token, t0(), later, HandlerPath::Main).expect("leased");
        assert_eq!(snoozed.attempts, 0, "the attempt does not count");
        assert_eq!(snoozed.snoozes, 1);
        assert_eq!(snoozed.wait_until, Some(later));
        assert_eq!(snoozed.errors, leased.errors, "no error recorded");
        assert_eq!(
            (snoozed.leased_until, snoozed.lease_token.clone()),
            (None, None)
        );
        assert_eq!(snoozed.outcome, None);
        assert_eq!(snoozed.version, leased.version + 1);
        // Snoozing to the past means now.
        let past = snooze(
            &leased,
            &g.token,
            t0(),
            t0() - TimeDelta::hours(1),
            HandlerPath::Main,
        )
        .expect("leased");
        assert_eq!(past.wait_until, Some(t0()));
        assert!(past.is_ready_at(t0()));
        // Only the lease holder snoozes.
        assert_eq!(
            snooze(
                &leased,
                &LeaseToken::generate(),
                t0(),
                later,
                HandlerPath::Main
            ),
            Err(Rejection::LeaseLost)
        );
    }

    #[test]
    fn a_snooze_of_a_task_cancelled_meanwhile_runs_its_cancellation_path_at_once() {
        let g = grant();
        let leased = claim(&task("a"), &g);
        let cancelled = cancel(&leased, t0()).expect("not done");
        let later = t0() + TimeDelta::minutes(10);
        let next = snooze(&cancelled, &g.token, t0(), later, HandlerPath::Main).expect("leased");
        assert_eq!(next.wait_until, None);
        assert_eq!((next.attempts, next.snoozes), (1, 0));
        assert!(next.errors.is_empty());
        assert_eq!(next.status(t0()), TaskStatus::CancellationPending);
        // The cancellation handler's own snooze gives both counts back.
        let g2 = LeaseGrant::new(t0(), Duration::from_secs(60));
        let again = claim(&next, &g2);
        assert_eq!((again.attempts, again.cancellation_attempts), (2, 1));
        let put_off =
            snooze(&again, &g2.token, t0(), later, HandlerPath::Cancellation).expect("leased");
        assert_eq!((put_off.attempts, put_off.cancellation_attempts), (1, 0));
        assert_eq!((put_off.snoozes, put_off.wait_until), (1, Some(later)));
        assert!(put_off.is_cancelled && !put_off.is_done());
    }

    #[test]
    fn a_task_of_its_own_max_attempts_overrides_the_policy_limit_but_keeps_its_delay() {
        let error = HandlerError::msg("boom");
        let retry = FixedDelay {
            max_attempts: 10,
            delay: Duration::from_secs(7),
        };
        let mut limited = task("a");
        limited.max_attempts = Some(2);
        let g = grant();
        let first = fail(
            &claim(&limited, &g),
            &g.token,
            t0(),
            &error,
            HandlerPath::Main,
            policy(&retry, &NoRetry),
        )
        .expect("leased");
        assert_eq!(first.wait_until, Some(t0() + TimeDelta::seconds(7)));
        assert!(!first.is_done());
        let second = fail(
            &claim(&first, &g),
            &g.token,
            t0(),
            &error,
            HandlerPath::Main,
            policy(&retry, &NoRetry),
        )
        .expect("leased");
        assert_eq!(
            second.outcome,
            Some(Outcome::Failed),
            "2 of 2 attempts used"
        );
        // More attempts than the policy allows, too.
        let mut generous = task("b");
        generous.max_attempts = Some(3);
        generous.attempts = 1;
        let retried = fail(
            &claim(&generous, &g),
            &g.token,
            t0(),
            &error,
            HandlerPath::Main,
            policy(&NoRetry, &NoRetry),
        )
        .expect("leased");
        assert!(!retried.is_done(), "attempt 2 of 3 retries under NoRetry");
        // A permanent error still ends it at once.
        let permanent = fail(
            &claim(&generous, &g),
            &g.token,
            t0(),
            &HandlerError::permanent("gone"),
            HandlerPath::Main,
            policy(&retry, &NoRetry),
        )
        .expect("leased");
        assert_eq!(permanent.outcome, Some(Outcome::Failed));
    }

    #[test]
    fn reprioritize_applies_to_tasks_not_done_and_a_reset_keeps_it_but_clears_snoozes() {
        let pending = task("a");
        let high = reprioritize(&pending, 5).expect("not done");
        assert_eq!((high.priority, high.version), (5, pending.version + 1));
        let g = grant();
        let leased = claim(&high, &g);
        let snoozed = snooze(&leased, &g.token, t0(), t0(), HandlerPath::Main).expect("leased");
        let again = claim(&snoozed, &g);
        let done = succeed(&again, &g.token, t0(), None).expect("leased");
        assert_eq!(reprioritize(&done, 1), Err(Rejection::NotApplicable));
        let reset_task = reset(&done).expect("done");
        assert_eq!((reset_task.priority, reset_task.snoozes), (5, 0));
    }
}

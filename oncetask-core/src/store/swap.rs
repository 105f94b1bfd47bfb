//! Conditional writes: a typed change to one task, fenced on the state the
//! core decided it from.
//!
//! The core never hands a backend a whole task to store. It hands it a
//! [`Swap`]: which lifecycle event happened ([`Change`], and so which
//! [`Field`]s it writes), the [`Fence`] the decision was made on, and the
//! values. A backend writes those fields and nothing else, and only if the
//! fence still holds. So a backend can write in place (an update mask, an
//! `UPDATE` of a few columns) without reading the task first, and a change
//! it does not know about (a Go writer on a shared Firestore collection)
//! is never overwritten by fields the event had no reason to touch.

use chrono::{DateTime, Utc};

use crate::task::{Revision, Task};

/// A task field that a swap may change. Everything else (id, env, kind,
/// resource key, creation time, schedule, lineage) is fixed at create; the
/// payload changes only when a pruner empties it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// [`Task::leased_until`].
    LeasedUntil,
    /// [`Task::lease_token`].
    LeaseToken,
    /// [`Task::wait_until`].
    WaitUntil,
    /// [`Task::attempts`].
    Attempts,
    /// [`Task::cancellation_attempts`].
    CancellationAttempts,
    /// [`Task::errors`].
    Errors,
    /// [`Task::done_at`].
    DoneAt,
    /// [`Task::outcome`].
    Outcome,
    /// [`Task::result`].
    Result,
    /// [`Task::is_cancelled`].
    IsCancelled,
    /// [`Task::cancelled_at`].
    CancelledAt,
    /// [`Task::snoozes`].
    Snoozes,
    /// [`Task::priority`].
    Priority,
    /// [`Task::data`] (only a prune changes the payload: it empties it).
    Data,
    /// [`Task::pruned_at`].
    PrunedAt,
}

impl Field {
    /// Every field a swap may change.
    pub const ALL: [Field; 15] = [
        Field::LeasedUntil,
        Field::LeaseToken,
        Field::WaitUntil,
        Field::Attempts,
        Field::CancellationAttempts,
        Field::Errors,
        Field::DoneAt,
        Field::Outcome,
        Field::Result,
        Field::IsCancelled,
        Field::CancelledAt,
        Field::Snoozes,
        Field::Priority,
        Field::Data,
        Field::PrunedAt,
    ];
}

/// The lifecycle event a swap writes; each writes a fixed set of fields
/// ([`Change::fields`]), plus the version.
///
/// A claim is not a swap (backends lease inside [`crate::Store::claim`]).
///
/// ```
/// use oncetask_core::store::{Change, Field};
///
/// assert_eq!(Change::Heartbeat.fields(), &[Field::LeasedUntil]);
/// assert!(Change::Outcome.writes(Field::Result));
/// assert!(!Change::Cancel.writes(Field::LeaseToken));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// A live lease extended ([`crate::lifecycle::extend_lease`]).
    Heartbeat,
    /// A lease given back without an outcome ([`crate::lifecycle::release`],
    /// or [`crate::lifecycle::unclaim`] for a task that never started).
    Release,
    /// A run's outcome: success, failure, a retry scheduled, or a
    /// generator moved to its next slot ([`crate::lifecycle::succeed`],
    /// [`crate::lifecycle::fail`], [`crate::lifecycle::advance_generator`]).
    Outcome,
    /// A task marked cancelled ([`crate::lifecycle::cancel`]).
    Cancel,
    /// A finished task put back to pending ([`crate::lifecycle::reset`]).
    Reset,
    /// A run put off by its handler, its lease given back and its attempt
    /// not counted ([`crate::lifecycle::snooze`]).
    Snooze,
    /// An operator's new priority for a task not done
    /// ([`crate::lifecycle::reprioritize`]).
    Reprioritize,
    /// A finished task turned into a tombstone by a pruner: payload,
    /// result and errors emptied ([`crate::lifecycle::prune`]).
    Prune,
}

impl Change {
    /// The fields this event writes (the version is always written too).
    pub const fn fields(self) -> &'static [Field] {
        use Field::*;
        match self {
            Change::Heartbeat => &[LeasedUntil],
            // A task claimed ahead and handed back unrun takes its attempt back.
            Change::Release => &[LeasedUntil, LeaseToken, Attempts, CancellationAttempts],
            Change::Outcome => &[
                LeasedUntil,
                LeaseToken,
                WaitUntil,
                Errors,
                DoneAt,
                Outcome,
                Result,
            ],
            Change::Cancel => &[IsCancelled, CancelledAt, WaitUntil],
            // A reset clears the whole history; the priority is not history.
            Change::Reset => &[
                LeasedUntil,
                LeaseToken,
                WaitUntil,
                Attempts,
                CancellationAttempts,
                Errors,
                DoneAt,
                Outcome,
                Result,
                IsCancelled,
                CancelledAt,
                Snoozes,
            ],
            Change::Snooze => &[
                LeasedUntil,
                LeaseToken,
                WaitUntil,
                Attempts,
                CancellationAttempts,
                Snoozes,
            ],
            Change::Reprioritize => &[Priority],
            Change::Prune => &[Data, Errors, Result, Attempts, PrunedAt],
        }
    }

    /// True for the events an operator makes (cancel, reset, reprioritize), which may
    /// change a task some worker holds; false for the ones only the lease
    /// holder writes (heartbeat, release, outcome).
    ///
    /// ```
    /// use oncetask_core::store::Change;
    ///
    /// assert!(Change::Cancel.by_operator());
    /// assert!(!Change::Outcome.by_operator());
    /// ```
    pub const fn by_operator(self) -> bool {
        matches!(self, Change::Cancel | Change::Reset | Change::Reprioritize)
    }

    /// True when this event writes `field`.
    pub fn writes(self, field: Field) -> bool {
        self.fields().contains(&field)
    }

    /// The narrowest event that writes every field in which `after`
    /// differs from `before` (tried in the order heartbeat, reprioritize,
    /// release, cancel, outcome, snooze, reset, prune); `None` when none does (a field a swap can
    /// never change differs). For callers that hold two states rather than
    /// the event (tests, tools); the manager always names its event.
    ///
    /// ```
    /// use std::time::Duration;
    /// use chrono::Utc;
    /// use oncetask_core::Task;
    /// use oncetask_core::lifecycle::{self, LeaseGrant};
    /// use oncetask_core::store::Change;
    ///
    /// let now = Utc::now();
    /// let grant = LeaseGrant::new(now, Duration::from_secs(60));
    /// let claimed = lifecycle::claim(&Task::new("a", "k", "E", now), &grant);
    /// let released = lifecycle::release(&claimed, &grant.token).unwrap();
    /// assert_eq!(Change::between(&claimed, &released), Some(Change::Release));
    /// ```
    pub fn between(before: &Task, after: &Task) -> Option<Change> {
        const NARROWEST_FIRST: [Change; 8] = [
            Change::Heartbeat,
            Change::Reprioritize,
            Change::Release,
            Change::Cancel,
            Change::Outcome,
            Change::Snooze,
            Change::Reset,
            Change::Prune,
        ];
        NARROWEST_FIRST.into_iter().find(|change| {
            let mut applied = before.clone();
            copy_fields(*change, after, &mut applied);
            applied == *after
        })
    }
}

/// The stored state a change was decided on, as an opaque token: the task's
/// version and, on a backend with revisions, the document's revision
/// ([`Task::revision`]: Firestore's update time, which also changes when a
/// writer outside oncetask changes the document).
///
/// A claim returns it with each task; an applied swap returns the next
/// revision ([`SwapOutcome::Applied`]). A backend applies a swap only while
/// the stored document still matches its fence: the version always, and the
/// revision when it is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    version: u64,
    revision: Option<Revision>,
}

impl Fence {
    /// The fence of `task` as the caller holds it (its version and revision).
    pub fn of(task: &Task) -> Self {
        Self {
            version: task.version,
            revision: task.revision,
        }
    }

    /// The version the stored task must still have.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The revision the stored document must still be at, when the fence has one.
    pub fn revision(&self) -> Option<Revision> {
        self.revision
    }
}

/// One conditional write: a [`Change`] to one task, fenced on the state it
/// was decided on.
///
/// Built from the task as the core holds it and the result of a
/// [`crate::lifecycle`] transition; only the change's fields are taken from
/// the result, so a swap can never write anything its event does not own.
///
/// ```
/// use std::time::Duration;
/// use chrono::Utc;
/// use oncetask_core::Task;
/// use oncetask_core::lifecycle::{self, LeaseGrant};
/// use oncetask_core::store::{Change, Swap};
///
/// let now = Utc::now();
/// let grant = LeaseGrant::new(now, Duration::from_secs(60));
/// let claimed = lifecycle::claim(&Task::new("a", "k", "E", now), &grant);
/// let done = lifecycle::succeed(&claimed, &grant.token, now, None).unwrap();
/// let swap = Swap::new(&claimed, Change::Outcome, &done);
/// assert_eq!(swap.fence().version(), claimed.version);
/// assert_eq!(swap.task(), &done);
/// ```
#[derive(Debug, Clone)]
pub struct Swap {
    change: Change,
    fence: Fence,
    task: Task,
}

impl Swap {
    /// The swap that writes `change` as `after` has it, onto `before` (the
    /// task the change was decided on, which gives the fence). Fields the
    /// change does not write keep `before`'s values; the version becomes
    /// `after`'s.
    pub fn new(before: &Task, change: Change, after: &Task) -> Self {
        Self::from_next(before, change, after.clone())
    }

    /// [`Swap::new`] that takes the transition's result instead of copying
    /// a task: `after` becomes the swap's task, with every field the change
    /// does not write put back to `before`'s value. A field is compared
    /// before it is copied, so for the result of a [`crate::lifecycle`]
    /// transition (which differs from `before` only in the change's
    /// fields) this copies nothing. The core's hot path uses it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use chrono::Utc;
    /// use oncetask_core::Task;
    /// use oncetask_core::lifecycle::{self, LeaseGrant};
    /// use oncetask_core::store::{Change, Swap};
    ///
    /// let now = Utc::now();
    /// let grant = LeaseGrant::new(now, Duration::from_secs(60));
    /// let claimed = lifecycle::claim(&Task::new("a", "k", "E", now), &grant);
    /// let mut done = lifecycle::succeed(&claimed, &grant.token, now, None).unwrap();
    /// let expected = done.clone();
    /// done.kind = "not the outcome's to change".into();
    /// let swap = Swap::from_next(&claimed, Change::Outcome, done);
    /// assert_eq!(swap.into_task(), expected);
    /// ```
    pub fn from_next(before: &Task, change: Change, mut after: Task) -> Self {
        after.revision = None;
        keep_unwritten(change, before, &mut after);
        Self {
            change,
            fence: Fence::of(before),
            task: after,
        }
    }

    /// The swap of a task onto which the core's transition was written in
    /// place, fenced on the state before it. The core's hot path, for
    /// transitions that write only their change's fields (debug builds
    /// check it against [`Swap::from_next`]).
    pub(crate) fn from_applied(fence: Fence, change: Change, mut task: Task) -> Self {
        task.revision = None;
        Self {
            change,
            fence,
            task,
        }
    }

    /// The task's id.
    pub fn id(&self) -> &str {
        &self.task.id
    }

    /// The event this swap writes.
    pub fn change(&self) -> Change {
        self.change
    }

    /// The state the change was decided on.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The task as it is stored once the swap applies (given that the
    /// stored document matches the fence): the values of the change's
    /// fields, its new version, and the fenced state's other fields (its
    /// identity, env, kind and resource key included, for routing and
    /// indexes). Its `revision` is `None`.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The task as it is stored once the swap applies ([`Swap::task`]), by
    /// value.
    pub fn into_task(self) -> Task {
        self.task
    }

    /// Whether this write can make work available to workers of other
    /// processes, so a backend with change notices should announce it: the
    /// task is left waiting or ready (retried, released, reset), a leased
    /// task is cancelled (its worker may stop), or a task with a resource
    /// key finished (its key is free). A heartbeat, and the end of a task
    /// without a key, cannot.
    ///
    /// ```
    /// use std::time::Duration;
    /// use chrono::Utc;
    /// use oncetask_core::Task;
    /// use oncetask_core::lifecycle::{self, LeaseGrant};
    /// use oncetask_core::store::{Change, Swap};
    ///
    /// let now = Utc::now();
    /// let grant = LeaseGrant::new(now, Duration::from_secs(60));
    /// let claimed = lifecycle::claim(&Task::new("a", "k", "E", now), &grant);
    /// let done = lifecycle::succeed(&claimed, &grant.token, now, None).unwrap();
    /// assert!(!Swap::new(&claimed, Change::Outcome, &done).announces_work(now));
    /// let released = lifecycle::release(&claimed, &grant.token).unwrap();
    /// assert!(Swap::new(&claimed, Change::Release, &released).announces_work(now));
    /// ```
    pub fn announces_work(&self, now: DateTime<Utc>) -> bool {
        let task = &self.task;
        if self.change == Change::Prune {
            // A finished task losing its payload frees nothing.
            return false;
        }
        if task.is_done() {
            return task.resource_key.is_some();
        }
        task.is_cancelled || !task.is_leased_at(now)
    }

    /// The notice a backend with change notices sends once this swap is
    /// applied: one that says it may have touched held tasks for an
    /// operator's change ([`Change::by_operator`]), a work notice when the
    /// write [`announces work`](Self::announces_work), else none. Every
    /// backend follows this one rule.
    ///
    /// ```
    /// use std::time::Duration;
    /// use chrono::Utc;
    /// use oncetask_core::Task;
    /// use oncetask_core::lifecycle::{self, LeaseGrant};
    /// use oncetask_core::store::{Announce, Change, Swap};
    ///
    /// let now = Utc::now();
    /// let grant = LeaseGrant::new(now, Duration::from_secs(60));
    /// let claimed = lifecycle::claim(&Task::new("a", "k", "E", now), &grant);
    /// let done = lifecycle::succeed(&claimed, &grant.token, now, None).unwrap();
    /// assert_eq!(Swap::new(&claimed, Change::Outcome, &done).announce(now), Announce::Nothing);
    /// let released = lifecycle::release(&claimed, &grant.token).unwrap();
    /// assert_eq!(Swap::new(&claimed, Change::Release, &released).announce(now), Announce::Work);
    /// let cancelled = lifecycle::cancel(&claimed, now).unwrap();
    /// assert_eq!(
    ///     Swap::new(&claimed, Change::Cancel, &cancelled).announce(now),
    ///     Announce::TouchingClaimed
    /// );
    /// ```
    pub fn announce(&self, now: DateTime<Utc>) -> Announce {
        if self.change.by_operator() {
            Announce::TouchingClaimed
        } else if self.announces_work(now) {
            Announce::Work
        } else {
            Announce::Nothing
        }
    }

    /// Writes the change's fields and the new version onto `stored` (a
    /// backend that holds the stored task applies the swap with this, after
    /// checking the fence), leaving every other field as stored.
    pub fn apply_to(&self, stored: &mut Task) {
        copy_fields(self.change, &self.task, stored);
    }
}

/// Which change notice an applied swap sends ([`Swap::announce`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// None: the write frees no work and is its holder's own (a
    /// heartbeat, the end of a task without a resource key).
    Nothing,
    /// A notice of new or freed work.
    Work,
    /// A notice with [`super::Notification::may_touch_claimed`] set.
    TouchingClaimed,
}

/// Copies `change`'s fields and the version from `from` onto `onto`.
fn copy_fields(change: Change, from: &Task, onto: &mut Task) {
    for field in change.fields() {
        match field {
            Field::LeasedUntil => onto.leased_until = from.leased_until,
            Field::LeaseToken => onto.lease_token = from.lease_token.clone(),
            Field::WaitUntil => onto.wait_until = from.wait_until,
            Field::Attempts => onto.attempts = from.attempts,
            Field::CancellationAttempts => onto.cancellation_attempts = from.cancellation_attempts,
            Field::Errors => onto.errors = from.errors.clone(),
            Field::DoneAt => onto.done_at = from.done_at,
            Field::Outcome => onto.outcome = from.outcome,
            Field::Result => onto.result = from.result.clone(),
            Field::IsCancelled => onto.is_cancelled = from.is_cancelled,
            Field::CancelledAt => onto.cancelled_at = from.cancelled_at,
            Field::Snoozes => onto.snoozes = from.snoozes,
            Field::Priority => onto.priority = from.priority,
            Field::Data => onto.data = from.data.clone(),
            Field::PrunedAt => onto.pruned_at = from.pruned_at,
        }
    }
    onto.version = from.version;
}

/// Puts every field of `onto` that `change` does not write (the version
/// aside) back to its value in `from`, copying only fields that differ.
fn keep_unwritten(change: Change, from: &Task, onto: &mut Task) {
    fn keep<T: PartialEq + Clone>(from: &T, onto: &mut T) {
        if onto != from {
            onto.clone_from(from);
        }
    }
    // Destructured, so that a new field cannot be left out by accident.
    let Task {
        id,
        kind,
        data,
        resource_key,
        env,
        wait_until,
        leased_until,
        created_at,
        done_at,
        attempts,
        cancellation_attempts,
        errors,
        result,
        recurrence,
        parent_recurrence_id,
        occurrence_timestamp,
        is_cancelled,
        cancelled_at,
        lease_token,
        version: _,
        outcome,
        snoozes,
        priority,
        max_attempts,
        pruned_at,
        revision: _,
    } = from;
    keep(id, &mut onto.id);
    keep(kind, &mut onto.kind);
    keep(resource_key, &mut onto.resource_key);
    keep(env, &mut onto.env);
    keep(created_at, &mut onto.created_at);
    keep(recurrence, &mut onto.recurrence);
    keep(parent_recurrence_id, &mut onto.parent_recurrence_id);
    keep(occurrence_timestamp, &mut onto.occurrence_timestamp);
    keep(max_attempts, &mut onto.max_attempts);
    for field in Field::ALL {
        if change.writes(field) {
            continue;
        }
        match field {
            Field::LeasedUntil => keep(leased_until, &mut onto.leased_until),
            Field::LeaseToken => keep(lease_token, &mut onto.lease_token),
            Field::WaitUntil => keep(wait_until, &mut onto.wait_until),
            Field::Attempts => keep(attempts, &mut onto.attempts),
            Field::CancellationAttempts => {
                keep(cancellation_attempts, &mut onto.cancellation_attempts)
            }
            Field::Errors => keep(errors, &mut onto.errors),
            Field::DoneAt => keep(done_at, &mut onto.done_at),
            Field::Outcome => keep(outcome, &mut onto.outcome),
            Field::Result => keep(result, &mut onto.result),
            Field::IsCancelled => keep(is_cancelled, &mut onto.is_cancelled),
            Field::CancelledAt => keep(cancelled_at, &mut onto.cancelled_at),
            Field::Snoozes => keep(snoozes, &mut onto.snoozes),
            Field::Priority => keep(priority, &mut onto.priority),
            Field::Data => keep(data, &mut onto.data),
            Field::PrunedAt => keep(pruned_at, &mut onto.pruned_at),
        }
    }
}

/// Result of one conditional write.
#[derive(Debug)]
pub enum SwapOutcome {
    /// Written.
    Applied {
        /// The revision of the document as written, on backends with
        /// revisions ([`Task::revision`]): the fence of the task's next
        /// swap. `None` elsewhere.
        revision: Option<Revision>,
    },
    /// The stored task no longer matches the fence; nothing written.
    Conflict,
    /// No task with this id; nothing written.
    NotFound,
    /// This item failed.
    Failed(crate::error::StoreError),
}

/// The items of `swaps` in rounds, each naming an id at most once and
/// every round in input order: a backend that writes a round in one
/// statement applies an id named twice in a later round, so it is decided
/// on what the earlier item left (as if the items were applied in order).
///
/// ```
/// use chrono::Utc;
/// use oncetask_core::Task;
/// use oncetask_core::store::{Change, Swap, swap_rounds};
///
/// let task = Task::new("a", "k", "E", Utc::now());
/// let swap = Swap::new(&task, Change::Reset, &task);
/// let swaps = [swap.clone(), swap];
/// assert_eq!(swap_rounds(&swaps), vec![vec![0], vec![1]]);
/// ```
pub fn swap_rounds(swaps: &[Swap]) -> Vec<Vec<usize>> {
    let mut rounds = Vec::new();
    let mut waiting: Vec<usize> = (0..swaps.len()).collect();
    while !waiting.is_empty() {
        let mut taken = std::collections::HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) =
            waiting.iter().partition(|&&i| taken.insert(swaps[i].id()));
        rounds.push(round);
        waiting = later;
    }
    rounds
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeDelta;

    use super::*;
    use crate::error::HandlerError;
    use crate::lifecycle::{self, FailurePolicy, HandlerPath, LeaseGrant};
    use crate::recurrence::Recurrence;
    use crate::retry::{FixedDelay, NoRetry};
    use crate::test_support::{t0, task};

    /// Every transition the core swaps, with the change it is written as.
    fn transitions() -> Vec<(&'static str, Task, Change, Task)> {
        let now = t0();
        let grant = LeaseGrant::new(now, Duration::from_secs(60));
        let claimed = lifecycle::claim(&task("a"), &grant);
        let token = &grant.token;
        let retry = FixedDelay {
            max_attempts: 0,
            delay: Duration::from_secs(5),
        };
        let once = NoRetry;
        let err = HandlerError::msg("boom");
        let policy = |r: &str| FailurePolicy {
            retry: if r == "retry" {
                &retry as &dyn crate::retry::RetryPolicy
            } else {
                &once
            },
            cancellation_retry: &once,
            error_history_limit: 5,
        };
        let cancelled = lifecycle::cancel(&claimed, now).expect("not done");
        let mut list = vec![
            (
                "heartbeat",
                claimed.clone(),
                Change::Heartbeat,
                lifecycle::extend_lease(&claimed, token, now, now + TimeDelta::minutes(5))
                    .expect("live lease"),
            ),
            (
                "release",
                claimed.clone(),
                Change::Release,
                lifecycle::release(&claimed, token).expect("leased"),
            ),
            (
                "success",
                claimed.clone(),
                Change::Outcome,
                lifecycle::succeed(&claimed, token, now, Some(serde_json::json!(1)))
                    .expect("leased"),
            ),
            (
                "success after cancel",
                cancelled.clone(),
                Change::Outcome,
                lifecycle::succeed(&cancelled, token, now, None).expect("leased"),
            ),
            (
                "retry",
                claimed.clone(),
                Change::Outcome,
                lifecycle::fail(
                    &claimed,
                    token,
                    now,
                    &err,
                    HandlerPath::Main,
                    policy("retry"),
                )
                .expect("leased"),
            ),
            (
                "failure",
                claimed.clone(),
                Change::Outcome,
                lifecycle::fail(
                    &claimed,
                    token,
                    now,
                    &err,
                    HandlerPath::Main,
                    policy("once"),
                )
                .expect("leased"),
            ),
            ("cancel", claimed.clone(), Change::Cancel, cancelled.clone()),
        ];
        list.push((
            "snooze",
            claimed.clone(),
            Change::Snooze,
            lifecycle::snooze(
                &claimed,
                token,
                now,
                now + TimeDelta::minutes(1),
                HandlerPath::Main,
            )
            .expect("leased"),
        ));
        list.push((
            "reprioritize",
            claimed.clone(),
            Change::Reprioritize,
            lifecycle::reprioritize(&claimed, 3).expect("not done"),
        ));
        let done =
            lifecycle::succeed(&cancelled, token, now, Some(serde_json::json!(2))).expect("leased");
        list.push((
            "reset",
            done.clone(),
            Change::Reset,
            lifecycle::reset(&done).expect("done"),
        ));
        let mut with_payload = done.clone();
        with_payload.data =
            serde_json::Map::from_iter([("to".to_string(), serde_json::json!("a"))]);
        list.push((
            "prune",
            with_payload.clone(),
            Change::Prune,
            lifecycle::prune(&with_payload, now).expect("done"),
        ));
        let generator = Task {
            recurrence: Some(
                Recurrence::new("FREQ=DAILY", "2025-01-06T09:00:00Z").expect("valid rule"),
            ),
            wait_until: Some(now),
            ..task("g")
        };
        let leased = lifecycle::claim(&generator, &grant);
        let step = lifecycle::advance_generator(&leased, token, now).expect("generator");
        list.push(("generator step", leased, Change::Outcome, step.generator));
        list
    }

    #[test]
    fn every_transition_changes_only_the_fields_of_its_change() {
        for (name, before, change, after) in transitions() {
            let swap = Swap::new(&before, change, &after);
            // Taking only the change's fields loses nothing the transition did.
            assert_eq!(
                swap.task(),
                &after,
                "{name}: a field outside {change:?} changed"
            );
            assert_eq!(swap.fence(), &Fence::of(&before), "{name}");
            assert_eq!(Change::between(&before, &after), Some(change), "{name}");
        }
    }

    #[test]
    fn a_swap_from_the_next_task_keeps_only_the_fields_of_its_change() {
        for (name, before, change, after) in transitions() {
            // A result that strays outside its change in every field the
            // change does not write, and in the fixed ones.
            let mut strayed = Task {
                id: "other".into(),
                kind: "other".into(),
                env: "other".into(),
                resource_key: Some("other".into()),
                data: serde_json::Map::from_iter([("x".to_string(), serde_json::json!(1))]),
                parent_recurrence_id: Some("other".into()),
                ..after.clone()
            };
            for field in Field::ALL {
                if change.writes(field) {
                    continue;
                }
                match field {
                    Field::LeasedUntil => strayed.leased_until = Some(t0()),
                    Field::LeaseToken => strayed.lease_token = None,
                    Field::WaitUntil => strayed.wait_until = Some(t0()),
                    Field::Attempts => strayed.attempts = 99,
                    Field::CancellationAttempts => strayed.cancellation_attempts = 99,
                    Field::Errors => strayed.errors = Vec::new(),
                    Field::DoneAt => strayed.done_at = Some(t0()),
                    Field::Outcome => strayed.outcome = Some(crate::task::Outcome::Failed),
                    Field::Result => strayed.result = Some(serde_json::json!("x")),
                    Field::IsCancelled => strayed.is_cancelled = !before.is_cancelled,
                    Field::CancelledAt => strayed.cancelled_at = Some(t0()),
                    Field::Snoozes => strayed.snoozes = 99,
                    Field::Priority => strayed.priority = 9,
                    Field::Data => strayed.data = serde_json::Map::new(),
                    Field::PrunedAt => strayed.pruned_at = Some(t0()),
                }
            }
            let copied = {
                let mut task = before.clone();
                copy_fields(change, &strayed, &mut task);
                task
            };
            let swap = Swap::from_next(&before, change, strayed);
            assert_eq!(swap.fence(), &Fence::of(&before), "{name}");
            assert_eq!(swap.into_task(), copied, "{name}");
            assert_eq!(
                Swap::from_next(&before, change, after.clone()).task(),
                &after,
                "{name}"
            );
        }
    }

    #[test]
    fn only_writes_that_can_make_work_available_are_announced() {
        let announced: Vec<(&str, bool)> = transitions()
            .into_iter()
            .map(|(name, before, change, after)| {
                (
                    name,
                    Swap::new(&before, change, &after).announces_work(t0()),
                )
            })
            .collect();
        assert_eq!(
            announced,
            [
                ("heartbeat", false),
                ("release", true),
                ("success", false),
                ("success after cancel", false),
                ("retry", true),
                ("failure", false),
                ("cancel", true),
                ("snooze", true),
                ("reprioritize", false),
                ("reset", true),
                ("prune", false),
                ("generator step", true),
            ]
        );
        let now = t0();
        let grant = LeaseGrant::new(now, Duration::from_secs(60));
        let keyed = lifecycle::claim(
            &Task {
                resource_key: Some("r".into()),
                ..task("k")
            },
            &grant,
        );
        let done = lifecycle::succeed(&keyed, &grant.token, now, None).expect("leased");
        assert!(
            Swap::new(&keyed, Change::Outcome, &done).announces_work(now),
            "a finished keyed task frees its key"
        );
    }

    #[test]
    fn applying_a_swap_leaves_fields_outside_its_change_as_stored() {
        let now = t0();
        let grant = LeaseGrant::new(now, Duration::from_secs(60));
        let claimed = lifecycle::claim(&task("a"), &grant);
        let later = now + TimeDelta::minutes(5);
        let extended =
            lifecycle::extend_lease(&claimed, &grant.token, now, later).expect("live lease");
        let swap = Swap::new(&claimed, Change::Heartbeat, &extended);
        // Stored meanwhile by a writer that does not bump the version.
        let mut stored = Task {
            is_cancelled: true,
            cancelled_at: Some(now),
            ..claimed.clone()
        };
        swap.apply_to(&mut stored);
        assert_eq!(stored.leased_until, Some(later));
        assert_eq!(stored.version, extended.version);
        assert!(
            stored.is_cancelled,
            "a field the heartbeat does not own was overwritten"
        );
    }
}

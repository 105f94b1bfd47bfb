//! The stored task record and its small value types.
//!
//! A [`Task`] mirrors every field of the Go `OnceTask`, with typed times
//! (`DateTime<Utc>` at millisecond precision) and `Option` for unset values,
//! plus three fields the Go original lacked: a [`LeaseToken`] that fences
//! outcome writes, a `version` that makes read-modify-write safe, and an
//! explicit [`Outcome`] so completed and failed never have to be guessed.

use chrono::{DateTime, DurationRound, SecondsFormat, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::data::TaskData;
use crate::error::Error;
use crate::recurrence::Recurrence;

/// A JSON object: the payload of a task.
pub type JsonObject = Map<String, Value>;

/// The priorities a task may have ([`Task::priority`]): higher is claimed
/// first within a kind ([`crate::store::ClaimOrder`]); 0 is the default. A priority outside the range is
/// refused at create ([`Error::InvalidPriority`]).
///
/// ```
/// assert!(oncetask_core::PRIORITY_RANGE.contains(&0));
/// assert!(!oncetask_core::PRIORITY_RANGE.contains(&11));
/// ```
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i8> = -10..=10;

/// One task, as stored by every backend.
///
/// Tasks are created from a [`TaskData`] value (see [`Task::from_data`]) and
/// then changed only by the pure transitions in [`crate::lifecycle`].
///
/// Equality compares the task's value: it ignores [`Task::revision`], which
/// says where a copy came from, not what the task is.
///
/// The struct is `#[non_exhaustive]`, so that a new field does not break
/// applications: outside this crate, a task is built with [`Task::from_data`]
/// or [`Task::new`] and its fields changed in place, or it goes through
/// [`TaskParts`], its exhaustive form (`Task::from(parts)`,
/// [`Task::into_parts`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Task {
    /// Task identity and idempotency key.
    pub id: String,
    /// The task kind; selects the handler.
    pub kind: String,
    /// The payload, always a JSON object.
    pub data: JsonObject,
    /// Serialization / grouping key; tasks of one kind and env that share it never run at once.
    pub resource_key: Option<String>,
    /// Logical environment (e.g. `prod`, `staging`).
    pub env: String,
    /// Earliest execution time; `None` means "as soon as possible".
    pub wait_until: Option<DateTime<Utc>>,
    /// Lease expiry while a worker holds the task.
    pub leased_until: Option<DateTime<Utc>>,
    /// Creation time (audit).
    pub created_at: DateTime<Utc>,
    /// Set when the task reached a terminal state.
    pub done_at: Option<DateTime<Utc>>,
    /// Number of claims, whatever their outcome. Only a reset (to 0) and the
    /// hand-back of a task claimed ahead that never started lower it.
    pub attempts: u32,
    /// Claims made after the task was cancelled: the count the cancellation
    /// retry policy sees (Go shared `attempts` between both paths, W23).
    #[serde(default)]
    pub cancellation_attempts: u32,
    /// Failure history, oldest first, capped by the manager's error-history limit.
    pub errors: Vec<AttemptError>,
    /// Handler output of the successful run.
    pub result: Option<Value>,
    /// Present on recurrence generators only.
    pub recurrence: Option<Recurrence>,
    /// On occurrences: the generator's id.
    pub parent_recurrence_id: Option<String>,
    /// On occurrences: the slot this occurrence stands for.
    pub occurrence_timestamp: Option<DateTime<Utc>>,
    /// Cancellation flag.
    pub is_cancelled: bool,
    /// When the task was cancelled (audit).
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The token of the claim that holds (or last held) the lease; outcome writes must present it.
    pub lease_token: Option<LeaseToken>,
    /// Changes on every write; conditional writes compare it. Starts at a
    /// random value ([`initial_version`]).
    #[serde(default)]
    pub version: u64,
    /// How a terminal task ended. `None` while the task is not done.
    pub outcome: Option<Outcome>,
    /// Times a handler snoozed the task ([`crate::manager::HandlerOutcome::Snoozed`]):
    /// runs put off without counting as attempts. A reset clears it.
    #[serde(default)]
    pub snoozes: u32,
    /// Claim priority within the kind: higher first, in
    /// [`PRIORITY_RANGE`] (default 0). Set at create; an operator may change
    /// it while the task is not done.
    #[serde(default)]
    pub priority: i8,
    /// Claims the task may take before a failure is final, overriding the
    /// handler's retry policy's own limit; `None` leaves the policy to
    /// decide. Fixed at create.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Set when a pruner turned the finished task into a tombstone
    /// ([`crate::lifecycle::prune`]): its payload, result and errors are
    /// gone; its id still answers "already exists" to a create.
    #[serde(default)]
    pub pruned_at: Option<DateTime<Utc>>,
    /// The stored revision this copy was read from or written as, for
    /// backends whose documents other writers may change without touching
    /// `version` (Firestore, shared with the Go package). `None` for tasks
    /// built in memory and on backends that need none. Never serialized.
    ///
    /// With the version, it is the fence of the next swap decided on this
    /// copy ([`crate::store::Fence::of`]).
    #[serde(skip)]
    pub revision: Option<Revision>,
}

impl PartialEq for Task {
    fn eq(&self, other: &Self) -> bool {
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
            version,
            outcome,
            snoozes,
            priority,
            max_attempts,
            pruned_at,
            revision: _,
        } = self;
        *id == other.id
            && *kind == other.kind
            && *data == other.data
            && *resource_key == other.resource_key
            && *env == other.env
            && *wait_until == other.wait_until
            && *leased_until == other.leased_until
            && *created_at == other.created_at
            && *done_at == other.done_at
            && *attempts == other.attempts
            && *cancellation_attempts == other.cancellation_attempts
            && *errors == other.errors
            && *result == other.result
            && *recurrence == other.recurrence
            && *parent_recurrence_id == other.parent_recurrence_id
            && *occurrence_timestamp == other.occurrence_timestamp
            && *is_cancelled == other.is_cancelled
            && *cancelled_at == other.cancelled_at
            && *lease_token == other.lease_token
            && *version == other.version
            && *outcome == other.outcome
            && *snoozes == other.snoozes
            && *priority == other.priority
            && *max_attempts == other.max_attempts
            && *pruned_at == other.pruned_at
    }
}

/// Every field of a [`Task`], in a struct that is not `#[non_exhaustive]`:
/// the exhaustive form of a task, for backends and tests.
///
/// [`Task`] is `#[non_exhaustive]` so that a new field does not break
/// applications. Backends, which must store every field, build the tasks
/// they decode from parts, naming every field (no `..base`):
/// `Task::from(TaskParts { id, kind, data, /* … */ })`. A new `Task` field
/// is a new `TaskParts` field, so such a backend fails to compile until it
/// stores it. Tests change a few fields of a task with
/// `TaskParts { attempts: 2, ..task.into_parts() }.into()`.
///
/// The fields and their meaning are those of [`Task`]. Unlike `Task`'s,
/// the equality of parts compares every field, `revision` included.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskParts {
    /// Task identity and idempotency key.
    pub id: String,
    /// The task kind; selects the handler.
    pub kind: String,
    /// The payload, always a JSON object.
    pub data: JsonObject,
    /// Serialization / grouping key; tasks of one kind and env that share it never run at once.
    pub resource_key: Option<String>,
    /// Logical environment (e.g. `prod`, `staging`).
    pub env: String,
    /// Earliest execution time; `None` means "as soon as possible".
    pub wait_until: Option<DateTime<Utc>>,
    /// Lease expiry while a worker holds the task.
    pub leased_until: Option<DateTime<Utc>>,
    /// Creation time (audit).
    pub created_at: DateTime<Utc>,
    /// Set when the task reached a terminal state.
    pub done_at: Option<DateTime<Utc>>,
    /// Number of claims, whatever their outcome. Only a reset (to 0) and the
    /// hand-back of a task claimed ahead that never started lower it.
    pub attempts: u32,
    /// Claims made after the task was cancelled: the count the cancellation
    /// retry policy sees (Go shared `attempts` between both paths, W23).
    pub cancellation_attempts: u32,
    /// Failure history, oldest first, capped by the manager's error-history limit.
    pub errors: Vec<AttemptError>,
    /// Handler output of the successful run.
    pub result: Option<Value>,
    /// Present on recurrence generators only.
    pub recurrence: Option<Recurrence>,
    /// On occurrences: the generator's id.
    pub parent_recurrence_id: Option<String>,
    /// On occurrences: the slot this occurrence stands for.
    pub occurrence_timestamp: Option<DateTime<Utc>>,
    /// Cancellation flag.
    pub is_cancelled: bool,
    /// When the task was cancelled (audit).
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The token of the claim that holds (or last held) the lease; outcome writes must present it.
    pub lease_token: Option<LeaseToken>,
    /// Changes on every write; conditional writes compare it. Starts at a
    /// random value ([`initial_version`]).
    pub version: u64,
    /// How a terminal task ended. `None` while the task is not done.
    pub outcome: Option<Outcome>,
    /// Times a handler snoozed the task.
    pub snoozes: u32,
    /// Claim priority within the kind.
    pub priority: i8,
    /// Per-task attempt limit, overriding the retry policy's.
    pub max_attempts: Option<u32>,
    /// When the task became a tombstone.
    pub pruned_at: Option<DateTime<Utc>>,
    /// The stored revision this copy was read from or written as, for
    /// backends whose documents other writers may change without touching
    /// `version` (Firestore, shared with the Go package). `None` for tasks
    /// built in memory and on backends that need none. Never serialized.
    ///
    /// With the version, it is the fence of the next swap decided on this
    /// copy ([`crate::store::Fence::of`]).
    pub revision: Option<Revision>,
}

impl From<TaskParts> for Task {
    fn from(parts: TaskParts) -> Task {
        // Destructured, so that a field of one struct missing in the other
        // fails to compile.
        let TaskParts {
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
            version,
            outcome,
            snoozes,
            priority,
            max_attempts,
            pruned_at,
            revision,
        } = parts;
        Task {
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
            version,
            outcome,
            snoozes,
            priority,
            max_attempts,
            pruned_at,
            revision,
        }
    }
}

impl Task {
    /// A pending task with an empty payload, ready at once, starting at a
    /// fresh [`initial_version`]. Most code builds tasks with
    /// [`Task::from_data`]; this is for backends and tests.
    pub fn new(
        id: impl Into<String>,
        kind: impl Into<String>,
        env: impl Into<String>,
        created_at: DateTime<Utc>,
    ) -> Task {
        Task {
            id: id.into(),
            kind: kind.into(),
            data: JsonObject::new(),
            resource_key: None,
            env: env.into(),
            wait_until: None,
            leased_until: None,
            created_at: truncate_to_millis(created_at),
            done_at: None,
            attempts: 0,
            cancellation_attempts: 0,
            errors: Vec::new(),
            result: None,
            recurrence: None,
            parent_recurrence_id: None,
            occurrence_timestamp: None,
            is_cancelled: false,
            cancelled_at: None,
            lease_token: None,
            version: initial_version(),
            outcome: None,
            snoozes: 0,
            priority: 0,
            max_attempts: None,
            pruned_at: None,
            revision: None,
        }
    }

    /// Takes the task apart into its exhaustive form, the inverse of
    /// `Task::from(parts)`.
    pub fn into_parts(self) -> TaskParts {
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
            version,
            outcome,
            snoozes,
            priority,
            max_attempts,
            pruned_at,
            revision,
        } = self;
        TaskParts {
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
            version,
            outcome,
            snoozes,
            priority,
            max_attempts,
            pruned_at,
            revision,
        }
    }

    /// Decodes the payload into `T`, checking that `T`'s kind matches the task's kind.
    ///
    /// ```
    /// # use oncetask_core::{TaskData, Task};
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize)]
    /// struct Email { to: String }
    /// impl TaskData for Email {
    ///     type Kind = &'static str;
    ///     fn kind(&self) -> &'static str { "email" }
    ///     fn idempotent_id(&self) -> String { format!("email-{}", self.to) }
    /// }
    /// let now = chrono::Utc::now();
    /// let task = Task::from_data(&Email { to: "a@b.c".into() }, "DEFAULT", now)?;
    /// let email: Email = task.read_into()?;
    /// assert_eq!(email.to, "a@b.c");
    /// # Ok::<(), oncetask_core::Error>(())
    /// ```
    pub fn read_into<T: TaskData + DeserializeOwned>(&self) -> Result<T, Error> {
        let value: T = serde_json::from_value(Value::Object(self.data.clone())).map_err(|e| {
            Error::DataDecode {
                id: self.id.clone(),
                kind: self.kind.clone(),
                reason: e.to_string(),
            }
        })?;
        let expected = crate::data::TaskKind::as_str(&value.kind()).to_owned();
        if expected != self.kind {
            return Err(Error::KindMismatch {
                expected,
                actual: self.kind.clone(),
            });
        }
        Ok(value)
    }

    /// True for a recurrence generator.
    pub fn is_generator(&self) -> bool {
        self.recurrence.is_some()
    }

    /// True once the task reached a terminal state.
    pub fn is_done(&self) -> bool {
        self.done_at.is_some()
    }

    /// True when a pruner turned the task into a tombstone
    /// ([`Task::pruned_at`]): only its identity, status and finish time remain.
    pub fn is_tombstone(&self) -> bool {
        self.pruned_at.is_some()
    }

    /// True when the task holds a lease that has not expired at `now`.
    pub fn is_leased_at(&self, now: DateTime<Utc>) -> bool {
        !self.is_done() && self.leased_until.is_some_and(|l| l > now)
    }

    /// True when a worker may claim the task at `now`: not done, not waiting, not leased.
    pub fn is_ready_at(&self, now: DateTime<Utc>) -> bool {
        !self.is_done()
            && self.wait_until.is_none_or(|w| w <= now)
            && self.leased_until.is_none_or(|l| l <= now)
    }

    /// The instant the task becomes claimable, or `None` for done tasks.
    ///
    /// `None` fields count as "long ago", so a fresh task is due at `DateTime::<Utc>::MIN_UTC`.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        if self.is_done() {
            return None;
        }
        let wait = self.wait_until.unwrap_or(DateTime::<Utc>::MIN_UTC);
        let lease = self.leased_until.unwrap_or(DateTime::<Utc>::MIN_UTC);
        Some(wait.max(lease))
    }

    /// Sort key for claims: never-leased tasks first, then expired leases oldest
    /// first; within each, earliest `wait_until` first (docs/semantics.md S7.3), then
    /// creation time and id so that backends break ties the same way (one
    /// may put the resource key before the id, see [`crate::Store::claim`]).
    pub fn claim_order_key(&self) -> ClaimOrderKey<'_> {
        (
            self.leased_until,
            self.wait_until,
            self.created_at,
            &self.id,
        )
    }
}

/// Sort key of [`Task::claim_order_key`]: `(leased_until, wait_until, created_at, id)`.
pub type ClaimOrderKey<'a> = (
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    &'a str,
);

/// One recorded failed execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// When the failure was recorded.
    pub at: DateTime<Utc>,
    /// The error's message text.
    pub error: String,
}

/// How a terminal task ended. Stored explicitly (Go inferred it from counts, W4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The handler succeeded (or a generator ran out of slots).
    Completed,
    /// The retry policy gave up.
    Failed,
    /// The task was cancelled and its cancellation path finished.
    Cancelled,
}

/// A unique value handed out with each claim; outcome writes must present it.
///
/// It is never reused (unlike the attempt count, which a reset sets back to 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseToken(String);

impl LeaseToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Wraps a stored token value.
    pub fn from_stored(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A backend's opaque mark of one stored state of a task's document, such
/// as Firestore's update time: it changes on every write to the document,
/// whoever makes it (a Go service included), and the backend can make a write
/// conditional on it. The core only carries it from read to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revision(u128);

impl Revision {
    /// Wraps a backend's value.
    pub const fn from_raw(raw: u128) -> Self {
        Self(raw)
    }

    /// The backend's value.
    pub const fn raw(self) -> u128 {
        self.0
    }
}

/// The version of a newly built task: random, so that a task deleted and
/// created again under the same id never repeats a version a stale worker
/// still holds (its swap would otherwise land on the new task). Kept below
/// 2^53 so every backend stores it exactly (JSON numbers, signed integers).
pub fn initial_version() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 >> 11
}

/// Truncates a time to whole milliseconds, the precision of every stored time.
pub fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(t)
}

/// Formats a time as RFC 3339 UTC with a `Z`, showing milliseconds only when non-zero
/// (`2025-01-06T09:00:00Z`, `2025-01-06T09:00:00.250Z`), the form used in occurrence ids.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn truncation_drops_sub_millisecond_digits() {
        let t = Utc.timestamp_opt(1_700_000_000, 123_456_789).single();
        let t = t
            .map(truncate_to_millis)
            .map(|t| t.timestamp_subsec_nanos());
        assert_eq!(t, Some(123_000_000));
    }

    #[test]
    fn timestamps_show_millis_only_when_present() {
        let whole = Utc.with_ymd_and_hms(2025, 1, 6, 9, 0, 0).single();
        assert_eq!(
            whole.map(format_timestamp).as_deref(),
            Some("2025-01-06T09:00:00Z")
        );
        let frac = whole.map(|t| t + TimeDelta::milliseconds(250));
        assert_eq!(
            frac.map(format_timestamp).as_deref(),
            Some("2025-01-06T09:00:00.250Z")
        );
    }
}

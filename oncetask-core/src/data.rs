//! The task-data contract (Go `Data`): what a user type must say about itself
//! to become a task.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::recurrence::{Recurrence, RecurrenceError};

/// A task kind: selects the handler. Implemented for strings; implement it
/// for your own enum to get typed kinds.
///
/// ```
/// use oncetask_core::TaskKind;
/// #[derive(Clone, Copy)]
/// enum Kind { SendEmail, SyncCalendar }
/// impl TaskKind for Kind {
///     fn as_str(&self) -> &str {
///         match self {
///             Kind::SendEmail => "send_email",
///             Kind::SyncCalendar => "sync_calendar",
///         }
///     }
/// }
/// assert_eq!(Kind::SendEmail.as_str(), "send_email");
/// ```
pub trait TaskKind: Send + Sync {
    /// The stored name of the kind.
    fn as_str(&self) -> &str;
}

impl TaskKind for &str {
    fn as_str(&self) -> &str {
        self
    }
}

impl TaskKind for String {
    fn as_str(&self) -> &str {
        self
    }
}

/// The payload of a task and the facts needed to store it.
///
/// `kind` and `idempotent_id` are required; the rest have "none" defaults.
/// Equal payloads must give equal ids, so creating a task twice is a no-op.
///
/// ```
/// use oncetask_core::TaskData;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SyncCalendar { calendar_id: String }
///
/// impl TaskData for SyncCalendar {
///     type Kind = &'static str;
///     fn kind(&self) -> &'static str { "sync_calendar" }
///     fn idempotent_id(&self) -> String { format!("sync-{}", self.calendar_id) }
///     // Only one sync per calendar runs at a time.
///     fn resource_key(&self) -> Option<String> { Some(self.calendar_id.clone()) }
/// }
/// ```
pub trait TaskData: Serialize {
    /// The kind type (a string or a user enum).
    type Kind: TaskKind;

    /// The task kind.
    fn kind(&self) -> Self::Kind;

    /// A deterministic id built from the task's natural key.
    fn idempotent_id(&self) -> String;

    /// Tasks of one kind and env sharing this key never run concurrently.
    fn resource_key(&self) -> Option<String> {
        None
    }

    /// Do not run before this time.
    fn scheduled_at(&self) -> Option<DateTime<Utc>> {
        None
    }

    /// Makes the task a recurrence generator that spawns one occurrence per
    /// slot. A rule that does not parse is an error here, and
    /// [`Manager::create`](crate::Manager::create) then fails with
    /// [`Error::InvalidRecurrence`](crate::Error::InvalidRecurrence) and
    /// stores nothing (a typo must not quietly store a task that runs once).
    ///
    /// ```
    /// use oncetask_core::{Recurrence, RecurrenceError, TaskData};
    /// use serde::Serialize;
    ///
    /// #[derive(Serialize)]
    /// struct WeeklyReport { rule: String }
    ///
    /// impl TaskData for WeeklyReport {
    ///     type Kind = &'static str;
    ///     fn kind(&self) -> &'static str { "weekly_report" }
    ///     fn idempotent_id(&self) -> String { "weekly-report".into() }
    ///     fn recurrence(&self) -> Result<Option<Recurrence>, RecurrenceError> {
    ///         Recurrence::new(&self.rule, "2025-01-06T09:00:00Z").map(Some)
    ///     }
    /// }
    ///
    /// let typo = WeeklyReport { rule: "FREQ=WEEKLY;BYDAY=MOO".into() };
    /// assert!(typo.recurrence().is_err());
    /// ```
    fn recurrence(&self) -> Result<Option<Recurrence>, RecurrenceError> {
        Ok(None)
    }

    /// Claim priority within the kind, higher first, in
    /// [`PRIORITY_RANGE`](crate::PRIORITY_RANGE); 0 by default (see
    /// [`ClaimOrder`](crate::store::ClaimOrder) for how claims use it). A value
    /// outside the range is refused at create
    /// ([`Error::InvalidPriority`](crate::Error::InvalidPriority)).
    fn priority(&self) -> i8 {
        0
    }

    /// Claims this task may take before a failure is final, overriding the
    /// retry policy's own limit (the policy still sets the delays); `None`
    /// (the default) leaves it to the policy. `Some(0)` is refused at create
    /// ([`Error::InvalidMaxAttempts`](crate::Error::InvalidMaxAttempts)).
    fn max_attempts(&self) -> Option<u32> {
        None
    }
}

/// A task type bound to one kind: the kind is a constant of the type, and a
/// handler registered with [`Manager::register`](crate::Manager::register)
/// receives the payload decoded as this type (River's `JobArgs`).
///
/// Every `TaskArgs` type is a [`TaskData`], so it is created the same way.
/// Implement [`TaskData`] instead only when the kind is chosen at run time.
///
/// ```
/// use oncetask_core::{TaskArgs, TaskData};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendEmail { to: String }
///
/// impl TaskArgs for SendEmail {
///     const KIND: &'static str = "send_email";
///     fn idempotent_id(&self) -> String { format!("email-{}", self.to) }
/// }
///
/// let email = SendEmail { to: "ada@example.com".into() };
/// assert_eq!(email.kind(), "send_email");
/// ```
pub trait TaskArgs: Serialize + DeserializeOwned + Send + 'static {
    /// The stored name of the kind.
    const KIND: &'static str;

    /// A deterministic id built from the task's natural key
    /// ([`TaskData::idempotent_id`]).
    fn idempotent_id(&self) -> String;

    /// See [`TaskData::resource_key`].
    fn resource_key(&self) -> Option<String> {
        None
    }

    /// See [`TaskData::scheduled_at`].
    fn scheduled_at(&self) -> Option<DateTime<Utc>> {
        None
    }

    /// See [`TaskData::recurrence`]: a rule that does not parse is an error
    /// at create, and nothing is stored.
    fn recurrence(&self) -> Result<Option<Recurrence>, RecurrenceError> {
        Ok(None)
    }

    /// See [`TaskData::priority`].
    fn priority(&self) -> i8 {
        0
    }

    /// See [`TaskData::max_attempts`].
    fn max_attempts(&self) -> Option<u32> {
        None
    }
}

impl<T: TaskArgs> TaskData for T {
    type Kind = &'static str;

    fn kind(&self) -> &'static str {
        T::KIND
    }

    fn idempotent_id(&self) -> String {
        TaskArgs::idempotent_id(self)
    }

    fn resource_key(&self) -> Option<String> {
        TaskArgs::resource_key(self)
    }

    fn scheduled_at(&self) -> Option<DateTime<Utc>> {
        TaskArgs::scheduled_at(self)
    }

    fn recurrence(&self) -> Result<Option<Recurrence>, RecurrenceError> {
        TaskArgs::recurrence(self)
    }

    fn priority(&self) -> i8 {
        TaskArgs::priority(self)
    }

    fn max_attempts(&self) -> Option<u32> {
        TaskArgs::max_attempts(self)
    }
}

//! Error types. Every fallible public call returns [`Error`]; backends report
//! [`StoreError`].

use crate::recurrence::RecurrenceError;

/// Errors of the oncetask API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The task's idempotent id is empty.
    #[error("task id must not be empty")]
    EmptyId,
    /// The payload does not serialize to a JSON object.
    #[error("task {id}: data must serialize to a JSON object: {reason}")]
    InvalidData {
        /// Task id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The recurrence is invalid.
    #[error("task {id}: {source}")]
    InvalidRecurrence {
        /// Task id.
        id: String,
        /// What is wrong with it.
        #[source]
        source: RecurrenceError,
    },
    /// A task cannot be both scheduled and recurring.
    #[error(
        "task {id}: cannot specify both a recurrence and a scheduled time - recurring tasks use the recurrence for scheduling"
    )]
    ScheduleConflict {
        /// Task id.
        id: String,
    },
    /// The task's priority is outside [`PRIORITY_RANGE`](crate::PRIORITY_RANGE).
    #[error("task {id}: priority {priority} is outside {min}..={max}", min = crate::PRIORITY_RANGE.start(), max = crate::PRIORITY_RANGE.end())]
    InvalidPriority {
        /// Task id.
        id: String,
        /// The priority asked for.
        priority: i8,
    },
    /// The task's own attempt limit is 0: it could never run.
    #[error("task {id}: max attempts must be at least 1")]
    InvalidMaxAttempts {
        /// Task id.
        id: String,
    },
    /// No handler is registered (or kind declared) for this kind in this manager.
    #[error("unknown task kind {kind:?}: register a handler or declare the kind first")]
    UnknownKind {
        /// The kind.
        kind: String,
    },
    /// The task exists but belongs to another environment.
    #[error("task {id} is in environment {task_env:?}, not {expected_env:?}")]
    WrongEnvironment {
        /// Task id.
        id: String,
        /// Env stored on the task.
        task_env: String,
        /// Env of this manager.
        expected_env: String,
    },
    /// A listing asked a manager for another environment's tasks (build
    /// filters with [`Manager::filter`](crate::Manager::filter)).
    #[error("the filter is for environment {filter_env:?}, this manager serves {manager_env:?}")]
    FilterEnvironment {
        /// Env of the filter.
        filter_env: String,
        /// Env of this manager.
        manager_env: String,
    },
    /// The task is leased by a running handler; the operation would break
    /// its resource key's exclusion. Cancel it, or retry once it finished.
    #[error("task {id} is running; cancel it or retry when it has finished")]
    TaskRunning {
        /// Task id.
        id: String,
    },
    /// The task was pruned to a tombstone ([`crate::Task::is_tombstone`]):
    /// its payload is gone, so it can be neither cancelled nor reset. It
    /// can still be deleted (which also drops its idempotency).
    #[error(
        "task {id} was pruned to a tombstone: its payload is gone, so it cannot be cancelled or reset (delete it to create it again)"
    )]
    Pruned {
        /// Task id.
        id: String,
    },
    /// A handler is already registered for this kind.
    #[error("handler for this task kind already exists: task kind {kind}")]
    HandlerAlreadyExists {
        /// The kind.
        kind: String,
    },
    /// `read_into` was asked for a type of another kind.
    #[error("expected task kind {expected}, got {actual}")]
    KindMismatch {
        /// Kind of the target type.
        expected: String,
        /// Kind of the task.
        actual: String,
    },
    /// The payload does not decode into the requested type.
    #[error("task {id} ({kind}): cannot decode data: {reason}")]
    DataDecode {
        /// Task id.
        id: String,
        /// Task kind.
        kind: String,
        /// Decoder message.
        reason: String,
    },
    /// An invalid option value.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A bug inside oncetask or a backend (e.g. a backend broke the Store contract).
    #[error("internal error: {0}")]
    Internal(String),
    /// The manager is shutting down and takes no new work.
    #[error("the manager is shutting down")]
    ShuttingDown,
    /// The storage backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors reported by a [`crate::Store`] implementation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached.
    #[error("storage backend unreachable: {0}")]
    Unavailable(String),
    /// The backend's configuration is invalid: a malformed URL, a schema,
    /// prefix or other setting it cannot use (reported at once, before
    /// anything is sent), or credentials or a database the server refuses
    /// (reported by the server). Retrying with the same settings does not
    /// help, unless the database or its permissions are still being set up.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// A stored document cannot be decoded into a task.
    #[error("task {id}: stored document cannot be decoded: {reason}")]
    Undecodable {
        /// Document id.
        id: String,
        /// Decoder message.
        reason: String,
    },
    /// A value cannot be encoded for storage.
    #[error("task {id}: cannot be encoded for storage: {reason}")]
    Unencodable {
        /// Task id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A query needs an index the database does not have, or one still
    /// building (Cloud Firestore refuses such a query with
    /// FAILED_PRECONDITION). Not transient in the usual sense: it lasts
    /// until the index is created and has finished building. Deploy the
    /// backend's index file, or follow `create_link`.
    #[error(
        "the query needs an index that is missing or still building: {}",
        match create_link {
            Some(link) => format!("create it at {link} (or deploy the backend's index file)"),
            None => format!("deploy the backend's index file ({message})"),
        }
    )]
    MissingIndex {
        /// The database's own message.
        message: String,
        /// The link the database gives to create the index, when it gives one.
        create_link: Option<String>,
    },
    /// The store does not serve this request, by design (a listing no
    /// index serves, see [`Store::check_filter`](crate::Store::check_filter));
    /// the message says why and what it serves instead. Nothing was read
    /// or written.
    #[error("not served by this store: {0}")]
    Unsupported(String),
    /// Any other backend failure.
    #[error("storage backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend(e.into())
    }
}

/// The error a handler returned (or its panic, or its timeout).
///
/// Retry policies receive it, so a custom policy can look at the message or
/// downcast the source to the handler's own error type. An error made with
/// [`HandlerError::permanent`] ends the task `failed` at once, whatever the
/// retry policy (River's `JobCancel`, BullMQ's `UnrecoverableError`).
#[derive(Debug)]
pub struct HandlerError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    permanent: bool,
}

impl HandlerError {
    /// An error with a message only.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
            permanent: false,
        }
    }

    /// Wraps an error value, keeping it for [`HandlerError::downcast_ref`].
    /// A `HandlerError` passed in is kept as it is (permanent or not).
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let source = source.into();
        match source.downcast::<HandlerError>() {
            Ok(already) => *already,
            Err(source) => Self {
                message: source.to_string(),
                source: Some(source),
                permanent: false,
            },
        }
    }

    /// An error that fails the task at once: no retry, whatever the policy.
    /// From a cancellation handler, the task ends `cancelled` at once.
    ///
    /// ```
    /// # use oncetask_core::HandlerError;
    /// let err = HandlerError::permanent("the account was closed");
    /// assert!(err.is_permanent());
    /// assert_eq!(err.message(), "the account was closed");
    /// ```
    pub fn permanent(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            permanent: true,
            ..Self::new(source)
        }
    }

    /// Whether the error ends the task without a retry.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The text recorded in the task's error history.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The handler's own error value, if it is a `T`.
    ///
    /// ```
    /// # use oncetask_core::HandlerError;
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("rate limited, retry in {0}s")]
    /// struct RateLimited(u64);
    /// let err = HandlerError::new(RateLimited(30));
    /// assert_eq!(err.downcast_ref::<RateLimited>().map(|r| r.0), Some(30));
    /// ```
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.source.as_deref().and_then(|s| s.downcast_ref::<T>())
    }
}

/// A stored payload that does not decode as the handler's argument type.
/// The task fails permanently with it: a retry would decode the same bytes.
#[derive(Debug, thiserror::Error)]
#[error("task {id}: payload does not decode as {type_name}: {reason}")]
#[non_exhaustive]
pub struct PayloadError {
    /// The task id.
    pub id: String,
    /// The Rust type the handler expects.
    pub type_name: &'static str,
    /// What the decoder said.
    pub reason: String,
}

impl PayloadError {
    /// The payload of task `id` does not decode as `T` (for a
    /// [`FromTask`](crate::manager::FromTask) of your own).
    pub fn new<T: ?Sized>(id: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self {
            id: id.into(),
            type_name: std::any::type_name::<T>(),
            reason: reason.to_string(),
        }
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

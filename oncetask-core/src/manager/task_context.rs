//! What a handler knows about the task it runs, besides its payload.

use chrono::{DateTime, Utc};

use crate::manager::running::CancelSignal;
use crate::task::Task;

/// The facts of the claimed task a handler runs: its identity, attempt and
/// lease, and whether it has been cancelled since it started
/// ([`TaskContext::cancelled`]). Handed to every
/// [`Handler`](crate::manager::Handler) next to the decoded payload. Fields
/// will be added (it is `#[non_exhaustive]`); build one for a unit test
/// with [`TaskContext::of`].
///
/// ```
/// use chrono::Utc;
/// use oncetask_core::manager::TaskContext;
/// use oncetask_core::Task;
///
/// let task = Task::new("email-ada", "send_email", "prod", Utc::now());
/// let cx = TaskContext::of(&task);
/// assert_eq!(cx.id, "email-ada");
/// assert_eq!(cx.attempt, 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskContext {
    /// The task id.
    pub id: String,
    /// The task kind.
    pub kind: String,
    /// The environment the task belongs to.
    pub env: String,
    /// Tasks of one kind and env sharing this key never run concurrently.
    pub resource_key: Option<String>,
    /// Runs of this handler on this task so far, this one included (1 on
    /// the first run): the main handler's attempts, or in a cancellation
    /// handler the cancellation path's own count.
    pub attempt: u32,
    /// Whether the task was cancelled when this run started: true in a
    /// cancellation handler. A main handler never starts on a cancelled
    /// task; a cancel during its run arrives through
    /// [`TaskContext::cancelled`].
    pub is_cancelled: bool,
    /// When the task was created.
    pub created_at: DateTime<Utc>,
    /// When the lease of this run ends unless a heartbeat extends it.
    pub leased_until: Option<DateTime<Utc>>,
    /// For an occurrence of a recurring task: its generator's id.
    pub parent_recurrence_id: Option<String>,
    /// For an occurrence of a recurring task: the slot it was spawned for.
    pub occurrence_timestamp: Option<DateTime<Utc>>,
    /// Times the task was snoozed so far.
    pub snoozes: u32,
    /// The task's claim priority.
    pub priority: i8,
    /// Raised when the task is cancelled while this run goes on.
    cancel: CancelSignal,
}

impl TaskContext {
    /// The context of `task` as stored, for the path its cancel flag
    /// selects (the cancellation handler's for a cancelled task).
    pub fn of(task: &Task) -> Self {
        Self::of_run(task, task.is_cancelled, CancelSignal::default())
    }

    /// Resolves when the task is cancelled while this main handler runs
    /// (from any process sharing the store): a handler that can stop early
    /// selects on it and returns, and its outcome is recorded as
    /// cancelled whatever it returns (an error runs the cancellation path,
    /// a success ends the task cancelled with its result kept). A handler
    /// that ignores it runs to its end, with the same outcome. Never
    /// resolves in a cancellation handler, or for a context built with
    /// [`TaskContext::of`].
    ///
    /// The signal comes from the manager's own cancel at once, from another
    /// process through the store's change notices (in the bench about 1 ms
    /// on Postgres, Redis and memory; on Firestore up to about 1 s, as a
    /// store writes its wake-up signal at most once a second), or at the
    /// latest from the next heartbeat. A manager forwards notices only
    /// while it runs worker loops; without them (and without a heartbeat)
    /// a cancel made elsewhere is seen when the handler's outcome is
    /// written, which then records it as cancelled.
    ///
    /// ```
    /// use std::time::Duration;
    /// use oncetask_core::manager::TaskContext;
    ///
    /// async fn export(cx: TaskContext) -> Result<(), &'static str> {
    ///     for _chunk in 0..1_000 {
    ///         tokio::select! {
    ///             _ = cx.cancelled() => return Err("cancelled: stopped early"),
    ///             _ = tokio::time::sleep(Duration::from_millis(10)) => {}
    ///         }
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub async fn cancelled(&self) {
        self.cancel.raised().await
    }

    /// Whether the task has been cancelled while this main handler runs
    /// (see [`TaskContext::cancelled`]), for a handler that checks between
    /// steps instead of awaiting.
    pub fn is_cancel_requested(&self) -> bool {
        self.cancel.is_raised()
    }

    /// The context of a run of `task` by its cancellation handler
    /// (`cancellation`) or its main handler, whose attempt counts differ: a
    /// task cancelled after its claim may still reach its main handler.
    pub(crate) fn of_run(task: &Task, cancellation: bool, cancel: CancelSignal) -> Self {
        Self {
            id: task.id.clone(),
            kind: task.kind.clone(),
            env: task.env.clone(),
            resource_key: task.resource_key.clone(),
            attempt: if cancellation {
                task.cancellation_attempts
            } else {
                task.attempts
            },
            is_cancelled: task.is_cancelled,
            created_at: task.created_at,
            leased_until: task.leased_until,
            parent_recurrence_id: task.parent_recurrence_id.clone(),
            occurrence_timestamp: task.occurrence_timestamp,
            snoozes: task.snoozes,
            priority: task.priority,
            cancel,
        }
    }
}

//! Status derivation: the seven statuses and their precedence (behavior.md §4).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::task::{Outcome, Task};

/// The execution status of a task, derived from its fields at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskStatus {
    /// Scheduled for later, or backing off after a failure.
    Waiting,
    /// Ready to run now.
    Pending,
    /// A worker holds a live lease.
    Leased,
    /// Cancelled, cancellation path not finished yet.
    CancellationPending,
    /// Finished successfully.
    Completed,
    /// Retries exhausted.
    Failed,
    /// Cancelled and finished.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in a stable order.
    pub const ALL: [TaskStatus; 7] = [
        TaskStatus::Waiting,
        TaskStatus::Pending,
        TaskStatus::Leased,
        TaskStatus::CancellationPending,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// The stored / displayed name (`cancellationPending`, ...), as in the Go package.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Waiting => "waiting",
            TaskStatus::Pending => "pending",
            TaskStatus::Leased => "leased",
            TaskStatus::CancellationPending => "cancellationPending",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// True for completed, failed and cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

impl Task {
    /// Derives the status at `now`.
    ///
    /// Precedence: done (cancelled > explicit outcome) > cancellation pending >
    /// leased > waiting > pending. A lease or wait equal to `now` is not in the future.
    ///
    /// ```
    /// # use oncetask_core::{Task, TaskStatus};
    /// # fn demo(task: &Task) {
    /// let status = task.status(chrono::Utc::now());
    /// if status.is_terminal() { println!("{} finished: {status}", task.id); }
    /// # }
    /// ```
    pub fn status(&self, now: DateTime<Utc>) -> TaskStatus {
        if self.done_at.is_some() {
            if self.is_cancelled {
                return TaskStatus::Cancelled;
            }
            return match self.outcome {
                Some(Outcome::Completed) => TaskStatus::Completed,
                Some(Outcome::Failed) => TaskStatus::Failed,
                Some(Outcome::Cancelled) => TaskStatus::Cancelled,
                // Documents written by the Go package carry no outcome: use its count rule.
                None if self.attempts as usize > self.errors.len() => TaskStatus::Completed,
                None => TaskStatus::Failed,
            };
        }
        if self.is_cancelled {
            return TaskStatus::CancellationPending;
        }
        if self.leased_until.is_some_and(|l| l > now) {
            return TaskStatus::Leased;
        }
        if self.wait_until.is_some_and(|w| w > now) {
            return TaskStatus::Waiting;
        }
        TaskStatus::Pending
    }
}

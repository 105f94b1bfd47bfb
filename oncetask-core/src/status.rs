//! Status derivation: the seven statuses and their precedence (docs/semantics.md S4).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::task::{Outcome, Task};

/// The execution status of a task, derived from its fields at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
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

    /// A status name, case-insensitive, with `-` and `_` ignored (so
    /// `cancellation-pending` is `cancellationPending`), as operators
    /// type them.
    ///
    /// ```
    /// use oncetask_core::TaskStatus;
    ///
    /// assert_eq!("cancellation-pending".parse(), Ok(TaskStatus::CancellationPending));
    /// assert!("done".parse::<TaskStatus>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted: String = s.chars().filter(|c| *c != '-' && *c != '_').collect();
        TaskStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(&wanted))
            .ok_or_else(|| {
                let names: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown status {s:?}; expected one of {}", names.join(", "))
            })
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

/// What [`Store::count_by_status`](crate::Store::count_by_status) counts:
/// tasks per status (statuses with no task are absent) and, apart from
/// them, documents that cannot be decoded into a task.
///
/// It dereferences to the per-status map, so `counts.get(&status)`,
/// iteration and `counts.values().sum()` (tasks only) work as on a map.
///
/// ```
/// # use oncetask_core::{TaskStatus, store::StatusCounts};
/// let mut counts = StatusCounts::from([(TaskStatus::Pending, 2)]);
/// counts.undecodable = 1;
/// assert_eq!(counts.count(TaskStatus::Pending), 2);
/// assert_eq!(counts.tasks(), 2);
/// assert_eq!(counts.documents(), 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct StatusCounts {
    /// Tasks per status; statuses with no task are absent.
    pub by_status: BTreeMap<TaskStatus, u64>,
    /// Stored documents that cannot be decoded into a task (see
    /// [`Fetched::Undecodable`](crate::store::Fetched::Undecodable)): they have no status, so they are in no
    /// entry of `by_status`.
    pub undecodable: u64,
}

impl StatusCounts {
    /// No task, no undecodable document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of tasks with `status`.
    pub fn count(&self, status: TaskStatus) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// Adds `n` tasks of `status` (a zero adds no entry).
    pub fn add(&mut self, status: TaskStatus, n: u64) {
        if n > 0 {
            *self.by_status.entry(status).or_insert(0) += n;
        }
    }

    /// Number of tasks, whatever their status (undecodable documents excluded).
    pub fn tasks(&self) -> u64 {
        self.by_status.values().sum()
    }

    /// Number of stored documents counted: tasks plus undecodable ones.
    pub fn documents(&self) -> u64 {
        self.tasks() + self.undecodable
    }

    /// Adds every count of `other` to these.
    pub fn merge(&mut self, other: &StatusCounts) {
        for (status, n) in &other.by_status {
            self.add(*status, *n);
        }
        self.undecodable += other.undecodable;
    }
}

impl std::ops::Deref for StatusCounts {
    type Target = BTreeMap<TaskStatus, u64>;

    fn deref(&self) -> &Self::Target {
        &self.by_status
    }
}

impl std::ops::DerefMut for StatusCounts {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.by_status
    }
}

impl<const N: usize> From<[(TaskStatus, u64); N]> for StatusCounts {
    /// Tasks per status, no undecodable document.
    fn from(counts: [(TaskStatus, u64); N]) -> Self {
        counts.into_iter().collect()
    }
}

impl FromIterator<(TaskStatus, u64)> for StatusCounts {
    /// Tasks per status (repeated statuses add up), no undecodable document.
    fn from_iter<I: IntoIterator<Item = (TaskStatus, u64)>>(iter: I) -> Self {
        let mut counts = StatusCounts::new();
        for (status, n) in iter {
            counts.add(status, n);
        }
        counts
    }
}

impl IntoIterator for StatusCounts {
    type Item = (TaskStatus, u64);
    type IntoIter = std::collections::btree_map::IntoIter<TaskStatus, u64>;

    /// The per-status counts (the undecodable count is not a status).
    fn into_iter(self) -> Self::IntoIter {
        self.by_status.into_iter()
    }
}

impl<'a> IntoIterator for &'a StatusCounts {
    type Item = (&'a TaskStatus, &'a u64);
    type IntoIter = std::collections::btree_map::Iter<'a, TaskStatus, u64>;

    fn into_iter(self) -> Self::IntoIter {
        self.by_status.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::AttemptError;
    use crate::test_support::{t0, task};
    use chrono::TimeDelta;

    fn errors(n: usize) -> Vec<AttemptError> {
        (0..n)
            .map(|_| AttemptError {
                at: t0(),
                error: "x".into(),
            })
            .collect()
    }

    fn done(attempts: u32, n_errors: usize, outcome: Option<Outcome>) -> Task {
        Task {
            done_at: Some(t0()),
            attempts,
            errors: errors(n_errors),
            outcome,
            ..task("t")
        }
    }

    #[test]
    fn explicit_outcome_decides_completed_vs_failed() {
        let now = t0();
        // A lost attempt (attempts > errors) does not turn a failure into a completion (W4).
        assert_eq!(
            done(3, 2, Some(Outcome::Failed)).status(now),
            TaskStatus::Failed
        );
        assert_eq!(
            done(1, 1, Some(Outcome::Completed)).status(now),
            TaskStatus::Completed
        );
    }

    #[test]
    fn documents_without_outcome_use_the_go_count_rule() {
        let now = t0();
        assert_eq!(done(2, 1, None).status(now), TaskStatus::Completed);
        assert_eq!(done(3, 3, None).status(now), TaskStatus::Failed);
    }

    #[test]
    fn go_status_table() {
        let now = t0();
        let h = TimeDelta::hours(1);
        let cases: Vec<(&str, Task, TaskStatus)> = vec![
            (
                "leased",
                Task {
                    leased_until: Some(now + TimeDelta::minutes(5)),
                    ..task("t")
                },
                TaskStatus::Leased,
            ),
            (
                "waiting",
                Task {
                    wait_until: Some(now + h),
                    ..task("t")
                },
                TaskStatus::Waiting,
            ),
            (
                "backoff",
                Task {
                    wait_until: Some(now + TimeDelta::seconds(30)),
                    attempts: 1,
                    errors: errors(1),
                    ..task("t")
                },
                TaskStatus::Waiting,
            ),
            (
                "past wait",
                Task {
                    wait_until: Some(now - h),
                    ..task("t")
                },
                TaskStatus::Pending,
            ),
            (
                "expired lease",
                Task {
                    leased_until: Some(now - TimeDelta::minutes(1)),
                    ..task("t")
                },
                TaskStatus::Pending,
            ),
            ("no wait", task("t"), TaskStatus::Pending),
            (
                "cancelled not done",
                Task {
                    is_cancelled: true,
                    ..task("t")
                },
                TaskStatus::CancellationPending,
            ),
            (
                "cancelled done",
                Task {
                    is_cancelled: true,
                    ..done(1, 0, None)
                },
                TaskStatus::Cancelled,
            ),
            (
                "cancelled beats completed",
                Task {
                    is_cancelled: true,
                    ..done(2, 1, Some(Outcome::Completed))
                },
                TaskStatus::Cancelled,
            ),
            (
                "cancelled beats failed",
                Task {
                    is_cancelled: true,
                    ..done(2, 2, Some(Outcome::Failed))
                },
                TaskStatus::Cancelled,
            ),
            (
                "cancelled and leased",
                Task {
                    is_cancelled: true,
                    leased_until: Some(now + h),
                    ..task("t")
                },
                TaskStatus::CancellationPending,
            ),
            (
                "cancelled with future wait",
                Task {
                    is_cancelled: true,
                    wait_until: Some(now + h),
                    ..task("t")
                },
                TaskStatus::CancellationPending,
            ),
            (
                "done beats lease and wait",
                Task {
                    leased_until: Some(now + h),
                    wait_until: Some(now + h),
                    ..done(1, 0, Some(Outcome::Completed))
                },
                TaskStatus::Completed,
            ),
            (
                "lease beats wait",
                Task {
                    leased_until: Some(now + h),
                    wait_until: Some(now + h),
                    ..task("t")
                },
                TaskStatus::Leased,
            ),
            (
                "lease equal to now is not leased",
                Task {
                    leased_until: Some(now),
                    ..task("t")
                },
                TaskStatus::Pending,
            ),
            (
                "wait equal to now is not waiting",
                Task {
                    wait_until: Some(now),
                    ..task("t")
                },
                TaskStatus::Pending,
            ),
        ];
        for (name, task, want) in cases {
            assert_eq!(task.status(now), want, "case {name}");
        }
    }

    #[test]
    fn status_names_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
            let json = serde_json::to_value(status).ok();
            assert_eq!(
                json,
                Some(serde_json::Value::String(status.as_str().into()))
            );
        }
    }
}

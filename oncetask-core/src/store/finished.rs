//! What a pruner reads: finished tasks past their retention
//! ([`Store::find_finished`](super::Store::find_finished)).

use chrono::{DateTime, Utc};

use crate::status::TaskStatus;
use crate::task::Task;

/// Finished tasks of one kind and terminal status, finished at or before a
/// cutoff, either with their full document or as tombstones, in finish
/// order (`done_at`, then id).
///
/// ```
/// use chrono::{TimeDelta, Utc};
/// use oncetask_core::{Task, TaskStatus, Outcome};
/// use oncetask_core::store::FinishedQuery;
///
/// let now = Utc::now();
/// let query = FinishedQuery::new("prod", "send_email", TaskStatus::Completed, now - TimeDelta::days(7));
/// let mut task = Task::new("a", "send_email", "prod", now - TimeDelta::days(9));
/// task.done_at = Some(now - TimeDelta::days(8));
/// task.outcome = Some(Outcome::Completed);
/// task.attempts = 1;
/// assert!(query.matches(&task));
/// assert!(!query.clone().tombstones().matches(&task), "not a tombstone yet");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FinishedQuery {
    /// Environment.
    pub env: String,
    /// Task kind.
    pub kind: String,
    /// A terminal status: completed, failed or cancelled.
    pub status: TaskStatus,
    /// True: only tombstones ([`Task::is_tombstone`]); false: only tasks
    /// that still have their full document.
    pub tombstones: bool,
    /// Only tasks whose `done_at` is at or before this.
    pub finished_by: DateTime<Utc>,
    /// Only tasks after this position in `(done_at, id)` order: the last
    /// task of the previous page ([`FinishedQuery::after_task`]).
    pub after: Option<(DateTime<Utc>, String)>,
    /// At most this many.
    pub limit: usize,
}

/// Default page of [`FinishedQuery::limit`].
pub const DEFAULT_FINISHED_PAGE: usize = 500;

impl FinishedQuery {
    /// Full documents of `kind` in `env` that ended with `status` at or
    /// before `finished_by`, [`DEFAULT_FINISHED_PAGE`] at a time.
    pub fn new(
        env: impl Into<String>,
        kind: impl Into<String>,
        status: TaskStatus,
        finished_by: DateTime<Utc>,
    ) -> Self {
        Self {
            env: env.into(),
            kind: kind.into(),
            status,
            tombstones: false,
            finished_by,
            after: None,
            limit: DEFAULT_FINISHED_PAGE,
        }
    }

    /// Tombstones instead of full documents.
    pub fn tombstones(mut self) -> Self {
        self.tombstones = true;
        self
    }

    /// At most `limit` tasks.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The next page: tasks after `task` in `(done_at, id)` order.
    pub fn after_task(mut self, task: &Task) -> Self {
        self.after = task.done_at.map(|done| (done, task.id.clone()));
        self
    }

    /// True when `task` belongs in the answer (paging aside from the cursor).
    pub fn matches(&self, task: &Task) -> bool {
        let Some(done_at) = task.done_at else {
            return false;
        };
        task.env == self.env
            && task.kind == self.kind
            && task.is_tombstone() == self.tombstones
            && done_at <= self.finished_by
            && task.status(done_at) == self.status
            && self
                .after
                .as_ref()
                .is_none_or(|(at, id)| (done_at, task.id.as_str()) > (*at, id.as_str()))
    }
}

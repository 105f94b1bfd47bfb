//! One operator action over every task a filter selects: what the CLI's
//! `--kind`/`--resource-key` selections and the dashboard's "every
//! matching task" buttons run.

use crate::error::Error;
use crate::manager::Manager;
use crate::manager::admin::BulkReport;
use crate::status::TaskStatus;
use crate::store::TaskFilter;

/// An operator action on many tasks ([`Manager::act_matching`]).
///
/// ```
/// use oncetask_core::manager::BulkAction;
///
/// assert_eq!(BulkAction::Reprioritize(5).name(), "reprioritize");
/// assert_eq!("reset".parse::<BulkAction>(), Ok(BulkAction::Reset));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// [`Manager::cancel_many`]: open tasks get their cancellation path.
    Cancel,
    /// [`Manager::reset_many`]: finished tasks run again.
    Reset,
    /// [`Manager::delete_many`]: tasks are removed (a running one is refused).
    Delete,
    /// [`Manager::reprioritize_many`] to this priority.
    Reprioritize(i8),
}

impl BulkAction {
    /// The action's name (`cancel`, `reset`, `delete`, `reprioritize`).
    pub fn name(self) -> &'static str {
        match self {
            BulkAction::Cancel => "cancel",
            BulkAction::Reset => "reset",
            BulkAction::Delete => "delete",
            BulkAction::Reprioritize(_) => "reprioritize",
        }
    }

    /// Which tasks the action applies to, as a sentence's end ("every
    /// task that …").
    pub fn applies_to(self) -> &'static str {
        match self {
            BulkAction::Cancel => "is open and not cancelled yet",
            BulkAction::Reset => "is finished",
            BulkAction::Delete => "exists",
            BulkAction::Reprioritize(_) => "is open",
        }
    }

    /// Why the manager reports a task as skipped for this action.
    pub fn skipped_because(self) -> &'static str {
        match self {
            BulkAction::Cancel => "already finished or cancelled, or repeated",
            BulkAction::Reset => "not finished, or repeated",
            BulkAction::Delete => "repeated",
            BulkAction::Reprioritize(_) => "already finished, or repeated",
        }
    }
}

impl std::str::FromStr for BulkAction {
    type Err = String;

    /// `cancel`, `reset` or `delete` (a reprioritize names its priority
    /// elsewhere: build [`BulkAction::Reprioritize`] directly).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cancel" => Ok(BulkAction::Cancel),
            "reset" => Ok(BulkAction::Reset),
            "delete" => Ok(BulkAction::Delete),
            other => Err(format!(
                "unknown action {other:?}: expected cancel, reset or delete"
            )),
        }
    }
}

impl Manager {
    /// `filter` narrowed to the tasks `action` applies to, when it names no
    /// status: cancel takes pending, waiting and leased tasks (open tasks
    /// where the store cannot list those apart, see
    /// [`Store::check_filter`](crate::Store::check_filter); cancelling a
    /// task already cancelled is skipped), reset the finished ones,
    /// reprioritize the open ones, delete every task. A filter naming
    /// statuses is returned as it is.
    ///
    /// ```
    /// # use oncetask_core::Manager;
    /// # use oncetask_core::manager::BulkAction;
    /// # fn demo(manager: &Manager) {
    /// let failed = manager.applicable(BulkAction::Reset, manager.filter().kind("send_email"));
    /// assert_eq!(failed.statuses.len(), 3); // completed, failed, cancelled
    /// # }
    /// ```
    pub fn applicable(&self, action: BulkAction, mut filter: TaskFilter) -> TaskFilter {
        if !filter.statuses.is_empty() {
            return filter;
        }
        match action {
            BulkAction::Cancel => {
                let mut open = filter.clone();
                open.statuses = vec![TaskStatus::Pending, TaskStatus::Waiting, TaskStatus::Leased];
                if self.check_filter(&open).is_ok() {
                    return open;
                }
                filter.not_done = true;
            }
            BulkAction::Reset => {
                filter.statuses = vec![
                    TaskStatus::Completed,
                    TaskStatus::Failed,
                    TaskStatus::Cancelled,
                ];
            }
            BulkAction::Reprioritize(_) => filter.not_done = true,
            BulkAction::Delete => {}
        }
        filter
    }

    /// Runs `action` on every task `filter` selects, in batches of
    /// [`BULK_BATCH`](crate::manager::BULK_BATCH) read by cursor (tasks
    /// created meanwhile past the cursor are included). Narrow the filter
    /// with [`Manager::applicable`] first, and count it with
    /// [`Manager::count_matching`] to confirm. Tasks the action does not
    /// apply to are reported as skipped.
    pub async fn act_matching(
        &self,
        action: BulkAction,
        filter: TaskFilter,
    ) -> Result<BulkReport, Error> {
        self.each_batch(filter, |manager, ids| async move {
            manager.act_many(action, &ids).await
        })
        .await
    }

    /// Runs `action` on tasks by id: [`Manager::cancel_many`],
    /// [`Manager::reset_many`], [`Manager::delete_many`] or
    /// [`Manager::reprioritize_many`].
    pub async fn act_many(&self, action: BulkAction, ids: &[String]) -> Result<BulkReport, Error> {
        match action {
            BulkAction::Cancel => self.cancel_many(ids).await,
            BulkAction::Reset => self.reset_many(ids).await,
            BulkAction::Delete => self.delete_many(ids).await,
            BulkAction::Reprioritize(p) => self.reprioritize_many(ids, p).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        for action in [BulkAction::Cancel, BulkAction::Reset, BulkAction::Delete] {
            assert_eq!(action.name().parse::<BulkAction>(), Ok(action));
        }
        assert!("reprioritize".parse::<BulkAction>().is_err());
    }
}

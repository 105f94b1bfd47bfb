//! Operator actions: cancel, reset, reprioritize and delete, by ids or by
//! resource key.
//!
//! Each is a read followed by version-checked swaps, so a task that changes
//! between the read and the write is re-read and re-decided instead of being
//! overwritten (Go W19).

use std::collections::HashSet;

use crate::data::TaskKind;
use crate::error::{Error, StoreError};
use crate::lifecycle::{self, Rejection};
use crate::manager::answer::checked;
use crate::manager::apply::{Applied, apply_many};
use crate::manager::{BulkAction, Manager};
use crate::store::{Change, Delete, DeleteOutcome, Fetched, TaskCursor, TaskFilter};
use crate::task::Task;

/// Per-item result of a bulk call. Nothing is all-or-nothing: each id
/// succeeds, is skipped, or fails on its own.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct BulkReport {
    /// Ids changed (created, cancelled, reset or deleted).
    pub succeeded: Vec<String>,
    /// Ids left alone because the action does not apply (already exists,
    /// already done or cancelled, not terminal, repeated in the input).
    pub skipped: Vec<String>,
    /// Ids with no task.
    pub not_found: Vec<String>,
    /// Ids that failed, with the reason.
    pub failed: Vec<(String, Error)>,
}

impl BulkReport {
    /// Number of ids changed.
    pub fn count(&self) -> usize {
        self.succeeded.len()
    }

    /// True when no item failed.
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty()
    }
}

/// What [`Manager::cancel`] did to one task.
///
/// A cancel never ends a task by itself: the task is `cancellationPending`
/// until a worker of its kind runs its cancellation path (the kind's
/// cancellation handler, or nothing when it has none) and it ends
/// `cancelled`. A task whose handler is running keeps its lease, and its
/// resource key, until that handler returns (docs/semantics.md S8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelStatus {
    /// Marked cancelled; its cancellation path finishes it.
    Pending,
    /// Already finished or already cancelled: nothing changed.
    NotApplicable,
    /// No task with this id.
    NotFound,
}

/// Tasks per batch of [`Manager::reset_matching`] and
/// [`Manager::delete_matching`].
pub const BULK_BATCH: usize = 500;

/// Rounds of re-reading tasks that changed between the read and the delete.
const MAX_DELETE_ROUNDS: usize = 5;

/// Which operator action to apply.
#[derive(Debug, Clone, Copy)]
enum Action {
    Cancel,
    Reset,
    Reprioritize(i8),
}

impl Manager {
    /// Cancels one task and says what that did ([`CancelStatus`]): done
    /// and already cancelled tasks, and missing ids, are left alone; a task
    /// of another environment is an error.
    ///
    /// ```
    /// # use oncetask_core::Manager;
    /// # use oncetask_core::manager::CancelStatus;
    /// # async fn demo(manager: &Manager) -> Result<(), oncetask_core::Error> {
    /// match manager.cancel("charge-3").await? {
    ///     CancelStatus::Pending => println!("its cancellation path will finish it"),
    ///     CancelStatus::NotApplicable => println!("already finished or cancelled"),
    ///     CancelStatus::NotFound => println!("no such task"),
    ///     _ => {}
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancel(&self, id: &str) -> Result<CancelStatus, Error> {
        let report = self.cancel_many(&[id.to_owned()]).await?;
        let status = if !report.succeeded.is_empty() {
            CancelStatus::Pending
        } else if !report.not_found.is_empty() {
            CancelStatus::NotFound
        } else {
            CancelStatus::NotApplicable
        };
        single(report).map(|()| status)
    }

    /// Cancels tasks by id ([`Manager::cancel`] for each). A running task
    /// keeps its lease: when its handler ends, the cancellation path runs.
    pub async fn cancel_many(&self, ids: &[String]) -> Result<BulkReport, Error> {
        self.act_on_ids(ids, Action::Cancel).await
    }

    /// Cancels every not-done task of `kind` with `resource_key`.
    pub async fn cancel_by_resource_key(
        &self,
        kind: impl TaskKind,
        resource_key: &str,
    ) -> Result<BulkReport, Error> {
        let mut filter = self.filter();
        filter.kind = Some(kind.as_str().to_owned());
        filter.resource_key = Some(resource_key.to_owned());
        filter.not_done = true;
        let tasks = self.find(filter).await?;
        let mut report = BulkReport::default();
        self.act(tasks, Action::Cancel, &mut report).await;
        Ok(report)
    }

    /// Resets one terminal task to pending, clearing its history. A no-op for
    /// tasks that are not done and for missing ids.
    pub async fn reset(&self, id: &str) -> Result<(), Error> {
        single(self.reset_many(&[id.to_owned()]).await?)
    }

    /// Resets terminal tasks by id.
    pub async fn reset_many(&self, ids: &[String]) -> Result<BulkReport, Error> {
        self.act_on_ids(ids, Action::Reset).await
    }

    /// Sets the claim priority of tasks that are not done (higher is
    /// claimed first within the kind; see
    /// [`PRIORITY_RANGE`](crate::PRIORITY_RANGE)). Done tasks are skipped;
    /// a running task keeps running and takes the new priority if it runs
    /// again. A priority outside the range is
    /// [`Error::InvalidPriority`] and changes nothing.
    ///
    /// ```
    /// # use oncetask_core::Manager;
    /// # async fn demo(manager: &Manager) -> Result<(), oncetask_core::Error> {
    /// let report = manager.reprioritize_many(&["report-7".to_owned()], 5).await?;
    /// println!("{} task(s) now at priority 5", report.count());
    /// # Ok(()) }
    /// ```
    pub async fn reprioritize_many(
        &self,
        ids: &[String],
        priority: i8,
    ) -> Result<BulkReport, Error> {
        if !crate::task::PRIORITY_RANGE.contains(&priority) {
            return Err(Error::InvalidPriority {
                id: ids.first().cloned().unwrap_or_default(),
                priority,
            });
        }
        self.act_on_ids(ids, Action::Reprioritize(priority)).await
    }

    /// Deletes one task whatever its status, except while a handler runs it
    /// ([`Error::TaskRunning`]: deleting it would free its resource key while
    /// the handler still runs; cancel it instead). A no-op for missing ids.
    /// A document that cannot be decoded is deleted too.
    pub async fn delete(&self, id: &str) -> Result<(), Error> {
        single(self.delete_many(&[id.to_owned()]).await?)
    }

    /// Deletes tasks by id; see [`Manager::delete`].
    pub async fn delete_many(&self, ids: &[String]) -> Result<BulkReport, Error> {
        let mut report = BulkReport::default();
        let mut loaded = self.load(ids, &mut report).await?;
        for _ in 0..MAX_DELETE_ROUNDS {
            let now = self.inner.now();
            let mut deletes = Vec::new();
            for item in std::mem::take(&mut loaded) {
                match item {
                    Fetched::Task(task) if task.is_leased_at(now) => {
                        let e = Error::TaskRunning {
                            id: task.id.clone(),
                        };
                        report.failed.push((task.id, e));
                    }
                    Fetched::Task(task) => deletes.push(Delete::exact(&task)),
                    Fetched::Undecodable(u) => deletes.push(Delete::any(u.id)),
                }
            }
            if deletes.is_empty() {
                break;
            }
            let outcomes = checked(deletes.len(), self.inner.store.delete(&deletes).await?)?;
            let mut conflicted = Vec::new();
            for (delete, outcome) in deletes.into_iter().zip(outcomes) {
                match outcome {
                    DeleteOutcome::Deleted => {
                        report.succeeded.push(delete.id);
                    }
                    DeleteOutcome::NotFound => report.not_found.push(delete.id),
                    DeleteOutcome::Conflict => conflicted.push(delete.id),
                    DeleteOutcome::Failed(e) => report.failed.push((delete.id, e.into())),
                }
            }
            if conflicted.is_empty() {
                break;
            }
            // Changed since it was read (e.g. just claimed): decide again.
            loaded = self.load(&conflicted, &mut report).await?;
        }
        for item in loaded {
            let id = match item {
                Fetched::Task(task) => task.id,
                Fetched::Undecodable(u) => u.id,
            };
            let e = Error::Internal(format!("task {id} kept changing during delete"));
            report.failed.push((id, e));
        }
        // Removing a task can free a resource key, or end a poison pill.
        self.inner.wake_all();
        Ok(report)
    }

    /// Resets (redrives) every finished task `filter` selects, e.g. every
    /// failed task of a kind or of a resource key after an incident, in
    /// batches of [`BULK_BATCH`] (one listing and one write per batch).
    /// Tasks that are not finished are skipped; see [`Manager::reset`].
    /// Count first with [`Manager::count_matching`] (a dry run).
    ///
    /// ```
    /// # use oncetask_core::{Manager, TaskStatus};
    /// # async fn demo(manager: &Manager) -> Result<(), oncetask_core::Error> {
    /// let failed = manager.filter().kind("sync_calendar").status(TaskStatus::Failed);
    /// println!("{} failed tasks", manager.count_matching(&failed).await?);
    /// let report = manager.reset_matching(failed).await?;
    /// println!("{} redriven", report.count());
    /// # Ok(()) }
    /// ```
    pub async fn reset_matching(&self, filter: TaskFilter) -> Result<BulkReport, Error> {
        self.act_matching(BulkAction::Reset, filter).await
    }

    /// Deletes every task `filter` selects (see [`Manager::delete`]: a
    /// running task is refused), in batches of [`BULK_BATCH`]. Deleting a
    /// task drops its idempotency: creating its id again runs it again.
    pub async fn delete_matching(&self, filter: TaskFilter) -> Result<BulkReport, Error> {
        self.act_matching(BulkAction::Delete, filter).await
    }

    /// How many tasks `filter` selects (what [`Manager::reset_matching`] or
    /// [`Manager::delete_matching`] would act on now), counted by listing
    /// them in batches.
    pub async fn count_matching(&self, filter: &TaskFilter) -> Result<u64, Error> {
        let mut count = 0u64;
        let mut page = self.first_batch(filter.clone())?;
        loop {
            let tasks = self.inner.store.find(&page).await?;
            count += tasks.len() as u64;
            match tasks.last() {
                Some(last) if tasks.len() >= BULK_BATCH => {
                    page = page.after(TaskCursor::of(last));
                }
                _ => return Ok(count),
            }
        }
    }

    /// The first batch of a bulk action over `filter` (paged by cursor).
    fn first_batch(&self, mut filter: TaskFilter) -> Result<TaskFilter, Error> {
        if filter.env != self.inner.env {
            return Err(Error::FilterEnvironment {
                filter_env: filter.env,
                manager_env: self.inner.env.clone(),
            });
        }
        filter.offset = 0;
        filter.limit = Some(BULK_BATCH);
        Ok(filter)
    }

    /// Lists `filter` batch by batch (by cursor, so tasks the action left
    /// alone are not met again) and runs `act` on each batch's ids.
    pub(super) async fn each_batch<'m, F, Fut>(
        &'m self,
        filter: TaskFilter,
        act: F,
    ) -> Result<BulkReport, Error>
    where
        F: Fn(&'m Manager, Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<BulkReport, Error>>,
    {
        let mut page = self.first_batch(filter)?;
        let mut report = BulkReport::default();
        loop {
            let tasks = self.inner.store.find(&page).await?;
            let Some(last) = tasks.last() else {
                return Ok(report);
            };
            let next = page.clone().after(TaskCursor::of(last));
            let full = tasks.len() >= BULK_BATCH;
            let done = act(self, tasks.into_iter().map(|t| t.id).collect()).await?;
            report.succeeded.extend(done.succeeded);
            report.skipped.extend(done.skipped);
            report.not_found.extend(done.not_found);
            report.failed.extend(done.failed);
            if !full {
                return Ok(report);
            }
            page = next;
        }
    }

    async fn act_on_ids(&self, ids: &[String], action: Action) -> Result<BulkReport, Error> {
        let mut report = BulkReport::default();
        let mut tasks = Vec::new();
        for item in self.load(ids, &mut report).await? {
            match item {
                Fetched::Task(task) => tasks.push(task),
                Fetched::Undecodable(u) => {
                    let e = Error::Store(StoreError::Undecodable {
                        id: u.id.clone(),
                        reason: u.reason,
                    });
                    report.failed.push((u.id, e));
                }
            }
        }
        self.act(tasks, action, &mut report).await;
        Ok(report)
    }

    /// Reads `ids` (once each, Go W21), sorting missing and other-environment
    /// ones into the report.
    async fn load(&self, ids: &[String], report: &mut BulkReport) -> Result<Vec<Fetched>, Error> {
        let mut seen = HashSet::new();
        let unique: Vec<String> = ids
            .iter()
            .filter(|id| {
                let fresh = seen.insert(id.as_str());
                if !fresh {
                    report.skipped.push((*id).clone());
                }
                fresh
            })
            .cloned()
            .collect();
        if unique.is_empty() {
            return Ok(Vec::new());
        }
        let mut found = HashSet::new();
        let mut tasks = Vec::new();
        for fetched in self.inner.store.get(&unique).await? {
            match fetched {
                Fetched::Task(task) if task.env != self.inner.env => {
                    found.insert(task.id.clone());
                    let e = Error::WrongEnvironment {
                        id: task.id.clone(),
                        task_env: task.env,
                        expected_env: self.inner.env.clone(),
                    };
                    report.failed.push((task.id, e));
                }
                Fetched::Task(task) => {
                    found.insert(task.id.clone());
                    tasks.push(Fetched::Task(task));
                }
                Fetched::Undecodable(u) => {
                    found.insert(u.id.clone());
                    tasks.push(Fetched::Undecodable(u));
                }
            }
        }
        report
            .not_found
            .extend(unique.into_iter().filter(|id| !found.contains(id)));
        Ok(tasks)
    }

    async fn act(&self, mut tasks: Vec<Task>, action: Action, report: &mut BulkReport) {
        let now = self.inner.now();
        if matches!(action, Action::Cancel | Action::Reset) {
            // A tombstone has no payload to run: a typed error, not a skip.
            tasks.retain(|task| {
                if task.is_tombstone() {
                    let id = task.id.clone();
                    report.failed.push((id.clone(), Error::Pruned { id }));
                }
                !task.is_tombstone()
            });
        }
        let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let change = match action {
            Action::Cancel => Change::Cancel,
            Action::Reset => Change::Reset,
            Action::Reprioritize(_) => Change::Reprioritize,
        };
        let results = apply_many(self.inner.store.as_ref(), tasks, change, |t| match action {
            Action::Cancel => lifecycle::cancel(t, now),
            Action::Reset => lifecycle::reset(t),
            Action::Reprioritize(priority) => lifecycle::reprioritize(t, priority),
        })
        .await;
        for (id, applied) in ids.into_iter().zip(results) {
            match applied {
                Applied::Written(task) | Applied::WrittenInstead { task, .. } => {
                    self.inner.wake_outside(&task.kind);
                    // A handler of this process running it hears at once.
                    self.inner.running.observe(&task);
                    report.succeeded.push(id);
                }
                Applied::Rejected(Rejection::NotApplicable | Rejection::LeaseLost) => {
                    report.skipped.push(id)
                }
                Applied::Missing => report.not_found.push(id),
                Applied::Failed(e) => report.failed.push((id, e)),
            }
        }
    }
}

/// The single-id variants return the one failure, if any.
fn single(mut report: BulkReport) -> Result<(), Error> {
    match report.failed.pop() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

//! The pruner: finished tasks past their kind's [`Retention`] become
//! tombstones, and tombstones past theirs are deleted, in bounded batches.
//!
//! Any number of processes may prune the same store at once: every write
//! is fenced on the version the pruner read and re-checks the retention on
//! the stored task, so a task reset (or finished again) since it was read
//! is left alone, nothing unfinished is ever touched, and a task is
//! deleted by one pruner only (the others see a conflict or nothing).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::apply::{Applied, apply_many};
use super::retention::Retention;
use super::{Inner, Manager, ShutdownPhase, worker};
use crate::data::TaskKind;
use crate::error::Error;
use crate::lifecycle::{self, Rejection};
use crate::manager::answer::checked;
use crate::status::TaskStatus;
use crate::store::{Change, Delete, DeleteOutcome, FinishedQuery};
use crate::task::Task;

/// Tasks read and written per batch: one store call each, so claims
/// interleave with a long prune instead of waiting behind it.
pub const DEFAULT_PRUNE_BATCH: usize = 500;

/// The terminal statuses, in the order a pass prunes them.
const FINISHED: [TaskStatus; 3] = [
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
];

/// Which kinds a prune pass covers, with which retention, and whether it
/// writes ([`Manager::prune`]).
///
/// ```
/// use std::time::Duration;
/// use oncetask_core::manager::{PrunePlan, Retention};
///
/// // What `oncetask prune --dry-run` does: count, change nothing.
/// let plan = PrunePlan::kind("send_email", Retention::default().completed(Duration::from_secs(86_400)))
///     .dry_run();
/// # let _ = plan;
/// ```
#[derive(Debug, Clone)]
pub struct PrunePlan {
    /// `None`: every kind this manager handles or declares, with its
    /// configured retention.
    kinds: Option<Vec<(String, Retention)>>,
    dry_run: bool,
    batch: usize,
    rest: f64,
}

/// Default [`PrunePlan::rest`]: after each batch the pruner rests three
/// times as long as the batch took, so it works at most a quarter of the
/// time (at 1, the work sharing a Redis or PostgreSQL store kept only
/// 56-83 % of its throughput in the bench; see BENCHMARKS.md).
pub const DEFAULT_PRUNE_REST: f64 = 3.0;

impl PrunePlan {
    /// Every kind this manager handles or declares, with the retention
    /// configured for it (what the background pruner runs).
    pub fn configured() -> Self {
        Self {
            kinds: None,
            dry_run: false,
            batch: DEFAULT_PRUNE_BATCH,
            rest: DEFAULT_PRUNE_REST,
        }
    }

    /// One kind with `retention` (an operator's prune, e.g. from the CLI,
    /// where no handler is registered).
    pub fn kind(kind: impl TaskKind, retention: Retention) -> Self {
        Self {
            kinds: Some(vec![(kind.as_str().to_owned(), retention)]),
            ..Self::configured()
        }
    }

    /// Counts what would be pruned and writes nothing.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// How long the pass rests after each batch, as a multiple of the
    /// time the batch took (default [`DEFAULT_PRUNE_REST`]: it works at most
    /// a quarter of the time, so the work sharing the store keeps most of
    /// its throughput; 0 prunes flat out, e.g. an operator's catch-up in a
    /// quiet hour). A dry run never rests.
    pub fn rest(mut self, factor: f64) -> Self {
        self.rest = if factor.is_finite() {
            factor.max(0.0)
        } else {
            0.0
        };
        self
    }

    /// Tasks per read and per write (at least 1; default
    /// [`DEFAULT_PRUNE_BATCH`]).
    pub fn batch_size(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }
}

/// What a prune pass did (or, dry, would do) to one kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneCounts {
    /// Finished tasks turned into tombstones.
    pub tombstoned: u64,
    /// Documents deleted: tombstones past their period, and whole tasks
    /// where there are no tombstones (or theirs had ended too).
    pub deleted: u64,
    /// Tasks read but left alone: changed since they were read (reset,
    /// pruned by another process), so the next pass decides again.
    pub skipped: u64,
}

/// What [`Manager::prune`] did, per kind.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct PruneReport {
    /// True for a dry run: the counts say what would be done.
    pub dry_run: bool,
    /// Per kind (kinds with nothing to prune included).
    pub kinds: BTreeMap<String, PruneCounts>,
    /// Tasks whose write failed, with the reason.
    pub failed: Vec<(String, Error)>,
}

impl PruneReport {
    /// The counts of every kind added up.
    pub fn total(&self) -> PruneCounts {
        self.kinds
            .values()
            .fold(PruneCounts::default(), |sum, c| PruneCounts {
                tombstoned: sum.tombstoned + c.tombstoned,
                deleted: sum.deleted + c.deleted,
                skipped: sum.skipped + c.skipped,
            })
    }
}

impl Manager {
    /// Runs one prune pass over the plan's kinds: each finished task past
    /// its status's period becomes a tombstone (or is deleted, without
    /// tombstones), and each tombstone past its period is deleted. Works
    /// in batches of [`PrunePlan::batch_size`]; returns when nothing past
    /// retention is left (as of the pass's start). A store error ends the
    /// pass with it; what was done before stays done.
    ///
    /// ```
    /// # use oncetask_core::Manager;
    /// # use oncetask_core::manager::PrunePlan;
    /// # async fn demo(manager: &Manager) -> Result<(), oncetask_core::Error> {
    /// let report = manager.prune(PrunePlan::configured()).await?;
    /// let total = report.total();
    /// println!("{} tombstoned, {} deleted", total.tombstoned, total.deleted);
    /// # Ok(()) }
    /// ```
    pub async fn prune(&self, plan: PrunePlan) -> Result<PruneReport, Error> {
        let kinds = match plan.kinds {
            Some(kinds) => kinds,
            None => self.inner.configured_retentions(),
        };
        let mut report = PruneReport {
            dry_run: plan.dry_run,
            ..PruneReport::default()
        };
        for (kind, retention) in kinds {
            retention.validate()?;
            let mut counts = PruneCounts::default();
            let pass = Pass {
                inner: &self.inner,
                kind: &kind,
                retention: &retention,
                now: self.inner.now(),
                dry_run: plan.dry_run,
                batch: plan.batch,
                rest: if plan.dry_run { 0.0 } else { plan.rest },
            };
            let result = pass.run(&mut counts, &mut report.failed).await;
            report.kinds.insert(kind, counts);
            result?;
        }
        Ok(report)
    }
}

impl Inner {
    /// Every kind this manager handles or declares that has a retention
    /// (its own, else the manager's default), sorted.
    pub(crate) fn configured_retentions(&self) -> Vec<(String, Retention)> {
        let mut kinds: BTreeMap<String, Retention> = BTreeMap::new();
        let default = &self.config.retention;
        for kind in &self.declared_kinds {
            kinds.insert(kind.clone(), default.clone());
        }
        let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        for (kind, registration) in registry.iter() {
            let retention = registration.options.retention.as_ref().unwrap_or(default);
            kinds.insert(kind.clone(), retention.clone());
        }
        kinds
            .into_iter()
            .filter(|(_, retention)| {
                !retention.keeps_everything() || retention.tombstone_period().is_some()
            })
            .collect()
    }
}

/// One kind's share of a prune pass.
struct Pass<'a> {
    inner: &'a Inner,
    kind: &'a str,
    retention: &'a Retention,
    now: DateTime<Utc>,
    dry_run: bool,
    batch: usize,
    rest: f64,
}

impl Pass<'_> {
    async fn run(
        &self,
        counts: &mut PruneCounts,
        failed: &mut Vec<(String, Error)>,
    ) -> Result<(), Error> {
        let tombstone_cutoff = self.retention.tombstone_cutoff(self.now);
        for (status, cutoff) in self.retention.cutoffs(self.now) {
            let query = FinishedQuery::new(&self.inner.env, self.kind, status, cutoff);
            self.each_page(
                query,
                |pass, page| async move {
                    // Tasks past their tombstone's period too (or with no
                    // tombstones at all) go whole.
                    let (whole, to_tombstone): (Vec<Task>, Vec<Task>) =
                        page.into_iter().partition(|t| {
                            !pass.retention.has_tombstones()
                                || tombstone_cutoff
                                    .is_some_and(|c| t.done_at.is_some_and(|d| d <= c))
                        });
                    let mut counts = PruneCounts::default();
                    let mut failed = Vec::new();
                    pass.delete(whole, &mut counts, &mut failed).await?;
                    pass.tombstone(to_tombstone, status, cutoff, &mut counts, &mut failed)
                        .await;
                    Ok((counts, failed))
                },
                counts,
                failed,
            )
            .await?;
        }
        if let Some(cutoff) = tombstone_cutoff {
            for status in FINISHED {
                let query =
                    FinishedQuery::new(&self.inner.env, self.kind, status, cutoff).tombstones();
                self.each_page(
                    query,
                    |pass, page| async move {
                        let mut counts = PruneCounts::default();
                        let mut failed = Vec::new();
                        pass.delete(page, &mut counts, &mut failed).await?;
                        Ok((counts, failed))
                    },
                    counts,
                    failed,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Reads `query` page by page (by cursor, so tasks left alone are not
    /// read again) and hands each page to `act`, adding up what it did.
    async fn each_page<'p, F, Fut>(
        &'p self,
        mut query: FinishedQuery,
        act: F,
        counts: &mut PruneCounts,
        failed: &mut Vec<(String, Error)>,
    ) -> Result<(), Error>
    where
        F: Fn(&'p Self, Vec<Task>) -> Fut,
        Fut: std::future::Future<Output = Result<(PruneCounts, Vec<(String, Error)>), Error>>,
    {
        query.limit = self.batch;
        loop {
            let started = std::time::Instant::now();
            let page = self.inner.store.find_finished(&query).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            let full = page.len() >= self.batch;
            let next = query.clone().after_task(last);
            let (done, mut page_failed) = act(self, page).await?;
            counts.tombstoned += done.tombstoned;
            counts.deleted += done.deleted;
            counts.skipped += done.skipped;
            failed.append(&mut page_failed);
            if !full {
                return Ok(());
            }
            query = next;
            // A long prune rests between batches, the time the batch took
            // times the plan's rest factor, so it takes at most its share
            // of the store and of this process (the claiming loops run
            // meanwhile); wall time, not the manager's clock: it paces work.
            let rest = started.elapsed().mul_f64(self.rest);
            if rest.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(rest).await;
            }
        }
    }

    /// Deletes `tasks` if each is still stored at the version read.
    async fn delete(
        &self,
        tasks: Vec<Task>,
        counts: &mut PruneCounts,
        failed: &mut Vec<(String, Error)>,
    ) -> Result<(), Error> {
        if tasks.is_empty() {
            return Ok(());
        }
        if self.dry_run {
            counts.deleted += tasks.len() as u64;
            return Ok(());
        }
        let deletes: Vec<Delete> = tasks.iter().map(Delete::exact).collect();
        let outcomes = checked(deletes.len(), self.inner.store.delete(&deletes).await?)?;
        for (delete, outcome) in deletes.into_iter().zip(outcomes) {
            match outcome {
                DeleteOutcome::Deleted => counts.deleted += 1,
                DeleteOutcome::NotFound | DeleteOutcome::Conflict => counts.skipped += 1,
                DeleteOutcome::Failed(e) => failed.push((delete.id, e.into())),
            }
        }
        Ok(())
    }

    /// Turns `tasks` into tombstones, each only while it is still a full
    /// document of `status` finished at or before `cutoff` (checked again on
    /// the stored task if it changed since it was read).
    async fn tombstone(
        &self,
        tasks: Vec<Task>,
        status: TaskStatus,
        cutoff: DateTime<Utc>,
        counts: &mut PruneCounts,
        failed: &mut Vec<(String, Error)>,
    ) {
        if tasks.is_empty() {
            return;
        }
        if self.dry_run {
            counts.tombstoned += tasks.len() as u64;
            return;
        }
        let now = self.now;
        let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let results = apply_many(self.inner.store.as_ref(), tasks, Change::Prune, |task| {
            let due = task.done_at.is_some_and(|d| d <= cutoff) && task.status(now) == status;
            if due {
                lifecycle::prune(task, now)
            } else {
                Err(Rejection::NotApplicable)
            }
        })
        .await;
        for (id, applied) in ids.into_iter().zip(results) {
            match applied {
                Applied::Written(_) | Applied::WrittenInstead { .. } => counts.tombstoned += 1,
                Applied::Rejected(_) | Applied::Missing => counts.skipped += 1,
                Applied::Failed(e) => failed.push((id, e)),
            }
        }
    }
}

/// Runs [`PrunePlan::configured`] every `interval` until shutdown, when
/// some kind has a retention (the first pass one interval after start).
pub(crate) fn spawn_pruner(inner: &Arc<Inner>, interval: Duration) {
    let weak = Arc::downgrade(inner);
    let mut phase = inner.shutdown.subscribe();
    let clock = inner.clock.clone();
    tokio::spawn(async move {
        loop {
            let next = match weak.upgrade() {
                Some(inner) => worker::add(inner.now(), interval),
                None => break,
            };
            tokio::select! {
                _ = clock.sleep_until(next) => {}
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow() != ShutdownPhase::Running { break; }
                }
            }
            let Some(inner) = weak.upgrade() else { break };
            if inner.configured_retentions().is_empty() {
                continue;
            }
            let manager = Manager { inner };
            match manager.prune(PrunePlan::configured()).await {
                Ok(report) => {
                    let total = report.total();
                    if total.tombstoned + total.deleted > 0 || !report.failed.is_empty() {
                        tracing::info!(
                            tombstoned = total.tombstoned,
                            deleted = total.deleted,
                            skipped = total.skipped,
                            failed = report.failed.len(),
                            "pruned finished tasks"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "prune pass failed"),
            }
        }
    });
}

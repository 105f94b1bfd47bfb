//! Retention: how long finished tasks keep their full document, and how
//! long their tombstone keeps answering "this id already exists".
//!
//! Pruning never touches a task that is not finished: every write is fenced
//! on the version the pruner read (a swap to a tombstone, or a delete), so
//! a task reset, or pruned by another process, since then is left alone,
//! and two pruners never both delete one task.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::error::Error;
use crate::status::TaskStatus;

/// How long the finished tasks of a kind are kept (set per kind with
/// [`HandlerOptions::retention`](crate::manager::HandlerOptions::retention),
/// or for every kind with
/// [`ManagerBuilder::retention`](crate::manager::ManagerBuilder::retention)).
///
/// The default keeps everything forever (the Go package's behavior). Once a
/// status has a period, a task that ended with it that long ago becomes a
/// *tombstone*: its payload, result and errors are dropped, and its id,
/// env, kind, resource key, status and finish time stay, so creating the
/// same id again still answers "already exists". Tombstones are kept
/// forever unless [`Retention::tombstones_for`] bounds them (measured from
/// the finish too); [`Retention::without_tombstones`] deletes tasks whole
/// at the end of their period, which gives up their idempotency: a create
/// of the same id runs it again.
///
/// Recurring generators are pruned only once finished (a cancelled or
/// exhausted generator): an active generator is never done. Occurrences are
/// tasks of their kind like any other.
///
/// ```
/// use std::time::Duration;
/// use oncetask_core::manager::Retention;
///
/// const DAY: Duration = Duration::from_secs(86_400);
/// let retention = Retention::default()
///     .completed(DAY)          // full documents of completed tasks: 1 day
///     .failed(30 * DAY)        // failed ones: 30 days, to investigate
///     .cancelled(7 * DAY)
///     .tombstones_for(90 * DAY); // ids answer "already exists" for 90 days
/// assert!(retention.validate().is_ok());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    keep: BTreeMap<TaskStatus, Duration>,
    tombstones: Tombstones,
}

/// How long tombstones stay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Tombstones {
    /// Forever (the default).
    #[default]
    Forever,
    /// Until this long after the task finished.
    For(Duration),
    /// None: tasks are deleted whole.
    Never,
}

impl Retention {
    /// Keeps completed tasks' full documents for `period` after they finished.
    pub fn completed(mut self, period: Duration) -> Self {
        self.keep.insert(TaskStatus::Completed, period);
        self
    }

    /// Keeps failed tasks' full documents for `period` after they finished.
    pub fn failed(mut self, period: Duration) -> Self {
        self.keep.insert(TaskStatus::Failed, period);
        self
    }

    /// Keeps cancelled tasks' full documents for `period` after they finished.
    pub fn cancelled(mut self, period: Duration) -> Self {
        self.keep.insert(TaskStatus::Cancelled, period);
        self
    }

    /// Keeps every finished task's full document for `period`.
    pub fn finished(self, period: Duration) -> Self {
        self.completed(period).failed(period).cancelled(period)
    }

    /// Deletes tombstones `period` after their task finished (at least as
    /// long as every full-document period: [`Retention::validate`]).
    pub fn tombstones_for(mut self, period: Duration) -> Self {
        self.tombstones = Tombstones::For(period);
        self
    }

    /// Deletes tasks whole at the end of their period, with no tombstone:
    /// creating the same id again then runs it again.
    pub fn without_tombstones(mut self) -> Self {
        self.tombstones = Tombstones::Never;
        self
    }

    /// True when nothing is ever pruned (the default).
    pub fn keeps_everything(&self) -> bool {
        self.keep.is_empty()
    }

    /// How long full documents of `status` are kept (`None`: forever).
    pub fn period(&self, status: TaskStatus) -> Option<Duration> {
        self.keep.get(&status).copied()
    }

    /// Whether pruned tasks leave a tombstone.
    pub fn has_tombstones(&self) -> bool {
        self.tombstones != Tombstones::Never
    }

    /// How long after its task finished a tombstone is deleted (`None`:
    /// never, or there are no tombstones).
    pub fn tombstone_period(&self) -> Option<Duration> {
        match self.tombstones {
            Tombstones::For(period) => Some(period),
            _ => None,
        }
    }

    /// Refuses a tombstone period shorter than a full-document one (the
    /// tombstone would be gone before the task is pruned) and statuses
    /// that are not terminal.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(status) = self.keep.keys().find(|s| !s.is_terminal()) {
            return Err(Error::InvalidConfig(format!(
                "retention for {status}: only finished tasks are pruned"
            )));
        }
        if let Some(tombstones) = self.tombstone_period()
            && let Some((status, keep)) = self.keep.iter().find(|(_, keep)| **keep > tombstones)
        {
            return Err(Error::InvalidConfig(format!(
                "tombstones kept {tombstones:?} but {status} tasks {keep:?}: \
                 a tombstone must outlive the full document"
            )));
        }
        Ok(())
    }

    /// The statuses with a period, and the finish time at or before which
    /// a task of each is pruned at `now`.
    pub(crate) fn cutoffs(&self, now: DateTime<Utc>) -> Vec<(TaskStatus, DateTime<Utc>)> {
        self.keep
            .iter()
            .map(|(status, keep)| (*status, before(now, *keep)))
            .collect()
    }

    /// The finish time at or before which a tombstone is deleted at `now`.
    pub(crate) fn tombstone_cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.tombstone_period().map(|period| before(now, period))
    }
}

/// `now - period`, clamped to the earliest time for huge periods.
fn before(now: DateTime<Utc>, period: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(period)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A period as a number and a unit: `90s`, `15m`, `12h`, `7d` (or a bare
/// number of seconds), as the CLI's `prune` and the dashboard take it.
///
/// ```
/// use std::time::Duration;
/// use oncetask_core::manager::parse_period;
///
/// assert_eq!(parse_period("7d"), Ok(Duration::from_secs(7 * 86_400)));
/// assert_eq!(parse_period("90"), Ok(Duration::from_secs(90)));
/// assert!(parse_period("1w").is_err());
/// ```
pub fn parse_period(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 30s, 15m, 12h or 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use s, m, h or d)")),
    };
    n.checked_mul(seconds)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_keeps_everything() {
        let retention = Retention::default();
        assert!(retention.keeps_everything());
        assert!(retention.cutoffs(Utc::now()).is_empty());
        assert!(retention.has_tombstones());
        assert_eq!(retention.tombstone_cutoff(Utc::now()), None);
    }

    #[test]
    fn a_tombstone_must_outlive_the_full_document() {
        let day = Duration::from_secs(86_400);
        assert!(
            Retention::default()
                .failed(2 * day)
                .tombstones_for(day)
                .validate()
                .is_err()
        );
        assert!(
            Retention::default()
                .failed(day)
                .tombstones_for(day)
                .validate()
                .is_ok()
        );
        assert!(
            Retention::default()
                .finished(day)
                .without_tombstones()
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn cutoffs_are_now_minus_each_period() {
        let now = Utc::now();
        let retention = Retention::default()
            .completed(Duration::from_secs(60))
            .tombstones_for(Duration::from_secs(600));
        assert_eq!(
            retention.cutoffs(now),
            vec![(TaskStatus::Completed, now - TimeDelta::seconds(60))]
        );
        assert_eq!(
            retention.tombstone_cutoff(now),
            Some(now - TimeDelta::seconds(600))
        );
        assert_eq!(before(now, Duration::MAX), DateTime::<Utc>::MIN_UTC);
    }
}

//! The queue inspector: what one environment's queue holds, kind by kind.
//!
//! [`Store::inspect`](crate::Store::inspect) answers with a [`QueueStats`]: for every kind that has
//! tasks in the environment, its counts by status, when its longest-waiting
//! pending task became ready, and when its next task becomes due. Operators
//! read it through [`crate::Manager::inspect`] (which also refreshes the
//! queue gauges of [`crate::metrics`]) or the `oncetask stats` command.
//!
//! Every backend gets [`Store::inspect`](crate::Store::inspect) and [`Store::kinds`](crate::Store::kinds) for free: their
//! default implementations, [`inspect_with_primitives`] and
//! [`kinds_by_listing`], are built from the other store methods. Backends
//! override them with cheaper queries where they can.
//!
//! [`inspect_with_primitives`]: crate::store::defaults::inspect_with_primitives
//! [`kinds_by_listing`]: crate::store::defaults::kinds_by_listing
//!
//! ```
//! # use oncetask_core::{Manager, TaskStatus};
//! # async fn demo(manager: &Manager) -> Result<(), oncetask_core::Error> {
//! let stats = manager.inspect().await?;
//! for (kind, k) in &stats.kinds {
//!     let age = k.oldest_pending_age(stats.now).unwrap_or_default();
//!     println!("{kind}: {} pending, oldest waiting {age:?}", k.count(TaskStatus::Pending));
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::status::{StatusCounts, TaskStatus};
use crate::task::Task;

/// A snapshot of one environment's queue at [`QueueStats::now`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct QueueStats {
    /// The environment inspected.
    pub env: String,
    /// The time statuses were derived at.
    pub now: DateTime<Utc>,
    /// Every kind with at least one task in the environment, by name
    /// ([`Store::kinds`](crate::Store::kinds): a kind whose documents all fail to decode is not
    /// listed).
    pub kinds: BTreeMap<String, KindStats>,
}

/// What the queue holds of one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct KindStats {
    /// Tasks by status at [`QueueStats::now`] (statuses with no task are
    /// absent), and the kind's undecodable documents apart
    /// ([`StatusCounts::undecodable`]), as [`Store::count_by_status`](crate::Store::count_by_status).
    pub counts: StatusCounts,
    /// When the pending task that has waited longest became ready
    /// ([`Task::ready_since`]); `None` when no task is pending.
    pub oldest_pending_since: Option<DateTime<Utc>>,
    /// The earliest instant after [`QueueStats::now`] at which a not-done task
    /// becomes due: a scheduled time, a backoff's end or a lease expiry
    /// ([`Store::next_due`](crate::Store::next_due)). `None` when nothing is scheduled.
    pub next_due: Option<DateTime<Utc>>,
}

impl QueueStats {
    /// A snapshot of `env` at `now` (backends build one in
    /// [`Store::inspect`](crate::Store::inspect)).
    pub fn new(
        env: impl Into<String>,
        now: DateTime<Utc>,
        kinds: BTreeMap<String, KindStats>,
    ) -> Self {
        Self {
            env: env.into(),
            now,
            kinds,
        }
    }
}

impl KindStats {
    /// What the queue holds of one kind (backends build one in
    /// [`Store::inspect`](crate::Store::inspect)).
    pub fn new(
        counts: StatusCounts,
        oldest_pending_since: Option<DateTime<Utc>>,
        next_due: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            counts,
            oldest_pending_since,
            next_due,
        }
    }

    /// Number of tasks with `status`.
    pub fn count(&self, status: TaskStatus) -> u64 {
        self.counts.get(&status).copied().unwrap_or(0)
    }

    /// Number of tasks of the kind, whatever their status (undecodable
    /// documents are not tasks: see [`KindStats::undecodable`]).
    pub fn total(&self) -> u64 {
        self.counts.tasks()
    }

    /// Number of the kind's documents that cannot be decoded into a task.
    pub fn undecodable(&self) -> u64 {
        self.counts.undecodable
    }

    /// How long the oldest pending task has been waiting at `now` (zero if
    /// it became ready after `now`, e.g. by another process's clock).
    pub fn oldest_pending_age(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.oldest_pending_since
            .map(|since| (now - since).to_std().unwrap_or_default())
    }
}

impl QueueStats {
    /// Counts by status over every kind, undecodable documents included
    /// (those of a kind that has no decodable task are not in
    /// [`QueueStats::kinds`], so not here either).
    pub fn totals(&self) -> StatusCounts {
        let mut totals = StatusCounts::new();
        for stats in self.kinds.values() {
            totals.merge(&stats.counts);
        }
        totals
    }

    /// The stats of one kind, if it has tasks.
    pub fn kind(&self, kind: &str) -> Option<&KindStats> {
        self.kinds.get(kind)
    }

    /// The earliest [`KindStats::oldest_pending_since`] over every kind.
    pub fn oldest_pending_since(&self) -> Option<DateTime<Utc>> {
        self.kinds
            .values()
            .filter_map(|k| k.oldest_pending_since)
            .min()
    }

    /// The earliest [`KindStats::next_due`] over every kind.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.kinds.values().filter_map(|k| k.next_due).min()
    }
}

impl Task {
    /// The instant the task became ready, as far as its fields tell: the
    /// latest of `created_at`, `wait_until` and an expired `leased_until`.
    /// Meaningful for a task that is ready now ([`Task::is_ready_at`]); for
    /// one that is not, it is when the task will be ready.
    ///
    /// ```
    /// # use oncetask_core::Task;
    /// # use chrono::TimeDelta;
    /// let created = "2025-01-06T09:00:00Z".parse().unwrap();
    /// let mut task = Task::new("t", "k", "prod", created);
    /// assert_eq!(task.ready_since(), created);
    /// task.wait_until = Some(created + TimeDelta::minutes(5)); // a backoff
    /// assert_eq!(task.ready_since(), created + TimeDelta::minutes(5));
    /// ```
    pub fn ready_since(&self) -> DateTime<Utc> {
        [self.wait_until, self.leased_until]
            .into_iter()
            .flatten()
            .fold(self.created_at, DateTime::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{t0, task};
    use chrono::TimeDelta;

    #[test]
    fn ready_since_is_the_latest_of_creation_wait_and_lease() {
        let m = TimeDelta::minutes(1);
        assert_eq!(task("a").ready_since(), t0());
        let waited = Task {
            wait_until: Some(t0() + m),
            ..task("a")
        };
        assert_eq!(waited.ready_since(), t0() + m);
        let scheduled_in_the_past = Task {
            wait_until: Some(t0() - m),
            ..task("a")
        };
        assert_eq!(scheduled_in_the_past.ready_since(), t0());
        let lease_expired = Task {
            wait_until: Some(t0() + m),
            leased_until: Some(t0() + m * 3),
            ..task("a")
        };
        assert_eq!(lease_expired.ready_since(), t0() + m * 3);
    }

    #[test]
    fn ages_and_totals() {
        let mut a = KindStats {
            oldest_pending_since: Some(t0()),
            ..KindStats::default()
        };
        a.counts.insert(TaskStatus::Pending, 2);
        a.counts.insert(TaskStatus::Completed, 5);
        a.counts.undecodable = 1;
        let mut b = KindStats {
            next_due: Some(t0() + TimeDelta::hours(1)),
            ..KindStats::default()
        };
        b.counts.insert(TaskStatus::Pending, 1);
        let stats = QueueStats {
            env: "E".into(),
            now: t0() + TimeDelta::seconds(90),
            kinds: BTreeMap::from([("a".to_owned(), a), ("b".to_owned(), b)]),
        };
        let a = &stats.kinds["a"];
        assert_eq!(a.total(), 7);
        assert_eq!(a.undecodable(), 1);
        assert_eq!(a.count(TaskStatus::Failed), 0);
        assert_eq!(
            a.oldest_pending_age(stats.now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            a.oldest_pending_age(t0() - TimeDelta::seconds(1)),
            Some(Duration::ZERO)
        );
        assert_eq!(stats.totals().get(&TaskStatus::Pending), Some(&3));
        assert_eq!(stats.totals().undecodable, 1);
        assert_eq!(stats.oldest_pending_since(), Some(t0()));
        assert_eq!(stats.next_due(), Some(t0() + TimeDelta::hours(1)));
    }
}

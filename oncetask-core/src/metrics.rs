//! Metrics, through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! The manager records the metrics below with the facade's macros; they go
//! to whatever recorder the application installed (a Prometheus exporter,
//! StatsD, ...) and cost an atomic load each when none is. Every metric
//! carries the labels `env` and `kind`. Call [`describe_metrics`] once after
//! installing a recorder to give them units and help texts.
//!
//! | Name | Type | What it counts or measures |
//! |---|---|---|
//! | `oncetask_tasks_created_total` | counter | tasks stored by `create`/`create_many`, and occurrences spawned by recurrence generators (existing ids are not counted) |
//! | `oncetask_tasks_claimed_total` | counter | tasks leased by a claim of this manager (a group claim counts each task) |
//! | `oncetask_tasks_succeeded_total` | counter | outcomes stored that left the task completed (a handler succeeded, or a generator ran out of slots) |
//! | `oncetask_tasks_failed_total` | counter | outcomes stored that left the task failed: its retry policy gave up |
//! | `oncetask_tasks_retried_total` | counter | failed attempts stored that left the task to run again (after its backoff, or its cancellation path) |
//! | `oncetask_tasks_cancelled_total` | counter | outcomes stored that left the task cancelled (its cancellation path finished) |
//! | `oncetask_tasks_fenced_off_total` | counter | writes refused because the worker's lease was lost (it expired and the task was claimed again, or it was reset): the stale outcome is discarded |
//! | `oncetask_handler_duration_seconds` | histogram | wall time of one handler call that returned or panicked (main or cancellation; a group handler's call once per group; calls stopped by their time limit or a shutdown are not recorded) |
//! | `oncetask_enqueue_to_start_seconds` | histogram | per claimed task: claim time minus the time the task became due, the latest of `created_at`, `wait_until` and `cancelled_at` (a task claimed again after a lost lease counts from that same time, so its lost run is included) |
//! | `oncetask_tasks_pending` | gauge | tasks whose status is pending (ready, not leased): see below |
//! | `oncetask_oldest_pending_age_seconds` | gauge | how long the longest-waiting pending task has been ready, from [`crate::Manager::inspect`] only (0 when none is pending) |
//!
//! Succeeded, failed and cancelled count each task once, when it finishes;
//! together with retried they count every stored handler outcome. Outcomes
//! that were not stored (fenced off, the task deleted meanwhile, a storage
//! failure, a shutdown interruption) are in none of the four.
//!
//! ## The queue gauges
//!
//! Counting pending tasks costs a store query, so the manager does not do it
//! on every write. The gauges are set:
//!
//! * for every kind of the environment, on each [`crate::Manager::inspect`]
//!   call (what `oncetask stats` runs): call it from a metrics scrape
//!   handler to refresh them on demand;
//! * for the registered kinds, every interval set with
//!   [`crate::manager::ManagerBuilder::queue_metrics_interval`] (off by
//!   default): one [`crate::Store::count_by_status`] per registered kind per
//!   interval, by a background loop of that manager. This refreshes only
//!   `oncetask_tasks_pending`.
//!
//! With several managers in one environment, enable the interval on one of
//! them or aggregate the gauge with `max`, not `sum`: each reports the
//! whole queue.

use ::metrics::Unit;
use chrono::{DateTime, Utc};

use crate::inspect::QueueStats;
use crate::status::TaskStatus;
use crate::task::Task;

/// Counter: tasks stored by a create, and occurrences spawned.
pub const TASKS_CREATED: &str = "oncetask_tasks_created_total";
/// Counter: tasks leased by a claim.
pub const TASKS_CLAIMED: &str = "oncetask_tasks_claimed_total";
/// Counter: outcomes that left the task completed.
pub const TASKS_SUCCEEDED: &str = "oncetask_tasks_succeeded_total";
/// Counter: outcomes that left the task failed.
pub const TASKS_FAILED: &str = "oncetask_tasks_failed_total";
/// Counter: failed attempts after which the task runs again.
pub const TASKS_RETRIED: &str = "oncetask_tasks_retried_total";
/// Counter: outcomes that left the task cancelled.
pub const TASKS_CANCELLED: &str = "oncetask_tasks_cancelled_total";
/// Counter: writes refused because the lease was lost.
pub const TASKS_FENCED_OFF: &str = "oncetask_tasks_fenced_off_total";
/// Histogram: seconds one handler call took.
pub const HANDLER_DURATION: &str = "oncetask_handler_duration_seconds";
/// Histogram: seconds from a task becoming due to its claim.
pub const ENQUEUE_TO_START: &str = "oncetask_enqueue_to_start_seconds";
/// Gauge: tasks whose status is pending.
pub const TASKS_PENDING: &str = "oncetask_tasks_pending";
/// Gauge: seconds the longest-waiting pending task has been ready.
pub const OLDEST_PENDING_AGE: &str = "oncetask_oldest_pending_age_seconds";

/// Every metric name above, in table order.
pub const ALL: [&str; 11] = [
    TASKS_CREATED,
    TASKS_CLAIMED,
    TASKS_SUCCEEDED,
    TASKS_FAILED,
    TASKS_RETRIED,
    TASKS_CANCELLED,
    TASKS_FENCED_OFF,
    HANDLER_DURATION,
    ENQUEUE_TO_START,
    TASKS_PENDING,
    OLDEST_PENDING_AGE,
];

/// Gives every oncetask metric its unit and help text in the installed
/// recorder. Call it once, after installing the recorder.
///
/// ```
/// oncetask_core::metrics::describe_metrics(); // a no-op without a recorder
/// ```
pub fn describe_metrics() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        TASKS_CREATED,
        Unit::Count,
        "Tasks stored by a create, and occurrences spawned by generators."
    );
    describe_counter!(TASKS_CLAIMED, Unit::Count, "Tasks leased by a claim.");
    describe_counter!(
        TASKS_SUCCEEDED,
        Unit::Count,
        "Outcomes that left the task completed."
    );
    describe_counter!(
        TASKS_FAILED,
        Unit::Count,
        "Outcomes that left the task failed (retries exhausted)."
    );
    describe_counter!(
        TASKS_RETRIED,
        Unit::Count,
        "Failed attempts after which the task runs again."
    );
    describe_counter!(
        TASKS_CANCELLED,
        Unit::Count,
        "Outcomes that left the task cancelled."
    );
    describe_counter!(
        TASKS_FENCED_OFF,
        Unit::Count,
        "Writes refused because the worker's lease was lost (stale outcomes discarded)."
    );
    describe_histogram!(
        HANDLER_DURATION,
        Unit::Seconds,
        "Wall time of one handler call."
    );
    describe_histogram!(
        ENQUEUE_TO_START,
        Unit::Seconds,
        "Time from a task becoming due to its claim."
    );
    describe_gauge!(
        TASKS_PENDING,
        Unit::Count,
        "Tasks ready to run and not leased, as of the last refresh."
    );
    describe_gauge!(
        OLDEST_PENDING_AGE,
        Unit::Seconds,
        "How long the longest-waiting pending task has been ready, as of the last inspect."
    );
}

/// Adds `n` to the counter `name` of `env`/`kind`.
pub(crate) fn count(name: &'static str, env: &str, kind: &str, n: usize) {
    if n == 0 {
        return;
    }
    ::metrics::counter!(name, "env" => env.to_owned(), "kind" => kind.to_owned())
        .increment(u64::try_from(n).unwrap_or(u64::MAX));
}

/// Records one handler call of `seconds`.
pub(crate) fn handler_duration(env: &str, kind: &str, seconds: f64) {
    ::metrics::histogram!(HANDLER_DURATION, "env" => env.to_owned(), "kind" => kind.to_owned())
        .record(seconds);
}

/// The instant a claimed task became due, for [`ENQUEUE_TO_START`]: the
/// latest of its creation, its `wait_until` and its cancellation (a cancel
/// makes a waiting task due at once). The claim's own lease is not part of it.
pub(crate) fn became_due(task: &Task) -> DateTime<Utc> {
    [task.wait_until, task.cancelled_at]
        .into_iter()
        .flatten()
        .fold(task.created_at, DateTime::max)
}

/// Records the enqueue-to-start delay of each task claimed at `claimed_at`.
pub(crate) fn claimed(env: &str, kind: &str, tasks: &[Task], claimed_at: DateTime<Utc>) {
    if tasks.is_empty() {
        return;
    }
    count(TASKS_CLAIMED, env, kind, tasks.len());
    let histogram =
        ::metrics::histogram!(ENQUEUE_TO_START, "env" => env.to_owned(), "kind" => kind.to_owned());
    for task in tasks {
        let waited = (claimed_at - became_due(task)).to_std().unwrap_or_default();
        histogram.record(waited.as_secs_f64());
    }
}

/// Counts a stored outcome by the status it left the task in; `failed_attempt`
/// tells a retry (failure, task not done) from a plain write.
pub(crate) fn outcome(env: &str, kind: &str, status: TaskStatus, failed_attempt: bool) {
    let name = match status {
        TaskStatus::Completed => TASKS_SUCCEEDED,
        TaskStatus::Failed => TASKS_FAILED,
        TaskStatus::Cancelled => TASKS_CANCELLED,
        _ if failed_attempt => TASKS_RETRIED,
        _ => return,
    };
    count(name, env, kind, 1);
}

/// Sets the pending gauge of `env`/`kind`.
pub(crate) fn pending(env: &str, kind: &str, pending: u64) {
    ::metrics::gauge!(TASKS_PENDING, "env" => env.to_owned(), "kind" => kind.to_owned())
        .set(pending as f64);
}

/// Sets both queue gauges of every kind in `stats`.
pub(crate) fn queue(stats: &QueueStats) {
    for (kind, k) in &stats.kinds {
        pending(&stats.env, kind, k.count(TaskStatus::Pending));
        let age = k.oldest_pending_age(stats.now).unwrap_or_default();
        ::metrics::gauge!(OLDEST_PENDING_AGE, "env" => stats.env.clone(), "kind" => kind.clone())
            .set(age.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{t0, task};
    use chrono::TimeDelta;

    #[test]
    fn a_task_becomes_due_at_the_latest_of_creation_wait_and_cancel() {
        let m = TimeDelta::minutes(1);
        assert_eq!(became_due(&task("a")), t0());
        let retried = Task {
            wait_until: Some(t0() + m),
            ..task("a")
        };
        assert_eq!(became_due(&retried), t0() + m);
        let cancelled = Task {
            cancelled_at: Some(t0() + m * 2),
            ..retried.clone()
        };
        assert_eq!(became_due(&cancelled), t0() + m * 2);
        // A claim's lease is not a due time.
        let leased = Task {
            leased_until: Some(t0() + m * 10),
            ..retried
        };
        assert_eq!(became_due(&leased), t0() + m);
    }
}

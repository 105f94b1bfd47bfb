//! Times, durations and a task's standing as operators read them: the
//! CLI's tables and the dashboard's pages say them the same way.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::status::TaskStatus;
use crate::task::Task;

/// A duration in at most two units: `45s`, `3m 12s`, `2h 5m`, `4d 3h`,
/// `850ms` below a second.
///
/// ```
/// use std::time::Duration;
/// use oncetask_core::display::duration;
///
/// assert_eq!(duration(Duration::from_secs(192)), "3m 12s");
/// assert_eq!(duration(Duration::from_millis(850)), "850ms");
/// ```
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.subsec_millis());
    }
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m {seconds}s"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// `t` relative to `now`: `in 3m 12s`, `5s ago`, `now`.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if t == now {
        return "now".to_owned();
    }
    match (t - now).to_std() {
        Ok(ahead) => format!("in {}", duration(ahead)),
        Err(_) => format!("{} ago", duration((now - t).to_std().unwrap_or_default())),
    }
}

/// An RFC 3339 UTC time, to the millisecond when it has any.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// An RFC 3339 time followed by its distance from `now`.
pub fn time_and_relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ({})", time(t), relative(t, now))
}

/// One line on where a task stands at `now`, beyond its status: when a
/// waiting task runs, how long a pending one has been ready, when a lease
/// ends, when it was cancelled or finished.
///
/// ```
/// use chrono::{TimeDelta, Utc};
/// use oncetask_core::Task;
/// use oncetask_core::display::standing;
///
/// let now = Utc::now();
/// let mut task = Task::new("a", "email", "prod", now);
/// task.wait_until = Some(now + TimeDelta::seconds(90));
/// assert_eq!(standing(&task, now), "runs in 1m 30s");
/// ```
pub fn standing(task: &Task, now: DateTime<Utc>) -> String {
    match task.status(now) {
        TaskStatus::Waiting => task
            .wait_until
            .map(|t| format!("runs {}", relative(t, now)))
            .unwrap_or_default(),
        TaskStatus::Pending => {
            let ready = (now - task.ready_since()).to_std().unwrap_or_default();
            format!("ready for {}", duration(ready))
        }
        TaskStatus::Leased => task
            .leased_until
            .map(|t| format!("lease ends {}", relative(t, now)))
            .unwrap_or_default(),
        TaskStatus::CancellationPending => task
            .cancelled_at
            .map(|t| format!("cancelled {}", relative(t, now)))
            .unwrap_or_default(),
        // Done, and any status a later version adds.
        _ => task
            .done_at
            .map(|t| format!("done {}", relative(t, now)))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn durations_read_at_a_glance() {
        let s = Duration::from_secs;
        assert_eq!(duration(s(45)), "45s");
        assert_eq!(duration(s(2 * 3600 + 300 + 7)), "2h 5m");
        assert_eq!(duration(s(4 * 86_400 + 3 * 3600 + 60)), "4d 3h");
    }

    #[test]
    fn relative_times() {
        let now: DateTime<Utc> = "2025-01-06T09:00:00Z".parse().expect("a time");
        assert_eq!(relative(now + TimeDelta::seconds(75), now), "in 1m 15s");
        assert_eq!(relative(now - TimeDelta::seconds(5), now), "5s ago");
        assert_eq!(relative(now, now), "now");
        assert_eq!(
            time_and_relative(now, now + TimeDelta::milliseconds(1500)),
            "2025-01-06T09:00:00Z (1s ago)"
        );
    }

    #[test]
    fn a_tasks_standing_follows_its_status() {
        let now: DateTime<Utc> = "2025-01-06T09:00:00Z".parse().expect("a time");
        let mut task = Task::new("a", "k", "e", now - TimeDelta::seconds(30));
        assert_eq!(standing(&task, now), "ready for 30s");
        task.leased_until = Some(now + TimeDelta::seconds(10));
        assert_eq!(standing(&task, now), "lease ends in 10s");
        task.done_at = Some(now - TimeDelta::seconds(2));
        assert_eq!(standing(&task, now), "done 2s ago");
    }
}

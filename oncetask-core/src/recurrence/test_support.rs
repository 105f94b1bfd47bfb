//! Helpers shared by the recurrence unit tests.

use chrono::{DateTime, Utc};

use super::{Recurrence, Schedule};

pub(super) fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

pub(super) fn sched(rule: &str, dtstart: &str) -> Schedule {
    Recurrence::new(rule, dtstart)
        .expect("valid recurrence")
        .schedule()
        .expect("schedule")
}

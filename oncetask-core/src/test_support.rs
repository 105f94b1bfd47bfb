//! Helpers shared by the core's unit tests.

use chrono::{DateTime, TimeZone, Utc};

use crate::task::Task;

/// A fixed instant: 2025-01-06T09:00:00Z (a Monday).
pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 6, 9, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A pending task of kind `k` in env `E` created at [`t0`].
pub(crate) fn task(id: &str) -> Task {
    Task {
        version: 0,
        ..Task::new(id, "k", "E", t0())
    }
}

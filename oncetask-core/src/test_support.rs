//! Helpers shared by the core's unit tests.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Map;

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
        id: id.to_owned(),
        kind: "k".to_owned(),
        data: Map::new(),
        resource_key: None,
        env: "E".to_owned(),
        wait_until: None,
        leased_until: None,
        created_at: t0(),
        done_at: None,
        attempts: 0,
        cancellation_attempts: 0,
        errors: Vec::new(),
        result: None,
        recurrence: None,
        parent_recurrence_id: None,
        occurrence_timestamp: None,
        is_cancelled: false,
        cancelled_at: None,
        lease_token: None,
        version: 0,
        outcome: None,
    }
}

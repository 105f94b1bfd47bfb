//! Rate limiters ([`oncetask_core::Store::take_starts`],
//! [`oncetask_core::Store::return_starts`]): a row of `rate_limits` per
//! env, kind and resource key (`keyed` 0 and key `''` for the kind's own),
//! holding the window it last saw and the starts taken in it.
//!
//! A call is one write transaction: each request reads its limiter's row,
//! applies the core's rule ([`StartsRequest::grant`] or
//! [`StartsRequest::give_back`]) and writes the result, so each request is
//! atomic against every other process. Rows whose window ended an hour
//! before (by the callers' clock) are deleted now and then.

use std::sync::atomic::Ordering;

use chrono::{DateTime, TimeDelta, Utc};
use oncetask_core::StoreError;
use oncetask_core::store::StartsRequest;
use sqlx::SqliteConnection;

use crate::SqliteStore;
use crate::error::db;
use crate::row::{from_micros, micros};
use crate::sql::max_micros;

/// How long after its window ended a limiter row may be deleted.
const FORGET_AFTER: TimeDelta = TimeDelta::hours(1);

/// How often (by the callers' clock) a store looks for such rows.
const SWEEP_EVERY_MS: i64 = 60_000;

/// Rows deleted per sweep at most.
const SWEEP_ROWS: i64 = 1_000;

/// A limiter's stored window and count.
type Stored = Option<(DateTime<Utc>, u32)>;

/// The end of the request's window (a period too long to add is a window
/// that never ends).
fn window_end(request: &StartsRequest) -> i64 {
    i64::try_from(request.period_ms)
        .ok()
        .and_then(TimeDelta::try_milliseconds)
        .and_then(|period| request.window_start.checked_add_signed(period))
        .map_or(max_micros(), micros)
}

async fn read(conn: &mut SqliteConnection, request: &StartsRequest) -> Result<Stored, StoreError> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT window_start, taken FROM rate_limits \
         WHERE env = ?1 AND kind = ?2 AND keyed = ?3 AND resource_key = ?4",
    )
    .bind(request.env.as_str())
    .bind(request.kind.as_str())
    .bind(request.resource_key.is_some())
    .bind(request.resource_key.as_deref().unwrap_or(""))
    .fetch_optional(conn)
    .await
    .map_err(db)?;
    Ok(row.and_then(|(start, taken)| {
        Some((
            from_micros(start)?,
            u32::try_from(taken).unwrap_or(u32::MAX),
        ))
    }))
}

async fn write(
    conn: &mut SqliteConnection,
    request: &StartsRequest,
    (window, taken): (DateTime<Utc>, u32),
) -> Result<(), StoreError> {
    let end = if window == request.window_start {
        window_end(request)
    } else {
        max_micros()
    };
    sqlx::query(
        "INSERT INTO rate_limits (env, kind, keyed, resource_key, window_start, window_end, taken) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (env, kind, keyed, resource_key) DO UPDATE SET \
           window_start = excluded.window_start, window_end = excluded.window_end, \
           taken = excluded.taken",
    )
    .bind(request.env.as_str())
    .bind(request.kind.as_str())
    .bind(request.resource_key.is_some())
    .bind(request.resource_key.as_deref().unwrap_or(""))
    .bind(micros(window))
    .bind(end)
    .bind(i64::from(taken))
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

impl SqliteStore {
    /// [`oncetask_core::Store::take_starts`].
    pub(crate) async fn take(&self, requests: &[StartsRequest]) -> Result<Vec<u32>, StoreError> {
        let mut granted = vec![0u32; requests.len()];
        // A request for nothing grants nothing and changes nothing.
        if requests.iter().all(|r| r.count == 0) {
            return Ok(granted);
        }
        let mut tx = self.begin_write().await?;
        for (slot, request) in granted.iter_mut().zip(requests) {
            if request.count == 0 {
                continue;
            }
            let stored = read(tx.conn(), request).await?;
            let (n, next) = request.grant(stored);
            if next != stored
                && let Some(next) = next
            {
                write(tx.conn(), request, next).await?;
            }
            *slot = n;
        }
        if let Some(latest) = requests.iter().map(|r| r.window_start).max() {
            self.sweep_limiters(tx.conn(), latest).await?;
        }
        tx.commit().await?;
        Ok(granted)
    }

    /// [`oncetask_core::Store::return_starts`].
    pub(crate) async fn give_back(&self, requests: &[StartsRequest]) -> Result<(), StoreError> {
        if requests.iter().all(|r| r.count == 0) {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for request in requests.iter().filter(|r| r.count > 0) {
            let stored = read(tx.conn(), request).await?;
            let next = request.give_back(stored);
            if next != stored
                && let Some(next) = next
            {
                write(tx.conn(), request, next).await?;
            }
        }
        tx.commit().await
    }

    /// Deletes limiter rows whose window ended [`FORGET_AFTER`] before
    /// `now`, at most once per [`SWEEP_EVERY_MS`] per store.
    async fn sweep_limiters(
        &self,
        conn: &mut SqliteConnection,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let at = now.timestamp_millis();
        let last = self.inner.limiters_swept_at.load(Ordering::Relaxed);
        if at.saturating_sub(last) < SWEEP_EVERY_MS {
            return Ok(());
        }
        self.inner.limiters_swept_at.store(at, Ordering::Relaxed);
        let Some(cutoff) = now.checked_sub_signed(FORGET_AFTER) else {
            return Ok(());
        };
        sqlx::query(
            "DELETE FROM rate_limits WHERE (env, kind, keyed, resource_key) IN ( \
               SELECT env, kind, keyed, resource_key FROM rate_limits \
               WHERE window_end < ?1 ORDER BY window_end LIMIT ?2)",
        )
        .bind(micros(cutoff))
        .bind(SWEEP_ROWS)
        .execute(conn)
        .await
        .map_err(db)?;
        Ok(())
    }
}

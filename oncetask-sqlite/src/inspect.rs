//! The queue inspector ([`oncetask_core::Store::inspect`]) in two
//! aggregate queries on one read transaction (one WAL snapshot).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use oncetask_core::{KindStats, QueueStats, StoreError};
use sqlx::Row;

use crate::SqliteStore;
use crate::error::db;
use crate::read::add_count;
use crate::row::{from_micros, micros};
use crate::sql::{DUE, WELL_FORMED, status_or_undecodable_sql, status_sql};

impl SqliteStore {
    /// Counts by kind and status over the env's rows, then the oldest
    /// pending time and next due time per kind over its not-done rows.
    pub(crate) async fn inspect_env(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<QueueStats, StoreError> {
        let status = status_sql("?2");
        let counted_as = status_or_undecodable_sql("?2");
        let well_formed = &*WELL_FORMED;
        let mut tx = self.inner.pool.begin().await.map_err(db)?;
        let counted = sqlx::query(&format!(
            "SELECT kind, s, count(*) FROM (SELECT kind, {counted_as} AS s FROM tasks \
               WHERE env = ?1) GROUP BY kind, s"
        ))
        .bind(env)
        .bind(micros(now))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut kinds: BTreeMap<String, KindStats> = BTreeMap::new();
        for r in &counted {
            // A kind that is not text is no kind (its rows are undecodable).
            let Ok(kind) = r.try_get::<String, _>(0) else {
                continue;
            };
            let name: String = r.try_get(1).map_err(db)?;
            let n: i64 = r.try_get(2).map_err(db)?;
            let counts = &mut kinds.entry(kind).or_default().counts;
            add_count(counts, &name, u64::try_from(n).unwrap_or(0))?;
        }
        // As `kinds`: a kind with undecodable rows only is not listed.
        kinds.retain(|_, k| k.counts.tasks() > 0);
        let ready_since = "max(created_at, coalesce(wait_until, created_at), \
                           coalesce(leased_until, created_at))";
        let open = sqlx::query(&format!(
            "SELECT kind, \
               min(CASE WHEN ({status}) = 'pending' THEN {ready_since} END), \
               min(CASE WHEN {DUE} > ?2 THEN {DUE} END) \
             FROM tasks WHERE env = ?1 AND done_at IS NULL AND {well_formed} \
             GROUP BY kind"
        ))
        .bind(env)
        .bind(micros(now))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        for r in &open {
            let kind: String = r.try_get(0).map_err(db)?;
            let oldest: Option<i64> = r.try_get(1).map_err(db)?;
            let due: Option<i64> = r.try_get(2).map_err(db)?;
            let stats = kinds.entry(kind).or_default();
            stats.oldest_pending_since = oldest.and_then(from_micros);
            stats.next_due = due.and_then(from_micros);
        }
        Ok(QueueStats::new(env, now, kinds))
    }
}

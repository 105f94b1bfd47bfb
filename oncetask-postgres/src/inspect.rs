//! The queue inspector in SQL: distinct kinds, and `inspect` in two
//! aggregate queries on one snapshot.

use std::collections::BTreeMap;

use oncetask_core::{KindStats, QueueStats};

use super::*;

impl PostgresStore {
    /// `SELECT DISTINCT kind` of the env's task rows.
    pub(crate) async fn distinct_kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        let t = &self.inner.table;
        sqlx::query_scalar(&format!(
            "SELECT DISTINCT kind FROM {t} WHERE env = $1 AND {WELL_FORMED} ORDER BY kind"
        ))
        .bind(env)
        .fetch_all(self.query_pool().await)
        .await
        .map_err(db)
    }

    /// Counts by kind and status over the env's rows, then the oldest
    /// pending time and next due time per kind over its not-done rows, in
    /// one read-only repeatable-read transaction (one snapshot).
    pub(crate) async fn inspect_env(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<QueueStats, StoreError> {
        let t = &self.inner.table;
        let status = status_sql("$2");
        let counted_as = status_or_undecodable_sql("$2");
        let mut tx = self.query_pool().await.begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let counted = sqlx::query(&format!(
            "SELECT kind, s, count(*) FROM (SELECT kind, {counted_as} AS s FROM {t} \
               WHERE env = $1) c \
             GROUP BY kind, s"
        ))
        .bind(env)
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut kinds: BTreeMap<String, KindStats> = BTreeMap::new();
        for r in &counted {
            let kind: String = r.try_get(0).map_err(db)?;
            let name: String = r.try_get(1).map_err(db)?;
            let n: i64 = r.try_get(2).map_err(db)?;
            let counts = &mut kinds.entry(kind).or_default().counts;
            add_count(counts, &name, u64::try_from(n).unwrap_or(0))?;
        }
        // As `kinds`: a kind with undecodable rows only is not listed.
        kinds.retain(|_, k| k.counts.tasks() > 0);
        // GREATEST skips NULLs: the latest of creation, wait and lease.
        let due = "greatest(coalesce(wait_until, '-infinity'::timestamptz), \
                   coalesce(leased_until, '-infinity'::timestamptz))";
        let open = sqlx::query(&format!(
            "SELECT kind, \
               min(greatest(created_at, wait_until, leased_until)) \
                 FILTER (WHERE ({status}) = 'pending'), \
               min({due}) FILTER (WHERE {due} > $2) \
             FROM {t} WHERE env = $1 AND done_at IS NULL AND {WELL_FORMED} \
             GROUP BY kind"
        ))
        .bind(env)
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        for r in &open {
            let kind: String = r.try_get(0).map_err(db)?;
            let stats = kinds.entry(kind).or_default();
            stats.oldest_pending_since = row::time_column(r, 1).map_err(StoreError::backend)?;
            stats.next_due = row::time_column(r, 2).map_err(StoreError::backend)?;
        }
        Ok(QueueStats::new(env, now, kinds))
    }
}

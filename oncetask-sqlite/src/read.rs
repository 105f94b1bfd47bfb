//! Reads by id, counts by status, the next due time and the kinds: each
//! one statement on a pooled connection (WAL readers never wait for the
//! writer).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use oncetask_core::StoreError;
use oncetask_core::store::{Fetched, StatusCounts, Undecodable};
use sqlx::Row;

use crate::SqliteStore;
use crate::error::db;
use crate::row::{self, COLUMNS, Decoded};
use crate::sql;

/// Adds `n` to the count named `name`: a status, or `undecodable`.
pub(crate) fn add_count(counts: &mut StatusCounts, name: &str, n: u64) -> Result<(), StoreError> {
    if name == "undecodable" {
        counts.undecodable += n;
    } else {
        counts.add(name.parse().map_err(StoreError::backend)?, n);
    }
    Ok(())
}

/// Decoded rows by id, and `ids` answered from them in input order, each
/// once.
fn in_input_order(ids: &[String], mut by_id: HashMap<String, Fetched>) -> Vec<Fetched> {
    let mut seen = HashSet::new();
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .filter_map(|id| by_id.remove(id))
        .collect()
}

impl SqliteStore {
    /// [`oncetask_core::Store::get`]: `SELECT … WHERE id IN (…)`, at most [`GET_CHUNK`] ids a statement.
    pub(crate) async fn get_tasks(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError> {
        let mut by_id = HashMap::with_capacity(ids.len());
        let mut unique: Vec<&String> = ids.iter().collect();
        unique.sort_unstable();
        unique.dedup();
        for chunk in unique.chunks(GET_CHUNK) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id IN ({placeholders})");
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            let rows = query.fetch_all(&self.inner.pool).await.map_err(db)?;
            for r in &rows {
                let Decoded { id, task } = row::decode(r).map_err(StoreError::backend)?;
                let fetched = match task {
                    Ok(task) => Fetched::Task(task),
                    Err(reason) => Fetched::Undecodable(Undecodable {
                        id: id.clone(),
                        reason,
                    }),
                };
                by_id.insert(id, fetched);
            }
        }
        Ok(in_input_order(ids, by_id))
    }

    /// [`oncetask_core::Store::count_by_status`]: one aggregate of the status expression.
    pub(crate) async fn count_statuses(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StatusCounts, StoreError> {
        let status = sql::status_or_undecodable_sql("?3");
        let rows = sqlx::query(&format!(
            "SELECT s, count(*) FROM (SELECT {status} AS s FROM tasks \
               WHERE env = ?1 AND (?2 IS NULL OR kind = ?2)) GROUP BY s"
        ))
        .bind(env)
        .bind(kind)
        .bind(row::micros(now))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db)?;
        let mut counts = StatusCounts::new();
        for r in &rows {
            let name: String = r.try_get(0).map_err(db)?;
            let n: i64 = r.try_get(1).map_err(db)?;
            add_count(&mut counts, &name, u64::try_from(n).unwrap_or(0))?;
        }
        Ok(counts)
    }

    /// [`oncetask_core::Store::next_due`]: the least due time of the env and kind's
    /// not-done rows after `after`: the first `wait_until` past it among
    /// the never-leased rows (one probe of `tasks_unleased_idx`), and the
    /// least among the leased ones (few: `tasks_leased_idx`).
    pub(crate) async fn next_due_at(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let due = sql::DUE;
        let task_like = &*sql::TASK_LIKE;
        let max = sql::max_micros();
        let next: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT min(d) FROM ( \
               SELECT * FROM (SELECT wait_until AS d FROM tasks INDEXED BY tasks_unleased_idx \
                 WHERE env = ?1 AND kind = ?2 AND done_at IS NULL AND leased_until IS NULL \
                   AND wait_until > ?3 AND wait_until <= {max} \
                   AND typeof(wait_until) = 'integer' AND {task_like} \
                 ORDER BY wait_until LIMIT 1) \
               UNION ALL \
               SELECT min({due}) FROM tasks INDEXED BY tasks_leased_idx \
                 WHERE env = ?1 AND kind = ?2 AND done_at IS NULL AND leased_until IS NOT NULL \
                   AND {due} > ?3 AND {due} <= {max} AND typeof({due}) = 'integer' \
                   AND {task_like})"
        ))
        .bind(env)
        .bind(kind)
        .bind(row::micros(after))
        .fetch_one(&self.inner.pool)
        .await
        .map_err(db)?;
        Ok(next.and_then(row::from_micros))
    }

    /// [`oncetask_core::Store::kinds`].
    pub(crate) async fn distinct_kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        let well_formed = &*sql::WELL_FORMED;
        sqlx::query_scalar(&format!(
            "SELECT DISTINCT kind FROM tasks WHERE env = ?1 AND {well_formed} ORDER BY kind"
        ))
        .bind(env)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db)
    }
}

/// Most ids one `get` statement names (SQLite allows 32,766 parameters).
const GET_CHUNK: usize = 500;

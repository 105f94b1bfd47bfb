//! The operator reads ([`Store::find_generators`],
//! [`Store::open_resource_keys`], [`Store::find_undecodable`]): each one
//! statement.
//!
//! * Generators: `tasks_generators_idx` (migration 0003), a partial index
//!   over the rows with a recurrence, in id order.
//! * Key queues: one `GROUP BY` over the open, keyed rows of the env (and
//!   kind): exact however many open tasks there are, at the cost of reading
//!   them all.
//! * Undecodable rows: the rows that are not [`WELL_FORMED`] (what
//!   `count_by_status` counts as undecodable), in id order, decoded here
//!   for the reason; a walk over the env.
//!
//! [`Store::find_generators`]: oncetask_core::Store::find_generators
//! [`Store::open_resource_keys`]: oncetask_core::Store::open_resource_keys
//! [`Store::find_undecodable`]: oncetask_core::Store::find_undecodable

use chrono::{DateTime, Utc};
use oncetask_core::store::{KeyQueue, KeyQueues, Undecodable};
use oncetask_core::{StoreError, Task};
use sqlx::sqlite::SqliteRow;

use crate::SqliteStore;
use crate::error::db;
use crate::row::{self, COLUMNS, micros};
use crate::sql::{WELL_FORMED, status_sql};

/// The rows [`WELL_FORMED`] does not accept, a condition that yields NULL
/// included (as `count_by_status`'s `CASE` counts them), where `NOT` would
/// drop those.
fn not_well_formed() -> String {
    format!("(CASE WHEN {} THEN 0 ELSE 1 END)", *WELL_FORMED)
}

impl SqliteStore {
    /// The rows of `env` meeting `condition` (SQL), in id order, at most
    /// `limit`.
    async fn rows_of_env(
        &self,
        condition: &str,
        env: &str,
        limit: usize,
    ) -> Result<Vec<SqliteRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tasks WHERE env = ?1 AND {condition} ORDER BY id LIMIT ?2"
        ))
        .bind(env)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db)
    }

    /// [`oncetask_core::Store::find_generators`].
    pub(crate) async fn generators(
        &self,
        env: &str,
        limit: usize,
    ) -> Result<Vec<Task>, StoreError> {
        let rows = self
            .rows_of_env("recurrence IS NOT NULL", env, limit)
            .await?;
        let mut tasks = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Ok(task) = row::decode(r).map_err(StoreError::backend)?.task {
                tasks.push(task);
            }
        }
        Ok(tasks)
    }

    /// [`oncetask_core::Store::open_resource_keys`].
    pub(crate) async fn key_queues(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<KeyQueues, StoreError> {
        let status = status_sql("?3");
        let rows = sqlx::query(&format!(
            "SELECT resource_key, count(*) AS open, \
               sum(({status}) = 'leased') AS leased, \
               json_group_array(DISTINCT kind) AS kinds, \
               min(created_at) AS oldest \
             FROM tasks \
             WHERE env = ?1 AND (?2 IS NULL OR kind = ?2) \
               AND done_at IS NULL AND resource_key IS NOT NULL AND {} \
             GROUP BY resource_key \
             ORDER BY open DESC, resource_key \
             LIMIT ?4",
            *WELL_FORMED
        ))
        .bind(env)
        .bind(kind)
        .bind(micros(now))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db)?;
        let mut keys = Vec::with_capacity(rows.len());
        for r in &rows {
            let count = |column: &str| -> Result<u64, StoreError> {
                let n = row::integer(r, column)
                    .map_err(StoreError::backend)?
                    .unwrap_or(0);
                Ok(u64::try_from(n).unwrap_or(0))
            };
            let key = row::text(r, "resource_key")
                .map_err(StoreError::backend)?
                .unwrap_or_default();
            let kinds_json = row::text(r, "kinds")
                .map_err(StoreError::backend)?
                .unwrap_or_default();
            let mut kinds: Vec<String> =
                serde_json::from_str(&kinds_json).map_err(StoreError::backend)?;
            kinds.sort();
            // WELL_FORMED rows hold times chrono can hold.
            let oldest = row::time(r, "oldest")
                .map_err(StoreError::backend)?
                .unwrap_or(now);
            keys.push(KeyQueue::new(
                key,
                count("open")?,
                count("leased")?,
                kinds,
                oldest,
            ));
        }
        Ok(KeyQueues::new(keys, true))
    }

    /// [`oncetask_core::Store::find_undecodable`].
    pub(crate) async fn undecodable(
        &self,
        env: &str,
        limit: usize,
    ) -> Result<Vec<Undecodable>, StoreError> {
        let rows = self.rows_of_env(&not_well_formed(), env, limit).await?;
        let mut found = Vec::with_capacity(rows.len());
        for r in &rows {
            let decoded = row::decode(r).map_err(StoreError::backend)?;
            let reason = match decoded.task {
                Err(reason) => reason,
                // The SQL check is stricter than the decoder somewhere.
                Ok(_) => "the row fails the store's well-formedness check".to_owned(),
            };
            found.push(Undecodable {
                id: decoded.id,
                reason,
            });
        }
        Ok(found)
    }
}

//! The operator reads ([`Store::find_generators`],
//! [`Store::open_resource_keys`], [`Store::find_undecodable`]): each one
//! statement.
//!
//! * Generators: `tasks_generators_idx` (migration 0007), a partial index
//!   over the rows with a recurrence, in id order.
//! * Key queues: one `GROUP BY` over the open, keyed rows of the env (and
//!   kind), counted in the database: exact however many open tasks there
//!   are, at the cost of reading them all (about 1 µs a row on the server).
//! * Undecodable rows: the rows that are not [`WELL_FORMED`] (what
//!   `count_by_status` counts as undecodable), in id order, decoded here
//!   for the reason. The condition is no index's: a walk over the env.

use oncetask_core::store::{KeyQueue, KeyQueues};

use super::*;

impl PostgresStore {
    /// The rows of `env` meeting `condition` (SQL), in id order, at most
    /// `limit`.
    async fn rows_of_env(
        &self,
        condition: &str,
        env: &str,
        limit: usize,
    ) -> Result<Vec<sqlx::postgres::PgRow>, StoreError> {
        let t = &self.inner.table;
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {t} WHERE env = $1 AND {condition} ORDER BY id LIMIT $2"
        ))
        .bind(env)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.query_pool().await)
        .await
        .map_err(db)
    }

    /// [`Store::find_generators`].
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
            if let Ok(task) = row::decode(r).map_err(db)?.task {
                tasks.push(task);
            }
        }
        Ok(tasks)
    }

    /// [`Store::open_resource_keys`].
    pub(crate) async fn key_queues(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<KeyQueues, StoreError> {
        let t = &self.inner.table;
        let status = status_sql("$3");
        let rows = sqlx::query(&format!(
            "SELECT resource_key, count(*) AS open, \
               count(*) FILTER (WHERE ({status}) = 'leased') AS leased, \
               array_agg(DISTINCT kind ORDER BY kind) AS kinds, \
               min(created_at) AS oldest \
             FROM {t} \
             WHERE env = $1 AND ($2::text IS NULL OR kind = $2) \
               AND done_at IS NULL AND resource_key IS NOT NULL AND {WELL_FORMED} \
             GROUP BY resource_key \
             ORDER BY open DESC, resource_key \
             LIMIT $4"
        ))
        .bind(env)
        .bind(kind)
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.query_pool().await)
        .await
        .map_err(db)?;
        let mut keys = Vec::with_capacity(rows.len());
        for r in &rows {
            let count = |column: &str| -> Result<u64, StoreError> {
                let n: i64 = r.try_get(column).map_err(db)?;
                Ok(u64::try_from(n).unwrap_or(0))
            };
            // WELL_FORMED rows have finite creation times.
            let oldest = row::time_column(r, "oldest")
                .map_err(StoreError::backend)?
                .unwrap_or(now);
            keys.push(KeyQueue::new(
                r.try_get("resource_key").map_err(db)?,
                count("open")?,
                count("leased")?,
                r.try_get("kinds").map_err(db)?,
                oldest,
            ));
        }
        Ok(KeyQueues::new(keys, true))
    }

    /// [`Store::find_undecodable`].
    pub(crate) async fn undecodable(
        &self,
        env: &str,
        limit: usize,
    ) -> Result<Vec<Undecodable>, StoreError> {
        let rows = self
            .rows_of_env(
                &format!("(CASE WHEN {WELL_FORMED} THEN false ELSE true END)"),
                env,
                limit,
            )
            .await?;
        let mut found = Vec::with_capacity(rows.len());
        for r in &rows {
            let decoded = row::decode(r).map_err(db)?;
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

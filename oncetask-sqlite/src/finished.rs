//! What a pruner reads ([`oncetask_core::Store::find_finished`]): a range
//! of `tasks_finished_idx` `(env, kind, done_at, id)` per page, the status
//! and tombstone flag checked on the way.

use oncetask_core::store::FinishedQuery;
use oncetask_core::{StoreError, Task};

use crate::SqliteStore;
use crate::error::db;
use crate::row::{self, COLUMNS, micros};
use crate::sql::FINISHED_STATUS;

impl SqliteStore {
    /// Pages of finished tasks; rows that do not decode (or that Rust
    /// classifies otherwise than SQL) are left out and the range is read
    /// on past them, so a page comes back short only at its end.
    pub(crate) async fn finished_tasks(
        &self,
        query: &FinishedQuery,
    ) -> Result<Vec<Task>, StoreError> {
        let mut tasks = Vec::new();
        let mut after = query.after.clone();
        while tasks.len() < query.limit {
            let want = query.limit - tasks.len();
            let cursor = if after.is_some() {
                "AND (done_at, id) > (?7, ?8) "
            } else {
                ""
            };
            let sql = format!(
                "SELECT {COLUMNS} FROM tasks \
                 WHERE env = ?1 AND kind = ?2 AND done_at IS NOT NULL AND done_at <= ?5 \
                   AND ({FINISHED_STATUS}) = ?3 AND (pruned_at IS NOT NULL) = ?4 {cursor}\
                 ORDER BY done_at, id LIMIT ?6"
            );
            let mut statement = sqlx::query(&sql)
                .bind(query.env.as_str())
                .bind(query.kind.as_str())
                .bind(query.status.as_str())
                .bind(query.tombstones)
                .bind(micros(query.finished_by))
                .bind(i64::try_from(want).unwrap_or(i64::MAX));
            if let Some((done_at, id)) = &after {
                statement = statement.bind(micros(*done_at)).bind(id.as_str());
            }
            let rows = statement.fetch_all(&self.inner.pool).await.map_err(db)?;
            let before = after.clone();
            for r in &rows {
                let decoded = row::decode(r).map_err(StoreError::backend)?;
                if let Ok(Some(done_at)) = row::time(r, "done_at") {
                    after = Some((done_at, decoded.id.clone()));
                }
                if let Ok(task) = decoded.task
                    && query.matches(&task)
                {
                    tasks.push(task);
                }
            }
            if rows.len() < want || after == before {
                break;
            }
        }
        Ok(tasks)
    }
}

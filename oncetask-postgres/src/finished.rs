//! What a pruner reads ([`Store::find_finished`]): one range of
//! `tasks_finished_idx` (migration 0006) per page.
//!
//! The index keys finished tasks by `(env, kind, status, tombstone or not,
//! done_at, id)`, where the status is [`FINISHED_STATUS`], the expression
//! the statement repeats so the planner matches it. Every condition of a
//! page is then part of the range: the equalities, `done_at <= finished_by`
//! and the `(done_at, id)` cursor (a row comparison the index can start
//! from). A page reads its `limit` entries and their rows, whatever else
//! the kind holds, and needs no sort.

use super::*;

impl PostgresStore {
    /// [`Store::find_finished`]: the rows of one page, decoded; rows that
    /// do not decode (or that Rust classifies otherwise than SQL) are left
    /// out.
    pub(crate) async fn finished_tasks(
        &self,
        query: &FinishedQuery,
    ) -> Result<Vec<Task>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let sql = self.find_finished_sql(query.after.is_some());
        let mut statement = sqlx::query(&sql)
            .bind(&query.env)
            .bind(&query.kind)
            .bind(query.status.as_str())
            .bind(query.tombstones)
            .bind(query.finished_by)
            .bind(limit);
        if let Some((done_at, id)) = &query.after {
            statement = statement.bind(*done_at).bind(id);
        }
        let rows = statement.fetch_all(&self.inner.pool).await.map_err(db)?;
        let mut tasks = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Ok(task) = row::decode(r).map_err(db)?.task
                && query.matches(&task)
            {
                tasks.push(task);
            }
        }
        Ok(tasks)
    }

    /// A page of finished tasks: env `$1`, kind `$2`, status `$3`
    /// (`completed`, `failed` or `cancelled`), tombstones (`$4` true) or
    /// full documents, `done_at <= $5`, at most `$6`; with `after`, only
    /// rows after `($7, $8)` in `(done_at, id)` order. Two statements
    /// rather than an optional cursor: `$7 IS NULL OR …` would leave the
    /// cursor out of the index range, and every page would walk the ones
    /// before it.
    pub(crate) fn find_finished_sql(&self, after: bool) -> String {
        let t = &self.inner.table;
        let cursor = if after {
            "AND (done_at, id) > ($7, $8) "
        } else {
            ""
        };
        format!(
            "SELECT {COLUMNS} FROM {t} \
             WHERE env = $1 AND kind = $2 AND ({FINISHED_STATUS}) = $3 \
               AND (pruned_at IS NOT NULL) = $4 \
               AND done_at IS NOT NULL AND done_at <= $5 {cursor}\
               AND {WELL_FORMED} \
             ORDER BY done_at, id LIMIT $6"
        )
    }
}

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
    /// out, and the range is read on past them, so a page comes back short
    /// only at the end of the range (the pruner stops at a short page).
    pub(crate) async fn finished_tasks(
        &self,
        query: &FinishedQuery,
    ) -> Result<Vec<Task>, StoreError> {
        let mut tasks = Vec::new();
        let mut after = query.after.clone();
        while tasks.len() < query.limit {
            let want = query.limit - tasks.len();
            let limit = i64::try_from(want).unwrap_or(i64::MAX);
            let sql = self.find_finished_sql(after.is_some());
            let mut statement = sqlx::query(&sql)
                .bind(&query.env)
                .bind(&query.kind)
                .bind(query.status.as_str())
                .bind(query.tombstones)
                .bind(query.finished_by)
                .bind(limit);
            if let Some((done_at, id)) = &after {
                statement = statement.bind(*done_at).bind(id);
            }
            let rows = statement.fetch_all(&self.inner.pool).await.map_err(db)?;
            let before = after.clone();
            for r in &rows {
                let decoded = row::decode(r).map_err(db)?;
                // A time Rust cannot hold (e.g. -infinity) cannot be a
                // cursor: the rows after it are read by the next pass.
                // (sqlx's own decoder would panic on it: `time_column`.)
                let done_at = row::time_column(r, "done_at").ok().flatten();
                if let Some(done_at) = done_at {
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

    /// A page of finished tasks: env `$1`, kind `$2`, status `$3`
    /// (`completed`, `failed` or `cancelled`), tombstones (`$4` true) or
    /// full documents, `done_at <= $5`, at most `$6`; with `after`, only
    /// rows after `($7, $8)` in `(done_at, id)` order. No [`WELL_FORMED`]
    /// filter: its many conditions make the planner estimate one row for a
    /// generic plan, which it then reads by bitmap and sorts (every row of
    /// the range per page: 1.4 s a page at 750k tombstones); ill-formed
    /// rows fail to decode in Rust instead. Two statements
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
             ORDER BY done_at, id LIMIT $6"
        )
    }
}

//! What a listing reads ([`Store::find`]): one statement per shape of
//! filter, so that each is planned for the conditions it has.
//!
//! A single statement with `$n IS NULL OR …` for every optional filter
//! reads the same rows, but its generic plan (what a prepared statement
//! runs after five executions) cannot start an index range at the cursor:
//! it read the whole environment and sorted it, 300-430 ms a page at 1M
//! tasks. Here only the filters that are set are written, and the cursor is
//! a row comparison, so a page starts at its cursor in `tasks_created_idx`
//! `(env, created_at, id)`, or in `tasks_resource_key_idx` for a resource
//! key, and reads until it has `limit` matches. A filter that few tasks
//! match (a status no task has) still walks the whole range: statuses
//! depend on the time, so no index orders them by creation.

use oncetask_core::store::TaskCursor;
use sqlx::{Postgres, QueryBuilder};

use super::*;

impl PostgresStore {
    /// [`Store::find`]: the matching rows in listing order, decoded. Rows
    /// that do not decode are left out and the range is read on past
    /// them, so a page is short only at the end of the listing.
    pub(crate) async fn find_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let mut tasks = Vec::new();
        let mut after = filter.after.clone();
        loop {
            let want = filter.limit.map(|limit| limit - tasks.len());
            let rows = find_query(&self.inner.table, filter, after.as_ref(), want)
                .build()
                .fetch_all(self.query_pool().await)
                .await
                .map_err(db)?;
            let before = after.clone();
            for r in &rows {
                let decoded = row::decode(r).map_err(db)?;
                // A time Rust cannot hold cannot be a cursor: the next
                // statement starts after the last row that has one (and
                // reading stops if no row of this one has).
                let created_at = row::time_column(r, "created_at").ok().flatten();
                if let Some(created_at) = created_at {
                    after = Some(TaskCursor {
                        created_at,
                        id: decoded.id.clone(),
                    });
                }
                if let Ok(task) = decoded.task {
                    tasks.push(task);
                }
            }
            let full_page = want.is_some_and(|want| rows.len() >= want);
            let short_of_limit = filter.limit.is_some_and(|limit| tasks.len() < limit);
            // The WELL_FORMED filter of an offset page already left out
            // what does not decode: one statement serves it.
            if !full_page || !short_of_limit || filter.offset > 0 || after == before {
                return Ok(tasks);
            }
        }
    }
}

/// Where [`status_sql`] puts the time, for [`find_query`] to bind it.
const NOW_MARK: &str = "\u{1}";

/// The statement of `filter`'s shape, with its values bound: only the
/// filters that are set appear, so every shape is a statement (and a plan)
/// of its own.
///
/// No [`WELL_FORMED`] filter, except for an offset (whose count must skip
/// only tasks that decode): its many conditions make the planner estimate
/// one row for a generic plan, which then reads every task of the kind
/// through a bitmap and sorts them (420 ms a page at 1M tasks) instead of
/// walking `tasks_created_idx` from the cursor (1.5 ms).
pub(crate) fn find_query<'a>(
    table: &str,
    filter: &'a TaskFilter,
    after: Option<&TaskCursor>,
    limit: Option<usize>,
) -> QueryBuilder<'a, Postgres> {
    let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM {table} WHERE env = "));
    q.push_bind(filter.env.as_str());
    if filter.offset > 0 {
        q.push(format!(" AND {WELL_FORMED}"));
    }
    if let Some(kind) = &filter.kind {
        q.push(" AND kind = ").push_bind(kind.as_str());
    }
    if let Some(key) = &filter.resource_key {
        q.push(" AND resource_key = ").push_bind(key.as_str());
    }
    if filter.not_done {
        q.push(" AND done_at IS NULL");
    }
    if !filter.statuses.is_empty() {
        let statuses: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        // The status expression names the time in two places: a bind each.
        let expression = status_sql(NOW_MARK);
        q.push(" AND (");
        for (i, part) in expression.split(NOW_MARK).enumerate() {
            if i > 0 {
                q.push_bind(filter.now);
            }
            q.push(part);
        }
        q.push(") = ANY(");
        q.push_bind(statuses);
        q.push(")");
    }
    if let Some(priority) = filter.priority {
        q.push(" AND priority = ").push_bind(i16::from(priority));
    }
    if let Some(prefix) = &filter.id_prefix {
        q.push(" AND starts_with(id, ")
            .push_bind(prefix.as_str())
            .push(")");
    }
    if let Some(end) = filter.created_until {
        q.push(" AND created_at <= ").push_bind(end);
    }
    if let Some(cursor) = after {
        q.push(" AND (created_at, id) > (")
            .push_bind(cursor.created_at)
            .push(", ")
            .push_bind(cursor.id.clone())
            .push(")");
    }
    q.push(" ORDER BY created_at, id");
    if filter.offset > 0 {
        q.push(" OFFSET ")
            .push_bind(i64::try_from(filter.offset).unwrap_or(i64::MAX));
    }
    if let Some(limit) = limit {
        q.push(" LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    }
    q
}

//! What a listing reads ([`oncetask_core::Store::find`]): one statement
//! with only the filters that are set, paged by a `(created_at, id)` cursor
//! on `tasks_created_idx` (or `tasks_resource_key_idx` for a key).

use oncetask_core::store::{TaskCursor, TaskFilter};
use oncetask_core::{StoreError, Task};

use crate::SqliteStore;
use crate::error::db;
use crate::row::{self, COLUMNS, micros};
use crate::sql::{Arg, Statement, WELL_FORMED, status_sql};

impl SqliteStore {
    /// [`oncetask_core::Store::find`]: the matching rows in listing order,
    /// decoded. Rows that do not decode are left out and the range is read
    /// on past them, so a page is short only at the end of the listing.
    pub(crate) async fn find_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let mut tasks = Vec::new();
        let mut after = filter.after.clone();
        loop {
            let want = filter.limit.map(|limit| limit.saturating_sub(tasks.len()));
            let statement = find_statement(filter, after.as_ref(), want);
            let rows = statement
                .query()
                .fetch_all(&self.inner.pool)
                .await
                .map_err(db)?;
            let before = after.clone();
            for r in &rows {
                let decoded = row::decode(r).map_err(StoreError::backend)?;
                // A time Rust cannot hold cannot be a cursor: the next
                // statement starts after the last row that has one.
                if let Ok(Some(created_at)) = row::time(r, "created_at") {
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
            // An offset page filtered out what does not decode in SQL: one
            // statement serves it.
            if !full_page || !short_of_limit || filter.offset > 0 || after == before {
                return Ok(tasks);
            }
        }
    }
}

/// The statement of `filter`'s shape, with its values bound. Only an
/// offset page filters by [`WELL_FORMED`] (its count must skip only tasks
/// that decode); the others leave undecodable rows to Rust.
fn find_statement(
    filter: &TaskFilter,
    after: Option<&TaskCursor>,
    limit: Option<usize>,
) -> Statement {
    let mut s = Statement::new(format!("SELECT {COLUMNS} FROM tasks WHERE env = "));
    s.bind(Arg::Text(filter.env.clone()));
    if filter.offset > 0 {
        s.push(&format!(" AND {}", *WELL_FORMED));
    }
    if let Some(kind) = &filter.kind {
        s.push(" AND kind = ").bind(Arg::Text(kind.clone()));
    }
    if let Some(key) = &filter.resource_key {
        s.push(" AND resource_key = ").bind(Arg::Text(key.clone()));
    }
    if filter.not_done {
        s.push(" AND done_at IS NULL");
    }
    if !filter.statuses.is_empty() {
        let now = s.arg(Arg::Int(micros(filter.now)));
        let names: Vec<String> = filter
            .statuses
            .iter()
            .map(|status| s.arg(Arg::Text(status.as_str().to_owned())))
            .collect();
        s.push(&format!(
            " AND ({}) IN ({})",
            status_sql(&now),
            names.join(", ")
        ));
    }
    if let Some(priority) = filter.priority {
        s.push(" AND priority = ")
            .bind(Arg::Int(i64::from(priority)));
    }
    if let Some(prefix) = &filter.id_prefix {
        // `instr` is 1 exactly when the id starts with the prefix (LIKE
        // would need its wildcards escaped).
        s.push(" AND instr(id, ")
            .bind(Arg::Text(prefix.clone()))
            .push(") = 1");
    }
    if let Some(end) = filter.created_until {
        s.push(" AND created_at <= ").bind(Arg::Int(micros(end)));
    }
    if let Some(cursor) = after {
        let created = s.arg(Arg::Int(micros(cursor.created_at)));
        let id = s.arg(Arg::Text(cursor.id.clone()));
        s.push(&format!(" AND (created_at, id) > ({created}, {id})"));
    }
    s.push(" ORDER BY created_at, id");
    // SQLite takes an OFFSET only after a LIMIT; -1 is "no limit".
    let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    if limit >= 0 || filter.offset > 0 {
        s.push(" LIMIT ").bind(Arg::Int(limit));
    }
    if filter.offset > 0 {
        s.push(" OFFSET ")
            .bind(Arg::Int(i64::try_from(filter.offset).unwrap_or(i64::MAX)));
    }
    s
}

//! SQL shared by the statements: the status of a row as [`Task::status`]
//! computes it, what SQL can tell about a row being a task, the due time,
//! and a small builder for statements with optional filters.
//!
//! [`Task::status`]: oncetask_core::Task::status

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::Sqlite;
use sqlx::sqlite::SqliteArguments;

use crate::row::micros;

/// The earliest and latest stored time chrono can hold, in microseconds.
fn time_range() -> (i64, i64) {
    (
        micros(DateTime::<Utc>::MIN_UTC),
        micros(DateTime::<Utc>::MAX_UTC),
    )
}

/// The latest time a task can hold, in stored microseconds.
pub(crate) fn max_micros() -> i64 {
    time_range().1
}

/// True when JSON text column `column` holds a JSON value of `json_type`
/// (`object`, `array`). A `CASE`, because `json_type` raises an error on
/// text that is not JSON, and only a `CASE` promises not to evaluate it then.
fn json_is(column: &str, json_type: &str) -> String {
    format!(
        "(CASE WHEN typeof({column}) = 'text' AND json_valid({column}) \
         THEN json_type({column}) = '{json_type}' ELSE 0 END)"
    )
}

/// Rows whose payload is a JSON object: due times ignore the others
/// (claims and `get` report them).
pub(crate) static TASK_LIKE: LazyLock<String> = LazyLock::new(|| json_is("data", "object"));

/// Rows that decode, as far as SQL can tell: the names are text, the
/// payload a JSON object, the error history an array of `{at, error}`
/// objects with text values, the recurrence an object, every counter an
/// integer in range, every time an integer chrono can hold, the outcome
/// one oncetask writes. Counts and `kinds` count the other rows as
/// undecodable. What SQL does not check (an `at` that is not a time, a
/// recurrence whose rule does not parse) still counts by status; `get` and
/// claims decode every row and report those.
pub(crate) static WELL_FORMED: LazyLock<String> = LazyLock::new(|| {
    let (min, max) = time_range();
    let time = |c: &str| {
        format!("({c} IS NULL OR (typeof({c}) = 'integer' AND {c} BETWEEN {min} AND {max}))")
    };
    let text = |c: &str| format!("({c} IS NULL OR typeof({c}) = 'text')");
    let count = |c: &str| format!("(typeof({c}) = 'integer' AND {c} BETWEEN 0 AND 4294967295)");
    let errors = format!(
        "(CASE WHEN {} THEN NOT EXISTS (SELECT 1 FROM json_each(errors) e \
           WHERE e.type <> 'object' \
              OR json_type(e.value, '$.at') IS NOT 'text' \
              OR json_type(e.value, '$.error') IS NOT 'text') \
         ELSE 0 END)",
        json_is("errors", "array")
    );
    [
        "typeof(kind) = 'text'".to_owned(),
        "typeof(env) = 'text'".to_owned(),
        json_is("data", "object"),
        errors,
        format!(
            "(recurrence IS NULL OR {})",
            json_is("recurrence", "object")
        ),
        "(result IS NULL OR (typeof(result) = 'text' AND json_valid(result)))".to_owned(),
        text("resource_key"),
        text("parent_recurrence_id"),
        text("lease_token"),
        count("attempts"),
        count("cancellation_attempts"),
        count("snoozes"),
        "(max_attempts IS NULL OR (typeof(max_attempts) = 'integer' \
          AND max_attempts BETWEEN 0 AND 4294967295))"
            .to_owned(),
        "(typeof(version) = 'integer' AND version >= 0)".to_owned(),
        "(typeof(priority) = 'integer' AND priority BETWEEN -128 AND 127)".to_owned(),
        "(typeof(is_cancelled) = 'integer' AND is_cancelled IN (0, 1))".to_owned(),
        "(outcome IS NULL OR outcome IN ('completed', 'failed', 'cancelled'))".to_owned(),
        format!("(typeof(created_at) = 'integer' AND created_at BETWEEN {min} AND {max})"),
        time("wait_until"),
        time("leased_until"),
        time("done_at"),
        time("cancelled_at"),
        time("occurrence_timestamp"),
        time("pruned_at"),
    ]
    .join(" AND ")
});

/// The status of a finished row, as [`oncetask_core::Task::status`] has it
/// (a document without an outcome, as the Go package writes, by its count
/// rule).
pub(crate) const FINISHED_STATUS: &str = "CASE WHEN is_cancelled = 1 THEN 'cancelled' \
    WHEN outcome = 'completed' THEN 'completed' \
    WHEN outcome = 'failed' THEN 'failed' \
    WHEN outcome = 'cancelled' THEN 'cancelled' \
    WHEN NOT (typeof(errors) = 'text' AND json_valid(errors)) THEN 'failed' \
    WHEN json_type(errors) <> 'array' THEN 'failed' \
    WHEN attempts > json_array_length(errors) THEN 'completed' \
    ELSE 'failed' END";

/// The status of a row at parameter `now` (e.g. `?3`), as [`oncetask_core::Task::status`].
pub(crate) fn status_sql(now: &str) -> String {
    format!(
        "CASE WHEN done_at IS NOT NULL THEN ({FINISHED_STATUS}) \
         WHEN is_cancelled = 1 THEN 'cancellationPending' \
         WHEN leased_until > {now} THEN 'leased' \
         WHEN wait_until > {now} THEN 'waiting' \
         ELSE 'pending' END"
    )
}

/// The status of a row at `now`, or `undecodable` for a row that is not
/// [`WELL_FORMED`].
pub(crate) fn status_or_undecodable_sql(now: &str) -> String {
    format!(
        "CASE WHEN {} THEN ({}) ELSE 'undecodable' END",
        *WELL_FORMED,
        status_sql(now)
    )
}

/// When a not-done row becomes due ([`oncetask_core::Task::due_at`]): the
/// later of its wait and lease, an unset one counting as long ago.
pub(crate) const DUE: &str = "max(coalesce(wait_until, -9223372036854775808), \
    coalesce(leased_until, -9223372036854775808))";

/// A bound value of a [`Statement`].
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// Text.
    Text(String),
    /// An integer (times are stored microseconds).
    Int(i64),
}

/// SQL built from parts, with numbered parameters (`?1`, `?2`, …) in the
/// order they were bound, so that only the filters that are set appear.
#[derive(Debug, Default)]
pub(crate) struct Statement {
    sql: String,
    args: Vec<Arg>,
}

impl Statement {
    /// A statement starting with `sql`.
    pub(crate) fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    /// Appends SQL.
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Binds `arg` and returns its placeholder (`?n`), to write where it belongs.
    pub(crate) fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("?{}", self.args.len())
    }

    /// Binds `arg` and appends its placeholder.
    pub(crate) fn bind(&mut self, arg: Arg) -> &mut Self {
        let placeholder = self.arg(arg);
        self.push(&placeholder)
    }

    /// The query, with every argument bound.
    pub(crate) fn query(&self) -> sqlx::query::Query<'_, Sqlite, SqliteArguments<'_>> {
        let mut query = sqlx::query(&self.sql);
        for arg in &self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s.as_str()),
                Arg::Int(n) => query.bind(*n),
            };
        }
        query
    }
}

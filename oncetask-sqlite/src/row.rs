//! Mapping between [`Task`] and a row of the `tasks` table.
//!
//! Reads check each column's stored type (SQLite keeps whatever a writer
//! put there) and report a row that is not a valid task as an error for
//! that row, never a panic. Times are integer microseconds since the Unix
//! epoch; JSON fields are text.

use chrono::{DateTime, Utc};
use oncetask_core::task::TaskParts;
use oncetask_core::{AttemptError, LeaseToken, Outcome, Recurrence, Task};
use serde_json::Value;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Row, Sqlite, TypeInfo, ValueRef};

/// The task columns, in the order every `SELECT` and `INSERT` lists them.
pub(crate) const COLUMNS: &str = "id, kind, env, data, resource_key, wait_until, leased_until, \
    created_at, done_at, attempts, cancellation_attempts, errors, result, recurrence, \
    parent_recurrence_id, occurrence_timestamp, is_cancelled, cancelled_at, lease_token, \
    version, outcome, snoozes, priority, max_attempts, pruned_at";

/// How many columns [`COLUMNS`] names.
pub(crate) const COLUMN_COUNT: usize = 25;

/// A row read from the table: a task, or the reason it is not one.
pub(crate) struct Decoded {
    /// The row's id.
    pub id: String,
    /// The task, or why the row does not decode.
    pub task: Result<Task, String>,
}

/// Reads one row selected with [`COLUMNS`]; `Err` only when even the id
/// cannot be read.
pub(crate) fn decode(row: &SqliteRow) -> Result<Decoded, String> {
    let id = text(row, "id")?.ok_or("column id: NULL")?;
    let task = decode_task(row, &id);
    Ok(Decoded { id, task })
}

/// The storage class of a column's value: `NULL`, `INTEGER`, `REAL`, `TEXT`
/// or `BLOB`.
fn class(row: &SqliteRow, column: &str) -> Result<String, String> {
    let raw = row
        .try_get_raw(column)
        .map_err(|e| format!("column {column}: {e}"))?;
    if raw.is_null() {
        return Ok("NULL".to_owned());
    }
    Ok(raw.type_info().name().to_ascii_uppercase())
}

/// A text column (`None` for `NULL`); any other storage class is an error.
pub(crate) fn text(row: &SqliteRow, column: &str) -> Result<Option<String>, String> {
    match class(row, column)?.as_str() {
        "NULL" => Ok(None),
        "TEXT" => row
            .try_get::<String, _>(column)
            .map(Some)
            .map_err(|e| format!("column {column}: {e}")),
        other => Err(format!("column {column}: expected text, found {other}")),
    }
}

/// An integer column (`None` for `NULL`); any other storage class is an error.
pub(crate) fn integer(row: &SqliteRow, column: &str) -> Result<Option<i64>, String> {
    match class(row, column)?.as_str() {
        "NULL" => Ok(None),
        "INTEGER" => row
            .try_get::<i64, _>(column)
            .map(Some)
            .map_err(|e| format!("column {column}: {e}")),
        other => Err(format!(
            "column {column}: expected an integer, found {other}"
        )),
    }
}

/// A time column: integer microseconds since the epoch, within chrono's range.
pub(crate) fn time(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>, String> {
    match integer(row, column)? {
        None => Ok(None),
        Some(micros) => from_micros(micros)
            .map(Some)
            .ok_or_else(|| format!("column {column}: {micros} µs is not a representable time")),
    }
}

/// A time from stored microseconds, when chrono can hold it.
pub(crate) fn from_micros(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
}

/// A time as stored: microseconds since the epoch.
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn required<T>(value: Option<T>, column: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("column {column}: NULL"))
}

fn json_column<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
    column: &str,
) -> Result<Option<T>, String> {
    match text(row, column)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("column {column}: {e}")),
    }
}

fn count(row: &SqliteRow, column: &str) -> Result<u32, String> {
    let n = required(integer(row, column)?, column)?;
    u32::try_from(n).map_err(|_| format!("column {column}: {n} is not a count"))
}

fn decode_task(row: &SqliteRow, id: &str) -> Result<Task, String> {
    let data = match required(json_column::<Value>(row, "data")?, "data")? {
        Value::Object(map) => map,
        other => {
            return Err(format!(
                "column data: expected a JSON object, found {}",
                kind_of(&other)
            ));
        }
    };
    let priority = required(integer(row, "priority")?, "priority")?;
    let priority = i8::try_from(priority)
        .map_err(|_| format!("column priority: {priority} is outside -128..=127"))?;
    let max_attempts = match integer(row, "max_attempts")? {
        Some(n) => {
            Some(u32::try_from(n).map_err(|_| format!("column max_attempts: invalid limit {n}"))?)
        }
        None => None,
    };
    let version = required(integer(row, "version")?, "version")?;
    let version =
        u64::try_from(version).map_err(|_| format!("column version: negative {version}"))?;
    let errors: Vec<AttemptError> = required(json_column(row, "errors")?, "errors")?;
    let recurrence: Option<Recurrence> = json_column(row, "recurrence")?;
    let outcome: Option<Outcome> = match text(row, "outcome")? {
        Some(name) => Some(
            serde_json::from_value(Value::String(name))
                .map_err(|e| format!("column outcome: {e}"))?,
        ),
        None => None,
    };
    let is_cancelled = match required(integer(row, "is_cancelled")?, "is_cancelled")? {
        0 => false,
        1 => true,
        n => return Err(format!("column is_cancelled: {n} is not a boolean")),
    };
    Ok(TaskParts {
        id: id.to_owned(),
        kind: required(text(row, "kind")?, "kind")?,
        data,
        resource_key: text(row, "resource_key")?,
        env: required(text(row, "env")?, "env")?,
        wait_until: time(row, "wait_until")?,
        leased_until: time(row, "leased_until")?,
        created_at: required(time(row, "created_at")?, "created_at")?,
        done_at: time(row, "done_at")?,
        attempts: count(row, "attempts")?,
        cancellation_attempts: count(row, "cancellation_attempts")?,
        errors,
        result: json_column(row, "result")?,
        recurrence,
        parent_recurrence_id: text(row, "parent_recurrence_id")?,
        occurrence_timestamp: time(row, "occurrence_timestamp")?,
        is_cancelled,
        cancelled_at: time(row, "cancelled_at")?,
        lease_token: text(row, "lease_token")?.map(LeaseToken::from_stored),
        version,
        outcome,
        snoozes: count(row, "snoozes")?,
        priority,
        max_attempts,
        pruned_at: time(row, "pruned_at")?,
        revision: None,
    }
    .into())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn to_text<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| e.to_string())
}

/// The stored name of an outcome (its serde name).
fn outcome_name(outcome: Option<&Outcome>) -> Result<Option<String>, String> {
    match outcome.map(serde_json::to_value).transpose() {
        Ok(None) => Ok(None),
        Ok(Some(Value::String(name))) => Ok(Some(name)),
        Ok(Some(other)) => Err(format!("outcome encodes as {other}, not a name")),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn version(task: &Task) -> Result<i64, String> {
    i64::try_from(task.version).map_err(|_| format!("version {} is too large", task.version))
}

/// One task's column values, encoded and checked, ready to bind in
/// [`COLUMNS`] order.
pub(crate) struct Encoded {
    data: String,
    errors: String,
    result: Option<String>,
    recurrence: Option<String>,
    outcome: Option<String>,
    version: i64,
}

impl Encoded {
    /// The task's values, or why it cannot be stored.
    pub(crate) fn new(task: &Task) -> Result<Self, String> {
        Ok(Self {
            data: to_text(&task.data)?,
            errors: to_text(&task.errors)?,
            result: task.result.as_ref().map(to_text).transpose()?,
            recurrence: task.recurrence.as_ref().map(to_text).transpose()?,
            outcome: outcome_name(task.outcome.as_ref())?,
            version: version(task)?,
        })
    }

    /// Binds the [`COLUMN_COUNT`] values of `task` (the task this was
    /// encoded from) in [`COLUMNS`] order.
    pub(crate) fn bind<'q>(
        self,
        task: &'q Task,
        query: sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>,
    ) -> sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>> {
        query
            .bind(task.id.as_str())
            .bind(task.kind.as_str())
            .bind(task.env.as_str())
            .bind(self.data)
            .bind(task.resource_key.as_deref())
            .bind(task.wait_until.map(micros))
            .bind(task.leased_until.map(micros))
            .bind(micros(task.created_at))
            .bind(task.done_at.map(micros))
            .bind(i64::from(task.attempts))
            .bind(i64::from(task.cancellation_attempts))
            .bind(self.errors)
            .bind(self.result)
            .bind(self.recurrence)
            .bind(task.parent_recurrence_id.as_deref())
            .bind(task.occurrence_timestamp.map(micros))
            .bind(i64::from(task.is_cancelled))
            .bind(task.cancelled_at.map(micros))
            .bind(task.lease_token.as_ref().map(LeaseToken::as_str))
            .bind(self.version)
            .bind(self.outcome)
            .bind(i64::from(task.snoozes))
            .bind(i64::from(task.priority))
            .bind(task.max_attempts.map(i64::from))
            .bind(task.pruned_at.map(micros))
    }
}

/// The assignments that write one row `x` of a `VALUES` list of
/// [`ChangeRow`]s (columns `column1`, `column2`, … in [`ChangeRow::bind`]'s
/// order) over its row: every column a swap may change (every
/// [`oncetask_core::store::Field`], plus the version); the payload only
/// when the row carries one (a prune), so the hot path never sends it.
pub(crate) const CHANGE_SETS: &str = "leased_until = x.column3, lease_token = x.column4, \
    wait_until = x.column5, attempts = x.column6, cancellation_attempts = x.column7, \
    errors = x.column8, done_at = x.column9, outcome = x.column10, result = x.column11, \
    is_cancelled = x.column12, cancelled_at = x.column13, snoozes = x.column14, \
    priority = x.column15, pruned_at = x.column16, version = x.column17, \
    data = coalesce(x.column18, data)";

/// How many values a [`ChangeRow`] binds.
pub(crate) const CHANGE_COLUMNS: usize = 18;

/// One swap as a row of a `VALUES` list: the id (`column1`), the fence's
/// version (`column2`) and the columns a swap may change, each as its
/// column stores it. Every writer of the table bumps the version, so a
/// holding fence means the columns outside the swap's change already have
/// the values written here.
pub(crate) struct ChangeRow<'a> {
    task: &'a Task,
    expected: i64,
    errors: String,
    outcome: Option<String>,
    result: Option<String>,
    version: i64,
    data: Option<String>,
}

impl<'a> ChangeRow<'a> {
    /// `task` written over a row whose version is `expected`, with its
    /// payload when `with_data`; or why a value cannot be stored.
    pub(crate) fn new(task: &'a Task, expected: u64, with_data: bool) -> Result<Self, String> {
        Ok(Self {
            task,
            expected: i64::try_from(expected)
                .map_err(|_| format!("version {expected} is too large"))?,
            errors: to_text(&task.errors)?,
            outcome: outcome_name(task.outcome.as_ref())?,
            result: task.result.as_ref().map(to_text).transpose()?,
            version: version(task)?,
            data: with_data.then(|| to_text(&task.data)).transpose()?,
        })
    }

    /// Binds the [`CHANGE_COLUMNS`] values, in [`CHANGE_SETS`]' order.
    pub(crate) fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>,
    ) -> sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>
    where
        'a: 'q,
    {
        let task = self.task;
        query
            .bind(task.id.as_str())
            .bind(self.expected)
            .bind(task.leased_until.map(micros))
            .bind(task.lease_token.as_ref().map(LeaseToken::as_str))
            .bind(task.wait_until.map(micros))
            .bind(i64::from(task.attempts))
            .bind(i64::from(task.cancellation_attempts))
            .bind(self.errors)
            .bind(task.done_at.map(micros))
            .bind(self.outcome)
            .bind(self.result)
            .bind(i64::from(task.is_cancelled))
            .bind(task.cancelled_at.map(micros))
            .bind(i64::from(task.snoozes))
            .bind(i64::from(task.priority))
            .bind(task.pruned_at.map(micros))
            .bind(self.version)
            .bind(self.data)
    }
}

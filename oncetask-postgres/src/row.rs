//! Mapping between [`Task`] and a row of the task table.
//!
//! Reads decode each column with its native type and report a row that is
//! not a valid task as an error for that row (never a panic). Writes encode a
//! batch of tasks as one JSON array that SQL expands with
//! `jsonb_to_recordset`, so a bulk insert or update is one statement with one
//! bound parameter. JSON-valued fields travel as JSON *text* inside that
//! array (cast back with `::jsonb`), because `jsonb_to_recordset` would turn
//! a JSON `null` result into SQL `NULL` and lose the difference between "no
//! result" and "the result `null`".

use chrono::{DateTime, SecondsFormat, Utc};
use oncetask_core::store::{Field, Swap};
use oncetask_core::task::TaskParts;
use oncetask_core::{AttemptError, LeaseToken, Outcome, Recurrence, Task};
use serde_json::{Map, Value};
use sqlx::postgres::{PgRow, PgValueFormat};
use sqlx::{Row, ValueRef};

/// The task columns, in the order every `SELECT` lists them.
pub(crate) const COLUMNS: &str = "id, kind, env, data, resource_key, wait_until, leased_until, \
    created_at, done_at, attempts, cancellation_attempts, errors, result, recurrence, \
    parent_recurrence_id, occurrence_timestamp, is_cancelled, cancelled_at, lease_token, \
    version, outcome, snoozes, priority, max_attempts, pruned_at";

/// The record type of one encoded row, for `jsonb_to_recordset(...) AS x(...)`.
pub(crate) const RECORD: &str = "x(id text, kind text, env text, data text, resource_key text, \
    wait_until timestamptz, leased_until timestamptz, created_at timestamptz, \
    done_at timestamptz, attempts integer, cancellation_attempts integer, errors text, \
    result text, recurrence text, parent_recurrence_id text, occurrence_timestamp timestamptz, \
    is_cancelled boolean, cancelled_at timestamptz, lease_token text, version bigint, \
    outcome text, snoozes integer, priority smallint, max_attempts integer, \
    pruned_at timestamptz)";

/// The values of [`RECORD`] as stored column values, in [`COLUMNS`] order.
pub(crate) const RECORD_VALUES: &str = "x.id, x.kind, x.env, x.data::jsonb, x.resource_key, \
    x.wait_until, x.leased_until, x.created_at, x.done_at, x.attempts, \
    x.cancellation_attempts, x.errors::jsonb, x.result::jsonb, x.recurrence::jsonb, \
    x.parent_recurrence_id, x.occurrence_timestamp, x.is_cancelled, x.cancelled_at, \
    x.lease_token, x.version, x.outcome, x.snoozes, x.priority, x.max_attempts, x.pruned_at";

/// A row read from the table: a task, or the reason it is not one.
pub(crate) struct Decoded {
    /// The row's id (always readable: it is the primary key).
    pub id: String,
    /// The task, or why the row does not decode.
    pub task: Result<Task, String>,
}

/// Reads one row selected with [`COLUMNS`].
pub(crate) fn decode(row: &PgRow) -> Result<Decoded, sqlx::Error> {
    let id: String = row.try_get("id")?;
    let task = decode_task(row, &id);
    Ok(Decoded { id, task })
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Reads a `timestamptz` column (`None` for SQL `NULL`).
///
/// sqlx's chrono decoder panics on values outside chrono's range (a
/// corrupted `'infinity'`, or a year past 262143), so the binary value is
/// converted here with checked arithmetic; `Err` says why it is not a time.
pub(crate) fn time_column<I>(row: &PgRow, column: I) -> Result<Option<DateTime<Utc>>, String>
where
    I: sqlx::ColumnIndex<PgRow> + std::fmt::Display + Copy,
{
    let raw = row
        .try_get_raw(column)
        .map_err(|e| format!("column {column}: {e}"))?;
    if raw.is_null() {
        return Ok(None);
    }
    if raw.format() == PgValueFormat::Text {
        // Text values are parsed, never added up: no overflow to fear.
        return row
            .try_get(column)
            .map_err(|e| format!("column {column}: {e}"));
    }
    let micros = <i64 as sqlx::Decode<sqlx::Postgres>>::decode(raw)
        .map_err(|e| format!("column {column}: {e}"))?;
    micros
        .checked_add(PG_EPOCH_MICROS)
        .and_then(DateTime::from_timestamp_micros)
        .map(Some)
        .ok_or_else(|| {
            format!("column {column}: {micros} µs after 2000 is not a representable time")
        })
}

fn json<T: serde::de::DeserializeOwned>(value: Value, field: &str) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("column {field}: {e}"))
}

fn decode_task(row: &PgRow, id: &str) -> Result<Task, String> {
    fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T, String>
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        row.try_get(column)
            .map_err(|e| format!("column {column}: {e}"))
    }
    let data = match get::<Value>(row, "data")? {
        Value::Object(map) => map,
        other => {
            return Err(format!(
                "column data: expected a JSON object, found {}",
                kind_of(&other)
            ));
        }
    };
    let count = |column: &str| -> Result<u32, String> {
        let n: i32 = get(row, column)?;
        u32::try_from(n).map_err(|_| format!("column {column}: negative count {n}"))
    };
    let priority: i16 = get(row, "priority")?;
    let priority = i8::try_from(priority)
        .map_err(|_| format!("column priority: {priority} is outside -128..=127"))?;
    let max_attempts = match get::<Option<i32>>(row, "max_attempts")? {
        Some(n) => {
            Some(u32::try_from(n).map_err(|_| format!("column max_attempts: negative limit {n}"))?)
        }
        None => None,
    };
    let version: i64 = get(row, "version")?;
    let version =
        u64::try_from(version).map_err(|_| format!("column version: negative {version}"))?;
    let errors: Vec<AttemptError> = json(get(row, "errors")?, "errors")?;
    let recurrence: Option<Recurrence> = match get::<Option<Value>>(row, "recurrence")? {
        Some(value) => Some(json(value, "recurrence")?),
        None => None,
    };
    let outcome: Option<Outcome> = match get::<Option<String>>(row, "outcome")? {
        Some(text) => Some(json(Value::String(text), "outcome")?),
        None => None,
    };
    Ok(TaskParts {
        id: id.to_owned(),
        kind: get(row, "kind")?,
        data,
        resource_key: get(row, "resource_key")?,
        env: get(row, "env")?,
        wait_until: time_column(row, "wait_until")?,
        leased_until: time_column(row, "leased_until")?,
        created_at: time_column(row, "created_at")?.ok_or("column created_at: NULL")?,
        done_at: time_column(row, "done_at")?,
        attempts: count("attempts")?,
        cancellation_attempts: count("cancellation_attempts")?,
        errors,
        result: get(row, "result")?,
        recurrence,
        parent_recurrence_id: get(row, "parent_recurrence_id")?,
        occurrence_timestamp: time_column(row, "occurrence_timestamp")?,
        is_cancelled: get(row, "is_cancelled")?,
        cancelled_at: time_column(row, "cancelled_at")?,
        lease_token: get::<Option<String>>(row, "lease_token")?.map(LeaseToken::from_stored),
        version,
        outcome,
        snoozes: count("snoozes")?,
        priority,
        max_attempts,
        pruned_at: time_column(row, "pruned_at")?,
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

fn time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(SecondsFormat::Micros, true))
    })
}

fn text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::String(s.to_owned()))
}

/// PostgreSQL text and jsonb cannot hold NUL: one such task would fail
/// the whole batch statement, so it is refused on its own here.
fn refuse_nul(task: &Task) -> Result<(), String> {
    let names = [
        Some(task.id.as_str()),
        Some(task.kind.as_str()),
        Some(task.env.as_str()),
        task.resource_key.as_deref(),
        task.parent_recurrence_id.as_deref(),
    ];
    if names.into_iter().flatten().any(|n| n.contains('\0')) {
        return Err("a name contains NUL, which PostgreSQL text cannot hold".into());
    }
    if task.data.keys().any(|k| k.contains('\0')) || task.data.values().any(has_nul) {
        return Err("data contains NUL, which PostgreSQL jsonb cannot hold".into());
    }
    refuse_nul_in_outcome(task)
}

/// The outcome's part of [`refuse_nul`]: error messages and the result.
fn refuse_nul_in_outcome(task: &Task) -> Result<(), String> {
    if task.errors.iter().any(|e| e.error.contains('\0')) {
        return Err("an error message contains NUL, which PostgreSQL jsonb cannot hold".into());
    }
    if task.result.as_ref().is_some_and(has_nul) {
        return Err("the result contains NUL, which PostgreSQL jsonb cannot hold".into());
    }
    Ok(())
}

/// True when a string or an object key anywhere in `value` holds NUL.
fn has_nul(value: &Value) -> bool {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(s) if s.contains('\0') => return true,
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                if map.keys().any(|k| k.contains('\0')) {
                    return true;
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    false
}

/// One task as an element of the JSON array read by [`RECORD`]; `Err` says
/// why the task cannot be stored.
pub(crate) fn encode(task: &Task) -> Result<Value, String> {
    refuse_nul(task)?;
    let counters = counters(task)?;
    let max_attempts = max_attempts(task)?;
    let mut row = Map::new();
    let mut put = |k: &str, v: Value| {
        row.insert(k.to_owned(), v);
    };
    put("id", Value::String(task.id.clone()));
    put("kind", Value::String(task.kind.clone()));
    put("env", Value::String(task.env.clone()));
    put("data", Value::String(to_text(&task.data)?));
    put("resource_key", text(task.resource_key.as_deref()));
    put("created_at", time(Some(task.created_at)));
    put(
        "recurrence",
        match &task.recurrence {
            Some(r) => Value::String(to_text(r)?),
            None => Value::Null,
        },
    );
    put(
        "parent_recurrence_id",
        text(task.parent_recurrence_id.as_deref()),
    );
    put("occurrence_timestamp", time(task.occurrence_timestamp));
    put(
        "max_attempts",
        max_attempts.map_or(Value::Null, Value::from),
    );
    put_changeable(task, &counters, &mut row)?;
    Ok(Value::Object(row))
}

/// One task's column values as typed bind parameters, for the single-row
/// create (`$1`..`$25` in [`COLUMNS`] order): no JSON array to build on the
/// client and none to expand on the server (`$1`..`$25` since `pruned_at`).
pub(crate) struct NewRow<'a> {
    task: &'a Task,
    counters: Counters,
    max_attempts: Option<i32>,
    outcome: Option<String>,
}

impl<'a> NewRow<'a> {
    /// The task's values, or why it cannot be stored (as [`encode`]).
    pub(crate) fn new(task: &'a Task) -> Result<Self, String> {
        refuse_nul(task)?;
        Ok(Self {
            task,
            counters: counters(task)?,
            max_attempts: max_attempts(task)?,
            outcome: outcome_name(task)?,
        })
    }

    /// Binds the 25 column values to `query`, in [`COLUMNS`] order. JSON
    /// columns go as `jsonb`, so a `null` result stays JSON `null`, apart
    /// from SQL `NULL` ("no result").
    pub(crate) fn bind(
        self,
        query: sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments> {
        use sqlx::types::Json;
        let t = self.task;
        query
            .bind(&t.id)
            .bind(&t.kind)
            .bind(&t.env)
            .bind(Json(&t.data))
            .bind(t.resource_key.as_deref())
            .bind(t.wait_until)
            .bind(t.leased_until)
            .bind(t.created_at)
            .bind(t.done_at)
            .bind(self.counters.attempts)
            .bind(self.counters.cancellation_attempts)
            .bind(Json(&t.errors))
            .bind(t.result.as_ref().map(Json))
            .bind(t.recurrence.as_ref().map(Json))
            .bind(t.parent_recurrence_id.as_deref())
            .bind(t.occurrence_timestamp)
            .bind(t.is_cancelled)
            .bind(t.cancelled_at)
            .bind(t.lease_token.as_ref().map(LeaseToken::as_str))
            .bind(self.counters.version)
            .bind(self.outcome)
            .bind(self.counters.snoozes)
            .bind(i16::from(t.priority))
            .bind(self.max_attempts)
            .bind(t.pruned_at)
    }
}

/// The columns a swap may change ([`oncetask_core::store::Field`], plus
/// the version), each under its column name; `counters` are the task's.
fn put_changeable(
    task: &Task,
    counters: &Counters,
    row: &mut Map<String, Value>,
) -> Result<(), String> {
    let &Counters {
        attempts,
        cancellation_attempts,
        version,
        snoozes,
    } = counters;
    let outcome = outcome_name(task)?.map_or(Value::Null, Value::String);
    let mut put = |k: &str, v: Value| {
        row.insert(k.to_owned(), v);
    };
    put("wait_until", time(task.wait_until));
    put("leased_until", time(task.leased_until));
    put("done_at", time(task.done_at));
    put("attempts", Value::from(attempts));
    put("cancellation_attempts", Value::from(cancellation_attempts));
    put("errors", Value::String(to_text(&task.errors)?));
    put(
        "result",
        match &task.result {
            Some(v) => Value::String(to_text(v)?),
            None => Value::Null,
        },
    );
    put("is_cancelled", Value::Bool(task.is_cancelled));
    put("cancelled_at", time(task.cancelled_at));
    put(
        "lease_token",
        text(task.lease_token.as_ref().map(LeaseToken::as_str)),
    );
    put("version", Value::from(version));
    put("outcome", outcome);
    put("snoozes", Value::from(snoozes));
    put("priority", Value::from(task.priority));
    put("pruned_at", time(task.pruned_at));
    Ok(())
}

/// The record type of one encoded change ([`encode_change`]): the target
/// id, the version it must still have, the notice to send, and the new
/// values under `n_` names (which no task column has, so SQL that names
/// the table's columns unqualified still means the table's).
pub(crate) const CHANGE_RECORD: &str = "x(n_id text, n_expected bigint, n_channel text, \
    n_notify boolean, n_wait_until timestamptz, n_leased_until timestamptz, \
    n_done_at timestamptz, n_attempts integer, n_cancellation_attempts integer, \
    n_errors text, n_result text, n_is_cancelled boolean, n_cancelled_at timestamptz, \
    n_lease_token text, n_version bigint, n_outcome text, n_snoozes integer, \
    n_priority smallint, n_data text, n_pruned_at timestamptz)";

/// The assignments that write a [`CHANGE_RECORD`] over its row.
pub(crate) const CHANGE_SETS: &str = "wait_until = x.n_wait_until, \
    leased_until = x.n_leased_until, done_at = x.n_done_at, attempts = x.n_attempts, \
    cancellation_attempts = x.n_cancellation_attempts, errors = x.n_errors::jsonb, \
    result = x.n_result::jsonb, is_cancelled = x.n_is_cancelled, \
    cancelled_at = x.n_cancelled_at, lease_token = x.n_lease_token, version = x.n_version, \
    outcome = x.n_outcome, snoozes = x.n_snoozes, priority = x.n_priority, \
    data = coalesce(x.n_data::jsonb, data), pruned_at = x.n_pruned_at";

/// One swap as an element of the JSON array read by [`CHANGE_RECORD`]: the
/// columns a swap may change (the payload only for a change that writes
/// it, a prune: `n_data` is `NULL` otherwise and the stored payload stays,
/// so the hot path never carries it), the fence's version, and
/// the notice `channel` to send when `notify`. Every writer of the table
/// bumps the version, so a holding fence means the columns outside the
/// swap's change are written with the values they already have.
///
/// Serialized straight into the statement's parameter (no JSON tree in
/// between: on the hot path that tree was a map insert and an allocation
/// per field).
#[derive(serde::Serialize)]
pub(crate) struct ChangeRow<'a> {
    n_id: &'a str,
    n_expected: i64,
    n_channel: String,
    n_notify: bool,
    #[serde(serialize_with = "micros")]
    n_wait_until: Option<DateTime<Utc>>,
    #[serde(serialize_with = "micros")]
    n_leased_until: Option<DateTime<Utc>>,
    #[serde(serialize_with = "micros")]
    n_done_at: Option<DateTime<Utc>>,
    n_attempts: i32,
    n_cancellation_attempts: i32,
    n_errors: String,
    n_result: Option<String>,
    n_is_cancelled: bool,
    #[serde(serialize_with = "micros")]
    n_cancelled_at: Option<DateTime<Utc>>,
    n_lease_token: Option<&'a str>,
    n_version: i64,
    n_outcome: Option<Outcome>,
    n_snoozes: i32,
    n_priority: i8,
    n_data: Option<String>,
    #[serde(serialize_with = "micros")]
    n_pruned_at: Option<DateTime<Utc>>,
}

/// The swap's change as a [`ChangeRow`], or why it cannot be stored.
pub(crate) fn encode_change(
    swap: &Swap,
    channel: String,
    notify: bool,
) -> Result<ChangeRow<'_>, String> {
    let task = swap.task();
    refuse_nul_in_outcome(task)?;
    let n_data = if swap.change().writes(Field::Data) {
        if task.data.keys().any(|k| k.contains('\0')) || task.data.values().any(has_nul) {
            return Err("data contains NUL, which PostgreSQL jsonb cannot hold".into());
        }
        Some(to_text(&task.data)?)
    } else {
        None
    };
    let n_expected = i64::try_from(swap.fence().version())
        .map_err(|_| format!("version {} too large", swap.fence().version()))?;
    let Counters {
        attempts,
        cancellation_attempts,
        version,
        snoozes,
    } = counters(task)?;
    Ok(ChangeRow {
        n_id: &task.id,
        n_expected,
        n_channel: channel,
        n_notify: notify,
        n_wait_until: task.wait_until,
        n_leased_until: task.leased_until,
        n_done_at: task.done_at,
        n_attempts: attempts,
        n_cancellation_attempts: cancellation_attempts,
        n_errors: to_text(&task.errors)?,
        n_result: task.result.as_ref().map(to_text).transpose()?,
        n_is_cancelled: task.is_cancelled,
        n_cancelled_at: task.cancelled_at,
        n_lease_token: task.lease_token.as_ref().map(LeaseToken::as_str),
        n_version: version,
        n_outcome: task.outcome,
        n_snoozes: snoozes,
        n_priority: task.priority,
        n_data,
        n_pruned_at: task.pruned_at,
    })
}

/// A time as the statement's JSON carries it (see [`time`]).
fn micros<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true)),
        None => s.serialize_none(),
    }
}

/// The task's outcome as the `outcome` column stores it (its serde name).
fn outcome_name(task: &Task) -> Result<Option<String>, String> {
    match task.outcome {
        Some(o) => match serde_json::to_value(o).map_err(|e| e.to_string())? {
            Value::String(s) => Ok(Some(s)),
            other => Err(format!("outcome encodes as {other}")),
        },
        None => Ok(None),
    }
}

/// A task's counters and version as their SQL integer types.
struct Counters {
    attempts: i32,
    cancellation_attempts: i32,
    version: i64,
    snoozes: i32,
}

fn counters(task: &Task) -> Result<Counters, String> {
    let count = |n: u32, what: &str| {
        i32::try_from(n).map_err(|_| format!("{what} {n} too large for an integer column"))
    };
    Ok(Counters {
        attempts: count(task.attempts, "attempts")?,
        cancellation_attempts: count(task.cancellation_attempts, "cancellation_attempts")?,
        version: i64::try_from(task.version)
            .map_err(|_| format!("version {} too large", task.version))?,
        snoozes: count(task.snoozes, "snoozes")?,
    })
}

/// A task's attempt limit as its SQL integer type (fixed at create: swaps
/// never write it).
fn max_attempts(task: &Task) -> Result<Option<i32>, String> {
    task.max_attempts
        .map(|n| {
            i32::try_from(n)
                .map_err(|_| format!("max_attempts {n} too large for an integer column"))
        })
        .transpose()
}

fn to_text<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| e.to_string())
}

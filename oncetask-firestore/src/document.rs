//! The mapping between a [`Task`] and a Firestore document of the Go package.
//!
//! # Layout
//!
//! Field names and value types are those the Go `oncetask` package writes
//! (docs/semantics.md S2.1), so Go and Rust services can share one collection:
//!
//! | Field | Firestore type | Unset |
//! |---|---|---|
//! | `id`, `type`, `env` | string | — |
//! | `data` | map (the JSON payload) | — |
//! | `resourceKey`, `parentRecurrenceId` | string | `""` |
//! | `waitUntil` | time string | [`NO_WAIT`] (`""` is read as unset too) |
//! | `leasedUntil`, `doneAt`, `cancelledAt`, `occurrenceTimestamp` | time string | `""` |
//! | `createdAt` | time string | — |
//! | `attempts` | integer | — |
//! | `errors` | array of maps `{at, error}` | `[]` (null is read as empty) |
//! | `result` | any | null |
//! | `recurrence` | map `{rrule, dtstart, exdates}` plus our optional `timezone` | null |
//! | `isCancelled` | bool | — |
//!
//! Fields the Rust side adds (Go ignores unknown fields, and a Go document
//! lacks them):
//!
//! | Field | Firestore type | Missing in a Go document means |
//! |---|---|---|
//! | `leaseToken` | string, `""` when unset | no token |
//! | `version` | integer | version 0 |
//! | `outcome` | string `completed` / `failed` / `cancelled`, `""` when unset | no outcome: status uses Go's count rule |
//! | `outcomeAt` | the `doneAt` string the outcome was written with, `""` without an outcome | the outcome (if any) holds |
//! | `cancellationAttempts` | integer | 0 |
//! | `leaseAttempt` | integer: the `attempts` value the `leaseToken` was granted at; absent without a token | the token (if any) holds |
//! | `waitUntilExact` | time string: the exact wait when `waitUntil` was rounded up to a whole second; absent otherwise | `waitUntil` is exact |
//! | `snoozes` | integer ≥ 1; absent at 0 | 0 |
//! | `priority` | integer in [`PRIORITY_RANGE`] (-10..=10) other than 0; absent at 0 | 0 |
//! | `maxAttempts` | integer ≥ 1; absent without a per-task limit | no per-task limit (the retry policy decides) |
//! | `prunedAt` | time string: when a pruner turned the finished task into a tombstone; absent otherwise | not a tombstone |
//!
//! The last four are written only when they differ from their default, so
//! the default has one spelling, the one every Go document has: absence. A
//! swap that sets one back to its default names it in its update mask and
//! leaves it out of the fields, which removes it (a reset clears `snoozes`
//! that way). A Firestore query that filters or orders on a field leaves
//! out every document without it, so no query may use the first three: an
//! order by priority would skip every default-priority task, Go's and
//! Rust's alike. Queries name `prunedAt` only to select tombstones (every
//! tombstone is a Rust write, so all of them have it); full documents are
//! told from tombstones on the client.
//!
//! # Tombstones
//!
//! A prune ([`oncetask_core::lifecycle::prune`]) rewrites `data` to `{}`,
//! `errors` to `[]`, `result` to null and `attempts` so that Go's count
//! rule (completed when `attempts` exceeds the number of errors) gives the
//! status the task had, and sets `prunedAt`. Every Go field stays, with the
//! type Go reads, so the Go package decodes a tombstone as a finished task
//! with an empty payload and the same status, and its `create` of the id
//! still finds the document. Go ignores them: a Go worker claims in its own order,
//! applies its own retry limit, and a Go reset leaves `snoozes` as it was.
//! Reads also take null for absent, and refuse a value out of range (a
//! priority outside [`PRIORITY_RANGE`], a negative count, a `maxAttempts`
//! of 0) or of another type, as an undecodable document.
//!
//! # Sharing documents with Go writers
//!
//! The Go package changes documents with field-masked updates that never
//! touch the Rust-only fields: a cancel sets `isCancelled`, `cancelledAt` and
//! `waitUntil`; a claim sets `leasedUntil` and increments `attempts`; a reset
//! clears the run's fields and sets `attempts` to 0. Two rules keep a Rust
//! writer from erasing such a change:
//!
//! * every Rust write after a read is conditional on the document's update
//!   time as read or last written ([`oncetask_core::Revision`]), so a Go
//!   write in between makes it conflict, and the core decides again on the
//!   fresh document (a Go cancel turns the outcome into "cancelled");
//! * a lease token holds only while `attempts` equals `leaseAttempt`, so a
//!   Go claim or reset voids the Rust lease: the Rust worker's outcome is
//!   fenced off instead of overwriting the Go worker's lease;
//! * an outcome holds only while `doneAt` equals `outcomeAt`: a Go reset
//!   leaves `outcome` in place, and when a Go worker then finishes the task
//!   (a new `doneAt`), the stale outcome is ignored and Go's count rule
//!   decides the status. (COUNT queries cannot compare two fields: until a
//!   Rust write rewrites the outcome, `count_by_status` still counts such a
//!   document under its stale outcome.)
//!
//! # Time strings and their ordering
//!
//! Firestore compares these strings byte by byte in range filters and
//! ordering, so the format decides what "earlier" means to a query.
//!
//! * Rust writes every time as UTC with exactly three fractional digits and a
//!   `Z`: `2026-01-01T00:00:02.250Z`, also for whole seconds
//!   (`2026-01-01T00:00:02.000Z`). The strings have one fixed width, so among
//!   Rust-written values byte order is time order. Go parses them (its RFC 3339
//!   parser accepts fractions).
//! * Go writes whole seconds without a fraction: `2026-01-01T00:00:02Z`. Since
//!   `'.'` sorts before `'Z'`, a Go value `…:02Z` compares after every Rust
//!   value `…:02.xxxZ` of the same second and before every value of the next
//!   second: a query sees a Go time `T` as `T + 0.9995 s`.
//! * Claims compare `waitUntil` and `leasedUntil` with [`due_bound`]: the
//!   end of the current second in Go's spelling (`…:03Z`), which sorts after
//!   every time of that second in either spelling. They then check the
//!   exact times they read, so Rust claims honour Go's times on the second
//!   and Rust's to the millisecond. Other queries (status counts and
//!   filters, the next due time) compare with `now` as Rust writes it, so
//!   they see a Go time `T` up to a second late.
//! * In the other direction, Go's own queries compare with whole-second
//!   `now` strings, so Go would see a Rust time of `T.mmm` as reached at the
//!   start of `T`'s second: up to 1 s early. So neither a lease nor a wait
//!   is written inside a second. Every lease the store writes (claims and
//!   heartbeats) ends on a whole second, rounded up: Go never reads a Rust
//!   lease as expired before it ends. A `waitUntil` is stored rounded up as
//!   well, so Go never starts a Rust-scheduled task early, and the exact
//!   time goes beside it in `waitUntilExact` (Rust-only, absent for whole
//!   seconds). Reads take the exact time while it rounds up to the stored
//!   `waitUntil` (a Go write of `waitUntil` voids it), so Rust keeps
//!   millisecond schedules. Status counts and filters compare the stored
//!   value: for under a second a task can count as waiting that a read
//!   reports pending.
//! * Client-side checks parse instants and are exact.
//! * `""` sorts before every time, so unset `leasedUntil` passes `≤ now`.
//!   [`NO_WAIT`] (year 1) sorts before every real time as well.
//! * Reading accepts any RFC 3339 value (fractions, offsets, as Go may write
//!   for a generator with a non-UTC `dtstart`, W9) and keeps milliseconds.
//!
//! # Numbers in `data`
//!
//! Go decodes the payload with `encoding/json` into a generic map, so every
//! number it stores is a double. Rust stores payload numbers the same way, so
//! a Go reader of the raw map finds a float wherever it expects one; only an
//! integer a double cannot hold exactly (beyond ±2^53) stays a Firestore
//! integer, so that it reads back unchanged (every backend keeps such
//! integers; one above `i64::MAX` is refused, [`EncodeError`]). A double with no fraction whose
//! magnitude is at most 2^53 is read back as a JSON integer, so that `3.0`
//! decodes into an integer field as it does in Go. Results are not
//! payloads: their integers stay Firestore integers.

use std::collections::HashMap;

use chrono::{DateTime, DurationRound, FixedOffset, SecondsFormat, TimeDelta, TimeZone, Utc};
use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
use firestore::gcloud_sdk::google::firestore::v1::{ArrayValue, MapValue, Value};
use oncetask_core::store::{Change, Field};
use oncetask_core::task::TaskParts;
use oncetask_core::{
    AttemptError, JsonObject, LeaseToken, Outcome, PRIORITY_RANGE, Recurrence, Task,
};
use serde_json::Value as Json;

/// Document fields, as the Firestore API carries them.
pub type Fields = HashMap<String, Value>;

/// What Go stores in `waitUntil` for "no wait": the zero `time.Time`.
pub const NO_WAIT: &str = "0001-01-01T00:00:00Z";

/// Largest integer a double holds exactly (2^53).
const MAX_EXACT_DOUBLE: f64 = 9_007_199_254_740_992.0;

/// A document that is not a valid task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct DecodeError {
    /// Path of the offending field, e.g. `errors[1].at`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl DecodeError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A task that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct EncodeError {
    /// The field that cannot be stored.
    pub field: String,
    /// Why.
    pub reason: String,
}

fn check_names(task: &Task) -> Result<(), EncodeError> {
    let bad = |field: &str, reason: String| EncodeError {
        field: field.into(),
        reason,
    };
    let id = &task.id;
    if id.contains('/') || id == "." || id == ".." || (id.starts_with("__") && id.ends_with("__")) {
        return Err(bad(
            "id",
            format!("{id:?} is not a Firestore document id (no `/`, `.`, `..` or `__…__`)"),
        ));
    }
    let names = [
        ("id", Some(id.as_str())),
        ("env", Some(task.env.as_str())),
        ("type", Some(task.kind.as_str())),
        ("resourceKey", task.resource_key.as_deref()),
    ];
    for (field, value) in names {
        if let Some(v) = value.filter(|v| v.len() > MAX_NAME_BYTES) {
            return Err(bad(
                field,
                format!(
                    "{} bytes; Firestore cannot use more than {MAX_NAME_BYTES} in an id or query",
                    v.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses payload integers Firestore cannot hold: only `i64` integers
/// exist there, and a larger one stored as a double would not read back
/// verbatim. Iterative, so a deep payload cannot overflow the stack.
fn check_integers(data: &JsonObject) -> Result<(), EncodeError> {
    let mut stack: Vec<&Json> = data.values().collect();
    while let Some(value) = stack.pop() {
        match value {
            Json::Number(n) if n.is_u64() && n.as_i64().is_none() => {
                return Err(EncodeError {
                    field: "data".into(),
                    reason: format!("integer {n} is above the Firestore maximum (i64::MAX)"),
                });
            }
            Json::Array(items) => stack.extend(items),
            Json::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    Ok(())
}

/// Formats a time the way this crate stores it: UTC, exactly three
/// fractional digits, `Z` (`2026-01-01T00:00:02.250Z`).
///
/// Sub-millisecond digits are dropped (truncated), matching the precision of
/// every task time.
pub fn format_time(t: DateTime<Utc>) -> String {
    oncetask_core::task::truncate_to_millis(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a stored RFC 3339 time (any precision or offset) to UTC,
/// truncated to milliseconds.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| oncetask_core::task::truncate_to_millis(t.with_timezone(&Utc)))
}

/// The exact `waitUntil` of a wait that does not fall on a whole second
/// (Rust-only; see "Time strings" in the module docs).
pub const WAIT_EXACT: &str = "waitUntilExact";

/// The bound a claim's range filters compare `waitUntil` and `leasedUntil`
/// with at `now`: the end of `now`'s second, written the way Go writes a
/// whole second (`…:03Z`). It sorts after every Rust time of that second
/// (`…:02.xxxZ`, `…:03.000Z`) and after Go's `…:03Z`, so the query returns
/// whatever may be due at `now` (waits are stored rounded up; Go's times
/// are whole seconds); the claim then checks the exact times it read.
pub fn due_bound(now: DateTime<Utc>) -> String {
    let end = round_up_to_second(now).unwrap_or(now);
    end.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Rounds `t` up to a whole second, or `None` if that cannot be stored.
pub fn round_up_to_second(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let up = t.duration_round_up(TimeDelta::seconds(1)).ok()?;
    parse_time(&format_time(up)).is_ok().then_some(up)
}

/// The stored `waitUntil` of a wait (rounded up to a whole second, so a Go
/// reader never starts the task early) and, when that moved it, the exact
/// time for Rust readers.
fn split_wait(wait: Option<DateTime<Utc>>) -> (String, Option<String>) {
    let Some(t) = wait else {
        return (NO_WAIT.to_owned(), None);
    };
    match round_up_to_second(t) {
        Some(up) if up != t => (format_time(up), Some(format_time(t))),
        // On a whole second already, or too late to round: stored as is.
        _ => (format_time(t), None),
    }
}

/// The wait a document means: its exact time when it has one that rounds
/// up to the stored `waitUntil` (`stored`); a `waitUntil` written since by
/// a writer that knows nothing of the exact field (Go) is taken as written.
fn exact_wait(d: &Reader<'_>, stored: DateTime<Utc>) -> DateTime<Utc> {
    let exact = match d.0.get(WAIT_EXACT).and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::StringValue(s)) => parse_time(s).ok(),
        _ => None,
    };
    exact
        .filter(|e| round_up_to_second(*e) == Some(stored))
        .unwrap_or(stored)
}

/// Firestore's limit on a document id, and on a string it can filter by
/// (longer values cannot be used in a query).
pub const MAX_NAME_BYTES: usize = 1500;

/// Encodes a task as the fields of its document.
///
/// Fails for values Firestore cannot hold or query: a version above
/// `i64::MAX`; an id that is not a valid document id (`/`, `.`, `..`,
/// `__…__`, over [`MAX_NAME_BYTES`]); an env, kind or resource key over
/// [`MAX_NAME_BYTES`] (claims filter on them); a payload integer above
/// `i64::MAX` (it would come back as a rounded double); a schedule or
/// creation time outside the years 0..=9999 of the stored time format; a
/// priority outside [`PRIORITY_RANGE`] or a `max_attempts` of 0 (reads
/// refuse both).
pub fn encode_task(task: &Task) -> Result<Fields, EncodeError> {
    check_names(task)?;
    check_integers(&task.data)?;
    if task.max_attempts == Some(0) {
        return Err(EncodeError {
            field: MAX_ATTEMPTS.into(),
            reason: "0: a task may take at least one attempt".into(),
        });
    }
    // A time the stored format cannot express (a year beyond 0..=9999)
    // would be written, then never read back: refuse it instead.
    for (field, time) in [
        ("waitUntil", task.wait_until),
        ("createdAt", Some(task.created_at)),
    ] {
        if let Some(t) = time
            && parse_time(&format_time(t)).is_err()
        {
            return Err(EncodeError {
                field: field.into(),
                reason: format!("{t} cannot be stored as a Firestore time string"),
            });
        }
    }
    let mut f = encode_changes(task)?;
    f.extend(fixed_fields(task));
    f.insert(DATA.to_owned(), data_value(task));
    Ok(f)
}

/// The fields a swap never changes, except the payload (`data`).
pub fn fixed_fields(task: &Task) -> Fields {
    let mut f = Fields::new();
    let mut put = |name: &str, value: Value| {
        f.insert(name.to_owned(), value);
    };
    put("id", string(&task.id));
    put("type", string(&task.kind));
    put("resourceKey", opt_string(task.resource_key.as_deref()));
    put("env", string(&task.env));
    put("createdAt", string(&format_time(task.created_at)));
    put(
        "recurrence",
        task.recurrence
            .as_ref()
            .map_or_else(null, encode_recurrence),
    );
    put(
        "parentRecurrenceId",
        opt_string(task.parent_recurrence_id.as_deref()),
    );
    put("occurrenceTimestamp", opt_time(task.occurrence_timestamp));
    // Absent without a per-task limit (see the module docs).
    if let Some(max) = task.max_attempts {
        put(MAX_ATTEMPTS, integer(i64::from(max)));
    }
    f
}

/// How often a handler snoozed the task (Rust-only; absent at 0).
pub const SNOOZES: &str = "snoozes";

/// The claim priority within the kind (Rust-only; absent at 0).
pub const PRIORITY: &str = "priority";

/// The per-task attempt limit (Rust-only, fixed at create; absent without
/// one).
pub const MAX_ATTEMPTS: &str = "maxAttempts";

/// When a pruner turned the task into a tombstone (Rust-only; absent on a
/// full document).
pub const PRUNED_AT: &str = "prunedAt";

/// The payload field, which only a prune writes (it empties it).
pub const DATA: &str = "data";

/// The fields a swap may change ([`oncetask_core::Store::swap`] never changes
/// a task's identity, resource key, schedule or lineage, and the payload
/// only to empty it in a prune): the union of every change's
/// [`change_mask`]. A swap writes only its change's fields, under an update
/// mask, so every change but a prune leaves the payload exactly as stored
/// (a Go document's doubles stay doubles) and its request stays small
/// whatever the payload's size. `leaseAttempt` is absent when there is no
/// lease token, `snoozes` and `priority` at 0, and `prunedAt` on a full
/// document: a masked write of an absent field removes it.
pub const CHANGEABLE_FIELDS: [&str; 19] = [
    "waitUntil",
    WAIT_EXACT,
    "leasedUntil",
    "doneAt",
    "attempts",
    "cancellationAttempts",
    "errors",
    "result",
    "isCancelled",
    "cancelledAt",
    "leaseToken",
    "leaseAttempt",
    "version",
    "outcome",
    "outcomeAt",
    SNOOZES,
    PRIORITY,
    DATA,
    PRUNED_AT,
];

/// The document fields a swap of `change` writes (a subset of
/// [`CHANGEABLE_FIELDS`], always with `version`): a heartbeat rewrites only
/// `leasedUntil`, so its request stays small, and no event rewrites a field
/// it does not own.
pub fn change_mask(change: Change) -> Vec<&'static str> {
    let mut mask = vec!["version"];
    for field in change.fields() {
        let names: &[&'static str] = match field {
            Field::LeasedUntil => &["leasedUntil"],
            // The attempt the token was granted at goes with the token.
            Field::LeaseToken => &["leaseToken", "leaseAttempt"],
            Field::WaitUntil => &["waitUntil", WAIT_EXACT],
            Field::Attempts => &["attempts"],
            Field::CancellationAttempts => &["cancellationAttempts"],
            Field::Errors => &["errors"],
            // The finish the outcome belongs to goes with both.
            Field::DoneAt => &["doneAt", "outcomeAt"],
            Field::Outcome => &["outcome", "outcomeAt"],
            Field::Result => &["result"],
            Field::IsCancelled => &["isCancelled"],
            Field::CancelledAt => &["cancelledAt"],
            Field::Snoozes => &[SNOOZES],
            Field::Priority => &[PRIORITY],
            Field::Data => &[DATA],
            Field::PrunedAt => &[PRUNED_AT],
        };
        for name in names {
            if !mask.contains(name) {
                mask.push(name);
            }
        }
    }
    mask
}

/// The fields a claim changes: the lease (see [`lease_fields`]).
pub const LEASE_FIELDS: [&str; 6] = [
    "leasedUntil",
    "leaseToken",
    "leaseAttempt",
    "attempts",
    "cancellationAttempts",
    "version",
];

/// Encodes the [`LEASE_FIELDS`] of a just-claimed task, for a claim's masked
/// write (only those: a claim encodes no history or result).
pub fn lease_fields(task: &Task) -> Result<Fields, EncodeError> {
    let version = i64::try_from(task.version).map_err(|_| EncodeError {
        field: "version".into(),
        reason: format!("{} does not fit a Firestore integer", task.version),
    })?;
    let mut f = Fields::new();
    let mut put = |name: &str, value: Value| {
        f.insert(name.to_owned(), value);
    };
    put("leasedUntil", opt_time(task.leased_until));
    put(
        "leaseToken",
        opt_string(task.lease_token.as_ref().map(LeaseToken::as_str)),
    );
    if task.lease_token.is_some() {
        // The attempt the token was granted at: a Go claim (attempts + 1)
        // or reset (0) that never touches the token still voids it.
        put("leaseAttempt", integer(i64::from(task.attempts)));
    }
    put("attempts", integer(i64::from(task.attempts)));
    put(
        "cancellationAttempts",
        integer(i64::from(task.cancellation_attempts)),
    );
    put("version", integer(version));
    Ok(f)
}

/// Encodes the [`CHANGEABLE_FIELDS`] of a task but the payload ([`DATA`],
/// [`data_value`]: only a prune writes it). Fails like
/// [`encode_task`] for a `waitUntil` beyond the stored format, and for a
/// priority outside [`PRIORITY_RANGE`] (reads would refuse the document).
pub fn encode_changes(task: &Task) -> Result<Fields, EncodeError> {
    if !PRIORITY_RANGE.contains(&task.priority) {
        return Err(EncodeError {
            field: PRIORITY.into(),
            reason: format!(
                "{} is outside {}..={}",
                task.priority,
                PRIORITY_RANGE.start(),
                PRIORITY_RANGE.end()
            ),
        });
    }
    // A backoff too long for the stored format (beyond the year 9999) would
    // be written, then never read back: refuse it instead.
    if let Some(t) = task.wait_until
        && parse_time(&format_time(t)).is_err()
    {
        return Err(EncodeError {
            field: "waitUntil".into(),
            reason: format!("{t} cannot be stored as a Firestore time string"),
        });
    }
    // The lease fields, then the rest.
    let mut f = lease_fields(task)?;
    let mut put = |name: &str, value: Value| {
        f.insert(name.to_owned(), value);
    };
    let (wait, exact) = split_wait(task.wait_until);
    put("waitUntil", string(&wait));
    // Absent when the wait is on a whole second: a masked write removes it.
    if let Some(exact) = exact {
        put(WAIT_EXACT, string(&exact));
    }
    put("doneAt", opt_time(task.done_at));
    put(
        "errors",
        array_value(
            task.errors
                .iter()
                .map(|e| {
                    map_value(Fields::from([
                        ("at".to_owned(), string(&format_time(e.at))),
                        ("error".to_owned(), string(&e.error)),
                    ]))
                })
                .collect(),
        ),
    );
    put(
        "result",
        task.result.as_ref().map_or_else(null, json_to_value),
    );
    put("isCancelled", boolean(task.is_cancelled));
    put("cancelledAt", opt_time(task.cancelled_at));
    put(
        "outcome",
        opt_string(task.outcome.map(|o| match o {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        })),
    );
    // The finish the outcome belongs to (see the module docs).
    put(
        "outcomeAt",
        match task.outcome {
            Some(_) => opt_time(task.done_at),
            None => string(""),
        },
    );
    // Written only when not 0, so that a default has one spelling, the
    // absence every Go document shows, and no query can be written that
    // seems to work on Rust documents while it skips Go's (a filter or an
    // order on a field leaves out documents without it). A masked write
    // of the default removes the field (a reset's `snoozes`).
    if task.snoozes != 0 {
        put(SNOOZES, integer(i64::from(task.snoozes)));
    }
    if task.priority != 0 {
        put(PRIORITY, integer(i64::from(task.priority)));
    }
    // Absent on a full document (the one spelling Go documents have).
    if let Some(pruned) = task.pruned_at {
        put(PRUNED_AT, string(&format_time(pruned)));
    }
    Ok(f)
}

/// The stored payload of `task` (`data`): a map whose numbers are doubles,
/// as the Go package writes them (see "Numbers in `data`").
pub fn data_value(task: &Task) -> Value {
    map_value(
        task.data
            .iter()
            .map(|(k, v)| (k.clone(), payload_value(v)))
            .collect(),
    )
}

fn encode_recurrence(r: &Recurrence) -> Value {
    let mut f = Fields::from([
        ("rrule".to_owned(), string(&r.rrule)),
        ("dtstart".to_owned(), string(&format_offset_time(r.dtstart))),
        (
            "exdates".to_owned(),
            if r.exdates.is_empty() {
                null()
            } else {
                array_value(
                    r.exdates
                        .iter()
                        .map(|d| string(&format_offset_time(*d)))
                        .collect(),
                )
            },
        ),
    ]);
    if let Some(tz) = &r.timezone {
        f.insert("timezone".to_owned(), string(tz));
    }
    map_value(f)
}

/// A recurrence time keeps the user's offset (the anchor of the wall clock).
fn format_offset_time(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Decodes the fields of a task document. Missing Rust-only fields take
/// their Go defaults; anything else malformed is an error, never a panic.
pub fn decode_task(fields: &Fields) -> Result<Task, DecodeError> {
    let d = Reader(fields);
    let version = match d.0.get("version") {
        None => 0,
        Some(v) => {
            let n = as_integer(v).ok_or_else(|| DecodeError::new("version", "not an integer"))?;
            u64::try_from(n).map_err(|_| DecodeError::new("version", "negative"))?
        }
    };
    // An outcome written for another finish than the current `doneAt` (a
    // Go reset, then a Go finish) is stale: Go's count rule decides.
    let stale = match (d.opt_string("outcomeAt")?, d.opt_string("doneAt")?) {
        (Some(at), done) => done.as_deref() != Some(at.as_str()),
        (None, _) => false,
    };
    let outcome = match d.opt_string("outcome")?.as_deref().filter(|_| !stale) {
        None => None,
        Some("completed") => Some(Outcome::Completed),
        Some("failed") => Some(Outcome::Failed),
        Some("cancelled") => Some(Outcome::Cancelled),
        Some(other) => {
            return Err(DecodeError::new(
                "outcome",
                format!("unknown outcome {other:?}"),
            ));
        }
    };
    let data = match d.get("data")? {
        Value {
            value_type: Some(ValueType::MapValue(m)),
        } => fields_to_json_object(&m.fields, "data")?,
        _ => return Err(DecodeError::new("data", "not a map")),
    };
    let errors = match d.0.get("errors").and_then(|v| v.value_type.as_ref()) {
        None | Some(ValueType::NullValue(_)) => Vec::new(),
        Some(ValueType::ArrayValue(a)) => a
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| decode_attempt_error(v, i))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(DecodeError::new("errors", "not an array")),
    };
    let result = match d.0.get("result").and_then(|v| v.value_type.as_ref()) {
        None | Some(ValueType::NullValue(_)) => None,
        Some(_) => Some(value_to_json(d.get("result")?, "result")?),
    };
    let recurrence = match d.0.get("recurrence").and_then(|v| v.value_type.as_ref()) {
        None | Some(ValueType::NullValue(_)) => None,
        Some(ValueType::MapValue(m)) => Some(decode_recurrence(&m.fields)?),
        Some(_) => return Err(DecodeError::new("recurrence", "not a map")),
    };
    let wait_until = match d.opt_string("waitUntil")?.as_deref() {
        None | Some(NO_WAIT) => None,
        Some(s) => {
            let t = parse_time(s).map_err(|e| DecodeError::new("waitUntil", e.to_string()))?;
            // Go's zero time in any spelling means "no wait" as well.
            (t.timestamp() > zero_time_secs()).then_some(exact_wait(&d, t))
        }
    };
    let attempts = d.count("attempts", true)?;
    // A token holds only at the attempt it was granted at (see `leaseAttempt`
    // in the module docs); documents written before that field hold theirs.
    let lease_attempt = match d.0.get("leaseAttempt") {
        None => None,
        Some(v) => {
            Some(as_integer(v).ok_or_else(|| DecodeError::new("leaseAttempt", "not an integer"))?)
        }
    };
    let lease_token = d
        .opt_string("leaseToken")?
        .filter(|_| lease_attempt.is_none_or(|a| a == i64::from(attempts)))
        .map(LeaseToken::from_stored);
    Ok(TaskParts {
        id: d.string("id")?,
        kind: d.string("type")?,
        data,
        resource_key: d.opt_string("resourceKey")?,
        env: d.string("env")?,
        wait_until,
        leased_until: d.opt_time("leasedUntil")?,
        created_at: d
            .opt_time("createdAt")?
            .ok_or_else(|| DecodeError::new("createdAt", "missing"))?,
        done_at: d.opt_time("doneAt")?,
        attempts,
        cancellation_attempts: d.count("cancellationAttempts", false)?,
        errors,
        result,
        recurrence,
        parent_recurrence_id: d.opt_string("parentRecurrenceId")?,
        occurrence_timestamp: d.opt_time("occurrenceTimestamp")?,
        is_cancelled: match d.0.get("isCancelled").and_then(|v| v.value_type.as_ref()) {
            None | Some(ValueType::NullValue(_)) => false,
            Some(ValueType::BooleanValue(b)) => *b,
            Some(_) => return Err(DecodeError::new("isCancelled", "not a bool")),
        },
        cancelled_at: d.opt_time("cancelledAt")?,
        lease_token,
        version,
        outcome,
        snoozes: match d.opt_integer(SNOOZES)? {
            None => 0,
            Some(n) => u32::try_from(n)
                .map_err(|_| DecodeError::new(SNOOZES, format!("{n} is not a count")))?,
        },
        priority: match d.opt_integer(PRIORITY)? {
            None => 0,
            Some(n) => i8::try_from(n)
                .ok()
                .filter(|p| PRIORITY_RANGE.contains(p))
                .ok_or_else(|| {
                    DecodeError::new(
                        PRIORITY,
                        format!(
                            "{n} is outside {}..={}",
                            PRIORITY_RANGE.start(),
                            PRIORITY_RANGE.end()
                        ),
                    )
                })?,
        },
        max_attempts: match d.opt_integer(MAX_ATTEMPTS)? {
            None => None,
            Some(n) => Some(u32::try_from(n).ok().filter(|m| *m >= 1).ok_or_else(|| {
                DecodeError::new(
                    MAX_ATTEMPTS,
                    format!("{n} is not an attempt limit (at least 1)"),
                )
            })?),
        },
        pruned_at: d.opt_time(PRUNED_AT)?,
        revision: None,
    }
    .into())
}

/// Seconds of Go's zero time (`0001-01-01T00:00:00Z`) since the Unix epoch.
fn zero_time_secs() -> i64 {
    Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0)
        .single()
        .map_or(i64::MIN, |t| t.timestamp())
}

fn decode_attempt_error(v: &Value, i: usize) -> Result<AttemptError, DecodeError> {
    let path = format!("errors[{i}]");
    let Some(ValueType::MapValue(m)) = &v.value_type else {
        return Err(DecodeError::new(path, "not a map"));
    };
    let at_path = format!("{path}.at");
    let at = match m.fields.get("at").and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::StringValue(s)) => {
            parse_time(s).map_err(|e| DecodeError::new(&at_path, e.to_string()))?
        }
        Some(ValueType::TimestampValue(ts)) => timestamp_to_utc(ts.seconds, ts.nanos)
            .ok_or_else(|| DecodeError::new(&at_path, "out of range"))?,
        _ => return Err(DecodeError::new(at_path, "not a time string")),
    };
    let error = match m.fields.get("error").and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::StringValue(s)) => s.clone(),
        None | Some(ValueType::NullValue(_)) => String::new(),
        Some(_) => return Err(DecodeError::new(format!("{path}.error"), "not a string")),
    };
    Ok(AttemptError { at, error })
}

fn decode_recurrence(m: &Fields) -> Result<Recurrence, DecodeError> {
    let r = Reader(m);
    let parse = |path: &str, s: &str| {
        DateTime::parse_from_rfc3339(s).map_err(|e| DecodeError::new(path, e.to_string()))
    };
    let rrule = r.string("rrule").map_err(nest("recurrence"))?;
    let dtstart = parse(
        "recurrence.dtstart",
        &r.string("dtstart").map_err(nest("recurrence"))?,
    )?;
    let exdates = match m.get("exdates").and_then(|v| v.value_type.as_ref()) {
        None | Some(ValueType::NullValue(_)) => Vec::new(),
        Some(ValueType::ArrayValue(a)) => a
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let path = format!("recurrence.exdates[{i}]");
                match &v.value_type {
                    Some(ValueType::StringValue(s)) => parse(&path, s),
                    _ => Err(DecodeError::new(path, "not a time string")),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(DecodeError::new("recurrence.exdates", "not an array")),
    };
    let timezone = r.opt_string("timezone").map_err(nest("recurrence"))?;
    Ok(Recurrence {
        rrule,
        dtstart,
        exdates,
        timezone,
    })
}

fn nest(prefix: &'static str) -> impl Fn(DecodeError) -> DecodeError {
    move |e| DecodeError::new(format!("{prefix}.{}", e.field), e.reason)
}

/// Typed access to document fields.
struct Reader<'a>(&'a Fields);

impl Reader<'_> {
    fn get(&self, name: &str) -> Result<&Value, DecodeError> {
        self.0
            .get(name)
            .ok_or_else(|| DecodeError::new(name, "missing"))
    }

    /// A required string.
    fn string(&self, name: &str) -> Result<String, DecodeError> {
        match &self.get(name)?.value_type {
            Some(ValueType::StringValue(s)) => Ok(s.clone()),
            _ => Err(DecodeError::new(name, "not a string")),
        }
    }

    /// A string where missing, null and `""` mean unset.
    fn opt_string(&self, name: &str) -> Result<Option<String>, DecodeError> {
        match self.0.get(name).and_then(|v| v.value_type.as_ref()) {
            None | Some(ValueType::NullValue(_)) => Ok(None),
            Some(ValueType::StringValue(s)) if s.is_empty() => Ok(None),
            Some(ValueType::StringValue(s)) => Ok(Some(s.clone())),
            Some(_) => Err(DecodeError::new(name, "not a string")),
        }
    }

    /// A time string where missing, null and `""` mean unset. A native
    /// Firestore timestamp is accepted too.
    fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, DecodeError> {
        match self.0.get(name).and_then(|v| v.value_type.as_ref()) {
            Some(ValueType::TimestampValue(ts)) => timestamp_to_utc(ts.seconds, ts.nanos)
                .map(Some)
                .ok_or_else(|| DecodeError::new(name, "timestamp out of range")),
            _ => match self.opt_string(name)? {
                None => Ok(None),
                Some(s) => parse_time(&s)
                    .map(Some)
                    .map_err(|e| DecodeError::new(name, format!("{s:?}: {e}"))),
            },
        }
    }

    /// A Rust-only integer written only when not its default: `None` when
    /// missing or null. A double holding an integer is taken, as for counts.
    fn opt_integer(&self, name: &str) -> Result<Option<i64>, DecodeError> {
        match self.0.get(name) {
            None
            | Some(Value {
                value_type: None | Some(ValueType::NullValue(_)),
            }) => Ok(None),
            Some(v) => as_integer(v)
                .map(Some)
                .ok_or_else(|| DecodeError::new(name, "not an integer")),
        }
    }

    /// A non-negative count; `required` says whether a missing field is an error.
    fn count(&self, name: &str, required: bool) -> Result<u32, DecodeError> {
        let Some(v) = self.0.get(name) else {
            return if required {
                Err(DecodeError::new(name, "missing"))
            } else {
                Ok(0)
            };
        };
        let n = as_integer(v).ok_or_else(|| DecodeError::new(name, "not an integer"))?;
        u32::try_from(n).map_err(|_| DecodeError::new(name, format!("{n} is out of range")))
    }
}

/// An integer, or a double holding an integer exactly.
fn as_integer(v: &Value) -> Option<i64> {
    match v.value_type.as_ref()? {
        ValueType::IntegerValue(n) => Some(*n),
        ValueType::DoubleValue(d) if d.fract() == 0.0 && d.abs() <= MAX_EXACT_DOUBLE => {
            Some(*d as i64)
        }
        _ => None,
    }
}

fn timestamp_to_utc(seconds: i64, nanos: i32) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(nanos).ok()?;
    DateTime::from_timestamp(seconds, nanos).map(oncetask_core::task::truncate_to_millis)
}

fn string(s: &str) -> Value {
    Value {
        value_type: Some(ValueType::StringValue(s.to_owned())),
    }
}

fn opt_string(s: Option<&str>) -> Value {
    string(s.unwrap_or(""))
}

fn opt_time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or_else(|| string(""), |t| string(&format_time(t)))
}

fn integer(n: i64) -> Value {
    Value {
        value_type: Some(ValueType::IntegerValue(n)),
    }
}

fn boolean(b: bool) -> Value {
    Value {
        value_type: Some(ValueType::BooleanValue(b)),
    }
}

fn null() -> Value {
    Value {
        value_type: Some(ValueType::NullValue(0)),
    }
}

fn map_value(fields: Fields) -> Value {
    Value {
        value_type: Some(ValueType::MapValue(MapValue { fields })),
    }
}

fn array_value(values: Vec<Value>) -> Value {
    Value {
        value_type: Some(ValueType::ArrayValue(ArrayValue { values })),
    }
}

/// A JSON value as a Firestore value: integers that fit `i64` become
/// integers, other numbers doubles.
pub fn json_to_value(j: &Json) -> Value {
    match j {
        Json::Null => null(),
        Json::Bool(b) => boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => integer(i),
            None => Value {
                value_type: Some(ValueType::DoubleValue(n.as_f64().unwrap_or(f64::NAN))),
            },
        },
        Json::String(s) => string(s),
        Json::Array(a) => array_value(a.iter().map(json_to_value).collect()),
        Json::Object(o) => map_value(json_object_to_fields(o)),
    }
}

/// A payload value as the Go package stores it: `encoding/json` decodes the
/// payload into a generic map, so every number is a double. An integer a
/// double cannot hold exactly (beyond ±2^53) stays a Firestore integer, so
/// it reads back unchanged (a Go reader could not hold it exactly either).
fn payload_value(j: &Json) -> Value {
    match j {
        Json::Number(n) if n.as_i64().is_some_and(|i| i.unsigned_abs() > 1 << 53) => {
            json_to_value(j)
        }
        Json::Number(n) => Value {
            value_type: Some(ValueType::DoubleValue(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::Array(a) => array_value(a.iter().map(payload_value).collect()),
        Json::Object(o) => map_value(
            o.iter()
                .map(|(k, v)| (k.clone(), payload_value(v)))
                .collect(),
        ),
        other => json_to_value(other),
    }
}

fn json_object_to_fields(o: &JsonObject) -> Fields {
    o.iter()
        .map(|(k, v)| (k.clone(), json_to_value(v)))
        .collect()
}

fn fields_to_json_object(fields: &Fields, path: &str) -> Result<JsonObject, DecodeError> {
    fields
        .iter()
        .map(|(k, v)| Ok((k.clone(), value_to_json(v, &format!("{path}.{k}"))?)))
        .collect()
}

/// A Firestore value as JSON. Doubles holding an integer exactly (|x| ≤ 2^53)
/// become JSON integers; timestamps become RFC 3339 strings; bytes,
/// references, geo points and non-finite doubles are errors.
pub fn value_to_json(v: &Value, path: &str) -> Result<Json, DecodeError> {
    let Some(t) = &v.value_type else {
        return Ok(Json::Null);
    };
    Ok(match t {
        ValueType::NullValue(_) => Json::Null,
        ValueType::BooleanValue(b) => Json::Bool(*b),
        ValueType::IntegerValue(n) => Json::from(*n),
        ValueType::DoubleValue(d) if d.fract() == 0.0 && d.abs() <= MAX_EXACT_DOUBLE => {
            Json::from(*d as i64)
        }
        ValueType::DoubleValue(d) => serde_json::Number::from_f64(*d)
            .map(Json::Number)
            .ok_or_else(|| DecodeError::new(path, format!("{d} is not a finite number")))?,
        ValueType::StringValue(s) => Json::String(s.clone()),
        ValueType::TimestampValue(ts) => Json::String(
            timestamp_to_utc(ts.seconds, ts.nanos)
                .map(format_time)
                .ok_or_else(|| DecodeError::new(path, "timestamp out of range"))?,
        ),
        ValueType::ArrayValue(a) => Json::Array(
            a.values
                .iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        ValueType::MapValue(m) => Json::Object(fields_to_json_object(&m.fields, path)?),
        _ => {
            return Err(DecodeError::new(
                path,
                "unsupported value type (bytes, reference or geo point)",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGES: [Change; 8] = [
        Change::Heartbeat,
        Change::Release,
        Change::Outcome,
        Change::Cancel,
        Change::Reset,
        Change::Snooze,
        Change::Reprioritize,
        Change::Prune,
    ];

    #[test]
    fn a_heartbeat_writes_only_the_lease_end_and_the_version() {
        assert_eq!(change_mask(Change::Heartbeat), ["version", "leasedUntil"]);
    }

    #[test]
    fn every_mask_is_within_the_changeable_fields_and_a_reset_writes_all_but_priority_and_pruning()
    {
        let mut union = Vec::new();
        for change in CHANGES {
            for name in change_mask(change) {
                assert!(CHANGEABLE_FIELDS.contains(&name), "{change:?}: {name}");
                if !union.contains(&name) {
                    union.push(name);
                }
            }
        }
        // Every changeable field is some change's to write.
        union.sort_unstable();
        let mut all = CHANGEABLE_FIELDS.to_vec();
        all.sort_unstable();
        assert_eq!(union, all);
        let mut reset = change_mask(Change::Reset);
        reset.sort_unstable();
        all.retain(|name| ![PRIORITY, DATA, PRUNED_AT].contains(name));
        assert_eq!(
            reset, all,
            "a reset clears the history, not the priority (tombstones are never reset)"
        );
    }

    #[test]
    fn a_prune_writes_the_payload_the_history_the_attempts_and_the_pruning_time_only() {
        let mut mask = change_mask(Change::Prune);
        mask.sort_unstable();
        let mut expected = vec!["version", DATA, "errors", "result", "attempts", PRUNED_AT];
        expected.sort_unstable();
        assert_eq!(mask, expected);
    }

    #[test]
    fn pruned_at_is_written_only_on_a_tombstone_and_reads_back() {
        let now = oncetask_core::task::truncate_to_millis(Utc::now());
        let mut task = Task::new("t", "k", "e", now);
        assert!(!encode_task(&task).expect("encodes").contains_key(PRUNED_AT));
        task.done_at = Some(now);
        task.outcome = Some(Outcome::Completed);
        task.attempts = 1;
        task.data = serde_json::Map::from_iter([("to".to_owned(), Json::from("a"))]);
        let tombstone = oncetask_core::lifecycle::prune(&task, now).expect("finished");
        let fields = encode_task(&tombstone).expect("encodes");
        assert_eq!(fields[PRUNED_AT], string(&format_time(now)));
        let mut back = decode_task(&fields).expect("decodes");
        back.revision = None;
        assert_eq!(back, tombstone);
        assert!(back.is_tombstone());
    }

    #[test]
    fn a_reprioritize_writes_only_the_priority_and_the_version() {
        assert_eq!(change_mask(Change::Reprioritize), ["version", PRIORITY]);
    }

    #[test]
    fn a_snooze_writes_the_lease_the_wait_the_counts_and_the_snoozes_only() {
        let mut mask = change_mask(Change::Snooze);
        mask.sort_unstable();
        let mut expected = vec![
            "version",
            "leasedUntil",
            "leaseToken",
            "leaseAttempt",
            "waitUntil",
            WAIT_EXACT,
            "attempts",
            "cancellationAttempts",
            SNOOZES,
        ];
        expected.sort_unstable();
        assert_eq!(mask, expected);
    }

    #[test]
    fn snoozes_and_priority_are_written_only_when_not_0() {
        let mut task = Task::new("t", "k", "e", Utc::now());
        let plain = encode_task(&task).expect("encodes");
        for name in [SNOOZES, PRIORITY, MAX_ATTEMPTS] {
            assert!(!plain.contains_key(name), "{name} is absent at its default");
        }
        task.snoozes = 2;
        task.priority = -3;
        task.max_attempts = Some(4);
        let set = encode_task(&task).expect("encodes");
        assert_eq!(set[SNOOZES], integer(2));
        assert_eq!(set[PRIORITY], integer(-3));
        assert_eq!(set[MAX_ATTEMPTS], integer(4));
        assert_eq!(decode_task(&set).expect("decodes"), task);
        // A swap's fields leave out a default, so its mask removes it.
        task.snoozes = 0;
        task.priority = 0;
        let changes = encode_changes(&task).expect("encodes");
        assert!(!changes.contains_key(SNOOZES) && !changes.contains_key(PRIORITY));
    }

    #[test]
    fn what_reads_would_refuse_is_not_written() {
        let mut task = Task::new("t", "k", "e", Utc::now());
        task.priority = 11;
        assert_eq!(encode_task(&task).expect_err("priority").field, PRIORITY);
        assert_eq!(encode_changes(&task).expect_err("priority").field, PRIORITY);
        task.priority = 0;
        task.max_attempts = Some(0);
        assert_eq!(
            encode_task(&task).expect_err("max attempts").field,
            MAX_ATTEMPTS
        );
    }

    #[test]
    fn a_cancel_leaves_the_lease_and_the_outcome_alone() {
        let mask = change_mask(Change::Cancel);
        for name in [
            "leasedUntil",
            "leaseToken",
            "outcome",
            "doneAt",
            "errors",
            "result",
        ] {
            assert!(!mask.contains(&name), "{name}");
        }
    }
}

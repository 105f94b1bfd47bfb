//! Mapping between a [`Task`] and the Redis hash that stores it.
//!
//! The fields the scripts read or write (times, counters, flags, the lease
//! token, the version, the resource key) are hash fields of their own, in
//! forms Lua handles exactly: times as integer milliseconds since the epoch
//! (exact in Lua's doubles for every `chrono` time), counts as decimal
//! integers, the version as a decimal string (incremented digit by digit,
//! never through a double). Everything else travels as JSON that only Rust
//! reads and writes (`body`, and `result`, kept apart so that a JSON `null`
//! result stays distinct from "no result"), so payloads keep every number
//! and every field exactly: no script ever decodes or re-encodes them.
//!
//! `body` is written once, at create. A swap writes only the hash fields of
//! its change ([`encode_change`]); the three body parts a swap may change
//! (errors, outcome, cancellation time) then live in fields of their own
//! (`errs`, `out`, `cat`, JSON), which take precedence over the body's
//! copies when present. So an outcome never sends the payload again, and a
//! hash written before these fields existed still decodes.
//!
//! Three fields are written only when they differ from their default, to
//! keep hashes small: `snz` (snoozes, a decimal `u32`, absent at 0), `pri`
//! (priority, a decimal `i8`, absent at 0) and `maxa` (max attempts, a
//! decimal `u32`, absent for `None`, written once at create). A missing
//! field reads as the default, so a hash written before they existed still
//! decodes; a swap that puts snoozes or priority back to 0 (a reset clears
//! the snoozes) deletes the field. A value that does not parse as its type
//! (a negative count, a priority outside `i8`) makes the document
//! undecodable.
//!
//! `prn` (the time a pruner made the task a tombstone, milliseconds) is
//! absent until then. A prune (the one change that writes the payload)
//! writes `body` again, emptied, and drops `errs`, `out` and `cat`, whose
//! current values the new body holds.
//!
//! Stored times have millisecond precision, like every time the core
//! produces (see [`oncetask_core::task::truncate_to_millis`]).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use oncetask_core::store::{Field, Swap};
use oncetask_core::task::TaskParts;
use oncetask_core::{AttemptError, JsonObject, LeaseToken, Outcome, Recurrence, Task};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keys::encode;

/// The value of the `fmt` field of every task this crate writes. Scripts
/// treat a document with another value as undecodable.
pub(crate) const FORMAT: &str = "1";

/// Added to a millisecond timestamp so that every `chrono` time maps to a
/// non-negative 16-digit hex number that sorts like the time.
const ORDER_OFFSET: i64 = 1 << 53;

/// The task fields that only Rust reads.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    data: JsonObject,
    errors: Vec<AttemptError>,
    recurrence: Option<Recurrence>,
    parent_recurrence_id: Option<String>,
    occurrence_timestamp: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    outcome: Option<Outcome>,
}

fn ms(t: DateTime<Utc>) -> String {
    t.timestamp_millis().to_string()
}

/// The `ord` member of `task`: wait, creation time, id.
fn order_member(task: &Task) -> String {
    format!(
        "{}{}{}",
        order_hex(task.wait_until),
        order_hex(Some(task.created_at)),
        task.id
    )
}

/// The `dst` field: the status of a done task (absent while not done).
fn done_status(task: &Task) -> Option<String> {
    task.done_at
        .map(|_| task.status(DateTime::<Utc>::MIN_UTC).as_str().to_owned())
}

/// The `snz` field: the snooze count, absent at 0.
fn snoozes(task: &Task) -> Option<String> {
    (task.snoozes != 0).then(|| task.snoozes.to_string())
}

/// The `pri` field: the priority, absent at the default 0.
fn priority(task: &Task) -> Option<String> {
    (task.priority != 0).then(|| task.priority.to_string())
}

fn json<T: Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| e.to_string())
}

fn order_hex(t: Option<DateTime<Utc>>) -> String {
    let n = t.map_or(0, |t| t.timestamp_millis().saturating_add(ORDER_OFFSET));
    format!("{n:016x}")
}

/// `ms` milliseconds since the epoch in the encoding of [`order_time`]
/// (the `<done hex>` of a finished-index member).
pub(crate) fn order_millis(ms: i64) -> String {
    format!("{:016x}", ms.saturating_add(ORDER_OFFSET))
}

/// `now` in the encoding of the first 16 characters of an `ord` member.
pub(crate) fn order_time(now: DateTime<Utc>) -> String {
    order_hex(Some(now))
}

/// The `body` field of `task`: every part only Rust reads, as JSON.
fn body(task: &Task) -> Result<String, String> {
    json(&Body {
        data: task.data.clone(),
        errors: task.errors.clone(),
        recurrence: task.recurrence.clone(),
        parent_recurrence_id: task.parent_recurrence_id.clone(),
        occurrence_timestamp: task.occurrence_timestamp,
        cancelled_at: task.cancelled_at,
        outcome: task.outcome,
    })
}

/// The hash fields of `task`, as `(field, value)` pairs. `Err` says why the
/// task cannot be stored.
pub(crate) fn encode_task(task: &Task) -> Result<Vec<(&'static str, String)>, String> {
    let body = body(task)?;
    let mut fields: Vec<(&'static str, String)> = vec![
        ("fmt", FORMAT.to_owned()),
        ("id", task.id.clone()),
        ("env", task.env.clone()),
        ("kind", task.kind.clone()),
        ("kenc", encode(&task.kind)),
        ("created", ms(task.created_at)),
        ("att", task.attempts.to_string()),
        ("catt", task.cancellation_attempts.to_string()),
        ("canc", if task.is_cancelled { "1" } else { "0" }.to_owned()),
        ("ver", task.version.to_string()),
        ("ord", order_member(task)),
        (
            "cord",
            format!("{}{}", order_hex(Some(task.created_at)), task.id),
        ),
        ("body", body),
    ];
    let optional = [
        ("rk", task.resource_key.clone()),
        ("wait", task.wait_until.map(ms)),
        ("lease", task.leased_until.map(ms)),
        ("done", task.done_at.map(ms)),
        (
            "token",
            task.lease_token.as_ref().map(|t| t.as_str().to_owned()),
        ),
        ("dst", done_status(task)),
        ("result", task.result.as_ref().map(json).transpose()?),
        ("snz", snoozes(task)),
        ("pri", priority(task)),
        ("maxa", task.max_attempts.map(|n| n.to_string())),
        ("prn", task.pruned_at.map(ms)),
        // Marks a generator for the `gens` index (create.lua); never changes.
        ("rec", task.recurrence.as_ref().map(|_| "1".to_owned())),
    ];
    fields.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v))),
    );
    Ok(fields)
}

/// What a swap writes: hash fields to set (always the version and the
/// done status's field, `dst`, set or deleted) and optional fields to delete.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Written {
    /// `(field, value)` pairs to set.
    pub(crate) set: Vec<(&'static str, String)>,
    /// Fields to delete (optional fields the change clears).
    pub(crate) delete: Vec<&'static str>,
}

impl Written {
    fn put(&mut self, name: &'static str, value: Option<String>) {
        match value {
            Some(value) => self.set.push((name, value)),
            None => self.delete.push(name),
        }
    }
}

/// The hash fields `swap` writes: its change's fields only, never the
/// payload. `Err` says why they cannot be stored.
pub(crate) fn encode_change(swap: &Swap) -> Result<Written, String> {
    let task = swap.task();
    let mut out = Written::default();
    out.put("ver", Some(task.version.to_string()));
    out.put("dst", done_status(task));
    // A change of the payload (a prune) writes the whole body again, from
    // the swapped task: the fence guarantees that the body parts outside
    // the change are as stored (every writer of this crate bumps the
    // version). The body then holds the current errors, outcome and
    // cancellation time, so their override fields go: a tombstone keeps
    // no copy of what it dropped.
    let rewrites_body = swap.change().writes(Field::Data);
    if rewrites_body {
        out.put("body", Some(body(task)?));
        out.delete.extend(["errs", "out", "cat"]);
    }
    for field in swap.change().fields() {
        match field {
            Field::LeasedUntil => out.put("lease", task.leased_until.map(ms)),
            Field::LeaseToken => out.put(
                "token",
                task.lease_token.as_ref().map(|t| t.as_str().to_owned()),
            ),
            Field::WaitUntil => {
                out.put("wait", task.wait_until.map(ms));
                out.put("ord", Some(order_member(task)));
            }
            Field::Attempts => out.put("att", Some(task.attempts.to_string())),
            Field::CancellationAttempts => {
                out.put("catt", Some(task.cancellation_attempts.to_string()))
            }
            // In the rewritten body already.
            Field::Errors | Field::Outcome | Field::CancelledAt | Field::Data if rewrites_body => {}
            Field::Errors => out.put("errs", Some(json(&task.errors)?)),
            Field::DoneAt => out.put("done", task.done_at.map(ms)),
            Field::Outcome => out.put("out", Some(json(&task.outcome)?)),
            Field::Result => out.put("result", task.result.as_ref().map(json).transpose()?),
            Field::IsCancelled => out.put(
                "canc",
                Some(if task.is_cancelled { "1" } else { "0" }.to_owned()),
            ),
            Field::CancelledAt => out.put("cat", Some(json(&task.cancelled_at)?)),
            // Back at the default (a reset's 0 snoozes), the field goes.
            Field::Snoozes => out.put("snz", snoozes(task)),
            Field::Priority => out.put("pri", priority(task)),
            Field::PrunedAt => out.put("prn", task.pruned_at.map(ms)),
            Field::Data => {}
        }
    }
    Ok(out)
}

/// A stored hash as the scripts return it (field names and values). A
/// claim's fields are named by `CLAIM_READ` (borrowed: no string
/// per field and task); a whole hash read back owns its names. foldhash:
/// each claimed task is up to 25 inserts and as many lookups.
pub(crate) type Fields = hashbrown::HashMap<Cow<'static, str>, Vec<u8>>;

/// What a stored hash holds.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A valid task.
    Task(Box<Task>),
    /// A document that is not a valid task (with its id, if readable).
    Raw {
        /// The `id` field (falls back to the caller's id).
        id: Option<String>,
        /// Why it does not decode.
        reason: String,
    },
}

fn text<'a>(fields: &'a Fields, name: &str) -> Result<Option<&'a str>, String> {
    fields
        .get(name)
        .map(|v| std::str::from_utf8(v).map_err(|_| format!("field {name}: not UTF-8")))
        .transpose()
}

fn required<'a>(fields: &'a Fields, name: &str) -> Result<&'a str, String> {
    text(fields, name)?.ok_or_else(|| format!("field {name} is missing"))
}

fn time(fields: &Fields, name: &str) -> Result<Option<DateTime<Utc>>, String> {
    text(fields, name)?
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .and_then(DateTime::<Utc>::from_timestamp_millis)
                .ok_or_else(|| format!("field {name}: {v:?} is not a time in milliseconds"))
        })
        .transpose()
}

fn number<T: std::str::FromStr>(fields: &Fields, name: &str) -> Result<T, String> {
    parse(name, required(fields, name)?)
}

/// An optional number field: `None` when absent.
fn optional_number<T: std::str::FromStr>(fields: &Fields, name: &str) -> Result<Option<T>, String> {
    text(fields, name)?.map(|v| parse(name, v)).transpose()
}

/// A decimal integer of type `T` (out of `T`'s range is an error).
fn parse<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("field {name}: {v:?} is not a valid number"))
}

/// Decodes a stored hash. Never fails as a whole: a document that is not a
/// valid task comes back as [`Decoded::Raw`] with the reason.
pub(crate) fn decode(fields: &Fields) -> Decoded {
    match decode_task(fields) {
        Ok(task) => Decoded::Task(Box::new(task)),
        Err(reason) => Decoded::Raw {
            id: text(fields, "id").ok().flatten().map(str::to_owned),
            reason,
        },
    }
}

fn decode_task(fields: &Fields) -> Result<Task, String> {
    if let Some(reason) = text(fields, "bad")? {
        return Err(reason.to_owned());
    }
    let format = text(fields, "fmt")?;
    if format != Some(FORMAT) {
        return Err(format!("unknown document format {format:?}"));
    }
    let body: Body =
        serde_json::from_str(required(fields, "body")?).map_err(|e| format!("field body: {e}"))?;
    // A swap's copies of the body parts it may change win over the body's.
    let errors = match text(fields, "errs")? {
        Some(v) => serde_json::from_str(v).map_err(|e| format!("field errs: {e}"))?,
        None => body.errors,
    };
    let outcome = match text(fields, "out")? {
        Some(v) => serde_json::from_str(v).map_err(|e| format!("field out: {e}"))?,
        None => body.outcome,
    };
    let cancelled_at = match text(fields, "cat")? {
        Some(v) => serde_json::from_str(v).map_err(|e| format!("field cat: {e}"))?,
        None => body.cancelled_at,
    };
    let result: Option<Value> = text(fields, "result")?
        .map(|v| serde_json::from_str(v).map_err(|e| format!("field result: {e}")))
        .transpose()?;
    let is_cancelled = match required(fields, "canc")? {
        "1" => true,
        "0" => false,
        other => return Err(format!("field canc: {other:?} is not 0 or 1")),
    };
    Ok(TaskParts {
        id: required(fields, "id")?.to_owned(),
        kind: required(fields, "kind")?.to_owned(),
        data: body.data,
        resource_key: text(fields, "rk")?.map(str::to_owned),
        env: required(fields, "env")?.to_owned(),
        wait_until: time(fields, "wait")?,
        leased_until: time(fields, "lease")?,
        created_at: time(fields, "created")?.ok_or("field created is missing")?,
        done_at: time(fields, "done")?,
        attempts: number(fields, "att")?,
        cancellation_attempts: number(fields, "catt")?,
        errors,
        result,
        recurrence: body.recurrence,
        parent_recurrence_id: body.parent_recurrence_id,
        occurrence_timestamp: body.occurrence_timestamp,
        is_cancelled,
        cancelled_at,
        lease_token: text(fields, "token")?.map(LeaseToken::from_stored),
        version: number(fields, "ver")?,
        outcome,
        // Absent in hashes written before these fields existed, and
        // whenever they hold their default.
        snoozes: optional_number(fields, "snz")?.unwrap_or(0),
        priority: optional_number(fields, "pri")?.unwrap_or(0),
        max_attempts: optional_number(fields, "maxa")?,
        pruned_at: time(fields, "prn")?,
        revision: None,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn stored(task: &Task) -> Fields {
        encode_task(task)
            .expect("encodable")
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), v.into_bytes()))
            .collect()
    }

    fn t(secs: i64, millis: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, millis * 1_000_000)
            .single()
            .expect("valid time")
    }

    #[test]
    fn every_field_round_trips() {
        let mut task = Task::new("id:{x}", "kind ü", "env", t(1_736_150_400, 999));
        task.data
            .insert("big".into(), json!(9_007_199_254_740_993_u64));
        task.resource_key = Some("key".into());
        task.wait_until = Some(t(-5, 1));
        task.leased_until = Some(DateTime::<Utc>::MAX_UTC.with_timezone(&Utc));
        task.done_at = Some(t(100, 0));
        task.attempts = u32::MAX;
        task.cancellation_attempts = 3;
        task.result = Some(Value::Null);
        task.lease_token = Some(LeaseToken::from_stored("tok"));
        task.version = u64::MAX;
        task.outcome = Some(Outcome::Failed);
        task.snoozes = u32::MAX;
        task.priority = i8::MIN;
        task.max_attempts = Some(u32::MAX);
        task.pruned_at = Some(t(200, 7));
        task.leased_until = task
            .leased_until
            .map(|l| DateTime::<Utc>::from_timestamp_millis(l.timestamp_millis()).expect("ms"));
        match decode(&stored(&task)) {
            Decoded::Task(back) => assert_eq!(*back, task),
            Decoded::Raw { reason, .. } => panic!("{reason}"),
        }
    }

    /// `stored` after a swap script applied `written`.
    fn applied(mut stored: Fields, written: Written) -> Fields {
        for (name, value) in written.set {
            stored.insert(Cow::Borrowed(name), value.into_bytes());
        }
        for name in written.delete {
            stored.remove(name);
        }
        stored
    }

    #[test]
    fn a_swap_writes_its_change_and_never_the_payload() {
        use oncetask_core::lifecycle::{self, LeaseGrant};
        use oncetask_core::store::Change;
        use std::time::Duration;

        let now = t(1_736_150_400, 0);
        let mut task = Task::new("a", "k", "e", now);
        task.data.insert("n".into(), json!(1));
        let grant = LeaseGrant::new(now, Duration::from_secs(60));
        let claimed = lifecycle::claim(&task, &grant);
        // A failed attempt with a retry scheduled, as lifecycle::fail writes it.
        let mut failed = claimed.clone();
        failed.version += 1;
        failed.leased_until = None;
        failed.lease_token = None;
        failed.wait_until = Some(t(1_736_150_460, 0));
        failed.errors.push(AttemptError {
            at: now,
            error: "boom".into(),
        });
        let cancelled = lifecycle::cancel(&failed, now).expect("not done");
        let mut stored = stored(&claimed);
        for (before, change, after) in [
            (&claimed, Change::Outcome, &failed),
            (&failed, Change::Cancel, &cancelled),
        ] {
            let swap = Swap::new(before, change, after);
            let written = encode_change(&swap).expect("encodable");
            assert!(written.set.iter().all(|(name, _)| *name != "body"));
            stored = applied(stored, written);
            match decode(&stored) {
                Decoded::Task(back) => assert_eq!(*back, *swap.task()),
                Decoded::Raw { reason, .. } => panic!("{reason}"),
            }
        }
    }

    #[test]
    fn a_prune_rewrites_the_body_and_drops_what_the_tombstone_no_longer_holds() {
        use oncetask_core::lifecycle;
        use oncetask_core::store::Change;

        let now = t(1_736_150_400, 0);
        let mut task = Task::new("a", "k", "e", now);
        task.data.insert("n".into(), json!("payload"));
        task.done_at = Some(now);
        task.outcome = Some(Outcome::Failed);
        task.attempts = 2;
        task.result = Some(json!({"r": 1}));
        task.errors.push(AttemptError {
            at: now,
            error: "boom".into(),
        });
        // As a swap left it: the body's copies overridden.
        let mut without_errors = task.clone();
        without_errors.errors.clear();
        let mut hash = stored(&without_errors);
        hash.insert(
            "errs".into(),
            json(&task.errors).expect("json").into_bytes(),
        );
        hash.insert("out".into(), b"\"failed\"".to_vec());
        assert!(!hash.contains_key("prn"));
        let pruned = lifecycle::prune(&task, now).expect("finished");
        let swap = Swap::new(&task, Change::Prune, &pruned);
        let written = encode_change(&swap).expect("encodable");
        for name in ["errs", "out", "cat", "result"] {
            assert!(written.delete.contains(&name), "{name}");
        }
        let body = written
            .set
            .iter()
            .find(|(n, _)| *n == "body")
            .map(|(_, v)| v.clone())
            .expect("the body is written");
        assert!(
            !body.contains("payload") && !body.contains("boom"),
            "{body}"
        );
        let hash = applied(hash, written);
        assert!(hash.contains_key("prn"));
        match decode(&hash) {
            Decoded::Task(back) => {
                assert_eq!(*back, pruned);
                assert!(back.is_tombstone());
                assert_eq!(back.status(now), oncetask_core::TaskStatus::Failed);
            }
            Decoded::Raw { reason, .. } => panic!("{reason}"),
        }
    }

    #[test]
    fn default_snoozes_priority_and_max_attempts_are_not_stored() {
        let task = Task::new("a", "k", "e", t(0, 0));
        let fields = stored(&task);
        for name in ["snz", "pri", "maxa"] {
            assert!(!fields.contains_key(name), "{name} stored at its default");
        }
        let task: Task = TaskParts {
            snoozes: 2,
            priority: -10,
            max_attempts: Some(1),
            ..task.into_parts()
        }
        .into();
        let fields = stored(&task);
        let field = |name: &str| {
            fields
                .get(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(field("snz").as_deref(), Some("2"));
        assert_eq!(field("pri").as_deref(), Some("-10"));
        assert_eq!(field("maxa").as_deref(), Some("1"));
        match decode(&fields) {
            Decoded::Task(back) => assert_eq!(*back, task),
            Decoded::Raw { reason, .. } => panic!("{reason}"),
        }
    }

    #[test]
    fn a_hash_written_before_snoozes_priority_and_max_attempts_decodes_with_defaults() {
        let task: Task = TaskParts {
            snoozes: 4,
            priority: 7,
            max_attempts: Some(3),
            ..Task::new("a", "k", "e", t(0, 0)).into_parts()
        }
        .into();
        let mut fields = stored(&task);
        for name in ["snz", "pri", "maxa"] {
            fields.remove(name);
        }
        match decode(&fields) {
            Decoded::Task(back) => {
                assert_eq!(
                    (back.snoozes, back.priority, back.max_attempts),
                    (0, 0, None)
                );
            }
            Decoded::Raw { reason, .. } => panic!("{reason}"),
        }
    }

    #[test]
    fn a_bad_snooze_count_priority_or_max_attempts_is_raw() {
        for (name, value) in [
            ("pri", "128"),
            ("pri", "-129"),
            ("pri", "high"),
            ("pri", "1.5"),
            ("pri", ""),
            ("snz", "-1"),
            ("snz", "4294967296"),
            ("snz", "x"),
            ("maxa", "-3"),
            ("maxa", "three"),
        ] {
            let mut fields = stored(&Task::new("x", "k", "e", t(0, 0)));
            fields.insert(Cow::Borrowed(name), value.as_bytes().to_vec());
            match decode(&fields) {
                Decoded::Raw { id, reason } => {
                    assert_eq!(id.as_deref(), Some("x"));
                    assert!(reason.contains(name), "{name}={value:?}: {reason}");
                }
                Decoded::Task(task) => panic!("{name}={value:?} decoded as {task:?}"),
            }
        }
    }

    #[test]
    fn snooze_reprioritize_and_reset_write_their_fields_and_clear_defaults() {
        use oncetask_core::lifecycle::{self, HandlerPath, LeaseGrant};
        use oncetask_core::store::Change;
        use std::time::Duration;

        let now = t(1_736_150_400, 0);
        let later = t(1_736_150_700, 0);
        let task: Task = TaskParts {
            priority: 3,
            max_attempts: Some(5),
            ..Task::new("a", "k", "e", now).into_parts()
        }
        .into();
        let grant = LeaseGrant::new(now, Duration::from_secs(60));
        let claimed = lifecycle::claim(&task, &grant);
        let snoozed = lifecycle::snooze(&claimed, &grant.token, now, later, HandlerPath::Main)
            .expect("leased");
        let reprioritized = lifecycle::reprioritize(&snoozed, 0).expect("not done");
        let grant = LeaseGrant::new(later, Duration::from_secs(60));
        let again = lifecycle::claim(&reprioritized, &grant);
        let done = lifecycle::succeed(&again, &grant.token, later, None).expect("leased");
        let reset = lifecycle::reset(&done).expect("done");
        let mut hash = stored(&claimed);
        for (before, change, after, set, deleted) in [
            (
                &claimed,
                Change::Snooze,
                &snoozed,
                &["snz", "wait", "ord"][..],
                &["lease", "token"][..],
            ),
            (
                &snoozed,
                Change::Reprioritize,
                &reprioritized,
                &[][..],
                &["pri"][..],
            ),
            (
                &done,
                Change::Reset,
                &reset,
                &["att"][..],
                &["snz", "done"][..],
            ),
        ] {
            if change == Change::Reset {
                // The claim and the outcome in between, as stored.
                hash = stored(before);
            }
            let swap = Swap::new(before, change, after);
            let written = encode_change(&swap).expect("encodable");
            for name in set {
                assert!(
                    written.set.iter().any(|(n, _)| n == name),
                    "{change:?} sets {name}"
                );
            }
            for name in deleted {
                assert!(written.delete.contains(name), "{change:?} deletes {name}");
            }
            assert!(
                written.set.iter().all(|(n, _)| *n != "maxa") && !written.delete.contains(&"maxa"),
                "max attempts are fixed at create"
            );
            hash = applied(hash, written);
            match decode(&hash) {
                Decoded::Task(back) => assert_eq!(*back, *swap.task(), "{change:?}"),
                Decoded::Raw { reason, .. } => panic!("{reason}"),
            }
        }
        assert_eq!(snoozed.snoozes, 1);
        assert_eq!(reset.snoozes, 0);
        assert_eq!(reset.max_attempts, Some(5));
    }

    #[test]
    fn order_members_sort_like_the_claim_order() {
        let a = Task::new("b", "k", "e", t(10, 0));
        let mut b = Task::new("a", "k", "e", t(0, 0));
        b.wait_until = Some(DateTime::<Utc>::MIN_UTC);
        let mut c = Task::new("a", "k", "e", t(0, 0));
        c.wait_until = Some(t(-1, 0));
        let ord = |task: &Task| {
            stored(task)
                .get("ord")
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .expect("ord")
        };
        assert!(ord(&a) < ord(&b));
        assert!(ord(&b) < ord(&c));
    }

    #[test]
    fn a_document_of_another_format_is_raw() {
        let mut fields = stored(&Task::new("x", "k", "e", t(0, 0)));
        fields.insert("fmt".into(), b"2".to_vec());
        assert!(matches!(decode(&fields), Decoded::Raw { id: Some(id), .. } if id == "x"));
        let mut fields = stored(&Task::new("x", "k", "e", t(0, 0)));
        fields.insert("body".into(), b"not json".to_vec());
        assert!(matches!(decode(&fields), Decoded::Raw { .. }));
    }
}

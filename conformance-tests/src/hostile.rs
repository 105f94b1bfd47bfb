//! Hostile input through the public [`Manager`] API (issue 8): odd, huge or
//! malicious ids, kinds, environments, resource keys, recurrence strings,
//! schedules and payloads.
//!
//! The property, for every input: the call returns a typed [`Error`] or
//! succeeds; nothing panics; the other tasks of the store are exactly as
//! before (snapshot by id and by listing); and an accepted task reads back
//! verbatim, is listed in its environment and can be deleted again.
//! Backends may refuse values they cannot hold (Firestore refuses ids with
//! `/`, PostgreSQL text cannot hold NUL): a typed refusal that changes
//! nothing passes.
//!
//! The store is shared by all cases of a run (so the property also covers
//! what earlier cases left behind), on a current-thread runtime of its own,
//! like [`crate::model`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use oncetask_core::store::{Fetched, TaskFilter};
use oncetask_core::{
    Error, JsonObject, Manager, ManualClock, Recurrence, Store, StoreError, Task, TaskData,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde::{Serialize, Serializer};
use serde_json::{Value, json};

use crate::StoreFactory;

/// Default number of generated cases; `PROPTEST_CASES` overrides it.
const CASES: u32 = 24;

/// Environments of the bystander tasks; hostile envs never equal them.
const BYSTANDER_ENVS: [&str; 2] = ["hostile-a", "hostile-b"];
/// Id prefix of the bystander tasks; hostile ids never start with it.
const BYSTANDER: &str = "bystander-";

/// Names that have broken stores before: SQL and Redis-key syntax, path
/// separators, Firestore's reserved ids, control characters, odd Unicode.
pub const NASTY_NAMES: &[&str] = &[
    "'; DROP TABLE tasks; --",
    "\"; DROP SCHEMA public CASCADE; --",
    "' OR '1'='1",
    "{x}",
    "{hash}tag",
    "*",
    "?",
    "[a-z]",
    ":",
    "a:b:c",
    "%",
    "%s%n",
    "_",
    "\\",
    "\\\\'",
    "'",
    "\"",
    "`",
    "\0",
    "a\0b",
    "/",
    "a/b",
    ".",
    "..",
    "__reserved__",
    " ",
    "\t\n\r",
    "\u{202e}gnp.exe",
    "\u{1f4a5}",
    "\u{feff}",
    "\u{fffd}",
    "ｆｕｌｌｗｉｄｔｈ",
    "NULL",
    "null",
    "undefined",
    "$1",
    "${HOME}",
    "-- ",
    "/* */",
    "KEYS *",
    "\r\nSET x 1\r\n",
];

/// One hostile task definition.
#[derive(Debug, Clone)]
struct Hostile {
    id: String,
    kind: String,
    key: Option<String>,
    data: JsonObject,
    at: Option<DateTime<Utc>>,
    recurrence: Option<Recurrence>,
}

impl Serialize for Hostile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.data.serialize(s)
    }
}

impl TaskData for Hostile {
    type Kind = String;
    fn kind(&self) -> String {
        self.kind.clone()
    }
    fn idempotent_id(&self) -> String {
        self.id.clone()
    }
    fn resource_key(&self) -> Option<String> {
        self.key.clone()
    }
    fn scheduled_at(&self) -> Option<DateTime<Utc>> {
        self.at
    }
    fn recurrence(&self) -> Result<Option<Recurrence>, oncetask_core::RecurrenceError> {
        Ok(self.recurrence.clone())
    }
}

/// A whole case: the manager's env and the task (or the recurrence that
/// could not even be built: a typed refusal before any store call).
#[derive(Debug, Clone)]
struct Case {
    env: String,
    task: Result<Hostile, oncetask_core::RecurrenceError>,
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(NASTY_NAMES).prop_map(str::to_owned),
        2 => any::<String>(),
        1 => (proptest::sample::select(NASTY_NAMES), any::<String>())
            .prop_map(|(a, b)| format!("{a}{b}")),
        1 => "[a-z]{1,8}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        proptest::num::f64::NORMAL.prop_map(|f| json!(f)),
        name().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(name(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn time_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("2025-01-06T09:00:00Z".to_owned()),
        Just("2025-01-06T09:00:00+14:00".to_owned()),
        Just("+262143-12-31T23:59:59Z".to_owned()),
        Just("0000-01-01T00:00:00Z".to_owned()),
        Just("2025-02-30T09:00:00Z".to_owned()),
        Just("2025-01-06T24:00:00Z".to_owned()),
        Just("2025-01-06T09:00:60Z".to_owned()),
        Just("9999-12-31T23:59:59.999999999-23:59".to_owned()),
        name(),
    ]
}

fn rule_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("FREQ=DAILY".to_owned()),
        Just("FREQ=SECONDLY;INTERVAL=1".to_owned()),
        Just("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30".to_owned()),
        Just("FREQ=WEEKLY;COUNT=0".to_owned()),
        Just("FREQ=DAILY;UNTIL=19700101T000000Z".to_owned()),
        Just("FREQ=MONTHLY;BYSETPOS=-366;BYDAY=MO".to_owned()),
        Just("FREQ=DAILY;INTERVAL=4294967296".to_owned()),
        Just("RRULE:FREQ=HOURLY;BYHOUR=25".to_owned()),
        Just("FREQ=DAILY\nEXDATE:20250101T000000Z".to_owned()),
        name(),
    ]
}

/// A recurrence as a user would build it (through the validating
/// constructors, which may refuse), or field by field past them.
fn recurrence() -> impl Strategy<Value = Result<Recurrence, oncetask_core::RecurrenceError>> {
    (
        rule_text(),
        time_text(),
        prop::collection::vec(time_text(), 0..3),
        prop::option::of(prop_oneof![
            Just("Europe/Berlin".to_owned()),
            Just("../../etc/passwd".to_owned()),
            name()
        ]),
        any::<bool>(),
    )
        .prop_map(|(rule, start, exdates, zone, bypass)| {
            if bypass && let Ok(dtstart) = DateTime::parse_from_rfc3339(&start) {
                // Skips the constructors: the manager must validate.
                return Ok(Recurrence {
                    rrule: rule,
                    dtstart,
                    exdates: exdates
                        .iter()
                        .filter_map(|e| DateTime::parse_from_rfc3339(e).ok())
                        .collect(),
                    timezone: zone,
                });
            }
            let mut rec = Recurrence::new(&rule, &start)?;
            for e in &exdates {
                rec = rec.exdate(e)?;
            }
            match zone {
                Some(z) => rec.in_timezone(&z),
                None => Ok(rec),
            }
        })
}

fn schedule() -> impl Strategy<Value = Option<DateTime<Utc>>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(DateTime::<Utc>::MIN_UTC)),
        1 => Just(Some(DateTime::<Utc>::MAX_UTC)),
        1 => Just(Some(DateTime::<Utc>::UNIX_EPOCH)),
        1 => (-8_210_298_412_800_000_i64..8_210_298_412_800_000)
            .prop_map(DateTime::<Utc>::from_timestamp_millis),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        name(),
        name(),
        name(),
        prop::option::of(name()),
        prop::collection::btree_map(name(), json_value(), 0..5),
        schedule(),
        prop::option::weighted(0.3, recurrence()),
    )
        .prop_map(|(env, id, kind, key, data, at, recurrence)| {
            let data: JsonObject = data.into_iter().collect();
            let task = match recurrence {
                Some(Err(e)) => Err(e),
                Some(Ok(rec)) => Ok(Hostile {
                    id,
                    kind,
                    key,
                    data,
                    at,
                    recurrence: Some(rec),
                }),
                None => Ok(Hostile {
                    id,
                    kind,
                    key,
                    data,
                    at,
                    recurrence: None,
                }),
            };
            Case { env, task }
        })
        .prop_filter("not a bystander env or id", |c| {
            !BYSTANDER_ENVS.contains(&c.env.as_str())
                && c.task.as_ref().is_ok_and(|t| !t.id.starts_with(BYSTANDER))
                || c.task.is_err()
        })
}

/// Everything the bystanders are: read by id, and listed per env.
type Snapshot = (Vec<Task>, Vec<Vec<Task>>);

async fn snapshot<S: Store>(store: &S, now: DateTime<Utc>) -> Result<Snapshot, String> {
    let ids: Vec<String> = (0..4).map(|i| format!("{BYSTANDER}{i}")).collect();
    let by_id = store
        .get(&ids)
        .await
        .map_err(|e| format!("get of the bystanders failed: {e}"))?
        .into_iter()
        .map(|f| match f {
            Fetched::Task(t) => Ok(t),
            Fetched::Undecodable(u) => Err(format!("bystander became undecodable: {u:?}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut listed = Vec::new();
    for env in BYSTANDER_ENVS {
        let tasks = store
            .find(&TaskFilter::env(env, now))
            .await
            .map_err(|e| format!("find in {env} failed: {e}"))?;
        listed.push(tasks);
    }
    Ok((by_id, listed))
}

/// Four plain tasks in two environments, two of them sharing a key.
async fn seed_bystanders<S: Store>(store: &S, now: DateTime<Utc>) {
    let tasks = (0..4)
        .map(|i| {
            let mut t = Task::new(
                format!("{BYSTANDER}{i}"),
                "plain",
                BYSTANDER_ENVS[i % 2],
                now,
            );
            t.resource_key = (i < 2).then(|| "shared".to_owned());
            t.data.insert("n".into(), json!(i));
            t
        })
        .collect();
    let outcomes = store.create(tasks).await.expect("seed the bystanders");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, oncetask_core::store::CreateOutcome::Created)),
        "{outcomes:?}"
    );
}

fn manager<S: Store + Clone>(store: &S, env: &str, clock: &ManualClock) -> Manager {
    Manager::builder(Arc::new(store.clone()))
        .env(env)
        .clock(Arc::new(clock.clone()))
        .start_workers(false)
        .accept_any_kind()
        .build()
}

/// True for the errors a refused input may get: a validation error, or a
/// backend's typed refusal of one item.
fn is_refusal(e: &Error) -> bool {
    matches!(
        e,
        Error::EmptyId
            | Error::InvalidData { .. }
            | Error::InvalidRecurrence { .. }
            | Error::ScheduleConflict { .. }
            | Error::Store(
                StoreError::Unencodable { .. }
                    | StoreError::Backend(_)
                    // A loaded server timing out is a typed error too (the
                    // property is "typed error, nothing else changed").
                    | StoreError::Unavailable(_)
            )
    )
}

/// Runs one case against the shared store and checks the property, then
/// removes what it created even when the check failed, so that shrinking
/// replays start from the same store.
async fn check<S: Store + Clone>(
    store: &S,
    clock: &ManualClock,
    case: &Case,
) -> Result<(), String> {
    let checked = check_case(store, clock, case).await;
    if let Ok(job) = &case.task {
        let _ = store
            .delete(&[oncetask_core::store::Delete::any(job.id.clone())])
            .await;
    }
    checked
}

async fn check_case<S: Store + Clone>(
    store: &S,
    clock: &ManualClock,
    case: &Case,
) -> Result<(), String> {
    let Ok(job) = &case.task else {
        // The recurrence itself was refused, with a typed error: nothing to create.
        return Ok(());
    };
    let now = clock.now();
    let before = snapshot(store, now).await?;
    let manager = manager(store, &case.env, clock);
    let created = manager.create(job).await;
    let after = snapshot(store, now).await?;
    if before != after {
        return Err(format!("creating {job:?} changed the bystanders"));
    }
    match created {
        Err(e) if is_refusal(&e) => Ok(()),
        Err(e) => Err(format!("unexpected error {e:?} for {job:?}")),
        Ok(status) if !status.is_created() => Err(format!("{job:?} was reported as {status:?}")),
        Ok(_) => {
            let stored = manager
                .get_task(&job.id)
                .await
                .map_err(|e| format!("reading back {:?} failed: {e}", job.id))?
                .ok_or_else(|| format!("{:?} was created but cannot be read", job.id))?;
            let expected = (
                &job.id,
                &job.kind,
                manager.env(),
                job.key.as_deref().filter(|k| !k.is_empty()),
                &job.recurrence,
            );
            let actual = (
                &stored.id,
                &stored.kind,
                stored.env.as_str(),
                stored.resource_key.as_deref(),
                &stored.recurrence,
            );
            if expected != actual
                || !same_json(
                    &Value::Object(job.data.clone()),
                    &Value::Object(stored.data.clone()),
                )
            {
                return Err(format!(
                    "read back {actual:?} {:?}, stored {expected:?} {:?}",
                    stored.data, job.data
                ));
            }
            let listed = manager
                .find(manager.filter())
                .await
                .map_err(|e| format!("listing the new env failed: {e}"))?;
            if !listed.iter().any(|t| t.id == job.id) {
                return Err(format!("{:?} is not listed in its env", job.id));
            }
            if let Some(key) = &expected.3 {
                let by_key = manager
                    .get_tasks_by_resource_key(key)
                    .await
                    .map_err(|e| format!("find by key {key:?} failed: {e}"))?;
                if !by_key.iter().any(|t| t.id == job.id) {
                    return Err(format!("{:?} is not listed under its key", job.id));
                }
            }
            manager
                .delete(&job.id)
                .await
                .map_err(|e| format!("deleting {:?} failed: {e}", job.id))?;
            if manager
                .get_task(&job.id)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                return Err(format!("{:?} survived its delete", job.id));
            }
            let last = snapshot(store, now).await?;
            if last != before {
                return Err(format!("deleting {:?} changed the bystanders", job.id));
            }
            Ok(())
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a current-thread tokio runtime")
}

/// Generated hostile names, payloads, recurrences and schedules: each
/// create gets a typed error or stores the task verbatim, and no other
/// task changes (24 cases; `PROPTEST_CASES` overrides).
pub fn hostile_input_gets_a_typed_answer_and_changes_nothing_else(factory: &impl StoreFactory) {
    let runtime = runtime();
    let clock = ManualClock::new(crate::manager::start());
    let store = runtime.block_on(factory.new_store());
    runtime.block_on(seed_bystanders(&store, clock.now()));
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        runtime
            .block_on(check(&store, &clock, &case))
            .map_err(TestCaseError::fail)
    });
    if let Err(failure) = result {
        panic!("hostile input broke the store: {failure}");
    }
}

/// JSON equality in which numbers compare by value: JSON does not tell
/// `1.6e16` from `16000000000000000`, and stores may hand either back for a
/// whole number (PostgreSQL's jsonb keeps numbers as numerics and prints a
/// whole one without a fraction; Firestore reads an exact whole double as an
/// integer). Everything else compares exactly.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || ((x.is_f64() || y.is_f64())
                    && x.as_f64().zip(y.as_f64()).is_some_and(|(x, y)| x == y))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// A value nested `depth` levels deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("bottom"), |inner, _| json!({ "d": inner }))
}

/// Huge values: megabyte payloads, very long names, deep nesting. Each
/// create gets a typed error or stores the task verbatim, and no other
/// task changes.
pub fn huge_values_get_a_typed_answer_and_change_nothing_else(factory: &impl StoreFactory) {
    let runtime = runtime();
    let clock = ManualClock::new(crate::manager::start());
    let store = runtime.block_on(factory.new_store());
    runtime.block_on(seed_bystanders(&store, clock.now()));
    let long = |n: usize| "x".repeat(n);
    let plain = |id: String| Hostile {
        id,
        kind: "huge".into(),
        key: None,
        data: JsonObject::new(),
        at: None,
        recurrence: None,
    };
    let with = |id: &str, field: &str, value: Value| {
        let mut h = plain(id.into());
        h.data.insert(field.into(), value);
        h
    };
    let many_fields: JsonObject = (0..20_000).map(|i| (format!("f{i}"), json!(i))).collect();
    let cases: Vec<(&str, String, Hostile)> = vec![
        (
            "a 2 MB string",
            "huge".into(),
            with("mb-string", "s", json!(long(2 << 20))),
        ),
        (
            "a 600 kB string",
            "huge".into(),
            with("kb-string", "s", json!(long(600 << 10))),
        ),
        (
            "a 100k-element array",
            "huge".into(),
            with("big-array", "a", Value::Array(vec![json!(1); 100_000])),
        ),
        (
            "20k fields",
            "huge".into(),
            Hostile {
                data: many_fields,
                ..plain("many-fields".into())
            },
        ),
        (
            "nesting 64 deep",
            "huge".into(),
            with("deep-64", "n", nested(64)),
        ),
        (
            "nesting 200 deep",
            "huge".into(),
            with("deep-200", "n", nested(200)),
        ),
        (
            "nesting 1000 deep",
            "huge".into(),
            with("deep-1000", "n", nested(1000)),
        ),
        (
            "a 1 MB field name",
            "huge".into(),
            with("long-field", &long(1 << 20), json!(1)),
        ),
        ("a 100k-byte id", "huge".into(), plain(long(100_000))),
        (
            "a 2 kB id",
            "huge".into(),
            plain(format!("id-{}", long(2048))),
        ),
        (
            "a 100k-byte kind",
            "huge".into(),
            Hostile {
                kind: long(100_000),
                ..plain("long-kind".into())
            },
        ),
        (
            "a 100k-byte key",
            "huge".into(),
            Hostile {
                key: Some(long(100_000)),
                ..plain("long-key".into())
            },
        ),
        ("a 100k-byte env", long(100_000), plain("long-env".into())),
    ];
    for (what, env, job) in cases {
        let case = Case { env, task: Ok(job) };
        if let Err(failure) = runtime.block_on(check(&store, &clock, &case)) {
            let mut failure = failure;
            failure.truncate(600);
            panic!("{what}: {failure}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_compare_by_value_and_nothing_else_is_loosened() {
        assert!(same_json(
            &json!(1.6e16),
            &json!(16_000_000_000_000_000_u64)
        ));
        assert!(same_json(&json!({"a": [2.0]}), &json!({"a": [2]})));
        assert!(!same_json(&json!(1), &json!(2)));
        assert!(!same_json(&json!(1), &json!("1")));
        assert!(!same_json(&json!({"a": 1}), &json!({"a": 1, "b": 1})));
        assert!(!same_json(&json!([1, 2]), &json!([2, 1])));
    }
}

//! Go compatibility of the document mapping, without a Firestore server.
//!
//! `tests/fixtures/*.json` are documents exactly as the Go package stores
//! them, in the Firestore REST "fields" encoding (see the README there).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, FixedOffset, TimeDelta, TimeZone, Utc};
use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
use firestore::gcloud_sdk::google::firestore::v1::{MapValue, Value};
use oncetask_core::task::TaskParts;
use oncetask_core::{AttemptError, LeaseToken, Outcome, Recurrence, Task, TaskStatus};
use oncetask_firestore::document::{
    DecodeError, Fields, NO_WAIT, decode_task, encode_task, format_time, parse_time,
};
use serde_json::{Value as Json, json};

mod common;
use common::{fixture, t, tag};

// ---------------------------------------------------------------------------
// The REST "fields" encoding <-> the gRPC value type.
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Every fixture decodes to the expected task and status.
// ---------------------------------------------------------------------------

/// The task a Go fixture shows before its state-specific fields.
fn go_task(id: &str) -> Task {
    TaskParts {
        id: id.into(),
        kind: "send_email".into(),
        data: json!({"to": "user@example.com", "retries": 3})
            .as_object()
            .unwrap()
            .clone(),
        resource_key: None,
        env: "DEFAULT".into(),
        wait_until: None,
        leased_until: None,
        created_at: t("2026-01-01T00:00:00Z"),
        done_at: None,
        attempts: 0,
        cancellation_attempts: 0,
        errors: vec![],
        result: None,
        recurrence: None,
        parent_recurrence_id: None,
        occurrence_timestamp: None,
        is_cancelled: false,
        cancelled_at: None,
        lease_token: None,
        version: 0,
        outcome: None,
        // Go writes none of these: the defaults.
        snoozes: 0,
        priority: 0,
        max_attempts: None,
        pruned_at: None,
        revision: None,
    }
    .into()
}

fn err(at: &str, msg: &str) -> AttemptError {
    AttemptError {
        at: t(at),
        error: msg.into(),
    }
}

/// (file, expected task, now, status at now)
fn expectations() -> Vec<(&'static str, Task, &'static str, TaskStatus)> {
    let report = |id: &str| TaskParts {
        kind: "weekly_report".into(),
        data: json!({"userId": "u1"}).as_object().unwrap().clone(),
        ..go_task(id).into_parts()
    };
    vec![
        (
            "pending.json",
            go_task("email-u1"),
            "2026-01-01T00:00:01Z",
            TaskStatus::Pending,
        ),
        (
            "pending-resource-key.json",
            TaskParts {
                kind: "sync_calendar".into(),
                data: json!({"calendarId": "calendar-42"})
                    .as_object()
                    .unwrap()
                    .clone(),
                resource_key: Some("calendar-42".into()),
                ..go_task("sync-cal-42-a").into_parts()
            }
            .into(),
            "2026-01-01T00:00:01Z",
            TaskStatus::Pending,
        ),
        (
            "retry-backoff.json",
            TaskParts {
                wait_until: Some(t("2026-01-01T00:00:02Z")),
                attempts: 1,
                errors: vec![err("2026-01-01T00:00:01Z", "smtp: connection refused")],
                ..go_task("email-u2").into_parts()
            }
            .into(),
            "2026-01-01T00:00:01Z",
            TaskStatus::Waiting,
        ),
        (
            "expired-lease.json",
            TaskParts {
                leased_until: Some(t("2026-01-01T00:10:00Z")),
                attempts: 1,
                ..go_task("email-u3").into_parts()
            }
            .into(),
            "2026-01-01T00:10:01Z",
            TaskStatus::Pending,
        ),
        (
            "completed.json",
            TaskParts {
                done_at: Some(t("2026-01-01T00:00:03Z")),
                attempts: 2,
                errors: vec![err("2026-01-01T00:00:01Z", "smtp: timeout")],
                result: Some(json!({"messageId": "m-123"})),
                ..go_task("email-u4").into_parts()
            }
            .into(),
            "2026-01-01T00:00:04Z",
            TaskStatus::Completed,
        ),
        (
            "failed.json",
            TaskParts {
                done_at: Some(t("2026-01-01T00:00:07Z")),
                attempts: 3,
                errors: vec![
                    err("2026-01-01T00:00:01Z", "bad address"),
                    err("2026-01-01T00:00:03Z", "bad address"),
                    err("2026-01-01T00:00:07Z", "bad address"),
                ],
                ..go_task("email-u5").into_parts()
            }
            .into(),
            "2026-01-01T00:00:08Z",
            TaskStatus::Failed,
        ),
        (
            "cancellation-pending.json",
            TaskParts {
                is_cancelled: true,
                cancelled_at: Some(t("2026-01-01T00:00:05Z")),
                ..go_task("email-u6").into_parts()
            }
            .into(),
            "2026-01-01T00:00:06Z",
            TaskStatus::CancellationPending,
        ),
        (
            "cancelled.json",
            TaskParts {
                attempts: 1,
                done_at: Some(t("2026-01-01T00:00:06Z")),
                is_cancelled: true,
                cancelled_at: Some(t("2026-01-01T00:00:05Z")),
                ..go_task("email-u7").into_parts()
            }
            .into(),
            "2026-01-01T00:00:07Z",
            TaskStatus::Cancelled,
        ),
        (
            "generator.json",
            TaskParts {
                wait_until: Some(t("2026-01-05T09:00:00Z")),
                recurrence: Some(Recurrence {
                    rrule: "FREQ=WEEKLY;BYDAY=MO".into(),
                    dtstart: DateTime::parse_from_rfc3339("2026-01-05T09:00:00Z").unwrap(),
                    exdates: vec![],
                    timezone: None,
                }),
                ..report("report-u1")
            }
            .into(),
            "2026-01-01T00:00:01Z",
            TaskStatus::Waiting,
        ),
        (
            "occurrence.json",
            TaskParts {
                wait_until: Some(t("2026-01-05T09:00:00Z")),
                created_at: t("2026-01-05T09:00:01Z"),
                parent_recurrence_id: Some("report-u1".into()),
                occurrence_timestamp: Some(t("2026-01-05T09:00:00Z")),
                ..report("report-u1_occ_2026-01-05T09:00:00Z")
            }
            .into(),
            "2026-01-05T09:00:01Z",
            TaskStatus::Pending,
        ),
        (
            "other-env.json",
            TaskParts {
                env: "staging".into(),
                ..go_task("email-u8").into_parts()
            }
            .into(),
            "2026-01-01T00:00:01Z",
            TaskStatus::Pending,
        ),
    ]
}

#[test]
fn every_fixture_is_covered() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    let mut covered: Vec<String> = expectations()
        .iter()
        .map(|(f, ..)| (*f).to_owned())
        .collect();
    covered.sort();
    assert_eq!(files, covered);
}

#[test]
fn go_documents_decode_to_the_expected_task_and_status() {
    for (file, expected, now, status) in expectations() {
        let (_, fields) = fixture(file);
        let task = decode_task(&fields).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(task, expected, "{file}");
        assert_eq!(task.status(t(now)), status, "{file}");
        // Go knows no snoozes, priorities or per-task limits.
        for name in ["snoozes", "priority", "maxAttempts"] {
            assert!(!fields.contains_key(name), "{file}: {name}");
        }
        assert_eq!(
            (task.snoozes, task.priority, task.max_attempts),
            (0, 0, None),
            "{file}"
        );
        // The document key is the id (the fixtures' README).
        assert_eq!(fields["id"], sv(&task.id), "{file}");
    }
}

/// A Go payload number is a double; it reads into an integer field as in Go.
#[test]
fn go_payload_doubles_read_into_integer_fields() {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Email {
        to: String,
        retries: u32,
    }
    let (_, fields) = fixture("pending.json");
    let task = decode_task(&fields).unwrap();
    let email: Email = serde_json::from_value(Json::Object(task.data)).unwrap();
    assert_eq!(email.retries, 3);
}

// ---------------------------------------------------------------------------
// What Rust writes has the Go field types.
// ---------------------------------------------------------------------------

/// A task using every field, with millisecond times.
fn rich_task() -> Task {
    let base = t("2026-03-01T10:00:00.250Z");
    TaskParts {
        id: "rich-1".into(),
        kind: "send_email".into(),
        data: json!({"to": "a@b.c", "n": 3, "ratio": 0.5, "big": i64::MAX, "exact": 1u64 << 53, "nested": {"list": [1, "x", null, true]}})
            .as_object()
            .unwrap()
            .clone(),
        resource_key: Some("rk".into()),
        env: "prod".into(),
        wait_until: Some(base + TimeDelta::milliseconds(1500)),
        leased_until: Some(base + TimeDelta::seconds(30)),
        created_at: base,
        done_at: None,
        attempts: 2,
        cancellation_attempts: 1,
        errors: vec![AttemptError {
            at: base + TimeDelta::milliseconds(7),
            error: "boom".into(),
        }],
        result: Some(json!({"ok": true})),
        recurrence: Some(Recurrence {
            rrule: "FREQ=DAILY".into(),
            dtstart: FixedOffset::east_opt(3600)
                .unwrap()
                .with_ymd_and_hms(2026, 3, 1, 9, 0, 0)
                .unwrap(),
            exdates: vec![DateTime::parse_from_rfc3339("2026-03-02T09:00:00+01:00").unwrap()],
            timezone: Some("Europe/Berlin".into()),
        }),
        parent_recurrence_id: Some("gen".into()),
        occurrence_timestamp: Some(base),
        is_cancelled: true,
        cancelled_at: Some(base + TimeDelta::seconds(1)),
        lease_token: Some(LeaseToken::from_stored("tok-1")),
        version: 42,
        outcome: Some(Outcome::Failed),
        snoozes: 2,
        priority: 7,
        max_attempts: Some(3),
        pruned_at: None,
        revision: None,
    }.into()
}

#[test]
fn encoding_uses_the_go_field_types() {
    let (go_doc, _) = fixture("completed.json");
    for task in [rich_task(), go_task("plain")] {
        let fields = encode_task(&task).unwrap();
        for (name, go_value) in go_doc["fields"].as_object().unwrap() {
            let go_tag = go_value
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .as_str();
            let ours = tag(fields
                .get(name)
                .unwrap_or_else(|| panic!("`{name}` is always written")));
            // Where Go may write null (errors, result, recurrence), the other
            // shape is the one Go writes when the field is set.
            let ok = ours == go_tag
                || matches!(
                    (name.as_str(), ours),
                    ("errors", "arrayValue")
                        | ("result", "mapValue" | "nullValue")
                        | ("recurrence", "mapValue" | "nullValue")
                );
            assert!(ok, "{}: `{name}` is {ours}, Go writes {go_tag}", task.id);
        }
    }
}

#[test]
fn encoding_writes_strings_for_times_and_empty_strings_for_unset() {
    let plain = encode_task(&go_task("plain")).unwrap();
    let s = |f: &Fields, n: &str| match f[n].value_type.as_ref().unwrap() {
        ValueType::StringValue(s) => s.clone(),
        other => panic!("{n} is {other:?}"),
    };
    assert_eq!(s(&plain, "waitUntil"), NO_WAIT);
    for name in [
        "leasedUntil",
        "doneAt",
        "cancelledAt",
        "resourceKey",
        "parentRecurrenceId",
        "occurrenceTimestamp",
        "leaseToken",
        "outcome",
    ] {
        assert_eq!(s(&plain, name), "", "{name}");
    }
    assert_eq!(s(&plain, "createdAt"), "2026-01-01T00:00:00.000Z");
    assert_eq!(
        plain["attempts"].value_type,
        Some(ValueType::IntegerValue(0))
    );

    let rich = encode_task(&rich_task()).unwrap();
    // A wait inside a second is stored rounded up (Go never starts it
    // early), its exact time beside it for Rust readers.
    assert_eq!(s(&rich, "waitUntil"), "2026-03-01T10:00:02.000Z");
    assert_eq!(s(&rich, "waitUntilExact"), "2026-03-01T10:00:01.750Z");
    assert!(
        !plain.contains_key("waitUntilExact"),
        "no exact time without a wait"
    );
    // Snoozes, priority and a per-task limit: integers, absent at their
    // default (as in every Go document).
    for (name, value) in [("snoozes", 2), ("priority", 7), ("maxAttempts", 3)] {
        assert!(!plain.contains_key(name), "{name}");
        assert_eq!(
            rich[name].value_type,
            Some(ValueType::IntegerValue(value)),
            "{name}"
        );
    }
    assert_eq!(s(&rich, "leasedUntil"), "2026-03-01T10:00:30.250Z");
    assert_eq!(s(&rich, "outcome"), "failed");
    assert_eq!(s(&rich, "leaseToken"), "tok-1");
    assert_eq!(
        rich["version"].value_type,
        Some(ValueType::IntegerValue(42))
    );
    let ValueType::MapValue(rec) = rich["recurrence"].value_type.as_ref().unwrap() else {
        panic!("recurrence is a map");
    };
    assert_eq!(s(&rec.fields, "dtstart"), "2026-03-01T09:00:00+01:00");
    assert_eq!(s(&rec.fields, "rrule"), "FREQ=DAILY");
    assert_eq!(s(&rec.fields, "timezone"), "Europe/Berlin");
    assert_eq!(tag(&rec.fields["exdates"]), "arrayValue");
    // Go reads times with its RFC 3339 parser: no offset other than Z, a
    // fraction Go accepts.
    for name in ["waitUntil", "leasedUntil", "createdAt", "cancelledAt"] {
        let v = s(&rich, name);
        assert!(v.ends_with('Z') && v.len() == 24, "{name}: {v}");
    }
}

#[test]
fn rust_documents_round_trip() {
    // Integral doubles read back as integers (see the module docs), so the
    // payload here uses integers and a non-integral double.
    for task in [rich_task(), go_task("plain")] {
        let fields = encode_task(&task).unwrap();
        let back = decode_task(&fields).unwrap();
        assert_eq!(back, task);
    }
}

#[test]
fn an_integer_above_the_firestore_maximum_is_refused_not_rounded() {
    // Firestore integers are i64; a u64 above that could only come back as a
    // rounded double, so encoding refuses it and names the field.
    let mut task = rich_task();
    task.data.insert("big".into(), json!(u64::MAX));
    let err = encode_task(&task).unwrap_err();
    assert!(format!("{err:?}").contains("data"), "{err:?}");
}

#[test]
fn payload_numbers_are_stored_as_doubles_like_go_and_read_back_unchanged() {
    let task = rich_task();
    let fields = encode_task(&task).unwrap();
    let Some(ValueType::MapValue(data)) = &fields["data"].value_type else {
        panic!("data is a map");
    };
    for name in ["n", "ratio", "exact"] {
        assert_eq!(tag(&data.fields[name]), "doubleValue", "{name}");
    }
    // Beyond 2^53 a double is not exact: it stays an integer.
    assert_eq!(tag(&data.fields["big"]), "integerValue");
    let Some(ValueType::MapValue(nested)) = &data.fields["nested"].value_type else {
        panic!("nested is a map");
    };
    let Some(ValueType::ArrayValue(list)) = &nested.fields["list"].value_type else {
        panic!("list is an array");
    };
    assert_eq!(tag(&list.values[0]), "doubleValue");
    assert_eq!(decode_task(&fields).unwrap().data, task.data);
}

#[test]
fn go_documents_survive_a_rust_rewrite() {
    for (file, expected, ..) in expectations() {
        let (_, fields) = fixture(file);
        let task = decode_task(&fields).unwrap();
        let rewritten = decode_task(&encode_task(&task).unwrap()).unwrap();
        assert_eq!(rewritten, expected, "{file}");
    }
}

// ---------------------------------------------------------------------------
// Ordering of stored time strings (Firestore compares them bytewise).
// ---------------------------------------------------------------------------

#[test]
fn rust_time_strings_sort_in_time_order() {
    let base = t("2026-01-01T00:00:00Z");
    let mut times: Vec<DateTime<Utc>> = (0..2000)
        .map(|i: i64| base + TimeDelta::milliseconds((i * 7919) % 86_400_000))
        .collect();
    times.push(t("1970-01-01T00:00:00Z"));
    times.push(t("9999-12-31T23:59:59.999Z"));
    let mut by_string = times.clone();
    by_string.sort_by_key(|t| format_time(*t));
    times.sort();
    assert_eq!(by_string, times);
    // NoWait and "" sort before every time Rust writes.
    assert!(NO_WAIT < format_time(t("1970-01-01T00:00:00Z")).as_str());
    assert!(String::new().as_str() < NO_WAIT);
}

/// A Go time `T` (whole seconds, no fraction) compares after every Rust time
/// of the same second and before the next second: queries see it as
/// `T + 0.9995 s`.
#[test]
fn go_whole_second_strings_sort_at_the_end_of_their_second() {
    let go = "2026-01-01T00:00:02Z";
    assert!(format_time(t("2026-01-01T00:00:02.000Z")).as_str() < go);
    assert!(format_time(t("2026-01-01T00:00:02.999Z")).as_str() < go);
    assert!(format_time(t("2026-01-01T00:00:03.000Z")).as_str() > go);
    assert!(format_time(t("2026-01-01T00:00:01.999Z")).as_str() < go);
    // Client-side the instant is exact.
    assert_eq!(parse_time(go).unwrap(), t("2026-01-01T00:00:02Z"));
}

// ---------------------------------------------------------------------------
// Undecodable documents are errors, never panics.
// ---------------------------------------------------------------------------

fn broken(edit: impl FnOnce(&mut Fields)) -> Result<Task, DecodeError> {
    let (_, mut fields) = fixture("completed.json");
    edit(&mut fields);
    decode_task(&fields)
}

fn set_int(f: &mut Fields, name: &str, n: i64) {
    f.insert(
        name.into(),
        Value {
            value_type: Some(ValueType::IntegerValue(n)),
        },
    );
}

fn bool_value(b: bool) -> Value {
    Value {
        value_type: Some(ValueType::BooleanValue(b)),
    }
}

/// The Rust-only fields written only when not their default read null as
/// absent, and an integral double as its integer (as counts do).
#[test]
fn snoozes_priority_and_max_attempts_read_null_as_absent_and_integral_doubles() {
    let (_, mut f) = fixture("pending.json");
    let null = Value {
        value_type: Some(ValueType::NullValue(0)),
    };
    for name in ["snoozes", "priority", "maxAttempts"] {
        f.insert(name.into(), null.clone());
    }
    let task = decode_task(&f).unwrap();
    assert_eq!(
        (task.snoozes, task.priority, task.max_attempts),
        (0, 0, None)
    );
    let double = |d: f64| Value {
        value_type: Some(ValueType::DoubleValue(d)),
    };
    f.insert("snoozes".into(), double(4.0));
    f.insert("priority".into(), double(-10.0));
    f.insert("maxAttempts".into(), double(2.0));
    let task = decode_task(&f).unwrap();
    assert_eq!(
        (task.snoozes, task.priority, task.max_attempts),
        (4, -10, Some(2))
    );
}

fn sv(s: &str) -> Value {
    Value {
        value_type: Some(ValueType::StringValue(s.into())),
    }
}

#[test]
fn malformed_documents_are_errors() {
    type Edit = Box<dyn FnOnce(&mut Fields)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "id",
            Box::new(|f| {
                f.remove("id");
            }),
        ),
        (
            "type",
            Box::new(|f| {
                f.insert(
                    "type".into(),
                    Value {
                        value_type: Some(ValueType::IntegerValue(1)),
                    },
                );
            }),
        ),
        (
            "data",
            Box::new(|f| {
                f.insert("data".into(), sv("x"));
            }),
        ),
        (
            "waitUntil",
            Box::new(|f| {
                f.insert("waitUntil".into(), sv("tomorrow"));
            }),
        ),
        (
            "createdAt",
            Box::new(|f| {
                f.insert("createdAt".into(), sv(""));
            }),
        ),
        (
            "attempts",
            Box::new(|f| {
                f.insert(
                    "attempts".into(),
                    Value {
                        value_type: Some(ValueType::IntegerValue(-1)),
                    },
                );
            }),
        ),
        (
            "attempts",
            Box::new(|f| {
                f.insert("attempts".into(), sv("2"));
            }),
        ),
        (
            "version",
            Box::new(|f| {
                f.insert(
                    "version".into(),
                    Value {
                        value_type: Some(ValueType::DoubleValue(0.5)),
                    },
                );
            }),
        ),
        (
            "outcome",
            Box::new(|f| {
                f.insert("outcome".into(), sv("exploded"));
            }),
        ),
        (
            "errors[0].at",
            Box::new(|f| {
                let mut errors = f["errors"].clone();
                if let Some(ValueType::ArrayValue(a)) = errors.value_type.as_mut()
                    && let Some(ValueType::MapValue(m)) = a.values[0].value_type.as_mut()
                {
                    m.fields.insert("at".into(), sv("yesterday"));
                }
                f.insert("errors".into(), errors);
            }),
        ),
        (
            "data.x",
            Box::new(|f| {
                let mut data = f["data"].clone();
                if let Some(ValueType::MapValue(m)) = data.value_type.as_mut() {
                    m.fields.insert(
                        "x".into(),
                        Value {
                            value_type: Some(ValueType::DoubleValue(f64::NAN)),
                        },
                    );
                }
                f.insert("data".into(), data);
            }),
        ),
        (
            "data.b",
            Box::new(|f| {
                let mut data = f["data"].clone();
                if let Some(ValueType::MapValue(m)) = data.value_type.as_mut() {
                    m.fields.insert(
                        "b".into(),
                        Value {
                            value_type: Some(ValueType::BytesValue(vec![1, 2])),
                        },
                    );
                }
                f.insert("data".into(), data);
            }),
        ),
        (
            "recurrence.dtstart",
            Box::new(|f| {
                f.insert(
                    "recurrence".into(),
                    Value {
                        value_type: Some(ValueType::MapValue(MapValue {
                            fields: HashMap::from([
                                ("rrule".into(), sv("FREQ=DAILY")),
                                ("dtstart".into(), sv("soon")),
                            ]),
                        })),
                    },
                );
            }),
        ),
        (
            "isCancelled",
            Box::new(|f| {
                f.insert("isCancelled".into(), sv("true"));
            }),
        ),
        // An i8, but outside PRIORITY_RANGE.
        ("priority", Box::new(|f| set_int(f, "priority", 99))),
        ("priority", Box::new(|f| set_int(f, "priority", -11))),
        ("priority", Box::new(|f| set_int(f, "priority", 1 << 40))),
        (
            "priority",
            Box::new(|f| {
                f.insert("priority".into(), sv("7"));
            }),
        ),
        (
            "priority",
            Box::new(|f| {
                f.insert(
                    "priority".into(),
                    Value {
                        value_type: Some(ValueType::DoubleValue(1.5)),
                    },
                );
            }),
        ),
        ("snoozes", Box::new(|f| set_int(f, "snoozes", -1))),
        ("snoozes", Box::new(|f| set_int(f, "snoozes", 1 << 32))),
        (
            "snoozes",
            Box::new(|f| {
                f.insert("snoozes".into(), bool_value(true));
            }),
        ),
        ("maxAttempts", Box::new(|f| set_int(f, "maxAttempts", -1))),
        ("maxAttempts", Box::new(|f| set_int(f, "maxAttempts", 0))),
        (
            "maxAttempts",
            Box::new(|f| {
                f.insert("maxAttempts".into(), sv("3"));
            }),
        ),
    ];
    for (field, edit) in cases {
        let e = broken(edit).expect_err(field);
        assert_eq!(e.field, field, "{e}");
        assert!(!e.reason.is_empty(), "{e}");
    }
    let e = broken(|f| set_int(f, "priority", 99)).unwrap_err();
    assert_eq!(e.to_string(), "field `priority`: 99 is outside -10..=10");
    // An empty document and a value without a type do not panic either.
    assert!(decode_task(&Fields::new()).is_err());
    let mut f = fixture("pending.json").1;
    f.insert("doneAt".into(), Value { value_type: None });
    assert!(decode_task(&f).is_ok());
}

//! Helpers shared by the tests: a client of the emulator, and (for the
//! Go-compatibility tests) fixtures written in Firestore's REST "fields"
//! encoding, which the store reads as gRPC values.

#![allow(dead_code)] // each test file uses a different subset
#![allow(clippy::unwrap_used)] // fixture decoding: a bad fixture should fail loudly

use std::path::Path;

use chrono::{DateTime, Utc};
use firestore::FirestoreDb;
use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
use firestore::gcloud_sdk::google::firestore::v1::{ArrayValue, MapValue, Value};
use oncetask_firestore::FirestoreStore;
use oncetask_firestore::document::Fields;
use serde_json::{Value as Json, json};

/// One REST-encoded value as a gRPC value.
pub fn rest_to_value(j: &Json) -> Value {
    let obj = j.as_object().unwrap();
    assert_eq!(obj.len(), 1, "one type tag per value: {j}");
    let (tag, v) = obj.iter().next().unwrap();
    let t = match tag.as_str() {
        "nullValue" => ValueType::NullValue(0),
        "booleanValue" => ValueType::BooleanValue(v.as_bool().unwrap()),
        "integerValue" => ValueType::IntegerValue(v.as_str().unwrap().parse().unwrap()),
        "doubleValue" => ValueType::DoubleValue(v.as_f64().unwrap()),
        "stringValue" => ValueType::StringValue(v.as_str().unwrap().to_owned()),
        "arrayValue" => ValueType::ArrayValue(ArrayValue {
            values: v
                .get("values")
                .and_then(Json::as_array)
                .map(|a| a.iter().map(rest_to_value).collect())
                .unwrap_or_default(),
        }),
        "mapValue" => ValueType::MapValue(MapValue {
            fields: rest_fields(v.get("fields").unwrap_or(&json!({}))),
        }),
        other => panic!("fixture uses an unexpected type {other}"),
    };
    Value {
        value_type: Some(t),
    }
}

/// A REST "fields" object as document fields.
pub fn rest_fields(j: &Json) -> Fields {
    j.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), rest_to_value(v)))
        .collect()
}

/// The REST type tag of a value (`stringValue`, `integerValue`, ...).
pub fn tag(v: &Value) -> &'static str {
    match v.value_type.as_ref().unwrap() {
        ValueType::NullValue(_) => "nullValue",
        ValueType::BooleanValue(_) => "booleanValue",
        ValueType::IntegerValue(_) => "integerValue",
        ValueType::DoubleValue(_) => "doubleValue",
        ValueType::StringValue(_) => "stringValue",
        ValueType::ArrayValue(_) => "arrayValue",
        ValueType::MapValue(_) => "mapValue",
        _ => "other",
    }
}

/// The fields of the Go package's task struct, each with the Firestore types
/// Go writes for it and decodes into it (`errors`, `result` and `recurrence`
/// may be null; `result` is Go's `any`, so any type).
pub const GO_FIELDS: [(&str, &[&str]); 17] = [
    ("id", &["stringValue"]),
    ("type", &["stringValue"]),
    ("data", &["mapValue"]),
    ("resourceKey", &["stringValue"]),
    ("env", &["stringValue"]),
    ("waitUntil", &["stringValue"]),
    ("leasedUntil", &["stringValue"]),
    ("createdAt", &["stringValue"]),
    ("doneAt", &["stringValue"]),
    ("attempts", &["integerValue"]),
    ("errors", &["arrayValue", "nullValue"]),
    (
        "result",
        &[
            "nullValue",
            "booleanValue",
            "integerValue",
            "doubleValue",
            "stringValue",
            "arrayValue",
            "mapValue",
        ],
    ),
    ("recurrence", &["mapValue", "nullValue"]),
    ("parentRecurrenceId", &["stringValue"]),
    ("occurrenceTimestamp", &["stringValue"]),
    ("isCancelled", &["booleanValue"]),
    ("cancelledAt", &["stringValue"]),
];

/// Asserts that the Go package reads `fields` as a task: every field of its
/// struct is there with a type Go decodes into it, its time strings are
/// `""` or RFC 3339 (what Go parses), and since Go ignores every other
/// field (the Rust-only ones), the document cut down to Go's fields is a
/// valid task on its own.
pub fn assert_go_readable(fields: &Fields) {
    for (name, types) in GO_FIELDS {
        let value = fields
            .get(name)
            .unwrap_or_else(|| panic!("`{name}` is missing: Go writes and reads every field"));
        assert!(
            types.contains(&tag(value)),
            "`{name}` is {}, Go reads {types:?}",
            tag(value)
        );
    }
    for name in [
        "waitUntil",
        "leasedUntil",
        "createdAt",
        "doneAt",
        "cancelledAt",
        "occurrenceTimestamp",
    ] {
        let Some(ValueType::StringValue(s)) = &fields[name].value_type else {
            unreachable!("checked above");
        };
        assert!(
            s.is_empty() || DateTime::parse_from_rfc3339(s).is_ok(),
            "`{name}` = {s:?} is no RFC 3339 time"
        );
    }
    let go_view: Fields = fields
        .iter()
        .filter(|(name, _)| GO_FIELDS.iter().any(|(go, _)| go == name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    if let Err(e) = oncetask_firestore::decode_task(&go_view) {
        panic!("Go's fields alone are no task: {e}");
    }
}

/// A fixture of `tests/fixtures`: the raw JSON and its fields.
pub fn fixture(name: &str) -> (Json, Fields) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: Json = serde_json::from_str(&text).unwrap();
    let fields = rest_fields(&doc["fields"]);
    (doc, fields)
}

/// An RFC 3339 time.
pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The fields of document `id` of `collection`, as stored (read directly,
/// not through the store).
pub async fn raw(db: &FirestoreDb, collection: &str, id: &str) -> Fields {
    use firestore::gcloud_sdk::google::firestore::v1::{
        BatchGetDocumentsRequest, batch_get_documents_response,
    };
    let name = format!("{}/{collection}/{id}", db.get_documents_path());
    let mut stream = db
        .client()
        .get()
        .batch_get_documents(firestore::gcloud_sdk::tonic::Request::new(
            BatchGetDocumentsRequest {
                database: db.get_database_path().clone(),
                documents: vec![name],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    while let Some(r) = stream.message().await.unwrap() {
        if let Some(batch_get_documents_response::Result::Found(d)) = r.result {
            return d.fields;
        }
    }
    panic!("{collection}/{id} not found");
}

/// The emulator's project; any id works there.
pub const PROJECT: &str = "demo-oncetask";

/// The emulator's address; fails the test, saying what to start, when unset.
pub fn emulator_host() -> String {
    std::env::var("FIRESTORE_EMULATOR_HOST").unwrap_or_else(|_| {
        panic!(
            "FIRESTORE_EMULATOR_HOST is not set: run the tests with scripts/test, which starts \
             the Firestore emulator (needs Java 17 and the Debian package \
             google-cloud-cli-firestore-emulator)"
        )
    })
}

/// A new client of the emulator (each call its own connection).
pub async fn db() -> FirestoreDb {
    emulator_host();
    FirestoreDb::new(PROJECT)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the Firestore emulator: {e}"))
}

/// A fresh collection (named `prefix` and a random suffix) holding the
/// given Go fixtures of `tests/fixtures`, as Go wrote them.
pub async fn seeded(prefix: &str, files: &[&str]) -> (FirestoreDb, FirestoreStore) {
    seeded_with(prefix, files.iter().map(|f| fixture(f).1).collect()).await
}

/// A fresh collection (named `prefix` and a random suffix) holding the
/// given documents, written directly (keyed by their `id` field).
pub async fn seeded_with(prefix: &str, documents: Vec<Fields>) -> (FirestoreDb, FirestoreStore) {
    use firestore::gcloud_sdk::google::firestore::v1::{CommitRequest, Document, Write, write};
    let db = db().await;
    let collection = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
    let writes: Vec<Write> = documents
        .into_iter()
        .map(|fields| {
            let Some(ValueType::StringValue(id)) = fields["id"].value_type.clone() else {
                panic!("no id: {fields:?}");
            };
            Write {
                operation: Some(write::Operation::Update(Document {
                    name: format!("{}/{collection}/{id}", db.get_documents_path()),
                    fields,
                    ..Default::default()
                })),
                ..Default::default()
            }
        })
        .collect();
    if !writes.is_empty() {
        db.client()
            .get()
            .commit(firestore::gcloud_sdk::tonic::Request::new(CommitRequest {
                database: db.get_database_path().clone(),
                writes,
                ..Default::default()
            }))
            .await
            .expect("seed");
    }
    let store = FirestoreStore::with_collection(db.clone(), collection);
    (db, store)
}

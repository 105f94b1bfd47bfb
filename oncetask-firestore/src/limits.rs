//! Cloud Firestore's size limits, checked before a request is sent: the
//! emulator enforces none of them, production refuses what breaks them.
//!
//! * A document holds at most [`MAX_DOCUMENT_BYTES`], counted by Firestore's
//!   storage-size rules ([`document_size`]). A task whose document would be
//!   larger is refused at `create` ([`oncetask_core::StoreError::Unencodable`],
//!   nothing stored). A handler result or error history that would push a
//!   stored task past the limit is shortened by [`fit_outcome`]'s rule, so
//!   the outcome is still recorded.
//! * A request holds at most 10 MiB (and a gRPC message 4 MiB by default,
//!   as on the emulator): bulk writes are split into requests of at most
//!   [`REQUEST_BUDGET`] encoded bytes (and 500 writes).

use oncetask_core::Task;
use serde_json::{Value as Json, json};

use crate::document::Fields;
use firestore::gcloud_sdk::google::firestore::v1::Value;
use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;

/// Firestore's limit on one document's storage size (1 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 1_048_576;

/// Encoded bytes of writes one BatchWrite request carries at most, 3.5 MiB:
/// Firestore refuses requests over 10 MiB, and gRPC servers refuse messages
/// over 4 MiB by default (the emulator does). One document (at most 1 MiB)
/// always fits; billing counts documents, not requests.
pub const REQUEST_BUDGET: usize = 3584 * 1024;

/// Characters of a handler result's JSON text kept when it is too large to store.
pub const RESULT_PREFIX_CHARS: usize = 1024;

/// Characters of one error message kept when the history is too large to store.
pub const ERROR_MESSAGE_CHARS: usize = 1024;

/// The storage size of a document named `name` (a full resource name) with
/// `fields`, by Firestore's rules: the name's collection and document ids
/// (bytes + 1 each) plus 16, every field name (bytes + 1) and value, plus 32.
pub fn document_size(name: &str, fields: &Fields) -> usize {
    name_size(name) + fields_size(fields) + 32
}

/// The storage size of `fields` (names and values).
pub fn fields_size(fields: &Fields) -> usize {
    fields
        .iter()
        .map(|(k, v)| k.len() + 1 + value_size(v))
        .sum()
}

fn name_size(name: &str) -> usize {
    let path = name.split_once("/documents/").map_or(name, |(_, p)| p);
    path.split('/').map(|s| s.len() + 1).sum::<usize>() + 16
}

/// The storage size of one value: strings and bytes by length (+1 for
/// strings), numbers and times 8, booleans and null 1, maps and arrays the
/// sum of their parts.
pub fn value_size(v: &Value) -> usize {
    match &v.value_type {
        None | Some(ValueType::NullValue(_)) | Some(ValueType::BooleanValue(_)) => 1,
        Some(ValueType::IntegerValue(_))
        | Some(ValueType::DoubleValue(_))
        | Some(ValueType::TimestampValue(_)) => 8,
        Some(ValueType::GeoPointValue(_)) => 16,
        Some(ValueType::StringValue(s)) => s.len() + 1,
        Some(ValueType::BytesValue(b)) => b.len(),
        Some(ValueType::ReferenceValue(r)) => name_size(r),
        Some(ValueType::ArrayValue(a)) => a.values.iter().map(value_size).sum(),
        Some(ValueType::MapValue(m)) => fields_size(&m.fields),
        Some(_) => 8,
    }
}

/// The storage size of a JSON object once stored as a map.
pub fn json_object_size(o: &oncetask_core::JsonObject) -> usize {
    o.iter().map(|(k, v)| k.len() + 1 + json_size(v)).sum()
}

/// The storage size of a JSON value once stored (as `value_size` counts it),
/// without encoding it.
pub fn json_size(j: &Json) -> usize {
    match j {
        Json::Null | Json::Bool(_) => 1,
        Json::Number(_) => 8,
        Json::String(s) => s.len() + 1,
        Json::Array(items) => items.iter().map(json_size).sum(),
        Json::Object(map) => json_object_size(map),
    }
}

/// Shortens what an outcome adds to `task` until `size(task)` fits in
/// [`MAX_DOCUMENT_BYTES`], by this rule, one step at a time:
///
/// 1. a `result` is replaced by `{"oncetaskTruncated": {"bytes": N,
///    "prefix": "<its first 1,024 characters of JSON text>"}}`;
/// 2. each error message is cut to its first 1,024 characters, followed by
///    `… [truncated from N bytes]`;
/// 3. the oldest errors are dropped (the newest is kept).
///
/// Returns whether anything was shortened. A task still too large after
/// that (its payload alone is) is left for Firestore to refuse.
pub fn fit_outcome(task: &mut Task, size: impl Fn(&Task) -> usize) -> bool {
    if size(task) <= MAX_DOCUMENT_BYTES {
        return false;
    }
    if let Some(result) = task.result.take() {
        let text = result.to_string();
        task.result = Some(json!({
            "oncetaskTruncated": {
                "bytes": text.len(),
                "prefix": text.chars().take(RESULT_PREFIX_CHARS).collect::<String>(),
            }
        }));
        if size(task) <= MAX_DOCUMENT_BYTES {
            return true;
        }
    }
    for e in &mut task.errors {
        if e.error.chars().count() > ERROR_MESSAGE_CHARS {
            let kept: String = e.error.chars().take(ERROR_MESSAGE_CHARS).collect();
            e.error = format!("{kept}… [truncated from {} bytes]", e.error.len());
        }
    }
    while task.errors.len() > 1 && size(task) > MAX_DOCUMENT_BYTES {
        task.errors.remove(0);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use oncetask_core::AttemptError;

    fn task() -> Task {
        Task::new("t", "k", "e", chrono::Utc::now())
    }

    /// Firestore's documented example: the document `users/jeff/tasks/my_task_id`
    /// with fields `"type": "Personal"`, `"done": false`, `"priority": 1`,
    /// `"description": "Learn Cloud Firestore"` is 147 bytes.
    #[test]
    fn document_size_follows_the_published_rules() {
        let s = |v: &str| Value {
            value_type: Some(ValueType::StringValue(v.into())),
        };
        let fields = Fields::from([
            ("type".to_owned(), s("Personal")),
            (
                "done".to_owned(),
                Value {
                    value_type: Some(ValueType::BooleanValue(false)),
                },
            ),
            (
                "priority".to_owned(),
                Value {
                    value_type: Some(ValueType::IntegerValue(1)),
                },
            ),
            ("description".to_owned(), s("Learn Cloud Firestore")),
        ]);
        let name = "projects/p/databases/(default)/documents/users/jeff/tasks/my_task_id";
        assert_eq!(document_size(name, &fields), 147);
    }

    #[test]
    fn json_sizes_match_the_stored_value_sizes() {
        let j = json!({"a": [1, 2.5, "xy", null, true], "b": {"c": "d"}});
        let v = crate::document::json_to_value(&j);
        assert_eq!(json_size(&j), value_size(&v));
    }

    #[test]
    fn a_small_outcome_is_left_alone() {
        let mut t = task();
        t.result = Some(json!({"ok": true}));
        assert!(!fit_outcome(&mut t, |_| 100));
        assert_eq!(t.result, Some(json!({"ok": true})));
    }

    #[test]
    fn an_oversized_result_becomes_a_marker_with_its_size_and_prefix() {
        let mut t = task();
        let big = "x".repeat(2 * MAX_DOCUMENT_BYTES);
        t.result = Some(json!(big));
        let size = |t: &Task| t.result.as_ref().map_or(0, json_size);
        assert!(fit_outcome(&mut t, size));
        let marker = &t.result.as_ref().expect("kept")["oncetaskTruncated"];
        assert_eq!(marker["bytes"], json!(big.len() + 2));
        assert_eq!(
            marker["prefix"].as_str().map(|p| p.chars().count()),
            Some(RESULT_PREFIX_CHARS)
        );
        assert!(size(&t) <= MAX_DOCUMENT_BYTES);
    }

    #[test]
    fn an_oversized_history_keeps_the_newest_error_shortened() {
        let mut t = task();
        let at = chrono::Utc::now();
        for i in 0..5 {
            t.errors.push(AttemptError {
                at,
                error: format!("{i}{}", "e".repeat(600_000)),
            });
        }
        let size = |t: &Task| t.errors.iter().map(|e| e.error.len()).sum::<usize>() * 400;
        assert!(fit_outcome(&mut t, size));
        assert!(size(&t) <= MAX_DOCUMENT_BYTES, "{}", size(&t));
        let last = t.errors.last().expect("the newest error stays");
        assert!(last.error.starts_with('4'));
        assert!(last.error.ends_with("[truncated from 600001 bytes]"));
    }
}

//! Building a new task from user data (docs/semantics.md S3.3), with validation.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::data::{TaskData, TaskKind};
use crate::error::Error;
use crate::task::{Task, truncate_to_millis};

/// What [`Manager::create`](crate::Manager::create) did with a task: the
/// one-task form of [`BulkReport`](crate::manager::BulkReport)'s
/// `succeeded` and `skipped`.
///
/// ```
/// use oncetask_core::CreateStatus;
/// assert!(CreateStatus::Created.is_created());
/// assert!(!CreateStatus::AlreadyExists.is_created());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateStatus {
    /// Stored now.
    Created,
    /// A task with this id exists in this environment: nothing changed
    /// (creating is idempotent).
    AlreadyExists,
}

impl CreateStatus {
    /// Whether this call stored the task.
    pub fn is_created(self) -> bool {
        self == CreateStatus::Created
    }
}

impl Task {
    /// Builds a new pending task from `data` for environment `env`.
    ///
    /// Fails, with nothing stored, on an empty id, data that is not a JSON
    /// object (a unit struct counts as the empty object), an invalid
    /// recurrence, a recurrence combined with a scheduled time, a priority
    /// outside [`PRIORITY_RANGE`](crate::PRIORITY_RANGE), or max attempts
    /// of 0.
    /// A generator's first `wait_until` is its first slot at or after DTSTART.
    pub fn from_data<D: TaskData + ?Sized>(
        data: &D,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<Task, Error> {
        let id = data.idempotent_id();
        if id.trim().is_empty() {
            return Err(Error::EmptyId);
        }
        let payload = match serde_json::to_value(data) {
            Ok(Value::Object(map)) => map,
            // A unit struct carries no data: store an empty object, as Go
            // does for a struct without fields.
            Ok(Value::Null) => serde_json::Map::new(),
            Ok(other) => {
                return Err(Error::InvalidData {
                    id,
                    reason: format!("got {}", json_type_name(&other)),
                });
            }
            Err(e) => {
                return Err(Error::InvalidData {
                    id,
                    reason: e.to_string(),
                });
            }
        };
        if let Some(depth) = too_deep(&payload) {
            return Err(Error::InvalidData {
                id,
                reason: format!(
                    "nested {depth} levels deep; at most {MAX_DATA_DEPTH} can be read back"
                ),
            });
        }
        let priority = data.priority();
        if !crate::task::PRIORITY_RANGE.contains(&priority) {
            return Err(Error::InvalidPriority { id, priority });
        }
        let max_attempts = data.max_attempts();
        if max_attempts == Some(0) {
            return Err(Error::InvalidMaxAttempts { id });
        }
        let recurrence = data
            .recurrence()
            .map_err(|source| Error::InvalidRecurrence {
                id: id.clone(),
                source,
            })?;
        let scheduled = data.scheduled_at();
        let wait_until = match (&recurrence, scheduled) {
            (Some(_), Some(_)) => return Err(Error::ScheduleConflict { id }),
            (Some(rec), None) => {
                let schedule = rec.schedule().map_err(|source| Error::InvalidRecurrence {
                    id: id.clone(),
                    source,
                })?;
                let first = schedule.first().ok_or_else(|| Error::InvalidRecurrence {
                    id: id.clone(),
                    source: crate::recurrence::RecurrenceError::NoOccurrences,
                })?;
                Some(first)
            }
            (None, Some(at)) => Some(truncate_to_millis(at)),
            (None, None) => None,
        };
        let kind = data.kind().as_str().to_owned();
        Ok(Task {
            data: payload,
            resource_key: data.resource_key().filter(|k| !k.is_empty()),
            wait_until,
            recurrence,
            priority,
            max_attempts,
            ..Task::new(id, kind, env, now)
        })
    }
}

/// Deepest nesting of arrays and objects a payload may have, the payload
/// object itself being level 1. Backends decode stored JSON with
/// `serde_json`, which refuses more than 128 levels in a document (and a
/// backend may wrap the payload in a document of its own): a deeper payload
/// would be stored and then never read back, a poison pill.
pub const MAX_DATA_DEPTH: usize = 100;

/// The depth of `payload` if it exceeds [`MAX_DATA_DEPTH`].
fn too_deep(payload: &serde_json::Map<String, Value>) -> Option<usize> {
    deeper_than_limit(payload.values(), 2)
}

/// The depth of `value` (an array or object at the top is level 1) if it
/// exceeds [`MAX_DATA_DEPTH`]: a handler's result is stored and read back
/// like a payload.
pub(crate) fn value_too_deep(value: &Value) -> Option<usize> {
    deeper_than_limit(std::iter::once(value), 1)
}

/// The first depth beyond [`MAX_DATA_DEPTH`] met under `values`, each at
/// `depth`. Iterative, so a hostile value cannot overflow the stack here.
fn deeper_than_limit<'a>(values: impl Iterator<Item = &'a Value>, depth: usize) -> Option<usize> {
    let mut stack: Vec<(&Value, usize)> = values.map(|v| (v, depth)).collect();
    while let Some((value, depth)) = stack.pop() {
        let nested = matches!(value, Value::Array(_) | Value::Object(_));
        if nested && depth > MAX_DATA_DEPTH {
            return Some(depth);
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    None
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{MAX_DATA_DEPTH, too_deep, value_too_deep};

    /// A payload `{"n": {"n": ... }}` nested `levels` deep in all.
    fn payload(levels: usize) -> serde_json::Map<String, Value> {
        let inner = (2..levels).fold(json!({}), |inner, _| json!({ "n": inner }));
        let mut map = serde_json::Map::new();
        if levels > 1 {
            map.insert("n".into(), inner);
        }
        map
    }

    #[test]
    fn payloads_up_to_the_depth_limit_are_accepted_deeper_ones_are_not() {
        assert_eq!(too_deep(&payload(MAX_DATA_DEPTH)), None);
        assert_eq!(
            too_deep(&payload(MAX_DATA_DEPTH + 1)),
            Some(MAX_DATA_DEPTH + 1)
        );
        let mut wide = payload(1);
        wide.insert("list".into(), json!([[1, 2], {"a": [3]}, "x"]));
        assert_eq!(too_deep(&wide), None);
    }

    #[test]
    fn a_result_counts_its_own_top_level_as_level_one() {
        let nested = |levels: usize| (1..levels).fold(json!([]), |inner, _| json!([inner]));
        assert_eq!(value_too_deep(&nested(MAX_DATA_DEPTH)), None);
        assert_eq!(
            value_too_deep(&nested(MAX_DATA_DEPTH + 1)),
            Some(MAX_DATA_DEPTH + 1)
        );
        assert_eq!(value_too_deep(&json!("flat")), None);
    }
}

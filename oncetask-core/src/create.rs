//! Building a new task from user data (behavior.md §3.3), with validation.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::data::{TaskData, TaskKind};
use crate::error::Error;
use crate::task::{Task, truncate_to_millis};

impl Task {
    /// Builds a new pending task from `data` for environment `env`.
    ///
    /// Fails, with nothing stored, on an empty id, data that is not a JSON
    /// object (a unit struct counts as the empty object), an invalid
    /// recurrence, or a recurrence combined with a scheduled time.
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
        let recurrence = data.recurrence();
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
            ..Task::new(id, kind, env, now)
        })
    }
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

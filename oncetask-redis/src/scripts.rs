//! The server-side Lua scripts and helpers to read their replies.
//!
//! Every script is a [`redis::Script`]: invoked with `EVALSHA`, and sent
//! again with `EVAL` when the server does not know it (after a restart or a
//! `SCRIPT FLUSH`). Each runs atomically and touches only keys of one env's
//! hash slot (the registry script touches its one key).

use std::borrow::Cow;
use std::sync::LazyLock;

use oncetask_core::StoreError;
use redis::{Script, Value};

use crate::doc::Fields;

const LIB: &str = include_str!("lua/lib.lua");

/// A script: the shared helpers, then `body` run as a function, then the
/// index writes the body deferred (`flush` in lib.lua). Redis does not roll
/// back a script that fails half-way, so the deferred writes of the items
/// done before an error are still made (as they were when every write was
/// immediate), then the error is raised again.
fn with_lib(body: &str) -> Script {
    Script::new(&format!(
        "{LIB}\nlocal function body()\n{body}\nend\n\
         local ok, result = pcall(body)\nflush()\n\
         if not ok then error(result, 0) end\nreturn result\n"
    ))
}

/// All scripts, compiled (hashed) once.
pub(crate) struct Scripts {
    pub(crate) claim: Script,
    pub(crate) swap: Script,
    pub(crate) create: Script,
    pub(crate) fence: Script,
    pub(crate) delete: Script,
    pub(crate) quarantine: Script,
    pub(crate) insert_raw: Script,
    pub(crate) count: Script,
    pub(crate) list: Script,
    pub(crate) generators: Script,
    pub(crate) undecodable: Script,
    pub(crate) backfill: Script,
    pub(crate) finished: Script,
    pub(crate) pause: Script,
    pub(crate) rate: Script,
    pub(crate) stats: Script,
}

/// Deletes a registry entry only if it still holds the given value. Sent
/// with plain `EVAL` (it is tiny) so that a pipeline can carry many.
pub(crate) const REGISTRY_RELEASE: &str = include_str!("lua/registry_release.lua");

/// The scripts of every store.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    claim: with_lib(include_str!("lua/claim.lua")),
    swap: with_lib(include_str!("lua/swap.lua")),
    create: with_lib(include_str!("lua/create.lua")),
    fence: with_lib(include_str!("lua/fence.lua")),
    delete: with_lib(include_str!("lua/delete.lua")),
    quarantine: with_lib(include_str!("lua/quarantine.lua")),
    insert_raw: with_lib(include_str!("lua/insert_raw.lua")),
    count: with_lib(include_str!("lua/count.lua")),
    list: with_lib(include_str!("lua/list.lua")),
    generators: with_lib(include_str!("lua/generators.lua")),
    undecodable: with_lib(include_str!("lua/undecodable.lua")),
    backfill: with_lib(include_str!("lua/backfill.lua")),
    finished: with_lib(include_str!("lua/finished.lua")),
    pause: with_lib(include_str!("lua/pause.lua")),
    rate: with_lib(include_str!("lua/rate.lua")),
    stats: with_lib(include_str!("lua/stats.lua")),
});

/// Maps a client error to the store's error type: connection problems are
/// [`StoreError::Unavailable`], everything else [`StoreError::Backend`].
pub(crate) fn redis_error(e: redis::RedisError) -> StoreError {
    if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
    {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::backend(e)
    }
}

/// A reply that does not have the shape a script promises.
pub(crate) fn unexpected(what: &str, value: &Value) -> StoreError {
    StoreError::backend(format!("unexpected reply to {what}: {value:?}"))
}

/// The elements of an array reply.
pub(crate) fn array(value: Value, what: &str) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected(what, &other)),
    }
}

/// The bytes of a string reply.
pub(crate) fn bytes(value: Value, what: &str) -> Result<Vec<u8>, StoreError> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Okay => Ok(b"OK".to_vec()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        other => Err(unexpected(what, &other)),
    }
}

/// A string reply as text (lossy for invalid UTF-8; only used for
/// script-made status strings and names this crate wrote).
pub(crate) fn string(value: Value, what: &str) -> Result<String, StoreError> {
    bytes(value, what).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// An optional string reply.
pub(crate) fn opt_string(value: Value, what: &str) -> Result<Option<String>, StoreError> {
    match value {
        Value::Nil => Ok(None),
        other => string(other, what).map(Some),
    }
}

/// A flat `field, value, ...` array (HGETALL) as a map.
pub(crate) fn fields(value: Value, what: &str) -> Result<Fields, StoreError> {
    match value {
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Ok((Cow::Owned(string(k, what)?), bytes(v, what)?)))
            .collect(),
        other => {
            let items = array(other, what)?;
            let mut out = Fields::with_capacity(items.len() / 2);
            let mut iter = items.into_iter();
            while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                out.insert(Cow::Owned(string(k, what)?), bytes(v, what)?);
            }
            Ok(out)
        }
    }
}

/// The values of an `HMGET` of `names` (absent fields are nil) as a map.
pub(crate) fn named_fields(
    names: &[&'static str],
    value: Value,
    what: &str,
) -> Result<Fields, StoreError> {
    let values = array(value, what)?;
    if values.len() != names.len() {
        return Err(StoreError::backend(format!(
            "unexpected reply to {what}: {} values for {} fields",
            values.len(),
            names.len()
        )));
    }
    let mut out = Fields::with_capacity(names.len());
    for (name, value) in names.iter().zip(values) {
        // A field the hash lacks is `false` inside Lua: nil over RESP2, a
        // boolean over RESP3.
        if !matches!(value, Value::Nil | Value::Boolean(false)) {
            out.insert(Cow::Borrowed(*name), bytes(value, what)?);
        }
    }
    Ok(out)
}

/// An integer reply (or a string holding one).
pub(crate) fn int(value: Value, what: &str) -> Result<i64, StoreError> {
    match value {
        Value::Int(n) => Ok(n),
        other => {
            let text = string(other, what)?;
            text.parse()
                .map_err(|_| StoreError::backend(format!("unexpected reply to {what}: {text:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_field_is_absent_over_resp2_and_resp3() {
        let reply = Value::Array(vec![
            Value::BulkString(b"1".to_vec()),
            Value::Nil,
            Value::Boolean(false),
        ]);
        let fields = named_fields(&["fmt", "bad", "done"], reply, "claim").expect("decodes");
        assert_eq!(fields.len(), 1);
        assert_eq!(fields.get("fmt").map(Vec::as_slice), Some(&b"1"[..]));
    }
}

//! Key names: how user-supplied names become Redis keys that never collide
//! and never break slot routing.
//!
//! Every key of one environment shares the hash tag `{e:<env>}`, so all of
//! them live in one hash slot and one script may touch them together, on a
//! single node as on Redis Cluster. The env and kind inside key names are
//! percent-encoded ([`encode`]): only `[A-Za-z0-9._-]` stay as they are, so
//! an encoded name contains no `{`, `}` or `:`. That keeps the tag exactly
//! where this module puts it (Redis takes the first `{` and the first `}`
//! after it) and makes the `:`-separated parts of a key unambiguous. Task
//! ids and resource keys are only ever the *last* part of a key: everything
//! before them is delimited, so they are used verbatim (readable in
//! `redis-cli`) without any risk of collision or of moving the key to
//! another slot.

use oncetask_core::StoreError;

/// Percent-encodes `name`: bytes outside `[A-Za-z0-9._-]` become `%XX`.
///
/// Injective (the `%` itself is encoded), and the result never contains
/// `{`, `}` or `:`.
pub(crate) fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`encode`]; `None` for text [`encode`] cannot produce.
pub(crate) fn decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks a user-chosen key prefix: it must not contain `{` or `}` (they
/// would move the hash tag and scatter an environment over many slots).
pub(crate) fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.contains(['{', '}']) {
        return Err(StoreError::InvalidConfig(format!(
            "invalid key prefix {prefix:?}: it must not contain '{{' or '}}' \
             (they would change the keys' hash slot)"
        )));
    }
    Ok(())
}

/// The names of one store's keys (one key prefix).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Result<Self, StoreError> {
        check_prefix(prefix)?;
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The id registry entry of `id` (`<prefix>:id:<id>`): which env holds
    /// the task. A key of its own, so ids are global across environments
    /// without putting every environment in one slot.
    pub(crate) fn registry(&self, id: &str) -> String {
        format!("{}:id:{id}", self.prefix)
    }

    /// The common start of every key of `env`: `<prefix>:{e:<env>}:`.
    pub(crate) fn env_base(&self, env: &str) -> String {
        format!("{}:{{e:{}}}:", self.prefix, encode(env))
    }

    /// A key of the env's slot used to route its scripts.
    pub(crate) fn env_route(&self, env: &str) -> String {
        format!("{}kinds", self.env_base(env))
    }

    /// The hash holding task `id` of `env`.
    pub(crate) fn task(&self, env: &str, id: &str) -> String {
        format!("{}t:{id}", self.env_base(env))
    }

    /// The pub/sub channel of `env` for new or freed work.
    pub(crate) fn channel(&self, env: &str) -> String {
        format!("{}events", self.env_base(env))
    }

    /// The pub/sub channel of `env` for changes that may have touched a
    /// task a worker holds (cancel, reset, delete).
    pub(crate) fn changes_channel(&self, env: &str) -> String {
        format!("{}changes", self.env_base(env))
    }

    /// The sorted set of due times of `env`/`kind`.
    pub(crate) fn due(&self, env: &str, kind: &str) -> String {
        format!("{}due:{}", self.env_base(env), encode(kind))
    }

    /// The finished index of `env`/`kind` for the terminal status named
    /// `status` (`completed`, `failed`, `cancelled`): full documents
    /// (`fin:<status>:<kind>`) or tombstones (`pr:<status>:<kind>`).
    pub(crate) fn finished(&self, env: &str, kind: &str, status: &str, tombstones: bool) -> String {
        let what = if tombstones { "pr" } else { "fin" };
        format!("{}{what}:{status}:{}", self.env_base(env), encode(kind))
    }

    /// The set of paused kinds of `env`.
    pub(crate) fn paused(&self, env: &str) -> String {
        format!("{}paused", self.env_base(env))
    }

    /// The rate limiter of `kind` (`rl:<kind>`), or of one of its resource
    /// keys (`rlk:<kind>:<key>`), without the env base the scripts prepend.
    pub(crate) fn limiter_suffix(kind: &str, resource_key: Option<&str>) -> String {
        match resource_key {
            None => format!("rl:{}", encode(kind)),
            Some(key) => format!("rlk:{}:{key}", encode(kind)),
        }
    }

    /// The listing index (creation order) a filter reads: the resource
    /// key's, else the kind's, else the env's.
    pub(crate) fn listing(&self, env: &str, kind: Option<&str>, key: Option<&str>) -> String {
        let base = self.env_base(env);
        match (key, kind) {
            (Some(key), _) => format!("{base}cr:{key}"),
            (None, Some(kind)) => format!("{base}ca:{}", encode(kind)),
            (None, None) => format!("{base}ca"),
        }
    }
}

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM of its hash tag, mod
/// 16384), as `CLUSTER KEYSLOT` computes it. Used by the tests that check
/// every key of an env shares one slot.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(tagged) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_plain_names_and_escapes_the_rest() {
        assert_eq!(encode("prod-1.eu_west"), "prod-1.eu_west");
        assert_eq!(encode("a:b{c}d e%"), "a%3Ab%7Bc%7Dd%20e%25");
        assert_eq!(encode("ü"), "%C3%BC");
        assert_eq!(encode(""), "");
        for name in ["a:b{c}d e%", "ü", "", "%%41"] {
            assert_eq!(decode(&encode(name)).as_deref(), Some(name));
        }
    }

    #[test]
    fn encoding_is_injective_on_tricky_pairs() {
        let names = ["a%3A", "a:", "a%253A", "%", "%25", "", "{", "}", "{}"];
        let encoded: std::collections::BTreeSet<String> = names.iter().map(|n| encode(n)).collect();
        assert_eq!(encoded.len(), names.len());
    }

    #[test]
    fn every_key_of_an_env_shares_the_env_slot_whatever_the_names() {
        let keys = Keys::new("app:oncetask").expect("a valid prefix");
        for env in ["prod", "{x}", "a}b{c", "", "ünï code:}"] {
            let slot = key_slot(keys.env_route(env).as_bytes());
            for other in [
                keys.task(env, "{other}"),
                keys.task(env, "}{"),
                keys.channel(env),
                keys.due(env, "{kind}"),
                keys.listing(env, Some("k{"), None),
                keys.listing(env, None, Some("{rk}")),
                keys.finished(env, "{k}", "completed", true),
                keys.paused(env),
                format!(
                    "{}{}",
                    keys.env_base(env),
                    Keys::limiter_suffix("k}", Some("{r"))
                ),
            ] {
                assert_eq!(key_slot(other.as_bytes()), slot, "{other}");
            }
        }
    }

    #[test]
    fn key_slot_matches_known_redis_values() {
        // Values from `CLUSTER KEYSLOT` on a real server.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"123456789"), 12739);
    }

    #[test]
    fn a_prefix_with_braces_is_rejected() {
        assert!(Keys::new("a{b").is_err());
        assert!(Keys::new("a}b").is_err());
        assert!(Keys::new("app:tasks").is_ok());
    }
}

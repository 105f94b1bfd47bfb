//! Small helpers: times and durations for people, form and query
//! parameters, links.

use chrono::{DateTime, Utc};
use oncetask::TaskStatus;

pub(crate) use oncetask::display::{duration, relative, time, time_and_relative};

/// At most `max` characters of `s`, with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// Decoded `application/x-www-form-urlencoded` pairs (a query string or a
/// form body), repeated keys kept.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `input`.
    pub(crate) fn parse(input: &[u8]) -> Self {
        Self(
            form_urlencoded::parse(input)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `key`, if any.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `key`, trimmed, unless empty.
    pub(crate) fn non_empty(&self, key: &str) -> Option<String> {
        self.get(key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// Every value of `key`, in order.
    pub(crate) fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A query string from pairs (URL-encoded), with its `?` when not empty.
pub(crate) fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    let q = serializer.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}

/// A status name ([`TaskStatus`]'s `FromStr`: case-insensitive, `-` and
/// `_` ignored).
pub(crate) fn parse_status(s: &str) -> Option<TaskStatus> {
    s.parse().ok()
}

/// A time as RFC 3339, or as an HTML `datetime-local` value
/// (`2025-01-06T09:00[:00]`, taken as UTC).
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
}

pub(crate) use oncetask::manager::parse_period;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hé", 2), "hé");
    }

    #[test]
    fn params_keep_repeated_keys_and_queries_encode() {
        let p = Params::parse(b"id=a&id=b%26c&kind=+x+");
        assert_eq!(p.all("id"), vec!["a", "b&c"]);
        assert_eq!(p.non_empty("kind").as_deref(), Some("x"));
        assert_eq!(query([("k", "a&b c")]), "?k=a%26b+c");
        assert_eq!(query([]), "");
    }

    #[test]
    fn times_parse_in_both_forms() {
        let t = parse_time("2025-01-06T09:00").expect("datetime-local");
        assert_eq!(time(t), "2025-01-06T09:00:00Z");
        assert_eq!(
            parse_time("2025-01-06T09:00:00+01:00").map(time).as_deref(),
            Some("2025-01-06T08:00:00Z")
        );
        assert!(parse_time("yesterday").is_none());
    }
}

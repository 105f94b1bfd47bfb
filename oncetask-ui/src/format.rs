//! Small helpers: times and durations for people, form and query
//! parameters, links.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use oncetask::TaskStatus;

/// A duration as its two largest units: `45s`, `3m 12s`, `2h 5m`, `3d 4h`.
pub(crate) fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m {}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h {}m", s / 3_600, (s % 3_600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3_600),
    }
}

/// `t` relative to `now`: `3m 12s ago`, `in 5s`.
pub(crate) fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    match (now - t).to_std() {
        Ok(ago) => format!("{} ago", duration(ago)),
        Err(_) => format!("in {}", duration((t - now).to_std().unwrap_or_default())),
    }
}

/// `t` as RFC 3339 to the millisecond.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `t` as RFC 3339 and relative to `now`.
pub(crate) fn time_and_relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ({})", time(t), relative(t, now))
}

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

/// A status name, case-insensitive; `-` and `_` are ignored.
pub(crate) fn parse_status(s: &str) -> Option<TaskStatus> {
    let wanted: String = s.chars().filter(|c| *c != '-' && *c != '_').collect();
    TaskStatus::ALL
        .into_iter()
        .find(|status| status.as_str().eq_ignore_ascii_case(&wanted))
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

/// A period as a number and a unit: `90s`, `15m`, `12h`, `7d` (or a bare
/// number of seconds), as the CLI's `prune` takes it.
pub(crate) fn parse_period(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 30s, 15m, 12h or 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use s, m, h or d)")),
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_truncation() {
        assert_eq!(duration(Duration::from_secs(59)), "59s");
        assert_eq!(duration(Duration::from_secs(192)), "3m 12s");
        assert_eq!(duration(Duration::from_secs(7_500)), "2h 5m");
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
        assert_eq!(time(t), "2025-01-06T09:00:00.000Z");
        assert_eq!(
            parse_time("2025-01-06T09:00:00+01:00").map(time).as_deref(),
            Some("2025-01-06T08:00:00.000Z")
        );
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn periods_take_a_unit() {
        assert_eq!(parse_period("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_period("90"), Ok(Duration::from_secs(90)));
        assert!(parse_period("7w").is_err());
        assert!(parse_period("").is_err());
    }
}

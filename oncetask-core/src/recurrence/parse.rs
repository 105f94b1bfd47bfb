//! Rule text: Go-compatible checks on top of the `rrule` crate's parser.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rrule::{RRule, Unvalidated};

use super::RecurrenceError;

/// A rule with `DTSTART` and `UNTIL` taken out of the text.
pub(super) struct ParsedRule {
    pub(super) rule: RRule<Unvalidated>,
    pub(super) until: Option<DateTime<Utc>>,
}

/// Rule parts handed to the `rrule` parser as they are.
const PASSTHROUGH_KEYS: [&str; 14] = [
    "FREQ",
    "INTERVAL",
    "COUNT",
    "WKST",
    "BYSETPOS",
    "BYMONTH",
    "BYMONTHDAY",
    "BYYEARDAY",
    "BYWEEKNO",
    "BYDAY",
    "BYWEEKDAY",
    "BYHOUR",
    "BYMINUTE",
    "BYSECOND",
];

/// Parses the rule text with Go's rules on top of `rrule`'s parser: upper-case
/// keys only, `DTSTART` checked and dropped, `UNTIL` read as UTC.
pub(super) fn parse_rule(raw: &str) -> Result<ParsedRule, RecurrenceError> {
    let invalid = |reason: String| RecurrenceError::InvalidRule {
        rule: raw.to_owned(),
        reason,
    };
    let trimmed = raw.trim();
    let body = trimmed.strip_prefix("RRULE:").unwrap_or(trimmed);
    if body.chars().any(char::is_whitespace) {
        return Err(invalid("unexpected whitespace".to_owned()));
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut kept: Vec<&str> = Vec::new();
    let mut until = None;
    for part in body.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            return Err(invalid(format!(
                "wrong format {part:?}, expected KEY=VALUE"
            )));
        };
        if seen.contains(&key) {
            return Err(invalid(format!("duplicate RRULE property {key:?}")));
        }
        seen.push(key);
        match key {
            "DTSTART" => {
                parse_ical_utc(value)
                    .ok_or_else(|| invalid(format!("bad DTSTART time format {value:?}")))?;
            }
            "UNTIL" => {
                until = Some(
                    parse_ical_utc(value)
                        .ok_or_else(|| invalid(format!("bad UNTIL time format {value:?}")))?,
                );
            }
            "BYEASTER" => return Err(invalid("BYEASTER is not supported".to_owned())),
            k if PASSTHROUGH_KEYS.contains(&k) => kept.push(part),
            _ => return Err(invalid(format!("unknown RRULE property {key:?}"))),
        }
    }
    let rule =
        RRule::<Unvalidated>::from_str(&kept.join(";")).map_err(|e| invalid(e.to_string()))?;
    if rule.get_interval() == 0 {
        return Err(invalid("INTERVAL must be a positive integer".to_owned()));
    }
    Ok(ParsedRule { rule, until })
}

/// Reads `YYYYMMDD`, `YYYYMMDDTHHMMSS` or `YYYYMMDDTHHMMSSZ`, all as UTC
/// (Go's rrule reads a floating UNTIL as UTC).
fn parse_ical_utc(value: &str) -> Option<DateTime<Utc>> {
    let bytes = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    let naive = match bytes.len() {
        8 if digits(0..8) => NaiveDate::parse_from_str(value, "%Y%m%d")
            .ok()?
            .and_hms_opt(0, 0, 0)?,
        15 | 16
            if digits(0..8)
                && bytes[8] == b'T'
                && digits(9..15)
                && (bytes.len() == 15 || bytes[15] == b'Z') =>
        {
            NaiveDateTime::parse_from_str(&value[..15], "%Y%m%dT%H%M%S").ok()?
        }
        _ => return None,
    };
    Some(naive.and_utc())
}

#[cfg(test)]
mod tests {
    use crate::recurrence::test_support::{sched, utc};
    use crate::recurrence::{Recurrence, RecurrenceError};

    // ---- semantics

    #[test]
    fn until_is_read_as_utc_and_honoured() {
        let s = sched(
            "FREQ=DAILY;UNTIL=20250103T090000",
            "2025-01-01T09:00:00+02:00",
        );
        assert_eq!(
            s.next_after(utc("2025-01-02T07:00:00Z")),
            Some(utc("2025-01-03T07:00:00Z"))
        );
        assert_eq!(s.next_after(utc("2025-01-03T07:00:00Z")), None);
        let s = sched("FREQ=DAILY;UNTIL=20250103T090000Z", "2025-01-01T10:00:00Z");
        assert_eq!(s.next_after(utc("2025-01-02T10:00:00Z")), None);
        let s = sched("FREQ=DAILY;UNTIL=20250103", "2024-12-30T00:00:00Z");
        assert_eq!(
            s.next_after(utc("2025-01-02T00:00:00Z")),
            Some(utc("2025-01-03T00:00:00Z"))
        );
        assert_eq!(s.next_after(utc("2025-01-03T00:00:00Z")), None);
        // UNTIL in an IANA zone is an instant too.
        let rec = Recurrence::new(
            "FREQ=DAILY;UNTIL=20250702T070000Z",
            "2025-06-30T09:00:00+02:00",
        )
        .expect("valid")
        .in_timezone("Europe/Berlin")
        .expect("zone");
        let s = rec.schedule().expect("schedule");
        assert_eq!(
            s.next_after(utc("2025-07-01T07:00:00Z")),
            Some(utc("2025-07-02T07:00:00Z"))
        );
        assert_eq!(s.next_after(utc("2025-07-02T07:00:00Z")), None);
    }

    #[test]
    fn rule_text_follows_go() {
        let s = sched("RRULE:FREQ=DAILY", "2025-01-01T09:00:00Z");
        assert_eq!(s.first(), Some(utc("2025-01-01T09:00:00Z")));
        // A DTSTART part is overridden by the field.
        let s = sched(
            "FREQ=DAILY;DTSTART=20200101T000000Z",
            "2025-01-01T09:00:00Z",
        );
        assert_eq!(s.first(), Some(utc("2025-01-01T09:00:00Z")));
        for bad in [
            "freq=daily",
            "FREQ=DAILY;DTSTART=yesterday",
            "FREQ=DAILY;UNTIL=soon",
            "FREQ=DAILY;INTERVAL=0",
            "FREQ=DAILY;BYEASTER=0",
            "FREQ=DAILY;FREQ=WEEKLY",
            "FREQ=DAILY;TZID=UTC",
            "FREQ=DAILY;BYHOUR",
            "FREQ=DAILY; BYHOUR=1",
            "FREQ=FORTNIGHTLY",
            "INTERVAL=2",
            "FREQ=WEEKLY;BYMONTHDAY=1",
            "FREQ=DAILY;BYHOUR=24",
            "FREQ=DAILY;UNTIL=20200101T000000Z",
        ] {
            let err = Recurrence::new(bad, "2025-01-01T09:00:00Z").expect_err("must fail");
            assert!(
                matches!(err, RecurrenceError::InvalidRule { .. }),
                "{bad}: {err:?}"
            );
        }
        let err = Recurrence::new("freq=daily", "2025-01-01T09:00:00Z").expect_err("must fail");
        assert!(err.to_string().contains("unknown RRULE property"), "{err}");
    }
}

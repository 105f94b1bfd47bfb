//! Recurrence: RFC 5545 RRULE schedules for generator tasks (docs/semantics.md S9).
//!
//! A [`Recurrence`] is the stored description (rule, DTSTART, EXDATEs and an
//! optional IANA zone); [`Recurrence::schedule`] validates it into a
//! [`Schedule`], which answers the two questions the engine asks: the first
//! slot ([`Schedule::first`]) and the next slot strictly after an instant
//! ([`Schedule::next_after`]). Rule expansion is done by the `rrule` crate,
//! whose semantics follow python-dateutil like the Go library did.
//!
//! # Semantics
//!
//! * **Rule text.** `FREQ` is required; keys are upper case (`freq=daily` is
//!   rejected as an unknown property, as in Go); a leading `RRULE:` is
//!   accepted; a `DTSTART=` part is checked and then ignored in favour of
//!   [`Recurrence::dtstart`]; `UNTIL` without `Z` (or date-only) is read as
//!   UTC; `COUNT` counts from DTSTART; `INTERVAL=0` and `BYEASTER` are
//!   rejected.
//! * **Anchor.** The rule is anchored at `dtstart` truncated to whole seconds
//!   (as Go does), but the slot set only holds instants `>= dtstart` at full
//!   precision, so a `dtstart` of `09:00:00.750` skips the `09:00:00` slot
//!   (docs/semantics.md S9.3).
//! * **DTSTART is a slot only if it matches the rule** (dateutil behaviour):
//!   DTSTART on a Wednesday with `FREQ=WEEKLY;BYDAY=MO` starts on the
//!   following Monday.
//! * **Zone.** Without [`Recurrence::timezone`] the rule is expanded in
//!   DTSTART's fixed offset (no DST). With an IANA zone it is expanded in
//!   that zone's wall clock, so "Mondays 09:00 Europe/Berlin" stays 09:00
//!   local across DST changes. A wall time that falls in a DST gap is moved
//!   forward by the gap (02:30 becomes 03:30); an ambiguous one takes its
//!   first occurrence.
//! * **Output.** Every instant returned is UTC (Go W9 wrote DTSTART's
//!   offset). EXDATEs are truncated to seconds and matched by instant.
//! * **No horizon** (fixes W8): `FREQ=YEARLY;INTERVAL=20` has a next slot 20
//!   years on. `next_after` is strictly after `t` at full precision, so there
//!   is no one-second skip (fixes W10's skip; missed slots are still not
//!   back-filled, that is the engine's business).
//!
//! # Cost (W18)
//!
//! The `rrule` iterator always starts at DTSTART, so a naive "next after now"
//! walks every slot since DTSTART (millions for a minutely rule a few years
//! old). [`Schedule::next_after`] instead *re-anchors*: it starts a fresh
//! iteration at a later DTSTART `D'` chosen so that the expansion from `D'`
//! is provably identical to the full expansion from `D'` on:
//!
//! * every BY* part that the rule inherits implicitly from DTSTART (BYMONTH /
//!   BYMONTHDAY for yearly, BYMONTHDAY for monthly, BYDAY for weekly,
//!   BYHOUR / BYMINUTE / BYSECOND for coarser frequencies) is made explicit,
//!   so moving DTSTART does not change the rule;
//! * `D'` is an iteration state the original walk reaches: the start of a
//!   period that is a whole number of `INTERVAL`s after DTSTART's period (the
//!   first day of the year or month, the WKST day of the week, the day, or a
//!   point of the `INTERVAL` lattice for sub-daily rules), which makes
//!   BYSETPOS, BYWEEKNO, day overflow (e.g. the 31st) and WKST behave as in
//!   the full walk;
//! * `D'` lies before the reference instant, with a two-day margin when an
//!   IANA zone changes its offset near it, so no slot the full walk would
//!   produce before `D'` can lie after the reference.
//!
//! The cost is then a few periods regardless of DTSTART's age. Within a day of
//! an IANA zone's offset change a search also looks up to a day past its first
//! hit (a slot moved out of a DST gap can come out of the iterator before an
//! earlier one), so there it covers about three days of slots: some 4 300 for
//! a minutely rule. Re-anchoring is skipped (plain walk from DTSTART) for:
//!
//! * rules with `COUNT` (the count runs from DTSTART; the walk is bounded by
//!   `COUNT` slots anyway);
//! * `FREQ=MINUTELY` with a day filter (BYMONTH, BYMONTHDAY, BYYEARDAY,
//!   BYWEEKNO, BYDAY), or with BYHOUR when `INTERVAL` does not divide 60;
//! * `FREQ=SECONDLY` with a day filter, or with BYHOUR / BYMINUTE when
//!   `INTERVAL` does not divide 60.
//!
//! For those sub-daily rules the `rrule` crate (0.14) does not walk a regular
//! lattice: how it skips hours and days depends on its path from DTSTART, so
//! no later state can be predicted. (Its results there also differ from
//! dateutil: `FREQ=MINUTELY;INTERVAL=15;BYHOUR=9,10;BYDAY=MO,TU,WE,TH,FR` with
//! DTSTART on a Saturday at 09:00 first fires on Thursday.)
//!
//! A stretch of more than 100 000 consecutive empty periods (the `rrule`
//! crate's loop guard, e.g. an impossible rule such as February 30th) counts
//! as exhaustion; slots after the year 10000 do not exist.

use std::str::FromStr;

use chrono::{
    DateTime, Datelike, FixedOffset, Month, NaiveDate, NaiveDateTime, Offset, SubsecRound,
    TimeDelta, TimeZone, Timelike, Utc, Weekday,
};
use rrule::{Frequency, NWeekday, RRule, RRuleSet, Tz, Unvalidated};
use serde::{Deserialize, Serialize};

/// A recurring schedule: an RRULE anchored at DTSTART, minus EXDATEs,
/// optionally expanded in an IANA time zone.
///
/// ```
/// use oncetask_core::Recurrence;
///
/// // Every Monday at 09:00 Berlin time, skipping 2025-03-17.
/// let rec = Recurrence::new("FREQ=WEEKLY;BYDAY=MO", "2025-03-10T09:00:00+01:00")?
///     .in_timezone("Europe/Berlin")?
///     .exdate("2025-03-17T08:00:00Z")?;
/// let schedule = rec.schedule()?;
/// let first = schedule.first().expect("has a slot");
/// assert_eq!(first.to_rfc3339(), "2025-03-10T08:00:00+00:00");
/// // 03-17 is excluded; 03-24 is still winter time, 03-31 is summer time.
/// let next = schedule.next_after(first).expect("has a next slot");
/// assert_eq!(next.to_rfc3339(), "2025-03-24T08:00:00+00:00");
/// let after = schedule.next_after(next).expect("has a next slot");
/// assert_eq!(after.to_rfc3339(), "2025-03-31T07:00:00+00:00");
/// # Ok::<(), oncetask_core::RecurrenceError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recurrence {
    /// RFC 5545 rule body, e.g. `FREQ=WEEKLY;BYDAY=MO` (a leading `RRULE:` is
    /// accepted).
    pub rrule: String,
    /// The anchor, with the offset the user gave. Truncated to whole seconds
    /// when the rule is expanded; slots before it (full precision) are dropped.
    pub dtstart: DateTime<FixedOffset>,
    /// Instants to skip, matched by instant after truncation to seconds.
    #[serde(default)]
    pub exdates: Vec<DateTime<FixedOffset>>,
    /// IANA zone name (e.g. `Europe/Berlin`) whose wall clock the rule is
    /// expanded in; `None` expands in `dtstart`'s fixed offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl Recurrence {
    /// Parses an RFC 3339 `dtstart`, validates the rule, and checks that the
    /// schedule has at least one slot.
    ///
    /// Errors, in Go's validation order: [`RecurrenceError::MissingDtStart`],
    /// [`RecurrenceError::MissingRule`], [`RecurrenceError::InvalidDtStart`],
    /// [`RecurrenceError::InvalidRule`], then
    /// [`RecurrenceError::NoOccurrences`].
    pub fn new(rrule: &str, dtstart: &str) -> Result<Self, RecurrenceError> {
        if dtstart.trim().is_empty() {
            return Err(RecurrenceError::MissingDtStart);
        }
        if rrule.trim().is_empty() {
            return Err(RecurrenceError::MissingRule);
        }
        let dtstart =
            DateTime::parse_from_rfc3339(dtstart).map_err(|e| RecurrenceError::InvalidDtStart {
                value: dtstart.to_owned(),
                reason: e.to_string(),
            })?;
        let rec = Self {
            rrule: rrule.to_owned(),
            dtstart,
            exdates: Vec::new(),
            timezone: None,
        };
        if rec.schedule()?.first().is_none() {
            return Err(RecurrenceError::NoOccurrences);
        }
        Ok(rec)
    }

    /// Adds instants to skip.
    pub fn with_exdates(
        mut self,
        exdates: impl IntoIterator<Item = DateTime<FixedOffset>>,
    ) -> Self {
        self.exdates.extend(exdates);
        self
    }

    /// Adds one instant to skip, parsed as RFC 3339.
    pub fn exdate(mut self, value: &str) -> Result<Self, RecurrenceError> {
        let parsed =
            DateTime::parse_from_rfc3339(value).map_err(|e| RecurrenceError::InvalidExDate {
                value: value.to_owned(),
                reason: e.to_string(),
            })?;
        self.exdates.push(parsed);
        Ok(self)
    }

    /// Expands the rule in the IANA zone `name` (e.g. `America/New_York`)
    /// instead of `dtstart`'s fixed offset. DTSTART keeps its instant; its
    /// wall-clock time in that zone becomes the anchor.
    pub fn in_timezone(mut self, name: &str) -> Result<Self, RecurrenceError> {
        lookup_zone(name)?;
        self.timezone = Some(name.to_owned());
        Ok(self)
    }

    /// Validates the recurrence and builds its [`Schedule`].
    ///
    /// Fails with [`RecurrenceError::MissingRule`],
    /// [`RecurrenceError::InvalidTimeZone`], [`RecurrenceError::InvalidRule`]
    /// or (out of range) [`RecurrenceError::InvalidDtStart`]. It does not
    /// check that a slot exists: [`Schedule::first`] returns `None` for an
    /// empty schedule.
    pub fn schedule(&self) -> Result<Schedule, RecurrenceError> {
        if self.rrule.trim().is_empty() {
            return Err(RecurrenceError::MissingRule);
        }
        let zone = match &self.timezone {
            Some(name) => Zone::Named(lookup_zone(name)?),
            None => Zone::Fixed(*self.dtstart.offset()),
        };
        let parsed = parse_rule(&self.rrule)?;
        let start = self.dtstart.with_timezone(&Utc);
        let out_of_range = || RecurrenceError::InvalidDtStart {
            value: self.dtstart.to_rfc3339(),
            reason: "out of the supported range".to_owned(),
        };
        let anchor = zone
            .to_expansion(start.trunc_subsecs(0))
            .ok_or_else(out_of_range)?;
        let mut rule = parsed.rule;
        if let Some(until) = parsed.until {
            let until = zone
                .until_value(until)
                .ok_or_else(|| RecurrenceError::InvalidRule {
                    rule: self.rrule.clone(),
                    reason: "UNTIL is out of the supported range".to_owned(),
                })?;
            rule = rule.until(until);
        }
        let validated =
            rule.clone()
                .validate(anchor)
                .map_err(|e| RecurrenceError::InvalidRule {
                    rule: self.rrule.clone(),
                    reason: e.to_string(),
                })?;
        let mut exdates: Vec<i64> = self.exdates.iter().map(DateTime::timestamp).collect();
        exdates.sort_unstable();
        exdates.dedup();
        Ok(Schedule {
            zone,
            start,
            until: parsed.until,
            exdates,
            reanchor: Reanchor::plan(rule, &anchor),
            base: RRuleSet::new(anchor).rrule(validated).limit(),
        })
    }
}

/// A validated schedule that answers "first slot" and "next slot after t".
///
/// All instants are UTC. Slots are the rule's occurrences at or after
/// DTSTART (full precision), minus EXDATEs.
///
/// ```
/// use chrono::{DateTime, Utc};
/// use oncetask_core::Recurrence;
///
/// let schedule = Recurrence::new("FREQ=DAILY;COUNT=3", "2025-01-01T09:00:00Z")?.schedule()?;
/// let at = |s: &str| s.parse::<DateTime<Utc>>().expect("timestamp");
/// assert_eq!(schedule.first(), Some(at("2025-01-01T09:00:00Z")));
/// // Strictly after: the slot at `t` itself is not returned.
/// assert_eq!(schedule.next_after(at("2025-01-01T09:00:00Z")), Some(at("2025-01-02T09:00:00Z")));
/// assert_eq!(schedule.next_after(at("2025-01-01T12:00:00Z")), Some(at("2025-01-02T09:00:00Z")));
/// // COUNT=3 is used up after the third day.
/// assert_eq!(schedule.next_after(at("2025-01-03T09:00:00Z")), None);
/// # Ok::<(), oncetask_core::RecurrenceError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    zone: Zone,
    /// DTSTART at full precision: no slot is earlier.
    start: DateTime<Utc>,
    /// The real UNTIL instant, for an early "exhausted" answer.
    until: Option<DateTime<Utc>>,
    /// EXDATE instants in whole seconds, sorted.
    exdates: Vec<i64>,
    /// How to start later than DTSTART; `None` where that is unsafe.
    reanchor: Option<Reanchor>,
    /// The full expansion from DTSTART.
    base: RRuleSet,
}

impl Schedule {
    /// The earliest slot at or after DTSTART (not excluded), or `None` when
    /// the rule has none.
    pub fn first(&self) -> Option<DateTime<Utc>> {
        self.search(self.start, true).slot
    }

    /// The earliest slot strictly after `t` (not excluded), or `None` when the
    /// schedule is exhausted.
    ///
    /// `t` is compared at full precision: with minutely slots and
    /// `t = 09:00:59.500` the answer is `09:01:00`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.search(t, false).slot
    }

    /// Finds the earliest slot `> after` (or `>= after` when `inclusive`).
    fn search(&self, after: DateTime<Utc>, inclusive: bool) -> Search {
        let mut found = Search::default();
        if after >= latest_slot_bound() {
            return found;
        }
        if self
            .until
            .is_some_and(|until| until < after || (!inclusive && until == after))
        {
            return found;
        }
        let reanchored = match &self.reanchor {
            Some(plan) if after > self.start => plan.set_for(after, self.zone),
            _ => None,
        };
        let set = reanchored.as_ref().unwrap_or(&self.base);
        // Only set while a later-yielded slot could still be earlier (DST gaps).
        let mut horizon: Option<DateTime<Utc>> = None;
        for item in set {
            found.examined += 1;
            let Some(slot) = self.zone.to_instant(item) else {
                continue;
            };
            if horizon.is_some_and(|h| slot >= h) {
                break;
            }
            let in_range = slot >= self.start && (slot > after || (inclusive && slot == after));
            if !in_range || self.is_excluded(slot) || found.slot.is_some_and(|b| b <= slot) {
                continue;
            }
            found.slot = Some(slot);
            if horizon.is_some() {
                continue;
            }
            if !self.zone.may_be_shifted(slot) {
                break;
            }
            horizon = slot.checked_add_signed(TimeDelta::days(1));
            if horizon.is_none() {
                break;
            }
        }
        found
    }

    fn is_excluded(&self, slot: DateTime<Utc>) -> bool {
        self.exdates.binary_search(&slot.timestamp()).is_ok()
    }
}

/// The result of one search, with the number of expanded slots it looked at.
#[derive(Debug, Default, Clone, Copy)]
struct Search {
    slot: Option<DateTime<Utc>>,
    examined: u64,
}

/// The `rrule` crate stops at the year 10000; nothing can come after this.
fn latest_slot_bound() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(10_001, 1, 2)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MAX_UTC, |n| n.and_utc())
}

/// Where the rule's wall clock lives.
#[derive(Debug, Clone, Copy)]
enum Zone {
    /// DTSTART's fixed offset. `rrule` has no fixed-offset zone, so the rule
    /// is expanded in UTC on a clock shifted by the offset; with no DST the
    /// wall-clock arithmetic is identical.
    Fixed(FixedOffset),
    /// An IANA zone, DST-aware.
    Named(Tz),
}

impl Zone {
    fn expansion_tz(self) -> Tz {
        match self {
            Self::Fixed(_) => Tz::UTC,
            Self::Named(tz) => tz,
        }
    }

    /// An instant on the expansion clock.
    fn to_expansion(self, t: DateTime<Utc>) -> Option<DateTime<Tz>> {
        match self {
            Self::Fixed(offset) => {
                let shift = TimeDelta::seconds(i64::from(offset.local_minus_utc()));
                let wall = t.naive_utc().checked_add_signed(shift)?;
                Some(Tz::UTC.from_utc_datetime(&wall))
            }
            Self::Named(tz) => Some(t.with_timezone(&tz)),
        }
    }

    /// A time on the expansion clock back to a real instant.
    fn to_instant(self, t: DateTime<Tz>) -> Option<DateTime<Utc>> {
        match self {
            Self::Fixed(offset) => {
                let shift = TimeDelta::seconds(i64::from(offset.local_minus_utc()));
                Some(t.naive_utc().checked_sub_signed(shift)?.and_utc())
            }
            Self::Named(_) => Some(t.with_timezone(&Utc)),
        }
    }

    /// A wall-clock time as a DTSTART, the earlier one if ambiguous, `None`
    /// in a DST gap.
    fn start_at_wall(self, wall: NaiveDateTime) -> Option<DateTime<Tz>> {
        self.expansion_tz().from_local_datetime(&wall).earliest()
    }

    /// UNTIL on the expansion clock; `rrule` wants it in UTC.
    fn until_value(self, until: DateTime<Utc>) -> Option<DateTime<Tz>> {
        match self {
            Self::Fixed(_) => self.to_expansion(until),
            Self::Named(_) => Some(until.with_timezone(&Tz::UTC)),
        }
    }

    fn offset_at(tz: Tz, t: DateTime<Utc>) -> i32 {
        tz.offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc()
    }

    /// Whether the offset is the same at every hour of `[t - before, t + after]`
    /// (zones never change twice within an hour).
    fn offset_constant(tz: Tz, t: DateTime<Utc>, before: i64, after: i64) -> bool {
        let first = Self::offset_at(tz, t);
        (-before..=after).all(|h| {
            t.checked_add_signed(TimeDelta::hours(h))
                .is_none_or(|s| Self::offset_at(tz, s) == first)
        })
    }

    /// Whether the wall clock runs evenly within a day of `t`. Then slots
    /// near `t` come out of the iterator in instant order and a DTSTART
    /// wall-clock time before `t`'s is also an earlier instant.
    fn is_even_around(self, t: DateTime<Utc>) -> bool {
        match self {
            Self::Fixed(_) => true,
            Self::Named(tz) => Self::offset_constant(tz, t, 26, 26),
        }
    }

    /// Whether `slot` may have been moved forward out of a DST gap earlier
    /// that day; a slot yielded after it could then be earlier.
    fn may_be_shifted(self, slot: DateTime<Utc>) -> bool {
        match self {
            Self::Fixed(_) => false,
            Self::Named(tz) => !Self::offset_constant(tz, slot, 25, 0),
        }
    }
}

/// Resolves an IANA zone name (e.g. `Europe/Berlin`) with chrono-tz, the
/// zone database `rrule` itself uses.
fn lookup_zone(name: &str) -> Result<Tz, RecurrenceError> {
    name.parse::<chrono_tz::Tz>()
        .map(Tz::from)
        .map_err(|reason| RecurrenceError::InvalidTimeZone {
            name: name.to_owned(),
            reason: reason.to_string(),
        })
}

/// A rule with `DTSTART` and `UNTIL` taken out of the text.
struct ParsedRule {
    rule: RRule<Unvalidated>,
    until: Option<DateTime<Utc>>,
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
fn parse_rule(raw: &str) -> Result<ParsedRule, RecurrenceError> {
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

/// How to restart the expansion later than DTSTART without changing it.
#[derive(Debug, Clone)]
struct Reanchor {
    /// The rule with its DTSTART-derived BY* parts explicit (and UNTIL).
    rule: RRule<Unvalidated>,
    freq: Frequency,
    interval: i64,
    week_start: Weekday,
    /// DTSTART's wall-clock time on the expansion clock.
    anchor: NaiveDateTime,
}

impl Reanchor {
    /// Returns `None` for the rules where a later start is unsafe (see the
    /// module docs).
    fn plan(rule: RRule<Unvalidated>, anchor: &DateTime<Tz>) -> Option<Self> {
        let interval = rule.get_interval();
        if rule.get_count().is_some() || interval == 0 {
            return None;
        }
        let freq = rule.get_freq();
        let day_filter = !rule.get_by_month().is_empty()
            || !rule.get_by_month_day().is_empty()
            || !rule.get_by_year_day().is_empty()
            || !rule.get_by_week_no().is_empty()
            || !rule.get_by_weekday().is_empty();
        // With these, rrule 0.14 skips hours/days by steps that depend on its path.
        let safe = match freq {
            Frequency::Minutely => {
                !day_filter && (rule.get_by_hour().is_empty() || 60 % interval == 0)
            }
            Frequency::Secondly => {
                !day_filter
                    && ((rule.get_by_hour().is_empty() && rule.get_by_minute().is_empty())
                        || 60 % interval == 0)
            }
            _ => true,
        };
        if !safe {
            return None;
        }
        Some(Self {
            week_start: rule.get_week_start(),
            rule: with_inherited_parts(rule, anchor)?,
            freq,
            interval: i64::from(interval),
            anchor: anchor.naive_local(),
        })
    }

    /// A fresh expansion starting at a period start before `after`.
    fn set_for(&self, after: DateTime<Utc>, zone: Zone) -> Option<RRuleSet> {
        // Near an offset change, stay two days back so that wall-clock order
        // and instant order cannot disagree around `after`.
        let reference = if zone.is_even_around(after) {
            after
        } else {
            after.checked_sub_signed(TimeDelta::days(2))?
        };
        let limit = zone.to_expansion(reference)?.naive_local();
        // A period start can fall in a DST gap; then try an earlier one.
        for back in 0..4 {
            let wall = self.period_start(limit, back)?;
            let Some(start) = zone.start_at_wall(wall) else {
                continue;
            };
            if zone.to_instant(start).is_none_or(|s| s > after) {
                continue;
            }
            let rule = self.rule.clone().validate(start).ok()?;
            return Some(RRuleSet::new(start).rrule(rule).limit());
        }
        None
    }

    /// The wall-clock start of the `back`-th period before the one holding
    /// `limit`, as an iteration state the walk from DTSTART reaches; `None`
    /// if that is not after DTSTART's period.
    fn period_start(&self, limit: NaiveDateTime, back: i64) -> Option<NaiveDateTime> {
        let a = self.anchor;
        let iv = self.interval;
        let midnight = |date: NaiveDate| date.and_hms_opt(0, 0, 0);
        let periods = |elapsed: i64| {
            let k = elapsed.div_euclid(iv).checked_sub(back)?;
            (k >= 1).then_some(k)
        };
        match self.freq {
            Frequency::Yearly => {
                let k = periods(i64::from(limit.year()) - i64::from(a.year()))?;
                let year =
                    i32::try_from(i64::from(a.year()).checked_add(k.checked_mul(iv)?)?).ok()?;
                midnight(NaiveDate::from_ymd_opt(year, 1, 1)?)
            }
            Frequency::Monthly => {
                let month_index =
                    |d: NaiveDateTime| i64::from(d.year()) * 12 + i64::from(d.month0());
                let k = periods(month_index(limit) - month_index(a))?;
                let target = month_index(a).checked_add(k.checked_mul(iv)?)?;
                let year = i32::try_from(target.div_euclid(12)).ok()?;
                let month = u32::try_from(target.rem_euclid(12) + 1).ok()?;
                midnight(NaiveDate::from_ymd_opt(year, month, 1)?)
            }
            Frequency::Weekly => {
                // The walk moves to the WKST day of each INTERVAL-th week.
                let into_week = (a.weekday().num_days_from_monday() + 7
                    - self.week_start.num_days_from_monday())
                    % 7;
                let week_start = a
                    .date()
                    .checked_sub_signed(TimeDelta::try_days(i64::from(into_week))?)?;
                let k = periods((limit.date() - week_start).num_days().div_euclid(7))?;
                let days = k.checked_mul(iv)?.checked_mul(7)?;
                midnight(week_start.checked_add_signed(TimeDelta::try_days(days)?)?)
            }
            Frequency::Daily => {
                let k = periods((limit.date() - a.date()).num_days())?;
                let days = TimeDelta::try_days(k.checked_mul(iv)?)?;
                midnight(a.date().checked_add_signed(days)?)
            }
            Frequency::Hourly | Frequency::Minutely | Frequency::Secondly => {
                let unit = match self.freq {
                    Frequency::Hourly => 3600,
                    Frequency::Minutely => 60,
                    _ => 1,
                };
                let step = iv.checked_mul(unit)?;
                // Step back at least an hour per retry to leave a DST gap.
                let per_retry = (3600 + step - 1) / step;
                let elapsed = (limit - a).num_seconds();
                let k = elapsed
                    .div_euclid(step)
                    .checked_sub(back.checked_mul(per_retry)?)?;
                if k < 1 {
                    return None;
                }
                a.checked_add_signed(TimeDelta::try_seconds(k.checked_mul(step)?)?)
            }
        }
    }
}

/// Makes explicit every BY* part the `rrule` crate fills in from DTSTART, so
/// that the rule means the same from any later DTSTART.
fn with_inherited_parts(
    rule: RRule<Unvalidated>,
    anchor: &DateTime<Tz>,
) -> Option<RRule<Unvalidated>> {
    let freq = rule.get_freq();
    let mut rule = rule;
    let no_day_parts = rule.get_by_week_no().is_empty()
        && rule.get_by_year_day().is_empty()
        && rule.get_by_month_day().is_empty()
        && rule.get_by_weekday().is_empty();
    if no_day_parts {
        let day = i8::try_from(anchor.day()).ok()?;
        match freq {
            Frequency::Yearly => {
                if rule.get_by_month().is_empty() {
                    let month = Month::try_from(u8::try_from(anchor.month()).ok()?).ok()?;
                    rule = rule.by_month(&[month]);
                }
                rule = rule.by_month_day(vec![day]);
            }
            Frequency::Monthly => rule = rule.by_month_day(vec![day]),
            Frequency::Weekly => rule = rule.by_weekday(vec![NWeekday::Every(anchor.weekday())]),
            _ => {}
        }
    }
    if rule.get_by_hour().is_empty() && freq < Frequency::Hourly {
        rule = rule.by_hour(vec![u8::try_from(anchor.hour()).ok()?]);
    }
    if rule.get_by_minute().is_empty() && freq < Frequency::Minutely {
        rule = rule.by_minute(vec![u8::try_from(anchor.minute()).ok()?]);
    }
    if rule.get_by_second().is_empty() && freq < Frequency::Secondly {
        rule = rule.by_second(vec![u8::try_from(anchor.second()).ok()?]);
    }
    Some(rule)
}

/// Why a recurrence is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    /// DTSTART is empty.
    #[error("DTStart is required")]
    MissingDtStart,
    /// The rule is empty.
    #[error("RRule is required")]
    MissingRule,
    /// DTSTART is not RFC 3339 (or out of range).
    #[error("invalid DTStart {value:?} (must be RFC3339): {reason}")]
    InvalidDtStart {
        /// The rejected value.
        value: String,
        /// Parser message.
        reason: String,
    },
    /// The rule does not parse or does not validate against DTSTART.
    #[error("invalid RRule {rule:?}: {reason}")]
    InvalidRule {
        /// The rejected rule.
        rule: String,
        /// Parser or validator message.
        reason: String,
    },
    /// An EXDATE is not RFC 3339.
    #[error("failed to parse exdate {value:?}: {reason}")]
    InvalidExDate {
        /// The rejected value.
        value: String,
        /// Parser message.
        reason: String,
    },
    /// The time zone is not a known IANA zone name.
    #[error("invalid time zone {name:?}: {reason}")]
    InvalidTimeZone {
        /// The rejected name.
        name: String,
        /// Lookup message.
        reason: String,
    },
    /// The rule has no slot at all.
    #[error("recurrence has no valid occurrences")]
    NoOccurrences,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test timestamp")
            .with_timezone(&Utc)
    }

    fn sched(rule: &str, dtstart: &str) -> Schedule {
        Recurrence::new(rule, dtstart)
            .expect("valid recurrence")
            .schedule()
            .expect("schedule")
    }

    // ---- recurrence_test.go: TestFindOccurrence / TestCalculateNextOccurrence

    #[test]
    fn inclusive_includes_exact_time() {
        let s = sched("FREQ=DAILY", "2025-01-01T09:00:00Z");
        assert_eq!(s.first(), Some(utc("2025-01-01T09:00:00Z")));
    }

    #[test]
    fn exclusive_excludes_exact_time() {
        let s = sched("FREQ=DAILY", "2025-01-01T09:00:00Z");
        assert_eq!(
            s.next_after(utc("2025-01-01T09:00:00Z")),
            Some(utc("2025-01-02T09:00:00Z"))
        );
    }

    #[test]
    fn inclusive_with_exdate_skips_excluded_date() {
        let s = Recurrence::new("FREQ=DAILY", "2025-01-01T09:00:00Z")
            .expect("valid")
            .exdate("2025-01-01T09:00:00Z")
            .expect("exdate")
            .schedule()
            .expect("schedule");
        assert_eq!(s.first(), Some(utc("2025-01-02T09:00:00Z")));
    }

    #[test]
    fn exhausted_when_no_more_occurrences() {
        let s = sched("FREQ=DAILY;COUNT=3", "2025-01-01T09:00:00Z");
        assert_eq!(s.next_after(utc("2025-01-10T00:00:00Z")), None);
    }

    #[test]
    fn invalid_rule_returns_error() {
        let err =
            Recurrence::new("INVALID_RRULE_FORMAT", "2025-01-01T09:00:00Z").expect_err("must fail");
        assert!(
            matches!(err, RecurrenceError::InvalidRule { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("invalid RRule"), "{err}");
    }

    #[test]
    fn invalid_dtstart_returns_error() {
        let err = Recurrence::new("FREQ=DAILY", "not-a-valid-timestamp").expect_err("must fail");
        assert!(
            matches!(err, RecurrenceError::InvalidDtStart { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("invalid DTStart"), "{err}");
    }

    #[test]
    fn missing_dtstart_returns_error() {
        let err = Recurrence::new("FREQ=DAILY", "").expect_err("must fail");
        assert_eq!(err, RecurrenceError::MissingDtStart);
        assert!(err.to_string().contains("DTStart is required"));
    }

    #[test]
    fn missing_rule_returns_error() {
        let err = Recurrence::new("", "2025-01-01T09:00:00Z").expect_err("must fail");
        assert_eq!(err, RecurrenceError::MissingRule);
        assert!(err.to_string().contains("RRule is required"));
        // Go checks DTStart first.
        assert_eq!(
            Recurrence::new("", "").expect_err("must fail"),
            RecurrenceError::MissingDtStart
        );
    }

    #[test]
    fn next_day_for_daily_recurrence() {
        let s = sched("FREQ=DAILY", "2025-01-01T09:00:00Z");
        assert_eq!(
            s.next_after(utc("2025-01-01T09:00:00Z")),
            Some(utc("2025-01-02T09:00:00Z"))
        );
    }

    #[test]
    fn next_after_arbitrary_time() {
        let s = sched("FREQ=DAILY", "2025-01-01T09:00:00Z");
        assert_eq!(
            s.next_after(utc("2025-01-05T09:00:00Z")),
            Some(utc("2025-01-06T09:00:00Z"))
        );
    }

    #[test]
    fn exhausted_after_last_occurrence() {
        let s = sched("FREQ=DAILY;COUNT=3", "2025-01-01T09:00:00Z");
        assert_eq!(
            s.next_after(utc("2025-01-02T09:00:00Z")),
            Some(utc("2025-01-03T09:00:00Z"))
        );
        assert_eq!(s.next_after(utc("2025-01-03T09:00:00Z")), None);
    }

    // ---- fs_model_test.go recurrence cases

    #[test]
    fn daily_first_slot_is_dtstart() {
        let rec = Recurrence::new("FREQ=DAILY", "2025-01-01T09:00:00Z").expect("valid");
        let first = rec.schedule().expect("schedule").first();
        assert_eq!(first, Some(utc("2025-01-01T09:00:00Z")));
    }

    #[test]
    fn exdate_on_dtstart_skips_to_next_day() {
        let dt = DateTime::parse_from_rfc3339("2025-01-01T09:00:00Z").expect("ts");
        let rec = Recurrence::new("FREQ=DAILY", "2025-01-01T09:00:00Z")
            .expect("valid")
            .with_exdates([dt]);
        assert_eq!(
            rec.schedule().expect("schedule").first(),
            Some(utc("2025-01-02T09:00:00Z"))
        );
    }

    #[test]
    fn recurrence_fields_are_preserved() {
        let rec = Recurrence::new("FREQ=WEEKLY;BYDAY=MO,WE", "2025-01-06T09:00:00Z")
            .expect("valid")
            .exdate("2025-01-08T09:00:00Z")
            .expect("exdate")
            .exdate("2025-01-13T09:00:00Z")
            .expect("exdate");
        assert_eq!(rec.rrule, "FREQ=WEEKLY;BYDAY=MO,WE");
        assert_eq!(rec.exdates.len(), 2);
        let json = serde_json::to_value(&rec).expect("serialize");
        assert!(json.get("timezone").is_none(), "{json}");
        let back: Recurrence = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, rec);
        // Older records have neither exdates nor timezone.
        let minimal: Recurrence =
            serde_json::from_str(r#"{"rrule":"FREQ=DAILY","dtstart":"2025-01-01T09:00:00+05:30"}"#)
                .expect("deserialize");
        assert!(minimal.exdates.is_empty() && minimal.timezone.is_none());
        let zoned = rec.in_timezone("Europe/Berlin").expect("zone");
        let json = serde_json::to_value(&zoned).expect("serialize");
        assert_eq!(json["timezone"], "Europe/Berlin");
    }

    // ---- semantics

    #[test]
    fn dtstart_is_a_slot_only_if_it_matches() {
        // 2025-01-01 is a Wednesday.
        let s = sched("FREQ=WEEKLY;BYDAY=MO", "2025-01-01T09:00:00Z");
        assert_eq!(s.first(), Some(utc("2025-01-06T09:00:00Z")));
        assert_eq!(
            s.next_after(utc("2025-01-06T09:00:00Z")),
            Some(utc("2025-01-13T09:00:00Z"))
        );
    }

    #[test]
    fn no_one_second_skip() {
        let s = sched("FREQ=MINUTELY", "2025-01-01T09:00:00Z");
        assert_eq!(
            s.next_after(utc("2025-01-01T09:00:59.500Z")),
            Some(utc("2025-01-01T09:01:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2025-01-01T09:00:59.999Z")),
            Some(utc("2025-01-01T09:01:00Z"))
        );
    }

    #[test]
    fn fractional_dtstart_skips_the_truncated_slot() {
        // Anchor 09:00:00, but no slot precedes DTSTART (docs/semantics.md S9.3).
        let s = sched("FREQ=DAILY", "2025-01-01T09:00:00.750Z");
        assert_eq!(s.first(), Some(utc("2025-01-02T09:00:00Z")));
        assert_eq!(
            s.next_after(utc("2024-12-01T00:00:00Z")),
            Some(utc("2025-01-02T09:00:00Z"))
        );
        let err = Recurrence::new("FREQ=DAILY;COUNT=1", "2025-01-01T09:00:00.750Z")
            .expect_err("must fail");
        assert_eq!(err, RecurrenceError::NoOccurrences);
    }

    #[test]
    fn next_after_before_dtstart_is_first_slot() {
        let s = sched("FREQ=DAILY", "2025-01-01T09:00:00Z");
        let no_wait = utc("0001-01-01T00:00:00Z");
        assert_eq!(s.next_after(no_wait), Some(utc("2025-01-01T09:00:00Z")));
        assert_eq!(
            s.next_after(utc("2025-01-01T08:59:59.999Z")),
            Some(utc("2025-01-01T09:00:00Z"))
        );
    }

    #[test]
    fn fixed_offset_returns_utc_instants() {
        let s = sched("FREQ=DAILY;BYHOUR=9,18", "2025-01-06T09:00:00+05:30");
        let first = s.first().expect("slot");
        assert_eq!(first, utc("2025-01-06T03:30:00Z"));
        assert_eq!(first.to_rfc3339(), "2025-01-06T03:30:00+00:00");
        assert_eq!(s.next_after(first), Some(utc("2025-01-06T12:30:00Z")));
        // Days follow the +05:30 calendar, not UTC's.
        let s = sched("FREQ=WEEKLY;BYDAY=MO", "2025-01-06T01:00:00+05:30");
        assert_eq!(s.first(), Some(utc("2025-01-05T19:30:00Z")));
        let s = sched("FREQ=DAILY", "2025-01-06T09:00:00-08:00");
        assert_eq!(
            s.next_after(utc("2025-03-10T00:00:00Z")),
            Some(utc("2025-03-10T17:00:00Z"))
        );
    }

    #[test]
    fn iana_zone_keeps_wall_clock_across_dst() {
        let rec = Recurrence::new("FREQ=WEEKLY;BYDAY=MO", "2025-03-24T09:00:00+01:00")
            .expect("valid")
            .in_timezone("Europe/Berlin")
            .expect("zone");
        let s = rec.schedule().expect("schedule");
        assert_eq!(s.first(), Some(utc("2025-03-24T08:00:00Z")));
        assert_eq!(
            s.next_after(utc("2025-03-24T08:00:00Z")),
            Some(utc("2025-03-31T07:00:00Z"))
        );
        // And back in October.
        assert_eq!(
            s.next_after(utc("2025-10-21T00:00:00Z")),
            Some(utc("2025-10-27T08:00:00Z"))
        );
        // Without the zone the fixed +01:00 offset is used.
        let fixed = sched("FREQ=WEEKLY;BYDAY=MO", "2025-03-24T09:00:00+01:00");
        assert_eq!(
            fixed.next_after(utc("2025-03-24T08:00:00Z")),
            Some(utc("2025-03-31T08:00:00Z"))
        );
    }

    #[test]
    fn iana_zone_dst_gap_moves_forward() {
        let rec = Recurrence::new("FREQ=DAILY", "2025-03-29T02:30:00+01:00")
            .expect("valid")
            .in_timezone("Europe/Berlin")
            .expect("zone");
        let s = rec.schedule().expect("schedule");
        let gap_day = s.next_after(utc("2025-03-29T12:00:00Z"));
        // 02:30 does not exist on 03-30; it becomes 03:30 CEST.
        assert_eq!(gap_day, Some(utc("2025-03-30T01:30:00Z")));
        assert_eq!(
            s.next_after(utc("2025-03-30T01:30:00Z")),
            Some(utc("2025-03-31T00:30:00Z"))
        );
    }

    #[test]
    fn iana_zone_gap_slots_come_out_in_order() {
        // Every 25 minutes across the Berlin gap: the crate yields 02:20 as
        // 03:20 CEST before the real 03:10 slot; next_after must not skip 03:10.
        let rec = Recurrence::new("FREQ=MINUTELY;INTERVAL=25", "2025-03-30T01:05:00+01:00")
            .expect("valid")
            .in_timezone("Europe/Berlin")
            .expect("zone");
        let s = rec.schedule().expect("schedule");
        let mut t = utc("2025-03-30T00:30:00Z");
        let mut got = Vec::new();
        for _ in 0..8 {
            let next = s.next_after(t).expect("slot");
            assert!(next > t);
            got.push(next.format("%H:%M").to_string());
            t = next;
        }
        assert_eq!(
            got,
            [
                "00:55", "01:10", "01:20", "01:35", "01:45", "02:00", "02:25", "02:50"
            ]
        );
    }

    #[test]
    fn yearly_interval_twenty_is_not_exhausted() {
        let s = sched("FREQ=YEARLY;INTERVAL=20", "2025-06-01T12:00:00Z");
        let first = s.first().expect("slot");
        assert_eq!(first, utc("2025-06-01T12:00:00Z"));
        assert_eq!(s.next_after(first), Some(utc("2045-06-01T12:00:00Z")));
        assert_eq!(
            s.next_after(utc("2300-01-01T00:00:00Z")),
            Some(utc("2305-06-01T12:00:00Z"))
        );
    }

    #[test]
    fn exdates_match_by_instant() {
        let rec = Recurrence::new("FREQ=DAILY", "2025-01-01T09:00:00Z")
            .expect("valid")
            .exdate("2025-01-02T14:30:00.400+05:30")
            .expect("exdate");
        let s = rec.schedule().expect("schedule");
        assert_eq!(
            s.next_after(utc("2025-01-01T09:00:00Z")),
            Some(utc("2025-01-03T09:00:00Z"))
        );
    }

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

    #[test]
    fn rules_without_slots_are_rejected() {
        for rule in [
            "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
            "FREQ=DAILY;COUNT=0",
            "FREQ=HOURLY;BYMINUTE=0;BYSETPOS=2",
        ] {
            let err = Recurrence::new(rule, "2025-01-01T09:00:00Z").expect_err("must fail");
            assert_eq!(err, RecurrenceError::NoOccurrences, "{rule}");
        }
        // Excluding the only slot leaves an empty schedule.
        let rec = Recurrence::new("FREQ=DAILY;COUNT=1", "2025-01-01T09:00:00Z")
            .expect("valid")
            .exdate("2025-01-01T09:00:00Z")
            .expect("exdate");
        assert_eq!(rec.schedule().expect("schedule").first(), None);
    }

    #[test]
    fn builder_errors_are_typed() {
        let rec = Recurrence::new("FREQ=DAILY", "2025-01-01T09:00:00Z").expect("valid");
        let err = rec.clone().exdate("tomorrow").expect_err("must fail");
        assert!(matches!(err, RecurrenceError::InvalidExDate { .. }));
        assert!(
            err.to_string()
                .starts_with("failed to parse exdate \"tomorrow\"")
        );
        for zone in [
            "Mars/Olympus",
            "",
            "Europe/Berlin\nRRULE:FREQ=DAILY",
            "Local",
        ] {
            let err = rec.clone().in_timezone(zone).expect_err("must fail");
            assert!(
                matches!(err, RecurrenceError::InvalidTimeZone { .. }),
                "{zone}"
            );
        }
        // A stored record with a bad zone fails at schedule().
        let mut bad = rec;
        bad.timezone = Some("Nowhere/Land".to_owned());
        assert!(matches!(
            bad.schedule().expect_err("must fail"),
            RecurrenceError::InvalidTimeZone { .. }
        ));
    }

    // ---- W18: the cost does not grow with DTSTART's age

    #[test]
    fn old_minutely_rule_is_answered_without_walking_from_dtstart() {
        // A naive walk would look at ~2.6 million slots.
        let s = sched("FREQ=MINUTELY", "2020-01-01T00:00:00Z");
        let t = utc("2025-01-01T12:34:56.789Z");
        let found = s.search(t, false);
        assert_eq!(found.slot, Some(utc("2025-01-01T12:35:00Z")));
        assert!(found.examined <= 3, "examined {}", found.examined);

        let s = sched(
            "FREQ=MINUTELY;INTERVAL=7;BYSECOND=0,30",
            "2020-01-01T00:00:00+05:30",
        );
        let found = s.search(t, false);
        assert!(found.slot.is_some_and(|slot| slot > t));
        assert!(found.examined <= 30, "examined {}", found.examined);

        let rec = Recurrence::new("FREQ=MINUTELY;INTERVAL=15", "2020-01-01T00:00:00Z")
            .expect("valid")
            .in_timezone("Europe/Berlin")
            .expect("zone");
        let s = rec.schedule().expect("schedule");
        let t = utc("2025-06-01T12:01:00Z");
        let found = s.search(t, false);
        assert_eq!(found.slot, Some(utc("2025-06-01T12:15:00Z")));
        assert!(found.examined <= 3, "examined {}", found.examined);
        // Near a DST change it stays bounded (two days back) and exact.
        let t = utc("2025-03-30T01:01:00Z");
        let found = s.search(t, false);
        assert_eq!(found.slot, Some(utc("2025-03-30T01:15:00Z")));
        assert!(
            found.examined <= 2 * 24 * 4 + 24 * 4 + 8,
            "examined {}",
            found.examined
        );
    }

    #[test]
    fn old_secondly_rule_is_answered_quickly() {
        let s = sched("FREQ=SECONDLY;INTERVAL=2", "2015-01-01T00:00:01Z");
        let found = s.search(utc("2025-01-01T00:00:00Z"), false);
        assert_eq!(found.slot, Some(utc("2025-01-01T00:00:01Z")));
        assert!(found.examined <= 3, "examined {}", found.examined);
    }

    #[test]
    fn unsafe_rules_fall_back_to_the_full_walk() {
        let rule = "FREQ=MINUTELY;INTERVAL=15;BYHOUR=9,10;BYDAY=MO,TU,WE,TH,FR";
        let s = sched(rule, "2025-01-06T09:00:00Z");
        assert!(s.reanchor.is_none());
        let s = sched("FREQ=DAILY;COUNT=1000", "2025-01-06T09:00:00Z");
        assert!(s.reanchor.is_none());
        let s = sched(
            "FREQ=MINUTELY;INTERVAL=15;BYHOUR=9,10",
            "2025-01-06T09:00:00Z",
        );
        assert!(s.reanchor.is_some());
    }

    // ---- equivalence with the full expansion

    /// The reference: walk the full expansion from DTSTART and take the
    /// smallest accepted slot, looking well past the first hit.
    fn brute_next(s: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut best: Option<DateTime<Utc>> = None;
        for item in &s.base {
            let slot = s.zone.to_instant(item).expect("instant");
            if best.is_some_and(|b| slot > b + TimeDelta::days(3)) {
                break;
            }
            if slot > after
                && slot >= s.start
                && !s.is_excluded(slot)
                && best.is_none_or(|b| slot < b)
            {
                best = Some(slot);
            }
        }
        best
    }

    /// The full walk from DTSTART (EXDATEs not applied), sorted, carried far
    /// enough past `t` to answer a dozen "next after" questions from it.
    fn full_walk(s: &Schedule, t: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut slots = Vec::new();
        let mut past_t = 0;
        let mut stop_after: Option<DateTime<Utc>> = None;
        for item in &s.base {
            let slot = s.zone.to_instant(item).expect("instant");
            if stop_after.is_some_and(|x| slot > x) {
                break;
            }
            slots.push(slot);
            if slot > t {
                past_t += 1;
                if past_t == 16 {
                    stop_after = Some(slot + TimeDelta::days(3));
                }
            }
        }
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    /// The reference answer from [`full_walk`]'s slots.
    fn walk_next(
        s: &Schedule,
        slots: &[DateTime<Utc>],
        after: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        slots
            .iter()
            .copied()
            .find(|&slot| slot > after && slot >= s.start && !s.is_excluded(slot))
    }

    /// Compares `next_after` with the full walk for `t` every `step_secs`
    /// within `half_width_min` minutes of `centre`.
    fn sweep(
        rule: &str,
        zone: Option<&str>,
        dtstart: &str,
        centre: &str,
        half_width_min: i64,
        step_secs: i64,
    ) {
        let mut rec = Recurrence::new(rule, dtstart).expect("valid");
        if let Some(zone) = zone {
            rec = rec.in_timezone(zone).expect("zone");
        }
        let s = rec.schedule().expect("schedule");
        let centre = utc(centre);
        let mut t = centre - TimeDelta::minutes(half_width_min);
        while t < centre + TimeDelta::minutes(half_width_min) {
            assert_eq!(s.next_after(t), brute_next(&s, t), "{rule} {zone:?} t={t}");
            t += TimeDelta::seconds(step_secs);
        }
    }

    /// Dense sweeps where random sampling rarely lands: DST changes (gap,
    /// overlap, Lord Howe's 30 minutes, a midnight gap) and sub-daily rules
    /// that must fall back to the full walk.
    #[test]
    fn sweeps_match_full_expansion() {
        let berlin = Some("Europe/Berlin");
        let lord_howe = Some("Australia/Lord_Howe");
        let sao_paulo = Some("America/Sao_Paulo");
        let rule = "FREQ=MINUTELY;INTERVAL=25";
        sweep(
            rule,
            berlin,
            "2025-03-20T00:05:00Z",
            "2025-03-30T01:00:00Z",
            1_800,
            433,
        );
        sweep(
            rule,
            berlin,
            "2025-10-16T00:05:00Z",
            "2025-10-26T01:00:00Z",
            1_800,
            433,
        );
        let rule = "FREQ=HOURLY;INTERVAL=5;BYMINUTE=10,50";
        sweep(
            rule,
            lord_howe,
            "2025-03-01T00:00:00Z",
            "2025-04-05T15:00:00Z",
            1_800,
            433,
        );
        let rule = "FREQ=MINUTELY;INTERVAL=20";
        sweep(
            rule,
            lord_howe,
            "2025-09-28T00:00:00Z",
            "2025-10-04T15:30:00Z",
            1_800,
            433,
        );
        let rule = "FREQ=DAILY;BYHOUR=2;BYMINUTE=30";
        sweep(
            rule,
            berlin,
            "2024-01-01T00:00:00Z",
            "2025-03-30T01:00:00Z",
            3_000,
            1_301,
        );
        // Sao Paulo's 2018 DST started at midnight.
        let rule = "FREQ=DAILY;BYHOUR=0,12";
        sweep(
            rule,
            sao_paulo,
            "2018-01-01T03:00:00Z",
            "2018-11-04T03:00:00Z",
            3_000,
            1_301,
        );
        let rule = "FREQ=WEEKLY;INTERVAL=2;BYDAY=SU;BYHOUR=0,2;WKST=SU";
        sweep(
            rule,
            sao_paulo,
            "2017-01-01T03:00:00Z",
            "2018-11-04T03:00:00Z",
            20_000,
            3_001,
        );
        // Fall-back rules: the crate does not walk a lattice here.
        let rule = "FREQ=SECONDLY;INTERVAL=7;BYMINUTE=0,1";
        sweep(
            rule,
            None,
            "2025-01-01T00:00:00Z",
            "2025-01-01T03:00:00Z",
            60,
            61,
        );
        let rule = "FREQ=MINUTELY;INTERVAL=15;BYHOUR=9,10;BYDAY=MO,TU,WE,TH,FR";
        sweep(
            rule,
            None,
            "2025-01-04T09:00:00Z",
            "2025-01-20T10:00:00Z",
            3_000,
            1_301,
        );
    }

    /// Random rules: `(text, FREQ, seconds per INTERVAL)`. Parts are drawn
    /// per frequency so that most rules are valid and have slots.
    fn rule_strategy() -> impl Strategy<Value = (String, Frequency, i64)> {
        let freq = prop_oneof![
            Just(Frequency::Yearly),
            Just(Frequency::Monthly),
            Just(Frequency::Weekly),
            Just(Frequency::Daily),
            Just(Frequency::Hourly),
            Just(Frequency::Minutely),
            Just(Frequency::Secondly),
        ];
        let list = |p: f64, lo: i32, hi: i32, n: usize| {
            proptest::option::weighted(p, proptest::collection::vec(lo..=hi, 1..=n))
        };
        let weekday = prop_oneof![
            Just("MO"),
            Just("TU"),
            Just("WE"),
            Just("TH"),
            Just("FR"),
            Just("SA"),
            Just("SU")
        ];
        let days = proptest::option::weighted(
            0.3,
            proptest::collection::vec(
                (prop_oneof![2 => Just(0), 1 => -5..=5], weekday.clone()),
                1..=3,
            ),
        );
        (
            freq,
            prop_oneof![3 => 1..=3u16, 1 => 1..=30u16, 1 => Just(60u16), 1 => Just(15u16)],
            (
                list(0.25, 1, 12, 2),
                list(0.25, -31, 31, 2),
                days,
                list(0.2, -366, 366, 2),
                list(0.2, -53, 53, 2),
            ),
            (
                list(0.3, 0, 23, 3),
                list(0.3, 0, 59, 3),
                list(0.3, 0, 59, 2),
                list(0.15, -3, 3, 2),
            ),
            (
                weekday,
                proptest::option::weighted(0.15, 1..=40u32),
                any::<bool>(),
            ),
        )
            .prop_map(|(freq, interval, days_parts, time_parts, misc)| {
                let (by_month, by_month_day, by_day, by_year_day, by_week_no) = days_parts;
                let (by_hour, by_minute, by_second, by_set_pos) = time_parts;
                let (wkst, count, no_day_filter) = misc;
                let sub_daily = freq >= Frequency::Hourly;
                let mut parts = vec![format!("FREQ={freq}"), format!("INTERVAL={interval}")];
                let mut push = |key: &str, v: Option<Vec<i32>>, keep: bool| {
                    let joined = v
                        .unwrap_or_default()
                        .iter()
                        .filter(|x| **x != 0)
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    if keep && !joined.is_empty() {
                        parts.push(format!("{key}={joined}"));
                    }
                };
                // Half the sub-daily rules get no day filter, so that the
                // re-anchored MINUTELY/SECONDLY path is exercised too.
                let days_ok = !(sub_daily && no_day_filter);
                push("BYMONTH", by_month, days_ok);
                push(
                    "BYMONTHDAY",
                    by_month_day,
                    days_ok && freq != Frequency::Weekly,
                );
                push("BYYEARDAY", by_year_day, freq == Frequency::Yearly);
                push("BYWEEKNO", by_week_no, freq == Frequency::Yearly);
                push("BYHOUR", by_hour, true);
                push("BYMINUTE", by_minute, true);
                push("BYSECOND", by_second, true);
                // Sub-daily periods hold few slots; BYSETPOS there is mostly empty.
                push("BYSETPOS", by_set_pos, freq <= Frequency::Hourly);
                if let Some(days) = by_day.filter(|_| days_ok) {
                    let nth_ok = matches!(freq, Frequency::Monthly | Frequency::Yearly);
                    let list: Vec<String> = days
                        .iter()
                        .map(|(n, d)| {
                            if nth_ok && *n != 0 {
                                format!("{n}{d}")
                            } else {
                                (*d).to_owned()
                            }
                        })
                        .collect();
                    parts.push(format!("BYDAY={}", list.join(",")));
                }
                parts.push(format!("WKST={wkst}"));
                if let Some(count) = count {
                    parts.push(format!("COUNT={count}"));
                }
                let unit = match freq {
                    Frequency::Yearly => 366 * 86_400,
                    Frequency::Monthly => 31 * 86_400,
                    Frequency::Weekly => 7 * 86_400,
                    Frequency::Daily => 86_400,
                    Frequency::Hourly => 3_600,
                    Frequency::Minutely => 60,
                    Frequency::Secondly => 1,
                };
                (parts.join(";"), freq, unit * i64::from(interval))
            })
    }

    const ZONES: [Option<&str>; 6] = [
        None,
        Some("Europe/Berlin"),
        Some("America/New_York"),
        Some("Australia/Lord_Howe"),
        Some("America/Sao_Paulo"),
        Some("UTC"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn next_after_matches_full_expansion(
            (rule, freq, period) in rule_strategy(),
            zone in 0..ZONES.len(),
            offset_min in prop_oneof![Just(0i32), -600..=840i32],
            start_secs in 788_918_400i64..2_051_222_400i64, // 1995 .. 2035
            start_millis in prop_oneof![3 => Just(0u32), 1 => 0..1000u32],
            periods_ahead in -3i64..400,
            jitter in 0.0f64..1.0,
            until_periods in proptest::option::weighted(0.2, 1i64..300),
            exclude in proptest::collection::vec(0usize..4, 0..3),
        ) {
            let offset = FixedOffset::east_opt(offset_min * 60).expect("offset");
            let dtstart = DateTime::from_timestamp(start_secs, start_millis * 1_000_000)
                .expect("start")
                .with_timezone(&offset);
            // Keep the brute-force walk short for the fine-grained rules.
            let scale = match freq {
                Frequency::Minutely => 12,
                Frequency::Secondly => 60,
                _ => 1,
            };
            let span = period * periods_ahead * scale;
            let t = dtstart.with_timezone(&Utc)
                + TimeDelta::seconds(span)
                + TimeDelta::milliseconds((jitter * (period as f64) * 1000.0) as i64);
            let mut rule = rule;
            if let Some(n) = until_periods {
                let until = dtstart.with_timezone(&Utc) + TimeDelta::seconds(period * n * scale);
                rule.push_str(&format!(";UNTIL={}", until.format("%Y%m%dT%H%M%SZ")));
            }
            let mut rec = Recurrence {
                rrule: rule.clone(),
                dtstart,
                exdates: Vec::new(),
                timezone: ZONES[zone].map(str::to_owned),
            };
            let Ok(schedule) = rec.schedule() else {
                // Rules the crate rejects are out of scope here.
                return Ok(());
            };
            let walk = full_walk(&schedule, t);
            if walk.is_empty() {
                // No slot at all: nothing to compare but the crate's loop guard.
                return Ok(());
            }
            // Exclude a few of the slots right after `t`.
            let mut cursor = t;
            for (i, skip) in exclude.iter().enumerate() {
                for _ in 0..*skip {
                    match walk_next(&schedule, &walk, cursor) {
                        Some(next) => cursor = next,
                        None => break,
                    }
                }
                if let Some(next) = walk_next(&schedule, &walk, cursor) {
                    let shown = FixedOffset::east_opt(3600 * (i as i32 + 1)).expect("offset");
                    rec.exdates.push(next.with_timezone(&shown));
                }
            }
            let schedule = rec.schedule().expect("still valid");
            let got = schedule.next_after(t);
            let expected = walk_next(&schedule, &walk, t);
            prop_assert_eq!(got, expected, "rule {} zone {:?} dtstart {} t {}", rule, ZONES[zone], dtstart, t);
            if let Some(slot) = got {
                // Chaining gives the next one too.
                prop_assert_eq!(schedule.next_after(slot), walk_next(&schedule, &walk, slot));
            }
            let before_start = schedule.start - TimeDelta::milliseconds(1);
            prop_assert_eq!(schedule.first(), walk_next(&schedule, &walk, before_start));
        }

        #[test]
        fn utc_expansion_matches_rrule_text_parser(
            (rule, _freq, _period) in rule_strategy(),
            start_secs in 788_918_400i64..2_051_222_400i64,
        ) {
            // Our rule handling versus the crate's own DTSTART/RRULE parser.
            let dtstart = DateTime::from_timestamp(start_secs, 0).expect("start");
            let rec = Recurrence {
                rrule: rule.clone(),
                dtstart: dtstart.fixed_offset(),
                exdates: Vec::new(),
                timezone: None,
            };
            let text = format!("DTSTART:{}\nRRULE:{rule}", dtstart.format("%Y%m%dT%H%M%SZ"));
            let (Ok(schedule), Ok(set)) = (rec.schedule(), RRuleSet::from_str(&text)) else {
                return Ok(());
            };
            let theirs: Vec<DateTime<Utc>> = set
                .limit()
                .into_iter()
                .take(5)
                .map(|d| d.with_timezone(&Utc))
                .collect();
            let mut ours = Vec::new();
            let mut next = schedule.first();
            while let Some(slot) = next.filter(|_| ours.len() < 5) {
                ours.push(slot);
                next = schedule.next_after(slot);
            }
            prop_assert_eq!(ours, theirs, "rule {}", rule);
        }
    }
}

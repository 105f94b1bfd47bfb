//! The stored [`Recurrence`] and its builder; [`Recurrence::schedule`]
//! validates it into a [`Schedule`].

use chrono::{DateTime, FixedOffset, SubsecRound, Utc};
use rrule::RRuleSet;
use serde::{Deserialize, Serialize};

use super::parse::parse_rule;
use super::reanchor::Reanchor;
use super::zone::{Zone, lookup_zone};
use super::{RecurrenceError, Schedule};

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

#[cfg(test)]
mod tests {
    use super::*;

    // ---- recurrence_test.go: TestFindOccurrence / TestCalculateNextOccurrence

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

    // ---- fs_model_test.go recurrence cases

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
}

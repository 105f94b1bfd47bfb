//! Recurrence: RFC 5545 RRULE schedules for generator tasks.
//! (Stub — being completed.)

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

/// A recurring schedule: an RRULE anchored at DTSTART, minus EXDATEs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recurrence {
    /// RFC 5545 rule body, e.g. `FREQ=WEEKLY;BYDAY=MO`.
    pub rrule: String,
    /// The anchor, with the offset the user gave.
    pub dtstart: DateTime<FixedOffset>,
    /// Instants to skip.
    #[serde(default)]
    pub exdates: Vec<DateTime<FixedOffset>>,
}

impl Recurrence {
    /// Parses and validates a rule and an RFC 3339 DTSTART.
    pub fn new(rrule: &str, dtstart: &str) -> Result<Self, RecurrenceError> {
        let dtstart =
            DateTime::parse_from_rfc3339(dtstart).map_err(|e| RecurrenceError::InvalidDtStart {
                value: dtstart.to_owned(),
                reason: e.to_string(),
            })?;
        let rec = Self {
            rrule: rrule.to_owned(),
            dtstart,
            exdates: Vec::new(),
        };
        rec.schedule()?;
        Ok(rec)
    }

    /// Builds the schedule, validating the rule.
    pub fn schedule(&self) -> Result<Schedule, RecurrenceError> {
        if self.rrule.trim().is_empty() {
            return Err(RecurrenceError::MissingRule);
        }
        Ok(Schedule {
            start: self.dtstart.with_timezone(&Utc),
        })
    }
}

/// A validated schedule that answers "first slot" and "next slot after t".
#[derive(Debug, Clone)]
pub struct Schedule {
    start: DateTime<Utc>,
}

impl Schedule {
    /// The earliest slot at or after DTSTART, or `None` when the rule has none.
    pub fn first(&self) -> Option<DateTime<Utc>> {
        Some(self.start)
    }

    /// The earliest slot strictly after `t`, or `None` when the rule is exhausted.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        Some(t + chrono::TimeDelta::days(7))
    }
}

/// Why a recurrence is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    /// The rule is empty.
    #[error("RRule is required")]
    MissingRule,
    /// DTSTART is not RFC 3339.
    #[error("invalid DTStart {value:?} (must be RFC3339): {reason}")]
    InvalidDtStart {
        /// The rejected value.
        value: String,
        /// Parser message.
        reason: String,
    },
    /// The rule does not parse.
    #[error("invalid RRule {rule:?}: {reason}")]
    InvalidRule {
        /// The rejected rule.
        rule: String,
        /// Parser message.
        reason: String,
    },
    /// The rule has no slot at all.
    #[error("recurrence has no valid occurrences")]
    NoOccurrences,
}

//! Time zones: the clock a rule is expanded on (DTSTART's fixed offset or
//! an IANA zone) and the conversions between it and UTC instants.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use rrule::Tz;

use super::RecurrenceError;

/// Where the rule's wall clock lives.
#[derive(Debug, Clone, Copy)]
pub(super) enum Zone {
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
    pub(super) fn to_expansion(self, t: DateTime<Utc>) -> Option<DateTime<Tz>> {
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
    pub(super) fn to_instant(self, t: DateTime<Tz>) -> Option<DateTime<Utc>> {
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
    pub(super) fn start_at_wall(self, wall: NaiveDateTime) -> Option<DateTime<Tz>> {
        self.expansion_tz().from_local_datetime(&wall).earliest()
    }

    /// UNTIL on the expansion clock; `rrule` wants it in UTC.
    pub(super) fn until_value(self, until: DateTime<Utc>) -> Option<DateTime<Tz>> {
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
    pub(super) fn is_even_around(self, t: DateTime<Utc>) -> bool {
        match self {
            Self::Fixed(_) => true,
            Self::Named(tz) => Self::offset_constant(tz, t, 26, 26),
        }
    }

    /// Whether `slot` may have been moved forward out of a DST gap earlier
    /// that day; a slot yielded after it could then be earlier.
    pub(super) fn may_be_shifted(self, slot: DateTime<Utc>) -> bool {
        match self {
            Self::Fixed(_) => false,
            Self::Named(tz) => !Self::offset_constant(tz, slot, 25, 0),
        }
    }
}

/// Resolves an IANA zone name (e.g. `Europe/Berlin`) with chrono-tz, the
/// zone database `rrule` itself uses.
pub(super) fn lookup_zone(name: &str) -> Result<Tz, RecurrenceError> {
    name.parse::<chrono_tz::Tz>()
        .map(Tz::from)
        .map_err(|reason| RecurrenceError::InvalidTimeZone {
            name: name.to_owned(),
            reason: reason.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use crate::recurrence::Recurrence;
    use crate::recurrence::test_support::{sched, utc};

    // ---- semantics

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
}

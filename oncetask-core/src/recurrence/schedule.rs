//! [`Schedule`]: the search for the first slot and the next slot after an
//! instant, over the full expansion or a re-anchored one.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use rrule::RRuleSet;

use super::reanchor::Reanchor;
use super::zone::Zone;

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
    pub(super) zone: Zone,
    /// DTSTART at full precision: no slot is earlier.
    pub(super) start: DateTime<Utc>,
    /// The real UNTIL instant, for an early "exhausted" answer.
    pub(super) until: Option<DateTime<Utc>>,
    /// EXDATE instants in whole seconds, sorted.
    pub(super) exdates: Vec<i64>,
    /// How to start later than DTSTART; `None` where that is unsafe.
    pub(super) reanchor: Option<Reanchor>,
    /// The full expansion from DTSTART.
    pub(super) base: RRuleSet,
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

    /// The latest `n` slots strictly before `before`, oldest first (fewer
    /// when the schedule has fewer): e.g. the slots whose occurrences a
    /// generator has spawned by now.
    ///
    /// The rule is expanded forward only, so the search widens a window
    /// back from `before` (an hour, then four times longer each round)
    /// until it holds `n` slots or reaches the first slot.
    ///
    /// ```
    /// use chrono::{DateTime, Utc};
    /// use oncetask_core::Recurrence;
    ///
    /// let schedule = Recurrence::new("FREQ=DAILY", "2025-01-01T09:00:00Z")?.schedule()?;
    /// let at = |s: &str| s.parse::<DateTime<Utc>>().expect("timestamp");
    /// assert_eq!(
    ///     schedule.slots_before(at("2025-01-04T09:00:00Z"), 2),
    ///     vec![at("2025-01-02T09:00:00Z"), at("2025-01-03T09:00:00Z")]
    /// );
    /// assert!(schedule.slots_before(at("2025-01-01T09:00:00Z"), 2).is_empty());
    /// # Ok::<(), oncetask_core::RecurrenceError>(())
    /// ```
    pub fn slots_before(&self, before: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let Some(first) = self.first() else {
            return Vec::new();
        };
        if n == 0 || first >= before {
            return Vec::new();
        }
        let mut window = TimeDelta::hours(1);
        loop {
            let from = before
                .checked_sub_signed(window)
                .unwrap_or(first)
                .max(first);
            let mut slots = Vec::new();
            let mut slot = Some(from).filter(|f| *f == first);
            if slot.is_none() {
                slot = self.next_after(from);
            }
            while let Some(s) = slot.filter(|s| *s < before) {
                slots.push(s);
                slot = self.next_after(s);
            }
            if slots.len() >= n || from == first {
                let skip = slots.len().saturating_sub(n);
                return slots.split_off(skip);
            }
            match window.checked_mul(4) {
                Some(wider) => window = wider,
                None => return slots,
            }
        }
    }

    /// Finds the earliest slot `> after` (or `>= after` when `inclusive`).
    pub(super) fn search(&self, after: DateTime<Utc>, inclusive: bool) -> Search {
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

    pub(super) fn is_excluded(&self, slot: DateTime<Utc>) -> bool {
        self.exdates.binary_search(&slot.timestamp()).is_ok()
    }
}

/// The result of one search, with the number of expanded slots it looked at.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Search {
    pub(super) slot: Option<DateTime<Utc>>,
    pub(super) examined: u64,
}

/// The `rrule` crate stops at the year 10000; nothing can come after this.
fn latest_slot_bound() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(10_001, 1, 2)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MAX_UTC, |n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use crate::recurrence::test_support::{sched, utc};
    use crate::recurrence::{Recurrence, RecurrenceError};

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
}

//! Re-anchoring: restarting the expansion at a later DTSTART that yields the
//! same slots, so a search costs a few periods whatever DTSTART's age (see
//! "Cost (W18)" in the `recurrence` module docs).

use chrono::{
    DateTime, Datelike, Month, NaiveDate, NaiveDateTime, TimeDelta, Timelike, Utc, Weekday,
};
use rrule::{Frequency, NWeekday, RRule, RRuleSet, Tz, Unvalidated};

use super::zone::Zone;

/// How to restart the expansion later than DTSTART without changing it.
#[derive(Debug, Clone)]
pub(super) struct Reanchor {
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
    pub(super) fn plan(rule: RRule<Unvalidated>, anchor: &DateTime<Tz>) -> Option<Self> {
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
    pub(super) fn set_for(&self, after: DateTime<Utc>, zone: Zone) -> Option<RRuleSet> {
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

#[cfg(test)]
mod tests {
    use crate::recurrence::Recurrence;
    use crate::recurrence::test_support::{sched, utc};

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
}

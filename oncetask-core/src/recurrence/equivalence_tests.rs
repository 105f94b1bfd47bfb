//! `Schedule::next_after` (re-anchored) against the full expansion from
//! DTSTART, and our rule handling against the `rrule` crate's own parser.

use std::str::FromStr;

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use proptest::prelude::*;
use rrule::{Frequency, RRuleSet};

use super::test_support::utc;
use super::{Recurrence, Schedule};

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
        if slot > after && slot >= s.start && !s.is_excluded(slot) && best.is_none_or(|b| slot < b)
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
fn walk_next(s: &Schedule, slots: &[DateTime<Utc>], after: DateTime<Utc>) -> Option<DateTime<Utc>> {
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

//! Throughput: tasks finished per minute, per kind, over the last
//! [`MINUTES`] minutes.
//!
//! No backend keeps a history of finishes that can be read cheaply, so the
//! dashboard samples the per-kind counts of finished tasks each time it
//! reads the overview (at each refresh while an overview page is open) and
//! charts the increases between samples. The chart therefore covers the
//! time a page was open; tasks pruned or reset meanwhile lower the count
//! and are not counted as negative throughput.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use oncetask::{QueueStats, TaskStatus};

/// Minutes charted.
pub(crate) const MINUTES: usize = 10;

/// Samples kept at most (one per overview read).
const MAX_SAMPLES: usize = 2_000;

/// Finished tasks of each kind at one instant.
struct Sample {
    at: DateTime<Utc>,
    finished: BTreeMap<String, u64>,
}

/// The samples taken so far.
#[derive(Default)]
pub(crate) struct Sampler {
    samples: Mutex<VecDeque<Sample>>,
}

/// One kind's chart: tasks finished in each of the last [`MINUTES`]
/// minutes, oldest first, and whether the samples cover that minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Series {
    pub(crate) per_minute: Vec<Option<u64>>,
}

impl Sampler {
    /// Records the finished counts of `stats` and returns every kind's
    /// series up to `stats.now`.
    pub(crate) fn record(&self, stats: &QueueStats) -> BTreeMap<String, Series> {
        let finished = stats
            .kinds
            .iter()
            .map(|(kind, k)| {
                let done = k.count(TaskStatus::Completed)
                    + k.count(TaskStatus::Failed)
                    + k.count(TaskStatus::Cancelled);
                (kind.clone(), done)
            })
            .collect();
        let now = stats.now;
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let horizon = now - TimeDelta::minutes(MINUTES as i64);
        // Keep the last sample before the window: it is the base of the first delta.
        while samples.len() >= 2 && samples.get(1).is_some_and(|s| s.at <= horizon) {
            samples.pop_front();
        }
        match samples.back_mut() {
            // Another read at the same instant: the later counts win.
            Some(last) if last.at >= now => last.finished = finished,
            _ => samples.push_back(Sample { at: now, finished }),
        }
        while samples.len() > MAX_SAMPLES {
            samples.pop_front();
        }
        series(&samples, now)
    }
}

/// Each kind's finishes per minute from consecutive samples.
fn series(samples: &VecDeque<Sample>, now: DateTime<Utc>) -> BTreeMap<String, Series> {
    let start = now - TimeDelta::minutes(MINUTES as i64);
    let bucket = |at: DateTime<Utc>| -> Option<usize> {
        let offset = (at - start).num_milliseconds();
        if offset <= 0 {
            return None;
        }
        let index = usize::try_from((offset - 1) / 60_000).ok()?;
        (index < MINUTES).then_some(index)
    };
    let mut out: BTreeMap<String, Series> = BTreeMap::new();
    for kind in samples.iter().flat_map(|s| s.finished.keys()) {
        out.entry(kind.clone()).or_insert_with(|| Series {
            per_minute: vec![None; MINUTES],
        });
    }
    for pair in samples.iter().zip(samples.iter().skip(1)) {
        let (before, after) = pair;
        let Some(index) = bucket(after.at) else {
            continue;
        };
        for (kind, series) in out.iter_mut() {
            let was = before.finished.get(kind).copied().unwrap_or(0);
            let is = after.finished.get(kind).copied().unwrap_or(0);
            let slot = &mut series.per_minute[index];
            *slot = Some(slot.unwrap_or(0) + is.saturating_sub(was));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oncetask::KindStats;
    use oncetask::StatusCounts;

    fn stats(now: DateTime<Utc>, completed: u64, failed: u64) -> QueueStats {
        let counts = StatusCounts::from([
            (TaskStatus::Completed, completed),
            (TaskStatus::Failed, failed),
            (TaskStatus::Pending, 7),
        ]);
        QueueStats::new(
            "test",
            now,
            BTreeMap::from([("k".to_owned(), KindStats::new(counts, None, None))]),
        )
    }

    #[test]
    fn finishes_between_samples_land_in_their_minute() {
        let sampler = Sampler::default();
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let first = sampler.record(&stats(t0, 10, 0));
        assert_eq!(
            first["k"].per_minute,
            vec![None; MINUTES],
            "one sample: no rate"
        );
        sampler.record(&stats(t0 + TimeDelta::seconds(30), 14, 1));
        let later = sampler.record(&stats(t0 + TimeDelta::seconds(90), 20, 1));
        let minutes = &later["k"].per_minute;
        assert_eq!(minutes[MINUTES - 1], Some(6), "{minutes:?}");
        assert_eq!(minutes[MINUTES - 2], Some(5), "{minutes:?}");
        assert_eq!(minutes[MINUTES - 3], None);
        // A prune lowers the count: no negative throughput (the last
        // minute, now t0+40s..t0+100s, keeps the 6 of t0+90s).
        let pruned = sampler.record(&stats(t0 + TimeDelta::seconds(100), 2, 0));
        assert_eq!(pruned["k"].per_minute[MINUTES - 1], Some(6));
    }

    #[test]
    fn old_samples_leave_the_window() {
        let sampler = Sampler::default();
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        sampler.record(&stats(t0, 0, 0));
        sampler.record(&stats(t0 + TimeDelta::seconds(10), 5, 0));
        let much_later = sampler.record(&stats(t0 + TimeDelta::minutes(30), 5, 0));
        assert!(
            much_later["k"]
                .per_minute
                .iter()
                .all(|m| m.is_none_or(|n| n == 0))
        );
        let kept = sampler.samples.lock().expect("lock").len();
        assert!(kept <= 2, "{kept}");
    }
}

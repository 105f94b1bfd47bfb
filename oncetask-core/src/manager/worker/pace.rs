//! How long a kind's handlers take: it sizes how far its loop claims ahead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A moving average of durations (wall clock): a kind's handler run times,
/// shared by its runs, which record, and its claiming loop, which reads;
/// and the round trips of that loop's claims.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    /// Mean in nanoseconds as `f64` bits; 0 until the first run.
    mean_nanos: AtomicU64,
}

/// Weight of the newest run in the mean.
const WEIGHT: f64 = 0.2;

impl Pace {
    /// Adds one run's time to the mean. Concurrent updates may lose one
    /// another's sample: the mean is a sizing hint, not a measurement.
    pub(crate) fn record(&self, took: Duration) {
        let sample = took.as_nanos() as f64;
        let old = f64::from_bits(self.mean_nanos.load(Ordering::Relaxed));
        let mean = if old == 0.0 {
            sample
        } else {
            old + WEIGHT * (sample - old)
        };
        self.mean_nanos.store(mean.to_bits(), Ordering::Relaxed);
    }

    /// The mean run time; zero before the first run.
    pub(crate) fn mean(&self) -> Duration {
        let nanos = f64::from_bits(self.mean_nanos.load(Ordering::Relaxed));
        Duration::from_nanos(nanos.max(0.0) as u64)
    }

    /// About how many runs `slots` worker slots finish within `within` at
    /// the mean run time (0 before the first run is timed).
    pub(crate) fn runs_within(&self, slots: usize, within: Duration) -> usize {
        let mean = self.mean();
        if mean.is_zero() {
            return 0;
        }
        let runs = within.as_secs_f64() / mean.as_secs_f64() * slots as f64;
        if runs >= usize::MAX as f64 {
            usize::MAX
        } else {
            runs as usize
        }
    }

    /// How many of `wanted` tasks `slots` worker slots can be handed ahead
    /// so that the last one waits no more than `wait` for its slot at the
    /// mean run time (all of them before the first run is timed).
    pub(crate) fn ahead(&self, wanted: usize, slots: usize, wait: Duration) -> usize {
        let mean = self.mean();
        if mean.is_zero() {
            return wanted;
        }
        let fits = wait.as_secs_f64() / mean.as_secs_f64() * slots as f64;
        wanted.min(fits as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_handlers_get_the_whole_claim_ahead_and_long_ones_none() {
        let pace = Pace::default();
        let wait = Duration::from_millis(500);
        assert_eq!(pace.ahead(16, 1, wait), 16, "untimed: as configured");
        pace.record(Duration::from_millis(1));
        assert_eq!(pace.ahead(16, 1, wait), 16);
        for _ in 0..100 {
            pace.record(Duration::from_secs(2));
        }
        assert_eq!(pace.ahead(16, 1, wait), 0);
        let slow = Pace::default();
        slow.record(Duration::from_secs(2));
        assert_eq!(slow.mean(), Duration::from_secs(2));
        assert_eq!(slow.ahead(64, 64, wait), 16, "64 slots share the wait");
    }

    #[test]
    fn runs_within_counts_what_the_slots_finish_in_that_time() {
        let pace = Pace::default();
        let claim = Duration::from_millis(2);
        assert_eq!(pace.runs_within(8, claim), 0, "untimed: nothing counted");
        pace.record(Duration::from_millis(1));
        assert_eq!(pace.runs_within(8, claim), 16);
        assert_eq!(pace.runs_within(1, Duration::from_micros(500)), 0);
        pace.record(Duration::from_nanos(1));
        assert_eq!(pace.runs_within(usize::MAX, Duration::MAX), usize::MAX);
    }
}

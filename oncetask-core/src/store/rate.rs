//! Rate limiter windows kept by the store, so that every process sharing
//! it draws starts from one budget
//! ([`Store::take_starts`](super::Store::take_starts)).

use chrono::{DateTime, Utc};

/// A draw on (or a return to) one limiter: the starts of `kind` (and of
/// one resource key, when set) in `env`, in the fixed window that begins at
/// `window_start` and lasts `period_ms`.
///
/// A store keeps, per limiter, the window it last saw and the starts taken
/// in it. Taking `count` starts grants `min(count, limit - taken)` when the
/// stored window is the requested one, `min(count, limit)` (and replaces
/// it) when the stored window is older or there is none, and 0 when the
/// stored window is newer (a caller whose clock lags never adds to a
/// window that has passed for the others). Returning starts lowers the
/// count of the stored window if it is the requested one, never below 0.
/// Each request is atomic on its own, also against other processes.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use oncetask_core::store::StartsRequest;
///
/// let now = Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, 0).unwrap()
///     + chrono::TimeDelta::milliseconds(1_700);
/// let request = StartsRequest::new("prod", "sync", None, now, 1_000, 100, 8);
/// assert_eq!(request.window_start.timestamp_millis() % 1_000, 0, "aligned to the period");
/// assert_eq!(request.window_end() - request.window_start, chrono::TimeDelta::seconds(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartsRequest {
    /// Environment.
    pub env: String,
    /// Task kind.
    pub kind: String,
    /// The resource key of a per-key limiter; `None` for the kind's own.
    pub resource_key: Option<String>,
    /// Start of the window: a multiple of the period since the Unix epoch.
    pub window_start: DateTime<Utc>,
    /// Length of the window, in milliseconds (at least 1).
    pub period_ms: u64,
    /// Most starts the window allows.
    pub limit: u32,
    /// Starts to take (or to give back).
    pub count: u32,
}

impl StartsRequest {
    /// A request for the window of length `period_ms` that holds `now`.
    pub fn new(
        env: impl Into<String>,
        kind: impl Into<String>,
        resource_key: Option<String>,
        now: DateTime<Utc>,
        period_ms: u64,
        limit: u32,
        count: u32,
    ) -> Self {
        Self {
            env: env.into(),
            kind: kind.into(),
            resource_key,
            window_start: window_start(now, period_ms),
            period_ms: period_ms.max(1),
            limit,
            count,
        }
    }

    /// When the window ends (the next one begins).
    pub fn window_end(&self) -> DateTime<Utc> {
        let period = i64::try_from(self.period_ms).unwrap_or(i64::MAX);
        self.window_start + chrono::TimeDelta::milliseconds(period)
    }

    /// The starts a limiter that holds `taken` starts of `stored_window`
    /// grants this request, and its count afterwards (the rule every store
    /// applies; see the type's docs).
    pub fn grant(
        &self,
        stored: Option<(DateTime<Utc>, u32)>,
    ) -> (u32, Option<(DateTime<Utc>, u32)>) {
        match stored {
            Some((window, _)) if window > self.window_start => (0, stored),
            Some((window, taken)) if window == self.window_start => {
                let granted = self.count.min(self.limit.saturating_sub(taken));
                (granted, Some((window, taken + granted)))
            }
            _ => {
                let granted = self.count.min(self.limit);
                (granted, Some((self.window_start, granted)))
            }
        }
    }

    /// A limiter's count after this request's starts are given back.
    pub fn give_back(&self, stored: Option<(DateTime<Utc>, u32)>) -> Option<(DateTime<Utc>, u32)> {
        match stored {
            Some((window, taken)) if window == self.window_start => {
                Some((window, taken.saturating_sub(self.count)))
            }
            other => other,
        }
    }
}

/// The start of the window of length `period_ms` that holds `now`:
/// windows are aligned to multiples of the period since the Unix epoch, so
/// every process computes the same ones.
pub fn window_start(now: DateTime<Utc>, period_ms: u64) -> DateTime<Utc> {
    let period = i64::try_from(period_ms.max(1)).unwrap_or(i64::MAX);
    let millis = now.timestamp_millis();
    let start = millis - millis.rem_euclid(period);
    DateTime::from_timestamp_millis(start).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).expect("in range")
    }

    #[test]
    fn windows_are_aligned_to_the_period() {
        assert_eq!(window_start(at(1_999), 1_000), at(1_000));
        assert_eq!(window_start(at(2_000), 1_000), at(2_000));
        assert_eq!(window_start(at(-1), 1_000), at(-1_000));
        assert_eq!(window_start(at(7), 0), at(7), "a 0 period is 1 ms");
    }

    #[test]
    fn grants_stop_at_the_limit_and_restart_with_the_next_window() {
        let mut request = StartsRequest::new("E", "k", None, at(1_500), 1_000, 10, 7);
        let (granted, stored) = request.grant(None);
        assert_eq!(granted, 7);
        let (granted, stored) = request.grant(stored);
        assert_eq!(granted, 3, "only what is left of the window");
        let (granted, stored) = request.grant(stored);
        assert_eq!(granted, 0);
        let stored = request.give_back(stored);
        assert_eq!(stored, Some((at(1_000), 3)), "7 given back");
        request.window_start = at(2_000);
        let (granted, next) = request.grant(stored);
        assert_eq!((granted, next), (7, Some((at(2_000), 7))), "a new window");
        request.window_start = at(1_000);
        assert_eq!(
            request.grant(next).0,
            0,
            "a lagging clock adds nothing to a past window"
        );
        assert_eq!(request.give_back(next), next, "nor gives back to it");
        assert_eq!(
            request.window_end() - request.window_start,
            TimeDelta::seconds(1)
        );
    }
}

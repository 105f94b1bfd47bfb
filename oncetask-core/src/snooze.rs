//! Snooze: a handler's "run this again later", which is not a failure.
//!
//! A snoozed run gives its lease back, does not count as an attempt, records
//! no error and leaves the retry backoff alone; the task's
//! [`snoozes`](crate::Task::snoozes) count goes up instead. (River once
//! counted snoozes as attempts and inflated backoff; Oban's snooze still
//! raises `max_attempts`: neither happens here.)

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// How far ahead a snooze may reach: about 10 years. A snooze further out is
/// refused ([`SnoozeTooFar`]) and the attempt fails instead: such a time is
/// almost always a unit mistake (milliseconds read as seconds).
pub const MAX_SNOOZE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// When a snoozed task runs again: after a delay from the end of the run, or
/// at a time. A time now or in the past runs the task again at once.
///
/// A handler returns it as [`HandlerOutcome::Snoozed`](crate::manager::HandlerOutcome::Snoozed),
/// or as the error of a `Result` (`Err(Snooze::after(..))?` works in a
/// closure handler that returns `Result<_, Box<dyn Error + Send + Sync>>`,
/// or any error type a `Snooze` converts into).
///
/// ```
/// use std::time::Duration;
/// use oncetask_core::Snooze;
///
/// let later = Snooze::after(Duration::from_secs(30));
/// let now = chrono::Utc::now();
/// assert_eq!(later.resolve(now)?, now + chrono::TimeDelta::seconds(30));
/// // The past means "at once".
/// let past = Snooze::until(now - chrono::TimeDelta::hours(1));
/// assert_eq!(past.resolve(now)?, now);
/// # Ok::<(), oncetask_core::SnoozeTooFar>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snooze(When);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    After(Duration),
    Until(DateTime<Utc>),
}

impl Snooze {
    /// Run again `delay` after the run ends.
    pub fn after(delay: Duration) -> Self {
        Self(When::After(delay))
    }

    /// Run again at `at` (at once if `at` is not in the future).
    pub fn until(at: DateTime<Utc>) -> Self {
        Self(When::Until(at))
    }

    /// The time the task becomes ready again, for a run that ended at
    /// `now`: never before `now`, and refused beyond [`MAX_SNOOZE`].
    pub fn resolve(self, now: DateTime<Utc>) -> Result<DateTime<Utc>, SnoozeTooFar> {
        let max = TimeDelta::from_std(MAX_SNOOZE).unwrap_or(TimeDelta::MAX);
        let limit = now
            .checked_add_signed(max)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let at = match self.0 {
            When::After(delay) => TimeDelta::from_std(delay)
                .ok()
                .and_then(|d| now.checked_add_signed(d)),
            When::Until(at) => Some(at),
        };
        match at {
            Some(at) if at <= limit => Ok(at.max(now)),
            _ => Err(SnoozeTooFar { requested: self }),
        }
    }
}

impl std::fmt::Display for Snooze {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            When::After(delay) => write!(f, "snoozed for {delay:?}"),
            When::Until(at) => write!(f, "snoozed until {}", crate::task::format_timestamp(at)),
        }
    }
}

/// A snooze is also an error value, so a handler that returns
/// `Result<_, E>` can snooze with `Err(snooze.into())`; the manager
/// records it as a snooze, never as a failure.
impl std::error::Error for Snooze {}

/// A snooze further ahead than [`MAX_SNOOZE`]: the run is recorded as a
/// failed attempt with this error, and nothing of the snooze is stored.
///
/// ```
/// use std::time::Duration;
/// use oncetask_core::{Snooze, MAX_SNOOZE};
///
/// let too_far = Snooze::after(MAX_SNOOZE + Duration::from_secs(1));
/// let err = too_far.resolve(chrono::Utc::now()).unwrap_err();
/// assert!(err.to_string().contains("more than 10 years ahead"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{requested} is more than 10 years ahead; refused")]
pub struct SnoozeTooFar {
    /// What the handler asked for.
    pub requested: Snooze,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::t0;

    #[test]
    fn a_snooze_resolves_from_the_end_of_the_run_and_never_into_the_past() {
        let now = t0();
        assert_eq!(
            Snooze::after(Duration::from_secs(5)).resolve(now),
            Ok(now + TimeDelta::seconds(5))
        );
        assert_eq!(Snooze::after(Duration::ZERO).resolve(now), Ok(now));
        assert_eq!(
            Snooze::until(now - TimeDelta::days(3)).resolve(now),
            Ok(now)
        );
        let exactly = now + TimeDelta::from_std(MAX_SNOOZE).expect("fits");
        assert_eq!(Snooze::until(exactly).resolve(now), Ok(exactly));
    }

    #[test]
    fn a_snooze_beyond_ten_years_is_refused() {
        let now = t0();
        let beyond = Snooze::after(MAX_SNOOZE + Duration::from_millis(1));
        assert_eq!(beyond.resolve(now), Err(SnoozeTooFar { requested: beyond }));
        assert!(Snooze::after(Duration::MAX).resolve(now).is_err());
        assert!(
            Snooze::until(DateTime::<Utc>::MAX_UTC)
                .resolve(now)
                .is_err()
        );
    }
}

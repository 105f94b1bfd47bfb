//! Rate limits: at most N starts of a kind (or of one resource key of it)
//! per period, drawn from limiters the store keeps, so the limit holds
//! across every process sharing the store.
//!
//! A start is a granted lease: every claimed task takes one (tasks claimed
//! ahead, retries and snoozed tasks that run again included). Windows are
//! fixed and aligned to multiples of the period since the Unix epoch, so no
//! aligned window ever holds more than N starts; a burst can put up to N
//! at the end of one window and N at the start of the next.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::store::StartsRequest;

/// At most `starts` starts per `period`.
///
/// ```
/// use std::time::Duration;
/// use oncetask_core::manager::{HandlerOptions, RateLimit};
///
/// // 100 emails a second across every process, and at most 2 a minute per
/// // recipient (the tasks' resource key).
/// let options = HandlerOptions::default()
///     .concurrency(8)
///     .rate_limit(RateLimit::new(100, Duration::from_secs(1)))
///     .rate_limit_per_resource_key(RateLimit::new(2, Duration::from_secs(60)));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    starts: u32,
    period: Duration,
}

impl RateLimit {
    /// At most `starts` starts per `period` (at least 1 start and 1 ms;
    /// registration refuses less).
    pub fn new(starts: u32, period: Duration) -> Self {
        Self { starts, period }
    }

    /// Starts per window.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The window's length.
    pub fn period(&self) -> Duration {
        self.period
    }

    pub(crate) fn period_ms(&self) -> u64 {
        u64::try_from(self.period.as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn validate(&self, what: &str) -> Result<(), Error> {
        if self.starts == 0 || self.period_ms() == 0 {
            return Err(Error::InvalidConfig(format!(
                "{what} needs at least 1 start per period of at least 1 ms (got {} per {:?})",
                self.starts, self.period
            )));
        }
        Ok(())
    }

    /// A request for `count` starts of the window holding `now`.
    pub(crate) fn request(
        &self,
        env: &str,
        kind: &str,
        resource_key: Option<&str>,
        now: DateTime<Utc>,
        count: u32,
    ) -> StartsRequest {
        StartsRequest::new(
            env,
            kind,
            resource_key.map(str::to_owned),
            now,
            self.period_ms(),
            self.starts,
            count,
        )
    }
}

/// A kind's limiter as this manager sees it: until when the store said its
/// window is spent, so the claiming loop does not ask again before then.
#[derive(Debug, Default)]
pub(crate) struct Spent {
    until: Mutex<Option<DateTime<Utc>>>,
}

impl Spent {
    /// The end of the spent window, while `now` is before it.
    pub(crate) fn until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let until = *self.until.lock().unwrap_or_else(PoisonError::into_inner);
        until.filter(|u| *u > now)
    }

    /// The window ending at `until` is spent.
    pub(crate) fn set(&self, until: DateTime<Utc>) {
        *self.until.lock().unwrap_or_else(PoisonError::into_inner) = Some(until);
    }
}

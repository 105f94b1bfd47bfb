//! Time source. Every time the core uses comes from a [`Clock`], so tests can
//! move time instead of sleeping.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

use crate::task::truncate_to_millis;

/// A source of "now" and a way to wait for a later instant.
#[async_trait]
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time, at millisecond precision.
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once `now() >= deadline`.
    async fn sleep_until(&self, deadline: DateTime<Utc>);
}

/// The wall clock, sleeping with tokio timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        truncate_to_millis(Utc::now())
    }

    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        loop {
            let left = deadline - self.now();
            if left <= TimeDelta::zero() {
                return;
            }
            tokio::time::sleep(left.to_std().unwrap_or_default()).await;
        }
    }
}

/// A clock that moves only when told to. Sleepers wake as soon as the clock
/// passes their deadline, so a 5-minute backoff is tested in microseconds.
///
/// ```
/// use std::time::Duration;
/// use oncetask_core::ManualClock;
/// let clock = ManualClock::new("2025-01-06T09:00:00Z".parse().unwrap());
/// let start = clock.now();
/// clock.advance(Duration::from_secs(300));
/// assert_eq!((clock.now() - start).num_seconds(), 300);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock frozen at `start` (truncated to milliseconds).
    pub fn new(start: DateTime<Utc>) -> Self {
        let (tx, _rx) = watch::channel(truncate_to_millis(start));
        Self { now: Arc::new(tx) }
    }

    /// Moves the clock forward by `by`, waking every sleeper whose deadline passed.
    pub fn advance(&self, by: std::time::Duration) {
        let by = TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
        self.now.send_modify(|now| {
            *now = truncate_to_millis(now.checked_add_signed(by).unwrap_or(*now));
        });
    }

    /// The clock's current time (also available through [`Clock::now`]).
    pub fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    /// Sets the clock to `to`. Moving backwards is allowed (to test clock skew).
    pub fn set(&self, to: DateTime<Utc>) {
        self.now.send_replace(truncate_to_millis(to));
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        ManualClock::now(self)
    }

    async fn sleep_until(&self, deadline: DateTime<Utc>) {
        let mut rx = self.now.subscribe();
        // The sender lives as long as `self`, so `wait_for` only fails if the
        // clock is dropped mid-wait; then there is nothing left to wait for.
        let _ = rx.wait_for(|now| *now >= deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleepers_wake_when_time_passes_their_deadline() {
        let clock = ManualClock::new(Utc::now());
        let deadline = clock.now() + TimeDelta::seconds(60);
        let c2 = clock.clone();
        let sleeper = tokio::spawn(async move { c2.sleep_until(deadline).await });
        tokio::task::yield_now().await;
        clock.advance(std::time::Duration::from_secs(30));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(std::time::Duration::from_secs(30));
        assert!(sleeper.await.is_ok());
    }
}

//! Retry policies: how long to wait after a failure, and when to give up
//! (docs/semantics.md S5).
//!
//! `attempts` is the task's attempt count after the current claim: 1 on the
//! first execution, 2 on the first retry, and so on.
//!
//! ```
//! use std::time::Duration;
//! use oncetask_core::{ExponentialBackoff, HandlerError, RetryPolicy};
//! let policy = ExponentialBackoff::default(); // 3 attempts, 1 s, x2, capped at 5 min
//! let err = HandlerError::msg("boom");
//! assert!(policy.should_retry(2, &err));
//! assert!(!policy.should_retry(3, &err));
//! assert_eq!(policy.next_retry_delay(2, &err), Duration::from_secs(2));
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::error::HandlerError;

/// Decides whether and when a failed task runs again.
pub trait RetryPolicy: Send + Sync + std::fmt::Debug {
    /// Whether to retry after the failure of attempt number `attempts`.
    fn should_retry(&self, attempts: u32, error: &HandlerError) -> bool;
    /// How long to wait before the retry.
    fn next_retry_delay(&self, attempts: u32, error: &HandlerError) -> Duration;
}

/// Exponential backoff: `base * multiplier^(attempts-1)`, capped at `max_delay`.
///
/// `max_attempts` bounds the total number of executions (0 = unlimited).
#[derive(Debug, Clone, PartialEq)]
pub struct ExponentialBackoff {
    /// Total executions allowed, first included; 0 means unlimited.
    pub max_attempts: u32,
    /// Delay after the first failure.
    pub base_delay: Duration,
    /// Upper bound for any delay.
    pub max_delay: Duration,
    /// Growth factor per attempt.
    pub multiplier: f64,
}

impl Default for ExponentialBackoff {
    /// 3 attempts, 1 s base, 5 min cap, x2: the Go defaults.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            multiplier: 2.0,
        }
    }
}

impl ExponentialBackoff {
    /// The default policy for cancellation handlers: 5 attempts, 1 s base, 10 min cap, x2.
    pub fn cancellation_default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(600),
            multiplier: 2.0,
        }
    }
}

fn attempts_left(max_attempts: u32, attempts: u32) -> bool {
    max_attempts == 0 || attempts < max_attempts
}

impl RetryPolicy for ExponentialBackoff {
    fn should_retry(&self, attempts: u32, _error: &HandlerError) -> bool {
        attempts_left(self.max_attempts, attempts)
    }

    fn next_retry_delay(&self, attempts: u32, _error: &HandlerError) -> Duration {
        let base = self.base_delay.as_secs_f64();
        let cap = self.max_delay.as_secs_f64();
        let exponent = attempts.saturating_sub(1).min(1024) as i32;
        let raw = base * self.multiplier.powi(exponent);
        let secs = if exponent == 0 || !raw.is_finite() {
            if exponent == 0 { base } else { cap }
        } else {
            raw.min(cap)
        };
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(self.max_delay)
    }
}

/// The same delay after every failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedDelay {
    /// Total executions allowed, first included; 0 means unlimited.
    pub max_attempts: u32,
    /// Delay between attempts; zero means "ready at once".
    pub delay: Duration,
}

impl RetryPolicy for FixedDelay {
    fn should_retry(&self, attempts: u32, _error: &HandlerError) -> bool {
        attempts_left(self.max_attempts, attempts)
    }

    fn next_retry_delay(&self, _attempts: u32, _error: &HandlerError) -> Duration {
        self.delay
    }
}

/// Never retry: the first failure is permanent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoRetry;

impl RetryPolicy for NoRetry {
    fn should_retry(&self, _attempts: u32, _error: &HandlerError) -> bool {
        false
    }

    fn next_retry_delay(&self, _attempts: u32, _error: &HandlerError) -> Duration {
        Duration::ZERO
    }
}

type DecideFn = dyn Fn(u32, &HandlerError) -> Option<Duration> + Send + Sync;

/// A policy from a closure that looks at the attempt count and the error:
/// `Some(delay)` retries after `delay`, `None` gives up.
///
/// ```
/// use std::time::Duration;
/// use oncetask_core::{CustomRetry, HandlerError, RetryPolicy};
/// // Retry "busy" errors forever every 10 s; give up on anything else.
/// let policy = CustomRetry::new(|_attempts, err: &HandlerError| {
///     err.message().contains("busy").then_some(Duration::from_secs(10))
/// });
/// assert!(policy.should_retry(7, &HandlerError::msg("busy")));
/// assert!(!policy.should_retry(1, &HandlerError::msg("bad input")));
/// ```
#[derive(Clone)]
pub struct CustomRetry {
    decide: Arc<DecideFn>,
}

impl CustomRetry {
    /// Wraps the deciding closure.
    pub fn new(
        decide: impl Fn(u32, &HandlerError) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        Self {
            decide: Arc::new(decide),
        }
    }
}

impl std::fmt::Debug for CustomRetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomRetry(..)")
    }
}

impl RetryPolicy for CustomRetry {
    fn should_retry(&self, attempts: u32, error: &HandlerError) -> bool {
        (self.decide)(attempts, error).is_some()
    }

    fn next_retry_delay(&self, attempts: u32, error: &HandlerError) -> Duration {
        (self.decide)(attempts, error).unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err() -> HandlerError {
        HandlerError::msg("x")
    }

    #[test]
    fn default_exponential_schedule_matches_the_go_table() {
        let p = ExponentialBackoff {
            max_attempts: 0,
            ..ExponentialBackoff::default()
        };
        let got: Vec<u64> = (1..=11)
            .map(|a| p.next_retry_delay(a, &err()).as_secs())
            .collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[test]
    fn first_delay_is_uncapped_base() {
        let p = ExponentialBackoff {
            base_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(5),
            ..ExponentialBackoff::default()
        };
        assert_eq!(p.next_retry_delay(1, &err()), Duration::from_secs(10));
        assert_eq!(p.next_retry_delay(2, &err()), Duration::from_secs(5));
    }

    #[test]
    fn max_attempts_bounds_total_executions() {
        let p = ExponentialBackoff::default();
        assert!(p.should_retry(1, &err()));
        assert!(p.should_retry(2, &err()));
        assert!(!p.should_retry(3, &err()));
        let unlimited = FixedDelay {
            max_attempts: 0,
            delay: Duration::ZERO,
        };
        assert!(unlimited.should_retry(u32::MAX, &err()));
        assert!(!NoRetry.should_retry(1, &err()));
    }

    #[test]
    fn huge_attempt_counts_saturate_at_the_cap() {
        let p = ExponentialBackoff::default();
        assert_eq!(
            p.next_retry_delay(u32::MAX, &err()),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn shrinking_multiplier_shrinks_delays() {
        let p = ExponentialBackoff {
            multiplier: 0.5,
            base_delay: Duration::from_secs(8),
            ..ExponentialBackoff::default()
        };
        assert_eq!(p.next_retry_delay(3, &err()), Duration::from_secs(2));
    }
}

//! Per-kind handler options (Go's `HandlerOption`s) with the Go defaults.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::manager::handler::TaskHandler;
use crate::retry::{ExponentialBackoff, NoRetry, RetryPolicy};

/// How long a handler may run before its attempt fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HandlerTimeout {
    /// Stop the handler shortly before its lease expires (lease minus a
    /// margin of a tenth of the lease, between 1 s and 30 s), counted from the
    /// claim, so no other worker can take the task while it still runs (Go W2).
    /// With a heartbeat there is no derived timeout.
    #[default]
    FromLease,
    /// A fixed limit.
    After(Duration),
    /// No limit (use with a heartbeat for long handlers).
    Never,
}

/// Options of one registered kind. Built with chained setters; the defaults
/// are those of the Go package.
///
/// ```
/// use std::time::Duration;
/// use oncetask_core::manager::HandlerOptions;
/// use oncetask_core::FixedDelay;
/// let options = HandlerOptions::default()
///     .concurrency(4)
///     .lease_duration(Duration::from_secs(60))
///     .retry_policy(FixedDelay { max_attempts: 5, delay: Duration::from_secs(10) });
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct HandlerOptions {
    pub(crate) concurrency: usize,
    pub(crate) lease_duration: Duration,
    pub(crate) retry: Arc<dyn RetryPolicy>,
    pub(crate) cancellation_handler: Option<Arc<dyn TaskHandler>>,
    pub(crate) cancellation_retry: Arc<dyn RetryPolicy>,
    pub(crate) timeout: HandlerTimeout,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) max_group_size: usize,
}

impl Default for HandlerOptions {
    /// Concurrency 1, lease 10 min, exponential retry (3 / 1 s / 5 min / x2),
    /// no cancellation handler, cancellation retry (5 / 1 s / 10 min / x2),
    /// timeout from the lease, no heartbeat, groups of at most 100 tasks.
    fn default() -> Self {
        Self {
            concurrency: 1,
            lease_duration: Duration::from_secs(600),
            retry: Arc::new(ExponentialBackoff::default()),
            cancellation_handler: None,
            cancellation_retry: Arc::new(ExponentialBackoff::cancellation_default()),
            timeout: HandlerTimeout::FromLease,
            heartbeat: None,
            max_group_size: 100,
        }
    }
}

impl std::fmt::Debug for HandlerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerOptions")
            .field("concurrency", &self.concurrency)
            .field("lease_duration", &self.lease_duration)
            .field("retry", &self.retry)
            .field("cancellation_handler", &self.cancellation_handler.is_some())
            .field("cancellation_retry", &self.cancellation_retry)
            .field("timeout", &self.timeout)
            .field("heartbeat", &self.heartbeat)
            .field("max_group_size", &self.max_group_size)
            .finish()
    }
}

impl HandlerOptions {
    /// Number of worker loops for the kind (at least 1).
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.concurrency = workers;
        self
    }

    /// How long a claim holds a task.
    pub fn lease_duration(mut self, lease: Duration) -> Self {
        self.lease_duration = lease;
        self
    }

    /// The retry policy of the main handler.
    pub fn retry_policy(mut self, policy: impl RetryPolicy + 'static) -> Self {
        self.retry = Arc::new(policy);
        self
    }

    /// Fail permanently on the first error.
    pub fn no_retry(self) -> Self {
        self.retry_policy(NoRetry)
    }

    /// A cleanup handler for cancelled tasks. Without one, a cancelled task
    /// is marked done at once. It runs once per cancelled task, even for group kinds.
    pub fn cancellation_handler(mut self, handler: impl TaskHandler) -> Self {
        self.cancellation_handler = Some(Arc::new(handler));
        self
    }

    /// The retry policy of the cancellation handler (independent of the main one).
    pub fn cancellation_retry_policy(mut self, policy: impl RetryPolicy + 'static) -> Self {
        self.cancellation_retry = Arc::new(policy);
        self
    }

    /// How long a handler may run.
    pub fn timeout(mut self, timeout: HandlerTimeout) -> Self {
        self.timeout = timeout;
        self
    }

    /// Extend the lease every `interval` while a handler runs, so long
    /// handlers keep their task. `interval` must be shorter than the lease.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = Some(interval);
        self
    }

    /// Largest group a group handler receives (at least 1).
    pub fn max_group_size(mut self, size: usize) -> Self {
        self.max_group_size = size;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.concurrency == 0 {
            return Err(Error::InvalidConfig(
                "concurrency must be at least 1".into(),
            ));
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err(Error::InvalidConfig(
                "lease duration must be at least 1 second".into(),
            ));
        }
        if self.max_group_size == 0 {
            return Err(Error::InvalidConfig(
                "max group size must be at least 1".into(),
            ));
        }
        if self
            .heartbeat
            .is_some_and(|beat| beat.is_zero() || beat >= self.lease_duration)
        {
            return Err(Error::InvalidConfig(
                "heartbeat interval must be non-zero and shorter than the lease".into(),
            ));
        }
        Ok(())
    }

    /// The handler's time limit for a claim whose lease runs `lease` from the claim.
    pub(crate) fn time_limit(&self) -> Option<Duration> {
        match self.timeout {
            HandlerTimeout::After(d) => Some(d),
            HandlerTimeout::Never => None,
            HandlerTimeout::FromLease if self.heartbeat.is_some() => None,
            HandlerTimeout::FromLease => {
                let margin = (self.lease_duration / 10)
                    .clamp(Duration::from_secs(1), Duration::from_secs(30));
                Some(self.lease_duration.saturating_sub(margin))
            }
        }
    }
}

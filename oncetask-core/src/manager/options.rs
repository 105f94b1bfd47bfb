//! Per-kind handler options (Go's `HandlerOption`s) with the Go defaults.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::manager::erased::{self, Erased};
use crate::manager::handler::{FromTask, Handler};
use crate::manager::rate_limit::RateLimit;
use crate::manager::retention::Retention;
use crate::retry::{ExponentialBackoff, NoRetry, RetryPolicy};

/// How long a handler may run before its attempt fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HandlerTimeout {
    /// Stop the handler shortly before its lease expires (lease minus a
    /// margin of a tenth of the lease, between 1 s and 30 s), counted from the
    /// claim, so no other worker can take the task while it still runs (Go W2).
    /// With a heartbeat there is no derived timeout.
    #[default]
    FromLease,
    /// A fixed limit. Without a heartbeat it must end before the lease does
    /// (lease minus the margin); registration fails otherwise.
    After(Duration),
    /// No limit. Needs a heartbeat (registration fails without one).
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
    pub(crate) cancellation_handler: Option<Erased>,
    pub(crate) cancellation_retry: Arc<dyn RetryPolicy>,
    pub(crate) timeout: HandlerTimeout,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) max_group_size: usize,
    /// `None`: as many as `concurrency`.
    pub(crate) claim_ahead: Option<usize>,
    /// Every n-th claim ignores priority (0: none).
    pub(crate) oldest_claim_every: u32,
    /// Starts of the kind per period, across every process.
    pub(crate) rate_limit: Option<RateLimit>,
    /// Starts per resource key of the kind per period.
    pub(crate) key_rate_limit: Option<RateLimit>,
    /// `None`: the manager's default.
    pub(crate) retention: Option<Retention>,
}

/// Default [`HandlerOptions::oldest_claim_every`].
pub const DEFAULT_OLDEST_CLAIM_EVERY: u32 = 10;

/// Default claim-ahead of a kind with fewer slots than this, once its
/// handlers are timed: one claim then serves several short tasks even on a
/// single slot. 64 drained Postgres faster with a no-op handler, but under
/// the chaos run's 2 s leases on an overloaded machine its longer backlogs
/// waited nearer the end of their leases (20x the stale outcomes; see
/// BENCHMARKS.md, "Postgres statements").
const DEFAULT_MIN_CLAIM_AHEAD: usize = 16;

/// How far a kind's loop claims ahead of its free slots, before pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClaimAhead {
    /// Once a run has been timed.
    pub(crate) timed: usize,
    /// Before the first run is timed: the default claims no further ahead
    /// than the kind has slots, so a kind with long handlers does not lease
    /// a large batch it then holds for many handler runs.
    pub(crate) untimed: usize,
}

impl Default for HandlerOptions {
    /// Concurrency 1, lease 10 min, exponential retry (3 / 1 s / 5 min / x2),
    /// no cancellation handler, cancellation retry (5 / 1 s / 10 min / x2),
    /// timeout from the lease, no heartbeat, groups of at most 100 tasks,
    /// every 10th claim in the oldest order.
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
            claim_ahead: None,
            oldest_claim_every: DEFAULT_OLDEST_CLAIM_EVERY,
            rate_limit: None,
            key_rate_limit: None,
            retention: None,
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
            .field("claim_ahead", &self.claim_ahead)
            .field("oldest_claim_every", &self.oldest_claim_every)
            .field("rate_limit", &self.rate_limit)
            .field("key_rate_limit", &self.key_rate_limit)
            .field("retention", &self.retention)
            .finish()
    }
}

impl HandlerOptions {
    /// Most tasks (or groups) of the kind running at once in this manager
    /// (at least 1): the kind's claiming loop leases no more than that.
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.concurrency = workers;
        self
    }

    /// Most tasks a single-task kind's loop claims ahead of its free worker
    /// slots, to hand to a slot the moment it frees up (default: the
    /// concurrency, at least 16, and no more than the concurrency until the
    /// first run is timed; 0 claims only for free slots). Group kinds claim
    /// one group per free slot and ignore it.
    ///
    /// Claiming ahead saves claim round trips when handlers are short: one
    /// claim serves many tasks even on one slot. The loop claims ahead
    /// only as far as its slots work through the tasks within half a
    /// second at the handlers' mean run time, so kinds with long handlers
    /// claim (nearly) nothing ahead whatever this says.
    ///
    /// The cost: a task claimed ahead is leased (shown as running) while it
    /// waits, and no other manager can take it meanwhile. Its lease covers
    /// the wait: one that waited more than a second renews its lease before
    /// its handler starts, so the handler still gets a whole lease and time
    /// limit. One cancelled or deleted by an operator (in this process or,
    /// through the store's notices, another) while it waits is re-read
    /// before it starts: a cancelled task goes to the cancellation path and
    /// its main handler never runs. Shutdown hands the waiting tasks back
    /// at once, their attempt not counted.
    pub fn claim_ahead(mut self, tasks: usize) -> Self {
        self.claim_ahead = Some(tasks);
        self
    }

    /// Most tasks claimed ahead of free slots (see
    /// [`HandlerOptions::claim_ahead`]) against a store that does
    /// ([`crate::Store::claims_ahead`]) or does not claim ahead by default.
    pub(crate) fn ahead(&self, store_claims_ahead: bool) -> ClaimAhead {
        let (timed, untimed) = match self.claim_ahead {
            Some(tasks) => (tasks, tasks),
            None if store_claims_ahead => (
                self.concurrency.max(DEFAULT_MIN_CLAIM_AHEAD),
                self.concurrency,
            ),
            None => (0, 0),
        };
        ClaimAhead { timed, untimed }
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

    /// A cleanup handler for cancelled tasks, of the same argument type as
    /// the kind's handler (or [`Task`](crate::Task), see
    /// [`handler_fn`](crate::manager::handler_fn)). It runs once per
    /// cancelled task, even for group kinds. Without one, the next worker of
    /// the kind to claim a cancelled task marks it cancelled without running
    /// anything.
    pub fn cancellation_handler<A, H>(mut self, handler: H) -> Self
    where
        A: FromTask,
        H: Handler<A>,
    {
        self.cancellation_handler = Some(Arc::new(erased::One::cancellation(handler)));
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

    /// Every `n`-th claim of the kind (by this manager) takes the oldest
    /// ready tasks whatever their priority ([`ClaimOrder::Oldest`]); the
    /// others take higher priorities first. So under a stream of
    /// high-priority tasks that never lets up, a lower-priority task still
    /// starts within `n` claims of becoming the oldest ready one (default
    /// 10). 1 ignores priority altogether; 0 never does (strict priority:
    /// low priorities may starve).
    ///
    /// [`ClaimOrder::Oldest`]: crate::store::ClaimOrder::Oldest
    pub fn oldest_claim_every(mut self, n: u32) -> Self {
        self.oldest_claim_every = n;
        self
    }

    /// At most `limit` starts of this kind per period, across every
    /// process sharing the store ([`RateLimit`] says what counts as a
    /// start and how windows work). Tasks over the limit stay pending,
    /// with no attempt counted, and start when the next window opens. The
    /// claiming loop asks for no more tasks than the window has left.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// At most `limit` starts per resource key of this kind per period,
    /// across every process (tasks without a resource key are not limited
    /// by it). A claimed task over its key's limit is handed back with its
    /// attempt not counted, and waits until the key's next window opens.
    pub fn rate_limit_per_resource_key(mut self, limit: RateLimit) -> Self {
        self.key_rate_limit = Some(limit);
        self
    }

    /// How long this kind's finished tasks are kept ([`Retention`]);
    /// default: the manager's
    /// ([`ManagerBuilder::retention`](crate::manager::ManagerBuilder::retention)).
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
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
        if let Some(limit) = &self.rate_limit {
            limit.validate("a rate limit")?;
        }
        if let Some(limit) = &self.key_rate_limit {
            limit.validate("a per-resource-key rate limit")?;
        }
        if let Some(retention) = &self.retention {
            retention.validate()?;
        }
        let lease_bound = self.lease_duration.saturating_sub(self.lease_margin());
        if self
            .heartbeat
            .is_some_and(|beat| beat.is_zero() || beat >= lease_bound)
        {
            return Err(Error::InvalidConfig(format!(
                "heartbeat interval must be non-zero and shorter than the lease minus its margin ({lease_bound:?})"
            )));
        }
        if self.heartbeat.is_none() {
            // Without a heartbeat the lease ends on schedule: a handler that
            // may run past it could run beside the worker that takes over.
            let bound = self.lease_duration.saturating_sub(self.lease_margin());
            match self.timeout {
                HandlerTimeout::Never => {
                    return Err(Error::InvalidConfig(
                        "a handler without a time limit needs a heartbeat".into(),
                    ));
                }
                HandlerTimeout::After(d) if d > bound => {
                    return Err(Error::InvalidConfig(format!(
                        "timeout {d:?} outlives the lease ({:?} minus a {:?} margin); \
                         shorten it, lengthen the lease or add a heartbeat",
                        self.lease_duration,
                        self.lease_margin()
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// How long before its lease ends a handler is stopped: a tenth of the
    /// lease, between 1 s and 30 s.
    pub(crate) fn lease_margin(&self) -> Duration {
        (self.lease_duration / 10).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// The handler's time limit, counted from the start of its lease.
    pub(crate) fn time_limit(&self) -> Option<Duration> {
        match self.timeout {
            HandlerTimeout::After(d) => Some(d),
            HandlerTimeout::Never => None,
            HandlerTimeout::FromLease if self.heartbeat.is_some() => None,
            HandlerTimeout::FromLease => {
                Some(self.lease_duration.saturating_sub(self.lease_margin()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(secs: u64) -> HandlerOptions {
        HandlerOptions::default().lease_duration(Duration::from_secs(secs))
    }

    #[test]
    fn the_default_options_are_valid() {
        assert!(HandlerOptions::default().validate().is_ok());
    }

    #[test]
    fn a_limit_that_outlives_the_lease_needs_a_heartbeat() {
        // Lease 60 s, margin 6 s: at most 54 s without a heartbeat.
        assert!(
            lease(60)
                .timeout(HandlerTimeout::After(Duration::from_secs(54)))
                .validate()
                .is_ok()
        );
        let long = lease(60).timeout(HandlerTimeout::After(Duration::from_secs(55)));
        assert!(matches!(long.validate(), Err(Error::InvalidConfig(_))));
        assert!(long.heartbeat(Duration::from_secs(20)).validate().is_ok());
        let never = lease(60).timeout(HandlerTimeout::Never);
        assert!(matches!(never.validate(), Err(Error::InvalidConfig(_))));
        assert!(never.heartbeat(Duration::from_secs(20)).validate().is_ok());
    }

    #[test]
    fn a_heartbeat_must_beat_before_the_lease_margin() {
        // Lease 10 s, margin 1 s: beats must come within 9 s.
        assert!(
            lease(10)
                .heartbeat(Duration::from_secs(8))
                .validate()
                .is_ok()
        );
        assert!(
            lease(10)
                .heartbeat(Duration::from_secs(9))
                .validate()
                .is_err()
        );
        assert!(lease(10).heartbeat(Duration::ZERO).validate().is_err());
    }

    #[test]
    fn zero_workers_leases_and_groups_are_rejected() {
        assert!(HandlerOptions::default().concurrency(0).validate().is_err());
        assert!(lease(0).validate().is_err());
        assert!(
            HandlerOptions::default()
                .max_group_size(0)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn the_derived_limit_ends_a_margin_before_the_lease() {
        assert_eq!(lease(10).time_limit(), Some(Duration::from_secs(9)));
        assert_eq!(lease(600).time_limit(), Some(Duration::from_secs(570)));
        assert_eq!(lease(3600).time_limit(), Some(Duration::from_secs(3570)));
        assert_eq!(
            lease(60).heartbeat(Duration::from_secs(20)).time_limit(),
            None
        );
    }

    #[test]
    fn the_default_claim_ahead_waits_for_a_timed_run_and_explicit_values_do_not() {
        let default = HandlerOptions::default().concurrency(8);
        assert_eq!(
            default.ahead(true),
            ClaimAhead {
                timed: 16,
                untimed: 8
            }
        );
        let wide = HandlerOptions::default().concurrency(100);
        assert_eq!(wide.ahead(true).timed, 100);
        assert_eq!(
            default.ahead(false),
            ClaimAhead {
                timed: 0,
                untimed: 0
            }
        );
        let explicit = HandlerOptions::default().claim_ahead(5);
        for store_claims_ahead in [true, false] {
            assert_eq!(
                explicit.ahead(store_claims_ahead),
                ClaimAhead {
                    timed: 5,
                    untimed: 5
                }
            );
        }
    }
}

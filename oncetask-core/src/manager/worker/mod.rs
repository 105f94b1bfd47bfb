//! The worker runtime of a manager, one concern per module:
//!
//! - [`dispatch`]: the claiming loop of a kind, which hands claimed work to
//!   worker slots;
//! - [`backlog`]: claimed tasks waiting for a slot;
//! - [`pace`]: how long handlers take, which sizes the claim-ahead;
//! - [`rate`]: a claim under the kind's rate limits;
//! - [`run`]: one claim being processed (its handlers in order);
//! - [`guard`]: one handler run under panic capture, time limit, heartbeat
//!   and shutdown abort;
//! - [`outcome`]: a finished run's outcome, decided by
//!   [`crate::lifecycle::record`] and written through the group commit;
//! - [`generator`]: recurring tasks' bookkeeping;
//! - [`shutdown`]: stopping the loops and releasing interrupted leases.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

mod backlog;
mod dispatch;
mod generator;
mod guard;
mod outcome;
mod pace;
mod rate;
mod run;
mod shutdown;

pub(crate) use dispatch::{process_next, spawn_workers};
pub(crate) use guard::panic_message;
#[cfg(feature = "testing")]
pub(crate) use guard::run_captured;
pub(crate) use pace::Pace;
pub use run::{NotStored, RunOutcome, RunReport};
pub use shutdown::ShutdownReport;
pub(crate) use shutdown::shutdown;

/// `t + d`, saturating at the end of representable time.
pub(crate) fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

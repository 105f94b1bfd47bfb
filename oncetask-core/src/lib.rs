//! # oncetask-core
//!
//! The pure heart of oncetask: durable, idempotent, lease-based task
//! execution. This crate holds the task model, status derivation, retry
//! policies, the lease/retry state machine, recurrence math, the [`Store`]
//! trait every backend implements, and the [`Manager`] runtime. It contains
//! no storage client; pick a backend crate (or the `oncetask` facade).

pub mod clock;
mod create;
pub mod data;
pub mod display;
pub mod error;
pub mod inspect;
pub mod lifecycle;
pub mod manager;
pub mod metrics;
pub mod recurrence;
pub mod retry;
mod snooze;
pub mod status;
pub mod store;
pub mod task;
#[cfg(test)]
mod test_support;
#[cfg(feature = "testing")]
pub mod testing;

/// Re-exported so that handler structs can implement
/// [`Handler`] without depending on `async-trait`.
pub use async_trait::async_trait;
pub use clock::{Clock, ManualClock, SystemClock};
pub use create::{CreateStatus, MAX_DATA_DEPTH};
pub use data::{TaskArgs, TaskData, TaskKind};
pub use error::{Error, HandlerError, PayloadError, StoreError};
pub use inspect::{KindStats, QueueStats};
pub use manager::{
    GroupHandler, Handler, HandlerOptions, HandlerOutcome, IntoOutcome, Manager, TaskContext,
    group_handler_fn, handler_fn,
};
pub use recurrence::{Recurrence, RecurrenceError, Schedule};
pub use retry::{CustomRetry, ExponentialBackoff, FixedDelay, NoRetry, RetryPolicy};
pub use snooze::{MAX_SNOOZE, Snooze, SnoozeTooFar};
pub use status::TaskStatus;
pub use store::Store;
pub use task::{AttemptError, JsonObject, LeaseToken, Outcome, PRIORITY_RANGE, Revision, Task};

//! # oncetask
//!
//! Durable, idempotent, lease-based task execution. Services hand it work
//! ("send this email once", "sync this calendar", "every Monday build this
//! report"); it stores each task under a deterministic id, runs it to
//! successful completion with retries, serializes tasks that share a
//! resource key, runs recurring tasks from RFC 5545 RRULEs, and lets
//! operators cancel, reset, delete and inspect tasks.
//!
//! This crate is the facade: the types an application needs sit at its root,
//! each storage backend sits behind a cargo feature (with its driver crate
//! re-exported, so transactional enqueue uses the same `sqlx` as the store),
//! and what only a backend author needs is under [`backend`]. An application
//! depends on this one crate and switches backends without touching handler
//! code.
//!
//! | Feature | Backend |
//! |---|---|
//! | `memory` | [`MemoryStore`]: in-process, for tests, demos and local development |
//! | `postgres` | `postgres::PostgresStore`: PostgreSQL via `sqlx` (`oncetask::postgres::sqlx`), durable and shared between processes |
//! | `sqlite` | `sqlite::SqliteStore`: one SQLite file via `sqlx` (`oncetask::sqlite::sqlx`), durable and shared between the processes of one machine, no server |
//! | `redis` | `redis::RedisStore`: Redis via the `redis` crate (`oncetask::redis::redis`), one Lua script per claim, pub/sub wake-ups (durable with AOF) |
//! | `redis-cluster` | `redis` plus `RedisStore::connect_cluster` for Redis Cluster |
//! | `firestore` | `oncetask::firestore`: Firestore (`oncetask::firestore::firestore`), sharing documents with the Go package |
//! | `testing` | `oncetask::testing`: the test kit for your own handler and service tests |
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # {
//! use std::sync::Arc;
//! use oncetask::{CreateStatus, HandlerOptions, Manager, MemoryStore, TaskArgs, TaskContext};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendEmail { to: String }
//!
//! impl TaskArgs for SendEmail {
//!     const KIND: &'static str = "send_email";
//!     fn idempotent_id(&self) -> String { format!("email-{}", self.to) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oncetask::Error> {
//! let manager = Manager::builder(Arc::new(MemoryStore::new())).build();
//! manager.register(
//!     |email: SendEmail, cx: TaskContext| async move {
//!         println!("sending to {} (attempt {})", email.to, cx.attempt);
//!         Ok::<_, std::io::Error>(())
//!     },
//!     HandlerOptions::default(),
//! )?;
//! let created = manager.create(&SendEmail { to: "ada@example.com".into() }).await?;
//! assert_eq!(created, CreateStatus::Created);
//! manager.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! # }
//! ```
//!
//! See the [`Manager`] for the runtime and [`TaskArgs`] for defining tasks.

// Defining tasks.
pub use oncetask_core::{Recurrence, RecurrenceError, Schedule, TaskArgs, TaskData, TaskKind};

// Handlers and the manager.
pub use oncetask_core::async_trait;
pub use oncetask_core::manager::{
    BulkAction, BulkReport, CancelStatus, FromTask, GroupHandler, Handler, HandlerOptions,
    HandlerOutcome, HandlerTimeout, IntoOutcome, Manager, ManagerBuilder, NotStored, RunOutcome,
    RunReport, ShutdownReport, TaskContext, group_handler_fn, handler_fn,
};
pub use oncetask_core::{CustomRetry, ExponentialBackoff, FixedDelay, NoRetry, RetryPolicy};
pub use oncetask_core::{MAX_SNOOZE, PRIORITY_RANGE, Snooze, SnoozeTooFar};

// Operating a queue: retention, rate limits.
pub use oncetask_core::manager::{PruneCounts, PrunePlan, PruneReport, RateLimit, Retention};

// Tasks as stored, and what inspecting them returns.
pub use oncetask_core::store::{
    KeyQueue, KeyQueues, StatusCounts, StorageStats, StoredSize, TaskCursor, TaskFilter,
    Undecodable,
};
pub use oncetask_core::{
    AttemptError, CreateStatus, KindStats, Outcome, QueueStats, Task, TaskStatus,
};

// Errors.
pub use oncetask_core::{Error, HandlerError, PayloadError, StoreError};

// What a manager runs on: a store and a clock.
pub use oncetask_core::store::ConnectOptions;
pub use oncetask_core::{Clock, ManualClock, Store, SystemClock};

/// The manager module: everything above plus what handler code reads about
/// its run ([`manager::current_task_id`]) and the environment defaults.
pub use oncetask_core::manager;

/// Metric names and their descriptions (`metrics` crate).
pub use oncetask_core::metrics;

/// Times, durations and a task's standing as the CLI and the dashboard
/// print them.
pub use oncetask_core::display;

/// For backend authors and tools that work below the [`Manager`]: the
/// [`Store`] contract's request and answer types, the pure lifecycle that
/// computes every state change, and the task model's helpers. Applications
/// do not need it.
pub mod backend {
    pub use oncetask_core::lifecycle;
    pub use oncetask_core::recurrence;
    pub use oncetask_core::store::*;
    pub use oncetask_core::task;
    pub use oncetask_core::task::TaskParts;
    pub use oncetask_core::{Clock, JsonObject, LeaseToken, Revision, Store, Task};
}

/// The in-memory backend.
#[cfg(feature = "memory")]
pub use oncetask_memory as memory;

#[cfg(feature = "memory")]
pub use oncetask_memory::MemoryStore;

/// The Firestore backend.
#[cfg(feature = "firestore")]
pub use oncetask_firestore as firestore;
/// The PostgreSQL backend.
#[cfg(feature = "postgres")]
pub use oncetask_postgres as postgres;
/// The Redis backend.
#[cfg(feature = "redis")]
pub use oncetask_redis as redis;
/// The SQLite backend.
#[cfg(feature = "sqlite")]
pub use oncetask_sqlite as sqlite;

/// The test kit: manual time, run-until-idle, isolated runs, assertions.
#[cfg(feature = "testing")]
pub use oncetask_core::testing;

/// The README's examples, compiled and run as doc-tests.
#[cfg(all(doctest, feature = "memory", feature = "testing"))]
#[doc = include_str!("../../README.md")]
mod readme {}

// The guides' examples (docs/*.md), compiled and run as doc-tests like the
// README's. Blocks that need a backend feature are marked `ignore` there.
#[cfg(all(doctest, feature = "memory", feature = "testing"))]
#[doc = include_str!("../../docs/operating.md")]
mod guide_operating {}

#[cfg(all(doctest, feature = "memory", feature = "testing"))]
#[doc = include_str!("../../docs/testing.md")]
mod guide_testing {}

#[cfg(all(doctest, feature = "memory", feature = "testing"))]
#[doc = include_str!("../../docs/postgres.md")]
mod guide_postgres {}

#[cfg(all(doctest, feature = "memory", feature = "testing"))]
#[doc = include_str!("../../docs/redis.md")]
mod guide_redis {}

#[cfg(all(doctest, feature = "memory", feature = "testing"))]
#[doc = include_str!("../../docs/sqlite.md")]
mod guide_sqlite {}

#[cfg(all(doctest, feature = "memory", feature = "testing"))]
#[doc = include_str!("../../docs/firestore.md")]
mod guide_firestore {}

#[cfg(all(doctest, feature = "memory", feature = "testing"))]
#[doc = include_str!("../../docs/writing-a-backend.md")]
mod guide_writing_a_backend {}

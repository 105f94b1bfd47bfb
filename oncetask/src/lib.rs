//! # oncetask
//!
//! Durable, idempotent, lease-based task execution. Services hand it work
//! ("send this email once", "sync this calendar", "every Monday build this
//! report"); it stores each task under a deterministic id, runs it to
//! successful completion with retries, serializes tasks that share a
//! resource key, runs recurring tasks from RFC 5545 RRULEs, and lets
//! operators cancel, reset, delete and inspect tasks.
//!
//! This crate is the facade: it re-exports [`oncetask_core`] and, behind cargo
//! features, each storage backend, so an application depends on one crate and
//! switches backends without touching handler code.
//!
//! | Feature | Backend |
//! |---|---|
//! | `memory` | [`MemoryStore`]: in-process, for tests, demos and local development |
//! | `postgres` | `postgres::PostgresStore`: PostgreSQL via `sqlx`, durable and shared between processes |
//! | `redis` | `redis::RedisStore`: Redis via the `redis` crate, one Lua script per claim, pub/sub wake-ups (durable with AOF) |
//! | `redis-cluster` | `redis` plus `RedisStore::connect_cluster` for Redis Cluster |
//! | `firestore` | `oncetask::firestore`: Firestore, sharing documents with the Go package (passes the conformance suite on the emulator) |
//! | `testing` | `oncetask::testing`: the test kit for your own handler and service tests |
//!
//! See the [`Manager`] for the runtime and [`TaskData`] for defining tasks.

pub use oncetask_core::*;

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
#[doc = include_str!("../../docs/firestore.md")]
mod guide_firestore {}

#[cfg(all(doctest, feature = "memory", feature = "testing"))]
#[doc = include_str!("../../docs/writing-a-backend.md")]
mod guide_writing_a_backend {}

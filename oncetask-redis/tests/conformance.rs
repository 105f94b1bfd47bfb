//! The shared store conformance suite, run against [`RedisStore`] on the
//! server at `ONCETASK_REDIS_URL` (default `redis://127.0.0.1:6379`).
//!
//! Every test gets its own key prefix (`oncetask-test:<unix seconds>:<random>`),
//! so tests run in parallel without sharing tasks. The suite cannot tell
//! when a test is done with its store, so the first store of a run deletes
//! the test keys older than an hour instead. `scripts/test` starts a local
//! server when none answers; an unreachable server fails the tests, never
//! skips them.

mod common;

mod factory;

oncetask_conformance::store_conformance_suite!(factory::RedisFactory { cluster: false });

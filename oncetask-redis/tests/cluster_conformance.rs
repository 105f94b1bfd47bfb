//! The shared store conformance suite, unchanged, run against [`RedisStore`]
//! on a Redis Cluster (`ONCETASK_REDIS_CLUSTER_URLS`, set by
//! `scripts/redis-cluster`). Without the variable every test fails saying
//! how to start one.
//!
//! Every test gets its own key prefix, as in `conformance.rs`; the id
//! registry entries of one test spread over all masters, its envs over
//! whichever masters own their slots.

#![cfg(feature = "cluster")]

mod common;

mod factory;

oncetask_conformance::store_conformance_suite!(factory::RedisFactory { cluster: true });

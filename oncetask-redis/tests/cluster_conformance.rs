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

use conformance_tests::{StoreFactory, async_trait, store_conformance_suite};
use oncetask_redis::RedisStore;

/// Hands out a cluster store on a fresh key prefix per test.
struct RedisClusterFactory;

#[async_trait]
impl StoreFactory for RedisClusterFactory {
    type Store = RedisStore;

    async fn new_store(&self) -> RedisStore {
        let store = common::cluster_store_on(&common::new_prefix()).await;
        assert!(store.is_cluster());
        common::drop_stale_prefixes(&store).await;
        store
    }

    async fn insert_undecodable(
        &self,
        store: &RedisStore,
        id: &str,
        env: &str,
        kind: &str,
    ) -> bool {
        store
            .insert_undecodable(id, env, kind, "conformance suite: not a task")
            .await
            .expect("insert an undecodable document");
        true
    }
}

store_conformance_suite!(RedisClusterFactory);

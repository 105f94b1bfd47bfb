//! The Redis [`StoreFactory`] of the conformance suite, shared by the
//! single-server run (`conformance.rs`) and the cluster run
//! (`cluster_conformance.rs`), so both write the same corrupted records.

use oncetask_conformance::{Corruption, StoreFactory, async_trait};
use oncetask_core::Store;
use oncetask_redis::RedisStore;

/// Hands out a store on a fresh key prefix per test: on the single server
/// (`ONCETASK_REDIS_URL`), or on the cluster (`ONCETASK_REDIS_CLUSTER_URLS`).
pub struct RedisFactory {
    /// Use the cluster.
    pub cluster: bool,
}

#[async_trait]
impl StoreFactory for RedisFactory {
    type Store = RedisStore;

    async fn new_store(&self) -> RedisStore {
        let prefix = crate::common::new_prefix();
        let store = if self.cluster {
            let store = crate::common::cluster_store_on(&prefix).await;
            assert!(store.is_cluster());
            store
        } else {
            crate::common::store_on(&prefix).await
        };
        crate::common::drop_stale_prefixes(&store).await;
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

    /// Stores the healthy original, then edits its hash directly.
    async fn insert_corrupted(
        &self,
        store: &RedisStore,
        id: &str,
        env: &str,
        kind: &str,
        corruption: Corruption,
    ) -> bool {
        let original = oncetask_conformance::corruption::original(id, env, kind);
        store
            .create(vec![original])
            .await
            .expect("create the original");
        let key = store.task_key(env, id);
        let mut conn = store.connection();
        let mut edit = redis::cmd("HSET");
        edit.arg(&key);
        match corruption {
            Corruption::MissingField => {
                edit = redis::cmd("HDEL");
                edit.arg(&key).arg("created");
            }
            Corruption::WrongType => {
                edit.arg("att").arg("three");
            }
            Corruption::BadTimestamp => {
                edit.arg("wait").arg("yesterday");
            }
            Corruption::UnknownStatus => {
                let body: String = redis::cmd("HGET")
                    .arg(&key)
                    .arg("body")
                    .query_async(&mut conn)
                    .await
                    .expect("read the body");
                let mut body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
                body["outcome"] = serde_json::json!("exploded");
                edit.arg("body").arg(body.to_string());
            }
            Corruption::NegativeCount => {
                edit.arg("att").arg("-1");
            }
        }
        edit.query_async::<()>(&mut conn)
            .await
            .expect("corrupt the hash");
        true
    }
}

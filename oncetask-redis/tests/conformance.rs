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

use conformance_tests::{Corruption, StoreFactory, async_trait, store_conformance_suite};
use oncetask_core::Store;
use oncetask_redis::RedisStore;

/// Hands out a store on a fresh key prefix per test.
struct RedisFactory;

#[async_trait]
impl StoreFactory for RedisFactory {
    type Store = RedisStore;

    async fn new_store(&self) -> RedisStore {
        let store = common::store_on(&common::new_prefix()).await;
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

    /// Stores the healthy original, then edits its hash directly.
    async fn insert_corrupted(
        &self,
        store: &RedisStore,
        id: &str,
        env: &str,
        kind: &str,
        corruption: Corruption,
    ) -> bool {
        let original = conformance_tests::corruption::original(id, env, kind);
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

store_conformance_suite!(RedisFactory);

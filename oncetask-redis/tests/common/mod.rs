//! Shared test wiring: the server URL, unique key prefixes, clean-up.

#![allow(dead_code)] // each test file uses a part

use oncetask_redis::RedisStore;

/// The server the tests use when `ONCETASK_REDIS_URL` is not set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Every test prefix starts with this, then `<unix seconds>:<random>`.
pub const TEST_PREFIX: &str = "oncetask-test";

/// `ONCETASK_REDIS_URL`, or the default local server.
pub fn url() -> String {
    std::env::var("ONCETASK_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A key prefix no other test uses.
pub fn new_prefix() -> String {
    format!(
        "{TEST_PREFIX}:{}:{}",
        chrono::Utc::now().timestamp(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The message of a test that cannot reach the server.
pub fn unreachable(url: &str, e: impl std::fmt::Display) -> String {
    format!(
        "cannot reach Redis at {url} ({e}). Start it (on this machine: `redis-server \
         --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no \
         --dir /var/lib/redis --logfile /var/log/redis/ci.log`, or run `scripts/test`), \
         or set ONCETASK_REDIS_URL."
    )
}

/// A store on `prefix` with its own connection; panics (failing the test)
/// with instructions when the server cannot be reached.
pub async fn store_on(prefix: &str) -> RedisStore {
    let url = url();
    RedisStore::connect(&url, prefix)
        .await
        .unwrap_or_else(|e| panic!("{}", unreachable(&url, e)))
}

/// `ONCETASK_REDIS_CLUSTER_URLS` (comma-separated seed node URLs); panics
/// (failing the test) with instructions when it is not set.
pub fn cluster_urls() -> Vec<String> {
    let urls = std::env::var("ONCETASK_REDIS_CLUSTER_URLS").unwrap_or_default();
    let urls: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(
        !urls.is_empty(),
        "ONCETASK_REDIS_CLUSTER_URLS is not set: the Redis Cluster tests need a cluster. Run them \
         through `scripts/redis-cluster cargo test -p oncetask-redis --test <name>` (it starts a \
         throwaway 3-master cluster on loopback) or `scripts/test`, or point the variable at the \
         seed nodes of a cluster (redis://host:port,redis://host:port,...)."
    );
    urls
}

/// A store on `prefix` on the cluster of [`cluster_urls`]; panics (failing
/// the test) with instructions when the cluster cannot be reached.
pub async fn cluster_store_on(prefix: &str) -> RedisStore {
    let urls = cluster_urls();
    RedisStore::connect_cluster(&urls, prefix)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach the Redis Cluster at {} ({e}). Run the tests through \
                 `scripts/redis-cluster` or `scripts/test`, or fix ONCETASK_REDIS_CLUSTER_URLS.",
                urls.join(",")
            )
        })
}

/// Set once the stale test keys of earlier runs are gone.
static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Deletes the keys of test prefixes created over an hour ago (left by
/// tests that failed before cleaning up, or by the conformance suite, which
/// cannot tell when a test is done with its store). Once per test binary.
pub async fn drop_stale_prefixes(store: &RedisStore) {
    CLEANED
        .get_or_init(|| async {
            let mut conn = store.connection();
            let cutoff = chrono::Utc::now().timestamp() - 3600;
            // On a cluster this walks every master.
            let keys = conn
                .scan_keys(&format!("{TEST_PREFIX}:*"))
                .await
                .expect("scan test keys");
            let stale: Vec<&Vec<u8>> = keys
                .iter()
                .filter(|k| {
                    String::from_utf8_lossy(k)
                        .split(':')
                        .nth(1)
                        .and_then(|s| s.parse::<i64>().ok())
                        .is_some_and(|t| t < cutoff)
                })
                .collect();
            for batch in stale.chunks(1000) {
                let _: redis::RedisResult<u64> =
                    redis::cmd("UNLINK").arg(batch).query_async(&mut conn).await;
            }
        })
        .await;
}

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
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{TEST_PREFIX}:*"))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .expect("scan test keys");
                let stale: Vec<&String> = keys
                    .iter()
                    .filter(|k| {
                        k.split(':')
                            .nth(1)
                            .and_then(|s| s.parse::<i64>().ok())
                            .is_some_and(|t| t < cutoff)
                    })
                    .collect();
                if !stale.is_empty() {
                    let _: redis::RedisResult<u64> = redis::cmd("UNLINK")
                        .arg(&stale)
                        .query_async(&mut conn)
                        .await;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        })
        .await;
}

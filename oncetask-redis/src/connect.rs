//! Connecting: [`RedisStore::connect`], [`RedisStore::connect_with`] and
//! their cluster forms, with fast, typed failures.

use oncetask_core::store::{ConnectOptions, redact_password};
use redis::{AsyncConnectionConfig, ErrorKind, RedisError};

use super::*;

/// What to check when the server cannot be reached.
const CHECK_SERVER: &str = "check that the Redis server is running and accepts connections at \
     the URL's host and port (and that no firewall drops them)";

/// What to check when no seed node of a cluster can be reached.
#[cfg(feature = "cluster")]
const CHECK_SEEDS: &str = "check that the cluster's nodes are running and that at least one \
     seed URL names one of them by its host and port (and that no firewall drops them)";

impl RedisStore {
    /// Connects to the server at `url` (`redis://[user:password@]host:port[/db]`,
    /// or `rediss://` with a TLS-enabled `redis` crate) and stores tasks
    /// under keys starting with `prefix`, with the default
    /// [`ConnectOptions`] (a 5 s connect timeout): see
    /// [`RedisStore::connect_with`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, prefix, &ConnectOptions::default()).await
    }

    /// Connects to the server at `url` (`redis://[user:password@]host:port[/db]`,
    /// or `rediss://` with a TLS-enabled `redis` crate) and stores tasks
    /// under keys starting with `prefix`.
    ///
    /// * A malformed URL, a prefix containing `{` or `}`, or credentials the
    ///   server refuses fail at once with [`StoreError::InvalidConfig`].
    /// * A server that cannot be reached fails with
    ///   [`StoreError::Unavailable`] naming the URL (password masked), the
    ///   timeout, the cause and what to check: at once when the connection
    ///   is refused, after [`ConnectOptions::connect_timeout`] when nothing
    ///   answers. One attempt is made: a service that may start before its
    ///   server retries `connect_with` on `Unavailable`.
    ///
    /// The store's [`ConnectionManager`] then reconnects on its own, each
    /// attempt bounded by the connect timeout, and waits at most
    /// [`RESPONSE_TIMEOUT`] for a reply. [`ConnectOptions::pool_size`] is
    /// not used: one multiplexed connection serves every call.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use oncetask_core::store::ConnectOptions;
    /// use oncetask_redis::RedisStore;
    ///
    /// # async fn demo() -> Result<(), oncetask_core::StoreError> {
    /// let options = ConnectOptions::default().connect_timeout(Duration::from_secs(2));
    /// let store = RedisStore::connect_with("redis://127.0.0.1:6379", "myapp", &options).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with(
        url: &str,
        prefix: &str,
        options: &ConnectOptions,
    ) -> Result<Self, StoreError> {
        let keys = Keys::new(prefix)?;
        let client = redis::Client::open(url).map_err(|e| invalid_url(url, &e))?;
        let timeout = options.connect_timeout;
        // One deadline for the probe and the manager: connecting takes at
        // most the timeout in all.
        let deadline = tokio::time::Instant::now() + timeout;
        let what = format!("Redis at {}", redact_password(url));
        let no_answer = || options.unreachable_target(&what, "no answer", CHECK_SERVER);
        // One plain connection first: the connection manager retries a
        // refused connection several times before it gives up; this one
        // fails at once, with its cause.
        let probe = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        match tokio::time::timeout_at(
            deadline,
            client.get_multiplexed_async_connection_with_config(&probe),
        )
        .await
        {
            Err(_) => return Err(no_answer()),
            Ok(Err(e)) => return Err(connect_error(&what, CHECK_SERVER, options, e)),
            Ok(Ok(conn)) => drop(conn),
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn =
            tokio::time::timeout_at(deadline, client.get_connection_manager_with_config(config))
                .await
                .map_err(|_| no_answer())?
                .map_err(|e| connect_error(&what, CHECK_SERVER, options, e))?;
        Ok(Self::from_manager(conn, client, keys))
    }

    /// Connects to the Redis Cluster reachable through the seed nodes `urls`
    /// (`redis://host:port` each; any subset of the masters will do, the rest
    /// of the cluster is discovered) and stores tasks under keys starting
    /// with `prefix`, with the default [`ConnectOptions`]: see
    /// [`RedisStore::connect_cluster_with`].
    ///
    /// Every script and command goes to the node owning its keys' slot, and
    /// follows `MOVED`/`ASK` redirections while slots migrate. Wake-ups use
    /// classic pub/sub, which a cluster delivers on every node: a subscriber
    /// listens on one seed node and moves to the next when it fails.
    #[cfg(feature = "cluster")]
    pub async fn connect_cluster<S: AsRef<str>>(
        urls: &[S],
        prefix: &str,
    ) -> Result<Self, StoreError> {
        Self::connect_cluster_with(urls, prefix, &ConnectOptions::default()).await
    }

    /// [`RedisStore::connect_cluster`] with `options`: no seed URL, a
    /// malformed one or a prefix containing `{` or `}` fails at once with
    /// [`StoreError::InvalidConfig`]; a cluster none of whose seed nodes
    /// answers within [`ConnectOptions::connect_timeout`] fails with
    /// [`StoreError::Unavailable`], naming the seeds (passwords masked).
    /// Each connection to a node is bounded by the connect timeout.
    #[cfg(feature = "cluster")]
    pub async fn connect_cluster_with<S: AsRef<str>>(
        urls: &[S],
        prefix: &str,
        options: &ConnectOptions,
    ) -> Result<Self, StoreError> {
        if urls.is_empty() {
            return Err(StoreError::InvalidConfig(
                "connect_cluster: at least one seed node URL is needed".to_owned(),
            ));
        }
        let keys = Keys::new(prefix)?;
        let urls: Vec<&str> = urls.iter().map(AsRef::as_ref).collect();
        let pubsub = urls
            .iter()
            .map(|url| redis::Client::open(*url).map_err(|e| invalid_url(url, &e)))
            .collect::<Result<Vec<_>, _>>()?;
        let urls_masked = urls
            .iter()
            .map(|url| redact_password(url))
            .collect::<Vec<_>>()
            .join(", ");
        let timeout = options.connect_timeout;
        let client = redis::cluster::ClusterClient::builder(urls)
            .connection_timeout(timeout)
            .response_timeout(RESPONSE_TIMEOUT)
            .build()
            .map_err(|e| {
                StoreError::InvalidConfig(format!("invalid Redis Cluster seeds {urls_masked}: {e}"))
            })?;
        let what = format!("the Redis Cluster at {urls_masked}");
        let conn = tokio::time::timeout(timeout, client.get_async_connection())
            .await
            .map_err(|_| options.unreachable_target(&what, "no seed node answered", CHECK_SEEDS))?
            .map_err(|e| connect_error(&what, CHECK_SEEDS, options, e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: conn.into(),
                pubsub,
                keys,
                standalone: tokio::sync::OnceCell::new(),
            }),
        })
    }
}

/// A URL the `redis` crate does not take.
fn invalid_url(url: &str, e: &RedisError) -> StoreError {
    StoreError::InvalidConfig(format!(
        "invalid Redis URL {}: {e} (expected redis://[user:password@]host:port[/db])",
        redact_password(url)
    ))
}

/// The error of a failed connect to `what` (masked URLs); `check` says
/// what to check when it cannot be reached.
fn connect_error(what: &str, check: &str, options: &ConnectOptions, e: RedisError) -> StoreError {
    match e.kind() {
        ErrorKind::AuthenticationFailed => StoreError::InvalidConfig(format!(
            "{what} refused the credentials: {e}; check the URL's user and password"
        )),
        ErrorKind::InvalidClientConfig => {
            StoreError::InvalidConfig(format!("{what}: invalid configuration: {e}"))
        }
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => {
            options.unreachable_target(what, e, check)
        }
        _ if e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_unrecoverable_error() =>
        {
            options.unreachable_target(what, e, check)
        }
        _ => StoreError::backend(format!("{what}: {e}")),
    }
}

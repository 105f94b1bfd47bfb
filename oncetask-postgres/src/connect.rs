//! Connecting: [`PostgresStore::connect`] and [`PostgresStore::connect_with`],
//! with fast, typed failures.

use oncetask_core::store::{ConnectOptions, redact_password};
use sqlx::ConnectOptions as _;

use super::*;

/// What to check when the server cannot be reached.
const CHECK_SERVER: &str = "check that the PostgreSQL server is running and accepts \
     connections at the URL's host and port (and that no firewall drops them)";

impl PostgresStore {
    /// Connects a pool to `url` and uses the tables in `schema`, with the
    /// default [`ConnectOptions`] (a 5 s connect timeout, sqlx's pool
    /// size): [`PostgresStore::connect_with`] says how it fails.
    ///
    /// Call [`PostgresStore::migrate`] once (at deploy or start-up) before use.
    pub async fn connect(url: &str, schema: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, schema, &ConnectOptions::default()).await
    }

    /// Connects a pool of [`PostgresStore::pool_options`] to `url`
    /// (`postgres://user:password@host:port/database[?param=value…]`) and
    /// uses the tables in `schema`.
    ///
    /// * A malformed URL, an invalid schema name, a pool size of 0, or a
    ///   server that refuses the URL's user, password or database fails at
    ///   once with [`StoreError::InvalidConfig`].
    /// * A server that cannot be reached fails with
    ///   [`StoreError::Unavailable`] naming the URL (password masked), the
    ///   timeout, the cause and what to check: at once when the connection
    ///   is refused, after [`ConnectOptions::connect_timeout`] when nothing
    ///   answers. One attempt is made: a service that may start before its
    ///   database retries `connect_with` on `Unavailable`.
    ///
    /// The timeout bounds connecting only. A call that later waits for a
    /// free pool connection waits up to the pool's acquire timeout (sqlx's
    /// 30 s): under load that wait is normal, and failing it would leave an
    /// outcome unwritten and its task to run again after its lease.
    /// [`ConnectOptions::pool_size`] sets `max_connections` (sqlx's
    /// default: 10).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use oncetask_core::store::ConnectOptions;
    /// use oncetask_postgres::PostgresStore;
    ///
    /// # async fn demo() -> Result<(), oncetask_core::StoreError> {
    /// let options = ConnectOptions::default()
    ///     .connect_timeout(Duration::from_secs(2))
    ///     .pool_size(20);
    /// let store =
    ///     PostgresStore::connect_with("postgres://app@db:5432/app", "oncetask", &options).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with(
        url: &str,
        schema: &str,
        options: &ConnectOptions,
    ) -> Result<Self, StoreError> {
        check_schema(schema)?;
        let connect_options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            StoreError::InvalidConfig(format!(
                "invalid PostgreSQL URL {}: {e} (expected \
                 postgres://user:password@host:port/database)",
                redact_password(url)
            ))
        })?;
        if options.pool_size == Some(0) {
            return Err(StoreError::InvalidConfig(
                "a PostgreSQL pool needs at least one connection (pool size 0)".to_owned(),
            ));
        }
        let timeout = options.connect_timeout;
        // One deadline for the probe and the pool: connecting takes at most
        // the timeout in all.
        let deadline = tokio::time::Instant::now() + timeout;
        // One connection on its own first: the pool retries a refused
        // connection until its acquire timeout and then reports only that
        // it timed out; this one fails at once, with its cause.
        let probe = match tokio::time::timeout_at(deadline, connect_options.connect()).await {
            Err(_) => {
                return Err(options.unreachable("PostgreSQL", url, "no answer", CHECK_SERVER));
            }
            Ok(Err(e)) => return Err(connect_error(url, options, e)),
            Ok(Ok(conn)) => conn,
        };
        let _ = tokio::time::timeout_at(deadline, sqlx::Connection::close(probe)).await;
        let mut pool_options = Self::pool_options();
        if let Some(size) = options.pool_size {
            pool_options = pool_options.max_connections(size);
        }
        let pool =
            match tokio::time::timeout_at(deadline, pool_options.connect_with(connect_options))
                .await
            {
                Err(_) => {
                    return Err(options.unreachable("PostgreSQL", url, "no answer", CHECK_SERVER));
                }
                Ok(result) => result.map_err(|e| connect_error(url, options, e))?,
            };
        Self::from_pool(pool, schema)
    }
}

/// The error of a failed connect to `url`.
fn connect_error(url: &str, options: &ConnectOptions, e: sqlx::Error) -> StoreError {
    let at = redact_password(url);
    match &e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
            options.unreachable("PostgreSQL", url, e, CHECK_SERVER)
        }
        sqlx::Error::Configuration(_) => {
            StoreError::InvalidConfig(format!("PostgreSQL at {at}: {e}"))
        }
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // Invalid authorization (28000, 28P01: a wrong user or
            // password), or no such database (3D000).
            Some(code) if code.starts_with("28") || code == "3D000" => {
                StoreError::InvalidConfig(format!(
                    "PostgreSQL at {at} refused the connection: {e}; check the URL's user, \
                     password and database"
                ))
            }
            // Starting up, shutting down, or out of connection slots.
            Some("57P03" | "57P01" | "53300") => options.unreachable(
                "PostgreSQL",
                url,
                e,
                "the server is starting, stopping or has no connection slot left; retry later",
            ),
            _ => StoreError::backend(format!("PostgreSQL at {at}: {e}")),
        },
        _ => StoreError::backend(format!("PostgreSQL at {at}: {e}")),
    }
}

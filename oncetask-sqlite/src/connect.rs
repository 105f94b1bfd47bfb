//! Opening a database: the URL, the connection settings (WAL, durability,
//! busy timeout), the embedded migrations, and typed failures.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use oncetask_core::StoreError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Connection as _, SqliteConnection};

use crate::error::{db, is_busy, open_error};
use crate::{Durability, SqliteOptions, SqliteStore};

/// The embedded schema migrations (the `migrations/` directory of this crate).
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A parsed URL: sqlx's options and a name for messages.
pub(crate) struct Target {
    pub options: SqliteConnectOptions,
    /// The file path, or `:memory:`.
    pub location: String,
    pub in_memory: bool,
}

/// Parses `sqlite:relative.db`, `sqlite:///absolute/path.db` or
/// `sqlite::memory:` (query parameters as sqlx reads them).
pub(crate) fn parse(url: &str, options: &SqliteOptions) -> Result<Target, StoreError> {
    if !url.starts_with("sqlite:") {
        return Err(StoreError::InvalidConfig(format!(
            "invalid SQLite URL {url:?}: expected sqlite:relative.db, \
             sqlite:///absolute/path.db or sqlite::memory:"
        )));
    }
    let parsed = SqliteConnectOptions::from_str(url).map_err(|e| {
        StoreError::InvalidConfig(format!(
            "invalid SQLite URL {url:?}: {e} (expected sqlite:relative.db, \
             sqlite:///absolute/path.db or sqlite::memory:)"
        ))
    })?;
    if options.pool_size == 0 {
        return Err(StoreError::InvalidConfig(
            "a SQLite pool needs at least one connection (pool size 0)".to_owned(),
        ));
    }
    let body = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let in_memory = body.starts_with(":memory:") || body.contains("mode=memory");
    let location = if in_memory {
        ":memory:".to_owned()
    } else {
        parsed.get_filename().display().to_string()
    };
    let synchronous = match options.durability {
        Durability::Full => SqliteSynchronous::Full,
        Durability::Normal => SqliteSynchronous::Normal,
    };
    // sqlx lets "create if missing" override a read-only `mode=ro`.
    let create = options.create_if_missing && !body.contains("mode=ro");
    let options = parsed
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(options.busy_timeout)
        .disable_statement_logging();
    Ok(Target {
        options,
        location,
        in_memory,
    })
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `url` with the default
    /// [`SqliteOptions`] and brings its schema up to date:
    /// [`SqliteStore::connect_with`] says how it fails.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &SqliteOptions::default()).await
    }

    /// Opens (creating it if needed) the database at `url` —
    /// `sqlite:relative.db`, `sqlite:///absolute/path.db` or
    /// `sqlite::memory:` — in WAL mode with `options`, and applies the
    /// embedded migrations ([`SqliteStore::migrate`]).
    ///
    /// Fails with [`StoreError::InvalidConfig`], naming the problem, for a
    /// malformed URL, a missing file when
    /// [`SqliteOptions::create_if_missing`] is false, a file that is not a SQLite database, a path where
    /// no database can be created or written (a missing directory, no
    /// permission), a file on a network file system (NFS, SMB, ...: read
    /// from Linux's mount table), or a database whose schema is newer than
    /// this library;
    /// with [`StoreError::Unavailable`] when another process keeps the
    /// database locked past the busy timeout.
    ///
    /// ```no_run
    /// use oncetask_sqlite::{Durability, SqliteOptions, SqliteStore};
    ///
    /// # async fn demo() -> Result<(), oncetask_core::StoreError> {
    /// let store = SqliteStore::connect("sqlite:tasks.db").await?;
    /// let faster = SqliteStore::connect_with(
    ///     "sqlite:///var/lib/app/tasks.db",
    ///     &SqliteOptions::new().durability(Durability::Normal),
    /// )
    /// .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with(url: &str, options: &SqliteOptions) -> Result<Self, StoreError> {
        let target = parse(url, options)?;
        if !target.in_memory {
            check_directory(&target.location)?;
            if let Some(fs_type) = crate::filesystem::network_fs_of(&target.location) {
                return Err(StoreError::InvalidConfig(format!(
                    "the SQLite database {} is on a network file system ({fs_type}): SQLite's \
                     locks do not hold between machines there, so two workers could take the \
                     same task; put the file on a local disk",
                    target.location
                )));
            }
            if !options.create_if_missing && !Path::new(&target.location).exists() {
                return Err(StoreError::InvalidConfig(format!(
                    "there is no SQLite database at {}",
                    target.location
                )));
            }
            // One connection first: the pool would report a failed open
            // only as a timeout, this one says why.
            let probe = probe(&target, options.busy_timeout).await?;
            let _ = probe.close().await;
        }
        let pool = pool_options(&target, options)
            .connect_with(target.options.clone())
            .await
            .map_err(|e| open_error(&target.location, e))?;
        let watch = options
            .watch_interval
            .filter(|_| !target.in_memory)
            .map(|period| crate::watch::Watch {
                // Never recreates a file deleted under the store.
                options: target.options.clone().create_if_missing(false),
                wal: crate::wal_path(target.options.get_filename()),
                period: period.max(Duration::from_millis(1)),
            });
        let store = Self::with_watch(pool, &target.location, watch);
        // A new in-memory database has nothing but what this store makes.
        if options.migrate || target.in_memory {
            store.migrate().await?;
        } else {
            store.check_schema().await?;
        }
        Ok(store)
    }

    /// Brings the schema up to date with the embedded migrations (done by
    /// [`SqliteStore::connect`]; a no-op when it is). A database migrated by
    /// a newer version of this crate fails with
    /// [`StoreError::InvalidConfig`]: this version does not know its schema.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let location = &self.inner.location;
        let mut conn = self
            .inner
            .pool
            .acquire()
            .await
            .map_err(|e| open_error(location, e))?;
        // One write transaction around the check and the migrations (each
        // of which sqlx runs in a savepoint): processes opening a new file
        // at once take turns, and the later ones find the schema in place.
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| open_error(location, e))?;
        check_not_newer(&mut tx, location).await?;
        MIGRATOR
            .run_direct(&mut *tx)
            .await
            .map_err(|e| migrate_error(location, e))?;
        tx.commit().await.map_err(|e| open_error(location, e))
    }
}

impl SqliteStore {
    /// Fails unless the database's schema is exactly the one the embedded
    /// migrations make (for [`SqliteOptions::migrate`] false).
    async fn check_schema(&self) -> Result<(), StoreError> {
        let location = &self.inner.location;
        let mut conn = self
            .inner
            .pool
            .acquire()
            .await
            .map_err(|e| open_error(location, e))?;
        check_not_newer(&mut conn, location).await?;
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let has_table: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| open_error(location, e))?;
        let newest: Option<i64> = if has_table == 0 {
            None
        } else {
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?
        };
        match newest {
            Some(version) if version == known => Ok(()),
            Some(version) => Err(StoreError::InvalidConfig(format!(
                "the SQLite database {location} has schema version {version}, older than this \
                 library's {known}: let a service of the newer version migrate it \
                 (SqliteStore::migrate)"
            ))),
            None => Err(StoreError::InvalidConfig(format!(
                "the SQLite database {location} has no oncetask schema: let a service create it \
                 (SqliteStore::connect)"
            ))),
        }
    }
}

/// Opens one connection, retrying for up to `busy_timeout` while the file
/// is locked: switching a new file to WAL takes a lock that SQLite's busy
/// handler does not wait for, so processes opening one new file at once
/// would otherwise fail at once.
async fn probe(target: &Target, busy_timeout: Duration) -> Result<SqliteConnection, StoreError> {
    let deadline = tokio::time::Instant::now() + busy_timeout;
    loop {
        match SqliteConnection::connect_with(&target.options).await {
            Ok(conn) => return Ok(conn),
            Err(e) if is_busy(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(open_error(&target.location, e)),
        }
    }
}

/// The pool: `options.pool_size` connections; an in-memory database keeps
/// one open for good, since it vanishes with its last connection.
fn pool_options(target: &Target, options: &SqliteOptions) -> SqlitePoolOptions {
    let pool = SqlitePoolOptions::new()
        .max_connections(options.pool_size)
        // A connection is a thread beside this one on a local file: a
        // ping before each use would be one more round trip to it, and a
        // dead one fails its first statement anyway.
        .test_before_acquire(false);
    if target.in_memory {
        pool.min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        pool
    }
}

/// A database file's directory must exist: SQLite's own error for a
/// missing one only says it cannot open the file.
fn check_directory(location: &str) -> Result<(), StoreError> {
    let path = Path::new(location);
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.is_dir() {
        return Ok(());
    }
    let what = if dir.exists() {
        "is not a directory"
    } else {
        "does not exist"
    };
    Err(StoreError::InvalidConfig(format!(
        "cannot create the SQLite database {location}: {} {what}",
        dir.display()
    )))
}

/// Fails when the database records a migration newer than the newest this
/// library embeds.
async fn check_not_newer(conn: &mut SqliteConnection, location: &str) -> Result<(), StoreError> {
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let has_table: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| open_error(location, e))?;
    if has_table == 0 {
        return Ok(());
    }
    let newest: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    match newest {
        Some(version) if version > known => Err(newer_schema(location, version, known)),
        _ => Ok(()),
    }
}

fn newer_schema(location: &str, version: i64, known: i64) -> StoreError {
    StoreError::InvalidConfig(format!(
        "the SQLite database {location} has schema version {version}, newer than this \
         library knows (up to {known}): it was migrated by a newer oncetask-sqlite; upgrade \
         this program's oncetask-sqlite"
    ))
}

fn migrate_error(location: &str, e: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError;
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    match e {
        MigrateError::VersionMissing(version) => newer_schema(location, version, known),
        MigrateError::VersionMismatch(version) => StoreError::InvalidConfig(format!(
            "the SQLite database {location} applied migration {version} with other contents \
             than this library's: it was migrated by a different build of oncetask-sqlite"
        )),
        MigrateError::Dirty(version) => StoreError::InvalidConfig(format!(
            "the SQLite database {location} has migration {version} half applied; repair it \
             by hand"
        )),
        MigrateError::Execute(inner) => open_error(location, inner),
        other => StoreError::backend(format!("migrating the SQLite database {location}: {other}")),
    }
}

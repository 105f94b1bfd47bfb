//! `--store URL`: which backend, and how to reach it.
//!
//! | URL | Backend |
//! |---|---|
//! | `postgres://user:pass@host:port/db[?schema=NAME]` (also `postgresql://`) | PostgreSQL; `schema` defaults to `oncetask`, other query parameters go to the driver |
//! | `firestore://PROJECT[/COLLECTION][?database=NAME]` | Firestore; the collection defaults to `onceTasks`, the database to `(default)`. Credentials: Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS` names a service-account key file). Honours `FIRESTORE_EMULATOR_HOST` |
//! | `redis://…[?prefix=P]`, `rediss://…` | Redis; keys under prefix `P` (default `oncetask`) |
//! | `redis+cluster://[user:pass@]host:port,host:port…[?prefix=P]` (also `rediss+cluster://`) | Redis Cluster, through the listed seed nodes |
//! | `sqlite://PATH`, `sqlite:PATH` (relative to the working directory), `sqlite:///ABSOLUTE/PATH`, `sqlite::memory:` | SQLite; the file must exist with its schema (only `oncetask demo` creates and migrates one) |
//! | `memory://` | a new, empty in-process store: for trying the CLI, not for operating anything |
//!
//! Adding a backend is one [`StoreUrl`] variant, one arm in
//! [`StoreUrl::from_str`] and one in [`StoreUrl::open`].

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use oncetask::backend::redact_password;
use oncetask::{MemoryStore, Store, StoreError};

use crate::error::CliError;

/// The PostgreSQL schema used when the URL names none (as in `docs/postgres.md`).
pub const DEFAULT_SCHEMA: &str = "oncetask";

/// The Firestore collection used when the URL names none (the Go package's).
pub const DEFAULT_COLLECTION: &str = "onceTasks";

/// A parsed `--store` URL.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory://`: an empty in-process store.
    Memory,
    /// `postgres://…`.
    Postgres {
        /// The connection URL for the driver, without the `schema` parameter.
        url: String,
        /// The schema holding the task table.
        schema: String,
    },
    /// `firestore://PROJECT[/COLLECTION][?database=NAME]`.
    Firestore {
        /// The Google Cloud project id.
        project: String,
        /// The task collection.
        collection: String,
        /// A named database; `None`: the project's `(default)` one.
        database: Option<String>,
    },
    /// `sqlite:…`: a SQLite database file (or `sqlite::memory:`).
    Sqlite {
        /// The URL as given, for the backend (`sqlite:relative.db`,
        /// `sqlite://relative.db`, `sqlite:///absolute/path.db`,
        /// `sqlite::memory:`).
        url: String,
    },
    /// `redis://…` or `rediss://…` (or `redis+cluster://…` for a cluster),
    /// with an optional `prefix` parameter.
    Redis {
        /// The URL without the `prefix` parameter.
        url: String,
        /// The key prefix (default `oncetask`).
        prefix: String,
    },
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for StoreUrl {
    /// The URL with any password replaced by `***`, for messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // SQLite URLs need no `//` (`sqlite:tasks.db`, `sqlite::memory:`).
        if let Some(scheme) = s.get(..7)
            && scheme.eq_ignore_ascii_case("sqlite:")
        {
            return parse_sqlite(s);
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            // Without a scheme there is no telling where a password ends:
            // show nothing of a value that may hold one.
            let shown = if s.contains('@') {
                "the value given (not shown: it may hold a password)".to_owned()
            } else {
                format!("{s:?}")
            };
            return Err(format!(
                "{shown} is not a store URL: expected postgres://…, \
                 firestore://PROJECT[/COLLECTION], redis://…, sqlite://PATH or memory://"
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => parse_postgres(s),
            "firestore" => parse_firestore(rest),
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => Ok(parse_redis(s)),
            "memory" if rest.is_empty() => Ok(StoreUrl::Memory),
            "memory" => Err("memory:// takes nothing after the scheme".to_owned()),
            other => Err(format!(
                "unknown store scheme {other:?}: expected postgres, firestore, redis, sqlite or \
                 memory"
            )),
        }
    }
}

/// The clap parser of `--store`: [`StoreUrl::from_str`], with an error that
/// shows the URL with its password masked (clap's own error for a
/// `FromStr` type repeats the value as given).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreUrlParser;

impl clap::builder::TypedValueParser for StoreUrlParser {
    type Value = StoreUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<StoreUrl, clap::Error> {
        let arg = arg.map_or_else(|| "--store <URL>".to_owned(), ToString::to_string);
        let Some(text) = value.to_str() else {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidUtf8,
                format!("the value of '{arg}' is not valid UTF-8\n"),
            )
            .with_cmd(cmd));
        };
        text.parse().map_err(|e: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "invalid value '{}' for '{arg}': {e}\n",
                    redact_password(text)
                ),
            )
            .with_cmd(cmd)
        })
    }
}

/// A SQLite URL: `sqlite:` and a path (or `:memory:`), with or without `//`.
fn parse_sqlite(s: &str) -> Result<StoreUrl, String> {
    let rest = &s[7..];
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return Err(format!(
            "{s:?} names no database: expected sqlite://PATH, sqlite:relative.db, \
             sqlite:///absolute/path.db or sqlite::memory:"
        ));
    }
    // The backend reads the scheme in lower case.
    Ok(StoreUrl::Sqlite {
        url: format!("sqlite:{rest}"),
    })
}

/// Splits the `prefix` parameter off a Redis URL.
fn parse_redis(s: &str) -> StoreUrl {
    let (base, query) = s.split_once('?').unwrap_or((s, ""));
    let mut prefix = "oncetask".to_owned();
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| match p.strip_prefix("prefix=") {
            Some(v) => {
                prefix = v.to_owned();
                false
            }
            None => true,
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    StoreUrl::Redis { url, prefix }
}

/// Splits the `schema` parameter off a PostgreSQL URL.
fn parse_postgres(s: &str) -> Result<StoreUrl, String> {
    let (base, query) = match s.split_once('?') {
        Some((base, query)) => (base, query),
        None => (s, ""),
    };
    let mut schema = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", value)) => schema = Some(value.to_owned()),
            _ => kept.push(pair),
        }
    }
    let schema = schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
    if !valid_schema(&schema) {
        return Err(format!(
            "invalid schema {schema:?}: use letters, digits and _ (not first), at most 63 bytes"
        ));
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(StoreUrl::Postgres { url, schema })
}

fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

fn parse_firestore(rest: &str) -> Result<StoreUrl, String> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut database = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("database", name)) if valid_database_id(name) => {
                database = (name != "(default)").then(|| name.to_owned());
            }
            Some(("database", name)) => {
                return Err(format!(
                    "invalid Firestore database id {name:?}: use lowercase letters, digits and \
                     -, starting with a letter, 4 to 63 characters (or (default))"
                ));
            }
            _ => {
                return Err(format!(
                    "firestore://{rest}: unknown parameter {pair:?}, expected ?database=NAME"
                ));
            }
        }
    }
    let mut parts = rest.trim_end_matches('/').split('/');
    let project = parts.next().unwrap_or_default();
    if project.is_empty() {
        return Err(
            "firestore:// needs a project: firestore://PROJECT[/COLLECTION][?database=NAME]"
                .to_owned(),
        );
    }
    let collection = parts.next().unwrap_or(DEFAULT_COLLECTION);
    if parts.next().is_some() || collection.is_empty() {
        return Err(format!(
            "firestore://{rest}: expected firestore://PROJECT[/COLLECTION][?database=NAME]"
        ));
    }
    Ok(StoreUrl::Firestore {
        project: project.to_owned(),
        collection: collection.to_owned(),
        database,
    })
}

/// Firestore's rule for a database id, as the backend checks it. A CLI
/// built without the backend takes any id: opening the store fails anyway.
fn valid_database_id(id: &str) -> bool {
    #[cfg(feature = "firestore")]
    return oncetask::firestore::is_valid_database_id(id);
    #[cfg(not(feature = "firestore"))]
    return !id.is_empty();
}

impl StoreUrl {
    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Memory => "memory://".to_owned(),
            StoreUrl::Postgres { url, schema } => {
                format!("{} (schema {schema})", redact_password(url))
            }
            StoreUrl::Firestore {
                project,
                collection,
                database: None,
            } => format!("firestore://{project}/{collection}"),
            StoreUrl::Firestore {
                project,
                collection,
                database: Some(database),
            } => format!("firestore://{project}/{collection}?database={database}"),
            StoreUrl::Redis { url, prefix } => {
                format!("{} (prefix {prefix})", redact_password(url))
            }
            StoreUrl::Sqlite { url } => url.clone(),
        }
    }

    /// Connects to the store, failing within `timeout` if it does not answer.
    pub async fn open(&self, timeout: Duration) -> Result<Arc<dyn Store>, CliError> {
        match self {
            StoreUrl::Memory => Ok(Arc::new(MemoryStore::new())),
            StoreUrl::Postgres { url, schema } => postgres::open(url, schema, timeout).await,
            StoreUrl::Firestore {
                project,
                collection,
                database,
            } => firestore::open(project, collection, database.as_deref(), timeout).await,
            StoreUrl::Redis { url, prefix } => redis::open(url, prefix, timeout).await,
            StoreUrl::Sqlite { url } => sqlite::open(url, timeout, false).await,
        }
    }
}

/// The seed node URLs of `redis+cluster://[userinfo@]h1:p1,h2:p2[tail]`
/// (`rediss+cluster` for TLS): `redis://[userinfo@]hN:pN[tail]` each, or
/// `None` for a URL of another scheme.
#[cfg(feature = "redis")]
fn cluster_seeds(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let scheme = scheme.strip_suffix("+cluster")?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    Some(
        hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("{scheme}://{userinfo}{h}{tail}"))
            .collect(),
    )
}

/// The CLI error of a backend's failed `connect_with`: a configuration
/// error is bad input (exit 2), anything else a store error (exit 3). The
/// backends' messages name the URL (password masked) and what to check.
#[cfg_attr(
    not(any(
        feature = "postgres",
        feature = "redis",
        feature = "firestore",
        feature = "sqlite"
    )),
    allow(dead_code)
)]
fn connect_error(e: StoreError) -> CliError {
    match e {
        StoreError::InvalidConfig(message) => CliError::usage(message),
        StoreError::Unavailable(message) => CliError::store(message),
        other => CliError::store(other.to_string()),
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use oncetask::ConnectOptions;
    use oncetask::postgres::PostgresStore;

    /// Connects a pool of two (failing within `timeout`: the store's
    /// `connect_with`), then checks that the schema has a task table.
    pub(super) async fn open(
        url: &str,
        schema: &str,
        timeout: Duration,
    ) -> Result<Arc<dyn Store>, CliError> {
        let options = ConnectOptions::default()
            .connect_timeout(timeout)
            .pool_size(2);
        let store = PostgresStore::connect_with(url, schema, &options)
            .await
            .map_err(connect_error)?;
        let where_ = redact_password(url);
        let table = format!("\"{schema}\".tasks");
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&table)
            .fetch_one(store.pool())
            .await
            .map_err(|e| CliError::store(format!("PostgreSQL at {where_}: {e}")))?;
        if !exists {
            store.pool().close().await;
            return Err(CliError::store(format!(
                "PostgreSQL at {where_} has no oncetask table {table}: check ?schema=NAME in the \
                 store URL (default {DEFAULT_SCHEMA}), or let a service migrate it \
                 (PostgresStore::migrate)"
            )));
        }
        Ok(Arc::new(store))
    }
}

#[cfg(not(feature = "postgres"))]
mod postgres {
    use super::*;

    pub(super) async fn open(_: &str, _: &str, _: Duration) -> Result<Arc<dyn Store>, CliError> {
        Err(CliError::usage(
            "this build has no PostgreSQL backend (built without the `postgres` feature)",
        ))
    }
}

#[cfg(feature = "firestore")]
mod firestore {
    use super::*;
    use ::firestore::FirestoreDbOptions;
    use oncetask::ConnectOptions;
    use oncetask::firestore::FirestoreStore;

    pub(super) async fn open(
        project: &str,
        collection: &str,
        database: Option<&str>,
        timeout: Duration,
    ) -> Result<Arc<dyn Store>, CliError> {
        Ok(Arc::new(
            open_store(project, collection, database, timeout).await?,
        ))
    }

    /// Builds the client (the emulator when `FIRESTORE_EMULATOR_HOST` is
    /// set, otherwise Application Default Credentials: a service-account key
    /// file named by `GOOGLE_APPLICATION_CREDENTIALS`, `gcloud auth
    /// application-default login`, or the metadata server), failing within
    /// `timeout` (the store's `connect_with`).
    pub(crate) async fn open_store(
        project: &str,
        collection: &str,
        database: Option<&str>,
        timeout: Duration,
    ) -> Result<FirestoreStore, CliError> {
        let mut db = FirestoreDbOptions::new(project.to_owned());
        if let Some(database) = database {
            db = db.with_database_id(database.to_owned());
        }
        let options = ConnectOptions::default().connect_timeout(timeout);
        FirestoreStore::connect_with(db, collection, &options)
            .await
            .map_err(connect_error)
    }
}

#[cfg(feature = "firestore")]
pub(crate) use firestore::open_store as open_firestore;

#[cfg(not(feature = "firestore"))]
mod firestore {
    use super::*;

    pub(super) async fn open(
        _: &str,
        _: &str,
        _: Option<&str>,
        _: Duration,
    ) -> Result<Arc<dyn Store>, CliError> {
        Err(CliError::usage(
            "this build has no Firestore backend (built without the `firestore` feature)",
        ))
    }
}

#[cfg(feature = "sqlite")]
pub(crate) mod sqlite {
    use super::*;
    use oncetask::sqlite::{SqliteOptions, SqliteStore};

    /// Opens the database of `url` (a pool of two). With `set_up` (the
    /// demo), creates the file if needed and migrates it; otherwise, like
    /// the other backends' commands, it changes no schema: the file must
    /// exist with the schema this build writes. `timeout` is the busy
    /// timeout: how long a statement waits for a write lock another
    /// process holds.
    pub(crate) async fn open(
        url: &str,
        timeout: Duration,
        set_up: bool,
    ) -> Result<Arc<dyn Store>, CliError> {
        let options = SqliteOptions::new()
            .busy_timeout(timeout)
            .pool_size(2)
            .create_if_missing(set_up)
            .migrate(set_up);
        let store = SqliteStore::connect_with(url, &options)
            .await
            .map_err(connect_error)?;
        Ok(Arc::new(store))
    }
}

#[cfg(not(feature = "sqlite"))]
pub(crate) mod sqlite {
    use super::*;

    /// Refuses: this build has no SQLite backend.
    pub(crate) async fn open(_: &str, _: Duration, _: bool) -> Result<Arc<dyn Store>, CliError> {
        Err(CliError::usage(
            "this build has no SQLite backend (built without the `sqlite` feature)",
        ))
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use oncetask::ConnectOptions;
    use oncetask::redis::RedisStore;

    /// Connects to the server, or to the cluster through the seed nodes of
    /// a `redis+cluster://` URL, failing within `timeout`.
    pub(super) async fn open(
        url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Arc<dyn Store>, CliError> {
        let options = ConnectOptions::default().connect_timeout(timeout);
        let store = match cluster_seeds(url) {
            Some(seeds) => RedisStore::connect_cluster_with(&seeds, prefix, &options).await,
            None => RedisStore::connect_with(url, prefix, &options).await,
        };
        Ok(Arc::new(store.map_err(connect_error)?))
    }
}

#[cfg(not(feature = "redis"))]
mod redis {
    use super::*;

    pub(super) async fn open(_: &str, _: &str, _: Duration) -> Result<Arc<dyn Store>, CliError> {
        Err(CliError::usage(
            "this build has no Redis backend (built without the `redis` feature)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StoreUrl, String> {
        s.parse()
    }

    #[test]
    fn postgres_urls_keep_driver_parameters_and_take_the_schema() {
        assert_eq!(
            parse("postgres://u@h:5432/db"),
            Ok(StoreUrl::Postgres {
                url: "postgres://u@h:5432/db".into(),
                schema: DEFAULT_SCHEMA.into()
            })
        );
        assert_eq!(
            parse("postgresql://u@h/db?sslmode=disable&schema=jobs&application_name=x"),
            Ok(StoreUrl::Postgres {
                url: "postgresql://u@h/db?sslmode=disable&application_name=x".into(),
                schema: "jobs".into()
            })
        );
        assert!(parse("postgres://u@h/db?schema=drop;table").is_err());
    }

    #[test]
    fn firestore_urls_name_a_project_and_maybe_a_collection() {
        assert_eq!(
            parse("firestore://my-project"),
            Ok(StoreUrl::Firestore {
                project: "my-project".into(),
                collection: DEFAULT_COLLECTION.into(),
                database: None,
            })
        );
        assert_eq!(
            parse("firestore://p/tasks"),
            Ok(StoreUrl::Firestore {
                project: "p".into(),
                collection: "tasks".into(),
                database: None,
            })
        );
        assert!(parse("firestore://").is_err());
        assert!(parse("firestore://p/a/b").is_err());
    }

    #[test]
    fn firestore_urls_may_name_a_database() {
        let url = parse("firestore://p/tasks?database=tasks-eu").expect("a URL");
        assert_eq!(
            url,
            StoreUrl::Firestore {
                project: "p".into(),
                collection: "tasks".into(),
                database: Some("tasks-eu".into()),
            }
        );
        assert_eq!(url.to_string(), "firestore://p/tasks?database=tasks-eu");
        assert_eq!(
            parse("firestore://p?database=tasks-eu"),
            Ok(StoreUrl::Firestore {
                project: "p".into(),
                collection: DEFAULT_COLLECTION.into(),
                database: Some("tasks-eu".into()),
            })
        );
        // `(default)` is the default database.
        assert_eq!(
            parse("firestore://p?database=(default)"),
            parse("firestore://p")
        );
        for bad in ["Tasks", "a", "9lives", "tasks-", "tasks_eu", ""] {
            let err = parse(&format!("firestore://p?database={bad}")).expect_err(bad);
            assert!(err.contains("invalid Firestore database id"), "{err}");
        }
        let err = parse("firestore://p?db=x").expect_err("unknown parameter");
        assert!(err.contains("expected ?database=NAME"), "{err}");
    }

    #[test]
    fn other_schemes() {
        assert_eq!(parse("memory://"), Ok(StoreUrl::Memory));
        assert!(matches!(
            parse("redis://localhost:6379/0"),
            Ok(StoreUrl::Redis { .. })
        ));
        assert!(matches!(parse("rediss://h"), Ok(StoreUrl::Redis { .. })));
        let unknown = parse("mysql://h/db").expect_err("unknown scheme");
        assert!(
            unknown.contains("unknown store scheme \"mysql\""),
            "{unknown}"
        );
        let bare = parse("localhost:5432").expect_err("no scheme");
        assert!(bare.contains("not a store URL"), "{bare}");
    }

    #[test]
    fn sqlite_urls_take_a_path_with_or_without_slashes() {
        for (given, url) in [
            ("sqlite://demo.db", "sqlite://demo.db"),
            ("sqlite:relative.db", "sqlite:relative.db"),
            ("sqlite:///abs/path.db", "sqlite:///abs/path.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("SQLite://demo.db", "sqlite://demo.db"),
        ] {
            let parsed = parse(given).expect(given);
            assert_eq!(parsed, StoreUrl::Sqlite { url: url.into() }, "{given}");
            assert_eq!(parsed.to_string(), url);
        }
        for bad in ["sqlite:", "sqlite://", "sqlite:?mode=ro"] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("names no database"), "{err}");
        }
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn a_missing_sqlite_file_is_not_created_by_a_command() {
        let path = std::env::temp_dir().join(format!(
            "oncetask-cli-missing-{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let url = parse(&format!("sqlite://{}", path.display())).expect("a URL");
        let err = url
            .open(Duration::from_secs(5))
            .await
            .err()
            .expect("no such file");
        assert!(
            err.to_string().contains("there is no SQLite database at"),
            "{err}"
        );
        assert_eq!(err.exit_status(), crate::error::EXIT_USAGE);
        assert!(!path.exists());
    }

    #[test]
    fn passwords_never_show() {
        let url = parse("postgres://app:s3cret@db:5432/app?schema=x").expect("a URL");
        assert_eq!(url.to_string(), "postgres://app:***@db:5432/app (schema x)");
        assert_eq!(format!("{url:?}"), url.to_string());
        assert_eq!(redact_password("redis://:pw@h/0"), "redis://:***@h/0");
        assert_eq!(redact_password("redis://h/0"), "redis://h/0");
        assert_eq!(
            redact_password("redis+cluster://u:pw@a:1,b:2"),
            "redis+cluster://u:***@a:1,b:2"
        );
    }

    #[test]
    fn redis_urls_take_the_prefix_parameter() {
        match parse("redis://h:6379/0?prefix=jobs&protocol=resp3") {
            Ok(StoreUrl::Redis { url, prefix }) => {
                assert_eq!(
                    (url.as_str(), prefix.as_str()),
                    ("redis://h:6379/0?protocol=resp3", "jobs")
                );
            }
            other => panic!("{other:?}"),
        }
        match parse("redis://h") {
            Ok(StoreUrl::Redis { url, prefix }) => {
                assert_eq!((url.as_str(), prefix.as_str()), ("redis://h", "oncetask"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_a_store_error() {
        // Nothing listens on port 1.
        let url = parse("redis://127.0.0.1:1").expect("a URL");
        let err = url
            .open(Duration::from_secs(5))
            .await
            .err()
            .expect("unreachable");
        assert!(
            err.to_string()
                .contains("cannot reach Redis at redis://127.0.0.1:1"),
            "{err}"
        );
        assert_eq!(err.exit_status(), crate::error::EXIT_STORE);
        let cluster = parse("redis+cluster://127.0.0.1:1,127.0.0.1:2?prefix=p").expect("a URL");
        let err = cluster
            .open(Duration::from_secs(5))
            .await
            .err()
            .expect("unreachable");
        assert!(
            err.to_string().contains(
                "cannot reach the Redis Cluster at redis://127.0.0.1:1, redis://127.0.0.1:2"
            ),
            "{err}"
        );
        assert_eq!(err.exit_status(), crate::error::EXIT_STORE);
    }

    #[test]
    fn a_store_url_clap_refuses_shows_no_password() {
        use clap::builder::TypedValueParser;
        let cmd = clap::Command::new("oncetask");
        let err = StoreUrlParser
            .parse_ref(
                &cmd,
                None,
                std::ffi::OsStr::new("postgres://app:s3cret@db/app?schema=no;such"),
            )
            .expect_err("an invalid schema");
        let text = err.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("postgres://app:***@db/app?schema=no;such"),
            "{text}"
        );
        assert!(text.contains("invalid schema"), "{text}");
    }

    /// Service-account keys sign their tokens in this build: without a
    /// crypto provider for them, building the headers panics. The key is a
    /// throwaway generated for this test; the token is self-signed (no
    /// network).
    #[cfg(feature = "firestore")]
    #[tokio::test]
    async fn a_service_account_key_signs_a_token_in_this_build() {
        use google_cloud_auth::credentials::{CacheableResource, service_account};
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/throwaway-service-account.json"
        );
        let key: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON");
        let credentials = service_account::Builder::new(key)
            .with_access_specifier(service_account::AccessSpecifier::from_scopes([
                "https://www.googleapis.com/auth/cloud-platform",
            ]))
            .build()
            .expect("credentials");
        let CacheableResource::New { data, .. } = credentials
            .headers(Default::default())
            .await
            .expect("signed headers")
        else {
            panic!("first headers are new");
        };
        let authorization = data
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .expect("an authorization header");
        // A JWT: header.payload.signature.
        let token = authorization
            .strip_prefix("Bearer ")
            .expect("a bearer token");
        assert_eq!(token.split('.').count(), 3, "{token}");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_cluster_url_names_its_seed_nodes() {
        assert_eq!(
            cluster_seeds("redis+cluster://u:pw@a:1,b:2/0?protocol=resp3"),
            Some(vec![
                "redis://u:pw@a:1/0?protocol=resp3".to_owned(),
                "redis://u:pw@b:2/0?protocol=resp3".to_owned()
            ])
        );
        assert_eq!(
            cluster_seeds("rediss+cluster://a:1"),
            Some(vec!["rediss://a:1".to_owned()])
        );
        assert_eq!(cluster_seeds("redis://a:1"), None);
        match parse("redis+cluster://a:1,b:2?prefix=jobs") {
            Ok(StoreUrl::Redis { url, prefix }) => {
                assert_eq!(
                    (url.as_str(), prefix.as_str()),
                    ("redis+cluster://a:1,b:2", "jobs")
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

//! Where a bench runs: a backend, and a fresh namespace in it (a Postgres
//! schema, a Redis key prefix, a Firestore collection, a SQLite file in a
//! directory of its own, or a new memory store) that nothing else uses and
//! that [`Namespace::cleanup`] removes.

use std::sync::{Arc, Mutex, PoisonError};

use oncetask::{MemoryStore, Store};

use crate::config::BackendName;
use crate::error::BenchError;

/// The PostgreSQL server used by `--backends postgres` without `ONCETASK_POSTGRES_URL`.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The Redis server used by `--backends redis` without `ONCETASK_REDIS_URL`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The Google Cloud project used on the Firestore emulator.
pub const DEFAULT_FIRESTORE_PROJECT: &str = "oncetask-bench";

/// A backend and how to reach its server.
#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    /// The in-process memory store.
    Memory,
    /// A PostgreSQL server (driver URL, without a schema).
    Postgres {
        /// Connection URL.
        url: String,
    },
    /// A Redis server.
    Redis {
        /// Connection URL.
        url: String,
    },
    /// Firestore (the emulator when `FIRESTORE_EMULATOR_HOST` is set).
    Firestore {
        /// Google Cloud project id.
        project: String,
    },
    /// A SQLite file, in a new directory per namespace under `dir`.
    Sqlite {
        /// Where the namespaces' directories go.
        dir: std::path::PathBuf,
        /// `synchronous = NORMAL` instead of the default `FULL`.
        normal: bool,
    },
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may hold passwords: show the backend only.
        f.write_str(self.name())
    }
}

impl Backend {
    /// The backend of `--backends NAME`, through the usual environment variables.
    pub fn from_name(name: BackendName) -> Self {
        let var = |key: &str, default: &str| match std::env::var(key) {
            Ok(v) if !v.trim().is_empty() => v,
            _ => default.to_owned(),
        };
        match name {
            BackendName::Memory => Backend::Memory,
            BackendName::Postgres => Backend::Postgres {
                url: var("ONCETASK_POSTGRES_URL", DEFAULT_POSTGRES_URL),
            },
            BackendName::Redis => Backend::Redis {
                url: var("ONCETASK_REDIS_URL", DEFAULT_REDIS_URL),
            },
            BackendName::Firestore => Backend::Firestore {
                project: DEFAULT_FIRESTORE_PROJECT.to_owned(),
            },
            BackendName::Sqlite | BackendName::SqliteNormal => Backend::Sqlite {
                dir: match std::env::var("ONCETASK_SQLITE_BENCH_DIR") {
                    Ok(v) if !v.trim().is_empty() => v.into(),
                    _ => std::env::temp_dir(),
                },
                normal: name == BackendName::SqliteNormal,
            },
        }
    }

    /// `memory`, `postgres`, `redis`, `firestore`, `sqlite` or
    /// `sqlite-normal`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Postgres { .. } => "postgres",
            Backend::Redis { .. } => "redis",
            Backend::Firestore { .. } => "firestore",
            Backend::Sqlite { normal: false, .. } => "sqlite",
            Backend::Sqlite { normal: true, .. } => "sqlite-normal",
        }
    }
}

/// A fresh, private place in a backend for one bench run.
pub struct Namespace {
    backend: Backend,
    tag: String,
    pg_pool_size: u32,
    memory: Mutex<Arc<MemoryStore>>,
    envs: Mutex<Vec<String>>,
    #[cfg(feature = "postgres")]
    pg_admin: Option<sqlx::PgPool>,
    #[cfg(feature = "redis")]
    redis: Option<oncetask::redis::RedisStore>,
    /// The SQLite namespace's directory (removed by cleanup).
    sqlite_dir: Option<std::path::PathBuf>,
}

impl Namespace {
    /// Sets up a new namespace: for Postgres a migrated schema
    /// `oncetask_bench_<tag>`, for Redis the prefix `oncetask_bench_<tag>`,
    /// for Firestore the collection `oncetask_bench_<tag>`, for SQLite the
    /// migrated file `oncetask_bench_<tag>/bench.db`. Fails, saying
    /// what to start, when the server cannot be reached.
    pub async fn create(backend: Backend, pg_pool_size: u32) -> Result<Self, BenchError> {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let mut ns = Namespace {
            backend,
            tag,
            pg_pool_size,
            memory: Mutex::new(Arc::new(MemoryStore::new())),
            envs: Mutex::new(Vec::new()),
            #[cfg(feature = "postgres")]
            pg_admin: None,
            #[cfg(feature = "redis")]
            redis: None,
            sqlite_dir: None,
        };
        match ns.backend.clone() {
            Backend::Memory => {}
            Backend::Sqlite { dir, .. } => ns.setup_sqlite(&dir).await?,
            Backend::Postgres { url } => ns.setup_postgres(&url).await?,
            Backend::Redis { url } => ns.setup_redis(&url).await?,
            Backend::Firestore { .. } => {
                // Connects once, so that an absent emulator fails here.
                ns.store().await?;
            }
        }
        Ok(ns)
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The schema, key prefix or collection name of this namespace.
    pub fn name(&self) -> String {
        format!("oncetask_bench_{}", self.tag)
    }

    /// A new environment name for one row (rows never see each other's
    /// tasks); ids built with it are unique in the store too.
    pub fn env(&self, label: &str) -> String {
        let mut envs = self.envs.lock().unwrap_or_else(PoisonError::into_inner);
        let env = format!("b{}-{}-{}", self.tag, label, envs.len());
        envs.push(env.clone());
        env
    }

    /// A new store instance of this namespace: its own pool or connection
    /// (so two managers talk to the server as two processes would). The
    /// memory backend has one store per namespace, shared.
    pub async fn store(&self) -> Result<Arc<dyn Store>, BenchError> {
        match &self.backend {
            Backend::Memory => Ok(self
                .memory
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()),
            Backend::Postgres { url } => self.open_postgres(url).await,
            Backend::Redis { url } => self.open_redis(url).await,
            Backend::Firestore { project } => self.open_firestore(project).await,
            Backend::Sqlite { normal, .. } => self.open_sqlite(*normal).await,
        }
    }

    /// Replaces the memory backend's store by an empty one (so a row does
    /// not pay for an earlier row's tasks); other backends ignore it.
    pub fn reset_memory(&self) {
        *self.memory.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(MemoryStore::new());
    }

    /// After seeding, before a measured drain: on Postgres `ANALYZE` the
    /// namespace's table, so that the planner knows the rows just loaded
    /// (as autovacuum's auto-analyze would on a server that has it on, and as
    /// the raw cycle does for its own table); other backends ignore it.
    pub async fn analyze(&self) -> Result<(), BenchError> {
        #[cfg(feature = "postgres")]
        if let Some(admin) = &self.pg_admin {
            let sql = format!("ANALYZE \"{}\".tasks", self.name());
            sqlx::query(&sql)
                .execute(admin)
                .await
                .map_err(|e| BenchError::Raw(format!("{sql}: {e}")))?;
        }
        Ok(())
    }

    /// The pool of the admin connection (Postgres only).
    #[cfg(feature = "postgres")]
    pub fn pg_admin(&self) -> Option<&sqlx::PgPool> {
        self.pg_admin.as_ref()
    }

    /// Removes everything this namespace stored.
    pub async fn cleanup(&self) -> Result<(), BenchError> {
        match &self.backend {
            Backend::Memory => {
                self.reset_memory();
                Ok(())
            }
            Backend::Postgres { .. } => self.cleanup_postgres().await,
            Backend::Redis { .. } => self.cleanup_redis().await,
            Backend::Firestore { .. } => self.cleanup_firestore().await,
            Backend::Sqlite { .. } => {
                if let Some(dir) = &self.sqlite_dir {
                    std::fs::remove_dir_all(dir)
                        .map_err(|e| BenchError::Raw(format!("removing {}: {e}", dir.display())))?;
                }
                Ok(())
            }
        }
    }

    /// The SQLite URL of this namespace's file (SQLite only).
    pub fn sqlite_url(&self) -> Option<String> {
        self.sqlite_dir
            .as_ref()
            .map(|dir| format!("sqlite://{}", dir.join("bench.db").display()))
    }

    async fn cleanup_firestore(&self) -> Result<(), BenchError> {
        let store = self.store().await?;
        let envs = self
            .envs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for env in envs {
            let filter = oncetask::backend::TaskFilter::env(env, chrono::Utc::now());
            let deletes: Vec<oncetask::backend::Delete> = store
                .find(&filter)
                .await?
                .iter()
                .map(|t| oncetask::backend::Delete::any(t.id.clone()))
                .collect();
            for chunk in deletes.chunks(500) {
                store.delete(chunk).await?;
            }
        }
        Ok(())
    }
}

#[cfg(feature = "postgres")]
impl Namespace {
    async fn setup_postgres(&mut self, url: &str) -> Result<(), BenchError> {
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| {
                BenchError::Unavailable(format!(
                    "cannot reach PostgreSQL ({e}): start it (on this machine \
                     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                     or run `scripts/test`), or set ONCETASK_POSTGRES_URL"
                ))
            })?;
        let store = oncetask::postgres::PostgresStore::from_pool(admin.clone(), &self.name())?;
        store.migrate().await?;
        self.pg_admin = Some(admin);
        Ok(())
    }

    async fn open_postgres(&self, url: &str) -> Result<Arc<dyn Store>, BenchError> {
        let pool = oncetask::postgres::PostgresStore::pool_options()
            .max_connections(self.pg_pool_size)
            .connect(url)
            .await
            .map_err(|e| BenchError::Unavailable(format!("cannot reach PostgreSQL: {e}")))?;
        Ok(Arc::new(oncetask::postgres::PostgresStore::from_pool(
            pool,
            &self.name(),
        )?))
    }

    async fn cleanup_postgres(&self) -> Result<(), BenchError> {
        if let Some(admin) = &self.pg_admin {
            sqlx::query(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.name()
            ))
            .execute(admin)
            .await
            .map_err(|e| BenchError::Raw(format!("dropping the bench schema: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(not(feature = "postgres"))]
impl Namespace {
    async fn setup_postgres(&mut self, _: &str) -> Result<(), BenchError> {
        Err(not_built("postgres"))
    }
    async fn open_postgres(&self, _: &str) -> Result<Arc<dyn Store>, BenchError> {
        Err(not_built("postgres"))
    }
    async fn cleanup_postgres(&self) -> Result<(), BenchError> {
        Ok(())
    }
}

#[cfg(feature = "redis")]
impl Namespace {
    async fn setup_redis(&mut self, url: &str) -> Result<(), BenchError> {
        let store = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            oncetask::redis::RedisStore::connect(url, &self.name()),
        )
        .await
        .map_err(|_| BenchError::Unavailable("Redis did not answer within 10 s".to_owned()))?
        .map_err(|e| {
            BenchError::Unavailable(format!(
                "cannot reach Redis ({e}): start redis-server (or run `scripts/test`), \
                 or set ONCETASK_REDIS_URL"
            ))
        })?;
        self.redis = Some(store);
        Ok(())
    }

    async fn open_redis(&self, url: &str) -> Result<Arc<dyn Store>, BenchError> {
        Ok(Arc::new(
            oncetask::redis::RedisStore::connect(url, &self.name()).await?,
        ))
    }

    async fn cleanup_redis(&self) -> Result<(), BenchError> {
        if let Some(store) = &self.redis {
            store.purge().await?;
        }
        Ok(())
    }
}

#[cfg(not(feature = "redis"))]
impl Namespace {
    async fn setup_redis(&mut self, _: &str) -> Result<(), BenchError> {
        Err(not_built("redis"))
    }
    async fn open_redis(&self, _: &str) -> Result<Arc<dyn Store>, BenchError> {
        Err(not_built("redis"))
    }
    async fn cleanup_redis(&self) -> Result<(), BenchError> {
        Ok(())
    }
}

#[cfg(feature = "firestore")]
impl Namespace {
    async fn open_firestore(&self, project: &str) -> Result<Arc<dyn Store>, BenchError> {
        Ok(Arc::new(self.connect_firestore(project).await?))
    }

    /// A new Firestore store of this namespace, as its own type (for its
    /// billed-operation counts, [`oncetask::firestore::FirestoreStore::stats`]);
    /// `None` on other backends.
    pub async fn firestore_store(
        &self,
    ) -> Result<Option<oncetask::firestore::FirestoreStore>, BenchError> {
        match &self.backend {
            Backend::Firestore { project } => Ok(Some(self.connect_firestore(project).await?)),
            _ => Ok(None),
        }
    }

    async fn connect_firestore(
        &self,
        project: &str,
    ) -> Result<oncetask::firestore::FirestoreStore, BenchError> {
        let db = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            firestore::FirestoreDb::new(project),
        )
        .await
        .map_err(|_| BenchError::Unavailable("Firestore did not answer within 10 s".to_owned()))?
        .map_err(|e| {
            BenchError::Unavailable(format!(
                "cannot reach Firestore ({e}): start the emulator and set \
                 FIRESTORE_EMULATOR_HOST (`scripts/firestore-emulator` prints it, or \
                 `scripts/firestore-emulator oncetask bench …` sets it)"
            ))
        })?;
        Ok(oncetask::firestore::FirestoreStore::with_collection(
            db,
            self.name(),
        ))
    }
}

#[cfg(not(feature = "firestore"))]
impl Namespace {
    async fn open_firestore(&self, _: &str) -> Result<Arc<dyn Store>, BenchError> {
        Err(not_built("firestore"))
    }
}

#[cfg(feature = "sqlite")]
impl Namespace {
    async fn setup_sqlite(&mut self, base: &std::path::Path) -> Result<(), BenchError> {
        let dir = base.join(self.name());
        std::fs::create_dir_all(&dir).map_err(|e| {
            BenchError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        self.sqlite_dir = Some(dir);
        // Creates and migrates the file once, so that a bad directory fails here.
        self.store().await?;
        Ok(())
    }

    async fn open_sqlite(&self, normal: bool) -> Result<Arc<dyn Store>, BenchError> {
        let url = self
            .sqlite_url()
            .ok_or_else(|| BenchError::Raw("the SQLite namespace has no directory".to_owned()))?;
        Ok(Arc::new(
            oncetask::sqlite::SqliteStore::connect_with(&url, &sqlite_options(normal)).await?,
        ))
    }
}

/// The store's default options, with `Durability::Normal` when `normal`.
#[cfg(feature = "sqlite")]
pub fn sqlite_options(normal: bool) -> oncetask::sqlite::SqliteOptions {
    let options = oncetask::sqlite::SqliteOptions::default();
    if normal {
        options.durability(oncetask::sqlite::Durability::Normal)
    } else {
        options
    }
}

#[cfg(not(feature = "sqlite"))]
impl Namespace {
    async fn setup_sqlite(&mut self, _: &std::path::Path) -> Result<(), BenchError> {
        Err(not_built("sqlite"))
    }
    async fn open_sqlite(&self, _: bool) -> Result<Arc<dyn Store>, BenchError> {
        Err(not_built("sqlite"))
    }
}

#[allow(dead_code)] // unused when every backend is built
fn not_built(backend: &str) -> BenchError {
    BenchError::Usage(format!(
        "this build has no {backend} backend (built without the `{backend}` feature)"
    ))
}

//! Which store a run uses, how workers open it, and the servers a run
//! starts for itself so that it may restart them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oncetask::Store;
use oncetask::firestore::FirestoreStore;
use oncetask::postgres::PostgresStore;
use oncetask::redis::RedisStore;
use oncetask::sqlite::{Durability, SqliteOptions, SqliteStore};
use serde::{Deserialize, Serialize};

use crate::ChaosError;

/// The backends a run can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The in-memory store; workers are in-process (a memory store cannot be
    /// shared between processes).
    Memory,
    /// PostgreSQL.
    Postgres,
    /// Redis.
    Redis,
    /// Firestore (the emulator at `FIRESTORE_EMULATOR_HOST`).
    Firestore,
    /// SQLite: worker processes sharing one database file (the store's
    /// default options: WAL, `synchronous = FULL`, a 5 s busy timeout).
    Sqlite,
    /// SQLite as `sqlite`, with `synchronous = NORMAL` (`Durability::Normal`):
    /// commits do not wait for `fsync`, so write transactions are shorter.
    SqliteNormal,
}

/// Where a worker process finds the run's tasks: passed to it as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum Target {
    /// A PostgreSQL server and the run's own schema.
    Postgres {
        /// Connection URL.
        url: String,
        /// Schema.
        schema: String,
    },
    /// A Redis server and the run's own key prefix.
    Redis {
        /// Connection URL.
        url: String,
        /// Key prefix.
        prefix: String,
    },
    /// A Firestore project and the run's own collection.
    Firestore {
        /// Project id.
        project: String,
        /// Collection.
        collection: String,
    },
    /// The run's own SQLite file.
    Sqlite {
        /// `sqlite://PATH` URL of the file.
        url: String,
        /// Open it with `Durability::Normal` instead of the default `Full`.
        #[serde(default)]
        normal: bool,
    },
}

/// The Firestore project of chaos runs on the emulator.
pub const FIRESTORE_PROJECT: &str = "demo-oncetask-chaos";

impl Target {
    /// Opens the store (connections of this process).
    pub async fn open(&self) -> Result<Arc<dyn Store>, ChaosError> {
        match self {
            Target::Postgres { url, schema } => {
                let store = PostgresStore::connect(url, schema).await.map_err(|e| {
                    ChaosError::Service(format!("cannot reach PostgreSQL at {url}: {e}"))
                })?;
                Ok(Arc::new(store))
            }
            Target::Redis { url, prefix } => {
                let store = RedisStore::connect(url, prefix).await.map_err(|e| {
                    ChaosError::Service(format!("cannot reach Redis at {url}: {e}"))
                })?;
                Ok(Arc::new(store))
            }
            Target::Firestore {
                project,
                collection,
            } => {
                if std::env::var("FIRESTORE_EMULATOR_HOST").map_or(true, |h| h.is_empty()) {
                    return Err(ChaosError::Service(
                        "FIRESTORE_EMULATOR_HOST is not set: start the emulator (scripts/firestore-emulator \
                         <command>, or scripts/test)"
                            .into(),
                    ));
                }
                let db = firestore::FirestoreDb::new(project).await.map_err(|e| {
                    ChaosError::Service(format!("cannot reach the Firestore emulator: {e}"))
                })?;
                Ok(Arc::new(FirestoreStore::with_collection(
                    db,
                    collection.clone(),
                )))
            }
            Target::Sqlite { url, normal } => {
                let durability = if *normal {
                    Durability::Normal
                } else {
                    Durability::Full
                };
                let options = SqliteOptions::default().durability(durability);
                let store = SqliteStore::connect_with(url, &options)
                    .await
                    .map_err(|e| ChaosError::Service(format!("cannot open {url}: {e}")))?;
                Ok(Arc::new(store))
            }
        }
    }

    /// Prepares the run's namespace (the Postgres schema's tables, the
    /// SQLite file and its schema).
    pub async fn prepare(&self) -> Result<(), ChaosError> {
        if let Target::Sqlite { .. } = self {
            // Creates and migrates the file before the workers race to.
            self.open().await?;
        }
        if let Target::Postgres { url, schema } = self {
            let store = PostgresStore::connect(url, schema).await.map_err(|e| {
                ChaosError::Service(format!("cannot reach PostgreSQL at {url}: {e}"))
            })?;
            store
                .migrate()
                .await
                .map_err(|e| ChaosError::Service(format!("cannot create schema {schema}: {e}")))?;
        }
        Ok(())
    }
}

/// A port on loopback that was free a moment ago.
pub fn free_port() -> Result<u16, ChaosError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| ChaosError::io("find a free port".into(), e))?;
    let port = listener
        .local_addr()
        .map_err(|e| ChaosError::io("find a free port".into(), e))?
        .port();
    Ok(port)
}

/// A server this run started and may restart.
pub trait OwnServer: Send {
    /// The URL clients use.
    fn url(&self) -> String;
    /// Kills the server abruptly (no clean shutdown) and starts it again on
    /// the same data and port; returns when it answers.
    fn crash_and_restart(&mut self) -> Result<(), ChaosError>;
}

/// A PostgreSQL cluster of the run's own, in a temp dir (fsync on, so a
/// crash loses no committed write). When run as root, the server runs as the
/// `postgres` user, as PostgreSQL requires.
pub struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl OwnPostgres {
    /// Initializes and starts a cluster.
    pub fn start() -> Result<Self, ChaosError> {
        let bindir = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .map_err(|e| {
                ChaosError::Service(format!(
                    "pg_config not found ({e}): install PostgreSQL's server package"
                ))
            })?;
        let bin = PathBuf::from(String::from_utf8_lossy(&bindir.stdout).trim());
        let dir = tempfile::Builder::new()
            .prefix("oncetask-chaos-pg")
            .tempdir()
            .map_err(|e| ChaosError::io("create a temp dir".into(), e))?;
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path()))?;
        }
        let server = Self {
            dir,
            bin,
            port: free_port()?,
        };
        server.pg(
            &["initdb", "-D"],
            &[server.data().as_os_str()],
            &["-A", "trust", "-U", "postgres", "--no-sync"],
        )?;
        server.start_server()?;
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs a PostgreSQL program of `bin` (as `postgres` when root).
    fn pg(
        &self,
        program_and_flag: &[&str],
        paths: &[&std::ffi::OsStr],
        rest: &[&str],
    ) -> Result<(), ChaosError> {
        let (program, flags) = program_and_flag
            .split_first()
            .ok_or_else(|| ChaosError::Service("no program".into()))?;
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        command
            .args(flags)
            .args(paths)
            .args(rest)
            .current_dir(self.dir.path());
        run(&mut command)
    }

    fn start_server(&self) -> Result<(), ChaosError> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.pg(
            &["pg_ctl", "-D"],
            &[self.data().as_os_str()],
            &[
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "-l",
                &log.to_string_lossy(),
                "start",
            ],
        )
    }
}

impl OwnServer for OwnPostgres {
    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn crash_and_restart(&mut self) -> Result<(), ChaosError> {
        // `immediate` is a crash: no checkpoint, WAL replay on start.
        self.pg(
            &["pg_ctl", "-D"],
            &[self.data().as_os_str()],
            &["-w", "-m", "immediate", "stop"],
        )?;
        self.start_server()
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self.pg(
            &["pg_ctl", "-D"],
            &[self.data().as_os_str()],
            &["-w", "-m", "immediate", "stop"],
        );
    }
}

/// A `redis-server` of the run's own with AOF on and `appendfsync always`,
/// so a crash loses no acknowledged write.
pub struct OwnRedis {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl OwnRedis {
    /// Starts the server.
    pub fn start() -> Result<Self, ChaosError> {
        let dir = tempfile::Builder::new()
            .prefix("oncetask-chaos-redis")
            .tempdir()
            .map_err(|e| ChaosError::io("create a temp dir".into(), e))?;
        let port = free_port()?;
        let child = spawn_redis(dir.path(), port)?;
        Ok(Self { dir, port, child })
    }
}

fn spawn_redis(dir: &Path, port: u16) -> Result<Child, ChaosError> {
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "yes",
        ])
        .args(["--appendfsync", "always", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            ChaosError::Service(format!(
                "cannot start redis-server ({e}): install Redis >= 7.0"
            ))
        })?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(ChaosError::Service(format!(
                "redis-server on port {port} did not start"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

impl OwnServer for OwnRedis {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn crash_and_restart(&mut self) -> Result<(), ChaosError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_redis(self.dir.path(), self.port)?;
        Ok(())
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this process runs as root (PostgreSQL refuses to): `/proc/self`
/// belongs to the process's effective user.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn run(command: &mut Command) -> Result<(), ChaosError> {
    let output = command
        .output()
        .map_err(|e| ChaosError::Service(format!("cannot run {command:?}: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ChaosError::Service(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

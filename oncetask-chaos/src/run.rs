//! The coordinator: starts the workers, feeds tasks in waves, kills and
//! freezes workers and restarts the server on a seeded schedule, cancels
//! some tasks mid-run, waits for the queue to drain, stops the workers, and
//! checks the ledger against the store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oncetask::backend::TaskFilter;
use oncetask::{Manager, MemoryStore, Store, TaskStatus};

use crate::ChaosError;
use crate::backend::{Backend, FIRESTORE_PROJECT, OwnPostgres, OwnRedis, OwnServer, Target};
use crate::fleet::{Fleet, Spawner};
use crate::go_writer::{GoTargets, GoWriter};
use crate::ledger::{self, LedgerWriter};
use crate::observe::{FencedRecorder, RecordingStore};
use crate::verdict::{Evidence, Verdict};
use crate::worker::WorkerSpec;
use crate::workload::{self, KIND};

/// The size and shape of a run (the `run` subcommand's flags).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Backend to torture (`sqlite`: worker processes sharing one file in a
    /// temp dir, or in --ledger's directory when given).
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// Tasks to create (recurring ones add their occurrences).
    #[arg(long, default_value_t = 600)]
    pub tasks: usize,
    /// Resource keys the keyed tasks (3 in 4) share.
    #[arg(long, default_value_t = 20)]
    pub keys: usize,
    /// Worker processes alive at any time.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Handler slots per worker.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Workers to SIGKILL (each replaced at once).
    #[arg(long, default_value_t = 4)]
    pub kills: usize,
    /// Workers to freeze (SIGSTOP) for longer than a lease.
    #[arg(long, default_value_t = 2)]
    pub pauses: usize,
    /// Do not crash and restart the server (Postgres and Redis only; the run
    /// starts a server of its own for it unless --store-url is given).
    #[arg(long)]
    pub no_restart: bool,
    /// Use this server instead of starting one (Postgres or Redis URL);
    /// implies --no-restart.
    #[arg(long)]
    pub store_url: Option<String>,
    /// Lease of every claim, in ms (the handler's time limit is derived from it).
    #[arg(long, default_value_t = 2000)]
    pub lease_ms: u64,
    /// Length of the phase with creations, kills, freezes and the restart, in s.
    #[arg(long, default_value_t = 15)]
    pub chaos_secs: u64,
    /// Longest wait for the queue to drain afterwards, in s.
    #[arg(long, default_value_t = 120)]
    pub drain_secs: u64,
    /// Seed of every random choice (default: from the clock); printed, so a
    /// failing run can be repeated.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the ledger in this directory (default: a temp dir, removed).
    #[arg(long)]
    pub ledger: Option<PathBuf>,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// Firestore only: a Go-shaped writer cancels and resets tasks during
    /// the chaos phase, writing their documents the way the Go package does
    /// (see [`crate::go_writer`]); the checks then count finishing writes
    /// per run generation and prove that no Go write was lost.
    #[arg(long)]
    pub go_writer: bool,
    /// Time between two operations of the Go-shaped writer, in ms.
    #[arg(long, default_value_t = 100)]
    pub go_interval_ms: u64,
}

/// The coordinator's worker number in the ledger (workers count from 1).
const COORDINATOR: u32 = 0;

/// What the schedule does at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Kill,
    Pause,
    RestartServer,
}

/// Runs the chaos run described by `args` and returns its verdict (which
/// says whether it passed). Errors are failures to run at all (a service
/// that cannot be reached, a worker that cannot start).
pub async fn run(args: &RunArgs) -> Result<Verdict, ChaosError> {
    let began = Instant::now();
    if args.go_writer && args.backend != Backend::Firestore {
        return Err(ChaosError::Run(
            "--go-writer writes Firestore documents: it needs --backend firestore".into(),
        ));
    }
    let seed = args
        .seed
        .unwrap_or_else(|| u64::try_from(ledger::now_micros()).unwrap_or(0));
    let mut rng = fastrand::Rng::with_seed(seed);
    let env = format!("chaos-{seed}");
    let lease = Duration::from_millis(args.lease_ms);
    eprintln!(
        "oncetask-chaos: backend {:?}, seed {seed}, env {env}",
        args.backend
    );

    let mut server: Option<Box<dyn OwnServer>> = match (args.backend, &args.store_url) {
        (Backend::Postgres, None) => Some(Box::new(blocking(OwnPostgres::start).await?)),
        (Backend::Redis, None) => Some(Box::new(blocking(OwnRedis::start).await?)),
        _ => None,
    };
    let url = |fallback: &Option<String>| {
        server
            .as_ref()
            .map(|s| s.url())
            .or_else(|| fallback.clone())
            .unwrap_or_default()
    };
    // A SQLite run's file: in the kept ledger directory (the ledger reads
    // only `.jsonl` files there), or in a temp dir removed at the end.
    let sqlite_dir = match (args.backend, &args.ledger) {
        (Backend::Sqlite | Backend::SqliteNormal, None) => Some(
            tempfile::Builder::new()
                .prefix("oncetask-chaos-sqlite")
                .tempdir()
                .map_err(|e| ChaosError::io("create a temp dir".into(), e))?,
        ),
        _ => None,
    };
    let sqlite_file = match (&sqlite_dir, &args.ledger) {
        (Some(dir), _) => dir.path().join("chaos.db"),
        (None, Some(dir)) => dir.join("chaos.db"),
        (None, None) => PathBuf::new(),
    };
    let target = match args.backend {
        Backend::Memory => None,
        Backend::Sqlite | Backend::SqliteNormal => {
            if let Some(dir) = &args.ledger {
                std::fs::create_dir_all(dir)
                    .map_err(|e| ChaosError::io(format!("create {}", dir.display()), e))?;
            }
            Some(Target::Sqlite {
                url: format!("sqlite://{}", sqlite_file.display()),
                normal: args.backend == Backend::SqliteNormal,
            })
        }
        Backend::Postgres => Some(Target::Postgres {
            url: url(&args.store_url),
            schema: format!("chaos_{seed}"),
        }),
        Backend::Redis => Some(Target::Redis {
            url: url(&args.store_url),
            prefix: format!("chaos:{seed}"),
        }),
        Backend::Firestore => Some(Target::Firestore {
            project: FIRESTORE_PROJECT.into(),
            collection: format!("chaos-{seed}"),
        }),
    };

    let ledger_dir = match &args.ledger {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| ChaosError::io(format!("create {}", dir.display()), e))?;
            LedgerDir::Kept(dir.clone())
        }
        None => LedgerDir::Temp(
            tempfile::tempdir().map_err(|e| ChaosError::io("create a temp dir".into(), e))?,
        ),
    };
    let spec = WorkerSpec {
        worker: 0,
        env: env.clone(),
        ledger: ledger_dir.path(),
        concurrency: args.concurrency,
        lease,
    };

    // Ledger file 0 is the coordinator's: its creates and cancels are
    // writes the checks must see too.
    let coordinator_ledger = Arc::new(LedgerWriter::open(&spec.ledger, COORDINATOR)?);
    let (store, spawner): (Arc<dyn Store>, Spawner) = match &target {
        None => {
            let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
            // In-process workers share this process's metrics recorder: its
            // fenced-off counts go to the coordinator's file.
            let recorder = FencedRecorder::new(COORDINATOR, coordinator_ledger.clone());
            let _ = metrics::set_global_recorder(recorder);
            (store.clone(), Spawner::InProcess { store })
        }
        Some(target) => {
            target.prepare().await?;
            let exe = std::env::current_exe()
                .map_err(|e| ChaosError::io("find this executable".into(), e))?;
            (
                target.open().await?,
                Spawner::Processes {
                    exe,
                    target: target.clone(),
                },
            )
        }
    };
    let store: Arc<dyn Store> =
        Arc::new(RecordingStore::new(store, COORDINATOR, coordinator_ledger));
    let admin = Manager::builder(store)
        .env(env.clone())
        .declare_kinds([KIND])
        .start_workers(false)
        .build();

    let mut fleet = Fleet::new(spawner, spec);
    for _ in 0..args.workers.max(1) {
        fleet.spawn()?;
    }

    // On SQLite (one writer at a time, across processes): a probe writes
    // from this process all along, so that the verdict can say how long
    // the others' writes waited while a worker was frozen.
    let probe = match &target {
        Some(target @ Target::Sqlite { .. }) => {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let store = target.open().await?;
            Some((
                stop,
                tokio::spawn(probe_writes(store, format!("{env}-probe"), stopped)),
            ))
        }
        _ => None,
    };
    let mut freezes: Vec<(i64, i64)> = Vec::new();

    // The schedule: waves of creations, and the events spread over the ticks.
    let restart = server.is_some() && !args.no_restart;
    let mut events: Vec<Event> = std::iter::repeat_n(Event::Kill, args.kills)
        .chain(std::iter::repeat_n(Event::Pause, args.pauses))
        .chain(restart.then_some(Event::RestartServer))
        .collect();
    rng.shuffle(&mut events);
    let ticks = (events.len() + 2).max(10);
    let tick = Duration::from_millis(
        args.chaos_secs.saturating_mul(1000) / u64::try_from(ticks).unwrap_or(1),
    );
    let jobs = workload::jobs(seed, args.tasks, args.keys, lease, chrono::Utc::now());
    let created_ids: Vec<String> = jobs.iter().map(workload::ChaosJob::id).collect();
    let waves: Vec<&[workload::ChaosJob]> =
        jobs.chunks(jobs.len().div_ceil(ticks).max(1)).collect();
    let mut to_cancel: Vec<String> = Vec::new();
    let mut verdict = Verdict {
        backend: format!("{:?}", args.backend).to_lowercase(),
        go_writer: args.go_writer,
        ..Verdict::default()
    };

    // The Go-shaped writer touches the one-off tasks created so far (not
    // recurring ones: Go's generator rules differ, W9/W26/W28).
    let (go_targets, go_targets_rx) = tokio::sync::watch::channel(GoTargets::default());
    let go_writer = match (&target, args.go_writer) {
        (
            Some(Target::Firestore {
                project,
                collection,
            }),
            true,
        ) => {
            let writer =
                GoWriter::connect(project, collection.clone(), env.clone(), &ledger_dir.path())
                    .await?;
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let recent = waves.first().map_or(1, |w| w.len());
            let interval = Duration::from_millis(args.go_interval_ms.max(1));
            let handle =
                tokio::spawn(writer.run(go_targets_rx, recent, interval, seed ^ 0x60, stopped));
            Some((stop, handle))
        }
        _ => None,
    };

    for t in 0..ticks {
        if let Some(wave) = waves.get(t) {
            create_wave(&admin, wave).await?;
            go_targets.send_modify(|targets| {
                for job in wave.iter().filter(|j| j.recurrence.is_none()) {
                    if job.stays_open() {
                        targets.cancel.push(job.id());
                    }
                    targets.reset.push(job.id());
                }
            });
        }
        // Cancel the previous wave's marked tasks: some are running, some done.
        if !to_cancel.is_empty() && admin.cancel_many(&to_cancel).await.is_ok() {
            to_cancel.clear();
        }
        if let Some(wave) = waves.get(t) {
            to_cancel.extend(wave.iter().filter(|j| j.cancel).map(workload::ChaosJob::id));
        }
        let event = (t >= 1).then(|| events.get(t - 1)).flatten().copied();
        match event {
            Some(Event::Kill) => {
                if let Some(n) = fleet.kill(rng.usize(..)) {
                    eprintln!("oncetask-chaos: killed worker {n}");
                    verdict.kills += 1;
                    fleet.spawn()?;
                }
            }
            Some(Event::Pause) => {
                let freeze = lease + Duration::from_secs(1);
                let from = ledger::now_micros();
                let paused = fleet.pause(rng.usize(..), freeze).await?;
                freezes.push((from, ledger::now_micros()));
                if let Some(n) = paused {
                    eprintln!("oncetask-chaos: froze worker {n} for {freeze:?}");
                    verdict.pauses += 1;
                }
            }
            Some(Event::RestartServer) => {
                if let Some(server) = server.as_mut() {
                    eprintln!("oncetask-chaos: crashing and restarting the server");
                    tokio::task::block_in_place(|| server.crash_and_restart())?;
                    verdict.server_restarts += 1;
                }
            }
            None => {}
        }
        tokio::time::sleep(tick).await;
    }
    if let Some((stop, handle)) = go_writer {
        let _ = stop.send(());
        let counts = handle
            .await
            .map_err(|e| ChaosError::Run(format!("the Go writer failed: {e}")))?;
        eprintln!(
            "oncetask-chaos: Go writer: {} operations, {} writes accepted",
            counts.operations, counts.accepted
        );
    }
    let probes = match probe {
        Some((stop, handle)) => {
            let _ = stop.send(());
            handle
                .await
                .map_err(|e| ChaosError::Run(format!("the write probe failed: {e}")))?
        }
        None => Vec::new(),
    };
    while !to_cancel.is_empty() {
        match admin.cancel_many(&to_cancel).await {
            Ok(_) => to_cancel.clear(),
            Err(e) => {
                eprintln!("oncetask-chaos: cancel failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    drain(&admin, Duration::from_secs(args.drain_secs)).await;
    tokio::task::block_in_place(|| fleet.stop_all())?;

    let now = chrono::Utc::now();
    let tasks = admin
        .find(TaskFilter::env(env.clone(), now))
        .await
        .map_err(|e| ChaosError::Run(format!("list the run's tasks: {e}")))?;
    let (records, torn) = ledger::read_all(&ledger_dir.path())?;
    verdict.torn_ledger_lines = torn;
    verdict.check(&Evidence {
        records: &records,
        deaths: &fleet.deaths,
        tasks: &tasks,
        created_ids: &created_ids,
        now,
    });
    verdict.stalls(&probes, &freezes, lease);
    verdict.seconds = began.elapsed().as_secs_f64();
    drop(server.take());
    drop(sqlite_dir);
    Ok(verdict)
}

/// Time between two probe writes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Creates a task of kind `probe` in `env` (no worker serves it) every
/// [`PROBE_INTERVAL`] until `stop`, one at a time: each create is a write
/// transaction, which waits for whoever holds the database's write lock.
/// Returns every probe's start and duration.
async fn probe_writes(
    store: Arc<dyn Store>,
    env: String,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<Probe> {
    let mut probes = Vec::new();
    for n in 0u64.. {
        let at = ledger::now_micros();
        let started = Instant::now();
        let task = oncetask::Task::new(
            format!("probe-{n}"),
            "probe",
            env.clone(),
            chrono::Utc::now(),
        );
        let ok = store.create(vec![task]).await.is_ok();
        probes.push(Probe {
            at,
            micros: i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX),
            ok,
        });
        tokio::select! {
            _ = &mut stop => break,
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
    probes
}

/// One probe write: when it started (µs since the epoch), how long it
/// took, and whether the store accepted it.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Start, µs since the epoch.
    pub at: i64,
    /// Duration, µs.
    pub micros: i64,
    /// Whether the write succeeded.
    pub ok: bool,
}

async fn create_wave(admin: &Manager, wave: &[workload::ChaosJob]) -> Result<(), ChaosError> {
    // The server may be restarting: retry for a while (creates are idempotent).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match admin.create_many(wave.iter()).await {
            Ok(report) if report.is_ok() => return Ok(()),
            Ok(report) if Instant::now() > deadline => {
                return Err(ChaosError::Run(format!(
                    "creating a wave failed: {report:?}"
                )));
            }
            Err(e) if Instant::now() > deadline => {
                return Err(ChaosError::Run(format!("creating a wave failed: {e}")));
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Waits until no task is left to run (or `limit` passes: the checks then
/// report what is left).
async fn drain(admin: &Manager, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(counts) = admin.count_by_status(None).await {
            let open: u64 = [
                TaskStatus::Waiting,
                TaskStatus::Pending,
                TaskStatus::Leased,
                TaskStatus::CancellationPending,
            ]
            .iter()
            .map(|s| counts.get(s).copied().unwrap_or(0))
            .sum();
            if open == 0 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn blocking<T: Send + 'static>(f: fn() -> Result<T, ChaosError>) -> Result<T, ChaosError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ChaosError::Run(format!("start a server: {e}")))?
}

enum LedgerDir {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl LedgerDir {
    fn path(&self) -> PathBuf {
        match self {
            LedgerDir::Kept(dir) => dir.clone(),
            LedgerDir::Temp(dir) => dir.path().to_path_buf(),
        }
    }
}

//! Several real OS processes on one database file.
//!
//! The tests start this test binary again as worker processes (the
//! `worker_process` test, which does nothing unless the `ONCETASK_SQLITE_WORKER`
//! variable names a database). Each worker runs a manager over its own
//! store; its handlers append a line per run to a file of their own
//! (`id key pid start_us end_us`, system-clock microseconds), which the test
//! reads back once the workers have stopped.
//!
//! `ONCETASK_SQLITE_TEST_DURABILITY=normal` runs every process with
//! `Durability::Normal` (to see the latency without the commits' syncs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oncetask_conformance::fleet::{Job, KIND, manager};
use oncetask_core::manager::handler_fn;
use oncetask_core::{HandlerOptions, Manager, Store, Task, TaskStatus};
use oncetask_sqlite::{Durability, SqliteOptions, SqliteStore};

const ENV: &str = "processes";

/// Names the database a worker process serves; unset in a normal run.
const WORKER: &str = "ONCETASK_SQLITE_WORKER";
/// The file the worker appends its runs to.
const RUNS: &str = "ONCETASK_SQLITE_WORKER_RUNS";
/// The worker writes this file once its manager runs, and stops when this
/// file with `.stop` appended appears.
const READY: &str = "ONCETASK_SQLITE_WORKER_READY";
/// The manager's poll interval, in milliseconds.
const POLL_MS: &str = "ONCETASK_SQLITE_WORKER_POLL_MS";
/// Workers of the manager.
const CONCURRENCY: &str = "ONCETASK_SQLITE_WORKER_CONCURRENCY";
/// How long each handler holds its task, in milliseconds.
const HOLD_MS: &str = "ONCETASK_SQLITE_WORKER_HOLD_MS";

/// The options of every process's store (see the module docs).
fn options() -> SqliteOptions {
    match std::env::var("ONCETASK_SQLITE_TEST_DURABILITY").as_deref() {
        Ok("normal") => SqliteOptions::new().durability(Durability::Normal),
        _ => SqliteOptions::new(),
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

fn var(name: &str) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not set to a number"))
}

/// The worker process's body; a no-op unless started by [`Workers::spawn`].
#[test]
fn worker_process() {
    let Ok(url) = std::env::var(WORKER) else {
        return;
    };
    let runs_path = PathBuf::from(std::env::var(RUNS).expect("runs file"));
    let ready = PathBuf::from(std::env::var(READY).expect("ready file"));
    let poll = Duration::from_millis(var(POLL_MS));
    let concurrency = usize::try_from(var(CONCURRENCY)).expect("concurrency");
    let hold = Duration::from_millis(var(HOLD_MS));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = SqliteStore::connect_with(&url, &options())
            .await
            .expect("connect");
        let m = manager(Arc::new(store), ENV, poll);
        let runs = Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&runs_path)
                .expect("open the runs file"),
        ));
        m.register_dyn(
            KIND,
            handler_fn(move |task: Task| {
                let runs = runs.clone();
                async move {
                    let start = now_us();
                    tokio::time::sleep(hold).await;
                    let end = now_us();
                    let key = task.resource_key.as_deref().unwrap_or("-");
                    let line = format!("{} {key} {} {start} {end}\n", task.id, std::process::id());
                    runs.lock()
                        .expect("lock")
                        .write_all(line.as_bytes())
                        .expect("append a run");
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default()
                .concurrency(concurrency)
                .lease_duration(Duration::from_secs(60)),
        )
        .expect("register");
        // Let the worker loops make their first claim and go idle.
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(&ready, b"ready").expect("write the ready file");
        let stop = stop_path(&ready);
        let deadline = Instant::now() + Duration::from_secs(300);
        while !stop.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        m.shutdown(Duration::from_secs(10)).await;
    });
}

fn stop_path(ready: &Path) -> PathBuf {
    let mut stop = ready.as_os_str().to_owned();
    stop.push(".stop");
    stop.into()
}

/// One run as a worker recorded it.
#[derive(Debug, Clone)]
struct Run {
    id: String,
    key: Option<String>,
    pid: u32,
    start_us: u64,
    end_us: u64,
}

/// Worker processes on one database file in a scratch directory; killed
/// if the test fails before it stops them.
struct Workers {
    dir: PathBuf,
    url: String,
    children: Vec<Child>,
}

impl Workers {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "oncetask-sqlite-processes-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        let url = format!("sqlite://{}", dir.join("tasks.db").display());
        Self {
            dir,
            url,
            children: Vec::new(),
        }
    }

    fn ready_path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("ready-{n}"))
    }

    fn runs_path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("runs-{n}.txt"))
    }

    /// Starts a worker process and waits until its manager runs.
    fn spawn(&mut self, poll: Duration, concurrency: usize, hold: Duration) {
        let n = self.children.len();
        let child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "worker_process",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(WORKER, &self.url)
            .env(RUNS, self.runs_path(n))
            .env(READY, self.ready_path(n))
            .env(POLL_MS, poll.as_millis().to_string())
            .env(CONCURRENCY, concurrency.to_string())
            .env(HOLD_MS, hold.as_millis().to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("start a worker process");
        self.children.push(child);
    }

    /// Waits until every worker wrote its ready file.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for n in 0..self.children.len() {
            while !self.ready_path(n).exists() {
                if let Some(status) = self.children[n].try_wait().expect("poll a worker") {
                    panic!("worker {n} exited early: {status}");
                }
                assert!(Instant::now() < deadline, "worker {n} never got ready");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Asks every worker to stop, waits for them to exit successfully, and
    /// returns their runs.
    fn stop(&mut self) -> Vec<Run> {
        for n in 0..self.children.len() {
            std::fs::write(stop_path(&self.ready_path(n)), b"stop").expect("write a stop file");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for (n, child) in self.children.iter_mut().enumerate() {
            loop {
                if let Some(status) = child.try_wait().expect("poll a worker") {
                    assert!(status.success(), "worker {n} failed: {status}");
                    break;
                }
                assert!(Instant::now() < deadline, "worker {n} did not stop");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.children.clear();
        self.runs()
    }

    /// The runs recorded so far.
    fn runs(&self) -> Vec<Run> {
        let mut runs = Vec::new();
        for n in 0.. {
            let path = self.runs_path(n);
            if n >= self.children.len().max(16) && !path.exists() {
                break;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            // Only whole lines: a worker may be writing the last one.
            for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let [id, key, pid, start, end] = fields[..] else {
                    panic!("malformed run line {line:?}");
                };
                runs.push(Run {
                    id: id.to_owned(),
                    key: (key != "-").then(|| key.to_owned()),
                    pid: pid.parse().expect("pid"),
                    start_us: start.parse().expect("start"),
                    end_us: end.parse().expect("end"),
                });
            }
        }
        runs
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `PRAGMA integrity_check` of the database at `url`.
async fn sqlx_integrity(url: &str) -> String {
    let store = SqliteStore::connect(url).await.expect("connect");
    oncetask_sqlite::sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(store.pool())
        .await
        .expect("integrity check")
}

/// A manager in this process that only creates (no worker loops).
async fn creator(url: &str) -> (Manager, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::connect_with(url, &options())
            .await
            .expect("connect"),
    );
    let m = Manager::builder(store.clone())
        .env(ENV)
        .declare_kinds([KIND])
        .start_workers(false)
        .build();
    (m, store)
}

/// Three worker processes (4 workers each) share 600 tasks on 20 resource
/// keys, created by this process while they run: every task runs exactly
/// once, and no two tasks of one key overlap in time, whichever processes
/// ran them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_run_every_task_once_and_never_overlap_a_key() {
    const TASKS: u32 = 600;
    let mut workers = Workers::new();
    // Creates the file and its schema before the workers race to.
    let (creator, store) = creator(&workers.url).await;
    // Each run holds its task 20 ms: one process alone (4 slots) would need
    // 3 s for the 600, while the others poll every 200 ms, so every
    // process takes part even on a loaded machine.
    for _ in 0..3 {
        workers.spawn(Duration::from_millis(200), 4, Duration::from_millis(20));
    }
    workers.wait_ready();
    let jobs: Vec<Job> = (0..TASKS)
        .map(|n| Job {
            n,
            key: (n % 5 != 0).then(|| format!("key-{}", n % 20)),
        })
        .collect();
    for chunk in jobs.chunks(50) {
        let report = creator.create_many(chunk).await.expect("create");
        assert_eq!(report.count(), chunk.len());
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let counts = store
            .count_by_status(ENV, Some(KIND), chrono::Utc::now())
            .await
            .expect("count");
        if counts.get(&TaskStatus::Completed).copied() == Some(u64::from(TASKS)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every task completed: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runs = workers.stop();
    let check: String = sqlx_integrity(&workers.url).await;
    assert_eq!(check, "ok", "the database file is intact");

    let mut per_task: HashMap<&str, u32> = HashMap::new();
    for run in &runs {
        *per_task.entry(run.id.as_str()).or_default() += 1;
    }
    let twice: Vec<&Run> = runs
        .iter()
        .filter(|r| per_task.get(r.id.as_str()).is_some_and(|n| *n != 1))
        .collect();
    assert!(twice.is_empty(), "tasks ran more than once: {twice:#?}");
    let expected: HashSet<String> = (0..TASKS).map(|n| format!("job-{n}")).collect();
    let ran: HashSet<String> = per_task.keys().map(|id| (*id).to_owned()).collect();
    assert_eq!(ran, expected, "every task ran");

    let mut per_key: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for run in &runs {
        if let Some(key) = &run.key {
            per_key.entry(key.as_str()).or_default().push(run);
        }
    }
    for (key, mut runs) in per_key {
        runs.sort_by_key(|r| r.start_us);
        for pair in runs.windows(2) {
            assert!(
                pair[1].start_us >= pair[0].end_us,
                "two tasks of {key} overlapped: {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
    }
    let mut per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for run in &runs {
        *per_pid.entry(run.pid).or_default() += 1;
    }
    println!("runs per worker process: {per_pid:?}");
    assert!(
        per_pid.len() > 1,
        "more than one process ran tasks: {per_pid:?}"
    );
}

/// A worker process whose manager polls only every 60 s starts tasks this
/// process creates well before that: only the cross-process wake-up can
/// explain it. Prints create-to-start latencies (system clock, across the
/// processes); no timing is asserted beyond the 20 s deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_created_in_one_process_wakes_an_idle_worker_in_another() {
    const SAMPLES: u32 = 100;
    let mut workers = Workers::new();
    let (creator, _store) = creator(&workers.url).await;
    workers.spawn(Duration::from_secs(60), 1, Duration::ZERO);
    workers.wait_ready();
    // Let the worker's loop settle into its 60 s sleep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::new();
    for n in 0..SAMPLES {
        let created = now_us();
        assert!(
            creator
                .create(&Job { n, key: None })
                .await
                .expect("create")
                .is_created()
        );
        let id = format!("job-{n}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let run = loop {
            if let Some(run) = workers.runs().into_iter().find(|r| r.id == id) {
                break run;
            }
            assert!(
                Instant::now() < deadline,
                "{id} did not start in the other process within 20 s (its manager polls every \
                 60 s: the wake-up did not arrive)"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        latencies.push(Duration::from_micros(run.start_us.saturating_sub(created)));
        // Let the worker settle back to sleep before the next sample.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let runs = workers.stop();
    assert_eq!(runs.len(), SAMPLES as usize, "every task ran once");
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "create-to-start across processes ({SAMPLES} samples): p50 {:?}, p90 {:?}, p99 {:?}, \
         max {:?}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

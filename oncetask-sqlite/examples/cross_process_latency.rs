//! Measures create-to-handler-start latency across real processes: this
//! process creates tasks one at a time on a SQLite file; a worker process
//! (this example started again with `worker`), whose manager polls only
//! every 60 s, starts them, woken by the store's watcher of the file. Each
//! sample is the handler's start minus the moment before the `create` call
//! (system clock, both processes on one machine).
//!
//! ```sh
//! cargo run --release -p oncetask-sqlite --example cross_process_latency           # 300 samples, Durability::Full
//! cargo run --release -p oncetask-sqlite --example cross_process_latency -- 500 normal
//! ```
//!
//! Arguments: the number of samples (default 300), then `normal` for
//! `Durability::Normal`. Between samples it waits 20 ms, so that each task
//! finds the worker idle.

use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oncetask_conformance::fleet::{Job, KIND, manager};
use oncetask_core::manager::handler_fn;
use oncetask_core::{HandlerOptions, Manager, Store, Task};
use oncetask_sqlite::{Durability, SqliteOptions, SqliteStore};

const ENV: &str = "latency";

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

fn options(normal: bool) -> SqliteOptions {
    if normal {
        SqliteOptions::new().durability(Durability::Normal)
    } else {
        SqliteOptions::new()
    }
}

/// The worker process: prints `ready`, then `ID START_US` per task started,
/// until its stdin closes.
async fn worker(url: &str, normal: bool) -> Result<(), Box<dyn std::error::Error>> {
    let store = SqliteStore::connect_with(url, &options(normal)).await?;
    let m = manager(Arc::new(store), ENV, Duration::from_secs(60));
    m.register_dyn(
        KIND,
        handler_fn(|task: Task| async move {
            let line = format!("{} {}\n", task.id, now_us());
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes())?;
            out.flush()
        }),
        HandlerOptions::default().lease_duration(Duration::from_secs(60)),
    )?;
    // Let the worker loops make their first claim and go idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("ready");
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await?;
    m.shutdown(Duration::from_secs(10)).await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        let url = args.get(1).ok_or("worker: no URL")?;
        return worker(url, args.get(2).is_some_and(|a| a == "normal")).await;
    }
    let samples: u32 = args.first().map_or(Ok(300), |a| a.parse::<u32>())?.max(1);
    let normal = args.get(1).is_some_and(|a| a == "normal");
    let dir = std::env::temp_dir().join(format!("oncetask-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}", dir.join("tasks.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::connect_with(&url, &options(normal)).await?);
    let creator = Manager::builder(store)
        .env(ENV)
        .declare_kinds([KIND])
        .start_workers(false)
        .build();

    let mut child = Command::new(std::env::current_exe()?)
        .args(["worker", &url, if normal { "normal" } else { "full" }])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no worker stdout")?;
    let (lines, mut started) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(30), started.recv()).await?;
    if first.as_deref() != Some("ready") {
        return Err(format!("the worker did not start: {first:?}").into());
    }
    // Let the worker's loop settle into its 60 s sleep.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut latencies = Vec::with_capacity(samples as usize);
    let began = Instant::now();
    for n in 0..samples {
        let created = now_us();
        creator.create(&Job { n, key: None }).await?;
        let id = format!("job-{n}");
        let start = loop {
            let line = tokio::time::timeout(Duration::from_secs(20), started.recv())
                .await
                .map_err(|_| format!("{id} did not start within 20 s (no wake-up)"))?
                .ok_or("the worker exited")?;
            let mut parts = line.split_whitespace();
            if parts.next() == Some(id.as_str()) {
                break parts.next().ok_or("a bad line")?.parse::<u64>()?;
            }
        };
        latencies.push(Duration::from_micros(start.saturating_sub(created)));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(child.stdin.take());
    child.wait()?;
    let _ = std::fs::remove_dir_all(&dir);

    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "create-to-start across processes, Durability::{} ({samples} samples in {:.1} s): \
         p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        if normal { "Normal" } else { "Full" },
        began.elapsed().as_secs_f64(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
    );
    Ok(())
}

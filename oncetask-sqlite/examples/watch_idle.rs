//! Measures what an idle watcher costs: the process's CPU time over 10 s
//! with one subscriber and nothing written, at a few watch intervals, and
//! with watching off. Linux only (reads `/proc/self/stat`).
//!
//! ```sh
//! cargo run --release -p oncetask-sqlite --example watch_idle
//! ```

use std::time::{Duration, Instant};

use oncetask_core::Store;
use oncetask_sqlite::{SqliteOptions, SqliteStore};

/// User plus system CPU time of this process so far.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("oncetask-watch-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}", dir.join("tasks.db").display());
    for interval in [
        Some(Duration::from_millis(1)),
        Some(Duration::from_millis(5)),
        Some(Duration::from_millis(10)),
        Some(Duration::from_millis(20)),
        None,
    ] {
        let store =
            SqliteStore::connect_with(&url, &SqliteOptions::new().watch_interval(interval)).await?;
        let notices = store.subscribe("E");
        // Past the two seconds after the schema's last write.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (wall, cpu) = (Instant::now(), cpu_time().ok_or("no /proc/self/stat")?);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let used = cpu_time().ok_or("no /proc/self/stat")? - cpu;
        println!(
            "watch interval {interval:?}: {:.2} % of a core while idle",
            used.as_secs_f64() / wall.elapsed().as_secs_f64() * 100.0
        );
        drop(notices);
        store.pool().close().await;
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

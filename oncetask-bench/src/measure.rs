//! Measuring: percentiles, and this process's CPU time and memory from
//! `/proc` (no allocator hooks: `unsafe_code` is forbidden).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::error::BenchError;

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (milliseconds); `None` when empty.
    pub fn of(mut samples: Vec<f64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[i.clamp(1, samples.len()) - 1]
        };
        Some(Self {
            p50_ms: rank(50.0),
            p95_ms: rank(95.0),
            p99_ms: rank(99.0),
            max_ms: samples[samples.len() - 1],
        })
    }
}

/// Counts handler starts and wakes a waiter once a target is reached.
#[derive(Debug, Default)]
pub struct Counter {
    count: AtomicU64,
    reached: Notify,
    target: AtomicU64,
}

impl Counter {
    /// A counter that [`Counter::wait`]s for `target` increments.
    pub fn new(target: u64) -> Arc<Self> {
        Arc::new(Self {
            target: AtomicU64::new(target),
            ..Self::default()
        })
    }

    /// Counts one.
    pub fn add(&self) {
        let now = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if now >= self.target.load(Ordering::Acquire) {
            self.reached.notify_waiters();
        }
    }

    /// The number [`Counter::wait`] waits for.
    pub fn target(&self) -> u64 {
        self.target.load(Ordering::Acquire)
    }

    /// Increments so far.
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until the target is reached, or fails after `timeout`.
    pub async fn wait(&self, scenario: &str, timeout: Duration) -> Result<(), BenchError> {
        let target = self.target.load(Ordering::Acquire);
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let reached = self.reached.notified();
                if self.get() >= target {
                    return;
                }
                reached.await;
            }
        })
        .await;
        waited.map_err(|_| BenchError::Timeout {
            scenario: scenario.to_owned(),
            done: self.get(),
            expected: target,
            seconds: timeout.as_secs(),
        })
    }
}

/// User plus system CPU time of this process so far (`/proc/self/stat`,
/// in the kernel's fixed 100 Hz `USER_HZ` ticks). `None` off Linux.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: fields 3.. follow its ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `fields[0]` is field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Resident set size of this process in bytes (`VmRSS` of `/proc/self/status`).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&status, "VmRSS:")
}

/// Total memory of the machine in bytes (`/proc/meminfo`).
pub fn total_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&meminfo, "MemTotal:")
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), as printed.
pub fn load_average() -> Option<String> {
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line
        .get(name.len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// CPU time spent since `before`, per task, in microseconds.
pub fn cpu_per_task(before: Option<Duration>, tasks: u64) -> Option<f64> {
    let spent = process_cpu()?.checked_sub(before?)?;
    (tasks > 0).then(|| spent.as_secs_f64() * 1e6 / tasks as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of((1..=100).map(f64::from).collect()).expect("samples");
        assert_eq!(
            (p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        let one = Percentiles::of(vec![7.0]).expect("one sample");
        assert_eq!((one.p50_ms, one.max_ms), (7.0, 7.0));
        assert!(Percentiles::of(Vec::new()).is_none());
    }

    #[test]
    fn proc_readers_answer_on_linux() {
        assert!(process_cpu().is_some());
        assert!(resident_bytes().is_some_and(|b| b > 0));
        assert!(total_memory_bytes().is_some_and(|b| b > 0));
        assert!(load_average().is_some());
    }
}

/// The CPU time the Redis server at `url` has used so far (`INFO cpu`:
/// `used_cpu_sys` plus `used_cpu_user`, its main thread and children).
/// `None` when it cannot be read.
#[cfg(feature = "redis")]
pub async fn redis_server_cpu(url: &str) -> Option<Duration> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut conn)
        .await
        .ok()?;
    server_cpu_of(&info)
}

/// The sum of `used_cpu_sys` and `used_cpu_user` in an `INFO cpu` reply.
#[cfg(feature = "redis")]
fn server_cpu_of(info: &str) -> Option<Duration> {
    let mut seconds = None;
    for line in info.lines() {
        if let Some(v) = line
            .strip_prefix("used_cpu_sys:")
            .or_else(|| line.strip_prefix("used_cpu_user:"))
        {
            let v: f64 = v.trim().parse().ok()?;
            seconds = Some(seconds.unwrap_or(0.0) + v);
        }
    }
    seconds.and_then(|s| Duration::try_from_secs_f64(s).ok())
}

#[cfg(all(test, feature = "redis"))]
mod redis_cpu_tests {
    use super::*;

    #[test]
    fn the_server_cpu_is_system_plus_user_time() {
        let info = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\n\
                    used_cpu_sys_children:9.0\r\nused_cpu_sys_main_thread:1.4\r\n";
        assert_eq!(server_cpu_of(info), Some(Duration::from_millis(3750)));
        assert_eq!(server_cpu_of("# CPU\r\n"), None);
    }
}

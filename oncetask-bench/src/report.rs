//! Results: one row per measurement, a per-backend summary against the
//! issue's targets, and the human table (JSON is the same structs, serialized).

use std::fmt::Write as _;

use serde::Serialize;

use crate::measure::Percentiles;

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `memory`, `postgres`, `redis` or `firestore`.
    pub backend: String,
    /// The scenario (`work`, `insert`, …).
    pub scenario: String,
    /// What was varied, e.g. `managers=2 concurrency=8`.
    pub config: String,
    /// Tasks measured.
    pub tasks: u64,
    /// Wall-clock seconds of the measured part.
    pub seconds: f64,
    /// Tasks per second (throughput rows).
    pub per_second: Option<f64>,
    /// Latency or lateness percentiles (latency rows).
    pub latency: Option<Percentiles>,
    /// A ratio whose meaning [`Row::ratio_of`] gives: for work rows the
    /// fraction of this backend's raw batch limit, for scale rows the
    /// throughput relative to the first (smallest) pending size.
    pub ratio: Option<f64>,
    /// What [`Row::ratio`] is relative to.
    pub ratio_of: Option<String>,
    /// This process's CPU time per task, microseconds (client side: for
    /// Postgres and Redis the server's own CPU is not included).
    pub cpu_us_per_task: Option<f64>,
    /// The Redis server's CPU time per task, microseconds (`INFO cpu`
    /// deltas around a Redis drain; other clients of the server count too,
    /// so read it with nothing else running).
    pub server_cpu_us_per_task: Option<f64>,
    /// Resident memory per stored task (resources rows).
    pub bytes_per_task: Option<f64>,
    /// Store calls per task and their durations (rows that drain tasks).
    pub calls: Option<crate::profile::CallProfile>,
    /// Anything else worth knowing (or the error, when the row failed).
    pub note: String,
}

impl Row {
    /// A row with only its identity filled in.
    pub fn new(backend: &str, scenario: &str, config: impl Into<String>) -> Self {
        Self {
            backend: backend.to_owned(),
            scenario: scenario.to_owned(),
            config: config.into(),
            tasks: 0,
            seconds: 0.0,
            per_second: None,
            latency: None,
            ratio: None,
            ratio_of: None,
            cpu_us_per_task: None,
            server_cpu_us_per_task: None,
            bytes_per_task: None,
            calls: None,
            note: String::new(),
        }
    }

    /// Sets tasks, seconds and the resulting rate.
    pub fn throughput(mut self, tasks: u64, seconds: f64) -> Self {
        self.tasks = tasks;
        self.seconds = seconds;
        self.per_second = (seconds > 0.0).then(|| tasks as f64 / seconds);
        self
    }

    /// Sets the note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

/// Where the run happened.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// Total memory in GiB.
    pub memory_gib: Option<f64>,
    /// Load averages (1, 5, 15 min) when the run started.
    pub load_before: Option<String>,
    /// Load averages when the run ended.
    pub load_after: Option<String>,
    /// UTC start time (RFC 3339).
    pub started_at: String,
    /// Whether this is an optimized build (benchmark only those).
    pub release_build: bool,
}

/// One backend's headline figures, next to the targets.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The backend.
    pub backend: String,
    /// Best work throughput (tasks/s) and its configuration.
    pub best_work: Option<(f64, String)>,
    /// Raw limit: single-task claim+complete cycle, tasks/s.
    pub raw_single: Option<f64>,
    /// Raw limit: batch claim+complete cycle, tasks/s.
    pub raw_batch: Option<f64>,
    /// Best work throughput as a fraction of the raw batch limit.
    pub fraction_of_raw: Option<f64>,
    /// Enqueue-to-start p99 (ms) on the same manager.
    pub same_manager_p99_ms: Option<f64>,
    /// Enqueue-to-start p99 (ms) from a second manager on its own connection.
    pub cross_manager_p99_ms: Option<f64>,
    /// Scheduled lateness p99 (ms).
    pub lateness_p99_ms: Option<f64>,
    /// Throughput at the largest pending size relative to the smallest, and
    /// that size.
    pub scale_ratio: Option<(f64, u64)>,
    /// Resident bytes per stored task (memory backend).
    pub bytes_per_task: Option<f64>,
}

/// A whole bench run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// The sizes it ran with, as given on the command line.
    pub arguments: String,
    /// Every measurement, in run order.
    pub rows: Vec<Row>,
    /// Headline figures per backend.
    pub summaries: Vec<Summary>,
}

/// The targets, for the summary table.
pub const TARGETS: &str = "targets: memory >= 200k tasks/s; postgres/redis >= 70% of raw; \
    cross-manager p99 < 50 ms; lateness p99 < 50 ms; largest pending >= 80% of smallest";

impl Summary {
    /// The headline figures of `backend` in `rows`.
    pub fn of(backend: &str, rows: &[Row]) -> Self {
        let mine = || rows.iter().filter(move |r| r.backend == backend);
        let rate = |scenario: &str, config_start: &str| {
            mine()
                .find(|r| r.scenario == scenario && r.config.starts_with(config_start))
                .and_then(|r| r.per_second)
        };
        let p99 = |scenario: &str, config_start: &str| {
            mine()
                .find(|r| r.scenario == scenario && r.config.starts_with(config_start))
                .and_then(|r| r.latency)
                .map(|l| l.p99_ms)
        };
        let best_work = mine()
            .filter(|r| r.scenario == "work")
            .filter_map(|r| r.per_second.map(|s| (s, r.config.clone())))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let raw_batch = rate("raw", "batch");
        let scale: Vec<&Row> = mine()
            .filter(|r| r.scenario == "scale" && r.per_second.is_some())
            .collect();
        let scale_ratio = if scale.len() < 2 {
            None
        } else {
            scale
                .iter()
                .max_by_key(|r| scale_pending_of(r))
                .and_then(|r| r.ratio.map(|x| (x, scale_pending_of(r))))
        };
        Summary {
            backend: backend.to_owned(),
            fraction_of_raw: best_work
                .as_ref()
                .zip(raw_batch)
                .map(|((work, _), raw)| work / raw),
            best_work,
            raw_single: rate("raw", "single"),
            raw_batch,
            same_manager_p99_ms: p99("latency", "same"),
            cross_manager_p99_ms: p99("latency", "second"),
            lateness_p99_ms: p99("lateness", ""),
            scale_ratio,
            bytes_per_task: mine().find_map(|r| r.bytes_per_task),
        }
    }
}

fn scale_pending_of(row: &Row) -> u64 {
    row.config
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pending="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.0}%", v * 100.0))
}

impl Report {
    /// The report as tables for people: every row, then the summaries.
    pub fn to_table(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "oncetask bench: {} CPUs, {} GiB, load {} -> {}, {} build, started {}",
            m.cpus,
            num(m.memory_gib, 1),
            m.load_before.as_deref().unwrap_or("?"),
            m.load_after.as_deref().unwrap_or("?"),
            if m.release_build {
                "release"
            } else {
                "DEBUG (figures meaningless)"
            },
            m.started_at
        );
        let header = [
            "backend",
            "scenario",
            "config",
            "tasks",
            "seconds",
            "tasks/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "ratio",
            "cpu us/task",
            "note",
        ];
        let cells: Vec<[String; 13]> = self
            .rows
            .iter()
            .map(|r| {
                let l = r.latency;
                [
                    r.backend.clone(),
                    r.scenario.clone(),
                    r.config.clone(),
                    r.tasks.to_string(),
                    format!("{:.2}", r.seconds),
                    num(r.per_second, 0),
                    num(l.map(|l| l.p50_ms), 1),
                    num(l.map(|l| l.p95_ms), 1),
                    num(l.map(|l| l.p99_ms), 1),
                    num(l.map(|l| l.max_ms), 1),
                    match (&r.ratio, &r.ratio_of) {
                        (Some(x), Some(of)) => format!("{} {of}", pct(Some(*x))),
                        (Some(x), None) => pct(Some(*x)),
                        _ => "-".to_owned(),
                    },
                    num(r.cpu_us_per_task, 1),
                    r.note.clone(),
                ]
            })
            .collect();
        table(&mut out, &header, &cells);
        out.push('\n');
        let header = [
            "backend",
            "best work tasks/s",
            "raw single",
            "raw batch",
            "of raw",
            "p99 same",
            "p99 cross",
            "lateness p99",
            "scale",
            "bytes/task",
        ];
        let cells: Vec<[String; 10]> = self
            .summaries
            .iter()
            .map(|s| {
                [
                    s.backend.clone(),
                    s.best_work
                        .as_ref()
                        .map_or("-".to_owned(), |(v, c)| format!("{v:.0} ({c})")),
                    num(s.raw_single, 0),
                    num(s.raw_batch, 0),
                    pct(s.fraction_of_raw),
                    num(s.same_manager_p99_ms, 1),
                    num(s.cross_manager_p99_ms, 1),
                    num(s.lateness_p99_ms, 1),
                    s.scale_ratio
                        .map_or("-".to_owned(), |(r, n)| format!("{} at {n}", pct(Some(r)))),
                    num(s.bytes_per_task, 0),
                ]
            })
            .collect();
        table(&mut out, &header, &cells);
        let _ = writeln!(out, "{TARGETS}");
        out
    }
}

/// Left-aligned text columns, numbers too (they are pre-formatted).
fn table<const N: usize>(out: &mut String, header: &[&str; N], rows: &[[String; N]]) {
    let mut widths: [usize; N] = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let _ = write!(text, "{cell:<w$}");
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(out, header.to_vec());
    for row in rows {
        line(out, row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_pick_the_headline_rows() {
        let rows = vec![
            Row::new("redis", "work", "managers=1 concurrency=1").throughput(100, 1.0),
            Row::new("redis", "work", "managers=1 concurrency=8").throughput(400, 1.0),
            Row::new("redis", "raw", "batch of 100").throughput(1000, 1.0),
            Row {
                ratio: Some(0.9),
                ..Row::new("redis", "scale", "pending=100000 concurrency=8").throughput(9, 1.0)
            },
            Row {
                ratio: Some(1.0),
                ..Row::new("redis", "scale", "pending=1000 concurrency=8").throughput(10, 1.0)
            },
            Row::new("memory", "work", "managers=1 concurrency=1").throughput(5, 1.0),
        ];
        let s = Summary::of("redis", &rows);
        assert_eq!(
            s.best_work,
            Some((400.0, "managers=1 concurrency=8".to_owned()))
        );
        assert_eq!(s.raw_batch, Some(1000.0));
        assert_eq!(s.fraction_of_raw, Some(0.4));
        assert_eq!(s.scale_ratio, Some((0.9, 100_000)));
        let table = Report {
            machine: Machine {
                cpus: 2,
                memory_gib: None,
                load_before: None,
                load_after: None,
                started_at: "now".into(),
                release_build: true,
            },
            arguments: String::new(),
            rows,
            summaries: vec![s],
        }
        .to_table();
        assert!(table.contains("managers=1 concurrency=8"), "{table}");
        assert!(table.contains("40%"), "{table}");
    }
}

//! Rate limits (issue 21): a kind limited to `--rate-limit` starts per
//! `--rate-period-ms`, worked by `--rate-managers` managers (each on its own
//! store connection, as separate processes would be) with a no-op handler,
//! over a backlog of `--rate-tasks` ready tasks. Each handler records the
//! wall time it started; the row counts the starts in `--rate-seconds`
//! whole aligned windows (after one window of warm-up) against the limit,
//! and the most starts any aligned window held (which must not exceed the
//! limit). The lease's grant time (`leased_until` minus the lease) is
//! counted too: the limiter counts a start when the claim takes it, a few
//! milliseconds before the handler runs.
//!
//! The per-resource-key row does the same with no kind limit and a limit
//! per key (`--rate-limit / --rate-keys` starts per period each) over tasks
//! spread evenly across `--rate-keys` keys: the same total, each key capped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oncetask::manager::handler_fn;
use oncetask::{HandlerOptions, Manager, RateLimit, Task, TaskData};
use serde::Serialize;

use crate::error::BenchError;
use crate::report::Row;
use crate::scenarios::Ctx;
use crate::workload::{self, KIND, SHUTDOWN_GRACE};

/// The handlers' lease (the grant time is `leased_until` minus it).
const LEASE: Duration = Duration::from_secs(120);

/// The two rows.
#[derive(Clone, Copy)]
enum Variant {
    /// One limit for the kind.
    Kind,
    /// A limit per resource key, over this many keys.
    Keys(u32),
}

/// One handler start.
#[derive(Debug, Clone)]
struct Start {
    /// Wall time at the handler's start, ms since the epoch.
    at_ms: i64,
    /// The lease's grant time, ms since the epoch.
    granted_ms: Option<i64>,
    /// The task's resource key.
    key: Option<String>,
}

/// A task of the per-key row: on one of the keys.
#[derive(Debug, Clone, Serialize)]
struct KeyedTask {
    n: u64,
    #[serde(skip)]
    id: String,
    #[serde(skip)]
    key: String,
}

impl TaskData for KeyedTask {
    type Kind = &'static str;
    fn kind(&self) -> &'static str {
        KIND
    }
    fn idempotent_id(&self) -> String {
        self.id.clone()
    }
    fn resource_key(&self) -> Option<String> {
        Some(self.key.clone())
    }
}

/// The kind-limit row, and the per-key row unless `--rate-keys 0`.
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    let mut variants = vec![Variant::Kind];
    if ctx.args.rate_keys > 0 {
        variants.push(Variant::Keys(ctx.args.rate_keys));
    }
    let mut rows = Vec::new();
    for variant in variants {
        let config = config(ctx, variant);
        ctx.say(&format!("rate: {config}"));
        rows.push(match one(ctx, variant, &config).await {
            Ok(row) => row,
            Err(e) => Row::new(ctx.backend(), "rate", &config).note(format!("error: {e}")),
        });
    }
    Ok(rows)
}

fn config(ctx: &Ctx<'_>, variant: Variant) -> String {
    let a = ctx.args;
    let limit = match variant {
        Variant::Kind => format!("kind limit {}/{} ms", a.rate_limit, a.rate_period_ms),
        Variant::Keys(keys) => format!(
            "{keys} keys, limit {}/{} ms per key",
            a.rate_limit / keys,
            a.rate_period_ms
        ),
    };
    format!(
        "{limit}, {} managers x {} slots, {} backlog, {} periods",
        a.rate_managers, a.rate_concurrency, a.rate_tasks, a.rate_seconds
    )
}

async fn one(ctx: &Ctx<'_>, variant: Variant, config: &str) -> Result<Row, BenchError> {
    let a = ctx.args;
    let period_ms = i64::try_from(a.rate_period_ms).unwrap_or(i64::MAX);
    let period = Duration::from_millis(a.rate_period_ms);
    ctx.ns.reset_memory();
    let env = ctx.ns.env(match variant {
        Variant::Kind => "rate",
        Variant::Keys(_) => "ratekeys",
    });
    let creator = workload::creator(ctx.ns.store().await?, &env);
    match variant {
        Variant::Kind => {
            workload::seed(&creator, &env, 0..a.rate_tasks, None, a.batch_size).await?;
        }
        Variant::Keys(keys) => seed_keyed(&creator, &env, a.rate_tasks, keys, a.batch_size).await?,
    }
    creator.shutdown(SHUTDOWN_GRACE).await;
    if !a.no_analyze {
        ctx.ns.analyze().await?;
    }

    let (options, limit) = match variant {
        Variant::Kind => {
            let limit = RateLimit::new(a.rate_limit, period);
            (HandlerOptions::default().rate_limit(limit), a.rate_limit)
        }
        Variant::Keys(keys) => {
            let per_key = a.rate_limit / keys;
            (
                HandlerOptions::default()
                    .rate_limit_per_resource_key(RateLimit::new(per_key, period)),
                per_key,
            )
        }
    };
    let options = options
        .concurrency(a.rate_concurrency)
        .lease_duration(LEASE)
        .no_retry();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let mut stores = Vec::with_capacity(a.rate_managers);
    for _ in 0..a.rate_managers {
        stores.push(ctx.ns.store().await?);
    }
    let started_ms = Utc::now().timestamp_millis();
    let mut managers = Vec::with_capacity(a.rate_managers);
    for store in stores {
        managers.push(limited_manager(
            store,
            &env,
            options.clone(),
            starts.clone(),
        )?);
    }
    // One whole window of warm-up, then the measured windows.
    let first = started_ms.div_euclid(period_ms) + 2;
    let windows = i64::try_from(a.rate_seconds).unwrap_or(i64::MAX);
    let end = DateTime::<Utc>::from_timestamp_millis((first + windows) * period_ms)
        .ok_or_else(|| BenchError::Usage("--rate-seconds is too large".to_owned()))?;
    let wait = (end - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    futures::future::join_all(managers.iter().map(|m| m.shutdown(SHUTDOWN_GRACE))).await;

    let starts = starts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if starts.is_empty() {
        return Err(BenchError::Raw("no handler started".to_owned()));
    }
    let by_key = |pick: fn(&Start) -> Option<i64>| {
        let mut keyed: BTreeMap<Option<&str>, Vec<i64>> = BTreeMap::new();
        for s in &starts {
            if let Some(ms) = pick(s) {
                keyed.entry(s.key.as_deref()).or_default().push(ms);
            }
        }
        keyed
            .into_values()
            .map(|times| Windows::of(times, period_ms))
            .collect::<Vec<_>>()
    };
    let at = by_key(|s| Some(s.at_ms));
    let granted = by_key(|s| s.granted_ms);
    let all = Windows::of(starts.iter().map(|s| s.at_ms).collect(), period_ms);
    let measured = all.count_in(first, first + windows);
    let seconds = windows as f64 * period.as_secs_f64();
    let total_limit = match variant {
        Variant::Kind => a.rate_limit,
        Variant::Keys(keys) => limit * keys,
    };
    let per_second_limit = f64::from(total_limit) / period.as_secs_f64();
    let max = |w: &[Windows]| w.iter().map(Windows::max).max().unwrap_or(0);
    let over = |w: &[Windows]| w.iter().map(|w| w.over(u64::from(limit))).sum::<usize>();
    let min_window = all.min_in(first, first + windows);
    let mut row = Row::new(ctx.backend(), "rate", config).throughput(measured, seconds);
    row.ratio = row.per_second.map(|r| r / per_second_limit);
    row.ratio_of = Some("of limit (target >= 99%)".to_owned());
    row.note = format!(
        "{measured} starts in {windows} whole windows ({:.1}/window; min {min_window}); most in one \
         aligned window{}: {} by handler start ({} windows over {limit}), {} by lease grant ({} over); \
         {} starts in all",
        measured as f64 / windows.max(1) as f64,
        match variant {
            Variant::Kind => String::new(),
            Variant::Keys(keys) => format!(" and key (of {keys})"),
        },
        max(&at),
        over(&at),
        max(&granted),
        over(&granted),
        starts.len(),
    );
    Ok(row)
}

/// A manager running a no-op handler for [`KIND`] under `options` that
/// records each start.
fn limited_manager(
    store: Arc<dyn oncetask::Store>,
    env: &str,
    options: HandlerOptions,
    starts: Arc<Mutex<Vec<Start>>>,
) -> Result<Manager, BenchError> {
    let manager = Manager::builder(store).env(env).build();
    let lease = chrono::TimeDelta::from_std(LEASE).unwrap_or_default();
    manager.register_dyn(
        KIND,
        handler_fn(move |task: Task| {
            let start = Start {
                at_ms: Utc::now().timestamp_millis(),
                granted_ms: task.leased_until.map(|u| (u - lease).timestamp_millis()),
                key: task.resource_key,
            };
            starts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(start);
            std::future::ready(Ok::<(), std::convert::Infallible>(()))
        }),
        options,
    )?;
    Ok(manager)
}

/// Creates `count` tasks of `env` spread evenly over `keys` resource keys.
async fn seed_keyed(
    creator: &Manager,
    env: &str,
    count: u64,
    keys: u32,
    batch: usize,
) -> Result<(), BenchError> {
    let mut start = 0;
    while start < count {
        let end = count.min(start + batch as u64);
        let tasks: Vec<KeyedTask> = (start..end)
            .map(|n| KeyedTask {
                n,
                id: format!("{env}-{n}"),
                key: format!("key{}", n % u64::from(keys.max(1))),
            })
            .collect();
        let report = creator.create_many(&tasks).await?;
        if let Some((id, e)) = report.failed.into_iter().next() {
            return Err(BenchError::Raw(format!("seeding: {id}: {e}")));
        }
        start = end;
    }
    Ok(())
}

/// Starts per aligned window (window `w` holds the instants in
/// `[w * period, (w + 1) * period)` ms since the epoch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Windows {
    counts: BTreeMap<i64, u64>,
}

impl Windows {
    /// Counts `times_ms` (ms since the epoch) per window of `period_ms`.
    pub fn of(times_ms: Vec<i64>, period_ms: i64) -> Self {
        let mut counts = BTreeMap::new();
        for t in times_ms {
            *counts.entry(t.div_euclid(period_ms.max(1))).or_insert(0) += 1;
        }
        Self { counts }
    }

    /// The most starts in one window (0 without any).
    pub fn max(&self) -> u64 {
        self.counts.values().copied().max().unwrap_or(0)
    }

    /// Windows holding more than `limit` starts.
    pub fn over(&self, limit: u64) -> usize {
        self.counts.values().filter(|c| **c > limit).count()
    }

    /// Starts in windows `from..to`.
    pub fn count_in(&self, from: i64, to: i64) -> u64 {
        self.counts.range(from..to).map(|(_, c)| c).sum()
    }

    /// The fewest starts of any window `from..to` (empty windows count 0).
    pub fn min_in(&self, from: i64, to: i64) -> u64 {
        (from..to)
            .map(|w| self.counts.get(&w).copied().unwrap_or(0))
            .min()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        // 999 and 1000 fall in different 1 s windows; negative times too.
        let w = Windows::of(vec![0, 500, 999, 1000, 1999, 2000, -1], 1000);
        assert_eq!(w.max(), 3);
        assert_eq!(w.over(2), 1);
        assert_eq!(w.over(3), 0);
        assert_eq!(w.count_in(0, 2), 5);
        assert_eq!(w.count_in(1, 3), 3);
        assert_eq!(w.min_in(0, 3), 1);
        assert_eq!(w.min_in(0, 5), 0, "an empty window counts 0");
        assert_eq!(w.count_in(-1, 0), 1);
        assert_eq!(Windows::default().max(), 0);
    }

    #[test]
    fn a_burst_straddling_a_boundary_stays_within_each_window() {
        // 100 starts at the end of one window and 100 at the start of the
        // next: within the limit per aligned window, 200 within a second.
        let times: Vec<i64> = (0..100)
            .map(|i| 1900 + i)
            .chain((0..100).map(|i| 2000 + i))
            .collect();
        let w = Windows::of(times, 1000);
        assert_eq!(w.max(), 100);
        assert_eq!(w.over(100), 0);
    }
}

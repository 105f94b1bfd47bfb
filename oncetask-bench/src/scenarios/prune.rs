//! Pruning under load (issue 21): finished tasks, done two days ago, are
//! stored through the store in their own environment; then the work
//! scenario's drain (one manager, `--prune-concurrency` slots, each drain
//! in an environment of its own on the same store) is measured alone,
//! during a prune pass that turns every seeded task into a tombstone, and
//! during a pass that deletes those tombstones. The pruner is a manager of its own on its own
//! store connection (as another process would be) running
//! [`Manager::prune`] with [`PrunePlan::kind`].
//!
//! Throughput during a pass is the work done while the pass ran, over the
//! time they overlapped (both start together); it is compared with the
//! work done alone over the same interval from its start (a progress
//! timeline sampled every few milliseconds), so warm-up counts the same in
//! both. Storage rows say what the store takes up after seeding and after
//! each pass (Postgres: the task table's heap and indexes, also after an
//! explicit `VACUUM`; Redis: the server's `used_memory`; every backend: the
//! seeded environment's documents and bytes from `Manager::storage_stats`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use oncetask::backend::task::truncate_to_millis;
use oncetask::{
    AttemptError, Manager, Outcome, PrunePlan, PruneReport, Retention, Store, Task, TaskStatus,
};
use serde_json::json;

use crate::error::BenchError;
use crate::measure::Counter;
use crate::report::Row;
use crate::scenarios::Ctx;
use crate::target::Backend;
use crate::workload::{self, KIND};

/// Full documents are kept this long: the seeded tasks are past it, the
/// tasks the work completes are not.
const KEEP: Duration = Duration::from_secs(3600);

/// Tombstones are kept this long in the deleting pass: the seeded tasks
/// are past it too.
const TOMBSTONES_FOR: Duration = Duration::from_secs(86_400);

/// How long before the run the seeded tasks finished (at most; they are
/// spread over the hour before).
const DONE_AGO: TimeDelta = TimeDelta::days(2);

/// How often the work's progress is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// The two passes.
#[derive(Clone, Copy)]
enum Pass {
    /// Every seeded task becomes a tombstone.
    Tombstone,
    /// Every tombstone is deleted.
    Delete,
}

impl Pass {
    /// A short name for the environment of the work beside the pass.
    fn label(self) -> &'static str {
        match self {
            Pass::Tombstone => "tombstone",
            Pass::Delete => "delete",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Pass::Tombstone => "tombstone pass",
            Pass::Delete => "delete-tombstones pass",
        }
    }

    fn retention(self) -> Retention {
        match self {
            Pass::Tombstone => Retention::default().finished(KEEP),
            Pass::Delete => Retention::default()
                .finished(KEEP)
                .tombstones_for(TOMBSTONES_FOR),
        }
    }
}

/// The rows: work alone; per pass the pass (tasks pruned per second) and
/// the work during it (its ratio to alone); storage after each step.
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    let seeded = ctx.prune_tasks();
    let work = ctx.prune_work_tasks();
    let slots = ctx.args.prune_concurrency;
    let mut rows = Vec::new();
    let settings: Vec<Settings> = ctx
        .args
        .prune_rest
        .iter()
        .flat_map(|&rest| {
            ctx.args
                .prune_batch
                .iter()
                .map(move |&batch| Settings { rest, batch })
        })
        .collect();
    for (round, settings) in settings.into_iter().enumerate() {
        ctx.ns.reset_memory();
        let env = ctx.ns.env(&format!("prune{round}"));
        // Each drain has an environment of its own, so every drain starts
        // from the same state: a drain in the env of an earlier one would
        // claim past that drain's dead index entries (Postgres without
        // autovacuum), which made the work beside the tombstone pass look
        // 20-30 points slower than the pass made it.
        let work_env = |drain: &str| ctx.ns.env(&format!("prunework{round}-{drain}"));

        ctx.say(&format!("prune: storing {seeded} finished tasks"));
        let started = Instant::now();
        seed_finished(ctx.ns.store().await?, &env, seeded, ctx.args.batch_size).await?;
        let seconds = started.elapsed().as_secs_f64();
        if !ctx.args.no_analyze {
            ctx.ns.analyze().await?;
        }
        rows.push(
            Row::new(
                ctx.backend(),
                "prune",
                format!("store {seeded} finished tasks"),
            )
            .throughput(seeded, seconds)
            .note("Store::create in batches of --batch-size (setup, not pruning)"),
        );
        let probe = workload::creator(ctx.ns.store().await?, &env);
        rows.push(storage_row(ctx, &probe, "after seeding").await);

        let config =
            |what: &str| format!("work 1 manager x {slots} slots, {what}, pruner {settings}");
        ctx.say(&format!("prune: work alone ({work} tasks)"));
        let alone = work_run(ctx, &work_env("alone"), 0, work, None).await?;
        let mut row = Row::new(ctx.backend(), "prune", config("alone"))
            .throughput(work, alone.drain_seconds)
            .note(format!(
                "{seeded} finished tasks stored in another env of the same store; {}",
                alone.calls
            ));
        row.cpu_us_per_task = alone.cpu_us_per_task;
        rows.push(row);

        for (i, pass) in [Pass::Tombstone, Pass::Delete].into_iter().enumerate() {
            ctx.say(&format!(
                "prune: {} over {seeded} tasks, work ({work} tasks) beside it",
                pass.name()
            ));
            let start = (i as u64 + 1) * work;
            let during = work_run(
                ctx,
                &work_env(pass.label()),
                start,
                work,
                Some((&env, pass, settings)),
            )
            .await?;
            let Some(pruned) = during.pruned else {
                return Err(BenchError::Raw("the prune pass did not report".to_owned()));
            };
            let total = pruned.report.total();
            let done = total.tombstoned + total.deleted;
            let mut note = format!(
                "{} tombstoned, {} deleted, {} skipped, {} failed; PrunePlan::kind, own store connection",
                total.tombstoned,
                total.deleted,
                total.skipped,
                pruned.report.failed.len()
            );
            if let Some((reads, writes)) = pruned.billed {
                let per = |n: u64| n as f64 / done.max(1) as f64;
                note = format!(
                    "{note}; Firestore billed {reads} reads + {writes} writes: {:.2} reads, {:.2} writes per pruned task",
                    per(reads),
                    per(writes)
                );
            }
            rows.push(
                Row::new(
                    ctx.backend(),
                    "prune",
                    format!("{} ({settings})", pass.name()),
                )
                .throughput(done, pruned.seconds)
                .note(note),
            );

            // The work during the pass, over the interval they overlapped,
            // against the work alone over the same interval from its start.
            let overlap = pruned.seconds.min(during.drain_seconds);
            let during_rate = during.timeline.rate_until(overlap);
            let alone_rate = alone.timeline.rate_until(overlap.min(alone.drain_seconds));
            let mut row = Row::new(
                ctx.backend(),
                "prune",
                config(&format!("during {}", pass.name())),
            )
            .throughput(work, during.drain_seconds);
            row.per_second = during_rate.or(row.per_second);
            row.ratio = during_rate.zip(alone_rate).map(|(d, a)| d / a);
            row.ratio_of = Some("of alone (target >= 80%)".to_owned());
            row.cpu_us_per_task = during.cpu_us_per_task;
            row.note = format!(
                "tasks/s over the {overlap:.2} s the pass and the work overlapped (alone over the same \
             interval from its start: {}); whole drain {:.0} tasks/s; {}",
                alone_rate.map_or("-".to_owned(), |r| format!("{r:.0} tasks/s")),
                work as f64 / during.drain_seconds.max(f64::EPSILON),
                during.calls
            );
            rows.push(row);

            rows.push(storage_row(ctx, &probe, &format!("after the {}", pass.name())).await);
            if vacuum(ctx).await? {
                rows.push(
                    storage_row(
                        ctx,
                        &probe,
                        &format!("after the {} and VACUUM", pass.name()),
                    )
                    .await,
                );
            }
        }
        probe.shutdown(workload::SHUTDOWN_GRACE).await;
    }
    Ok(rows)
}

/// One round's pruner settings (`--prune-rest` x `--prune-batch`).
#[derive(Debug, Clone, Copy)]
struct Settings {
    rest: f64,
    batch: usize,
}

impl std::fmt::Display for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rest {}, batch {}", self.rest, self.batch)
    }
}

/// A finished task `n` of `env` as a run would have left it: mostly
/// completed, every 20th failed (with an error), every 20th cancelled.
fn finished_task(env: &str, n: u64, base: DateTime<Utc>) -> Task {
    let done_at = truncate_to_millis(base - TimeDelta::milliseconds((n % 3_600_000) as i64));
    let mut task = Task::new(
        format!("{env}-{n}"),
        KIND,
        env,
        done_at - TimeDelta::seconds(1),
    );
    if let Some(map) = json!({ "n": n }).as_object() {
        task.data = map.clone();
    }
    task.done_at = Some(done_at);
    task.attempts = 1;
    match n % 20 {
        0 => {
            task.outcome = Some(Outcome::Failed);
            task.errors = vec![AttemptError {
                at: done_at,
                error: "bench failure".to_owned(),
            }];
        }
        1 => {
            task.outcome = Some(Outcome::Cancelled);
            task.is_cancelled = true;
            task.cancelled_at = Some(done_at);
        }
        _ => {
            task.outcome = Some(Outcome::Completed);
            task.result = Some(json!({ "ok": true }));
        }
    }
    task
}

/// Stores `count` finished tasks of `env` through `store`, `batch` per call.
async fn seed_finished(
    store: Arc<dyn Store>,
    env: &str,
    count: u64,
    batch: usize,
) -> Result<(), BenchError> {
    let base = Utc::now() - DONE_AGO;
    let env = env.to_owned();
    workload::create_tasks(store, 0..count, batch, move |n| {
        finished_task(&env, n, base)
    })
    .await
}

/// What a prune pass did.
struct Pruned {
    report: PruneReport,
    /// From the pass's start (with the work's) to its end.
    seconds: f64,
    /// Firestore: billed reads and writes of the pruner's store.
    billed: Option<(u64, u64)>,
}

/// What one work drain measured, with the pass beside it.
struct WorkRun {
    timeline: Timeline,
    /// From the start until the last handler ran.
    drain_seconds: f64,
    cpu_us_per_task: Option<f64>,
    calls: String,
    pruned: Option<Pruned>,
}

/// Seeds tasks `start..start + count` of `work_env` and drains them with
/// one manager; with `prune`, a pass over its env starts with the drain.
async fn work_run(
    ctx: &Ctx<'_>,
    work_env: &str,
    start: u64,
    count: u64,
    prune: Option<(&str, Pass, Settings)>,
) -> Result<WorkRun, BenchError> {
    let creator = workload::creator(ctx.ns.store().await?, work_env);
    workload::seed(
        &creator,
        work_env,
        start..start + count,
        None,
        ctx.args.batch_size,
    )
    .await?;
    creator.shutdown(workload::SHUTDOWN_GRACE).await;
    if !ctx.args.no_analyze {
        ctx.ns.analyze().await?;
    }
    let pruner = match prune {
        Some((env, pass, settings)) => Some((Pruner::open(ctx, env).await?, pass, settings)),
        None => None,
    };

    let counter = Counter::new(count);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let sampler = tokio::spawn(sample(counter.clone(), started, samples.clone()));
    let pass = pruner.map(|(pruner, pass, settings)| {
        let timeout = ctx.timeout();
        tokio::spawn(async move {
            let billed_before = pruner.billed();
            let plan = PrunePlan::kind(KIND, pass.retention())
                .rest(settings.rest)
                .batch_size(settings.batch);
            let report = tokio::time::timeout(timeout, pruner.manager.prune(plan)).await;
            let seconds = started.elapsed().as_secs_f64();
            let billed = pruner
                .billed()
                .zip(billed_before)
                .map(|((r, w), (r0, w0))| (r.saturating_sub(r0), w.saturating_sub(w0)));
            pruner.manager.shutdown(workload::SHUTDOWN_GRACE).await;
            match report {
                Ok(Ok(report)) => Ok(Pruned {
                    report,
                    seconds,
                    billed,
                }),
                Ok(Err(e)) => Err(BenchError::from(e)),
                Err(_) => Err(BenchError::Raw(format!(
                    "the prune pass took more than {} s (--row-timeout)",
                    timeout.as_secs()
                ))),
            }
        })
    });
    let drained = workload::drain_counted(
        ctx.ns,
        work_env,
        counter.clone(),
        1,
        ctx.args.prune_concurrency,
        ctx.timeout(),
    )
    .await;
    let pruned = match pass {
        Some(handle) => Some(
            handle
                .await
                .map_err(|e| BenchError::Raw(format!("the prune pass panicked: {e}")))??,
        ),
        None => None,
    };
    sampler.abort();
    let drained = drained?;
    let timeline = Timeline {
        samples: samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    };
    let drain_seconds = timeline.reached(count).unwrap_or(drained.seconds);
    Ok(WorkRun {
        timeline,
        drain_seconds,
        cpu_us_per_task: drained.cpu_us_per_task,
        calls: drained.calls.summary(),
        pruned,
    })
}

/// Samples `counter` into `samples` until it reaches its target.
async fn sample(counter: Arc<Counter>, started: Instant, samples: Arc<Mutex<Vec<(f64, u64)>>>) {
    let target = counter.target();
    loop {
        let count = counter.get();
        samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((started.elapsed().as_secs_f64(), count));
        if count >= target {
            return;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// The pruning process: a manager without workers on its own store, and on
/// Firestore the store's billed-operation counts.
struct Pruner {
    manager: Manager,
    #[cfg(feature = "firestore")]
    firestore: Option<oncetask::firestore::FirestoreStore>,
}

impl Pruner {
    async fn open(ctx: &Ctx<'_>, env: &str) -> Result<Self, BenchError> {
        #[cfg(feature = "firestore")]
        if let Some(store) = ctx.ns.firestore_store().await? {
            return Ok(Self {
                manager: workload::creator(Arc::new(store.clone()), env),
                firestore: Some(store),
            });
        }
        Ok(Self {
            manager: workload::creator(ctx.ns.store().await?, env),
            #[cfg(feature = "firestore")]
            firestore: None,
        })
    }

    /// Billed reads and writes so far (Firestore only).
    fn billed(&self) -> Option<(u64, u64)> {
        #[cfg(feature = "firestore")]
        if let Some(store) = &self.firestore {
            let stats = store.stats();
            return Some((stats.reads, stats.writes));
        }
        None
    }
}

/// A drain's progress: (seconds since its start, handlers run), in time
/// order.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    samples: Vec<(f64, u64)>,
}

impl Timeline {
    /// A timeline of these samples (in time order).
    pub fn new(samples: Vec<(f64, u64)>) -> Self {
        Self { samples }
    }

    /// Handlers run by `t` seconds, interpolated between samples (the
    /// last count after the last sample, 0 before the first).
    pub fn count_at(&self, t: f64) -> f64 {
        let mut previous = (0.0, 0u64);
        for &(at, count) in &self.samples {
            if at >= t {
                let span = at - previous.0;
                if span <= 0.0 {
                    return count as f64;
                }
                let share = (t - previous.0) / span;
                return previous.1 as f64 + share * (count as f64 - previous.1 as f64);
            }
            previous = (at, count);
        }
        previous.1 as f64
    }

    /// Handlers run per second over the first `t` seconds.
    pub fn rate_until(&self, t: f64) -> Option<f64> {
        (t > 0.0).then(|| self.count_at(t) / t)
    }

    /// The first sample at which `count` handlers had run.
    pub fn reached(&self, count: u64) -> Option<f64> {
        self.samples
            .iter()
            .find(|(_, c)| *c >= count)
            .map(|(at, _)| *at)
    }
}

/// Runs `VACUUM` on the task table (Postgres); false elsewhere.
async fn vacuum(ctx: &Ctx<'_>) -> Result<bool, BenchError> {
    #[cfg(feature = "postgres")]
    if let Some(admin) = ctx.ns.pg_admin() {
        let sql = format!("VACUUM \"{}\".tasks", ctx.ns.name());
        ctx.say(&format!("prune: {sql}"));
        sqlx::raw_sql(&sql)
            .execute(admin)
            .await
            .map_err(|e| BenchError::Raw(format!("{sql}: {e}")))?;
        return Ok(true);
    }
    let _ = ctx;
    Ok(false)
}

/// A row saying what the store takes up at `when`: the seeded env's
/// documents (full and tombstones) and bytes, and the backend's figures.
async fn storage_row(ctx: &Ctx<'_>, probe: &Manager, when: &str) -> Row {
    let row = Row::new(ctx.backend(), "storage", format!("prune: {when}"));
    let started = Instant::now();
    let stats = match probe.storage_stats().await {
        Ok(stats) => stats,
        Err(e) => return row.note(format!("error: storage_stats: {e}")),
    };
    let seconds = started.elapsed().as_secs_f64();
    let full: u64 = stats.by_status.values().map(|s| s.documents).sum();
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
    let bytes = |b: Option<u64>| b.map_or("-".to_owned(), mib);
    let mut parts = vec![format!(
        "seeded env: {full} full documents ({}), {} tombstones ({})",
        bytes(
            stats
                .by_status
                .values()
                .filter(|s| s.documents > 0)
                .try_fold(0u64, |sum, s| s.bytes.map(|b| sum + b))
        ),
        stats.tombstones.documents,
        bytes(stats.tombstones.bytes),
    )];
    for status in [
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ] {
        if let Some(size) = stats.by_status.get(&status).filter(|s| s.documents > 0) {
            parts.push(format!("{status} {}", size.documents));
        }
    }
    match ctx.ns.backend() {
        Backend::Postgres { .. } => {
            if let Some(text) = pg_sizes(ctx).await {
                parts.push(text);
            }
        }
        Backend::Redis { .. } => {
            for figure in stats.figures.iter().filter(|f| {
                f.label.contains("(used_memory,") || f.label.contains("used_memory_dataset")
            }) {
                let name = if figure.label.contains("used_memory_dataset") {
                    "used_memory_dataset"
                } else {
                    "used_memory"
                };
                parts.push(format!("{name} {}", mib(figure.bytes)));
            }
        }
        _ => {}
    }
    parts.push(format!("method: {} ({seconds:.1} s)", stats.method));
    let mut row = row.note(parts.join("; "));
    row.tasks = stats.documents();
    row.seconds = seconds;
    row
}

/// The task table's heap, indexes and total on Postgres (every env), as text.
#[cfg(feature = "postgres")]
async fn pg_sizes(ctx: &Ctx<'_>) -> Option<String> {
    let admin = ctx.ns.pg_admin()?;
    let table = format!("\"{}\".tasks", ctx.ns.name());
    let sizes: Result<(i64, i64, i64), _> = sqlx::query_as(
        "SELECT pg_table_size($1::regclass), pg_indexes_size($1::regclass), \
                pg_total_relation_size($1::regclass)",
    )
    .bind(&table)
    .fetch_one(admin)
    .await;
    let mib = |b: i64| b as f64 / (1u64 << 20) as f64;
    Some(match sizes {
        Ok((heap, indexes, total)) => format!(
            "task table (every env): heap+TOAST {:.1} MiB, indexes {:.1} MiB, total {:.1} MiB",
            mib(heap),
            mib(indexes),
            mib(total)
        ),
        Err(e) => format!("table sizes: {e}"),
    })
}

#[cfg(not(feature = "postgres"))]
async fn pg_sizes(_: &Ctx<'_>) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_interpolates_between_samples() {
        let t = Timeline::new(vec![(0.0, 0), (1.0, 100), (2.0, 300)]);
        assert_eq!(t.count_at(0.5), 50.0);
        assert_eq!(t.count_at(1.5), 200.0);
        assert_eq!(t.count_at(5.0), 300.0);
        assert_eq!(t.rate_until(2.0), Some(150.0));
        assert_eq!(t.rate_until(0.0), None);
        assert_eq!(t.reached(100), Some(1.0));
        assert_eq!(t.reached(301), None);
        let late = Timeline::new(vec![(1.0, 10)]);
        assert_eq!(late.count_at(0.5), 5.0);
        assert_eq!(Timeline::default().count_at(1.0), 0.0);
    }

    #[test]
    fn seeded_tasks_are_finished_past_every_period() {
        let base = Utc::now() - DONE_AGO;
        let now = Utc::now();
        for n in 0..40 {
            let task = finished_task("e", n, base);
            assert!(task.is_done(), "{task:?}");
            let done = task.done_at.unwrap_or(now);
            assert!(done <= now - TimeDelta::from_std(TOMBSTONES_FOR).unwrap_or_default());
        }
        assert_eq!(finished_task("e", 0, base).status(now), TaskStatus::Failed);
        assert_eq!(
            finished_task("e", 1, base).status(now),
            TaskStatus::Cancelled
        );
        assert_eq!(
            finished_task("e", 2, base).status(now),
            TaskStatus::Completed
        );
    }
}

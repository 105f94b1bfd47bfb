//! Enqueue-to-handler-start latency at a steady rate below saturation:
//! created by the handling manager itself, and by a second manager on its
//! own store connection (the cross-process path: the wake-up travels
//! through the backend's change notices).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::error::BenchError;
use crate::measure::{Counter, Percentiles};
use crate::report::Row;
use crate::scenarios::Ctx;
use crate::workload::{self, BenchTask, SHUTDOWN_GRACE};

/// The number of the warm-up task (not measured): the largest number
/// every backend stores (Firestore refuses integers above `i64::MAX`).
const WARM_UP: u64 = i64::MAX as u64;

/// The same-manager row and the second-manager row.
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    for cross in [false, true] {
        let config = if cross {
            "second manager (own connection)"
        } else {
            "same manager"
        };
        ctx.say(&format!(
            "latency: {} tasks at {}/s, {config}",
            ctx.args.latency_tasks, ctx.args.latency_rate
        ));
        let row = match one_path(ctx, cross).await {
            Ok(row) => row,
            Err(e) => Row::new(ctx.backend(), "latency", config).note(format!("error: {e}")),
        };
        rows.push(row);
    }
    Ok(rows)
}

async fn one_path(ctx: &Ctx<'_>, cross: bool) -> Result<Row, BenchError> {
    let args = ctx.args;
    let tasks = args.latency_tasks;
    ctx.ns.reset_memory();
    let env = ctx.ns.env(if cross { "latx" } else { "lat1" });
    let warm_up_id = BenchTask::new(&env, WARM_UP, None);
    let warm_up_id = oncetask::TaskData::idempotent_id(&warm_up_id);

    let samples = Arc::new(Mutex::new(Vec::with_capacity(tasks as usize)));
    let counter = Counter::new(tasks);
    let warmed = Counter::new(1);
    let handler = {
        let (samples, counter, warmed) = (samples.clone(), counter.clone(), warmed.clone());
        move |task: oncetask::Task| {
            if task.id == warm_up_id {
                warmed.add();
                return;
            }
            let waited = (Utc::now() - task.created_at).as_seconds_f64() * 1000.0;
            samples
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(waited);
            counter.add();
        }
    };
    let worker = workload::worker(
        ctx.ns.store().await?,
        &env,
        args.latency_concurrency,
        handler,
    )?;
    let creator = if cross {
        workload::creator(ctx.ns.store().await?, &env)
    } else {
        worker.clone()
    };
    let result = async {
        // Once one task went through, subscriptions and workers are live.
        creator.create(&BenchTask::new(&env, WARM_UP, None)).await?;
        warmed.wait("latency warm-up", ctx.timeout()).await?;

        let started = Instant::now();
        let tick = Duration::from_secs_f64(1.0 / args.latency_rate);
        let start = tokio::time::Instant::now();
        for n in 0..tasks {
            tokio::time::sleep_until(start + tick * u32::try_from(n).unwrap_or(u32::MAX)).await;
            creator.create(&BenchTask::new(&env, n, None)).await?;
        }
        let created_in = started.elapsed().as_secs_f64();
        counter.wait("latency", ctx.timeout()).await?;
        Ok::<f64, BenchError>(created_in)
    }
    .await;
    worker.shutdown(SHUTDOWN_GRACE).await;
    let created_in = result?;
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner));
    let mut row = Row::new(
        ctx.backend(),
        "latency",
        if cross {
            "second manager (own connection)"
        } else {
            "same manager"
        },
    )
    .throughput(tasks, created_in)
    .note(format!(
        "{} workers; created at {:.0}/s of {}/s asked",
        args.latency_concurrency,
        tasks as f64 / created_in.max(f64::MIN_POSITIVE),
        args.latency_rate
    ));
    row.latency = Percentiles::of(samples);
    Ok(row)
}

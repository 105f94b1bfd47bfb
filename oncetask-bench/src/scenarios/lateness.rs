//! Scheduled lateness: tasks due at known times; handler start minus due
//! time.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chrono::{TimeDelta, Utc};

use crate::error::BenchError;
use crate::measure::{Counter, Percentiles};
use crate::report::Row;
use crate::scenarios::Ctx;
use crate::workload::{self, BenchTask, SHUTDOWN_GRACE};

/// Time between creating the tasks and the first due time.
const LEAD: TimeDelta = TimeDelta::seconds(2);

/// One row.
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    let args = ctx.args;
    let tasks = args.lateness_tasks;
    let config = format!(
        "{tasks} due over {} ms, {} workers",
        args.lateness_spread_ms, args.latency_concurrency
    );
    ctx.say(&format!("lateness: {config}"));
    ctx.ns.reset_memory();
    let env = ctx.ns.env("late");
    let samples = Arc::new(Mutex::new(Vec::with_capacity(tasks as usize)));
    let counter = Counter::new(tasks);
    let handler = {
        let (samples, counter) = (samples.clone(), counter.clone());
        move |task: oncetask::Task| {
            let now = Utc::now().timestamp_micros() as f64 / 1000.0;
            if let Some(due) = task.data.get("due_ms").and_then(|v| v.as_i64()) {
                samples
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(now - due as f64);
            }
            counter.add();
        }
    };
    let worker = workload::worker(
        ctx.ns.store().await?,
        &env,
        args.latency_concurrency,
        handler,
    )?;
    let result = async {
        let first_due = Utc::now() + LEAD;
        let step = args.lateness_spread_ms as f64 / tasks.max(1) as f64;
        let all: Vec<BenchTask> = (0..tasks)
            .map(|n| {
                let offset = TimeDelta::microseconds((n as f64 * step * 1000.0) as i64);
                BenchTask::new(&env, n, Some(first_due + offset))
            })
            .collect();
        let started = Instant::now();
        for chunk in all.chunks(args.batch_size) {
            worker.create_many(chunk).await?;
        }
        let created_in = started.elapsed();
        counter.wait("lateness", ctx.timeout()).await?;
        Ok::<_, BenchError>(created_in)
    }
    .await;
    worker.shutdown(SHUTDOWN_GRACE).await;
    let created_in = result?;
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner));
    let mut row = Row::new(ctx.backend(), "lateness", config);
    row.tasks = tasks;
    row.seconds = args.lateness_spread_ms as f64 / 1000.0;
    row.latency = Percentiles::of(samples);
    let lead = LEAD.to_std().unwrap_or_default();
    row.note = if created_in > lead {
        format!(
            "creating took {:.1} s, past the {} s lead: early tasks were late at creation",
            created_in.as_secs_f64(),
            lead.as_secs()
        )
    } else {
        "start minus due time".to_owned()
    };
    Ok(vec![row])
}

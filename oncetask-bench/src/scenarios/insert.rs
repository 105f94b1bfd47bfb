//! Insert throughput: `create` one task per call, and `create_many` in
//! batches.

use std::time::Instant;

use crate::error::BenchError;
use crate::measure;
use crate::report::Row;
use crate::scenarios::Ctx;
use crate::workload::{self, BenchTask};

/// Both insert rows.
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    let args = ctx.args;
    let mut rows = Vec::new();

    let env = ctx.ns.env("insert1");
    let creator = workload::creator(ctx.ns.store().await?, &env);
    ctx.say(&format!(
        "insert: {} tasks, one create call each",
        args.insert_single
    ));
    let cpu = measure::process_cpu();
    let started = Instant::now();
    for n in 0..args.insert_single {
        creator.create(&BenchTask::new(&env, n, None)).await?;
    }
    let mut row = Row::new(ctx.backend(), "insert", "create, one per call")
        .throughput(args.insert_single, started.elapsed().as_secs_f64())
        .note("sequential, one caller");
    row.cpu_us_per_task = measure::cpu_per_task(cpu, args.insert_single);
    rows.push(row);

    let env = ctx.ns.env("insertb");
    let creator = workload::creator(ctx.ns.store().await?, &env);
    ctx.say(&format!(
        "insert: {} tasks, create_many of {}",
        args.insert_batch, args.batch_size
    ));
    let cpu = measure::process_cpu();
    let started = Instant::now();
    for start in (0..args.insert_batch).step_by(args.batch_size) {
        let end = args.insert_batch.min(start + args.batch_size as u64);
        let tasks: Vec<BenchTask> = (start..end)
            .map(|n| BenchTask::new(&env, n, None))
            .collect();
        let report = creator.create_many(&tasks).await?;
        if let Some((id, e)) = report.failed.into_iter().next() {
            return Err(BenchError::Raw(format!("create_many: {id}: {e}")));
        }
    }
    let mut row = Row::new(
        ctx.backend(),
        "insert",
        format!("create_many, {} per call", args.batch_size),
    )
    .throughput(args.insert_batch, started.elapsed().as_secs_f64())
    .note("sequential, one caller");
    row.cpu_us_per_task = measure::cpu_per_task(cpu, args.insert_batch);
    rows.push(row);
    Ok(rows)
}

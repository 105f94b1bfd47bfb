//! Work throughput: pre-created tasks drained by a no-op handler, for each
//! number of managers and worker loops per manager.

use crate::error::BenchError;
use crate::report::Row;
use crate::scenarios::Ctx;
use crate::workload;

/// One row per (managers, concurrency).
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    let tasks = ctx.work_tasks();
    let mut rows = Vec::new();
    for &managers in &ctx.args.managers {
        for &concurrency in &ctx.args.concurrency {
            let config = format!("managers={managers} concurrency={concurrency}");
            ctx.say(&format!(
                "work: seeding {tasks} tasks, then draining with {config}"
            ));
            ctx.ns.reset_memory();
            let env = ctx.ns.env(&format!("work{managers}x{concurrency}"));
            let creator = workload::creator(ctx.ns.store().await?, &env);
            workload::seed(&creator, &env, 0..tasks, None, ctx.args.batch_size).await?;
            if !ctx.args.no_analyze {
                ctx.ns.analyze().await?;
            }
            ctx.say(&format!("work: draining with {config}"));
            let server_before = server_cpu(ctx).await;
            let row =
                match workload::drain(ctx.ns, &env, tasks, managers, concurrency, ctx.timeout())
                    .await
                {
                    Ok(drained) => {
                        let mut row = Row::new(ctx.backend(), "work", &config)
                            .throughput(tasks, drained.seconds);
                        row.cpu_us_per_task = drained.cpu_us_per_task;
                        row.calls = Some(drained.calls);
                        row.note = drained.calls.summary();
                        let server_after = server_cpu(ctx).await;
                        if let (Some(before), Some(after)) = (server_before, server_after) {
                            let us = after.saturating_sub(before).as_secs_f64() * 1e6
                                / tasks.max(1) as f64;
                            row.server_cpu_us_per_task = Some(us);
                            row.note = format!("{}; redis-server {us:.1} us/task", row.note);
                        }
                        row
                    }
                    Err(e) => Row::new(ctx.backend(), "work", &config).note(format!("error: {e}")),
                };
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The Redis server's CPU time so far, on Redis (`None` elsewhere).
async fn server_cpu(ctx: &Ctx<'_>) -> Option<std::time::Duration> {
    match ctx.ns.backend() {
        #[cfg(feature = "redis")]
        crate::target::Backend::Redis { url } => crate::measure::redis_server_cpu(url).await,
        _ => None,
    }
}

//! Scale: work throughput with many pending tasks already stored (due in
//! 2100: pending in the kind's claim index, never ready), as a ratio to
//! the first (smallest) size. Memory, Postgres and Redis only.

use chrono::{TimeZone, Utc};

use crate::error::BenchError;
use crate::report::Row;
use crate::scenarios::Ctx;
use crate::target::Backend;
use crate::workload;

/// One row per pending size.
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    if matches!(ctx.ns.backend(), Backend::Firestore { .. }) {
        return Ok(Vec::new());
    }
    let args = ctx.args;
    let far = Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).single();
    let mut rows: Vec<Row> = Vec::new();
    let mut baseline: Option<f64> = None;
    for &pending in &args.scale_pending {
        let config = format!("pending={pending} concurrency={}", args.scale_concurrency);
        ctx.say(&format!(
            "scale: storing {pending} pending tasks, then draining {} ready ones",
            args.scale_tasks
        ));
        ctx.ns.reset_memory();
        let env = ctx.ns.env(&format!("scale{pending}"));
        let creator = workload::creator(ctx.ns.store().await?, &env);
        // Ids past the ready ones, so both sets can coexist.
        let first = args.scale_tasks;
        workload::seed(&creator, &env, first..first + pending, far, args.batch_size).await?;
        workload::seed(&creator, &env, 0..args.scale_tasks, None, args.batch_size).await?;
        if !ctx.args.no_analyze {
            ctx.ns.analyze().await?;
        }
        let drained = workload::drain(
            ctx.ns,
            &env,
            args.scale_tasks,
            1,
            args.scale_concurrency,
            ctx.timeout(),
        )
        .await;
        let row = match drained {
            Ok(d) => {
                let mut row = Row::new(ctx.backend(), "scale", &config)
                    .throughput(args.scale_tasks, d.seconds);
                row.cpu_us_per_task = d.cpu_us_per_task;
                row.calls = Some(d.calls);
                row.note = d.calls.summary();
                let rate = row.per_second.unwrap_or(0.0);
                let base = *baseline.get_or_insert(rate);
                row.ratio = (base > 0.0).then(|| rate / base);
                row.ratio_of = Some(format!("of pending={}", args.scale_pending[0]));
                row
            }
            Err(e) => Row::new(ctx.backend(), "scale", &config).note(format!("error: {e}")),
        };
        rows.push(row);
    }
    Ok(rows)
}

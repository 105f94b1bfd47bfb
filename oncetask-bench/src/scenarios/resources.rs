//! Resource use of the memory backend: resident bytes per stored task,
//! measured as the growth of this process's RSS while a fresh memory store
//! fills (it runs first, before other scenarios fragment the heap).

use std::sync::Arc;
use std::time::Instant;

use oncetask::MemoryStore;

use crate::error::BenchError;
use crate::measure;
use crate::report::Row;
use crate::scenarios::Ctx;
use crate::target::Backend;
use crate::workload;

/// One row, memory backend only.
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    if *ctx.ns.backend() != Backend::Memory {
        return Ok(Vec::new());
    }
    let tasks = ctx.args.memory_tasks;
    ctx.say(&format!(
        "resources: storing {tasks} tasks in a fresh memory store"
    ));
    let store = Arc::new(MemoryStore::new());
    let env = ctx.ns.env("rss");
    let creator = workload::creator(store.clone(), &env);
    let before = measure::resident_bytes();
    let cpu = measure::process_cpu();
    let started = Instant::now();
    workload::seed(&creator, &env, 0..tasks, None, ctx.args.batch_size).await?;
    let seconds = started.elapsed().as_secs_f64();
    let after = measure::resident_bytes();
    let mut row = Row::new(ctx.backend(), "resources", format!("{tasks} stored tasks"))
        .throughput(tasks, seconds);
    row.cpu_us_per_task = measure::cpu_per_task(cpu, tasks);
    row.bytes_per_task = before
        .zip(after)
        .filter(|_| tasks > 0)
        .map(|(b, a)| a.saturating_sub(b) as f64 / tasks as f64);
    row.note = match row.bytes_per_task {
        Some(b) => format!("{b:.0} bytes/task (RSS growth); tasks/s is create_many's"),
        None => "no /proc/self/status: bytes unknown".to_owned(),
    };
    drop((creator, store));
    Ok(vec![row])
}

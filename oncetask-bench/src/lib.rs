//! # oncetask-bench
//!
//! oncetask's benchmark (issue 7), as a library so that tests and the
//! `oncetask bench` command run the same code. For each backend it runs,
//! in a fresh namespace removed afterwards:
//!
//! 1. **work**: pre-created tasks drained by a no-op handler, for 1 and 2
//!    managers and 1, 8 and 64 worker loops per manager;
//! 2. **insert**: `create` one task per call, and `create_many` batches;
//! 3. **latency**: enqueue-to-handler-start at a steady rate, created by
//!    the handling manager and by a second manager on its own connection;
//! 4. **lateness**: handler start minus due time of scheduled tasks;
//! 5. **cancel**: cancel call to the running handler's
//!    `TaskContext::cancelled`, through the handling manager and through a
//!    second manager on its own connection;
//! 6. **scale**: work throughput with 1k, 100k and 1M pending tasks stored;
//! 7. **raw**: hand-written claim+complete cycles (SQL with
//!    `FOR UPDATE SKIP LOCKED`, Lua, SQLite `BEGIN IMMEDIATE` transactions),
//!    the limit each backend is compared to;
//! 8. **resources**: memory backend bytes per stored task; CPU per task;
//! 9. **prune**: work throughput alone and while a pruner tombstones, then
//!    deletes, many finished tasks; time to prune, what the store takes up
//!    before and after, Firestore reads and writes per pruned task;
//! 10. **rate**: a rate-limited kind under several managers: starts per
//!     second against the limit, and the most starts in any aligned window;
//! 11. **list**: the dashboard's task list (`oncetask_ui::router`, served
//!     in-process): deep pages of 50 among 1M stored tasks, per filter
//!     shape (none, kind, kind + failed, resource key), p50/p99/max.
//!
//! Timings are reported, never asserted.
//!
//! ```no_run
//! # async fn demo() -> Result<(), oncetask_bench::BenchError> {
//! use oncetask_bench::{BenchArgs, Backend};
//! let report = oncetask_bench::run(&[Backend::Memory], &BenchArgs::tiny(), &|line| {
//!     eprintln!("{line}")
//! })
//! .await?;
//! println!("{}", report.to_table());
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod error;
pub mod measure;
pub mod profile;
pub mod report;
pub mod scenarios;
pub mod target;
pub mod workload;

pub use config::{BackendName, BenchArgs, Scenario};
pub use error::BenchError;
pub use report::{Report, Row, Summary};
pub use target::{Backend, Namespace};

use crate::report::Machine;
use crate::scenarios::Ctx;

/// Runs the selected scenarios of `args` on each backend, in order, and
/// returns every row and the summaries. A backend that cannot be reached
/// fails the run (after the earlier backends cleaned up); a scenario that
/// fails on a reachable backend becomes a row whose note holds the error.
pub async fn run(
    backends: &[Backend],
    args: &BenchArgs,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Report, BenchError> {
    args.validate()?;
    if backends.is_empty() {
        return Err(BenchError::Usage("no backend to run".to_owned()));
    }
    let machine = Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib: measure::total_memory_bytes().map(|b| b as f64 / (1u64 << 30) as f64),
        load_before: measure::load_average(),
        load_after: None,
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        release_build: !cfg!(debug_assertions),
    };
    let mut rows = Vec::new();
    for backend in backends {
        let ns = Namespace::create(backend.clone(), args.pg_pool_size).await?;
        progress(&format!("[{}] namespace {}", backend.name(), ns.name()));
        let ctx = Ctx {
            ns: &ns,
            args,
            progress,
        };
        let mut mine = Vec::new();
        for scenario in args.selected() {
            match run_scenario(&ctx, scenario).await {
                Ok(new) => mine.extend(new),
                Err(e) => {
                    progress(&format!("[{}] {}: {e}", backend.name(), scenario.as_str()));
                    mine.push(
                        Row::new(backend.name(), scenario.as_str(), "-")
                            .note(format!("error: {e}")),
                    );
                }
            }
        }
        if let Err(e) = ns.cleanup().await {
            progress(&format!("[{}] cleanup failed: {e}", backend.name()));
        }
        fill_raw_fractions(&mut mine);
        rows.extend(mine);
    }
    let mut names: Vec<&str> = backends.iter().map(Backend::name).collect();
    names.dedup();
    let summaries = names.iter().map(|b| Summary::of(b, &rows)).collect();
    Ok(Report {
        machine: Machine {
            load_after: measure::load_average(),
            ..machine
        },
        arguments: format!("{args:?}"),
        rows,
        summaries,
    })
}

async fn run_scenario(ctx: &Ctx<'_>, scenario: Scenario) -> Result<Vec<Row>, BenchError> {
    match scenario {
        Scenario::Resources => scenarios::resources::run(ctx).await,
        Scenario::Insert => scenarios::insert::run(ctx).await,
        Scenario::Work => scenarios::work::run(ctx).await,
        Scenario::Latency => scenarios::latency::run(ctx).await,
        Scenario::Lateness => scenarios::lateness::run(ctx).await,
        Scenario::Cancel => scenarios::cancel::run(ctx).await,
        Scenario::Raw => {
            let mut rows = scenarios::raw_postgres::run(ctx).await?;
            rows.extend(scenarios::raw_redis::run(ctx).await?);
            rows.extend(scenarios::raw_sqlite::run(ctx).await?);
            rows.extend(scenarios::raw_memory::run(ctx).await?);
            Ok(rows)
        }
        Scenario::Scale => scenarios::scale::run(ctx).await,
        Scenario::Prune => scenarios::prune::run(ctx).await,
        Scenario::Rate => scenarios::rate::run(ctx).await,
        Scenario::List => scenarios::list::run(ctx).await,
    }
}

/// Work rows of one backend as a fraction of its raw batch limit.
fn fill_raw_fractions(rows: &mut [Row]) {
    let raw = rows
        .iter()
        .find(|r| r.scenario == "raw" && r.config.starts_with("batch"))
        .and_then(|r| r.per_second);
    let Some(raw) = raw.filter(|r| *r > 0.0) else {
        return;
    };
    for row in rows.iter_mut().filter(|r| r.scenario == "work") {
        if let Some(rate) = row.per_second {
            row.ratio = Some(rate / raw);
            row.ratio_of = Some("of raw batch".to_owned());
        }
    }
}

//! What to run and how big: `oncetask bench`'s options (clap), with the
//! issue's sizes as defaults.

use std::str::FromStr;

use clap::{Args, ValueEnum};

/// The scenarios, in the order they run on each backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Memory backend bytes per stored task (runs first: a fresh heap).
    Resources,
    /// `create` one by one, and `create_many` in batches.
    Insert,
    /// Drain pre-created tasks with a no-op handler.
    Work,
    /// Enqueue-to-handler-start latency, same and second manager.
    Latency,
    /// Scheduled lateness: handler start minus due time.
    Lateness,
    /// Cancel-to-handler-notified delay of a running task, same and second manager.
    Cancel,
    /// Hand-written claim+complete cycles (Postgres SQL, Redis Lua, SQLite
    /// `BEGIN IMMEDIATE` transactions, a mutex-guarded queue in memory).
    Raw,
    /// Work throughput with many pending tasks already stored.
    Scale,
    /// Work throughput while a pruner tombstones, then deletes, many
    /// finished tasks; time to prune and what the store takes up.
    Prune,
    /// Starts per second of a rate-limited kind under several managers.
    Rate,
    /// The dashboard's task list: deep pages of 50 among many stored tasks.
    List,
}

impl Scenario {
    /// Every scenario, in run order.
    pub const ALL: [Scenario; 11] = [
        Scenario::Resources,
        Scenario::Insert,
        Scenario::Work,
        Scenario::Latency,
        Scenario::Lateness,
        Scenario::Cancel,
        Scenario::Raw,
        Scenario::Scale,
        Scenario::Prune,
        Scenario::Rate,
        Scenario::List,
    ];

    /// The scenario's name in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Resources => "resources",
            Scenario::Insert => "insert",
            Scenario::Work => "work",
            Scenario::Latency => "latency",
            Scenario::Lateness => "lateness",
            Scenario::Cancel => "cancel",
            Scenario::Raw => "raw",
            Scenario::Scale => "scale",
            Scenario::Prune => "prune",
            Scenario::Rate => "rate",
            Scenario::List => "list",
        }
    }
}

/// A backend named by `--backends`, reached through the usual environment
/// variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendName {
    /// The in-process memory store.
    Memory,
    /// `ONCETASK_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
    Postgres,
    /// `ONCETASK_REDIS_URL` (default `redis://127.0.0.1:6379`).
    Redis,
    /// The Firestore emulator at `FIRESTORE_EMULATOR_HOST` (project `oncetask-bench`).
    Firestore,
    /// A SQLite file in a fresh directory under `ONCETASK_SQLITE_BENCH_DIR`
    /// (default: the system temp dir), the store's default options
    /// (`synchronous = FULL`).
    Sqlite,
    /// The same with `Durability::Normal` (`synchronous = NORMAL`), rows
    /// named `sqlite-normal`.
    SqliteNormal,
}

/// `oncetask bench`: sizes and selections. Every size has the issue's
/// figure as its default; shrink them for a quick run.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Each backend gets a fresh namespace (a Postgres schema, a Redis key \
    prefix, a Firestore collection) that is removed at the end; a --store URL only says where \
    the server is. Timings are printed, never asserted.\n\nExample (tiny sizes, seconds):\n  \
    oncetask bench --backends memory,postgres,redis --tasks 2000 --insert-single 500 \
    --insert-batch 5000 --latency-tasks 100 --lateness-tasks 50 --scale-pending 1000,10000 \
    --scale-tasks 1000 --raw-tasks 2000 --memory-tasks 10000"
)]
pub struct BenchArgs {
    /// Backends to run, reached through ONCETASK_POSTGRES_URL, ONCETASK_REDIS_URL and
    /// FIRESTORE_EMULATOR_HOST (defaults: local servers); with --store, that one is added.
    /// Without either: memory
    #[arg(long, value_enum, value_delimiter = ',', value_name = "NAME,...")]
    pub backends: Vec<BackendName>,

    /// Scenarios to run (default: all)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "NAME,...")]
    pub scenarios: Vec<Scenario>,

    /// Work: tasks pre-created and drained per row
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub tasks: u64,

    /// Work: tasks per row on Firestore (the emulator is slow)
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub firestore_tasks: u64,

    /// Work: tasks per row on Postgres (default: --tasks)
    #[arg(long, value_name = "N")]
    pub postgres_tasks: Option<u64>,

    /// Work: tasks per row on Redis (default: --tasks)
    #[arg(long, value_name = "N")]
    pub redis_tasks: Option<u64>,

    /// Work: tasks per row on SQLite (default: --tasks)
    #[arg(long, value_name = "N")]
    pub sqlite_tasks: Option<u64>,

    /// Work: worker loops per manager, one row each
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,8,64",
        value_name = "N,..."
    )]
    pub concurrency: Vec<usize>,

    /// Work: managers sharing the queue (each on its own store connection), one row each
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2",
        value_name = "N,..."
    )]
    pub managers: Vec<usize>,

    /// Insert: tasks created one `create` call at a time
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub insert_single: u64,

    /// Insert: tasks created with `create_many`, in batches of --batch-size
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub insert_batch: u64,

    /// Tasks per `create_many` call (insert and seeding)
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub batch_size: usize,

    /// Latency: tasks per path (same manager, second manager)
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub latency_tasks: u64,

    /// Latency: steady creation rate, tasks per second (below saturation)
    #[arg(long, default_value_t = 200.0, value_name = "PER_SECOND")]
    pub latency_rate: f64,

    /// Latency and lateness: worker loops of the handling manager
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub latency_concurrency: usize,

    /// Lateness: tasks scheduled in the future
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub lateness_tasks: u64,

    /// Lateness: the due times spread over this many milliseconds, starting
    /// one second after they are created
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub lateness_spread_ms: u64,

    /// Cancel: running tasks cancelled per path (same manager, second
    /// manager), one at a time (default: 100, 20 on Firestore)
    #[arg(long, value_name = "N")]
    pub cancel_tasks: Option<u64>,

    /// Cancel: a heartbeat of this many milliseconds on the handler (the
    /// signal then arrives at the latest with the next heartbeat; default:
    /// none, so the figure is the cancel call or the store's notice alone)
    #[arg(long, value_name = "MS")]
    pub cancel_heartbeat_ms: Option<u64>,

    /// Cancel: a pause of this many milliseconds after each sample, before
    /// the next task is created (e.g. past Firestore's 1 s wake-up signal
    /// interval, so that each cancel is the first signal after a quiet gap)
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub cancel_pause_ms: u64,

    /// Scale: pending tasks (due in 2100) stored before each row; the first is the baseline
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,100000,1000000",
        value_name = "N,..."
    )]
    pub scale_pending: Vec<u64>,

    /// Scale: ready tasks drained per row
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub scale_tasks: u64,

    /// Scale: worker loops (one manager)
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub scale_concurrency: usize,

    /// Raw: rows (Postgres, SQLite) or jobs (Redis, memory) per hand-written cycle
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub raw_tasks: u64,

    /// Raw: concurrent connections (Postgres, SQLite) or callers (Redis, memory)
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub raw_concurrency: usize,

    /// Raw: tasks per claim (and per complete) in the batch cycle
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub raw_batch: usize,

    /// Prune: finished tasks seeded (done two days ago) and pruned, on
    /// memory, Postgres and Redis
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub prune_tasks: u64,

    /// Prune: finished tasks seeded and pruned on Firestore
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub prune_firestore_tasks: u64,

    /// Prune: pending tasks drained by the work measured alone and during
    /// each prune pass (default: the work scenario's tasks per row; 1000 on
    /// Firestore)
    #[arg(long, value_name = "N")]
    pub prune_work_tasks: Option<u64>,

    /// Prune: worker loops of the work (one manager)
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub prune_concurrency: usize,

    /// Prune: the pruner's rest factors (PrunePlan::rest), one round each
    /// (seed, work alone, both passes): e.g. `0,3` compares flat out with
    /// the default in one run
    #[arg(
        long,
        value_name = "FACTOR",
        value_delimiter = ',',
        default_value = "3"
    )]
    pub prune_rest: Vec<f64>,

    /// Prune: the pruner's batch sizes (PrunePlan::batch_size), a round
    /// each for every rest factor: e.g. `500,100`
    #[arg(long, value_name = "N", value_delimiter = ',', default_value = "500")]
    pub prune_batch: Vec<usize>,

    /// Rate: starts allowed per period (the kind's limit)
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub rate_limit: u32,

    /// Rate: the limit's period, milliseconds
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub rate_period_ms: u64,

    /// Rate: managers sharing the kind (each on its own store connection)
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub rate_managers: usize,

    /// Rate: worker loops per manager
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub rate_concurrency: usize,

    /// Rate: ready tasks stored before the managers start (the backlog)
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub rate_tasks: u64,

    /// Rate: whole periods measured (after one period of warm-up)
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub rate_seconds: u64,

    /// Rate: resource keys of the per-key row (limit / keys starts per
    /// period each, so the same total); 0 skips the row
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub rate_keys: u32,

    /// List: tasks stored (a mix of 4 kinds, statuses and resource keys)
    /// before the dashboard's deep pages are timed, on memory, Postgres
    /// and Redis
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub list_tasks: u64,

    /// List: tasks stored on Firestore
    #[arg(long, default_value_t = 2_000, value_name = "N")]
    pub list_firestore_tasks: u64,

    /// List: timed requests per shape (after 5 warm-up requests)
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub list_samples: usize,

    /// Resources: tasks stored in a fresh memory backend to measure bytes per task
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub memory_tasks: u64,

    /// Postgres: connections per store (each manager has its own store)
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub pg_pool_size: u32,

    /// Postgres: skip the `ANALYZE` of the task table after seeding (the
    /// planner then plans the drain with statistics from before the seeding;
    /// autovacuum may be off, as on the test server)
    #[arg(long)]
    pub no_analyze: bool,

    /// Seconds any one row may take before it is reported as timed out
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    pub row_timeout: u64,
}

impl BenchArgs {
    /// The arguments with every default (the sizes).
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: BenchArgs,
        }
        // Defaults always parse; `expect` documents the invariant.
        #[allow(clippy::expect_used)]
        let wrapper = <Wrapper as clap::Parser>::try_parse_from(["bench"])
            .expect("the default arguments parse");
        wrapper.args
    }

    /// Tiny sizes that run every scenario in seconds (smoke tests, CI).
    pub fn tiny() -> Self {
        Self {
            tasks: 300,
            firestore_tasks: 100,
            concurrency: vec![1, 8],
            managers: vec![1, 2],
            insert_single: 50,
            insert_batch: 500,
            batch_size: 100,
            latency_tasks: 20,
            latency_rate: 200.0,
            latency_concurrency: 4,
            lateness_tasks: 20,
            lateness_spread_ms: 200,
            cancel_tasks: Some(5),
            scale_pending: vec![100, 1000],
            scale_tasks: 200,
            scale_concurrency: 4,
            raw_tasks: 300,
            raw_concurrency: 4,
            raw_batch: 50,
            memory_tasks: 2000,
            prune_tasks: 1000,
            prune_firestore_tasks: 200,
            prune_work_tasks: Some(300),
            prune_concurrency: 4,
            prune_rest: vec![oncetask::manager::DEFAULT_PRUNE_REST],
            prune_batch: vec![oncetask::manager::DEFAULT_PRUNE_BATCH],
            rate_limit: 50,
            rate_period_ms: 500,
            rate_managers: 2,
            rate_concurrency: 4,
            rate_tasks: 400,
            rate_seconds: 2,
            rate_keys: 5,
            list_tasks: 1000,
            list_firestore_tasks: 200,
            list_samples: 20,
            ..Self::defaults()
        }
    }

    /// The scenarios to run, in run order.
    pub fn selected(&self) -> Vec<Scenario> {
        let mut chosen = if self.scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            self.scenarios.clone()
        };
        chosen.sort();
        chosen.dedup();
        chosen
    }

    /// Checks sizes that would make a scenario meaningless.
    pub fn validate(&self) -> Result<(), crate::BenchError> {
        let usage = |m: &str| Err(crate::BenchError::Usage(m.to_owned()));
        if self.batch_size == 0 || self.raw_batch == 0 || self.raw_concurrency == 0 {
            return usage("--batch-size, --raw-batch and --raw-concurrency must be at least 1");
        }
        if self.concurrency.contains(&0) || self.managers.contains(&0) {
            return usage("--concurrency and --managers must be at least 1");
        }
        if self.latency_concurrency == 0 || self.scale_concurrency == 0 {
            return usage("--latency-concurrency and --scale-concurrency must be at least 1");
        }
        if !(self.latency_rate > 0.0 && self.latency_rate.is_finite()) {
            return usage("--latency-rate must be a positive number");
        }
        if self.cancel_tasks == Some(0) || self.cancel_heartbeat_ms == Some(0) {
            return usage("--cancel-tasks and --cancel-heartbeat-ms must be at least 1");
        }
        if self.prune_concurrency == 0
            || self.prune_work_tasks == Some(0)
            || self.prune_batch.contains(&0)
        {
            return usage(
                "--prune-concurrency, --prune-work-tasks and --prune-batch must be at least 1",
            );
        }
        if self.rate_limit == 0
            || self.rate_period_ms == 0
            || self.rate_managers == 0
            || self.rate_concurrency == 0
            || self.rate_seconds == 0
        {
            return usage(
                "--rate-limit, --rate-period-ms, --rate-managers, --rate-concurrency and \
                 --rate-seconds must be at least 1",
            );
        }
        if self.rate_keys > self.rate_limit {
            return usage("--rate-keys must be at most --rate-limit (each key needs a start)");
        }
        if self.list_samples == 0 {
            return usage("--list-samples must be at least 1");
        }
        if self.pg_pool_size == 0 {
            return usage("--pg-pool-size must be at least 1");
        }
        Ok(())
    }
}

impl FromStr for BackendName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Self as ValueEnum>::from_str(s, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pruner_settings_default_to_the_pruners_own_defaults() {
        let args = BenchArgs::defaults();
        assert_eq!(args.prune_rest, [oncetask::manager::DEFAULT_PRUNE_REST]);
        assert_eq!(args.prune_batch, [oncetask::manager::DEFAULT_PRUNE_BATCH]);
    }
}

//! The command line, as clap parses it. Every command and option has
//! `--help`.

use clap::{Args, Parser, Subcommand};
use oncetask::TaskStatus;
use oncetask::backend::TaskCursor;

use crate::error::EXIT_CODES_HELP;
use crate::store_url::StoreUrl;

/// `oncetask`: inspect and operate oncetask queues.
#[derive(Debug, Parser)]
#[command(
    name = "oncetask",
    version,
    about = "Inspect and operate oncetask queues on any backend",
    long_about = "Inspect and operate oncetask queues on any backend: list and show tasks, \
                  see a queue's state, cancel, reset or delete tasks, or run the demo.\n\n\
                  Examples:\n  \
                  oncetask --store postgres://app@db/app --env prod stats\n  \
                  oncetask --store postgres://app@db/app?schema=jobs tasks list --status failed\n  \
                  oncetask --store firestore://my-project tasks show email-ada\n  \
                  oncetask --store $URL --env prod reset --resource-key cal-7 --yes",
    after_help = EXIT_CODES_HELP,
)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command (they may come before or after it).
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Where the tasks are: postgres://USER@HOST/DB[?schema=NAME],
    /// firestore://PROJECT[/COLLECTION], ?database=NAME for a named database
    /// (Application Default Credentials; honours FIRESTORE_EMULATOR_HOST),
    /// redis://…[?prefix=P], redis+cluster://host:port,host:port…[?prefix=P],
    /// sqlite://PATH (also sqlite:relative.db, sqlite:///absolute/path.db)
    /// or memory:// (an empty store, for trying)
    #[arg(
        long,
        global = true,
        env = "ONCETASK_STORE",
        hide_env_values = true,
        value_name = "URL",
        value_parser = crate::store_url::StoreUrlParser,
        help_heading = "Global options"
    )]
    pub store: Option<StoreUrl>,

    /// The environment to work in, as the services' ONCE_TASK_ENV
    #[arg(
        long,
        global = true,
        env = "ONCE_TASK_ENV",
        default_value = oncetask::manager::DEFAULT_ENV,
        value_name = "ENV",
        help_heading = "Global options"
    )]
    pub env: String,

    /// Print JSON (for scripts) instead of tables
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// Seconds to wait for the store when connecting
    #[arg(
        long,
        global = true,
        default_value_t = 10,
        value_name = "SECONDS",
        help_heading = "Global options"
    )]
    pub connect_timeout: u64,
}

/// The commands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// List tasks, or show one
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// The queue at a glance: counts by kind and status, oldest pending age, next due time
    Stats(StatsArgs),
    /// Cancel tasks: their cancellation handler runs (a running handler finishes first)
    Cancel(ActionArgs),
    /// Reset finished tasks (completed, failed, cancelled) to pending, clearing their history
    Reset(ActionArgs),
    /// Delete tasks for good (refused for a task whose handler is running)
    Delete(ActionArgs),
    /// Set the claim priority of tasks that are not done (-10..=10, higher first)
    Reprioritize(ReprioritizeArgs),
    /// Prune finished tasks of a kind past a retention: they become
    /// tombstones (payload, result and errors dropped; the id still answers
    /// "already exists"), and tombstones past theirs are deleted
    ///
    /// Example: `oncetask prune --kind send_email --completed 7d --failed 30d
    /// --tombstones 90d --dry-run`. Safe beside the services' own pruners:
    /// every write is fenced on the task as read.
    Prune(PruneArgs),
    /// Pause a kind for every process sharing the store: its workers claim
    /// nothing (running handlers finish; creates still store tasks). With no
    /// kind: list the paused kinds
    Pause(PauseArgs),
    /// Resume a paused kind: every process's workers claim it again at once
    Resume(ResumeArgs),
    /// Run a mix of tasks on the in-memory backend and print a summary (no
    /// store needed); with --store sqlite://PATH, on that file, left behind
    /// to inspect (--env demo)
    Demo(DemoArgs),
    /// Serve the web dashboard: queue overview, task list and pages, actions
    ///
    /// Listens on --bind (default 127.0.0.1:8080) and prints the URL. Bound
    /// to loopback, it answers only requests addressed to localhost,
    /// 127.0.0.1 or ::1. Bound elsewhere, it needs an access token, taken
    /// from ONCETASK_UI_TOKEN or --token-file (browsers ask for it as the
    /// password of any user; scripts send `Authorization: Bearer TOKEN`).
    /// Actions are POST forms with a CSRF token and a confirmation that
    /// says how many tasks they touch; --read-only refuses them all.
    ///
    /// Example: `oncetask --store postgres://app@db/app --env prod ui`, or
    /// `oncetask ui --demo` for a live in-memory queue with no services.
    Ui(UiArgs),
    /// Benchmark backends: throughput, latency, lateness, cancel delay, scale, next to hand-written raw limits
    ///
    /// Runs on --backends (through ONCETASK_POSTGRES_URL, ONCETASK_REDIS_URL,
    /// FIRESTORE_EMULATOR_HOST) and/or the server of --store, each in a fresh
    /// schema / key prefix / collection removed afterwards. Prints one table,
    /// or JSON with --json. Use a release build for real figures.
    Bench(BenchCommandArgs),
    /// Check a Firestore database for the store: every query's index, permissions, cost model
    ///
    /// Runs every query shape the Firestore store uses with limit 1 and
    /// reports each index that is missing or still building with the link
    /// Firestore gives to create it; reads a document, creates and deletes a
    /// probe document (env oncetask-doctor) to check permissions; prints the
    /// cost model for --managers and --kinds. Exit code 1 if a check fails.
    Doctor(DoctorArgs),
}

/// `oncetask doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Processes that will run a manager on the collection (cost model)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub managers: u32,
    /// The task kinds the services run, comma-separated (the queries use
    /// the first; the cost model counts them)
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Tasks created per hour, for hourly totals in the cost model
    #[arg(long, value_name = "N")]
    pub tasks_per_hour: Option<u64>,
}

/// `oncetask bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchCommandArgs {
    /// Sizes and selections.
    #[command(flatten)]
    pub bench: oncetask_bench::BenchArgs,
    /// At the end, print the run's metrics in the Prometheus text format
    /// (with --json: as the "metrics" field)
    #[arg(long)]
    pub metrics: bool,
}

/// `oncetask tasks …`.
#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// List tasks, oldest first, a page at a time
    List(ListArgs),
    /// Show every field of one task
    Show(ShowArgs),
}

/// `oncetask tasks list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only tasks of this kind
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Only tasks with this status (repeat or separate with commas): waiting,
    /// pending, leased, cancellationPending, completed, failed, cancelled
    #[arg(long, value_name = "STATUS", value_parser = parse_status, value_delimiter = ',')]
    pub status: Vec<TaskStatus>,
    /// Only tasks with this resource key
    #[arg(long, value_name = "KEY")]
    pub resource_key: Option<String>,
    /// Only tasks with this priority (-10..=10)
    #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(i8).range(-10..=10))]
    pub priority: Option<i8>,
    /// Only open (not done) tasks
    #[arg(long)]
    pub open: bool,
    /// Only tasks whose id starts with this
    #[arg(long, value_name = "PREFIX")]
    pub id_prefix: Option<String>,
    /// Only tasks created at or after this time (RFC 3339); --after pages on
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub created_from: Option<chrono::DateTime<chrono::Utc>>,
    /// Only tasks created at or before this time (RFC 3339)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub created_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Tasks per page
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub limit: u64,
    /// Start after this task, as `<created-at>/<id>` (each page prints the
    /// cursor of the next): a page costs its size however deep it is
    #[arg(long, value_name = "CURSOR", value_parser = parse_cursor)]
    pub after: Option<TaskCursor>,
    /// Skip this many matching tasks (after the cursor, if any); every
    /// skipped task is read, so prefer --after for deep pages
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
}

fn parse_cursor(s: &str) -> Result<TaskCursor, String> {
    s.parse()
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s:?}: {e} (expected RFC 3339, e.g. 2025-01-06T09:00:00Z)"))
}

/// `oncetask tasks show`.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The task id
    #[arg(value_name = "ID")]
    pub id: String,
}

/// `oncetask stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// Only this kind
    #[arg(long, value_name = "KIND", conflicts_with = "storage")]
    pub kind: Option<String>,
    /// What the environment's tasks take up in the store: documents and
    /// bytes per status, tombstones apart, and the backend's own figures,
    /// each saying how it was obtained
    #[arg(long)]
    pub storage: bool,
}

/// `oncetask prune`.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// The kind to prune
    #[arg(long, value_name = "KIND")]
    pub kind: String,
    /// Keep completed tasks whole this long after they finished (e.g. 12h, 7d)
    #[arg(long, value_name = "PERIOD", value_parser = parse_period)]
    pub completed: Option<std::time::Duration>,
    /// Keep failed tasks whole this long after they finished
    #[arg(long, value_name = "PERIOD", value_parser = parse_period)]
    pub failed: Option<std::time::Duration>,
    /// Keep cancelled tasks whole this long after they finished
    #[arg(long, value_name = "PERIOD", value_parser = parse_period)]
    pub cancelled: Option<std::time::Duration>,
    /// Keep every finished task whole this long (the three above, unless set)
    #[arg(long, value_name = "PERIOD", value_parser = parse_period)]
    pub finished: Option<std::time::Duration>,
    /// Delete tombstones this long after their task finished (default: keep them)
    #[arg(long, value_name = "PERIOD", value_parser = parse_period, conflicts_with = "no_tombstones")]
    pub tombstones: Option<std::time::Duration>,
    /// Delete tasks whole, leaving no tombstone: creating the same id again
    /// then runs it again
    #[arg(long)]
    pub no_tombstones: bool,
    /// Tasks per read and per write
    #[arg(long, default_value_t = oncetask::manager::DEFAULT_PRUNE_BATCH as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch: u64,
    /// After each batch, rest this many times as long as the batch took
    /// (the default 3: prune at most a quarter of the time, so the services
    /// keep most of their throughput; 0: flat out)
    #[arg(long, default_value_t = oncetask::manager::DEFAULT_PRUNE_REST, value_name = "FACTOR")]
    pub rest: f64,
    /// Count what would be pruned and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (needed when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `oncetask pause`.
#[derive(Debug, Clone, Args)]
pub struct PauseArgs {
    /// The kind to pause (none: list the paused kinds)
    #[arg(value_name = "KIND")]
    pub kind: Option<String>,
}

/// `oncetask resume`.
#[derive(Debug, Clone, Args)]
pub struct ResumeArgs {
    /// The kind to resume
    #[arg(value_name = "KIND")]
    pub kind: String,
}

pub use oncetask::manager::parse_period;

/// The tasks a `cancel`, `reset` or `delete` acts on, and its confirmation.
#[derive(Debug, Clone, Args)]
pub struct ActionArgs {
    /// Task ids
    #[arg(
        value_name = "ID",
        required_unless_present_any = ["resource_key", "kind", "status"],
        conflicts_with_all = ["resource_key", "kind", "status"]
    )]
    pub ids: Vec<String>,
    /// Instead of ids: every task with this resource key (of every kind, unless --kind)
    #[arg(long, value_name = "KEY")]
    pub resource_key: Option<String>,
    /// Instead of ids: every task of this kind (with --resource-key or
    /// --status: only those)
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Instead of ids: only tasks with this status (repeat or separate with
    /// commas); e.g. `reset --kind sync --status failed` redrives every
    /// failed task of a kind. Without it, the tasks the action applies to
    #[arg(long, value_name = "STATUS", value_parser = parse_status, value_delimiter = ',')]
    pub status: Vec<TaskStatus>,
    /// Count the tasks the action would touch and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (needed when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `oncetask reprioritize`.
#[derive(Debug, Clone, Args)]
pub struct ReprioritizeArgs {
    /// The new priority, -10..=10 (higher is claimed first; 0 is the default)
    #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(i8).range(-10..=10))]
    pub priority: i8,
    /// The tasks, as for cancel and reset.
    #[command(flatten)]
    pub target: ActionArgs,
}

/// `oncetask ui`.
#[derive(Debug, Clone, Args)]
pub struct UiArgs {
    /// Address and port to listen on; beyond loopback, an access token is
    /// required (ONCETASK_UI_TOKEN or --token-file)
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub bind: std::net::SocketAddr,
    /// Show an in-memory store running the demo's tasks, new ones every few
    /// seconds (no --store needed)
    #[arg(long)]
    pub demo: bool,
    /// Only show: every action is refused
    #[arg(long)]
    pub read_only: bool,
    /// Read the access token from this file (its whole content, trimmed;
    /// at least 16 bytes) instead of ONCETASK_UI_TOKEN
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
    /// Also answer requests addressed to this host name (repeatable), e.g.
    /// the name a reverse proxy passes on; bound beyond loopback, only these
    /// names are answered
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// How often an open overview reads the counts again, e.g. 10s or 1m
    /// (every read counts the store's tasks; default 2s)
    #[arg(long, value_name = "PERIOD", value_parser = parse_period)]
    pub refresh: Option<std::time::Duration>,
}

/// `oncetask demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// At the end, print the run's metrics in the Prometheus text format
    #[arg(long)]
    pub metrics: bool,
}

/// A status name ([`TaskStatus`]'s `FromStr`: case-insensitive, `-` and
/// `_` ignored, so `cancellation-pending` is `cancellationPending`).
pub fn parse_status(s: &str) -> Result<TaskStatus, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn statuses_parse_leniently_and_say_what_is_valid() {
        assert_eq!(parse_status("FAILED"), Ok(TaskStatus::Failed));
        assert_eq!(
            parse_status("cancellation-pending"),
            Ok(TaskStatus::CancellationPending)
        );
        let err = parse_status("done").expect_err("not a status");
        assert!(err.contains("waiting, pending, leased"), "{err}");
    }

    #[test]
    fn periods_take_a_unit_and_refuse_others() {
        use std::time::Duration;
        assert_eq!(parse_period("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_period("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_period("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(
            parse_period("7w")
                .expect_err("unit")
                .contains("unknown unit")
        );
        assert!(parse_period("d").is_err());
    }
}

//! # oncetask-cli
//!
//! The `oncetask` command, as a library so that its commands run (and are
//! tested) in-process; `src/main.rs` only wires it to the process.
//!
//! ```text
//! oncetask [--store URL] [--env ENV] [--json] <command>
//!   tasks list [--kind K] [--status S,...] [--resource-key K] [--limit N] [--after CURSOR] [--offset N]
//!   tasks show ID
//!   stats [--kind K]
//!   cancel|reset|delete (ID... | --resource-key K [--kind K]) [--yes]
//!   demo [--metrics]   (on memory, or on a sqlite: --store it leaves behind)
//!   bench [--backends memory,postgres,redis,firestore] [--json] [--metrics] [sizes…]
//!   doctor [--managers N] [--kinds K,...] [--tasks-per-hour N]   (Firestore stores)
//!   ui [--bind ADDR:PORT] [--demo] [--read-only] [--token-file PATH] [--allow-host NAME] [--refresh PERIOD]
//! ```
//!
//! * [`args`]: the command line (clap);
//! * [`store_url`]: `--store` URLs and connecting to each backend;
//! * [`commands`]: what each command does, over a [`Manager`] of the store;
//! * [`render`]: tables and durations for people; `--json` prints JSON instead;
//! * [`ui`]: the web dashboard (`oncetask-ui`) over the store;
//! * [`error`]: errors and exit codes.
//!
//! Run a command in-process over a store of your own (e.g. a seeded
//! [`oncetask::MemoryStore`]) with [`execute`]:
//!
//! ```
//! use std::sync::Arc;
//! use clap::Parser;
//! use oncetask_cli::{Cli, Io, execute};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), oncetask_cli::CliError> {
//! let store = Arc::new(oncetask::MemoryStore::new());
//! let cli = Cli::try_parse_from(["oncetask", "--env", "prod", "stats", "--json"])
//!     .map_err(|e| oncetask_cli::CliError::usage(e.to_string()))?;
//! let (mut out, mut err) = (Vec::new(), Vec::new());
//! execute(&cli, store, &mut Io { out: &mut out, err: &mut err, input: None }).await?;
//! let stats: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
//! assert_eq!(stats["env"], "prod");
//! # Ok(())
//! # }
//! ```

pub mod args;
pub mod bench;
pub mod commands;
pub mod demo;
pub mod error;
pub mod prometheus;
pub mod render;
pub mod store_url;
pub mod ui;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use oncetask::{Manager, Store};

pub use args::{Cli, Command};
pub use error::CliError;
pub use store_url::StoreUrl;

/// Where a command writes, and where it reads confirmations from.
pub struct Io<'a> {
    /// Results: tables or JSON.
    pub out: &'a mut dyn Write,
    /// Messages, warnings and prompts.
    pub err: &'a mut dyn Write,
    /// Answers to confirmation prompts; `None` when there is no terminal to
    /// ask (changes then need `--yes`).
    pub input: Option<&'a mut dyn BufRead>,
}

/// Runs the process: parses the arguments, runs the command, prints an
/// error, and returns the exit code (see [`error::EXIT_CODES_HELP`]).
pub fn main_from_env() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(error::EXIT_USAGE));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdin = std::io::stdin();
    let mut input = stdin.is_terminal().then(|| stdin.lock());
    // Not locked: the demo prints from worker threads.
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        input: input.as_mut().map(|i| i as &mut dyn BufRead),
    };
    let result = runtime.block_on(run(cli, &mut io));
    let _ = io.out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io.err, "error: {e}");
            e.exit_code()
        }
    }
}

/// Runs a parsed command line: the demo, or a command against the store of
/// `--store`.
pub async fn run(cli: Cli, io: &mut Io<'_>) -> Result<(), CliError> {
    if let Command::Demo(args) = &cli.command {
        let timeout = Duration::from_secs(cli.global.connect_timeout.max(1));
        return demo::run(args.metrics, cli.global.store.as_ref(), timeout).await;
    }
    if let Command::Bench(args) = &cli.command {
        return bench::run(&cli.global, args, io).await;
    }
    if let Command::Doctor(args) = &cli.command {
        return commands::doctor::run(&cli.global, args, io).await;
    }
    if let Command::Ui(args) = &cli.command {
        return ui::run(&cli.global, args, io).await;
    }
    let url = cli.global.store.clone().ok_or_else(|| {
        CliError::usage("no store given: pass --store URL or set ONCETASK_STORE (see --help)")
    })?;
    if url == StoreUrl::Memory {
        writeln!(
            io.err,
            "note: memory:// is a new, empty store in this process; it holds no tasks"
        )?;
    }
    let store = url
        .open(Duration::from_secs(cli.global.connect_timeout.max(1)))
        .await?;
    execute(&cli, store, io).await
}

/// Runs a command of `cli` against `store` (the demo excepted: it brings its
/// own store). This is what [`run`] does once connected, and what tests call
/// with a seeded store.
pub async fn execute(cli: &Cli, store: Arc<dyn Store>, io: &mut Io<'_>) -> Result<(), CliError> {
    let manager = operator_manager(store, &cli.global.env);
    let mut ctx = commands::Ctx {
        manager,
        json: cli.global.json,
        io,
    };
    commands::dispatch(&mut ctx, &cli.command).await
}

/// An operator's manager of `store` in environment `env` (blank: the
/// default one): no workers, every kind accepted. The commands and the
/// dashboard read and act through it.
pub fn operator_manager(store: Arc<dyn Store>, env: &str) -> Manager {
    let env = match env.trim() {
        "" => oncetask::manager::DEFAULT_ENV.to_owned(),
        env => env.to_owned(),
    };
    Manager::builder(store)
        .env(env)
        .start_workers(false)
        .accept_any_kind()
        .build()
}

//! The `oncetask-chaos` command: `run` a chaos run, or serve as one of its
//! `worker` processes (started by `run`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use oncetask_chaos::ChaosError;
use oncetask_chaos::backend::Target;
use oncetask_chaos::ledger::LedgerWriter;
use oncetask_chaos::observe::FencedRecorder;
use oncetask_chaos::run::{RunArgs, run};
use oncetask_chaos::worker::{self, WorkerSpec};
use tokio::io::AsyncReadExt;

/// Chaos runs for oncetask: kill, freeze and restart, then check every execution.
#[derive(Debug, Parser)]
#[command(name = "oncetask-chaos", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a chaos run and print its verdict; exits 1 when a promise broke.
    Run(RunArgs),
    /// One worker process of a run (started by `run`; stops at stdin EOF).
    Worker(WorkerArgs),
}

#[derive(Debug, clap::Args)]
struct WorkerArgs {
    /// The store, as JSON (see `oncetask_chaos::backend::Target`).
    #[arg(long)]
    target: String,
    /// Environment.
    #[arg(long)]
    env: String,
    /// Ledger directory.
    #[arg(long)]
    ledger: PathBuf,
    /// Worker number.
    #[arg(long)]
    worker: u32,
    /// Handler slots.
    #[arg(long)]
    concurrency: usize,
    /// Lease in ms.
    #[arg(long)]
    lease_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => match run(&args).await {
            Ok(verdict) => {
                if args.json {
                    match serde_json::to_string_pretty(&verdict) {
                        Ok(json) => println!("{json}"),
                        Err(e) => eprintln!("oncetask-chaos: {e}"),
                    }
                } else {
                    print!("{verdict}");
                }
                return if verdict.passed() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                };
            }
            Err(e) => Err(e),
        },
        Command::Worker(args) => serve(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oncetask-chaos: {e}");
            ExitCode::from(2)
        }
    }
}

/// A worker process: opens the store (retrying while the server restarts),
/// serves until stdin closes, then shuts down gracefully.
async fn serve(args: WorkerArgs) -> Result<(), ChaosError> {
    let target: Target = serde_json::from_str(&args.target)
        .map_err(|e| ChaosError::Run(format!("bad --target: {e}")))?;
    let ledger = Arc::new(LedgerWriter::open(&args.ledger, args.worker)?);
    let _ = metrics::set_global_recorder(FencedRecorder::new(args.worker, ledger.clone()));
    let mut attempts = 0;
    let store = loop {
        match target.open().await {
            Ok(store) => break store,
            Err(e) if attempts < 120 => {
                attempts += 1;
                eprintln!("worker {}: {e}; retrying", args.worker);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let spec = WorkerSpec {
        worker: args.worker,
        env: args.env,
        ledger: args.ledger,
        concurrency: args.concurrency,
        lease: Duration::from_millis(args.lease_ms),
    };
    let stop = async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    worker::run(store, &spec, ledger, Arc::new(|| {}), stop).await
}

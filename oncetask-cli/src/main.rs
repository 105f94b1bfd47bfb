//! The `oncetask` command.
//!
//! `oncetask demo` runs a realistic mix of tasks on the in-memory backend,
//! printing progress as handlers run, and ends with a summary by status.

mod demo;

use std::process::ExitCode;

const USAGE: &str = "usage: oncetask <command>

commands:
  demo    run a mix of tasks (plain, retried, resource-key batch, recurring,
          cancelled) on the in-memory backend and print a summary";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => match demo::run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo failed: {e}");
                ExitCode::FAILURE
            }
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

//! # oncetask-chaos
//!
//! Chaos runs: evidence that oncetask keeps its promise — every task
//! completed at most once (exactly once unless it failed or was cancelled),
//! never two tasks of one resource key running at once under valid leases,
//! nothing lost or left leased — while worker processes are SIGKILLed and
//! frozen past their leases and the server crashes and restarts.
//!
//! A run ([`run::run`], the `oncetask-chaos run` command) starts K worker
//! processes (this executable's `worker` subcommand; in-process workers for
//! the memory backend, which cannot be shared between processes), creates N
//! tasks over R resource keys in waves (some fail and are retried, some
//! always fail, some overrun their lease, some recur, some are cancelled
//! mid-run), and meanwhile kills, freezes and replaces workers and crashes
//! the server (Postgres and Redis, on a server the run starts for itself;
//! SQLite runs share one file between the worker processes, and a probe in
//! the coordinator measures how long writes wait while a worker is frozen).
//! Every handler call appends its start and end to an append-only
//! [`ledger`] outside the store; each worker also records every create,
//! claim and conditional write its store saw, with the store's answers, and
//! the stale outcomes its manager discarded ([`observe`]). On Firestore, a
//! Go-shaped writer ([`go_writer`], `--go-writer`) may cancel and reset
//! tasks meanwhile, writing their documents as the Go package does. After
//! the queue drains, [`history`] rebuilds each task's chain of writes (per
//! run generation: a Go reset runs a finished task again) and [`verdict`]
//! checks the ledger against the store, including that no Go write was lost.
//!
//! ```text
//! cargo run --release -p oncetask-chaos -- run --backend postgres --tasks 100000 --workers 8 --kills 40
//! ```
//!
//! `RELIABILITY.md` at the repository root reports large runs.

use thiserror::Error;

pub mod backend;
pub mod fleet;
pub mod go_writer;
pub mod history;
pub mod ledger;
pub mod observe;
pub mod run;
pub mod verdict;
pub mod worker;
pub mod workload;

/// Why a run could not be carried out (violations are not errors: they are
/// in the [`verdict::Verdict`]).
#[derive(Debug, Error)]
pub enum ChaosError {
    /// A service could not be reached or started; the message says which
    /// and what to start.
    #[error("{0}")]
    Service(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The run itself went wrong.
    #[error("{0}")]
    Run(String),
}

impl ChaosError {
    /// An I/O error while doing `what`.
    pub fn io(what: String, source: std::io::Error) -> Self {
        ChaosError::Io { what, source }
    }
}

//! One worker: a manager serving the chaos kind, its handler writing to the
//! ledger, its store recording its writes (see [`crate::observe`]).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use oncetask::{FixedDelay, HandlerOptions, Manager, Store};

use crate::ChaosError;
use crate::ledger::LedgerWriter;
use crate::observe::RecordingStore;
use crate::workload::{KIND, LedgerHandler, MAX_ATTEMPTS, RETRY_DELAY};

/// How long a stopping worker waits for its running handlers.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a worker needs besides its store.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Worker number (names its ledger file).
    pub worker: u32,
    /// Environment of the run.
    pub env: String,
    /// Ledger directory.
    pub ledger: PathBuf,
    /// Handler slots.
    pub concurrency: usize,
    /// Lease of every claim.
    pub lease: Duration,
}

/// Runs a worker on `store` until `stop` resolves, then shuts it down
/// gracefully. `stall` is called by the handler before it returns (see
/// [`LedgerHandler::stall`]).
pub async fn run(
    store: Arc<dyn Store>,
    spec: &WorkerSpec,
    ledger: Arc<LedgerWriter>,
    stall: Arc<dyn Fn() + Send + Sync>,
    stop: impl Future<Output = ()>,
) -> Result<(), ChaosError> {
    let store: Arc<dyn Store> = Arc::new(RecordingStore::new(store, spec.worker, ledger.clone()));
    let manager = Manager::builder(store)
        .env(spec.env.clone())
        .poll_interval(Duration::from_secs(1))
        .declare_kinds([KIND])
        .build();
    let mut handler = LedgerHandler::new(spec.worker, ledger);
    handler.stall = stall;
    let options = HandlerOptions::default()
        .concurrency(spec.concurrency)
        .lease_duration(spec.lease)
        .retry_policy(FixedDelay {
            max_attempts: MAX_ATTEMPTS,
            delay: RETRY_DELAY,
        });
    manager
        .register_dyn(
            KIND,
            oncetask::manager::handler_fn(move |task| {
                let handler = handler.clone();
                async move { handler.handle(task).await }
            }),
            options,
        )
        .map_err(|e| ChaosError::Run(format!("register the chaos handler: {e}")))?;
    stop.await;
    manager.shutdown(SHUTDOWN_GRACE).await;
    Ok(())
}

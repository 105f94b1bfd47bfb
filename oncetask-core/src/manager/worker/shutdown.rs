//! Graceful shutdown: stop claiming, drain, then interrupt and release.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::manager::{Inner, ShutdownPhase};

/// Longest wait of shutdown for interrupted handlers to release their
/// leases (it waits as long as the grace period, within
/// [`MIN_RELEASE_WAIT`] ..= this).
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Shortest wait for releases: a release is a store round trip or two, which
/// a short grace period (or a loaded server) must not cut off.
const MIN_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// What [`crate::manager::Manager::shutdown`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// True when every running handler finished within the grace period.
    pub drained: bool,
    /// Tasks whose handler was interrupted; their leases were released.
    pub interrupted: Vec<String>,
}

pub(crate) async fn shutdown(inner: &Arc<Inner>, grace: Duration) -> ShutdownReport {
    // Once: a second caller must not see an empty worker list and report
    // "drained" while the first one still waits for running handlers.
    inner
        .stopped
        .get_or_init(|| stop(inner, grace))
        .await
        .clone()
}

async fn stop(inner: &Arc<Inner>, grace: Duration) -> ShutdownReport {
    inner.shutdown.send_if_modified(|phase| {
        let running = *phase == ShutdownPhase::Running;
        if running {
            *phase = ShutdownPhase::Draining;
        }
        running
    });
    let handles =
        std::mem::take(&mut *inner.workers.lock().unwrap_or_else(PoisonError::into_inner));
    let aborts: Vec<_> = handles.iter().map(JoinHandle::abort_handle).collect();
    let mut all = futures::future::join_all(handles);
    let joined = match tokio::time::timeout(grace, &mut all).await {
        Ok(joined) => Some(joined),
        Err(_) => {
            inner.shutdown.send_replace(ShutdownPhase::Aborting);
            // Releasing leases needs the store; do not wait on it forever.
            let release_wait = grace.clamp(MIN_RELEASE_WAIT, RELEASE_WAIT);
            let joined = tokio::time::timeout(release_wait, &mut all).await.ok();
            if joined.is_none() {
                tracing::error!("workers did not stop after shutdown; aborting them");
                aborts.iter().for_each(|a| a.abort());
            }
            joined
        }
    };
    let drained = joined.is_some() && *inner.shutdown.borrow() == ShutdownPhase::Draining;
    for result in joined.into_iter().flatten() {
        if let Err(e) = result {
            tracing::error!(error = %e, "worker loop ended abnormally");
        }
    }
    let interrupted = std::mem::take(
        &mut *inner
            .interrupted
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    ShutdownReport {
        drained,
        interrupted,
    }
}

//! Pausing a kind for every process sharing the store.
//!
//! The store keeps which kinds are paused ([`Store::set_paused`]), so a
//! pause outlives the processes. Each manager keeps a view of it: read
//! before its first claim, again when a store notice may come from an
//! operator (pauses and resumes send one), and at least every 10 poll
//! intervals, so a pause made by another process whose notice was lost is
//! seen within 10 poll intervals. While a kind is paused its loops claim
//! nothing and hand back what they claimed ahead; handlers already
//! running finish; creates still store tasks.
//!
//! [`Store::set_paused`]: crate::Store::set_paused

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};

use super::{Inner, Manager, worker};
use crate::data::TaskKind;
use crate::error::Error;

/// Poll intervals between re-reads of the paused kinds when no notice
/// asked for one: notices bring pauses at once, this bounds how late a
/// pause whose notice was lost is seen, at a tenth of a read per idle
/// poll (an idle Firestore manager's poll costs one read).
const PAUSE_REREAD_POLLS: u32 = 10;

/// This manager's view of the paused kinds of its environment.
#[derive(Debug, Default)]
pub(crate) struct PausedView {
    state: Mutex<View>,
}

#[derive(Debug, Default)]
struct View {
    kinds: HashSet<String>,
    /// When the view was read (`None`: never, or marked stale).
    read_at: Option<DateTime<Utc>>,
}

impl PausedView {
    /// Whether `kind` is paused, as last read.
    pub(crate) fn is_paused(&self, kind: &str) -> bool {
        self.lock().kinds.contains(kind)
    }

    /// The next read goes to the store.
    pub(crate) fn mark_stale(&self) {
        self.lock().read_at = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, View> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when the view was never read, was marked stale, or is older
    /// than `max_age` at `now`.
    fn is_due(&self, now: DateTime<Utc>, max_age: std::time::Duration) -> bool {
        self.lock()
            .read_at
            .is_none_or(|at| worker::add(at, max_age) <= now)
    }

    fn replace(&self, kinds: Vec<String>, now: DateTime<Utc>) -> HashSet<String> {
        let mut view = self.lock();
        view.read_at = Some(now);
        std::mem::replace(&mut view.kinds, kinds.into_iter().collect())
    }
}

impl Inner {
    /// Re-reads the paused kinds when the view is due (or always, with
    /// `fresh`), waking the loops of every kind that was resumed. A failed
    /// read keeps the old view (and is logged): an unreachable store fails
    /// the claim that follows anyway.
    pub(crate) async fn refresh_paused(&self, fresh: bool) {
        let now = self.now();
        let max_age = self.config.poll_interval.saturating_mul(PAUSE_REREAD_POLLS);
        if !fresh && !self.paused.is_due(now, max_age) {
            return;
        }
        match self.store.paused_kinds(&self.env).await {
            Ok(kinds) => {
                let before = self.paused.replace(kinds, now);
                for resumed in before.iter().filter(|k| !self.paused.is_paused(k)) {
                    self.wake(resumed);
                }
            }
            Err(e) => tracing::warn!(error = %e, "paused kinds not re-read"),
        }
    }
}

impl Manager {
    /// Pauses `kind` for every manager of this environment on the store,
    /// until [`Manager::resume`]: their loops claim none of its tasks and
    /// hand back the ones they claimed ahead; handlers already running
    /// finish; creates still store tasks. Stored, so it survives restarts.
    /// Returns whether the kind was running before.
    ///
    /// Managers in other processes stop claiming when the store's notice
    /// reaches them (at once on every backend), or, if it is lost, within
    /// 10 of their poll intervals.
    ///
    /// ```
    /// # use oncetask_core::Manager;
    /// # async fn demo(manager: &Manager) -> Result<(), oncetask_core::Error> {
    /// manager.pause("send_email").await?;
    /// assert!(manager.paused_kinds().await?.contains(&"send_email".to_owned()));
    /// manager.resume("send_email").await?;
    /// # Ok(()) }
    /// ```
    pub async fn pause(&self, kind: impl TaskKind) -> Result<bool, Error> {
        self.set_paused(kind.as_str(), true).await
    }

    /// Resumes a paused kind: every manager's loops for it claim again at
    /// once (through the store's notices; if one is lost, within 10 poll
    /// intervals).
    /// Returns whether it was paused.
    pub async fn resume(&self, kind: impl TaskKind) -> Result<bool, Error> {
        self.set_paused(kind.as_str(), false).await
    }

    /// The paused kinds of this environment, as stored, sorted.
    pub async fn paused_kinds(&self) -> Result<Vec<String>, Error> {
        Ok(self.inner.store.paused_kinds(&self.inner.env).await?)
    }

    async fn set_paused(&self, kind: &str, paused: bool) -> Result<bool, Error> {
        if kind.is_empty() {
            return Err(Error::InvalidConfig("task kind must not be empty".into()));
        }
        let changed = self
            .inner
            .store
            .set_paused(&self.inner.env, kind, paused)
            .await?;
        self.inner.refresh_paused(true).await;
        // This manager's loops hear it at once: a pause hands back what
        // they claimed ahead, a resume claims again.
        self.inner.wake_outside(kind);
        Ok(changed)
    }
}

//! Change notices: one broadcast channel per env, fed by this process's
//! writes at once and by other processes' writes through the `changes`
//! table (module `watch`).
//!
//! A write transaction that changes tasks records, before it commits, a
//! row of `changes` per env and kind it changed ([`record`]); after the
//! commit it publishes the same notices to this store's subscribers. A
//! store with subscribers watches the file for rows other stores recorded
//! (see the `watch` module).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::StreamExt;
use futures::stream::BoxStream;
use oncetask_core::StoreError;
use oncetask_core::store::Notification;
use sqlx::SqliteConnection;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::error::db;

/// Notices buffered per subscriber before it starts lagging.
const CAPACITY: usize = 1024;

/// Rows of `changes` kept behind the newest: a watcher that falls further
/// behind than this (it reads every few milliseconds) has missed notices
/// and says so with notices that may touch held tasks.
pub(crate) const KEEP: i64 = 10_000;

/// Rows are deleted each time `seq` passes a multiple of this.
const PRUNE_EVERY: i64 = 1_000;

/// Changes a write made, to announce once it committed: per `(env, kind)`,
/// whether one of them may have touched a task a worker holds.
#[derive(Debug, Default)]
pub(crate) struct Changes(BTreeMap<(String, String), bool>);

impl Changes {
    /// Records a change of `kind` in `env`.
    pub(crate) fn add(&mut self, env: &str, kind: &str, may_touch_claimed: bool) {
        let touched = self.0.entry((env.to_owned(), kind.to_owned())).or_default();
        *touched |= may_touch_claimed;
    }

    /// Adds every change of `other`.
    pub(crate) fn merge(&mut self, other: Changes) {
        for ((env, kind), touching) in other.0 {
            self.add(&env, &kind, touching);
        }
    }

    /// No change.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Writes a row of `changes` per change, as written by the store `origin`,
/// inside the caller's write transaction; deletes old rows now and then.
pub(crate) async fn record(
    conn: &mut SqliteConnection,
    origin: i64,
    changes: &Changes,
) -> Result<(), StoreError> {
    let mut first = None;
    let mut last = 0;
    for ((env, kind), touching) in &changes.0 {
        last = sqlx::query(
            "INSERT INTO changes (origin, env, kind, touching) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(origin)
        .bind(env.as_str())
        .bind(kind.as_str())
        .bind(*touching)
        .execute(&mut *conn)
        .await
        .map_err(db)?
        .last_insert_rowid();
        first.get_or_insert(last);
    }
    let Some(first) = first else { return Ok(()) };
    if (first - 1).div_euclid(PRUNE_EVERY) != last.div_euclid(PRUNE_EVERY) {
        // A range of the rowid: the newest row always stays, so `seq`
        // keeps growing.
        sqlx::query("DELETE FROM changes WHERE seq <= ?1")
            .bind(last - KEEP)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

/// The per-env senders (a channel is made on the first `subscribe` of its
/// env), and whether a watcher of other processes' writes runs.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    // A std mutex: held only to look up or change the map, never across `.await`.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    channels: HashMap<String, broadcast::Sender<Notification>>,
    watching: bool,
}

impl Hub {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock can panic half-way through a change.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends the notices of committed `changes`.
    pub(crate) fn publish(&self, changes: Changes) {
        if changes.0.is_empty() {
            return;
        }
        let state = self.state();
        for ((env, kind), may_touch_claimed) in changes.0 {
            if let Some(sender) = state.channels.get(&env) {
                // An error only means nobody listens right now.
                let _ = sender.send(Notification::new(kind, may_touch_claimed));
            }
        }
    }

    /// The notices of `env` published from now on, and whether the caller
    /// is to start a watcher (when `can_watch` and none runs). A subscriber
    /// that falls more than [`CAPACITY`] behind skips what it missed
    /// (workers still poll).
    pub(crate) fn subscribe(
        &self,
        env: &str,
        can_watch: bool,
    ) -> (BoxStream<'static, Notification>, bool) {
        let mut state = self.state();
        let receiver = state
            .channels
            .entry(env.to_owned())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe();
        let start = can_watch && !state.watching;
        state.watching |= start;
        drop(state);
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(notice) => return Some((notice, receiver)),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        })
        .boxed();
        (stream, start)
    }

    /// For the watcher, before each look: the envs someone listens to.
    /// `None` when nobody listens any more: the watcher is then recorded
    /// as stopped and must stop (a later `subscribe` starts a new one).
    pub(crate) fn keep_watching(&self) -> Option<Vec<String>> {
        let mut state = self.state();
        state
            .channels
            .retain(|_, sender| sender.receiver_count() > 0);
        if state.channels.is_empty() {
            state.watching = false;
            return None;
        }
        Some(state.channels.keys().cloned().collect())
    }

    /// Whether anyone listens; when nobody does, the watcher is recorded as
    /// stopped (as by [`Hub::keep_watching`]) and must stop.
    pub(crate) fn is_listened(&self) -> bool {
        let mut state = self.state();
        let listened = state
            .channels
            .values()
            .any(|sender| sender.receiver_count() > 0);
        if !listened {
            state.channels.clear();
            state.watching = false;
        }
        listened
    }

    /// Records that the watcher stopped (or could not start).
    pub(crate) fn stopped_watching(&self) {
        self.state().watching = false;
    }
}

//! Write transactions: one at a time per store, each `BEGIN IMMEDIATE`.
//!
//! SQLite has one writer at a time per database. A transaction that starts
//! as a reader and then writes (`BEGIN DEFERRED`) can fail with
//! `SQLITE_BUSY` at its first write when another connection wrote
//! meanwhile, whatever the busy timeout. `BEGIN IMMEDIATE` takes the write
//! lock at the start, waiting up to the busy timeout for it, so every read
//! inside the transaction sees the latest committed state and nothing can
//! change it until the commit: that is what makes a claim's busy-key check
//! exact without `SKIP LOCKED` or claim rows.
//!
//! Within a process, writers take turns on a mutex before they ask SQLite,
//! so they queue instead of sleeping and retrying in SQLite's busy handler.
//! A transaction only ever runs this store's own statements: it never
//! spans a handler or any other I/O.
//!
//! The changes a transaction announces ([`WriteTx::announce`]) are recorded
//! in the `changes` table before it commits (for other processes) and
//! published to this store's subscribers after (module `notify`).

use oncetask_core::StoreError;
use sqlx::{Sqlite, SqliteConnection, Transaction};
use tokio::sync::MutexGuard;

use crate::SqliteStore;
use crate::error::db;
use crate::notify::{Changes, record};

/// An open write transaction and this store's writer turn. Dropped
/// without [`WriteTx::commit`], it rolls back and announces nothing.
pub(crate) struct WriteTx<'a> {
    // Declared first: dropped (rolled back) before the turn is given up.
    tx: Transaction<'static, Sqlite>,
    _turn: MutexGuard<'a, ()>,
    store: &'a SqliteStore,
    changes: Changes,
}

impl WriteTx<'_> {
    /// The transaction's connection.
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    /// Announces a change of `kind` in `env` once the transaction commits
    /// (see [`oncetask_core::Store::subscribe`] for `may_touch_claimed`).
    pub(crate) fn announce(&mut self, env: &str, kind: &str, may_touch_claimed: bool) {
        self.changes.add(env, kind, may_touch_claimed);
    }

    /// Announces every change of `changes` once the transaction commits.
    pub(crate) fn announce_all(&mut self, changes: Changes) {
        self.changes.merge(changes);
    }

    /// Records the announced changes, commits, and publishes them to this
    /// store's subscribers.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        if !self.changes.is_empty() {
            record(&mut self.tx, self.store.inner.origin, &self.changes).await?;
        }
        self.tx.commit().await.map_err(db)?;
        self.store.inner.hub.publish(self.changes);
        Ok(())
    }
}

impl SqliteStore {
    /// Waits for this store's writer turn, then begins `BEGIN IMMEDIATE`.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx<'_>, StoreError> {
        let turn = self.inner.writer.lock().await;
        let tx = self
            .inner
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        Ok(WriteTx {
            tx,
            _turn: turn,
            store: self,
            changes: Changes::default(),
        })
    }
}

//! Swaps: one write transaction per call; each item's row is read, its
//! fence (the version) checked and its change written, in input order (so
//! an id named twice is decided on what the earlier item left).
//!
//! Reading first costs a primary-key lookup on an in-process database and
//! tells a conflict from a missing or undecodable row without a second
//! pass. The columns written are every column a swap may change (every
//! writer bumps the version, so the fence guarantees the others are as
//! the swap's task has them); the payload only in a prune.

use chrono::Utc;
use oncetask_core::StoreError;
use oncetask_core::store::{Announce, Change, Swap, SwapOutcome};

use crate::error::db;
use crate::row::{CHANGEABLE_SETS, Changeable, Decoded, data_text};
use crate::{SqliteStore, read_row};

impl SqliteStore {
    /// [`oncetask_core::Store::swap`].
    pub(crate) async fn swap_changes(
        &self,
        swaps: &[Swap],
    ) -> Result<Vec<SwapOutcome>, StoreError> {
        if swaps.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let mut outcomes = Vec::with_capacity(swaps.len());
        let mut tx = self.begin_write().await?;
        for swap in swaps {
            let stored = read_row(tx.conn(), swap.id()).await?;
            let outcome = match stored {
                None => SwapOutcome::NotFound,
                Some(Decoded {
                    id,
                    task: Err(reason),
                }) => SwapOutcome::Failed(StoreError::Undecodable { id, reason }),
                Some(Decoded { task: Ok(task), .. }) if task.version != swap.fence().version() => {
                    SwapOutcome::Conflict
                }
                Some(_) => match write(tx.conn(), swap).await? {
                    Err(reason) => SwapOutcome::Failed(StoreError::Unencodable {
                        id: swap.id().to_owned(),
                        reason,
                    }),
                    Ok(()) => {
                        let task = swap.task();
                        match swap.announce(now) {
                            Announce::Nothing => {}
                            Announce::Work => tx.announce(&task.env, &task.kind, false),
                            Announce::TouchingClaimed => tx.announce(&task.env, &task.kind, true),
                        }
                        SwapOutcome::Applied { revision: None }
                    }
                },
            };
            outcomes.push(outcome);
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// Writes `swap`'s task's changeable columns (and, for a prune, its
/// payload) over its row; `Ok(Err(reason))` when a value cannot be encoded.
async fn write(
    conn: &mut sqlx::SqliteConnection,
    swap: &Swap,
) -> Result<Result<(), String>, StoreError> {
    let task = swap.task();
    let values = match Changeable::new(task) {
        Ok(values) => values,
        Err(reason) => return Ok(Err(reason)),
    };
    let prune = swap.change() == Change::Prune;
    let data = if prune {
        match data_text(task) {
            Ok(data) => Some(data),
            Err(reason) => return Ok(Err(reason)),
        }
    } else {
        None
    };
    let sql = if prune {
        format!("UPDATE tasks SET {CHANGEABLE_SETS}, data = ? WHERE id = ?")
    } else {
        format!("UPDATE tasks SET {CHANGEABLE_SETS} WHERE id = ?")
    };
    let mut query = values.bind(task, sqlx::query(&sql));
    if let Some(data) = data {
        query = query.bind(data);
    }
    query
        .bind(task.id.as_str())
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(Ok(()))
}

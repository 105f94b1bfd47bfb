//! Swaps: one write transaction per call, the batch written by one
//! statement.
//!
//! `UPDATE tasks … FROM (VALUES …)` (module `values`) writes every change whose row still
//! has the fence's version and is well formed: the version check is the
//! row's own `WHERE`, and the transaction holds SQLite's write lock, so
//! nothing can change a row between the check and the write. One statement
//! for the whole batch matters more here than on a server: each statement
//! is a round trip to the connection's worker thread, made while this store
//! holds the database's one write lock.
//!
//! Items the statement did not write are read once, afterwards, in the same
//! transaction, to tell a conflict from a missing or undecodable row. An id
//! named twice in one call goes in a later statement, so it is decided on
//! what the earlier item left (as if the items were applied in order).

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use oncetask_core::StoreError;
use oncetask_core::store::{Announce, Field, Swap, SwapOutcome, swap_rounds};
use sqlx::{Row as _, SqliteConnection};

use crate::SqliteStore;
use crate::error::db;
use crate::row::{self, CHANGE_COLUMNS, CHANGE_SETS, COLUMNS, ChangeRow, Decoded};
use crate::sql::WELL_FORMED;
use crate::values::{self, MAX_ROWS};

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
        let mut outcomes: Vec<Option<SwapOutcome>> = swaps.iter().map(|_| None).collect();
        let mut unwritten = Vec::new();
        let mut tx = self.begin_write().await?;
        for round in swap_rounds(swaps) {
            let mut rows = Vec::with_capacity(round.len());
            let mut sent = Vec::with_capacity(round.len());
            for i in round {
                let swap = &swaps[i];
                let with_data = swap.change().writes(Field::Data);
                match ChangeRow::new(swap.task(), swap.fence().version(), with_data) {
                    Ok(row) => {
                        rows.push(row);
                        sent.push(i);
                    }
                    // Refused alone: the batch's other writes go on.
                    Err(reason) => {
                        outcomes[i] = Some(SwapOutcome::Failed(StoreError::Unencodable {
                            id: swap.id().to_owned(),
                            reason,
                        }));
                    }
                }
            }
            if rows.is_empty() {
                continue;
            }
            let written = write_changes(tx.conn(), rows).await?;
            for i in sent {
                let swap = &swaps[i];
                if !written.contains(swap.id()) {
                    unwritten.push(i);
                    continue;
                }
                let task = swap.task();
                match swap.announce(now) {
                    Announce::Nothing => {}
                    Announce::Work => tx.announce(&task.env, &task.kind, false),
                    Announce::TouchingClaimed => tx.announce(&task.env, &task.kind, true),
                }
                outcomes[i] = Some(SwapOutcome::Applied { revision: None });
            }
        }
        if !unwritten.is_empty() {
            let ids: Vec<&str> = unwritten.iter().map(|&i| swaps[i].id()).collect();
            let stored = read_rows(tx.conn(), &ids).await?;
            for i in unwritten {
                outcomes[i] = Some(match stored.get(swaps[i].id()) {
                    None => SwapOutcome::NotFound,
                    Some(Err(reason)) => SwapOutcome::Failed(StoreError::Undecodable {
                        id: swaps[i].id().to_owned(),
                        reason: reason.clone(),
                    }),
                    // Not written, so its version was not the fence's.
                    Some(Ok(())) => SwapOutcome::Conflict,
                });
            }
        }
        tx.commit().await?;
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| StoreError::backend("swap: an item got no outcome")))
            .collect()
    }
}

/// Writes `rows` (each id once), [`MAX_ROWS`] a statement; the ids
/// written.
async fn write_changes(
    conn: &mut SqliteConnection,
    rows: Vec<ChangeRow<'_>>,
) -> Result<HashSet<String>, StoreError> {
    let well_formed = &*WELL_FORMED;
    let mut written = HashSet::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<ChangeRow<'_>> = rows.by_ref().take(MAX_ROWS).collect();
        let padded = values::padded(chunk.len());
        let sql = format!(
            "UPDATE tasks SET {CHANGE_SETS} FROM (VALUES {}) AS x \
             WHERE tasks.id = x.column1 AND tasks.version = x.column2 AND {well_formed} \
             RETURNING tasks.id",
            values::placeholders(padded, CHANGE_COLUMNS)
        );
        let padding = (padded - chunk.len()) * CHANGE_COLUMNS;
        let mut query = sqlx::query(&sql);
        for row in chunk {
            query = row.bind(query);
        }
        let ids = values::bind_nulls(query, padding)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        for id in &ids {
            written.insert(id.try_get::<String, _>(0).map_err(db)?);
        }
    }
    Ok(written)
}

/// The rows of `ids` that exist: `Ok` for one that decodes, else why not.
async fn read_rows(
    conn: &mut SqliteConnection,
    ids: &[&str],
) -> Result<HashMap<String, Result<(), String>>, StoreError> {
    let ids = serde_json::to_string(ids).map_err(StoreError::backend)?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE id IN (SELECT value FROM json_each(?1))"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    let mut found = HashMap::with_capacity(rows.len());
    for r in &rows {
        let Decoded { id, task } = row::decode(r).map_err(StoreError::backend)?;
        found.insert(id, task.map(|_| ()));
    }
    Ok(found)
}

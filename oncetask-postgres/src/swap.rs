//! Swaps: a batch of fenced changes in one statement.
//!
//! One `UPDATE … FROM jsonb_to_recordset($1)` writes every change whose row
//! still has the fence's version and is well formed, without a
//! `SELECT … FOR UPDATE` first and without an explicit transaction: the
//! version check is the row's own `WHERE`, so a concurrent writer that got
//! there first leaves nothing for this one to match. Only the columns a
//! swap may change travel, never the payload. The same statement sends the
//! notices the writes call for ([`Swap::announce`]: an operator's change on
//! the changes channel, work on the other); a heartbeat or a keyless
//! completion sends none.
//!
//! Items the statement did not write are read once, afterwards, to tell a
//! conflict from a missing or undecodable row. An id named twice in one call
//! goes in a later statement, so it is decided on what the earlier item
//! left (as if the items were applied in order).

use std::collections::HashSet;

use chrono::Utc;
use oncetask_core::store::{Announce, Fetched, Swap, SwapOutcome, swap_rounds};
use oncetask_core::{Store, StoreError};
use sqlx::types::Json;

use super::{PostgresStore, WELL_FORMED, db};
use crate::row::{CHANGE_RECORD, CHANGE_SETS, encode_change};

impl PostgresStore {
    pub(crate) async fn swap_changes(
        &self,
        swaps: &[Swap],
    ) -> Result<Vec<SwapOutcome>, StoreError> {
        let now = Utc::now();
        let mut outcomes: Vec<Option<SwapOutcome>> = swaps.iter().map(|_| None).collect();
        let mut unwritten = Vec::new();
        for round in swap_rounds(swaps) {
            let mut rows = Vec::with_capacity(round.len());
            let mut ids = Vec::with_capacity(round.len());
            let mut sent = Vec::with_capacity(round.len());
            for i in round {
                let swap = &swaps[i];
                let env = &swap.task().env;
                let announce = swap.announce(now);
                let channel = if announce == Announce::TouchingClaimed {
                    self.changes_channel(env)
                } else {
                    self.channel(env)
                };
                match encode_change(swap, channel, announce != Announce::Nothing) {
                    Ok(row) => {
                        rows.push(row);
                        ids.push(swap.id().to_owned());
                        sent.push(i);
                    }
                    // Refused alone: the batch's other writes go on.
                    Err(reason) => {
                        outcomes[i] = Some(SwapOutcome::Failed(StoreError::Unencodable {
                            id: swap.id().to_owned(),
                            reason,
                        }))
                    }
                }
            }
            if rows.is_empty() {
                continue;
            }
            let mut lent = self.lend().await?;
            let written: HashSet<String> = sqlx::query_scalar(&self.swap_sql())
                .bind(Json(&rows))
                .bind(&ids)
                .fetch_all(lent.conn())
                .await
                .map_err(db)?
                .into_iter()
                .collect();
            lent.give_back();
            for i in sent {
                if written.contains(swaps[i].id()) {
                    outcomes[i] = Some(SwapOutcome::Applied { revision: None });
                } else {
                    unwritten.push(i);
                }
            }
        }
        if !unwritten.is_empty() {
            let ids: Vec<String> = unwritten
                .iter()
                .map(|&i| swaps[i].id().to_owned())
                .collect();
            let found = Store::get(self, &ids).await?;
            for i in unwritten {
                outcomes[i] = Some(
                    match found.iter().find(|f| fetched_id(f) == swaps[i].id()) {
                        None => SwapOutcome::NotFound,
                        Some(Fetched::Undecodable(u)) => {
                            SwapOutcome::Failed(StoreError::Undecodable {
                                id: u.id.clone(),
                                reason: u.reason.clone(),
                            })
                        }
                        Some(Fetched::Task(_)) => SwapOutcome::Conflict,
                    },
                );
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| StoreError::backend("swap: an item got no outcome")))
            .collect()
    }

    /// The batch swap: every change of the JSON array `$1` (see
    /// [`encode_change`]) over its row if the row still has the expected
    /// version and is well formed; the notices of the written items that ask
    /// for one; the ids written. `$2` holds the same ids: a primary-key
    /// lookup the planner always takes, whatever it guesses of the JSON's
    /// row count or of the table's size (it would otherwise scan the whole
    /// table and check every row's form).
    pub(crate) fn swap_sql(&self) -> String {
        let t = &self.inner.table;
        format!(
            "WITH written AS ( \
                 UPDATE {t} SET {CHANGE_SETS} FROM jsonb_to_recordset($1) AS {CHANGE_RECORD} \
                 WHERE {t}.id = ANY($2) AND {t}.id = x.n_id \
                   AND {t}.version = x.n_expected AND {WELL_FORMED} \
                 RETURNING x.n_id AS id, x.n_channel AS channel, {t}.kind AS kind, \
                           x.n_notify AS notify), \
             notices AS ( \
                 SELECT count(pg_notify(channel, kind)) AS sent \
                 FROM (SELECT DISTINCT channel, kind FROM written WHERE notify) AS n) \
             SELECT written.id FROM written, notices"
        )
    }
}

fn fetched_id(fetched: &Fetched) -> &str {
    match fetched {
        Fetched::Task(t) => &t.id,
        Fetched::Undecodable(u) => &u.id,
    }
}

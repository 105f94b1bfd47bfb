//! Bulk conditional writes (swap, delete): read every document with one
//! BatchGet, decide per document, then write all of them with one
//! BatchWrite, each write guarded by the update time it was decided on.
//!
//! A write whose guard fails (a concurrent writer got there first) is
//! decided again on a fresh read in the next round, up to
//! [`SWAP_ATTEMPTS`] rounds. So a call of n items costs n reads and n
//! writes in two round trips when nothing races, instead of 2n round trips.
//!
//! BatchWrite allows one write per document, so when one call names an id
//! twice, the later item waits for a later round and is decided on what
//! the earlier one left (as if the items were applied in order).

use std::collections::HashSet;

use firestore::gcloud_sdk::google::firestore::v1::{
    Precondition, Write, precondition::ConditionType,
};
use firestore::gcloud_sdk::tonic::Code;
use oncetask_core::StoreError;

use super::claim::lost_race;
use super::{FirestoreStore, SWAP_ATTEMPTS, Stored, item_error};

/// What to do with one item, given its stored document (`None`: no such document).
pub(super) enum Decision<O> {
    /// The item is finished with this outcome; nothing is written.
    Done(O),
    /// Write this (guarded by the stored update time); on success the item's
    /// outcome is the given one.
    Write(Write, O),
}

impl FirestoreStore {
    /// Applies `decide` to each id's stored document and performs the
    /// resulting writes guarded by the update time read, re-reading and
    /// re-deciding items whose guard failed. Items still undecided after the
    /// last round get `gave_up(id)`; items whose read or write failed get
    /// `failed(error)`. Outcomes are in input order.
    pub(super) async fn write_each_if_unchanged<O>(
        &self,
        ids: &[&str],
        mut decide: impl FnMut(usize, Option<&Stored>) -> Decision<O>,
        failed: impl Fn(StoreError) -> O,
        gave_up: impl Fn(&str) -> O,
    ) -> Vec<O> {
        let mut outcomes: Vec<Option<O>> = ids.iter().map(|_| None).collect();
        for _ in 0..SWAP_ATTEMPTS {
            // The first undecided item of each id goes in this round.
            let mut taken = HashSet::new();
            let round: Vec<usize> = (0..ids.len())
                .filter(|&i| outcomes[i].is_none() && taken.insert(ids[i]))
                .collect();
            if round.is_empty() {
                break;
            }
            let read_ids: Vec<String> = round.iter().map(|&i| ids[i].to_owned()).collect();
            let mut stored = match self.batch_get(&read_ids, None).await {
                Ok(found) => found,
                Err(e) => {
                    let message = e.to_string();
                    for &i in &round {
                        outcomes[i] = Some(failed(StoreError::Unavailable(message.clone())));
                    }
                    continue;
                }
            };
            let mut writes = Vec::new();
            let mut written = Vec::new();
            for &i in &round {
                let doc = stored.remove(ids[i]);
                match decide(i, doc.as_ref()) {
                    Decision::Done(outcome) => outcomes[i] = Some(outcome),
                    Decision::Write(mut write, outcome) => {
                        write.current_document = Some(guard(doc.as_ref()));
                        writes.push(write);
                        written.push((i, outcome));
                    }
                }
            }
            let results = self.batch_write(writes).await;
            for ((i, outcome), result) in written.into_iter().zip(results) {
                match result {
                    Ok(()) => outcomes[i] = Some(outcome),
                    // Changed or removed since the read: decide again.
                    Err(s) if lost_race(&s) || s.code() == Code::NotFound => {}
                    Err(s) => outcomes[i] = Some(failed(item_error(ids[i], &s))),
                }
            }
        }
        outcomes
            .into_iter()
            .zip(ids)
            .map(|(outcome, id)| outcome.unwrap_or_else(|| gave_up(id)))
            .collect()
    }
}

/// The precondition that the document is still as read.
fn guard(stored: Option<&Stored>) -> Precondition {
    Precondition {
        condition_type: Some(match stored.and_then(|s| s.update_time) {
            Some(t) => ConditionType::UpdateTime(t),
            None => ConditionType::Exists(stored.is_some()),
        }),
    }
}

//! Bulk conditional writes (swap, delete).
//!
//! Swaps of tasks this store read or wrote carry the document's revision
//! (its update time then): they are written at once, each conditional on
//! that update time, with no read ([`FirestoreStore::swap_fenced`]). Only a
//! write whose condition fails is read, to tell a missing or undecodable
//! document from a conflict. Any write in between (another oncetask
//! process, or a Go service that never bumps `version`) fails the condition.
//!
//! Deletes of finished tasks this store just returned from
//! [`oncetask_core::Store::find_finished`] (a pruner's), at the revision
//! they were returned at, are written the same way: a delete conditional
//! on that update time, with no read ([`FirestoreStore::delete_returned`]).
//!
//! Other items (other deletes, and swaps of tasks built elsewhere) read every
//! document with one BatchGet, decide per document, then write all of them
//! with one BatchWrite, each write guarded by the update time it was
//! decided on.
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

use firestore::gcloud_sdk::google::firestore::v1::write::Operation;
use firestore::gcloud_sdk::google::firestore::v1::{
    Precondition, Write, precondition::ConditionType,
};
use firestore::gcloud_sdk::prost_types::Timestamp;
use firestore::gcloud_sdk::tonic::Code;
use oncetask_core::store::{Delete, DeleteOutcome, Swap, SwapOutcome};
use oncetask_core::{StoreError, Task};

use super::claim::lost_race;
use super::{FirestoreStore, SWAP_ATTEMPTS, Stored, fence_of, item_error, revision_of};

/// What to do with one item, given its stored document (`None`: no such document).
pub(super) enum Decision<O> {
    /// The item is finished with this outcome; nothing is written.
    Done(O),
    /// Write this (guarded by the stored update time); on success the item's
    /// outcome is the given one.
    Write(Write, O),
}

impl FirestoreStore {
    /// Writes the swaps at `items` (whose `writes` are encoded and whose
    /// fences carry a revision), each conditional on that revision. Returns an
    /// outcome for each of them, `None` for every other index.
    ///
    /// An id named twice waits for a later round, so the later item is
    /// conditional on a revision the earlier one replaced: it conflicts, as
    /// if the items were applied in order.
    pub(super) async fn swap_fenced(
        &self,
        swaps: &[Swap],
        writes: &[Result<Write, Option<StoreError>>],
        items: &[usize],
    ) -> Vec<Option<SwapOutcome>> {
        let mut outcomes: Vec<Option<SwapOutcome>> = swaps.iter().map(|_| None).collect();
        let mut waiting: Vec<usize> = items.to_vec();
        while !waiting.is_empty() {
            let mut taken = HashSet::new();
            let (round, later): (Vec<usize>, Vec<usize>) =
                waiting.iter().partition(|&&i| taken.insert(swaps[i].id()));
            waiting = later;
            let mut batch = Vec::with_capacity(round.len());
            let mut sent = Vec::with_capacity(round.len());
            for i in round {
                let (Ok(write), Some(revision)) = (&writes[i], swaps[i].fence().revision()) else {
                    continue;
                };
                let (update_time, version) = fence_of(revision);
                if version != swaps[i].fence().version() {
                    // The caller expects a version the document did not have then.
                    outcomes[i] = Some(SwapOutcome::Conflict);
                    continue;
                }
                let mut write = write.clone();
                write.current_document = Some(Precondition {
                    condition_type: Some(ConditionType::UpdateTime(update_time)),
                });
                batch.push(write);
                sent.push(i);
            }
            let results = self.batch_write(batch).await;
            let mut lost = Vec::new();
            for (i, result) in sent.into_iter().zip(results) {
                match result {
                    Ok(update_time) => {
                        outcomes[i] = Some(SwapOutcome::Applied {
                            revision: update_time.map(|t| revision_of(t, swaps[i].task().version)),
                        })
                    }
                    // Changed or removed since this store saw it.
                    Err(s) if lost_race(&s) || s.code() == Code::NotFound => lost.push(i),
                    Err(s) => {
                        outcomes[i] = Some(SwapOutcome::Failed(item_error(swaps[i].id(), &s)))
                    }
                }
            }
            if lost.is_empty() {
                continue;
            }
            // Tell a conflict from a missing or undecodable document.
            let ids: Vec<String> = lost.iter().map(|&i| swaps[i].id().to_owned()).collect();
            match self.batch_get(&ids, None).await {
                Ok(found) => {
                    for i in lost {
                        outcomes[i] = Some(match found.get(swaps[i].id()) {
                            None => SwapOutcome::NotFound,
                            Some(Stored {
                                task: Err(reason),
                                id,
                                ..
                            }) => SwapOutcome::Failed(StoreError::Undecodable {
                                id: id.clone(),
                                reason: reason.clone(),
                            }),
                            Some(_) => SwapOutcome::Conflict,
                        });
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for i in lost {
                        outcomes[i] = Some(SwapOutcome::Failed(StoreError::Unavailable(
                            message.clone(),
                        )));
                    }
                }
            }
        }
        outcomes
    }

    /// Deletes the items of `deletes` naming a finished task this store
    /// returned from `find_finished` at the delete's expected revision,
    /// each conditional on that revision's update time (no read; a write
    /// whose condition fails is read to tell a conflict from a missing
    /// document). Sets their outcomes and, when deleted, their targets;
    /// leaves the other items alone. An id named twice is left to the
    /// reading path.
    pub(super) async fn delete_returned(
        &self,
        deletes: &[Delete],
        targets: &mut [Option<Task>],
        outcomes: &mut [Option<DeleteOutcome>],
    ) {
        let mut count: std::collections::HashMap<&str, usize> = Default::default();
        for d in deletes {
            *count.entry(d.id.as_str()).or_default() += 1;
        }
        let mut batch = Vec::new();
        let mut sent = Vec::new();
        for (i, d) in deletes.iter().enumerate() {
            let (Some(version), Some(revision)) = (d.expected_version, d.expected_revision) else {
                continue;
            };
            if count.get(d.id.as_str()) != Some(&1) {
                continue;
            }
            let (update_time, stored_version) = fence_of(revision);
            if stored_version != version {
                continue;
            }
            let Some(task) = self.prune_memory.take_returned(&d.id, revision) else {
                continue;
            };
            batch.push(Write {
                operation: Some(Operation::Delete(self.doc_name(&d.id))),
                current_document: Some(Precondition {
                    condition_type: Some(ConditionType::UpdateTime(update_time)),
                }),
                ..Default::default()
            });
            sent.push((i, task));
        }
        if batch.is_empty() {
            return;
        }
        let results = self.batch_write(batch).await;
        let mut lost = Vec::new();
        for ((i, task), result) in sent.into_iter().zip(results) {
            match result {
                Ok(_) => {
                    outcomes[i] = Some(DeleteOutcome::Deleted);
                    targets[i] = Some(task);
                }
                Err(s) if lost_race(&s) || s.code() == Code::NotFound => lost.push(i),
                Err(s) => outcomes[i] = Some(DeleteOutcome::Failed(item_error(&deletes[i].id, &s))),
            }
        }
        if lost.is_empty() {
            return;
        }
        let ids: Vec<String> = lost.iter().map(|&i| deletes[i].id.clone()).collect();
        match self.batch_get(&ids, None).await {
            Ok(found) => {
                for i in lost {
                    outcomes[i] = Some(if found.contains_key(&deletes[i].id) {
                        DeleteOutcome::Conflict
                    } else {
                        DeleteOutcome::NotFound
                    });
                }
            }
            Err(e) => {
                let message = e.to_string();
                for i in lost {
                    outcomes[i] = Some(DeleteOutcome::Failed(StoreError::Unavailable(
                        message.clone(),
                    )));
                }
            }
        }
    }

    /// Applies `decide` to each id's stored document and performs the
    /// resulting writes guarded by the update time read, re-reading and
    /// re-deciding items whose guard failed. A written item's outcome is
    /// `written(outcome, update time)`; items still undecided after the
    /// last round get `gave_up(id)`; items whose read or write failed get
    /// `failed(error)`. Outcomes are in input order.
    pub(super) async fn write_each_if_unchanged<O>(
        &self,
        ids: &[&str],
        mut decide: impl FnMut(usize, Option<&Stored>) -> Decision<O>,
        written: impl Fn(usize, O, Option<Timestamp>) -> O,
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
            let mut sent = Vec::new();
            for &i in &round {
                let doc = stored.remove(ids[i]);
                match decide(i, doc.as_ref()) {
                    Decision::Done(outcome) => outcomes[i] = Some(outcome),
                    Decision::Write(mut write, outcome) => {
                        write.current_document = Some(guard(doc.as_ref()));
                        writes.push(write);
                        sent.push((i, outcome));
                    }
                }
            }
            let results = self.batch_write(writes).await;
            for ((i, outcome), result) in sent.into_iter().zip(results) {
                match result {
                    Ok(update_time) => outcomes[i] = Some(written(i, outcome, update_time)),
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

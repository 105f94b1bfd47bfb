//! Read-modify-write of tasks through the store's version-checked swap.
//!
//! The common path is one round trip: compute the next version from the task
//! as the caller holds it and swap. Only when the swap loses (another write
//! landed meanwhile) are the losers re-read and recomputed from fresh state.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::{Error, StoreError};
use crate::lifecycle::Rejection;
use crate::store::{Fetched, Store, Swap, SwapOutcome};
use crate::task::Task;

/// Rounds of re-read and retry before giving up on a contended task.
const MAX_ROUNDS: usize = 8;

/// What happened to one task of an [`apply_many`] call.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // written tasks are the common case
pub(crate) enum Applied {
    /// Written; the task as stored now.
    Written(Task),
    /// The transition refused (lease lost, or not applicable to the current state).
    Rejected(Rejection),
    /// The task no longer exists.
    Missing,
    /// Storage failed for this task (or it stayed contended).
    Failed(Error),
}

/// Applies `transition` to each task, swapping with the held version and
/// retrying conflicts from fresh reads. Results are in input order.
pub(crate) async fn apply_many<F>(
    store: &dyn Store,
    tasks: Vec<Task>,
    transition: F,
) -> Vec<Applied>
where
    F: Fn(&Task) -> Result<Task, Rejection>,
{
    let mut results: Vec<Option<Applied>> = (0..tasks.len()).map(|_| None).collect();
    // (index in input, task as we believe it is stored)
    let mut pending: Vec<(usize, Task)> = tasks.into_iter().enumerate().collect();
    for _ in 0..MAX_ROUNDS {
        if pending.is_empty() {
            break;
        }
        let mut swaps = Vec::with_capacity(pending.len());
        let mut swapped = Vec::with_capacity(pending.len());
        for (index, current) in pending.drain(..) {
            match transition(&current) {
                Ok(next) => {
                    swaps.push(Swap {
                        task: next,
                        expected_version: current.version,
                    });
                    swapped.push(index);
                }
                Err(rejection) => results[index] = Some(Applied::Rejected(rejection)),
            }
        }
        if swaps.is_empty() {
            break;
        }
        let written: Vec<Task> = swaps.iter().map(|s| s.task.clone()).collect();
        let outcomes = match swap_with_retries(store, swaps).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                let shared = e.to_string();
                for index in swapped {
                    results[index] = Some(Applied::Failed(Error::Store(StoreError::backend(
                        shared.clone(),
                    ))));
                }
                break;
            }
        };
        let mut conflicted = Vec::new();
        let mut attempted: HashMap<String, Task> = HashMap::new();
        for ((index, task), outcome) in swapped.into_iter().zip(written).zip(outcomes) {
            results[index] = Some(match outcome {
                SwapOutcome::Applied => Applied::Written(task),
                SwapOutcome::NotFound => Applied::Missing,
                SwapOutcome::Failed(e) => Applied::Failed(e.into()),
                SwapOutcome::Conflict => {
                    conflicted.push((index, task.id.clone()));
                    attempted.insert(task.id.clone(), task);
                    continue;
                }
            });
        }
        if conflicted.is_empty() {
            break;
        }
        let ids: Vec<String> = conflicted.iter().map(|(_, id)| id.clone()).collect();
        let fresh = match store.get(&ids).await {
            Ok(fetched) => fetched,
            Err(e) => {
                let shared = e.to_string();
                for (index, _) in conflicted {
                    results[index] = Some(Applied::Failed(Error::Store(StoreError::backend(
                        shared.clone(),
                    ))));
                }
                break;
            }
        };
        let mut by_id: HashMap<String, Fetched> = fresh
            .into_iter()
            .map(|f| match &f {
                Fetched::Task(t) => (t.id.clone(), f),
                Fetched::Undecodable(u) => (u.id.clone(), f),
            })
            .collect();
        for (index, id) in conflicted {
            match by_id.remove(&id) {
                // A retried swap whose first try landed after all.
                Some(Fetched::Task(task)) if attempted.get(&id) == Some(&task) => {
                    results[index] = Some(Applied::Written(task))
                }
                Some(Fetched::Task(task)) => pending.push((index, task)),
                Some(Fetched::Undecodable(u)) => {
                    results[index] = Some(Applied::Failed(Error::Store(StoreError::Undecodable {
                        id: u.id,
                        reason: u.reason,
                    })))
                }
                None => results[index] = Some(Applied::Missing),
            }
        }
    }
    for (index, task) in pending {
        results[index] = Some(Applied::Failed(Error::Store(StoreError::backend(format!(
            "task {}: still contended after {MAX_ROUNDS} attempts",
            task.id
        )))));
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Applied::Failed(Error::Internal("no outcome recorded for a task".into()))
            })
        })
        .collect()
}

/// Swap attempts after a storage error (the first try included).
const SWAP_TRIES: u32 = 3;

/// A swap, retried after storage errors (a blip must not lose an outcome:
/// the task would run again). Retrying is safe because swaps are
/// version-checked: a try that landed makes the retry conflict, and the
/// re-read recognises the write.
async fn swap_with_retries(store: &dyn Store, swaps: Vec<Swap>) -> Result<Vec<SwapOutcome>, Error> {
    let expected = swaps.len();
    let mut tries = 0;
    loop {
        tries += 1;
        match store.swap(swaps.clone()).await {
            Ok(outcomes) => return crate::manager::admin::checked(expected, outcomes),
            Err(e) if tries >= SWAP_TRIES => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "swap failed; retrying");
                tokio::time::sleep(Duration::from_millis(50 * 4u64.pow(tries - 1))).await;
            }
        }
    }
}

/// [`apply_many`] for one task.
pub(crate) async fn apply_one<F>(store: &dyn Store, task: Task, transition: F) -> Applied
where
    F: Fn(&Task) -> Result<Task, Rejection>,
{
    apply_many(store, vec![task], transition)
        .await
        .pop()
        .unwrap_or(Applied::Rejected(Rejection::NotApplicable))
}

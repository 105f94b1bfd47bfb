//! Read-modify-write of tasks through the store's version-checked swap.
//!
//! The common path is one round trip: compute the next version from the task
//! as the caller holds it and swap. Only when the swap loses (another write
//! landed meanwhile) are the losers re-read and recomputed from fresh state.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{Error, StoreError};
use crate::lifecycle::Rejection;
use chrono::{DateTime, Utc};

use crate::manager::answer::checked;
use crate::store::{Change, Fence, Fetched, Store, Swap, SwapOutcome};
use crate::task::{AttemptError, LeaseToken, Outcome, Revision, Task};

/// Rounds of re-read and retry before giving up on a contended task.
const MAX_ROUNDS: usize = 8;

/// What happened to one task of an [`apply_many`] call.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // written tasks are the common case
pub(crate) enum Applied {
    /// Written; the task as stored now.
    Written(Task),
    /// The store refused the transition's write (`reason`, e.g. a result too
    /// large); its fallback ([`Transition::if_refused`]) was written instead.
    WrittenInstead {
        /// The task as stored now.
        task: Task,
        /// Why the store refused the first write.
        reason: String,
    },
    /// The transition refused (lease lost, or not applicable to the current state).
    Rejected(Rejection),
    /// The task no longer exists.
    Missing,
    /// Storage failed for this task (or it stayed contended).
    Failed(Error),
}

/// Applies `transition` to each task and writes it as `change`, fenced on
/// the task as held, retrying conflicts from fresh reads. Results are in
/// input order.
pub(crate) async fn apply_many<F>(
    store: &dyn Store,
    tasks: Vec<Task>,
    change: Change,
    transition: F,
) -> Vec<Applied>
where
    F: Fn(&Task) -> Result<Task, Rejection> + Send + Sync,
{
    let items = tasks.into_iter().map(|task| (task, change)).collect();
    apply_each(store, items, |_| &transition).await
}

/// A state change of one task, computed from the task as stored (a
/// [`crate::lifecycle`] function with its arguments).
pub(crate) trait Transition: Send + Sync {
    /// The task as it must be stored next, or why the change does not apply.
    fn apply(&self, stored: &Task) -> Result<Task, Rejection>;

    /// [`Transition::apply`] written onto the task itself (the task is
    /// unchanged on `Err`), for a transition that can change a task without
    /// copying it; `None` (the default) when it cannot. One that does must
    /// change only its change's fields and the version: its swap is not
    /// cleaned up by [`Swap::from_next`] (debug builds check it).
    fn apply_in_place(&self, task: &mut Task) -> Option<Result<(), Rejection>> {
        let _ = task;
        None
    }

    /// What to write instead when the store refuses [`Transition::apply`]'s
    /// write for `reason` (it cannot hold a value); `None`: nothing, the
    /// refusal is the result.
    fn if_refused(&self, stored: &Task, reason: &str) -> Option<Result<Task, Rejection>> {
        let _ = (stored, reason);
        None
    }

    /// Whether [`Transition::if_refused`] has something to write.
    fn falls_back(&self) -> bool {
        false
    }
}

impl<F: Fn(&Task) -> Result<Task, Rejection> + Send + Sync> Transition for F {
    fn apply(&self, stored: &Task) -> Result<Task, Rejection> {
        self(stored)
    }
}

/// A task to write: its input index, the task as we believe it is stored,
/// and the store's reason if it refused the transition's write already.
type Pending = (usize, Task, Option<String>);

/// The fields a swap can write, as the task held them before its
/// transition: what puts the task back as held when the store refuses the
/// write and the transition falls back (so that path keeps no copy of the
/// whole task).
struct Unwritten {
    leased_until: Option<DateTime<Utc>>,
    lease_token: Option<LeaseToken>,
    wait_until: Option<DateTime<Utc>>,
    attempts: u32,
    cancellation_attempts: u32,
    errors: Vec<AttemptError>,
    done_at: Option<DateTime<Utc>>,
    outcome: Option<Outcome>,
    result: Option<serde_json::Value>,
    is_cancelled: bool,
    cancelled_at: Option<DateTime<Utc>>,
    snoozes: u32,
    priority: i8,
    pruned_at: Option<DateTime<Utc>>,
    version: u64,
    revision: Option<Revision>,
}

impl Unwritten {
    fn of(task: &Task) -> Self {
        // Destructured, so that a new field cannot be left out by accident:
        // every field but the fixed ones (never written by a swap) is kept.
        // The payload is written only by a prune, which has no fallback and
        // so never needs restoring (copying it here would cost every outcome).
        let Task {
            id: _,
            kind: _,
            data: _,
            resource_key: _,
            env: _,
            created_at: _,
            recurrence: _,
            parent_recurrence_id: _,
            occurrence_timestamp: _,
            max_attempts: _,
            wait_until,
            leased_until,
            done_at,
            attempts,
            cancellation_attempts,
            errors,
            result,
            is_cancelled,
            cancelled_at,
            lease_token,
            version,
            outcome,
            snoozes,
            priority,
            pruned_at,
            revision,
        } = task;
        Self {
            leased_until: *leased_until,
            lease_token: lease_token.clone(),
            wait_until: *wait_until,
            attempts: *attempts,
            cancellation_attempts: *cancellation_attempts,
            errors: errors.clone(),
            done_at: *done_at,
            outcome: *outcome,
            result: result.clone(),
            is_cancelled: *is_cancelled,
            cancelled_at: *cancelled_at,
            snoozes: *snoozes,
            priority: *priority,
            pruned_at: *pruned_at,
            version: *version,
            revision: *revision,
        }
    }

    /// `task` (the held task with a swap's fields written) as it was held.
    fn restore(self, mut task: Task) -> Task {
        // Every field a swap writes (`Field::ALL`), the version and the
        // revision; a swap writes nothing else.
        task.leased_until = self.leased_until;
        task.lease_token = self.lease_token;
        task.wait_until = self.wait_until;
        task.attempts = self.attempts;
        task.cancellation_attempts = self.cancellation_attempts;
        task.errors = self.errors;
        task.done_at = self.done_at;
        task.outcome = self.outcome;
        task.result = self.result;
        task.is_cancelled = self.is_cancelled;
        task.cancelled_at = self.cancelled_at;
        task.snoozes = self.snoozes;
        task.priority = self.priority;
        task.pruned_at = self.pruned_at;
        task.version = self.version;
        task.revision = self.revision;
        task
    }
}

/// [`apply_many`] with a transition per task: `transition(i)` for the task
/// at input index `i`, written as the change paired with the task.
async fn apply_each<'t, F>(
    store: &dyn Store,
    tasks: Vec<(Task, Change)>,
    transition: F,
) -> Vec<Applied>
where
    F: Fn(usize) -> &'t dyn Transition,
{
    let mut results: Vec<Option<Applied>> = (0..tasks.len()).map(|_| None).collect();
    let changes: Vec<Change> = tasks.iter().map(|(_, change)| *change).collect();
    let change_of = |index: usize| changes.get(index).copied().unwrap_or(Change::Outcome);
    let mut pending: Vec<Pending> = tasks
        .into_iter()
        .enumerate()
        .map(|(index, (task, _))| (index, task, None))
        .collect();
    for _ in 0..MAX_ROUNDS {
        if pending.is_empty() {
            break;
        }
        let mut swaps = Vec::with_capacity(pending.len());
        let mut swapped = Vec::with_capacity(pending.len());
        for (index, mut current, refused) in pending.drain(..) {
            let step = transition(index);
            let change = change_of(index);
            let fence = Fence::of(&current);
            let before = (refused.is_none() && step.falls_back()).then(|| Unwritten::of(&current));
            #[cfg(debug_assertions)]
            let held = current.clone();
            let swap = match &refused {
                None => match step.apply_in_place(&mut current) {
                    // The common path: the transition wrote onto the task
                    // as held, which becomes the swap's task (no copy).
                    Some(applied) => applied.map(|()| {
                        let swap = Swap::from_applied(fence, change, current);
                        #[cfg(debug_assertions)]
                        {
                            let cleaned = Swap::from_next(&held, change, swap.task().clone());
                            debug_assert_eq!(
                                swap.task(),
                                cleaned.task(),
                                "a transition wrote outside its change"
                            );
                            debug_assert_eq!(swap.task().version, held.version.wrapping_add(1));
                        }
                        swap
                    }),
                    None => step
                        .apply(&current)
                        .map(|next| Swap::from_next(&current, change, next)),
                },
                Some(reason) => step
                    .if_refused(&current, reason)
                    .unwrap_or(Err(Rejection::NotApplicable))
                    .map(|next| Swap::from_next(&current, change, next)),
            };
            match swap {
                Ok(swap) => {
                    swaps.push(swap);
                    swapped.push((index, before, refused));
                }
                Err(rejection) => results[index] = Some(Applied::Rejected(rejection)),
            }
        }
        if swaps.is_empty() {
            break;
        }
        let (outcomes, retried) = match swap_with_retries(store, &swaps).await {
            Ok(answer) => answer,
            Err(e) => {
                let shared = e.to_string();
                for (index, _, _) in swapped {
                    results[index] = Some(Applied::Failed(Error::Store(StoreError::backend(
                        shared.clone(),
                    ))));
                }
                break;
            }
        };
        let mut conflicted = Vec::new();
        let mut attempted: HashMap<String, Task> = HashMap::new();
        for (((index, before, refused), task), outcome) in swapped
            .into_iter()
            .zip(swaps.into_iter().map(Swap::into_task))
            .zip(outcomes)
        {
            results[index] = Some(match outcome {
                SwapOutcome::Applied { revision } => {
                    // The next swap of this task is fenced on what was written.
                    let mut task = task;
                    task.revision = revision;
                    match refused {
                        None => Applied::Written(task),
                        Some(reason) => Applied::WrittenInstead { task, reason },
                    }
                }
                SwapOutcome::NotFound => Applied::Missing,
                // Refused: the stored task is unchanged, so the fallback
                // is computed from the task as held, in the next round.
                SwapOutcome::Failed(StoreError::Unencodable { reason, .. }) if before.is_some() => {
                    if let Some(before) = before {
                        pending.push((index, before.restore(task), Some(reason)));
                    }
                    continue;
                }
                SwapOutcome::Failed(e) => Applied::Failed(e.into()),
                SwapOutcome::Conflict => {
                    conflicted.push((index, task.id.clone(), refused));
                    // Only a swap tried again after a storage error may
                    // have landed on its first try: a conflict on the
                    // first try is another writer's (which may have
                    // written the very same state, e.g. two pruners).
                    if retried {
                        attempted.insert(task.id.clone(), task);
                    }
                    continue;
                }
            });
        }
        if conflicted.is_empty() {
            // Done, unless refused writes wait for their fallback.
            continue;
        }
        let ids: Vec<String> = conflicted.iter().map(|(_, id, _)| id.clone()).collect();
        let fresh = match store.get(&ids).await {
            Ok(fetched) => fetched,
            Err(e) => {
                let shared = e.to_string();
                for (index, _, _) in conflicted {
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
        for (index, id, refused) in conflicted {
            match by_id.remove(&id) {
                // A retried swap whose first try landed after all.
                Some(Fetched::Task(task)) if attempted.get(&id) == Some(&task) => {
                    results[index] = Some(match refused {
                        None => Applied::Written(task),
                        Some(reason) => Applied::WrittenInstead { task, reason },
                    })
                }
                Some(Fetched::Task(task)) => pending.push((index, task, refused)),
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
    for (index, task, _) in pending {
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
/// fenced: a try that landed makes the retry conflict, and the re-read
/// recognises the write. Also says whether the answer is a retry's.
async fn swap_with_retries(
    store: &dyn Store,
    swaps: &[Swap],
) -> Result<(Vec<SwapOutcome>, bool), Error> {
    let expected = swaps.len();
    let mut tries = 0;
    loop {
        tries += 1;
        match store.swap(swaps).await {
            Ok(outcomes) => return checked(expected, outcomes).map(|o| (o, tries > 1)),
            Err(e) if tries >= SWAP_TRIES => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "swap failed; retrying");
                tokio::time::sleep(Duration::from_millis(50 * 4u64.pow(tries - 1))).await;
            }
        }
    }
}

/// [`apply_many`] for one task.
pub(crate) async fn apply_one<F>(
    store: &dyn Store,
    task: Task,
    change: Change,
    transition: F,
) -> Applied
where
    F: Fn(&Task) -> Result<Task, Rejection> + Send + Sync,
{
    apply_many(store, vec![task], change, transition)
        .await
        .pop()
        .unwrap_or(Applied::Rejected(Rejection::NotApplicable))
}

/// One caller's tasks waiting in a [`Committer`] queue, each with the
/// change it writes and how.
struct Queued {
    items: Vec<(Task, Change, Box<dyn Transition>)>,
    reply: oneshot::Sender<Vec<Applied>>,
}

/// How a [`Committer`] forms batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batching {
    /// Longest wait of a batch for more writes when no batch is being
    /// written (zero: write at once).
    pub(crate) delay: Duration,
    /// Most tasks in one batch (a caller's tasks are never split).
    pub(crate) max: usize,
}

/// Group commit of task writes: concurrent callers' tasks go to the store in
/// one [`apply_many`] batch (one `Store::swap` call).
///
/// There is no writer task: a caller queues its tasks and then either
/// receives its results or takes the flush lock and writes a batch of what
/// is queued, itself included. A batch that waited for the previous one to
/// be written starts at once (everything queued meanwhile goes in it); a
/// batch that found no write in progress first waits up to
/// [`Batching::delay`] for more writes, or until [`Batching::max`] tasks
/// are queued. Each task keeps its own transition, so fencing (version and
/// lease token) and conflict handling stay per task.
pub(crate) struct Committer {
    queue: Mutex<Queue>,
    flush: tokio::sync::Mutex<()>,
    /// Signalled when the queue holds a full batch.
    full: tokio::sync::Notify,
    batching: Batching,
}

impl Committer {
    pub(crate) fn new(batching: Batching) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            flush: tokio::sync::Mutex::new(()),
            full: tokio::sync::Notify::new(),
            batching: Batching {
                delay: batching.delay,
                max: batching.max.max(1),
            },
        }
    }

    /// Applies each transition to its task, batched with other callers'
    /// writes; results are in input order.
    pub(crate) async fn apply(
        &self,
        store: &dyn Store,
        items: Vec<(Task, Change, Box<dyn Transition>)>,
    ) -> Vec<Applied> {
        if items.is_empty() {
            return Vec::new();
        }
        let count = items.len();
        let cancelled = || {
            // The caller writing the batch was cancelled (shutdown abort).
            (0..count)
                .map(|_| {
                    Applied::Failed(Error::Internal(
                        "the batch writing this outcome was cancelled".into(),
                    ))
                })
                .collect()
        };
        let (reply, mut answer) = oneshot::channel();
        let queued = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.push(Queued { items, reply });
            queue.tasks
        };
        if queued >= self.batching.max {
            self.full.notify_one();
        }
        loop {
            match answer.try_recv() {
                Ok(applied) => return applied,
                Err(oneshot::error::TryRecvError::Closed) => return cancelled(),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let guard = match self.flush.try_lock() {
                Ok(guard) => {
                    self.gather().await;
                    guard
                }
                Err(_) => tokio::select! {
                    biased;
                    applied = &mut answer => return applied.unwrap_or_else(|_| cancelled()),
                    guard = self.flush.lock() => guard,
                },
            };
            let batch = self.take_batch();
            // An empty queue means an earlier flush took (and answered) ours.
            if !batch.is_empty() {
                write_batch(store, batch).await;
            }
            drop(guard);
        }
    }

    /// Waits, holding the flush lock, until a full batch is queued or the
    /// batching delay is over.
    async fn gather(&self) {
        if self.batching.delay.is_zero() || self.queued() >= self.batching.max {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.batching.delay) => {}
            _ = self.full.notified() => {}
        }
    }

    fn queued(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tasks
    }

    /// The oldest queued callers, up to [`Batching::max`] tasks (at least one caller).
    fn take_batch(&self) -> Vec<Queued> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = Vec::new();
        let mut tasks = 0;
        while let Some(next) = queue.callers.front() {
            if !batch.is_empty() && tasks + next.items.len() > self.batching.max {
                break;
            }
            tasks += next.items.len();
            batch.extend(queue.callers.pop_front());
        }
        queue.tasks -= tasks;
        batch
    }
}

/// The callers waiting in a [`Committer`], oldest first, and how many tasks
/// they hold together (kept as they come and go: the queue can be long
/// while a batch is being written, and is looked at on every write).
#[derive(Default)]
struct Queue {
    callers: VecDeque<Queued>,
    tasks: usize,
}

impl Queue {
    fn push(&mut self, queued: Queued) {
        self.tasks += queued.items.len();
        self.callers.push_back(queued);
    }
}

/// The transition of a task that has none (never met: every queued task
/// comes with its own).
static NOT_APPLICABLE: fn(&Task) -> Result<Task, Rejection> = |_| Err(Rejection::NotApplicable);

/// Writes the queued tasks of several callers in one batch and answers each.
async fn write_batch(store: &dyn Store, batch: Vec<Queued>) {
    let mut tasks = Vec::new();
    let mut transitions = Vec::new();
    let mut replies = Vec::with_capacity(batch.len());
    for queued in batch {
        replies.push((queued.reply, queued.items.len()));
        for (task, change, transition) in queued.items {
            tasks.push((task, change));
            transitions.push(transition);
        }
    }
    let mut results = apply_each(store, tasks, |i| match transitions.get(i) {
        Some(transition) => transition.as_ref(),
        None => &NOT_APPLICABLE,
    })
    .await
    .into_iter();
    for (reply, n) in replies {
        // A caller that went away no longer needs its results.
        let _ = reply.send(results.by_ref().take(n).collect());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::HandlerError;
    use crate::lifecycle::{self, FailurePolicy, Finished, HandlerPath, LeaseGrant, RunResult};
    use crate::retry::NoRetry;
    use crate::test_support::{t0, task};

    /// What the fallback starts from after a refused write is the task as
    /// held, whatever the outcome wrote onto it.
    #[test]
    fn a_refused_outcome_puts_the_task_back_as_held() {
        let grant = LeaseGrant::new(t0(), Duration::from_secs(60));
        let mut held = lifecycle::claim(&task("a"), &grant);
        held.errors.push(AttemptError {
            at: t0(),
            error: "earlier".into(),
        });
        held.result = Some(serde_json::json!("stale"));
        held.revision = Some(Revision::from_raw(7));
        let policy = FailurePolicy {
            retry: &NoRetry,
            cancellation_retry: &NoRetry,
            error_history_limit: 3,
        };
        let err = RunResult::Failed(HandlerError::msg("boom"));
        let ok = RunResult::Completed(Some(serde_json::json!(1)));
        for result in [&err, &ok] {
            let run = Finished {
                token: &grant.token,
                now: t0(),
                path: HandlerPath::Main,
                result,
            };
            let before = Unwritten::of(&held);
            let mut task = held.clone();
            lifecycle::record_in_place(&mut task, &run, policy, None).expect("leased");
            let swap = Swap::from_applied(Fence::of(&held), Change::Outcome, task);
            assert_ne!(swap.task(), &held);
            let restored = before.restore(swap.into_task());
            assert_eq!(restored, held);
            assert_eq!(restored.revision, held.revision);
        }
    }
}

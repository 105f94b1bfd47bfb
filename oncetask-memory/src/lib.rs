//! # oncetask-memory
//!
//! An in-memory [`Store`] for oncetask: for unit tests, demos and local
//! development. Nothing survives the process, but every rule of the
//! [`Store`] contract holds, so code tested against it behaves the same on a
//! durable backend.
//!
//! ```
//! use oncetask_core::lifecycle::{self, LeaseGrant};
//! use oncetask_core::store::{Change, ClaimMode, ClaimOrder, ClaimRequest, Swap, SwapOutcome};
//! use oncetask_core::{Store, Task, TaskData, TaskStatus};
//! use oncetask_memory::MemoryStore;
//!
//! #[derive(serde::Serialize)]
//! struct Email {
//!     to: String,
//! }
//!
//! impl TaskData for Email {
//!     type Kind = &'static str;
//!     fn kind(&self) -> &'static str { "email" }
//!     fn idempotent_id(&self) -> String { format!("email-{}", self.to) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let now = chrono::Utc::now();
//! let task = Task::from_data(&Email { to: "a@b.c".into() }, "prod", now)?;
//! store.create(vec![task]).await?;
//!
//! // A worker leases the ready task for 30 seconds...
//! let request = ClaimRequest {
//!     env: "prod".into(),
//!     kind: "email".into(),
//!     now,
//!     grant: LeaseGrant::new(now, std::time::Duration::from_secs(30)),
//!     mode: ClaimMode::Single { limit: 10 },
//!     order: ClaimOrder::Priority,
//! };
//! let claimed = store.claim(&request).await?;
//! let leased = &claimed.tasks[0];
//! assert_eq!(leased.attempts, 1);
//!
//! // ...runs it, and records the outcome the core computed, fenced on the
//! // state it was decided on.
//! let done = lifecycle::succeed(leased, &request.grant.token, now, None)?;
//! let outcomes = store
//!     .swap(&[Swap::new(leased, Change::Outcome, &done)])
//!     .await?;
//! assert!(matches!(outcomes[0], SwapOutcome::Applied { .. }));
//!
//! let counts = store.count_by_status("prod", Some("email"), now).await?;
//! assert_eq!(counts.get(&TaskStatus::Completed), Some(&1));
//! # Ok(())
//! # }
//! ```
//!
//! ## Indexes and cost
//!
//! All documents live in one map keyed by id, behind one mutex. Next to it,
//! per environment, kind and priority present (a *band*), the store keeps
//! (n = tasks of that env/kind):
//!
//! * a claim walk in [`Task::claim_order_key`] order holding the not-done
//!   tasks without a resource key and, per resource key, only its first
//!   never-leased and first leased task (a claim takes at most one task of a
//!   key in claim order);
//! * per resource key, its not-done tasks in claim order and in
//!   `(wait_until, created_at, id)` order, and the multiset of their lease
//!   expiries (a key is busy while the latest is after `now`). A busy key is
//!   *parked*: out of the walk until its latest lease expires;
//! * the multiset of [`Task::due_at`] of not-done tasks;
//! * counts of done tasks per status, and all tasks by `(created_at, id)`.
//!
//! Every write updates these in O(log n) per task. A claim walks the claim
//! order from its start and stops where no later entry can be ready (the
//! first future `wait_until` among never-leased entries, the first live lease
//! among leased ones); it costs O((c + p + s + 1) log n + u): c tasks
//! claimed, p keys whose lease expired since the previous claim, u
//! undecodable documents of the kind, and s skipped entries, which only
//! arise when claims' clocks disagree or a task is both leased and waiting.
//! Tasks waiting behind a busy key cost nothing. A claim in priority order
//! walks the bands from the highest priority down; one in the oldest order
//! merges their walks; a key's lease in one band blocks its tasks in every
//! band (a head of such a key in another band is one more skipped entry).
//! With every task at one priority there is one band, and a claim is the
//! same as before bands existed. [`Store::next_due`] is
//! O(log n). [`Store::find`] walks the creation order from its cursor
//! ([`TaskFilter::after`], a range of the index) and stops after
//! `offset + limit` matches; [`Store::count_by_status`] visits only not-done
//! tasks (undecodable documents are counted apart, from their index); [`Store::kinds`] reads the per-kind indexes only. [`Store::inspect`]
//! is the trait's default (a count and a due time per kind, and one listing
//! of the pending tasks).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use oncetask_core::store::{
    Announce, ClaimRequest, Claimed, CreateOutcome, Delete, DeleteOutcome, Fetched, FinishedQuery,
    Notification, StartsRequest, StatusCounts, StorageStats, Swap, SwapOutcome, TaskFilter,
    Undecodable,
};
use oncetask_core::{Store, StoreError, Task, lifecycle};

mod bands;
mod controls;
mod doc;
mod index;
mod notify;
mod ready;

use doc::{Entry, Id, RawDoc};
use index::State;
use notify::Hub;

/// An in-memory [`Store`]. Cloning is cheap and clones share the same tasks.
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    // A std mutex rather than tokio's: every critical section is short,
    // synchronous and never spans an `.await`, which is the case tokio's docs
    // recommend the std mutex for. A poisoned lock is recovered: only this
    // crate's index code and the core's pure functions (no user code) run
    // under it, so a panic there is a bug, and keeping the store usable is
    // more helpful to the tests it serves than failing every later call.
    state: Mutex<State>,
    /// Paused kinds and rate limiters.
    controls: Mutex<controls::Controls>,
    hub: Hub,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("documents", &self.lock().docs.len())
            .finish()
    }
}

/// Env/kind pairs changed by one call, notified once the lock is released,
/// each with whether a change may have touched a task a worker holds
/// ([`Notification::may_touch_claimed`]).
type Changed = BTreeMap<(String, String), bool>;

fn mark(changed: &mut Changed, task: &Task, touches_claimed: bool) {
    // Most calls touch one env/kind: look before allocating its key.
    match changed
        .iter_mut()
        .find(|((env, kind), _)| *env == task.env && *kind == task.kind)
    {
        Some((_, touches)) => *touches |= touches_claimed,
        None => {
            changed.insert((task.env.clone(), task.kind.clone()), touches_claimed);
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn controls(&self) -> MutexGuard<'_, controls::Controls> {
        self.shared
            .controls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a document that cannot be decoded into a task, replacing any
    /// document with this id. For tests of Go W7: claims of `env`/`kind`
    /// skip it and report it in [`Claimed::undecodable`], [`Store::get`]
    /// returns it as [`Fetched::Undecodable`], [`Store::delete`] removes it,
    /// [`Store::find`] does not list it, and [`Store::count_by_status`]
    /// counts it in [`StatusCounts::undecodable`] only.
    pub fn insert_undecodable(&self, id: &str, env: &str, kind: &str, reason: &str) {
        {
            let mut state = self.lock();
            state.remove(id);
            state.insert(
                Id::from(id),
                Entry::Raw(RawDoc {
                    env: env.to_owned(),
                    kind: kind.to_owned(),
                    reason: reason.to_owned(),
                }),
            );
        }
        self.shared
            .hub
            .publish(Changed::from([((env.to_owned(), kind.to_owned()), true)]));
    }
}

#[async_trait]
impl Store for MemoryStore {
    /// Inserts each task unless its id exists in any env. Within one call a
    /// repeated id is created once; later copies report `AlreadyExists`.
    async fn create(&self, tasks: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError> {
        let mut changed = Changed::new();
        let outcomes = {
            let mut state = self.lock();
            tasks
                .into_iter()
                .map(|task| match state.docs.get(task.id.as_str()) {
                    Some(existing) if existing.env() == task.env => CreateOutcome::AlreadyExists,
                    Some(existing) => CreateOutcome::ExistsInOtherEnv {
                        env: existing.env().to_owned(),
                    },
                    None => {
                        mark(&mut changed, &task, false);
                        state.insert(Id::from(task.id.as_str()), Entry::Task(task));
                        CreateOutcome::Created
                    }
                })
                .collect()
        };
        self.shared.hub.publish(changed);
        Ok(outcomes)
    }

    /// Selects and leases under one lock, so concurrent claims are serialized.
    /// Undecodable documents of the env/kind are reported on every claim.
    /// `limit` or `max_group` 0 leases nothing.
    async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
        let mut state = self.lock();
        let undecodable = state.undecodable(&request.env, &request.kind);
        let picked = state.select(
            &request.env,
            &request.kind,
            request.now,
            request.mode,
            request.order,
        );
        let mut tasks = Vec::with_capacity(picked.len());
        for id in picked {
            let leased = state.update(&id, |task| {
                lifecycle::claim_in_place(task, &request.grant);
                task.clone()
            });
            tasks.extend(leased);
        }
        Ok(Claimed { tasks, undecodable })
    }

    /// Writes each swap's change onto the stored task whose `version` is
    /// still the fenced one (only the change's fields: the reference for
    /// every backend). Swapping over an undecodable document fails with
    /// [`StoreError::Undecodable`].
    async fn swap(&self, swaps: &[Swap]) -> Result<Vec<SwapOutcome>, StoreError> {
        // Wall time, as on the other backends: it only decides whether a
        // write is announced.
        let now = Utc::now();
        let mut changed = Changed::new();
        let outcomes = {
            let mut state = self.lock();
            swaps
                .iter()
                .map(|swap| {
                    // A swap never changes the env or kind (Change::fields).
                    // Like the other backends, it announces only what frees
                    // work or may touch a held task.
                    let announce = swap.announce(now);
                    let applied = state.update(swap.id(), |task| {
                        if task.version != swap.fence().version() {
                            return false;
                        }
                        swap.apply_to(task);
                        if announce != Announce::Nothing {
                            mark(&mut changed, task, announce == Announce::TouchingClaimed);
                        }
                        true
                    });
                    match applied {
                        Some(true) => SwapOutcome::Applied { revision: None },
                        Some(false) => SwapOutcome::Conflict,
                        None => match state.docs.get(swap.id()) {
                            Some(Entry::Raw(raw)) => SwapOutcome::Failed(StoreError::Undecodable {
                                id: swap.id().to_owned(),
                                reason: raw.reason.clone(),
                            }),
                            _ => SwapOutcome::NotFound,
                        },
                    }
                })
                .collect()
        };
        self.shared.hub.publish(changed);
        Ok(outcomes)
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError> {
        let state = self.lock();
        let mut seen = HashSet::new();
        Ok(ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .filter_map(|id| match state.docs.get(id.as_str())? {
                Entry::Task(task) => Some(Fetched::Task(task.clone())),
                Entry::Raw(raw) => Some(Fetched::Undecodable(Undecodable {
                    id: id.clone(),
                    reason: raw.reason.clone(),
                })),
            })
            .collect())
    }

    async fn find(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let state = self.lock();
        Ok(state
            .by_creation(
                &filter.env,
                filter.kind.as_deref(),
                filter.resource_key.as_deref(),
                filter.after.as_ref(),
            )
            .take_while(|task| !filter.is_past_end(task))
            .filter(|task| filter.matches(task))
            .skip(filter.offset)
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect())
    }

    async fn count_by_status(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StatusCounts, StoreError> {
        Ok(self.lock().count_by_status(env, kind, now))
    }

    /// From the per-kind maps of undecodable documents, by id.
    async fn find_undecodable(
        &self,
        env: &str,
        limit: usize,
    ) -> Result<Vec<Undecodable>, StoreError> {
        Ok(self.lock().undecodable_of_env(env, limit))
    }

    /// From the per-kind indexes: O(kinds of the env), no task is read.
    async fn kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.lock().kinds(env))
    }

    /// Removes each id (tasks and undecodable documents alike).
    async fn delete(&self, deletes: &[Delete]) -> Result<Vec<DeleteOutcome>, StoreError> {
        let mut changed = Changed::new();
        let outcomes = {
            let mut state = self.lock();
            deletes
                .iter()
                .map(|delete| {
                    let matches =
                        match (state.docs.get(delete.id.as_str()), delete.expected_version) {
                            (None, _) => return DeleteOutcome::NotFound,
                            (Some(_), None) => true,
                            (Some(Entry::Task(task)), Some(version)) => task.version == version,
                            (Some(Entry::Raw(_)), Some(_)) => false,
                        };
                    if !matches {
                        return DeleteOutcome::Conflict;
                    }
                    match state.remove(&delete.id) {
                        Some(entry) => {
                            // A finished task is held by no worker and frees
                            // no key: a pruner's deletes wake no one.
                            let finished = matches!(&entry, Entry::Task(t) if t.done_at.is_some());
                            if !finished {
                                changed.insert(
                                    (entry.env().to_owned(), entry.kind().to_owned()),
                                    true,
                                );
                            }
                            DeleteOutcome::Deleted
                        }
                        None => DeleteOutcome::NotFound,
                    }
                })
                .collect()
        };
        self.shared.hub.publish(changed);
        Ok(outcomes)
    }

    async fn next_due(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.lock().next_due(env, kind, after))
    }

    /// A range of the kind's finish-order index: O(log n + limit).
    async fn find_finished(&self, query: &FinishedQuery) -> Result<Vec<Task>, StoreError> {
        Ok(self.lock().finished(query))
    }

    async fn set_paused(&self, env: &str, kind: &str, paused: bool) -> Result<bool, StoreError> {
        let changed = self.controls().set_paused(env, kind, paused);
        if changed {
            self.shared
                .hub
                .publish(Changed::from([((env.to_owned(), kind.to_owned()), true)]));
        }
        Ok(changed)
    }

    async fn paused_kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.controls().paused_kinds(env))
    }

    async fn take_starts(&self, requests: &[StartsRequest]) -> Result<Vec<u32>, StoreError> {
        let mut controls = self.controls();
        Ok(requests.iter().map(|r| controls.take(r)).collect())
    }

    async fn return_starts(&self, requests: &[StartsRequest]) -> Result<(), StoreError> {
        let mut controls = self.controls();
        for request in requests {
            controls.give_back(request);
        }
        Ok(())
    }

    /// A heap estimate per task: the size of the task value plus the
    /// length of its strings, payload, result and errors as JSON (what the
    /// heap holds, give or take the allocator's rounding and the indexes).
    async fn storage_stats(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<StorageStats, StoreError> {
        let state = self.lock();
        let mut stats = StorageStats::new(
            "every task counted; bytes: heap estimate (task struct size plus its fields as JSON)",
        );
        for task in state.tasks_of(env) {
            let bytes = heap_estimate(task);
            if task.is_tombstone() {
                stats.tombstones.add(Some(bytes));
            } else {
                stats
                    .by_status
                    .entry(task.status(now))
                    .or_default()
                    .add(Some(bytes));
            }
        }
        Ok(stats)
    }
    /// Claims take the store's lock: a second claim in flight waits for
    /// it, never races it.
    fn concurrent_claims(&self) -> usize {
        2
    }

    fn claims_ahead(&self) -> bool {
        true
    }

    /// Notices are sent after every create and delete, and after the swaps
    /// that free work or come from an operator (once per kind and call);
    /// heartbeats, the end of a task without a resource key and claims send
    /// none, since they free nothing.
    fn subscribe(&self, env: &str) -> Option<BoxStream<'static, Notification>> {
        Some(self.shared.hub.subscribe(env))
    }
}

/// What a task takes on the heap, roughly: its struct plus its fields as JSON.
fn heap_estimate(task: &Task) -> u64 {
    let json = serde_json::to_vec(task).map(|v| v.len()).unwrap_or(0);
    u64::try_from(std::mem::size_of::<Task>() + json).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;

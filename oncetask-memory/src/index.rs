//! The documents and their indexes.
//!
//! Everything here is synchronous and runs under the store's one lock. The
//! invariant every write keeps: an [`Entry::Task`] is present in exactly the
//! index entries [`State::index_catalog`] and [`State::index_state`] derive
//! from it, and an [`Entry::Raw`] only in its kind's `undecodable` map.

use std::collections::btree_map;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use oncetask_core::Task;
use oncetask_core::TaskStatus;
use oncetask_core::store::{
    ClaimMode, ClaimOrder, FinishedQuery, StatusCounts, TaskCursor, Undecodable,
};

use crate::bands::Bands;
use crate::doc::{Entry, HashMap, Id};

/// Creation order used by listings: `(created_at, id)`.
type CreatedKey = (DateTime<Utc>, Id);

/// Finish order used by pruners: status, tombstone or not, then
/// `(done_at, id)` ([`oncetask_core::store::FinishedQuery`]).
type FinishedKey = (TaskStatus, bool, DateTime<Utc>, Id);

/// All documents plus their indexes.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Every document by id (ids are global across environments).
    pub(crate) docs: HashMap<Id, Entry>,
    /// Indexes per environment.
    envs: HashMap<String, EnvIndex>,
}

#[derive(Debug, Default)]
struct EnvIndex {
    /// Every task of the env, for listings without a kind.
    created: BTreeSet<CreatedKey>,
    /// The tasks of each resource key (a task's key never changes), for
    /// listings by key.
    by_key: HashMap<String, BTreeSet<CreatedKey>>,
    /// Per kind.
    kinds: HashMap<String, KindIndex>,
}

#[derive(Debug, Default)]
struct KindIndex {
    /// Every task of the env/kind, for listings with a kind.
    created: BTreeSet<CreatedKey>,
    /// Not-done tasks, for claims and `next_due`.
    ready: Bands,
    /// Done tasks per status (a done task's status does not depend on `now`).
    done: BTreeMap<TaskStatus, u64>,
    /// Done tasks in finish order, for pruners.
    finished: BTreeSet<FinishedKey>,
    /// Undecodable documents: id -> reason.
    undecodable: BTreeMap<String, String>,
}

impl KindIndex {
    fn is_empty(&self) -> bool {
        self.created.is_empty() && self.undecodable.is_empty()
    }
}

/// The status of a done task; it never depends on the time passed in.
fn done_status(task: &Task) -> TaskStatus {
    task.status(DateTime::<Utc>::MIN_UTC)
}

/// Adds the state-dependent entries of `task` to `envs`.
fn index_state(envs: &mut HashMap<String, EnvIndex>, id: &Id, task: &Task) {
    // One lookup of each name when the kind is known (every write but the
    // first of a kind); the names are allocated only for a new kind.
    let kind_index = match envs
        .get_mut(&task.env)
        .and_then(|e| e.kinds.get_mut(&task.kind))
    {
        Some(kind_index) => kind_index,
        None => envs
            .entry(task.env.clone())
            .or_default()
            .kinds
            .entry(task.kind.clone())
            .or_default(),
    };
    if let Some(done_at) = task.done_at {
        let status = done_status(task);
        *kind_index.done.entry(status).or_insert(0) += 1;
        kind_index
            .finished
            .insert((status, task.is_tombstone(), done_at, Arc::clone(id)));
    } else {
        kind_index.ready.add_open(id, task);
    }
}

/// Removes the state-dependent entries of `task` from `envs`.
fn unindex_state(envs: &mut HashMap<String, EnvIndex>, id: &Id, task: &Task) {
    let Some(kind_index) = envs
        .get_mut(&task.env)
        .and_then(|e| e.kinds.get_mut(&task.kind))
    else {
        return;
    };
    let Some(done_at) = task.done_at else {
        kind_index.ready.remove_open(id, task);
        return;
    };
    let status = done_status(task);
    kind_index
        .finished
        .remove(&(status, task.is_tombstone(), done_at, Arc::clone(id)));
    if let btree_map::Entry::Occupied(mut e) = kind_index.done.entry(status) {
        if *e.get() <= 1 {
            e.remove();
        } else {
            *e.get_mut() -= 1;
        }
    }
}

impl State {
    fn kind_index(&self, env: &str, kind: &str) -> Option<&KindIndex> {
        self.envs.get(env).and_then(|e| e.kinds.get(kind))
    }

    fn kind_index_mut(&mut self, env: &str, kind: &str) -> &mut KindIndex {
        self.envs
            .entry(env.to_owned())
            .or_default()
            .kinds
            .entry(kind.to_owned())
            .or_default()
    }

    /// Drops the env/kind indexes once nothing of them is left.
    fn prune(&mut self, env: &str, kind: &str) {
        let Some(env_index) = self.envs.get_mut(env) else {
            return;
        };
        if env_index.kinds.get(kind).is_some_and(KindIndex::is_empty) {
            env_index.kinds.remove(kind);
        }
        if env_index.kinds.is_empty() && env_index.created.is_empty() {
            self.envs.remove(env);
        }
    }

    /// Adds the listing entries of `task` (they depend only on its env,
    /// kind, creation time and id).
    fn index_catalog(&mut self, id: &Id, task: &Task) {
        let env_index = self.envs.entry_ref(task.env.as_str()).or_default();
        env_index.created.insert((task.created_at, Arc::clone(id)));
        if let Some(key) = &task.resource_key {
            env_index
                .by_key
                .entry_ref(key.as_str())
                .or_default()
                .insert((task.created_at, Arc::clone(id)));
        }
        env_index
            .kinds
            .entry_ref(task.kind.as_str())
            .or_default()
            .created
            .insert((task.created_at, Arc::clone(id)));
    }

    fn unindex_catalog(&mut self, id: &Id, task: &Task) {
        let Some(env_index) = self.envs.get_mut(task.env.as_str()) else {
            return;
        };
        let key = (task.created_at, Arc::clone(id));
        env_index.created.remove(&key);
        if let Some(resource_key) = &task.resource_key
            && let Some(tasks) = env_index.by_key.get_mut(resource_key.as_str())
        {
            tasks.remove(&key);
            if tasks.is_empty() {
                env_index.by_key.remove(resource_key.as_str());
            }
        }
        if let Some(kind_index) = env_index.kinds.get_mut(task.kind.as_str()) {
            kind_index.created.remove(&key);
        }
    }

    /// Changes the stored task `id` in place with `change`, which may
    /// change only what claims and swaps change (never the env, kind,
    /// creation time or id), moving its state entries; `change`'s answer,
    /// or `None` when `id` is not a task. No copy of the task is made.
    pub(crate) fn update<R>(&mut self, id: &str, change: impl FnOnce(&mut Task) -> R) -> Option<R> {
        let Some((id, Entry::Task(task))) = self.docs.get_key_value_mut(id) else {
            return None;
        };
        unindex_state(&mut self.envs, id, task);
        let answer = change(task);
        index_state(&mut self.envs, id, task);
        Some(answer)
    }

    /// Stores a new document under `id` (which must be absent).
    pub(crate) fn insert(&mut self, id: Id, entry: Entry) {
        match &entry {
            Entry::Task(task) => {
                self.index_catalog(&id, task);
                index_state(&mut self.envs, &id, task);
            }
            Entry::Raw(raw) => {
                self.kind_index_mut(&raw.env, &raw.kind)
                    .undecodable
                    .insert(id.to_string(), raw.reason.clone());
            }
        }
        self.docs.insert(id, entry);
    }

    /// Removes the document `id`, returning it.
    pub(crate) fn remove(&mut self, id: &str) -> Option<Entry> {
        let (id, entry) = self.docs.remove_entry(id)?;
        match &entry {
            Entry::Task(task) => {
                unindex_state(&mut self.envs, &id, task);
                self.unindex_catalog(&id, task);
            }
            Entry::Raw(raw) => {
                let kind_index = self
                    .envs
                    .get_mut(raw.env.as_str())
                    .and_then(|e| e.kinds.get_mut(raw.kind.as_str()));
                if let Some(kind_index) = kind_index {
                    kind_index.undecodable.remove(&*id);
                }
            }
        }
        self.prune(entry.env(), entry.kind());
        Some(entry)
    }

    /// Undecodable documents of an env/kind, by id.
    pub(crate) fn undecodable(&self, env: &str, kind: &str) -> Vec<Undecodable> {
        self.kind_index(env, kind)
            .map(|k| {
                k.undecodable
                    .iter()
                    .map(|(id, reason)| Undecodable {
                        id: id.clone(),
                        reason: reason.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The undecodable documents of `env`, by id, at most `limit`.
    pub(crate) fn undecodable_of_env(&self, env: &str, limit: usize) -> Vec<Undecodable> {
        let mut found: Vec<Undecodable> = self
            .envs
            .get(env)
            .into_iter()
            .flat_map(|e| e.kinds.values())
            .flat_map(|k| k.undecodable.iter())
            .map(|(id, reason)| Undecodable {
                id: id.clone(),
                reason: reason.clone(),
            })
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.truncate(limit);
        found
    }

    /// Ids of the tasks a claim at `now` leases, in the order it returns them.
    pub(crate) fn select(
        &mut self,
        env: &str,
        kind: &str,
        now: DateTime<Utc>,
        mode: ClaimMode,
        order: ClaimOrder,
    ) -> Vec<Id> {
        let Some(kind_index) = self.envs.get_mut(env).and_then(|e| e.kinds.get_mut(kind)) else {
            return Vec::new();
        };
        kind_index.ready.advance(now);
        kind_index.ready.select(&self.docs, now, mode, order)
    }

    /// The earliest `due_at()` strictly after `after` among not-done tasks of env/kind.
    pub(crate) fn next_due(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.kind_index(env, kind)?.ready.next_due(after)
    }

    /// Tasks of `env` (and `kind`) in `(created_at, id)` order, starting
    /// past `after` (a range of the index: the tasks before it are not visited).
    pub(crate) fn by_creation<'a>(
        &'a self,
        env: &str,
        kind: Option<&str>,
        resource_key: Option<&str>,
        after: Option<&TaskCursor>,
    ) -> Box<dyn Iterator<Item = &'a Task> + 'a> {
        let Some(env_index) = self.envs.get(env) else {
            return Box::new(std::iter::empty());
        };
        // A key's tasks are few next to a kind's; the caller checks the
        // kind on them.
        let keys = match (resource_key, kind) {
            (Some(key), _) => match env_index.by_key.get(key) {
                Some(tasks) => tasks,
                None => return Box::new(std::iter::empty()),
            },
            (None, None) => &env_index.created,
            (None, Some(kind)) => match env_index.kinds.get(kind) {
                Some(k) => &k.created,
                None => return Box::new(std::iter::empty()),
            },
        };
        let keys: Box<dyn Iterator<Item = &CreatedKey>> = match after {
            None => Box::new(keys.iter()),
            Some(c) => Box::new(keys.range((
                std::ops::Bound::Excluded((c.created_at, Id::from(c.id.as_str()))),
                std::ops::Bound::Unbounded,
            ))),
        };
        Box::new(keys.filter_map(|(_, id)| match self.docs.get(&**id) {
            Some(Entry::Task(t)) => Some(t),
            _ => None,
        }))
    }

    /// Finished tasks for a pruner: a range of the kind's finish-order index.
    pub(crate) fn finished(&self, query: &FinishedQuery) -> Vec<Task> {
        let Some(index) = self.kind_index(&query.env, &query.kind) else {
            return Vec::new();
        };
        let (status, tombstones) = (query.status, query.tombstones);
        let start = match &query.after {
            Some((at, id)) => {
                std::ops::Bound::Excluded((status, tombstones, *at, Id::from(id.as_str())))
            }
            None => std::ops::Bound::Included((
                status,
                tombstones,
                DateTime::<Utc>::MIN_UTC,
                Id::from(""),
            )),
        };
        index
            .finished
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|(s, t, done_at, _)| {
                *s == status && *t == tombstones && *done_at <= query.finished_by
            })
            .filter_map(|(_, _, _, id)| match self.docs.get(&**id) {
                Some(Entry::Task(task)) => Some(task.clone()),
                _ => None,
            })
            .take(query.limit)
            .collect()
    }

    /// Every task of `env`, in no order.
    pub(crate) fn tasks_of(&self, env: &str) -> impl Iterator<Item = &Task> {
        self.envs
            .get(env)
            .into_iter()
            .flat_map(|e| e.created.iter())
            .filter_map(|(_, id)| match self.docs.get(&**id) {
                Some(Entry::Task(task)) => Some(task),
                _ => None,
            })
    }

    /// The kinds with at least one task in `env`, sorted.
    pub(crate) fn kinds(&self, env: &str) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .envs
            .get(env)
            .map(|e| {
                e.kinds
                    .iter()
                    .filter(|(_, index)| !index.created.is_empty())
                    .map(|(kind, _)| kind.clone())
                    .collect()
            })
            .unwrap_or_default();
        kinds.sort_unstable();
        kinds
    }

    /// Counts tasks of `env` (and `kind`) by status at `now`: done tasks from
    /// their counters, not-done ones one by one; undecodable documents apart.
    pub(crate) fn count_by_status(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> StatusCounts {
        let mut counts = StatusCounts::new();
        let Some(env_index) = self.envs.get(env) else {
            return counts;
        };
        let kinds = env_index
            .kinds
            .iter()
            .filter(|(k, _)| kind.is_none_or(|want| want == k.as_str()));
        for (_, index) in kinds {
            for (status, n) in &index.done {
                counts.add(*status, *n);
            }
            counts.undecodable += u64::try_from(index.undecodable.len()).unwrap_or(u64::MAX);
            for task in index.ready.open_tasks(&self.docs) {
                *counts.entry(task.status(now)).or_insert(0) += 1;
            }
        }
        counts
    }
}

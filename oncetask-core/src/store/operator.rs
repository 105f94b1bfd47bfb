//! What operators look at besides task listings: the recurrence
//! generators, the queues of the resource keys, and the stored documents
//! that are not tasks ([`Store::find_generators`],
//! [`Store::open_resource_keys`], [`Store::find_undecodable`]), with the
//! default implementations a backend without a cheaper query keeps.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Store, TaskCursor, TaskFilter};
use crate::error::StoreError;
use crate::status::TaskStatus;
use crate::task::Task;

/// Most open tasks [`key_queues_by_listing`] reads.
pub const KEY_QUEUE_SCAN: usize = 5_000;

/// Tasks per [`Store::find`] call of the default implementations.
const SCAN_PAGE: usize = 500;

/// The open (not done) tasks of one resource key
/// ([`Store::open_resource_keys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyQueue {
    /// The resource key.
    pub resource_key: String,
    /// Open tasks with this key.
    pub open: u64,
    /// Of those, the ones leased at the time asked for.
    pub leased: u64,
    /// The kinds of those tasks, sorted.
    pub kinds: Vec<String>,
    /// When the oldest of them was created.
    pub oldest_created_at: DateTime<Utc>,
}

/// The busiest resource keys of an environment
/// ([`Store::open_resource_keys`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyQueues {
    /// Most open tasks first, then by key.
    pub keys: Vec<KeyQueue>,
    /// False when the figures come from only part of the open tasks (the
    /// default reads at most [`KEY_QUEUE_SCAN`] of them).
    pub complete: bool,
}

impl KeyQueue {
    /// A key's queue, as a backend counted it.
    pub fn new(
        resource_key: String,
        open: u64,
        leased: u64,
        kinds: Vec<String>,
        oldest_created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            resource_key,
            open,
            leased,
            kinds,
            oldest_created_at,
        }
    }
}

impl KeyQueues {
    /// Queues as a backend found them (busiest first).
    pub fn new(keys: Vec<KeyQueue>, complete: bool) -> Self {
        Self { keys, complete }
    }

    /// Queues from `open` tasks (those without a key are left out),
    /// busiest first, at most `limit`; `complete` says whether `open` was
    /// every open task.
    pub fn from_tasks<'a>(
        open: impl IntoIterator<Item = &'a Task>,
        now: DateTime<Utc>,
        limit: usize,
        complete: bool,
    ) -> Self {
        let mut by_key: BTreeMap<&str, KeyQueue> = BTreeMap::new();
        for task in open {
            let Some(key) = task.resource_key.as_deref() else {
                continue;
            };
            let queue = by_key.entry(key).or_insert_with(|| KeyQueue {
                resource_key: key.to_owned(),
                open: 0,
                leased: 0,
                kinds: Vec::new(),
                oldest_created_at: task.created_at,
            });
            queue.open += 1;
            if task.status(now) == TaskStatus::Leased {
                queue.leased += 1;
            }
            if let Err(at) = queue.kinds.binary_search(&task.kind) {
                queue.kinds.insert(at, task.kind.clone());
            }
            queue.oldest_created_at = queue.oldest_created_at.min(task.created_at);
        }
        let mut keys: Vec<KeyQueue> = by_key.into_values().collect();
        keys.sort_by(|a, b| {
            b.open
                .cmp(&a.open)
                .then_with(|| a.resource_key.cmp(&b.resource_key))
        });
        keys.truncate(limit);
        Self { keys, complete }
    }
}

/// [`Store::find_generators`] from listings: every task of `env`, in pages
/// of [`Store::find`], keeping the generators. Reads the whole environment,
/// so backends with an index on recurrence override it.
pub async fn generators_by_listing<S: Store + ?Sized>(
    store: &S,
    env: &str,
    limit: usize,
) -> Result<Vec<Task>, StoreError> {
    let first = TaskFilter::env(env, DateTime::<Utc>::UNIX_EPOCH).limit(SCAN_PAGE);
    let mut filter = first.clone();
    let mut generators = Vec::new();
    loop {
        let page = store.find(&filter).await?;
        let next = page.last().map(TaskCursor::of);
        let full = page.len() >= SCAN_PAGE;
        generators.extend(page.into_iter().filter(Task::is_generator));
        match next {
            Some(cursor) if full && generators.len() < limit => {
                filter = first.clone().after(cursor);
            }
            _ => break,
        }
    }
    generators.truncate(limit);
    Ok(generators)
}

/// [`Store::open_resource_keys`] from listings: the first
/// [`KEY_QUEUE_SCAN`] open tasks of `env` (and `kind`) in creation order,
/// grouped by key; [`KeyQueues::complete`] is false if there were more.
pub async fn key_queues_by_listing<S: Store + ?Sized>(
    store: &S,
    env: &str,
    kind: Option<&str>,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<KeyQueues, StoreError> {
    let mut first = TaskFilter::env(env, now).not_done().limit(SCAN_PAGE);
    first.kind = kind.map(str::to_owned);
    let mut filter = first.clone();
    let mut open = Vec::new();
    let complete = loop {
        let page = store.find(&filter).await?;
        let next = page.last().map(TaskCursor::of);
        let full = page.len() >= SCAN_PAGE;
        open.extend(page);
        match next {
            Some(cursor) if full && open.len() < KEY_QUEUE_SCAN => {
                filter = first.clone().after(cursor);
            }
            Some(_) if full => break false,
            _ => break true,
        }
    };
    Ok(KeyQueues::from_tasks(&open, now, limit, complete))
}

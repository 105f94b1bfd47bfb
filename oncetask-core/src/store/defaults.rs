//! The default implementations of [`Store::kinds`], [`Store::inspect`],
//! [`Store::find_finished`] and [`Store::storage_stats`], built from the
//! other store methods; a backend that can answer one with a cheaper query
//! overrides it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::{FinishedQuery, StorageStats, Store, TaskFilter};
use crate::error::StoreError;
use crate::inspect::{KindStats, QueueStats};
use crate::status::TaskStatus;
use crate::task::Task;

/// [`Store::kinds`] from a listing: one [`Store::find`] over every task of
/// `env`, keeping the distinct kinds. Reads every task of the environment,
/// so backends that can ask for distinct kinds directly override it.
pub async fn kinds_by_listing<S: Store + ?Sized>(
    store: &S,
    env: &str,
) -> Result<Vec<String>, StoreError> {
    // No status filter, so the filter's time is never read.
    let all = TaskFilter::env(env, DateTime::<Utc>::UNIX_EPOCH);
    let kinds: BTreeSet<String> = store
        .find(&all)
        .await?
        .into_iter()
        .map(|t| t.kind)
        .collect();
    Ok(kinds.into_iter().collect())
}

/// [`Store::inspect`] from the other store methods: [`Store::kinds`], then
/// per kind [`Store::count_by_status`] and [`Store::next_due`], and one
/// [`Store::find`] of the pending tasks of `env` for the oldest-pending
/// times.
///
/// Cost: 2 calls per kind plus 2, and the find returns every pending task
/// (a long backlog is read whole). Each figure is read on its own, so under
/// concurrent writes they are not one consistent snapshot (a task claimed
/// between two reads can show in neither or both); each is exact on its own.
pub async fn inspect_with_primitives<S: Store + ?Sized>(
    store: &S,
    env: &str,
    now: DateTime<Utc>,
) -> Result<QueueStats, StoreError> {
    let mut kinds: BTreeMap<String, KindStats> = BTreeMap::new();
    for kind in store.kinds(env).await? {
        let counts = store.count_by_status(env, Some(&kind), now).await?;
        let next_due = store.next_due(env, &kind, now).await?;
        kinds.insert(
            kind,
            KindStats {
                counts,
                oldest_pending_since: None,
                next_due,
            },
        );
    }
    let mut pending = TaskFilter::env(env, now);
    pending.not_done = true;
    pending.statuses = vec![TaskStatus::Pending];
    for task in store.find(&pending).await? {
        let since = task.ready_since();
        let stats = kinds.entry(task.kind).or_default();
        stats.oldest_pending_since = Some(match stats.oldest_pending_since {
            Some(oldest) => oldest.min(since),
            None => since,
        });
    }
    Ok(QueueStats {
        env: env.to_owned(),
        now,
        kinds,
    })
}

/// [`Store::find_finished`] from a listing: one [`Store::find`] of every
/// task of the kind with the query's status, filtered and sorted here.
/// Reads every such task, so backends override it with a query on the
/// finish time.
pub async fn finished_by_listing<S: Store + ?Sized>(
    store: &S,
    query: &FinishedQuery,
) -> Result<Vec<Task>, StoreError> {
    let filter = TaskFilter::env(&query.env, query.finished_by)
        .kind(&query.kind)
        .status(query.status);
    let mut tasks: Vec<Task> = store
        .find(&filter)
        .await?
        .into_iter()
        .filter(|t| query.matches(t))
        .collect();
    tasks.sort_by(|a, b| (a.done_at, &a.id).cmp(&(b.done_at, &b.id)));
    tasks.truncate(query.limit);
    Ok(tasks)
}

/// [`Store::storage_stats`] from a listing: every task of `env` is read
/// and counted by status (tombstones apart), with no sizes.
pub async fn storage_by_listing<S: Store + ?Sized>(
    store: &S,
    env: &str,
    now: DateTime<Utc>,
) -> Result<StorageStats, StoreError> {
    let mut stats = StorageStats::new("documents counted by listing every task; no sizes");
    for task in store.find(&TaskFilter::env(env, now)).await? {
        if task.is_tombstone() {
            stats.tombstones.add(None);
        } else {
            stats
                .by_status
                .entry(task.status(now))
                .or_default()
                .add(None);
        }
    }
    Ok(stats)
}

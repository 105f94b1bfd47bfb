//! Priority bands: the not-done tasks of one env/kind split by
//! [`Task::priority`], one [`ReadyIndex`] per priority present.
//!
//! A claim in priority order walks the bands from the highest priority
//! down, each in claim order; a claim in the oldest order merges the bands'
//! walks by claim order. Resource-key exclusion spans the bands: a key busy
//! in one band (a live lease of any of its tasks) blocks its tasks in every
//! band, and a claim takes at most one task per key whatever their bands.
//! With a single band (every task at one priority, the usual case) a claim
//! is exactly that band's own.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use oncetask_core::Task;
use oncetask_core::store::{ClaimMode, ClaimOrder};

use crate::doc::{Entry, HashMap, Id};
use crate::ready::ReadyIndex;

/// The bands of one env/kind, highest priority first.
#[derive(Debug, Default)]
pub(crate) struct Bands {
    bands: BTreeMap<Reverse<i8>, ReadyIndex>,
}

impl Bands {
    /// Adds a not-done task to its priority's band.
    pub(crate) fn add_open(&mut self, id: &Id, task: &Task) {
        self.bands
            .entry(Reverse(task.priority))
            .or_default()
            .add_open(id, task);
    }

    /// Removes a not-done task from its priority's band.
    pub(crate) fn remove_open(&mut self, id: &Id, task: &Task) {
        let band = Reverse(task.priority);
        if let Some(index) = self.bands.get_mut(&band) {
            index.remove_open(id, task);
            if index.is_empty() {
                self.bands.remove(&band);
            }
        }
    }

    /// Moves every band's claim horizon to `now`.
    pub(crate) fn advance(&mut self, now: DateTime<Utc>) {
        for index in self.bands.values_mut() {
            index.advance(now);
        }
    }

    /// The earliest `due_at()` strictly after `after`, over every band.
    pub(crate) fn next_due(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.bands.values().filter_map(|b| b.next_due(after)).min()
    }

    /// Every not-done task.
    pub(crate) fn open_tasks<'a>(
        &'a self,
        docs: &'a HashMap<Id, Entry>,
    ) -> impl Iterator<Item = &'a Task> {
        self.bands.values().flat_map(move |b| b.open_tasks(docs))
    }

    /// Ids of the tasks a claim at `now` leases, in the order it returns
    /// them. Call [`Bands::advance`] with `now` first.
    pub(crate) fn select(
        &self,
        docs: &HashMap<Id, Entry>,
        now: DateTime<Utc>,
        mode: ClaimMode,
        order: ClaimOrder,
    ) -> Vec<Id> {
        if self.bands.len() <= 1 {
            return match self.bands.values().next() {
                Some(only) => only.select(docs, now, mode),
                None => Vec::new(),
            };
        }
        let candidates = self.candidates(docs, now, order);
        match mode {
            ClaimMode::Single { limit } => self.select_single(candidates, now, limit),
            ClaimMode::ResourceGroup { max_group } => {
                self.select_group(docs, candidates, now, max_group)
            }
        }
    }

    /// The ready tasks of every band in the claim's order (keys not checked).
    fn candidates<'a>(
        &'a self,
        docs: &'a HashMap<Id, Entry>,
        now: DateTime<Utc>,
        order: ClaimOrder,
    ) -> Box<dyn Iterator<Item = (&'a Id, &'a Task)> + 'a> {
        let walks = self.bands.values().map(move |b| b.walk(docs, now));
        match order {
            ClaimOrder::Oldest => Box::new(Merged {
                walks: walks.map(Iterator::peekable).collect(),
            }),
            // Bands iterate highest priority first; so does any order a
            // later version adds, until it says otherwise.
            _ => Box::new(walks.flatten()),
        }
    }

    fn key_is_busy(&self, key: &str, now: DateTime<Utc>) -> bool {
        self.bands.values().any(|b| b.key_is_busy(key, now))
    }

    fn select_single<'a>(
        &self,
        candidates: impl Iterator<Item = (&'a Id, &'a Task)>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Vec<Id> {
        let mut picked = Vec::new();
        let mut keys_taken: HashSet<&str> = HashSet::new();
        for (id, task) in candidates {
            if picked.len() >= limit {
                break;
            }
            if let Some(key) = task.resource_key.as_deref() {
                if keys_taken.contains(key) || self.key_is_busy(key, now) {
                    continue;
                }
                keys_taken.insert(key);
            }
            picked.push(Arc::clone(id));
        }
        picked
    }

    fn select_group<'a>(
        &self,
        docs: &HashMap<Id, Entry>,
        candidates: impl Iterator<Item = (&'a Id, &'a Task)>,
        now: DateTime<Utc>,
        max_group: usize,
    ) -> Vec<Id> {
        if max_group == 0 {
            return Vec::new();
        }
        for (id, task) in candidates {
            match task.resource_key.as_deref() {
                None => return vec![Arc::clone(id)],
                Some(key) if self.key_is_busy(key, now) => continue,
                Some(key) => {
                    // The key's group spans the bands, in group order.
                    let mut group: Vec<_> = self
                        .bands
                        .values()
                        .flat_map(|b| b.ready_group_keys(docs, key, now, max_group))
                        .collect();
                    group.sort_unstable();
                    return group
                        .into_iter()
                        .take(max_group)
                        .map(|g| Arc::clone(&g.2))
                        .collect();
                }
            }
        }
        Vec::new()
    }
}

/// The bands' walks merged into one claim order.
struct Merged<I: Iterator> {
    walks: Vec<std::iter::Peekable<I>>,
}

impl<'a, I: Iterator<Item = (&'a Id, &'a Task)>> Iterator for Merged<I> {
    type Item = (&'a Id, &'a Task);

    fn next(&mut self) -> Option<Self::Item> {
        let mut first: Option<(usize, (_, _, _, &str))> = None;
        for (i, walk) in self.walks.iter_mut().enumerate() {
            if let Some(&(id, task)) = walk.peek() {
                let (lease, wait, created, _) = task.claim_order_key();
                let key = (lease, wait, created, &**id);
                if first.as_ref().is_none_or(|(_, best)| key < *best) {
                    first = Some((i, key));
                }
            }
        }
        let (i, _) = first?;
        self.walks[i].next()
    }
}

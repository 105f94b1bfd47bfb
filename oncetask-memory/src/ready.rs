//! The per env/kind index behind claims: which not-done tasks may be ready,
//! in claim order, without walking tasks whose resource key is busy.
//!
//! # Layout
//!
//! * `walk`: a set in [`Task::claim_order_key`] order holding every not-done
//!   task **without** a resource key, plus at most two *heads* per resource
//!   key: the key's first never-leased task and its first leased task (both
//!   in claim order). A claim never takes two tasks of one key, and a free
//!   key's first ready task is one of its heads (see [`Walk`]), so the other
//!   tasks of a key need not be in the walk.
//! * per key ([`KeyIndex`]): all its not-done tasks in claim order and in
//!   group order, and the multiset of their lease expiries.
//! * *parking*: a key whose latest lease is after `horizon` (the latest
//!   `now` any claim used) is busy for every claim at or before that time, so
//!   its heads leave `walk` and the key waits in `parked`, ordered by that
//!   lease. Each claim first moves the keys whose lease has expired back.
//!   A claim whose `now` is earlier than an earlier claim's (clocks of
//!   several workers) may meet a head whose key is busy at its `now` but not
//!   parked; it checks and skips it.
//!
//! # Cost
//!
//! Keeping the layout costs O(log n) per changed task. A claim costs
//! O((c + s + p + 1) log n): c tasks claimed, p keys unparked, s entries
//! skipped — a head of a key this claim already took (one per key), a head
//! busy but not parked (only when claims' clocks disagree), and expired
//! leases that still wait (`wait_until` after `now`; the core never produces
//! those).

use std::cmp::Reverse;
use std::collections::btree_set;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use oncetask_core::Task;
use oncetask_core::store::ClaimMode;

use crate::doc::{Entry, HashMap, Id};

/// Owned form of [`Task::claim_order_key`]: `(leased_until, wait_until, created_at, id)`.
///
/// `None` sorts before `Some`, so never-leased tasks come first (ordered by
/// `wait_until`, `None` first), then leased ones by lease expiry.
type OrderKey = (
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    Id,
);

/// Order of a resource-key group: `(wait_until, created_at, id)`, `None` first.
pub(crate) type GroupKey = (Option<DateTime<Utc>>, DateTime<Utc>, Id);

/// A multiset of instants: instant -> number of tasks.
type Instants = BTreeMap<DateTime<Utc>, usize>;

fn add_instant(set: &mut Instants, at: DateTime<Utc>) {
    *set.entry(at).or_insert(0) += 1;
}

fn remove_instant(set: &mut Instants, at: DateTime<Utc>) {
    if let std::collections::btree_map::Entry::Occupied(mut e) = set.entry(at) {
        if *e.get() <= 1 {
            e.remove();
        } else {
            *e.get_mut() -= 1;
        }
    }
}

/// The claim order key of `task`, stored under `id`.
fn order_key(id: &Id, task: &Task) -> OrderKey {
    let (leased, wait, created, _) = task.claim_order_key();
    (leased, wait, created, Arc::clone(id))
}

/// The smallest key of the leased part of a claim order.
fn first_leased() -> OrderKey {
    (
        Some(DateTime::<Utc>::MIN_UTC),
        None,
        DateTime::<Utc>::MIN_UTC,
        Id::from(""),
    )
}

fn waits(key: &OrderKey, now: DateTime<Utc>) -> bool {
    key.1.is_some_and(|w| w > now)
}

/// The task with this id if it is ready at `now`.
fn ready_task<'a>(docs: &'a HashMap<Id, Entry>, id: &str, now: DateTime<Utc>) -> Option<&'a Task> {
    match docs.get(id) {
        Some(Entry::Task(t)) if t.is_ready_at(now) => Some(t),
        _ => None,
    }
}

/// The not-done tasks of one resource key (of one env/kind).
#[derive(Debug, Default)]
struct KeyIndex {
    /// In claim order.
    open: BTreeSet<OrderKey>,
    /// In group order.
    group: BTreeSet<GroupKey>,
    /// Lease expiries of the tasks that have one.
    leases: Instants,
    /// `Some(latest lease)` while the key is parked (its heads are out of `walk`).
    parked_until: Option<DateTime<Utc>>,
}

impl KeyIndex {
    fn latest_lease(&self) -> Option<DateTime<Utc>> {
        self.leases.last_key_value().map(|(l, _)| *l)
    }

    /// True when some task of the key holds a lease alive at `now`.
    fn is_busy_at(&self, now: DateTime<Utc>) -> bool {
        self.latest_lease().is_some_and(|l| l > now)
    }

    /// The first never-leased and the first leased task, in claim order.
    fn heads(&self) -> impl Iterator<Item = &OrderKey> {
        let never_leased = self.open.first().filter(|k| k.0.is_none());
        let leased = self.open.range(first_leased()..).next();
        never_leased.into_iter().chain(leased)
    }
}

/// The not-done tasks of one env/kind, indexed for claims and `next_due`.
#[derive(Debug)]
pub(crate) struct ReadyIndex {
    /// Keyless not-done tasks and key heads, in claim order.
    walk: BTreeSet<OrderKey>,
    /// Per resource key.
    keys: HashMap<String, KeyIndex>,
    /// Parked keys by their latest lease.
    parked: BTreeSet<(DateTime<Utc>, String)>,
    /// The latest `now` of any claim: keys leased beyond it are parked.
    horizon: DateTime<Utc>,
    /// `due_at()` of every not-done task.
    due: Instants,
}

impl Default for ReadyIndex {
    fn default() -> Self {
        Self {
            walk: BTreeSet::new(),
            keys: HashMap::new(),
            parked: BTreeSet::new(),
            horizon: DateTime::<Utc>::MIN_UTC,
            due: Instants::new(),
        }
    }
}

impl ReadyIndex {
    /// The earliest `due_at()` strictly after `after`.
    pub(crate) fn next_due(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.due
            .range((Excluded(after), Unbounded))
            .next()
            .map(|(at, _)| *at)
    }

    /// Takes the key out of `walk` / `parked` before its tasks change.
    fn detach_key(&mut self, key: &str) {
        let Some(index) = self.keys.get_mut(key) else {
            return;
        };
        match index.parked_until.take() {
            Some(until) => {
                self.parked.remove(&(until, key.to_owned()));
            }
            None => {
                for head in index.heads() {
                    self.walk.remove(head);
                }
            }
        }
    }

    /// Puts the key back into `walk`, or parks it, after its tasks changed.
    fn attach_key(&mut self, key: &str) {
        let Some(index) = self.keys.get_mut(key) else {
            return;
        };
        if index.open.is_empty() {
            self.keys.remove(key);
            return;
        }
        match index.latest_lease() {
            Some(until) if until > self.horizon => {
                index.parked_until = Some(until);
                self.parked.insert((until, key.to_owned()));
            }
            _ => {
                for head in index.heads() {
                    self.walk.insert(head.clone());
                }
            }
        }
    }

    /// Moves the claim horizon to `now`, unparking keys whose leases expired.
    pub(crate) fn advance(&mut self, now: DateTime<Utc>) {
        if now <= self.horizon {
            return;
        }
        self.horizon = now;
        while self.parked.first().is_some_and(|(until, _)| *until <= now) {
            let Some((_, key)) = self.parked.pop_first() else {
                break;
            };
            if let Some(index) = self.keys.get_mut(&key) {
                index.parked_until = None;
                for head in index.heads() {
                    self.walk.insert(head.clone());
                }
            }
        }
    }

    /// True when no not-done task is indexed.
    pub(crate) fn is_empty(&self) -> bool {
        // Keyless tasks are in `walk`; keyed ones in `keys` (parked or not).
        self.walk.is_empty() && self.keys.is_empty()
    }

    /// Adds a not-done task.
    pub(crate) fn add_open(&mut self, id: &Id, task: &Task) {
        if let Some(due) = task.due_at() {
            add_instant(&mut self.due, due);
        }
        let Some(key) = task.resource_key.as_deref() else {
            self.walk.insert(order_key(id, task));
            return;
        };
        self.detach_key(key);
        let index = self.keys.entry(key.to_owned()).or_default();
        index.open.insert(order_key(id, task));
        index
            .group
            .insert((task.wait_until, task.created_at, Arc::clone(id)));
        if let Some(lease) = task.leased_until {
            add_instant(&mut index.leases, lease);
        }
        self.attach_key(key);
    }

    /// Removes a not-done task.
    pub(crate) fn remove_open(&mut self, id: &Id, task: &Task) {
        if let Some(due) = task.due_at() {
            remove_instant(&mut self.due, due);
        }
        let Some(key) = task.resource_key.as_deref() else {
            self.walk.remove(&order_key(id, task));
            return;
        };
        self.detach_key(key);
        if let Some(index) = self.keys.get_mut(key) {
            index.open.remove(&order_key(id, task));
            index
                .group
                .remove(&(task.wait_until, task.created_at, Arc::clone(id)));
            if let Some(lease) = task.leased_until {
                remove_instant(&mut index.leases, lease);
            }
        }
        self.attach_key(key);
    }

    /// Every not-done task.
    pub(crate) fn open_tasks<'a>(
        &'a self,
        docs: &'a HashMap<Id, Entry>,
    ) -> impl Iterator<Item = &'a Task> {
        let task = |id: &str| match docs.get(id) {
            Some(Entry::Task(t)) => Some(t),
            _ => None,
        };
        // Keyless tasks are the walk entries that are no key's head.
        let keyless = self
            .walk
            .iter()
            .filter_map(move |k| task(&k.3))
            .filter(|t| t.resource_key.is_none());
        let keyed = self
            .keys
            .values()
            .flat_map(|k| k.open.iter())
            .filter_map(move |k| task(&k.3));
        keyless.chain(keyed)
    }

    pub(crate) fn key_is_busy(&self, key: &str, now: DateTime<Utc>) -> bool {
        self.keys.get(key).is_some_and(|k| k.is_busy_at(now))
    }

    /// Ids of the tasks a claim at `now` leases, in the order it returns them.
    /// Call [`ReadyIndex::advance`] with `now` first.
    pub(crate) fn select(
        &self,
        docs: &HashMap<Id, Entry>,
        now: DateTime<Utc>,
        mode: ClaimMode,
    ) -> Vec<Id> {
        match mode {
            ClaimMode::Single { limit } => self.select_single(docs, now, limit),
            ClaimMode::ResourceGroup { max_group } => self.select_group(docs, now, max_group),
        }
    }

    fn select_single(
        &self,
        docs: &HashMap<Id, Entry>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Vec<Id> {
        let mut picked = Vec::new();
        if limit == 0 {
            return picked;
        }
        let mut keys_taken: HashSet<&str> = HashSet::new();
        for (id, task) in Walk::new(self, docs, now) {
            if let Some(key) = task.resource_key.as_deref() {
                if keys_taken.contains(key) || self.key_is_busy(key, now) {
                    continue;
                }
                keys_taken.insert(key);
            }
            picked.push(Arc::clone(id));
            if picked.len() >= limit {
                break;
            }
        }
        picked
    }

    fn select_group(
        &self,
        docs: &HashMap<Id, Entry>,
        now: DateTime<Utc>,
        max_group: usize,
    ) -> Vec<Id> {
        if max_group == 0 {
            return Vec::new();
        }
        for (id, task) in Walk::new(self, docs, now) {
            match task.resource_key.as_deref() {
                None => return vec![Arc::clone(id)],
                Some(key) if self.key_is_busy(key, now) => continue,
                Some(key) => return self.ready_group(docs, key, now, max_group),
            }
        }
        Vec::new()
    }

    /// The ready tasks of this index in claim order, keys not checked (see
    /// [`Walk`]). Call [`ReadyIndex::advance`] with `now` first.
    pub(crate) fn walk<'a>(
        &'a self,
        docs: &'a HashMap<Id, Entry>,
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = (&'a Id, &'a Task)> {
        Walk::new(self, docs, now)
    }

    /// [`ReadyIndex::ready_group`]'s entries, with their group order keys.
    pub(crate) fn ready_group_keys<'a>(
        &'a self,
        docs: &'a HashMap<Id, Entry>,
        key: &str,
        now: DateTime<Utc>,
        cap: usize,
    ) -> Vec<&'a GroupKey> {
        let Some(index) = self.keys.get(key) else {
            return Vec::new();
        };
        index
            .group
            .iter()
            .take_while(|g| g.0.is_none_or(|w| w <= now))
            .filter(|g| ready_task(docs, &g.2, now).is_some())
            .take(cap)
            .collect()
    }

    /// The ready tasks of one free key, in group order, at most `cap`.
    ///
    /// The key has no live lease, so each of its tasks is ready once its
    /// `wait_until` has passed: the walk stops at the first later one.
    fn ready_group(
        &self,
        docs: &HashMap<Id, Entry>,
        key: &str,
        now: DateTime<Utc>,
        cap: usize,
    ) -> Vec<Id> {
        let Some(index) = self.keys.get(key) else {
            return Vec::new();
        };
        index
            .group
            .iter()
            .take_while(|g| g.0.is_none_or(|w| w <= now))
            .filter(|g| ready_task(docs, &g.2, now).is_some())
            .take(cap)
            .map(|g| Arc::clone(&g.2))
            .collect()
    }
}

/// The ready tasks of `walk` at `now`, in claim order, stopping where no
/// later entry can be ready:
///
/// 1. the never-leased part (`leased_until` `None`) is ordered by
///    `wait_until`: it ends at the first `wait_until > now`. A key's
///    never-leased head is its first never-leased task, so when the head
///    waits, all of them do.
/// 2. the leased part is ordered by `leased_until`: it ends at the first live
///    lease. An entry here whose `wait_until` is after `now` is skipped; if it
///    is a free key's leased head, the key's next ready leased task (not in
///    `walk`) is found in the key's own order and merged in at its place.
///
/// Every yielded task is checked with [`Task::is_ready_at`]; it comes with
/// the id it is stored under.
struct Walk<'a> {
    index: &'a ReadyIndex,
    docs: &'a HashMap<Id, Entry>,
    now: DateTime<Utc>,
    never_leased: Option<btree_set::Iter<'a, OrderKey>>,
    leased: Option<btree_set::Range<'a, OrderKey>>,
    peeked: Option<&'a OrderKey>,
    deferred: BinaryHeap<Reverse<&'a OrderKey>>,
}

impl<'a> Walk<'a> {
    fn new(index: &'a ReadyIndex, docs: &'a HashMap<Id, Entry>, now: DateTime<Utc>) -> Self {
        Self {
            index,
            docs,
            now,
            never_leased: Some(index.walk.iter()),
            leased: Some(index.walk.range(first_leased()..)),
            peeked: None,
            deferred: BinaryHeap::new(),
        }
    }

    fn next_never_leased(&mut self) -> Option<&'a OrderKey> {
        let iter = self.never_leased.as_mut()?;
        match iter.next() {
            Some(k) if k.0.is_none() && !waits(k, self.now) => Some(k),
            _ => {
                self.never_leased = None;
                None
            }
        }
    }

    /// The next entry of the leased part with an expired lease, not consumed.
    fn peek_leased(&mut self) -> Option<&'a OrderKey> {
        if self.peeked.is_none() {
            let now = self.now;
            let next = self.leased.as_mut()?.next();
            match next {
                Some(k) if k.0.is_some_and(|l| l <= now) => self.peeked = Some(k),
                _ => self.leased = None,
            }
        }
        self.peeked
    }

    fn next_leased(&mut self) -> Option<&'a OrderKey> {
        loop {
            let head = self.peek_leased();
            let deferred_first = match (head, self.deferred.peek()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(h), Some(Reverse(d))) => *d < h,
            };
            if deferred_first {
                return self.deferred.pop().map(|Reverse(d)| d);
            }
            let entry = self.peeked.take()?;
            if !waits(entry, self.now) {
                return Some(entry);
            }
            self.defer_next_of_key(entry);
        }
    }

    /// `entry` is leased but still waits. If it is the leased head of a free
    /// key, queue that key's first ready leased task after it.
    fn defer_next_of_key(&mut self, entry: &'a OrderKey) {
        let now = self.now;
        let key = match self.docs.get(&entry.3) {
            Some(Entry::Task(t)) => t.resource_key.as_deref(),
            _ => None,
        };
        let Some(index) = key.and_then(|k| self.index.keys.get(k)) else {
            return;
        };
        if index.is_busy_at(now) {
            return;
        }
        let next = index
            .open
            .range((Excluded(entry), Unbounded))
            .take_while(|k| k.0.is_some_and(|l| l <= now))
            .find(|k| !waits(k, now));
        if let Some(next) = next {
            self.deferred.push(Reverse(next));
        }
    }
}

impl<'a> Iterator for Walk<'a> {
    /// The task and the id it is stored under.
    type Item = (&'a Id, &'a Task);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let entry = match self.next_never_leased() {
                Some(entry) => entry,
                None => self.next_leased()?,
            };
            if let Some(task) = ready_task(self.docs, &entry.3, self.now) {
                return Some((&entry.3, task));
            }
        }
    }
}

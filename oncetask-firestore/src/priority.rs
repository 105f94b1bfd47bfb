//! Claims by priority without a query on `priority`.
//!
//! A Firestore query that filters or orders on a field leaves out every
//! document without it, and `priority` is written only when it is not 0
//! (the Go package never writes it): a query ordered by priority would skip
//! every Go task and every Rust task at the default. So the ready query
//! never names the field. A claim in
//! [`ClaimOrder::Priority`](oncetask_core::store::ClaimOrder::Priority)
//! reads ready tasks in the claim order instead and ranks what it read on
//! the client: higher priority first, ties in claim order (a stable sort).
//! How much it reads decides how far priority reaches:
//!
//! * While the store knows that the kind holds prioritized tasks, the
//!   claim's first page reads the **window**: the `max(limit, window)`
//!   oldest ready tasks (window [`DEFAULT_PRIORITY_WINDOW`], 50, or
//!   [`FirestoreStore::with_priority_window`]). The store knows it for
//!   [`PRIORITY_MEMORY`] (10 minutes) after it created or changed a
//!   not-done task of the env and kind with a priority other than 0, after
//!   one of its claims read one, or after a listener of its
//!   ([`Store::subscribe`](oncetask_core::Store::subscribe)) heard of one:
//!   stores announce the kinds they wrote prioritized tasks of in their
//!   wake-up signals, and with
//!   [`Wakeups::TaskChanges`](crate::Wakeups::TaskChanges) the task
//!   documents themselves tell.
//! * Otherwise the first page reads `limit` tasks, as it always did (a kind
//!   whose tasks are all at priority 0 costs exactly what it did), and
//!   reads on to the window when those hold a prioritized task.
//!
//! So priority holds within the window of the oldest ready tasks: a task of
//! any priority beyond it waits until it enters the window, as claims take
//! the tasks ahead of it (the oldest order, every 10th claim of a manager
//! by default, takes the oldest). Within the window the rules of the other
//! backends hold: busy resource keys are skipped, a single claim takes at
//! most one task per key (its highest-ranked), and a group claim's key is
//! that of the first candidate in ranked order (its group then comes in
//! group order, whatever the priorities). Pages read after the first (only
//! while busy keys or undecodable documents keep the claim short) are
//! ranked each on its own. [`ClaimOrder::Oldest`](oncetask_core::store::ClaimOrder::Oldest)
//! claims read and take in claim order alone, as before. Go workers ignore
//! priority altogether.
//!
//! Cost: every document a query returns is billed, so while the kind is
//! known to hold prioritized tasks a priority claim reads up to the window
//! (as many ready tasks as there are, at most the window): up to
//! `window / limit` reads per task instead of 1.
//!
//! [`FirestoreStore::with_priority_window`]: crate::FirestoreStore::with_priority_window

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};

/// How many of the oldest ready tasks a priority claim ranks while the
/// kind is known to hold prioritized tasks (see the [module docs](self)).
pub const DEFAULT_PRIORITY_WINDOW: usize = 50;

/// How long a store keeps reading the window after it last saw a
/// prioritized task of the kind.
pub const PRIORITY_MEMORY: TimeDelta = TimeDelta::minutes(10);

/// Most (env, kind) pairs remembered (expired ones are dropped first).
const MAX_REMEMBERED: usize = 4096;

/// When a store last saw a prioritized (not-done) task of each (env, kind),
/// by the wall clock (shared by the store's clones and its listeners).
#[derive(Debug, Default)]
pub(crate) struct Priorities {
    seen: Mutex<HashMap<(String, String), DateTime<Utc>>>,
}

impl Priorities {
    fn seen_map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), DateTime<Utc>>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A prioritized task of (`env`, `kind`) was seen now.
    pub(crate) fn seen(&self, env: &str, kind: &str) {
        self.seen_at(env, kind, Utc::now());
    }

    /// A prioritized task of (`env`, `kind`) was seen (by this process or,
    /// as its wake-up signal says, by another) at `at`.
    pub(crate) fn seen_at(&self, env: &str, kind: &str, at: DateTime<Utc>) {
        let now = Utc::now();
        if at <= now - PRIORITY_MEMORY {
            return;
        }
        let mut seen = self.seen_map();
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, t| *t > now - PRIORITY_MEMORY);
        }
        let last = seen.entry((env.to_owned(), kind.to_owned())).or_insert(at);
        *last = (*last).max(at);
    }

    /// Whether a prioritized task of (`env`, `kind`) was seen within
    /// [`PRIORITY_MEMORY`].
    pub(crate) fn known(&self, env: &str, kind: &str) -> bool {
        self.seen_map()
            .get(&(env.to_owned(), kind.to_owned()))
            .is_some_and(|t| *t > Utc::now() - PRIORITY_MEMORY)
    }
}

/// Ranks `candidates` (in claim order) by priority, highest first; equal
/// priorities keep their order.
pub(crate) fn rank<T>(candidates: &mut [T], priority: impl Fn(&T) -> i8) {
    candidates.sort_by_key(|c| std::cmp::Reverse(priority(c)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_is_by_priority_then_the_given_order() {
        let mut c = vec![("a", 0), ("b", 5), ("c", -3), ("d", 5), ("e", 0)];
        rank(&mut c, |(_, p)| *p);
        let ids: Vec<&str> = c.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, ["b", "d", "a", "e", "c"]);
    }

    #[test]
    fn a_kind_is_known_prioritized_for_the_memory_after_the_last_sighting() {
        let book = Priorities::default();
        assert!(!book.known("E", "k"));
        book.seen("E", "k");
        assert!(book.known("E", "k"));
        assert!(!book.known("E", "other") && !book.known("F", "k"));
        // An old announcement neither marks nor shortens a newer one.
        let old = Utc::now() - PRIORITY_MEMORY - TimeDelta::seconds(1);
        book.seen_at("E", "stale", old);
        assert!(!book.known("E", "stale"));
        book.seen_at("E", "k", old);
        assert!(book.known("E", "k"));
        let recent = Utc::now() - PRIORITY_MEMORY + TimeDelta::minutes(1);
        book.seen_at("E", "late", recent);
        assert!(book.known("E", "late"));
    }
}

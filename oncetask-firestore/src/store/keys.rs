//! What a store remembers about the resource keys it leased, to spare
//! reads on its next claims of their kind:
//!
//! * a key it **holds** (a lease it wrote is live and has not ended) is
//!   busy: its own claims skip the key's tasks without reading the lock or
//!   asking for a live lease;
//! * a key it **freed** (every task it leased under its last lock write has
//!   ended: finished, retried, released or deleted) is free as long as the
//!   lock still names that lease's token, because every claim of a key
//!   rewrites its lock: the claim reads the lock as always, and skips the
//!   live-lease query when the token matches.
//!
//! Only a lease's end seen by this store frees a key, and what ends a lease
//! is decided on the lease token (every such write clears it), never on a
//! clock: a key must never look free while this store's lease on it may
//! still run. A lease ended by another process (a delete, or a Go write)
//! keeps the key held here until the lease's end time, and after it the
//! store asks Firestore as any claim does.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use oncetask_core::Task;

/// Most freed keys remembered (the oldest are forgotten first: a forgotten
/// key only costs its next claim one more read).
const MAX_FREED: usize = 4096;

/// (env, kind, key).
type KeyId = (String, String, String);

#[derive(Default)]
pub(super) struct KeyBook {
    state: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    /// The leases this store wrote under its last lock write of each key.
    held: HashMap<KeyId, Held>,
    /// Keys this store freed, with the token their lock names, and the
    /// order they were freed in (to forget the oldest).
    freed: HashMap<KeyId, String>,
    freed_order: Vec<KeyId>,
}

struct Held {
    token: String,
    /// Tasks leased under `token` whose lease has not ended.
    ids: HashSet<String>,
    /// The latest end of those leases: past it, the key is no longer known
    /// to be held (a lease that ran out, or ended by another process).
    until: DateTime<Utc>,
}

impl KeyBook {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A claim's commit leased `tasks` of `key` under a lock naming `token`.
    pub(super) fn leased(&self, key: &str, token: &str, tasks: &[Task]) {
        let Some(first) = tasks.first() else { return };
        let until = tasks
            .iter()
            .filter_map(|t| t.leased_until)
            .max()
            .unwrap_or_else(Utc::now);
        let id = (first.env.clone(), first.kind.clone(), key.to_owned());
        let mut book = self.book();
        book.freed.remove(&id);
        book.held.insert(
            id,
            Held {
                token: token.to_owned(),
                ids: tasks.iter().map(|t| t.id.clone()).collect(),
                until,
            },
        );
    }

    /// A swap of `task` was written: a heartbeat (or a cancel) keeps the
    /// lease and extends what is held; a write that ended the lease (a
    /// finish, a retry, a release: each clears the lease token) frees the
    /// key once no task leased under the same lock is left.
    pub(super) fn swapped(&self, task: &Task) {
        let Some(key) = &task.resource_key else {
            return;
        };
        let id = (task.env.clone(), task.kind.clone(), key.clone());
        if task.lease_token.is_some() {
            let mut book = self.book();
            if let (Some(held), Some(until)) = (book.held.get_mut(&id), task.leased_until)
                && held.ids.contains(&task.id)
            {
                held.until = held.until.max(until);
            }
            return;
        }
        self.ended(id, &task.id);
    }

    /// This store deleted `task` (as it was stored): its lease, if any, ended.
    pub(super) fn deleted(&self, task: &Task) {
        if let Some(key) = &task.resource_key {
            self.ended((task.env.clone(), task.kind.clone(), key.clone()), &task.id);
        }
    }

    fn ended(&self, id: KeyId, task_id: &str) {
        let mut book = self.book();
        let Some(held) = book.held.get_mut(&id) else {
            return;
        };
        if !held.ids.remove(task_id) || !held.ids.is_empty() {
            return;
        }
        let Some(held) = book.held.remove(&id) else {
            return;
        };
        if book.freed.len() >= MAX_FREED {
            let oldest = book.freed_order.remove(0);
            book.freed.remove(&oldest);
        }
        book.freed_order.retain(|k| *k != id);
        book.freed_order.push(id.clone());
        book.freed.insert(id, held.token);
    }

    /// Whether this store holds a live lease on a task of `key`.
    pub(super) fn holds(&self, env: &str, kind: &str, key: &str, now: DateTime<Utc>) -> bool {
        self.book()
            .held
            .get(&(env.to_owned(), kind.to_owned(), key.to_owned()))
            .is_some_and(|h| h.until > now)
    }

    /// Whether this store freed `key` and its lock still names the token
    /// of that lease (`lock_token`, as just read): then no lease on the key
    /// is live.
    pub(super) fn freed_with(
        &self,
        env: &str,
        kind: &str,
        key: &str,
        lock_token: Option<&str>,
    ) -> bool {
        let Some(lock_token) = lock_token else {
            return false;
        };
        self.book()
            .freed
            .get(&(env.to_owned(), kind.to_owned(), key.to_owned()))
            .is_some_and(|t| t == lock_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn leased(id: &str, key: &str, until: DateTime<Utc>) -> Task {
        let mut t = Task::new(id, "k", "E", Utc::now());
        t.resource_key = Some(key.into());
        t.leased_until = Some(until);
        t.lease_token = Some(oncetask_core::LeaseToken::generate());
        t
    }

    fn ended(task: &Task) -> Task {
        let mut t = task.clone();
        t.leased_until = None;
        t.lease_token = None;
        t
    }

    #[test]
    fn a_key_is_held_until_every_task_under_its_lock_ended() {
        let now = Utc::now();
        let book = KeyBook::default();
        let later = now + TimeDelta::minutes(1);
        let group = [leased("a", "r", later), leased("b", "r", later)];
        book.leased("r", "tok", &group);
        assert!(book.holds("E", "k", "r", now));
        assert!(
            !book.holds("E", "k", "r", later),
            "not past its leases' end"
        );
        book.swapped(&ended(&group[0]));
        assert!(book.holds("E", "k", "r", now), "b still runs");
        assert!(!book.freed_with("E", "k", "r", Some("tok")));
        book.deleted(&group[1]);
        assert!(!book.holds("E", "k", "r", now));
        assert!(book.freed_with("E", "k", "r", Some("tok")));
        assert!(
            !book.freed_with("E", "k", "r", Some("other")),
            "another claim rewrote the lock"
        );
        assert!(!book.freed_with("E", "k", "r", None));
        book.leased("r", "tok2", &[leased("c", "r", later)]);
        assert!(
            !book.freed_with("E", "k", "r", Some("tok")),
            "held again: not free"
        );
    }

    #[test]
    fn a_heartbeat_keeps_the_key_held_and_other_tasks_do_not_free_it() {
        let now = Utc::now();
        let book = KeyBook::default();
        book.leased(
            "r",
            "tok",
            &[leased("a", "r", now + TimeDelta::seconds(10))],
        );
        book.swapped(&leased("a", "r", now + TimeDelta::minutes(5)));
        assert!(book.holds("E", "k", "r", now + TimeDelta::minutes(1)));
        book.swapped(&ended(&leased("x", "r", now)));
        assert!(book.holds("E", "k", "r", now), "another task's end");
        assert!(!book.freed_with("E", "k", "r", Some("tok")));
    }
}

//! What a store remembers about the resource keys of its claims, to spare
//! reads and lock writes on its next claims of their kind:
//!
//! * a key it **holds** (a lease it wrote is live and has not ended) is
//!   busy: its own claims skip the key's tasks without reading the lock or
//!   asking for a live lease;
//! * a key it **freed** (every task it leased under its last lock write has
//!   ended: finished, retried, released or deleted) is free as long as the
//!   lock still names that lease's token, because every claim of a key
//!   that reads its lock rewrites it: the claim reads the lock as always,
//!   and skips the live-lease query when the token matches;
//! * a key whose lock it **keeps** (the lock it wrote names this store as
//!   `holder` until `heldUntil`, [`LOCK_HOLD`] after the claim) can be
//!   **drained**: other processes take a kept lock as busy without asking,
//!   so while the hold has [`DRAIN_MARGIN`] left and the key is freed, the
//!   store leases the key's next task with no lock read, no live-lease
//!   query and no lock write. A busy key's backlog then costs one lock
//!   write per `LOCK_HOLD - DRAIN_MARGIN` (3 s) instead of one per task,
//!   under Cloud Firestore's sustained rate of about one write per second
//!   to one document;
//! * a key **busy elsewhere** (another process keeps its lock, or the
//!   live-lease query found a lease) is skipped without reads until that
//!   hold ends, or for [`BUSY_MEMORY`] after a live lease was seen: a key
//!   freed meanwhile waits at most that long for this store, and its
//!   holder usually drains it first.
//!
//! Only a lease's end seen by this store frees a key, and what ends a lease
//! is decided on the lease token (every such write clears it), never on a
//! clock: a key must never look free while this store's lease on it may
//! still run. A lease ended by another process (a delete, or a Go write)
//! keeps the key held here until the lease's end time, and after it the
//! store asks Firestore as any claim does.
//!
//! Draining rests on time, as leases do: a drained lease is committed at
//! least `DRAIN_MARGIN / 2` before the hold ends (by this store's clock),
//! and another process rewrites the lock only once the hold has ended by
//! its clock, then asks for live leases first. Clocks of the processes
//! sharing a kind must agree to within a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use oncetask_core::Task;

/// Most freed keys remembered (the oldest are forgotten first: a forgotten
/// key only costs its next claim one more read).
const MAX_FREED: usize = 4096;

/// How long after a claim its lock write keeps the key for this store
/// (at most until the claim's lease ends).
pub(super) const LOCK_HOLD: TimeDelta = TimeDelta::seconds(5);

/// How much of a hold must be left for a drained lease: half of it bounds
/// the lease's commit, the other half absorbs clock skew.
pub(super) const DRAIN_MARGIN: TimeDelta = TimeDelta::seconds(2);

/// How long a key found with a live lease of another process is skipped
/// before this store asks again.
pub(super) const BUSY_MEMORY: TimeDelta = TimeDelta::seconds(1);

/// Most keys remembered as busy elsewhere or kept (expired entries are
/// dropped first).
const MAX_REMEMBERED: usize = 4096;

/// Most a contended claim waits before it reads (see [`Pace`]).
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

/// Most claim durations a contended claim's wait may span (see [`Pace`]).
const MAX_SPAN: u32 = 16;

/// (env, kind, key).
type KeyId = (String, String, String);

/// How claims of one (env, kind) in a store space themselves out while
/// they meet other processes' claims.
///
/// Concurrent claims read the same head of the ready order, so all but one
/// lose the same documents, and every lost document was a billed read. A
/// claim that lost a lease doubles `span` (up to [`MAX_SPAN`]); each claim
/// that lost none lowers it by one. Each claim first waits a random part of
/// `span` claim durations (`took`, a running mean of how long a claim's
/// read and writes take, the window in which two claims collide): claims
/// that met stop reading at the same moment, and a store that meets no one
/// waits nothing.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Pace {
    took: std::time::Duration,
    span: u32,
}

impl Pace {
    /// The longest wait before the next claim: 0 while claims meet no one.
    pub(super) fn window(&self) -> std::time::Duration {
        self.took.saturating_mul(self.span).min(MAX_BACKOFF)
    }
}

/// What claims of one (env, kind) in a store pass one at a time.
pub(super) type Gate = Arc<tokio::sync::Mutex<()>>;

pub(super) struct KeyBook {
    /// Names this store on the locks it writes (`holder`).
    holder: String,
    state: Mutex<Book>,
    /// One claim at a time per (env, kind) in this store, so what the
    /// book says of a key still holds when the claim commits.
    gates: Mutex<HashMap<(String, String), Gate>>,
    /// How claims of each (env, kind) space themselves out.
    paces: Mutex<HashMap<(String, String), Pace>>,
    /// Of the documents the claims of each (env, kind) read lately, the
    /// share they could take (see [`KeyBook::page_window`]).
    shares: Mutex<HashMap<(String, String), f64>>,
}

impl Default for KeyBook {
    fn default() -> Self {
        Self {
            holder: uuid::Uuid::new_v4().simple().to_string(),
            state: Mutex::default(),
            gates: Mutex::default(),
            paces: Mutex::default(),
            shares: Mutex::default(),
        }
    }
}

/// A lock this store wrote and keeps: its `heldUntil` and the token it names.
pub(super) struct Kept {
    pub(super) until: DateTime<Utc>,
    pub(super) token: String,
}

#[derive(Default)]
struct Book {
    /// The leases this store wrote under its last lock write of each key.
    held: HashMap<KeyId, Held>,
    /// Keys this store freed, with the token their lock names, and the
    /// order they were freed in (to forget the oldest).
    freed: HashMap<KeyId, String>,
    freed_order: Vec<KeyId>,
    /// Locks this store wrote, while their hold lasts.
    kept: HashMap<KeyId, Kept>,
    /// Keys another process keeps or leases, skipped until the time given.
    elsewhere: HashMap<KeyId, DateTime<Utc>>,
}

/// Drops expired entries once `map` is full.
fn prune<V>(map: &mut HashMap<KeyId, V>, now: DateTime<Utc>, until: impl Fn(&V) -> DateTime<Utc>) {
    if map.len() >= MAX_REMEMBERED {
        map.retain(|_, v| until(v) > now);
    }
    if map.len() >= MAX_REMEMBERED {
        map.clear();
    }
}

/// Drops what makes `id` look free (freed, kept): the next claim of the key
/// reads its lock and asks for a live lease.
fn forget(book: &mut Book, id: &KeyId) {
    book.freed.remove(id);
    book.freed_order.retain(|k| k != id);
    book.kept.remove(id);
}

impl Book {
    /// The lease of `task_id` on key `id` ended: the key is freed once no
    /// task leased under the same lock is left.
    fn ended(&mut self, id: KeyId, task_id: &str) {
        let Some(held) = self.held.get_mut(&id) else {
            return;
        };
        if held.leases.remove(task_id).is_none() || !held.leases.is_empty() {
            return;
        }
        let Some(held) = self.held.remove(&id) else {
            return;
        };
        if self.freed.len() >= MAX_FREED {
            let oldest = self.freed_order.remove(0);
            self.freed.remove(&oldest);
        }
        self.freed_order.retain(|k| *k != id);
        self.freed_order.push(id.clone());
        self.freed.insert(id, held.token);
    }
}

fn key_id(env: &str, kind: &str, key: &str) -> KeyId {
    (env.to_owned(), kind.to_owned(), key.to_owned())
}

struct Held {
    token: String,
    /// Tasks leased under `token` whose lease has not ended, with the end
    /// of each lease. Per task: a heartbeat that extended one lease must not
    /// keep the key held once that task ended and only shorter leases are left.
    leases: HashMap<String, DateTime<Utc>>,
}

impl Held {
    /// Whether a lease this store wrote may still run at `now`: past the
    /// latest end of those not seen ending, the key is no longer known to
    /// be held (a lease that ran out, or ended by another process).
    fn live_at(&self, now: DateTime<Utc>) -> bool {
        self.leases.values().any(|until| *until > now)
    }
}

impl KeyBook {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The id this store writes as the `holder` of its locks.
    pub(super) fn holder(&self) -> &str {
        &self.holder
    }

    /// The gate claims of (`env`, `kind`) in this store pass one at a time.
    pub(super) fn gate(&self, env: &str, kind: &str) -> Gate {
        self.gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((env.to_owned(), kind.to_owned()))
            .or_default()
            .clone()
    }

    /// How claims of (`env`, `kind`) in this store space themselves out.
    pub(super) fn pace(&self, env: &str, kind: &str) -> Pace {
        self.paces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(env.to_owned(), kind.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// A claim attempt of (`env`, `kind`) took `took`; `met`: it lost a
    /// lease (or its commit) to another claim.
    pub(super) fn paced(&self, env: &str, kind: &str, took: std::time::Duration, met: bool) {
        let mut paces = self.paces.lock().unwrap_or_else(PoisonError::into_inner);
        if !met && !paces.contains_key(&(env.to_owned(), kind.to_owned())) {
            return;
        }
        let pace = paces.entry((env.to_owned(), kind.to_owned())).or_default();
        pace.took = if pace.took.is_zero() {
            took
        } else {
            (pace.took * 3 + took) / 4
        };
        pace.span = if met {
            (pace.span * 2).clamp(1, MAX_SPAN)
        } else {
            pace.span.saturating_sub(1)
        };
    }

    /// How many documents a claim page of (`env`, `kind`) reads when the
    /// claim lacks `wanted` tasks: `wanted`, times the share of the
    /// documents read lately that the claims could take (a keyless task, or
    /// the first task of a key not met), at least 1. Runs of one key's
    /// backlog in the claim order make pages smaller (more pages, fewer
    /// billed reads); pages of takeable tasks keep them at `wanted`.
    pub(super) fn page_window(&self, env: &str, kind: &str, wanted: usize) -> usize {
        let share = self
            .shares
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(env.to_owned(), kind.to_owned()))
            .copied()
            .unwrap_or(1.0);
        ((wanted as f64 * share).ceil() as usize).clamp(1, wanted.max(1))
    }

    /// A claim page of (`env`, `kind`) read `docs` documents, `fresh` of
    /// them takeable (see [`Self::page_window`]).
    pub(super) fn page_read(&self, env: &str, kind: &str, docs: usize, fresh: usize) {
        if docs == 0 {
            return;
        }
        let share = fresh.min(docs) as f64 / docs as f64;
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        let mean = shares
            .entry((env.to_owned(), kind.to_owned()))
            .or_insert(1.0);
        *mean = (*mean + share) / 2.0;
    }

    /// A claim's commit leased `tasks` of `key` under a lock naming `token`;
    /// `kept_until`: the commit wrote that lock, held until then (`None`:
    /// the tasks were drained under a lock written before).
    pub(super) fn leased(
        &self,
        key: &str,
        token: &str,
        tasks: &[Task],
        kept_until: Option<DateTime<Utc>>,
    ) {
        let Some(first) = tasks.first() else { return };
        let id = (first.env.clone(), first.kind.clone(), key.to_owned());
        let mut book = self.book();
        book.freed.remove(&id);
        book.elsewhere.remove(&id);
        if let Some(kept_until) = kept_until {
            prune(&mut book.kept, Utc::now(), |k| k.until);
            book.kept.insert(
                id.clone(),
                Kept {
                    until: kept_until,
                    token: token.to_owned(),
                },
            );
        }
        book.held.insert(
            id,
            Held {
                token: token.to_owned(),
                leases: tasks
                    .iter()
                    .map(|t| (t.id.clone(), t.leased_until.unwrap_or_else(Utc::now)))
                    .collect(),
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
        let mut book = self.book();
        // Whatever another process did, this store changed the key's task:
        // ask again at the next claim.
        book.elsewhere.remove(&id);
        if task.lease_token.is_none() {
            book.ended(id, &task.id);
            return;
        }
        match (book.held.get_mut(&id), task.leased_until) {
            (Some(held), Some(until)) if held.leases.contains_key(&task.id) => {
                held.leases.insert(task.id.clone(), until);
            }
            // A lease this store's claims did not write (a swap built
            // elsewhere): the key is no longer known free.
            _ => forget(&mut book, &id),
        }
    }

    /// This store created `task`: one created with a lease (an import, a
    /// test) makes its key no longer known free.
    pub(super) fn created(&self, task: &Task) {
        if let Some(key) = &task.resource_key
            && task.lease_token.is_some()
        {
            let id = (task.env.clone(), task.kind.clone(), key.clone());
            forget(&mut self.book(), &id);
        }
    }

    /// This store deleted `task` (as it was stored): its lease, if any, ended.
    pub(super) fn deleted(&self, task: &Task) {
        if let Some(key) = &task.resource_key {
            let id = (task.env.clone(), task.kind.clone(), key.clone());
            let mut book = self.book();
            book.elsewhere.remove(&id);
            book.ended(id, &task.id);
        }
    }

    /// Whether `key` is known busy at `now`: this store holds it, or
    /// another process keeps or leases it (as last seen).
    pub(super) fn busy(&self, env: &str, kind: &str, key: &str, now: DateTime<Utc>) -> bool {
        let id = key_id(env, kind, key);
        let book = self.book();
        book.held.get(&id).is_some_and(|h| h.live_at(now))
            || book.elsewhere.get(&id).is_some_and(|u| *u > now)
    }

    /// Up to `max` keys of (`env`, `kind`) known busy at `now`, sorted: a
    /// claim leaves their tasks out of its first page.
    pub(super) fn known_busy(
        &self,
        env: &str,
        kind: &str,
        now: DateTime<Utc>,
        max: usize,
    ) -> Vec<String> {
        let book = self.book();
        let mine = |(e, k, _): &KeyId| e == env && k == kind;
        let mut keys: Vec<String> = book
            .held
            .iter()
            .filter(|(id, h)| mine(id) && h.live_at(now))
            .map(|(id, _)| id.2.clone())
            .chain(
                book.elsewhere
                    .iter()
                    .filter(|(id, u)| mine(id) && **u > now)
                    .map(|(id, _)| id.2.clone()),
            )
            .collect();
        keys.sort();
        keys.dedup();
        keys.truncate(max);
        keys
    }

    /// Another process keeps or leases `key`: skip it until `until`.
    pub(super) fn busy_elsewhere(
        &self,
        env: &str,
        kind: &str,
        key: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let mut book = self.book();
        prune(&mut book.elsewhere, now, |u| *u);
        book.elsewhere.insert(key_id(env, kind, key), until);
    }

    /// The lock this store keeps on `key`, when its next task can be
    /// leased under it with no lock read or write: the hold has more than
    /// [`DRAIN_MARGIN`] left at `now`, and every lease this store wrote on
    /// the key has ended (seen by this store), so none is live.
    pub(super) fn drainable(
        &self,
        env: &str,
        kind: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Option<Kept> {
        let id = key_id(env, kind, key);
        let book = self.book();
        let kept = book
            .kept
            .get(&id)
            .filter(|k| k.until > now + DRAIN_MARGIN)?;
        (book.freed.get(&id) == Some(&kept.token)).then(|| Kept {
            until: kept.until,
            token: kept.token.clone(),
        })
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
            .get(&key_id(env, kind, key))
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
    fn an_extended_lease_holds_the_key_only_while_its_task_runs() {
        let now = Utc::now();
        let book = KeyBook::default();
        let soon = now + TimeDelta::minutes(1);
        let group = [leased("a", "r", soon), leased("b", "r", soon)];
        book.leased("r", "tok", &group, None);
        let mut extended = group[0].clone();
        extended.leased_until = Some(now + TimeDelta::hours(1));
        book.swapped(&extended);
        assert!(book.busy("E", "k", "r", soon), "a's lease runs on");
        book.swapped(&ended(&extended));
        assert!(book.busy("E", "k", "r", now), "b still runs");
        assert!(!book.busy("E", "k", "r", soon), "b's lease ran out");
    }

    #[test]
    fn a_key_is_held_until_every_task_under_its_lock_ended() {
        let now = Utc::now();
        let book = KeyBook::default();
        let later = now + TimeDelta::minutes(1);
        let group = [leased("a", "r", later), leased("b", "r", later)];
        book.leased("r", "tok", &group, None);
        assert!(book.busy("E", "k", "r", now));
        assert!(!book.busy("E", "k", "r", later), "not past its leases' end");
        book.swapped(&ended(&group[0]));
        assert!(book.busy("E", "k", "r", now), "b still runs");
        assert!(!book.freed_with("E", "k", "r", Some("tok")));
        book.deleted(&group[1]);
        assert!(!book.busy("E", "k", "r", now));
        assert!(book.freed_with("E", "k", "r", Some("tok")));
        assert!(
            !book.freed_with("E", "k", "r", Some("other")),
            "another claim rewrote the lock"
        );
        assert!(!book.freed_with("E", "k", "r", None));
        book.leased("r", "tok2", &[leased("c", "r", later)], None);
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
            None,
        );
        book.swapped(&leased("a", "r", now + TimeDelta::minutes(5)));
        assert!(book.busy("E", "k", "r", now + TimeDelta::minutes(1)));
        book.swapped(&ended(&leased("x", "r", now)));
        assert!(book.busy("E", "k", "r", now), "another task's end");
        assert!(!book.freed_with("E", "k", "r", Some("tok")));
    }

    #[test]
    fn a_kept_lock_drains_its_key_while_the_hold_lasts() {
        let now = Utc::now();
        let book = KeyBook::default();
        let later = now + TimeDelta::minutes(1);
        let a = leased("a", "r", later);
        book.leased("r", "tok", std::slice::from_ref(&a), Some(now + LOCK_HOLD));
        assert!(book.drainable("E", "k", "r", now).is_none(), "a still runs");
        book.swapped(&ended(&a));
        let kept = book
            .drainable("E", "k", "r", now)
            .expect("freed under the hold");
        assert_eq!(kept.token, "tok");
        assert!(
            book.drainable("E", "k", "r", now + LOCK_HOLD - DRAIN_MARGIN)
                .is_none(),
            "too little of the hold left"
        );
        // A drained lease keeps the lock's token: its end frees the key
        // for the next one.
        let b = leased("b", "r", later);
        book.leased("r", &kept.token, std::slice::from_ref(&b), None);
        assert!(book.busy("E", "k", "r", now));
        assert!(book.drainable("E", "k", "r", now).is_none(), "b runs");
        book.swapped(&ended(&b));
        assert!(book.drainable("E", "k", "r", now).is_some());
        assert!(book.freed_with("E", "k", "r", Some("tok")));
    }

    #[test]
    fn a_lease_the_claims_did_not_write_stops_the_drain() {
        let now = Utc::now();
        let later = now + TimeDelta::minutes(1);
        for foreign in ["swapped", "created"] {
            let book = KeyBook::default();
            let a = leased("a", "r", later);
            book.leased("r", "tok", std::slice::from_ref(&a), Some(now + LOCK_HOLD));
            book.swapped(&ended(&a));
            assert!(book.drainable("E", "k", "r", now).is_some());
            let other = leased("x", "r", later);
            match foreign {
                "swapped" => book.swapped(&other),
                _ => book.created(&other),
            }
            assert!(book.drainable("E", "k", "r", now).is_none(), "{foreign}");
            assert!(!book.freed_with("E", "k", "r", Some("tok")), "{foreign}");
        }
    }

    #[test]
    fn claims_wait_only_while_they_meet_other_claims() {
        use std::time::Duration;
        let book = KeyBook::default();
        let ms = Duration::from_millis;
        assert!(book.pace("E", "k").window().is_zero());
        book.paced("E", "k", ms(10), false);
        assert!(book.pace("E", "k").window().is_zero(), "no one met");
        book.paced("E", "k", ms(10), true);
        assert_eq!(book.pace("E", "k").window(), ms(10));
        book.paced("E", "k", ms(10), true);
        assert_eq!(book.pace("E", "k").window(), ms(20), "doubles");
        assert!(book.pace("E", "other").window().is_zero(), "per kind");
        for _ in 0..10 {
            book.paced("E", "k", ms(10), true);
        }
        assert_eq!(
            book.pace("E", "k").window(),
            ms(10) * MAX_SPAN,
            "at most MAX_SPAN claims"
        );
        book.paced("E", "k", Duration::from_secs(1), true);
        assert_eq!(book.pace("E", "k").window(), MAX_BACKOFF);
        for _ in 0..MAX_SPAN {
            book.paced("E", "k", ms(10), false);
        }
        assert!(book.pace("E", "k").window().is_zero(), "back to none");
    }

    #[test]
    fn pages_shrink_while_they_hold_runs_of_one_key() {
        let book = KeyBook::default();
        assert_eq!(book.page_window("E", "k", 4), 4, "nothing read yet");
        // Four documents, one takeable: the rest were the key's backlog.
        book.page_read("E", "k", 4, 1);
        assert_eq!(book.page_window("E", "k", 4), 3);
        book.page_read("E", "k", 4, 1);
        assert_eq!(book.page_window("E", "k", 4), 2);
        assert_eq!(book.page_window("E", "k", 1), 1, "never below one");
        assert_eq!(book.page_window("E", "other", 4), 4, "per kind");
        book.page_read("E", "k", 0, 0);
        assert_eq!(
            book.page_window("E", "k", 4),
            2,
            "an empty page says nothing"
        );
        for _ in 0..10 {
            book.page_read("E", "k", 4, 4);
        }
        assert_eq!(book.page_window("E", "k", 4), 4, "takeable pages again");
    }

    #[test]
    fn keys_busy_elsewhere_are_skipped_until_their_time_and_left_out_of_pages() {
        let now = Utc::now();
        let book = KeyBook::default();
        book.busy_elsewhere("E", "k", "x", now + TimeDelta::seconds(1), now);
        book.leased(
            "r",
            "tok",
            &[leased("a", "r", now + TimeDelta::minutes(1))],
            Some(now + LOCK_HOLD),
        );
        assert!(book.busy("E", "k", "x", now));
        assert!(!book.busy("E", "k", "x", now + TimeDelta::seconds(1)));
        assert_eq!(book.known_busy("E", "k", now, 10), ["r", "x"]);
        assert_eq!(book.known_busy("E", "k", now, 1), ["r"]);
        assert!(book.known_busy("E", "other", now, 10).is_empty());
        // This store changed a task of the key: ask again.
        book.swapped(&ended(&leased("y", "x", now)));
        assert!(!book.busy("E", "k", "x", now));
    }
}

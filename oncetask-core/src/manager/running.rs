//! The tasks this process's main handlers are running, each with the
//! signal that tells its handler the task was cancelled.
//!
//! A cancel is a write to the store ([`crate::lifecycle::cancel`]); the
//! running handler learns of it from whichever comes first: the cancel made
//! through this process's manager, a store notice of an operator's change
//! (re-read here, one `get` for the kind's running tasks), or the next
//! heartbeat, whose extension is decided on the task as stored.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;

use crate::task::{LeaseToken, Task};

/// Whether a running task was cancelled, as its handler sees it through
/// [`TaskContext`](crate::manager::TaskContext). A signal that is never
/// raised (a context built for a unit test, a cancellation handler) stays
/// quiet for ever.
#[derive(Clone, Debug, Default)]
pub(crate) struct CancelSignal(Option<watch::Receiver<bool>>);

/// Two signals compare by state: the context's other fields are values.
impl PartialEq for CancelSignal {
    fn eq(&self, other: &Self) -> bool {
        self.is_raised() == other.is_raised()
    }
}

impl Eq for CancelSignal {}

impl CancelSignal {
    /// Whether the cancel has arrived.
    pub(crate) fn is_raised(&self) -> bool {
        self.0.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Resolves once the cancel arrives; never for a signal that cannot be
    /// raised (or whose run ended).
    pub(crate) async fn raised(&self) {
        if let Some(rx) = &self.0 {
            let mut rx = rx.clone();
            if rx.wait_for(|raised| *raised).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

/// One running task.
struct Entry {
    kind: String,
    token: LeaseToken,
    raise: watch::Sender<bool>,
}

/// Cancels seen for leases not (yet) running here that are kept, so that
/// a run entering just after its cancel was seen starts with its signal
/// raised. Bounded: most are other processes' tasks.
const EARLY_CANCELS: usize = 256;

/// The registry of running tasks, by id.
#[derive(Default)]
pub(crate) struct Running {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tasks: HashMap<String, Entry>,
    /// Cancelled leases seen before their run entered: `(id, token)`.
    early: VecDeque<(String, LeaseToken)>,
}

impl Running {
    /// Registers `tasks`, leased with `token`, for the length of the
    /// returned guard; their signals in the same order.
    pub(crate) fn enter<'a>(
        &'a self,
        tasks: &[Task],
        token: &LeaseToken,
    ) -> (Entered<'a>, Vec<CancelSignal>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let signals = tasks
            .iter()
            .map(|task| {
                let early = state
                    .early
                    .iter()
                    .position(|(id, seen)| *id == task.id && seen == token);
                if let Some(at) = early {
                    state.early.remove(at);
                }
                let (raise, rx) = watch::channel(task.is_cancelled || early.is_some());
                state.tasks.insert(
                    task.id.clone(),
                    Entry {
                        kind: task.kind.clone(),
                        token: token.clone(),
                        raise,
                    },
                );
                CancelSignal(Some(rx))
            })
            .collect();
        let entered = Entered {
            running: self,
            ids: tasks.iter().map(|t| t.id.clone()).collect(),
            token: token.clone(),
        };
        (entered, signals)
    }

    /// Raises the signal of `task` if it is running here under the lease
    /// the stored task still names and the stored task is cancelled.
    pub(crate) fn observe(&self, task: &Task) {
        if !task.is_cancelled {
            return;
        }
        let Some(token) = &task.lease_token else {
            return;
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.tasks.get(&task.id) {
            Some(entry) if entry.token == *token => {
                entry
                    .raise
                    .send_if_modified(|raised| !std::mem::replace(raised, true));
            }
            Some(_) => {}
            None => {
                if state.early.len() == EARLY_CANCELS {
                    state.early.pop_front();
                }
                state.early.push_back((task.id.clone(), token.clone()));
            }
        }
    }

    /// Ids of the running tasks of `kind` whose signal is not raised yet.
    pub(crate) fn unsignalled(&self, kind: &str) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .tasks
            .iter()
            .filter(|(_, e)| e.kind == kind && !*e.raise.borrow())
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// Removes its tasks from the registry when dropped (the run ended).
pub(crate) struct Entered<'a> {
    running: &'a Running,
    ids: Vec<String>,
    token: LeaseToken,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let mut state = self
            .running
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for id in &self.ids {
            // A later run of the same task (this one's lease was lost) keeps its entry.
            if state.tasks.get(id).is_some_and(|e| e.token == self.token) {
                state.tasks.remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::task;

    #[tokio::test]
    async fn a_cancel_seen_under_the_running_lease_raises_the_signal_once() {
        let running = Running::default();
        let token = LeaseToken::generate();
        let mut held = task("a");
        held.lease_token = Some(token.clone());
        let (entered, signals) = running.enter(std::slice::from_ref(&held), &token);
        assert!(!signals[0].is_raised());
        assert_eq!(running.unsignalled(&held.kind), ["a"]);

        running.observe(&held);
        assert!(!signals[0].is_raised(), "not cancelled yet");
        let mut other_lease = held.clone();
        other_lease.is_cancelled = true;
        other_lease.lease_token = Some(LeaseToken::generate());
        running.observe(&other_lease);
        assert!(!signals[0].is_raised(), "another run's lease");

        held.is_cancelled = true;
        running.observe(&held);
        signals[0].raised().await;
        assert!(signals[0].is_raised());
        assert!(running.unsignalled(&held.kind).is_empty());

        drop(entered);
        assert!(running.state.lock().expect("not poisoned").tasks.is_empty());
    }

    #[test]
    fn a_cancel_seen_just_before_its_run_enters_raises_the_signal_at_the_start() {
        let running = Running::default();
        let token = LeaseToken::generate();
        let mut held = task("a");
        held.lease_token = Some(token.clone());
        let mut cancelled = held.clone();
        cancelled.is_cancelled = true;
        running.observe(&cancelled);
        let (_entered, signals) = running.enter(std::slice::from_ref(&held), &token);
        assert!(signals[0].is_raised());
        // Another lease's early cancel does not carry over.
        let other = LeaseToken::generate();
        running.observe(&cancelled);
        let (_entered, signals) = running.enter(std::slice::from_ref(&task("b")), &other);
        assert!(!signals[0].is_raised());
        for i in 0..EARLY_CANCELS + 10 {
            let mut t = task(&format!("t{i}"));
            t.is_cancelled = true;
            t.lease_token = Some(other.clone());
            running.observe(&t);
        }
        assert_eq!(
            running.state.lock().expect("not poisoned").early.len(),
            EARLY_CANCELS
        );
    }

    #[test]
    fn a_default_signal_is_never_raised() {
        assert!(!CancelSignal::default().is_raised());
    }
}

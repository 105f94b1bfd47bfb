//! Change notices: one broadcast channel per environment.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::StreamExt;
use futures::stream::BoxStream;
use oncetask_core::store::Notification;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// Notices buffered per subscriber before it starts lagging.
const CAPACITY: usize = 1024;

/// The per-environment senders. A channel is made on the first
/// `subscribe` of its env; publishing to an env nobody listens to is free.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    // A std mutex: held only to look up or insert a sender, never across `.await`.
    channels: Mutex<HashMap<String, broadcast::Sender<Notification>>>,
}

impl Hub {
    fn channels(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<Notification>>> {
        // Nothing under this lock can panic half-way through a change, so a
        // poisoned map is still consistent.
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends one notice per `(env, kind)`, saying whether its changes may
    /// have touched a task a worker holds.
    pub(crate) fn publish(&self, changed: BTreeMap<(String, String), bool>) {
        if changed.is_empty() {
            return;
        }
        let channels = self.channels();
        for ((env, kind), may_touch_claimed) in changed {
            if let Some(sender) = channels.get(&env) {
                // An error only means nobody listens right now.
                let _ = sender.send(Notification::new(kind, may_touch_claimed));
            }
        }
    }

    /// A stream of the notices of `env` published from now on.
    ///
    /// A subscriber that falls more than [`CAPACITY`] notices behind skips
    /// the ones it missed and goes on; workers still poll, so nothing is lost
    /// for good. The stream ends when the store is dropped.
    pub(crate) fn subscribe(&self, env: &str) -> BoxStream<'static, Notification> {
        let receiver = self
            .channels()
            .entry(env.to_owned())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe();
        futures::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(notice) => return Some((notice, receiver)),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

//! Claimed work waiting for a worker slot: the one place where the runtime
//! keeps tasks it leased but has not started, so it can re-read them before
//! they start and hand them back (shutdown) without running them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::dispatch::Claim;
use crate::lifecycle;
use crate::manager::Inner;
use crate::manager::apply::{Applied, Transition};
use crate::metrics;
use crate::store::{Change, Fetched};

/// A unit that waited longer than this for its slot renews its lease
/// before its handler starts (see `Run::lease_fresh`).
pub(super) const RENEW_AFTER: Duration = Duration::from_secs(1);

/// Claimed units in claim order, each with the count of outside wake-ups
/// (the value of the kind's wake-up channel) it is known to be current for.
#[derive(Default)]
pub(super) struct Backlog {
    units: VecDeque<(Claim, u64)>,
}

impl Backlog {
    pub(super) fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Units waiting.
    pub(super) fn units(&self) -> usize {
        self.units.len()
    }

    /// Tasks waiting.
    pub(super) fn tasks(&self) -> usize {
        self.units.iter().map(|(unit, _)| unit.tasks.len()).sum()
    }

    /// Adds a claim's units, current as of outside wake-up count `seen`.
    pub(super) fn push(&mut self, units: Vec<Claim>, seen: u64) {
        self.units
            .extend(units.into_iter().map(|unit| (unit, seen)));
    }

    /// The oldest unit, marked to renew its lease first if it waited long.
    pub(super) fn pop(&mut self, now: DateTime<Utc>) -> Option<Claim> {
        let (mut unit, _) = self.units.pop_front()?;
        let waited = now.signed_duration_since(unit.claimed_at);
        unit.waited |= waited > TimeDelta::from_std(RENEW_AFTER).unwrap_or(TimeDelta::MAX);
        Some(unit)
    }

    /// Re-reads the waiting tasks (one `get`) if a change made outside the
    /// kind's workers arrived since they were claimed (count `outside`): an
    /// operator may have cancelled one (it then takes the cancellation path
    /// and its main handler never runs), or deleted it. A task no longer
    /// leased with the claim's token is dropped: it is not ours to run.
    pub(super) async fn refresh(&mut self, inner: &Arc<Inner>, outside: u64) {
        let ids: Vec<String> = self
            .units
            .iter()
            .filter(|(_, seen)| *seen != outside)
            .flat_map(|(unit, _)| unit.tasks.iter().map(|t| t.id.clone()))
            .collect();
        if ids.is_empty() {
            return;
        }
        let fresh = match inner.store.get(&ids).await {
            Ok(fetched) => fetched,
            Err(e) => {
                // They start as claimed: a cancel is then seen when the
                // outcome is written, as for a task cancelled while running.
                tracing::warn!(error = %e, "re-reading claimed tasks before they start failed");
                return;
            }
        };
        let mut by_id: HashMap<String, crate::task::Task> = fresh
            .into_iter()
            .filter_map(|f| match f {
                Fetched::Task(task) => Some((task.id.clone(), task)),
                Fetched::Undecodable(_) => None,
            })
            .collect();
        for (unit, seen) in self.units.iter_mut().filter(|(_, seen)| *seen != outside) {
            *seen = outside;
            let token = unit.token.clone();
            let tasks = std::mem::take(&mut unit.tasks);
            for task in tasks {
                match by_id.remove(&task.id) {
                    Some(now) if !now.is_done() && now.lease_token.as_ref() == Some(&token) => {
                        unit.tasks.push(now);
                    }
                    _ => {
                        metrics::count(metrics::TASKS_FENCED_OFF, &inner.env, &task.kind, 1);
                        tracing::info!(task_id = %task.id,
                            "a claimed task changed hands before it started; not running it");
                    }
                }
            }
        }
        self.units.retain(|(unit, _)| !unit.tasks.is_empty());
    }

    /// Gives every waiting task back unrun (ready again at once, its
    /// attempt not counted), in one batch, leaving the backlog empty.
    pub(super) async fn release_all(&mut self, inner: &Arc<Inner>) {
        let mut items = Vec::new();
        for (unit, _) in self.units.drain(..) {
            for task in unit.tasks {
                let token = unit.token.clone();
                let release: Box<dyn Transition> =
                    Box::new(move |t: &crate::task::Task| lifecycle::unclaim(t, &token));
                items.push((task, Change::Release, release));
            }
        }
        let ids: Vec<String> = items.iter().map(|(t, _, _)| t.id.clone()).collect();
        let results = inner.outcomes.apply(inner.store.as_ref(), items).await;
        for (id, applied) in ids.into_iter().zip(results) {
            match applied {
                Applied::Written(task) | Applied::WrittenInstead { task, .. } => {
                    inner.wake(&task.kind);
                }
                Applied::Failed(e) => {
                    tracing::warn!(task_id = %id, error = %e, "releasing a claimed task failed; it runs again when its lease expires");
                }
                Applied::Rejected(_) | Applied::Missing => {}
            }
        }
    }
}

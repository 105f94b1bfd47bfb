//! The scenarios of issue 7, one module each. Each returns its rows; a
//! scenario that does not apply to a backend returns none.

pub mod cancel;
pub mod insert;
pub mod latency;
pub mod lateness;
pub mod list;
pub mod prune;
pub mod rate;
pub mod raw_memory;
pub mod raw_postgres;
pub mod raw_redis;
pub mod raw_sqlite;
pub mod resources;
pub mod scale;
pub mod work;

use std::time::Duration;

use tokio::task::JoinSet;

use crate::error::BenchError;

use crate::config::BenchArgs;
use crate::target::{Backend, Namespace};

/// What every scenario gets.
pub struct Ctx<'a> {
    /// The backend's fresh namespace.
    pub ns: &'a Namespace,
    /// Sizes.
    pub args: &'a BenchArgs,
    /// Progress lines for people (stderr in the CLI).
    pub progress: &'a (dyn Fn(&str) + Send + Sync),
}

impl Ctx<'_> {
    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.ns.backend().name()
    }

    /// The longest a row may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.args.row_timeout.max(1))
    }

    /// Work tasks per row on this backend.
    pub fn work_tasks(&self) -> u64 {
        match self.ns.backend() {
            Backend::Firestore { .. } => self.args.firestore_tasks,
            Backend::Postgres { .. } => self.args.postgres_tasks.unwrap_or(self.args.tasks),
            Backend::Redis { .. } => self.args.redis_tasks.unwrap_or(self.args.tasks),
            Backend::Sqlite { .. } => self.args.sqlite_tasks.unwrap_or(self.args.tasks),
            Backend::Memory => self.args.tasks,
        }
    }

    /// Finished tasks seeded and pruned by the prune rows on this backend.
    pub fn prune_tasks(&self) -> u64 {
        match self.ns.backend() {
            Backend::Firestore { .. } => self.args.prune_firestore_tasks,
            _ => self.args.prune_tasks,
        }
    }

    /// Tasks stored by the list scenario on this backend.
    pub fn list_tasks(&self) -> u64 {
        match self.ns.backend() {
            Backend::Firestore { .. } => self.args.list_firestore_tasks,
            _ => self.args.list_tasks,
        }
    }

    /// Pending tasks drained by each work row of the prune scenario.
    pub fn prune_work_tasks(&self) -> u64 {
        self.args
            .prune_work_tasks
            .unwrap_or(match self.ns.backend() {
                Backend::Firestore { .. } => 1000,
                _ => self.work_tasks(),
            })
    }

    /// Running tasks cancelled per cancel row on this backend.
    pub fn cancel_tasks(&self) -> u64 {
        self.args.cancel_tasks.unwrap_or(match self.ns.backend() {
            Backend::Firestore { .. } => 20,
            _ => 100,
        })
    }

    /// Says what is about to run.
    pub fn say(&self, what: &str) {
        (self.progress)(&format!("[{}] {what}", self.backend()));
    }
}

/// The config of a raw cycle row: `limit` tasks per claim and per
/// complete call, by `callers` concurrent callers (`unit` names them).
pub(crate) fn raw_cycle_config(limit: usize, callers: usize, unit: &str) -> String {
    if limit == 1 {
        format!("single: claim 1 + complete 1, {callers} {unit}")
    } else {
        format!("batch of {limit}: claim + complete, {callers} {unit}")
    }
}

/// Waits for every caller of a raw cycle: the tasks they completed.
pub(crate) async fn join_callers<E: std::fmt::Display + 'static>(
    mut callers: JoinSet<Result<u64, E>>,
) -> Result<u64, BenchError> {
    let mut total = 0;
    while let Some(joined) = callers.join_next().await {
        total += joined
            .map_err(|e| BenchError::Raw(e.to_string()))?
            .map_err(|e| BenchError::Raw(e.to_string()))?;
    }
    Ok(total)
}

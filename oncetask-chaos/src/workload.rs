//! What a chaos run asks the workers to do: the tasks (seeded), and the
//! handler that records every execution in the ledger.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oncetask::{HandlerError, Recurrence, Task, TaskData};
use serde::Serialize;

use crate::ledger::{LedgerWriter, Record, now_micros};

/// The kind every chaos task has.
pub const KIND: &str = "chaos";

/// Attempts a task gets before it fails for good (first included).
pub const MAX_ATTEMPTS: u32 = 4;

/// Delay between attempts.
pub const RETRY_DELAY: Duration = Duration::from_millis(100);

/// One task of the run, as created. Its behavior travels in its data, so
/// any worker process runs it the same way.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosJob {
    /// Makes the id (`t-<n>`).
    #[serde(skip)]
    pub n: usize,
    /// Resource key, if any.
    #[serde(skip)]
    pub key: Option<String>,
    /// Makes it a generator.
    #[serde(skip)]
    pub recurrence: Option<Result<Recurrence, oncetask::RecurrenceError>>,
    /// How long the handler works, in ms.
    pub sleep_ms: u64,
    /// Attempts that fail before one succeeds (≥ [`MAX_ATTEMPTS`]: always fails).
    pub fail_first: u32,
    /// How long the first attempt works instead (longer than the lease: the
    /// time limit cuts it off, or the lease expires under it).
    pub slow_first_ms: u64,
    /// The coordinator cancels it during the run.
    #[serde(skip)]
    pub cancel: bool,
}

impl ChaosJob {
    /// The task id.
    pub fn id(&self) -> String {
        format!("t-{}", self.n)
    }

    /// Whether the task likely stays open for a while after its creation:
    /// its handler works long, overruns its lease, or fails and retries.
    pub fn stays_open(&self) -> bool {
        self.sleep_ms >= 100 || self.slow_first_ms > 0 || self.fail_first > 0
    }
}

impl TaskData for ChaosJob {
    type Kind = &'static str;

    fn kind(&self) -> &'static str {
        KIND
    }

    fn idempotent_id(&self) -> String {
        self.id()
    }

    fn resource_key(&self) -> Option<String> {
        self.key.clone()
    }

    fn recurrence(&self) -> Result<Option<Recurrence>, oncetask::RecurrenceError> {
        self.recurrence.clone().transpose()
    }
}

/// Draws the `tasks` jobs of a run over `keys` resource keys from `seed`:
/// most succeed at once; some fail once or twice first, some always fail,
/// some overrun their lease on the first attempt, a few are recurring, and
/// about one in twenty is cancelled by the coordinator mid-run.
pub fn jobs(
    seed: u64,
    tasks: usize,
    keys: usize,
    lease: Duration,
    start: DateTime<Utc>,
) -> Vec<ChaosJob> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let overrun = u64::try_from(lease.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(500);
    (0..tasks)
        .map(|n| {
            let key =
                (keys > 0 && rng.u8(..100) < 75).then(|| format!("key-{}", rng.usize(..keys)));
            let roll = rng.u8(..100);
            let mut job = ChaosJob {
                n,
                key,
                recurrence: None,
                sleep_ms: rng.u64(2..30),
                fail_first: 0,
                slow_first_ms: 0,
                cancel: rng.u8(..100) < 5,
            };
            match roll {
                0..=9 => job.fail_first = rng.u32(1..3),
                10..=13 => job.fail_first = MAX_ATTEMPTS,
                14..=17 => job.slow_first_ms = overrun,
                18..=27 => job.sleep_ms = rng.u64(100..400),
                28..=29 => job.recurrence = Some(recurring(start, n)),
                _ => {}
            }
            job
        })
        .collect()
}

/// Three occurrences, one second apart, starting a moment after `start`.
fn recurring(start: DateTime<Utc>, n: usize) -> Result<Recurrence, oncetask::RecurrenceError> {
    let offset = i64::try_from(n % 7).unwrap_or(0) + 1;
    let dtstart = (start + chrono::TimeDelta::seconds(offset)).to_rfc3339();
    // A rule that does not parse fails the job's create (a typed refusal
    // the run reports), never a quietly non-recurring task.
    Recurrence::new("FREQ=SECONDLY;INTERVAL=1;COUNT=3", &dtstart)
}

/// The handler of a worker: records the start, works as the task's data
/// says, records the end (or, through a drop guard, that the call was cut
/// off), and succeeds or fails as told.
#[derive(Clone)]
pub struct LedgerHandler {
    worker: u32,
    ledger: Arc<LedgerWriter>,
    next_exec: Arc<AtomicU64>,
    /// Called before the handler returns: lets an in-process worker stall
    /// its whole runtime, as a SIGSTOP stalls a process.
    pub stall: Arc<dyn Fn() + Send + Sync>,
}

impl LedgerHandler {
    /// A handler writing to `ledger` as worker `worker`.
    pub fn new(worker: u32, ledger: Arc<LedgerWriter>) -> Self {
        Self {
            worker,
            ledger,
            next_exec: Arc::new(AtomicU64::new(0)),
            stall: Arc::new(|| {}),
        }
    }

    /// Runs one task.
    pub async fn handle(&self, task: Task) -> Result<(), HandlerError> {
        let exec = self.next_exec.fetch_add(1, Ordering::Relaxed);
        let number = |field: &str| {
            task.data
                .get(field)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        self.ledger.append(&Record::Start {
            worker: self.worker,
            exec,
            id: task.id.clone(),
            kind: task.kind.clone(),
            key: task.resource_key.clone(),
            attempt: task.attempts,
            lease_until: task.leased_until.map_or(i64::MAX, |t| t.timestamp_micros()),
            at: now_micros(),
        });
        let mut guard = EndGuard {
            handler: self,
            exec,
            finished: false,
        };
        let slow_first = number("slow_first_ms");
        let work = if task.attempts <= 1 && slow_first > 0 {
            slow_first
        } else {
            number("sleep_ms")
        };
        tokio::time::sleep(Duration::from_millis(work)).await;
        (self.stall)();
        let fail_first = u32::try_from(number("fail_first")).unwrap_or(u32::MAX);
        let ok = task.attempts > fail_first;
        guard.finished = true;
        self.ledger.append(&Record::End {
            worker: self.worker,
            exec,
            ok,
            dropped: false,
            at: now_micros(),
        });
        if ok {
            Ok(())
        } else {
            Err(HandlerError::msg(format!(
                "planned failure of attempt {}",
                task.attempts
            )))
        }
    }
}

/// Records that a handler call was cut off (its future dropped by the time
/// limit or a shutdown) when it did not finish.
struct EndGuard<'a> {
    handler: &'a LedgerHandler,
    exec: u64,
    finished: bool,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.handler.ledger.append(&Record::End {
                worker: self.handler.worker,
                exec: self.exec,
                ok: false,
                dropped: true,
                at: now_micros(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_jobs_and_every_behavior_occurs() {
        let start = Utc::now();
        let a = jobs(7, 2000, 20, Duration::from_secs(2), start);
        let b = jobs(7, 2000, 20, Duration::from_secs(2), start);
        let summary = |jobs: &[ChaosJob]| {
            jobs.iter()
                .map(|j| {
                    (
                        j.key.clone(),
                        j.sleep_ms,
                        j.fail_first,
                        j.slow_first_ms,
                        j.cancel,
                        j.recurrence.is_some(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(summary(&a), summary(&b));
        assert!(a.iter().any(|j| j.fail_first == MAX_ATTEMPTS));
        assert!(a.iter().any(|j| (1..MAX_ATTEMPTS).contains(&j.fail_first)));
        assert!(a.iter().any(|j| j.slow_first_ms > 2000));
        assert!(a.iter().any(|j| j.recurrence.is_some()));
        assert!(a.iter().any(|j| j.cancel));
        assert!(a.iter().any(|j| j.key.is_none()));
    }
}

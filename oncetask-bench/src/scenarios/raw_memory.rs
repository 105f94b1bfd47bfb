//! The raw limit in memory: a hand-written queue behind one mutex (a ready
//! set ordered by run time, a lease map and the jobs), doing the claim and
//! complete steps of the other raw rows, one task and a batch per call,
//! 8 callers. It is the ceiling the memory store's rows are read against;
//! a bare queue does a fraction of what a store must (fencing, resource
//! keys, statuses, listings), so there is no ratio target.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::BenchError;
use crate::report::Row;
use crate::scenarios::Ctx;

struct Job {
    payload: String,
    leased_until: Option<i64>,
    attempts: u32,
    done_at: Option<i64>,
}

#[derive(Default)]
struct Queue {
    /// (run at, id) of the jobs ready to claim.
    ready: BTreeSet<(i64, u64)>,
    /// id -> lease end of the claimed jobs.
    leased: HashMap<u64, i64>,
    jobs: HashMap<u64, Job>,
}

impl Queue {
    /// Leases up to `limit` due jobs; their ids and payloads.
    fn claim(&mut self, now: i64, until: i64, limit: usize) -> Vec<(u64, String)> {
        let mut out = Vec::with_capacity(limit);
        while out.len() < limit {
            let Some(&(run_at, id)) = self.ready.first() else {
                break;
            };
            if run_at > now {
                break;
            }
            self.ready.pop_first();
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            job.leased_until = Some(until);
            job.attempts += 1;
            self.leased.insert(id, until);
            out.push((id, job.payload.clone()));
        }
        out
    }

    /// Marks the jobs done that are still leased; how many.
    fn complete(&mut self, ids: &[u64], now: i64) -> u64 {
        let mut done = 0;
        for id in ids {
            if self.leased.remove(id).is_some()
                && let Some(job) = self.jobs.get_mut(id)
            {
                job.done_at = Some(now);
                job.leased_until = None;
                done += 1;
            }
        }
        done
    }
}

/// Rows for the single and the batch cycle (memory only).
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    if !matches!(ctx.ns.backend(), crate::target::Backend::Memory) {
        return Ok(Vec::new());
    }
    let args = ctx.args;
    let mut rows = Vec::new();
    for (label, limit) in [("single", 1), ("batch", args.raw_batch)] {
        let config = super::raw_cycle_config(limit, args.raw_concurrency, "callers");
        ctx.say(&format!(
            "raw: {} jobs, {label} mutex cycle",
            args.raw_tasks
        ));
        let now = chrono::Utc::now().timestamp_millis();
        let mut queue = Queue::default();
        for id in 0..args.raw_tasks {
            queue.ready.insert((now - 1000, id));
            queue.jobs.insert(
                id,
                Job {
                    payload: format!("{{\"n\":{id}}}"),
                    leased_until: None,
                    attempts: 0,
                    done_at: None,
                },
            );
        }
        let queue = Arc::new(Mutex::new(queue));
        let started = std::time::Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..args.raw_concurrency {
            let queue = queue.clone();
            workers.spawn(async move {
                let mut done: u64 = 0;
                loop {
                    let now = chrono::Utc::now().timestamp_millis();
                    let claimed = queue.lock().unwrap_or_else(PoisonError::into_inner).claim(
                        now,
                        now + 600_000,
                        limit,
                    );
                    if claimed.is_empty() {
                        return Ok::<u64, std::convert::Infallible>(done);
                    }
                    let ids: Vec<u64> = claimed.iter().map(|(id, _)| *id).collect();
                    done += queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .complete(&ids, now);
                    // A call boundary, as the stores' calls are.
                    tokio::task::yield_now().await;
                }
            });
        }
        let total = super::join_callers(workers).await?;
        let seconds = started.elapsed().as_secs_f64();
        rows.push(
            Row::new(ctx.backend(), "raw", config)
                .throughput(total, seconds)
                .note("hand-written queue behind one mutex: the ceiling, no ratio target"),
        );
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_claims_due_jobs_once_and_completes_only_leased_ones() {
        let mut queue = Queue::default();
        for (id, run_at) in [(1, 10), (2, 5), (3, 50)] {
            queue.ready.insert((run_at, id));
            queue.jobs.insert(
                id,
                Job {
                    payload: id.to_string(),
                    leased_until: None,
                    attempts: 0,
                    done_at: None,
                },
            );
        }
        let claimed = queue.claim(20, 100, 5);
        assert_eq!(claimed, [(2, "2".to_owned()), (1, "1".to_owned())]);
        assert!(queue.claim(20, 100, 5).is_empty(), "nothing else is due");
        assert_eq!(queue.complete(&[1, 2, 3], 30), 2, "3 was never leased");
        assert_eq!(queue.complete(&[1], 31), 0, "completed once");
        assert_eq!(queue.jobs[&1].attempts, 1);
        assert_eq!(queue.jobs[&1].done_at, Some(30));
    }
}

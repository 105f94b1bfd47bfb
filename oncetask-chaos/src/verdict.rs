//! The checks of a run: the ledger against the store's final state.
//!
//! An execution's *valid window* is from its start to the earliest of its
//! end, its worker's death and its lease's end: a worker that was frozen or
//! killed may still be "running" a task whose lease another worker has
//! since taken — that is expected (at-least-once execution), and fencing
//! keeps its outcome out. The promise checked is about valid windows and
//! stored completions.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};
use oncetask::{Task, TaskStatus};
use serde::Serialize;

use crate::history::Writes;
use crate::ledger::{GoOp, GoOutcome, Record};

/// What a run did and whether the promise held.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// Backend name.
    pub backend: String,
    /// Tasks in the store at the end (occurrences of recurring tasks included).
    pub tasks: usize,
    /// Tasks created by the coordinator.
    pub created: usize,
    /// Final statuses.
    pub completed: usize,
    /// Failed for good (retries exhausted).
    pub failed: usize,
    /// Cancelled.
    pub cancelled: usize,
    /// Recurring generators among the tasks.
    pub generators: usize,
    /// Handler calls started.
    pub executions: usize,
    /// Handler calls started after their lease had already ended (a frozen
    /// worker resuming): nothing they do can be stored.
    pub stale_starts: usize,
    /// Handler calls cut off (time limit, shutdown).
    pub cut_off: usize,
    /// Handler calls that never ended because their worker was killed.
    pub killed_mid_run: usize,
    /// Tasks whose handler succeeded more than once per run generation
    /// (at-least-once execution after a kill, a freeze or a lost lease; not
    /// a violation by itself).
    pub duplicate_successes: usize,
    /// The fewest finishing writes (completing, failing or cancelling) in
    /// the stored history of one finished run generation of a task (must
    /// be 1). A task has one generation, plus one per Go reset.
    pub min_finishing_writes: usize,
    /// The most finishing writes of one run generation (must be 1).
    pub max_finishing_writes: usize,
    /// Run generations traced (tasks, plus the Go resets that landed).
    pub generations: usize,
    /// Writes in the traced histories (claims, outcomes, cancels).
    pub writes_traced: u64,
    /// Of those, writes the store applied whose answer never reached the
    /// ledger, identified among the writes sent for that version.
    pub writes_unanswered: u64,
    /// Of those, steps no line explains: claims whose answer was lost.
    pub writes_unlogged: u64,
    /// Steps whose unanswered writes disagree on finishing the task (not
    /// provable either way; counted as not finishing).
    pub writes_ambiguous: u64,
    /// Finished tasks whose finishing write got no answer (the worker was
    /// killed, or the server crashed, before it arrived).
    pub unconfirmed_finishes: usize,
    /// Execution windows of one kind and resource key that overlapped while
    /// both leases were valid (must be 0).
    pub key_overlaps: usize,
    /// Tasks not finished at the end, or created and missing (must be 0).
    pub lost: usize,
    /// Tasks still leased at the end (must be 0).
    pub left_leased: usize,
    /// Stale outcomes the managers discarded (fencing at work).
    pub fenced: usize,
    /// Workers killed.
    pub kills: usize,
    /// Worker freezes.
    pub pauses: usize,
    /// Server restarts.
    pub server_restarts: usize,
    /// Torn ledger lines (a worker killed mid-write).
    pub torn_ledger_lines: usize,
    /// Whether a Go-shaped writer cancelled and reset tasks during the run.
    pub go_writer: bool,
    /// Go-shaped operations (a read, then a write if Go's rules say so).
    pub go_operations: usize,
    /// Go cancels the store accepted.
    pub go_cancels: usize,
    /// Of those, cancels of a task read under a lease (a handler running).
    pub go_cancels_of_leased: usize,
    /// Go resets the store accepted (each runs a finished task again).
    pub go_resets: usize,
    /// Go operations whose rules found nothing to write.
    pub go_skipped: usize,
    /// Go writes whose call failed without saying whether they landed.
    pub go_unknown: usize,
    /// Go writes of unknown outcome, and how the checks placed each reset
    /// among them (inferred from the history rather than proven by the
    /// store's answer; not violations).
    pub unproven: Vec<String>,
    /// Probe writes the coordinator made during the chaos phase (SQLite
    /// only: one writer at a time across processes), one at a time.
    pub probe_writes: usize,
    /// Of those, writes the store refused (the busy timeout ran out).
    pub probe_failures: usize,
    /// The longest probe write, in ms: the longest another process's write
    /// waited for the database.
    pub longest_write_stall_ms: f64,
    /// Per worker freeze, the longest probe write that overlapped it, in ms.
    pub freeze_stalls_ms: Vec<f64>,
    /// The lease of every claim, in ms (what a freeze's stall compares to).
    pub lease_ms: u64,
    /// Seconds from start to the end of the checks.
    pub seconds: f64,
    /// Every broken promise, in words. Empty means the run passed.
    pub violations: Vec<String>,
}

/// Everything the checks read.
pub struct Evidence<'a> {
    /// Ledger records of all workers.
    pub records: &'a [Record],
    /// (worker, µs) of every worker killed.
    pub deaths: &'a [(u32, i64)],
    /// Every task of the run's env at the end.
    pub tasks: &'a [Task],
    /// Ids the coordinator created.
    pub created_ids: &'a [String],
    /// The end of the run.
    pub now: DateTime<Utc>,
}

/// (start, end of the valid window, task id).
type Window<'a> = (i64, i64, &'a str);

struct Execution<'a> {
    id: &'a str,
    kind: &'a str,
    key: Option<&'a str>,
    start: i64,
    /// End of the valid window (≤ start when the lease had already ended).
    valid_until: i64,
}

impl Verdict {
    /// Runs every check over `evidence`.
    pub fn check(&mut self, evidence: &Evidence<'_>) {
        let deaths: HashMap<u32, i64> = evidence.deaths.iter().copied().collect();
        let mut ends: HashMap<(u32, u64), (i64, bool, bool)> = HashMap::new();
        for record in evidence.records {
            match record {
                Record::End {
                    worker,
                    exec,
                    ok,
                    dropped,
                    at,
                } => {
                    ends.insert((*worker, *exec), (*at, *ok, *dropped));
                }
                Record::Fenced { .. } => self.fenced += 1,
                _ => {}
            }
        }

        let mut executions = Vec::new();
        let mut successes: HashMap<&str, usize> = HashMap::new();
        for record in evidence.records {
            let Record::Start {
                worker,
                exec,
                id,
                kind,
                key,
                lease_until,
                at,
                ..
            } = record
            else {
                continue;
            };
            self.executions += 1;
            let end = match ends.get(&(*worker, *exec)) {
                Some(&(end, ok, dropped)) => {
                    if ok {
                        *successes.entry(id.as_str()).or_default() += 1;
                    }
                    if dropped {
                        self.cut_off += 1;
                    }
                    end
                }
                None => match deaths.get(worker) {
                    Some(&died) => {
                        self.killed_mid_run += 1;
                        died
                    }
                    None => {
                        self.violations.push(format!(
                            "execution {exec} of worker {worker} ({id}) has no end, yet its worker was not killed"
                        ));
                        *lease_until
                    }
                },
            };
            if *lease_until <= *at {
                self.stale_starts += 1;
            }
            executions.push(Execution {
                id,
                kind,
                key: key.as_deref(),
                start: *at,
                valid_until: end.min(*lease_until),
            });
        }
        // Each Go reset that landed runs its task once more.
        let mut runs: HashMap<&str, usize> = HashMap::new();
        for record in evidence.records {
            if let Record::GoWrite {
                id,
                op: GoOp::Reset,
                outcome: GoOutcome::Accepted,
                ..
            } = record
            {
                *runs.entry(id.as_str()).or_insert(1) += 1;
            }
        }
        self.duplicate_successes = successes
            .iter()
            .filter(|&(id, &n)| n > runs.get(id).copied().unwrap_or(1))
            .count();

        self.count_go_writes(evidence.records);
        self.check_histories(&executions, evidence);
        self.check_key_overlaps(&executions);
        self.check_final_state(evidence);
    }

    /// Traces every task's writes (see [`crate::history`]): exactly one
    /// finishing write per finished run generation, as its last write; then
    /// no execution may start under a valid lease after it, until a Go
    /// reset starts the next generation.
    fn check_histories(&mut self, executions: &[Execution<'_>], evidence: &Evidence<'_>) {
        let writes = Writes::from_records(evidence.records);
        // Per task: (finished at, next reset sent at) of each generation.
        let mut finished_spans: HashMap<&str, Vec<(i64, Option<i64>)>> = HashMap::new();
        let mut min = usize::MAX;
        for task in evidence.tasks {
            let finished = task.status(evidence.now).is_terminal();
            let trace = writes.trace(task, finished);
            self.writes_traced += trace.steps;
            self.writes_unanswered += trace.unanswered;
            self.writes_unlogged += trace.unlogged;
            self.writes_ambiguous += trace.ambiguous;
            self.generations += trace.generations.len();
            for generation in &trace.generations {
                self.max_finishing_writes = self.max_finishing_writes.max(generation.finishing);
                if generation.finished {
                    min = min.min(generation.finishing);
                    if !generation.last_confirmed {
                        self.unconfirmed_finishes += 1;
                    }
                }
            }
            for generation in &trace.generations {
                if let Some(at) = generation.finished_at {
                    finished_spans
                        .entry(task.id.as_str())
                        .or_default()
                        .push((at, generation.reset_sent_at));
                }
            }
            self.unproven.extend(trace.inferred);
            self.violations.extend(trace.problems);
        }
        self.min_finishing_writes = if min == usize::MAX { 0 } else { min };
        for execution in executions {
            let Some(spans) = finished_spans.get(execution.id) else {
                continue;
            };
            let after_a_finish = spans.iter().any(|&(finished, reset)| {
                execution.start > finished && reset.is_none_or(|r| execution.start < r)
            });
            if after_a_finish && execution.valid_until > execution.start {
                self.violations.push(format!(
                    "{} started again under a valid lease after its finishing write",
                    execution.id
                ));
            }
        }
    }

    /// Counts the Go-shaped writer's operations.
    fn count_go_writes(&mut self, records: &[Record]) {
        for record in records {
            if let Record::GoWrite {
                seq,
                id,
                op,
                outcome,
                read_leased,
                error,
                ..
            } = record
            {
                if *outcome == GoOutcome::Unknown {
                    self.unproven.push(format!(
                        "{id}: Go {op:?} #{seq}: outcome unknown ({})",
                        error.as_deref().unwrap_or("no error text")
                    ));
                }
                self.go_operations += 1;
                match (op, outcome) {
                    (GoOp::Cancel, GoOutcome::Accepted) => {
                        self.go_cancels += 1;
                        if *read_leased {
                            self.go_cancels_of_leased += 1;
                        }
                    }
                    (GoOp::Reset, GoOutcome::Accepted) => self.go_resets += 1,
                    (_, GoOutcome::Skipped) => self.go_skipped += 1,
                    (_, GoOutcome::Unknown) => self.go_unknown += 1,
                    (_, GoOutcome::Refused) => {}
                }
            }
        }
    }

    /// Sweeps the valid windows of each kind and resource key in start order.
    fn check_key_overlaps(&mut self, executions: &[Execution<'_>]) {
        let mut by_key: BTreeMap<(&str, &str), Vec<Window<'_>>> = BTreeMap::new();
        for e in executions {
            if let Some(key) = e.key
                && e.valid_until > e.start
            {
                by_key
                    .entry((e.kind, key))
                    .or_default()
                    .push((e.start, e.valid_until, e.id));
            }
        }
        for ((kind, key), mut windows) in by_key {
            windows.sort_unstable();
            let mut latest: Option<(i64, &str)> = None;
            for (start, end, id) in windows {
                if let Some((until, other)) = latest
                    && start < until
                {
                    self.key_overlaps += 1;
                    self.violations.push(format!(
                        "{id} and {other} ran at once under valid leases (kind {kind}, key {key})"
                    ));
                }
                if latest.is_none_or(|(until, _)| end > until) {
                    latest = Some((end, id));
                }
            }
        }
    }

    fn check_final_state(&mut self, evidence: &Evidence<'_>) {
        self.tasks = evidence.tasks.len();
        self.created = evidence.created_ids.len();
        let stored: HashMap<&str, &Task> =
            evidence.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
        for id in evidence.created_ids {
            if !stored.contains_key(id.as_str()) {
                self.lost += 1;
                self.violations
                    .push(format!("{id} was created and is gone"));
            }
        }
        for task in evidence.tasks {
            if task.is_generator() {
                self.generators += 1;
            }
            match task.status(evidence.now) {
                TaskStatus::Completed => self.completed += 1,
                TaskStatus::Failed => self.failed += 1,
                TaskStatus::Cancelled => self.cancelled += 1,
                TaskStatus::Leased => {
                    self.left_leased += 1;
                    self.lost += 1;
                    self.violations
                        .push(format!("{} is still leased at the end", task.id));
                }
                other => {
                    self.lost += 1;
                    self.violations
                        .push(format!("{} did not finish: {}", task.id, other.as_str()));
                }
            }
        }
    }

    /// Whether every promise held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Fills the stall figures from the probe writes and the freezes'
    /// windows (µs since the epoch). Not a check: a worker frozen while it
    /// holds SQLite's write lock stalls every writer until it resumes.
    pub fn stalls(
        &mut self,
        probes: &[crate::run::Probe],
        freezes: &[(i64, i64)],
        lease: std::time::Duration,
    ) {
        let ms = |micros: i64| micros as f64 / 1000.0;
        self.lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        self.probe_writes = probes.len();
        self.probe_failures = probes.iter().filter(|p| !p.ok).count();
        self.longest_write_stall_ms = probes.iter().map(|p| ms(p.micros)).fold(0.0, f64::max);
        self.freeze_stalls_ms = freezes
            .iter()
            .map(|&(from, to)| {
                probes
                    .iter()
                    .filter(|p| p.at <= to && p.at.saturating_add(p.micros) >= from)
                    .map(|p| ms(p.micros))
                    .fold(0.0, f64::max)
            })
            .collect();
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<(&str, String)> = vec![
            ("backend", self.backend.clone()),
            (
                "tasks created / in store at end",
                format!("{} / {}", self.created, self.tasks),
            ),
            (
                "completed / failed / cancelled",
                format!("{} / {} / {}", self.completed, self.failed, self.cancelled),
            ),
            ("recurring generators", self.generators.to_string()),
            ("executions (handler calls)", self.executions.to_string()),
            ("  cut off (time limit, shutdown)", self.cut_off.to_string()),
            ("  killed mid-run", self.killed_mid_run.to_string()),
            (
                "  started after their lease ended",
                self.stale_starts.to_string(),
            ),
            (
                "tasks that succeeded more than once",
                self.duplicate_successes.to_string(),
            ),
            (
                "finishing writes per finished run (must be 1)",
                format!(
                    "min {} / max {}",
                    self.min_finishing_writes, self.max_finishing_writes
                ),
            ),
            (
                "  finishing writes not answered",
                self.unconfirmed_finishes.to_string(),
            ),
            (
                "writes traced (claims, outcomes, cancels)",
                self.writes_traced.to_string(),
            ),
            (
                "  applied without an answer",
                self.writes_unanswered.to_string(),
            ),
            (
                "  claims whose answer was lost",
                self.writes_unlogged.to_string(),
            ),
            (
                "  ambiguous (unproven either way)",
                self.writes_ambiguous.to_string(),
            ),
            (
                "overlaps within a resource key (must be 0)",
                self.key_overlaps.to_string(),
            ),
            (
                "tasks lost or unfinished (must be 0)",
                self.lost.to_string(),
            ),
            (
                "tasks left leased (must be 0)",
                self.left_leased.to_string(),
            ),
            (
                "stale outcomes rejected by fencing",
                self.fenced.to_string(),
            ),
            ("workers killed (SIGKILL)", self.kills.to_string()),
            ("worker freezes (SIGSTOP)", self.pauses.to_string()),
            ("server restarts", self.server_restarts.to_string()),
            ("torn ledger lines", self.torn_ledger_lines.to_string()),
            ("seconds", format!("{:.1}", self.seconds)),
            ("violations", self.violations.len().to_string()),
            (
                "result",
                if self.passed() {
                    "PASS".into()
                } else {
                    "FAIL".into()
                },
            ),
        ];
        if self.probe_writes > 0 {
            let at = rows.len() - 3;
            let stalls: Vec<String> = self
                .freeze_stalls_ms
                .iter()
                .map(|ms| format!("{ms:.0}"))
                .collect();
            let probe_rows = [
                (
                    "probe writes (failed)",
                    format!("{} ({})", self.probe_writes, self.probe_failures),
                ),
                (
                    "  longest write stall, ms (lease)",
                    format!("{:.0} ({})", self.longest_write_stall_ms, self.lease_ms),
                ),
                ("  longest per freeze, ms", stalls.join(", ")),
            ];
            rows.splice(at..at, probe_rows);
        }
        if self.go_writer {
            let at = rows.len() - 3;
            let go_rows = [
                (
                    "Go-shaped operations (cancel, reset)",
                    self.go_operations.to_string(),
                ),
                (
                    "  accepted cancels (of leased tasks) / resets",
                    format!(
                        "{} ({}) / {}",
                        self.go_cancels, self.go_cancels_of_leased, self.go_resets
                    ),
                ),
                ("  skipped by Go's rules", self.go_skipped.to_string()),
                ("  outcome unknown", self.go_unknown.to_string()),
                (
                    "run generations (tasks + resets run)",
                    self.generations.to_string(),
                ),
                (
                    "  placed from the history (unproven)",
                    self.unproven.len().to_string(),
                ),
            ];
            rows.splice(at..at, go_rows);
        }
        for (name, value) in rows {
            writeln!(f, "{name:<48} {value}")?;
        }
        for violation in self.violations.iter().take(20) {
            writeln!(f, "  violation: {violation}")?;
        }
        for unproven in self.unproven.iter().take(5) {
            writeln!(f, "  unproven: {unproven}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(worker: u32, exec: u64, id: &str, key: &str, at: i64, lease_until: i64) -> Record {
        Record::Start {
            worker,
            exec,
            id: id.into(),
            kind: "chaos".into(),
            key: Some(key.into()),
            attempt: 1,
            lease_until,
            at,
        }
    }

    fn end(worker: u32, exec: u64, at: i64) -> Record {
        Record::End {
            worker,
            exec,
            ok: true,
            dropped: false,
            at,
        }
    }

    fn verdict(records: &[Record], deaths: &[(u32, i64)]) -> Verdict {
        let mut v = Verdict::default();
        v.check(&Evidence {
            records,
            deaths,
            tasks: &[],
            created_ids: &[],
            now: Utc::now(),
        });
        v
    }

    #[test]
    fn two_valid_windows_of_one_key_overlapping_are_a_violation() {
        let v = verdict(
            &[
                start(1, 0, "a", "k", 0, 100),
                end(1, 0, 50),
                start(2, 0, "b", "k", 40, 140),
                end(2, 0, 60),
            ],
            &[],
        );
        assert_eq!(v.key_overlaps, 1);
        assert!(!v.passed());
    }

    #[test]
    fn a_frozen_worker_past_its_lease_does_not_overlap_its_successor() {
        // Worker 1's lease ends at 100; it ends at 500 (frozen). Worker 2 takes over at 120.
        let v = verdict(
            &[
                start(1, 0, "a", "k", 0, 100),
                end(1, 0, 500),
                start(2, 0, "a", "k", 120, 220),
                end(2, 0, 130),
            ],
            &[],
        );
        assert_eq!(v.key_overlaps, 0);
        assert_eq!(v.duplicate_successes, 1);
        assert!(v.passed(), "{v}");
    }

    #[test]
    fn a_killed_worker_ends_its_window_at_its_death_and_an_open_one_is_a_violation() {
        let killed = verdict(
            &[
                start(1, 0, "a", "k", 0, 100),
                start(2, 0, "b", "k", 50, 150),
                end(2, 0, 60),
            ],
            &[(1, 40)],
        );
        assert_eq!(killed.killed_mid_run, 1);
        assert!(killed.passed(), "{killed}");
        let open = verdict(&[start(1, 0, "a", "k", 0, 100)], &[]);
        assert!(!open.passed());
    }

    /// Task "a", created at version 5, claimed to 6 by worker 1, completed
    /// from 6 (sent at 10, applied): stored at version 7.
    fn completed_once() -> Vec<Record> {
        vec![
            Record::Create {
                worker: 0,
                id: "a".into(),
                version: 5,
                at: 0,
            },
            Record::Claimed {
                worker: 1,
                id: "a".into(),
                version: 6,
                at: 1,
            },
            Record::Write {
                worker: 1,
                seq: 0,
                id: "a".into(),
                expected: 6,
                status: "completed".into(),
                finishes: true,
                fence: None,
                at: 10,
            },
            Record::Answer {
                worker: 1,
                seq: 0,
                applied: true,
                revision: None,
                at: 11,
            },
        ]
    }

    fn completed(version: u64) -> Task {
        let now = Utc::now();
        let mut task = Task::new("a", "chaos", "env", now);
        task.version = version;
        task.done_at = Some(now);
        task.outcome = Some(oncetask::Outcome::Completed);
        task
    }

    fn verdict_on(records: &[Record], task: Task) -> Verdict {
        let mut v = Verdict::default();
        v.check(&Evidence {
            records,
            deaths: &[],
            tasks: &[task],
            created_ids: &["a".into()],
            now: Utc::now(),
        });
        v
    }

    #[test]
    fn one_finishing_write_in_the_stored_history_passes() {
        let v = verdict_on(&completed_once(), completed(7));
        assert!(v.passed(), "{v}");
        assert_eq!((v.min_finishing_writes, v.max_finishing_writes), (1, 1));
        assert_eq!((v.writes_traced, v.unconfirmed_finishes), (2, 0));
    }

    #[test]
    fn a_second_completion_and_a_valid_run_after_completion_are_violations() {
        let mut twice = completed_once();
        twice.push(Record::Write {
            worker: 2,
            seq: 0,
            id: "a".into(),
            expected: 7,
            status: "completed".into(),
            finishes: true,
            fence: None,
            at: 20,
        });
        twice.push(Record::Answer {
            worker: 2,
            seq: 0,
            applied: true,
            revision: None,
            at: 21,
        });
        let twice = verdict_on(&twice, completed(8));
        assert_eq!(twice.max_finishing_writes, 2);
        assert!(!twice.passed());

        let mut rerun = completed_once();
        rerun.extend([start(2, 0, "a", "k", 20, 100), end(2, 0, 30)]);
        assert!(!verdict_on(&rerun, completed(7)).passed());

        let mut stale = completed_once();
        stale.extend([start(2, 0, "a", "k", 20, 15), end(2, 0, 30)]);
        let stale = verdict_on(&stale, completed(7));
        assert!(stale.passed(), "{stale}");
        assert_eq!(stale.stale_starts, 1);
    }

    fn rev(version: u64, nanos: u64) -> Option<String> {
        Some(((u128::from(version) << 64) | u128::from(nanos)).to_string())
    }

    /// A fenced write of worker `worker` from `expected`, applied at update
    /// time `landed` (decided on `decided`), finishing the task.
    fn finishing(worker: u32, expected: u64, decided: u64, landed: u64, at: i64) -> [Record; 2] {
        [
            Record::Write {
                worker,
                seq: 0,
                id: "a".into(),
                expected,
                status: "completed".into(),
                finishes: true,
                fence: rev(expected, decided),
                at,
            },
            Record::Answer {
                worker,
                seq: 0,
                applied: true,
                revision: rev(expected + 1, landed),
                at: at + 1,
            },
        ]
    }

    fn go_reset(read_version: u64, outcome: GoOutcome, update_time: i64, sent_at: i64) -> Record {
        Record::GoWrite {
            seq: 0,
            id: "a".into(),
            op: GoOp::Reset,
            read_version: Some(read_version),
            read_done: true,
            read_cancelled: false,
            read_leased: false,
            outcome,
            update_time: (outcome == GoOutcome::Accepted).then_some(update_time),
            cancelled_at: None,
            error: None,
            sent_at,
            at: sent_at + 1,
        }
    }

    /// Task "a" created at 5, claimed to 6 and run by worker 1 (start 2,
    /// end 8), completed from 6 (sent at 10, update time 110); Go resets it
    /// (sent at 15, update time 150); claimed to 8 and run again by worker
    /// 2 (start 20, end 30), completed from 8 (sent at 31, update time 170):
    /// stored at 9.
    fn reset_and_rerun() -> Vec<Record> {
        let mut records = vec![
            Record::Create {
                worker: 0,
                id: "a".into(),
                version: 5,
                at: 0,
            },
            Record::Claimed {
                worker: 1,
                id: "a".into(),
                version: 6,
                at: 1,
            },
            start(1, 0, "a", "k", 2, 100),
            end(1, 0, 8),
        ];
        records.extend(finishing(1, 6, 100, 110, 10));
        records.push(go_reset(7, GoOutcome::Accepted, 150, 15));
        records.extend([
            Record::Claimed {
                worker: 2,
                id: "a".into(),
                version: 8,
                at: 19,
            },
            start(2, 0, "a", "k", 20, 200),
            end(2, 0, 30),
        ]);
        records.extend(finishing(2, 8, 160, 170, 31));
        records
    }

    #[test]
    fn a_rerun_after_a_go_reset_is_a_new_generation_not_a_second_completion() {
        let v = verdict_on(&reset_and_rerun(), completed(9));
        assert!(v.passed(), "{v}");
        assert_eq!((v.min_finishing_writes, v.max_finishing_writes), (1, 1));
        assert_eq!((v.generations, v.go_resets), (2, 1));
        assert_eq!(v.duplicate_successes, 0, "one success per generation");

        // The same ledger without the reset: completed twice, and run again
        // under a valid lease after its completion.
        let no_reset: Vec<Record> = reset_and_rerun()
            .into_iter()
            .filter(|r| !matches!(r, Record::GoWrite { .. }))
            .collect();
        let v = verdict_on(&no_reset, completed(9));
        assert_eq!(v.max_finishing_writes, 2);
        assert_eq!(v.violations.len(), 2, "{v}");
    }

    #[test]
    fn a_run_between_a_finish_and_the_go_reset_is_a_violation() {
        // Worker 3 starts at 12 under a valid lease: after the completion
        // (10), before the reset was even sent (15).
        let mut records = reset_and_rerun();
        records.extend([start(3, 0, "a", "k2", 12, 300), end(3, 0, 13)]);
        let v = verdict_on(&records, completed(9));
        assert_eq!(v.violations.len(), 1, "{v}");
        assert!(v.violations[0].contains("started again"), "{v}");
    }

    #[test]
    fn a_go_reset_of_unknown_outcome_is_placed_by_the_history() {
        let unknown = |records: Vec<Record>, update_time| -> Vec<Record> {
            records
                .into_iter()
                .map(|r| match r {
                    Record::GoWrite { read_version, .. } => go_reset(
                        read_version.unwrap_or(0),
                        GoOutcome::Unknown,
                        update_time,
                        15,
                    ),
                    other => other,
                })
                .collect()
        };
        // The task ran again from the version the reset read: it landed,
        // and the run is a generation of its own.
        let v = verdict_on(&unknown(reset_and_rerun(), 0), completed(9));
        assert!(v.passed(), "{v}");
        assert_eq!((v.go_unknown, v.generations), (1, 2));
        assert_eq!(v.unproven.len(), 2, "{v}");
        assert!(v.unproven[1].contains("landed"), "{v}");

        // Nothing ran after it: it did not land, and one generation it is.
        let once: Vec<Record> = reset_and_rerun().into_iter().take(7).collect();
        let v = verdict_on(&unknown(once, 0), completed(7));
        assert!(v.passed(), "{v}");
        assert_eq!(v.generations, 1);
        assert!(v.unproven[1].contains("did not land"), "{v}");

        // A later reset of the same version was accepted: this one did not
        // land, and the accepted one makes the generation.
        let mut twice = unknown(reset_and_rerun(), 0);
        let at = twice
            .iter()
            .position(|r| matches!(r, Record::GoWrite { .. }))
            .expect("the reset");
        let mut accepted = go_reset(7, GoOutcome::Accepted, 150, 16);
        if let Record::GoWrite { seq, .. } = &mut accepted {
            *seq = 1;
        }
        twice.insert(at + 1, accepted);
        let v = verdict_on(&twice, completed(9));
        assert!(v.passed(), "{v}");
        assert_eq!((v.go_resets, v.generations), (1, 2));
        assert!(v.unproven[1].contains("did not land"), "{v}");
    }
}

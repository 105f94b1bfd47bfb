//! Each task's chain of writes, rebuilt from the ledger.
//!
//! Every write oncetask makes (a claim inside the store, an outcome, a
//! cancel) moves a task from version `v` to `v + 1`, and the store refuses a
//! write that expects another version. So the stored history of a task is a
//! chain of steps from the version it was created with to the version it
//! has at the end, one write per step. Each step's writer is found in the
//! ledger ([`crate::observe::RecordingStore`] writes it):
//!
//! * a claim the store returned, or a write the store answered "applied":
//!   *confirmed*;
//! * otherwise a write that was sent for that version and not refused (its
//!   answer was lost to a kill or a server crash): *decided without an
//!   answer* when all such writes agree on whether they finish the task;
//! * otherwise no line explains the step: a claim whose answer was lost
//!   (every other write is recorded before it is sent).
//!
//! From the chain the checks count *finishing writes*, steps that left the
//! task completed, failed or cancelled. A finished task must have exactly
//! one, as its last step: that is "completed exactly once", proven for every
//! write including those whose answer never arrived. Two writes confirmed
//! for one step, or a confirmed write outside the chain (a lost update), are
//! violations too.

use std::collections::HashMap;

use oncetask::Task;

use crate::ledger::Record;

/// More steps than this between a recorded create and the stored version
/// mean the create is not this task's (versions start at random values).
const MAX_STEPS: u64 = 1_000_000;

/// A write sent by some worker, with the store's answer if one arrived.
#[derive(Debug, Clone, Copy)]
struct Sent {
    expected: u64,
    finishes: bool,
    at: i64,
    answer: Option<bool>,
}

/// The ledger's lines about one task's writes.
#[derive(Debug, Default)]
struct TaskWrites {
    created: Vec<u64>,
    /// Stored versions after claims the store returned.
    claimed: Vec<u64>,
    sent: Vec<Sent>,
}

/// Every write the ledger recorded, by task.
#[derive(Debug, Default)]
pub struct Writes<'a> {
    by_task: HashMap<&'a str, TaskWrites>,
}

/// One task's chain, as far as the ledger explains it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// Steps from the created version to the stored one.
    pub steps: u64,
    /// Steps that left the task finished.
    pub finishing: usize,
    /// When the first finishing write was sent (µs), if any.
    pub finished_at: Option<i64>,
    /// Whether the last step's writer was confirmed by the store.
    pub last_confirmed: bool,
    /// Steps decided from the writes sent, without the store's answer.
    pub unanswered: u64,
    /// Steps no line explains (claims whose answer was lost).
    pub unlogged: u64,
    /// Steps whose unanswered writes disagree on finishing the task (not
    /// the last step; counted as not finishing).
    pub ambiguous: u64,
    /// Broken promises, in words.
    pub problems: Vec<String>,
}

impl<'a> Writes<'a> {
    /// Indexes the create, claim, write and answer lines of `records`.
    pub fn from_records(records: &'a [Record]) -> Self {
        let mut answers: HashMap<(u32, u64), bool> = HashMap::new();
        for record in records {
            if let Record::Answer {
                worker,
                seq,
                applied,
                ..
            } = record
            {
                answers.insert((*worker, *seq), *applied);
            }
        }
        let mut writes = Writes::default();
        for record in records {
            match record {
                Record::Create { id, version, .. } => writes.of(id).created.push(*version),
                Record::Claimed { id, version, .. } => writes.of(id).claimed.push(*version),
                Record::Write {
                    worker,
                    seq,
                    id,
                    expected,
                    finishes,
                    at,
                    ..
                } => writes.of(id).sent.push(Sent {
                    expected: *expected,
                    finishes: *finishes,
                    at: *at,
                    answer: answers.get(&(*worker, *seq)).copied(),
                }),
                _ => {}
            }
        }
        writes
    }

    fn of(&mut self, id: &'a str) -> &mut TaskWrites {
        self.by_task.entry(id).or_default()
    }

    /// Rebuilds the chain of `task` (its final stored state; `finished`
    /// says whether that state is completed, failed or cancelled).
    pub fn trace(&self, task: &Task, finished: bool) -> Trace {
        let mut trace = Trace::default();
        let empty = TaskWrites::default();
        let writes = self.by_task.get(task.id.as_str()).unwrap_or(&empty);
        let stored = task.version;
        let Some((steps, start)) = writes
            .created
            .iter()
            .map(|&v| (stored.wrapping_sub(v), v))
            .filter(|&(steps, _)| steps <= MAX_STEPS)
            .min()
        else {
            trace.problems.push(format!(
                "{}: no recorded create leads to its stored version {stored}",
                task.id
            ));
            return trace;
        };
        trace.steps = steps;
        let in_chain = |expected: u64| expected.wrapping_sub(start) < steps;

        for &after in &writes.claimed {
            if !in_chain(after.wrapping_sub(1)) {
                trace.problems.push(format!(
                    "{}: a claim to version {after} was confirmed but is not in its stored history (created {start}, stored {stored})",
                    task.id
                ));
            }
        }
        for sent in &writes.sent {
            if sent.answer == Some(true) && !in_chain(sent.expected) {
                trace.problems.push(format!(
                    "{}: a write from version {} was confirmed but is not in its stored history (created {start}, stored {stored})",
                    task.id, sent.expected
                ));
            }
        }

        for step in 0..steps {
            let from = start.wrapping_add(step);
            let last = step + 1 == steps;
            let claims = writes
                .claimed
                .iter()
                .filter(|&&after| after == from.wrapping_add(1))
                .count();
            let mut applied = writes
                .sent
                .iter()
                .filter(|s| s.expected == from && s.answer == Some(true));
            let first_applied = applied.next();
            let confirmed = claims + first_applied.map_or(0, |_| 1) + applied.count();
            if confirmed > 1 {
                trace.problems.push(format!(
                    "{}: {confirmed} writes were confirmed from version {from}",
                    task.id
                ));
            }
            // The step's writer: (finishes, sent at), or None for a claim.
            let writer: Option<(bool, i64)> = if let Some(sent) = first_applied {
                Some((sent.finishes, sent.at))
            } else if claims > 0 {
                None
            } else {
                let unanswered: Vec<&Sent> = writes
                    .sent
                    .iter()
                    .filter(|s| s.expected == from && s.answer.is_none())
                    .collect();
                let finishing = unanswered.iter().filter(|s| s.finishes).count();
                let earliest = |finishes: bool| {
                    unanswered
                        .iter()
                        .filter(|s| s.finishes == finishes)
                        .map(|s| s.at)
                        .min()
                };
                if unanswered.is_empty() {
                    trace.unlogged += 1;
                    None
                } else if finishing == 0 {
                    trace.unanswered += 1;
                    earliest(false).map(|at| (false, at))
                } else if finishing == unanswered.len() || (last && finished) {
                    // On the last step of a finished task only a finishing
                    // write can have been the writer.
                    trace.unanswered += 1;
                    earliest(true).map(|at| (true, at))
                } else {
                    trace.ambiguous += 1;
                    earliest(false).map(|at| (false, at))
                }
            };
            if last {
                trace.last_confirmed = confirmed > 0;
            }
            if let Some((true, at)) = writer {
                trace.finishing += 1;
                trace.finished_at.get_or_insert(at);
                if !last {
                    trace.problems.push(format!(
                        "{}: was written again after a write from version {from} finished it",
                        task.id
                    ));
                }
            }
        }
        if finished && trace.finishing == 0 {
            trace.problems.push(format!(
                "{} is finished, yet no finishing write of its history explains it",
                task.id
            ));
        }
        trace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(id: &str, version: u64) -> Record {
        Record::Create {
            worker: 0,
            id: id.into(),
            version,
            at: 0,
        }
    }

    fn claimed(id: &str, version: u64) -> Record {
        Record::Claimed {
            worker: 1,
            id: id.into(),
            version,
            at: 0,
        }
    }

    fn write(worker: u32, seq: u64, id: &str, expected: u64, finishes: bool, at: i64) -> Record {
        Record::Write {
            worker,
            seq,
            id: id.into(),
            expected,
            status: if finishes { "completed" } else { "pending" }.into(),
            finishes,
            fence: None,
            at,
        }
    }

    fn answer(worker: u32, seq: u64, applied: bool) -> Record {
        Record::Answer {
            worker,
            seq,
            applied,
            revision: None,
            at: 0,
        }
    }

    fn stored(id: &str, version: u64) -> Task {
        let mut task = Task::new(id, "chaos", "env", chrono::Utc::now());
        task.version = version;
        task
    }

    fn trace(records: &[Record], version: u64, finished: bool) -> Trace {
        Writes::from_records(records).trace(&stored("a", version), finished)
    }

    #[test]
    fn a_claim_and_a_confirmed_completion_make_one_finishing_write() {
        let t = trace(
            &[
                create("a", 10),
                claimed("a", 11),
                write(1, 0, "a", 11, true, 50),
                answer(1, 0, true),
            ],
            12,
            true,
        );
        assert_eq!(t.problems, Vec::<String>::new());
        assert_eq!((t.steps, t.finishing, t.finished_at), (2, 1, Some(50)));
        assert!(t.last_confirmed);
    }

    #[test]
    fn a_completion_whose_answer_was_lost_is_still_counted_once() {
        // Worker 1's completion from 11 got no answer; worker 2's stale one was refused.
        let t = trace(
            &[
                create("a", u64::MAX),
                claimed("a", 0),
                write(1, 0, "a", 0, true, 50),
                write(2, 0, "a", 0, true, 60),
                answer(2, 0, false),
            ],
            1,
            true,
        );
        assert_eq!(t.problems, Vec::<String>::new());
        assert_eq!((t.steps, t.finishing, t.unanswered), (2, 1, 1));
        assert!(!t.last_confirmed);
    }

    #[test]
    fn a_step_nothing_explains_is_a_claim_whose_answer_was_lost() {
        let t = trace(
            &[
                create("a", 5),
                write(1, 0, "a", 6, true, 50),
                answer(1, 0, true),
            ],
            7,
            true,
        );
        assert_eq!(t.problems, Vec::<String>::new());
        assert_eq!((t.unlogged, t.finishing), (1, 1));
    }

    #[test]
    fn a_write_after_the_task_finished_is_a_second_completion() {
        let t = trace(
            &[
                create("a", 5),
                claimed("a", 6),
                write(1, 0, "a", 6, true, 50),
                answer(1, 0, true),
                write(2, 0, "a", 7, true, 70),
            ],
            8,
            true,
        );
        assert_eq!(t.finishing, 2);
        assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
    }

    #[test]
    fn two_writes_confirmed_from_one_version_and_a_lost_update_are_violations() {
        let twice = trace(
            &[
                create("a", 5),
                claimed("a", 6),
                write(1, 0, "a", 6, true, 50),
                answer(1, 0, true),
                write(2, 0, "a", 6, true, 55),
                answer(2, 0, true),
            ],
            7,
            true,
        );
        assert_eq!(twice.problems.len(), 1, "{:?}", twice.problems);
        // The store acknowledged a write from 7, but the task is at 7: lost.
        let lost = trace(
            &[
                create("a", 5),
                claimed("a", 6),
                claimed("a", 7),
                write(1, 0, "a", 7, true, 50),
                answer(1, 0, true),
            ],
            7,
            false,
        );
        assert_eq!(lost.problems.len(), 1, "{:?}", lost.problems);
    }

    #[test]
    fn a_finished_task_without_a_finishing_write_or_a_create_is_a_violation() {
        let unexplained = trace(&[create("a", 5), claimed("a", 6)], 6, true);
        assert_eq!(unexplained.problems.len(), 1, "{:?}", unexplained.problems);
        let uncreated = trace(&[claimed("a", 6)], 6, true);
        assert_eq!(uncreated.problems.len(), 1, "{:?}", uncreated.problems);
    }

    #[test]
    fn the_create_closest_below_the_stored_version_starts_the_chain() {
        // A retried create sent a second initial version; the first was stored.
        let t = trace(
            &[
                create("a", 100),
                create("a", 9_000_000_000),
                claimed("a", 101),
                write(1, 0, "a", 101, true, 50),
                answer(1, 0, true),
            ],
            102,
            true,
        );
        assert_eq!(t.problems, Vec::<String>::new());
        assert_eq!(t.steps, 2);
    }
}

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
//! task completed, failed or cancelled, per *run generation*. A task's first
//! generation starts at its create; each reset by the Go-shaped writer
//! ([`crate::go_writer`]) that the store accepted starts another, since a
//! reset legitimately runs a finished task again. Go writes never bump the
//! version, so they are not steps: a reset sits between the step into the
//! version it read and the next step (it lands on a finished document, which
//! no Rust write changes). A finished generation must have exactly one
//! finishing write, as its last step: that is "completed exactly once per
//! run", proven for every write including those whose answer never arrived.
//! Two writes confirmed for one step, or a confirmed write outside the chain
//! (a lost update), are violations too.
//!
//! Against the Go writer, a Rust write must never overwrite a Go write: each
//! Rust write is conditional on the revision (Firestore's update time) it
//! was decided on, so one applied after a Go write must have been decided on
//! the document as that Go write left it, or later. Hence the checks: an
//! answered Rust write was never decided before, and applied after, an
//! accepted Go write; every write of a generation started by a Go reset was
//! decided on the reset document or later; a Go cancel stays: every later
//! read of the writer finds the task cancelled until a Go reset, and without
//! a later reset the task ends cancelled with Go's `cancelledAt`.
//!
//! A Go reset whose call failed without an answer is placed from the
//! history: it landed if the task was written again from the version it
//! read (nothing else un-finishes a finished task) and no later reset of
//! that version was accepted. Such placements are reported, as inferred.

use std::collections::HashMap;

use oncetask::Task;

use crate::go_writer::parse_revision;
use crate::ledger::{GoOp, GoOutcome, Record};

/// More steps than this between a recorded create and the stored version
/// mean the create is not this task's (versions start at random values).
const MAX_STEPS: u64 = 1_000_000;

/// A write sent by some worker, with the store's answer if one arrived.
#[derive(Debug, Clone)]
struct Sent<'a> {
    expected: u64,
    finishes: bool,
    at: i64,
    answer: Option<bool>,
    /// The revision it was conditional on (raw, decimal).
    fence: Option<&'a str>,
    /// The revision it produced, when applied and answered.
    revision: Option<&'a str>,
}

/// One operation of the Go-shaped writer.
#[derive(Debug, Clone)]
struct GoSeen<'a> {
    seq: u64,
    op: GoOp,
    read_version: Option<u64>,
    read_cancelled: bool,
    outcome: GoOutcome,
    update_time: Option<i64>,
    cancelled_at: Option<&'a str>,
    sent_at: i64,
}

/// The ledger's lines about one task's writes.
#[derive(Debug, Default)]
struct TaskWrites<'a> {
    created: Vec<u64>,
    /// Stored versions after claims the store returned.
    claimed: Vec<u64>,
    sent: Vec<Sent<'a>>,
    /// The Go writer's operations, in the order it made them.
    go: Vec<GoSeen<'a>>,
}

/// Every write the ledger recorded, by task.
#[derive(Debug, Default)]
pub struct Writes<'a> {
    by_task: HashMap<&'a str, TaskWrites<'a>>,
}

/// One run generation of a task: from its create or a Go reset to the next
/// Go reset or the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generation {
    /// Steps that left the task finished (must be 1 when `finished`).
    pub finishing: usize,
    /// When the first finishing write was sent (µs), if any.
    pub finished_at: Option<i64>,
    /// Whether the last step's writer was confirmed by the store.
    pub last_confirmed: bool,
    /// Whether it must have finished: a Go reset followed it (Go resets
    /// only finished tasks), or it is the last of a finished task.
    pub finished: bool,
    /// When the Go reset that ended it was sent (µs), if one did.
    pub reset_sent_at: Option<i64>,
}

/// One task's chain, as far as the ledger explains it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// Steps from the created version to the stored one.
    pub steps: u64,
    /// Finishing steps, over all generations.
    pub finishing: usize,
    /// The run generations, oldest first (one, unless Go reset the task).
    pub generations: Vec<Generation>,
    /// Steps decided from the writes sent, without the store's answer.
    pub unanswered: u64,
    /// Steps no line explains (claims whose answer was lost).
    pub unlogged: u64,
    /// Steps whose unanswered writes disagree on finishing the task (not
    /// the last step of a generation; counted as not finishing).
    pub ambiguous: u64,
    /// Go writes the store accepted.
    pub go_accepted: usize,
    /// How Go resets of unknown outcome (their call failed) were placed:
    /// from the history, not from the store's answer.
    pub inferred: Vec<String>,
    /// Broken promises, in words.
    pub problems: Vec<String>,
}

/// The writer of one step, as far as the ledger tells.
enum Writer<'w, 'a> {
    /// A claim (confirmed, or the only explanation left).
    Claim,
    /// A conditional write; `candidates` are the writes that may have been
    /// it (one when the store confirmed it).
    Swap {
        finishes: bool,
        at: i64,
        candidates: Vec<&'w Sent<'a>>,
    },
}

impl<'a> Writes<'a> {
    /// Indexes the create, claim, write, answer and Go-writer lines of
    /// `records`.
    pub fn from_records(records: &'a [Record]) -> Self {
        let mut answers: HashMap<(u32, u64), (bool, Option<&'a str>)> = HashMap::new();
        for record in records {
            if let Record::Answer {
                worker,
                seq,
                applied,
                revision,
                ..
            } = record
            {
                answers.insert((*worker, *seq), (*applied, revision.as_deref()));
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
                    fence,
                    at,
                    ..
                } => {
                    let answer = answers.get(&(*worker, *seq)).copied();
                    writes.of(id).sent.push(Sent {
                        expected: *expected,
                        finishes: *finishes,
                        at: *at,
                        answer: answer.map(|(applied, _)| applied),
                        fence: fence.as_deref(),
                        revision: answer.and_then(|(_, revision)| revision),
                    });
                }
                Record::GoWrite {
                    seq,
                    id,
                    op,
                    read_version,
                    read_cancelled,
                    outcome,
                    update_time,
                    cancelled_at,
                    sent_at,
                    ..
                } => writes.of(id).go.push(GoSeen {
                    seq: *seq,
                    op: *op,
                    read_version: *read_version,
                    read_cancelled: *read_cancelled,
                    outcome: *outcome,
                    update_time: *update_time,
                    cancelled_at: cancelled_at.as_deref(),
                    sent_at: *sent_at,
                }),
                _ => {}
            }
        }
        for task in writes.by_task.values_mut() {
            task.go.sort_by_key(|g| g.seq);
        }
        writes
    }

    fn of(&mut self, id: &'a str) -> &mut TaskWrites<'a> {
        self.by_task.entry(id).or_default()
    }

    /// Rebuilds the chain of `task` (its final stored state; `finished`
    /// says whether that state is completed, failed or cancelled).
    pub fn trace(&self, task: &Task, finished: bool) -> Trace {
        let mut trace = Trace::default();
        let empty = TaskWrites::default();
        let writes = self.by_task.get(task.id.as_str()).unwrap_or(&empty);
        let id = task.id.as_str();
        let stored = task.version;
        trace.go_accepted = writes
            .go
            .iter()
            .filter(|g| g.outcome == GoOutcome::Accepted)
            .count();
        let Some((steps, start)) = writes
            .created
            .iter()
            .map(|&v| (stored.wrapping_sub(v), v))
            .filter(|&(steps, _)| steps <= MAX_STEPS)
            .min()
        else {
            trace.problems.push(format!(
                "{id}: no recorded create leads to its stored version {stored}"
            ));
            return trace;
        };
        trace.steps = steps;
        let in_chain = |expected: u64| expected.wrapping_sub(start) < steps;

        for &after in &writes.claimed {
            if !in_chain(after.wrapping_sub(1)) {
                trace.problems.push(format!(
                    "{id}: a claim to version {after} was confirmed but is not in its stored history (created {start}, stored {stored})"
                ));
            }
        }
        for sent in &writes.sent {
            if sent.answer == Some(true) && !in_chain(sent.expected) {
                trace.problems.push(format!(
                    "{id}: a write from version {} was confirmed but is not in its stored history (created {start}, stored {stored})",
                    sent.expected
                ));
            }
        }

        // Generations: each accepted Go reset ends one after the step into
        // the version it read.
        let mut resets: Vec<(u64, &GoSeen<'a>)> = Vec::new();
        for reset in writes.go.iter().filter(|g| {
            g.op == GoOp::Reset && matches!(g.outcome, GoOutcome::Accepted | GoOutcome::Unknown)
        }) {
            let Some(version) = reset.read_version else {
                trace
                    .problems
                    .push(format!("{id}: Go reset #{} read no version", reset.seq));
                continue;
            };
            let at = version.wrapping_sub(start);
            if reset.outcome == GoOutcome::Unknown {
                // Nothing else un-finishes a finished task: it landed if
                // the task was written again from the version it read,
                // unless a later reset of that version was accepted (Go
                // would not have found the task finished then).
                let reset_again = writes.go.iter().any(|g| {
                    g.seq > reset.seq
                        && g.op == GoOp::Reset
                        && g.outcome == GoOutcome::Accepted
                        && g.read_version == Some(version)
                });
                let landed = at > 0 && at < steps && !reset_again;
                trace.inferred.push(format!(
                    "{id}: Go reset #{} of version {version}, outcome unknown, {}",
                    reset.seq,
                    if landed {
                        "landed: the task was written again from that version"
                    } else {
                        "did not land"
                    }
                ));
                if !landed {
                    continue;
                }
            }
            if at == 0 || at > steps {
                trace.problems.push(format!(
                    "{id}: Go reset #{} of version {version} is outside its stored history (created {start}, stored {stored})",
                    reset.seq
                ));
            } else if resets.last().is_some_and(|&(last, _)| at < last) {
                trace.problems.push(format!(
                    "{id}: Go reset #{} of version {version} came after a reset of a later version",
                    reset.seq
                ));
            } else {
                resets.push((at, reset));
            }
        }
        let count = resets.len() + 1;
        trace.generations = (0..count)
            .map(|g| Generation {
                finished: g + 1 < count || finished,
                reset_sent_at: resets.get(g).map(|(_, r)| r.sent_at),
                ..Generation::default()
            })
            .collect();
        let end_of = |g: usize| resets.get(g).map_or(steps, |&(at, _)| at);

        let mut g = 0;
        for step in 0..steps {
            while g + 1 < count && step >= end_of(g) {
                g += 1;
            }
            let from = start.wrapping_add(step);
            let last = step + 1 == end_of(g);
            let must_finish = last && trace.generations[g].finished;
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
                    "{id}: {confirmed} writes were confirmed from version {from}"
                ));
            }
            let writer = if let Some(sent) = first_applied {
                Writer::Swap {
                    finishes: sent.finishes,
                    at: sent.at,
                    candidates: vec![sent],
                }
            } else if claims > 0 {
                Writer::Claim
            } else {
                let unanswered: Vec<&Sent<'a>> = writes
                    .sent
                    .iter()
                    .filter(|s| s.expected == from && s.answer.is_none())
                    .collect();
                let finishing = unanswered.iter().filter(|s| s.finishes).count();
                // Any of them may have been the writer, whatever it wrote.
                let writer = |finishes: bool| Writer::Swap {
                    finishes,
                    at: unanswered
                        .iter()
                        .filter(|s| s.finishes == finishes)
                        .map(|s| s.at)
                        .min()
                        .unwrap_or(0),
                    candidates: unanswered.clone(),
                };
                if unanswered.is_empty() {
                    trace.unlogged += 1;
                    Writer::Claim
                } else if finishing == 0 {
                    trace.unanswered += 1;
                    writer(false)
                } else if finishing == unanswered.len() || must_finish {
                    // On the last step of a generation that finished only a
                    // finishing write can have been the writer.
                    trace.unanswered += 1;
                    writer(true)
                } else {
                    trace.ambiguous += 1;
                    writer(false)
                }
            };
            if last {
                trace.generations[g].last_confirmed = confirmed > 0;
            }
            let Writer::Swap {
                finishes,
                at,
                candidates,
            } = writer
            else {
                continue;
            };
            // A write of a generation a Go reset started must have been
            // decided on the reset document or later.
            if let Some(reset_time) = g
                .checked_sub(1)
                .and_then(|r| resets.get(r))
                .and_then(|(_, r)| r.update_time)
            {
                let after_reset = |s: &&Sent<'_>| {
                    s.fence
                        .and_then(parse_revision)
                        .is_some_and(|(_, time)| time >= reset_time)
                };
                if !candidates.iter().any(after_reset) {
                    trace.problems.push(format!(
                        "{id}: a Rust write from version {from} was not decided on the document Go reset (update time {reset_time} ns): it overwrote the reset"
                    ));
                }
            }
            if finishes {
                trace.finishing += 1;
                let generation = &mut trace.generations[g];
                generation.finishing += 1;
                generation.finished_at.get_or_insert(at);
                if !last {
                    trace.problems.push(format!(
                        "{id}: was written again after a write from version {from} finished it"
                    ));
                }
            }
        }
        for (g, generation) in trace.generations.iter().enumerate() {
            if generation.finished && generation.finishing == 0 {
                trace.problems.push(if count == 1 {
                    format!("{id} is finished, yet no finishing write of its history explains it")
                } else {
                    format!(
                        "{id}: run generation {g} is finished, yet no finishing write of its history explains it"
                    )
                });
            }
        }
        if !writes.go.is_empty() {
            check_fences(id, writes, &mut trace.problems);
            check_cancels(task, writes, &mut trace.problems);
        }
        trace
    }
}

/// No answered Rust write was decided before, and applied after, an
/// accepted Go write (it would have overwritten it); and every applied
/// write's fence decodes as the version it expected (the revision's reading
/// in [`parse_revision`] still holds).
fn check_fences(id: &str, writes: &TaskWrites<'_>, problems: &mut Vec<String>) {
    let go_times: Vec<(u64, GoOp, i64)> = writes
        .go
        .iter()
        .filter(|g| g.outcome == GoOutcome::Accepted)
        .filter_map(|g| g.update_time.map(|t| (g.seq, g.op, t)))
        .collect();
    for sent in writes.sent.iter().filter(|s| s.answer == Some(true)) {
        let Some((version, decided)) = sent.fence.and_then(parse_revision) else {
            problems.push(format!(
                "{id}: a Rust write from version {} was not fenced on a revision, on a document Go writes",
                sent.expected
            ));
            continue;
        };
        if version != sent.expected {
            problems.push(format!(
                "{id}: the fence of a write from version {} reads as version {version}: revisions are not what the checks assume",
                sent.expected
            ));
            continue;
        }
        let Some((_, landed)) = sent.revision.and_then(parse_revision) else {
            continue;
        };
        for &(seq, op, go) in &go_times {
            if decided < go && go < landed {
                problems.push(format!(
                    "{id}: a Rust write from version {} decided at update time {decided} ns landed at {landed} ns, over Go {op:?} #{seq} at {go} ns",
                    sent.expected
                ));
            }
        }
    }
}

/// A Go cancel the store accepted stays until a Go reset: every later read
/// of the writer finds the task cancelled, and without a later reset the
/// task ends cancelled with the cancel's `cancelledAt`.
fn check_cancels(task: &Task, writes: &TaskWrites<'_>, problems: &mut Vec<String>) {
    let id = task.id.as_str();
    let mut standing: Option<&GoSeen<'_>> = None;
    for go in &writes.go {
        if let Some(cancel) = standing
            && !go.read_cancelled
        {
            problems.push(format!(
                "{id}: Go cancel #{} is gone: Go #{} read the task not cancelled",
                cancel.seq, go.seq
            ));
            // Reported once.
            standing = None;
        }
        match (go.op, go.outcome) {
            (GoOp::Cancel, GoOutcome::Accepted) => standing = Some(go),
            // A reset clears a cancel; one that may have landed might have.
            (GoOp::Reset, GoOutcome::Accepted | GoOutcome::Unknown) => standing = None,
            _ => {}
        }
    }
    let Some(cancel) = standing else {
        return;
    };
    if !task.is_cancelled {
        problems.push(format!(
            "{id}: Go cancel #{} is gone: the task ended not cancelled",
            cancel.seq
        ));
        return;
    }
    let wrote = cancel
        .cancelled_at
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok());
    if wrote.map(|t| t.with_timezone(&chrono::Utc)) != task.cancelled_at {
        problems.push(format!(
            "{id}: Go cancel #{} wrote cancelledAt {:?}, the task ended with {:?}",
            cancel.seq, cancel.cancelled_at, task.cancelled_at
        ));
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

    /// A Firestore revision: `version` above an update time of `nanos`.
    fn rev(version: u64, nanos: i64) -> String {
        ((u128::from(version) << 64) | u128::from(nanos.unsigned_abs())).to_string()
    }

    /// A write of worker 1 from `expected`, decided on update time
    /// `decided`, finishing the task or not, sent at `at`.
    fn fenced(seq: u64, expected: u64, decided: i64, finishes: bool, at: i64) -> Record {
        Record::Write {
            worker: 1,
            seq,
            id: "a".into(),
            expected,
            status: if finishes { "completed" } else { "leased" }.into(),
            finishes,
            fence: Some(rev(expected, decided)),
            at,
        }
    }

    /// The store applied write `seq` of worker 1, making update time `landed`.
    fn landed(seq: u64, version: u64, landed: i64) -> Record {
        Record::Answer {
            worker: 1,
            seq,
            applied: true,
            revision: Some(rev(version, landed)),
            at: 0,
        }
    }

    /// An operation of the Go writer on "a", having read `read_version`.
    fn go(seq: u64, op: GoOp, read_version: u64, outcome: GoOutcome, update_time: i64) -> Record {
        Record::GoWrite {
            seq,
            id: "a".into(),
            op,
            read_version: Some(read_version),
            read_done: op == GoOp::Reset,
            read_cancelled: false,
            read_leased: false,
            outcome,
            update_time: (outcome == GoOutcome::Accepted).then_some(update_time),
            cancelled_at: (op == GoOp::Cancel && outcome == GoOutcome::Accepted)
                .then(|| "2026-01-01T00:00:05Z".into()),
            error: None,
            sent_at: update_time / 1000,
            at: update_time / 1000,
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
        assert_eq!(t.generations.len(), 1);
        let g = &t.generations[0];
        assert_eq!((t.steps, g.finishing, g.finished_at), (2, 1, Some(50)));
        assert!(g.last_confirmed);
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
        assert!(!t.generations[0].last_confirmed);
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

    /// Task "a": created at 5, claimed to 6, completed from 6 (decided on
    /// update time 100, landed at 110); then Go resets it at 120 (read at
    /// version 7); claimed to 8 and completed from 8 (decided 130, landed
    /// 140): stored at 9.
    fn reset_and_run_again() -> Vec<Record> {
        vec![
            create("a", 5),
            claimed("a", 6),
            fenced(0, 6, 100, true, 50),
            landed(0, 7, 110),
            go(0, GoOp::Reset, 7, GoOutcome::Accepted, 120),
            claimed("a", 8),
            fenced(1, 8, 130, true, 70),
            landed(1, 9, 140),
        ]
    }

    fn finished(version: u64, cancelled: bool) -> Task {
        let mut task = stored("a", version);
        task.done_at = Some(chrono::Utc::now());
        task.is_cancelled = cancelled;
        task.cancelled_at = cancelled.then(|| t("2026-01-01T00:00:05Z"));
        task
    }

    fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("a time")
            .with_timezone(&chrono::Utc)
    }

    #[test]
    fn a_go_reset_starts_a_run_generation_with_its_own_finishing_write() {
        let records = reset_and_run_again();
        let t = Writes::from_records(&records).trace(&finished(9, false), true);
        assert_eq!(t.problems, Vec::<String>::new());
        assert_eq!(t.generations.len(), 2);
        assert!(
            t.generations
                .iter()
                .all(|g| g.finishing == 1 && g.finished && g.last_confirmed)
        );
        assert_eq!(t.generations[0].reset_sent_at, Some(0));
        assert_eq!(t.go_accepted, 1);

        // Without the reset the second completion is a task completed twice.
        let no_reset: Vec<Record> = records
            .into_iter()
            .filter(|r| !matches!(r, Record::GoWrite { .. }))
            .collect();
        let t = Writes::from_records(&no_reset).trace(&finished(9, false), true);
        assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
    }

    #[test]
    fn a_generation_after_a_reset_needs_its_own_finishing_write() {
        // Reset at 7, claimed to 8, and nothing finished it: stored at 8 as
        // if done (the reset was lost without a trace).
        let records = vec![
            create("a", 5),
            claimed("a", 6),
            fenced(0, 6, 100, true, 50),
            landed(0, 7, 110),
            go(0, GoOp::Reset, 7, GoOutcome::Accepted, 120),
            claimed("a", 8),
        ];
        let t = Writes::from_records(&records).trace(&finished(8, false), true);
        assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
        assert!(t.problems[0].contains("generation 1"), "{:?}", t.problems);
    }

    #[test]
    fn a_rust_write_decided_before_a_go_reset_and_applied_after_it_is_a_lost_go_write() {
        // A stale completion from 7, decided on update time 110 (before the
        // reset at 120), lands after the reset; its answer is lost. The
        // generation the reset started still has one finishing write: only
        // the fence rule sees that the reset was overwritten.
        let records = vec![
            create("a", 5),
            claimed("a", 6),
            fenced(0, 6, 100, true, 50),
            landed(0, 7, 110),
            go(0, GoOp::Reset, 7, GoOutcome::Accepted, 120),
            fenced(1, 7, 110, true, 60),
        ];
        let t = Writes::from_records(&records).trace(&finished(8, false), true);
        assert_eq!(t.generations.iter().map(|g| g.finishing).sum::<usize>(), 2);
        assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
        assert!(
            t.problems[0].contains("overwrote the reset"),
            "{:?}",
            t.problems
        );

        // Decided on the reset document (update time 120): legitimate.
        let mut fine = records;
        fine.pop();
        fine.extend([claimed("a", 8), fenced(1, 8, 125, true, 60)]);
        let t = Writes::from_records(&fine).trace(&finished(9, false), true);
        assert_eq!(t.problems, Vec::<String>::new());
    }

    #[test]
    fn a_rust_write_over_a_go_cancel_is_a_lost_go_write() {
        // Claimed to 6 (update time 100); Go cancels at 105; a completion
        // decided on 100 lands at 110 and the task ends completed.
        let lost = vec![
            create("a", 5),
            claimed("a", 6),
            go(0, GoOp::Cancel, 6, GoOutcome::Accepted, 105),
            fenced(0, 6, 100, true, 50),
            landed(0, 7, 110),
        ];
        let t = Writes::from_records(&lost).trace(&finished(7, false), true);
        assert_eq!(t.problems.len(), 2, "{:?}", t.problems);
        assert!(t.problems.iter().any(|p| p.contains("over Go Cancel #0")));
        assert!(t.problems.iter().any(|p| p.contains("ended not cancelled")));

        // As it must go: the completion fenced on 100 conflicts, is decided
        // again on the cancelled document (105) and ends the task cancelled.
        let kept = vec![
            create("a", 5),
            claimed("a", 6),
            go(0, GoOp::Cancel, 6, GoOutcome::Accepted, 105),
            fenced(0, 6, 100, true, 50),
            answer(1, 0, false),
            fenced(1, 6, 105, true, 51),
            landed(1, 7, 110),
        ];
        let t = Writes::from_records(&kept).trace(&finished(7, true), true);
        assert_eq!(t.problems, Vec::<String>::new());

        // Ended cancelled, but with another cancelledAt: overwritten too.
        let mut other = finished(7, true);
        other.cancelled_at = Some(t_other());
        let t = Writes::from_records(&kept).trace(&other, true);
        assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
    }

    fn t_other() -> chrono::DateTime<chrono::Utc> {
        t("2026-01-01T00:00:09Z")
    }

    #[test]
    fn a_go_read_that_no_longer_finds_its_cancel_is_a_lost_go_write() {
        let mut records = vec![
            create("a", 5),
            claimed("a", 6),
            go(0, GoOp::Cancel, 6, GoOutcome::Accepted, 105),
            fenced(0, 6, 105, true, 50),
            landed(0, 7, 110),
            // Go's next read finds the task done but not cancelled.
            go(1, GoOp::Reset, 7, GoOutcome::Skipped, 0),
        ];
        let t = Writes::from_records(&records).trace(&finished(7, true), true);
        assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
        assert!(t.problems[0].contains("read the task not cancelled"));
        // Read cancelled, as it must be: fine.
        if let Some(Record::GoWrite { read_cancelled, .. }) = records.last_mut() {
            *read_cancelled = true;
        }
        let t = Writes::from_records(&records).trace(&finished(7, true), true);
        assert_eq!(t.problems, Vec::<String>::new());
    }
}

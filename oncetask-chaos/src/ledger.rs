//! The append-only ledger: what every worker did, kept outside the store.
//!
//! Each worker (process or in-process worker) appends JSON lines to its own
//! file, `<dir>/worker-<n>.jsonl`, one `write` per line, so nothing written
//! before a SIGKILL is lost (it sits in the page cache) and no two writers
//! share a file. The checker reads every file after the run.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::ChaosError;

/// Microseconds since the Unix epoch on this machine's clock (every worker
/// runs on the same machine, so their timestamps compare).
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// One ledger line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Record {
    /// A handler call began.
    Start {
        /// Worker number.
        worker: u32,
        /// Execution number, unique within the worker.
        exec: u64,
        /// Task id.
        id: String,
        /// Task kind.
        kind: String,
        /// Resource key, if any.
        key: Option<String>,
        /// The task's attempt count after the claim.
        attempt: u32,
        /// End of the lease the handler runs under (µs).
        lease_until: i64,
        /// When (µs).
        at: i64,
    },
    /// A handler call returned (`ok` = it succeeded), or its future was
    /// dropped by the time limit or a shutdown (`ok = false`, `dropped`).
    End {
        /// Worker number.
        worker: u32,
        /// The execution of the matching [`Record::Start`].
        exec: u64,
        /// Whether the handler returned success.
        ok: bool,
        /// Whether the call was cut off instead of returning.
        dropped: bool,
        /// When (µs).
        at: i64,
    },
    /// A task is about to be created (written before the call, whatever
    /// the store answers: a retried create carries a new initial version).
    Create {
        /// Worker number (0 is the coordinator).
        worker: u32,
        /// Task id.
        id: String,
        /// The version the task would be stored with.
        version: u64,
        /// When (µs).
        at: i64,
    },
    /// The store leased a task to this worker.
    Claimed {
        /// Worker number.
        worker: u32,
        /// Task id.
        id: String,
        /// The stored version after the claim.
        version: u64,
        /// When (µs).
        at: i64,
    },
    /// A conditional write is about to be sent: the task from `expected`
    /// to `expected + 1`.
    Write {
        /// Worker number (0 is the coordinator).
        worker: u32,
        /// Write number, unique within the worker (a retried write is a new
        /// one).
        seq: u64,
        /// Task id.
        id: String,
        /// The version the stored task must have.
        expected: u64,
        /// The status the write leaves the task in.
        status: String,
        /// Whether that status is final (completed, failed, cancelled).
        finishes: bool,
        /// The revision the write is conditional on ([`oncetask::backend::Revision`]'s
        /// raw value in decimal), on backends with revisions (Firestore):
        /// the stored state the write was decided on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<String>,
        /// When (µs).
        at: i64,
    },
    /// The store's answer to [`Record::Write`] `seq` of this worker. Absent
    /// when the call failed or the worker died first.
    Answer {
        /// Worker number.
        worker: u32,
        /// The write answered.
        seq: u64,
        /// Whether the store applied it.
        applied: bool,
        /// The revision the applied write produced (raw, decimal), on
        /// backends with revisions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<String>,
        /// When (µs).
        at: i64,
    },
    /// The manager discarded a stale outcome (its lease was lost).
    Fenced {
        /// Worker number.
        worker: u32,
        /// When (µs).
        at: i64,
    },
    /// One operation of the Go-shaped writer ([`crate::go_writer`]): what
    /// it read, whether Go's rules made it write, and the store's answer.
    GoWrite {
        /// Operation number, in the order the writer made them (one at a time).
        seq: u64,
        /// Task id.
        id: String,
        /// Cancel or reset.
        op: GoOp,
        /// The Rust `version` field of the document as read (absent if the
        /// document has none).
        read_version: Option<u64>,
        /// Whether the read document was done (`doneAt` non-empty).
        read_done: bool,
        /// Whether the read document was cancelled (`isCancelled`).
        read_cancelled: bool,
        /// Whether the read document was under a lease that had not ended
        /// (a cancel then lands while a handler runs).
        read_leased: bool,
        /// What became of the operation.
        outcome: GoOutcome,
        /// The document's update time after an accepted write (ns since the
        /// Unix epoch, Firestore's clock).
        update_time: Option<i64>,
        /// The `cancelledAt` an accepted cancel wrote (Go's whole-second
        /// RFC 3339).
        cancelled_at: Option<String>,
        /// The store's error, when the write was not accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// When the write was sent (µs); the read's time when skipped.
        sent_at: i64,
        /// When the answer arrived (µs).
        at: i64,
    },
}

/// What the Go-shaped writer did to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoOp {
    /// Go's `CancelTask` (docs/semantics.md S8.1).
    Cancel,
    /// Go's `ResetTask` (docs/semantics.md S10).
    Reset,
}

/// The fate of one Go-shaped operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoOutcome {
    /// Go's rules found nothing to do (a cancel of a done or cancelled
    /// task, a reset of a task not done): nothing was written.
    Skipped,
    /// The store accepted the write.
    Accepted,
    /// The store refused the write, so nothing landed: the document was
    /// gone, or contention outlasted the retries.
    Refused,
    /// The call failed without saying whether the write landed.
    Unknown,
}

/// Appends records to one worker's file.
#[derive(Debug)]
pub struct LedgerWriter {
    file: Mutex<File>,
}

impl LedgerWriter {
    /// Opens (creating) the file of `worker` in `dir`.
    pub fn open(dir: &Path, worker: u32) -> Result<Self, ChaosError> {
        Self::open_path(&file_of(dir, worker))
    }

    /// Opens (creating) the Go-shaped writer's file in `dir`
    /// (`go-writer.jsonl`).
    pub fn open_go_writer(dir: &Path) -> Result<Self, ChaosError> {
        Self::open_path(&dir.join("go-writer.jsonl"))
    }

    fn open_path(path: &Path) -> Result<Self, ChaosError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ChaosError::io(format!("open ledger {}", path.display()), e))?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    /// Appends `record` as one line with one `write` call. A failed write is
    /// reported on stderr, never a panic: the checker then sees less than
    /// happened and fails the run, which is the safe side.
    pub fn append(&self, record: &Record) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(e) => {
                eprintln!("ledger: cannot encode {record:?}: {e}");
                return;
            }
        };
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = file.write_all(&line) {
            eprintln!("ledger: cannot append: {e}");
        }
    }
}

fn file_of(dir: &Path, worker: u32) -> PathBuf {
    dir.join(format!("worker-{worker}.jsonl"))
}

/// Reads every record of every worker file in `dir`. A torn last line (a
/// worker killed mid-write) is skipped and counted.
pub fn read_all(dir: &Path) -> Result<(Vec<Record>, usize), ChaosError> {
    let mut records = Vec::new();
    let mut torn = 0;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ChaosError::io(format!("read ledger dir {}", dir.display()), e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| ChaosError::io("read ledger dir entry".into(), e))?
            .path();
        if path.extension().is_none_or(|ext| ext != "jsonl") {
            continue;
        }
        let file =
            File::open(&path).map_err(|e| ChaosError::io(format!("open {}", path.display()), e))?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| ChaosError::io(format!("read {}", path.display()), e))?;
            match serde_json::from_str(&line) {
                Ok(record) => records.push(record),
                Err(_) => torn += 1,
            }
        }
    }
    Ok((records, torn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_the_files_of_several_workers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = LedgerWriter::open(dir.path(), 1).expect("open 1");
        let b = LedgerWriter::open(dir.path(), 2).expect("open 2");
        let start = Record::Start {
            worker: 1,
            exec: 7,
            id: "t-1".into(),
            kind: "chaos".into(),
            key: Some("k:{x}".into()),
            attempt: 1,
            lease_until: 20,
            at: 10,
        };
        let fenced = Record::Fenced { worker: 2, at: 11 };
        let write = Record::Write {
            worker: 1,
            seq: 3,
            id: "t-1".into(),
            expected: 9,
            status: "completed".into(),
            finishes: true,
            fence: Some(u128::MAX.to_string()),
            at: 12,
        };
        let go = Record::GoWrite {
            seq: 0,
            id: "t-1".into(),
            op: GoOp::Cancel,
            read_version: Some(9),
            read_done: false,
            read_cancelled: false,
            read_leased: true,
            outcome: GoOutcome::Accepted,
            update_time: Some(1_767_225_605_123_456_789),
            cancelled_at: Some("2026-01-01T00:00:05Z".into()),
            error: None,
            sent_at: 13,
            at: 14,
        };
        a.append(&start);
        a.append(&write);
        b.append(&fenced);
        let go_ledger = LedgerWriter::open_go_writer(dir.path()).expect("open Go");
        go_ledger.append(&go);
        // A torn line, as a SIGKILL mid-write could leave.
        std::fs::write(dir.path().join("worker-3.jsonl"), b"{\"ev\":\"sta").expect("write");
        let (mut records, torn) = read_all(dir.path()).expect("read");
        records.sort_by_key(|r| match r {
            Record::Start { .. } => 0,
            Record::Write { .. } => 1,
            Record::Fenced { .. } => 2,
            _ => 3,
        });
        assert_eq!(records, vec![start, write, fenced, go]);
        // Lines of backends without revisions stay as they were.
        let answer = Record::Answer {
            worker: 1,
            seq: 3,
            applied: true,
            revision: None,
            at: 15,
        };
        let line = serde_json::to_string(&answer).expect("encode");
        assert!(!line.contains("revision"), "{line}");
        assert_eq!(torn, 1);
    }
}

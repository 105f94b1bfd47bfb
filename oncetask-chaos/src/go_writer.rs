//! A Go-shaped writer: while the fleet runs, it cancels and resets tasks
//! by writing their Firestore documents directly, the way the Go package's
//! `CancelTask` and `ResetTask` do (docs/semantics.md S8.1 and S10): read the
//! document, decide by Go's rules, then a field-masked update of only the
//! fields Go changes, conditional only on the document existing (Go's
//! BulkWriter `Update`). It never touches the Rust-only fields (`version`,
//! `leaseToken`, `leaseAttempt`, `outcome`, `cancellationAttempts`), so its
//! writes are invisible in the version chains of [`crate::history`]; each
//! one is recorded as a [`Record::GoWrite`] line instead, with what it read
//! and the update time it produced, for the checks.
//!
//! Like one Go service, it makes one operation at a time. That matters for
//! resets: Go's reset is a read then a blind write, so two overlapping
//! resets of one task could wipe a lease the first one's re-run took. One
//! at a time, a reset lands on the finished document it read (no Rust write
//! changes a finished document), so the `version` it read is the version it
//! reset. A cancel can still race a Rust completion between its read and
//! its write, as Go's can (W19): the completed task then reads as cancelled.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use firestore::FirestoreDb;
use firestore::gcloud_sdk::google::firestore::v1::precondition::ConditionType;
use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
use firestore::gcloud_sdk::google::firestore::v1::{
    ArrayValue, CommitRequest, Document, DocumentMask, GetDocumentRequest, Precondition, Value,
    Write, write,
};
use firestore::gcloud_sdk::prost_types::Timestamp;
use firestore::gcloud_sdk::tonic::{Code, Request};
use oncetask::firestore::document::NO_WAIT;
use tokio::sync::{oneshot, watch};

use crate::ChaosError;
use crate::ledger::{GoOp, GoOutcome, LedgerWriter, Record, now_micros};

/// The update time and version an `oncetask-firestore` revision stands for,
/// from its raw value in decimal (as [`Record::Write`] and
/// [`Record::Answer`] carry it): the store keeps the document's update time
/// in ns in the low 64 bits and the task's version above them.
///
/// The checks verify this reading on every applied write (its fence must
/// decode to the version it expected), so a change of the encoding fails
/// the run instead of passing it silently.
pub fn parse_revision(raw: &str) -> Option<(u64, i64)> {
    let raw: u128 = raw.parse().ok()?;
    let version = u64::try_from(raw >> 64).ok()?;
    let nanos = i64::try_from(raw & u128::from(u64::MAX)).ok()?;
    Some((version, nanos))
}

/// A Firestore timestamp in ns since the Unix epoch.
pub fn nanos_of(t: &Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(t.nanos))
}

/// Go's `ts(now)`: RFC 3339 UTC at whole seconds, the fraction truncated.
pub fn go_now() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn string(s: &str) -> Value {
    Value {
        value_type: Some(ValueType::StringValue(s.to_owned())),
    }
}

fn boolean(b: bool) -> Value {
    Value {
        value_type: Some(ValueType::BooleanValue(b)),
    }
}

/// The fields Go's `CancelTask` writes (S8.1): `isCancelled`, `cancelledAt`
/// (`at`) and `waitUntil`; the lease is left alone.
pub fn cancel_fields(at: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("isCancelled", boolean(true)),
        ("cancelledAt", string(at)),
        ("waitUntil", string(NO_WAIT)),
    ]
}

/// The fields Go's `ResetTask` writes (S10), with their exact values.
pub fn reset_fields() -> Vec<(&'static str, Value)> {
    vec![
        (
            "attempts",
            Value {
                value_type: Some(ValueType::IntegerValue(0)),
            },
        ),
        (
            "errors",
            Value {
                value_type: Some(ValueType::ArrayValue(ArrayValue::default())),
            },
        ),
        ("doneAt", string("")),
        ("leasedUntil", string("")),
        ("waitUntil", string(NO_WAIT)),
        ("isCancelled", boolean(false)),
        ("cancelledAt", string("")),
        (
            "result",
            Value {
                value_type: Some(ValueType::NullValue(0)),
            },
        ),
    ]
}

/// A field-masked update of `fields` of the document `name`, conditional
/// only on the document existing: what Go's BulkWriter `Update` sends.
pub fn masked_update(name: String, fields: Vec<(&'static str, Value)>) -> Write {
    let mask = fields.iter().map(|(f, _)| (*f).to_owned()).collect();
    Write {
        operation: Some(write::Operation::Update(Document {
            name,
            fields: fields.into_iter().map(|(f, v)| (f.to_owned(), v)).collect(),
            ..Default::default()
        })),
        update_mask: Some(DocumentMask { field_paths: mask }),
        update_transforms: Vec::new(),
        current_document: Some(Precondition {
            condition_type: Some(ConditionType::Exists(true)),
        }),
    }
}

/// What Go reads of a task document to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Read {
    env: Option<String>,
    version: Option<u64>,
    done: bool,
    cancelled: bool,
    leased: bool,
}

fn read_of(doc: &Document) -> Read {
    let text = |name: &str| match doc.fields.get(name).and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::StringValue(s)) => Some(s.clone()),
        _ => None,
    };
    let version = match doc
        .fields
        .get("version")
        .and_then(|v| v.value_type.as_ref())
    {
        Some(ValueType::IntegerValue(n)) => u64::try_from(*n).ok(),
        _ => None,
    };
    let cancelled = matches!(
        doc.fields
            .get("isCancelled")
            .and_then(|v| v.value_type.as_ref()),
        Some(ValueType::BooleanValue(true))
    );
    // Go's own lease test: a lease ending after now.
    let leased = text("leasedUntil")
        .and_then(|l| chrono::DateTime::parse_from_rfc3339(&l).ok())
        .is_some_and(|l| l > Utc::now());
    Read {
        env: text("env"),
        version,
        done: text("doneAt").is_some_and(|d| !d.is_empty()),
        cancelled,
        leased,
    }
}

/// Whether Go's rules write anything for `op` on a task read as `read` in
/// env `env`: a cancel only a task neither done nor cancelled (S8.1), a
/// reset only a done one (S10); a task of another env is an error to Go,
/// so nothing is written either.
fn go_writes(op: GoOp, read: &Read, env: &str) -> bool {
    if read.env.as_deref() != Some(env) {
        return false;
    }
    match op {
        GoOp::Cancel => !read.done && !read.cancelled,
        GoOp::Reset => read.done,
    }
}

/// Tries of one Go write that meets contention (`ABORTED`, which a
/// non-transactional commit gets when a transaction holds the document
/// longer than the emulator's lock timeout; nothing is written then).
const COMMIT_TRIES: u32 = 5;

/// Counts of a writer's operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GoCounts {
    /// Operations that read a document (written or skipped).
    pub operations: usize,
    /// Accepted writes.
    pub accepted: usize,
}

/// The Go-shaped writer of one run's collection.
pub struct GoWriter {
    db: FirestoreDb,
    collection: String,
    env: String,
    ledger: LedgerWriter,
    next_seq: u64,
    counts: GoCounts,
}

impl GoWriter {
    /// A writer of `collection` in `project` (on the emulator at
    /// `FIRESTORE_EMULATOR_HOST`), acting as a Go service of env `env`,
    /// recording to the ledger in `ledger_dir`.
    pub async fn connect(
        project: &str,
        collection: String,
        env: String,
        ledger_dir: &Path,
    ) -> Result<Self, ChaosError> {
        let db = FirestoreDb::new(project).await.map_err(|e| {
            ChaosError::Service(format!(
                "Go writer: cannot reach the Firestore emulator: {e}"
            ))
        })?;
        Ok(Self {
            db,
            collection,
            env,
            ledger: LedgerWriter::open_go_writer(ledger_dir)?,
            next_seq: 0,
            counts: GoCounts::default(),
        })
    }

    /// What the writer has done so far.
    pub fn counts(&self) -> GoCounts {
        self.counts
    }

    fn name(&self, id: &str) -> String {
        format!("{}/{}/{id}", self.db.get_documents_path(), self.collection)
    }

    /// Go's `CancelTask(id)` or `ResetTask(id)`: reads the document, and
    /// writes if Go's rules say so. Records the operation and returns its
    /// outcome; `None` when the document could not be read (missing, or the
    /// read failed): nothing was written then, and nothing is recorded.
    pub async fn apply(&mut self, op: GoOp, id: &str) -> Option<GoOutcome> {
        let name = self.name(id);
        let doc = match self
            .db
            .client()
            .get()
            .get_document(Request::new(GetDocumentRequest {
                name: name.clone(),
                ..Default::default()
            }))
            .await
        {
            Ok(doc) => doc.into_inner(),
            Err(status) => {
                if status.code() != Code::NotFound {
                    eprintln!("oncetask-chaos: Go writer: reading {id} failed: {status}");
                }
                return None;
            }
        };
        let read = read_of(&doc);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.counts.operations += 1;
        let sent_at = now_micros();
        let record = |outcome, update_time, cancelled_at, error| Record::GoWrite {
            seq,
            id: id.to_owned(),
            op,
            read_version: read.version,
            read_done: read.done,
            read_cancelled: read.cancelled,
            read_leased: read.leased,
            outcome,
            update_time,
            cancelled_at,
            error,
            sent_at,
            at: now_micros(),
        };
        if !go_writes(op, &read, &self.env) {
            self.ledger
                .append(&record(GoOutcome::Skipped, None, None, None));
            return Some(GoOutcome::Skipped);
        }
        let (fields, cancelled_at) = match op {
            GoOp::Cancel => {
                let at = go_now();
                (cancel_fields(&at), Some(at))
            }
            GoOp::Reset => (reset_fields(), None),
        };
        let write = masked_update(name, fields);
        let mut tries = 0;
        let answer = loop {
            tries += 1;
            let answer = self
                .db
                .client()
                .get()
                .commit(Request::new(CommitRequest {
                    database: self.db.get_database_path().clone(),
                    writes: vec![write.clone()],
                    ..Default::default()
                }))
                .await;
            match answer {
                // Contention (a transaction holds the document, e.g. a
                // claim): nothing was written, and Go's client sends the
                // same write again after a backoff.
                Err(status) if status.code() == Code::Aborted && tries < COMMIT_TRIES => {
                    tokio::time::sleep(Duration::from_millis(100 << tries)).await;
                }
                answer => break answer,
            }
        };
        let (outcome, update_time, error) = match answer {
            Ok(response) => {
                let update_time = response
                    .into_inner()
                    .write_results
                    .first()
                    .and_then(|r| r.update_time.as_ref())
                    .map(nanos_of);
                self.counts.accepted += 1;
                (GoOutcome::Accepted, update_time, None)
            }
            // The document is gone (Exists(true) failed), or contention
            // outlasted the retries: nothing landed.
            Err(status)
                if matches!(
                    status.code(),
                    Code::NotFound | Code::FailedPrecondition | Code::Aborted
                ) =>
            {
                (GoOutcome::Refused, None, Some(status.to_string()))
            }
            Err(status) => {
                eprintln!("oncetask-chaos: Go writer: {op:?} of {id}: {status}");
                (GoOutcome::Unknown, None, Some(status.to_string()))
            }
        };
        let written = (outcome != GoOutcome::Refused)
            .then_some(cancelled_at)
            .flatten();
        self.ledger
            .append(&record(outcome, update_time, written, error));
        Some(outcome)
    }

    /// Until `stop` fires, every `interval` cancels or resets one task
    /// (seeded by `seed`): cancels pick among the newest `recent` of
    /// `targets.cancel`, resets among all of `targets.reset`.
    pub async fn run(
        mut self,
        targets: watch::Receiver<GoTargets>,
        recent: usize,
        interval: Duration,
        seed: u64,
        mut stop: oneshot::Receiver<()>,
    ) -> GoCounts {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = ticker.tick() => {}
            }
            let op = if rng.bool() {
                GoOp::Cancel
            } else {
                GoOp::Reset
            };
            let pick = {
                let targets = targets.borrow();
                let ids = match op {
                    GoOp::Cancel => {
                        let ids = &targets.cancel;
                        &ids[ids.len().saturating_sub(recent.max(1))..]
                    }
                    GoOp::Reset => &targets.reset[..],
                };
                if ids.is_empty() {
                    continue;
                }
                ids[rng.usize(..ids.len())].clone()
            };
            self.apply(op, &pick).await;
        }
        self.counts
    }
}

/// The tasks the writer may touch, in creation order.
#[derive(Debug, Clone, Default)]
pub struct GoTargets {
    /// Candidates for a cancel: tasks likely still open a while after their
    /// creation (long or failing handlers), so that cancels land on running
    /// and retrying tasks.
    pub cancel: Vec<String>,
    /// Candidates for a reset: any task (a reset needs a finished one).
    pub reset: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_reads_as_version_above_update_time() {
        let raw = (u128::from(42u64) << 64) | 1_700_000_000_123_456_789;
        assert_eq!(
            parse_revision(&raw.to_string()),
            Some((42, 1_700_000_000_123_456_789))
        );
        assert_eq!(parse_revision("not a number"), None);
    }

    #[test]
    fn go_cancels_only_open_tasks_and_resets_only_done_ones() {
        let read = |done, cancelled| Read {
            env: Some("e".into()),
            version: Some(1),
            done,
            cancelled,
            leased: false,
        };
        assert!(go_writes(GoOp::Cancel, &read(false, false), "e"));
        assert!(!go_writes(GoOp::Cancel, &read(true, false), "e"));
        assert!(!go_writes(GoOp::Cancel, &read(false, true), "e"));
        assert!(go_writes(GoOp::Reset, &read(true, false), "e"));
        assert!(go_writes(GoOp::Reset, &read(true, true), "e"));
        assert!(!go_writes(GoOp::Reset, &read(false, true), "e"));
        assert!(!go_writes(GoOp::Reset, &read(true, false), "other"));
    }

    #[test]
    fn go_times_are_whole_seconds_and_writes_mask_exactly_their_fields() {
        let now = go_now();
        assert_eq!(now.len(), "2026-01-01T00:00:00Z".len(), "{now}");
        assert!(now.ends_with('Z'));
        let write = masked_update("doc".into(), cancel_fields(&now));
        let mask = write.update_mask.expect("a mask").field_paths;
        assert_eq!(mask, ["isCancelled", "cancelledAt", "waitUntil"]);
        let reset = masked_update("doc".into(), reset_fields());
        let mask = reset.update_mask.expect("a mask").field_paths;
        for rust_only in [
            "version",
            "leaseToken",
            "leaseAttempt",
            "outcome",
            "cancellationAttempts",
        ] {
            assert!(!mask.iter().any(|f| f == rust_only), "{rust_only}");
        }
        assert_eq!(mask.len(), 8);
        assert_eq!(
            reset.current_document,
            Some(Precondition {
                condition_type: Some(ConditionType::Exists(true)),
            })
        );
    }
}

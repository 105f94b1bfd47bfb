//! Corrupted stored records (issue 8): a record that is broken in the
//! backend itself — a missing field, a value of the wrong type, a bad
//! timestamp, an unknown outcome, a negative counter — is a poison pill
//! the worker must step around. It is skipped and reported by id, it never
//! reaches a handler, the other tasks of its kind keep flowing, reads by id
//! name it in a typed error, listings leave it out (the contract of
//! [`oncetask_core::Store::find`]), and only a delete applies to it.
//!
//! Backends write the records through
//! [`StoreFactory::insert_corrupted`]; a corruption a backend cannot hold is
//! skipped with a note.

use chrono::{DateTime, Utc};
use oncetask_core::manager::HandlerOptions;
use oncetask_core::store::Fetched;
use oncetask_core::{Error, Store, StoreError, Task, TaskStatus};

use crate::StoreFactory;
use crate::manager::{ENV, Job, create, manual};

/// A way a stored record can be broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// A field every task has is absent.
    MissingField,
    /// A field holds a value of the wrong type (text in a counter, a map
    /// where a list belongs).
    WrongType,
    /// A time field holds something that is not a time, or a time outside
    /// the range a task can hold.
    BadTimestamp,
    /// The outcome (a terminal status) is a name no version of oncetask wrote.
    UnknownStatus,
    /// A counter (attempts) is negative.
    NegativeCount,
}

impl Corruption {
    /// Every corruption, in declaration order.
    pub const ALL: [Corruption; 5] = [
        Corruption::MissingField,
        Corruption::WrongType,
        Corruption::BadTimestamp,
        Corruption::UnknownStatus,
        Corruption::NegativeCount,
    ];
}

/// When [`original`] was created: long before the manager scenarios'
/// clock, so the record is first in claim order.
pub fn original_created_at() -> DateTime<Utc> {
    "2020-01-01T00:00:00Z"
        .parse()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The healthy task a corrupted record is a broken copy of: pending, ready
/// at once, created at [`original_created_at`]. Backends that corrupt by
/// editing a stored task create this one first.
pub fn original(id: &str, env: &str, kind: &str) -> Task {
    let mut task = Task::new(id, kind, env, original_created_at());
    task.data
        .insert("corrupted".to_owned(), serde_json::Value::Bool(true));
    task
}

const KIND: &str = "ledger";
const BAD: &str = "rotten";

/// Inserts the corrupted record `BAD` next to healthy tasks of the same
/// kind; `None` when the backend cannot hold this corruption.
async fn corrupted<F: StoreFactory>(
    factory: &F,
    corruption: Corruption,
) -> Option<crate::manager::Harness<F::Store>> {
    let h = manual(factory).await;
    if !factory
        .insert_corrupted(&h.store, BAD, ENV, KIND, corruption)
        .await
    {
        eprintln!("note: backend cannot hold {corruption:?}; not checked");
        return None;
    }
    Some(h)
}

fn is_undecodable_named(result: &Result<Option<Task>, Error>, id: &str) -> bool {
    matches!(result, Err(Error::Store(StoreError::Undecodable { id: named, .. })) if named == id)
}

/// Reads by id name the corrupted record in a typed error (manager) or a
/// [`Fetched::Undecodable`] (store), never panic, and never hide the
/// healthy tasks read with it; listings leave it out and still list the
/// rest; counts count it once, never twice; the inspector still answers.
pub async fn a_corrupted_record_is_reported_by_id_and_not_listed(factory: &impl StoreFactory) {
    for corruption in Corruption::ALL {
        let Some(h) = corrupted(factory, corruption).await else {
            continue;
        };
        crate::manager::register_ok(&h.manager, KIND, HandlerOptions::default());
        create(&h.manager, &Job::new(KIND, "fine").key("k")).await;

        let read = h.manager.get_task(BAD).await;
        assert!(is_undecodable_named(&read, BAD), "{corruption:?}: {read:?}");
        let ids = [BAD.to_owned(), "fine".to_owned()];
        let fetched = h.store.get(&ids).await.expect("store get");
        assert_eq!(fetched.len(), 2, "{corruption:?}: {fetched:?}");
        assert!(
            matches!(&fetched[0], Fetched::Undecodable(u) if u.id == BAD && !u.reason.is_empty()),
            "{corruption:?}: {fetched:?}"
        );
        assert!(
            matches!(&fetched[1], Fetched::Task(t) if t.id == "fine"),
            "{corruption:?}: {fetched:?}"
        );

        let listed = h.manager.find(h.manager.filter()).await;
        let listed: Vec<String> = listed
            .unwrap_or_else(|e| panic!("{corruption:?}: find failed as a whole: {e}"))
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(listed, ["fine"], "{corruption:?}");
        let by_key = h.manager.get_tasks_by_resource_key("k").await;
        assert_eq!(
            by_key.expect("find by key").len(),
            1,
            "{corruption:?}: the key's task is still listed"
        );
        let counts = h.manager.count_by_status(Some(KIND)).await;
        let counts = counts.unwrap_or_else(|e| panic!("{corruption:?}: count failed: {e}"));
        // The record is counted once: as undecodable, or (where the backend
        // counts without decoding and the broken field is not one a status
        // depends on, e.g. on Firestore) by the status its fields give.
        assert_eq!(
            counts.count(TaskStatus::Pending) + counts.undecodable,
            2,
            "{corruption:?}: {counts:?}"
        );
        assert!(
            counts.count(TaskStatus::Pending) >= 1,
            "{corruption:?}: {counts:?}"
        );
        let stats = h.manager.inspect().await;
        stats.unwrap_or_else(|e| panic!("{corruption:?}: inspect failed: {e}"));
    }
}

/// Workers skip a corrupted record and report it; every healthy task of its
/// kind still runs, and the handler never sees the record.
pub async fn a_corrupted_record_does_not_stop_its_kind(factory: &impl StoreFactory) {
    for corruption in Corruption::ALL {
        let Some(h) = corrupted(factory, corruption).await else {
            continue;
        };
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        h.manager
            .register_dyn(
                KIND,
                oncetask_core::manager::handler_fn(move |task: Task| {
                    let log = log.clone();
                    async move {
                        log.lock().map(|mut l| l.push(task.id)).ok();
                        Ok::<_, std::io::Error>(())
                    }
                }),
                HandlerOptions::default().concurrency(2),
            )
            .expect("register");
        for i in 0..3 {
            create(&h.manager, &Job::new(KIND, &format!("good-{i}"))).await;
        }
        let mut reported = Vec::new();
        for _ in 0..10 {
            let run = h.manager.process_next(KIND).await;
            match run.unwrap_or_else(|e| panic!("{corruption:?}: a claim failed: {e}")) {
                Some(report) => reported.extend(report.undecodable.into_iter().map(|u| u.id)),
                None => break,
            }
        }
        let mut ran = seen.lock().map(|l| l.clone()).unwrap_or_default();
        ran.sort();
        assert_eq!(ran, ["good-0", "good-1", "good-2"], "{corruption:?}");
        for i in 0..3 {
            assert_eq!(
                h.status(&format!("good-{i}")).await,
                TaskStatus::Completed,
                "{corruption:?}"
            );
        }
        assert!(
            reported.iter().all(|id| id == BAD),
            "{corruption:?}: {reported:?}"
        );
        if reported.is_empty() {
            // A claim may not even select the record (e.g. a time of the
            // wrong type is outside its range query); then it is skipped
            // silently, which is what the kind needs.
            eprintln!("note: {corruption:?} was never a claim candidate");
        }
        let read = h.manager.get_task(BAD).await;
        assert!(is_undecodable_named(&read, BAD), "{corruption:?}: {read:?}");
    }
}

/// Cancel and reset refuse a corrupted record with a typed error naming it
/// and change nothing; delete removes it (the way out of a poison pill).
pub async fn a_corrupted_record_can_only_be_deleted(factory: &impl StoreFactory) {
    for corruption in Corruption::ALL {
        let Some(h) = corrupted(factory, corruption).await else {
            continue;
        };
        let ids = [BAD.to_owned()];
        for (action, report) in [
            ("cancel", h.manager.cancel_many(&ids).await),
            ("reset", h.manager.reset_many(&ids).await),
        ] {
            let report = report.unwrap_or_else(|e| panic!("{corruption:?} {action}: {e}"));
            assert!(
                report.succeeded.is_empty() && report.failed.len() == 1,
                "{corruption:?} {action}: {report:?}"
            );
            assert!(
                matches!(&report.failed[0], (id, Error::Store(StoreError::Undecodable { id: named, .. }))
                    if id == BAD && named == BAD),
                "{corruption:?} {action}: {report:?}"
            );
        }
        let read = h.manager.get_task(BAD).await;
        assert!(is_undecodable_named(&read, BAD), "{corruption:?}: {read:?}");
        let report = h.manager.delete_many(&ids).await.expect("delete");
        assert_eq!(report.succeeded, [BAD], "{corruption:?}: {report:?}");
        assert!(
            h.manager.get_task(BAD).await.expect("get").is_none(),
            "{corruption:?}"
        );
        let listed = h.store.get(&ids).await.expect("store get");
        assert!(listed.is_empty(), "{corruption:?}: {listed:?}");
    }
}

//! [`FirestoreStore::doctor`]: is this database ready for the store?
//!
//! The emulator needs no index and grants every permission, so a deployment
//! that passes every test can still fail on its first claim. The doctor runs,
//! against the real database, every query shape the store uses (with limit 1,
//! so about one read each), and reports each index that is missing or still
//! building with the link Firestore gives to create it; then it reads one
//! document and creates and deletes a probe document, and reports a refused
//! permission as such. [`CostModel`] turns the measured per-task and idle
//! figures into what a given number of managers and kinds costs.

use chrono::Utc;
use firestore::gcloud_sdk::google::firestore::v1::StructuredQuery;
use firestore::gcloud_sdk::tonic::{Code, Status};
use oncetask_core::store::{CreateOutcome, Delete, DeleteOutcome};
use oncetask_core::{Store, StoreError, Task};

use crate::FirestoreStore;
use crate::document::format_time;
use crate::queries::{self, ListStatuses};

/// The env and kind of the probe document the doctor creates and deletes:
/// no manager of a real env sees it.
pub const PROBE_ENV: &str = "oncetask-doctor";

/// What one check of a [`DoctorReport`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckOutcome {
    /// It works.
    Ok,
    /// The query needs an index that is missing or still building.
    MissingIndex {
        /// The link Firestore gives to create the index, if it gave one.
        create_link: Option<String>,
        /// Firestore's message.
        message: String,
    },
    /// The credentials may not do this (PERMISSION_DENIED or
    /// UNAUTHENTICATED).
    PermissionDenied {
        /// Firestore's message.
        message: String,
    },
    /// Anything else went wrong.
    Failed {
        /// The error.
        message: String,
    },
}

impl CheckOutcome {
    /// The outcome of a check that failed with `e`.
    pub fn from_error(e: &StoreError) -> Self {
        if let StoreError::MissingIndex {
            message,
            create_link,
        } = e
        {
            return Self::MissingIndex {
                create_link: create_link.clone(),
                message: message.clone(),
            };
        }
        let status = match e {
            StoreError::Backend(source) => source.downcast_ref::<Status>(),
            _ => None,
        };
        match status {
            Some(s) if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated) => {
                Self::PermissionDenied {
                    message: s.message().to_owned(),
                }
            }
            _ => Self::Failed {
                message: e.to_string(),
            },
        }
    }

    /// Whether the check passed.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok)
    }
}

/// Whether a check is about a query's index or about a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// One query shape of the store, run with limit 1.
    Query,
    /// A read, create or delete of one document.
    Permission,
}

/// One check of a [`DoctorReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Query or permission.
    pub kind: CheckKind,
    /// What was checked, e.g. `claim: ready tasks`.
    pub name: String,
    /// What it found.
    pub outcome: CheckOutcome,
}

/// What [`FirestoreStore::doctor`] found; its `Display` is the report for
/// people (one line per check, then what to do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorReport {
    /// The database's resource name (`projects/P/databases/D`).
    pub database: String,
    /// The task collection.
    pub collection: String,
    /// The env whose queries were run.
    pub env: String,
    /// Every check, queries first.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// Whether every check passed.
    pub fn is_ok(&self) -> bool {
        self.checks.iter().all(|c| c.outcome.is_ok())
    }

    /// The checks that did not pass.
    pub fn problems(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.outcome.is_ok())
    }

    /// The distinct links to create missing indexes (several query shapes
    /// may need one index).
    pub fn index_links(&self) -> Vec<&str> {
        let mut links: Vec<&str> = Vec::new();
        for c in &self.checks {
            if let CheckOutcome::MissingIndex {
                create_link: Some(link),
                ..
            } = &c.outcome
                && !links.contains(&link.as_str())
            {
                links.push(link);
            }
        }
        links
    }
}

impl std::fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Firestore {}, collection {}, env {}",
            self.database, self.collection, self.env
        )?;
        for (kind, title) in [
            (CheckKind::Query, "Queries (each run with limit 1)"),
            (CheckKind::Permission, "Permissions"),
        ] {
            writeln!(f, "\n{title}:")?;
            for c in self.checks.iter().filter(|c| c.kind == kind) {
                match &c.outcome {
                    CheckOutcome::Ok => writeln!(f, "  ok       {}", c.name)?,
                    CheckOutcome::MissingIndex {
                        create_link: Some(link),
                        ..
                    } => writeln!(
                        f,
                        "  MISSING  {}: index missing or building: {link}",
                        c.name
                    )?,
                    CheckOutcome::MissingIndex {
                        create_link: None,
                        message,
                    } => writeln!(
                        f,
                        "  MISSING  {}: index missing or building: {message}",
                        c.name
                    )?,
                    CheckOutcome::PermissionDenied { message } => {
                        writeln!(f, "  DENIED   {}: PERMISSION_DENIED: {message}", c.name)?
                    }
                    CheckOutcome::Failed { message } => {
                        writeln!(f, "  FAILED   {}: {message}", c.name)?
                    }
                }
            }
        }
        let missing = self
            .problems()
            .filter(|c| matches!(c.outcome, CheckOutcome::MissingIndex { .. }))
            .count();
        let denied = self
            .problems()
            .filter(|c| matches!(c.outcome, CheckOutcome::PermissionDenied { .. }))
            .count();
        let failed = self.problems().count() - missing - denied;
        writeln!(f)?;
        if self.is_ok() {
            return writeln!(f, "Everything the store needs is in place.");
        }
        if missing > 0 {
            writeln!(
                f,
                "{missing} query shape(s) lack an index. Deploy the index file \
                 (`firebase deploy --only firestore:indexes` with the repository's firebase.json) \
                 or open each link above; indexes take minutes to hours to build, and queries \
                 fail until they are READY."
            )?;
        }
        if denied > 0 {
            writeln!(
                f,
                "{denied} check(s) were refused: grant the service's account the role \
                 roles/datastore.user on the project (it reads and writes documents)."
            )?;
        }
        if failed > 0 {
            writeln!(
                f,
                "{failed} check(s) failed for another reason (see above)."
            )?;
        }
        Ok(())
    }
}

/// The query shapes the store runs, with placeholder values (an index
/// depends on the fields and operators, not on the values): a name and the
/// query, each with limit 1.
pub(crate) fn query_shapes(
    collection: &str,
    env: &str,
    kind: &str,
    now: &str,
) -> Vec<(String, StructuredQuery)> {
    let key = "oncetask-doctor";
    let mut out = vec![
        (
            "claim: ready tasks".to_owned(),
            queries::ready_query(collection, env, kind, now),
        ),
        (
            "claim: ready tasks past busy resource keys".to_owned(),
            queries::ready_query_excluding(collection, env, kind, now, &[key.to_owned()]),
        ),
        (
            "claim: a resource key's live lease".to_owned(),
            queries::key_live_query(collection, env, kind, key, now),
        ),
        (
            "claim: a resource key's ready tasks".to_owned(),
            queries::key_ready_query(collection, env, kind, key, now),
        ),
        (
            "kinds: the next kind".to_owned(),
            queries::next_kind_query(collection, env, Some(kind)),
        ),
    ];
    for field in queries::DUE_FIELDS {
        out.push((
            format!("next_due: by {field}"),
            queries::due_query(collection, env, kind, field, now),
        ));
    }
    out.push((
        "subscribe: wake-up signals".to_owned(),
        queries::signal_query(
            &format!("{collection}{}", crate::signal::COLLECTION_SUFFIX),
            env,
        ),
    ));
    out.push((
        "subscribe: not-done tasks (Wakeups::TaskChanges)".to_owned(),
        queries::listen_query(collection, env),
    ));
    out.push((
        "kinds: a kind's tasks".to_owned(),
        queries::scan_query(collection, env, Some(kind), None, false),
    ));
    out.push((
        "find_generators: the recurrence generators".to_owned(),
        queries::generators_query(collection, env),
    ));
    out.push((
        "find_finished: a kind's finished tasks by finish time".to_owned(),
        queries::finished_query(collection, env, kind, now),
    ));
    out.push((
        "find_finished: a kind's tasks finished in one whole second".to_owned(),
        queries::finished_at_query(collection, env, kind, "2026-01-01T00:00:00Z"),
    ));
    for (what, q) in queries::tombstone_count_queries(collection, env) {
        out.push((format!("storage_stats: tombstones, {what:?}"), q));
    }
    out.push((
        "storage_stats: tombstones of Go-finished tasks".to_owned(),
        queries::tombstones_not_cancelled_query(collection, env),
    ));
    for below in [None, Some(now)] {
        let step = if below.is_some() { "next" } else { "first" };
        out.push((
            format!("inspect: oldest pending task, {step} step"),
            queries::oldest_pending_query(collection, env, kind, now, below),
        ));
    }
    for k in [None, Some(kind)] {
        let of = if k.is_some() {
            "one kind"
        } else {
            "every kind"
        };
        for (what, q) in queries::count_queries(collection, env, k, now) {
            out.push((format!("count_by_status: {what:?}, {of}"), q));
        }
        out.push((
            format!("count_by_status: Go-finished tasks, {of}"),
            queries::done_not_cancelled_query(collection, env, k),
        ));
        for key in [None, Some(key)] {
            for (statuses, selects) in [
                (ListStatuses::Any, ""),
                (ListStatuses::NotDone, ", not done"),
                (ListStatuses::CancellationPending, ", cancellation pending"),
                (ListStatuses::Outcomes(&["failed"]), ", one finished status"),
            ] {
                let mut name = format!("find: {of}");
                if key.is_some() {
                    name.push_str(", one resource key");
                }
                name.push_str(selects);
                out.push((
                    name,
                    queries::list_query(collection, env, k, key, statuses, None),
                ));
            }
        }
    }
    for (_, q) in &mut out {
        q.limit = Some(1);
    }
    out
}

impl FirestoreStore {
    /// Checks that the database is ready for this store: every query shape
    /// the store runs (with limit 1) is served by an index, and the
    /// credentials may read, create and delete documents of the collection
    /// (a probe document in env [`PROBE_ENV`], deleted again).
    ///
    /// `kinds` are the task kinds the services run: the queries use the
    /// first one (the shapes are the same for every kind; none given uses a
    /// placeholder). The COUNT shapes of `count_by_status` run as plain
    /// queries: an aggregation needs the index its query needs. Costs one
    /// read per shape (about 40), one document read, one write and one
    /// delete.
    ///
    /// A missing index or a refused permission is a failed check of the
    /// report, not an error; the error is for a database that cannot be
    /// reached at all ([`StoreError::Unavailable`]).
    pub async fn doctor(&self, env: &str, kinds: &[String]) -> Result<DoctorReport, StoreError> {
        let kind = kinds.first().map_or("oncetask-doctor", String::as_str);
        let now = format_time(Utc::now());
        let mut checks = Vec::new();
        for (name, q) in query_shapes(self.collection(), env, kind, &now) {
            let outcome = match self.query(q, None, |_| false).await {
                Ok(_) => CheckOutcome::Ok,
                Err(e @ StoreError::Unavailable(_)) => return Err(e),
                Err(e) => CheckOutcome::from_error(&e),
            };
            checks.push(Check {
                kind: CheckKind::Query,
                name,
                outcome,
            });
        }
        checks.extend(self.permission_checks().await?);
        Ok(DoctorReport {
            database: self.database(),
            collection: self.collection().to_owned(),
            env: env.to_owned(),
            checks,
        })
    }

    /// Read, create and delete one document (the probe).
    async fn permission_checks(&self) -> Result<Vec<Check>, StoreError> {
        let id = format!("oncetask-doctor-{}", uuid::Uuid::new_v4().simple());
        let check = |name: &str, outcome| Check {
            kind: CheckKind::Permission,
            name: name.to_owned(),
            outcome,
        };
        let read = match self.get(std::slice::from_ref(&id)).await {
            Ok(_) => CheckOutcome::Ok,
            Err(e @ StoreError::Unavailable(_)) => return Err(e),
            Err(e) => CheckOutcome::from_error(&e),
        };
        let probe = Task::new(id.clone(), PROBE_ENV, PROBE_ENV, Utc::now());
        let create = match self.create(vec![probe]).await {
            Ok(outcomes) => match outcomes.into_iter().next() {
                Some(CreateOutcome::Created) => CheckOutcome::Ok,
                Some(CreateOutcome::Failed(e)) => CheckOutcome::from_error(&e),
                other => CheckOutcome::Failed {
                    message: format!("unexpected outcome {other:?}"),
                },
            },
            Err(e) => CheckOutcome::from_error(&e),
        };
        let created = create.is_ok();
        let mut out = vec![
            check("read a document", read),
            check(&format!("create a document ({id})"), create),
        ];
        if created {
            let delete = match self.delete(&[Delete::any(id.clone())]).await {
                Ok(outcomes) => match outcomes.into_iter().next() {
                    Some(DeleteOutcome::Deleted) => CheckOutcome::Ok,
                    Some(DeleteOutcome::Failed(e)) => CheckOutcome::from_error(&e),
                    other => CheckOutcome::Failed {
                        message: format!("unexpected outcome {other:?}"),
                    },
                },
                Err(e) => CheckOutcome::from_error(&e),
            };
            out.push(check("delete that document", delete));
        }
        Ok(out)
    }
}

/// Reads, writes and listener deliveries as Firestore bills them, for a
/// number of managers (processes) and kinds, from the figures measured on
/// the emulator and given in `docs/firestore.md` ("Cost per task"). An estimate:
/// real traffic adds retries and reconnects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// Processes running a manager on the collection.
    pub managers: u32,
    /// Task kinds each manager serves.
    pub kinds: u32,
    /// Tasks created per hour, if known (for totals).
    pub tasks_per_hour: Option<u64>,
}

impl CostModel {
    /// Reads per keyless task, uncontended: the claim's query result (the
    /// outcome is fenced on the lease's update time and reads nothing).
    pub const KEYLESS_READS_PER_TASK: f64 = 1.0;
    /// Writes per keyless task: create, lease, outcome.
    pub const KEYLESS_WRITES_PER_TASK: f64 = 3.0;
    /// Reads per keyless task added by each manager beyond the first: claims
    /// that meet at the head of the queue read candidates another claim
    /// takes, fewer since contended claims space themselves out (measured
    /// with no-op handlers, the worst case: 3 managers read 1.41 to 1.45
    /// per task, 6 managers 1.97 to 2.07).
    pub const CONTENTION_READS_PER_EXTRA_MANAGER: f64 = 0.2;
    /// Reads per task with resource keys (12 keys, 3 managers, signals
    /// included), as measured by `tests/cost.rs` on the emulator (3.0 to
    /// 3.7).
    pub const KEYED_READS_PER_TASK: f64 = 3.8;
    /// Writes per task in the same run, creation included (create, lease,
    /// outcome, a share of the key-lock writes, which a store draining a key
    /// it keeps spares, and of the wake-up signals).
    pub const KEYED_WRITES_PER_TASK: f64 = 3.2;
    /// The most wake-up signal writes a store writes per env and hour (one
    /// a second); every listening manager reads each one.
    pub const MAX_SIGNAL_WRITES_PER_HOUR: u64 = 3600;
    /// Most documents a claim by priority reads while its kind is known to
    /// hold prioritized tasks: the window of the oldest ready tasks it ranks
    /// ([`crate::DEFAULT_PRIORITY_WINDOW`], unless the store sets another
    /// with [`crate::FirestoreStore::with_priority_window`]), instead of its
    /// limit. A kind whose tasks are all at priority 0 never pays it.
    pub const PRIORITY_WINDOW_READS_PER_CLAIM: usize = crate::DEFAULT_PRIORITY_WINDOW;
    /// Reads per hour an idle manager pays per kind: one empty claim per
    /// 60 s poll (the next due time is looked up again only after a change).
    pub const IDLE_READS_PER_HOUR_PER_KIND: u64 = 60;

    /// Reads per keyless task: the claim's read, and the contention of the
    /// other managers.
    pub fn keyless_reads_per_task(&self) -> f64 {
        Self::KEYLESS_READS_PER_TASK
            + Self::CONTENTION_READS_PER_EXTRA_MANAGER * f64::from(self.managers.saturating_sub(1))
    }

    /// The most listener reads per hour that wake-up signals can cost while
    /// every manager writes signals at the highest rate (busy creating,
    /// retrying or freeing keys): each manager reads every manager's
    /// signals. Quiet processes write none.
    pub fn max_signal_reads_per_hour(&self) -> u64 {
        let m = u64::from(self.managers);
        Self::MAX_SIGNAL_WRITES_PER_HOUR * m * m
    }

    /// Reads per hour of the idle managers: every manager, every kind.
    pub fn idle_reads_per_hour(&self) -> u64 {
        Self::IDLE_READS_PER_HOUR_PER_KIND * u64::from(self.managers) * u64::from(self.kinds)
    }
}

impl std::fmt::Display for CostModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (m, k) = (self.managers, self.kinds);
        writeln!(
            f,
            "Cost model for {m} manager(s) x {k} kind(s) (emulator figures; Firestore bills \
             every document read and written):"
        )?;
        writeln!(
            f,
            "  keyless task:  {:.0} read (claim) + {:.2} x {} other manager(s) (contention) = \
             {:.2} reads, {:.0} writes (create, lease, outcome)",
            Self::KEYLESS_READS_PER_TASK,
            Self::CONTENTION_READS_PER_EXTRA_MANAGER,
            m.saturating_sub(1),
            self.keyless_reads_per_task(),
            Self::KEYLESS_WRITES_PER_TASK
        )?;
        writeln!(
            f,
            "  keyed task:    about {:.0} reads, {:.1} writes (measured with 3 managers and \
             12 keys; lost races on the key's lock add reads)",
            Self::KEYED_READS_PER_TASK,
            Self::KEYED_WRITES_PER_TASK
        )?;
        writeln!(
            f,
            "  wake-ups:      at most {} signal writes/hour per busy manager; at most {} \
             listener reads/hour in all",
            Self::MAX_SIGNAL_WRITES_PER_HOUR,
            self.max_signal_reads_per_hour()
        )?;
        writeln!(
            f,
            "  priorities:    while a kind holds prioritized tasks, a claim by priority reads \
             up to {} ready tasks (the window it ranks): up to {} reads per task at one task \
             per claim; nothing more while every task is at priority 0",
            Self::PRIORITY_WINDOW_READS_PER_CLAIM,
            Self::PRIORITY_WINDOW_READS_PER_CLAIM
        )?;
        let idle = self.idle_reads_per_hour();
        writeln!(
            f,
            "  idle:          {} reads/hour per kind per manager = {idle} reads/hour, {} a day",
            Self::IDLE_READS_PER_HOUR_PER_KIND,
            idle * 24
        )?;
        if let Some(n) = self.tasks_per_hour {
            // f64 keeps the arithmetic simple; the figures are estimates.
            #[allow(clippy::cast_precision_loss)]
            let tasks = n as f64;
            writeln!(
                f,
                "  at {n} tasks/hour: keyless about {:.0} reads + {:.0} writes per hour, keyed \
                 about {:.0} reads + {:.0} writes per hour, plus idle polls between tasks",
                tasks * self.keyless_reads_per_task(),
                tasks * Self::KEYLESS_WRITES_PER_TASK,
                tasks * Self::KEYED_READS_PER_TASK,
                tasks * Self::KEYED_WRITES_PER_TASK
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: CheckOutcome) -> DoctorReport {
        DoctorReport {
            database: "projects/p/databases/(default)".into(),
            collection: "onceTasks".into(),
            env: "prod".into(),
            checks: vec![
                Check {
                    kind: CheckKind::Query,
                    name: "claim: ready tasks".into(),
                    outcome,
                },
                Check {
                    kind: CheckKind::Permission,
                    name: "read a document".into(),
                    outcome: CheckOutcome::Ok,
                },
            ],
        }
    }

    #[test]
    fn a_missing_index_is_reported_with_its_link() {
        let link = "https://console.firebase.google.com/v1/r/project/p/firestore/indexes?create_composite=Cg";
        let error = crate::status::status_error(Status::new(
            Code::FailedPrecondition,
            format!("The query requires an index. You can create it here: {link}"),
        ));
        let outcome = CheckOutcome::from_error(&error);
        assert!(
            matches!(&outcome, CheckOutcome::MissingIndex { create_link: Some(l), .. } if l == link),
            "{outcome:?}"
        );
        let report = report(outcome);
        assert!(!report.is_ok());
        assert_eq!(report.index_links(), [link]);
        let text = report.to_string();
        assert!(
            text.contains(&format!(
                "  MISSING  claim: ready tasks: index missing or building: {link}\n"
            )),
            "{text}"
        );
        assert!(text.contains("  ok       read a document\n"), "{text}");
        assert!(text.contains("1 query shape(s) lack an index"), "{text}");
        assert!(
            text.contains("firebase deploy --only firestore:indexes"),
            "{text}"
        );
    }

    #[test]
    fn a_refused_permission_is_reported_as_such() {
        let error = crate::status::item_error(
            "t1",
            &Status::new(
                Code::PermissionDenied,
                "Missing or insufficient permissions.",
            ),
        );
        let outcome = CheckOutcome::from_error(&error);
        assert_eq!(
            outcome,
            CheckOutcome::PermissionDenied {
                message: "Missing or insufficient permissions.".into()
            }
        );
        let text = report(outcome).to_string();
        assert!(
            text.contains("DENIED   claim: ready tasks: PERMISSION_DENIED"),
            "{text}"
        );
        assert!(text.contains("roles/datastore.user"), "{text}");
    }

    #[test]
    fn a_clean_report_says_so() {
        let text = report(CheckOutcome::Ok).to_string();
        assert!(
            text.starts_with(
                "Firestore projects/p/databases/(default), collection onceTasks, env prod\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("Everything the store needs is in place.\n"),
            "{text}"
        );
    }

    #[test]
    fn the_cost_model_scales_with_managers_and_kinds() {
        let model = CostModel {
            managers: 3,
            kinds: 2,
            tasks_per_hour: Some(1000),
        };
        assert_eq!(model.idle_reads_per_hour(), 60 * 3 * 2);
        assert!((model.keyless_reads_per_task() - 1.4).abs() < 1e-9);
        assert_eq!(model.max_signal_reads_per_hour(), 3600 * 9);
        let text = model.to_string();
        assert!(text.contains("= 360 reads/hour, 8640 a day"), "{text}");
        assert!(text.contains("x 2 other manager(s)"), "{text}");
        assert!(text.contains("= 1.40 reads, 3 writes"), "{text}");
        assert!(text.contains("at most 32400 listener reads/hour"), "{text}");
        assert!(
            text.contains("reads up to 50 ready tasks (the window it ranks)"),
            "{text}"
        );
        assert!(
            text.contains("at 1000 tasks/hour: keyless about 1400 reads + 3000 writes"),
            "{text}"
        );
    }
}

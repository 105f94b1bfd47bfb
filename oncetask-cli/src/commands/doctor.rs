//! `doctor`: is a Firestore database ready for the store
//! ([`FirestoreStore::doctor`](oncetask::firestore::FirestoreStore::doctor)),
//! and what will it cost.

use std::time::Duration;

use crate::Io;
use crate::args::{DoctorArgs, GlobalArgs};
use crate::error::CliError;
use crate::store_url::StoreUrl;

/// Checks the Firestore database of `--store` and prints the report and the
/// cost model (JSON with `--json`); fails (exit 1) when a check fails.
pub async fn run(global: &GlobalArgs, args: &DoctorArgs, io: &mut Io<'_>) -> Result<(), CliError> {
    let url = global.store.clone().ok_or_else(|| {
        CliError::usage("no store given: pass --store firestore://PROJECT[/COLLECTION]")
    })?;
    let StoreUrl::Firestore {
        project,
        collection,
        database,
    } = &url
    else {
        return Err(CliError::usage(format!(
            "the doctor checks Firestore databases (firestore://PROJECT[/COLLECTION][?database=NAME]), \
             not {url}"
        )));
    };
    let env = match global.env.trim() {
        "" => oncetask::manager::DEFAULT_ENV.to_owned(),
        env => env.to_owned(),
    };
    let timeout = Duration::from_secs(global.connect_timeout.max(1));
    firestore::run(
        project,
        collection,
        database.as_deref(),
        &env,
        args,
        global.json,
        timeout,
        io,
    )
    .await
}

#[cfg(feature = "firestore")]
mod firestore {
    use super::*;
    use oncetask::firestore::doctor::{CheckKind, CheckOutcome, CostModel, DoctorReport};
    use serde_json::{Value, json};

    #[allow(clippy::too_many_arguments)] // one call site, above
    pub(super) async fn run(
        project: &str,
        collection: &str,
        database: Option<&str>,
        env: &str,
        args: &DoctorArgs,
        json: bool,
        timeout: Duration,
        io: &mut Io<'_>,
    ) -> Result<(), CliError> {
        let store =
            crate::store_url::open_firestore(project, collection, database, timeout).await?;
        let report = store.doctor(env, &args.kinds).await?;
        let cost = CostModel {
            managers: args.managers,
            kinds: u32::try_from(args.kinds.len().max(1)).unwrap_or(u32::MAX),
            tasks_per_hour: args.tasks_per_hour,
        };
        if json {
            let text = serde_json::to_string_pretty(&report_json(&report, &cost))
                .map_err(|e| CliError::failed(format!("cannot encode the output: {e}")))?;
            writeln!(io.out, "{text}")?;
        } else {
            writeln!(io.out, "{report}\n{cost}")?;
        }
        match report.problems().count() {
            0 => Ok(()),
            n => Err(CliError::failed(format!(
                "{n} check(s) did not pass (see the report)"
            ))),
        }
    }

    /// The report and the cost model as JSON.
    pub(crate) fn report_json(report: &DoctorReport, cost: &CostModel) -> Value {
        let checks: Vec<Value> = report
            .checks
            .iter()
            .map(|c| {
                let kind = match c.kind {
                    CheckKind::Query => "query",
                    CheckKind::Permission => "permission",
                };
                let (status, link, message) = match &c.outcome {
                    CheckOutcome::Ok => ("ok", None, None),
                    CheckOutcome::MissingIndex {
                        create_link,
                        message,
                    } => (
                        "missingIndex",
                        create_link.as_deref(),
                        Some(message.as_str()),
                    ),
                    CheckOutcome::PermissionDenied { message } => {
                        ("permissionDenied", None, Some(message.as_str()))
                    }
                    CheckOutcome::Failed { message } => ("failed", None, Some(message.as_str())),
                    _ => ("failed", None, None),
                };
                json!({
                    "kind": kind,
                    "name": c.name,
                    "status": status,
                    "createLink": link,
                    "message": message,
                })
            })
            .collect();
        json!({
            "database": report.database,
            "collection": report.collection,
            "env": report.env,
            "ok": report.is_ok(),
            "checks": checks,
            "indexLinks": report.index_links(),
            "costModel": {
                "managers": cost.managers,
                "kinds": cost.kinds,
                "tasksPerHour": cost.tasks_per_hour,
                "keylessReadsPerTask": cost.keyless_reads_per_task(),
                "keylessWritesPerTask": CostModel::KEYLESS_WRITES_PER_TASK,
                "keyedReadsPerTask": CostModel::KEYED_READS_PER_TASK,
                "keyedWritesPerTask": CostModel::KEYED_WRITES_PER_TASK,
                "idleReadsPerHour": cost.idle_reads_per_hour(),
            },
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use oncetask::firestore::doctor::Check;

        #[test]
        fn json_names_each_missing_index_link() {
            let link = "https://console.firebase.google.com/v1/r/project/p/firestore/indexes?create_composite=Cg";
            let report = DoctorReport {
                database: "projects/p/databases/(default)".into(),
                collection: "onceTasks".into(),
                env: "prod".into(),
                checks: vec![Check {
                    kind: CheckKind::Query,
                    name: "claim: ready tasks".into(),
                    outcome: CheckOutcome::MissingIndex {
                        create_link: Some(link.into()),
                        message: "The query requires an index.".into(),
                    },
                }],
            };
            let cost = CostModel {
                managers: 2,
                kinds: 3,
                tasks_per_hour: None,
            };
            let v = report_json(&report, &cost);
            assert_eq!(v["ok"], false);
            assert_eq!(v["checks"][0]["status"], "missingIndex");
            assert_eq!(v["checks"][0]["createLink"], link);
            assert_eq!(v["indexLinks"], json!([link]));
            assert_eq!(v["costModel"]["idleReadsPerHour"], 60 * 2 * 3);
        }
    }
}

#[cfg(not(feature = "firestore"))]
mod firestore {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run(
        _: &str,
        _: &str,
        _: Option<&str>,
        _: &str,
        _: &DoctorArgs,
        _: bool,
        _: Duration,
        _: &mut Io<'_>,
    ) -> Result<(), CliError> {
        Err(CliError::usage(
            "this build has no Firestore backend (built without the `firestore` feature)",
        ))
    }
}

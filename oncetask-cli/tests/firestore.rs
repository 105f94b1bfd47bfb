//! `oncetask doctor` on the Firestore emulator (`FIRESTORE_EMULATOR_HOST`,
//! set by scripts/test): every check passes there (the emulator needs no
//! index and grants everything), and the cost model follows the options.
//! Without the emulator these tests fail, saying how to start it.

#![cfg(feature = "firestore")]

use clap::Parser;
use oncetask_cli::error::EXIT_USAGE;
use oncetask_cli::{Cli, Io, run};
use serde_json::Value;

fn emulator() {
    if std::env::var_os("FIRESTORE_EMULATOR_HOST").is_none() {
        panic!(
            "FIRESTORE_EMULATOR_HOST is not set: run the tests with scripts/test, which starts \
             the Firestore emulator"
        );
    }
}

fn parse(args: &[&str]) -> Cli {
    let mut all = vec!["oncetask"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).expect("valid arguments")
}

/// Runs a command line; its result, stdout and stderr.
async fn oncetask(args: &[&str]) -> (Result<(), oncetask_cli::CliError>, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = {
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            input: None,
        };
        run(parse(args), &mut io).await
    };
    (
        result,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

fn store_url() -> String {
    format!(
        "firestore://demo-oncetask/doctor-{}",
        uuid::Uuid::new_v4().simple()
    )
}

#[tokio::test]
async fn doctor_passes_on_the_emulator_and_prints_the_cost_model() {
    emulator();
    let url = store_url();
    let (result, out, err) = oncetask(&[
        "--store",
        &url,
        "--env",
        "prod",
        "doctor",
        "--managers",
        "3",
        "--kinds",
        "email,charge",
        "--tasks-per-hour",
        "1000",
    ])
    .await;
    result.unwrap_or_else(|e| panic!("{e}\n{out}\n{err}"));
    assert!(
        out.contains("Everything the store needs is in place."),
        "{out}"
    );
    assert!(out.contains("  ok       claim: ready tasks\n"), "{out}");
    assert!(out.contains("  ok       delete that document\n"), "{out}");
    assert!(
        out.contains("Cost model for 3 manager(s) x 2 kind(s)"),
        "{out}"
    );
    assert!(out.contains("= 360 reads/hour"), "{out}");
}

#[tokio::test]
async fn doctor_json_on_a_named_database() {
    emulator();
    let url = format!("{}?database=oncetask-doctor", store_url());
    let (result, out, err) = oncetask(&["--store", &url, "--json", "doctor"]).await;
    result.unwrap_or_else(|e| panic!("{e}\n{out}\n{err}"));
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        v["database"]
            .as_str()
            .is_some_and(|d| d.ends_with("/databases/oncetask-doctor")),
        "{v}"
    );
    let checks = v["checks"].as_array().expect("checks");
    assert!(checks.iter().all(|c| c["status"] == "ok"), "{v}");
    assert_eq!(v["costModel"]["managers"], 1);
    assert_eq!(v["costModel"]["idleReadsPerHour"], 60);
}

#[tokio::test]
async fn doctor_is_for_firestore_stores_only() {
    let (result, _, _) = oncetask(&["--store", "memory://", "doctor"]).await;
    let e = result.expect_err("not Firestore");
    assert_eq!(e.exit_status(), EXIT_USAGE);
    assert!(e.to_string().contains("checks Firestore databases"), "{e}");
}

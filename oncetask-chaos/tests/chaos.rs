//! CI-sized chaos runs, one per backend, each failing on any violation.
//!
//! Each runs the `oncetask-chaos` binary (so its workers are real processes)
//! with a fixed seed. The Postgres and Redis runs start servers of their own
//! from the machine's binaries (`pg_config --bindir`, `redis-server`),
//! because they crash and restart them; the Firestore run needs the emulator
//! (`FIRESTORE_EMULATOR_HOST`, set by `scripts/test`) and fails without it,
//! and runs a Go-shaped writer beside the fleet. The SQLite run's workers
//! share one file in a temp dir.

use std::process::Command;

use serde_json::Value;

/// Runs the binary with `args` and returns its JSON verdict, failing the test
/// with the run's output if it did not pass.
fn chaos(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_oncetask-chaos"))
        .arg("run")
        .args(args)
        .arg("--json")
        .output()
        .expect("start oncetask-chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chaos run {args:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let verdict: Value = serde_json::from_str(&stdout).expect("a JSON verdict");
    println!("{verdict:#}");
    verdict
}

fn count(verdict: &Value, field: &str) -> u64 {
    verdict[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {verdict}"))
}

/// The run really tortured the workers and everything it created finished.
fn assert_chaotic(verdict: &Value, tasks: u64, kills: u64, restarts: u64) {
    assert_eq!(verdict["violations"], Value::Array(Vec::new()));
    assert_eq!(count(verdict, "kills"), kills);
    assert_eq!(count(verdict, "pauses"), 2);
    assert_eq!(count(verdict, "server_restarts"), restarts);
    assert_eq!(count(verdict, "created"), tasks);
    // Exactly one finishing write in every finished run of a task's stored
    // history (a task runs once, plus once per Go reset), answered or not,
    // and every write of the histories traced.
    assert_eq!(count(verdict, "min_finishing_writes"), 1);
    assert_eq!(count(verdict, "max_finishing_writes"), 1);
    assert!(count(verdict, "writes_traced") > count(verdict, "tasks"));
    assert_eq!(
        count(verdict, "completed") + count(verdict, "failed") + count(verdict, "cancelled"),
        count(verdict, "tasks")
    );
    assert!(count(verdict, "executions") >= tasks);
}

#[test]
fn memory_survives_kills_and_freezes() {
    let v = chaos(&[
        "--backend",
        "memory",
        "--tasks",
        "400",
        "--kills",
        "4",
        "--chaos-secs",
        "8",
        "--seed",
        "11",
    ]);
    assert_chaotic(&v, 400, 4, 0);
}

#[test]
fn postgres_survives_kills_freezes_and_a_server_crash() {
    let v = chaos(&[
        "--backend",
        "postgres",
        "--tasks",
        "300",
        "--kills",
        "4",
        "--chaos-secs",
        "10",
        "--seed",
        "12",
    ]);
    assert_chaotic(&v, 300, 4, 1);
}

#[test]
fn redis_survives_kills_freezes_and_a_server_crash() {
    let v = chaos(&[
        "--backend",
        "redis",
        "--tasks",
        "300",
        "--kills",
        "4",
        "--chaos-secs",
        "10",
        "--seed",
        "13",
    ]);
    assert_chaotic(&v, 300, 4, 1);
}

/// The emulator is slow on a loaded 2-core machine: a longer lease, so most
/// claims are not already stale when their handler starts.
///
/// Meanwhile a Go-shaped writer cancels and resets tasks by writing their
/// documents as the Go package does: a reset runs a finished task again
/// (one finishing write per run generation), and no Go write may be lost.
#[test]
fn firestore_survives_kills_freezes_and_a_go_writer() {
    let v = chaos(&[
        "--backend",
        "firestore",
        "--tasks",
        "120",
        "--kills",
        "3",
        "--chaos-secs",
        "12",
        "--lease-ms",
        "8000",
        "--seed",
        "14",
        "--go-writer",
    ]);
    assert_chaotic(&v, 120, 3, 0);
    assert_eq!(v["go_writer"], Value::Bool(true));
    // The writer did its work: cancels (some while a handler ran), and
    // resets that ran finished tasks again, each as a generation of its own.
    assert!(count(&v, "go_cancels") > 0, "{v}");
    assert!(count(&v, "go_cancels_of_leased") > 0, "{v}");
    assert!(count(&v, "go_resets") > 0, "{v}");
    // Every accepted reset starts a traced generation (a reset whose call
    // failed may too, when the history shows it landed).
    assert!(
        count(&v, "generations") >= count(&v, "tasks") + count(&v, "go_resets"),
        "{v}"
    );
}

/// Worker processes sharing one SQLite file (no server to crash): killed
/// and frozen like the others. A probe in the coordinator writes all along
/// and reports how long its writes waited while a worker was frozen (no
/// timing asserted).
#[test]
fn sqlite_processes_sharing_one_file_survive_kills_and_freezes() {
    let v = sqlite_chaos("sqlite", "15");
    assert_eq!(
        v["freeze_stalls_ms"].as_array().map(Vec::len),
        Some(2),
        "a stall figure per freeze: {v}"
    );
}

/// The same with `Durability::Normal`, whose commits do not wait for
/// `fsync`: nothing is lost or finished twice either.
#[test]
fn sqlite_normal_processes_survive_kills_and_freezes() {
    sqlite_chaos("sqlite-normal", "16");
}

/// A 300-task run of `backend` (a SQLite one) with 4 kills and the
/// default freezes, checked as every chaotic run is, with the probe's
/// writes counted; its verdict.
fn sqlite_chaos(backend: &str, seed: &str) -> Value {
    let v = chaos(&[
        "--backend",
        backend,
        "--tasks",
        "300",
        "--kills",
        "4",
        "--chaos-secs",
        "10",
        "--seed",
        seed,
    ]);
    assert_chaotic(&v, 300, 4, 0);
    assert!(count(&v, "probe_writes") > 0, "{v}");
    v
}

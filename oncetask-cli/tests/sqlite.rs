//! `--store sqlite:…` through the real binary: the demo leaves a database
//! that later commands, separate processes, read.

#![cfg(feature = "sqlite")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn oncetask(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_oncetask"))
        .args(args)
        .current_dir(dir)
        .env_remove("ONCETASK_STORE")
        .env_remove("ONCE_TASK_ENV")
        .stdin(Stdio::null())
        .output()
        .expect("run the oncetask binary");
    assert!(
        output.status.success(),
        "oncetask {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "oncetask-cli-sqlite-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

#[test]
fn the_demo_leaves_a_sqlite_database_that_other_commands_inspect() {
    let dir = scratch();
    let demo = oncetask(&dir, &["demo", "--store", "sqlite://demo.db"]);
    let text = String::from_utf8_lossy(&demo.stdout);
    assert!(
        text.contains("oncetask demo: SQLite backend (sqlite://demo.db)"),
        "{text}"
    );
    assert!(
        text.contains("The tasks stay in sqlite://demo.db"),
        "{text}"
    );
    assert!(dir.join("demo.db").exists(), "the file is left behind");

    // Every URL form reaches the same file (a relative path resolves
    // against the working directory).
    let absolute = format!("sqlite://{}", dir.join("demo.db").display());
    for url in ["sqlite://demo.db", "sqlite:demo.db", absolute.as_str()] {
        let list = json(&oncetask(
            &dir,
            &[
                "--store", url, "--env", "demo", "--json", "tasks", "list", "--limit", "100",
            ],
        ));
        let tasks = list["tasks"].as_array().expect("a task list");
        let ids: Vec<&str> = tasks.iter().filter_map(|t| t["id"].as_str()).collect();
        for id in [
            "welcome-ada",
            "charge-order-1001",
            "import-customers.csv",
            "reminder-grace",
        ] {
            assert!(ids.contains(&id), "{id} listed through {url}: {ids:?}");
        }
    }

    let stats = oncetask(
        &dir,
        &["--store", "sqlite://demo.db", "--env", "demo", "stats"],
    );
    let text = String::from_utf8_lossy(&stats.stdout);
    for kind in [
        "welcome_email",
        "charge_card",
        "import_file",
        "send_reminder",
    ] {
        assert!(text.contains(kind), "{kind} in the stats:\n{text}");
    }
    let stats = json(&oncetask(
        &dir,
        &[
            "--store",
            "sqlite://demo.db",
            "--env",
            "demo",
            "--json",
            "stats",
        ],
    ));
    assert_eq!(stats["env"], "demo", "{stats}");

    let show = json(&oncetask(
        &dir,
        &[
            "--store",
            "sqlite://demo.db",
            "--env",
            "demo",
            "--json",
            "tasks",
            "show",
            "charge-order-1001",
        ],
    ));
    assert_eq!(show["attempts"], 3, "{show}");

    // The demo again on the same file: the same ids exist, nothing runs twice.
    oncetask(&dir, &["demo", "--store", "sqlite://demo.db"]);
    let show = json(&oncetask(
        &dir,
        &[
            "--store",
            "sqlite://demo.db",
            "--env",
            "demo",
            "--json",
            "tasks",
            "show",
            "charge-order-1001",
        ],
    ));
    assert_eq!(show["attempts"], 3, "{show}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_command_on_a_missing_sqlite_file_creates_nothing() {
    let dir = scratch();
    let output = Command::new(env!("CARGO_BIN_EXE_oncetask"))
        .args(["--store", "sqlite://nope.db", "stats"])
        .current_dir(&dir)
        .env_remove("ONCETASK_STORE")
        .stdin(Stdio::null())
        .output()
        .expect("run the oncetask binary");
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("there is no SQLite database at"), "{err}");
    assert!(!dir.join("nope.db").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_in_memory_sqlite_store_is_empty() {
    let dir = scratch();
    let stats = json(&oncetask(
        &dir,
        &["--store", "sqlite::memory:", "--json", "tasks", "list"],
    ));
    assert_eq!(stats["tasks"].as_array().map(Vec::len), Some(0), "{stats}");
    let _ = std::fs::remove_dir_all(dir);
}

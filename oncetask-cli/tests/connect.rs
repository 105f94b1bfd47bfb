//! The `oncetask` binary against a store it cannot use: a closed port is a
//! store error (exit 3) whose message names the URL (password masked) and
//! what to check, in every command that opens the store; a malformed URL is
//! a usage error (exit 2). The tests check the exit code and the message,
//! never how long it took. None needs a running server.

use std::process::{Command, Output, Stdio};

const PASSWORD: &str = "s3cret-pw";
const EXIT_USAGE: i32 = 2;
const EXIT_STORE: i32 = 3;

/// The commands that open `--store` (each one with an argument it needs).
const COMMANDS: [&[&str]; 6] = [
    &["tasks", "list"],
    &["tasks", "show", "some-id"],
    &["stats"],
    &["cancel", "some-id", "--yes"],
    &["reset", "some-id", "--yes"],
    &["delete", "some-id", "--yes"],
];

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs the real binary on `store` with `args` and `env`, stdin closed.
fn oncetask(store: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oncetask"));
    command
        .args(["--store", store, "--connect-timeout", "1"])
        .args(args)
        .env_remove("ONCETASK_STORE")
        .env_remove("ONCE_TASK_ENV")
        .env_remove("FIRESTORE_EMULATOR_HOST")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run the oncetask binary")
}

/// Checks that `output` failed with `code` and says each of `expected`,
/// without the password; returns its stderr.
fn failed(output: &Output, code: i32, expected: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    for text in expected {
        assert!(stderr.contains(text), "expected {text:?} in: {stderr}");
    }
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains(PASSWORD),
        "stdout shows the password"
    );
    stderr
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_closed_port_is_a_store_error_and_a_malformed_url_a_usage_error() {
    let port = closed_port();
    let url = format!("postgres://app:{PASSWORD}@127.0.0.1:{port}/app?schema=jobs");
    let masked = format!("cannot reach PostgreSQL at postgres://app:***@127.0.0.1:{port}/app");
    for args in COMMANDS {
        let output = oncetask(&url, args, &[]);
        failed(
            &output,
            EXIT_STORE,
            &[
                &masked,
                "connect timeout 1s",
                "check that the PostgreSQL server",
            ],
        );
    }
    let output = oncetask(
        &format!("postgres://app:{PASSWORD}@127.0.0.1:notaport/app"),
        &["stats"],
        &[],
    );
    failed(
        &output,
        EXIT_USAGE,
        &["invalid PostgreSQL URL postgres://app:***@127.0.0.1:notaport/app"],
    );
    // Refused while parsing the arguments: clap's message masks it too.
    let output = oncetask(
        &format!("postgres://app:{PASSWORD}@127.0.0.1:{port}/app?schema=no;such"),
        &["stats"],
        &[],
    );
    failed(
        &output,
        EXIT_USAGE,
        &["postgres://app:***@127.0.0.1", "invalid schema"],
    );
}

#[cfg(feature = "redis")]
#[test]
fn redis_closed_port_is_a_store_error_and_a_malformed_url_a_usage_error() {
    let port = closed_port();
    let url = format!("redis://app:{PASSWORD}@127.0.0.1:{port}/0?prefix=jobs");
    let masked = format!("cannot reach Redis at redis://app:***@127.0.0.1:{port}/0");
    for args in COMMANDS {
        let output = oncetask(&url, args, &[]);
        failed(
            &output,
            EXIT_STORE,
            &[&masked, "connect timeout 1s", "check that the Redis server"],
        );
    }
    let (a, b) = (closed_port(), closed_port());
    let cluster = format!("redis+cluster://app:{PASSWORD}@127.0.0.1:{a},127.0.0.1:{b}");
    let output = oncetask(&cluster, &["stats"], &[]);
    failed(
        &output,
        EXIT_STORE,
        &[&format!(
            "cannot reach the Redis Cluster at redis://app:***@127.0.0.1:{a}, \
             redis://app:***@127.0.0.1:{b}"
        )],
    );
    let output = oncetask(
        &format!("redis://app:{PASSWORD}@127.0.0.1:notaport/0"),
        &["stats"],
        &[],
    );
    failed(
        &output,
        EXIT_USAGE,
        &["invalid Redis URL redis://app:***@127.0.0.1:notaport/0"],
    );
    let output = oncetask(
        &format!("redis://127.0.0.1:{port}?prefix=bad{{prefix}}"),
        &["stats"],
        &[],
    );
    failed(&output, EXIT_USAGE, &["invalid key prefix"]);
}

#[cfg(feature = "firestore")]
#[test]
fn firestore_closed_emulator_port_is_a_store_error_and_a_malformed_host_a_usage_error() {
    let port = closed_port();
    let host = format!("127.0.0.1:{port}");
    let emulator = [("FIRESTORE_EMULATOR_HOST", host.as_str())];
    let expected = format!(
        "cannot reach Firestore (project demo-oncetask, database (default)) at http://{host}"
    );
    let mut commands: Vec<&[&str]> = COMMANDS.to_vec();
    commands.push(&["doctor"]);
    for args in commands {
        let output = oncetask("firestore://demo-oncetask/tasks", args, &emulator);
        failed(
            &output,
            EXIT_STORE,
            &[
                &expected,
                "connect timeout 1s",
                "check that the Firestore emulator is running",
                "FIRESTORE_EMULATOR_HOST",
            ],
        );
    }
    let output = oncetask(
        "firestore://demo-oncetask/tasks",
        &["stats"],
        &[("FIRESTORE_EMULATOR_HOST", "not a host")],
    );
    failed(
        &output,
        EXIT_USAGE,
        &["invalid Firestore endpoint", "FIRESTORE_EMULATOR_HOST"],
    );
    let output = oncetask("firestore://", &["stats"], &emulator);
    failed(&output, EXIT_USAGE, &["firestore:// needs a project"]);
}

#[test]
fn a_malformed_memory_url_is_a_usage_error() {
    let output = oncetask("memory://somewhere", &["stats"], &[]);
    failed(&output, EXIT_USAGE, &["memory:// takes nothing"]);
}

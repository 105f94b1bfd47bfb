//! Every CLI command, in-process, against a seeded in-memory store.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use clap::error::ErrorKind;
use oncetask::backend::{LeaseToken, TaskParts};
use oncetask::{AttemptError, MemoryStore, Outcome, Store, Task, TaskStatus};
use oncetask_cli::error::{EXIT_FAILED, EXIT_STORE, EXIT_USAGE};
use oncetask_cli::{Cli, CliError, Io, execute, run};
use serde_json::Value;

/// What one command printed and returned.
struct Ran {
    result: Result<(), CliError>,
    out: String,
    err: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.out, self.err))
    }

    fn ok(&self) -> &Self {
        if let Err(e) = &self.result {
            panic!(
                "command failed: {e}\nstdout: {}\nstderr: {}",
                self.out, self.err
            );
        }
        self
    }

    fn exit_status(&self) -> u8 {
        self.result.as_ref().err().map_or(0, CliError::exit_status)
    }
}

fn parse(args: &[&str]) -> Cli {
    let argv = std::iter::once("oncetask").chain(args.iter().copied());
    Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?} should parse: {e}"))
}

/// Runs `args` against `store`; `answer` is what the user types at a
/// confirmation prompt (`None`: no terminal).
async fn cli(store: &MemoryStore, args: &[&str], answer: Option<&str>) -> Ran {
    let cli = parse(args);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut typed = answer.map(|a| std::io::Cursor::new(format!("{a}\n").into_bytes()));
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        input: typed.as_mut().map(|t| t as &mut dyn std::io::BufRead),
    };
    let result = execute(&cli, Arc::new(store.clone()), &mut io).await;
    Ran {
        result,
        out: String::from_utf8_lossy(&out).into_owned(),
        err: String::from_utf8_lossy(&err).into_owned(),
    }
}

fn task(id: &str, kind: &str, created: DateTime<Utc>) -> Task {
    Task::new(id, kind, "prod", created)
}

fn finished(mut task: Task, outcome: Outcome, now: DateTime<Utc>) -> Task {
    task.attempts = 1;
    task.done_at = Some(now);
    task.outcome = Some(outcome);
    task
}

/// Env `prod`: emails in four statuses, three `sync` tasks on key `cal-7`
/// (pending, leased, completed), 55 pending `bulk` tasks; env `staging`:
/// one task.
async fn seeded() -> (MemoryStore, DateTime<Utc>) {
    let store = MemoryStore::new();
    // Whole milliseconds, like the CLI's clock: otherwise a command run in
    // the same millisecond reads "now" as before the seeding.
    let now = oncetask::backend::task::truncate_to_millis(Utc::now());
    let min = TimeDelta::minutes(1);
    let mut tasks = vec![
        task("email-1", "email", now - min * 5),
        TaskParts {
            wait_until: Some(now + min * 60),
            ..task("email-2", "email", now - min * 4).into_parts()
        }
        .into(),
        finished(
            TaskParts {
                errors: vec![AttemptError {
                    at: now - min,
                    error: "smtp down".into(),
                }],
                ..task("email-3", "email", now - min * 3).into_parts()
            }
            .into(),
            Outcome::Failed,
            now - min,
        ),
        finished(
            task("email-4", "email", now - min * 2),
            Outcome::Completed,
            now,
        ),
        TaskParts {
            resource_key: Some("cal-7".into()),
            ..task("sync-1", "sync", now - min * 10).into_parts()
        }
        .into(),
        TaskParts {
            resource_key: Some("cal-7".into()),
            leased_until: Some(now + min * 5),
            lease_token: Some(LeaseToken::generate()),
            attempts: 1,
            ..task("sync-2", "sync", now - min * 9).into_parts()
        }
        .into(),
        finished(
            TaskParts {
                resource_key: Some("cal-7".into()),
                ..task("sync-3", "sync", now - min * 8).into_parts()
            }
            .into(),
            Outcome::Completed,
            now - min,
        ),
        Task::new("other-1", "email", "staging", now - min),
    ];
    for n in 0..55 {
        tasks.push(task(
            &format!("bulk-{n:02}"),
            "bulk",
            now - min + TimeDelta::milliseconds(n),
        ));
    }
    store.create(tasks).await.expect("seed");
    (store, now)
}

async fn status_of(store: &MemoryStore, id: &str) -> Option<TaskStatus> {
    let now = Utc::now();
    match store.get(&[id.to_owned()]).await.expect("get").pop() {
        Some(oncetask::backend::Fetched::Task(t)) => Some(t.status(now)),
        _ => None,
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["tasks"]
        .as_array()
        .expect("a task array")
        .iter()
        .map(|t| t["id"].as_str().expect("an id").to_owned())
        .collect()
}

#[tokio::test]
async fn tasks_list_prints_a_table_a_page_at_a_time() {
    let (store, _) = seeded().await;
    let ran = cli(&store, &["--env", "prod", "tasks", "list"], None).await;
    ran.ok();
    let lines: Vec<&str> = ran.out.lines().collect();
    assert!(lines[0].starts_with("ID"), "{}", ran.out);
    for column in [
        "KIND",
        "STATUS",
        "WHEN",
        "ATTEMPTS",
        "RESOURCE KEY",
        "LAST ERROR",
    ] {
        assert!(
            lines[0].contains(column),
            "header has {column}: {}",
            lines[0]
        );
    }
    assert_eq!(
        lines.len(),
        1 + 50 + 2,
        "a header, 50 rows, a footer:\n{}",
        ran.out
    );
    // Oldest first: sync-1 was created 10 minutes ago.
    assert!(lines[1].starts_with("sync-1 "), "{}", lines[1]);
    assert!(lines[1].contains("ready for 10m"), "{}", lines[1]);
    let hint = "tasks 1-50 of environment \"prod\"; next page: --after ";
    let cursor = ran
        .out
        .lines()
        .find_map(|l| l.strip_prefix(hint))
        .unwrap_or_else(|| panic!("a next-page cursor in {}", ran.out))
        .to_owned();
    let next = cli(
        &store,
        &["--env", "prod", "tasks", "list", "--after", &cursor],
        None,
    )
    .await;
    next.ok();
    assert!(
        next.out.contains(&format!(
            "tasks 1-12 after {cursor} of environment \"prod\" (last page)"
        )),
        "{}",
        next.out
    );
    assert!(
        !next.out.lines().any(|l| l.starts_with("sync-1 ")),
        "the first page's tasks are not on the next: {}",
        next.out
    );
    let failed = lines
        .iter()
        .find(|l| l.starts_with("email-3"))
        .expect("email-3 listed");
    assert!(
        failed.contains("failed") && failed.contains("smtp down"),
        "{failed}"
    );

    let last = cli(
        &store,
        &["--env", "prod", "tasks", "list", "--offset", "50"],
        None,
    )
    .await;
    last.ok();
    assert!(
        last.out
            .contains("tasks 51-62 of environment \"prod\" (last page)"),
        "{}",
        last.out
    );
    assert!(
        !last.out.contains("other-1"),
        "another env's task is not listed"
    );
}

#[tokio::test]
async fn tasks_list_filters_by_kind_status_and_resource_key() {
    let (store, _) = seeded().await;
    let list = |args: Vec<&'static str>| {
        let store = store.clone();
        async move {
            let mut all = vec!["--env", "prod", "--json", "tasks", "list"];
            all.extend(args);
            let ran = cli(&store, &all, None).await;
            ran.ok();
            ids(&ran.json())
        }
    };
    assert_eq!(
        list(vec!["--kind", "email"]).await,
        ["email-1", "email-2", "email-3", "email-4"]
    );
    assert_eq!(
        list(vec!["--status", "failed,completed", "--kind", "email"]).await,
        ["email-3", "email-4"]
    );
    assert_eq!(
        list(vec!["--status", "leased", "--status", "WAITING"]).await,
        ["sync-2", "email-2"]
    );
    assert_eq!(
        list(vec!["--resource-key", "cal-7"]).await,
        ["sync-1", "sync-2", "sync-3"]
    );
    assert!(list(vec!["--kind", "nope"]).await.is_empty());
    assert_eq!(
        list(vec!["--kind", "email", "--open"]).await,
        ["email-1", "email-2"]
    );
    assert_eq!(
        list(vec!["--id-prefix", "sync-"]).await,
        ["sync-1", "sync-2", "sync-3"]
    );
}

#[tokio::test]
async fn tasks_list_takes_a_creation_time_range() {
    let (store, now) = seeded().await;
    let min = TimeDelta::minutes(1);
    let from = (now - min * 9).to_rfc3339();
    let until = (now - min * 3).to_rfc3339();
    let ran = cli(
        &store,
        &[
            "--env",
            "prod",
            "--json",
            "tasks",
            "list",
            "--created-from",
            &from,
            "--created-until",
            &until,
        ],
        None,
    )
    .await;
    ran.ok();
    assert_eq!(
        ids(&ran.json()),
        ["sync-2", "sync-3", "email-1", "email-2", "email-3"]
    );
    let bad = Cli::try_parse_from(["oncetask", "tasks", "list", "--created-from", "yesterday"]);
    assert!(bad.is_err());
}

#[tokio::test]
async fn tasks_list_json_has_every_field_and_the_next_offset() {
    let (store, _) = seeded().await;
    let ran = cli(
        &store,
        &[
            "--env", "prod", "--json", "tasks", "list", "--kind", "bulk", "--limit", "20",
            "--offset", "40",
        ],
        None,
    )
    .await;
    let page = ran.ok().json();
    assert_eq!(page["env"], "prod");
    assert_eq!(page["offset"], 40);
    assert_eq!(page["limit"], 20);
    assert_eq!(
        page["nextOffset"],
        Value::Null,
        "55 bulk tasks: the page from 40 is the last"
    );
    assert_eq!(ids(&page).len(), 15);
    let first = &page["tasks"][0];
    assert_eq!(first["id"], "bulk-40");
    assert_eq!(first["status"], "pending");
    assert_eq!(first["kind"], "bulk");
    assert!(first.get("createdAt").is_some() && first.get("version").is_some());

    let ran = cli(
        &store,
        &["--env", "prod", "--json", "tasks", "list", "--limit", "10"],
        None,
    )
    .await;
    let first = ran.ok().json();
    assert_eq!(first["nextOffset"], 10);
    let cursor = first["nextAfter"].as_str().expect("a cursor").to_owned();
    let ran = cli(
        &store,
        &[
            "--env", "prod", "--json", "tasks", "list", "--limit", "10", "--after", &cursor,
        ],
        None,
    )
    .await;
    let next = ran.ok().json();
    assert_eq!(next["after"], cursor.as_str());
    let (a, b) = (ids(&first), ids(&next));
    assert_eq!(b.len(), 10);
    assert!(a.iter().all(|id| !b.contains(id)), "{a:?} then {b:?}");

    let bad = Cli::try_parse_from(["oncetask", "tasks", "list", "--after", "yesterday"]);
    assert!(bad.is_err(), "a malformed cursor is refused");
}

#[tokio::test]
async fn tasks_show_prints_one_task_or_says_where_it_is() {
    let (store, _) = seeded().await;
    let ran = cli(&store, &["--env", "prod", "tasks", "show", "email-3"], None).await;
    ran.ok();
    for line in [
        "id:",
        "kind:",
        "status:",
        "created:",
        "done:",
        "attempts:",
        "data:",
        "errors (1, oldest first):",
    ] {
        assert!(ran.out.contains(line), "{line} in\n{}", ran.out);
    }
    assert!(ran.out.contains("failed"), "{}", ran.out);
    assert!(ran.out.contains("smtp down"), "{}", ran.out);

    let json = cli(
        &store,
        &["--env", "prod", "--json", "tasks", "show", "sync-2"],
        None,
    )
    .await;
    let task = json.ok().json();
    assert_eq!(task["id"], "sync-2");
    assert_eq!(task["status"], "leased");
    assert_eq!(task["resourceKey"], "cal-7");

    let missing = cli(&store, &["--env", "prod", "tasks", "show", "nope"], None).await;
    assert_eq!(missing.exit_status(), EXIT_FAILED);
    assert!(
        missing
            .result
            .as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("no task \"nope\""))
    );

    let elsewhere = cli(&store, &["--env", "prod", "tasks", "show", "other-1"], None).await;
    assert_eq!(elsewhere.exit_status(), EXIT_FAILED);
    let message = elsewhere
        .result
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("it is in environment \"staging\" (use --env staging)"),
        "{message}"
    );
}

#[tokio::test]
async fn stats_counts_each_kind_by_status_with_ages_and_due_times() {
    let (store, _) = seeded().await;
    let ran = cli(&store, &["--env", "prod", "--json", "stats"], None).await;
    let stats = ran.ok().json();
    assert_eq!(stats["env"], "prod");
    let email = &stats["kinds"]["email"];
    assert_eq!(email["counts"]["pending"], 1);
    assert_eq!(email["counts"]["waiting"], 1);
    assert_eq!(email["counts"]["failed"], 1);
    assert_eq!(email["counts"]["completed"], 1);
    assert_eq!(email["counts"]["leased"], 0);
    assert_eq!(email["total"], 4);
    let age = email["oldestPendingAgeSeconds"].as_f64().expect("an age");
    assert!(
        (300.0..360.0).contains(&age),
        "email-1 has waited 5 minutes: {age}"
    );
    let due = email["nextDueInSeconds"].as_f64().expect("a due time");
    assert!(
        (3500.0..=3600.0).contains(&due),
        "email-2 is due in an hour: {due}"
    );
    let sync = &stats["kinds"]["sync"];
    assert_eq!(sync["counts"]["pending"], 1);
    assert_eq!(sync["counts"]["leased"], 1);
    assert_eq!(sync["counts"]["completed"], 1);
    assert_eq!(stats["kinds"]["bulk"]["counts"]["pending"], 55);
    assert_eq!(stats["totals"]["pending"], 57);
    assert_eq!(stats["total"], 62);
    assert_eq!(stats["undecodable"], 0);

    // An undecodable document is counted apart, outside every status and TOTAL.
    store.insert_undecodable("rotten", "prod", "email", "not a task");
    let ran = cli(&store, &["--env", "prod", "--json", "stats"], None).await;
    let stats = ran.ok().json();
    assert_eq!(stats["kinds"]["email"]["undecodable"], 1);
    assert_eq!(stats["kinds"]["email"]["total"], 4);
    assert_eq!(stats["undecodable"], 1);
    assert_eq!(stats["total"], 62);

    let table = cli(&store, &["--env", "prod", "stats"], None).await;
    table.ok();
    let header = table.out.lines().next().unwrap_or_default();
    for column in [
        "KIND",
        "WAITING",
        "PENDING",
        "CANCELLING",
        "FAILED",
        "TOTAL",
        "UNDECODABLE",
        "OLDEST PENDING",
        "NEXT DUE",
    ] {
        assert!(header.contains(column), "{column} in {header}");
    }
    let email_row = table
        .out
        .lines()
        .find(|l| l.starts_with("email"))
        .unwrap_or_default();
    assert!(
        email_row.contains("5m") && email_row.contains("in 59m"),
        "{email_row}"
    );
    assert!(
        table.out.lines().any(|l| l.starts_with("(all)")),
        "{}",
        table.out
    );

    let one = cli(
        &store,
        &["--env", "prod", "--json", "stats", "--kind", "sync"],
        None,
    )
    .await;
    let one = one.ok().json();
    assert_eq!(one["kinds"].as_object().map(|k| k.len()), Some(1));
    let unknown = cli(&store, &["--env", "prod", "stats", "--kind", "nope"], None).await;
    assert_eq!(unknown.exit_status(), EXIT_FAILED);
    let empty = cli(&store, &["--env", "nowhere", "stats"], None).await;
    assert!(
        empty
            .ok()
            .out
            .contains("no tasks in environment \"nowhere\"")
    );
}

#[tokio::test]
async fn cancel_by_id_with_yes_reports_each_id() {
    let (store, _) = seeded().await;
    let ran = cli(
        &store,
        &[
            "--env", "prod", "--json", "cancel", "--yes", "email-1", "email-4", "email-1",
        ],
        None,
    )
    .await;
    let report = ran.ok().json();
    assert_eq!(report["action"], "cancel");
    assert_eq!(report["succeeded"], serde_json::json!(["email-1"]));
    assert_eq!(
        report["skipped"],
        serde_json::json!(["email-4"]),
        "done tasks are skipped"
    );
    assert_eq!(
        status_of(&store, "email-1").await,
        Some(TaskStatus::CancellationPending)
    );
    assert_eq!(
        status_of(&store, "email-4").await,
        Some(TaskStatus::Completed)
    );
}

#[tokio::test]
async fn changes_need_a_confirmation_and_refuse_without_a_terminal() {
    let (store, _) = seeded().await;
    let refused = cli(&store, &["--env", "prod", "cancel", "email-1"], None).await;
    assert_eq!(refused.exit_status(), EXIT_USAGE);
    let message = refused
        .result
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.contains("pass --yes"), "{message}");
    assert_eq!(
        status_of(&store, "email-1").await,
        Some(TaskStatus::Pending)
    );

    let declined = cli(&store, &["--env", "prod", "delete", "email-1"], Some("n")).await;
    assert_eq!(declined.exit_status(), EXIT_FAILED);
    assert!(
        declined
            .err
            .contains("Delete task \"email-1\" in environment \"prod\"? [y/N]"),
        "{}",
        declined.err
    );
    assert_eq!(
        status_of(&store, "email-1").await,
        Some(TaskStatus::Pending)
    );

    let confirmed = cli(&store, &["--env", "prod", "delete", "email-1"], Some("y")).await;
    confirmed.ok();
    assert!(
        confirmed.out.contains("deleted 1: email-1"),
        "{}",
        confirmed.out
    );
    assert_eq!(status_of(&store, "email-1").await, None);
}

#[tokio::test]
async fn reset_puts_finished_tasks_back_and_skips_the_rest() {
    let (store, _) = seeded().await;
    let ran = cli(
        &store,
        &["--env", "prod", "reset", "-y", "email-3", "email-2"],
        None,
    )
    .await;
    ran.ok();
    assert!(ran.out.contains("reset 1: email-3"), "{}", ran.out);
    assert!(
        ran.out
            .contains("skipped (not finished, or repeated) 1: email-2"),
        "{}",
        ran.out
    );
    assert_eq!(
        status_of(&store, "email-3").await,
        Some(TaskStatus::Pending)
    );
    assert_eq!(
        status_of(&store, "email-2").await,
        Some(TaskStatus::Waiting)
    );
}

#[tokio::test]
async fn snoozes_priority_and_max_attempts_are_shown_filtered_and_reprioritized() {
    let (store, now) = seeded().await;
    let tuned: Task = TaskParts {
        snoozes: 3,
        priority: 7,
        max_attempts: Some(4),
        attempts: 1,
        wait_until: Some(now + TimeDelta::minutes(5)),
        ..task("tuned-1", "email", now - TimeDelta::minutes(1)).into_parts()
    }
    .into();
    store.create(vec![tuned]).await.expect("create");

    let ran = cli(&store, &["--env", "prod", "tasks", "show", "tuned-1"], None).await;
    ran.ok();
    let lines: Vec<String> = ran
        .out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for line in [
        "attempts: 1 of at most 4 (the task's own limit)",
        "snoozes: 3",
        "priority: 7",
    ] {
        assert!(lines.iter().any(|l| l == line), "{line:?} in\n{}", ran.out);
    }
    let json = cli(
        &store,
        &["--env", "prod", "--json", "tasks", "show", "tuned-1"],
        None,
    )
    .await;
    let shown = json.ok().json();
    assert_eq!(
        (&shown["snoozes"], &shown["priority"], &shown["maxAttempts"]),
        (&Value::from(3), &Value::from(7), &Value::from(4))
    );

    let list = cli(
        &store,
        &[
            "--env",
            "prod",
            "--json",
            "tasks",
            "list",
            "--priority",
            "7",
        ],
        None,
    )
    .await;
    assert_eq!(ids(&list.ok().json()), ["tuned-1"]);

    let ran = cli(
        &store,
        &[
            "--env",
            "prod",
            "reprioritize",
            "--priority",
            "-2",
            "-y",
            "tuned-1",
            "email-4",
        ],
        None,
    )
    .await;
    ran.ok();
    assert!(ran.out.contains("reprioritized 1: tuned-1"), "{}", ran.out);
    assert!(
        ran.out
            .contains("skipped (already finished, or repeated) 1: email-4"),
        "{}",
        ran.out
    );
    let list = cli(
        &store,
        &[
            "--env",
            "prod",
            "--json",
            "tasks",
            "list",
            "--priority",
            "-2",
        ],
        None,
    )
    .await;
    assert_eq!(ids(&list.ok().json()), ["tuned-1"]);

    // Out of range: a usage error before anything is read or written.
    let argv = [
        "oncetask",
        "--env",
        "prod",
        "reprioritize",
        "--priority",
        "11",
        "-y",
        "tuned-1",
    ];
    let refused = Cli::try_parse_from(argv).expect_err("out of range");
    assert_eq!(refused.kind(), ErrorKind::ValueValidation);
}

#[tokio::test]
async fn actions_by_resource_key_pick_the_tasks_they_apply_to() {
    let (store, _) = seeded().await;
    // reset: only the finished task of the key.
    let ran = cli(
        &store,
        &[
            "--env",
            "prod",
            "--json",
            "reset",
            "--resource-key",
            "cal-7",
            "--yes",
        ],
        None,
    )
    .await;
    assert_eq!(ran.ok().json()["succeeded"], serde_json::json!(["sync-3"]));
    // cancel: the open ones; the leased one keeps running and ends cancelled.
    let ran = cli(
        &store,
        &[
            "--env",
            "prod",
            "cancel",
            "--resource-key",
            "cal-7",
            "--kind",
            "sync",
        ],
        Some("yes"),
    )
    .await;
    ran.ok();
    assert!(
        ran.err
            .contains("Cancel 3 tasks with resource key \"cal-7\" of kind \"sync\""),
        "{}",
        ran.err
    );
    assert!(
        ran.out
            .contains("marked for cancellation 3: sync-1, sync-2, sync-3"),
        "{}",
        ran.out
    );
    // Nothing left to cancel.
    let again = cli(
        &store,
        &["--env", "prod", "cancel", "--resource-key", "cal-7"],
        None,
    )
    .await;
    again.ok();
    assert!(again.out.contains("nothing to cancel"), "{}", again.out);
    // delete: refused for the running task, done for the others; exit 1.
    let ran = cli(
        &store,
        &[
            "--env",
            "prod",
            "--json",
            "delete",
            "--resource-key",
            "cal-7",
            "--yes",
        ],
        None,
    )
    .await;
    assert_eq!(ran.exit_status(), EXIT_FAILED);
    let report = ran.json();
    assert_eq!(report["succeeded"], serde_json::json!(["sync-1", "sync-3"]));
    assert_eq!(report["failed"][0]["id"], "sync-2");
    assert!(
        report["failed"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("is running")),
        "{report}"
    );
}

#[tokio::test]
async fn unknown_ids_are_reported_and_fail_the_command() {
    let (store, _) = seeded().await;
    let ran = cli(
        &store,
        &["--env", "prod", "delete", "--yes", "nope", "email-4"],
        None,
    )
    .await;
    assert_eq!(ran.exit_status(), EXIT_FAILED);
    assert!(ran.out.contains("deleted 1: email-4"), "{}", ran.out);
    assert!(ran.out.contains("not found 1: nope"), "{}", ran.out);
    let message = ran.result.err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(message, "delete: 1 not found in environment \"prod\"");
    // A task of another env is not touched.
    let ran = cli(
        &store,
        &["--env", "prod", "cancel", "--yes", "other-1"],
        None,
    )
    .await;
    assert_eq!(ran.exit_status(), EXIT_FAILED);
    assert!(
        ran.out.contains("is in environment \"staging\""),
        "{}",
        ran.out
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let parse = |args: &[&str]| {
        Cli::try_parse_from(std::iter::once("oncetask").chain(args.iter().copied()))
    };
    let status = parse(&["tasks", "list", "--status", "done"]).expect_err("unknown status");
    assert_eq!(status.kind(), ErrorKind::ValueValidation);
    assert!(
        status
            .to_string()
            .contains("expected one of waiting, pending"),
        "{status}"
    );
    assert_eq!(status.exit_code(), 2);
    let no_id = parse(&["tasks", "show"]).expect_err("missing id");
    assert_eq!(no_id.kind(), ErrorKind::MissingRequiredArgument);
    let nothing = parse(&["delete"]).expect_err("neither ids nor a key");
    assert_eq!(nothing.kind(), ErrorKind::MissingRequiredArgument);
    let both = parse(&["delete", "a", "--resource-key", "k"]).expect_err("ids and a key");
    assert_eq!(both.kind(), ErrorKind::ArgumentConflict);
    let url = parse(&["--store", "mysql://h/db", "stats"]).expect_err("unknown scheme");
    assert!(
        url.to_string().contains("unknown store scheme \"mysql\""),
        "{url}"
    );
    let limit = parse(&["tasks", "list", "--limit", "0"]).expect_err("limit 0");
    assert_eq!(limit.kind(), ErrorKind::ValueValidation);
}

#[tokio::test]
async fn run_needs_a_store_and_knows_which_backends_it_has() {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    {
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            input: None,
        };
        if std::env::var_os("ONCETASK_STORE").is_none() {
            let none = run(parse(&["stats"]), &mut io).await.expect_err("no store");
            assert_eq!(none.exit_status(), EXIT_USAGE);
            assert!(none.to_string().contains("--store"), "{none}");
        }
        // A backend of this build, but nothing listens on port 1.
        let redis = run(parse(&["--store", "redis://127.0.0.1:1", "stats"]), &mut io)
            .await
            .expect_err("unreachable");
        assert_eq!(redis.exit_status(), EXIT_STORE);
        assert!(redis.to_string().contains("cannot reach Redis"), "{redis}");

        run(parse(&["--store", "memory://", "--json", "stats"]), &mut io)
            .await
            .expect("an empty memory store");
    }
    assert!(String::from_utf8_lossy(&err).contains("memory:// is a new, empty store"));
    let stats: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(stats["total"], 0);
}

#[tokio::test]
async fn bulk_actions_select_by_kind_and_status_count_first_and_act() {
    let (store, _) = seeded().await;
    let dry = cli(
        &store,
        &[
            "--env",
            "prod",
            "reset",
            "--kind",
            "email",
            "--status",
            "failed",
            "--dry-run",
        ],
        None,
    )
    .await;
    dry.ok();
    assert!(
        dry.out
            .contains("would reset 1 task with status failed of kind \"email\""),
        "{}",
        dry.out
    );
    assert_eq!(
        status_of(&store, "email-3").await,
        Some(TaskStatus::Failed),
        "dry run"
    );

    let json = cli(
        &store,
        &[
            "--env",
            "prod",
            "--json",
            "delete",
            "--kind",
            "bulk",
            "--dry-run",
        ],
        None,
    )
    .await;
    assert_eq!(json.ok().json()["count"], 55);

    let redrive = cli(
        &store,
        &[
            "--env", "prod", "reset", "--kind", "email", "--status", "failed",
        ],
        None,
    )
    .await;
    assert_eq!(
        redrive.exit_status(),
        EXIT_USAGE,
        "needs --yes without a terminal"
    );
    let redrive = cli(
        &store,
        &[
            "--env", "prod", "reset", "--kind", "email", "--status", "failed", "--yes",
        ],
        None,
    )
    .await;
    assert!(
        redrive.ok().out.contains("reset 1: email-3"),
        "{}",
        redrive.out
    );
    assert_eq!(
        status_of(&store, "email-3").await,
        Some(TaskStatus::Pending)
    );

    let deleted = cli(
        &store,
        &["--env", "prod", "delete", "--kind", "bulk", "--yes"],
        None,
    )
    .await;
    assert!(
        deleted.ok().out.contains("deleted 55: bulk-00"),
        "{}",
        deleted.out
    );
    assert_eq!(status_of(&store, "bulk-54").await, None);
}

#[tokio::test]
async fn prune_counts_confirms_and_leaves_tombstones() {
    let (store, _) = seeded().await;
    let refused = cli(&store, &["--env", "prod", "prune", "--kind", "email"], None).await;
    assert_eq!(refused.exit_status(), EXIT_USAGE, "a period is needed");
    let bad = cli(
        &store,
        &[
            "--env",
            "prod",
            "prune",
            "--kind",
            "email",
            "--completed",
            "2d",
            "--tombstones",
            "1d",
        ],
        None,
    )
    .await;
    assert_eq!(bad.exit_status(), EXIT_USAGE, "{}", bad.err);

    let dry = cli(
        &store,
        &[
            "--env",
            "prod",
            "prune",
            "--kind",
            "email",
            "--finished",
            "0s",
            "--dry-run",
        ],
        None,
    )
    .await;
    assert!(dry.ok().out.contains("would turn 2 task(s)"), "{}", dry.out);
    assert_eq!(
        status_of(&store, "email-4").await,
        Some(TaskStatus::Completed)
    );

    let pruned = cli(
        &store,
        &[
            "--env",
            "prod",
            "--json",
            "prune",
            "--kind",
            "email",
            "--finished",
            "0s",
            "--yes",
        ],
        None,
    )
    .await;
    let report = pruned.ok().json();
    assert_eq!(
        (report["tombstoned"].as_u64(), report["dryRun"].as_bool()),
        (Some(2), Some(false))
    );
    let shown = cli(
        &store,
        &["--env", "prod", "--json", "tasks", "show", "email-4"],
        None,
    )
    .await;
    assert!(shown.ok().json()["prunedAt"].is_string(), "{}", shown.out);
    let reset = cli(
        &store,
        &["--env", "prod", "reset", "email-4", "--yes"],
        None,
    )
    .await;
    assert_eq!(reset.exit_status(), EXIT_FAILED);
    assert!(reset.out.contains("pruned to a tombstone"), "{}", reset.out);

    let storage = cli(
        &store,
        &["--env", "prod", "--json", "stats", "--storage"],
        None,
    )
    .await;
    let storage = storage.ok().json();
    assert_eq!(storage["tombstones"]["documents"], 2, "{storage}");
    assert!(
        storage["method"]
            .as_str()
            .is_some_and(|m| m.contains("heap estimate"))
    );
}

#[tokio::test]
async fn pause_and_resume_a_kind_and_list_the_paused_ones() {
    let (store, _) = seeded().await;
    let none = cli(&store, &["--env", "prod", "pause"], None).await;
    assert!(none.ok().out.contains("no kind is paused"), "{}", none.out);
    let paused = cli(&store, &["--env", "prod", "pause", "sync"], None).await;
    assert!(
        paused.ok().out.contains("paused kind \"sync\""),
        "{}",
        paused.out
    );
    let again = cli(&store, &["--env", "prod", "pause", "sync"], None).await;
    assert!(again.ok().out.contains("(it already was)"), "{}", again.out);
    let listed = cli(&store, &["--env", "prod", "--json", "pause"], None).await;
    assert_eq!(listed.ok().json()["paused"], serde_json::json!(["sync"]));
    assert_eq!(
        store.paused_kinds("staging").await.expect("read"),
        Vec::<String>::new()
    );
    let resumed = cli(&store, &["--env", "prod", "resume", "sync"], None).await;
    assert!(
        resumed.ok().out.contains("resumed kind \"sync\""),
        "{}",
        resumed.out
    );
    assert!(store.paused_kinds("prod").await.expect("read").is_empty());
}

//! The `oncetask` binary against PostgreSQL at `ONCETASK_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`): each test seeds its
//! own schema (`oncetask_cli_test_<unix seconds>_<random>`) through the
//! library, runs the real binary on it, and drops the schema. An
//! unreachable server fails the tests, saying how to start one.

#![cfg(feature = "postgres")]

use std::process::{Command, Output, Stdio};

use chrono::{DateTime, TimeDelta, Utc};
use oncetask::backend::{Fetched, TaskParts};
use oncetask::postgres::PostgresStore;
use oncetask::{AttemptError, Outcome, Store, Task, TaskStatus};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("ONCETASK_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A migrated schema of its own, seeded, dropped by [`Schema::drop_schema`].
struct Schema {
    store: PostgresStore,
    name: String,
}

impl Schema {
    async fn new() -> Schema {
        let url = url();
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot reach PostgreSQL at {url} ({e}). Start it (on this machine: \
                     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                     or run `scripts/test`), or set ONCETASK_POSTGRES_URL."
                )
            });
        drop_stale_schemas(&pool).await;
        let name = format!(
            "oncetask_cli_test_{}_{}",
            Utc::now().timestamp(),
            uuid::Uuid::new_v4().simple()
        );
        let store = PostgresStore::from_pool(pool, &name).expect("a valid schema name");
        store.migrate().await.expect("migrate");
        Schema { store, name }
    }

    /// The `--store` URL of this schema.
    fn store_url(&self) -> String {
        let url = url();
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}schema={}", self.name)
    }

    /// Runs the binary with `--store` and `--env prod` before `args`, with
    /// no terminal on stdin.
    fn oncetask(&self, args: &[&str]) -> Output {
        let store = self.store_url();
        let mut all = vec!["--store", store.as_str(), "--env", "prod"];
        all.extend_from_slice(args);
        oncetask(&all)
    }

    async fn status_of(&self, id: &str) -> Option<TaskStatus> {
        match self.store.get(&[id.to_owned()]).await.expect("get").pop() {
            Some(Fetched::Task(t)) => Some(t.status(Utc::now())),
            _ => None,
        }
    }

    async fn drop_schema(self) {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
            .execute(self.store.pool())
            .await;
    }
}

/// Drops `oncetask_cli_test_<unix seconds>_*` schemas over an hour old
/// (left by runs that panicked before dropping theirs).
async fn drop_stale_schemas(pool: &sqlx::PgPool) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'oncetask\\_cli\\_test\\_%'",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let cutoff = Utc::now().timestamp() - 3600;
    for name in names {
        let created = name
            .strip_prefix("oncetask_cli_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<i64>().ok());
        let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid && created.is_some_and(|t| t < cutoff) {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .execute(pool)
                .await;
        }
    }
}

/// Runs the real binary with `args`, stdin closed (not a terminal).
fn oncetask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oncetask"))
        .args(args)
        .env_remove("ONCETASK_STORE")
        .env_remove("ONCE_TASK_ENV")
        .stdin(Stdio::null())
        .output()
        .expect("run the oncetask binary")
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    assert_eq!(code(output), 0, "stderr: {}", stderr(output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(output)))
}

fn task(id: &str, kind: &str, created: DateTime<Utc>) -> Task {
    Task::new(id, kind, "prod", created)
}

/// `email-1` pending, `email-2` waiting an hour, `email-3` failed,
/// `sync-1`/`sync-2` on key `cal-7` (pending, completed), and `other-1`
/// in env `staging`.
async fn seed(schema: &Schema) -> DateTime<Utc> {
    let now = Utc::now();
    let min = TimeDelta::minutes(1);
    let mut failed = task("email-3", "email", now - min * 3);
    failed.attempts = 3;
    failed.errors = vec![AttemptError {
        at: now - min,
        error: "smtp down".into(),
    }];
    failed.done_at = Some(now - min);
    failed.outcome = Some(Outcome::Failed);
    let mut synced = task("sync-2", "sync", now - min * 9);
    synced.resource_key = Some("cal-7".into());
    synced.attempts = 1;
    synced.done_at = Some(now - min);
    synced.outcome = Some(Outcome::Completed);
    let tasks = vec![
        task("email-1", "email", now - min * 5),
        TaskParts {
            wait_until: Some(now + min * 60),
            ..task("email-2", "email", now - min * 4).into_parts()
        }
        .into(),
        failed,
        TaskParts {
            resource_key: Some("cal-7".into()),
            ..task("sync-1", "sync", now - min * 10).into_parts()
        }
        .into(),
        synced,
        Task::new("other-1", "email", "staging", now - min),
    ];
    schema.store.create(tasks).await.expect("seed");
    now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_and_stats_read_the_postgres_queue() {
    let schema = Schema::new().await;
    seed(&schema).await;

    let list = json(&schema.oncetask(&["--json", "tasks", "list", "--limit", "2"]));
    let ids: Vec<&str> = list["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, ["sync-1", "sync-2"]);
    assert_eq!(list["nextOffset"], 2);
    let failed = json(&schema.oncetask(&["--json", "tasks", "list", "--status", "failed"]));
    assert_eq!(failed["tasks"][0]["id"], "email-3");
    assert_eq!(failed["tasks"][0]["errors"][0]["error"], "smtp down");

    let table = schema.oncetask(&["tasks", "list", "--resource-key", "cal-7"]);
    assert_eq!(code(&table), 0, "{}", stderr(&table));
    let text = stdout(&table);
    assert!(
        text.lines().next().is_some_and(|h| h.starts_with("ID")),
        "{text}"
    );
    assert!(text.contains("2 tasks in environment \"prod\""), "{text}");

    let show = json(&schema.oncetask(&["--json", "tasks", "show", "email-2"]));
    assert_eq!(show["status"], "waiting");
    let shown = schema.oncetask(&["tasks", "show", "email-3"]);
    assert!(stdout(&shown).contains("smtp down"), "{}", stdout(&shown));

    let stats = json(&schema.oncetask(&["--json", "stats"]));
    assert_eq!(stats["kinds"]["email"]["counts"]["pending"], 1);
    assert_eq!(stats["kinds"]["email"]["counts"]["waiting"], 1);
    assert_eq!(stats["kinds"]["email"]["counts"]["failed"], 1);
    assert_eq!(stats["kinds"]["sync"]["counts"]["completed"], 1);
    assert_eq!(stats["total"], 5, "staging's task is not counted");
    let age = stats["kinds"]["email"]["oldestPendingAgeSeconds"]
        .as_f64()
        .expect("an age");
    assert!((300.0..400.0).contains(&age), "{age}");
    assert!(stats["kinds"]["email"]["nextDue"].is_string());
    let table = schema.oncetask(&["stats"]);
    assert_eq!(code(&table), 0, "{}", stderr(&table));
    assert!(stdout(&table).contains("(all)"), "{}", stdout(&table));

    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reset_and_delete_change_the_postgres_queue() {
    let schema = Schema::new().await;
    seed(&schema).await;

    // Without --yes and without a terminal, nothing happens.
    let refused = schema.oncetask(&["cancel", "email-1"]);
    assert_eq!(code(&refused), 2, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("pass --yes"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(schema.status_of("email-1").await, Some(TaskStatus::Pending));

    let cancel = json(&schema.oncetask(&["--json", "cancel", "--yes", "email-1"]));
    assert_eq!(cancel["succeeded"][0], "email-1");
    assert_eq!(
        schema.status_of("email-1").await,
        Some(TaskStatus::CancellationPending)
    );

    let reset = schema.oncetask(&["reset", "--yes", "email-3"]);
    assert_eq!(code(&reset), 0, "{}", stderr(&reset));
    assert!(
        stdout(&reset).contains("reset 1: email-3"),
        "{}",
        stdout(&reset)
    );
    assert_eq!(schema.status_of("email-3").await, Some(TaskStatus::Pending));

    let delete = json(&schema.oncetask(&["--json", "delete", "--resource-key", "cal-7", "--yes"]));
    assert_eq!(delete["succeeded"], serde_json::json!(["sync-1", "sync-2"]));
    assert_eq!(schema.status_of("sync-1").await, None);

    let missing = schema.oncetask(&["delete", "--yes", "nope"]);
    assert_eq!(code(&missing), 1);
    assert!(
        stdout(&missing).contains("not found 1: nope"),
        "{}",
        stdout(&missing)
    );
    assert!(
        stderr(&missing).contains("error: delete: 1 not found"),
        "{}",
        stderr(&missing)
    );

    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_with_a_clear_message() {
    let schema = Schema::new().await;
    let cases: [(&[&str], &str); 5] = [
        (
            &["tasks", "list", "--status", "done"],
            "unknown status \"done\"",
        ),
        (&["tasks", "show"], "<ID>"),
        (&["frobnicate"], "unrecognized subcommand"),
        (&["delete"], "required"),
        (
            &["--store", "mysql://localhost/db", "stats"],
            "unknown store scheme",
        ),
    ];
    for (args, expected) in cases {
        let output = if args.first() == Some(&"--store") {
            oncetask(args)
        } else {
            schema.oncetask(args)
        };
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let missing = schema.oncetask(&["tasks", "show", "nope"]);
    assert_eq!(code(&missing), 1);
    assert!(
        stderr(&missing).contains("no task \"nope\""),
        "{}",
        stderr(&missing)
    );
    let no_store = oncetask(&["stats"]);
    assert_eq!(code(&no_store), 2);
    assert!(
        stderr(&no_store).contains("no store given"),
        "{}",
        stderr(&no_store)
    );
    let wrong_schema = oncetask(&[
        "--store",
        &format!("{}?schema=no_such_schema", url()),
        "stats",
    ]);
    assert_eq!(code(&wrong_schema), 3, "{}", stderr(&wrong_schema));
    assert!(
        stderr(&wrong_schema).contains("has no oncetask table \"no_such_schema\".tasks"),
        "{}",
        stderr(&wrong_schema)
    );
    schema.drop_schema().await;
}

#[test]
fn an_unreachable_store_exits_3_quickly() {
    // Port 1 on loopback: nothing listens there.
    let started = std::time::Instant::now();
    let output = oncetask(&[
        "--store",
        "postgres://postgres@127.0.0.1:1/test",
        "--connect-timeout",
        "30",
        "stats",
    ]);
    assert_eq!(code(&output), 3, "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("cannot reach PostgreSQL at postgres://postgres@127.0.0.1:1/test"),
        "{message}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "a refused connection is reported at once, not after the pool's retries"
    );
    let password = oncetask(&[
        "--store",
        "postgres://postgres:s3cret@127.0.0.1:1/test",
        "stats",
    ]);
    assert_eq!(code(&password), 3);
    assert!(
        !stderr(&password).contains("s3cret"),
        "{}",
        stderr(&password)
    );
}

//! The test kit's own tests: each helper, and the messages of failed assertions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oncetask::manager::handler_fn;
use oncetask::testing::TestKit;
use oncetask::{HandlerOptions, MemoryStore, Recurrence, Task, TaskData, TaskStatus};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Email {
    to: String,
    #[serde(skip)]
    at: Option<DateTime<Utc>>,
}

impl TaskData for Email {
    type Kind = &'static str;
    fn kind(&self) -> &'static str {
        "email"
    }
    fn idempotent_id(&self) -> String {
        format!("email-{}", self.to)
    }
    fn scheduled_at(&self) -> Option<DateTime<Utc>> {
        self.at
    }
}

fn email(to: &str) -> Email {
    Email {
        to: to.into(),
        at: None,
    }
}

fn start() -> DateTime<Utc> {
    "2025-01-06T09:00:00Z".parse().expect("a time")
}

fn kit() -> TestKit {
    TestKit::builder(Arc::new(MemoryStore::new()))
        .start_at(start())
        .build()
}

/// Registers an email handler failing its first `failures` calls.
fn register_flaky(kit: &TestKit, failures: u32) -> Arc<AtomicU32> {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    kit.manager()
        .register_dyn(
            "email",
            handler_fn(move |_t: Task| {
                let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if n <= failures {
                        Err(format!("smtp down #{n}"))
                    } else {
                        Ok(n)
                    }
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    calls
}

#[tokio::test]
async fn run_until_idle_runs_what_is_due_and_reports_it() {
    let kit = kit();
    register_flaky(&kit, 1);
    kit.manager().create(&email("ada")).await.expect("create");
    let report = kit.run_until_idle().await;
    assert_eq!(
        report.with_status(TaskStatus::Waiting),
        ["email-ada"],
        "backing off"
    );
    assert!(!report.limit_reached);
    // Nothing more is due until the clock moves past the 1 s backoff.
    assert!(kit.run_until_idle().await.runs.is_empty());
    let report = kit.advance_and_run(Duration::from_secs(1)).await;
    assert_eq!(report.with_status(TaskStatus::Completed), ["email-ada"]);
    kit.assert_completed("email-ada").await;
    kit.assert_idle().await;
}

#[tokio::test]
async fn run_until_idle_stops_at_its_safety_limit() {
    let kit = TestKit::builder(Arc::new(MemoryStore::new()))
        .start_at(start())
        .max_runs(5)
        .build();
    kit.manager()
        .register_dyn(
            "email",
            handler_fn(|_t: Task| async { Err::<(), _>("always") }),
            HandlerOptions::default().retry_policy(oncetask::FixedDelay {
                max_attempts: 0,
                delay: Duration::ZERO,
            }),
        )
        .expect("register");
    kit.manager().create(&email("loop")).await.expect("create");
    let report = kit.run_until_idle().await;
    assert!(report.limit_reached);
    assert_eq!(report.runs.len(), 5);
}

#[tokio::test]
async fn assert_enqueued_finds_matching_tasks_and_explains_misses() {
    let kit = kit();
    register_flaky(&kit, 0);
    kit.manager().create(&email("ada")).await.expect("create");
    kit.manager().create(&email("bob")).await.expect("create");
    let task = kit
        .assert_enqueued::<Email>("email", |e| e.to == "bob")
        .await;
    assert_eq!(task.id, "email-bob");
    let all = kit
        .assert_enqueued_times::<Email>("email", |_| true, 2)
        .await;
    assert_eq!(all.len(), 2);
    kit.refute_enqueued::<Email>("email", |e| e.to == "eve")
        .await;

    let miss = kit
        .check_enqueued::<Email>("email", |e| e.to == "eve", None)
        .await
        .expect_err("no eve");
    assert_eq!(
        miss.message(),
        "expected at least one task of kind \"email\" matching the predicate, found 0.\n\
         Tasks of that kind:\n  \
         - email-ada [pending] attempts 0 data {\"to\":\"ada\"}\n  \
         - email-bob [pending] attempts 0 data {\"to\":\"bob\"}"
    );
    let count = kit
        .check_enqueued::<Email>("email", |_| true, Some(1))
        .await
        .expect_err("two, not one");
    assert!(
        count.message().starts_with(
            "expected exactly 1 task of kind \"email\" matching the predicate, found 2."
        ),
        "{count}"
    );
    let none = kit
        .check_enqueued::<Email>("sms", |_| true, None)
        .await
        .expect_err("no sms");
    assert!(
        none.message().ends_with("Tasks of that kind:\n  (none)"),
        "{none}"
    );
}

#[tokio::test]
async fn status_assertions_show_attempts_and_errors() {
    let kit = kit();
    kit.manager()
        .register_dyn(
            "email",
            handler_fn(|_t: Task| async { Err::<(), _>("mailbox full") }),
            HandlerOptions::default().no_retry(),
        )
        .expect("register");
    kit.manager().create(&email("ada")).await.expect("create");
    kit.run_until_idle().await;
    let task = kit.assert_failed("email-ada").await;
    assert_eq!(task.errors[0].error, "mailbox full");
    let wrong = kit
        .check_status("email-ada", TaskStatus::Completed)
        .await
        .expect_err("failed, not completed");
    assert_eq!(
        wrong.message(),
        "task email-ada: expected completed, was failed after 1 attempt(s); errors: [\"mailbox full\"]"
    );
    let missing = kit
        .check_status("email-zed", TaskStatus::Completed)
        .await
        .expect_err("no such task");
    assert_eq!(
        missing.message(),
        "task email-zed: expected completed, but there is no such task"
    );
}

#[tokio::test]
async fn assert_idle_lists_what_is_left() {
    let kit = kit();
    register_flaky(&kit, 0);
    kit.manager().create(&email("ada")).await.expect("create");
    kit.manager()
        .create(&Email {
            to: "later".into(),
            at: Some(start() + chrono::TimeDelta::hours(1)),
        })
        .await
        .expect("create");
    let open = kit.check_idle().await.expect_err("ada is pending");
    assert_eq!(
        open.message(),
        "expected no pending, leased or cancellation-pending tasks, found 1:\n  \
         - email-ada [pending] attempts 0 data {\"to\":\"ada\"}"
    );
    kit.run_until_idle().await;
    kit.assert_idle().await; // the scheduled one is not due yet
}

#[tokio::test]
#[should_panic(expected = "task email-ada: expected cancelled, was pending")]
async fn assertions_panic_with_their_message() {
    let kit = kit();
    register_flaky(&kit, 0);
    kit.manager().create(&email("ada")).await.expect("create");
    kit.assert_cancelled("email-ada").await;
}

#[tokio::test]
async fn perform_runs_one_handler_in_isolation() {
    let kit = kit();
    let handler = handler_fn(|task: Task| async move {
        let email: Email = task.read_into()?;
        if email.to == "bad" {
            return Err(oncetask::Error::InvalidConfig("no such mailbox".into()));
        }
        Ok(format!("sent to {}", email.to))
    });
    let options = HandlerOptions::default();
    let ok = kit
        .perform(&handler, &email("ada"), &options)
        .await
        .expect("valid task");
    assert_eq!(ok.result, Ok(Some(serde_json::json!("sent to ada"))));
    assert_eq!(ok.status, TaskStatus::Completed);
    assert_eq!(ok.task.attempts, 1);

    let failed = kit
        .perform(&handler, &email("bad"), &options)
        .await
        .expect("valid task");
    assert_eq!(
        failed.result,
        Err("invalid configuration: no such mailbox".to_owned())
    );
    assert_eq!(
        failed.status,
        TaskStatus::Waiting,
        "the default policy retries"
    );
    assert_eq!(
        failed.task.wait_until,
        Some(start() + chrono::TimeDelta::seconds(1))
    );

    let mut last = failed.task.clone();
    last.attempts = 2;
    let last = kit.perform_task(&handler, last, &options).await;
    assert_eq!(last.status, TaskStatus::Failed, "third attempt of three");
    // Nothing was stored.
    assert!(kit.tasks_of_kind("email").await.is_empty());
}

#[tokio::test]
async fn perform_turns_a_panic_into_a_task_error() {
    let kit = kit();
    let handler = handler_fn(|task: Task| async move {
        if task.id.starts_with("email-") {
            panic!("template missing");
        }
        Ok::<_, std::io::Error>(())
    });
    let done = kit
        .perform(
            &handler,
            &email("ada"),
            &HandlerOptions::default().no_retry(),
        )
        .await
        .expect("valid task");
    assert_eq!(done.result, Err("panic: template missing".to_owned()));
    assert_eq!(done.status, TaskStatus::Failed);
}

#[tokio::test]
async fn inline_mode_runs_a_task_when_it_is_created() {
    let kit = TestKit::builder(Arc::new(MemoryStore::new()))
        .start_at(start())
        .inline()
        .build();
    let calls = register_flaky(&kit, 0);
    kit.manager().create(&email("ada")).await.expect("create");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "ran inside create");
    kit.assert_completed("email-ada").await;
    // A scheduled task is not due yet, so inline mode leaves it.
    kit.manager()
        .create(&Email {
            to: "later".into(),
            at: Some(start() + chrono::TimeDelta::hours(1)),
        })
        .await
        .expect("create");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    kit.assert_status("email-later", TaskStatus::Waiting).await;
}

#[derive(Serialize)]
struct Digest;

impl TaskData for Digest {
    type Kind = &'static str;
    fn kind(&self) -> &'static str {
        "digest"
    }
    fn idempotent_id(&self) -> String {
        "digest".into()
    }
    fn recurrence(&self) -> Result<Option<Recurrence>, oncetask::RecurrenceError> {
        Recurrence::new("FREQ=WEEKLY;BYDAY=MO;BYHOUR=9", "2025-01-06T09:00:00Z").map(Some)
    }
}

#[tokio::test]
async fn run_for_steps_through_weeks_of_a_recurrence() {
    let kit = kit();
    kit.manager()
        .register_dyn(
            "digest",
            handler_fn(|_t: Task| async { Ok::<_, std::io::Error>(()) }),
            HandlerOptions::default(),
        )
        .expect("register");
    kit.manager().create(&Digest).await.expect("create");
    let report = kit.run_for(3, Duration::from_secs(7 * 24 * 3600)).await;
    assert_eq!(
        report.spawned(),
        [
            "digest_occ_2025-01-06T09:00:00Z",
            "digest_occ_2025-01-13T09:00:00Z",
            "digest_occ_2025-01-20T09:00:00Z",
            "digest_occ_2025-01-27T09:00:00Z",
        ]
    );
    assert_eq!(kit.tasks_of_kind("digest").await.len(), 5);
    kit.assert_idle().await;
}

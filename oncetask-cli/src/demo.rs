//! `oncetask demo`: every feature of oncetask on the in-memory backend (or
//! a SQLite file, `--store sqlite://demo.db`), in a few seconds of real
//! time, printed to stdout as it happens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use oncetask::{
    Error, ExponentialBackoff, HandlerError, HandlerOptions, Manager, MemoryStore, Recurrence,
    RecurrenceError, TaskArgs, TaskContext, TaskStatus,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user: String,
}

impl TaskArgs for Welcome {
    const KIND: &'static str = "welcome_email";
    fn idempotent_id(&self) -> String {
        format!("welcome-{}", self.user)
    }
}

#[derive(Serialize, Deserialize)]
struct Charge {
    order: u32,
    cents: u64,
}

impl TaskArgs for Charge {
    const KIND: &'static str = "charge_card";
    fn idempotent_id(&self) -> String {
        format!("charge-order-{}", self.order)
    }
}

#[derive(Serialize, Deserialize)]
struct CalendarChange {
    calendar: String,
    change: u32,
}

impl TaskArgs for CalendarChange {
    const KIND: &'static str = "sync_calendar";
    fn idempotent_id(&self) -> String {
        format!("sync-{}-{}", self.calendar, self.change)
    }
    fn resource_key(&self) -> Option<String> {
        Some(self.calendar.clone())
    }
}

#[derive(Serialize, Deserialize)]
struct Report {
    team: String,
    /// Read only when the task is created, so not stored in the payload.
    #[serde(skip)]
    schedule: Option<Recurrence>,
}

impl TaskArgs for Report {
    const KIND: &'static str = "weekly_report";
    fn idempotent_id(&self) -> String {
        format!("report-{}", self.team)
    }
    fn recurrence(&self) -> Result<Option<Recurrence>, RecurrenceError> {
        Ok(self.schedule.clone())
    }
}

#[derive(Serialize, Deserialize)]
struct Reminder {
    user: String,
    at: chrono::DateTime<Utc>,
}

impl TaskArgs for Reminder {
    const KIND: &'static str = "send_reminder";
    fn idempotent_id(&self) -> String {
        format!("reminder-{}", self.user)
    }
    fn scheduled_at(&self) -> Option<chrono::DateTime<Utc>> {
        Some(self.at)
    }
}

#[derive(Serialize, Deserialize)]
struct Import {
    file: String,
}

impl TaskArgs for Import {
    const KIND: &'static str = "import_file";
    fn idempotent_id(&self) -> String {
        format!("import-{}", self.file)
    }
}

/// Prints a progress line prefixed with the seconds since the demo started
/// (nothing when quiet: under `oncetask ui --demo` the dashboard shows it).
#[derive(Clone, Copy)]
struct Progress {
    start: Instant,
    quiet: bool,
}

impl Progress {
    fn say(&self, line: impl std::fmt::Display) {
        if !self.quiet {
            println!("[{:>5.1}s] {line}", self.start.elapsed().as_secs_f64());
        }
    }
}

/// Runs the demo, printing progress and a summary by status; with
/// `metrics`, also the run's metrics in the Prometheus text format.
///
/// It runs on a new in-memory store, or, when `store` is a `sqlite:` URL,
/// on that database (created if missing, waiting up to `timeout` for a
/// lock another process holds), which it leaves behind for other commands
/// to inspect (environment `demo`). Other stores are not used: the demo
/// never writes into a shared server (`--store` may come from
/// `ONCETASK_STORE`).
pub async fn run(
    metrics: bool,
    store: Option<&crate::StoreUrl>,
    timeout: Duration,
) -> Result<(), crate::CliError> {
    let (store, backend, inspect): (Arc<dyn oncetask::Store>, String, Option<String>) = match store
    {
        Some(crate::StoreUrl::Sqlite { url }) => (
            crate::store_url::sqlite::open(url, timeout, true).await?,
            format!("SQLite backend ({url})"),
            Some(url.clone()),
        ),
        Some(crate::StoreUrl::Memory) | None => (
            Arc::new(MemoryStore::new()),
            "in-memory backend".to_owned(),
            None,
        ),
        Some(other) => {
            eprintln!(
                "note: the demo runs on the in-memory backend; of --store it uses only sqlite: \
                 files, not {other}"
            );
            (
                Arc::new(MemoryStore::new()),
                "in-memory backend".to_owned(),
                None,
            )
        }
    };
    let prometheus = if metrics {
        Some(crate::prometheus::install()?)
    } else {
        None
    };
    run_tasks(store, &backend).await?;
    if let Some(url) = inspect {
        println!(
            "\nThe tasks stay in {url}; look at them with\n  \
             oncetask --store {url} --env demo tasks list\n  \
             oncetask --store {url} --env demo stats"
        );
    }
    if let Some(handle) = prometheus {
        println!("\n# oncetask metrics (Prometheus text format)");
        print!("{}", handle.render());
    }
    Ok(())
}

async fn run_tasks(store: Arc<dyn oncetask::Store>, backend: &str) -> Result<(), Error> {
    let progress = Progress {
        start: Instant::now(),
        quiet: false,
    };
    let manager = Manager::builder(store).env("demo").build();
    register_handlers(&manager, progress)?;

    println!("oncetask demo: {backend}, environment \"demo\"\n");
    let users = ["ada", "grace", "linus", "margaret", "ken"];
    let welcomes: Vec<Welcome> = users
        .iter()
        .map(|u| Welcome { user: (*u).into() })
        .collect();
    let report = manager.create_many(&welcomes).await?;
    progress.say(format!("created {} welcome emails", report.count()));
    let again = manager.create(&welcomes[0]).await?;
    progress.say(format!(
        "creating welcome-ada again: {again:?} (same id, no duplicate)"
    ));

    manager
        .create(&Charge {
            order: 1001,
            cents: 4999,
        })
        .await?;
    progress.say("created charge-order-1001 (the gateway times out twice)");

    let changes: Vec<CalendarChange> = (1..=4)
        .map(|change| CalendarChange {
            calendar: "cal-ada".into(),
            change,
        })
        .chain((1..=2).map(|change| CalendarChange {
            calendar: "cal-bob".into(),
            change,
        }))
        .collect();
    manager.create_many(&changes).await?;
    progress.say("created 6 calendar changes on 2 calendars (resource keys)");

    let dtstart = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let schedule =
        Recurrence::new("FREQ=SECONDLY;INTERVAL=2;COUNT=3", &dtstart).map_err(|source| {
            Error::InvalidRecurrence {
                id: "report-growth".into(),
                source,
            }
        })?;
    manager
        .create(&Report {
            team: "growth".into(),
            schedule: Some(schedule),
        })
        .await?;
    progress.say("created report-growth: every 2 s, 3 times (a compressed \"every Monday\")");

    manager
        .create(&Reminder {
            user: "grace".into(),
            at: Utc::now() + chrono::TimeDelta::hours(1),
        })
        .await?;
    progress.say("created reminder-grace, scheduled in 1 hour");
    manager
        .create(&Import {
            file: "customers.csv".into(),
        })
        .await?;
    progress.say("created import-customers.csv (its file is corrupt)");

    tokio::time::sleep(Duration::from_millis(300)).await;
    manager.cancel("reminder-grace").await?;
    progress.say("cancelled reminder-grace");

    wait_until_settled(&manager, &progress).await?;
    let shutdown = manager.shutdown(Duration::from_secs(5)).await;
    progress.say(format!(
        "shut down (all handlers drained: {})",
        shutdown.drained
    ));
    print_summary(&manager).await
}

/// Seconds between the rounds of new tasks `oncetask ui --demo` creates.
const UI_ROUND_SECS: u64 = 3;

/// For `oncetask ui --demo`: a manager over a new in-memory store
/// (environment `demo`) running the demo's handlers, with the demo's kinds
/// of tasks created now and a new round of them every few seconds for as
/// long as the process runs, so that the dashboard has a live queue to show
/// (welcome emails, charges that fail twice before succeeding, calendar
/// changes sharing resource keys, imports that fail for good, reminders
/// scheduled a minute ahead, a report every 10 seconds). Finished tasks are
/// pruned after 10 minutes. Prints nothing.
pub async fn start_for_ui() -> Result<Manager, Error> {
    let manager = Manager::builder(Arc::new(MemoryStore::new()))
        .env("demo")
        .retention(
            oncetask::Retention::default()
                .finished(Duration::from_secs(600))
                .without_tombstones(),
        )
        .build();
    let progress = Progress {
        start: Instant::now(),
        quiet: true,
    };
    register_handlers(&manager, progress)?;
    let dtstart = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let schedule = Recurrence::new("FREQ=SECONDLY;INTERVAL=10", &dtstart).map_err(|source| {
        Error::InvalidRecurrence {
            id: "report-growth".into(),
            source,
        }
    })?;
    manager
        .create(&Report {
            team: "growth".into(),
            schedule: Some(schedule),
        })
        .await?;
    create_round(&manager, 0).await?;
    let creator = manager.clone();
    tokio::spawn(async move {
        let mut round = 1u32;
        loop {
            tokio::time::sleep(Duration::from_secs(UI_ROUND_SECS)).await;
            if creator.is_shutting_down() {
                return;
            }
            // A failed round (the store is memory: it does not fail) is retried
            // with the next one.
            let _ = create_round(&creator, round).await;
            round = round.wrapping_add(1);
        }
    });
    Ok(manager)
}

/// One round of `oncetask ui --demo`'s tasks (ids unique per round).
async fn create_round(manager: &Manager, round: u32) -> Result<(), Error> {
    manager
        .create(&Welcome {
            user: format!("user-{round}"),
        })
        .await?;
    manager
        .create(&Charge {
            order: 2000 + round,
            cents: 100 + u64::from(round % 50) * 10,
        })
        .await?;
    let calendar = format!("cal-{}", round % 3);
    let changes: Vec<CalendarChange> = (0..2)
        .map(|i| CalendarChange {
            calendar: calendar.clone(),
            change: round * 2 + i,
        })
        .collect();
    manager.create_many(&changes).await?;
    if round.is_multiple_of(4) {
        manager
            .create(&Import {
                file: format!("batch-{round}.csv"),
            })
            .await?;
    }
    if round.is_multiple_of(5) {
        manager
            .create(&Reminder {
                user: format!("user-{round}"),
                at: Utc::now() + chrono::TimeDelta::minutes(1),
            })
            .await?;
    }
    Ok(())
}

fn register_handlers(manager: &Manager, p: Progress) -> Result<(), Error> {
    manager.register(
        move |welcome: Welcome, cx: TaskContext| async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            p.say(format!("{}: sent to {}", cx.kind, welcome.user));
            Ok::<_, HandlerError>(serde_json::json!({ "delivered": true }))
        },
        HandlerOptions::default().concurrency(3),
    )?;

    manager.register(
        move |charge: Charge, cx: TaskContext| async move {
            if cx.attempt < 3 {
                p.say(format!(
                    "{}: attempt {} failed: gateway timeout (will back off)",
                    cx.id, cx.attempt
                ));
                return Err(HandlerError::msg("gateway timeout"));
            }
            p.say(format!(
                "{}: attempt {} charged {} cents",
                cx.id, cx.attempt, charge.cents
            ));
            Ok(serde_json::json!({ "receipt": format!("rcpt-{}", charge.order) }))
        },
        HandlerOptions::default().retry_policy(ExponentialBackoff {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            ..ExponentialBackoff::default()
        }),
    )?;

    // One call per calendar: every ready change of one resource key at once.
    manager.register_group(
        move |changes: Vec<(CalendarChange, TaskContext)>| async move {
            let (first, cx) = &changes[0];
            p.say(format!(
                "{}: {}: applied {} changes in one batch",
                cx.kind,
                first.calendar,
                changes.len()
            ));
            Ok::<_, HandlerError>(())
        },
        HandlerOptions::default().concurrency(2),
    )?;

    manager.register(
        move |_: Report, cx: TaskContext| async move {
            let slot = cx
                .occurrence_timestamp
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_default();
            p.say(format!("{}: built report for slot {slot}", cx.kind));
            Ok::<_, HandlerError>(())
        },
        HandlerOptions::default(),
    )?;

    manager.register(
        move |_: Reminder, cx: TaskContext| async move {
            p.say(format!("{}: {} sent", cx.kind, cx.id));
            Ok::<_, HandlerError>(())
        },
        HandlerOptions::default().cancellation_handler(
            move |_: Reminder, cx: TaskContext| async move {
                p.say(format!(
                    "{}: {} cancelled, removed from outbox",
                    cx.kind, cx.id
                ));
                Ok::<_, HandlerError>(())
            },
        ),
    )?;

    manager.register(
        move |_: Import, cx: TaskContext| async move {
            p.say(format!("{}: {}: corrupt file, giving up", cx.kind, cx.id));
            // Permanent: retrying would read the same corrupt bytes.
            Err::<(), _>(HandlerError::permanent("line 1: invalid UTF-8"))
        },
        HandlerOptions::default(),
    )?;
    Ok(())
}

/// Waits until every task is terminal (or 30 s passed).
async fn wait_until_settled(manager: &Manager, progress: &Progress) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = manager.count_by_status(None).await?;
        let open: u64 = counts
            .iter()
            .filter(|(status, _)| !status.is_terminal())
            .map(|(_, n)| n)
            .sum();
        if open == 0 {
            progress.say("all tasks finished");
            return Ok(());
        }
        if Instant::now() > deadline {
            progress.say(format!("giving up waiting; {open} tasks still open"));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn print_summary(manager: &Manager) -> Result<(), Error> {
    // Also refreshes the queue gauges that `--metrics` prints.
    manager.inspect().await?;
    let tasks = manager.find(manager.filter()).await?;
    let now = manager.clock().now();
    println!(
        "\n{:<40} {:<15} {:<20} {:>8}  last error",
        "task", "kind", "status", "attempts"
    );
    for task in &tasks {
        println!(
            "{:<40} {:<15} {:<20} {:>8}  {}",
            task.id,
            task.kind,
            task.status(now).as_str(),
            task.attempts,
            task.errors.last().map(|e| e.error.as_str()).unwrap_or("")
        );
    }
    let mut by_status: BTreeMap<TaskStatus, usize> = BTreeMap::new();
    for task in &tasks {
        *by_status.entry(task.status(now)).or_default() += 1;
    }
    println!("\n{:<20} {:>5}", "status", "tasks");
    for status in TaskStatus::ALL {
        println!(
            "{:<20} {:>5}",
            status.as_str(),
            by_status.get(&status).unwrap_or(&0)
        );
    }
    println!("{:<20} {:>5}", "total", tasks.len());
    Ok(())
}

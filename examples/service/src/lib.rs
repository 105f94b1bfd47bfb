//! A short service on oncetask, as a Rust user would write one.
//!
//! - Three task types ([`TaskArgs`]): a welcome email, a card charge
//!   (serialized per order by its resource key) and a weekly digest (a
//!   recurring task from an RRULE).
//! - Typed handlers: each gets its payload decoded and a [`TaskContext`]. A
//!   declined charge fails at once ([`HandlerError::permanent`]); a
//!   cancelled charge runs a cancellation handler that releases the hold.
//! - The store is picked by URL ([`connect`]): `memory` (the default),
//!   `postgres://…`, `redis://…` or `firestore://PROJECT` (on the emulator
//!   when `FIRESTORE_EMULATOR_HOST` is set). Handler code does not change.
//!
//! `cargo run -p oncetask-example-service -- [STORE_URL]` runs [`run`] and
//! prints how each task ended.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use oncetask::{
    HandlerError, HandlerOptions, Manager, MemoryStore, Recurrence, RecurrenceError, Store,
    TaskArgs, TaskContext, TaskStatus,
};
use serde::{Deserialize, Serialize};

/// Send a user their welcome email, once.
#[derive(Debug, Serialize, Deserialize)]
pub struct WelcomeEmail {
    /// The user's address.
    pub to: String,
}

impl TaskArgs for WelcomeEmail {
    const KIND: &'static str = "welcome_email";
    fn idempotent_id(&self) -> String {
        format!("welcome-{}", self.to)
    }
}

/// Charge a card for an order; never two charges of one order at once.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChargeCard {
    /// The order.
    pub order: u64,
    /// The amount, in cents.
    pub cents: u64,
    /// Do not charge before this time.
    pub not_before: Option<DateTime<Utc>>,
}

impl TaskArgs for ChargeCard {
    const KIND: &'static str = "charge_card";
    fn idempotent_id(&self) -> String {
        format!("charge-{}", self.order)
    }
    fn resource_key(&self) -> Option<String> {
        Some(format!("order-{}", self.order))
    }
    fn scheduled_at(&self) -> Option<DateTime<Utc>> {
        self.not_before
    }
}

/// Every Monday at 08:00 UTC, build the weekly digest.
#[derive(Debug, Serialize, Deserialize)]
pub struct WeeklyDigest;

impl TaskArgs for WeeklyDigest {
    const KIND: &'static str = "weekly_digest";
    fn idempotent_id(&self) -> String {
        "weekly-digest".into()
    }
    fn recurrence(&self) -> Result<Option<Recurrence>, RecurrenceError> {
        // A start in the past: the generator runs its first slot's
        // occurrence at once, then continues from now (the weeks in
        // between are not backfilled).
        Recurrence::new("FREQ=WEEKLY;BYDAY=MO;BYHOUR=8", "2025-01-06T08:00:00Z").map(Some)
    }
}

/// Opens the store a URL names, its tasks kept under `namespace` (the
/// PostgreSQL schema, the Redis key prefix or the Firestore collection;
/// ignored by `memory`). Task ids are unique per store, across
/// environments, so separate namespaces keep separate deployments apart.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let store = oncetask_example_service::connect("memory", "oncetask").await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
pub async fn connect(
    url: &str,
    namespace: &str,
) -> Result<Arc<dyn Store>, Box<dyn std::error::Error + Send + Sync>> {
    let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
    Ok(match scheme {
        "memory" => Arc::new(MemoryStore::new()),
        "postgres" | "postgresql" => {
            let store = oncetask::postgres::PostgresStore::connect(url, namespace).await?;
            // Creates or upgrades the schema; a no-op when it is current.
            store.migrate().await?;
            Arc::new(store)
        }
        "redis" | "rediss" => Arc::new(oncetask::redis::RedisStore::connect(url, namespace).await?),
        "firestore" => {
            let project = url.trim_start_matches("firestore://");
            Arc::new(oncetask::firestore::FirestoreStore::connect(project, namespace).await?)
        }
        other => return Err(format!("unknown store scheme {other:?}").into()),
    })
}

/// Registers the service's handlers on `manager`.
pub fn register(manager: &Manager) -> Result<(), oncetask::Error> {
    manager.register(
        |email: WelcomeEmail, cx: TaskContext| async move {
            println!("welcome email to {} (attempt {})", email.to, cx.attempt);
            Ok::<_, std::io::Error>(())
        },
        HandlerOptions::default().concurrency(4),
    )?;

    let charges = HandlerOptions::default()
        .concurrency(4)
        // Runs once per cancelled charge, with the same payload type.
        .cancellation_handler(|charge: ChargeCard, cx: TaskContext| async move {
            println!("order {}: releasing the hold ({})", charge.order, cx.id);
            Ok::<_, std::io::Error>(())
        });
    manager.register(
        |charge: ChargeCard, _cx: TaskContext| async move {
            if charge.cents > 100_000 {
                // No retry would help: fail now, whatever the retry policy.
                return Err(HandlerError::permanent("card declined: over the limit"));
            }
            Ok(serde_json::json!({ "receipt": format!("r-{}", charge.order) }))
        },
        charges,
    )?;

    manager.register(
        |_digest: WeeklyDigest, cx: TaskContext| async move {
            println!("weekly digest for the slot {:?}", cx.occurrence_timestamp);
            Ok::<_, std::io::Error>(())
        },
        HandlerOptions::default(),
    )?;
    Ok(())
}

/// How each task of the run ended, by id.
pub type Summary = BTreeMap<String, TaskStatus>;

/// Creates the service's tasks in `env`, cancels one, waits (up to
/// `patience`) until every task has ended, and reports how.
pub async fn run(
    store: Arc<dyn Store>,
    env: &str,
    patience: Duration,
) -> Result<Summary, oncetask::Error> {
    let manager = Manager::builder(store).env(env).build();
    register(&manager)?;

    manager
        .create(&WelcomeEmail {
            to: "ada@example.com".into(),
        })
        .await?;
    manager
        .create(&ChargeCard {
            order: 1,
            cents: 4_200,
            not_before: None,
        })
        .await?;
    manager
        .create(&ChargeCard {
            order: 2,
            cents: 250_000,
            not_before: None,
        })
        .await?;
    // Scheduled for tomorrow, then cancelled: its cancellation handler runs
    // now, and the charge never does.
    manager
        .create(&ChargeCard {
            order: 3,
            cents: 1_000,
            not_before: Some(Utc::now() + chrono::TimeDelta::days(1)),
        })
        .await?;
    manager.cancel("charge-3").await?;
    manager.create(&WeeklyDigest).await?;

    let deadline = tokio::time::Instant::now() + patience;
    let summary = loop {
        let summary = summarize(&manager).await?;
        let ended = summary.values().filter(|s| is_ended(**s)).count();
        // Four tasks and one digest occurrence end; the generator waits for
        // next Monday.
        if ended >= 5 || tokio::time::Instant::now() >= deadline {
            break summary;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    manager.shutdown(Duration::from_secs(10)).await;
    Ok(summary)
}

async fn summarize(manager: &Manager) -> Result<Summary, oncetask::Error> {
    let now = Utc::now();
    Ok(manager
        .find(manager.filter())
        .await?
        .into_iter()
        .map(|task| {
            let status = task.status(now);
            (task.id, status)
        })
        .collect())
}

fn is_ended(status: TaskStatus) -> bool {
    matches!(
        status,
        TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
    )
}

//! Measures claims over a backlog of tasks scheduled for later: 20,000
//! tasks wait an hour, and claims (limit 10) find nothing, or the few
//! ready tasks (some of them expired leases) among them.
//!
//! ```sh
//! cargo run --release -p oncetask-sqlite --example claim_scheduled
//! ```

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use oncetask_core::store::{ClaimMode, ClaimOrder, ClaimRequest};
use oncetask_core::{Store, StoreError, Task, lifecycle};
use oncetask_sqlite::{Durability, SqliteOptions, SqliteStore};

const SCHEDULED: usize = 20_000;
const CLAIMS: u32 = 200;

fn request(order: ClaimOrder) -> ClaimRequest {
    let now = Utc::now();
    ClaimRequest {
        env: "E".into(),
        kind: "k".into(),
        now,
        grant: lifecycle::LeaseGrant::new(now, Duration::from_secs(60)),
        mode: ClaimMode::Single { limit: 10 },
        order,
    }
}

async fn time_claims(store: &SqliteStore, order: ClaimOrder) -> Result<Duration, StoreError> {
    let started = Instant::now();
    for _ in 0..CLAIMS {
        store.claim(&request(order)).await?;
    }
    Ok(started.elapsed() / CLAIMS)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("oncetask-claim-scheduled-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}", dir.join("tasks.db").display());
    let store =
        SqliteStore::connect_with(&url, &SqliteOptions::new().durability(Durability::Normal))
            .await?;
    let now = Utc::now();
    let later = now + TimeDelta::hours(1);
    let tasks: Vec<Task> = (0..SCHEDULED)
        .map(|n| {
            let mut task = Task::new(format!("later-{n}"), "k", "E", now);
            task.wait_until = Some(later);
            task.priority = (n % 3) as i8;
            task
        })
        .collect();
    for chunk in tasks.chunks(1_000) {
        store.create(chunk.to_vec()).await?;
    }
    for order in [ClaimOrder::Oldest, ClaimOrder::Priority] {
        println!(
            "{order:?}: a claim that finds nothing ready among {SCHEDULED} scheduled tasks: {:?}",
            time_claims(&store, order).await?
        );
    }
    // Tasks whose lease expired: the claim order puts them after every
    // never-leased task, the scheduled ones included.
    let expired: Vec<Task> = (0..(CLAIMS as usize * 10))
        .map(|n| {
            let mut task = Task::new(format!("expired-{n}"), "k", "E", now);
            task.leased_until = Some(now - TimeDelta::seconds(1));
            task.attempts = 1;
            task
        })
        .collect();
    for order in [ClaimOrder::Oldest, ClaimOrder::Priority] {
        let ids: Vec<String> = expired.iter().map(|t| t.id.clone()).collect();
        let deletes: Vec<_> = ids
            .iter()
            .map(|id| oncetask_core::store::Delete::any(id.clone()))
            .collect();
        store.delete(&deletes).await?;
        store.create(expired.clone()).await?;
        println!(
            "{order:?}: a claim of 10 expired leases behind {SCHEDULED} scheduled tasks: {:?}",
            time_claims(&store, order).await?
        );
    }
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

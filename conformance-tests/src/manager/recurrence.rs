//! Recurring tasks at manager level (docs/semantics.md S9).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oncetask_core::manager::{HandlerOptions, handler_fn};
use oncetask_core::{Recurrence, Task, TaskStatus};

use super::{Harness, Job, create, manual};
use crate::StoreFactory;

const KIND: &str = "weekly_report";
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

fn weekly() -> Recurrence {
    // super::start() is Monday 2025-01-06 09:00Z.
    Recurrence::new("FREQ=WEEKLY;BYDAY=MO;BYHOUR=9", "2025-01-06T09:00:00Z").expect("valid rule")
}

fn recorder<S>(h: &Harness<S>) -> Arc<Mutex<Vec<String>>> {
    let ran = Arc::new(Mutex::new(Vec::new()));
    let sink = ran.clone();
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |task: Task| {
                let sink = sink.clone();
                async move {
                    sink.lock().expect("lock").push(task.id.clone());
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    ran
}

async fn kinds_tasks<S: oncetask_core::Store + Clone>(h: &Harness<S>) -> Vec<Task> {
    let mut filter = h.manager.filter();
    filter.kind = Some(KIND.to_owned());
    h.manager.find(filter).await.expect("find")
}

/// Three simulated weeks of a weekly rule: 1 generator + 3 occurrences, each
/// run once by the handler; the generator never reaches the handler.
pub async fn a_weekly_rule_over_three_weeks_gives_one_generator_and_three_occurrences(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let ran = recorder(&h);
    create(&h.manager, &Job::new(KIND, "report").recurring(weekly())).await;
    let report = h.kit.run_for(2, WEEK).await;
    assert_eq!(report.spawned().len(), 3);
    h.kit.assert_idle().await;
    let ran = ran.lock().expect("lock").clone();
    assert_eq!(
        ran,
        [
            "report_occ_2025-01-06T09:00:00Z",
            "report_occ_2025-01-13T09:00:00Z",
            "report_occ_2025-01-20T09:00:00Z",
        ]
    );
    let tasks = kinds_tasks(&h).await;
    assert_eq!(tasks.len(), 4);
    let now = h.clock.now();
    let generator = h.task("report").await;
    assert_eq!(generator.status(now), TaskStatus::Waiting);
    assert_eq!(
        generator.wait_until.map(|t| t.to_rfc3339()),
        Some("2025-01-27T09:00:00+00:00".to_owned())
    );
    for occurrence in tasks.iter().filter(|t| t.id != "report") {
        h.kit.assert_completed(&occurrence.id).await;
        assert_eq!(occurrence.parent_recurrence_id.as_deref(), Some("report"));
    }
}

/// A generator that was down for weeks spawns only the stale slot, then
/// jumps to the first slot after now (no backfill, docs/semantics.md S9.5).
pub async fn a_late_generator_spawns_one_occurrence_and_skips_missed_slots(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let ran = recorder(&h);
    create(&h.manager, &Job::new(KIND, "report").recurring(weekly())).await;
    h.advance(WEEK * 3 + Duration::from_secs(3600));
    h.drain(KIND).await;
    assert_eq!(
        *ran.lock().expect("lock"),
        ["report_occ_2025-01-06T09:00:00Z"]
    );
    let generator = h.task("report").await;
    assert_eq!(
        generator.wait_until.map(|t| t.to_rfc3339()),
        Some("2025-02-03T09:00:00+00:00".to_owned())
    );
}

/// COUNT exhausts the rule: the last occurrence is still created, then the
/// generator completes.
pub async fn an_exhausted_rule_completes_its_generator(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let ran = recorder(&h);
    let rule = Recurrence::new("FREQ=DAILY;COUNT=2", "2025-01-06T09:00:00Z").expect("valid");
    create(&h.manager, &Job::new(KIND, "twice").recurring(rule)).await;
    h.drain(KIND).await;
    h.advance(Duration::from_secs(24 * 3600));
    h.drain(KIND).await;
    assert_eq!(ran.lock().expect("lock").len(), 2);
    assert_eq!(h.status("twice").await, TaskStatus::Completed);
}

/// A cancelled generator stops spawning; existing occurrences are untouched.
pub async fn a_cancelled_generator_stops_spawning(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let ran = recorder(&h);
    create(&h.manager, &Job::new(KIND, "report").recurring(weekly())).await;
    h.drain(KIND).await;
    h.manager.cancel("report").await.expect("cancel");
    h.drain(KIND).await;
    assert_eq!(h.status("report").await, TaskStatus::Cancelled);
    h.advance(WEEK * 2);
    h.drain(KIND).await;
    assert_eq!(ran.lock().expect("lock").len(), 1);
    assert_eq!(kinds_tasks(&h).await.len(), 2);
}

/// Resetting a finished generator resumes it from now, without the bogus
/// `_occ_0001-01-01…` occurrence of the Go package (W26).
pub async fn a_reset_generator_resumes_from_now_without_a_bogus_occurrence(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let ran = recorder(&h);
    create(&h.manager, &Job::new(KIND, "report").recurring(weekly())).await;
    h.drain(KIND).await;
    h.manager.cancel("report").await.expect("cancel");
    h.drain(KIND).await;
    h.advance(WEEK + Duration::from_secs(3600)); // Monday 2025-01-13 10:00
    h.manager.reset("report").await.expect("reset");
    h.drain(KIND).await;
    let generator = h.task("report").await;
    assert_eq!(
        generator.wait_until.map(|t| t.to_rfc3339()),
        Some("2025-01-20T09:00:00+00:00".to_owned())
    );
    assert_eq!(
        *ran.lock().expect("lock"),
        ["report_occ_2025-01-06T09:00:00Z"]
    );
    assert_eq!(kinds_tasks(&h).await.len(), 2, "no extra occurrence");
}

/// A DTSTART with an offset schedules in UTC: the same instant, stored and
/// named in UTC (Go wrote the offset into `waitUntil` and ids, W9).
pub async fn an_offset_dtstart_is_scheduled_in_utc(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let ran = recorder(&h);
    let rule = Recurrence::new("FREQ=DAILY", "2025-01-06T10:00:00+01:00").expect("valid");
    create(&h.manager, &Job::new(KIND, "daily").recurring(rule)).await;
    assert_eq!(h.task("daily").await.wait_until, Some(super::start()));
    h.drain(KIND).await;
    assert_eq!(
        *ran.lock().expect("lock"),
        ["daily_occ_2025-01-06T09:00:00Z"]
    );
    assert_eq!(
        h.task("daily").await.wait_until.map(|t| t.to_rfc3339()),
        Some("2025-01-07T09:00:00+00:00".to_owned())
    );
}

/// A sparse rule is not cut off by a search horizon (Go gave up after 10
/// years, W8): a 20-yearly rule moves on 20 years.
pub async fn a_sparse_rule_has_no_search_horizon(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let _ran = recorder(&h);
    let rule = Recurrence::new("FREQ=YEARLY;INTERVAL=20", "2025-01-06T09:00:00Z").expect("valid");
    create(&h.manager, &Job::new(KIND, "jubilee").recurring(rule)).await;
    h.drain(KIND).await;
    let generator = h.task("jubilee").await;
    assert_eq!(generator.status(h.clock.now()), TaskStatus::Waiting);
    assert_eq!(
        generator.wait_until.map(|t| t.to_rfc3339()),
        Some("2045-01-06T09:00:00+00:00".to_owned())
    );
}

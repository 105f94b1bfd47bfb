//! Recurrence through the store: a claimed generator is advanced by
//! `lifecycle::advance_generator`, its occurrence is created (idempotent id)
//! and the generator swapped (docs/semantics.md S9; W10, W26).
//!
//! These tests state correct RRULE semantics (python-dateutil style: DTSTART
//! counts only if it matches the rule); they depend on the real
//! `oncetask_core::recurrence` schedule.

use chrono::{DateTime, TimeZone, Utc};
use oncetask_core::lifecycle::{self, GeneratorStep};
use oncetask_core::store::TaskFilter;
use oncetask_core::{Outcome, Recurrence, Store, Task, TaskData, TaskStatus};
use serde::Serialize;

use crate::StoreFactory;
use crate::support::*;

const WEEKLY_ON_MONDAY: &str = "FREQ=WEEKLY;BYDAY=MO";
/// A Monday, one hour after [`base_time`].
const DTSTART: &str = "2025-01-06T09:00:00Z";

/// A weekly report: a generator task.
#[derive(Serialize)]
struct WeeklyReport {
    user: String,
    #[serde(skip)]
    rule: &'static str,
    #[serde(skip)]
    dtstart: &'static str,
}

impl TaskData for WeeklyReport {
    type Kind = &'static str;
    fn kind(&self) -> &'static str {
        KIND
    }
    fn idempotent_id(&self) -> String {
        format!("report-{}", self.user)
    }
    fn recurrence(&self) -> Result<Option<Recurrence>, oncetask_core::RecurrenceError> {
        Recurrence::new(self.rule, self.dtstart).map(Some)
    }
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("a valid UTC time")
}

fn generator(rule: &'static str, dtstart: &'static str) -> Task {
    let data = WeeklyReport {
        user: "u1".to_owned(),
        rule,
        dtstart,
    };
    Task::from_data(&data, ENV, base_time()).expect("a valid generator")
}

/// Creates the weekly generator and returns it as stored.
async fn seed_generator<S: Store>(store: &S, rule: &'static str) -> Task {
    let task = generator(rule, DTSTART);
    seed(store, vec![task.clone()]).await;
    task
}

/// What the manager does with a claimed generator: advance, create the
/// occurrence, swap the generator. Returns the step and the create outcome.
async fn spawn<S: Store>(
    store: &S,
    held: &Task,
    now: DateTime<Utc>,
) -> (GeneratorStep, Option<Created>) {
    let step = lifecycle::advance_generator(held, &token(held), now)
        .expect("the holder can advance its generator");
    let created = match &step.occurrence {
        Some(occ) => Some(create(store, vec![occ.clone()]).await.remove(0)),
        None => None,
    };
    assert_eq!(
        swap(store, held, step.generator.clone()).await,
        Swapped::Applied
    );
    (step, created)
}

/// Claims every ready task at `now` and returns the generator among them
/// (occurrences spawned earlier may be ready too, and ahead of it; they get
/// leased as well, which these tests do not mind).
async fn claim_generator<S: Store>(store: &S, now: DateTime<Utc>) -> Task {
    claim(store, now, 10)
        .await
        .into_iter()
        .find(|t| t.id == "report-u1")
        .unwrap_or_else(|| panic!("the generator should be ready at {now}"))
}

async fn ids_of_kind<S: Store>(store: &S) -> Vec<String> {
    let mut filter = TaskFilter::env(ENV, base_time());
    filter.kind = Some(KIND.to_owned());
    let mut ids: Vec<String> = store
        .find(&filter)
        .await
        .expect("find")
        .into_iter()
        .map(|t| t.id)
        .collect();
    ids.sort();
    ids
}

/// A generator waits for its first slot: DTSTART when it matches the rule,
/// otherwise the first matching instant after it.
pub async fn a_generator_is_created_waiting_for_its_first_slot(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let task = seed_generator(&store, WEEKLY_ON_MONDAY).await;
    let first = utc(2025, 1, 6, 9, 0, 0);
    assert_eq!(task.wait_until, Some(first));
    assert_eq!(get(&store, &task.id).await, Some(task.clone()));
    assert_eq!(task.status(base_time()), TaskStatus::Waiting);
    assert!(claim(&store, base_time(), 10).await.is_empty());
    assert_eq!(
        store
            .next_due(ENV, KIND, base_time())
            .await
            .expect("next_due"),
        Some(first)
    );

    let from_wednesday = generator(WEEKLY_ON_MONDAY, "2025-01-08T09:00:00Z");
    assert_eq!(
        from_wednesday.wait_until,
        Some(utc(2025, 1, 13, 9, 0, 0)),
        "a Wednesday DTSTART does not match BYDAY=MO: the next Monday is first"
    );
}

/// A claimed generator spawns the occurrence of its slot (id
/// `<generator>_occ_<slot>`, ready at the slot) and waits for the next Monday.
pub async fn advancing_a_claimed_generator_stores_its_occurrence_and_moves_to_the_next_slot(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let gen_task = seed_generator(&store, WEEKLY_ON_MONDAY).await;
    let now = utc(2025, 1, 6, 9, 0, 30);
    let held = claim_generator(&store, now).await;
    let (step, created) = spawn(&store, &held, now).await;
    assert_eq!(created, Some(Created::Created));

    let occurrence = step.occurrence.expect("an occurrence for the slot");
    assert_eq!(occurrence.id, "report-u1_occ_2025-01-06T09:00:00Z");
    assert_eq!(occurrence.wait_until, Some(utc(2025, 1, 6, 9, 0, 0)));
    assert_eq!(
        occurrence.parent_recurrence_id.as_deref(),
        Some("report-u1")
    );
    assert_eq!(occurrence.recurrence, None);
    assert_eq!(get(&store, &occurrence.id).await, Some(occurrence));

    let stored = get_existing(&store, &gen_task.id).await;
    assert_eq!(stored, step.generator);
    assert_eq!(stored.wait_until, Some(utc(2025, 1, 13, 9, 0, 0)));
    assert_eq!(stored.status(now), TaskStatus::Waiting);
}

/// S9.7: a generator whose bookkeeping died after creating the occurrence is
/// re-claimed after its lease and spawns the same id again: the create says
/// "already exists" and no duplicate appears.
pub async fn spawning_the_same_slot_twice_creates_no_duplicate_occurrence(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let gen_task = seed_generator(&store, WEEKLY_ON_MONDAY).await;
    let now = utc(2025, 1, 6, 9, 0, 30);
    let crashed = claim_generator(&store, now).await;
    let step = lifecycle::advance_generator(&crashed, &token(&crashed), now).expect("advance");
    let occurrence = step.occurrence.expect("an occurrence");
    assert_eq!(
        create(&store, vec![occurrence.clone()]).await,
        vec![Created::Created]
    );
    // Crash: the generator swap never happens; the lease runs out.

    let later = after(now, LEASE);
    let retry = claim_generator(&store, later).await;
    let (step, created) = spawn(&store, &retry, later).await;
    assert_eq!(created, Some(Created::AlreadyExists));
    assert_eq!(
        step.occurrence.map(|o| o.id),
        Some(occurrence.id.clone()),
        "the slot did not change, nor did the id"
    );
    assert_eq!(
        get_existing(&store, &occurrence.id).await.created_at,
        occurrence.created_at,
        "the first copy stays"
    );
    assert_eq!(ids_of_kind(&store).await, vec![gen_task.id, occurrence.id]);
}

/// W10: a generator claimed three weeks late spawns exactly one occurrence
/// (the stale slot) and jumps to the first slot after now.
pub async fn a_late_generator_spawns_one_occurrence_and_skips_missed_slots(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let gen_task = seed_generator(&store, WEEKLY_ON_MONDAY).await;
    let now = utc(2025, 1, 27, 10, 0, 0);
    let held = claim_generator(&store, now).await;
    let (step, _) = spawn(&store, &held, now).await;
    assert_eq!(
        step.occurrence.map(|o| o.id).as_deref(),
        Some("report-u1_occ_2025-01-06T09:00:00Z")
    );
    assert_eq!(
        get_existing(&store, &gen_task.id).await.wait_until,
        Some(utc(2025, 2, 3, 9, 0, 0))
    );
    assert_eq!(ids_of_kind(&store).await.len(), 2);
}

/// With `COUNT=2` the second spawn creates the last occurrence and the
/// generator completes; it is never claimed again.
pub async fn an_exhausted_generator_completes_after_spawning_its_last_occurrence(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let gen_task = seed_generator(&store, "FREQ=WEEKLY;BYDAY=MO;COUNT=2").await;
    let first = utc(2025, 1, 6, 9, 0, 30);
    let held = claim_generator(&store, first).await;
    spawn(&store, &held, first).await;
    let second = utc(2025, 1, 13, 9, 0, 30);
    let held = claim_generator(&store, second).await;
    let (step, created) = spawn(&store, &held, second).await;
    assert_eq!(created, Some(Created::Created));
    assert_eq!(
        step.occurrence.map(|o| o.id).as_deref(),
        Some("report-u1_occ_2025-01-13T09:00:00Z")
    );
    let stored = get_existing(&store, &gen_task.id).await;
    assert_eq!(stored.outcome, Some(Outcome::Completed));
    assert_eq!(stored.status(second), TaskStatus::Completed);
    let mut filter = TaskFilter::env(ENV, second);
    filter.not_done = true;
    let pending: Vec<String> = store
        .find(&filter)
        .await
        .expect("find")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(
        pending,
        vec![
            "report-u1_occ_2025-01-06T09:00:00Z",
            "report-u1_occ_2025-01-13T09:00:00Z"
        ]
    );
}

/// S8.5: a cancelled generator is finished (cancelled) when claimed, and
/// spawns nothing.
pub async fn a_cancelled_generator_finishes_without_spawning(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let gen_task = seed_generator(&store, WEEKLY_ON_MONDAY).await;
    apply(&store, &gen_task.id, |t| lifecycle::cancel(t, base_time()))
        .await
        .expect("cancel");
    let held = claim_generator(&store, base_time()).await;
    let (step, created) = spawn(&store, &held, base_time()).await;
    assert_eq!((step.occurrence, created), (None, None));
    let stored = get_existing(&store, &gen_task.id).await;
    assert_eq!(stored.status(base_time()), TaskStatus::Cancelled);
    assert_eq!(ids_of_kind(&store).await, vec![gen_task.id]);
}

/// W26: a reset generator resumes at the first slot after the reset,
/// spawning no bogus `_occ_0001-01-01…` occurrence.
pub async fn a_reset_generator_resumes_at_the_next_slot_without_a_bogus_occurrence(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let gen_task = seed_generator(&store, WEEKLY_ON_MONDAY).await;
    apply(&store, &gen_task.id, |t| lifecycle::cancel(t, base_time()))
        .await
        .expect("cancel");
    let held = claim_generator(&store, base_time()).await;
    spawn(&store, &held, base_time()).await;

    let now = utc(2025, 1, 8, 12, 0, 0);
    apply(&store, &gen_task.id, lifecycle::reset)
        .await
        .expect("reset the cancelled generator");
    let held = claim_generator(&store, now).await;
    let (step, created) = spawn(&store, &held, now).await;
    assert_eq!((step.occurrence, created), (None, None));
    assert_eq!(
        get_existing(&store, &gen_task.id).await.wait_until,
        Some(utc(2025, 1, 13, 9, 0, 0))
    );
    assert_eq!(ids_of_kind(&store).await, vec![gen_task.id]);
}

/// The occurrence is an ordinary task: the next claim of the kind takes it
/// (the generator itself waits for next Monday).
pub async fn the_spawned_occurrence_is_claimable_like_any_task(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed_generator(&store, WEEKLY_ON_MONDAY).await;
    let now = utc(2025, 1, 6, 9, 0, 30);
    let held = claim_generator(&store, now).await;
    spawn(&store, &held, now).await;
    let occurrence = claim_one(&store, now, "report-u1_occ_2025-01-06T09:00:00Z").await;
    assert_eq!(occurrence.attempts, 1);
    assert!(!occurrence.is_generator());
    assert!(claim(&store, now, 10).await.is_empty());
}

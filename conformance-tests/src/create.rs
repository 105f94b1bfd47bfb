//! `Store::create`: create-if-absent with one outcome per item (docs/semantics.md
//! S2.4, S6.3, S6.4; W13, W30).

use chrono::TimeDelta;
use oncetask_core::store::Swap;
use oncetask_core::{AttemptError, LeaseToken, Outcome, Recurrence};
use serde_json::json;

use crate::StoreFactory;
use crate::support::*;

/// A new task is stored exactly as given and reads back equal.
pub async fn creating_a_new_task_stores_it_exactly_as_given(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let task = TaskBuilder::new("a")
        .key("calendar-1")
        .wait_until(at(60))
        .data("to", json!("x@example.com"))
        .build();
    assert_eq!(
        create(&store, vec![task.clone()]).await,
        vec![Created::Created]
    );
    assert_eq!(get(&store, "a").await, Some(task));
}

/// Every field, including millisecond times, JSON payloads, errors,
/// recurrence, lease token, version and outcome, reads back unchanged after
/// a create and after a swap.
pub async fn every_field_survives_a_create_and_swap_round_trip(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let ms = |secs: i64, millis: i64| at(secs) + TimeDelta::milliseconds(millis);
    let mut task = TaskBuilder::new("full")
        .key("key/with spaces and ünïcode")
        .wait_until(ms(10, 250))
        .created_at(ms(-5, 999))
        .data(
            "nested",
            json!({"list": [1, 2.5, "three", null, true], "big": 9_007_199_254_740_993_u64}),
        )
        .build();
    task.leased_until = Some(ms(300, 1));
    task.lease_token = Some(LeaseToken::from_stored("token-1"));
    task.attempts = 4;
    task.cancellation_attempts = 1;
    task.errors = vec![
        AttemptError {
            at: ms(1, 10),
            error: "first \"quoted\" failure".to_owned(),
        },
        AttemptError {
            at: ms(2, 20),
            error: "second\nfailure".to_owned(),
        },
    ];
    task.result = Some(json!({"ok": [1, {"deep": "x"}]}));
    task.recurrence =
        Some(Recurrence::new("FREQ=DAILY", "2025-01-06T09:00:00+05:30").expect("valid rule"));
    task.parent_recurrence_id = Some("gen".to_owned());
    task.occurrence_timestamp = Some(ms(0, 500));
    task.is_cancelled = true;
    task.cancelled_at = Some(ms(3, 3));
    task.version = 7;
    seed(&store, vec![task.clone()]).await;
    assert_eq!(
        get(&store, "full").await.as_ref(),
        Some(&task),
        "after create"
    );

    let mut done = task.clone();
    done.version = 8;
    done.leased_until = None;
    done.lease_token = None;
    done.done_at = Some(ms(400, 400));
    done.outcome = Some(Outcome::Cancelled);
    done.result = Some(json!("plain string result"));
    assert_eq!(swap(&store, &task, done.clone()).await, Swapped::Applied);
    assert_eq!(get(&store, "full").await, Some(done), "after swap");
}

/// Creating an id that exists reports `AlreadyExists` and changes nothing,
/// even when the new task's data, kind or key differ.
pub async fn creating_an_existing_id_reports_already_exists_and_keeps_the_stored_task(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let first = TaskBuilder::new("a").data("v", json!(1)).build();
    seed(&store, vec![first.clone()]).await;
    let claimed = claim_one(&store, at(0), "a").await;

    let second = TaskBuilder::new("a")
        .kind(OTHER_KIND)
        .key("k")
        .data("v", json!(2))
        .created_at(at(10))
        .build();
    assert_eq!(
        create(&store, vec![second]).await,
        vec![Created::AlreadyExists]
    );
    assert_eq!(
        get(&store, "a").await,
        Some(claimed),
        "the stored task must be untouched"
    );
}

/// Ids are global: an id taken in another env is reported with that env and
/// the task is not created in this one (W13: Go returned a silent `false`).
pub async fn creating_an_id_that_exists_in_another_env_reports_exists_in_other_env(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let prod = TaskBuilder::new("a").env(OTHER_ENV).build();
    seed(&store, vec![prod.clone()]).await;
    assert_eq!(
        create(&store, vec![TaskBuilder::new("a").build()]).await,
        vec![Created::ExistsInOtherEnv(OTHER_ENV.to_owned())]
    );
    assert_eq!(get(&store, "a").await, Some(prod));
    assert!(claim(&store, at(0), 10).await.is_empty());
}

/// W30: duplicate ids in one call are not an error: the first copy is
/// created, later copies report `AlreadyExists`.
pub async fn duplicate_ids_in_one_bulk_create_create_the_first_and_report_the_rest_as_existing(
    factory: &impl StoreFactory,
) {
    let store = factory.new_store().await;
    let first = TaskBuilder::new("a").data("copy", json!(1)).build();
    let outcomes = create(
        &store,
        vec![
            first.clone(),
            TaskBuilder::new("a").data("copy", json!(2)).build(),
            TaskBuilder::new("b").build(),
            TaskBuilder::new("a").data("copy", json!(3)).build(),
        ],
    )
    .await;
    assert_eq!(
        outcomes,
        vec![
            Created::Created,
            Created::AlreadyExists,
            Created::Created,
            Created::AlreadyExists
        ]
    );
    assert_eq!(get(&store, "a").await, Some(first), "the first copy wins");
}

/// A bulk create is per item: existing, other-env and new ids each get their
/// own outcome, in input order, and the new ones are stored.
pub async fn bulk_create_reports_one_outcome_per_item_in_input_order(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    seed(
        &store,
        vec![
            TaskBuilder::new("old").build(),
            TaskBuilder::new("elsewhere").env(OTHER_ENV).build(),
        ],
    )
    .await;
    let outcomes = create(
        &store,
        vec![
            TaskBuilder::new("new-1").build(),
            TaskBuilder::new("old").build(),
            TaskBuilder::new("elsewhere").build(),
            TaskBuilder::new("new-2").build(),
        ],
    )
    .await;
    assert_eq!(
        outcomes,
        vec![
            Created::Created,
            Created::AlreadyExists,
            Created::ExistsInOtherEnv(OTHER_ENV.to_owned()),
            Created::Created
        ]
    );
    let fetched = get_all(&store, &["new-1", "new-2"]).await;
    assert_eq!(fetched.len(), 2, "both new tasks are stored");
}

/// An empty bulk create is a no-op with no outcomes.
pub async fn creating_nothing_returns_no_outcomes(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    assert!(create(&store, Vec::new()).await.is_empty());
    // A swap of nothing is equally a no-op.
    let none: Vec<Swap> = Vec::new();
    assert!(store.swap(&none).await.expect("empty swap").is_empty());
}

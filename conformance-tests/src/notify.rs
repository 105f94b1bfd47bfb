//! Change notifications (`Store::subscribe`): optional push wake-ups for
//! workers in other processes (W5).

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use oncetask_core::Store;
use oncetask_core::lifecycle;
use oncetask_core::store::{Change, Notification, Swap};

use crate::StoreFactory;
use crate::support::*;

/// How long a backend may take to deliver a notice, in wall-clock time.
const DELIVERY: Duration = Duration::from_secs(10);

/// If the backend offers notifications, a subscriber of an env hears about
/// tasks created for a kind of that env. Tasks keep being created until a
/// notice arrives, so a listener that needs a moment to connect still passes.
pub async fn a_subscriber_hears_about_new_tasks_of_its_env(factory: &impl StoreFactory) {
    listening(factory).await;
}

/// A new store and a subscription of `ENV` that is surely listening (see
/// [`until_listening`]); `None`, with a note, when the backend offers no
/// notifications.
async fn listening<F: StoreFactory>(
    factory: &F,
) -> Option<(F::Store, BoxStream<'static, Notification>)> {
    let store = factory.new_store().await;
    let Some(mut notices) = store.subscribe(ENV) else {
        eprintln!("note: backend offers no notifications; test skipped");
        return None;
    };
    until_listening(&store, &mut notices).await;
    Some((store, notices))
}

/// Creates tasks (`w0`, `w1`, …) until the subscriber hears of one of
/// them, so that it is surely listening.
async fn until_listening<S: Store>(store: &S, notices: &mut BoxStream<'static, Notification>) {
    let deadline = tokio::time::Instant::now() + DELIVERY;
    let mut n = 0;
    loop {
        seed(store, vec![TaskBuilder::new(&format!("w{n}")).build()]).await;
        n += 1;
        match tokio::time::timeout(Duration::from_millis(200), notices.next()).await {
            Ok(Some(notice)) if notice.kind == KIND => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the notification stream ended"),
            Err(_) if tokio::time::Instant::now() < deadline => continue,
            Err(_) => panic!("no notification for kind {KIND} within {DELIVERY:?}"),
        }
    }
}

/// Waits for a notice of `KIND` that says it may have touched held tasks.
async fn touching_notice(notices: &mut BoxStream<'static, Notification>, what: &str) {
    let deadline = tokio::time::Instant::now() + DELIVERY;
    loop {
        match tokio::time::timeout_at(deadline, notices.next()).await {
            Ok(Some(notice)) if notice.kind == KIND && notice.may_touch_claimed => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the notification stream ended"),
            Err(_) => {
                panic!("no notice of {what} marked as touching held tasks within {DELIVERY:?}")
            }
        }
    }
}

/// An operator's cancel and a delete may change a task some worker holds:
/// their notices say so, so that workers re-read the tasks they claimed
/// ahead (notices of new work need not).
pub async fn an_operators_change_is_announced_as_touching_held_tasks(factory: &impl StoreFactory) {
    let Some((store, mut notices)) = listening(factory).await else {
        return;
    };
    let task = get_existing(&store, "w0").await;
    let cancelled = lifecycle::cancel(&task, at(1)).expect("a pending task can be cancelled");
    let swapped = store
        .swap(&[Swap::new(&task, Change::Cancel, &cancelled)])
        .await
        .expect("swap");
    assert!(matches!(
        swapped.as_slice(),
        [oncetask_core::store::SwapOutcome::Applied { .. }]
    ));
    touching_notice(&mut notices, "a cancel").await;
    delete(&store, &["w0"]).await;
    touching_notice(&mut notices, "a delete").await;
}

/// For a backend's own tests of which writes send which notice: subscribes
/// to [`ENV`], waits until the subscriber hears (creating tasks until it does),
/// creates a task `t-<kind>` of each of `kinds` (one call each) and claims each with a
/// fresh grant at `now`, applies the swaps `writes` makes of the held tasks
/// (each must apply), then creates a closing task of kind `end`.
///
/// Returns every notice heard before the closing one, in order, the
/// listening probes' (kind [`KIND`]) included. Notices of one connection
/// arrive in publish order, so the list says which writes sent what.
pub async fn notices_of_writes<S: Store>(
    store: &S,
    now: chrono::DateTime<chrono::Utc>,
    kinds: &[&str],
    writes: impl FnOnce(
        &[oncetask_core::Task],
        &lifecycle::LeaseGrant,
    ) -> Vec<(Change, oncetask_core::Task)>,
) -> Vec<Notification> {
    let mut notices = store
        .subscribe(ENV)
        .expect("the backend offers notifications");
    until_listening(store, &mut notices).await;
    // One create each: a call's notices need not come in the order of its tasks.
    for kind in kinds {
        let task = TaskBuilder::new(&format!("t-{kind}"))
            .kind(kind)
            .created_at(now)
            .build();
        seed(store, vec![task]).await;
    }
    let grant = lifecycle::LeaseGrant::new(now, Duration::from_secs(600));
    let mut held = Vec::new();
    for kind in kinds {
        let request = oncetask_core::store::ClaimRequest {
            env: ENV.into(),
            kind: (*kind).into(),
            now,
            grant: grant.clone(),
            mode: oncetask_core::store::ClaimMode::Single { limit: 1 },
            order: oncetask_core::store::ClaimOrder::Priority,
        };
        let mut claimed = store.claim(&request).await.expect("claim").tasks;
        assert_eq!(claimed.len(), 1, "{kind}");
        held.push(claimed.remove(0));
    }
    for ((change, next), before) in writes(&held, &grant).into_iter().zip(&held) {
        let outcome = store
            .swap(&[Swap::new(before, change, &next)])
            .await
            .expect("swap");
        assert!(
            matches!(
                outcome[..],
                [oncetask_core::store::SwapOutcome::Applied { .. }]
            ),
            "{change:?}"
        );
    }
    seed(
        store,
        vec![TaskBuilder::new("end").kind("end").created_at(now).build()],
    )
    .await;
    let mut heard = Vec::new();
    loop {
        let notice = tokio::time::timeout(Duration::from_secs(30), notices.next())
            .await
            .expect("a notice within 30 s")
            .expect("the stream stays open");
        if notice.kind == "end" {
            return heard;
        }
        heard.push(notice);
    }
}

//! `Store::set_paused` and `Store::paused_kinds`: which kinds are paused,
//! stored per environment and kind, announced to other processes.

use std::time::Duration;

use futures::StreamExt;
use oncetask_core::Store;

use crate::StoreFactory;
use crate::support::*;

async fn paused<S: Store>(store: &S, env: &str) -> Vec<String> {
    store.paused_kinds(env).await.expect("paused_kinds")
}

async fn set<S: Store>(store: &S, env: &str, kind: &str, paused: bool) -> bool {
    store
        .set_paused(env, kind, paused)
        .await
        .expect("set_paused")
}

/// A pause is kept per env and kind; each call says whether it changed
/// anything; the list is sorted.
pub async fn pauses_are_stored_per_env_and_kind_and_report_changes(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    assert!(paused(&store, ENV).await.is_empty());
    assert!(set(&store, ENV, OTHER_KIND, true).await, "paused");
    assert!(!set(&store, ENV, OTHER_KIND, true).await, "already paused");
    assert!(set(&store, ENV, KIND, true).await);
    assert_eq!(paused(&store, ENV).await, [KIND, OTHER_KIND]);
    assert!(paused(&store, OTHER_ENV).await.is_empty(), "per env");
    assert!(set(&store, ENV, KIND, false).await, "resumed");
    assert!(!set(&store, ENV, KIND, false).await, "not paused");
    assert!(!set(&store, OTHER_ENV, OTHER_KIND, false).await);
    assert_eq!(paused(&store, ENV).await, [OTHER_KIND]);
}

/// Names are stored verbatim: kinds that look like separators or
/// patterns pause only themselves.
pub async fn pausing_a_kind_with_odd_characters_pauses_only_it(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let odd = "a:b/c*{d}";
    assert!(set(&store, ENV, odd, true).await);
    assert_eq!(paused(&store, ENV).await, [odd]);
    assert!(set(&store, ENV, "a", true).await);
    assert!(set(&store, ENV, odd, false).await);
    assert_eq!(paused(&store, ENV).await, ["a"]);
}

/// A pause reaches the other processes' managers as a notice that may
/// touch claimed tasks (they re-read the paused kinds on it).
pub async fn a_pause_is_announced_as_a_change_touching_claimed_tasks(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let Some(mut notices) = store.subscribe(ENV) else {
        eprintln!("note: the store sends no change notices; test skipped");
        return;
    };
    // Subscriptions of some backends connect in the background: repeat
    // the change until one notice arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut paused_now = false;
    loop {
        paused_now = !paused_now;
        set(&store, ENV, KIND, paused_now).await;
        match tokio::time::timeout(Duration::from_millis(500), notices.next()).await {
            Ok(Some(notice)) if notice.kind == KIND => {
                assert!(notice.may_touch_claimed, "{notice:?}");
                return;
            }
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("the notice stream ended"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no notice for a pause"
        );
    }
}

//! Change notifications (`Store::subscribe`): optional push wake-ups for
//! workers in other processes (W5).

use std::time::Duration;

use futures::StreamExt;
use oncetask_core::Store;

use crate::StoreFactory;
use crate::support::*;

/// How long a backend may take to deliver a notice, in wall-clock time.
const DELIVERY: Duration = Duration::from_secs(10);

/// If the backend offers notifications, a subscriber of an env hears about
/// tasks created for a kind of that env. Tasks keep being created until a
/// notice arrives, so a listener that needs a moment to connect still passes.
pub async fn a_subscriber_hears_about_new_tasks_of_its_env(factory: &impl StoreFactory) {
    let store = factory.new_store().await;
    let Some(mut notices) = store.subscribe(ENV) else {
        eprintln!("note: backend offers no notifications; test skipped");
        return;
    };
    let deadline = tokio::time::Instant::now() + DELIVERY;
    let mut n = 0;
    loop {
        seed(&store, vec![TaskBuilder::new(&format!("t{n}")).build()]).await;
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

//! Bulk operator actions for incidents: count, redrive (reset) or delete
//! every failed task of a kind or of a resource key.

use oncetask_core::TaskStatus;
use oncetask_core::manager::{HandlerOptions, handler_fn};

use super::{Job, create, manual};
use crate::StoreFactory;

const KIND: &str = "charge_card";
const OTHER: &str = "refund_card";

/// Failed tasks of one key are redriven, of the kind deleted; the counts
/// say beforehand what each touches; other statuses and kinds stay.
pub async fn failed_tasks_of_a_kind_or_key_are_counted_redriven_and_deleted(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    for kind in [KIND, OTHER] {
        h.manager
            .register_dyn(
                kind,
                handler_fn(|task: oncetask_core::Task| async move {
                    if task.id.starts_with("ok") {
                        Ok(())
                    } else {
                        Err(std::io::Error::other("card declined"))
                    }
                }),
                HandlerOptions::default().no_retry(),
            )
            .expect("register");
    }
    for i in 0..3 {
        create(
            &h.manager,
            &Job::new(KIND, &format!("k1-{i}")).key("acct-1"),
        )
        .await;
        create(
            &h.manager,
            &Job::new(KIND, &format!("k2-{i}")).key("acct-2"),
        )
        .await;
    }
    create(&h.manager, &Job::new(KIND, "ok-1").key("acct-1")).await;
    create(&h.manager, &Job::new(OTHER, "other-1").key("acct-1")).await;
    h.drain(KIND).await;
    h.drain(OTHER).await;

    let failed = h.manager.filter().kind(KIND).status(TaskStatus::Failed);
    let key_1 = failed.clone().resource_key("acct-1");
    assert_eq!(h.manager.count_matching(&failed).await.expect("count"), 6);
    assert_eq!(h.manager.count_matching(&key_1).await.expect("count"), 3);

    let report = h
        .manager
        .reset_matching(key_1.clone())
        .await
        .expect("redrive");
    assert_eq!(report.count(), 3, "{report:?}");
    for i in 0..3 {
        let task = h.task(&format!("k1-{i}")).await;
        assert_eq!(task.status(h.clock.now()), TaskStatus::Pending);
        assert_eq!(task.attempts, 0);
    }
    assert_eq!(h.manager.count_matching(&key_1).await.expect("count"), 0);

    let report = h
        .manager
        .delete_matching(failed.clone())
        .await
        .expect("delete");
    assert_eq!(report.count(), 3, "only acct-2's tasks are still failed");
    assert_eq!(h.manager.count_matching(&failed).await.expect("count"), 0);
    h.kit.assert_completed("ok-1").await;
    assert_eq!(
        h.status("other-1").await,
        TaskStatus::Failed,
        "other kinds stay"
    );
}

//! Pausing a kind for every manager sharing the store: paused kinds claim
//! nothing, creates still store tasks, the state outlives the managers,
//! and a resume wakes workers at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use oncetask_core::manager::{HandlerOptions, handler_fn};
use oncetask_core::{Task, TaskStatus};
use tokio::sync::Notify;

use super::{ENV, Job, create, eventually, manual, register_ok, running};
use crate::StoreFactory;

const KIND: &str = "sync_calendar";
const OTHER: &str = "send_digest";

/// A pause made through one manager stops every manager of the store
/// (also one built after it, as after a restart); other kinds run on; a
/// resume lets them claim again.
pub async fn a_paused_kind_claims_nothing_in_any_manager_until_resumed(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default());
    register_ok(&h.manager, OTHER, HandlerOptions::default());
    let peer = h.peer(ENV, false);
    register_ok(&peer, KIND, HandlerOptions::default());

    assert!(h.manager.pause(KIND).await.expect("pause"), "was running");
    assert!(
        !h.manager.pause(KIND).await.expect("pause"),
        "already paused"
    );
    create(&h.manager, &Job::new(KIND, "p1")).await;
    create(&h.manager, &Job::new(OTHER, "o1")).await;
    assert_eq!(
        h.status("p1").await,
        TaskStatus::Pending,
        "creates still store"
    );

    assert!(peer.process_next(KIND).await.expect("claim").is_none());
    assert!(h.manager.process_next(KIND).await.expect("claim").is_none());
    let restarted = h.peer(ENV, false);
    register_ok(&restarted, KIND, HandlerOptions::default());
    assert!(restarted.process_next(KIND).await.expect("claim").is_none());
    assert_eq!(restarted.paused_kinds().await.expect("read"), [KIND]);
    assert!(
        h.manager
            .process_next(OTHER)
            .await
            .expect("claim")
            .is_some(),
        "other kinds run"
    );
    assert_eq!(h.status("p1").await, TaskStatus::Pending);

    assert!(peer.resume(KIND).await.expect("resume"));
    assert!(h.manager.process_next(KIND).await.expect("claim").is_some());
    h.kit.assert_completed("p1").await;
    assert!(h.manager.paused_kinds().await.expect("read").is_empty());
}

/// With worker loops that poll once a day, a resume made by another
/// process wakes them at once (through the store's notices) and the
/// task created while paused runs.
pub async fn a_resume_from_another_process_wakes_workers_at_once(factory: &impl StoreFactory) {
    let h = running(factory).await;
    if oncetask_core::Store::subscribe(&h.store, ENV).is_none() {
        eprintln!("note: the store sends no change notices; test skipped");
        return;
    }
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    h.manager.pause(KIND).await.expect("pause");
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |_task: Task| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, std::io::Error>(()) }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "w1")).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "paused before it was created"
    );

    let operator = h.peer(ENV, false);
    assert!(operator.resume(KIND).await.expect("resume"));
    eventually("the task ran after the resume", || async {
        h.status("w1").await == TaskStatus::Completed
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Pausing hands back the tasks a loop claimed ahead (unstarted, their
/// attempts not counted); the running handler finishes.
pub async fn pausing_hands_back_tasks_claimed_ahead(factory: &impl StoreFactory) {
    let h = running(factory).await;
    let gate = Arc::new(Notify::new());
    let started = Arc::new(AtomicU32::new(0));
    let (wait, count) = (gate.clone(), started.clone());
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |_task: Task| {
                count.fetch_add(1, Ordering::SeqCst);
                let wait = wait.clone();
                async move {
                    wait.notified().await;
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default().concurrency(1).claim_ahead(4),
        )
        .expect("register");
    for i in 0..5 {
        create(&h.manager, &Job::new(KIND, &format!("a{i}"))).await;
    }
    let leased = || async {
        let mut n = 0;
        for i in 0..5 {
            if h.status(&format!("a{i}")).await == TaskStatus::Leased {
                n += 1;
            }
        }
        n
    };
    eventually("one runs and more are claimed ahead", || async {
        started.load(Ordering::SeqCst) == 1 && leased().await >= 2
    })
    .await;

    h.manager.pause(KIND).await.expect("pause");
    eventually("what was claimed ahead is handed back", || async {
        leased().await == 1
    })
    .await;
    for i in 0..5 {
        let task = h.task(&format!("a{i}")).await;
        if task.status(h.clock.now()) == TaskStatus::Pending {
            assert_eq!(task.attempts, 0, "a{i}: handed back unstarted");
        }
    }
    gate.notify_one();
    eventually("the running handler finished", || async {
        leased().await == 0
    })
    .await;
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "nothing else started while paused"
    );

    h.manager.resume(KIND).await.expect("resume");
    eventually("every task ran", || async {
        gate.notify_one();
        h.manager
            .count_by_status(Some(KIND))
            .await
            .map(|c| c.count(TaskStatus::Completed))
            .unwrap_or(0)
            == 5
    })
    .await;
}

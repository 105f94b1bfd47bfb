//! Claiming ahead of free worker slots: tasks claimed ahead wait in the
//! manager, start as slots free up, are re-read when an operator may have
//! changed them, and are handed back unrun at shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use oncetask_core::manager::{HandlerOptions, Manager, handler_fn};
use oncetask_core::{ManualClock, Outcome, Task, TaskStatus};
use oncetask_memory::MemoryStore;
use tokio::sync::Semaphore;

mod support;
use support::{Job, eventually, start};

const LEASE: Duration = Duration::from_secs(60);

/// Main-handler runs per task id, and the task each run was handed.
type Runs = Arc<Mutex<HashMap<String, Vec<Task>>>>;

/// A manager with one slot claiming `ahead` tasks ahead, whose `job`
/// handler records its runs and holds task `a` until `gate` gets a permit.
fn manager(
    store: &MemoryStore,
    clock: &ManualClock,
    ahead: usize,
) -> (Manager, Runs, Arc<Semaphore>) {
    let m = Manager::builder(Arc::new(store.clone()))
        .clock(Arc::new(clock.clone()))
        .declare_kinds(["job"])
        .build();
    let runs: Runs = Arc::default();
    let gate = Arc::new(Semaphore::new(0));
    let (r, g) = (runs.clone(), gate.clone());
    m.register_dyn(
        "job",
        handler_fn(move |task: Task| {
            let (runs, gate) = (r.clone(), g.clone());
            async move {
                let id = task.id.clone();
                runs.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(id.clone())
                    .or_default()
                    .push(task);
                if id == "a" || id == "b" {
                    // Each held task uses up a permit of its own.
                    if let Ok(permit) = gate.acquire().await {
                        permit.forget();
                    }
                }
                Ok::<_, std::io::Error>(())
            }
        }),
        HandlerOptions::default()
            .concurrency(1)
            .claim_ahead(ahead)
            .lease_duration(LEASE),
    )
    .expect("register");
    (m, runs, gate)
}

fn ran(runs: &Runs, id: &str) -> usize {
    runs.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(id)
        .map_or(0, Vec::len)
}

async fn task(m: &Manager, id: &str) -> Task {
    m.get_task(id).await.expect("get").expect("stored")
}

/// With `a` running in the only slot, `b` and `c` are leased ahead.
async fn claimed_ahead(m: &Manager, runs: &Runs, clock: &ManualClock) {
    eventually("a runs", || async { ran(runs, "a") == 1 }).await;
    eventually("b and c are claimed ahead", || async {
        task(m, "b").await.is_leased_at(clock.now()) && task(m, "c").await.is_leased_at(clock.now())
    })
    .await;
    assert_eq!(
        ran(runs, "b") + ran(runs, "c"),
        0,
        "one slot: nothing else runs yet"
    );
}

async fn create(m: &Manager, ids: &[&'static str]) {
    for id in ids {
        m.create(&Job { id }).await.expect("create");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_claimed_ahead_run_in_order_as_the_slot_frees_up() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(start());
    let (m, runs, gate) = manager(&store, &clock, 2);
    create(&m, &["a", "b", "c"]).await;
    claimed_ahead(&m, &runs, &clock).await;
    gate.add_permits(2);
    eventually("all completed", || async {
        for id in ["a", "b", "c"] {
            if task(&m, id).await.status(clock.now()) != TaskStatus::Completed {
                return false;
            }
        }
        true
    })
    .await;
    for id in ["a", "b", "c"] {
        assert_eq!(ran(&runs, id), 1, "{id}");
        assert_eq!(task(&m, id).await.attempts, 1, "{id}");
    }
    m.shutdown(Duration::from_secs(5)).await;
}

/// A task cancelled by an operator while it waits for a slot goes to the
/// cancellation path: its main handler never runs. Cancelled through the
/// same manager, and through another one (whose change reaches this one
/// as the store's notice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_while_claimed_ahead_never_starts() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(start());
    let (m, runs, gate) = manager(&store, &clock, 2);
    let operator = Manager::builder(Arc::new(store.clone()))
        .clock(Arc::new(clock.clone()))
        .start_workers(false)
        .declare_kinds(["job"])
        .build();
    create(&m, &["a", "b", "c"]).await;
    claimed_ahead(&m, &runs, &clock).await;
    m.cancel("b").await.expect("cancel b here");
    operator.cancel("c").await.expect("cancel c elsewhere");
    gate.add_permits(2);
    eventually("b and c cancelled", || async {
        task(&m, "b").await.outcome == Some(Outcome::Cancelled)
            && task(&m, "c").await.outcome == Some(Outcome::Cancelled)
    })
    .await;
    assert_eq!(ran(&runs, "b"), 0, "b's main handler ran");
    assert_eq!(ran(&runs, "c"), 0, "c's main handler ran");
    m.shutdown(Duration::from_secs(5)).await;
}

/// Shutdown hands the tasks claimed ahead back unrun: ready at once, their
/// claim's attempt not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_tasks_claimed_ahead_back_unrun() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(start());
    let (m, runs, gate) = manager(&store, &clock, 2);
    create(&m, &["a", "b", "c"]).await;
    claimed_ahead(&m, &runs, &clock).await;
    let stopping = tokio::spawn({
        let m = m.clone();
        async move { m.shutdown(Duration::from_secs(5)).await }
    });
    eventually("b and c handed back", || async {
        !task(&m, "b").await.is_leased_at(clock.now())
            && !task(&m, "c").await.is_leased_at(clock.now())
    })
    .await;
    gate.add_permits(2);
    let report = stopping.await.expect("shutdown");
    assert!(report.drained, "{report:?}");
    for id in ["b", "c"] {
        let t = task(&m, id).await;
        assert_eq!(t.status(clock.now()), TaskStatus::Pending, "{id}");
        assert_eq!(t.attempts, 0, "{id}");
        assert_eq!(ran(&runs, id), 0, "{id}");
    }
    assert_eq!(
        task(&m, "a").await.status(clock.now()),
        TaskStatus::Completed
    );
}

/// A task that waited for its slot renews its lease before it starts, so
/// its handler gets a whole lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_waited_renews_its_lease_before_it_starts() {
    let store = MemoryStore::new();
    let clock = ManualClock::new(start());
    let (m, runs, gate) = manager(&store, &clock, 2);
    create(&m, &["a", "b", "c"]).await;
    claimed_ahead(&m, &runs, &clock).await;
    let claimed_until = task(&m, "b").await.leased_until.expect("leased");
    clock.advance(Duration::from_secs(30));
    gate.add_permits(1);
    eventually("b runs", || async { ran(&runs, "b") == 1 }).await;
    let renewed = task(&m, "b").await.leased_until.expect("leased");
    assert!(renewed > claimed_until, "{renewed} vs {claimed_until}");
    assert_eq!(renewed, clock.now() + LEASE);
    gate.add_permits(1);
    m.shutdown(Duration::from_secs(5)).await;
}

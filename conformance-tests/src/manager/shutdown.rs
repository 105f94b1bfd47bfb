//! Graceful shutdown under load (issue 8): many tasks, handlers that take a
//! while, several workers. Shutdown must leave no task leased by the stopped
//! manager, run nothing twice, and be safe to call again or concurrently.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oncetask_core::manager::{HandlerOptions, handler_fn};
use oncetask_core::{Manager, Store, Task, TaskStatus};

use super::{Harness, Job, eventually, running};
use crate::StoreFactory;

const KIND: &str = "busy";
const TASKS: usize = 40;

/// How often each task's handler started.
type Runs = Arc<Mutex<BTreeMap<String, u32>>>;

/// Registers a handler on `KIND` with 4 workers that counts its runs and
/// then works for `work` (wall time: the handler's own duration, not a wait
/// for anything).
fn register_counting(manager: &Manager, runs: &Runs, work: Duration) {
    let runs = runs.clone();
    manager
        .register_dyn(
            KIND,
            handler_fn(move |task: Task| {
                let runs = runs.clone();
                async move {
                    if let Ok(mut runs) = runs.lock() {
                        *runs.entry(task.id.clone()).or_insert(0) += 1;
                    }
                    tokio::time::sleep(work).await;
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default().concurrency(4),
        )
        .expect("register");
}

/// Every task of the harness's env, as stored.
async fn all_tasks<S: Store + Clone>(h: &Harness<S>) -> Vec<Task> {
    h.manager.find(h.manager.filter()).await.expect("find")
}

fn run_counts(runs: &Runs) -> BTreeMap<String, u32> {
    runs.lock().map(|r| r.clone()).unwrap_or_default()
}

/// Shutdown in the middle of 40 tasks on 4 workers: it waits for the
/// running handlers, after it no task is leased and every started handler
/// has its outcome stored; a second manager then runs the rest, and no task
/// ran twice.
pub async fn shutdown_under_load_leaves_no_lease_and_runs_nothing_twice(
    factory: &impl StoreFactory,
) {
    let h = running(factory).await;
    let runs: Runs = Arc::default();
    register_counting(&h.manager, &runs, Duration::from_millis(15));
    let jobs: Vec<Job> = (0..TASKS)
        .map(|i| Job::new(KIND, &format!("t{i:02}")))
        .collect();
    let report = h.manager.create_many(&jobs).await.expect("create");
    assert_eq!(report.succeeded.len(), TASKS);
    eventually("a few tasks ran", || async { run_counts(&runs).len() >= 6 }).await;

    let report = h.manager.shutdown(Duration::from_secs(30)).await;
    assert!(report.drained, "{report:?}");
    assert!(report.interrupted.is_empty(), "{report:?}");
    let after_shutdown = run_counts(&runs);
    let now = h.clock.now();
    let tasks = all_tasks(&h).await;
    assert_eq!(tasks.len(), TASKS);
    for task in &tasks {
        let status = task.status(now);
        let ran = after_shutdown.get(&task.id).copied().unwrap_or(0);
        assert!(
            matches!(status, TaskStatus::Completed | TaskStatus::Pending),
            "{} is {status:?} after shutdown",
            task.id
        );
        assert_eq!(
            ran,
            u32::from(status == TaskStatus::Completed),
            "{}: {ran} runs, {status:?}",
            task.id
        );
        assert_eq!(task.attempts, ran, "{}", task.id);
    }
    // Nothing runs after shutdown returned.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        run_counts(&runs),
        after_shutdown,
        "a handler ran after shutdown"
    );

    // Another process picks up the rest at once: nothing was left leased.
    let next = h.peer(super::ENV, true);
    register_counting(&next, &runs, Duration::from_millis(1));
    eventually("every task completed", || async {
        all_tasks(&h)
            .await
            .iter()
            .all(|t| t.status(h.clock.now()) == TaskStatus::Completed)
    })
    .await;
    next.shutdown(Duration::from_secs(30)).await;
    let runs = run_counts(&runs);
    assert_eq!(runs.len(), TASKS);
    assert!(runs.values().all(|n| *n == 1), "a task ran twice: {runs:?}");
}

/// Concurrent and repeated shutdown calls all return without panicking; a
/// report that says "drained" is only given once no handler runs, and no
/// call leaves a task leased; a call after the end returns at once.
pub async fn repeated_and_concurrent_shutdowns_are_harmless(factory: &impl StoreFactory) {
    let h = running(factory).await;
    let runs: Runs = Arc::default();
    register_counting(&h.manager, &runs, Duration::from_millis(200));
    for i in 0..8 {
        super::create(&h.manager, &Job::new(KIND, &format!("s{i}"))).await;
    }
    eventually("four handlers are running", || async {
        run_counts(&runs).len() >= 4
    })
    .await;

    let calls: Vec<_> = (0..3)
        .map(|_| {
            let manager = h.manager.clone();
            let store = h.store.clone();
            let clock = h.clock.clone();
            tokio::spawn(async move {
                let report = manager.shutdown(Duration::from_secs(30)).await;
                // Checked the moment the call returns.
                let tasks = store
                    .find(&oncetask_core::store::TaskFilter::env(
                        super::ENV,
                        clock.now(),
                    ))
                    .await
                    .expect("find");
                let leased: Vec<String> = tasks
                    .into_iter()
                    .filter(|t| t.status(clock.now()) == TaskStatus::Leased)
                    .map(|t| t.id)
                    .collect();
                (report, leased)
            })
        })
        .collect();
    for call in calls {
        let (report, leased) = call.await.expect("a shutdown call panicked");
        assert!(
            !report.drained || leased.is_empty(),
            "a shutdown reported drained while {leased:?} were still leased"
        );
    }
    let again = h.manager.shutdown(Duration::from_secs(30)).await;
    assert!(again.drained, "{again:?}");
    let now = h.clock.now();
    for task in all_tasks(&h).await {
        assert_ne!(task.status(now), TaskStatus::Leased, "{}", task.id);
    }
    let runs = run_counts(&runs);
    assert!(runs.values().all(|n| *n == 1), "a task ran twice: {runs:?}");
    assert!(h.manager.is_shutting_down());
}

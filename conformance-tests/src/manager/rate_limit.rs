//! Rate limits: exact across managers sharing the store, per kind and per
//! resource key; tasks over the limit wait for the next window with no
//! attempt counted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oncetask_core::manager::{HandlerOptions, Manager, RateLimit, handler_fn};
use oncetask_core::store::window_start;
use oncetask_core::{ManualClock, Task, TaskStatus};

use super::{ENV, Job, create, eventually, manual, running};
use crate::StoreFactory;

const KIND: &str = "call_partner_api";

/// Each start: the task's id and the clock's time.
type Starts = Arc<Mutex<Vec<(String, DateTime<Utc>)>>>;

/// Records the clock's time at each start.
fn recording(clock: ManualClock, starts: Starts) -> impl oncetask_core::manager::Handler<Task> {
    handler_fn(move |task: Task| {
        starts
            .lock()
            .expect("starts")
            .push((task.id.clone(), clock.now()));
        async { Ok::<_, std::io::Error>(()) }
    })
}

/// Starts per window of `period_ms`.
fn per_window(
    starts: &[(String, DateTime<Utc>)],
    period_ms: u64,
) -> BTreeMap<DateTime<Utc>, usize> {
    let mut windows = BTreeMap::new();
    for (_, at) in starts {
        *windows.entry(window_start(*at, period_ms)).or_insert(0) += 1;
    }
    windows
}

/// 3 managers, 5 starts a second, 40 tasks: each 1 s window holds exactly
/// 5 starts (the backlog never runs dry), so all 40 run in 8 windows.
pub async fn a_kind_rate_limit_holds_exactly_across_managers(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let starts = Arc::new(Mutex::new(Vec::new()));
    let options =
        || HandlerOptions::default().rate_limit(RateLimit::new(5, Duration::from_secs(1)));
    let managers: Vec<Manager> = vec![h.manager.clone(), h.peer(ENV, false), h.peer(ENV, false)];
    for m in &managers {
        m.register_dyn(KIND, recording(h.clock.clone(), starts.clone()), options())
            .expect("register");
    }
    for i in 0..40 {
        create(&h.manager, &Job::new(KIND, &format!("r{i:02}"))).await;
    }
    for window in 0..8 {
        loop {
            let mut ran = false;
            for m in &managers {
                ran |= m.process_next(KIND).await.expect("run").is_some();
            }
            if !ran {
                break;
            }
        }
        let counts = per_window(&starts.lock().expect("starts"), 1_000);
        assert_eq!(counts.len(), window + 1, "{counts:?}");
        assert!(
            counts.values().all(|n| *n == 5),
            "window {window}: {counts:?}"
        );
        h.advance(Duration::from_secs(1));
    }
    let starts = starts.lock().expect("starts").len();
    assert_eq!(starts, 40);
    let counts = h.manager.count_by_status(Some(KIND)).await.expect("count");
    assert_eq!(counts.count(TaskStatus::Completed), 40);
}

/// A resource key's limit: tasks of a key over it are handed back to wait
/// for its next window, their attempts not counted; other keys and tasks
/// without a key run meanwhile.
pub async fn a_resource_key_limit_defers_the_extra_tasks_without_counting_attempts(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let starts = Arc::new(Mutex::new(Vec::new()));
    h.manager
        .register_dyn(
            KIND,
            recording(h.clock.clone(), starts.clone()),
            HandlerOptions::default()
                .rate_limit_per_resource_key(RateLimit::new(2, Duration::from_secs(60))),
        )
        .expect("register");
    for i in 0..4 {
        create(&h.manager, &Job::new(KIND, &format!("a{i}")).key("acct-a")).await;
    }
    create(&h.manager, &Job::new(KIND, "b0").key("acct-b")).await;
    create(&h.manager, &Job::new(KIND, "n0")).await;

    h.drain(KIND).await;
    let mut ran: Vec<String> = starts
        .lock()
        .expect("starts")
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    ran.sort();
    assert_eq!(ran, ["a0", "a1", "b0", "n0"]);
    let window_end = window_start(h.clock.now(), 60_000) + chrono::TimeDelta::seconds(60);
    for id in ["a2", "a3"] {
        let task = h.task(id).await;
        assert_eq!(task.status(h.clock.now()), TaskStatus::Waiting, "{id}");
        assert_eq!(
            (task.attempts, task.snoozes),
            (0, 0),
            "{id}: no attempt, no snooze"
        );
        assert_eq!(
            task.wait_until,
            Some(window_end),
            "{id} waits for the next window"
        );
    }
    h.advance(Duration::from_secs(60));
    h.drain(KIND).await;
    assert_eq!(starts.lock().expect("starts").len(), 6);
    h.kit.assert_completed("a3").await;
}

/// Worker loops over a rate-limited kind run what the window allows and
/// sleep until the next window opens (on the manager's clock).
pub async fn rate_limited_workers_start_each_window_as_it_opens(factory: &impl StoreFactory) {
    let h = running(factory).await;
    let starts = Arc::new(Mutex::new(Vec::new()));
    h.manager
        .register_dyn(
            KIND,
            recording(h.clock.clone(), starts.clone()),
            HandlerOptions::default()
                .concurrency(4)
                .rate_limit(RateLimit::new(2, Duration::from_secs(10))),
        )
        .expect("register");
    for i in 0..5 {
        create(&h.manager, &Job::new(KIND, &format!("w{i}"))).await;
    }
    let completed = || async {
        h.manager
            .count_by_status(Some(KIND))
            .await
            .map(|c| c.count(TaskStatus::Completed))
            .unwrap_or(0)
    };
    for expected in [2, 4, 5] {
        eventually(&format!("{expected} ran"), || async {
            completed().await == expected
        })
        .await;
        let windows = per_window(&starts.lock().expect("starts"), 10_000);
        assert!(windows.values().all(|n| *n <= 2), "{windows:?}");
        h.advance(Duration::from_secs(10));
    }
}

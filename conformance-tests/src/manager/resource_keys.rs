//! Resource keys at manager level: exclusion under concurrent workers, and
//! group handlers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oncetask_core::manager::{HandlerOptions, group_handler_fn, handler_fn};
use oncetask_core::{Task, TaskStatus};

use super::{Job, create, eventually, manual, running};
use crate::StoreFactory;

const KIND: &str = "sync";

/// Tracks handlers running per key and the highest overlap seen.
#[derive(Default)]
struct Overlap {
    running: HashMap<String, u32>,
    worst: u32,
    finished: usize,
}

/// 8 workers, 40 tasks on 4 keys: never two handlers of one key at once,
/// and different keys do run in parallel.
pub async fn eight_workers_never_run_two_tasks_of_one_resource_key_at_once(
    factory: &impl StoreFactory,
) {
    let h = running(factory).await;
    let overlap = Arc::new(Mutex::new(Overlap::default()));
    // The most handlers seen running at once. Until it reaches 2, a handler
    // waits (up to 10 s) for a second one to start: on a loaded machine a
    // short handler could otherwise finish before another worker claims,
    // and the parallelism check would depend on timing.
    let parallel = Arc::new(tokio::sync::watch::Sender::new(0u32));
    let running_now = Arc::new(Mutex::new(0u32));
    let (o, p, r) = (overlap.clone(), parallel.clone(), running_now.clone());
    h.manager
        .register_dyn(
            KIND,
            handler_fn(move |task: Task| {
                let (o, p, r) = (o.clone(), p.clone(), r.clone());
                async move {
                    let key = task.resource_key.clone().unwrap_or_default();
                    {
                        let mut o = o.lock().expect("lock");
                        let n = o.running.entry(key.clone()).or_default();
                        *n += 1;
                        let n = *n;
                        o.worst = o.worst.max(n);
                        let mut r = r.lock().expect("lock");
                        *r += 1;
                        let now = *r;
                        p.send_if_modified(|max| {
                            let more = now > *max;
                            *max = (*max).max(now);
                            more
                        });
                    }
                    let mut seen = p.subscribe();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        seen.wait_for(|max| *max >= 2),
                    )
                    .await;
                    // Stay busy for a while so that overlaps would show.
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    let mut o = o.lock().expect("lock");
                    *o.running.entry(key).or_default() -= 1;
                    o.finished += 1;
                    *r.lock().expect("lock") -= 1;
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default().concurrency(8),
        )
        .expect("register");
    let jobs: Vec<Job> = (0..40)
        .map(|i| Job::new(KIND, &format!("t{i}")).key(&format!("cal-{}", i % 4)))
        .collect();
    let report = h.manager.create_many(&jobs).await.expect("create");
    assert_eq!(report.count(), 40);
    eventually("all 40 tasks completed", || async {
        h.manager
            .count_by_status(Some(KIND))
            .await
            .expect("count")
            .get(&TaskStatus::Completed)
            .copied()
            == Some(40)
    })
    .await;
    let (finished, worst) = {
        let o = overlap.lock().expect("lock");
        (o.finished, o.worst)
    };
    assert_eq!(finished, 40, "each task ran exactly once");
    assert_eq!(worst, 1, "two handlers of one key overlapped");
    assert!(
        *parallel.borrow() > 1,
        "different keys should run in parallel"
    );
    h.manager.shutdown(Duration::from_secs(5)).await;
}

/// A group handler gets every ready task of a key in one call, ordered by
/// `wait_until`; keyless tasks come one by one.
pub async fn a_group_handler_receives_the_ready_tasks_of_a_key_in_wait_until_order(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let sink = calls.clone();
    h.manager
        .register_dyn_group(
            KIND,
            group_handler_fn(move |tasks: Vec<Task>| {
                let sink = sink.clone();
                async move {
                    let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
                    sink.lock().expect("lock").push(ids);
                    Ok::<_, std::io::Error>("batch done")
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register");
    let t = super::start();
    let minutes = |m: i64| t - chrono::TimeDelta::minutes(m);
    create(&h.manager, &Job::new(KIND, "b").key("cal").at(minutes(1))).await;
    create(&h.manager, &Job::new(KIND, "a").key("cal").at(minutes(3))).await;
    create(&h.manager, &Job::new(KIND, "c").key("cal").at(minutes(2))).await;
    create(
        &h.manager,
        &Job::new(KIND, "later")
            .key("cal")
            .at(t + chrono::TimeDelta::hours(1)),
    )
    .await;
    h.drain(KIND).await;
    create(&h.manager, &Job::new(KIND, "solo")).await;
    h.drain(KIND).await;
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(
        calls,
        vec![
            vec!["a".to_owned(), "c".to_owned(), "b".to_owned()],
            vec!["solo".to_owned()],
        ]
    );
    for id in ["a", "b", "c"] {
        let task = h.task(id).await;
        assert_eq!(task.status(h.clock.now()), TaskStatus::Completed);
        assert_eq!(task.result, Some(serde_json::json!("batch done")));
    }
    assert_eq!(h.status("later").await, TaskStatus::Waiting);
}

/// A failing group fails every task of the group; each retries on its own schedule.
pub async fn a_failing_group_fails_every_task_of_the_group(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    h.manager
        .register_dyn_group(
            KIND,
            group_handler_fn(|_tasks: Vec<Task>| async move { Err::<(), _>("calendar API down") }),
            HandlerOptions::default().no_retry(),
        )
        .expect("register");
    create(&h.manager, &Job::new(KIND, "x").key("cal")).await;
    create(&h.manager, &Job::new(KIND, "y").key("cal")).await;
    let report = h
        .manager
        .process_next(KIND)
        .await
        .expect("run")
        .expect("claimed");
    assert_eq!(report.claimed.len(), 2);
    for id in ["x", "y"] {
        let task = h.task(id).await;
        assert_eq!(task.status(h.clock.now()), TaskStatus::Failed);
        assert_eq!(task.errors[0].error, "calendar API down");
    }
}

/// The group size cap splits a large key into several calls.
pub async fn a_group_larger_than_the_cap_is_split(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let sink = sizes.clone();
    h.manager
        .register_dyn_group(
            KIND,
            group_handler_fn(move |tasks: Vec<Task>| {
                let sink = sink.clone();
                async move {
                    sink.lock().expect("lock").push(tasks.len());
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default().max_group_size(2),
        )
        .expect("register");
    for i in 0..5 {
        create(&h.manager, &Job::new(KIND, &format!("t{i}")).key("cal")).await;
    }
    h.drain(KIND).await;
    assert_eq!(*sizes.lock().expect("lock"), vec![2, 2, 1]);
}

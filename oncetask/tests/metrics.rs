//! Metrics of a run, captured with a debugging recorder (spans are in
//! `spans.rs`). Time moves only with the test kit's manual clock: no sleeps.
//!
//! Each test installs its recorder for its own thread (`#[tokio::test]` runs
//! on a current-thread runtime), so tests do not see each other's metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use oncetask::backend::lifecycle::{self, LeaseGrant};
use oncetask::backend::{Change, Fetched, Swap};
use oncetask::manager::handler_fn;
use oncetask::metrics::{
    ENQUEUE_TO_START, HANDLER_DURATION, OLDEST_PENDING_AGE, TASKS_CANCELLED, TASKS_CLAIMED,
    TASKS_CREATED, TASKS_FAILED, TASKS_FENCED_OFF, TASKS_PENDING, TASKS_RETRIED, TASKS_SUCCEEDED,
};
use oncetask::testing::TestKit;
use oncetask::{HandlerOptions, MemoryStore, Store, Task, TaskData, TaskStatus};
use serde::Serialize;

/// A task of any kind, optionally scheduled.
#[derive(Serialize)]
struct Job {
    kind: &'static str,
    id: String,
    #[serde(skip)]
    at: Option<DateTime<Utc>>,
}

impl TaskData for Job {
    type Kind = &'static str;
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn idempotent_id(&self) -> String {
        self.id.clone()
    }
    fn scheduled_at(&self) -> Option<DateTime<Utc>> {
        self.at
    }
}

fn job(kind: &'static str, id: &str) -> Job {
    Job {
        kind,
        id: id.to_owned(),
        at: None,
    }
}

fn start() -> DateTime<Utc> {
    "2025-01-06T09:00:00Z".parse().expect("a time")
}

/// What the recorder holds, by (metric name, kind label).
#[derive(Debug, Default)]
struct Captured {
    counters: BTreeMap<(String, String), u64>,
    gauges: BTreeMap<(String, String), f64>,
    histograms: BTreeMap<(String, String), Vec<f64>>,
}

impl Captured {
    fn take(snapshotter: &Snapshotter) -> Self {
        let mut captured = Captured::default();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let label = |name: &str| {
                key.labels()
                    .find(|l| l.key() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            assert_eq!(label("env"), "test", "{key:?} carries the env label");
            let id = (key.name().to_owned(), label("kind"));
            match value {
                DebugValue::Counter(n) => {
                    captured.counters.insert(id, n);
                }
                DebugValue::Gauge(v) => {
                    captured.gauges.insert(id, v.into_inner());
                }
                DebugValue::Histogram(values) => {
                    captured
                        .histograms
                        .insert(id, values.into_iter().map(|v| v.into_inner()).collect());
                }
            }
        }
        captured
    }

    fn counter(&self, name: &str, kind: &str) -> u64 {
        self.counters
            .get(&(name.to_owned(), kind.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    fn gauge(&self, name: &str, kind: &str) -> Option<f64> {
        self.gauges
            .get(&(name.to_owned(), kind.to_owned()))
            .copied()
    }

    fn histogram(&self, name: &str, kind: &str) -> Vec<f64> {
        self.histograms
            .get(&(name.to_owned(), kind.to_owned()))
            .cloned()
            .unwrap_or_default()
    }
}

/// Takes the lease of `id` away as another worker would after it expired:
/// claims the stored task again with a fresh grant.
async fn steal_lease(store: &MemoryStore, id: &str, now: DateTime<Utc>) {
    let Some(Fetched::Task(held)) = store
        .get(&[id.to_owned()])
        .await
        .expect("get")
        .into_iter()
        .next()
    else {
        panic!("task {id} should exist");
    };
    let stolen = lifecycle::claim(&held, &LeaseGrant::new(now, Duration::from_secs(600)));
    store
        // A claim is no swap; a reset's change writes every lease field.
        .swap(&[Swap::new(&held, Change::Reset, &stolen)])
        .await
        .expect("swap");
}

/// Registers the kinds of the run on `kit`:
/// * `welcome`: succeeds;
/// * `charge`: fails twice, then succeeds (default backoff: 1 s, then 2 s);
/// * `import`: fails without retry;
/// * `reminder`: a cancellation handler that succeeds;
/// * `slow`: loses its lease to another worker while it runs.
fn register_kinds(kit: &TestKit, store: &MemoryStore) {
    let manager = kit.manager();
    let ok = || handler_fn(|_t: Task| async { Ok::<_, std::io::Error>(()) });
    manager
        .register_dyn("welcome", ok(), HandlerOptions::default())
        .expect("register welcome");
    let calls = Arc::new(AtomicU32::new(0));
    manager
        .register_dyn(
            "charge",
            handler_fn(move |_t: Task| {
                let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if call <= 2 {
                        Err("gateway timeout")
                    } else {
                        Ok(())
                    }
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register charge");
    manager
        .register_dyn(
            "import",
            handler_fn(|_t: Task| async { Err::<(), _>("corrupt file") }),
            HandlerOptions::default().no_retry(),
        )
        .expect("register import");
    manager
        .register_dyn(
            "reminder",
            ok(),
            HandlerOptions::default().cancellation_handler(ok()),
        )
        .expect("register reminder");
    let store = store.clone();
    let clock = kit.clock().clone();
    manager
        .register_dyn(
            "slow",
            handler_fn(move |task: Task| {
                let store = store.clone();
                let now = clock.now();
                async move {
                    steal_lease(&store, &task.id, now).await;
                    Ok::<_, std::io::Error>(())
                }
            }),
            HandlerOptions::default(),
        )
        .expect("register slow");
}

#[tokio::test]
async fn a_run_with_retries_and_a_cancellation_records_the_expected_counters() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _installed = metrics::set_default_local_recorder(&recorder);

    let store = MemoryStore::new();
    let kit = TestKit::builder(Arc::new(store.clone()))
        .start_at(start())
        .build();
    register_kinds(&kit, &store);
    let manager = kit.manager();

    let welcomes: Vec<Job> = ["ada", "bob", "eve"]
        .iter()
        .map(|u| job("welcome", &format!("welcome-{u}")))
        .collect();
    let created = manager.create_many(&welcomes).await.expect("create_many");
    assert_eq!(created.count(), 3);
    assert!(
        !manager
            .create(&job("welcome", "welcome-ada"))
            .await
            .expect("create")
            .is_created()
    );
    manager
        .create(&job("charge", "charge-1"))
        .await
        .expect("create");
    manager
        .create(&job("import", "import-1"))
        .await
        .expect("create");
    manager
        .create(&job("slow", "slow-1"))
        .await
        .expect("create");
    manager
        .create(&Job {
            at: Some(start() + chrono::TimeDelta::hours(1)),
            ..job("reminder", "reminder-1")
        })
        .await
        .expect("create");

    // Everything waits 5 s before the first run: enqueue-to-start is 5 s.
    kit.advance(Duration::from_secs(5));
    manager.cancel("reminder-1").await.expect("cancel");
    kit.run_until_idle().await; // charge fails (retry in 1 s)
    kit.advance_and_run(Duration::from_secs(1)).await; // charge fails (retry in 2 s)
    kit.advance_and_run(Duration::from_secs(2)).await; // charge succeeds

    let m = Captured::take(&snapshotter);
    for (kind, n) in [
        ("welcome", 3),
        ("charge", 1),
        ("import", 1),
        ("slow", 1),
        ("reminder", 1),
    ] {
        assert_eq!(m.counter(TASKS_CREATED, kind), n, "{kind} created");
    }
    for (kind, n) in [
        ("welcome", 3),
        ("charge", 3),
        ("import", 1),
        ("slow", 1),
        ("reminder", 1),
    ] {
        assert_eq!(m.counter(TASKS_CLAIMED, kind), n, "{kind} claimed");
        assert_eq!(
            m.histogram(HANDLER_DURATION, kind).len(),
            n as usize,
            "one handler duration per {kind} run"
        );
    }
    assert_eq!(m.counter(TASKS_SUCCEEDED, "welcome"), 3);
    assert_eq!(m.counter(TASKS_SUCCEEDED, "charge"), 1);
    assert_eq!(m.counter(TASKS_RETRIED, "charge"), 2);
    assert_eq!(m.counter(TASKS_FAILED, "charge"), 0);
    assert_eq!(m.counter(TASKS_FAILED, "import"), 1);
    assert_eq!(m.counter(TASKS_RETRIED, "import"), 0);
    assert_eq!(m.counter(TASKS_CANCELLED, "reminder"), 1);
    assert_eq!(m.counter(TASKS_SUCCEEDED, "reminder"), 0);
    assert_eq!(m.counter(TASKS_FENCED_OFF, "slow"), 1);
    assert_eq!(
        m.counter(TASKS_SUCCEEDED, "slow"),
        0,
        "a fenced-off outcome is not a success"
    );

    assert_eq!(m.histogram(ENQUEUE_TO_START, "welcome"), vec![5.0; 3]);
    assert_eq!(
        m.histogram(ENQUEUE_TO_START, "charge"),
        vec![5.0, 0.0, 0.0],
        "retries start when their backoff ends"
    );
    assert_eq!(
        m.histogram(ENQUEUE_TO_START, "reminder"),
        vec![0.0],
        "a cancelled task is due from its cancellation, not its schedule"
    );
}

#[tokio::test]
async fn inspect_sets_the_queue_gauges_of_every_kind() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _installed = metrics::set_default_local_recorder(&recorder);

    let kit = TestKit::builder(Arc::new(MemoryStore::new()))
        .start_at(start())
        .configure(|b| b.accept_any_kind())
        .build();
    let manager = kit.manager();
    manager.create(&job("welcome", "w1")).await.expect("create");
    kit.advance(Duration::from_secs(30));
    manager.create(&job("welcome", "w2")).await.expect("create");
    manager
        .create(&Job {
            at: Some(start() + chrono::TimeDelta::hours(1)),
            ..job("report", "r1")
        })
        .await
        .expect("create");
    kit.advance(Duration::from_secs(10));

    let stats = manager.inspect().await.expect("inspect");
    assert_eq!(stats.kinds["welcome"].count(TaskStatus::Pending), 2);
    let m = Captured::take(&snapshotter);
    assert_eq!(m.gauge(TASKS_PENDING, "welcome"), Some(2.0));
    assert_eq!(m.gauge(OLDEST_PENDING_AGE, "welcome"), Some(40.0));
    assert_eq!(m.gauge(TASKS_PENDING, "report"), Some(0.0));
    assert_eq!(m.gauge(OLDEST_PENDING_AGE, "report"), Some(0.0));
}

#[tokio::test]
async fn the_queue_metrics_interval_refreshes_the_pending_gauge_of_registered_kinds() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _installed = metrics::set_default_local_recorder(&recorder);

    let kit = TestKit::builder(Arc::new(MemoryStore::new()))
        .start_at(start())
        .workers()
        .configure(|b| b.queue_metrics_interval(Duration::from_secs(60)))
        .build();
    settle().await; // the loop's first refresh: no kind registered yet
    let manager = kit.manager();
    // The first task of key K never finishes, so the others stay pending
    // behind it (pending: ready and not leased; their key is busy).
    manager
        .register_dyn(
            "sync",
            handler_fn(|_t: Task| std::future::pending::<Result<(), std::io::Error>>()),
            HandlerOptions::default().concurrency(1),
        )
        .expect("register");
    #[derive(Serialize)]
    struct Sync {
        n: u32,
    }
    impl TaskData for Sync {
        type Kind = &'static str;
        fn kind(&self) -> &'static str {
            "sync"
        }
        fn idempotent_id(&self) -> String {
            format!("sync-{}", self.n)
        }
        fn resource_key(&self) -> Option<String> {
            Some("K".into())
        }
    }
    for n in 0..3 {
        manager.create(&Sync { n }).await.expect("create");
    }
    settle().await;
    let gauge = || Captured::take(&snapshotter).gauge(TASKS_PENDING, "sync");
    assert_eq!(gauge(), None, "no refresh since the kind was registered");

    kit.advance(Duration::from_secs(60));
    settle().await;
    assert_eq!(gauge(), Some(2.0), "refreshed a minute later");
    manager.shutdown(Duration::from_millis(10)).await;
}

/// Lets spawned tasks on this current-thread runtime run until they wait.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

//! Cancel-to-handler-notified delay: a handler awaits
//! [`TaskContext::cancelled`]; one task at a time is created, and once its
//! handler runs it is cancelled, through the handling manager itself (the
//! in-process registry hears at once) or through a second manager on its
//! own store connection (the signal travels through the backend's change
//! notices, and the handling manager re-reads its running tasks). A sample
//! is the handler's `Instant::now()` on the signal minus the instant just
//! before `cancel` was called.

use std::time::{Duration, Instant};

use oncetask::{CancelStatus, HandlerOptions, Manager, Task, TaskContext, TaskData};
use tokio::sync::{mpsc, watch};

use crate::error::BenchError;
use crate::measure::Percentiles;
use crate::report::Row;
use crate::scenarios::Ctx;
use crate::workload::{self, BenchTask, KIND, SHUTDOWN_GRACE};

/// The number of the warm-up task (not measured): the largest number
/// every backend stores (Firestore refuses integers above `i64::MAX`).
const WARM_UP: u64 = i64::MAX as u64;

/// Worker slots of the handling manager: one task runs at a time, and a
/// spare slot lets its cancellation path run beside it.
const SLOTS: usize = 2;

/// How often the end of a sample's task is re-read once its cancellation
/// handler returned (its outcome write follows).
const DONE_POLL: Duration = Duration::from_millis(2);

/// The two paths.
#[derive(Clone, Copy)]
enum Path {
    /// Cancelled through the manager running the handler.
    Same,
    /// Cancelled through another manager on its own store connection.
    Second,
}

impl Path {
    fn config(self) -> &'static str {
        match self {
            Path::Same => "same manager",
            Path::Second => "second manager (own connection)",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Path::Same => "can1",
            Path::Second => "canx",
        }
    }
}

/// What the handlers report, by task id.
#[derive(Debug)]
enum Event {
    /// The main handler started.
    Started(String),
    /// The main handler's cancel signal arrived, at this instant.
    Notified(String, Instant),
    /// The cancellation handler ran (the task's outcome write follows).
    Ended(String),
}

/// The same-manager row and the second-manager row.
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    for path in [Path::Same, Path::Second] {
        ctx.say(&format!(
            "cancel: {} tasks one at a time, {}",
            ctx.cancel_tasks(),
            path.config()
        ));
        let row = match one_path(ctx, path).await {
            Ok(row) => row,
            Err(e) => Row::new(ctx.backend(), "cancel", path.config()).note(format!("error: {e}")),
        };
        rows.push(row);
    }
    Ok(rows)
}

async fn one_path(ctx: &Ctx<'_>, path: Path) -> Result<Row, BenchError> {
    let tasks = ctx.cancel_tasks();
    let heartbeat = ctx.args.cancel_heartbeat_ms.map(Duration::from_millis);
    let pause = Duration::from_millis(ctx.args.cancel_pause_ms);
    ctx.ns.reset_memory();
    let env = ctx.ns.env(path.label());
    let (events, mut received) = mpsc::unbounded_channel();
    let (stop, stopped) = watch::channel(false);
    let worker = handling_manager(ctx.ns.store().await?, &env, heartbeat, events, stopped)?;
    let canceller = match path {
        Path::Same => worker.clone(),
        Path::Second => workload::creator(ctx.ns.store().await?, &env),
    };

    let mut run = Samples {
        worker: &worker,
        canceller: &canceller,
        received: &mut received,
        env: &env,
        deadline: tokio::time::Instant::now() + ctx.timeout(),
        timeout: ctx.timeout(),
        expected: tasks,
        signal_ms: Vec::with_capacity(tasks as usize),
        call_ms: Vec::with_capacity(tasks as usize),
    };
    let started = Instant::now();
    let result = async {
        // Once one task went through, subscriptions and workers are live.
        run.sample(WARM_UP).await?;
        run.signal_ms.clear();
        run.call_ms.clear();
        for n in 0..tasks {
            if pause > Duration::ZERO {
                tokio::time::sleep(pause).await;
            }
            run.sample(n).await?;
        }
        Ok::<(), BenchError>(())
    }
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let (signal_ms, call_ms) = (run.signal_ms, run.call_ms);
    // A handler still waiting (a signal that never came) returns now.
    let _ = stop.send(true);
    worker.shutdown(SHUTDOWN_GRACE).await;
    if matches!(path, Path::Second) {
        canceller.shutdown(SHUTDOWN_GRACE).await;
    }

    let done = signal_ms.len();
    let mut note = format!(
        "{}; 1 task at a time{}, {SLOTS} slots; {}; cancel call p50 {}",
        match path {
            Path::Same => "in-process registry, raised after the cancel's store write",
            Path::Second => "store change notice, then a re-read (get) of the running task",
        },
        if pause > Duration::ZERO {
            format!(" ({} ms apart)", pause.as_millis())
        } else {
            String::new()
        },
        heartbeat.map_or_else(
            || "no heartbeat".to_owned(),
            |h| format!(
                "heartbeat {} ms (or its extension, if sooner)",
                h.as_millis()
            )
        ),
        Percentiles::of(call_ms).map_or_else(|| "-".to_owned(), |p| format!("{:.2} ms", p.p50_ms)),
    );
    if let Err(e) = result {
        if done == 0 {
            return Err(e);
        }
        note = format!("error: {e} ({done} samples before it); {note}");
    }
    let mut row = Row::new(ctx.backend(), "cancel", path.config()).note(note);
    row.tasks = done as u64;
    row.seconds = seconds;
    row.latency = Percentiles::of(signal_ms);
    Ok(row)
}

/// A manager with worker loops whose main handler reports its start, waits
/// for its cancel signal (or the end of the row) and fails, so that the
/// task takes its cancellation path, whose handler reports its end.
fn handling_manager(
    store: std::sync::Arc<dyn oncetask::Store>,
    env: &str,
    heartbeat: Option<Duration>,
    events: mpsc::UnboundedSender<Event>,
    stopped: watch::Receiver<bool>,
) -> Result<Manager, BenchError> {
    let manager = Manager::builder(store).env(env).build();
    let ended = events.clone();
    let mut options = HandlerOptions::default()
        .concurrency(SLOTS)
        .no_retry()
        .cancellation_handler(move |task: Task, _cx: TaskContext| {
            let _ = ended.send(Event::Ended(task.id));
            std::future::ready(Ok::<(), std::convert::Infallible>(()))
        });
    if let Some(interval) = heartbeat {
        options = options.heartbeat(interval);
    }
    manager.register_dyn(
        KIND,
        move |task: Task, cx: TaskContext| {
            let events = events.clone();
            let mut stopped = stopped.clone();
            async move {
                let _ = events.send(Event::Started(task.id.clone()));
                tokio::select! {
                    () = cx.cancelled() => {
                        let _ = events.send(Event::Notified(task.id, Instant::now()));
                        Err::<(), _>("cancelled while running")
                    }
                    _ = stopped.wait_for(|stop| *stop) => Err("the bench row ended"),
                }
            }
        },
        options,
    )?;
    Ok(manager)
}

/// One path's run: its managers, what its handlers reported, the samples.
struct Samples<'a> {
    worker: &'a Manager,
    canceller: &'a Manager,
    received: &'a mut mpsc::UnboundedReceiver<Event>,
    env: &'a str,
    deadline: tokio::time::Instant,
    timeout: Duration,
    expected: u64,
    /// Cancel call to handler notified, milliseconds.
    signal_ms: Vec<f64>,
    /// Duration of the `cancel` call, milliseconds.
    call_ms: Vec<f64>,
}

impl Samples<'_> {
    /// Task `n`: created, cancelled once its handler runs, and waited for
    /// until it is done (so that the next sample starts on an idle queue).
    async fn sample(&mut self, n: u64) -> Result<(), BenchError> {
        let task = BenchTask::new(self.env, n, None);
        let id = task.idempotent_id();
        self.worker.create(&task).await?;
        self.wait("cancel: handler start", |e| {
            matches!(e, Event::Started(i) if *i == id).then_some(())
        })
        .await?;

        let called = Instant::now();
        let status = self.canceller.cancel(&id).await?;
        let returned = Instant::now();
        if status != CancelStatus::Pending {
            return Err(BenchError::Raw(format!(
                "cancel of the running task {id} answered {status:?}"
            )));
        }
        let notified = self
            .wait("cancel: handler signal", |e| match e {
                Event::Notified(i, at) if *i == id => Some(*at),
                _ => None,
            })
            .await?;
        self.wait("cancel: cancellation path", |e| {
            matches!(e, Event::Ended(i) if *i == id).then_some(())
        })
        .await?;
        self.until_done(&id).await?;

        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        self.signal_ms
            .push(ms(notified.saturating_duration_since(called)));
        self.call_ms.push(ms(returned.duration_since(called)));
        Ok(())
    }

    /// The first event `pick` accepts (others are stale: dropped).
    async fn wait<T>(
        &mut self,
        what: &str,
        pick: impl Fn(&Event) -> Option<T>,
    ) -> Result<T, BenchError> {
        let deadline = self.deadline;
        let received = &mut *self.received;
        let found = tokio::time::timeout_at(deadline, async {
            while let Some(event) = received.recv().await {
                if let Some(found) = pick(&event) {
                    return Some(found);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(BenchError::Raw(format!(
                "{what}: the handlers' channel closed"
            ))),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    /// Re-reads the task until its outcome is stored.
    async fn until_done(&self, id: &str) -> Result<(), BenchError> {
        loop {
            if let Some(task) = self.worker.get_task(id).await?
                && task.is_done()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= self.deadline {
                return Err(self.timed_out("cancel: outcome stored"));
            }
            tokio::time::sleep(DONE_POLL).await;
        }
    }

    fn timed_out(&self, what: &str) -> BenchError {
        BenchError::Timeout {
            scenario: what.to_owned(),
            done: self.signal_ms.len() as u64,
            expected: self.expected,
            seconds: self.timeout.as_secs(),
        }
    }
}

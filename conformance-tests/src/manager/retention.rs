//! Retention: finished tasks become tombstones that keep their id, and
//! tombstones go after their own period; pruners never touch unfinished
//! tasks, never delete twice, and leave alone what changed since they read it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use oncetask_core::lifecycle;
use oncetask_core::manager::{HandlerOptions, Manager, PrunePlan, Retention, handler_fn};
use oncetask_core::store::{Change, FinishedQuery, Forward, Swap};
use oncetask_core::{CreateStatus, Error, Store, StoreError, Task, TaskStatus};

use super::{ENV, Job, create, manual, register_ok};
use crate::StoreFactory;
use crate::support::TaskBuilder;

const KIND: &str = "send_receipt";
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A pruned task answers "already exists", reads back as a tombstone, and
/// can be neither cancelled nor reset; deleting it drops its idempotency.
pub async fn a_pruned_task_keeps_its_id_and_refuses_cancel_and_reset(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    register_ok(
        &h.manager,
        KIND,
        HandlerOptions::default().retention(Retention::default().completed(HOUR)),
    );
    create(&h.manager, &Job::new(KIND, "r1").key("acct-1").n(7)).await;
    h.drain(KIND).await;
    let finished = h.kit.assert_completed("r1").await;

    h.advance(HOUR - Duration::from_secs(1));
    let report = h
        .manager
        .prune(PrunePlan::configured())
        .await
        .expect("prune");
    assert_eq!(report.total().tombstoned, 0, "kept for an hour");
    h.advance(Duration::from_secs(1));
    let report = h
        .manager
        .prune(PrunePlan::configured())
        .await
        .expect("prune");
    assert_eq!(report.kinds[KIND].tombstoned, 1, "{report:?}");

    let tombstone = h.task("r1").await;
    assert!(tombstone.is_tombstone());
    assert!(tombstone.data.is_empty() && tombstone.result.is_none());
    assert_eq!(tombstone.status(h.clock.now()), TaskStatus::Completed);
    assert_eq!(tombstone.resource_key.as_deref(), Some("acct-1"));
    assert_eq!(tombstone.done_at, finished.done_at);

    let again = h
        .manager
        .create(&Job::new(KIND, "r1").n(8))
        .await
        .expect("create");
    assert_eq!(again, CreateStatus::AlreadyExists);
    assert!(matches!(
        h.manager.cancel("r1").await,
        Err(Error::Pruned { .. })
    ));
    assert!(matches!(
        h.manager.reset("r1").await,
        Err(Error::Pruned { .. })
    ));
    assert!(h.manager.process_next(KIND).await.expect("claim").is_none());

    h.manager.delete("r1").await.expect("delete");
    let again = h
        .manager
        .create(&Job::new(KIND, "r1").n(9))
        .await
        .expect("create");
    assert_eq!(
        again,
        CreateStatus::Created,
        "deleting the tombstone dropped idempotency"
    );
}

/// Each status has its own period; tombstones go at theirs; without
/// tombstones tasks go whole; unfinished tasks are never pruned.
pub async fn each_status_has_its_period_and_unfinished_tasks_stay(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    let retention = Retention::default()
        .completed(HOUR)
        .failed(DAY)
        .tombstones_for(2 * DAY);
    h.manager
        .register_dyn(
            KIND,
            handler_fn(|task: Task| async move {
                if task.id.starts_with("fail") {
                    Err(std::io::Error::other("boom"))
                } else {
                    Ok(())
                }
            }),
            HandlerOptions::default().no_retry().retention(retention),
        )
        .expect("register");
    for id in ["ok-1", "fail-1", "cancel-1", "pending-1", "later-1"] {
        let job = Job::new(KIND, id);
        let job = match id {
            "pending-1" | "later-1" => job.at(h.clock.now() + chrono::TimeDelta::days(30)),
            _ => job,
        };
        create(&h.manager, &job).await;
    }
    h.manager.cancel("cancel-1").await.expect("cancel");
    h.drain(KIND).await;
    let plan = || PrunePlan::configured();

    h.advance(2 * HOUR);
    let report = h.manager.prune(plan()).await.expect("prune");
    assert_eq!(
        (report.kinds[KIND].tombstoned, report.kinds[KIND].deleted),
        (1, 0)
    );
    assert!(h.task("ok-1").await.is_tombstone());
    assert!(
        !h.task("fail-1").await.is_tombstone(),
        "failed tasks are kept a day"
    );

    h.advance(DAY);
    let report = h.manager.prune(plan()).await.expect("prune");
    assert_eq!(report.kinds[KIND].tombstoned, 1);
    let failed = h.task("fail-1").await;
    assert!(failed.is_tombstone() && failed.errors.is_empty());
    assert_eq!(failed.status(h.clock.now()), TaskStatus::Failed);

    h.advance(DAY);
    let report = h.manager.prune(plan()).await.expect("prune");
    assert_eq!(
        report.kinds[KIND].deleted, 2,
        "both tombstones are 2 days past their task's finish"
    );
    for id in ["ok-1", "fail-1"] {
        assert!(h.manager.get_task(id).await.expect("get").is_none(), "{id}");
    }
    assert!(
        !h.task("cancel-1").await.is_tombstone(),
        "cancelled: no period"
    );
    for id in ["pending-1", "later-1"] {
        assert_eq!(
            h.status(id).await,
            TaskStatus::Waiting,
            "{id} is not finished"
        );
    }

    // Without tombstones, a task past its period goes whole.
    let whole = Retention::default().cancelled(HOUR).without_tombstones();
    let report = h
        .manager
        .prune(PrunePlan::kind(KIND, whole))
        .await
        .expect("prune");
    assert_eq!(
        (report.kinds[KIND].tombstoned, report.kinds[KIND].deleted),
        (0, 1)
    );
    assert!(h.manager.get_task("cancel-1").await.expect("get").is_none());
}

/// A dry run counts what a pass would do and changes nothing.
pub async fn a_dry_run_counts_and_changes_nothing(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default());
    for i in 0..5 {
        create(&h.manager, &Job::new(KIND, &format!("d{i}"))).await;
    }
    h.drain(KIND).await;
    h.advance(2 * HOUR);
    let retention = Retention::default().completed(HOUR);
    let dry = h
        .manager
        .prune(
            PrunePlan::kind(KIND, retention.clone())
                .dry_run()
                .batch_size(2),
        )
        .await
        .expect("dry run");
    assert!(dry.dry_run);
    assert_eq!(dry.kinds[KIND].tombstoned, 5);
    for i in 0..5 {
        assert!(
            !h.task(&format!("d{i}")).await.is_tombstone(),
            "nothing written"
        );
    }
    let real = h
        .manager
        .prune(PrunePlan::kind(KIND, retention).batch_size(2))
        .await
        .expect("prune");
    assert_eq!(real.kinds[KIND].tombstoned, 5, "in batches of 2");
}

/// Three pruners at once over finished and unfinished tasks: every finished
/// task is tombstoned once and later deleted once, between them; every
/// unfinished one is left exactly as it was.
pub async fn concurrent_pruners_never_delete_twice_nor_touch_unfinished_tasks(
    factory: &impl StoreFactory,
) {
    let h = manual(factory).await;
    let start = h.clock.now();
    let old = start - chrono::TimeDelta::days(10);
    let mut tasks = Vec::new();
    for i in 0..30 {
        let status = [
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ][i % 3];
        let mut task = TaskBuilder::new(&format!("done-{i:02}"))
            .kind(KIND)
            .env(ENV)
            .created_at(old)
            .finished(status, old + chrono::TimeDelta::seconds(i as i64))
            .build();
        task.version = oncetask_core::task::initial_version();
        tasks.push(task);
    }
    let mut unfinished = Vec::new();
    for i in 0..10 {
        let mut builder = TaskBuilder::new(&format!("open-{i:02}"))
            .kind(KIND)
            .env(ENV)
            .created_at(old);
        if i % 2 == 0 {
            builder = builder.leased_until(old + chrono::TimeDelta::minutes(5));
        }
        let task = builder.build();
        unfinished.push(task.clone());
        tasks.push(task);
    }
    crate::support::seed(&h.store, tasks).await;
    let before: Vec<Task> =
        futures::future::join_all(unfinished.iter().map(|t| h.task(&t.id))).await;

    let retention = Retention::default().finished(DAY).tombstones_for(3 * DAY);
    let pruners: Vec<Manager> = (0..3).map(|_| h.peer(ENV, false)).collect();
    let pass = |plan: PrunePlan| {
        futures::future::join_all(pruners.iter().map(move |m| {
            let plan = plan.clone();
            async move { m.prune(plan).await.expect("prune").kinds[KIND] }
        }))
    };
    let plan = PrunePlan::kind(KIND, retention).batch_size(4);

    // Finished 10 days ago, tombstones kept 3 days: deleted whole at once.
    let counts = pass(plan.clone()).await;
    let deleted: u64 = counts.iter().map(|c| c.deleted).sum();
    let tombstoned: u64 = counts.iter().map(|c| c.tombstoned).sum();
    assert_eq!((tombstoned, deleted), (0, 30), "{counts:?}");

    for (task, stored) in unfinished.iter().zip(&before) {
        assert_eq!(&h.task(&task.id).await, stored, "{} untouched", task.id);
    }
    let left = h.manager.find(h.manager.filter()).await.expect("find");
    assert_eq!(left.len(), 10, "only the unfinished tasks are left");

    // Finish them all now, then prune in two phases with three pruners.
    for task in &unfinished {
        let stored = h.task(&task.id).await;
        let mut done = stored.clone();
        done.done_at = Some(h.clock.now());
        done.outcome = Some(oncetask_core::Outcome::Completed);
        done.attempts = 1;
        done.version = stored.version.wrapping_add(1);
        let outcomes = h
            .store
            .swap(&[Swap::new(&stored, Change::Outcome, &done)])
            .await
            .expect("swap");
        assert!(matches!(
            outcomes[0],
            oncetask_core::store::SwapOutcome::Applied { .. }
        ));
    }
    h.advance(2 * DAY);
    let counts = pass(plan.clone()).await;
    let tombstoned: u64 = counts.iter().map(|c| c.tombstoned).sum();
    assert_eq!(tombstoned, 10, "each tombstoned once: {counts:?}");
    h.advance(2 * DAY);
    let counts = pass(plan).await;
    let deleted: u64 = counts.iter().map(|c| c.deleted).sum();
    assert_eq!(deleted, 10, "each deleted once: {counts:?}");
    assert!(
        h.manager
            .find(h.manager.filter())
            .await
            .expect("find")
            .is_empty()
    );
}

/// A store that resets every task a pruner read, between its read and its
/// write (as an operator's reset racing the pruner would).
struct ResetAfterRead {
    inner: Arc<dyn Store>,
}

#[async_trait]
impl Forward for ResetAfterRead {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }

    async fn find_finished(&self, query: &FinishedQuery) -> Result<Vec<Task>, StoreError> {
        let found = self.inner.find_finished(query).await?;
        for task in &found {
            let reset =
                lifecycle::reset(task).map_err(|r| StoreError::backend(format!("{r:?}")))?;
            self.inner
                .swap(&[Swap::new(task, Change::Reset, &reset)])
                .await?;
        }
        Ok(found)
    }
}

/// A task reset after the pruner read it is left alone: the pruner's write
/// is fenced and the retention checked again on the stored task.
pub async fn a_task_reset_after_the_pruner_read_it_is_left_alone(factory: &impl StoreFactory) {
    let h = manual(factory).await;
    register_ok(&h.manager, KIND, HandlerOptions::default());
    create(&h.manager, &Job::new(KIND, "raced").n(3)).await;
    h.drain(KIND).await;
    h.advance(2 * HOUR);
    let racing = Manager::builder(Arc::new(ResetAfterRead {
        inner: Arc::new(h.store.clone()),
    }))
    .env(ENV)
    .clock(Arc::new(h.clock.clone()))
    .start_workers(false)
    .accept_any_kind()
    .build();
    let report = racing
        .prune(PrunePlan::kind(KIND, Retention::default().completed(HOUR)))
        .await
        .expect("prune");
    assert_eq!(
        (report.kinds[KIND].tombstoned, report.kinds[KIND].skipped),
        (0, 1),
        "{report:?}"
    );
    let task = h.task("raced").await;
    assert!(!task.is_tombstone());
    assert_eq!(
        task.status(h.clock.now()),
        TaskStatus::Pending,
        "reset, not pruned"
    );
    assert_eq!(task.data.get("n"), Some(&serde_json::json!(3)));
}

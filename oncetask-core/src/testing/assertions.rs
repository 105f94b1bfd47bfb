//! Assertions on what was enqueued and how it ended, with messages that show
//! what was found instead.
//!
//! Each `assert_*` panics with the message of its `check_*` twin, which
//! returns it as an [`AssertionError`] instead.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::status::TaskStatus;
use crate::task::Task;
use crate::testing::TestKit;

/// A failed kit assertion; its text says what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AssertionError(String);

impl AssertionError {
    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

fn describe(task: &Task, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut line = format!(
        "{} [{}] attempts {} data {}",
        task.id,
        task.status(now),
        task.attempts,
        Value::Object(task.data.clone())
    );
    if let Some(last) = task.errors.last() {
        line.push_str(&format!(" last error {:?}", last.error));
    }
    line
}

fn list(tasks: &[Task], now: chrono::DateTime<chrono::Utc>) -> String {
    if tasks.is_empty() {
        return "  (none)".to_owned();
    }
    tasks
        .iter()
        .map(|t| format!("  - {}", describe(t, now)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn fail<T>(result: Result<T, AssertionError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{e}"),
    }
}

impl TestKit {
    /// Every task of `kind` in the kit's environment, oldest first.
    pub async fn tasks_of_kind(&self, kind: &str) -> Vec<Task> {
        let mut filter = self.manager().filter();
        filter.kind = Some(kind.to_owned());
        match self.manager().find(filter).await {
            Ok(tasks) => tasks,
            Err(e) => panic!("cannot list tasks of kind {kind:?}: {e}"),
        }
    }

    /// The tasks of `kind` whose data decodes as `T` and satisfies `matches`
    /// (whatever their status); `times` checks how many there must be
    /// (`None`: at least one).
    pub async fn check_enqueued<T: DeserializeOwned>(
        &self,
        kind: &str,
        matches: impl Fn(&T) -> bool,
        times: Option<usize>,
    ) -> Result<Vec<Task>, AssertionError> {
        let all = self.tasks_of_kind(kind).await;
        let found: Vec<Task> = all
            .iter()
            .filter(|t| {
                serde_json::from_value::<T>(Value::Object(t.data.clone()))
                    .is_ok_and(|data| matches(&data))
            })
            .cloned()
            .collect();
        let ok = match times {
            None => !found.is_empty(),
            Some(n) => found.len() == n,
        };
        if ok {
            return Ok(found);
        }
        let wanted = match times {
            None => "at least one task".to_owned(),
            Some(1) => "exactly 1 task".to_owned(),
            Some(n) => format!("exactly {n} tasks"),
        };
        Err(AssertionError(format!(
            "expected {wanted} of kind {kind:?} matching the predicate, found {}.\n\
             Tasks of that kind:\n{}",
            found.len(),
            list(&all, self.now())
        )))
    }

    /// Asserts a task of `kind` with data matching `matches` was enqueued;
    /// returns the first match.
    pub async fn assert_enqueued<T: DeserializeOwned>(
        &self,
        kind: &str,
        matches: impl Fn(&T) -> bool,
    ) -> Task {
        let found = fail(self.check_enqueued(kind, matches, None).await);
        match found.into_iter().next() {
            Some(task) => task,
            None => panic!("expected a task of kind {kind:?} matching the predicate"),
        }
    }

    /// [`TestKit::assert_enqueued`] for a [`TaskArgs`](crate::TaskArgs)
    /// type: the kind is `A::KIND`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use oncetask_core::testing::TestKit;
    /// # use oncetask_core::{Store, TaskArgs};
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Receipt { order: u64 }
    /// impl TaskArgs for Receipt {
    ///     const KIND: &'static str = "send_receipt";
    ///     fn idempotent_id(&self) -> String { format!("receipt-{}", self.order) }
    /// }
    /// # async fn demo(store: Arc<dyn Store>) {
    /// let kit = TestKit::builder(store).configure(|b| b.declare::<Receipt>()).build();
    /// kit.manager().create(&Receipt { order: 42 }).await.unwrap();
    /// let task = kit.assert_enqueued_args(|r: &Receipt| r.order == 42).await;
    /// assert_eq!(task.id, "receipt-42");
    /// # }
    /// ```
    pub async fn assert_enqueued_args<A: crate::TaskArgs>(
        &self,
        matches: impl Fn(&A) -> bool,
    ) -> Task {
        self.assert_enqueued(A::KIND, matches).await
    }

    /// Asserts exactly `n` tasks of `kind` with matching data were enqueued.
    pub async fn assert_enqueued_times<T: DeserializeOwned>(
        &self,
        kind: &str,
        matches: impl Fn(&T) -> bool,
        n: usize,
    ) -> Vec<Task> {
        fail(self.check_enqueued(kind, matches, Some(n)).await)
    }

    /// Asserts no task of `kind` with matching data was enqueued.
    pub async fn refute_enqueued<T: DeserializeOwned>(
        &self,
        kind: &str,
        matches: impl Fn(&T) -> bool,
    ) {
        fail(self.check_enqueued(kind, matches, Some(0)).await);
    }

    /// The task `id`, which must have `status` now.
    pub async fn check_status(&self, id: &str, status: TaskStatus) -> Result<Task, AssertionError> {
        let task = match self.manager().get_task(id).await {
            Ok(Some(task)) => task,
            Ok(None) => {
                return Err(AssertionError(format!(
                    "task {id}: expected {status}, but there is no such task"
                )));
            }
            Err(e) => return Err(AssertionError(format!("task {id}: cannot be read: {e}"))),
        };
        let now = self.now();
        let actual = task.status(now);
        if actual == status {
            return Ok(task);
        }
        let errors: Vec<&str> = task.errors.iter().map(|e| e.error.as_str()).collect();
        Err(AssertionError(format!(
            "task {id}: expected {status}, was {actual} after {} attempt(s); errors: {errors:?}",
            task.attempts
        )))
    }

    /// Asserts task `id` has `status`; returns it for further checks.
    pub async fn assert_status(&self, id: &str, status: TaskStatus) -> Task {
        fail(self.check_status(id, status).await)
    }

    /// Asserts task `id` completed.
    pub async fn assert_completed(&self, id: &str) -> Task {
        self.assert_status(id, TaskStatus::Completed).await
    }

    /// Asserts task `id` failed permanently.
    pub async fn assert_failed(&self, id: &str) -> Task {
        self.assert_status(id, TaskStatus::Failed).await
    }

    /// Asserts task `id` was cancelled (and its cancellation path finished).
    pub async fn assert_cancelled(&self, id: &str) -> Task {
        self.assert_status(id, TaskStatus::Cancelled).await
    }

    /// Nothing is left to run now: no task is pending, leased or waiting for
    /// its cancellation path (tasks scheduled for later may remain).
    pub async fn check_idle(&self) -> Result<(), AssertionError> {
        // Every open task, sorted out here: every store serves that listing
        // (Firestore does not list pending or leased tasks apart).
        let filter = self.manager().filter().not_done();
        let now = filter.now;
        let open: Vec<Task> = match self.manager().find(filter).await {
            Ok(open) => open
                .into_iter()
                .filter(|t| t.status(now) != TaskStatus::Waiting)
                .collect(),
            Err(e) => return Err(AssertionError(format!("cannot list tasks: {e}"))),
        };
        if open.is_empty() {
            return Ok(());
        }
        Err(AssertionError(format!(
            "expected no pending, leased or cancellation-pending tasks, found {}:\n{}",
            open.len(),
            list(&open, self.now())
        )))
    }

    /// Asserts nothing is left pending or leased.
    pub async fn assert_idle(&self) {
        fail(self.check_idle().await)
    }
}

//! The task a handler is running, available to code inside the handler
//! (Go's `GetCurrentTaskID` / `GetCurrentTaskResourceKey`).
//!
//! Every `tracing` event emitted inside a handler also carries the fields
//! `task_id`, `resource_key` and `kind` through the `oncetask.handler` span.

use std::future::Future;

tokio::task_local! {
    static CURRENT: CurrentTask;
}

/// Identity of the task (or group) a handler is processing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentTask {
    /// The task id; for a group handler only when the group has one task.
    pub task_id: Option<String>,
    /// The resource key (of the first task of a group).
    pub resource_key: Option<String>,
    /// The task kind.
    pub kind: String,
}

/// The id of the task the calling handler is processing, if any.
///
/// ```
/// // Outside a handler there is none.
/// assert_eq!(oncetask_core::manager::current_task_id(), None);
/// ```
pub fn current_task_id() -> Option<String> {
    CURRENT.try_with(|c| c.task_id.clone()).ok().flatten()
}

/// The resource key of the task the calling handler is processing, if any.
pub fn current_resource_key() -> Option<String> {
    CURRENT.try_with(|c| c.resource_key.clone()).ok().flatten()
}

/// Runs `fut` with `current` as the current task, inside a tracing span that
/// carries its fields.
pub(crate) async fn scope<F: Future>(current: CurrentTask, fut: F) -> F::Output {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "oncetask.handler",
        kind = %current.kind,
        task_id = tracing::field::Empty,
        resource_key = tracing::field::Empty,
    );
    if let Some(id) = &current.task_id {
        span.record("task_id", id.as_str());
    }
    if let Some(key) = &current.resource_key {
        span.record("resource_key", key.as_str());
    }
    CURRENT.scope(current, fut.instrument(span)).await
}

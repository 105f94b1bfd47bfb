//! Handler traits and closure adapters.

use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::error::HandlerError;
use crate::task::Task;

/// What a handler returns: an optional JSON result on success.
pub type HandlerResult = Result<Option<Value>, HandlerError>;

/// Processes one task. Returning `Err` fails the attempt; the retry policy decides what follows.
#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    /// Runs the task.
    async fn handle(&self, task: Task) -> HandlerResult;
}

/// Processes every ready task of one resource key in one call (Go's
/// `ResourceKeyHandler`). Success completes them all; failure fails them all.
#[async_trait]
pub trait GroupHandler: Send + Sync + 'static {
    /// Runs the group, ordered by `wait_until`.
    async fn handle(&self, tasks: Vec<Task>) -> HandlerResult;
}

/// A [`TaskHandler`] or [`GroupHandler`] made from an async closure; see [`handler_fn`] and [`group_handler_fn`].
pub struct FnHandler<F, R, E> {
    f: F,
    _types: PhantomData<fn() -> (R, E)>,
}

/// Turns `async |task| -> Result<R, E>` into a [`TaskHandler`]. `R` is any
/// serializable value (`()` stores no result); `E` is any error.
///
/// ```
/// use oncetask_core::manager::handler_fn;
/// let handler = handler_fn(|task: oncetask_core::Task| async move {
///     println!("sending {}", task.id);
///     Ok::<_, std::io::Error>(())
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn<F, Fut, R, E>(f: F) -> FnHandler<F, R, E>
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    FnHandler {
        f,
        _types: PhantomData,
    }
}

/// Turns `async |tasks| -> Result<R, E>` into a [`GroupHandler`].
pub fn group_handler_fn<F, Fut, R, E>(f: F) -> FnHandler<F, R, E>
where
    F: Fn(Vec<Task>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    FnHandler {
        f,
        _types: PhantomData,
    }
}

/// Encodes a handler's value; a value that cannot be stored fails the attempt
/// instead of failing every completion write (Go W20).
fn into_result<R: Serialize, E>(out: Result<R, E>) -> HandlerResult
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let value = out.map_err(HandlerError::new)?;
    match serde_json::to_value(value) {
        Ok(Value::Null) => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(e) => Err(HandlerError::msg(format!(
            "handler result cannot be encoded as JSON: {e}"
        ))),
    }
}

#[async_trait]
impl<F, Fut, R, E> TaskHandler for FnHandler<F, R, E>
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    async fn handle(&self, task: Task) -> HandlerResult {
        into_result((self.f)(task).await)
    }
}

#[async_trait]
impl<F, Fut, R, E> GroupHandler for FnHandler<F, R, E>
where
    F: Fn(Vec<Task>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    async fn handle(&self, tasks: Vec<Task>) -> HandlerResult {
        into_result((self.f)(tasks).await)
    }
}

/// The built-in cancellation path when no cancellation handler is set: succeeds at once.
pub(crate) struct NoopCancellation;

#[async_trait]
impl TaskHandler for NoopCancellation {
    async fn handle(&self, _task: Task) -> HandlerResult {
        Ok(None)
    }
}

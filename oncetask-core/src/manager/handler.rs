//! What a handler is: a typed [`Handler`] (or [`GroupHandler`]) of a
//! payload type, what it returns ([`HandlerOutcome`]), and the closure
//! adapters for handlers of the raw [`Task`].

use std::future::Future;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::data::TaskArgs;
use crate::error::{HandlerError, PayloadError};
use crate::lifecycle::RunResult;
use crate::manager::TaskContext;
use crate::snooze::Snooze;
use crate::task::Task;

/// How a handler's run ended.
///
/// Closure handlers return a `Result<R, E>` (any serializable `R`, any
/// error `E`) and never name this type; a handler written as a struct
/// returns it, usually through [`IntoOutcome::into_outcome`]. New ways to
/// end a run may be new variants, so it is `#[non_exhaustive]`.
///
/// ```
/// use std::time::Duration;
/// use oncetask_core::manager::{HandlerOutcome, IntoOutcome};
/// let done = Ok::<_, std::io::Error>(42).into_outcome();
/// assert!(matches!(done, HandlerOutcome::Completed(Some(_))));
/// let failed = HandlerOutcome::failed_permanently("the account was closed");
/// assert!(matches!(failed, HandlerOutcome::Failed(e) if e.is_permanent()));
/// let later = HandlerOutcome::snooze(Duration::from_secs(60));
/// assert!(matches!(later, HandlerOutcome::Snoozed(_)));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum HandlerOutcome {
    /// The task is done, with an optional result stored on it.
    Completed(Option<Value>),
    /// The attempt failed: the retry policy decides what follows, unless
    /// the error is [permanent](HandlerError::permanent).
    Failed(HandlerError),
    /// Run the task again later: the lease is given back, the attempt is
    /// not counted, no error is recorded and the backoff is unchanged; the
    /// task's [`snoozes`](Task::snoozes) count goes up. For a group
    /// handler, the whole group is snoozed. A task cancelled while the
    /// handler ran takes its cancellation path at once instead.
    Snoozed(Snooze),
}

impl HandlerOutcome {
    /// Done, with no result.
    pub fn completed() -> Self {
        Self::Completed(None)
    }

    /// The attempt failed; the retry policy decides.
    pub fn failed(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Failed(HandlerError::new(error))
    }

    /// The task fails now, whatever the retry policy.
    pub fn failed_permanently(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Failed(HandlerError::permanent(error))
    }

    /// Run the task again `delay` after this run ends, without counting
    /// the attempt ([`HandlerOutcome::Snoozed`]).
    pub fn snooze(delay: std::time::Duration) -> Self {
        Self::Snoozed(Snooze::after(delay))
    }

    /// Run the task again at `at` (at once if it is not in the future),
    /// without counting the attempt ([`HandlerOutcome::Snoozed`]).
    pub fn snooze_until(at: chrono::DateTime<chrono::Utc>) -> Self {
        Self::Snoozed(Snooze::until(at))
    }

    /// What the core records for a run that ended at `now`: a snooze
    /// beyond [`MAX_SNOOZE`](crate::MAX_SNOOZE) becomes a failed attempt
    /// with a [`SnoozeTooFar`](crate::SnoozeTooFar) error.
    pub(crate) fn into_run(self, now: chrono::DateTime<chrono::Utc>) -> RunResult {
        match self {
            Self::Completed(value) => RunResult::Completed(value),
            Self::Failed(error) => RunResult::Failed(error),
            Self::Snoozed(snooze) => match snooze.resolve(now) {
                Ok(at) => RunResult::Snoozed(at),
                Err(too_far) => RunResult::Failed(HandlerError::new(too_far)),
            },
        }
    }
}

/// Anything a handler may return: a [`HandlerOutcome`], or a `Result<R, E>`
/// whose `R` is stored as the task's result (`()` stores none) and whose
/// `E` fails the attempt (a [`HandlerError`] is kept as is, so
/// `Err(HandlerError::permanent(..))` fails the task at once; an `E` that
/// is a [`Snooze`] snoozes the task instead).
pub trait IntoOutcome {
    /// Converts into the outcome the core records.
    fn into_outcome(self) -> HandlerOutcome;
}

impl IntoOutcome for HandlerOutcome {
    fn into_outcome(self) -> HandlerOutcome {
        self
    }
}

impl<R, E> IntoOutcome for Result<R, E>
where
    R: Serialize,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A value that cannot be stored as JSON fails the attempt instead of
    /// failing every completion write (docs/semantics.md W20).
    fn into_outcome(self) -> HandlerOutcome {
        match self.map(|r| serde_json::to_value(r)) {
            Ok(Ok(Value::Null)) => HandlerOutcome::Completed(None),
            Ok(Ok(value)) => HandlerOutcome::Completed(Some(value)),
            Ok(Err(e)) => HandlerOutcome::Failed(HandlerError::msg(format!(
                "handler result cannot be encoded as JSON: {e}"
            ))),
            Err(e) => match e.into().downcast::<Snooze>() {
                Ok(snooze) => HandlerOutcome::Snoozed(*snooze),
                Err(e) => HandlerOutcome::failed(e),
            },
        }
    }
}

/// What a handler receives as its argument: a [`TaskArgs`] type decoded from
/// the stored payload, or the raw [`Task`] (for kinds chosen at run time).
pub trait FromTask: Sized + Send + 'static {
    /// Builds the argument from the claimed task. An `Err` fails the task
    /// (a [permanent](HandlerError::permanent) one at once).
    fn from_task(task: &Task) -> Result<Self, HandlerError>;
}

impl FromTask for Task {
    fn from_task(task: &Task) -> Result<Self, HandlerError> {
        Ok(task.clone())
    }
}

impl<T: TaskArgs> FromTask for T {
    /// A payload that does not decode fails the task permanently with a
    /// [`PayloadError`] naming the type: a retry would read the same bytes.
    fn from_task(task: &Task) -> Result<Self, HandlerError> {
        let decoded = T::deserialize(&task.data).or_else(|e| {
            // A payload that serializes to `null` (a unit struct) is
            // stored as an empty object.
            if task.data.is_empty() {
                T::deserialize(&Value::Null).map_err(|_| e)
            } else {
                Err(e)
            }
        });
        decoded.map_err(|e| HandlerError::permanent(PayloadError::new::<T>(task.id.clone(), e)))
    }
}

/// Processes one task: its decoded argument and its [`TaskContext`].
///
/// An async closure `|args: A, cx: TaskContext| async move { … }` returning
/// anything [`IntoOutcome`] (usually `Result<R, E>`) is a handler; a struct
/// implements the trait (with `#[async_trait]`):
///
/// ```
/// use oncetask_core::async_trait;
/// use oncetask_core::manager::{Handler, HandlerOutcome, IntoOutcome, TaskContext};
/// use oncetask_core::TaskArgs;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendEmail { to: String }
/// impl TaskArgs for SendEmail {
///     const KIND: &'static str = "send_email";
///     fn idempotent_id(&self) -> String { format!("email-{}", self.to) }
/// }
///
/// struct Mailer { from: String }
///
/// #[async_trait]
/// impl Handler<SendEmail> for Mailer {
///     async fn handle(&self, email: SendEmail, cx: TaskContext) -> HandlerOutcome {
///         println!("{} -> {} (attempt {})", self.from, email.to, cx.attempt);
///         Ok::<_, std::io::Error>(()).into_outcome()
///     }
/// }
/// ```
#[async_trait]
pub trait Handler<A>: Send + Sync + 'static {
    /// Runs the task.
    async fn handle(&self, args: A, cx: TaskContext) -> HandlerOutcome;
}

#[async_trait]
impl<A, F, Fut> Handler<A> for F
where
    A: Send + 'static,
    F: Fn(A, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoOutcome,
{
    async fn handle(&self, args: A, cx: TaskContext) -> HandlerOutcome {
        (self)(args, cx).await.into_outcome()
    }
}

/// Processes every ready task of one resource key in one call (Go's
/// `ResourceKeyHandler`), ordered by due time. The outcome applies to them
/// all. Closures `|items: Vec<(A, TaskContext)>| async move { … }` are
/// group handlers.
#[async_trait]
pub trait GroupHandler<A>: Send + Sync + 'static {
    /// Runs the group.
    async fn handle(&self, items: Vec<(A, TaskContext)>) -> HandlerOutcome;
}

#[async_trait]
impl<A, F, Fut> GroupHandler<A> for F
where
    A: Send + 'static,
    F: Fn(Vec<(A, TaskContext)>) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoOutcome,
{
    async fn handle(&self, items: Vec<(A, TaskContext)>) -> HandlerOutcome {
        (self)(items).await.into_outcome()
    }
}

/// Turns `async |task: Task| -> Result<R, E>` into a [`Handler<Task>`], for
/// kinds registered with [`Manager::register_dyn`](crate::Manager::register_dyn).
///
/// ```
/// use oncetask_core::manager::handler_fn;
/// let handler = handler_fn(|task: oncetask_core::Task| async move {
///     println!("sending {}", task.id);
///     Ok::<_, std::io::Error>(())
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> impl Handler<Task>
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoOutcome,
{
    move |task: Task, _cx: TaskContext| f(task)
}

/// Turns `async |tasks: Vec<Task>| -> Result<R, E>` into a
/// [`GroupHandler<Task>`].
pub fn group_handler_fn<F, Fut>(f: F) -> impl GroupHandler<Task>
where
    F: Fn(Vec<Task>) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoOutcome,
{
    move |items: Vec<(Task, TaskContext)>| f(items.into_iter().map(|(task, _)| task).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::task;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ping;

    impl TaskArgs for Ping {
        const KIND: &'static str = "ping";
        fn idempotent_id(&self) -> String {
            "ping".into()
        }
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Pong {
        n: u32,
    }

    impl TaskArgs for Pong {
        const KIND: &'static str = "pong";
        fn idempotent_id(&self) -> String {
            format!("pong-{}", self.n)
        }
    }

    #[test]
    fn a_unit_payload_stored_as_an_empty_object_decodes() {
        assert_eq!(Ping::from_task(&task("p")).ok(), Some(Ping));
    }

    #[test]
    fn a_payload_of_another_shape_is_a_permanent_error_naming_the_type() {
        let error = Pong::from_task(&task("p")).expect_err("no n");
        assert!(error.is_permanent());
        let payload = error.downcast_ref::<PayloadError>().expect("typed");
        assert_eq!(payload.id, "p");
        assert!(payload.type_name.ends_with("Pong"), "{}", payload.type_name);
    }

    #[test]
    fn a_handler_error_returned_as_is_keeps_being_permanent() {
        let outcome = Err::<(), _>(HandlerError::permanent("closed")).into_outcome();
        assert!(matches!(outcome, HandlerOutcome::Failed(e) if e.is_permanent()));
        let outcome = Err::<(), _>(std::io::Error::other("flaky")).into_outcome();
        assert!(matches!(outcome, HandlerOutcome::Failed(e) if !e.is_permanent()));
    }

    #[test]
    fn results_become_json_and_unit_stores_none() {
        assert!(matches!(
            Ok::<_, std::io::Error>(()).into_outcome(),
            HandlerOutcome::Completed(None)
        ));
        let nan = Ok::<_, std::io::Error>(f64::NAN).into_outcome();
        // NaN is JSON null: stored as no result.
        assert!(matches!(nan, HandlerOutcome::Completed(None)));
        let bad = Ok::<_, std::io::Error>(std::collections::HashMap::from([((1, 2), 3)]));
        assert!(matches!(bad.into_outcome(), HandlerOutcome::Failed(_)));
    }
}

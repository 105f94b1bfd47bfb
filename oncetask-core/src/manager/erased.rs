//! The registry's one form of every handler: typed handlers, group handlers
//! and cancellation handlers all become a [`Start`] that turns the claimed
//! tasks into the handler's future. Arguments are decoded from the tasks as
//! held, so a typed handler's run copies no task.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::error::HandlerError;
use crate::manager::TaskContext;
use crate::manager::handler::{FromTask, GroupHandler, Handler, HandlerResult};
use crate::task::Task;

/// Starts a handler on the tasks of one run.
pub(crate) trait Start: Send + Sync {
    /// The handler's future; decoding failures become its error.
    fn start(&self, tasks: &[Task]) -> BoxFuture<'static, HandlerResult>;
}

/// A [`Handler`] of one task.
pub(crate) struct One<A, H> {
    handler: Arc<H>,
    args: PhantomData<fn() -> A>,
}

impl<A, H> One<A, H> {
    pub(crate) fn new(handler: H) -> Self {
        Self {
            handler: Arc::new(handler),
            args: PhantomData,
        }
    }
}

impl<A: FromTask, H: Handler<A>> Start for One<A, H> {
    fn start(&self, tasks: &[Task]) -> BoxFuture<'static, HandlerResult> {
        let [task] = tasks else {
            let error = HandlerError::msg(format!("expected 1 task, got {}", tasks.len()));
            return futures::future::ready(Err(error)).boxed();
        };
        match decode::<A>(task) {
            Ok(args) => {
                let cx = TaskContext::of(task);
                let handler = self.handler.clone();
                async move { handler.handle(args, cx).await.into_result() }.boxed()
            }
            Err(error) => futures::future::ready(Err(error)).boxed(),
        }
    }
}

/// A [`GroupHandler`]: the whole group, or its first undecodable task's
/// error for all of them (one outcome covers the group).
pub(crate) struct Group<A, H> {
    handler: Arc<H>,
    args: PhantomData<fn() -> A>,
}

impl<A, H> Group<A, H> {
    pub(crate) fn new(handler: H) -> Self {
        Self {
            handler: Arc::new(handler),
            args: PhantomData,
        }
    }
}

impl<A: FromTask, H: GroupHandler<A>> Start for Group<A, H> {
    fn start(&self, tasks: &[Task]) -> BoxFuture<'static, HandlerResult> {
        let items: Result<Vec<(A, TaskContext)>, HandlerError> = tasks
            .iter()
            .map(|task| Ok((decode::<A>(task)?, TaskContext::of(task))))
            .collect();
        match items {
            Ok(items) => {
                let handler = self.handler.clone();
                async move { handler.handle(items).await.into_result() }.boxed()
            }
            Err(error) => futures::future::ready(Err(error)).boxed(),
        }
    }
}

/// The cancellation path of a kind without a cancellation handler:
/// succeeds at once.
pub(crate) struct Noop;

impl Start for Noop {
    fn start(&self, _tasks: &[Task]) -> BoxFuture<'static, HandlerResult> {
        futures::future::ready(Ok(None)).boxed()
    }
}

/// [`FromTask::from_task`], with a panic in the payload's own decoding
/// turned into a permanent error like any other undecodable payload.
fn decode<A: FromTask>(task: &Task) -> Result<A, HandlerError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| A::from_task(task))).unwrap_or_else(|_| {
        Err(HandlerError::permanent(format!(
            "task {}: decoding its payload as {} panicked",
            task.id,
            std::any::type_name::<A>()
        )))
    })
}

/// Type-erased handler kept by a registration.
pub(crate) type Erased = Arc<dyn Start>;

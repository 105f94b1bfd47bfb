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
use crate::manager::handler::{FromTask, GroupHandler, Handler, HandlerOutcome, IntoOutcome};
use crate::manager::running::CancelSignal;
use crate::manager::worker::panic_message;
use crate::task::Task;

/// Starts a handler on the tasks of one run.
pub(crate) trait Start: Send + Sync {
    /// The handler's future on the tasks whose arguments could be built;
    /// `signals[i]` tells the handler of `tasks[i]` of a cancel (missing
    /// for a path that cannot be cancelled).
    fn start(&self, tasks: &[Task], signals: &[CancelSignal]) -> Started;
}

/// A started handler, and the tasks it was not given.
pub(crate) struct Started {
    /// The handler's future; `None` when no task could be handed to it.
    pub(crate) work: Option<BoxFuture<'static, HandlerOutcome>>,
    /// Tasks (by ascending index into the tasks given) whose payload does
    /// not decode, with the error each fails with. A group runs without
    /// them, so one malformed task does not fail its siblings.
    pub(crate) rejected: Vec<(usize, HandlerError)>,
}

impl Started {
    fn run(work: impl std::future::Future<Output = HandlerOutcome> + Send + 'static) -> Self {
        Self {
            work: Some(work.boxed()),
            rejected: Vec::new(),
        }
    }
}

/// A [`Handler`] of one task: a kind's main handler or its cancellation
/// handler (whose context counts the cancellation path's attempts).
pub(crate) struct One<A, H> {
    handler: Arc<H>,
    cancellation: bool,
    args: PhantomData<fn() -> A>,
}

impl<A, H> One<A, H> {
    /// A main handler.
    pub(crate) fn new(handler: H) -> Self {
        Self {
            handler: Arc::new(handler),
            cancellation: false,
            args: PhantomData,
        }
    }

    /// A cancellation handler.
    pub(crate) fn cancellation(handler: H) -> Self {
        Self {
            cancellation: true,
            ..Self::new(handler)
        }
    }
}

impl<A: FromTask, H: Handler<A>> Start for One<A, H> {
    fn start(&self, tasks: &[Task], signals: &[CancelSignal]) -> Started {
        let [task] = tasks else {
            let error = HandlerError::msg(format!("expected 1 task, got {}", tasks.len()));
            return Started::run(futures::future::ready(HandlerOutcome::Failed(error)));
        };
        match decode::<A>(task) {
            Ok(args) => {
                let signal = signals.first().cloned().unwrap_or_default();
                let cx = TaskContext::of_run(task, self.cancellation, signal);
                let handler = self.handler.clone();
                Started::run(async move { handler.handle(args, cx).await.into_outcome() })
            }
            Err(error) => Started {
                work: None,
                rejected: vec![(0, error)],
            },
        }
    }
}

/// A [`GroupHandler`]: the group's tasks that decode, in one call (one
/// outcome covers them); the others are rejected on their own.
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
    fn start(&self, tasks: &[Task], signals: &[CancelSignal]) -> Started {
        let mut items = Vec::with_capacity(tasks.len());
        let mut rejected = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            match decode::<A>(task) {
                Ok(args) => {
                    let signal = signals.get(i).cloned().unwrap_or_default();
                    items.push((args, TaskContext::of_run(task, false, signal)))
                }
                Err(error) => rejected.push((i, error)),
            }
        }
        let work = (!items.is_empty()).then(|| {
            let handler = self.handler.clone();
            async move { handler.handle(items).await.into_outcome() }.boxed()
        });
        Started { work, rejected }
    }
}

/// The cancellation path of a kind without a cancellation handler:
/// succeeds at once.
pub(crate) struct Noop;

impl Start for Noop {
    fn start(&self, _tasks: &[Task], _signals: &[CancelSignal]) -> Started {
        Started::run(futures::future::ready(HandlerOutcome::Completed(None)))
    }
}

/// [`FromTask::from_task`], with a panic in the payload's own decoding
/// turned into a permanent error like any other undecodable payload.
pub(crate) fn decode<A: FromTask>(task: &Task) -> Result<A, HandlerError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| A::from_task(task))).unwrap_or_else(|panic| {
        Err(HandlerError::permanent(format!(
            "task {}: decoding its payload as {} panicked: {}",
            task.id,
            std::any::type_name::<A>(),
            panic_message(panic.as_ref())
        )))
    })
}

/// Type-erased handler kept by a registration.
pub(crate) type Erased = Arc<dyn Start>;

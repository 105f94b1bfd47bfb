//! The spans of a run, captured with a span-recording subscriber.
//!
//! This test has a binary of its own: `tracing` caches whether a callsite is
//! enabled process-wide, computed by the first thread that reaches it, and
//! a test installing its subscriber for its own thread (`set_default`) goes
//! blind when a sibling test on another thread, with no subscriber, reaches
//! the manager's span callsites first.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use oncetask::manager::handler_fn;
use oncetask::testing::TestKit;
use oncetask::{HandlerOptions, MemoryStore, Task, TaskData};
use serde::Serialize;

#[derive(Serialize)]
struct Job {
    id: &'static str,
}

impl TaskData for Job {
    type Kind = &'static str;
    fn kind(&self) -> &'static str {
        "welcome"
    }
    fn idempotent_id(&self) -> String {
        self.id.to_owned()
    }
}

fn start() -> DateTime<Utc> {
    "2025-01-06T09:00:00Z".parse().expect("a time")
}

/// Span names opened during a run.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Ok(mut names) = self.0.lock() {
            names.push(attrs.metadata().name().to_owned());
        }
    }
}

#[tokio::test]
async fn claim_handler_and_outcome_each_run_in_a_span() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans::default();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));

    let kit = TestKit::builder(Arc::new(MemoryStore::new()))
        .start_at(start())
        .build();
    kit.manager()
        .register_dyn(
            "welcome",
            handler_fn(|_t: Task| async { Ok::<_, std::io::Error>(()) }),
            HandlerOptions::default(),
        )
        .expect("register");
    kit.manager()
        .create(&Job { id: "w1" })
        .await
        .expect("create");
    kit.run_until_idle().await;

    let names = spans.0.lock().map(|n| n.clone()).unwrap_or_default();
    let position = |name: &str| names.iter().position(|n| n == name);
    let (claim, handler, outcome) = (
        position("oncetask.claim"),
        position("oncetask.handler"),
        position("oncetask.outcome"),
    );
    assert!(
        claim.is_some() && handler.is_some() && outcome.is_some(),
        "spans opened: {names:?}"
    );
    assert!(
        claim < handler && handler < outcome,
        "in run order: {names:?}"
    );
}

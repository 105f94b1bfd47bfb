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
#[non_exhaustive]
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;

    /// Field values of a span or event, as text.
    #[derive(Default, Clone, Debug)]
    struct Fields(Vec<(String, String)>);

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name().to_owned(), value.to_owned()));
        }
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    /// The span fields seen by one event.
    type EventFields = Vec<(String, String)>;

    /// Records, for every event, the fields of every span around it.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<EventFields>>>);

    impl<S> tracing_subscriber::Layer<S> for Capture
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            id: &tracing::span::Id,
            ctx: Context<'_, S>,
        ) {
            let mut fields = Fields::default();
            attrs.record(&mut fields);
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(fields);
            }
        }

        fn on_record(
            &self,
            id: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            ctx: Context<'_, S>,
        ) {
            if let Some(span) = ctx.span(id)
                && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
            {
                values.record(fields);
            }
        }

        fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
            let mut seen = Vec::new();
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope {
                    if let Some(fields) = span.extensions().get::<Fields>() {
                        seen.extend(fields.0.iter().cloned());
                    }
                }
            }
            if let Ok(mut events) = self.0.lock() {
                events.push(seen);
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn events_inside_a_handler_carry_the_task_fields() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        let _guard = tracing::subscriber::set_default(subscriber);
        let current = CurrentTask {
            task_id: Some("email-ada".into()),
            resource_key: Some("user-ada".into()),
            kind: "send_email".into(),
        };
        let seen = scope(current, async {
            tracing::info!("sending");
            (current_task_id(), current_resource_key())
        })
        .await;
        tracing::info!("outside");
        assert_eq!(seen, (Some("email-ada".into()), Some("user-ada".into())));

        let events = capture.0.lock().map(|e| e.clone()).unwrap_or_default();
        let field = |event: &Vec<(String, String)>, name: &str| {
            event
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(events.len(), 2);
        assert_eq!(field(&events[0], "task_id").as_deref(), Some("email-ada"));
        assert_eq!(
            field(&events[0], "resource_key").as_deref(),
            Some("user-ada")
        );
        assert_eq!(field(&events[0], "kind").as_deref(), Some("send_email"));
        assert!(events[1].is_empty(), "no task fields outside a handler");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn absent_values_are_not_recorded() {
        let capture = Capture::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
        let group = CurrentTask {
            task_id: None,
            resource_key: None,
            kind: "sync".into(),
        };
        scope(group, async { tracing::info!("batch") }).await;
        let events = capture.0.lock().map(|e| e.clone()).unwrap_or_default();
        let names: Vec<&str> = events[0].iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["kind"]);
    }
}

//! What the templates show: one struct per page, every value already a
//! string to print (the templates escape it).

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What every page shows around its content, and what every form carries.
#[derive(Debug, Clone)]
pub(crate) struct Chrome {
    pub(crate) store_label: String,
    pub(crate) env: String,
    pub(crate) read_only: bool,
    /// The mount path, ending with `/`: links start with it.
    pub(crate) base: String,
    pub(crate) csrf: String,
}

/// A rendered page with `status`, or a 500 naming the template error.
pub(crate) fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot render the page: {e}\n"),
        )
            .into_response(),
    }
}

/// A count that links to the tasks it counts.
#[derive(Debug)]
pub(crate) struct Cell {
    pub(crate) n: u64,
    pub(crate) href: String,
}

/// A bar of a throughput chart (SVG user units).
#[derive(Debug)]
pub(crate) struct Bar {
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) h: u32,
    pub(crate) title: String,
}

/// One kind on the overview.
#[derive(Debug)]
pub(crate) struct KindRow {
    pub(crate) kind: String,
    pub(crate) href: String,
    pub(crate) counts: Vec<Cell>,
    pub(crate) total: u64,
    pub(crate) undecodable: u64,
    pub(crate) failed: u64,
    pub(crate) oldest_pending: String,
    pub(crate) next_due: String,
    pub(crate) paused: bool,
    /// Finished per minute, oldest minute first.
    pub(crate) bars: Vec<Bar>,
    /// Finished in the latest minute, when sampled.
    pub(crate) rate: String,
}

/// The overview's live part.
#[derive(Debug)]
pub(crate) struct OverviewBody {
    pub(crate) statuses: Vec<&'static str>,
    pub(crate) rows: Vec<KindRow>,
    pub(crate) totals: Vec<u64>,
    pub(crate) total: u64,
    pub(crate) undecodable: u64,
    pub(crate) updated: String,
    pub(crate) error: Option<String>,
}

/// `/`.
#[derive(Template)]
#[template(path = "overview.html")]
pub(crate) struct OverviewPage {
    pub(crate) chrome: Chrome,
    pub(crate) body: OverviewBody,
    /// The refresh interval, for the script.
    pub(crate) refresh_ms: u128,
    /// The longest wait between failing reads, for the script.
    pub(crate) max_retry_ms: u128,
    /// The refresh interval, for people.
    pub(crate) refresh: String,
}

/// `/live/overview`: the overview's live part alone.
#[derive(Template)]
#[template(path = "overview_body.html")]
pub(crate) struct OverviewFragment {
    pub(crate) chrome: Chrome,
    pub(crate) body: OverviewBody,
}

/// One task in a list.
#[derive(Debug)]
pub(crate) struct TaskRow {
    pub(crate) id: String,
    pub(crate) href: String,
    pub(crate) kind: String,
    pub(crate) status: &'static str,
    pub(crate) when: String,
    pub(crate) attempts: u32,
    pub(crate) priority: i8,
    pub(crate) resource_key: String,
    pub(crate) resource_key_href: String,
    pub(crate) created: String,
    pub(crate) last_error: String,
}

/// A status checkbox of the filter form.
#[derive(Debug)]
pub(crate) struct StatusOption {
    pub(crate) name: &'static str,
    pub(crate) checked: bool,
    /// Why the store does not list by this status (then it is not offered).
    pub(crate) refused: Option<String>,
}

/// `/tasks`.
#[derive(Template)]
#[template(path = "tasks.html")]
pub(crate) struct TasksPage {
    pub(crate) chrome: Chrome,
    pub(crate) kind: String,
    pub(crate) resource_key: String,
    pub(crate) id_prefix: String,
    /// Why the store does not list by id prefix (then it is not offered).
    pub(crate) id_prefix_refused: Option<String>,
    pub(crate) from: String,
    pub(crate) to: String,
    /// Only open tasks.
    pub(crate) open: bool,
    pub(crate) statuses: Vec<StatusOption>,
    /// Some status is not offered.
    pub(crate) some_refused: bool,
    pub(crate) problems: Vec<String>,
    /// Why the store refuses this page's filter, in its words.
    pub(crate) refused: Option<String>,
    pub(crate) rows: Vec<TaskRow>,
    pub(crate) next_href: Option<String>,
    pub(crate) first_href: Option<String>,
    /// The store-side filters, for "act on every matching task" (only
    /// offered with a kind or a resource key).
    pub(crate) matching: Vec<(&'static str, String)>,
    pub(crate) error: Option<String>,
}

/// A labelled field of the task page.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) label: &'static str,
    pub(crate) value: String,
}

/// A failed attempt.
#[derive(Debug)]
pub(crate) struct ErrorRow {
    pub(crate) n: usize,
    pub(crate) at: String,
    pub(crate) error: String,
}

/// A task, as its page shows it.
#[derive(Debug)]
pub(crate) struct TaskView {
    pub(crate) id: String,
    pub(crate) status: &'static str,
    pub(crate) fields: Vec<Field>,
    pub(crate) payload: String,
    pub(crate) result: Option<String>,
    pub(crate) recurrence: Option<String>,
    pub(crate) errors: Vec<ErrorRow>,
    pub(crate) resource_key_href: Option<String>,
    pub(crate) generator_href: Option<String>,
    /// A generator's next slots.
    pub(crate) next_slots: Vec<String>,
    pub(crate) occurrences: Vec<TaskRow>,
    pub(crate) occurrences_note: Option<String>,
    pub(crate) priority: i8,
    pub(crate) done: bool,
}

/// `/task?id=…`.
#[derive(Template)]
#[template(path = "task.html")]
pub(crate) struct TaskPage {
    pub(crate) chrome: Chrome,
    pub(crate) id: String,
    pub(crate) task: Option<TaskView>,
    /// Why the page shows no task (not found, other environment,
    /// undecodable document).
    pub(crate) problem: Option<String>,
    /// An undecodable document can still be deleted.
    pub(crate) deletable: bool,
}

/// A recurrence generator.
#[derive(Debug)]
pub(crate) struct GeneratorRow {
    pub(crate) id: String,
    pub(crate) href: String,
    pub(crate) kind: String,
    pub(crate) status: &'static str,
    pub(crate) rule: String,
    pub(crate) start: String,
    pub(crate) timezone: String,
    pub(crate) next: Vec<String>,
}

/// `/recurring`.
#[derive(Template)]
#[template(path = "recurring.html")]
pub(crate) struct RecurringPage {
    pub(crate) chrome: Chrome,
    pub(crate) rows: Vec<GeneratorRow>,
    pub(crate) note: Option<String>,
}

/// `/resource-key?key=…`.
#[derive(Template)]
#[template(path = "resource_key.html")]
pub(crate) struct ResourceKeyPage {
    pub(crate) chrome: Chrome,
    pub(crate) key: String,
    pub(crate) kind: String,
    pub(crate) rows: Vec<TaskRow>,
    pub(crate) open: usize,
    pub(crate) note: Option<String>,
    pub(crate) list_href: String,
    /// Without a key: the keys of the open tasks.
    pub(crate) keys: Vec<KeyRow>,
    /// Why the store does not list the keys (then only a key by name).
    pub(crate) keys_refused: Option<String>,
}

/// `/undecodable`.
#[derive(Template)]
#[template(path = "undecodable.html")]
pub(crate) struct UndecodablePage {
    pub(crate) chrome: Chrome,
    pub(crate) rows: Vec<UndecodableRow>,
    /// Why the store does not list them.
    pub(crate) refused: Option<String>,
    pub(crate) note: Option<String>,
}

/// A stored document that is not a task.
#[derive(Debug)]
pub(crate) struct UndecodableRow {
    pub(crate) id: String,
    pub(crate) href: String,
    pub(crate) reason: String,
}

/// A resource key with open tasks.
#[derive(Debug)]
pub(crate) struct KeyRow {
    pub(crate) key: String,
    pub(crate) href: String,
    pub(crate) open: u64,
    pub(crate) leased: u64,
    pub(crate) kinds: String,
    /// How long ago its oldest open task was created.
    pub(crate) oldest: String,
}

/// The question an action asks before it acts.
#[derive(Template)]
#[template(path = "confirm.html")]
pub(crate) struct ConfirmPage {
    pub(crate) chrome: Chrome,
    pub(crate) title: String,
    pub(crate) question: String,
    pub(crate) count: u64,
    pub(crate) ids: Vec<String>,
    pub(crate) more: usize,
    pub(crate) post_to: String,
    pub(crate) hidden: Vec<(String, String)>,
    pub(crate) button: String,
    pub(crate) nothing: Option<String>,
}

/// A group of ids in a result.
#[derive(Debug)]
pub(crate) struct ResultLine {
    pub(crate) label: String,
    pub(crate) count: usize,
    /// Ids with the links to their pages.
    pub(crate) ids: Vec<(String, String)>,
    pub(crate) more: usize,
}

/// What an action did.
#[derive(Template)]
#[template(path = "result.html")]
pub(crate) struct ResultPage {
    pub(crate) chrome: Chrome,
    pub(crate) title: String,
    pub(crate) summary: String,
    pub(crate) ok: bool,
    pub(crate) lines: Vec<ResultLine>,
    pub(crate) failures: Vec<(String, String)>,
    pub(crate) back_href: String,
}

/// The store cannot be reached or failed: the page says so and retries.
#[derive(Template)]
#[template(path = "store_error.html")]
pub(crate) struct StoreErrorPage {
    pub(crate) chrome: Chrome,
    pub(crate) message: String,
    /// The store refuses the request by design (no retry helps).
    pub(crate) unsupported: bool,
    /// The first retry's wait; each failure doubles it.
    pub(crate) retry_ms: u128,
    /// The longest wait between retries.
    pub(crate) max_retry_ms: u128,
}

/// `/prune`.
#[derive(Template)]
#[template(path = "prune.html")]
pub(crate) struct PrunePage {
    pub(crate) chrome: Chrome,
    /// The kind chosen, if any.
    pub(crate) kind: String,
    /// The kinds with tasks.
    pub(crate) kinds: Vec<String>,
}

//! The actions (POST): each checks the form's CSRF token (the middleware
//! of [`crate::security`] has already refused read-only dashboards and
//! cross-site requests), answers first with a confirmation page that says
//! how many tasks it touches, and acts once the form comes back with
//! `confirmed=1`.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use oncetask::manager::{BulkReport, PrunePlan};
use oncetask::{Error, Retention, TaskFilter, TaskStatus};

use crate::AppState;
use crate::format::{Params, parse_period, parse_status};
use crate::pages::{chrome, store_error, task_href, tasks_href};
use crate::security::{csrf_ok, csrf_refused};
use crate::views::{ConfirmPage, ResultLine, ResultPage, html};

/// Ids listed on a confirmation or result page before "and N more".
const SHOWN_IDS: usize = 50;

/// An operator action on tasks (the manager's own type).
use oncetask::BulkAction as Action;

/// How the dashboard reads and words an action.
trait Wording: Sized {
    /// The form's `action` (and `priority`) fields.
    fn parse(form: &Params) -> Result<Self, String>;
    fn capitalized(self) -> String;
    fn past(self) -> &'static str;
    fn consequence(self) -> &'static str;
}

impl Wording for Action {
    fn parse(form: &Params) -> Result<Self, String> {
        match form.get("action").unwrap_or_default() {
            "reprioritize" => {
                let text = form.get("priority").unwrap_or_default().trim();
                match text.parse::<i8>() {
                    Ok(p) if oncetask::PRIORITY_RANGE.contains(&p) => Ok(Action::Reprioritize(p)),
                    _ => Err(format!(
                        "priority {text:?}: expected a whole number from -10 to 10"
                    )),
                }
            }
            other => other
                .parse()
                .map_err(|e: String| format!("{e} (or reprioritize)")),
        }
    }

    fn capitalized(self) -> String {
        match self {
            Action::Cancel => "Cancel".to_owned(),
            Action::Reset => "Reset".to_owned(),
            Action::Delete => "Delete".to_owned(),
            Action::Reprioritize(p) => format!("Set priority {p} of"),
        }
    }

    fn past(self) -> &'static str {
        match self {
            // Finished by the kind's cancellation path, not by this write.
            Action::Cancel => "Marked for cancellation",
            Action::Reset => "Reset to pending",
            Action::Delete => "Deleted",
            Action::Reprioritize(_) => "Reprioritized",
        }
    }

    /// What happens, for the confirmation page.
    fn consequence(self) -> &'static str {
        match self {
            Action::Cancel => {
                "Each task's cancellation path runs (a running handler finishes first)."
            }
            Action::Reset => {
                "Finished tasks go back to pending and run again; their attempts and errors are cleared."
            }
            Action::Delete => {
                "The tasks are removed for good: creating the same id again runs it again. \
                 A task whose handler is running is refused."
            }
            Action::Reprioritize(_) => {
                "Higher priorities are claimed first within a kind; finished tasks are skipped."
            }
        }
    }
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}; nothing was changed\n"),
    )
        .into_response()
}

/// The form's fields, if its CSRF token is this process's.
fn checked_form(state: &AppState, body: &Bytes) -> Option<Params> {
    let form = Params::parse(body);
    csrf_ok(state, form.get("csrf")).then_some(form)
}

fn confirmed(form: &Params) -> bool {
    form.get("confirmed") == Some("1")
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `POST /actions/ids`: cancel, reset, delete or reprioritize tasks by id
/// (one from its page, or those selected in a list).
pub(crate) async fn by_ids(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(form) = checked_form(&state, &body) else {
        return csrf_refused();
    };
    let action = match Action::parse(&form) {
        Ok(action) => action,
        Err(e) => return bad_request(&e),
    };
    let mut seen = HashSet::new();
    let ids: Vec<String> = form
        .all("id")
        .into_iter()
        .filter(|id| !id.is_empty() && seen.insert(id.clone()))
        .collect();
    if ids.is_empty() {
        return bad_request("no task selected");
    }
    let count = ids.len() as u64;
    let back_href = match ids.as_slice() {
        [one] => task_href(&state, one),
        _ => tasks_href(&state, &[]),
    };
    if !confirmed(&form) {
        let mut hidden = vec![("action".to_owned(), action.name().to_owned())];
        if let Action::Reprioritize(p) = action {
            hidden.push(("priority".to_owned(), p.to_string()));
        }
        hidden.extend(ids.iter().map(|id| ("id".to_owned(), id.clone())));
        let what = match ids.as_slice() {
            [one] => format!("task {one:?}"),
            _ => format!("{count} tasks"),
        };
        let page = ConfirmPage {
            chrome: chrome(&state),
            title: format!("{} {what}?", action.capitalized()),
            question: format!(
                "{} {what} in environment {:?}? {}",
                action.capitalized(),
                state.manager.env(),
                action.consequence()
            ),
            count,
            ids: ids.iter().take(SHOWN_IDS).cloned().collect(),
            more: ids.len().saturating_sub(SHOWN_IDS),
            post_to: format!("{}actions/ids", state.config.base_path),
            hidden,
            button: format!("{} {count} task{}", action.capitalized(), plural(count)),
            nothing: None,
        };
        return html(StatusCode::OK, &page);
    }
    let manager = &state.manager;
    let report = manager.act_many(action, &ids).await;
    match report {
        Ok(report) => result_page(&state, action, &report, back_href),
        Err(e) => store_error(&state, &e),
    }
}

/// The tasks a selection picks: what the form names, narrowed to the tasks
/// `action` applies to when it names no status
/// ([`oncetask::Manager::applicable`], as the CLI does).
fn selection(
    state: &AppState,
    action: Action,
    kind: Option<String>,
    resource_key: Option<String>,
    statuses: Vec<TaskStatus>,
) -> TaskFilter {
    let mut filter = state.manager.filter();
    filter.kind = kind;
    filter.resource_key = resource_key;
    filter.statuses = statuses;
    state.manager.applicable(action, filter)
}

/// `POST /actions/matching`: an action on every task of a kind and/or a
/// resource key (optionally of some statuses), e.g. redriving the failed
/// tasks of a kind. The confirmation counts them
/// ([`oncetask::Manager::count_matching`]).
pub(crate) async fn matching(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(form) = checked_form(&state, &body) else {
        return csrf_refused();
    };
    let action = match Action::parse(&form) {
        Ok(action) => action,
        Err(e) => return bad_request(&e),
    };
    let kind = form.non_empty("kind");
    let resource_key = form.non_empty("resource_key");
    if kind.is_none() && resource_key.is_none() {
        return bad_request("a selection needs a kind or a resource key");
    }
    let mut statuses = Vec::new();
    for text in form.all("status") {
        match parse_status(text.trim()) {
            Some(s) if !statuses.contains(&s) => statuses.push(s),
            Some(_) => {}
            None => return bad_request(&format!("unknown status {text:?}")),
        }
    }
    let mut described = Vec::new();
    if !statuses.is_empty() {
        let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        described.push(format!("with status {}", names.join(" or ")));
    }
    if let Some(key) = &resource_key {
        described.push(format!("with resource key {key:?}"));
    }
    if let Some(kind) = &kind {
        described.push(format!("of kind {kind:?}"));
    }
    let described = described.join(" ");
    let mut back = Vec::new();
    if let Some(kind) = &kind {
        back.push(("kind", kind.as_str()));
    }
    if let Some(key) = &resource_key {
        back.push(("resource_key", key.as_str()));
    }
    for s in &statuses {
        back.push(("status", s.as_str()));
    }
    let back_href = tasks_href(&state, &back);
    let filter = selection(
        &state,
        action,
        kind.clone(),
        resource_key.clone(),
        statuses.clone(),
    );
    if !confirmed(&form) {
        let count = match state.manager.count_matching(&filter).await {
            Ok(count) => count,
            Err(e) => return store_error(&state, &e),
        };
        let mut hidden = vec![("action".to_owned(), action.name().to_owned())];
        if let Action::Reprioritize(p) = action {
            hidden.push(("priority".to_owned(), p.to_string()));
        }
        if let Some(kind) = &kind {
            hidden.push(("kind".to_owned(), kind.clone()));
        }
        if let Some(key) = &resource_key {
            hidden.push(("resource_key".to_owned(), key.clone()));
        }
        for s in &statuses {
            hidden.push(("status".to_owned(), s.as_str().to_owned()));
        }
        let page = ConfirmPage {
            chrome: chrome(&state),
            title: format!(
                "{} {count} task{} {described}?",
                action.capitalized(),
                plural(count)
            ),
            question: format!(
                "{} every task {described} in environment {:?} that it applies to? {} \
                 Tasks that change meanwhile are decided again when acted on.",
                action.capitalized(),
                state.manager.env(),
                action.consequence()
            ),
            count,
            ids: Vec::new(),
            more: 0,
            post_to: format!("{}actions/matching", state.config.base_path),
            hidden,
            button: format!("{} {count} task{}", action.capitalized(), plural(count)),
            nothing: (count == 0).then(|| {
                format!(
                    "Nothing to {}: no task {described} in environment {:?} {}.",
                    action.name(),
                    state.manager.env(),
                    action.applies_to()
                )
            }),
        };
        return html(StatusCode::OK, &page);
    }
    let manager = &state.manager;
    let report = manager.act_matching(action, filter).await;
    match report {
        Ok(report) => result_page(&state, action, &report, back_href),
        Err(e) => store_error(&state, &e),
    }
}

/// `POST /actions/pause`: pause or resume a kind for every process.
pub(crate) async fn pause(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(form) = checked_form(&state, &body) else {
        return csrf_refused();
    };
    let Some(kind) = form.non_empty("kind") else {
        return bad_request("no kind given");
    };
    let (result, done): (Result<bool, Error>, &str) = match form.get("op") {
        Some("pause") => (state.manager.pause(kind.as_str()).await, "Paused"),
        Some("resume") => (state.manager.resume(kind.as_str()).await, "Resumed"),
        _ => return bad_request("op must be pause or resume"),
    };
    match result {
        Ok(changed) => {
            let page = ResultPage {
                chrome: chrome(&state),
                title: format!("{done} kind {kind:?}"),
                summary: format!(
                    "{done} kind {kind:?} in environment {:?}{}. {}",
                    state.manager.env(),
                    if changed { "" } else { " (it already was)" },
                    if done == "Paused" {
                        "Its workers claim nothing until it is resumed; running handlers finish; \
                         creates still store tasks."
                    } else {
                        "Every process's workers claim it again at once."
                    }
                ),
                ok: true,
                lines: Vec::new(),
                failures: Vec::new(),
                back_href: state.config.base_path.clone(),
            };
            html(StatusCode::OK, &page)
        }
        Err(e) => store_error(&state, &e),
    }
}

/// What an action did, id by id.
fn result_page(
    state: &AppState,
    action: Action,
    report: &BulkReport,
    back_href: String,
) -> Response {
    let line = |label: &str, ids: &[String]| ResultLine {
        label: label.to_owned(),
        count: ids.len(),
        ids: ids
            .iter()
            .take(SHOWN_IDS)
            .map(|id| (id.clone(), task_href(state, id)))
            .collect(),
        more: ids.len().saturating_sub(SHOWN_IDS),
    };
    let mut lines = Vec::new();
    let skipped = format!("Skipped ({})", action.skipped_because());
    for (label, ids) in [
        (action.past(), &report.succeeded),
        (skipped.as_str(), &report.skipped),
        ("Not found", &report.not_found),
    ] {
        if !ids.is_empty() {
            lines.push(line(label, ids));
        }
    }
    let ok = report.failed.is_empty() && report.not_found.is_empty();
    let n = report.succeeded.len() as u64;
    let summary = if report.succeeded.is_empty()
        && report.skipped.is_empty()
        && report.not_found.is_empty()
        && report.failed.is_empty()
    {
        format!("Nothing to {}.", action.name())
    } else {
        format!(
            "{}: {n} task{}{}.",
            action.past(),
            plural(n),
            if ok { "" } else { "; see the failures below" }
        )
    };
    let page = ResultPage {
        chrome: chrome(state),
        title: format!("{} done", action.capitalized()),
        summary,
        ok,
        lines,
        failures: report
            .failed
            .iter()
            .map(|(id, e)| (id.clone(), e.to_string()))
            .collect(),
        back_href,
    };
    html(StatusCode::OK, &page)
}

/// The retention a prune form describes, and its fields to carry over to
/// the confirmation.
fn retention(form: &Params) -> Result<(Retention, Vec<(String, String)>), String> {
    let mut retention = Retention::default();
    let mut fields = Vec::new();
    for name in ["finished", "completed", "failed", "cancelled", "tombstones"] {
        let Some(text) = form.non_empty(name) else {
            continue;
        };
        let period = parse_period(&text).map_err(|e| format!("{name}: {e}"))?;
        retention = match name {
            "finished" => retention.finished(period),
            "completed" => retention.completed(period),
            "failed" => retention.failed(period),
            "cancelled" => retention.cancelled(period),
            _ => retention.tombstones_for(period),
        };
        fields.push((name.to_owned(), text));
    }
    if form.get("no_tombstones") == Some("1") {
        if form.non_empty("tombstones").is_some() {
            return Err("give a tombstone period or no tombstones, not both".to_owned());
        }
        retention = retention.without_tombstones();
        fields.push(("no_tombstones".to_owned(), "1".to_owned()));
    }
    if retention.keeps_everything() && retention.tombstone_period().is_none() {
        return Err(
            "nothing to prune: give a period for finished, completed, failed or cancelled tasks, \
             or for tombstones"
                .to_owned(),
        );
    }
    retention.validate().map_err(|e| e.to_string())?;
    Ok((retention, fields))
}

/// `POST /actions/prune`: prune the finished tasks of a kind past a
/// retention. The confirmation is a dry run that counts them.
pub(crate) async fn prune(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(form) = checked_form(&state, &body) else {
        return csrf_refused();
    };
    let Some(kind) = form.non_empty("kind") else {
        return bad_request("no kind given");
    };
    let (retention, fields) = match retention(&form) {
        Ok(r) => r,
        Err(e) => return bad_request(&e),
    };
    let plan = PrunePlan::kind(kind.as_str(), retention);
    let back_href = format!(
        "{}prune{}",
        state.config.base_path,
        crate::format::query([("kind", kind.as_str())])
    );
    if !confirmed(&form) {
        let counted = match state.manager.prune(plan.dry_run()).await {
            Ok(report) => report.total(),
            Err(e) => return store_error(&state, &e),
        };
        let count = counted.tombstoned + counted.deleted;
        let mut hidden = vec![("kind".to_owned(), kind.clone())];
        hidden.extend(fields);
        let page = ConfirmPage {
            chrome: chrome(&state),
            title: format!("Prune {count} task{} of kind {kind:?}?", plural(count)),
            question: format!(
                "Dry run: {} finished task(s) of kind {kind:?} in environment {:?} would become \
                 tombstones (payload, result and errors dropped; the id still answers \"already \
                 exists\") and {} would be deleted. Tasks that change meanwhile are skipped.",
                counted.tombstoned,
                state.manager.env(),
                counted.deleted
            ),
            count,
            ids: Vec::new(),
            more: 0,
            post_to: format!("{}actions/prune", state.config.base_path),
            hidden,
            button: format!("Prune {count} task{}", plural(count)),
            nothing: (count == 0).then(|| {
                format!(
                    "Nothing to prune: no finished task of kind {kind:?} is past that retention."
                )
            }),
        };
        return html(StatusCode::OK, &page);
    }
    match state.manager.prune(plan).await {
        Ok(report) => {
            let counts = report.total();
            let page = ResultPage {
                chrome: chrome(&state),
                title: format!("Pruned kind {kind:?}"),
                summary: format!(
                    "{} turned into tombstones, {} deleted, {} skipped (changed since they were \
                     read){}.",
                    counts.tombstoned,
                    counts.deleted,
                    counts.skipped,
                    if report.failed.is_empty() {
                        ""
                    } else {
                        "; see the failures below"
                    }
                ),
                ok: report.failed.is_empty(),
                lines: Vec::new(),
                failures: report
                    .failed
                    .iter()
                    .map(|(id, e)| (id.clone(), e.to_string()))
                    .collect(),
                back_href,
            };
            html(StatusCode::OK, &page)
        }
        Err(e) => store_error(&state, &e),
    }
}

//! The pages (GET): they read through the manager and change nothing.

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use oncetask::backend::Fetched;
use oncetask::{Error, Task, TaskStatus};

use crate::AppState;
use crate::format::{Params, duration, query, relative, time, time_and_relative, truncate};
use crate::list::{self, ListQuery};
use crate::throughput::Series;
use crate::views::{
    Bar, Cell, Chrome, ErrorRow, Field, GeneratorRow, KeyRow, KindRow, OverviewBody,
    OverviewFragment, OverviewPage, PrunePage, RecurringPage, ResourceKeyPage, StatusOption,
    StoreErrorPage, TaskPage, TaskRow, TaskView, TasksPage, UndecodablePage, UndecodableRow, html,
};

/// Tasks a resource key page lists.
const KEY_LIMIT: usize = 200;

/// Occurrences listed on a generator's page (the latest ones).
const OCCURRENCES_SHOWN: usize = 20;

/// Generators the recurring page lists.
const GENERATORS_SHOWN: usize = 200;

/// Undecodable documents the page of them lists.
const UNDECODABLE_SHOWN: usize = 200;

/// Next slots shown per generator.
const NEXT_SLOTS: usize = 5;

/// What every page shows around its content.
pub(crate) fn chrome(state: &AppState) -> Chrome {
    Chrome {
        store_label: state.config.store_label.clone(),
        env: state.manager.env().to_owned(),
        read_only: state.config.read_only,
        base: state.config.base_path.clone(),
        csrf: state.csrf.clone(),
    }
}

/// The page of a store that cannot be read: 503; its script asks for the
/// page again with backoff (from the refresh interval, doubling up to
/// [`crate::MAX_RETRY`]) and reloads it once the store answers.
///
/// A request the store refuses by design ([`oncetask::StoreError::Unsupported`],
/// e.g. a bulk action over a status Firestore does not list) is a 400 that
/// says why, without retries.
pub(crate) fn store_error(state: &AppState, e: &Error) -> Response {
    let refresh = state.config.refresh;
    let unsupported = matches!(e, Error::Store(oncetask::StoreError::Unsupported(_)));
    let page = StoreErrorPage {
        chrome: chrome(state),
        message: e.to_string(),
        unsupported,
        retry_ms: refresh.as_millis(),
        max_retry_ms: refresh.max(crate::MAX_RETRY).as_millis(),
    };
    let status = if unsupported {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    html(status, &page)
}

/// A link to the task list with these filters.
pub(crate) fn tasks_href(state: &AppState, pairs: &[(&str, &str)]) -> String {
    format!(
        "{}tasks{}",
        state.config.base_path,
        query(pairs.iter().copied())
    )
}

/// A link to a task's page.
pub(crate) fn task_href(state: &AppState, id: &str) -> String {
    format!("{}task{}", state.config.base_path, query([("id", id)]))
}

fn resource_key_href(state: &AppState, key: &str) -> String {
    format!(
        "{}resource-key{}",
        state.config.base_path,
        query([("key", key)])
    )
}

/// A task as a list shows it.
pub(crate) fn task_row(state: &AppState, task: &Task, now: DateTime<Utc>) -> TaskRow {
    let status = task.status(now);
    let key = task.resource_key.clone().unwrap_or_default();
    TaskRow {
        href: task_href(state, &task.id),
        id: task.id.clone(),
        kind: task.kind.clone(),
        status: status.as_str(),
        when: oncetask::display::standing(task, now),
        attempts: task.attempts,
        priority: task.priority,
        resource_key_href: resource_key_href(state, &key),
        resource_key: key,
        created: relative(task.created_at, now),
        last_error: task
            .errors
            .last()
            .map(|e| truncate(&e.error, 80))
            .unwrap_or_default(),
    }
}

/// The overview's live part: one row per kind (paused kinds with no task
/// included), or the store's error.
async fn overview_body(state: &AppState) -> (OverviewBody, bool) {
    // Headers only: the long status name may wrap there.
    let statuses: Vec<&'static str> = TaskStatus::ALL
        .iter()
        .map(|s| match s {
            TaskStatus::CancellationPending => "cancellation pending",
            s => s.as_str(),
        })
        .collect();
    let mut body = OverviewBody {
        statuses,
        rows: Vec::new(),
        totals: vec![0; TaskStatus::ALL.len()],
        total: 0,
        undecodable: 0,
        updated: time(state.manager.clock().now()),
        error: None,
    };
    let read = async {
        let stats = state.manager.inspect().await?;
        let paused = state.manager.paused_kinds().await?;
        Ok::<_, Error>((stats, paused))
    };
    let (stats, paused) = match read.await {
        Ok(read) => read,
        Err(e) => {
            body.error = Some(e.to_string());
            return (body, false);
        }
    };
    let now = stats.now;
    body.updated = time(now);
    let series = state.throughput.record(&stats);
    let mut kinds: Vec<&String> = stats.kinds.keys().collect();
    for kind in &paused {
        if !stats.kinds.contains_key(kind) {
            kinds.push(kind);
        }
    }
    kinds.sort();
    let empty = oncetask::KindStats::default();
    for kind in kinds {
        let k = stats.kinds.get(kind).unwrap_or(&empty);
        let counts = TaskStatus::ALL
            .iter()
            .enumerate()
            .map(|(i, status)| {
                let n = k.count(*status);
                body.totals[i] += n;
                Cell {
                    n,
                    href: tasks_href(state, &[("kind", kind), ("status", status.as_str())]),
                }
            })
            .collect();
        body.total += k.total();
        body.undecodable += k.undecodable();
        body.rows.push(KindRow {
            kind: kind.clone(),
            href: tasks_href(state, &[("kind", kind)]),
            counts,
            total: k.total(),
            undecodable: k.undecodable(),
            failed: k.count(TaskStatus::Failed),
            oldest_pending: k
                .oldest_pending_age(now)
                .map(|age| format!("waiting {}", duration(age)))
                .unwrap_or_else(|| "-".to_owned()),
            next_due: k
                .next_due
                .map(|t| relative(t, now))
                .unwrap_or_else(|| "-".to_owned()),
            paused: paused.contains(kind),
            bars: series.get(kind.as_str()).map(bars).unwrap_or_default(),
            rate: series
                .get(kind.as_str())
                .and_then(|s| s.per_minute.last().copied().flatten())
                .map(|n| format!("{n}/min"))
                .unwrap_or_else(|| "-".to_owned()),
        });
    }
    (body, true)
}

/// Chart height in SVG units; bars are 10 wide (9 and a gap).
const CHART_HEIGHT: u32 = 24;

/// The bars of one kind's throughput chart, scaled to its busiest minute.
fn bars(series: &Series) -> Vec<Bar> {
    let max = series
        .per_minute
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let minutes = series.per_minute.len();
    series
        .per_minute
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let n = (*n)?;
            let ago = minutes - i - 1;
            let h = u32::try_from(n * u64::from(CHART_HEIGHT - 2) / max)
                .unwrap_or(CHART_HEIGHT)
                .max(u32::from(n > 0));
            Some(Bar {
                x: u32::try_from(i).unwrap_or(0) * 10,
                y: CHART_HEIGHT - h,
                h,
                title: match ago {
                    0 => format!("{n} finished in the last minute"),
                    _ => format!("{n} finished {ago}-{} minutes ago", ago + 1),
                },
            })
        })
        .collect()
}

/// `GET /`.
pub(crate) async fn overview(State(state): State<AppState>) -> Response {
    let (body, ok) = overview_body(&state).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let refresh = state.config.refresh;
    let page = OverviewPage {
        chrome: chrome(&state),
        body,
        refresh_ms: refresh.as_millis(),
        max_retry_ms: refresh.max(crate::MAX_RETRY).as_millis(),
        refresh: if refresh < std::time::Duration::from_secs(1) {
            format!("{} ms", refresh.as_millis())
        } else {
            duration(refresh)
        },
    };
    html(status, &page)
}

/// `GET /live/overview`: what the page's script swaps in at each refresh.
pub(crate) async fn overview_fragment(State(state): State<AppState>) -> Response {
    let (body, ok) = overview_body(&state).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let page = OverviewFragment {
        chrome: chrome(&state),
        body,
    };
    html(status, &page)
}

/// `GET /tasks`.
///
/// Each filter choice is offered only if the store serves it
/// ([`oncetask::Manager::check_filter`], which reads nothing): on
/// Firestore, a status that no index lists in creation order is shown
/// disabled with the reason, and a filter that names it anyway is refused
/// with that reason instead of read.
pub(crate) async fn tasks(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.unwrap_or_default().as_bytes());
    let q = ListQuery::parse(&params);
    // What the store says of a choice, with the page's kind and key.
    let refusal = |narrow: &dyn Fn(&mut ListQuery)| {
        let mut choice = ListQuery {
            kind: q.kind.clone(),
            resource_key: q.resource_key.clone(),
            ..ListQuery::default()
        };
        narrow(&mut choice);
        state
            .manager
            .check_filter(&choice.filter(&state.manager))
            .err()
            .map(|e| e.to_string())
    };
    let mut page = TasksPage {
        chrome: chrome(&state),
        kind: q.kind.clone().unwrap_or_default(),
        resource_key: q.resource_key.clone().unwrap_or_default(),
        id_prefix: q.id_prefix.clone().unwrap_or_default(),
        id_prefix_refused: refusal(&|c| c.id_prefix = Some("x".to_owned())),
        from: q.from.map(time).unwrap_or_default(),
        to: q.to.map(time).unwrap_or_default(),
        open: q.open,
        statuses: TaskStatus::ALL
            .iter()
            .map(|s| StatusOption {
                name: s.as_str(),
                checked: q.statuses.contains(s),
                refused: refusal(&|c| c.statuses = vec![*s]),
            })
            .collect(),
        some_refused: false,
        problems: q.problems.clone(),
        refused: None,
        rows: Vec::new(),
        next_href: None,
        first_href: q
            .after
            .as_ref()
            .map(|_| format!("{}tasks{}", state.config.base_path, q.href_query(None))),
        matching: Vec::new(),
        error: None,
    };
    page.some_refused = page.statuses.iter().any(|s| s.refused.is_some());
    if q.kind.is_some() || q.resource_key.is_some() {
        if let Some(kind) = &q.kind {
            page.matching.push(("kind", kind.clone()));
        }
        if let Some(key) = &q.resource_key {
            page.matching.push(("resource_key", key.clone()));
        }
        for s in &q.statuses {
            page.matching.push(("status", s.as_str().to_owned()));
        }
    }
    if let Err(e) = state.manager.check_filter(&q.filter(&state.manager)) {
        page.refused = Some(e.to_string());
        return html(StatusCode::BAD_REQUEST, &page);
    }
    match list::page(&state.manager, &q).await {
        Ok(result) => {
            page.rows = result
                .tasks
                .iter()
                .map(|t| task_row(&state, t, result.now))
                .collect();
            page.next_href = result.next.as_ref().map(|cursor| {
                format!(
                    "{}tasks{}",
                    state.config.base_path,
                    q.href_query(Some(cursor))
                )
            });
            html(StatusCode::OK, &page)
        }
        Err(e) => {
            page.error = Some(e.to_string());
            html(StatusCode::SERVICE_UNAVAILABLE, &page)
        }
    }
}

/// `GET /task?id=…`.
pub(crate) async fn task(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.unwrap_or_default().as_bytes());
    let id = params.get("id").unwrap_or_default().to_owned();
    let mut page = TaskPage {
        chrome: chrome(&state),
        id: id.clone(),
        task: None,
        problem: None,
        deletable: false,
    };
    if id.is_empty() {
        page.problem = Some("Give a task id.".to_owned());
        return html(StatusCode::OK, &page);
    }
    let fetched = match state.manager.store().get(std::slice::from_ref(&id)).await {
        Ok(fetched) => fetched,
        Err(e) => return store_error(&state, &Error::Store(e)),
    };
    let env = state.manager.env().to_owned();
    match fetched.into_iter().next() {
        None => {
            page.problem = Some(format!("No task {id:?} (in any environment)."));
            html(StatusCode::NOT_FOUND, &page)
        }
        Some(Fetched::Undecodable(u)) => {
            page.problem = Some(format!(
                "The stored document {:?} is not a valid task: {}",
                u.id, u.reason
            ));
            page.deletable = true;
            html(StatusCode::OK, &page)
        }
        Some(Fetched::Task(task)) if task.env != env => {
            page.problem = Some(format!(
                "Task {id:?} is in environment {:?}, not in {env:?}.",
                task.env
            ));
            html(StatusCode::NOT_FOUND, &page)
        }
        Some(Fetched::Task(task)) => {
            let now = state.manager.clock().now();
            let mut view = task_view(&state, &task, now);
            if task.recurrence.is_some() {
                match occurrences(&state, &task, now).await {
                    Ok((rows, note)) => {
                        view.occurrences = rows;
                        view.occurrences_note = note;
                    }
                    Err(e) => {
                        view.occurrences_note = Some(format!("cannot list the occurrences: {e}"))
                    }
                }
            }
            page.task = Some(view);
            html(StatusCode::OK, &page)
        }
    }
}

/// Every field of a task, for its page.
fn task_view(state: &AppState, task: &Task, now: DateTime<Utc>) -> TaskView {
    let status = task.status(now);
    let opt = |t: Option<DateTime<Utc>>| {
        t.map(|t| time_and_relative(t, now))
            .unwrap_or_else(|| "-".to_owned())
    };
    let mut fields = vec![
        Field {
            label: "id",
            value: task.id.clone(),
        },
        Field {
            label: "kind",
            value: task.kind.clone(),
        },
        Field {
            label: "environment",
            value: task.env.clone(),
        },
        Field {
            label: "status",
            value: format!(
                "{} ({})",
                status.as_str(),
                oncetask::display::standing(task, now)
            ),
        },
        Field {
            label: "resource key",
            value: task.resource_key.clone().unwrap_or_else(|| "-".to_owned()),
        },
        Field {
            label: "created",
            value: time_and_relative(task.created_at, now),
        },
        Field {
            label: "wait until",
            value: opt(task.wait_until),
        },
        Field {
            label: "leased until",
            value: opt(task.leased_until),
        },
        Field {
            label: "done",
            value: opt(task.done_at),
        },
        Field {
            label: "outcome",
            value: task
                .outcome
                .map(|o| format!("{o:?}"))
                .unwrap_or_else(|| "-".to_owned()),
        },
        Field {
            label: "attempts",
            value: match task.max_attempts {
                Some(max) => format!("{} of at most {max}", task.attempts),
                None => task.attempts.to_string(),
            },
        },
        Field {
            label: "snoozes",
            value: task.snoozes.to_string(),
        },
        Field {
            label: "priority",
            value: task.priority.to_string(),
        },
        Field {
            label: "cancelled",
            value: match task.cancelled_at {
                Some(at) if task.is_cancelled => time_and_relative(at, now),
                _ if task.is_cancelled => "yes".to_owned(),
                _ => "no".to_owned(),
            },
        },
    ];
    if task.is_cancelled {
        fields.push(Field {
            label: "cancellation attempts",
            value: task.cancellation_attempts.to_string(),
        });
    }
    if let Some(parent) = &task.parent_recurrence_id {
        fields.push(Field {
            label: "occurrence of",
            value: format!(
                "{parent} at {}",
                task.occurrence_timestamp.map(time).unwrap_or_default()
            ),
        });
    }
    if let Some(pruned) = task.pruned_at {
        fields.push(Field {
            label: "pruned (tombstone)",
            value: time_and_relative(pruned, now),
        });
    }
    fields.push(Field {
        label: "version",
        value: task.version.to_string(),
    });
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    TaskView {
        id: task.id.clone(),
        status: status.as_str(),
        fields,
        payload: serde_json::to_string_pretty(&task.data).unwrap_or_default(),
        result: task.result.as_ref().map(pretty),
        recurrence: task
            .recurrence
            .as_ref()
            .map(|r| serde_json::to_string_pretty(r).unwrap_or_default()),
        errors: task
            .errors
            .iter()
            .enumerate()
            .map(|(i, e)| ErrorRow {
                n: i + 1,
                at: time(e.at),
                error: e.error.clone(),
            })
            .collect(),
        resource_key_href: task
            .resource_key
            .as_deref()
            .map(|k| resource_key_href(state, k)),
        generator_href: task
            .parent_recurrence_id
            .as_deref()
            .map(|id| task_href(state, id)),
        next_slots: next_slots(task, now, NEXT_SLOTS),
        occurrences: Vec::new(),
        occurrences_note: None,
        priority: task.priority,
        done: task.is_done(),
    }
}

/// The latest occurrences of a generator: its last
/// [`OCCURRENCES_SHOWN`] slots up to `now`
/// ([`oncetask::Schedule::slots_before`]) read by their occurrence ids
/// (one `get`, no listing: no store has to index occurrences by
/// generator). Slots a late generator skipped have no occurrence.
async fn occurrences(
    state: &AppState,
    generator: &Task,
    now: DateTime<Utc>,
) -> Result<(Vec<TaskRow>, Option<String>), Error> {
    let Some(schedule) = generator
        .recurrence
        .as_ref()
        .and_then(|r| r.schedule().ok())
    else {
        return Ok((Vec::new(), None));
    };
    let slots = schedule.slots_before(now + chrono::TimeDelta::milliseconds(1), OCCURRENCES_SHOWN);
    let ids: Vec<String> = slots
        .iter()
        .rev()
        .map(|slot| oncetask::backend::lifecycle::occurrence_id(&generator.id, *slot))
        .collect();
    let fetched = state.manager.store().get(&ids).await?;
    let rows = fetched
        .iter()
        .filter_map(|f| match f {
            Fetched::Task(t) => Some(task_row(state, t, now)),
            Fetched::Undecodable(_) => None,
        })
        .collect();
    let note = (slots.len() == OCCURRENCES_SHOWN)
        .then(|| format!("The occurrences of the latest {OCCURRENCES_SHOWN} slots."));
    Ok((rows, note))
}

/// The next `n` slots of a generator after `now` (none when its rule
/// cannot be expanded or is exhausted).
fn next_slots(task: &Task, now: DateTime<Utc>, n: usize) -> Vec<String> {
    let Some(schedule) = task.recurrence.as_ref().and_then(|r| r.schedule().ok()) else {
        return Vec::new();
    };
    let mut slots = Vec::new();
    let mut after = now;
    while slots.len() < n {
        match schedule.next_after(after) {
            Some(slot) => {
                slots.push(time_and_relative(slot, now));
                after = slot;
            }
            None => break,
        }
    }
    slots
}

/// `GET /recurring`: the recurrence generators of the environment
/// ([`oncetask::Store::find_generators`], at most [`GENERATORS_SHOWN`]),
/// with their next slots.
pub(crate) async fn recurring(State(state): State<AppState>) -> Response {
    let env = state.manager.env().to_owned();
    let now = state.manager.filter().now;
    let mut generators = match state
        .manager
        .store()
        .find_generators(&env, GENERATORS_SHOWN + 1)
        .await
    {
        Ok(generators) => generators,
        Err(e) => return store_error(&state, &Error::Store(e)),
    };
    let more = generators.len() > GENERATORS_SHOWN;
    generators.truncate(GENERATORS_SHOWN);
    generators.sort_by(|a, b| a.kind.cmp(&b.kind).then_with(|| a.id.cmp(&b.id)));
    let rows = generators
        .iter()
        .map(|task| {
            let recurrence = task.recurrence.as_ref();
            GeneratorRow {
                id: task.id.clone(),
                href: task_href(&state, &task.id),
                kind: task.kind.clone(),
                status: task.status(now).as_str(),
                rule: recurrence.map(|r| r.rrule.clone()).unwrap_or_default(),
                start: recurrence
                    .map(|r| r.dtstart.to_rfc3339())
                    .unwrap_or_default(),
                timezone: recurrence
                    .and_then(|r| r.timezone.clone())
                    .unwrap_or_else(|| "-".to_owned()),
                next: next_slots(task, now, NEXT_SLOTS),
            }
        })
        .collect();
    let page = RecurringPage {
        chrome: chrome(&state),
        rows,
        note: more.then(|| format!("The first {GENERATORS_SHOWN} generators only.")),
    };
    html(StatusCode::OK, &page)
}

/// `GET /undecodable`: the stored documents of the environment that are
/// not tasks, with the decoder's reasons
/// ([`oncetask::Store::find_undecodable`]), or the store's refusal.
pub(crate) async fn undecodable(State(state): State<AppState>) -> Response {
    let env = state.manager.env().to_owned();
    let mut page = UndecodablePage {
        chrome: chrome(&state),
        rows: Vec::new(),
        refused: None,
        note: None,
    };
    match state
        .manager
        .store()
        .find_undecodable(&env, UNDECODABLE_SHOWN + 1)
        .await
    {
        Ok(mut found) => {
            if found.len() > UNDECODABLE_SHOWN {
                found.truncate(UNDECODABLE_SHOWN);
                page.note = Some(format!("The first {UNDECODABLE_SHOWN} only."));
            }
            page.rows = found
                .into_iter()
                .map(|u| UndecodableRow {
                    href: task_href(&state, &u.id),
                    id: u.id,
                    reason: u.reason,
                })
                .collect();
        }
        Err(oncetask::StoreError::Unsupported(why)) => page.refused = Some(why),
        Err(e) => return store_error(&state, &Error::Store(e)),
    }
    html(StatusCode::OK, &page)
}

/// The busiest resource keys of the open tasks
/// ([`oncetask::Store::open_resource_keys`]), or the store's refusal.
async fn busy_keys(
    state: &AppState,
    kind: &str,
) -> Result<oncetask::backend::KeyQueues, oncetask::StoreError> {
    let env = state.manager.env().to_owned();
    let now = state.manager.filter().now;
    let kind = (!kind.is_empty()).then_some(kind);
    state
        .manager
        .store()
        .open_resource_keys(&env, kind, now, KEY_LIMIT)
        .await
}

/// `GET /resource-key?key=…[&kind=…]`: a key's queue, or (without a key)
/// the keys of the open tasks.
pub(crate) async fn resource_key(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = Params::parse(raw.unwrap_or_default().as_bytes());
    let key = params.non_empty("key").unwrap_or_default();
    let kind = params.non_empty("kind").unwrap_or_default();
    let mut pairs = vec![("resource_key", key.as_str())];
    if !kind.is_empty() {
        pairs.push(("kind", kind.as_str()));
    }
    let mut page = ResourceKeyPage {
        chrome: chrome(&state),
        list_href: tasks_href(&state, &pairs),
        key: key.clone(),
        kind: kind.clone(),
        rows: Vec::new(),
        open: 0,
        note: None,
        keys: Vec::new(),
        keys_refused: None,
    };
    if key.is_empty() {
        let now = state.manager.filter().now;
        return match busy_keys(&state, &kind).await {
            Ok(queues) => {
                page.keys = queues
                    .keys
                    .iter()
                    .map(|q| KeyRow {
                        key: q.resource_key.clone(),
                        href: resource_key_href(&state, &q.resource_key),
                        open: q.open,
                        leased: q.leased,
                        kinds: q.kinds.join(", "),
                        oldest: relative(q.oldest_created_at, now),
                    })
                    .collect();
                if !queues.complete {
                    page.note = Some(format!(
                        "Counted among the first {} open tasks only.",
                        oncetask::backend::operator::KEY_QUEUE_SCAN
                    ));
                }
                html(StatusCode::OK, &page)
            }
            Err(oncetask::StoreError::Unsupported(why)) => {
                page.keys_refused = Some(why);
                html(StatusCode::OK, &page)
            }
            Err(e) => store_error(&state, &Error::Store(e)),
        };
    }
    let mut filter = state
        .manager
        .filter()
        .resource_key(key)
        .limit(KEY_LIMIT + 1);
    if !kind.is_empty() {
        filter = filter.kind(kind);
    }
    let now = filter.now;
    match state.manager.find(filter).await {
        Ok(mut tasks) => {
            if tasks.len() > KEY_LIMIT {
                tasks.truncate(KEY_LIMIT);
                page.note = Some(format!(
                    "The first {KEY_LIMIT} tasks; the task list has them all."
                ));
            }
            page.open = tasks.iter().filter(|t| !t.is_done()).count();
            page.rows = tasks.iter().map(|t| task_row(&state, t, now)).collect();
            html(StatusCode::OK, &page)
        }
        Err(e) => store_error(&state, &e),
    }
}

/// `GET /prune[?kind=…]`: the prune form (a dry run first).
pub(crate) async fn prune(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let params = Params::parse(raw.unwrap_or_default().as_bytes());
    let kinds = match state.manager.inspect().await {
        Ok(stats) => stats.kinds.keys().cloned().collect(),
        Err(e) => return store_error(&state, &e),
    };
    let page = PrunePage {
        chrome: chrome(&state),
        kind: params.non_empty("kind").unwrap_or_default(),
        kinds,
    };
    html(StatusCode::OK, &page)
}

/// `GET /assets/style.css`.
pub(crate) async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../assets/style.css"),
    )
        .into_response()
}

/// `GET /assets/app.js`.
pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../assets/app.js"),
    )
        .into_response()
}

/// Any other path.
pub(crate) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "no such page\n",
    )
        .into_response()
}

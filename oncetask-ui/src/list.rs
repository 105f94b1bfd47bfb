//! The task list's filters and keyset pages.
//!
//! Kind, status and resource key go to the store ([`oncetask::TaskFilter`]);
//! the creation time range becomes the first page's cursor (the listing is
//! in creation order) and the end of the scan; the id prefix is checked on
//! each task read. A page reads at most [`SCAN_BUDGET`] tasks: when the id
//! prefix is rare it may hold fewer than [`PAGE_SIZE`] tasks and still have
//! a next page.

use chrono::{DateTime, Utc};
use oncetask::{Error, Manager, Task, TaskCursor, TaskStatus};

use crate::PAGE_SIZE;
use crate::format::{Params, parse_status, parse_time, query, time};

/// Most tasks one page reads when filtering by id prefix or end time.
pub(crate) const SCAN_BUDGET: usize = 5_000;

/// Tasks read per store call when some filters are checked here.
const SCAN_BATCH: usize = 500;

/// The list's filters, as the query string gives them.
#[derive(Debug, Default, Clone)]
pub(crate) struct ListQuery {
    pub(crate) kind: Option<String>,
    pub(crate) statuses: Vec<TaskStatus>,
    pub(crate) resource_key: Option<String>,
    pub(crate) id_prefix: Option<String>,
    pub(crate) from: Option<DateTime<Utc>>,
    pub(crate) to: Option<DateTime<Utc>>,
    pub(crate) after: Option<TaskCursor>,
    /// Values that could not be read, said on the page.
    pub(crate) problems: Vec<String>,
}

impl ListQuery {
    /// Reads the filters of a query string.
    pub(crate) fn parse(params: &Params) -> Self {
        let mut q = ListQuery {
            kind: params.non_empty("kind"),
            resource_key: params.non_empty("resource_key"),
            id_prefix: params.non_empty("id_prefix"),
            ..ListQuery::default()
        };
        for s in params.all("status") {
            if s.trim().is_empty() {
                continue;
            }
            match parse_status(s.trim()) {
                Some(status) if !q.statuses.contains(&status) => q.statuses.push(status),
                Some(_) => {}
                None => q.problems.push(format!("unknown status {s:?} (ignored)")),
            }
        }
        for (name, slot) in [("from", &mut q.from), ("to", &mut q.to)] {
            if let Some(text) = params.non_empty(name) {
                match parse_time(&text) {
                    Some(t) => *slot = Some(t),
                    None => q.problems.push(format!(
                        "{name}: {text:?} is not a time (use 2025-01-06T09:00, UTC, or RFC 3339; ignored)"
                    )),
                }
            }
        }
        if let Some(text) = params.non_empty("after") {
            match text.parse::<TaskCursor>() {
                Ok(cursor) => q.after = Some(cursor),
                Err(e) => q.problems.push(format!("{e} (ignored)")),
            }
        }
        q
    }

    /// The filters as query pairs (without the cursor).
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(k) = &self.kind {
            pairs.push(("kind", k.clone()));
        }
        for s in &self.statuses {
            pairs.push(("status", s.as_str().to_owned()));
        }
        if let Some(k) = &self.resource_key {
            pairs.push(("resource_key", k.clone()));
        }
        if let Some(p) = &self.id_prefix {
            pairs.push(("id_prefix", p.clone()));
        }
        if let Some(t) = self.from {
            pairs.push(("from", time(t)));
        }
        if let Some(t) = self.to {
            pairs.push(("to", time(t)));
        }
        pairs
    }

    /// The query string of this list from `after` (or the first page).
    pub(crate) fn href_query(&self, after: Option<&TaskCursor>) -> String {
        let mut pairs = self.pairs();
        if let Some(cursor) = after {
            pairs.push(("after", cursor.to_text()));
        }
        query(pairs.iter().map(|(k, v)| (*k, v.as_str())))
    }

    /// True when some filter is checked here rather than by the store.
    fn scans(&self) -> bool {
        self.id_prefix.is_some() || self.to.is_some()
    }

    fn keeps(&self, task: &Task) -> bool {
        self.id_prefix
            .as_deref()
            .is_none_or(|prefix| task.id.starts_with(prefix))
    }
}

/// One page of the list.
pub(crate) struct Page {
    pub(crate) tasks: Vec<Task>,
    /// Where the next page starts, if there may be one.
    pub(crate) next: Option<TaskCursor>,
    /// The page stopped at [`SCAN_BUDGET`] tasks read.
    pub(crate) budget_spent: bool,
    /// The time statuses were derived at.
    pub(crate) now: DateTime<Utc>,
}

/// The page of `q`: up to [`PAGE_SIZE`] matching tasks after its cursor.
pub(crate) async fn page(manager: &Manager, q: &ListQuery) -> Result<Page, Error> {
    let mut filter = manager.filter();
    let now = filter.now;
    filter.kind = q.kind.clone();
    filter.resource_key = q.resource_key.clone();
    filter.statuses = q.statuses.clone();
    let batch = if q.scans() { SCAN_BATCH } else { PAGE_SIZE + 1 };
    // Creation order: a start time is a cursor before every task created then.
    let mut cursor = q.after.clone().or_else(|| {
        q.from.map(|from| TaskCursor {
            created_at: from,
            id: String::new(),
        })
    });
    let mut matched: Vec<Task> = Vec::new();
    let mut scanned = 0usize;
    loop {
        let mut f = filter.clone();
        f.after = cursor.clone();
        f.limit = Some(batch);
        let tasks = manager.find(f).await?;
        let read = tasks.len();
        let mut past_end = false;
        for task in tasks {
            scanned += 1;
            cursor = Some(TaskCursor::of(&task));
            if q.to.is_some_and(|to| task.created_at > to) {
                past_end = true;
                break;
            }
            if q.keeps(&task) {
                matched.push(task);
                if matched.len() > PAGE_SIZE {
                    break;
                }
            }
        }
        if matched.len() > PAGE_SIZE {
            matched.truncate(PAGE_SIZE);
            let next = matched.last().map(TaskCursor::of);
            return Ok(Page {
                tasks: matched,
                next,
                budget_spent: false,
                now,
            });
        }
        if past_end || read < batch {
            return Ok(Page {
                tasks: matched,
                next: None,
                budget_spent: false,
                now,
            });
        }
        if scanned >= SCAN_BUDGET {
            return Ok(Page {
                tasks: matched,
                next: cursor,
                budget_spent: true,
                now,
            });
        }
    }
}

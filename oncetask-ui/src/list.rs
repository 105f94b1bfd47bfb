//! The task list's filters and keyset pages.
//!
//! Every filter goes to the store ([`oncetask::TaskFilter`]): kind, status,
//! resource key, id prefix, and the creation time range (its start is the
//! first page's cursor, the listing being in creation order). A store that
//! cannot serve a filter from an index (Firestore, see
//! [`oncetask::Store::check_filter`]) refuses it before reading anything;
//! the page asks the same check for each choice it offers.

use chrono::{DateTime, Utc};
use oncetask::{Error, Manager, Task, TaskCursor, TaskFilter, TaskStatus};

use crate::PAGE_SIZE;
use crate::format::{Params, parse_status, parse_time, query, time};

/// The list's filters, as the query string gives them.
#[derive(Debug, Default, Clone)]
pub(crate) struct ListQuery {
    pub(crate) kind: Option<String>,
    pub(crate) statuses: Vec<TaskStatus>,
    /// Only open (not done) tasks.
    pub(crate) open: bool,
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
            open: params.get("open") == Some("1"),
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
        if self.open {
            pairs.push(("open", "1".to_owned()));
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

    /// The store filter of this list's first page (the start time as a
    /// cursor; a page cursor replaces it).
    pub(crate) fn filter(&self, manager: &Manager) -> TaskFilter {
        let mut filter = manager.filter();
        filter.kind = self.kind.clone();
        filter.resource_key = self.resource_key.clone();
        filter.statuses = self.statuses.clone();
        filter.not_done = self.open;
        filter.id_prefix = self.id_prefix.clone();
        filter.created_until = self.to;
        if let Some(from) = self.from {
            filter = filter.created_from(from);
        }
        if let Some(after) = &self.after {
            filter = filter.after(after.clone());
        }
        filter
    }
}

/// One page of the list.
pub(crate) struct Page {
    pub(crate) tasks: Vec<Task>,
    /// Where the next page starts, if there is one.
    pub(crate) next: Option<TaskCursor>,
    /// The time statuses were derived at.
    pub(crate) now: DateTime<Utc>,
}

/// The page of `q`: up to [`PAGE_SIZE`] matching tasks after its cursor,
/// in one store call.
pub(crate) async fn page(manager: &Manager, q: &ListQuery) -> Result<Page, Error> {
    let mut filter = q.filter(manager);
    let now = filter.now;
    // One more than shown, to know whether a next page exists.
    filter.limit = Some(PAGE_SIZE + 1);
    let mut tasks = manager.find(filter).await?;
    let next = if tasks.len() > PAGE_SIZE {
        tasks.truncate(PAGE_SIZE);
        tasks.last().map(TaskCursor::of)
    } else {
        None
    };
    Ok(Page { tasks, next, now })
}

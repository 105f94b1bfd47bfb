//! Listings, counts and the inspector at a cost set by what they return,
//! not by the size of the collection.
//!
//! * `find` reads one page: the list query (equality filters, ordered by
//!   `createdAt` then `__name__`) with a limit, from a cursor. A page costs
//!   its size (plus one read to place a cursor on a whole second, see
//!   [`FirestoreStore::list_cursor`]); status filters are applied on the
//!   client, so a filtered page reads on until it has enough matches.
//! * `count_by_status` runs COUNT aggregations (1 read per 1,000 documents
//!   counted) and reads only the documents the Go package finished, at most
//!   [`GO_FINISHED_READS`] of them.
//! * `find_generators` is one query on `recurrence.rrule` (a page of the
//!   limit); `open_resource_keys` and `find_undecodable` are refused: no
//!   index groups open tasks by key, and no query selects a document by a
//!   field it lacks or holds with the wrong type.
//! * `inspect` is `kinds` (one read per kind), then per kind the counts,
//!   `next_due` and a few limit-1 queries for the oldest pending task.

use std::collections::BTreeMap;

use oncetask_core::store::TaskCursor;
use oncetask_core::{KindStats, QueueStats};

use super::*;
use crate::queries::ListStatuses;

/// Most documents one `count_by_status` reads to find and classify the
/// documents the Go package finished (done, not cancelled, no `outcome`):
/// Go's count rule (`attempts` against the number of `errors`) is no field
/// filter, and Firestore cannot select a missing field, so they are found
/// by reading the done, not-cancelled documents in `doneAt` order. Those
/// not met within this many reads are counted as completed, the status
/// the count rule gives every success (see [`FirestoreStore::count_statuses`]).
pub(crate) const GO_FINISHED_READS: usize = 500;

/// Most limit-1 queries the inspector runs per kind to narrow down when its
/// longest-waiting pending task became ready.
const OLDEST_PENDING_STEPS: usize = 8;

/// Smallest page `find` reads after a page that came short of matches (a
/// status filter on the client, undecodable documents): a larger page
/// costs nothing more per document, and fewer round trips.
const FILTERED_PAGE: usize = 100;

/// Largest page of one query (Firestore's limit is an `i32`).
const MAX_PAGE: usize = 10_000;

/// The outcome sets a listing can ask for, by bit (completed 1, failed 2,
/// cancelled 4).
const OUTCOME_SETS: [&[&str]; 8] = [
    &[],
    &["completed"],
    &["failed"],
    &["completed", "failed"],
    &["cancelled"],
    &["completed", "cancelled"],
    &["failed", "cancelled"],
    &["completed", "failed", "cancelled"],
];

/// Why a status filter is refused, and what is served instead.
const STATUS_REFUSAL: &str = "Firestore lists tasks by status only where an equality filter \
    selects them, in creation order: open tasks as a whole (pending, waiting, leased and \
    cancellation pending together), cancellation pending alone, or finished tasks by outcome \
    (completed, failed, cancelled, in any combination). Pending, waiting and leased depend on \
    the time (leasedUntil and waitUntil against now), so no index lists one of them in \
    creation order without reading the others; their counts are in count_by_status (the \
    overview)";

/// The status selection [`FirestoreStore::find_page`] queries for `filter`
/// (`None`: nothing can match, nothing is read), or
/// [`StoreError::Unsupported`] for a filter no composite index serves: see
/// [`Store::check_filter`].
///
/// Finished statuses are selected by `outcome`, which the Go package does
/// not write: a task it finished is listed only without a status filter.
pub(crate) fn list_statuses(
    filter: &TaskFilter,
) -> Result<Option<ListStatuses<'static>>, StoreError> {
    if filter.priority.is_some() {
        return Err(StoreError::Unsupported(
            "Firestore lists no task by priority: the field has no index (claims order by it \
             within a kind's ready tasks only); list by kind instead"
                .to_owned(),
        ));
    }
    if filter.id_prefix.is_some() {
        return Err(StoreError::Unsupported(
            "Firestore lists tasks in creation order, and an id prefix would read every task \
             before the matching ones: get the task by its whole id instead"
                .to_owned(),
        ));
    }
    let has = |s: TaskStatus| filter.statuses.contains(&s);
    let open = [
        TaskStatus::Pending,
        TaskStatus::Waiting,
        TaskStatus::Leased,
        TaskStatus::CancellationPending,
    ];
    let outcomes = usize::from(has(TaskStatus::Completed))
        | usize::from(has(TaskStatus::Failed)) << 1
        | usize::from(has(TaskStatus::Cancelled)) << 2;
    let open_wanted = open.iter().filter(|s| has(**s)).count();
    let only_cancellation_pending = open_wanted == 1 && has(TaskStatus::CancellationPending);
    let every_open = open_wanted == open.len();
    let statuses = if filter.statuses.is_empty() || (every_open && outcomes == 7) {
        if filter.not_done {
            ListStatuses::NotDone
        } else {
            ListStatuses::Any
        }
    } else if every_open && (outcomes == 0 || filter.not_done) {
        ListStatuses::NotDone
    } else if only_cancellation_pending && (outcomes == 0 || filter.not_done) {
        ListStatuses::CancellationPending
    } else if open_wanted == 0 {
        if filter.not_done {
            return Ok(None);
        }
        ListStatuses::Outcomes(OUTCOME_SETS[outcomes])
    } else {
        return Err(StoreError::Unsupported(STATUS_REFUSAL.to_owned()));
    };
    Ok(Some(statuses))
}

/// The stored-string bound of "created at or before `until`". A whole
/// second is written the Go package's way (`…:05Z`), which sorts after
/// every Rust-written time of that second (`…:05.123Z`): both forms of the
/// second are read, and those of the second past `until` are left out on
/// the client.
fn until_bound(until: DateTime<Utc>) -> String {
    if until.timestamp_subsec_millis() == 0 {
        until.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        format_time(until)
    }
}

pub(super) fn reference(name: &str) -> Value {
    Value {
        value_type: Some(ValueType::ReferenceValue(name.to_owned())),
    }
}

/// A cursor just after `doc` in an order on `fields` then `__name__`, from
/// its stored values; `None` if one is missing.
pub(super) fn cursor_after(doc: &Document, fields: &[&str]) -> Option<Cursor> {
    let mut values = Vec::with_capacity(fields.len() + 1);
    for field in fields {
        values.push(doc.fields.get(*field)?.clone());
    }
    values.push(reference(&doc.name));
    Some(Cursor {
        values,
        before: false,
    })
}

pub(super) fn page_limit(n: usize) -> i32 {
    i32::try_from(n.clamp(1, MAX_PAGE)).unwrap_or(i32::MAX)
}

impl FirestoreStore {
    /// `find`: pages of the list query from the filter's cursor, each with
    /// a limit, until `offset + limit` matches are read.
    ///
    /// The order is the stored strings' order: `createdAt`, then the
    /// document id. Rust writes every time with three fractional digits, so
    /// for its tasks this is [`Task::created_at`] order; a whole-second time
    /// the Go package wrote (`…:05Z`) sorts after the Rust-written times of
    /// its second, as it does in every query.
    pub(super) async fn find_page(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let want = filter.limit.map(|l| l.saturating_add(filter.offset));
        if want == Some(0) {
            return Ok(Vec::new());
        }
        let Some(statuses) = list_statuses(filter)? else {
            return Ok(Vec::new());
        };
        let until = filter.created_until.map(until_bound);
        let list = queries::list_query(
            &self.collection,
            &filter.env,
            filter.kind.as_deref(),
            filter.resource_key.as_deref(),
            statuses,
            until.as_deref(),
        );
        let mut cursor = match &filter.after {
            Some(after) => Some(self.list_cursor(after).await?),
            None => None,
        };
        let mut matched = Vec::new();
        let mut first = true;
        loop {
            // The first page asks for exactly what is missing; a page that
            // came short (status filter, undecodable documents) is followed
            // by larger ones.
            let page = want.map(|w| {
                let missing = w.saturating_sub(matched.len());
                if first {
                    missing
                } else {
                    missing.max(FILTERED_PAGE)
                }
            });
            first = false;
            let mut q = list.clone();
            q.start_at = cursor.take();
            q.limit = page.map(page_limit);
            let docs = self.query(q, None, |_| true).await?;
            let full = page.is_some_and(|p| docs.len() >= p.min(MAX_PAGE));
            cursor = docs
                .last()
                .and_then(|s| cursor_after(&s.doc, &["createdAt"]));
            // Undecodable documents are not listed: the page reads on.
            matched.extend(
                docs.into_iter()
                    .filter_map(|s| s.task.ok())
                    .filter(|t| filter.matches(t)),
            );
            if !full || cursor.is_none() || want.is_some_and(|w| matched.len() >= w) {
                break;
            }
        }
        Ok(matched
            .into_iter()
            .skip(filter.offset)
            .take(filter.limit.unwrap_or(usize::MAX))
            .collect())
    }

    /// [`Store::find_generators`]: the generators query (its own
    /// composite index), one page of `limit` documents; undecodable ones
    /// are left out.
    pub(super) async fn generators(
        &self,
        env: &str,
        limit: usize,
    ) -> Result<Vec<Task>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut q = queries::generators_query(&self.collection, env);
        q.limit = Some(page_limit(limit));
        let docs = self.query(q, None, |_| true).await?;
        Ok(docs
            .into_iter()
            .filter_map(|s| s.task.ok())
            .filter(Task::is_generator)
            .collect())
    }

    /// The list query's cursor just after `after`. Rust stores a time as
    /// `…:05.000Z` and the Go package as `…:05Z`, so for a whole second
    /// the stored string is read (one read) to place the cursor exactly;
    /// if the task is gone, the Rust form is used.
    pub(super) async fn list_cursor(&self, after: &TaskCursor) -> Result<Cursor, StoreError> {
        let mut created = str_value(&format_time(after.created_at));
        // No id sorts before every id (a range's start,
        // `TaskFilter::created_from`): start at the time itself.
        if after.id.is_empty() {
            return Ok(Cursor {
                values: vec![created],
                before: true,
            });
        }
        if after.created_at.timestamp_subsec_millis() == 0
            && let Some(stored) = self
                .batch_get(std::slice::from_ref(&after.id), None)
                .await?
                .remove(&after.id)
            && let Some(
                v @ Value {
                    value_type: Some(ValueType::StringValue(_)),
                },
            ) = stored.doc.fields.get("createdAt")
        {
            created = v.clone();
        }
        Ok(Cursor {
            values: vec![created, reference(&self.doc_name(&after.id))],
            before: false,
        })
    }

    /// `count_by_status`: COUNT aggregations, and a bounded read of the
    /// documents the Go package finished.
    ///
    /// * Each status is one COUNT with field filters on the status fields
    ///   (`doneAt`, `isCancelled`, `outcome`, and `leasedUntil` / `waitUntil`
    ///   against now). Equality and range filters match only values of
    ///   their own type, so together they count exactly the documents whose
    ///   status fields are well-formed. One more COUNT takes every document
    ///   of the env (and kind): the difference is the documents with a
    ///   status field missing or of the wrong type, counted as
    ///   [`StatusCounts::undecodable`].
    /// * A document whose status fields are well-formed but which fails to
    ///   decode for another reason (a payload that is not a map, a negative
    ///   `attempts`, a time string that does not parse) is counted by the
    ///   status its fields give: telling it apart would take reading every
    ///   document. `get` and claims decode, and report it.
    /// * Done, not-cancelled documents without an outcome `completed`,
    ///   `failed` or `cancelled` were finished by the Go package; their status
    ///   follows Go's count rule, which no filter expresses. They are found
    ///   by reading the done, not-cancelled documents in `doneAt` order,
    ///   stopping once all are found, and at most [`GO_FINISHED_READS`]
    ///   documents; any not found by then are counted as completed (the
    ///   count rule's status for a success) and a warning is logged.
    /// * Go's whole-second times make a not-done Go task's status up to
    ///   1 s late, as for claims. The COUNTs are separate reads, not one
    ///   snapshot.
    ///
    /// Cost: 11 COUNTs (1 read each per 1,000 documents counted), plus the
    /// documents read for Go-finished ones (none without them).
    pub(super) async fn count_statuses(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StatusCounts, StoreError> {
        let mut n: HashMap<CountOf, u64> = HashMap::new();
        let now_s = format_time(now);
        for (what, q) in queries::count_queries(&self.collection, env, kind, &now_s) {
            n.insert(what, self.count(q).await?);
        }
        let get = |w: CountOf| n.get(&w).copied().unwrap_or(0);
        let mut counts: StatusCounts = [
            (TaskStatus::Pending, get(CountOf::Pending)),
            (TaskStatus::Waiting, get(CountOf::Waiting)),
            (TaskStatus::Leased, get(CountOf::Leased)),
            (
                TaskStatus::CancellationPending,
                get(CountOf::CancellationPending),
            ),
            (
                TaskStatus::Cancelled,
                get(CountOf::Cancelled) + get(CountOf::CancelledOutcome),
            ),
            (TaskStatus::Completed, get(CountOf::Completed)),
            (TaskStatus::Failed, get(CountOf::Failed)),
        ]
        .into_iter()
        .collect();
        let go_finished = get(CountOf::DoneNotCancelled).saturating_sub(
            get(CountOf::Completed) + get(CountOf::Failed) + get(CountOf::CancelledOutcome),
        );
        if go_finished > 0 {
            let found = self
                .classify_go_finished(env, kind, now, go_finished, &mut counts)
                .await?;
            let rest = go_finished.saturating_sub(found);
            if rest > 0 {
                tracing::warn!(
                    env,
                    kind,
                    rest,
                    "count_by_status: {rest} documents finished by the Go package were not \
                     among the first {GO_FINISHED_READS} done documents read; counted as completed"
                );
                counts.add(TaskStatus::Completed, rest);
            }
        }
        let well_formed: u64 = [
            CountOf::Pending,
            CountOf::Waiting,
            CountOf::Leased,
            CountOf::CancellationPending,
            CountOf::Cancelled,
            CountOf::DoneNotCancelled,
        ]
        .into_iter()
        .map(get)
        .sum();
        counts.undecodable += get(CountOf::All).saturating_sub(well_formed);
        Ok(counts)
    }

    /// Reads done, not-cancelled documents in `doneAt` order until `wanted`
    /// of them carry no oncetask outcome (or [`GO_FINISHED_READS`] are
    /// read), and counts those by their status (or as undecodable). Returns
    /// how many it found.
    async fn classify_go_finished(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
        wanted: u64,
        counts: &mut StatusCounts,
    ) -> Result<u64, StoreError> {
        fn go_finished(s: &Stored) -> bool {
            !matches!(
                s.doc.fields.get("outcome").and_then(|v| v.value_type.as_ref()),
                Some(ValueType::StringValue(o)) if ["completed", "failed", "cancelled"].contains(&o.as_str())
            )
        }
        let mut q = queries::done_not_cancelled_query(&self.collection, env, kind);
        q.limit = Some(page_limit(GO_FINISHED_READS));
        let mut seen = 0;
        let docs = self
            .query(q, None, |s| {
                seen += u64::from(go_finished(s));
                seen < wanted
            })
            .await?;
        let mut found = 0;
        for stored in docs.iter().filter(|s| go_finished(s)) {
            found += 1;
            match &stored.task {
                Ok(task) => counts.add(task.status(now), 1),
                Err(_) => counts.undecodable += 1,
            }
        }
        Ok(found)
    }

    /// When the longest-waiting pending task of `env`/`kind` became ready
    /// ([`Task::ready_since`]: the latest of `createdAt`, `waitUntil` and an
    /// expired `leasedUntil`), without reading the backlog.
    ///
    /// A limit-1 query takes the pending task first in `createdAt` order;
    /// then, while a task may have become ready earlier, the next asks for
    /// one whose three times are all before the best found so far. Each
    /// step is one read and strictly lowers the answer; after
    /// `OLDEST_PENDING_STEPS` (8) steps the best found is returned (it can
    /// then be later than the true oldest). Undecodable documents are
    /// stepped over.
    pub(super) async fn oldest_pending(
        &self,
        env: &str,
        kind: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        const ORDER: [&str; 3] = ["createdAt", "leasedUntil", "waitUntil"];
        let now_s = format_time(now);
        let mut best: Option<DateTime<Utc>> = None;
        let mut cursor = None;
        for _ in 0..OLDEST_PENDING_STEPS {
            let below = best.map(format_time);
            let mut q = queries::oldest_pending_query(
                &self.collection,
                env,
                kind,
                &now_s,
                below.as_deref(),
            );
            q.limit = Some(1);
            q.start_at = cursor.take();
            let Some(first) = self.query(q, None, |_| true).await?.into_iter().next() else {
                break;
            };
            match &first.task {
                Ok(task) => {
                    let since = task.ready_since();
                    best = Some(best.map_or(since, |b| b.min(since)));
                }
                Err(_) => match cursor_after(&first.doc, &ORDER) {
                    Some(after) => cursor = Some(after),
                    None => break,
                },
            }
        }
        Ok(best)
    }

    /// `inspect`: the kinds (one read each), then per kind its counts
    /// ([`FirestoreStore::count_statuses`]), next due time and oldest
    /// pending time ([`FirestoreStore::oldest_pending`], only when a task
    /// is pending). Each figure is its own read, not one snapshot.
    pub(super) async fn inspect_env(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<QueueStats, StoreError> {
        let mut kinds = BTreeMap::new();
        for kind in self.kinds(env).await? {
            let counts = self.count_statuses(env, Some(&kind), now).await?;
            let next_due = self.next_due(env, &kind, now).await?;
            let oldest_pending_since = if counts.count(TaskStatus::Pending) > 0 {
                self.oldest_pending(env, &kind, now).await?
            } else {
                None
            };
            kinds.insert(kind, KindStats::new(counts, oldest_pending_since, next_due));
        }
        Ok(QueueStats::new(env, now, kinds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    fn selection(statuses: &[TaskStatus], not_done: bool) -> Option<Option<ListStatuses<'static>>> {
        let mut filter = TaskFilter::env("e", Utc::now());
        filter.statuses = statuses.to_vec();
        filter.not_done = not_done;
        list_statuses(&filter).ok()
    }

    #[test]
    fn only_statuses_an_equality_selects_are_served() {
        use ListStatuses::{Any, NotDone, Outcomes};
        assert_eq!(selection(&[], false), Some(Some(Any)));
        assert_eq!(selection(&[], true), Some(Some(NotDone)));
        let open = [Pending, Waiting, Leased, CancellationPending];
        assert_eq!(selection(&open, false), Some(Some(NotDone)));
        assert_eq!(selection(&TaskStatus::ALL, false), Some(Some(Any)));
        assert_eq!(
            selection(&[CancellationPending], false),
            Some(Some(ListStatuses::CancellationPending))
        );
        assert_eq!(
            selection(&[Failed, Completed], false),
            Some(Some(Outcomes(&["completed", "failed"])))
        );
        // Finished statuses of open tasks only: nothing to read.
        assert_eq!(selection(&[Failed], true), Some(None));
        // The open tasks of a mixed set, when only open tasks are asked for.
        assert_eq!(selection(&TaskStatus::ALL, true), Some(Some(NotDone)));
        for refused in [&[Pending][..], &[Waiting], &[Leased], &[Pending, Failed]] {
            assert_eq!(selection(refused, false), None, "{refused:?}");
        }
        let mut filter = TaskFilter::env("e", Utc::now());
        filter.priority = Some(1);
        assert!(matches!(
            list_statuses(&filter),
            Err(StoreError::Unsupported(_))
        ));
        let filter = TaskFilter::env("e", Utc::now()).id_prefix("a");
        assert!(matches!(
            list_statuses(&filter),
            Err(StoreError::Unsupported(_))
        ));
    }

    #[test]
    fn a_range_ends_at_the_later_spelling_of_a_whole_second() {
        let whole: DateTime<Utc> = "2026-01-01T00:00:05Z".parse().expect("time");
        assert_eq!(until_bound(whole), "2026-01-01T00:00:05Z");
        assert!(until_bound(whole).as_str() > "2026-01-01T00:00:05.999Z");
        let part = whole + TimeDelta::milliseconds(250);
        assert_eq!(until_bound(part), "2026-01-01T00:00:05.250Z");
    }
}

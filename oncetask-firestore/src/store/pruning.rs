//! [`Store::find_finished`] on Firestore: what a pruner reads, at a cost
//! set by what it prunes rather than by what it keeps.
//!
//! The query is the kind's finished tasks in `doneAt` order (env ==, type
//! ==, `"" < doneAt <= ` the end of the cutoff's second, ordered by `doneAt`
//! and id; composite index `(env, type, doneAt)`), read in pages from a
//! cursor. Status and tombstones are told apart on the client: documents
//! the Go package finished have no `outcome`, full documents no `prunedAt`,
//! and Firestore leaves out every document without a field a query names.
//!
//! Without more, every pass of a pruner would read from the oldest
//! finished task on: through every tombstone still kept and every task of
//! the other statuses, each billed a read, before the few tasks that just
//! passed their retention. So the store keeps, per (env, kind), a **scan
//! position** for each query (status, tombstones or not) in
//! `<collection>-pruning` (one document per env and kind; `expireAt` for a
//! TTL policy, 30 days after the last write): a place in the query's order
//! before which every document, when last read, neither matched the query
//! nor could come to match it (a tombstone for a query of full documents; a
//! task of another status). A call that starts a pass (no cursor, or a
//! cursor before the position) starts at the position instead of the
//! oldest task, and moves it up to the first document it reads that
//! matches (or may: a full document of the status, for a tombstone query),
//! or past everything it read. Documents within [`SCAN_MARGIN`] of the
//! cutoff always count as "may match" (a late writer's clock), so the
//! position stays that far behind. So each task is read about twice over
//! its life by a pruner of one query (once when it is returned, once as a
//! tombstone by the next pass), instead of once per pass.
//!
//! What the position cannot see, and how it is handled: a task stored
//! already finished (a `create` of a done task, e.g. an import) may sort
//! before it; `create` of such a task clears the kind's positions (one
//! delete). A task the pruner was given but did not change stays a match,
//! so the position stays at it and the next pass reads on from there.
//!
//! Each call reads at most [`READ_BUDGET`] documents plus its limit, then
//! returns what it found (possibly nothing); a call that starts a pass has
//! then still moved the position past what it read, so the next pass goes
//! on from there.
//!
//! Cost per call: 1 read of the positions document, the documents read
//! (billed 1 read per document, at least 1 per query), 1 write when the
//! position moved; and when the page filled up on a Rust-spelled `doneAt`,
//! one equality query for the Go package's spelling of the last second
//! (`…:05Z` sorts after every `…:05.xxxZ`; at least 1 read).

use std::collections::HashSet;

use oncetask_core::store::FinishedQuery;

use super::controls::{side_id, timestamp_value};
use super::listing::{cursor_after, page_limit, reference};
use super::*;
use crate::document::due_bound;

/// The suffix of the scan positions' collection, after the task collection's.
pub(crate) const PRUNING_SUFFIX: &str = "-pruning";

/// The fields of a positions document holding one query's position each.
pub(crate) const POSITION_FIELDS: [&str; 6] = [
    "completed",
    "failed",
    "cancelled",
    "completedTombstones",
    "failedTombstones",
    "cancelledTombstones",
];

/// Most documents one call reads beyond its limit before it returns what
/// it found.
pub(crate) const READ_BUDGET: usize = 2_000;

/// How far behind the cutoff a scan position stays: a task finished this
/// close to it may still be written (a writer whose clock lags).
pub(crate) const SCAN_MARGIN: TimeDelta = TimeDelta::minutes(10);

/// How long a positions document is kept after its last write.
const POSITION_KEEP: TimeDelta = TimeDelta::days(30);

/// Smallest page after a page that came short of matches.
const FILTERED_PAGE: usize = 100;

/// A place in the finished query's order: a stored `doneAt` string (either
/// spelling) and a document id; `past` when the place is just after that
/// document rather than at it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    done_at: String,
    id: String,
    past: bool,
}

impl Position {
    fn of(doc: &Document, past: bool) -> Option<Self> {
        let done_at = match doc.fields.get("doneAt")?.value_type.as_ref()? {
            ValueType::StringValue(s) => s.clone(),
            _ => return None,
        };
        Some(Self {
            done_at,
            id: FirestoreStore::id_of(&doc.name),
            past,
        })
    }

    fn decode(v: &Value) -> Option<Self> {
        let Some(ValueType::MapValue(m)) = v.value_type.as_ref() else {
            return None;
        };
        let text = |f: &str| match m.fields.get(f)?.value_type.as_ref()? {
            ValueType::StringValue(s) => Some(s.clone()),
            _ => None,
        };
        let past = matches!(
            m.fields.get("past").and_then(|v| v.value_type.as_ref()),
            Some(ValueType::BooleanValue(true))
        );
        Some(Self {
            done_at: text("doneAt")?,
            id: text("id")?,
            past,
        })
    }

    fn encode(&self) -> Value {
        Value {
            value_type: Some(ValueType::MapValue(
                firestore::gcloud_sdk::google::firestore::v1::MapValue {
                    fields: Fields::from([
                        ("doneAt".to_owned(), str_value(&self.done_at)),
                        ("id".to_owned(), str_value(&self.id)),
                        (
                            "past".to_owned(),
                            Value {
                                value_type: Some(ValueType::BooleanValue(self.past)),
                            },
                        ),
                    ]),
                },
            )),
        }
    }

    /// Whether this place comes before `(done_at, id)` (a document there).
    fn before(&self, done_at: &str, id: &str) -> bool {
        (self.done_at.as_str(), self.id.as_str()) < (done_at, id)
            || (!self.past && (self.done_at.as_str(), self.id.as_str()) == (done_at, id))
    }
}

/// The positions field of `query`; `None` for a status no finished task has.
fn position_field(query: &FinishedQuery) -> Option<&'static str> {
    let i = match query.status {
        TaskStatus::Completed => 0,
        TaskStatus::Failed => 1,
        TaskStatus::Cancelled => 2,
        _ => return None,
    };
    POSITION_FIELDS
        .get(i + if query.tombstones { 3 } else { 0 })
        .copied()
}

/// Whether a document read by `query` keeps the scan position from moving
/// past it: it matches, or may come to match (a full document of the
/// status, which a prune turns into a tombstone; anything within
/// [`SCAN_MARGIN`] of the cutoff). Undecodable documents never match.
fn holds_position(query: &FinishedQuery, task: &Task) -> bool {
    let Some(done_at) = task.done_at else {
        return false;
    };
    if done_at > query.finished_by - SCAN_MARGIN {
        return true;
    }
    task.status(done_at) == query.status && (query.tombstones || !task.is_tombstone())
}

/// The whole second of `t` spelled as the Go package writes it (`…:05Z`).
fn go_second(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl FirestoreStore {
    fn positions_name(&self, env: &str, kind: &str) -> String {
        self.side_name(PRUNING_SUFFIX, &side_id(&[env, kind]))
    }

    /// Forgets the scan positions of these (env, kind) pairs: a task stored
    /// already finished may sort before them. One delete each.
    pub(super) async fn forget_positions<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let mut seen = HashSet::new();
        let writes: Vec<Write> = pairs
            .into_iter()
            .filter(|pair| seen.insert(*pair))
            .map(|(env, kind)| Write {
                operation: Some(Operation::Delete(self.positions_name(env, kind))),
                ..Default::default()
            })
            .collect();
        for result in self.batch_write(writes).await {
            if let Err(s) = result {
                tracing::warn!(code = ?s.code(), message = s.message(),
                    "cannot clear a pruning scan position; tasks stored already finished may wait for it to expire");
            }
        }
    }

    /// [`Store::find_finished`]: see the module docs.
    pub(super) async fn finished_page(
        &self,
        query: &FinishedQuery,
    ) -> Result<Vec<Task>, StoreError> {
        let Some(field) = position_field(query).filter(|_| query.limit > 0) else {
            return Ok(Vec::new());
        };
        let positions = self.positions_name(&query.env, &query.kind);
        let stored = self
            .get_side(std::slice::from_ref(&positions))
            .await?
            .remove(&positions)
            .and_then(|d| d.fields.get(field).and_then(Position::decode));
        let after = query
            .after
            .as_ref()
            .map(|(t, id)| (format_time(*t), id.clone()));
        // A pass starts at the stored position (and may move it); a later
        // page of a pass goes on after its cursor.
        let at_head = match (&after, &stored) {
            (None, _) => true,
            (Some((t, id)), Some(p)) => !p.before(t, id),
            (Some(_), None) => false,
        };
        let mut cursor = if at_head {
            stored.as_ref().map(|p| Cursor {
                values: vec![str_value(&p.done_at), reference(&self.doc_name(&p.id))],
                before: !p.past,
            })
        } else {
            after.as_ref().map(|(t, id)| Cursor {
                values: vec![str_value(t), reference(&self.doc_name(id))],
                before: false,
            })
        };
        let base = queries::finished_query(
            &self.collection,
            &query.env,
            &query.kind,
            &due_bound(query.finished_by),
        );
        let budget = READ_BUDGET + query.limit;
        let mut read = 0;
        let mut matched: Vec<Task> = Vec::new();
        let mut held: Option<Position> = None;
        let mut last: Option<Document> = None;
        let mut filled = false;
        loop {
            let missing = query.limit.saturating_sub(matched.len());
            let page = if read == 0 {
                missing
            } else {
                missing.max(FILTERED_PAGE)
            };
            let page = page.min(budget.saturating_sub(read)).max(1);
            let mut q = base.clone();
            q.start_at = cursor.take();
            q.limit = Some(page_limit(page));
            let docs = self.query(q, None, |_| true).await?;
            read += docs.len().max(1);
            let full = docs.len() >= page;
            for stored in docs {
                if let Ok(task) = &stored.task {
                    if at_head && held.is_none() && holds_position(query, task) {
                        held = Position::of(&stored.doc, false);
                    }
                    if query.matches(task) {
                        matched.push(task.clone());
                    }
                }
                last = Some(stored.doc);
            }
            cursor = last.as_ref().and_then(|d| cursor_after(d, &["doneAt"]));
            if matched.len() >= query.limit {
                filled = true;
                break;
            }
            if !full || cursor.is_none() || read >= budget {
                break;
            }
        }
        if filled {
            self.add_go_second(query, &last, &mut matched).await?;
        }
        matched.sort_by(|a, b| (a.done_at, &a.id).cmp(&(b.done_at, &b.id)));
        matched.truncate(query.limit);
        if at_head {
            let next = held.or_else(|| last.as_ref().and_then(|d| Position::of(d, true)));
            if let Some(next) = next.filter(|n| Some(n) != stored.as_ref()) {
                self.save_position(query, &positions, field, &next).await;
            }
        }
        Ok(matched)
    }

    /// A page that filled up stopped inside the second of its latest task:
    /// documents the Go package finished in that second (`…:05Z`) sort
    /// after every Rust time of it but are earlier (`.000`), so they are
    /// read with one equality query and merged (the caller sorts).
    async fn add_go_second(
        &self,
        query: &FinishedQuery,
        last: &Option<Document>,
        matched: &mut Vec<Task>,
    ) -> Result<(), StoreError> {
        let last_spelled_by_go = last
            .as_ref()
            .and_then(|d| Position::of(d, false))
            .is_some_and(|p| !p.done_at.contains('.'));
        let Some(latest) = matched.iter().filter_map(|t| t.done_at).max() else {
            return Ok(());
        };
        if last_spelled_by_go {
            return Ok(()); // the Go-spelled ones of that second come in id order
        }
        let mut q = queries::finished_at_query(
            &self.collection,
            &query.env,
            &query.kind,
            &go_second(latest),
        );
        q.limit = Some(page_limit(query.limit));
        let have: HashSet<String> = matched.iter().map(|t| t.id.clone()).collect();
        for stored in self.query(q, None, |_| true).await? {
            if let Ok(task) = stored.task
                && query.matches(&task)
                && !have.contains(&task.id)
            {
                matched.push(task);
            }
        }
        Ok(())
    }

    /// Writes one query's scan position (a masked write: the other
    /// queries' positions stay). A failure is logged: the next pass reads
    /// from the old position.
    async fn save_position(
        &self,
        query: &FinishedQuery,
        name: &str,
        field: &str,
        position: &Position,
    ) {
        let fields = Fields::from([
            ("env".to_owned(), str_value(&query.env)),
            ("type".to_owned(), str_value(&query.kind)),
            (
                "expireAt".to_owned(),
                timestamp_value(Utc::now() + POSITION_KEEP),
            ),
            (field.to_owned(), position.encode()),
        ]);
        let write = Write {
            operation: Some(Operation::Update(Document {
                name: name.to_owned(),
                fields,
                ..Default::default()
            })),
            update_mask: Some(DocumentMask {
                field_paths: vec![
                    "env".to_owned(),
                    "type".to_owned(),
                    "expireAt".to_owned(),
                    field.to_owned(),
                ],
            }),
            ..Default::default()
        };
        if let Some(Err(s)) = self.batch_write(vec![write]).await.pop() {
            tracing::warn!(code = ?s.code(), message = s.message(),
                "cannot save a pruning scan position; the next pass reads from the previous one");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(done_at: &str, id: &str, past: bool) -> Position {
        Position {
            done_at: done_at.to_owned(),
            id: id.to_owned(),
            past,
        }
    }

    #[test]
    fn a_position_is_before_what_follows_it_and_at_its_own_document_unless_past() {
        let p = pos("2026-01-01T00:00:01.000Z", "b", false);
        assert!(p.before("2026-01-01T00:00:01.000Z", "b"));
        assert!(p.before("2026-01-01T00:00:01.000Z", "c"));
        assert!(
            p.before("2026-01-01T00:00:01Z", "a"),
            "Go spelling sorts after"
        );
        assert!(!p.before("2026-01-01T00:00:01.000Z", "a"));
        let past = pos("2026-01-01T00:00:01.000Z", "b", true);
        assert!(!past.before("2026-01-01T00:00:01.000Z", "b"));
        assert_eq!(Position::decode(&p.encode()), Some(p));
    }

    #[test]
    fn every_terminal_query_has_its_own_position_field() {
        let now = Utc::now();
        let mut fields = HashSet::new();
        for status in [
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ] {
            let q = FinishedQuery::new("E", "k", status, now);
            fields.insert(position_field(&q).expect("terminal"));
            fields.insert(position_field(&q.tombstones()).expect("terminal"));
        }
        assert_eq!(fields.len(), POSITION_FIELDS.len());
        let pending = FinishedQuery::new("E", "k", TaskStatus::Pending, now);
        assert_eq!(position_field(&pending), None);
    }

    #[test]
    fn go_seconds_are_spelled_without_a_fraction() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:05.250Z")
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(go_second(t), "2026-01-01T00:00:05Z");
    }
}

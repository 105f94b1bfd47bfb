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
//! position stays that far behind. So a task is read about three times
//! over its life by a pruner (when it is tombstoned; once more, as a
//! tombstone, by the next pass's scan of full documents; when its
//! tombstone is deleted), instead of once per pass and status.
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
//! on from there. A position never passes the place [`SCAN_MARGIN`] before
//! the query's cutoff.
//!
//! **One scan for every status.** A prune pass asks for each status in
//! turn (completed, failed, cancelled; then their tombstones), and every
//! one of those queries reads the same documents (the status is told on
//! the client), so three statuses would cost three reads per task. So the
//! first query of a pass to start (the *scanner*) keeps, in memory, a
//! **sweep** of what it reads for the other queries of the same (env,
//! kind): the documents of each other status (full ones, and tombstones),
//! where it started and how far it read, and what holds their positions.
//! A later query of the pass is served from the sweep where the sweep
//! covers its range (no read), reads itself what lies before the sweep's
//! start (its own position may be earlier) and after its end; what it
//! reads after the end extends the sweep (down to its own cutoff, if
//! earlier) for the queries after it. A sweep is
//! dropped when its queries have had their last page, when a new pass
//! starts, after [`SWEEP_IDLE`] unused, or when a task of the kind is
//! stored already finished; it stops growing at [`SWEEP_BYTES`] (the other
//! queries then read the rest themselves). The documents served are as the
//! scan read them: every write of a pruner is fenced on that revision, so a
//! task changed since (by any writer) is left alone, as after any read.
//!
//! **Deletes without a read.** The tasks a call returns are remembered (up
//! to [`RETURNED_TASKS`]); a [`Store::delete`] of one of them at the
//! revision it was returned at is written at once, conditional on that
//! update time (`FirestoreStore::delete_returned`), instead of being read
//! again first.
//!
//! Cost per call: 1 read of the positions document, the documents read
//! (billed 1 read per document, at least 1 per query; none for what a
//! sweep serves), 1 write when the position moved; and when the page
//! filled up on a Rust-spelled `doneAt`, one equality query for the Go
//! package's spelling of the last second (`…:05Z` sorts after every
//! `…:05.xxxZ`; at least 1 read).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

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

/// The statuses a finished task has.
const FINISHED: [TaskStatus; 3] = [
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
];

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

/// `next`, or, when that is later, the place before every document that
/// finished within [`SCAN_MARGIN`] of the query's cutoff or after it: a
/// position never passes documents that may still come to match (a sweep
/// may have read further than the query reaches).
fn cap(next: Position, query: &FinishedQuery) -> Position {
    let cap = Position {
        done_at: format_time(query.finished_by - SCAN_MARGIN),
        id: String::new(),
        past: false,
    };
    if cap.place() < next.place() {
        cap
    } else {
        next
    }
}

/// The whole second of `t` spelled as the Go package writes it (`…:05Z`).
fn go_second(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// How long a sweep serves the other statuses' queries after its last use.
const SWEEP_IDLE: Duration = Duration::from_secs(600);

/// Most bytes (as stored) of documents one sweep keeps for the other
/// statuses' queries; past it the sweep stops growing and they read the
/// rest themselves.
const SWEEP_BYTES: usize = 32 << 20;

/// Most tasks the store remembers as returned by [`Store::find_finished`]
/// (for deletes without a read).
const RETURNED_TASKS: usize = 10_000;

/// A sweep's key: env and kind.
type SweepKey = (String, String);

/// A query a sweep keeps documents for: a status, and tombstones or not.
type Wanted = (TaskStatus, bool);

/// What a store remembers between the calls of a prune pass (see the
/// module docs): the sweeps, and the finished tasks it returned lately.
#[derive(Default)]
pub(crate) struct PruneMemory {
    sweeps: Mutex<HashMap<SweepKey, Sweep>>,
    returned: Mutex<Returned>,
    next_sweep: AtomicU64,
}

/// Finished tasks [`Store::find_finished`] returned, by id, as read.
#[derive(Default)]
struct Returned {
    tasks: HashMap<String, Task>,
    order: VecDeque<String>,
}

/// One scanning query's reads, kept for the other statuses' queries of
/// the same pass.
struct Sweep {
    id: u64,
    /// The status the scanning query asked for.
    scanner: Wanted,
    /// Where the scan started (`None`: at the first document).
    start: Option<Position>,
    /// Past the last document read (`None`: none yet).
    end: Option<Position>,
    /// The scan's upper `doneAt` bound: it reads nothing after it.
    bound: String,
    /// The scan read to the end of its range (every document up to `bound`).
    complete: bool,
    /// The scan stopped recording (too many bytes, or a call skipped ahead).
    frozen: bool,
    /// Per other status: the documents of it read (full ones, or
    /// tombstones), in the query's order.
    found: HashMap<Wanted, BTreeMap<(String, String), Task>>,
    /// For a sweep of tombstones, per other status: the full documents of
    /// it read (they may become tombstones, so they hold its position).
    holders: HashMap<TaskStatus, BTreeSet<(String, String)>>,
    /// The first document read within [`SCAN_MARGIN`] of the scan's cutoff.
    margin_at: Option<Position>,
    bytes: usize,
    touched: Instant,
}

/// How one call reads.
enum Role {
    /// From the store only.
    Plain,
    /// From the store, recording into sweep `id`.
    Scan(u64),
    /// Served from a sweep where it covers the call's range.
    Serve(Box<Served>),
}

/// A sweep's documents of one status, from a call's place on.
struct Served {
    /// The sweep's id: what the call reads after its end extends it.
    id: u64,
    start: Option<Position>,
    end: Option<Position>,
    bound: String,
    complete: bool,
    margin_at: Option<Position>,
    /// The first full document of the status at or after the call's
    /// place, for a query of tombstones.
    first_holder: Option<Position>,
    /// The first document kept for the query at or after the call's place
    /// (whether or not it is past the query's cutoff: it holds the
    /// position either way).
    first_entry: Option<Position>,
    entries: Vec<(Position, Task)>,
}

impl Position {
    /// Its place in the query's order (at a document sorts before past it).
    fn place(&self) -> (&str, &str, bool) {
        (&self.done_at, &self.id, self.past)
    }
}

/// Whether `a` comes before `b` (`None`: the first document's place).
fn earlier(a: Option<&Position>, b: Option<&Position>) -> bool {
    match (a, b) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a.place() < b.place(),
        _ => false,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PruneMemory {
    /// How a call of `query` starting at `place` reads.
    fn role(
        &self,
        key: &SweepKey,
        query: &FinishedQuery,
        place: Option<&Position>,
        at_head: bool,
    ) -> Role {
        let mut sweeps = lock(&self.sweeps);
        sweeps.retain(|_, s| s.touched.elapsed() < SWEEP_IDLE);
        if let Some(s) = sweeps.get_mut(key) {
            // Within the sweep's coverage: up to its end (or its bound, when complete).
            let covered = match (&s.end, place) {
                (_, None) => true,
                (Some(end), Some(p)) if !s.complete => p.place() <= end.place(),
                (_, Some(p)) => s.complete && p.done_at <= s.bound,
            };
            let wanted = (query.status, query.tombstones);
            // A sweep still reading covers what its bound covers; one that
            // read its whole range is read on from after its bound.
            let fits = s.complete || due_bound(query.finished_by) <= s.bound;
            if covered
                && fits
                && let Some(found) = s.found.get(&wanted)
            {
                s.touched = Instant::now();
                // What lies after the sweep's bound is read after it (phase C).
                let last = due_bound(query.finished_by).min(s.bound.clone());
                let mut entries = Vec::new();
                let mut matches = 0;
                for ((done_at, id), task) in found {
                    if done_at.as_str() > last.as_str() {
                        break;
                    }
                    let pos = Position {
                        done_at: done_at.clone(),
                        id: id.clone(),
                        past: false,
                    };
                    if place.is_some_and(|p| !p.before(done_at, id)) {
                        continue;
                    }
                    if query.matches(task) {
                        matches += 1;
                    }
                    entries.push((pos, task.clone()));
                    if matches >= query.limit {
                        break;
                    }
                }
                let first_holder = s
                    .holders
                    .get(&query.status)
                    .filter(|_| query.tombstones)
                    .and_then(|h| {
                        h.iter()
                            .find(|(d, id)| place.is_none_or(|p| p.before(d, id)))
                    })
                    .map(|(d, id)| Position {
                        done_at: d.clone(),
                        id: id.clone(),
                        past: false,
                    });
                let first_entry = found
                    .keys()
                    .find(|(d, id)| place.is_none_or(|p| p.before(d, id)))
                    .map(|(d, id)| Position {
                        done_at: d.clone(),
                        id: id.clone(),
                        past: false,
                    });
                return Role::Serve(Box::new(Served {
                    id: s.id,
                    first_holder,
                    first_entry,
                    start: s.start.clone(),
                    end: s.end.clone(),
                    bound: s.bound.clone(),
                    complete: s.complete,
                    margin_at: s.margin_at.clone(),
                    entries,
                }));
            }
            let continues = !at_head
                && s.scanner == wanted
                && !s.frozen
                && !s.complete
                && !earlier(place, s.start.as_ref())
                && !earlier(s.end.as_ref(), place);
            if continues {
                s.touched = Instant::now();
                return Role::Scan(s.id);
            }
        }
        if !at_head {
            return Role::Plain;
        }
        let id = self.next_sweep.fetch_add(1, Ordering::Relaxed);
        let scanner = (query.status, query.tombstones);
        let found = FINISHED
            .into_iter()
            .flat_map(|s| [(s, false), (s, true)])
            .filter(|w| *w != scanner)
            .map(|w| (w, BTreeMap::new()))
            .collect();
        sweeps.insert(
            key.clone(),
            Sweep {
                id,
                scanner,
                start: place.cloned(),
                end: None,
                bound: due_bound(query.finished_by),
                complete: false,
                frozen: false,
                found,
                holders: HashMap::new(),
                margin_at: None,
                bytes: 0,
                touched: Instant::now(),
            },
        );
        Role::Scan(id)
    }

    /// Records one page of sweep `id`'s scan, read from `from` on; `last`:
    /// the page reached the end of the range.
    fn record(
        &self,
        key: &SweepKey,
        id: u64,
        from: Option<&Position>,
        docs: &[Stored],
        cutoff: DateTime<Utc>,
        last: bool,
    ) {
        let mut sweeps = lock(&self.sweeps);
        let Some(s) = sweeps
            .get_mut(key)
            .filter(|s| s.id == id && !s.frozen && !s.complete)
        else {
            return;
        };
        // No gap: the page starts within what the sweep has read.
        let contiguous = match (&s.end, from) {
            (None, _) => !earlier(from, s.start.as_ref()) && !earlier(s.start.as_ref(), from),
            (Some(end), _) => !earlier(Some(end), from),
        };
        if !contiguous {
            s.frozen = true;
            return;
        }
        // A query reaching less far extends it: it covers up to that bound on.
        let bound = due_bound(cutoff);
        if bound < s.bound {
            s.bound = bound;
        }
        for stored in docs {
            let Some(at) = Position::of(&stored.doc, false) else {
                continue;
            };
            if let Ok(task) = &stored.task
                && let Some(done_at) = task.done_at
            {
                if s.margin_at.is_none() && done_at > cutoff - SCAN_MARGIN {
                    s.margin_at = Some(at.clone());
                }
                let status = task.status(done_at);
                if !task.is_tombstone() && s.found.contains_key(&(status, true)) {
                    s.bytes += 64 + at.done_at.len() + at.id.len();
                    s.holders
                        .entry(status)
                        .or_default()
                        .insert((at.done_at.clone(), at.id.clone()));
                }
                if let Some(found) = s.found.get_mut(&(status, task.is_tombstone())) {
                    s.bytes += stored.doc.encoded_len();
                    if s.bytes > SWEEP_BYTES {
                        s.frozen = true;
                        return;
                    }
                    found.insert((at.done_at.clone(), at.id.clone()), task.clone());
                }
            }
            s.end = Some(Position { past: true, ..at });
        }
        s.complete = last;
        s.touched = Instant::now();
    }

    /// The query of `status` ended its pass: its documents are dropped.
    fn served_all(&self, key: &SweepKey, wanted: Wanted) {
        let mut sweeps = lock(&self.sweeps);
        if let Some(s) = sweeps.get_mut(key) {
            s.found.remove(&wanted);
            if s.found.is_empty() {
                sweeps.remove(key);
            }
        }
    }

    /// Remembers the tasks a call returned (as read).
    fn returned(&self, tasks: &[Task]) {
        let mut r = lock(&self.returned);
        for task in tasks.iter().filter(|t| t.revision.is_some()) {
            if r.tasks.insert(task.id.clone(), task.clone()).is_none() {
                r.order.push_back(task.id.clone());
            }
        }
        while r.order.len() > RETURNED_TASKS {
            if let Some(id) = r.order.pop_front() {
                r.tasks.remove(&id);
            }
        }
    }

    /// The finished task `id` as [`Store::find_finished`] returned it, if
    /// it was returned at `revision` (and is forgotten now).
    pub(super) fn take_returned(&self, id: &str, revision: Revision) -> Option<Task> {
        let mut r = lock(&self.returned);
        if r.tasks
            .get(id)
            .is_some_and(|t| t.revision == Some(revision) && t.is_done())
        {
            return r.tasks.remove(id);
        }
        None
    }

    /// Forgets what was read of these kinds (a task was stored already finished).
    fn forget(&self, env: &str, kind: &str) {
        lock(&self.sweeps).retain(|(e, k), _| e != env || k != kind);
    }
}

/// One call's reads so far.
struct Reading<'q> {
    query: &'q FinishedQuery,
    at_head: bool,
    budget: usize,
    read: usize,
    pages: usize,
    matched: Vec<Task>,
    /// The first document read (or served) that holds the position.
    held: Option<Position>,
    /// Past the last document read (or covered).
    last: Option<Position>,
    /// The stored `doneAt` of the last document read or served.
    last_done_at: Option<String>,
    filled: bool,
    exhausted: bool,
}

impl Reading<'_> {
    fn take(&mut self, at: &Position, task: Option<&Task>) {
        if let Some(task) = task {
            if self.at_head && self.held.is_none() && holds_position(self.query, task) {
                self.held = Some(at.clone());
            }
            if self.query.matches(task) {
                self.matched.push(task.clone());
            }
        }
        self.last_done_at = Some(at.done_at.clone());
        if self.matched.len() >= self.query.limit {
            self.filled = true;
        }
    }

    fn done(&self) -> bool {
        self.filled || self.read >= self.budget
    }
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
            .map(|(env, kind)| {
                self.prune_memory.forget(env, kind);
                Write {
                    operation: Some(Operation::Delete(self.positions_name(env, kind))),
                    ..Default::default()
                }
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
        let after = query.after.as_ref().map(|(t, id)| Position {
            done_at: format_time(*t),
            id: id.clone(),
            past: true,
        });
        // A pass starts at the stored position (and may move it); a later
        // page of a pass goes on after its cursor.
        let at_head = match (&after, &stored) {
            (None, _) => true,
            (Some(a), Some(p)) => !p.before(&a.done_at, &a.id),
            (Some(_), None) => false,
        };
        let place = if at_head { stored.clone() } else { after };
        let key: SweepKey = (query.env.clone(), query.kind.clone());
        let base = queries::finished_query(
            &self.collection,
            &query.env,
            &query.kind,
            &due_bound(query.finished_by),
        );
        let mut r = Reading {
            query,
            at_head,
            budget: READ_BUDGET + query.limit,
            read: 0,
            pages: 0,
            matched: Vec::new(),
            held: None,
            last: None,
            last_done_at: None,
            filled: false,
            exhausted: false,
        };
        let role = self.prune_memory.role(&key, query, place.as_ref(), at_head);
        let served = matches!(role, Role::Serve(_));
        match role {
            Role::Plain => {
                self.read_range(&mut r, &base, place.as_ref(), None, None)
                    .await?;
            }
            Role::Scan(id) => {
                self.read_range(&mut r, &base, place.as_ref(), None, Some((&key, id)))
                    .await?;
            }
            Role::Serve(s) => {
                self.serve(&mut r, &base, place.as_ref(), *s, &key).await?;
            }
        }
        if r.filled {
            self.add_go_second(query, r.last_done_at.as_deref(), &mut r.matched)
                .await?;
        }
        let mut matched = std::mem::take(&mut r.matched);
        matched.sort_by(|a, b| (a.done_at, &a.id).cmp(&(b.done_at, &b.id)));
        matched.truncate(query.limit);
        if at_head {
            let next = r
                .held
                .take()
                .or_else(|| r.last.take())
                .map(|n| cap(n, query));
            if let Some(next) = next.filter(|n| Some(n) != stored.as_ref()) {
                self.save_position(query, &positions, field, &next).await;
            }
        }
        if served && matched.len() < query.limit {
            self.prune_memory
                .served_all(&key, (query.status, query.tombstones));
        }
        self.prune_memory.returned(&matched);
        Ok(matched)
    }

    /// A call served from a sweep: what lies before the sweep's start is
    /// read, then the sweep's documents are taken, then what lies after
    /// the sweep's end is read.
    async fn serve(
        &self,
        r: &mut Reading<'_>,
        base: &StructuredQuery,
        place: Option<&Position>,
        s: Served,
        key: &SweepKey,
    ) -> Result<(), StoreError> {
        if earlier(place, s.start.as_ref())
            && let Some(start) = &s.start
        {
            let end_at = self.cursor_at(start);
            self.read_range(r, base, place, Some(end_at), None).await?;
            if r.done() || !r.exhausted {
                return Ok(());
            }
        }
        let margin = s
            .margin_at
            .filter(|m| !earlier(Some(m), place))
            .filter(|m| !earlier(Some(m), s.start.as_ref()));
        if r.at_head && r.held.is_none() {
            r.held = [s.first_entry, margin, s.first_holder]
                .into_iter()
                .flatten()
                .min_by(|a, b| a.place().cmp(&b.place()));
        }
        for (at, task) in &s.entries {
            if r.query.matches(task) {
                r.matched.push(task.clone());
                r.last_done_at = Some(at.done_at.clone());
            }
            if r.matched.len() >= r.query.limit {
                r.filled = true;
                return Ok(());
            }
        }
        if s.end.is_some() {
            r.last = s.end.clone();
        }
        // After the sweep: after its end, or, when it read its whole range,
        // after its bound (when this query's reaches further).
        r.exhausted = false;
        if s.complete {
            if due_bound(r.query.finished_by) > s.bound {
                let from = Cursor {
                    values: vec![str_value(&s.bound)],
                    before: false,
                };
                self.read_from(r, base, from, None).await?;
            } else {
                r.exhausted = true;
            }
        } else {
            // After what the sweep read (from its start if it read nothing),
            // extending the sweep for the pass's later queries.
            // (This query's bound is at most the sweep's: see `role`.)
            let from = s.end.as_ref().or(s.start.as_ref());
            self.read_range(r, base, from, None, Some((key, s.id)))
                .await?;
        }
        Ok(())
    }

    /// Reads the query's documents from `place` (`None`: the first), up to
    /// `end_at`, in pages, until the call's limit or budget; recording them
    /// into a sweep when given one.
    async fn read_range(
        &self,
        r: &mut Reading<'_>,
        base: &StructuredQuery,
        place: Option<&Position>,
        end_at: Option<Cursor>,
        sweep: Option<(&SweepKey, u64)>,
    ) -> Result<(), StoreError> {
        let cursor = place.map(|p| self.cursor_at(p));
        let mut from = place.cloned();
        let mut cursor = cursor;
        loop {
            let missing = r.query.limit.saturating_sub(r.matched.len());
            let page = if r.pages == 0 {
                missing
            } else {
                missing.max(FILTERED_PAGE)
            };
            let page = page.min(r.budget.saturating_sub(r.read)).max(1);
            let mut q = base.clone();
            q.start_at = cursor.take();
            q.end_at = end_at.clone();
            q.limit = Some(page_limit(page));
            let docs = self.query(q, None, |_| true).await?;
            r.read += docs.len().max(1);
            r.pages += 1;
            let full = docs.len() >= page;
            if let Some((key, id)) = sweep {
                self.prune_memory
                    .record(key, id, from.as_ref(), &docs, r.query.finished_by, !full);
            }
            let mut last_doc = None;
            for stored in docs {
                if let Some(at) = Position::of(&stored.doc, false) {
                    r.take(&at, stored.task.as_ref().ok());
                    r.last = Some(Position { past: true, ..at });
                }
                last_doc = Some(stored.doc);
            }
            cursor = last_doc.as_ref().and_then(|d| cursor_after(d, &["doneAt"]));
            from = r.last.clone();
            r.exhausted = !full;
            if r.filled || !full || cursor.is_none() || r.read >= r.budget {
                return Ok(());
            }
        }
    }

    /// The cursor at (or past) a place; a place with no id (a cap, see
    /// [`cap`]) is before every document of its `doneAt`.
    fn cursor_at(&self, p: &Position) -> Cursor {
        if p.id.is_empty() {
            return Cursor {
                values: vec![str_value(&p.done_at)],
                before: true,
            };
        }
        Cursor {
            values: vec![str_value(&p.done_at), reference(&self.doc_name(&p.id))],
            before: !p.past,
        }
    }

    /// [`Self::read_range`] from a cursor that is no document's place (after a bound).
    async fn read_from(
        &self,
        r: &mut Reading<'_>,
        base: &StructuredQuery,
        from: Cursor,
        end_at: Option<Cursor>,
    ) -> Result<(), StoreError> {
        let missing = r.query.limit.saturating_sub(r.matched.len());
        let page = missing
            .max(FILTERED_PAGE)
            .min(r.budget.saturating_sub(r.read))
            .max(1);
        let mut q = base.clone();
        q.start_at = Some(from);
        q.end_at = end_at;
        q.limit = Some(page_limit(page));
        let docs = self.query(q, None, |_| true).await?;
        r.read += docs.len().max(1);
        r.pages += 1;
        let full = docs.len() >= page;
        let mut last = None;
        for stored in docs {
            if let Some(at) = Position::of(&stored.doc, false) {
                r.take(&at, stored.task.as_ref().ok());
                last = Some(Position { past: true, ..at });
            }
        }
        r.exhausted = !full;
        if let Some(last) = last {
            r.last = Some(last.clone());
            if full && !r.done() {
                return self.read_range(r, base, Some(&last), None, None).await;
            }
        }
        Ok(())
    }

    /// A page that filled up stopped inside the second of its latest task:
    /// documents the Go package finished in that second (`…:05Z`) sort
    /// after every Rust time of it but are earlier (`.000`), so they are
    /// read with one equality query and merged (the caller sorts).
    async fn add_go_second(
        &self,
        query: &FinishedQuery,
        last_done_at: Option<&str>,
        matched: &mut Vec<Task>,
    ) -> Result<(), StoreError> {
        let last_spelled_by_go = last_done_at.is_some_and(|d| !d.contains('.'));
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

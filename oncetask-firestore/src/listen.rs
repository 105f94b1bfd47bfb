//! [`Store::subscribe`](oncetask_core::Store::subscribe) on Firestore: a
//! Listen stream on one env's wake-up signal documents ([`crate::signal`])
//! or on its not-done tasks ([`Source`]), turned into [`Notification`]s,
//! reconnecting (with its resume token) on errors.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use firestore::FirestoreDb;
use firestore::gcloud_sdk::google::firestore::v1::{
    ListenRequest, ListenResponse, Target, Value, listen_request, listen_response, target,
    target_change::TargetChangeType, value::ValueType,
};
use firestore::gcloud_sdk::prost_types::Timestamp;
use firestore::gcloud_sdk::tonic::Streaming;
use futures::StreamExt;
use futures::stream::BoxStream;
use oncetask_core::store::Notification;

use crate::priority::Priorities;
use crate::queries;
use crate::store::Counters;

/// What a listener watches.
pub(crate) enum Source {
    /// The env's signal documents in this collection: a notice for each
    /// kind whose number a write moved.
    Signals(String),
    /// The env's not-done tasks in this collection: a notice for each task
    /// that enters, changes in or leaves that set (but not for a lease).
    Tasks(String),
}

/// The id of the one target of a listen stream.
const TARGET: i32 = 1;

/// First and longest wait before reconnecting after an error.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Whether a task document holds a lease live at this moment (wall clock)
/// and is not cancelled: a change to it (a claim, a heartbeat) makes no work
/// available, so it wakes nobody. A cancelled leased task is news (its
/// worker may want to stop). `Task::is_leased_at` on the three fields it
/// needs: decoding the whole task, payload included, for every delivery
/// would cost more than the wake-up it saves.
fn holds_live_lease(fields: &crate::document::Fields) -> bool {
    let text = |name: &str| match fields.get(name).and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::StringValue(s)) => Some(s.as_str()),
        _ => None,
    };
    let cancelled = matches!(
        fields
            .get("isCancelled")
            .and_then(|v| v.value_type.as_ref()),
        Some(ValueType::BooleanValue(true))
    );
    let done = text("doneAt").is_some_and(|d| !d.is_empty());
    let leased = text("leasedUntil")
        .filter(|l| !l.is_empty())
        .and_then(|l| crate::document::parse_time(l).ok())
        .is_some_and(|until| until > chrono::Utc::now());
    leased && !cancelled && !done
}

/// The state of a subscription between notifications.
struct Listener {
    db: FirestoreDb,
    /// The store's billing counters.
    counters: Arc<Counters>,
    /// Where the store notes kinds that hold prioritized tasks.
    priorities: Arc<Priorities>,
    source: Source,
    env: String,
    /// Where to resume after a reconnect (empty: from a fresh snapshot).
    resume_token: Vec<u8>,
    /// What every document in the target said (a task's kind, or a signal's
    /// numbers by kind) and its update time: removals carry only the
    /// document name, and a document re-sent unchanged (after a reset) is
    /// not news.
    seen: HashMap<String, Seen>,
    /// After a reset: the documents re-sent so far; those not re-sent by the
    /// next `CURRENT` left the target.
    resent: Option<HashSet<String>>,
    /// Whether the first snapshot is complete. Until then the kinds seen
    /// are gathered in `initial` and reported once each when it completes
    /// (the stream connects when first polled: a task created before that is
    /// in the snapshot).
    synced: bool,
    /// Whether the stream is delivering the snapshot of a (re)connect, which
    /// Firestore bills in full; afterwards only changes are billed.
    snapshot: bool,
    initial: BTreeSet<String>,
    /// Kinds to report before reading on.
    queued: VecDeque<String>,
    stream: Option<Streaming<ListenResponse>>,
    retry: Duration,
}

/// What a document of the target said when last delivered.
type Seen = (BTreeMap<String, i64>, Option<Timestamp>);

/// A never-ending stream of notices for `env` from `source`. Billed one
/// read per document of the initial snapshot and one per change after it; a
/// reconnect resumes from the last resume token.
pub(crate) fn subscribe(
    db: FirestoreDb,
    source: Source,
    env: String,
    counters: Arc<Counters>,
    priorities: Arc<Priorities>,
) -> BoxStream<'static, Notification> {
    let listener = Listener {
        db,
        counters,
        priorities,
        source,
        env,
        resume_token: Vec::new(),
        seen: HashMap::new(),
        resent: None,
        synced: false,
        snapshot: false,
        initial: BTreeSet::new(),
        queued: VecDeque::new(),
        stream: None,
        retry: RETRY_MIN,
    };
    futures::stream::unfold(listener, |mut l| async move {
        let kind = l.next_kind().await;
        Some((Notification::touching_claimed(kind), l))
    })
    .boxed()
}

impl Listener {
    /// Waits for the next change and returns its kind.
    async fn next_kind(&mut self) -> String {
        loop {
            if let Some(kind) = self.queued.pop_front() {
                return kind;
            }
            let Some(stream) = self.stream.as_mut() else {
                if let Err(()) = self.connect().await {
                    self.back_off().await;
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(response)) => {
                    self.retry = RETRY_MIN;
                    if let Some(kind) = self.handle(response) {
                        return kind;
                    }
                }
                // The server ended the stream or it failed: resume.
                Ok(None) => {
                    tracing::info!(env = %self.env, retry_in = ?self.retry,
                        "Firestore listen stream ended; reconnecting");
                    self.stream = None;
                    self.back_off().await;
                }
                Err(status) => {
                    tracing::warn!(env = %self.env, code = ?status.code(),
                        message = status.message(), retry_in = ?self.retry,
                        "Firestore listen stream failed; reconnecting");
                    self.stream = None;
                    self.back_off().await;
                }
            }
        }
    }

    async fn back_off(&mut self) {
        tokio::time::sleep(self.retry).await;
        self.retry = (self.retry * 2).min(RETRY_MAX);
    }

    async fn connect(&mut self) -> Result<(), ()> {
        let query = match &self.source {
            Source::Signals(collection) => queries::signal_query(collection, &self.env),
            Source::Tasks(collection) => queries::listen_query(collection, &self.env),
        };
        let add = ListenRequest {
            database: self.db.get_database_path().clone(),
            target_change: Some(listen_request::TargetChange::AddTarget(Target {
                target_id: TARGET,
                target_type: Some(target::TargetType::Query(target::QueryTarget {
                    parent: self.db.get_documents_path().clone(),
                    query_type: Some(target::query_target::QueryType::StructuredQuery(query)),
                })),
                resume_type: (!self.resume_token.is_empty())
                    .then(|| target::ResumeType::ResumeToken(self.resume_token.clone())),
                ..Default::default()
            })),
            ..Default::default()
        };
        // The request stream stays open: closing it would end the listen.
        let requests = futures::stream::iter([add]).chain(futures::stream::pending());
        match self
            .db
            .client()
            .get()
            .listen(crate::routing::request(&self.db, requests))
            .await
        {
            Ok(response) => {
                self.counters.listen_connect();
                self.snapshot = true;
                self.stream = Some(response.into_inner());
                Ok(())
            }
            Err(status) => {
                tracing::warn!(env = %self.env, code = ?status.code(),
                    message = status.message(), retry_in = ?self.retry,
                    "cannot open a Firestore listen stream; retrying");
                Err(())
            }
        }
    }

    /// The kind a response is news about, if any.
    fn handle(&mut self, response: ListenResponse) -> Option<String> {
        use listen_response::ResponseType;
        match response.response_type? {
            ResponseType::TargetChange(change) => {
                if !change.resume_token.is_empty() {
                    self.resume_token = change.resume_token;
                }
                match TargetChangeType::try_from(change.target_change_type) {
                    Ok(TargetChangeType::Current) => {
                        if let Some(resent) = self.resent.take() {
                            let gone: Vec<String> = self
                                .seen
                                .keys()
                                .filter(|name| !resent.contains(*name))
                                .cloned()
                                .collect();
                            let mut kinds = BTreeSet::new();
                            for name in gone {
                                kinds.extend(self.left(&name));
                            }
                            for kind in kinds {
                                if let Some(kind) = self.news(kind) {
                                    self.queued.push_back(kind);
                                }
                            }
                        }
                        self.synced = true;
                        self.snapshot = false;
                        self.queued.extend(std::mem::take(&mut self.initial));
                    }
                    Ok(TargetChangeType::Reset) => self.resent = Some(HashSet::new()),
                    Ok(TargetChangeType::Remove) => {
                        // The server dropped the target (e.g. an error): listen afresh.
                        self.stream = None;
                        self.resume_token.clear();
                    }
                    _ => {}
                }
                None
            }
            ResponseType::DocumentChange(change) => {
                let doc = change.document?;
                let said = match &self.source {
                    Source::Signals(_) => crate::signal::kinds_of(&doc.fields),
                    Source::Tasks(_) => match doc.fields.get("type") {
                        Some(Value {
                            value_type: Some(ValueType::StringValue(k)),
                        }) => BTreeMap::from([(k.clone(), 0)]),
                        _ => {
                            self.bill(true);
                            return None;
                        }
                    },
                };
                if !change.target_ids.contains(&TARGET) {
                    self.bill(true);
                    return self.left_news(&doc.name);
                }
                if let Some(resent) = self.resent.as_mut() {
                    resent.insert(doc.name.clone());
                }
                self.note_priorities(&doc.fields, &said);
                let leased =
                    matches!(self.source, Source::Tasks(_)) && holds_live_lease(&doc.fields);
                let before = self.seen.insert(doc.name, (said.clone(), doc.update_time));
                let unchanged = before
                    .as_ref()
                    .is_some_and(|(kinds, t)| *kinds == said && *t == doc.update_time);
                self.bill(!unchanged);
                if unchanged {
                    return None; // re-sent unchanged
                }
                if leased && self.synced {
                    // A claim or a heartbeat: no work became available
                    // (claims need not notify; the lease's end is found by
                    // the next poll, as after a crash).
                    return None;
                }
                // A task's kind; the kinds whose signal number moved.
                let before = before.map(|(kinds, _)| kinds).unwrap_or_default();
                let tasks = matches!(self.source, Source::Tasks(_));
                let mut moved = said
                    .into_iter()
                    .filter(|(kind, n)| tasks || before.get(kind) != Some(n))
                    .map(|(kind, _)| kind)
                    .collect::<Vec<_>>()
                    .into_iter();
                let first = moved.next()?;
                for kind in moved {
                    if let Some(kind) = self.news(kind) {
                        self.queued.push_back(kind);
                    }
                }
                self.news(first)
            }
            ResponseType::DocumentDelete(delete) => self.removed(&delete.document),
            ResponseType::DocumentRemove(remove) => self.removed(&remove.document),
            ResponseType::Filter(_) => None,
        }
    }

    /// Notes in the store the kinds a delivered document says hold
    /// prioritized tasks: a signal's `prioritized` map, or a not-done task
    /// (of kind `said`) with a priority other than 0.
    fn note_priorities(&self, fields: &crate::document::Fields, said: &BTreeMap<String, i64>) {
        match self.source {
            Source::Signals(_) => {
                for (kind, at) in crate::signal::prioritized_of(fields) {
                    self.priorities.seen_at(&self.env, &kind, at);
                }
            }
            Source::Tasks(_) => {
                let prioritized = matches!(
                    fields
                        .get(crate::document::PRIORITY)
                        .and_then(|v| v.value_type.as_ref()),
                    Some(ValueType::IntegerValue(p)) if *p != 0
                );
                if prioritized {
                    for kind in said.keys() {
                        self.priorities.seen(&self.env, kind);
                    }
                }
            }
        }
    }

    /// A document was deleted or left the target.
    fn removed(&mut self, name: &str) -> Option<String> {
        if !self.seen.contains_key(name) {
            return None;
        }
        self.bill(true);
        self.left_news(name)
    }

    fn left_news(&mut self, name: &str) -> Option<String> {
        let kind = self.left(name)?;
        self.news(kind)
    }

    /// Forgets a document that left the target; the kind that is news: a
    /// task that left the not-done set may have freed its resource key; a
    /// signal document that went away (expired) is no news.
    fn left(&mut self, name: &str) -> Option<String> {
        let (kinds, _) = self.seen.remove(name)?;
        match self.source {
            Source::Tasks(_) => kinds.into_keys().next(),
            Source::Signals(_) => None,
        }
    }

    /// Counts a delivered document as Firestore bills it: every document of
    /// a (re)connect's snapshot, then each real change (entering, changing
    /// in or leaving the result set). Unchanged re-sends after a mid-stream
    /// reset are not counted (the emulator re-sends its whole result set on
    /// every change; production sends changes).
    fn bill(&self, changed: bool) {
        if self.snapshot || changed {
            self.counters.listen_read();
        }
    }

    /// `kind` changed: report it now, or once when the first snapshot completes.
    fn news(&mut self, kind: String) -> Option<String> {
        if self.synced {
            Some(kind)
        } else {
            self.initial.insert(kind);
            None
        }
    }
}

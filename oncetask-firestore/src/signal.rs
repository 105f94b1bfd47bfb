//! Wake-up signals: how one process tells the others that work may be
//! available, without making every process pay a read for every task write.
//!
//! Each [`FirestoreStore`] (with its clones) owns one small document per env
//! in the side collection `<collection>-wakeups`: `env`, the store's
//! `instance` id, a map `kinds` from kind to a sequence number,
//! `expireAt` for a TTL policy, and, only once the store wrote a not-done
//! task with a priority other than 0, a map `prioritized` from each such
//! kind to when it last did (for 10 minutes): listeners note it, so their
//! store's claims of the kind rank by priority over the window of the
//! oldest ready tasks (see [`crate::priority`]). A write that
//! can make work available for a kind (a create, a swap that leaves a task
//! waiting or releases a resource key, a cancel, a delete) bumps that kind's
//! number. The document is written at most once per interval
//! ([`DEFAULT_SIGNAL_INTERVAL`], one second by default): the first
//! signal after a quiet gap at once (after the task write it announces),
//! later ones together at the end of the gap. Listeners
//! ([`crate::listen`]) watch the env's signal documents and report each kind
//! whose number moved.
//!
//! So a listener costs one read per signal write of every process, at most
//! one per process per second, however many tasks those writes announce; a
//! lease or a heartbeat, and the completion of a task without a resource
//! key, signal nothing. A signal may be lost (a process that exits within
//! the gap, a failed write): workers still find the work at their next poll.
//!
//! [`FirestoreStore`]: crate::FirestoreStore

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use firestore::gcloud_sdk::google::firestore::v1::{MapValue, Value, value::ValueType};
use tokio::time::Instant;

use crate::document::Fields;
use crate::priority::PRIORITY_MEMORY;

/// The default shortest time between two signal writes of one store:
/// Firestore sustains about one write per second on one document.
pub const DEFAULT_SIGNAL_INTERVAL: Duration = Duration::from_secs(1);

/// How long a signal document outlives its last write (for a TTL policy on
/// `expireAt`): documents of processes that stopped go away.
const KEEP: TimeDelta = TimeDelta::days(1);

/// The suffix of the signal collection's name, after the task collection's.
pub(crate) const COLLECTION_SUFFIX: &str = "-wakeups";

/// The signals of one store instance (shared by its clones).
pub(crate) struct Signals {
    /// Names this instance's documents, so two processes never write one.
    instance: String,
    /// The shortest time between two writes.
    gap: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per env: this instance's document id and each kind's number.
    envs: HashMap<String, EnvSignal>,
    /// Envs raised since their document was last written.
    pending: BTreeSet<String>,
    /// When a signal document of this instance was last written.
    last_write: Option<Instant>,
    /// Whether a write at the end of the gap is already planned.
    scheduled: bool,
}

struct EnvSignal {
    doc_id: String,
    kinds: BTreeMap<String, i64>,
    /// When this instance last wrote a prioritized task of each kind.
    prioritized: BTreeMap<String, DateTime<Utc>>,
}

/// What a caller of [`Signals::raise`] does next.
pub(crate) enum Raised {
    /// Write these documents now (id, fields).
    Now(Vec<(String, Fields)>),
    /// A write is planned for `at`: start it (the caller spawns it).
    Later(Instant),
    /// Nothing: a planned write carries it.
    Carried,
}

impl Signals {
    pub(crate) fn new(gap: Duration) -> Self {
        Self {
            instance: uuid::Uuid::new_v4().simple().to_string(),
            gap,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that work may be available for each `(env, kind)`, and says
    /// whether to write now, plan a write, or leave it to a planned one.
    pub(crate) fn raise<'a>(
        &self,
        changed: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Raised {
        let mut state = self.state();
        let mut any = false;
        for (env, kind) in changed {
            any = true;
            let signal = state.env(&self.instance, env);
            *signal.kinds.entry(kind.to_owned()).or_insert(0) += 1;
            state.pending.insert(env.to_owned());
        }
        if !any || state.scheduled {
            return Raised::Carried;
        }
        let now = Instant::now();
        match state.last_write {
            Some(last) if now < last + self.gap => {
                state.scheduled = true;
                Raised::Later(last + self.gap)
            }
            _ => Raised::Now(state.take(&self.instance, now)),
        }
    }

    /// Records that this instance wrote a not-done task of (`env`,
    /// `kind`) with a priority other than 0: its signal documents of `env`
    /// say so ([`PRIORITIZED`]) for [`PRIORITY_MEMORY`], so that other
    /// processes' claims of the kind rank their priority window (see
    /// [`crate::priority`]). Written with the next signal of the env.
    pub(crate) fn prioritized(&self, env: &str, kind: &str) {
        let mut state = self.state();
        let signal = state.env(&self.instance, env);
        signal.prioritized.insert(kind.to_owned(), Utc::now());
    }

    /// The shortest time between two writes.
    pub(crate) fn gap(&self) -> Duration {
        self.gap
    }

    /// The planned write at the end of a gap: the documents to write, or
    /// `None` (and the plan is over) when nothing was raised since the last.
    pub(crate) fn due(&self) -> Option<Vec<(String, Fields)>> {
        let mut state = self.state();
        if state.pending.is_empty() {
            state.scheduled = false;
            return None;
        }
        Some(state.take(&self.instance, Instant::now()))
    }
}

impl State {
    /// The signal of `env`, created with this instance's next document id.
    fn env(&mut self, instance: &str, env: &str) -> &mut EnvSignal {
        let n = self.envs.len();
        self.envs
            .entry(env.to_owned())
            .or_insert_with(|| EnvSignal {
                doc_id: format!("{instance}-{n}"),
                kinds: BTreeMap::new(),
                prioritized: BTreeMap::new(),
            })
    }

    /// The pending envs' documents, as written at `now`.
    fn take(&mut self, instance: &str, now: Instant) -> Vec<(String, Fields)> {
        self.last_write = Some(now);
        let expire = Utc::now() + KEEP;
        std::mem::take(&mut self.pending)
            .into_iter()
            .filter_map(|env| {
                let signal = self.envs.get_mut(&env)?;
                let recent = Utc::now() - PRIORITY_MEMORY;
                signal.prioritized.retain(|_, at| *at > recent);
                let fields = fields(&env, instance, signal, expire);
                Some((signal.doc_id.clone(), fields))
            })
            .collect()
    }
}

fn fields(env: &str, instance: &str, signal: &EnvSignal, expire: DateTime<Utc>) -> Fields {
    let value = |v: ValueType| Value {
        value_type: Some(v),
    };
    let kinds = signal
        .kinds
        .iter()
        .map(|(k, n)| (k.clone(), value(ValueType::IntegerValue(*n))))
        .collect();
    let mut fields = Fields::from([
        (
            "env".to_owned(),
            value(ValueType::StringValue(env.to_owned())),
        ),
        (
            "instance".to_owned(),
            value(ValueType::StringValue(instance.to_owned())),
        ),
        (
            "kinds".to_owned(),
            value(ValueType::MapValue(MapValue { fields: kinds })),
        ),
        (
            "expireAt".to_owned(),
            value(ValueType::TimestampValue(timestamp(expire))),
        ),
    ]);
    // Written only when there is something to say: a kind whose tasks are
    // all at priority 0 costs nothing more.
    if !signal.prioritized.is_empty() {
        let prioritized = signal
            .prioritized
            .iter()
            .map(|(k, at)| (k.clone(), value(ValueType::TimestampValue(timestamp(*at)))))
            .collect();
        fields.insert(
            PRIORITIZED.to_owned(),
            value(ValueType::MapValue(MapValue {
                fields: prioritized,
            })),
        );
    }
    fields
}

fn timestamp(t: DateTime<Utc>) -> firestore::gcloud_sdk::prost_types::Timestamp {
    firestore::gcloud_sdk::prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The field of a signal document that maps each kind this instance wrote
/// prioritized tasks of (within [`PRIORITY_MEMORY`]) to when it last did.
pub(crate) const PRIORITIZED: &str = "prioritized";

/// The kinds a signal document as delivered to a listener says were given
/// prioritized tasks lately, with when.
pub(crate) fn prioritized_of(fields: &Fields) -> Vec<(String, DateTime<Utc>)> {
    match fields.get(PRIORITIZED).and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::MapValue(map)) => map
            .fields
            .iter()
            .filter_map(|(kind, v)| match &v.value_type {
                Some(ValueType::TimestampValue(t)) => {
                    let nanos = u32::try_from(t.nanos).ok()?;
                    Some((kind.clone(), DateTime::from_timestamp(t.seconds, nanos)?))
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The kind-to-number map of a signal document as delivered to a listener.
pub(crate) fn kinds_of(fields: &Fields) -> BTreeMap<String, i64> {
    match fields.get("kinds").and_then(|v| v.value_type.as_ref()) {
        Some(ValueType::MapValue(map)) => map
            .fields
            .iter()
            .filter_map(|(kind, v)| match v.value_type {
                Some(ValueType::IntegerValue(n)) => Some((kind.clone(), n)),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn signals_are_written_at_most_once_per_gap_and_none_is_dropped() {
        const GAP: Duration = DEFAULT_SIGNAL_INTERVAL;
        let signals = Signals::new(GAP);
        let Raised::Now(docs) = signals.raise([("E", "a")]) else {
            panic!("the first signal is written at once");
        };
        assert_eq!(docs.len(), 1);
        assert_eq!(kinds_of(&docs[0].1), BTreeMap::from([("a".to_owned(), 1)]));
        // Within the gap: one planned write carries every later signal.
        let Raised::Later(at) = signals.raise([("E", "b")]) else {
            panic!("a second signal within the gap waits");
        };
        assert!(at >= Instant::now() + GAP - Duration::from_millis(1));
        assert!(matches!(signals.raise([("E", "a")]), Raised::Carried));
        assert!(matches!(signals.raise([("F", "a")]), Raised::Carried));
        tokio::time::sleep_until(at).await;
        let docs = signals.due().expect("the planned write");
        let by_id: BTreeMap<_, _> = docs
            .iter()
            .map(|(id, f)| (id.clone(), kinds_of(f)))
            .collect();
        assert_eq!(by_id.len(), 2, "one document per env: {by_id:?}");
        assert!(
            by_id
                .values()
                .any(|k| *k == BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 1)])),
            "{by_id:?}"
        );
        // Nothing raised since: the plan ends, and the next signal after the
        // gap is written at once.
        assert!(signals.due().is_none());
        tokio::time::sleep(GAP).await;
        assert!(matches!(signals.raise([("E", "c")]), Raised::Now(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn signals_name_the_kinds_given_prioritized_tasks_and_only_then() {
        let signals = Signals::new(Duration::ZERO);
        let Raised::Now(docs) = signals.raise([("E", "a")]) else {
            panic!("written at once");
        };
        assert!(
            !docs[0].1.contains_key(PRIORITIZED),
            "no field while every task is at priority 0"
        );
        assert!(prioritized_of(&docs[0].1).is_empty());
        let before = Utc::now();
        signals.prioritized("E", "b");
        signals.prioritized("F", "c");
        let Raised::Now(docs) = signals.raise([("E", "b")]) else {
            panic!("written at once");
        };
        assert_eq!(docs.len(), 1, "only the env raised");
        let said = prioritized_of(&docs[0].1);
        let kinds: Vec<&str> = said.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["b"]);
        assert!(said[0].1 >= before - TimeDelta::milliseconds(1));
        // Later writes of the env keep saying it (for the memory).
        let Raised::Now(docs) = signals.raise([("E", "a")]) else {
            panic!("written at once");
        };
        assert_eq!(prioritized_of(&docs[0].1).len(), 1);
    }
}

//! What the store keeps beside the tasks, in side collections the Go
//! package never reads (as the wake-up signals and the resource-key locks):
//!
//! * **Paused kinds**: one document per env in `<collection>-controls`
//!   (`env`, and `paused`, a map from each paused kind to when it was
//!   paused). [`Store::paused_kinds`] reads it by id: 1 read, whatever the
//!   number of kinds (a missing document is billed 1 read too), so a
//!   manager that re-reads it at each poll stays within the idle budget.
//!   [`Store::set_paused`] reads it and rewrites it conditional on the
//!   update time it read (1 read, 1 write; a concurrent change makes it
//!   read and decide again); a change then raises the kind's wake-up
//!   signal ([`crate::signal`]), which listeners report as a notice with
//!   `may_touch_claimed` set, so other processes re-read the paused kinds
//!   within about a second. (Listeners in [`crate::Wakeups::TaskChanges`]
//!   mode watch tasks, not signals: they see the change at their next poll.)
//! * **Rate limiters**: one document per (env, kind, resource key or none)
//!   in `<collection>-limiters`: `env`, `type`, `resourceKey` (`""` for the
//!   kind's own limiter), `windowStart` (timestamp), `taken` (integer) and
//!   `expireAt` (the window's end + 1 day, for a TTL policy: a limiter may
//!   be forgotten once its window has ended). Taking from the document is
//!   a read-modify-write: one BatchGet reads the limiters of every request
//!   of a call, [`StartsRequest::grant`] decides, and one BatchWrite writes
//!   each changed limiter conditional on the update time read, so two
//!   processes never both take the same starts; a request whose write lost
//!   its precondition is read and decided again (up to
//!   [`LIMITER_ATTEMPTS`] rounds, after a short random wait; one still
//!   undecided then is granted 0, never too many). Requests of one call on
//!   the same limiter are decided in order on one read and written once.
//!
//! **Grants in chunks.** Firestore sustains about one write per second on
//! one document, so a store does not write a limiter per claim: it takes
//! a **chunk** of at least [`chunk`] starts (a second's worth at the
//! limit's rate, the whole window for windows of a second or less) and
//! keeps what the request did not need in a per-store **reserve** for that
//! window. [`Store::take_starts`] serves from the reserve first (no read,
//! no write) and asks the document only for what the reserve lacks (takes
//! that go to the documents are serialized per store, so concurrent claim
//! loops of one process share one chunk); [`Store::return_starts`] puts
//! starts back in the reserve while their window lasts (no write). A
//! reserve ends with its window: starts taken and not used are lost, so a
//! window runs short, never over; across processes no more than the limit
//! is ever granted (each start comes from the document once). So each
//! process writes a limiter at most about once per second while it starts
//! tasks at the limit's rate, whatever its claim size: the document sees
//! about one write per second per process drawing from it. Fairness: with
//! windows of a second or less, the first process to ask in a window takes
//! all of it, and the others wait for the next window (on average each
//! gets its share over many windows).

use std::collections::HashMap;
use std::time::Duration;

use firestore::gcloud_sdk::google::firestore::v1::MapValue;
use oncetask_core::store::StartsRequest;

use super::*;

/// Rounds of read, decide and conditional write a limiter request gets
/// before it is granted 0 (contention on one limiter document).
pub(crate) const LIMITER_ATTEMPTS: usize = 24;

/// Rounds of a pause change under contention.
const PAUSE_ATTEMPTS: usize = 10;

/// How long a limiter document is kept after its window ends (for the
/// TTL policy on `expireAt`).
const LIMITER_KEEP: TimeDelta = TimeDelta::days(1);

/// The suffixes of the side collections' names, after the task collection's.
pub(crate) const CONTROLS_SUFFIX: &str = "-controls";
pub(crate) const LIMITERS_SUFFIX: &str = "-limiters";

/// The field of a controls document mapping each paused kind to when it
/// was paused.
pub(crate) const PAUSED: &str = "paused";

/// A limiter's stored window: its start and the starts taken in it.
type Window = Option<(DateTime<Utc>, u32)>;

/// The id of a side document named by `parts`: the parts in hex, joined by
/// a NUL (any characters are allowed in them, `/` included, and a missing
/// trailing part differs from an empty one), or, when that would pass
/// Firestore's 1 500-byte limit on ids, a name-based UUID (v5) of them.
pub(crate) fn side_id(parts: &[&str]) -> String {
    let raw = parts.join("\u{0}");
    if raw.len() <= 700 {
        raw.bytes().map(|b| format!("{b:02x}")).collect()
    } else {
        format!(
            "uuid-{}",
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, raw.as_bytes()).simple()
        )
    }
}

pub(crate) fn timestamp_value(t: DateTime<Utc>) -> Value {
    Value {
        value_type: Some(ValueType::TimestampValue(Timestamp {
            seconds: t.timestamp(),
            nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
        })),
    }
}

fn timestamp_of(v: Option<&Value>) -> Option<DateTime<Utc>> {
    match v?.value_type.as_ref()? {
        ValueType::TimestampValue(t) => {
            DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
        }
        _ => None,
    }
}

fn integer_value(n: i64) -> Value {
    Value {
        value_type: Some(ValueType::IntegerValue(n)),
    }
}

/// The window a limiter document holds (`None`: no document, or one this
/// version cannot read, which the next grant replaces).
fn window_of(doc: Option<&Document>) -> Window {
    let doc = doc?;
    let start = timestamp_of(doc.fields.get("windowStart"))?;
    let taken = match doc.fields.get("taken")?.value_type.as_ref()? {
        ValueType::IntegerValue(n) => u32::try_from(*n).ok()?,
        _ => return None,
    };
    Some((start, taken))
}

/// The precondition that a side document is as read (absent: still absent).
fn as_read(doc: Option<&Document>) -> Precondition {
    Precondition {
        condition_type: Some(match doc.and_then(|d| d.update_time) {
            Some(t) => ConditionType::UpdateTime(t),
            None => ConditionType::Exists(false),
        }),
    }
}

/// A short random wait before a limiter round retries, growing with the
/// round (up to about 100 ms), so that contenders spread out.
async fn limiter_pause(round: usize) {
    let cap = 5u64 << round.min(4);
    let ms = u64::try_from(claim::random_below(usize::try_from(cap).unwrap_or(80))).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms + 1)).await;
}

impl FirestoreStore {
    pub(crate) fn side_name(&self, suffix: &str, id: &str) -> String {
        format!(
            "{}/{}{suffix}/{id}",
            self.db.get_documents_path(),
            self.collection
        )
    }

    /// Reads side documents by full name (each billed one read, found or
    /// not); the found ones by name.
    pub(crate) async fn get_side(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, Document>, StoreError> {
        let found = self.get_documents(names.to_vec(), None).await?;
        Ok(found
            .into_iter()
            .map(|doc| (doc.name.clone(), doc))
            .collect())
    }

    fn controls_name(&self, env: &str) -> String {
        self.side_name(CONTROLS_SUFFIX, &side_id(&[env]))
    }

    fn limiter_name(&self, r: &StartsRequest) -> String {
        let id = match &r.resource_key {
            Some(key) => side_id(&[&r.env, &r.kind, key]),
            None => side_id(&[&r.env, &r.kind]),
        };
        self.side_name(LIMITERS_SUFFIX, &id)
    }

    /// [`Store::set_paused`]: see the module docs.
    pub(super) async fn set_kind_paused(
        &self,
        env: &str,
        kind: &str,
        paused: bool,
    ) -> Result<bool, StoreError> {
        let name = self.controls_name(env);
        for _ in 0..PAUSE_ATTEMPTS {
            let doc = self
                .get_side(std::slice::from_ref(&name))
                .await?
                .remove(&name);
            let mut kinds = paused_map(doc.as_ref());
            let changed = if paused {
                if kinds.contains_key(kind) {
                    false
                } else {
                    kinds.insert(kind.to_owned(), timestamp_value(Utc::now()));
                    true
                }
            } else {
                kinds.remove(kind).is_some()
            };
            if !changed {
                return Ok(false);
            }
            let write = Write {
                operation: Some(Operation::Update(Document {
                    name: name.clone(),
                    fields: Fields::from([
                        ("env".to_owned(), str_value(env)),
                        (
                            PAUSED.to_owned(),
                            Value {
                                value_type: Some(ValueType::MapValue(MapValue { fields: kinds })),
                            },
                        ),
                    ]),
                    ..Default::default()
                })),
                current_document: Some(as_read(doc.as_ref())),
                ..Default::default()
            };
            match self.batch_write(vec![write]).await.pop() {
                Some(Ok(_)) => {
                    // Other processes' managers re-read the paused kinds.
                    self.signal([(env, kind)]).await;
                    return Ok(true);
                }
                Some(Err(s)) if claim::lost_race(&s) => continue,
                Some(Err(s)) => return Err(status_error(s)),
                None => return Err(StoreError::Unavailable("no write result".into())),
            }
        }
        Err(StoreError::Unavailable(format!(
            "the paused kinds of env {env:?} kept changing; try again"
        )))
    }

    /// [`Store::paused_kinds`]: one read.
    pub(super) async fn read_paused_kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        let name = self.controls_name(env);
        let doc = self
            .get_side(std::slice::from_ref(&name))
            .await?
            .remove(&name);
        let mut kinds: Vec<String> = paused_map(doc.as_ref()).into_keys().collect();
        kinds.sort();
        Ok(kinds)
    }

    /// Takes starts from the limiter documents (a read and a conditional
    /// write per limiter): the starts each request was granted.
    pub(super) async fn draw_starts(
        &self,
        requests: &[StartsRequest],
    ) -> Result<Vec<u32>, StoreError> {
        let mut granted = vec![0u32; requests.len()];
        // The requests of each limiter, in input order.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, r) in requests.iter().enumerate() {
            if r.count == 0 || r.limit == 0 {
                continue; // nothing to take: no read
            }
            let name = self.limiter_name(r);
            match index.get(&name) {
                Some(&g) => groups[g].1.push(i),
                None => {
                    index.insert(name.clone(), groups.len());
                    groups.push((name, vec![i]));
                }
            }
        }
        for round in 0..LIMITER_ATTEMPTS {
            if groups.is_empty() {
                break;
            }
            if round > 0 {
                limiter_pause(round).await;
            }
            let names: Vec<String> = groups.iter().map(|(n, _)| n.clone()).collect();
            let mut stored = self.get_side(&names).await?;
            let mut writes = Vec::new();
            let mut sent = Vec::new();
            for (name, members) in std::mem::take(&mut groups) {
                let doc = stored.remove(&name);
                let before = window_of(doc.as_ref());
                let mut window = before;
                let mut answers = Vec::with_capacity(members.len());
                for &i in &members {
                    let (n, next) = requests[i].grant(window);
                    // Granting nothing changes nothing that matters: an
                    // older window counts as none anyway.
                    if n > 0 {
                        window = next;
                    }
                    answers.push((i, n));
                }
                if window == before {
                    continue; // a full or lagging window: answered by the read
                }
                let Some((start, taken)) = window else {
                    continue;
                };
                let r = &requests[members[0]];
                let end = members
                    .iter()
                    .map(|&i| requests[i].window_end())
                    .max()
                    .unwrap_or(start);
                let write = Write {
                    operation: Some(Operation::Update(Document {
                        name: name.clone(),
                        fields: Fields::from([
                            ("env".to_owned(), str_value(&r.env)),
                            ("type".to_owned(), str_value(&r.kind)),
                            (
                                "resourceKey".to_owned(),
                                str_value(r.resource_key.as_deref().unwrap_or("")),
                            ),
                            ("windowStart".to_owned(), timestamp_value(start)),
                            ("taken".to_owned(), integer_value(i64::from(taken))),
                            ("expireAt".to_owned(), timestamp_value(end + LIMITER_KEEP)),
                        ]),
                        ..Default::default()
                    })),
                    current_document: Some(as_read(doc.as_ref())),
                    ..Default::default()
                };
                writes.push(write);
                sent.push((name, members, answers));
            }
            for ((name, members, answers), result) in
                sent.into_iter().zip(self.batch_write(writes).await)
            {
                match result {
                    Ok(_) => {
                        for (i, n) in answers {
                            granted[i] = n;
                        }
                    }
                    // Another process wrote the limiter since the read.
                    Err(s) if claim::lost_race(&s) => groups.push((name, members)),
                    // Granting nothing is safe (a start may be lost, never doubled).
                    Err(s) => tracing::warn!(code = ?s.code(), message = s.message(),
                        "cannot write a rate limiter; its requests are granted nothing"),
                }
            }
        }
        if !groups.is_empty() {
            tracing::warn!(
                limiters = groups.len(),
                "rate limiters kept changing under concurrent writers; their requests are granted nothing"
            );
        }
        Ok(granted)
    }
}

/// Starts this store took from limiter documents and has not handed out
/// yet, per limiter, for one window (see the module docs).
#[derive(Default)]
pub(crate) struct Reserves {
    /// Serializes the takes that ask a limiter document, so concurrent
    /// callers of one process share one grant instead of writing each.
    gate: tokio::sync::Mutex<()>,
    /// Per limiter document: its window's start and end, and the starts left.
    left: std::sync::Mutex<HashMap<String, Reserve>>,
}

/// Most limiters a store keeps reserves for (past it, those of the oldest
/// windows are forgotten; a reserve is otherwise replaced by its
/// limiter's next window).
const MAX_RESERVES: usize = 10_000;

/// One limiter's reserve: its window's start and end, and the starts left.
type Reserve = (DateTime<Utc>, DateTime<Utc>, u32);

/// How many starts a take asks a limiter document for at least: a
/// second's worth at the limit's rate (the whole window for windows of a
/// second or less), so one process writes the document about once per
/// second however many starts it hands out.
pub(crate) fn chunk(r: &StartsRequest) -> u32 {
    let per_second = (u64::from(r.limit) * 1_000).div_ceil(r.period_ms.max(1));
    u32::try_from(per_second)
        .unwrap_or(u32::MAX)
        .clamp(1, r.limit.max(1))
}

impl FirestoreStore {
    /// [`Store::take_starts`]: from this store's reserve first; what it
    /// lacks is asked of the limiter documents in chunks of at least
    /// [`chunk`], and the rest of a chunk is kept in the reserve for the
    /// window.
    pub(super) async fn take_reserved(
        &self,
        requests: &[StartsRequest],
    ) -> Result<Vec<u32>, StoreError> {
        let _gate = self.reserves.gate.lock().await;
        let mut granted = vec![0u32; requests.len()];
        // Per limiter lacking starts: the requests and what each lacks.
        let mut lacking: Vec<(String, Vec<(usize, u32)>)> = Vec::new();
        {
            let mut left = self
                .reserves
                .left
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if left.len() > MAX_RESERVES {
                // Forget the limiters of the oldest windows.
                let mut ends: Vec<DateTime<Utc>> = left.values().map(|(_, end, _)| *end).collect();
                ends.sort_unstable();
                let cut = ends[ends.len() - MAX_RESERVES / 2];
                left.retain(|_, (_, end, _)| *end >= cut);
            }
            for (i, r) in requests.iter().enumerate() {
                if r.count == 0 || r.limit == 0 {
                    continue;
                }
                let name = self.limiter_name(r);
                let mut need = r.count;
                match left.get_mut(&name) {
                    Some((start, _, n)) if *start == r.window_start => {
                        let g = need.min(*n);
                        *n -= g;
                        granted[i] = g;
                        need -= g;
                    }
                    // A window this store has seen end: nothing.
                    Some((start, _, _)) if *start > r.window_start => need = 0,
                    _ => {}
                }
                if need > 0 {
                    match lacking.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, members)) => members.push((i, need)),
                        None => lacking.push((name, vec![(i, need)])),
                    }
                }
            }
        }
        if lacking.is_empty() {
            return Ok(granted);
        }
        let asks: Vec<StartsRequest> = lacking
            .iter()
            .map(|(_, members)| {
                let mut ask = requests[members[0].0].clone();
                let total = members
                    .iter()
                    .map(|(_, n)| *n)
                    .fold(0u32, u32::saturating_add);
                ask.count = total.max(chunk(&ask));
                ask
            })
            .collect();
        let got = self.draw_starts(&asks).await?;
        let mut left = self
            .reserves
            .left
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (((name, members), ask), mut g) in lacking.into_iter().zip(&asks).zip(got) {
            for (i, need) in members {
                let give = need.min(g);
                granted[i] += give;
                g -= give;
            }
            let entry = left
                .entry(name)
                .or_insert((ask.window_start, ask.window_end(), 0));
            if entry.0 != ask.window_start {
                *entry = (ask.window_start, ask.window_end(), 0);
            }
            entry.2 = entry.2.saturating_add(g);
        }
        Ok(granted)
    }

    /// [`Store::return_starts`]: starts given back while their window
    /// lasts go back to this store's reserve (no write); others are gone
    /// with their window.
    pub(super) fn return_reserved(&self, requests: &[StartsRequest]) {
        let mut left = self
            .reserves
            .left
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in requests.iter().filter(|r| r.count > 0) {
            if let Some((start, _, n)) = left.get_mut(&self.limiter_name(r))
                && *start == r.window_start
            {
                *n = n.saturating_add(r.count);
            }
        }
    }
}

/// The `paused` map of a controls document (empty without one).
fn paused_map(doc: Option<&Document>) -> Fields {
    match doc
        .and_then(|d| d.fields.get(PAUSED))
        .and_then(|v| v.value_type.as_ref())
    {
        Some(ValueType::MapValue(m)) => m.fields.clone(),
        _ => Fields::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_a_seconds_worth_of_starts_and_at_most_the_limit() {
        let now = Utc::now();
        let chunk_of = |period_ms, limit| {
            chunk(&StartsRequest::new(
                "E", "k", None, now, period_ms, limit, 1,
            ))
        };
        assert_eq!(chunk_of(1_000, 100), 100, "a 1 s window: all of it");
        assert_eq!(chunk_of(100, 5), 5, "a shorter window: all of it");
        assert_eq!(chunk_of(60_000, 600), 10, "a minute: 10 a second");
        assert_eq!(chunk_of(60_000, 30), 1, "at least 1");
        assert_eq!(chunk_of(10_000, 100), 10);
    }

    #[test]
    fn side_ids_tell_a_missing_part_from_an_empty_one_and_stay_short() {
        assert_ne!(side_id(&["E", "k"]), side_id(&["E", "k", ""]));
        assert_eq!(side_id(&["E"]), "45");
        let long = "x".repeat(2_000);
        let id = side_id(&["E", &long]);
        assert!(id.starts_with("uuid-") && id.len() < 100, "{id}");
        assert_eq!(id, side_id(&["E", &long]), "stable");
    }
}

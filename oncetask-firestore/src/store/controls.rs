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
//!   be forgotten once its window has ended). A request is a
//!   read-modify-write of its document: one BatchGet reads the limiters of
//!   every request of a call, [`StartsRequest::grant`] decides, and one
//!   BatchWrite writes each changed limiter conditional on the update time
//!   read, so two processes never both take the same starts; a request
//!   whose write lost its precondition is read and decided again (up to
//!   [`LIMITER_ATTEMPTS`] rounds, after a short random wait; one still
//!   undecided then is granted 0, never too many). Requests of one call on
//!   the same limiter are decided in order on one read and written once.
//!   Cost: 1 read per limiter and call, plus 1 write when it grants
//!   something (a full or lagging window is answered with the read alone);
//!   [`Store::return_starts`] is the same, writing only when it lowers the
//!   count.
//!
//! Firestore sustains about one write per second on one document, so a
//! limiter document takes about one grant per second, from all processes
//! together (short bursts above that are absorbed with latency and
//! retries): the limit itself (starts per period) is not bounded by it,
//! the number of grant writes is. Managers take several starts per request
//! (a claim's worth), so a kind limited to 100 starts/s costs a few grant
//! writes per second however many tasks start, and a per-key limiter costs
//! at most one write per grant of that key.

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

    /// [`Store::take_starts`] (`take`) and [`Store::return_starts`]: see
    /// the module docs. The starts each request granted (given back: 0).
    pub(super) async fn draw_starts(
        &self,
        requests: &[StartsRequest],
        take: bool,
    ) -> Result<Vec<u32>, StoreError> {
        let mut granted = vec![0u32; requests.len()];
        // The requests of each limiter, in input order.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, r) in requests.iter().enumerate() {
            if r.count == 0 || (take && r.limit == 0) {
                continue; // nothing to take or give: no read
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
                    let r = &requests[i];
                    if take {
                        let (n, next) = r.grant(window);
                        // Granting nothing changes nothing that matters: an
                        // older window counts as none anyway.
                        if n > 0 {
                            window = next;
                        }
                        answers.push((i, n));
                    } else {
                        window = r.give_back(window);
                    }
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
    fn side_ids_tell_a_missing_part_from_an_empty_one_and_stay_short() {
        assert_ne!(side_id(&["E", "k"]), side_id(&["E", "k", ""]));
        assert_eq!(side_id(&["E"]), "45");
        let long = "x".repeat(2_000);
        let id = side_id(&["E", &long]);
        assert!(id.starts_with("uuid-") && id.len() < 100, "{id}");
        assert_eq!(id, side_id(&["E", &long]), "stable");
    }
}

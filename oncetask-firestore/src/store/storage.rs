//! [`Store::storage_stats`] on Firestore: document counts from COUNT
//! aggregations, bytes estimated by Firestore's storage-size rules on a
//! sample.
//!
//! * Counts per status are those of `count_by_status` (10 COUNTs, and the
//!   documents the Go package finished read, at most 500; see
//!   [`FirestoreStore::count_statuses`]). Tombstones are counted apart by 5
//!   COUNTs on `prunedAt` (every tombstone has it), per status where a
//!   filter expresses it (`isCancelled`, `outcome`); tombstones of tasks
//!   the Go package finished carry no outcome and are read (at most
//!   [`GO_FINISHED_READS`]; any beyond count as completed), then every
//!   tombstone is taken out of its status's count.
//! * Bytes: up to [`SAMPLE`] full documents of each status (and of the
//!   tombstones) are read, each sized by Firestore's documented rules (the
//!   document name's ids + 16, each field name + 1 and value, + 32:
//!   [`limits::document_size`]), and their mean times the count is the
//!   estimate. Index entries are not included (Firestore bills them as
//!   storage too). A status whose sample held no full document (every one
//!   read was a tombstone) has no byte figure.
//!
//! Cost: 15 COUNTs (1 read each per 1,000 documents counted, at least
//! one), the Go-finished documents and tombstones read (none without
//! them), and at most about 3 × [`SAMPLE`] reads per status and for the
//! tombstones (10 to 30 per status present; at least 1 per query).

use std::collections::BTreeMap;

use oncetask_core::store::{StorageStats, StoredSize};

use super::listing::{GO_FINISHED_READS, page_limit};
use super::*;
use crate::queries::TombstonesOf;

/// Documents sized per status.
pub(crate) const SAMPLE: usize = 10;

/// Documents one sample query reads at most while looking for full
/// documents among tombstones.
const SAMPLE_READS: usize = 3 * SAMPLE;

impl FirestoreStore {
    /// [`Store::storage_stats`]: see the module docs.
    pub(super) async fn storage_of(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<StorageStats, StoreError> {
        let counts = self.count_statuses(env, None, now).await?;
        let mut tombs: HashMap<TombstonesOf, u64> = HashMap::new();
        for (what, q) in queries::tombstone_count_queries(&self.collection, env) {
            tombs.insert(what, self.count(q).await?);
        }
        let get = |w: TombstonesOf| tombs.get(&w).copied().unwrap_or(0);
        let mut tombstones_by_status: BTreeMap<TaskStatus, u64> = BTreeMap::from([
            (
                TaskStatus::Cancelled,
                get(TombstonesOf::Cancelled) + get(TombstonesOf::CancelledOutcome),
            ),
            (TaskStatus::Completed, get(TombstonesOf::Completed)),
            (TaskStatus::Failed, get(TombstonesOf::Failed)),
        ]);
        let classified: u64 = tombstones_by_status.values().sum();
        let go = get(TombstonesOf::All).saturating_sub(classified);
        if go > 0 {
            self.classify_go_tombstones(env, now, go, &mut tombstones_by_status)
                .await?;
        }
        let mut stats = StorageStats::new(format!(
            "documents: COUNT aggregations per status (tombstones by `prunedAt`; Go-finished \
             documents classified by reading at most {GO_FINISHED_READS}); bytes: Firestore's \
             storage-size rules (name, fields, +32; no index entries) averaged over up to \
             {SAMPLE} sampled documents per status, times the count"
        ));
        for (&status, &n) in counts.iter() {
            let full = n.saturating_sub(tombstones_by_status.get(&status).copied().unwrap_or(0));
            if full == 0 {
                continue;
            }
            let mean = self.mean_size(env, now, status).await?;
            stats.by_status.insert(
                status,
                StoredSize {
                    documents: full,
                    bytes: mean.map(|m| m.saturating_mul(full)),
                },
            );
        }
        let all = get(TombstonesOf::All);
        if all > 0 {
            let mut q = queries::tombstone_count_queries(&self.collection, env)
                .into_iter()
                .find(|(w, _)| *w == TombstonesOf::All)
                .map(|(_, q)| q)
                .ok_or_else(|| StoreError::Unavailable("no tombstone query".into()))?;
            q.limit = Some(page_limit(SAMPLE));
            let docs = self.query(q, None, |_| true).await?;
            stats.tombstones = StoredSize {
                documents: all,
                bytes: mean(docs.iter().map(|s| &s.doc)).map(|m| m.saturating_mul(all)),
            };
        }
        Ok(stats)
    }

    /// The mean storage size of up to [`SAMPLE`] full documents of `status`,
    /// read with the status's COUNT filters (tombstones are skipped).
    async fn mean_size(
        &self,
        env: &str,
        now: DateTime<Utc>,
        status: TaskStatus,
    ) -> Result<Option<u64>, StoreError> {
        let sources: &[CountOf] = match status {
            TaskStatus::Pending => &[CountOf::Pending],
            TaskStatus::Waiting => &[CountOf::Waiting],
            TaskStatus::Leased => &[CountOf::Leased],
            TaskStatus::CancellationPending => &[CountOf::CancellationPending],
            TaskStatus::Cancelled => &[CountOf::Cancelled, CountOf::CancelledOutcome],
            // Go-finished documents have no outcome: the done, not-cancelled ones.
            TaskStatus::Completed => &[CountOf::Completed, CountOf::DoneNotCancelled],
            TaskStatus::Failed => &[CountOf::Failed, CountOf::DoneNotCancelled],
            _ => return Ok(None),
        };
        let now_s = format_time(now);
        let queries = queries::count_queries(&self.collection, env, None, &now_s);
        let mut sample: Vec<Document> = Vec::new();
        for source in sources {
            let Some((_, q)) = queries.iter().find(|(w, _)| w == source) else {
                continue;
            };
            let mut q = q.clone();
            q.limit = Some(page_limit(SAMPLE_READS));
            let mut found = sample.len();
            let docs = self
                .query(q, None, |s| {
                    found += usize::from(is_full_of(s, status, now));
                    found < SAMPLE
                })
                .await?;
            sample.extend(
                docs.into_iter()
                    .filter(|s| is_full_of(s, status, now))
                    .map(|s| s.doc),
            );
            if !sample.is_empty() {
                break;
            }
        }
        Ok(mean(sample.iter()))
    }

    /// Reads not-cancelled tombstones in `prunedAt` order until `wanted` of
    /// them carry no outcome (or [`GO_FINISHED_READS`] are read), and
    /// counts those by their status; any not met count as completed.
    async fn classify_go_tombstones(
        &self,
        env: &str,
        now: DateTime<Utc>,
        wanted: u64,
        by_status: &mut BTreeMap<TaskStatus, u64>,
    ) -> Result<(), StoreError> {
        fn without_outcome(s: &Stored) -> bool {
            !matches!(
                s.doc.fields.get("outcome").and_then(|v| v.value_type.as_ref()),
                Some(ValueType::StringValue(o)) if ["completed", "failed", "cancelled"].contains(&o.as_str())
            )
        }
        let mut q = queries::tombstones_not_cancelled_query(&self.collection, env);
        q.limit = Some(page_limit(GO_FINISHED_READS));
        let mut seen = 0;
        let docs = self
            .query(q, None, |s| {
                seen += u64::from(without_outcome(s));
                seen < wanted
            })
            .await?;
        let mut found = 0;
        for stored in docs.iter().filter(|s| without_outcome(s)) {
            if let Ok(task) = &stored.task {
                found += 1;
                *by_status.entry(task.status(now)).or_default() += 1;
            }
        }
        let rest = wanted.saturating_sub(found);
        if rest > 0 {
            tracing::warn!(
                env,
                rest,
                "storage_stats: {rest} tombstones of Go-finished tasks were not among the first \
                 {GO_FINISHED_READS} read; counted as completed"
            );
            *by_status.entry(TaskStatus::Completed).or_default() += rest;
        }
        Ok(())
    }
}

/// Whether a sampled document is a full document of `status`.
fn is_full_of(s: &Stored, status: TaskStatus, now: DateTime<Utc>) -> bool {
    s.task
        .as_ref()
        .is_ok_and(|t| !t.is_tombstone() && t.status(now) == status)
}

/// The mean storage size of `docs` (`None` for none).
fn mean<'a>(docs: impl Iterator<Item = &'a Document>) -> Option<u64> {
    let (n, sum) = docs.fold((0u64, 0u64), |(n, sum), d| {
        let size = u64::try_from(limits::document_size(&d.name, &d.fields)).unwrap_or(u64::MAX);
        (n + 1, sum.saturating_add(size))
    });
    (n > 0).then(|| sum / n)
}

//! Retention, pause and rate limits: the store side of pruners
//! ([`Store::find_finished`]), storage figures ([`Store::storage_stats`]),
//! paused kinds and rate limiter windows.
//!
//! Keys (all in the env's slot, see `lua/lib.lua`):
//!
//! * `fin:<status>:<kind>` / `pr:<status>:<kind>`: the finished index, one
//!   sorted set per terminal status for full documents and one for
//!   tombstones, every member `<done hex><id>` at score 0, so a lex range
//!   is the `(done_at, id)` order. Every script that finishes, resets,
//!   prunes, quarantines or deletes a task moves its entry.
//! * `finb:<kind>`: `+` once the kind's finished index is complete. A kind
//!   whose first task is created by this version is complete at once; a
//!   kind that had tasks before the index existed is backfilled on the
//!   first [`Store::find_finished`] of the kind (`lua/backfill.lua`: pages
//!   of its listing, the position kept in this key, so concurrent or
//!   interrupted pruners share the work).
//! * `paused`: the set of paused kinds.
//! * `rl:<kind>`, `rlk:<kind>:<resource key>`: rate limiters, hashes of the
//!   window start and the starts taken, expiring a couple of periods after
//!   their last take.

use chrono::{DateTime, Utc};
use oncetask_core::store::{FinishedQuery, StartsRequest, StorageFigure, StorageStats, StoredSize};
use oncetask_core::{Store, StoreError, Task, TaskStatus};
use redis::Value;

use crate::doc::{self, Decoded, decode};
use crate::keys::{Keys, encode};
use crate::scripts::{SCRIPTS, array, fields, int, redis_error, string};
use crate::{RedisStore, group_by_env};

/// Most index entries one finished-index script call reads.
const FINISHED_PAGE: usize = 500;
/// Listing entries one backfill script call walks.
const BACKFILL_PAGE: usize = 500;
/// Task hashes [`Store::storage_stats`] measures with `MEMORY USAGE`, per
/// status and kind.
pub const STATS_SAMPLE: usize = 64;
/// Shortest life of a rate limiter key.
const LIMITER_MIN_TTL_MS: u64 = 1_000;
/// Longest life of a rate limiter key (far beyond any sensible period; it
/// keeps the expiry time within what Redis accepts).
const LIMITER_MAX_TTL_MS: u64 = 1 << 50;

/// The terminal statuses, as the `dst` field and the index keys name them.
const TERMINAL: [TaskStatus; 3] = [
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
];

impl RedisStore {
    /// [`Store::find_finished`]: lex ranges of the status's finished index.
    pub(crate) async fn finished(&self, query: &FinishedQuery) -> Result<Vec<Task>, StoreError> {
        if !TERMINAL.contains(&query.status) || query.limit == 0 {
            return Ok(Vec::new());
        }
        let keys = &self.inner.keys;
        let index = keys.finished(
            &query.env,
            &query.kind,
            query.status.as_str(),
            query.tombstones,
        );
        let mut start = match &query.after {
            None => "-".to_owned(),
            Some((at, id)) => format!("({}{id}", doc::order_time(*at)),
        };
        // Members of tasks done at or before `finished_by` (in whole
        // milliseconds, as stored) sort before the next millisecond's.
        let end = match query.finished_by.timestamp_millis().checked_add(1) {
            Some(ms) => format!("({}", doc::order_millis(ms)),
            None => "+".to_owned(),
        };
        let page = query.limit.min(FINISHED_PAGE);
        let mut found = Vec::new();
        let mut conn = self.conn();
        let mut backfilled = false;
        while found.len() < query.limit {
            let reply: Value = SCRIPTS
                .finished
                .key(&index)
                .arg(keys.env_base(&query.env))
                .arg(encode(&query.kind))
                .arg(&start)
                .arg(&end)
                .arg(page)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let mut parts = array(reply, "find_finished")?.into_iter();
            let built = parts.next().map(|v| int(v, "find_finished")).transpose()?;
            if built != Some(1) {
                if backfilled {
                    return Err(StoreError::backend(
                        "find_finished: the finished index is still not built after a backfill",
                    ));
                }
                self.backfill_finished(&query.env, &query.kind).await?;
                backfilled = true;
                continue;
            }
            let (Some(last), Some(tasks)) = (parts.next(), parts.next()) else {
                return Err(StoreError::backend("unexpected reply to find_finished"));
            };
            let tasks = array(tasks, "find_finished")?;
            let full = tasks.len() == page;
            for stored in tasks {
                // An undecodable document is not listed; a gone one has no fields.
                if let Decoded::Task(task) = decode(&fields(stored, "find_finished")?)
                    && query.matches(&task)
                {
                    found.push(*task);
                }
            }
            if !full {
                break;
            }
            start = format!("({}", string(last, "find_finished")?);
        }
        found.truncate(query.limit);
        Ok(found)
    }

    /// Builds the finished index of `env`/`kind` on a store written before
    /// it existed, one bounded script call at a time (see
    /// `lua/backfill.lua`). A no-op once it is built.
    pub async fn backfill_finished(&self, env: &str, kind: &str) -> Result<(), StoreError> {
        let keys = &self.inner.keys;
        let mut conn = self.conn();
        loop {
            let done: i64 = SCRIPTS
                .backfill
                .key(keys.env_route(env))
                .arg(keys.env_base(env))
                .arg(encode(kind))
                .arg(BACKFILL_PAGE)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            if done == 1 {
                return Ok(());
            }
        }
    }

    /// [`Store::set_paused`]: one script (set change and notice together).
    pub(crate) async fn pause(
        &self,
        env: &str,
        kind: &str,
        paused: bool,
    ) -> Result<bool, StoreError> {
        let keys = &self.inner.keys;
        let changed: i64 = SCRIPTS
            .pause
            .key(keys.paused(env))
            .arg(keys.env_base(env))
            .arg(kind)
            .arg(if paused { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(changed == 1)
    }

    /// [`Store::paused_kinds`]: `SMEMBERS`, sorted.
    pub(crate) async fn paused(&self, env: &str) -> Result<Vec<String>, StoreError> {
        let mut kinds: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.inner.keys.paused(env))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        kinds.sort();
        Ok(kinds)
    }

    /// [`Store::take_starts`] (`take`) and [`Store::return_starts`]: one
    /// script call per env and 200 requests, each
    /// request applied atomically inside it.
    pub(crate) async fn starts(
        &self,
        requests: &[StartsRequest],
        take: bool,
    ) -> Result<Vec<u32>, StoreError> {
        let mut granted = vec![0u32; requests.len()];
        let groups = group_by_env(requests.iter().enumerate().map(|(i, r)| (r.env.clone(), i)));
        let keys = &self.inner.keys;
        let mut conn = self.conn();
        for (env, items) in groups {
            let mut args = Vec::with_capacity(items.len() * 5);
            for &i in &items {
                let r = &requests[i];
                // A couple of periods: a limiter outlives its window, then goes.
                let ttl = r
                    .period_ms
                    .saturating_mul(2)
                    .clamp(LIMITER_MIN_TTL_MS, LIMITER_MAX_TTL_MS);
                args.extend([
                    Keys::limiter_suffix(&r.kind, r.resource_key.as_deref()),
                    r.window_start.timestamp_millis().to_string(),
                    ttl.to_string(),
                    r.limit.to_string(),
                    r.count.to_string(),
                ]);
            }
            let reply: Value = SCRIPTS
                .rate
                .key(keys.env_route(&env))
                .arg(keys.env_base(&env))
                .arg(if take { "t" } else { "r" })
                .arg(items.len())
                .arg(&args)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let results = array(reply, "take_starts")?;
            if results.len() != items.len() {
                return Err(StoreError::backend(
                    "take_starts: one result per request expected",
                ));
            }
            for (i, n) in items.into_iter().zip(results) {
                granted[i] = u32::try_from(int(n, "take_starts")?).unwrap_or(0);
            }
        }
        Ok(granted)
    }

    /// [`Store::storage_stats`]: exact counts per status, tombstones from
    /// the pruned-task index, bytes by sampling, and the server's memory.
    pub(crate) async fn storage(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<StorageStats, StoreError> {
        let keys = &self.inner.keys;
        let mut conn = self.conn();
        let mut stats = StorageStats::new(format!(
            "documents: exact (counters and indexes per kind; status at now); bytes: \
             MEMORY USAGE of up to {STATS_SAMPLE} randomly sampled task hashes per status \
             and kind, their average times the count (the hash alone, index entries not \
             included; a status without a sample takes its kind's average)"
        ));
        let kinds: Vec<String> = redis::cmd("HKEYS")
            .arg(keys.env_route(env))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        for kenc in kinds {
            let Some(kind) = crate::keys::decode(&kenc) else {
                continue;
            };
            let counts = self.count_by_status(env, Some(&kind), now).await?;
            let reply: Value = SCRIPTS
                .stats
                .key(keys.env_route(env))
                .arg(keys.env_base(env))
                .arg(&kenc)
                .arg(now.timestamp_millis())
                .arg(STATS_SAMPLE)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let mut parts = array(reply, "storage_stats")?.into_iter();
            let (Some(tombs), Some(samples)) = (parts.next(), parts.next()) else {
                return Err(StoreError::backend("unexpected reply to storage_stats"));
            };
            let tombs = array(tombs, "storage_stats")?
                .into_iter()
                .map(|v| int(v, "storage_stats").map(|n| u64::try_from(n).unwrap_or(0)))
                .collect::<Result<Vec<u64>, _>>()?;
            let mut sampled = Samples::default();
            let mut items = array(samples, "storage_stats")?.into_iter();
            while let (Some(bucket), Some(bytes)) = (items.next(), items.next()) {
                let bucket = string(bucket, "storage_stats")?;
                let bytes = u64::try_from(int(bytes, "storage_stats")?).unwrap_or(0);
                sampled.add(bucket, bytes);
            }
            for (&status, &n) in counts.iter() {
                let tombstoned = TERMINAL
                    .iter()
                    .position(|s| *s == status)
                    .and_then(|i| tombs.get(i).copied())
                    .unwrap_or(0);
                let documents = n.saturating_sub(tombstoned);
                if documents == 0 {
                    continue;
                }
                let part = sampled.estimate(status.as_str(), documents);
                merge(stats.by_status.entry(status).or_default(), part);
            }
            let tombstones: u64 = tombs.iter().sum();
            if tombstones > 0 {
                let part = sampled.estimate("tombstone", tombstones);
                merge(&mut stats.tombstones, part);
            }
        }
        stats.figures = self.memory_figures().await?;
        Ok(stats)
    }

    /// `INFO memory` of the server (of every master, summed, on a cluster).
    async fn memory_figures(&self) -> Result<Vec<StorageFigure>, StoreError> {
        let reply: Value = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let mut texts = Vec::new();
        collect_texts(reply, &mut texts);
        let scope = if self.is_cluster() && texts.len() > 1 {
            format!("the whole cluster, summed over {} nodes", texts.len())
        } else if self.is_cluster() {
            "one node of the cluster".to_owned()
        } else {
            "the whole server".to_owned()
        };
        let mut figures = Vec::new();
        for (field, what) in [
            ("used_memory", "memory in use"),
            ("used_memory_dataset", "memory of the data set"),
        ] {
            let values: Vec<u64> = texts.iter().filter_map(|t| info_field(t, field)).collect();
            if values.is_empty() {
                continue;
            }
            figures.push(StorageFigure {
                label: format!(
                    "{what} ({field}, INFO memory): {scope}, every key prefix and env, indexes included"
                ),
                bytes: values.iter().sum(),
            });
        }
        Ok(figures)
    }
}

/// The texts of an `INFO` reply: one string, or one per node on a cluster.
fn collect_texts(reply: Value, out: &mut Vec<String>) {
    match reply {
        Value::BulkString(b) => out.push(String::from_utf8_lossy(&b).into_owned()),
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => out.push(text),
        Value::Array(items) | Value::Set(items) => {
            for item in items {
                collect_texts(item, out);
            }
        }
        Value::Map(pairs) => {
            for (_, value) in pairs {
                collect_texts(value, out);
            }
        }
        _ => {}
    }
}

/// A `field:value` line of an `INFO` text, as a number.
fn info_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .find(|(name, _)| *name == field)
        .and_then(|(_, value)| value.parse().ok())
}

/// `MEMORY USAGE` samples of one kind, by bucket (a status name or
/// `tombstone`).
#[derive(Default)]
struct Samples {
    buckets: std::collections::HashMap<String, (u64, u64)>,
    all: (u64, u64),
}

impl Samples {
    fn add(&mut self, bucket: String, bytes: u64) {
        let entry = self.buckets.entry(bucket).or_default();
        entry.0 += 1;
        entry.1 += bytes;
        self.all.0 += 1;
        self.all.1 += bytes;
    }

    /// `documents` of `bucket`, with their bytes extrapolated from the
    /// bucket's samples (else the kind's).
    fn estimate(&self, bucket: &str, documents: u64) -> StoredSize {
        let (n, sum) = self
            .buckets
            .get(bucket)
            .copied()
            .filter(|(n, _)| *n > 0)
            .unwrap_or(self.all);
        let bytes = (n > 0).then(|| {
            let total = u128::from(sum) * u128::from(documents) / u128::from(n);
            u64::try_from(total).unwrap_or(u64::MAX)
        });
        StoredSize { documents, bytes }
    }
}

/// Adds one kind's figure for a status to the env's.
fn merge(into: &mut StoredSize, part: StoredSize) {
    into.bytes = match (into.documents, into.bytes, part.bytes) {
        (0, _, bytes) => bytes,
        (_, Some(a), Some(b)) => Some(a.saturating_add(b)),
        _ => None,
    };
    into.documents += part.documents;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_extrapolate_per_bucket_and_fall_back_to_the_kind() {
        let mut samples = Samples::default();
        samples.add("completed".into(), 100);
        samples.add("completed".into(), 300);
        samples.add("pending".into(), 50);
        assert_eq!(
            samples.estimate("completed", 10),
            StoredSize {
                documents: 10,
                bytes: Some(2_000)
            }
        );
        assert_eq!(
            samples.estimate("leased", 3).bytes,
            Some(450),
            "the kind's average"
        );
        assert_eq!(Samples::default().estimate("leased", 3).bytes, None);
    }

    #[test]
    fn info_fields_are_read_from_every_node() {
        let mut texts = Vec::new();
        collect_texts(
            Value::Map(vec![
                (
                    Value::SimpleString("a".into()),
                    Value::BulkString(b"# Memory\r\nused_memory:100\r\n".to_vec()),
                ),
                (
                    Value::SimpleString("b".into()),
                    Value::BulkString(b"used_memory:50\r\nused_memory_human:50B\r\n".to_vec()),
                ),
            ]),
            &mut texts,
        );
        let sum: u64 = texts
            .iter()
            .filter_map(|t| info_field(t, "used_memory"))
            .sum();
        assert_eq!(sum, 150);
    }

    #[test]
    fn merging_keeps_bytes_only_when_every_part_has_them() {
        let mut total = StoredSize::default();
        merge(
            &mut total,
            StoredSize {
                documents: 2,
                bytes: Some(10),
            },
        );
        merge(
            &mut total,
            StoredSize {
                documents: 1,
                bytes: Some(5),
            },
        );
        assert_eq!(
            total,
            StoredSize {
                documents: 3,
                bytes: Some(15)
            }
        );
        merge(
            &mut total,
            StoredSize {
                documents: 1,
                bytes: None,
            },
        );
        assert_eq!(total.bytes, None);
    }
}

//! What the tasks take up ([`oncetask_core::Store::storage_stats`]).
//!
//! Per status: one aggregate over the env's well-formed rows, each sized
//! as the bytes of its text columns plus 8 per integer column (the values
//! as stored, before SQLite's record header, page and index overhead).
//! Beside them, the database file's size and free space, from its page
//! counts (every env).

use chrono::{DateTime, Utc};
use oncetask_core::store::{StorageFigure, StorageStats, StoredSize};
use oncetask_core::{StoreError, TaskStatus};
use sqlx::Row;

use crate::SqliteStore;
use crate::error::db;
use crate::row::micros;
use crate::sql::{WELL_FORMED, status_sql};

/// A row's size in bytes: its text columns' bytes, 8 per integer column.
const ROW_BYTES: &str = "octet_length(id) + octet_length(kind) + octet_length(env) \
    + octet_length(data) + coalesce(octet_length(resource_key), 0) + octet_length(errors) \
    + coalesce(octet_length(result), 0) + coalesce(octet_length(recurrence), 0) \
    + coalesce(octet_length(parent_recurrence_id), 0) + coalesce(octet_length(lease_token), 0) \
    + coalesce(octet_length(outcome), 0) + 8 * 14";

impl SqliteStore {
    /// [`oncetask_core::Store::storage_stats`].
    pub(crate) async fn measure(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<StorageStats, StoreError> {
        let status = status_sql("?2");
        let well_formed = &*WELL_FORMED;
        let rows = sqlx::query(&format!(
            "SELECT s, count(*), sum(b) FROM ( \
               SELECT CASE WHEN pruned_at IS NOT NULL THEN 'tombstone' ELSE ({status}) END AS s, \
                      {ROW_BYTES} AS b \
               FROM tasks WHERE env = ?1 AND {well_formed}) \
             GROUP BY s"
        ))
        .bind(env)
        .bind(micros(now))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db)?;
        let mut stats = StorageStats::new(
            "exact counts; bytes: the text columns' bytes plus 8 per integer column \
             (no record header, page or index overhead)",
        );
        for r in &rows {
            let name: String = r.try_get(0).map_err(db)?;
            let documents: i64 = r.try_get(1).map_err(db)?;
            let bytes: Option<i64> = r.try_get(2).map_err(db)?;
            let size = StoredSize {
                documents: u64::try_from(documents).unwrap_or(0),
                bytes: bytes.and_then(|b| u64::try_from(b).ok()),
            };
            if name == "tombstone" {
                stats.tombstones = size;
            } else {
                let status: TaskStatus = name.parse().map_err(StoreError::backend)?;
                stats.by_status.insert(status, size);
            }
        }
        let (pages, free, page_size): (i64, i64, i64) = sqlx::query_as(
            "SELECT p.page_count, f.freelist_count, s.page_size \
             FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s",
        )
        .fetch_one(&self.inner.pool)
        .await
        .map_err(db)?;
        let bytes = |n: i64| u64::try_from(n.saturating_mul(page_size)).unwrap_or(0);
        stats.figures.push(StorageFigure {
            label: format!(
                "database file {} (page_count × page_size, every env; the WAL file apart)",
                self.inner.location
            ),
            bytes: bytes(pages),
        });
        stats.figures.push(StorageFigure {
            label: "free pages in the database file (freelist_count × page_size)".to_owned(),
            bytes: bytes(free),
        });
        Ok(stats)
    }
}

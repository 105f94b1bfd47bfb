//! What the tasks take up ([`Store::storage_stats`]).
//!
//! Per status: one aggregate over the env's rows, each sized with
//! `pg_column_size` of the whole row (its stored data as one composite
//! value: the tuple header and every column, TOASTed values fetched but
//! left compressed as stored); no page, free-space or index overhead, and
//! no dead rows. Tombstones apart, and rows that do not decode apart from
//! both (as a figure). Besides: the relation sizes of the store's tables
//! (`pg_table_size`, `pg_indexes_size`, `pg_total_relation_size`), which
//! cover every env of the schema and everything vacuum has not reclaimed.

use oncetask_core::store::StorageFigure;

use super::*;

/// What [`StorageStats::method`] says of the per-status figures.
const METHOD: &str = "exact row counts per status at now; bytes = sum of pg_column_size(row) \
    over the env's rows (the row's data with TOASTed values as stored, without page, index \
    or dead-row overhead); relation figures from pg_table_size / pg_indexes_size / \
    pg_total_relation_size cover every env";

impl PostgresStore {
    /// [`Store::storage_stats`]: two statements on the operator pool.
    pub(crate) async fn measure(
        &self,
        env: &str,
        now: DateTime<Utc>,
    ) -> Result<StorageStats, StoreError> {
        let t = &self.inner.table;
        let status = status_sql("$2");
        let pool = self.query_pool().await;
        let rows = sqlx::query(&format!(
            "SELECT s, count(*), coalesce(sum(size), 0)::bigint FROM ( \
                 SELECT CASE WHEN NOT {WELL_FORMED} THEN 'undecodable' \
                             WHEN pruned_at IS NOT NULL THEN 'tombstone' \
                             ELSE ({status}) END AS s, \
                        pg_column_size(t.*) AS size \
                 FROM {t} t WHERE env = $1) c \
             GROUP BY s"
        ))
        .bind(env)
        .bind(now)
        .fetch_all(pool)
        .await
        .map_err(db)?;
        let mut stats = StorageStats::new(METHOD);
        let mut undecodable = None;
        for r in &rows {
            let name: String = r.try_get(0).map_err(db)?;
            let documents = u64::try_from(r.try_get::<i64, _>(1).map_err(db)?).unwrap_or(0);
            let bytes = u64::try_from(r.try_get::<i64, _>(2).map_err(db)?).unwrap_or(0);
            let size = oncetask_core::store::StoredSize {
                documents,
                bytes: Some(bytes),
            };
            match name.as_str() {
                "tombstone" => stats.tombstones = size,
                "undecodable" => undecodable = Some(size),
                status => {
                    let status = status.parse().map_err(StoreError::backend)?;
                    stats.by_status.insert(status, size);
                }
            }
        }
        if let Some(size) = undecodable {
            stats.figures.push(StorageFigure {
                label: format!(
                    "{} rows of env {env:?} that do not decode, in no status \
                     (sum of pg_column_size(row))",
                    size.documents
                ),
                bytes: size.bytes.unwrap_or(0),
            });
        }
        stats.figures.extend(self.relation_figures(pool).await?);
        Ok(stats)
    }

    /// The sizes of the store's relations, each labelled with the function
    /// that measured it; they cover every env.
    async fn relation_figures(&self, pool: &PgPool) -> Result<Vec<StorageFigure>, StoreError> {
        let inner = &self.inner;
        let row = sqlx::query(
            "SELECT pg_table_size($1::regclass), pg_indexes_size($1::regclass), \
                    pg_total_relation_size($1::regclass), pg_total_relation_size($2::regclass), \
                    pg_total_relation_size($3::regclass), pg_total_relation_size($4::regclass)",
        )
        .bind(&inner.table)
        .bind(&inner.keys)
        .bind(&inner.limiters)
        .bind(&inner.paused)
        .fetch_one(pool)
        .await
        .map_err(db)?;
        let labels = [
            format!(
                "table {}: heap and TOAST (pg_table_size, every env)",
                inner.table
            ),
            format!("indexes of {} (pg_indexes_size, every env)", inner.table),
            format!(
                "table {} with TOAST and indexes (pg_total_relation_size, every env)",
                inner.table
            ),
            format!(
                "resource-key claim rows {} (pg_total_relation_size, every env)",
                inner.keys
            ),
            format!(
                "rate limiters {} (pg_total_relation_size, every env)",
                inner.limiters
            ),
            format!(
                "paused kinds {} (pg_total_relation_size, every env)",
                inner.paused
            ),
        ];
        labels
            .into_iter()
            .enumerate()
            .map(|(i, label)| {
                let bytes: i64 = row.try_get(i).map_err(db)?;
                Ok(StorageFigure {
                    label,
                    bytes: u64::try_from(bytes).unwrap_or(0),
                })
            })
            .collect()
    }
}

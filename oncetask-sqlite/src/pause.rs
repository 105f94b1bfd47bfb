//! Pausing and resuming kinds ([`oncetask_core::Store::set_paused`]): a
//! row of `paused_kinds` per paused env/kind.

use chrono::Utc;
use oncetask_core::StoreError;

use crate::SqliteStore;
use crate::error::db;
use crate::row::micros;

impl SqliteStore {
    /// Inserts or deletes the row; a change is announced as one that may
    /// touch held tasks, so managers re-read the paused kinds.
    pub(crate) async fn pause_kind(
        &self,
        env: &str,
        kind: &str,
        paused: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let changed = if paused {
            sqlx::query(
                "INSERT INTO paused_kinds (env, kind, paused_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (env, kind) DO NOTHING",
            )
            .bind(env)
            .bind(kind)
            .bind(micros(Utc::now()))
            .execute(tx.conn())
            .await
        } else {
            sqlx::query("DELETE FROM paused_kinds WHERE env = ?1 AND kind = ?2")
                .bind(env)
                .bind(kind)
                .execute(tx.conn())
                .await
        }
        .map_err(db)?
        .rows_affected()
            > 0;
        if changed {
            tx.announce(env, kind, true);
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// [`oncetask_core::Store::paused_kinds`], sorted (byte order).
    pub(crate) async fn list_paused(&self, env: &str) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT kind FROM paused_kinds WHERE env = ?1 ORDER BY kind")
            .bind(env)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db)
    }
}

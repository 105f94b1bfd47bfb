//! Pausing and resuming kinds ([`Store::set_paused`]): a row of
//! `paused_kinds` (migration 0006) per paused env/kind.
//!
//! A change is one statement that inserts (`ON CONFLICT DO NOTHING`) or
//! deletes the row and, only when it did, sends the kind on the env's
//! changes channel ([`PostgresStore::changes_channel`]), delivered at
//! commit, so every listener hears it as a notice that may touch claimed
//! tasks and re-reads the paused kinds.

use super::*;

impl PostgresStore {
    /// [`Store::set_paused`]: true when the row was inserted (pause) or
    /// deleted (resume).
    pub(crate) async fn pause_kind(
        &self,
        env: &str,
        kind: &str,
        paused: bool,
    ) -> Result<bool, StoreError> {
        let p = &self.inner.paused;
        let change = if paused {
            format!(
                "INSERT INTO {p} (env, kind) VALUES ($1, $2) \
                 ON CONFLICT (env, kind) DO NOTHING RETURNING kind"
            )
        } else {
            format!("DELETE FROM {p} WHERE env = $1 AND kind = $2 RETURNING kind")
        };
        let changed: i64 = sqlx::query_scalar(&format!(
            "WITH changed AS ({change}) SELECT count(pg_notify($3, kind)) FROM changed"
        ))
        .bind(env)
        .bind(kind)
        .bind(self.changes_channel(env))
        .fetch_one(&self.inner.pool)
        .await
        .map_err(db)?;
        Ok(changed > 0)
    }

    /// [`Store::paused_kinds`]: a range of the table's primary key.
    pub(crate) async fn list_paused(&self, env: &str) -> Result<Vec<String>, StoreError> {
        let p = &self.inner.paused;
        sqlx::query_scalar(&format!(
            "SELECT kind FROM {p} WHERE env = $1 ORDER BY kind COLLATE \"C\""
        ))
        .bind(env)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db)
    }
}

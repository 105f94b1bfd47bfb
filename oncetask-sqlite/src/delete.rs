//! Deletes: one write transaction per call; each row is read, its expected
//! version checked, then deleted, in input order.

use oncetask_core::StoreError;
use oncetask_core::store::{Delete, DeleteOutcome};

use crate::error::db;
use crate::row::Decoded;
use crate::{SqliteStore, read_row};

impl SqliteStore {
    /// [`oncetask_core::Store::delete`]. Deleting a task that is not done
    /// (or a row that is not a task) is announced as a change that may
    /// touch held tasks; deleting a finished one frees nothing and is not
    /// announced.
    pub(crate) async fn delete_tasks(
        &self,
        deletes: &[Delete],
    ) -> Result<Vec<DeleteOutcome>, StoreError> {
        if deletes.is_empty() {
            return Ok(Vec::new());
        }
        let mut outcomes = Vec::with_capacity(deletes.len());
        let mut tx = self.begin_write().await?;
        for delete in deletes {
            let Some(Decoded { task, .. }) = read_row(tx.conn(), &delete.id).await? else {
                outcomes.push(DeleteOutcome::NotFound);
                continue;
            };
            let allowed = match (&task, delete.expected_version) {
                (_, None) => true,
                (Ok(task), Some(version)) => task.version == version,
                (Err(_), Some(_)) => false,
            };
            if !allowed {
                outcomes.push(DeleteOutcome::Conflict);
                continue;
            }
            match &task {
                Ok(task) if task.is_done() => {}
                Ok(task) => tx.announce(&task.env, &task.kind, true),
                Err(_) => {
                    if let Some((env, kind)) = raw_env_kind(tx.conn(), &delete.id).await? {
                        tx.announce(&env, &kind, true);
                    }
                }
            }
            sqlx::query("DELETE FROM tasks WHERE id = ?1")
                .bind(delete.id.as_str())
                .execute(tx.conn())
                .await
                .map_err(db)?;
            outcomes.push(DeleteOutcome::Deleted);
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// The env and kind of a row that is not a task, when both are text.
async fn raw_env_kind(
    conn: &mut sqlx::SqliteConnection,
    id: &str,
) -> Result<Option<(String, String)>, StoreError> {
    sqlx::query_as(
        "SELECT env, kind FROM tasks WHERE id = ?1 \
         AND typeof(env) = 'text' AND typeof(kind) = 'text'",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(db)
}

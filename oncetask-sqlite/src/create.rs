//! Creates: one write transaction per call, an `INSERT … ON CONFLICT DO
//! NOTHING` per task, in input order (so a repeated id is created once
//! and reported as existing afterwards).

use std::sync::LazyLock;

use oncetask_core::store::CreateOutcome;
use oncetask_core::{StoreError, Task};

use crate::SqliteStore;
use crate::error::db;
use crate::row::{COLUMN_COUNT, COLUMNS, Encoded};

/// Insert one task unless its id is taken.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    let params = vec!["?"; COLUMN_COUNT].join(", ");
    format!("INSERT INTO tasks ({COLUMNS}) VALUES ({params}) ON CONFLICT (id) DO NOTHING")
});

impl SqliteStore {
    /// [`oncetask_core::Store::create`].
    pub(crate) async fn create_tasks(
        &self,
        tasks: Vec<Task>,
    ) -> Result<Vec<CreateOutcome>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut outcomes = Vec::with_capacity(tasks.len());
        let mut tx = self.begin_write().await?;
        for task in &tasks {
            let encoded = match Encoded::new(task) {
                Ok(encoded) => encoded,
                // Refused alone: the batch's other tasks go on.
                Err(reason) => {
                    outcomes.push(CreateOutcome::Failed(StoreError::Unencodable {
                        id: task.id.clone(),
                        reason,
                    }));
                    continue;
                }
            };
            let inserted = encoded
                .bind(task, sqlx::query(&INSERT))
                .execute(tx.conn())
                .await
                .map_err(db)?
                .rows_affected();
            if inserted > 0 {
                tx.announce(&task.env, &task.kind, false);
                outcomes.push(CreateOutcome::Created);
                continue;
            }
            let stored_env: Option<Option<String>> =
                sqlx::query_scalar("SELECT env FROM tasks WHERE id = ?1")
                    .bind(task.id.as_str())
                    .fetch_optional(tx.conn())
                    .await
                    .map_err(db)?;
            outcomes.push(match stored_env.flatten() {
                Some(env) if env != task.env => CreateOutcome::ExistsInOtherEnv { env },
                _ => CreateOutcome::AlreadyExists,
            });
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

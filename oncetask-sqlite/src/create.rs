//! Creates: one write transaction per call, an `INSERT … ON CONFLICT DO
//! NOTHING` per task, in input order (so a repeated id is created once
//! and reported as existing afterwards).

use std::sync::LazyLock;

use oncetask_core::store::CreateOutcome;
use oncetask_core::{StoreError, Task};

use sqlx::SqliteConnection;

use crate::SqliteStore;
use crate::error::db;
use crate::notify::{Changes, record};
use crate::row::{COLUMN_COUNT, COLUMNS, Encoded};

/// Insert one task unless its id is taken.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    let params = vec!["?"; COLUMN_COUNT].join(", ");
    format!("INSERT INTO tasks ({COLUMNS}) VALUES ({params}) ON CONFLICT (id) DO NOTHING")
});

/// The origin of the change rows [`SqliteStore::create_in`] writes: no
/// store's own (a store skips the rows of its own origin, which it
/// announced at commit), so every store on the file, this one included,
/// announces them once the caller's transaction commits.
const CALLERS_TRANSACTION: i64 = 0;

/// Inserts `tasks` on `conn` in input order, each unless its id is taken;
/// the changes to announce go to `changes`.
async fn insert_tasks(
    conn: &mut SqliteConnection,
    tasks: &[Task],
    changes: &mut Changes,
) -> Result<Vec<CreateOutcome>, StoreError> {
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
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
            .execute(&mut *conn)
            .await
            .map_err(db)?
            .rows_affected();
        if inserted > 0 {
            changes.add(&task.env, &task.kind, false);
            outcomes.push(CreateOutcome::Created);
            continue;
        }
        let stored_env: Option<Option<String>> =
            sqlx::query_scalar("SELECT env FROM tasks WHERE id = ?1")
                .bind(task.id.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)?;
        outcomes.push(match stored_env.flatten() {
            Some(env) if env != task.env => CreateOutcome::ExistsInOtherEnv { env },
            _ => CreateOutcome::AlreadyExists,
        });
    }
    Ok(outcomes)
}

impl SqliteStore {
    /// [`oncetask_core::Store::create`].
    pub(crate) async fn create_tasks(
        &self,
        tasks: Vec<Task>,
    ) -> Result<Vec<CreateOutcome>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let mut changes = Changes::default();
        let outcomes = insert_tasks(tx.conn(), &tasks, &mut changes).await?;
        tx.announce_all(changes);
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Creates tasks on `conn`, inside the caller's own transaction: they
    /// exist, and workers (of every process on the file, this one
    /// included) hear of them, only when that transaction commits; a
    /// rollback leaves no task. Outcomes as in
    /// [`Store::create`](oncetask_core::Store::create).
    ///
    /// Begin the transaction with `BEGIN IMMEDIATE` (it takes the write
    /// lock at once; a deferred transaction that reads first can fail with
    /// `SQLITE_BUSY` at its first write) and keep it short: while it is
    /// open, every other writer on the file, claims included, waits. The
    /// wake-up is the change rows written here, which this store's watcher
    /// reads after the commit ([`SqliteOptions::watch_interval`]; with
    /// watching off, workers find the tasks at their next poll).
    ///
    /// [`SqliteOptions::watch_interval`]: crate::SqliteOptions::watch_interval
    ///
    /// ```no_run
    /// # async fn demo(store: &oncetask_sqlite::SqliteStore, task: oncetask_core::Task)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    /// // ... the caller's own writes on `tx` ...
    /// store.create_in(&mut tx, vec![task]).await?;
    /// tx.commit().await?; // or drop `tx`: no task
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_in(
        &self,
        conn: &mut SqliteConnection,
        tasks: Vec<Task>,
    ) -> Result<Vec<CreateOutcome>, StoreError> {
        let mut changes = Changes::default();
        let outcomes = insert_tasks(conn, &tasks, &mut changes).await?;
        if !changes.is_empty() {
            record(conn, CALLERS_TRANSACTION, &changes).await?;
        }
        Ok(outcomes)
    }
}

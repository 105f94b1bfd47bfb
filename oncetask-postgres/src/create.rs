//! Creating tasks: one typed single-row statement for one task, one
//! JSON-array statement for a batch. Both insert with `ON CONFLICT (id) DO
//! NOTHING`, notify the env's channel of each kind that got a task, and
//! report the env of an id that was already stored (so a create in the
//! wrong env is told apart from a repeat).

use std::collections::{HashMap, HashSet};

use oncetask_core::store::CreateOutcome;
use oncetask_core::{StoreError, Task};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use crate::row::{self, COLUMNS, NewRow, RECORD, RECORD_VALUES};
use crate::{PostgresStore, db};

impl PostgresStore {
    /// Creates tasks on `conn`, typically inside the caller's transaction
    /// (`&mut *tx`): they become visible to workers, and their wake-up
    /// notices are delivered, only when that transaction commits. Outcomes
    /// as in [`Store::create`](oncetask_core::Store::create).
    ///
    /// ```no_run
    /// # async fn demo(store: &oncetask_postgres::PostgresStore, task: oncetask_core::Task)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = store.pool().begin().await?;
    /// // ... the caller's own writes on `tx` ...
    /// store.create_in(&mut tx, vec![task]).await?;
    /// tx.commit().await?; // or drop `tx`: no task
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_in(
        &self,
        conn: &mut PgConnection,
        tasks: Vec<Task>,
    ) -> Result<Vec<CreateOutcome>, StoreError> {
        if let [task] = tasks.as_slice() {
            return Ok(vec![self.create_one(conn, task).await?]);
        }
        let mut outcomes: Vec<Option<CreateOutcome>> = Vec::with_capacity(tasks.len());
        let mut rows = Vec::new();
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        for (i, task) in tasks.iter().enumerate() {
            if first_of.contains_key(task.id.as_str()) {
                outcomes.push(None);
                continue;
            }
            match row::encode(task) {
                Ok(row) => {
                    first_of.insert(task.id.as_str(), i);
                    rows.push(row);
                    outcomes.push(None);
                }
                Err(reason) => {
                    outcomes.push(Some(CreateOutcome::Failed(StoreError::Unencodable {
                        id: task.id.clone(),
                        reason,
                    })))
                }
            }
        }
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut inserted: HashSet<String> = HashSet::new();
        let mut existing: HashMap<String, String> = HashMap::new();
        if !rows.is_empty() {
            let ids: Vec<&str> = first_of.keys().copied().collect();
            let mut envs: Vec<&str> = first_of
                .values()
                .filter_map(|&i| tasks.get(i).map(|t| t.env.as_str()))
                .collect();
            envs.sort_unstable();
            envs.dedup();
            let channels: Vec<String> = envs.iter().map(|env| self.channel(env)).collect();
            let found = sqlx::query(&create_batch_sql(&self.inner.table))
                .bind(Json(Value::Array(rows)))
                .bind(&envs)
                .bind(&channels)
                .bind(&ids)
                .fetch_all(&mut *conn)
                .await
                .map_err(db)?;
            for r in &found {
                let created: bool = r.try_get(0).map_err(db)?;
                let id: String = r.try_get(1).map_err(db)?;
                if created {
                    inserted.insert(id);
                } else {
                    existing.insert(id, r.try_get(2).map_err(db)?);
                }
            }
        }
        // An id another transaction stored after this statement's snapshot
        // was taken is neither inserted nor seen: ask again (rare). Items
        // already refused are not looked up: their id may be one PostgreSQL
        // cannot even compare (NUL).
        let unseen: Vec<String> = tasks
            .iter()
            .zip(&outcomes)
            .filter(|(t, decided)| {
                decided.is_none() && !inserted.contains(&t.id) && !existing.contains_key(&t.id)
            })
            .map(|(t, _)| t.id.clone())
            .collect();
        if !unseen.is_empty() {
            existing.extend(self.stored_envs(conn, &unseen).await?);
        }
        let outcomes: Vec<CreateOutcome> = tasks
            .iter()
            .enumerate()
            .zip(outcomes)
            .map(|((i, task), decided)| {
                if let Some(outcome) = decided {
                    return outcome;
                }
                let first = first_of.get(task.id.as_str()) == Some(&i);
                if first && inserted.contains(&task.id) {
                    return CreateOutcome::Created;
                }
                let stored_env = if inserted.contains(&task.id) {
                    first_of
                        .get(task.id.as_str())
                        .and_then(|&j| tasks.get(j))
                        .map(|t| t.env.clone())
                } else {
                    existing.get(&task.id).cloned()
                };
                already_stored(task, stored_env)
            })
            .collect();
        Ok(outcomes)
    }

    /// One task, one statement with typed parameters (the common call:
    /// `Manager::create`): [`create_one_sql`] with no JSON array to build
    /// or expand, and a lookup of the stored env only when the id was
    /// taken; outcomes as in [`Store::create`](oncetask_core::Store::create).
    async fn create_one(
        &self,
        conn: &mut PgConnection,
        task: &Task,
    ) -> Result<CreateOutcome, StoreError> {
        let row = match NewRow::new(task) {
            Ok(row) => row,
            Err(reason) => {
                return Ok(CreateOutcome::Failed(StoreError::Unencodable {
                    id: task.id.clone(),
                    reason,
                }));
            }
        };
        let inserted = row
            .bind(sqlx::query(&self.inner.create_one))
            .bind(self.channel(&task.env))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?
            .is_some();
        if inserted {
            return Ok(CreateOutcome::Created);
        }
        // Taken: by whom (gone again by now if nothing is found).
        let stored_env = self
            .stored_envs(conn, std::slice::from_ref(&task.id))
            .await?
            .remove(&task.id);
        Ok(already_stored(task, stored_env))
    }

    /// The envs of those of `ids` that are stored, by id: for ids a create
    /// statement's snapshot did not see (stored by another transaction
    /// meanwhile).
    async fn stored_envs(
        &self,
        conn: &mut PgConnection,
        ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let t = &self.inner.table;
        let rows = sqlx::query(&format!("SELECT id, env FROM {t} WHERE id = ANY($1)"))
            .bind(ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?)))
            .collect()
    }
}

/// The outcome of creating `task` when its id was taken: stored in `env`
/// (`None`: gone again by the time it was looked up).
fn already_stored(task: &Task, env: Option<String>) -> CreateOutcome {
    match env {
        Some(env) if env != task.env => CreateOutcome::ExistsInOtherEnv { env },
        _ => CreateOutcome::AlreadyExists,
    }
}

/// The single-row create (built once per store: it runs once per created
/// task): insert `$1`..`$25` (see [`NewRow`]) unless the id is taken, and
/// notify channel `$26` with the kind when inserted; one row when inserted,
/// none when the id was taken. Nothing more: a CTE that also returned the
/// stored env of a taken id made every create ~25 % slower on the server
/// (BENCHMARKS.md, "Postgres, session 12"), while a taken id is the rare
/// case and costs one more lookup.
pub(crate) fn create_one_sql(table: &str) -> String {
    let params = (1..=25)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {table} ({COLUMNS}) VALUES ({params}) \
         ON CONFLICT (id) DO NOTHING RETURNING pg_notify($26, kind)"
    )
}

/// The create statement: insert every row of the JSON array `$1` (see
/// `row::encode`) whose id is free; notify each env/kind that got a task
/// (`$2` envs, `$3` their channels); return `(true, id, env)` for each
/// row inserted and `(false, id, env)` for each id of `$4` stored before
/// the statement began.
pub(crate) fn create_batch_sql(t: &str) -> String {
    format!(
        "WITH inserted AS ( \
             INSERT INTO {t} ({COLUMNS}) SELECT {RECORD_VALUES} \
             FROM jsonb_to_recordset($1) AS {RECORD} \
             ON CONFLICT (id) DO NOTHING RETURNING id, env, kind), \
         notices AS ( \
             SELECT count(pg_notify(c.channel, n.kind)) AS sent \
             FROM (SELECT DISTINCT env, kind FROM inserted) AS n \
             JOIN unnest($2::text[], $3::text[]) AS c(env, channel) ON c.env = n.env), \
         found AS ( \
             SELECT true AS created, id, env FROM inserted \
             UNION ALL \
             SELECT false, id, env FROM {t} WHERE id = ANY($4)) \
         SELECT found.created, found.id, found.env FROM found, notices"
    )
}

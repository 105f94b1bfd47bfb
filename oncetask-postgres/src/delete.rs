//! Deletes: one transaction that locks the rows, checks the expected
//! versions in Rust, deletes, removes the claim rows left without tasks and
//! notifies. Whatever the batch size (a pruner's are up to 500), that is
//! one statement for each step, never one per id; a delete with an
//! expected version removes the row only if the version, read under the
//! row's lock, still matches. Only deletes of unfinished rows notify: a
//! finished task is held by no worker and frees no resource key, so a
//! pruner's batches wake no one.

use super::*;

/// A stored row as a delete sees it.
#[allow(clippy::large_enum_variant)] // short-lived, and tasks are the common case
enum Stored {
    Task(Task),
    Raw,
}

impl PostgresStore {
    /// The deletes of one [`Store::delete`] call, in one transaction: the
    /// rows locked ([`Self::lock_rows`]), expected versions checked in Rust,
    /// one `DELETE`, the claim rows left without tasks removed
    /// ([`Self::forget_keys`]) and the notices sent.
    pub(crate) async fn delete_tasks(
        &self,
        deletes: &[Delete],
    ) -> Result<Vec<DeleteOutcome>, StoreError> {
        if deletes.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = deletes.iter().map(|d| d.id.clone()).collect();
        let mut tx = self.inner.pool.begin().await.map_err(db)?;
        let mut stored = self.lock_rows(&mut tx, &ids).await?;
        let mut changed = Changed::new();
        let mut removed = Vec::new();
        let mut outcomes = Vec::with_capacity(deletes.len());
        for delete in deletes {
            let matches = match (stored.get(&delete.id), delete.expected_version) {
                (None, _) => {
                    outcomes.push(DeleteOutcome::NotFound);
                    continue;
                }
                (Some(_), None) => true,
                (Some(Stored::Task(task)), Some(version)) => task.version == version,
                (Some(Stored::Raw), Some(_)) => false,
            };
            if !matches {
                outcomes.push(DeleteOutcome::Conflict);
                continue;
            }
            // A finished task is held by no worker and frees nothing: its
            // delete (a pruner's, most often) needs no notice.
            if let Some(Stored::Task(task)) = stored.remove(&delete.id)
                && !task.is_done()
            {
                changed.insert((task.env, task.kind));
            }
            removed.push(delete.id.clone());
            outcomes.push(DeleteOutcome::Deleted);
        }
        if !removed.is_empty() {
            let t = &self.inner.table;
            let gone = sqlx::query(&format!(
                "DELETE FROM {t} WHERE id = ANY($1) \
                 RETURNING env, kind, resource_key, done_at IS NOT NULL"
            ))
            .bind(&removed)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            let mut keys = BTreeSet::new();
            for r in &gone {
                let (env, kind): (String, String) =
                    (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?);
                if let Some(key) = r.try_get::<Option<String>, _>(2).map_err(db)? {
                    keys.insert((env.clone(), kind.clone(), key));
                }
                if !r.try_get::<bool, _>(3).map_err(db)? {
                    changed.insert((env, kind));
                }
            }
            self.forget_keys(&mut tx, keys).await?;
        }
        self.notify_changes(&mut tx, &changed).await?;
        tx.commit().await.map_err(db)?;
        Ok(outcomes)
    }

    /// Reads rows `FOR UPDATE` (in id order, so concurrent writers lock in
    /// one order and never deadlock).
    async fn lock_rows(
        &self,
        conn: &mut PgConnection,
        ids: &[String],
    ) -> Result<HashMap<String, Stored>, StoreError> {
        let t = &self.inner.table;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {t} WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        ))
        .bind(ids)
        .fetch_all(conn)
        .await
        .map_err(db)?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in &rows {
            let Decoded { id, task } = row::decode(r).map_err(db)?;
            out.insert(
                id,
                match task {
                    Ok(task) => Stored::Task(task),
                    Err(_) => Stored::Raw,
                },
            );
        }
        Ok(out)
    }

    /// Removes the claim rows of `keys` (env, kind, key) that have no task
    /// left, after a delete: a claim row lives as long as its key has
    /// tasks. Waits for claims that hold a row (they never wait for a
    /// delete, so this cannot deadlock). See the crate docs for why this
    /// keeps the exclusion exact.
    async fn forget_keys(
        &self,
        conn: &mut PgConnection,
        keys: BTreeSet<(String, String, String)>,
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let (t, k) = (&self.inner.table, &self.inner.keys);
        let mut envs = Vec::with_capacity(keys.len());
        let mut kinds = Vec::with_capacity(keys.len());
        let mut names = Vec::with_capacity(keys.len());
        for (env, kind, key) in keys {
            envs.push(env);
            kinds.push(kind);
            names.push(key);
        }
        sqlx::query(&format!(
            "DELETE FROM {k} r \
             USING unnest($1::text[], $2::text[], $3::text[]) AS g(env, kind, resource_key) \
             WHERE r.resource_key = g.resource_key AND r.env = g.env AND r.kind = g.kind \
               AND NOT EXISTS (SELECT 1 FROM {t} t WHERE t.env = g.env \
                 AND t.resource_key = g.resource_key AND t.kind = g.kind)"
        ))
        .bind(&envs)
        .bind(&kinds)
        .bind(&names)
        .execute(conn)
        .await
        .map_err(db)?;
        Ok(())
    }
}

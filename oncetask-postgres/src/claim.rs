//! Resource-group claims (a transaction: candidates, the key's claim row,
//! row locks and the bulk write-back) and the candidate query shared with
//! the one-statement claim (see the crate docs for the protocol).

use super::*;

/// The claim order over a task row `t`.
pub(crate) const CLAIM_ORDER: &str =
    "t.leased_until NULLS FIRST, t.wait_until NULLS FIRST, t.created_at, t.id";

/// How many candidates a resource-group claim considers before giving up
/// (only contention with other claimers makes it look past the first).
pub(crate) const GROUP_CANDIDATES: i64 = 16;

impl PostgresStore {
    /// Reads rows `FOR UPDATE` (in id order, so concurrent writers lock in
    /// one order and never deadlock).
    pub(crate) async fn lock_rows(
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

    /// Writes tasks over their rows with one `UPDATE`.
    pub(crate) async fn write_back(
        &self,
        conn: &mut PgConnection,
        tasks: &[&Task],
    ) -> Result<(), StoreError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let rows = tasks
            .iter()
            .map(|task| {
                row::encode(task).map_err(|reason| StoreError::Unencodable {
                    id: task.id.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.write_rows(conn, rows).await
    }

    /// Writes rows encoded by `row::encode` over the stored rows with their
    /// ids, with one `UPDATE`.
    pub(crate) async fn write_rows(
        &self,
        conn: &mut PgConnection,
        rows: Vec<Value>,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        sqlx::query(&self.write_sql())
            .bind(Json(Value::Array(rows)))
            .execute(conn)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The bulk write: every row of the JSON array `$1` (see `row::encode`)
    /// over the stored row with its id.
    pub(crate) fn write_sql(&self) -> String {
        let t = &self.inner.table;
        let sets = COLUMNS
            .split(',')
            .map(str::trim)
            .filter(|c| *c != "id")
            .zip(RECORD_VALUES.split(',').map(str::trim).skip(1))
            .map(|(c, v)| format!("{c} = {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        // The ids again as an array next to the join, so the rows are found
        // through the primary key even in a plan made on a tiny table.
        format!(
            "UPDATE {t} SET {sets} FROM jsonb_to_recordset($1) AS {RECORD} \
             WHERE {t}.id = x.id \
               AND {t}.id = ANY(ARRAY(SELECT e ->> 'id' FROM jsonb_array_elements($1) AS e))"
        )
    }

    /// The next due time of env `$1` / kind `$2` after `$3`: its `min` is
    /// served by `tasks_due_idx`, whose expression this repeats verbatim.
    pub(crate) fn next_due_sql(&self) -> String {
        let t = &self.inner.table;
        let due = "greatest(coalesce(wait_until, '-infinity'::timestamptz), \
                   coalesce(leased_until, '-infinity'::timestamptz))";
        format!(
            "SELECT min({due}) FROM {t} \
             WHERE env = $1 AND kind = $2 AND done_at IS NULL AND {TASK_LIKE} AND {due} > $3"
        )
    }

    /// The candidate query: up to `$4` ready tasks of env `$1` / kind `$2` at
    /// `$3`, in claim order, whose resource key is free and not in `$5`, and
    /// whose id is not in `$6`.
    ///
    /// The claim order is split into its three index ranges of
    /// `tasks_ready_idx` — never leased and never waiting (by `created_at`,
    /// id), never leased with `wait_until <= now`, and expired leases — each
    /// an index range scan stopped by its own `LIMIT`; the union (at most
    /// 3 × `$4` rows) is put back in claim order. So a claim reads a few index
    /// entries however many tasks wait for later. The busy-key check is a
    /// correlated lookup in `tasks_key_lease_idx`; its `b.id <> t.id` (true
    /// anyway: a ready task holds no live lease) keeps the planner from
    /// turning it into a hash of every live lease built by a sequential scan.
    pub(crate) fn candidate_sql(&self) -> String {
        format!(
            "SELECT {COLUMNS} FROM ({}) t ORDER BY t.part, {CLAIM_ORDER} LIMIT $4",
            self.ready_parts("t.*", "$6", "t.resource_key <> ALL($5) AND", "$4")
        )
    }

    /// The three index ranges of the claim order (see
    /// [`Self::candidate_sql`]) as a `UNION ALL` of subqueries, each
    /// selecting `select` and its part number (`part`) from ready tasks of
    /// env `$1` / kind `$2` at `$3` whose id is not in `skip_ids` and whose
    /// resource key is free (and meets `key_cond`, an SQL prefix ending in
    /// `AND`, or empty), each stopped after `limit` rows. Shared by the
    /// candidate query and the one-statement claim.
    pub(crate) fn ready_parts(
        &self,
        select: &str,
        skip_ids: &str,
        key_cond: &str,
        limit: &str,
    ) -> String {
        let t = &self.inner.table;
        let part = |n: u8, cond: &str| {
            format!(
                "(SELECT {select}, {n} AS part FROM {t} t \
                 WHERE t.env = $1 AND t.kind = $2 AND t.done_at IS NULL AND {cond} \
                   AND t.id <> ALL({skip_ids}) \
                   AND (t.resource_key IS NULL OR ({key_cond} NOT EXISTS ( \
                     SELECT 1 FROM {t} b WHERE b.env = t.env AND b.kind = t.kind \
                       AND b.resource_key = t.resource_key AND b.done_at IS NULL \
                       AND b.leased_until > $3 AND b.id <> t.id))) \
                 ORDER BY {CLAIM_ORDER} LIMIT {limit})"
            )
        };
        format!(
            "{} UNION ALL {} UNION ALL {}",
            part(0, "t.leased_until IS NULL AND t.wait_until IS NULL"),
            part(1, "t.leased_until IS NULL AND t.wait_until <= $3"),
            part(
                2,
                "t.leased_until <= $3 AND (t.wait_until IS NULL OR t.wait_until <= $3)"
            ),
        )
    }

    /// Ready candidates of the env/kind in claim order whose key is free, at
    /// most one per key, up to `limit` that decode (undecodable ones met on
    /// the way are collected in `undecodable`). Pages through the claim
    /// order, leaving out the ids and keys already seen.
    pub(crate) async fn candidates(
        &self,
        conn: &mut PgConnection,
        request: &ClaimRequest,
        limit: usize,
        undecodable: &mut Vec<Undecodable>,
    ) -> Result<Vec<Task>, StoreError> {
        let sql = self.candidate_sql();
        let mut picked: Vec<Task> = Vec::new();
        let mut seen_ids: Vec<String> = Vec::new();
        let mut taken_keys: Vec<String> = Vec::new();
        while picked.len() < limit {
            let want = limit - picked.len();
            let rows = sqlx::query(&sql)
                .bind(&request.env)
                .bind(&request.kind)
                .bind(request.now)
                .bind(i64::try_from(want).unwrap_or(i64::MAX))
                .bind(&taken_keys)
                .bind(&seen_ids)
                .fetch_all(&mut *conn)
                .await
                .map_err(db)?;
            for r in &rows {
                let Decoded { id, task } = row::decode(r).map_err(db)?;
                seen_ids.push(id.clone());
                let task = match task {
                    Ok(task) => task,
                    Err(reason) => {
                        undecodable.push(Undecodable { id, reason });
                        continue;
                    }
                };
                if let Some(key) = &task.resource_key {
                    if taken_keys.contains(key) {
                        continue;
                    }
                    taken_keys.push(key.clone());
                }
                if picked.len() < limit {
                    picked.push(task);
                }
            }
            if rows.len() < want {
                break;
            }
        }
        Ok(picked)
    }

    /// The query plans (`EXPLAIN`) of the hot path's statements, each under
    /// a `-- <name>` line: the single-mode claim statement (`claim`); the
    /// resource-group claim's candidate query and the resource-key busy
    /// check it embeds, the lock of a key's claim row, the group query for
    /// a key, the lock of the chosen rows and the bulk write-back of claimed
    /// tasks; the next due time an idle worker asks for, a swap, and the
    /// creates of one task and of a batch. Each is
    /// the generic plan of the prepared statement, the one the store's
    /// connections run whatever the parameters (see
    /// [`PostgresStore::pool_options`]). A diagnostic, used by the tests
    /// that check the indexes serve them.
    pub async fn explain_claim(&self) -> Result<String, StoreError> {
        // In a transaction, so the setting does not outlive this call on a
        // pool that does not use it (the transaction is rolled back; the
        // prepared statements stay on the connection and are replaced by
        // the next call).
        let mut tx = self.inner.pool.begin().await.map_err(db)?;
        sqlx::raw_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let conn: &mut PgConnection = &mut tx;
        let mut out = String::new();
        let candidate = generic(conn, "candidate", &self.candidate_sql(), 6).await?;
        let group = generic(conn, "group", &self.group_sql(), 5).await?;
        let due = generic(conn, "due", &self.next_due_sql(), 3).await?;
        let write = generic(conn, "write", &self.write_sql(), 1).await?;
        let lock = generic(conn, "lock", &self.lock_ready_sql(false), 5).await?;
        let single = generic(conn, "single", &self.single_claim_sql(), 8).await?;
        let key_lock = generic(conn, "key_lock", &self.lock_key_sql(), 3).await?;
        let swap = generic(conn, "swap", &self.swap_sql(), 2).await?;
        let create_batch = generic(
            conn,
            "create_batch",
            &crate::create::create_batch_sql(&self.inner.table),
            4,
        )
        .await?;
        let create = generic(conn, "create", &self.inner.create_one, 22).await?;
        for (title, rows) in [
            ("claim", single),
            ("candidates", candidate),
            ("key lock", key_lock),
            ("group", group),
            ("lock ready", lock),
            ("write-back", write),
            ("next due", due),
            ("swap", swap),
            ("create", create),
            ("create batch", create_batch),
        ] {
            out.push_str(&format!("-- {title}\n"));
            for r in &rows {
                out.push_str(&r.try_get::<String, _>(0).map_err(db)?);
                out.push('\n');
            }
        }
        Ok(out)
    }

    /// Locks the claim row of resource key `key` (env and kind of
    /// `request`) for this transaction and bumps its claim count, or creates
    /// it; false when another claim holds it (never waited for). Inside a
    /// transaction, the statements after this one see every lease that
    /// earlier claims of the key committed, and no other claim of the key
    /// can commit until this transaction ends.
    pub(crate) async fn lock_key(
        &self,
        conn: &mut PgConnection,
        request: &ClaimRequest,
        key: &str,
    ) -> Result<bool, StoreError> {
        let rows = sqlx::query(&self.lock_key_sql())
            .bind(&request.env)
            .bind(&request.kind)
            .bind(key)
            .fetch_all(conn)
            .await
            .map_err(db)?;
        Ok(!rows.is_empty())
    }

    /// The lock of the claim row of key `$3` (env `$1`, kind `$2`): locks
    /// and bumps the row if this statement's snapshot has it and no one
    /// else holds it, inserts it if the snapshot has none (an insert that
    /// meets a row committed meanwhile does nothing); returns the key when
    /// the row is this transaction's.
    pub(crate) fn lock_key_sql(&self) -> String {
        let k = &self.inner.keys;
        format!(
            "WITH seen AS ( \
                 SELECT w.resource_key, r.claims FROM (SELECT $3::text AS resource_key) w \
                 LEFT JOIN {k} r ON r.env = $1 AND r.kind = $2 AND r.resource_key = w.resource_key), \
             locked AS ( \
                 SELECT r.resource_key FROM {k} r \
                 WHERE r.env = $1 AND r.kind = $2 AND r.resource_key = $3 \
                 FOR UPDATE SKIP LOCKED), \
             bumped AS ( \
                 UPDATE {k} r SET claims = r.claims + 1 FROM locked l \
                 WHERE r.env = $1 AND r.kind = $2 AND r.resource_key = l.resource_key \
                 RETURNING r.resource_key), \
             added AS ( \
                 INSERT INTO {k} (env, kind, resource_key, claims) \
                 SELECT $1, $2, s.resource_key, 1 FROM seen s WHERE s.claims IS NULL \
                 ON CONFLICT DO NOTHING RETURNING resource_key) \
             SELECT resource_key FROM bumped UNION ALL SELECT resource_key FROM added"
        )
    }

    /// Removes the claim rows of `keys` (env, kind, key) that have no task
    /// left, after a delete: a claim row lives as long as its key has
    /// tasks. Waits for claims that hold a row (they never wait for a
    /// delete, so this cannot deadlock). See the crate docs for why this
    /// keeps the exclusion exact.
    pub(crate) async fn forget_keys(
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

    /// Locks the still-ready rows among `ids` (`FOR UPDATE SKIP LOCKED`);
    /// keyed ones only if their key is in `keys` and still free. In claim
    /// order, or in group order when `group` is set.
    pub(crate) async fn lock_ready(
        &self,
        conn: &mut PgConnection,
        request: &ClaimRequest,
        ids: &[String],
        keys: &[String],
        group: bool,
        undecodable: &mut Vec<Undecodable>,
    ) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(&self.lock_ready_sql(group))
            .bind(&request.env)
            .bind(&request.kind)
            .bind(request.now)
            .bind(ids)
            .bind(keys)
            .fetch_all(conn)
            .await
            .map_err(db)?;
        let mut tasks = Vec::with_capacity(rows.len());
        for r in &rows {
            let Decoded { id, task } = row::decode(r).map_err(db)?;
            match task {
                Ok(task) => tasks.push(task),
                Err(reason) => undecodable.push(Undecodable { id, reason }),
            }
        }
        Ok(tasks)
    }

    /// The lock of the still-ready rows among the ids `$4` (env `$1`, kind
    /// `$2`, at `$3`; keyed ones only if their key is in `$5` and free), in
    /// claim order or, with `group`, in group order. The ids are joined on
    /// the primary key: with `id = ANY(..)` and stale statistics (a bulk
    /// load without `ANALYZE`) the planner may walk the kind's whole ready
    /// index instead.
    pub(crate) fn lock_ready_sql(&self, group: bool) -> String {
        let t = &self.inner.table;
        let order = if group {
            "t.wait_until NULLS FIRST, t.created_at, t.id"
        } else {
            CLAIM_ORDER
        };
        format!(
            "SELECT {COLUMNS} FROM unnest($4::text[]) AS c(wanted) JOIN {t} t ON t.id = c.wanted \
             WHERE t.env = $1 AND t.kind = $2 AND t.done_at IS NULL \
               AND (t.wait_until IS NULL OR t.wait_until <= $3) \
               AND (t.leased_until IS NULL OR t.leased_until <= $3) \
               AND (t.resource_key IS NULL OR (t.resource_key = ANY($5) AND NOT EXISTS ( \
                   SELECT 1 FROM {t} b WHERE b.env = t.env AND b.kind = t.kind \
                     AND b.resource_key = t.resource_key AND b.done_at IS NULL \
                     AND b.leased_until > $3 AND b.id <> t.id))) \
             ORDER BY {order} FOR UPDATE OF t SKIP LOCKED"
        )
    }

    /// The group query: ids of the ready tasks of key `$4` (env `$1`, kind
    /// `$2`, at `$3`) in group order, at most `$5` (`tasks_key_group_idx`).
    pub(crate) fn group_sql(&self) -> String {
        let t = &self.inner.table;
        format!(
            "SELECT t.id FROM {t} t \
             WHERE t.env = $1 AND t.kind = $2 AND t.resource_key = $4 AND t.done_at IS NULL \
               AND (t.wait_until IS NULL OR t.wait_until <= $3) \
               AND (t.leased_until IS NULL OR t.leased_until <= $3) \
             ORDER BY t.wait_until NULLS FIRST, t.created_at, t.id LIMIT $5"
        )
    }

    /// The ids of the ready tasks of one free key, in group order, at most `cap`.
    pub(crate) async fn group_ids(
        &self,
        conn: &mut PgConnection,
        request: &ClaimRequest,
        key: &str,
        cap: usize,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(&self.group_sql())
            .bind(&request.env)
            .bind(&request.kind)
            .bind(request.now)
            .bind(key)
            .bind(i64::try_from(cap).unwrap_or(i64::MAX))
            .fetch_all(conn)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    /// Chooses and locks the tasks of a resource-group claim (inside its
    /// transaction): the first candidate in claim order decides; a keyless
    /// one is taken alone, a keyed one with the ready tasks of its key, once
    /// the key's claim row is this transaction's ([`Self::lock_key`]).
    pub(crate) async fn select_group(
        &self,
        conn: &mut PgConnection,
        request: &ClaimRequest,
        max_group: usize,
        undecodable: &mut Vec<Undecodable>,
    ) -> Result<Vec<Task>, StoreError> {
        if max_group == 0 {
            return Ok(Vec::new());
        }
        let cap = usize::try_from(GROUP_CANDIDATES).unwrap_or(16);
        let candidates = self.candidates(conn, request, cap, undecodable).await?;
        for head in candidates {
            let taken = match &head.resource_key {
                None => {
                    let ids = [head.id.clone()];
                    self.lock_ready(conn, request, &ids, &[], false, undecodable)
                        .await?
                }
                Some(key) => {
                    if !self.lock_key(conn, request, key).await? {
                        continue;
                    }
                    // A new statement: its snapshot is younger than the key lock.
                    let keys = [key.clone()];
                    let ids = self.group_ids(conn, request, key, max_group).await?;
                    self.lock_ready(conn, request, &ids, &keys, true, undecodable)
                        .await?
                }
            };
            if !taken.is_empty() {
                return Ok(taken);
            }
        }
        Ok(Vec::new())
    }
}

/// The generic plan of `sql` (with `params` parameters): prepared as
/// `oncetask_explain_{name}` on `conn` (replacing an earlier one), which
/// plans generically, and explained with every parameter null (a generic
/// plan does not depend on them).
async fn generic(
    conn: &mut PgConnection,
    name: &str,
    sql: &str,
    params: usize,
) -> Result<Vec<sqlx::postgres::PgRow>, StoreError> {
    let name = format!("oncetask_explain_{name}");
    let earlier: Option<String> =
        sqlx::query_scalar("SELECT name FROM pg_prepared_statements WHERE name = $1")
            .bind(&name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    if earlier.is_some() {
        sqlx::raw_sql(&format!("DEALLOCATE {name}"))
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    sqlx::raw_sql(&format!("PREPARE {name} AS {sql}"))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let nulls = vec!["NULL"; params].join(", ");
    sqlx::query(&format!("EXPLAIN EXECUTE {name}({nulls})"))
        .fetch_all(&mut *conn)
        .await
        .map_err(db)
}

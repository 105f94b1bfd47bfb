//! The candidate query: ready tasks in claim order whose resource key is
//! free, read as three index ranges. Apart from `group`, which pages through
//! it, because the single-mode statement embeds the same ranges.

use super::*;

impl PostgresStore {
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
    pub(super) fn ready_parts(
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
    pub(super) async fn candidates(
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
}

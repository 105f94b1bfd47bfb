//! Resource-group claims: one transaction that takes the first candidate,
//! locks its key's claim row, reads and locks the key's ready tasks and
//! writes their leases back (see the crate docs for why it is exact).

use super::*;

/// How many candidates a resource-group claim considers before giving up
/// (only contention with other claimers makes it look past the first).
const GROUP_CANDIDATES: i64 = 16;

impl PostgresStore {
    /// A resource-group claim of up to `max_group` tasks of one key (or one
    /// keyless task), in one transaction on a kept connection: the tasks are
    /// chosen and locked ([`Self::select_group`]), leased in Rust
    /// ([`lifecycle::claim`]) and written back ([`Self::write_back`]).
    pub(crate) async fn claim_group(
        &self,
        request: &ClaimRequest,
        max_group: usize,
    ) -> Result<Claimed, StoreError> {
        let mut undecodable = Vec::new();
        let mut lent = self.lend().await?;
        let mut tx = sqlx::Connection::begin(lent.conn()).await.map_err(db)?;
        let selected = self
            .select_group(&mut tx, request, max_group, &mut undecodable)
            .await?;
        let tasks: Vec<Task> = selected
            .iter()
            .map(|task| lifecycle::claim(task, &request.grant))
            .collect();
        self.write_back(&mut tx, &tasks.iter().collect::<Vec<_>>())
            .await?;
        tx.commit().await.map_err(db)?;
        lent.give_back();
        Ok(Claimed { tasks, undecodable })
    }

    /// Chooses and locks the tasks of a resource-group claim (inside its
    /// transaction): the first candidate in claim order decides; a keyless
    /// one is taken alone, a keyed one with the ready tasks of its key, once
    /// the key's claim row is this transaction's ([`Self::lock_key`]).
    async fn select_group(
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

    /// Locks the claim row of resource key `key` (env and kind of
    /// `request`) for this transaction and bumps its claim count, or creates
    /// it; false when another claim holds it (never waited for). Inside a
    /// transaction, the statements after this one see every lease that
    /// earlier claims of the key committed, and no other claim of the key
    /// can commit until this transaction ends.
    async fn lock_key(
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
    async fn group_ids(
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

    /// Locks the still-ready rows among `ids` (`FOR UPDATE SKIP LOCKED`);
    /// keyed ones only if their key is in `keys` and still free. In claim
    /// order, or in group order when `group` is set.
    async fn lock_ready(
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
}

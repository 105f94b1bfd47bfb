//! Single-mode claims in one statement: choose, lock, check the resource
//! keys and write the lease (see the crate docs for why it is exact).

use super::*;

/// At most this many claim statements per call. A claim that got fewer
/// tasks than its limit asks again when its statement left out the second
/// and later ready tasks of a key among its candidates, or met candidates
/// that are not tasks (left out of the next statement, so that a run of
/// them at the head of the queue does not stop the kind), or leased rows
/// that do not decode (their leases taken back and left out likewise).
const ROUNDS: usize = 16;

/// A leased row that does not decode: its lease is taken back.
struct Unleash {
    id: String,
    version: i64,
    prior_leased_until: Option<String>,
    prior_lease_token: Option<String>,
}

impl PostgresStore {
    /// A single-mode claim of up to `limit` tasks: one statement
    /// ([`Self::single_claim_sql`]), repeated only as [`ROUNDS`] says.
    pub(crate) async fn claim_single(
        &self,
        request: &ClaimRequest,
        limit: usize,
    ) -> Result<Claimed, StoreError> {
        let mut tasks: Vec<Task> = Vec::new();
        let mut undecodable: Vec<Undecodable> = Vec::new();
        let sql = self.single_claim_sql(request.order);
        let token = request.grant.token.as_str();
        // Ids the next statement leaves out: rows that are not tasks.
        let mut skip: Vec<String> = Vec::new();
        for _ in 0..ROUNDS {
            let want = limit.saturating_sub(tasks.len());
            if want == 0 {
                break;
            }
            let want = i64::try_from(want).unwrap_or(i64::MAX);
            let mut lent = self.lend().await?;
            let rows = sqlx::query(&sql)
                .bind(&request.env)
                .bind(&request.kind)
                .bind(request.now)
                .bind(want)
                .bind(want.saturating_mul(2))
                .bind(request.grant.leased_until)
                .bind(token)
                .bind(&skip)
                .fetch_all(lent.conn())
                .await
                .map_err(db)?;
            lent.give_back();
            let mut leased_now = 0;
            let mut left_out: i64 = 0;
            let mut unleash = Vec::new();
            let mut skipped = 0;
            for r in &rows {
                let leased: bool = r.try_get("leased").map_err(db)?;
                left_out = r.try_get("left_out").map_err(db)?;
                let Decoded { id, task } = row::decode(r).map_err(db)?;
                match (task, leased) {
                    (Ok(task), true) => {
                        leased_now += 1;
                        tasks.push(task);
                    }
                    // A row SQL found ill-formed that still decodes: not
                    // leased, and nothing to report.
                    (Ok(_), false) => {
                        skipped += 1;
                        skip.push(id);
                    }
                    (Err(reason), leased) => {
                        if leased {
                            unleash.push(Unleash {
                                id: id.clone(),
                                version: r.try_get("version").map_err(db)?,
                                prior_leased_until: r.try_get("prior_leased_until").map_err(db)?,
                                prior_lease_token: r.try_get("prior_lease_token").map_err(db)?,
                            });
                        }
                        skipped += 1;
                        skip.push(id.clone());
                        undecodable.push(Undecodable { id, reason });
                    }
                }
            }
            self.unleash(unleash, token).await?;
            if skipped == 0 && (leased_now == 0 || left_out == 0) {
                break;
            }
        }
        Ok(Claimed { tasks, undecodable })
    }

    /// Takes back the leases of rows that SQL found well formed but that do
    /// not decode (an error time or a recurrence SQL does not check): their
    /// lease, token and counters as before the claim, fenced on the claim's
    /// version and token, so that they do not hold their key.
    async fn unleash(&self, rows: Vec<Unleash>, token: &str) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = rows.iter().map(|u| u.id.clone()).collect();
        let values: Vec<Value> = rows
            .into_iter()
            .map(|u| {
                serde_json::json!({
                    "id": u.id,
                    "version": u.version,
                    "prior_leased_until": u.prior_leased_until,
                    "prior_lease_token": u.prior_lease_token,
                })
            })
            .collect();
        let t = &self.inner.table;
        sqlx::query(&format!(
            "UPDATE {t} SET leased_until = x.prior_leased_until::timestamptz, \
               lease_token = x.prior_lease_token, attempts = {t}.attempts - 1, \
               cancellation_attempts = {t}.cancellation_attempts \
                 - CASE WHEN {t}.is_cancelled THEN 1 ELSE 0 END, \
               version = {t}.version + 1 \
             FROM jsonb_to_recordset($1) AS x(id text, version bigint, \
               prior_leased_until text, prior_lease_token text) \
             WHERE {t}.id = ANY($2) AND {t}.id = x.id AND {t}.version = x.version \
               AND {t}.lease_token = $3"
        ))
        .bind(Json(Value::Array(values)))
        .bind(&ids)
        .bind(token)
        .execute(&self.inner.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// The single-mode claim statement: env `$1`, kind `$2`, at `$3`, up to
    /// `$4` tasks in `order`, reading up to `$5` candidates per index range
    /// (and, in priority order, `$5` in all), leasing until `$6` with token
    /// `$7`, leaving out the ids `$8`.
    ///
    /// * `pool`: the candidate query's index ranges in `order` (as in
    ///   [`Self::candidate_sql`]: the three ranges of `tasks_ready_idx` in
    ///   the oldest order; the band walk over `tasks_priority_idx`, cut at
    ///   `$5` rows, in priority order): ready tasks whose key holds no live
    ///   lease in this statement's snapshot, each marked well formed or not
    ///   ([`WELL_FORMED`]);
    /// * `ranked`, `picked`: the first `$4` well-formed ones in the claim's
    ///   order (`priority DESC` first in priority order), at most one per
    ///   key (whatever the priorities of its tasks), each with its key's
    ///   claim row as the snapshot sees it (count and location; none when
    ///   the key has no row yet);
    /// * `lock_picked`, `locked`: those rows locked `FOR UPDATE SKIP
    ///   LOCKED` by id alone (so that no plan, even one made on an empty
    ///   table, reaches them through a partial index whose predicate the
    ///   readiness conditions would imply), then the ones still ready in
    ///   their newest version, which a locking read returns;
    /// * `key_locked`, `key_bumped`, `key_added`: the claim rows of their
    ///   keys, locked `FOR UPDATE SKIP LOCKED` and bumped only if the newest
    ///   count is the one the snapshot saw (no claim of the key committed
    ///   since the snapshot was taken), or inserted if the snapshot had none
    ///   (`ON CONFLICT DO NOTHING`: a row another claim inserted meanwhile
    ///   wins);
    /// * `leased`: the lease of the locked rows that are keyless or whose
    ///   key row this statement holds, as [`lifecycle::claim`] writes it
    ///   (`version + 1`, `attempts + 1`, `cancellation_attempts + 1` when
    ///   cancelled), with the lease and token they had before. The lease
    ///   end before, `wait_until`, `created_at` and the id (after the
    ///   priority, in priority order) give back the claim's order (never
    ///   leased first, by wait time; then expired leases),
    ///   so the rows need no join back to `picked` (a join the planner makes
    ///   a nested loop over both CTEs: 1.4 ms of a 128-task claim).
    ///
    /// Returns the leased rows in the claim's order (`leased` true) and the
    /// ill-formed candidates (`leased` false), each with `left_out`: how
    /// many candidates were left out as the second or later of their key.
    ///
    /// Tasks are found by id through the primary key (a join from a small
    /// CTE, or `= ANY(ARRAY(..))` on its own), never next to env and kind
    /// conditions, so stale statistics cannot turn the lookup into a walk
    /// over a whole index of the kind. An array is never the inner side of
    /// a nested loop: PostgreSQL sorts it on every rescan (in the lease
    /// write, another 1.3 ms of a 128-task claim). Claim rows are found once by
    /// key (primary key, led by the key) and then by the location of the
    /// version read or locked (a TID scan), which no statistics can turn
    /// into a scan of the table once it is larger than a few pages.
    pub(crate) fn single_claim_sql(&self, order: ClaimOrder) -> String {
        let t = &self.inner.table;
        let k = &self.inner.keys;
        // The claim order of a pool row `c`, and the returned rows' order
        // after their `part` (leased rows first).
        let oldest =
            "c.part, c.leased_until NULLS FIRST, c.wait_until NULLS FIRST, c.created_at, c.id";
        let (pool_order, out_order) = match order {
            ClaimOrder::Oldest => (oldest.to_owned(), "o.part, "),
            ClaimOrder::Priority => (
                format!("c.priority DESC, {oldest}"),
                "o.part, o.priority DESC, ",
            ),
        };
        let pool_order = pool_order.as_str();
        let returned = COLUMNS
            .split(',')
            .map(|c| format!("p.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let select = format!(
            "t.id, t.resource_key, t.leased_until, t.wait_until, t.created_at, \
             {WELL_FORMED} AS well_formed"
        );
        let parts = match order {
            ClaimOrder::Oldest => self.ready_parts(&select, "$8", "", "$5", None),
            ClaimOrder::Priority => {
                self.band_walk(&format!("{select}, t.priority"), "$8", "", "$5")
            }
        };
        format!(
            "WITH pool AS (SELECT * FROM ({parts}) c), \
             ranked AS ( \
                 SELECT c.*, row_number() OVER (PARTITION BY c.resource_key ORDER BY {pool_order}) \
                          AS nth \
                 FROM pool c WHERE c.well_formed), \
             picked AS ( \
                 SELECT c.id, c.resource_key, c.part, c.leased_until, c.wait_until, \
                        c.created_at, r.claims AS seen_claims, r.ctid AS key_row \
                 FROM (SELECT * FROM ranked c WHERE c.resource_key IS NULL OR c.nth = 1 \
                       ORDER BY {pool_order} LIMIT $4) c \
                 LEFT JOIN LATERAL ( \
                     SELECT r.claims, r.ctid FROM {k} r \
                     WHERE r.resource_key = c.resource_key AND r.env = $1 AND r.kind = $2 \
                     OFFSET 0) r ON true), \
             lock_picked AS ( \
                 SELECT t.id, t.resource_key, t.done_at, t.wait_until, t.leased_until, \
                        t.lease_token \
                 FROM {t} t WHERE t.id = ANY(ARRAY(SELECT id FROM picked)) \
                 FOR UPDATE OF t SKIP LOCKED), \
             locked AS ( \
                 SELECT l.id, l.resource_key, l.leased_until::text AS prior_leased_until, \
                        l.lease_token AS prior_lease_token, l.leased_until AS was_leased_until \
                 FROM lock_picked l \
                 WHERE l.done_at IS NULL \
                   AND (l.wait_until IS NULL OR l.wait_until <= $3) \
                   AND (l.leased_until IS NULL OR l.leased_until <= $3)), \
             key_locked AS ( \
                 SELECT r.ctid AS key_row, r.resource_key, r.claims FROM {k} r \
                 WHERE r.ctid = ANY(ARRAY( \
                   SELECT p.key_row FROM picked p \
                   WHERE p.key_row IS NOT NULL AND p.id IN (SELECT id FROM locked))) \
                 FOR UPDATE OF r SKIP LOCKED), \
             key_bumped AS ( \
                 UPDATE {k} r SET claims = r.claims + 1 \
                 WHERE r.ctid = ANY(ARRAY( \
                   SELECT l.key_row FROM key_locked l JOIN picked p \
                     ON p.resource_key = l.resource_key AND p.seen_claims = l.claims)) \
                 RETURNING r.resource_key), \
             key_added AS ( \
                 INSERT INTO {k} (env, kind, resource_key, claims) \
                 SELECT $1, $2, p.resource_key, 1 FROM picked p \
                 WHERE p.resource_key IS NOT NULL AND p.seen_claims IS NULL \
                   AND p.id IN (SELECT id FROM locked) \
                 ORDER BY p.resource_key \
                 ON CONFLICT DO NOTHING RETURNING resource_key), \
             leased AS ( \
                 UPDATE {t} t SET leased_until = $6, lease_token = $7, \
                   attempts = t.attempts + 1, \
                   cancellation_attempts = t.cancellation_attempts \
                     + CASE WHEN t.is_cancelled THEN 1 ELSE 0 END, \
                   version = t.version + 1 \
                 FROM locked l \
                 WHERE t.id = l.id \
                   AND (l.resource_key IS NULL \
                        OR l.resource_key IN (SELECT resource_key FROM key_bumped) \
                        OR l.resource_key IN (SELECT resource_key FROM key_added)) \
                 RETURNING t.*, l.prior_leased_until, l.prior_lease_token, \
                           l.was_leased_until), \
             left_out AS ( \
                 SELECT count(*) AS n FROM ranked WHERE resource_key IS NOT NULL AND nth > 1) \
             SELECT o.*, left_out.n AS left_out FROM ( \
                 SELECT {returned}, true AS leased, p.prior_leased_until, p.prior_lease_token, \
                        0 AS part, p.was_leased_until \
                 FROM leased p \
                 UNION ALL \
                 SELECT {COLUMNS}, false, NULL, NULL, 1, NULL FROM {t} \
                 WHERE id = ANY(ARRAY(SELECT id FROM pool WHERE NOT well_formed))) o, left_out \
             ORDER BY {out_order}o.was_leased_until NULLS FIRST, o.wait_until NULLS FIRST, \
                      o.created_at, o.id"
        )
    }
}

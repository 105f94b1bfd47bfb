//! The candidate query: ready tasks in the claim's order whose resource key
//! is free, read as index ranges — three of `tasks_ready_idx` in the oldest
//! order, three per priority present of `tasks_priority_idx` in priority
//! order. Apart from `group`, which pages through it, because the
//! single-mode statement embeds the same ranges.

use super::*;

/// True of every row (`priority` is a `smallint`), and the part of
/// `tasks_priority_idx`'s predicate besides `done_at IS NULL`: only a
/// query that states it may read that index, so the band walk's queries
/// state it and no other statement's plan can change for the index (the
/// busy-key check, the group query and the oldest order keep the plans
/// they had before it, even plans made on an empty table).
const EVERY_PRIORITY: &str = "t.priority >= -32768";

/// Most live leases of keyed tasks a claim statement gathers as its set of
/// busy keys ([`PostgresStore::busy_keys`]); with more, each candidate's key
/// is looked up in `tasks_key_lease_idx` instead.
const BUSY_KEYS: usize = 32;

impl PostgresStore {
    /// The candidate query in `order`: up to `$4` ready tasks of env `$1` /
    /// kind `$2` at `$3`, in the claim's order, whose resource key is free
    /// and not in `$5`, and whose id is not in `$6`.
    ///
    /// [`ClaimOrder::Oldest`]: the claim order is split into its three
    /// index ranges of `tasks_ready_idx` — never leased and never waiting
    /// (by `created_at`, id), never leased with `wait_until <= now`, and
    /// expired leases — each an index range scan stopped by its own
    /// `LIMIT`; the union (at most 3 × `$4` rows) is put back in claim
    /// order. So a claim reads a few index entries however many tasks wait
    /// for later. The busy-key check is the statement's set of busy keys
    /// when it is small ([`Self::busy_keys`]), else a correlated lookup in
    /// `tasks_key_lease_idx`, whose `b.id <> t.id` (true anyway: a ready
    /// task holds no live lease) keeps the planner from turning it into a
    /// hash of every live lease built by a sequential scan.
    ///
    /// [`ClaimOrder::Priority`]: the same three ranges within each priority
    /// present, highest first ([`Self::band_walk`]), cut at `$4` rows and
    /// put back in priority order.
    pub(crate) fn candidate_sql(&self, order: ClaimOrder) -> String {
        match order {
            ClaimOrder::Oldest => format!(
                "SELECT {COLUMNS} FROM ({}) t ORDER BY t.part, {CLAIM_ORDER} LIMIT $4",
                self.ready_parts("t.*", "$6", "t.resource_key <> ALL($5) AND", "$4", None)
            ),
            ClaimOrder::Priority => format!(
                "SELECT {COLUMNS} FROM ({}) t ORDER BY t.priority DESC, t.part, {CLAIM_ORDER} \
                 LIMIT $4",
                self.band_walk("t.*", "$6", "t.resource_key <> ALL($5) AND", "$4")
            ),
        }
    }

    /// The three index ranges of the claim order (see
    /// [`Self::candidate_sql`]) as a `UNION ALL` of subqueries, each
    /// selecting `select` and its part number (`part`) from ready tasks of
    /// env `$1` / kind `$2` at `$3` whose id is not in `skip_ids` and whose
    /// resource key is free (and meets `key_cond`, an SQL prefix ending in
    /// `AND`, or empty), each stopped after `limit` rows. With `band` (an
    /// SQL expression), only tasks of that priority: the three ranges of
    /// `tasks_priority_idx` within it. Shared by the candidate query and
    /// the one-statement claim; the busy-key check looks at the key's tasks
    /// of every priority.
    pub(super) fn ready_parts(
        &self,
        select: &str,
        skip_ids: &str,
        key_cond: &str,
        limit: &str,
        band: Option<&str>,
    ) -> String {
        let t = &self.inner.table;
        // The band's priority, stated three times: as an equality (the
        // index range) and as a range, whose selectivity PostgreSQL
        // estimates at 0.5 % whatever the statistics say, so that no plan
        // reads the band from `tasks_ready_idx` with the priority as a
        // filter (which would walk every other band's tasks) even when
        // every task is at one priority or `tasks_priority_idx` is the
        // larger of the two. The B-tree scan keeps the equality alone.
        let busy = self.busy_keys();
        let band = band.map_or(String::new(), |b| {
            format!(
                "t.priority = {b} AND t.priority >= {b} AND t.priority <= {b} \
                 AND {EVERY_PRIORITY} AND "
            )
        });
        let part = |n: u8, cond: &str| {
            format!(
                "(SELECT {select}, {n} AS part FROM {t} t \
                 WHERE t.env = $1 AND t.kind = $2 AND {band}t.done_at IS NULL AND {cond} \
                   AND t.id <> ALL({skip_ids}) \
                   AND (t.resource_key IS NULL OR ({key_cond} coalesce( \
                     t.resource_key <> ALL(CAST({busy} AS text[])), NOT EXISTS ( \
                     SELECT 1 FROM {t} b WHERE b.env = t.env AND b.kind = t.kind \
                       AND b.resource_key = t.resource_key AND b.done_at IS NULL \
                       AND b.leased_until > $3 AND b.id <> t.id)))) \
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

    /// The busy keys of env `$1` / kind `$2` at `$3`, as an SQL expression:
    /// the keys of the keyed tasks holding a live lease in the statement's
    /// snapshot (a key once per lease), or `NULL` when there are more than
    /// [`BUSY_KEYS`] such leases. An uncorrelated subquery, so PostgreSQL
    /// runs it once per statement (an init plan) and not per candidate: it
    /// reads the live leases, the end of `tasks_ready_idx`'s range for the
    /// env and kind (`leased_until > $3`, in index order, stopped after
    /// [`BUSY_KEYS`] + 1 keyed ones).
    ///
    /// `t.resource_key <> ALL(busy)` is then the busy-key check at a few
    /// comparisons a candidate, where the correlated lookup costs an index
    /// descent and a heap fetch for each. That matters when a few keys with
    /// many ready tasks each are busy: every claim steps over all of those
    /// keys' ready tasks (none of which it may take) to find the free ones,
    /// and a claim that finds every key busy reads the kind's whole
    /// backlog; with the lookup, a claim over 10,000 ready tasks on 10 busy
    /// keys took 30-45 ms on the 2-core test machine, the 10 per-key rate
    /// limiters of the bench's per-key row got half their starts
    /// (BENCHMARKS.md). With more live leases, the set is `NULL` and the
    /// lookup decides (`coalesce`), as before. The answer is the same
    /// either way: both read the statement's snapshot, and a ready task
    /// holds no live lease itself. (The subquery steps over keyless live
    /// leases too: at most the kind's running and claimed-ahead tasks.)
    fn busy_keys(&self) -> String {
        let t = &self.inner.table;
        let cap = BUSY_KEYS + 1;
        format!(
            "(SELECT k.keys FROM ( \
                 SELECT ARRAY(SELECT b.resource_key FROM {t} b \
                   WHERE b.env = $1 AND b.kind = $2 AND b.done_at IS NULL \
                     AND b.leased_until > $3 AND b.resource_key IS NOT NULL \
                   ORDER BY b.leased_until NULLS FIRST LIMIT {cap}) AS keys OFFSET 0) k \
               WHERE cardinality(k.keys) <= {BUSY_KEYS})"
        )
    }

    /// The ready tasks in priority order (the *band walk*), as a query
    /// selecting what [`Self::ready_parts`] selects: its first `limit` rows
    /// in the order `priority DESC`, `part`, [`CLAIM_ORDER`], ready and
    /// free as there.
    ///
    /// A recursive `band` finds the priorities present among the kind's
    /// not-done tasks, highest first, one probe of `tasks_priority_idx`
    /// each (the highest priority below the last; a last row of `NULL`
    /// ends it); for each, a lateral [`Self::ready_parts`] reads that
    /// priority's three ranges, each stopped after `limit` rows. So a
    /// priority whose tasks all wait for later costs four index probes, not
    /// a walk over its waiting tasks (which, never leased, sort between its
    /// ready ones and its expired leases). The index holds priorities in
    /// ascending order, so each probe scans backward and lands on the end
    /// of a priority's range (its latest leases or waits) rather than its
    /// head, where the entries of the tasks the last claims took lie dead
    /// until vacuum: the range of never-leased tasks steps over those
    /// anyway, and a probe there would step over them a second time.
    ///
    /// The rows leave the nested loop in priority order (the bands in the
    /// order the recursion finds them; within one, the parts in turn, each
    /// in index order), and the `LIMIT` cuts that stream: PostgreSQL
    /// evaluates a recursive `WITH`, and a nested loop's inner side, only as
    /// far as the rows read, so the walk stops in the band, even the part,
    /// where the limit is reached. With one priority present (every task at
    /// 0, the usual case) that is one probe more than [`ClaimOrder::Oldest`]
    /// reads, and a part fewer when the never-leased tasks fill the limit.
    /// The plan tests check that the plan keeps this shape (no sort under
    /// the `LIMIT`) and reads this index; callers sort what it returns by
    /// the order above. The first `limit` rows of the stream are exactly
    /// the first `limit` ready tasks in priority order: a part is cut only
    /// after `limit` rows of it.
    pub(super) fn band_walk(
        &self,
        select: &str,
        skip_ids: &str,
        key_cond: &str,
        limit: &str,
    ) -> String {
        let t = &self.inner.table;
        let next = |below: &str| {
            format!(
                "(SELECT t.priority FROM {t} t \
                 WHERE t.env = $1 AND t.kind = $2 AND t.done_at IS NULL \
                   AND {EVERY_PRIORITY}{below} \
                 ORDER BY t.priority DESC LIMIT 1)"
            )
        };
        format!(
            "WITH RECURSIVE band (p) AS ( \
                 SELECT {} UNION ALL SELECT {} FROM band r WHERE r.p IS NOT NULL) \
             SELECT c.* FROM band g CROSS JOIN LATERAL ({}) c LIMIT {limit}",
            next(""),
            next(" AND t.priority < r.p"),
            self.ready_parts(select, skip_ids, key_cond, limit, Some("g.p")),
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
        let sql = self.candidate_sql(request.order);
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

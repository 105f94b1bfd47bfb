//! Rate limiters ([`Store::take_starts`], [`Store::return_starts`]): one
//! row of `rate_limits` (migration 0006) per env, kind and resource key
//! (`keyed` false and key `''` for the kind's own), holding the window it
//! last saw and the starts taken in it.
//!
//! A take is one `INSERT … ON CONFLICT DO UPDATE` for the whole batch. The
//! rule of [`StartsRequest::grant`] is computed in the `DO UPDATE` on the
//! limiter's row, which PostgreSQL locks and reads in its newest committed
//! version (whatever the statement's snapshot), so each request is atomic
//! against every other connection; a limiter seen by no one yet is
//! inserted, and two first takes racing meet on the primary key (the
//! second waits and then updates). The grant is written to the row's
//! `granted` column and returned. A stored window newer than the request's
//! fails the `DO UPDATE … WHERE`: nothing is written or returned, so the
//! grant is 0. Rows are upserted in one fixed order (the limiter key,
//! sorted), so concurrent batches cannot deadlock.
//!
//! Rows whose window ended over an hour before (by the callers' clock) are
//! deleted now and then: at most once a minute per store, 1,000 at most,
//! skipping rows another statement holds.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use chrono::TimeDelta;

use super::*;

/// A limiter's identity: env, kind, keyed, resource key (`''` when not keyed).
type LimiterKey = (String, String, bool, String);

/// How long after its window ended a limiter row may be deleted.
const FORGET_AFTER: TimeDelta = TimeDelta::hours(1);

/// How often (by the callers' clock) a store looks for such rows.
const SWEEP_EVERY_MS: i64 = 60_000;

/// Rows deleted per sweep at most.
const SWEEP_ROWS: i64 = 1_000;

fn limiter_key(request: &StartsRequest) -> LimiterKey {
    (
        request.env.clone(),
        request.kind.clone(),
        request.resource_key.is_some(),
        request.resource_key.clone().unwrap_or_default(),
    )
}

/// The end of the request's window, within PostgreSQL's range (a period
/// too long to add is a window that never ends).
fn window_end(request: &StartsRequest) -> DateTime<Utc> {
    let never = DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(request.window_start);
    i64::try_from(request.period_ms)
        .ok()
        .and_then(TimeDelta::try_milliseconds)
        .and_then(|period| request.window_start.checked_add_signed(period))
        .map_or(never, |end| end.min(never))
}

impl PostgresStore {
    /// [`Store::take_starts`]: one statement per round; a limiter named
    /// twice in a call goes in a later round, so it is decided on what the
    /// earlier request left.
    pub(crate) async fn take(&self, requests: &[StartsRequest]) -> Result<Vec<u32>, StoreError> {
        let mut granted = vec![0u32; requests.len()];
        // A request for nothing grants nothing, and changes nothing that
        // the next request would not change too.
        let mut waiting: Vec<usize> = (0..requests.len())
            .filter(|&i| requests[i].count > 0)
            .collect();
        while !waiting.is_empty() {
            let mut round: BTreeMap<LimiterKey, usize> = BTreeMap::new();
            let mut later = Vec::new();
            for i in waiting {
                match round.entry(limiter_key(&requests[i])) {
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(i);
                    }
                    std::collections::btree_map::Entry::Occupied(_) => later.push(i),
                }
            }
            waiting = later;
            let got = self.take_round(requests, &round).await?;
            for (key, i) in round {
                if let Some(&n) = got.get(&key) {
                    granted[i] = n;
                }
            }
        }
        if let Some(latest) = requests.iter().map(|r| r.window_start).max() {
            self.sweep_limiters(latest).await?;
        }
        Ok(granted)
    }

    /// One upsert of the requests of `round` (one per limiter, in key
    /// order); the grants by limiter (absent: 0).
    async fn take_round(
        &self,
        requests: &[StartsRequest],
        round: &BTreeMap<LimiterKey, usize>,
    ) -> Result<HashMap<LimiterKey, u32>, StoreError> {
        let n = round.len();
        let (mut envs, mut kinds, mut keyed, mut keys) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut starts, mut ends, mut limits, mut counts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for ((env, kind, is_keyed, key), &i) in round {
            let request = &requests[i];
            envs.push(env.as_str());
            kinds.push(kind.as_str());
            keyed.push(*is_keyed);
            keys.push(key.as_str());
            starts.push(request.window_start);
            ends.push(window_end(request));
            limits.push(i64::from(request.limit));
            counts.push(i64::from(request.count));
        }
        let rows = sqlx::query(&self.take_sql())
            .bind(&envs)
            .bind(&kinds)
            .bind(&keyed)
            .bind(&keys)
            .bind(&starts)
            .bind(&ends)
            .bind(&limits)
            .bind(&counts)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db)?;
        let mut got = HashMap::with_capacity(rows.len());
        for r in &rows {
            let key: LimiterKey = (
                r.try_get(0).map_err(db)?,
                r.try_get(1).map_err(db)?,
                r.try_get(2).map_err(db)?,
                r.try_get(3).map_err(db)?,
            );
            let n: i64 = r.try_get(4).map_err(db)?;
            got.insert(key, u32::try_from(n).map_err(StoreError::backend)?);
        }
        Ok(got)
    }

    /// The take: for each limiter of the arrays `$1`..`$8` (env, kind,
    /// keyed, key, window start, window end, limit, count), in array
    /// order, insert the row with `least(count, limit)` taken, or on
    /// conflict apply [`StartsRequest::grant`] to the stored row: the same
    /// window grants `least(count, limit - taken)` (never below 0; the
    /// proposed row's `taken` is `least(count, limit)`, and `limit - taken
    /// <= limit`), an older one is replaced, a newer one fails the `WHERE`
    /// and grants nothing. Returns each written limiter and its grant.
    pub(crate) fn take_sql(&self) -> String {
        let l = &self.inner.limiters;
        format!(
            "INSERT INTO {l} AS r (env, kind, keyed, resource_key, window_start, window_end, \
                                   taken, granted, starts_limit) \
             SELECT q.env, q.kind, q.keyed, q.resource_key, q.window_start, q.window_end, \
                    least(q.count, q.lim), least(q.count, q.lim), q.lim \
             FROM unnest($1::text[], $2::text[], $3::boolean[], $4::text[], \
                         $5::timestamptz[], $6::timestamptz[], $7::bigint[], $8::bigint[]) \
                  WITH ORDINALITY AS q(env, kind, keyed, resource_key, window_start, \
                                       window_end, lim, count, n) \
             ORDER BY q.n \
             ON CONFLICT (env, kind, keyed, resource_key) DO UPDATE SET \
               granted = CASE WHEN r.window_start = excluded.window_start \
                 THEN least(excluded.taken, greatest(0, excluded.starts_limit - r.taken)) \
                 ELSE excluded.taken END, \
               taken = CASE WHEN r.window_start = excluded.window_start \
                 THEN r.taken + least(excluded.taken, greatest(0, excluded.starts_limit - r.taken)) \
                 ELSE excluded.taken END, \
               window_start = excluded.window_start, \
               window_end = excluded.window_end, \
               starts_limit = excluded.starts_limit \
             WHERE r.window_start <= excluded.window_start \
             RETURNING r.env, r.kind, r.keyed, r.resource_key, r.granted"
        )
    }

    /// [`Store::return_starts`]: the counts given back to one limiter and
    /// window in one call are added up first (taking `a` then `b` off,
    /// never below 0, is taking `a + b` off), then one statement locks the
    /// rows in key order and lowers those still in that window.
    pub(crate) async fn give_back(&self, requests: &[StartsRequest]) -> Result<(), StoreError> {
        let mut back: BTreeMap<(LimiterKey, DateTime<Utc>), i64> = BTreeMap::new();
        for request in requests.iter().filter(|r| r.count > 0) {
            *back
                .entry((limiter_key(request), request.window_start))
                .or_default() += i64::from(request.count);
        }
        if back.is_empty() {
            return Ok(());
        }
        let n = back.len();
        let (mut envs, mut kinds, mut keyed, mut keys, mut starts, mut counts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (((env, kind, is_keyed, key), start), count) in back {
            envs.push(env);
            kinds.push(kind);
            keyed.push(is_keyed);
            keys.push(key);
            starts.push(start);
            counts.push(count);
        }
        sqlx::query(&self.give_back_sql())
            .bind(&envs)
            .bind(&kinds)
            .bind(&keyed)
            .bind(&keys)
            .bind(&starts)
            .bind(&counts)
            .execute(&self.inner.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The give-back: the rows of the limiters in the arrays `$1`..`$6`
    /// (env, kind, keyed, key, window start, count) still in that window,
    /// locked in array order (a locking read sorted by it, materialized
    /// before the update, so the update's own join order never decides
    /// the lock order), each lowered by its count, never below 0. The
    /// update finds the rows by key and window, not by the locked
    /// version's location: a version committed after the statement's
    /// snapshot is reached from the one the snapshot sees, and checked
    /// again.
    pub(crate) fn give_back_sql(&self) -> String {
        let l = &self.inner.limiters;
        format!(
            "WITH q AS ( \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::boolean[], $4::text[], \
                                      $5::timestamptz[], $6::bigint[]) \
                 WITH ORDINALITY AS q(env, kind, keyed, resource_key, window_start, count, n)), \
             locked AS MATERIALIZED ( \
                 SELECT q.* FROM q JOIN {l} r \
                   ON r.env = q.env AND r.kind = q.kind AND r.keyed = q.keyed \
                  AND r.resource_key = q.resource_key AND r.window_start = q.window_start \
                 ORDER BY q.n FOR UPDATE OF r) \
             UPDATE {l} r SET taken = greatest(0, r.taken - locked.count) \
             FROM locked \
             WHERE r.env = locked.env AND r.kind = locked.kind AND r.keyed = locked.keyed \
               AND r.resource_key = locked.resource_key \
               AND r.window_start = locked.window_start"
        )
    }

    /// Deletes limiter rows whose window ended [`FORGET_AFTER`] before
    /// `now` (the callers' clock), at most once per [`SWEEP_EVERY_MS`] per
    /// store: [`SWEEP_ROWS`] at most, skipping locked rows, so a sweep
    /// never waits for a take (nor a take deadlocks with it: the take
    /// meets the row gone, and inserts it again).
    async fn sweep_limiters(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let at = now.timestamp_millis();
        let last = self.inner.limiters_swept_at.load(Ordering::Relaxed);
        if at.saturating_sub(last) < SWEEP_EVERY_MS
            || self
                .inner
                .limiters_swept_at
                .compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
        let Some(cutoff) = now.checked_sub_signed(FORGET_AFTER) else {
            return Ok(());
        };
        let l = &self.inner.limiters;
        sqlx::query(&format!(
            "DELETE FROM {l} WHERE ctid = ANY(ARRAY( \
                 SELECT ctid FROM {l} WHERE window_end < $1 \
                 ORDER BY window_end LIMIT $2 FOR UPDATE SKIP LOCKED))"
        ))
        .bind(cutoff)
        .bind(SWEEP_ROWS)
        .execute(&self.inner.pool)
        .await
        .map_err(db)?;
        Ok(())
    }
}

//! Claims. A single-task claim reads its candidates outside any write
//! transaction, then leases them in one short `BEGIN IMMEDIATE`
//! transaction with one fenced statement: a row is leased only if it still
//! has the version it was read with (every writer bumps it, so nothing of
//! the row changed: it is still ready, and the task decoded from it is
//! still right) and no other task of its key has taken a live lease since.
//! When another claimer took some candidates first, the claim fills the
//! rest inside the transaction, with the exact walk a group claim always
//! uses: under SQLite's one write lock nothing else changes the rows it
//! reads, so the busy-key check is exact without `SKIP LOCKED` (see the
//! crate docs).
//!
//! Reading first keeps the walk, and the copying and decoding of every
//! candidate row, out of the time the store holds the database's one write
//! lock, which every writer of every process on the file waits for; a
//! claim that finds nothing takes no lock at all.
//!
//! The walk reads the claim order as index ranges, as the PostgreSQL
//! backend does, so that it never steps over tasks scheduled for later or
//! live leases: never-leased tasks that never waited, never-leased tasks
//! whose `wait_until` has passed (both from `tasks_unleased_idx`, in
//! `wait_until, created_at, id` order), then expired leases
//! (`tasks_leased_idx`, in `leased_until, …` order) — [`PARTS`], read in
//! turn and stopped where the claim is full. That is exactly the order of
//! one `ORDER BY leased_until, wait_until, created_at, id` (`NULL` first).
//! In the priority order it reads them within each priority present,
//! highest first (the never-leased ones from `tasks_unleased_priority_idx`),
//! found one probe at a time ([`BAND_SQL`]).
//!
//! A task is in the unleased indexes or in the leased one, never both
//! (migration `0004`): a lease moves it between them, and no index holds
//! `leased_until` beside tasks that have none, so a lease and a completion
//! write five index entries, not ten. With 20,000 tasks scheduled for
//! later (`examples/claim_scheduled.rs`), a claim that finds nothing ready
//! reads none of them.

use std::collections::HashSet;
use std::sync::LazyLock;

use futures::TryStreamExt;
use oncetask_core::store::{ClaimMode, ClaimOrder, ClaimRequest, Claimed, Undecodable};
use oncetask_core::{StoreError, Task, lifecycle};
use sqlx::{Row as _, SqliteConnection};

use crate::SqliteStore;
use crate::error::db;
use crate::row::{self, COLUMNS, Decoded, micros};
use crate::values::{self, MAX_ROWS};

/// One range of the claim order among the ready tasks: the index it is
/// read from, its condition and its order.
struct Part {
    index: &'static str,
    banded_index: &'static str,
    condition: &'static str,
    order: &'static str,
}

/// The three ranges of the claim order among the ready tasks, in order:
/// never leased and never waiting; never leased, waited until now; an
/// expired lease.
const PARTS: [Part; 3] = [
    Part {
        index: "tasks_unleased_idx",
        banded_index: "tasks_unleased_priority_idx",
        condition: "leased_until IS NULL AND wait_until IS NULL",
        order: "wait_until, created_at, id",
    },
    Part {
        index: "tasks_unleased_idx",
        banded_index: "tasks_unleased_priority_idx",
        condition: "leased_until IS NULL AND wait_until <= ?3",
        order: "wait_until, created_at, id",
    },
    Part {
        index: "tasks_leased_idx",
        banded_index: "tasks_leased_idx",
        condition: "leased_until IS NOT NULL AND leased_until <= ?3 \
                    AND (wait_until IS NULL OR wait_until <= ?3)",
        order: "leased_until, wait_until, created_at, id",
    },
];

/// The ready tasks of env `?1` / kind `?2` at `?3` in `part` whose
/// resource key has no live lease (a not-done task of the key, same env
/// and kind, leased past `?3`), in claim order; with `band`, only those of
/// priority `?4`. `INDEXED BY` makes a statement fail rather than run
/// without its index.
fn part_sql(part: &Part, band: bool) -> String {
    let (index, band) = if band {
        (part.banded_index, "AND priority = ?4 ")
    } else {
        (part.index, "")
    };
    let Part {
        condition, order, ..
    } = part;
    let key_free = key_free("t");
    format!(
        "SELECT {COLUMNS} FROM tasks t INDEXED BY {index} \
         WHERE env = ?1 AND kind = ?2 AND done_at IS NULL {band}AND {condition} \
           AND {key_free} \
         ORDER BY {order}"
    )
}

/// The busy-key check of the row `row` names, at `?3`: it has no resource
/// key, or no not-done task of its key (same env and kind) holds a lease
/// past `?3`.
fn key_free(row: &str) -> String {
    format!(
        "({row}.resource_key IS NULL OR NOT EXISTS ( \
           SELECT 1 FROM tasks b WHERE b.env = {row}.env AND b.kind = {row}.kind \
             AND b.resource_key = {row}.resource_key AND b.done_at IS NULL \
             AND b.leased_until > ?3))"
    )
}

/// [`part_sql`] of each part, without and with a band.
static PART_SQL: LazyLock<[[String; 3]; 2]> =
    LazyLock::new(|| [false, true].map(|band| PARTS.each_ref().map(|part| part_sql(part, band))));

/// The highest priority (below `?4` with `below`) among the never-leased
/// not-done tasks of env `?1` / kind `?2` (one probe of
/// `tasks_unleased_priority_idx`) and the expired leases at `?3` (few:
/// read from `tasks_leased_idx`), with its type.
fn band_sql(below: bool) -> String {
    let below = if below { "AND priority < ?4 " } else { "" };
    format!(
        "SELECT p, typeof(p) FROM ( \
           SELECT * FROM (SELECT priority AS p FROM tasks \
             INDEXED BY tasks_unleased_priority_idx \
             WHERE env = ?1 AND kind = ?2 AND done_at IS NULL AND leased_until IS NULL {below}\
             ORDER BY priority DESC LIMIT 1) \
           UNION ALL \
           SELECT priority AS p FROM tasks INDEXED BY tasks_leased_idx \
             WHERE env = ?1 AND kind = ?2 AND done_at IS NULL AND leased_until IS NOT NULL \
               AND leased_until <= ?3 {below}) \
         ORDER BY p DESC LIMIT 1"
    )
}

/// [`band_sql`], the highest and below a priority.
static BAND_SQL: LazyLock<[String; 2]> = LazyLock::new(|| [band_sql(false), band_sql(true)]);

/// A stored priority as it is: an integer in a well-formed row, anything
/// in a row another program wrote (which the walk reads, and reports, as
/// the single `ORDER BY` did).
#[derive(Debug, Clone)]
enum Priority {
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Priority {
    fn bind<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
        match self {
            Self::Integer(v) => query.bind(*v),
            Self::Real(v) => query.bind(*v),
            Self::Text(v) => query.bind(v.clone()),
            Self::Blob(v) => query.bind(v.clone()),
        }
    }
}

/// The priority present below `below` (the highest with `None`), highest
/// first; `None` when there is none.
async fn next_band(
    conn: &mut SqliteConnection,
    request: &ClaimRequest,
    below: Option<&Priority>,
) -> Result<Option<Priority>, StoreError> {
    let [highest, lower] = &*BAND_SQL;
    let query = sqlx::query(if below.is_some() { lower } else { highest })
        .bind(request.env.as_str())
        .bind(request.kind.as_str())
        .bind(micros(request.now));
    let query = match below {
        Some(p) => p.bind(query),
        None => query,
    };
    let Some(row) = query.fetch_optional(conn).await.map_err(db)? else {
        return Ok(None);
    };
    let kind: String = row.try_get(1).map_err(db)?;
    Ok(Some(match kind.as_str() {
        "integer" => Priority::Integer(row.try_get(0).map_err(db)?),
        "real" => Priority::Real(row.try_get(0).map_err(db)?),
        "text" => Priority::Text(row.try_get(0).map_err(db)?),
        "blob" => Priority::Blob(row.try_get(0).map_err(db)?),
        // NOT NULL: no other type can be stored.
        _ => return Ok(None),
    }))
}

/// The ready tasks of key `?4` (env `?1`, kind `?2`, at `?3`) in group
/// order: `wait_until` (`NULL` first), `created_at`, id.
static GROUP_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS} FROM tasks \
         WHERE env = ?1 AND kind = ?2 AND resource_key = ?4 AND done_at IS NULL \
           AND (leased_until IS NULL OR leased_until <= ?3) \
           AND (wait_until IS NULL OR wait_until <= ?3) \
         ORDER BY wait_until, created_at, id"
    )
});

/// Whether a walk over candidates goes on after a task.
enum Walk {
    More,
    Done,
}

impl SqliteStore {
    /// [`oncetask_core::Store::claim`].
    pub(crate) async fn claim_tasks(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
        let mut undecodable = Vec::new();
        let tasks = match request.mode {
            ClaimMode::Single { limit: 0 } | ClaimMode::ResourceGroup { max_group: 0 } => {
                Vec::new()
            }
            ClaimMode::Single { limit } => {
                self.claim_single(request, limit, &mut undecodable).await?
            }
            ClaimMode::ResourceGroup { max_group } => {
                let mut tx = self.begin_write().await?;
                let group = select_group(tx.conn(), request, max_group, &mut undecodable).await?;
                // Read in this transaction: every fence holds, and the
                // group shares its key, which the keys check would refuse.
                let tasks = write_leases(tx.conn(), &group, request, KeyCheck::Skip).await?;
                tx.commit().await?;
                tasks
            }
        };
        // A walk reads some rows twice: report each once.
        let mut seen = HashSet::new();
        undecodable.retain(|u| seen.insert(u.id.clone()));
        Ok(Claimed { tasks, undecodable })
    }

    /// A single-task claim: the candidates are read outside the write
    /// transaction (see the module docs), then leased in it.
    async fn claim_single(
        &self,
        request: &ClaimRequest,
        limit: usize,
        undecodable: &mut Vec<Undecodable>,
    ) -> Result<Vec<Task>, StoreError> {
        let candidates = self.read_candidates(request, limit, undecodable).await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        self.lease_candidates(request, limit, &candidates, undecodable)
            .await
    }

    /// Up to `limit` ready tasks in the claim's order, at most one per
    /// free key, read on a pooled connection outside any transaction.
    async fn read_candidates(
        &self,
        request: &ClaimRequest,
        limit: usize,
        undecodable: &mut Vec<Undecodable>,
    ) -> Result<Vec<Task>, StoreError> {
        let mut conn = self.inner.pool.acquire().await.map_err(db)?;
        select_single(&mut conn, request, limit, undecodable).await
    }

    /// Leases the `candidates` that still have the version they were read
    /// with and whose key is still free, in one write transaction; when
    /// another claimer took some first, fills up to `limit` inside it.
    async fn lease_candidates(
        &self,
        request: &ClaimRequest,
        limit: usize,
        candidates: &[Task],
        undecodable: &mut Vec<Undecodable>,
    ) -> Result<Vec<Task>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut tasks = write_leases(tx.conn(), candidates, request, KeyCheck::Free).await?;
        if tasks.len() < candidates.len() {
            let more = select_single(tx.conn(), request, limit - tasks.len(), undecodable).await?;
            tasks.extend(write_leases(tx.conn(), &more, request, KeyCheck::Skip).await?);
        }
        tx.commit().await?;
        Ok(tasks)
    }
}

/// A parameter after the request's env, kind and now.
enum Param<'a> {
    Key(&'a str),
    Priority(&'a Priority),
}

/// Streams the rows of `sql` (bound to the request's env, kind and now,
/// and `param` as `?4` when given) and hands each decodable ready task to
/// `take` until it says [`Walk::Done`]; rows that do not decode are
/// reported in `undecodable`. The stream stops where the walk does.
async fn walk(
    conn: &mut SqliteConnection,
    sql: &str,
    request: &ClaimRequest,
    param: Option<Param<'_>>,
    undecodable: &mut Vec<Undecodable>,
    take: &mut impl FnMut(Task) -> Walk,
) -> Result<Walk, StoreError> {
    let mut query = sqlx::query(sql)
        .bind(request.env.as_str())
        .bind(request.kind.as_str())
        .bind(micros(request.now));
    match param {
        Some(Param::Key(key)) => query = query.bind(key),
        Some(Param::Priority(p)) => query = p.bind(query),
        None => {}
    }
    let mut rows = query.fetch(conn);
    while let Some(r) = rows.try_next().await.map_err(db)? {
        let Decoded { id, task } = row::decode(&r).map_err(StoreError::backend)?;
        match task {
            Err(reason) => undecodable.push(Undecodable { id, reason }),
            // SQL and Rust agree on readiness; a row they would not is left.
            Ok(task) if !task.is_ready_at(request.now) => {}
            Ok(task) => {
                if let Walk::Done = take(task) {
                    return Ok(Walk::Done);
                }
            }
        }
    }
    Ok(Walk::More)
}

/// Hands the ready tasks whose key is free to `take` in the request's
/// claim order, range after range (see the module docs), until it says
/// [`Walk::Done`] or none are left.
async fn walk_ready(
    conn: &mut SqliteConnection,
    request: &ClaimRequest,
    undecodable: &mut Vec<Undecodable>,
    mut take: impl FnMut(Task) -> Walk,
) -> Result<(), StoreError> {
    let [unbanded, banded] = &*PART_SQL;
    match request.order {
        ClaimOrder::Oldest => {
            for sql in unbanded {
                if let Walk::Done = walk(conn, sql, request, None, undecodable, &mut take).await? {
                    return Ok(());
                }
            }
        }
        ClaimOrder::Priority => {
            let mut band = next_band(conn, request, None).await?;
            while let Some(priority) = band {
                for sql in banded {
                    let param = Some(Param::Priority(&priority));
                    if let Walk::Done =
                        walk(conn, sql, request, param, undecodable, &mut take).await?
                    {
                        return Ok(());
                    }
                }
                band = next_band(conn, request, Some(&priority)).await?;
            }
        }
    }
    Ok(())
}

/// Up to `limit` ready tasks in the claim's order, at most one per key.
async fn select_single(
    conn: &mut SqliteConnection,
    request: &ClaimRequest,
    limit: usize,
    undecodable: &mut Vec<Undecodable>,
) -> Result<Vec<Task>, StoreError> {
    let mut picked: Vec<Task> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    walk_ready(conn, request, undecodable, |task| {
        if let Some(key) = &task.resource_key {
            if keys.contains(key) {
                return Walk::More;
            }
            keys.push(key.clone());
        }
        picked.push(task);
        if picked.len() >= limit {
            Walk::Done
        } else {
            Walk::More
        }
    })
    .await?;
    Ok(picked)
}

/// The first ready candidate in the claim's order decides: a keyless one
/// is taken alone; a keyed one with the ready tasks of its key, in group
/// order, at most `max_group`.
async fn select_group(
    conn: &mut SqliteConnection,
    request: &ClaimRequest,
    max_group: usize,
    undecodable: &mut Vec<Undecodable>,
) -> Result<Vec<Task>, StoreError> {
    let mut first: Option<Task> = None;
    walk_ready(conn, request, undecodable, |task| {
        first = Some(task);
        Walk::Done
    })
    .await?;
    let Some(first) = first else {
        return Ok(Vec::new());
    };
    let Some(key) = first.resource_key.clone() else {
        return Ok(vec![first]);
    };
    let mut group = Vec::new();
    let mut take = |task| {
        group.push(task);
        if group.len() >= max_group {
            Walk::Done
        } else {
            Walk::More
        }
    };
    let key = Some(Param::Key(&key));
    walk(conn, &GROUP_SQL, request, key, undecodable, &mut take).await?;
    Ok(group)
}

/// Whether [`write_leases`] checks that a task's resource key has no
/// live lease.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyCheck {
    /// The tasks were read before the transaction, each key at most once:
    /// another claimer may have leased a task of the key since.
    Free,
    /// The tasks were read in this transaction, where nothing else writes.
    Skip,
}

/// Leases `picked` (rows as read) with the request's grant, [`MAX_ROWS`]
/// a statement (module `values`): the lease and its token are the
/// claim's, the counters each task's ([`lifecycle::claim`]). A row is
/// written only if it still has the version it was read with (nothing of
/// it changed, so it is still ready and its decoded task still right),
/// and with [`KeyCheck::Free`] only if no other task of its key holds a
/// live lease. The leased tasks written, in `picked`'s order.
async fn write_leases(
    conn: &mut SqliteConnection,
    picked: &[Task],
    request: &ClaimRequest,
    keys: KeyCheck,
) -> Result<Vec<Task>, StoreError> {
    let key_free = match keys {
        KeyCheck::Free => format!("AND {}", key_free("tasks")),
        KeyCheck::Skip => String::new(),
    };
    // Each task's lease, computed once: bound below, returned if written.
    let leased: Vec<Task> = picked
        .iter()
        .map(|read| lifecycle::claim(read, &request.grant))
        .collect();
    let mut written = HashSet::with_capacity(picked.len());
    for (reads, leases) in picked.chunks(MAX_ROWS).zip(leased.chunks(MAX_ROWS)) {
        let padded = values::padded(reads.len());
        let sql = format!(
            "UPDATE tasks SET leased_until = ?1, lease_token = ?2, version = x.column3, \
               attempts = x.column4, cancellation_attempts = x.column5 \
             FROM (VALUES {}) AS x \
             WHERE tasks.id = x.column1 AND tasks.version = x.column2 {key_free} \
             RETURNING tasks.id",
            values::numbered_placeholders(padded, LEASE_COLUMNS, 4)
        );
        let mut query = sqlx::query(&sql)
            .bind(micros(request.grant.leased_until))
            .bind(request.grant.token.as_str())
            .bind(micros(request.now));
        for (read, task) in reads.iter().zip(leases) {
            let unencodable = |reason| StoreError::Unencodable {
                id: task.id.clone(),
                reason,
            };
            query = query
                .bind(read.id.as_str())
                .bind(row::version(read).map_err(unencodable)?)
                .bind(row::version(task).map_err(unencodable)?)
                .bind(i64::from(task.attempts))
                .bind(i64::from(task.cancellation_attempts));
        }
        let ids = values::bind_nulls(query, (padded - reads.len()) * LEASE_COLUMNS)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        for id in &ids {
            written.insert(id.try_get::<String, _>(0).map_err(db)?);
        }
    }
    Ok(leased
        .into_iter()
        .filter(|task| written.contains(&task.id))
        .collect())
}

/// Values a claimed task's row binds in [`write_leases`]: id, version
/// read, version written, attempts, cancellation attempts.
const LEASE_COLUMNS: usize = 5;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use oncetask_core::Task;
    use oncetask_core::lifecycle::LeaseGrant;
    use oncetask_core::store::{ClaimMode, ClaimOrder, ClaimRequest, Fetched, Store as _};

    use crate::SqliteStore;

    fn request(limit: usize, order: ClaimOrder) -> ClaimRequest {
        let now = Utc::now();
        ClaimRequest {
            env: "E".to_owned(),
            kind: "k".to_owned(),
            now,
            grant: LeaseGrant::new(now, Duration::from_secs(60)),
            mode: ClaimMode::Single { limit },
            order,
        }
    }

    /// A store holding `tasks` (id, resource key, priority), created a
    /// second apart in this order.
    async fn store_with(tasks: &[(&str, Option<&str>, i8)]) -> SqliteStore {
        let store = SqliteStore::connect("sqlite::memory:")
            .await
            .expect("connect");
        let start = Utc::now() - chrono::Duration::seconds(60);
        let tasks: Vec<Task> = tasks
            .iter()
            .enumerate()
            .map(|(i, (id, key, priority))| {
                let at = start + chrono::Duration::seconds(i64::try_from(i).expect("few"));
                let mut task = Task::new(*id, "k", "E", at);
                task.resource_key = key.map(str::to_owned);
                task.priority = *priority;
                task
            })
            .collect();
        store.create(tasks).await.expect("create");
        store
    }

    async fn token_of(store: &SqliteStore, id: &str) -> Option<String> {
        match store.get(&[id.to_owned()]).await.expect("get").as_slice() {
            [Fetched::Task(task)] => task.lease_token.as_ref().map(|t| t.as_str().to_owned()),
            other => panic!("{id}: {other:?}"),
        }
    }

    /// Candidates another claim leased between the read and the write are
    /// left to it, and the claim fills up with the next ready tasks.
    #[tokio::test]
    async fn candidates_taken_since_the_read_are_left_and_the_claim_fills_up() {
        let store = store_with(&[
            ("a", None, 0),
            ("b", None, 0),
            ("c", None, 0),
            ("d", None, 0),
        ])
        .await;
        let ours = request(3, ClaimOrder::Oldest);
        let mut undecodable = Vec::new();
        let candidates = store
            .read_candidates(&ours, 3, &mut undecodable)
            .await
            .expect("read");
        assert_eq!(ids(&candidates), ["a", "b", "c"]);

        let theirs = request(2, ClaimOrder::Oldest);
        let taken = store.claim(&theirs).await.expect("their claim");
        assert_eq!(ids(&taken.tasks), ["a", "b"]);

        let leased = store
            .lease_candidates(&ours, 3, &candidates, &mut undecodable)
            .await
            .expect("lease");
        assert_eq!(ids(&leased), ["c", "d"]);
        for (id, grant) in [("a", &theirs), ("b", &theirs), ("c", &ours), ("d", &ours)] {
            assert_eq!(
                token_of(&store, id).await.as_deref(),
                Some(grant.grant.token.as_str()),
                "{id}"
            );
        }
        assert!(undecodable.is_empty());
    }

    /// A candidate whose resource key another claim leased (through
    /// another task of the key) since the read is not leased: two tasks of
    /// one key never hold live leases together.
    #[tokio::test]
    async fn a_candidate_whose_key_was_leased_since_the_read_is_left() {
        let store = store_with(&[("a", Some("K"), 0), ("b", Some("K"), 5), ("c", None, 0)]).await;
        let ours = request(2, ClaimOrder::Priority);
        let mut undecodable = Vec::new();
        let candidates = store
            .read_candidates(&ours, 2, &mut undecodable)
            .await
            .expect("read");
        assert_eq!(
            ids(&candidates),
            ["b", "c"],
            "highest priority first, one per key"
        );

        let theirs = request(1, ClaimOrder::Oldest);
        let taken = store.claim(&theirs).await.expect("their claim");
        assert_eq!(ids(&taken.tasks), ["a"]);

        let leased = store
            .lease_candidates(&ours, 2, &candidates, &mut undecodable)
            .await
            .expect("lease");
        assert_eq!(
            ids(&leased),
            ["c"],
            "b's key is busy and nothing else is ready"
        );
        assert_eq!(token_of(&store, "b").await, None);
    }

    /// A claim that finds nothing ready comes back empty.
    #[tokio::test]
    async fn a_claim_over_nothing_ready_is_empty() {
        let store = store_with(&[]).await;
        let claimed = store
            .claim(&request(4, ClaimOrder::Oldest))
            .await
            .expect("claim");
        assert!(claimed.tasks.is_empty());
    }

    fn ids(tasks: &[Task]) -> Vec<&str> {
        tasks.iter().map(|t| t.id.as_str()).collect()
    }
}

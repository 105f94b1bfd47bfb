//! The raw limit on SQLite: a hand-written claim+complete cycle on a bench
//! table of the namespace's own file, with a partial index, opened as the
//! store opens it (WAL, the same `synchronous` setting, a busy timeout).
//! Each claim is one short `BEGIN IMMEDIATE` transaction whose one
//! statement leases the oldest ready rows (`UPDATE … WHERE id IN (SELECT …
//! ORDER BY run_at, id LIMIT ?) RETURNING`), each complete another one:
//! the two commits per cycle that a queue on SQLite cannot avoid. SQLite
//! has one writer at a time, so the callers take turns on a mutex before
//! `BEGIN IMMEDIATE`, as the store's writers do (rather than sleeping in
//! SQLite's busy handler).

use crate::error::BenchError;
use crate::report::Row;
use crate::scenarios::Ctx;

#[cfg(feature = "sqlite")]
use oncetask::sqlite::sqlx;

/// Rows for the single and the batch cycle, the batch cycle on the store's
/// own table, and single-row inserts (SQLite only).
#[cfg(feature = "sqlite")]
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    let crate::target::Backend::Sqlite { normal, .. } = ctx.ns.backend() else {
        return Ok(Vec::new());
    };
    let Some(url) = ctx.ns.sqlite_url() else {
        return Ok(Vec::new());
    };
    let args = ctx.args;
    let pool = open(&url, *normal, args.raw_concurrency).await?;
    let sql = |q: &'static str| execute(&pool, q);
    sql(
        "CREATE TABLE raw_jobs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, \
         run_at INTEGER NOT NULL, leased_until INTEGER, done_at INTEGER, \
         attempts INTEGER NOT NULL DEFAULT 0, payload TEXT NOT NULL)",
    )
    .await?;
    sql("CREATE INDEX raw_jobs_ready ON raw_jobs (kind, run_at, id) WHERE done_at IS NULL").await?;
    let mut rows = Vec::new();
    for (label, limit) in [("single", 1), ("batch", args.raw_batch)] {
        let config = super::raw_cycle_config(limit, args.raw_concurrency, "conns");
        ctx.say(&format!("raw: {} rows, {label} cycle", args.raw_tasks));
        sql("DELETE FROM raw_jobs").await?;
        sqlx::query(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?1) \
             INSERT INTO raw_jobs (id, kind, run_at, payload) \
             SELECT n, 'raw', ?2, json_object('n', n) FROM g",
        )
        .bind(i64::try_from(args.raw_tasks).unwrap_or(i64::MAX))
        .bind(now_us() - 1_000_000)
        .execute(&pool)
        .await
        .map_err(|e| BenchError::Raw(format!("seeding raw_jobs: {e}")))?;
        let claim = "UPDATE raw_jobs SET leased_until = ?1 + 600000000, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM raw_jobs WHERE kind = 'raw' AND done_at IS NULL \
               AND run_at <= ?1 AND (leased_until IS NULL OR leased_until < ?1) \
               ORDER BY run_at, id LIMIT ?2) \
             RETURNING CAST(id AS TEXT), payload";
        let complete = "UPDATE raw_jobs SET done_at = ?1, leased_until = NULL \
             WHERE id IN (SELECT CAST(value AS INTEGER) FROM json_each(?2))";
        let (total, seconds) = cycle(&pool, claim, complete, limit, args.raw_concurrency).await?;
        rows.push(
            Row::new(ctx.backend(), "raw", config)
                .throughput(total, seconds)
                .note(
                    "hand-written SQL, BEGIN IMMEDIATE per claim and per complete, partial index",
                ),
        );
    }
    sql("DELETE FROM raw_jobs").await?;
    rows.push(raw_on_store_table(ctx, &pool).await?);
    rows.push(raw_inserts(ctx, &pool).await?);
    sql("DROP TABLE raw_jobs").await?;
    pool.close().await;
    Ok(rows)
}

/// A pool of `connections` on the namespace's file, with the store's
/// settings.
#[cfg(feature = "sqlite")]
async fn open(url: &str, normal: bool, connections: usize) -> Result<sqlx::SqlitePool, BenchError> {
    use std::str::FromStr as _;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| BenchError::Raw(format!("{url}: {e}")))?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if normal {
            SqliteSynchronous::Normal
        } else {
            SqliteSynchronous::Full
        })
        .busy_timeout(oncetask::sqlite::SqliteOptions::DEFAULT_BUSY_TIMEOUT);
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(u32::try_from(connections.max(1)).unwrap_or(u32::MAX))
        .connect_with(options)
        .await
        .map_err(|e| BenchError::Unavailable(format!("cannot open {url}: {e}")))
}

/// Runs one set-up statement, naming it in the error.
#[cfg(feature = "sqlite")]
async fn execute(pool: &sqlx::SqlitePool, q: &str) -> Result<(), BenchError> {
    sqlx::query(q)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(|e| BenchError::Raw(format!("{q}: {e}")))
}

/// Microseconds since the epoch (the store's time unit).
#[cfg(feature = "sqlite")]
fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Runs the claim + complete cycle with `callers` concurrent callers until
/// every claim comes back empty: the tasks completed and the seconds it
/// took. `claim` takes the time (µs) as `?1` and the limit as `?2` and
/// returns `(id as text, payload)` rows; `complete` takes the time as `?1`
/// and the claimed ids as a JSON array as `?2`. Each statement runs in a
/// `BEGIN IMMEDIATE` transaction of its own, one caller at a time.
#[cfg(feature = "sqlite")]
async fn cycle(
    pool: &sqlx::SqlitePool,
    claim: &str,
    complete: &str,
    limit: usize,
    callers: usize,
) -> Result<(u64, f64), BenchError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let turn = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let started = std::time::Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (pool, claim, complete) = (pool.clone(), claim.to_owned(), complete.to_owned());
        let turn = turn.clone();
        workers.spawn(async move {
            let mut done: u64 = 0;
            loop {
                let claimed: Vec<(String, String)> = {
                    let _turn = turn.lock().await;
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                    let rows = sqlx::query_as(&claim)
                        .bind(now_us())
                        .bind(limit)
                        .fetch_all(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    rows
                };
                if claimed.is_empty() {
                    return Ok::<u64, sqlx::Error>(done);
                }
                let ids = serde_json::Value::from(
                    claimed.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
                )
                .to_string();
                let _turn = turn.lock().await;
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let completed = sqlx::query(&complete)
                    .bind(now_us())
                    .bind(ids)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                done += completed;
            }
        });
    }
    let total = super::join_callers(workers).await?;
    Ok((total, started.elapsed().as_secs_f64()))
}

/// The batch cycle of [`run`] on the store's own table (its columns, row
/// width and indexes, `tasks_unleased_idx` for the order), changing the
/// columns a lease and a completion change: what this schema allows
/// hand-written SQL to reach, which splits the gap between the `work` rows
/// and the raw batch into what the schema costs and what the store's
/// statements and client cost.
#[cfg(feature = "sqlite")]
async fn raw_on_store_table(ctx: &Ctx<'_>, pool: &sqlx::SqlitePool) -> Result<Row, BenchError> {
    let args = ctx.args;
    let env = ctx.ns.env("raw-store");
    ctx.say(&format!(
        "raw: {} rows, batch cycle on the store's table",
        args.raw_tasks
    ));
    sqlx::query(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?1) \
         INSERT INTO tasks (id, kind, env, data, created_at, attempts, cancellation_attempts, \
           errors, is_cancelled, version) \
         SELECT ?2 || '-' || n, 'raw', ?2, json_object('n', n), ?3, 0, 0, '[]', 0, 1 FROM g",
    )
    .bind(i64::try_from(args.raw_tasks).unwrap_or(i64::MAX))
    .bind(&env)
    .bind(now_us() - 1_000_000)
    .execute(pool)
    .await
    .map_err(|e| BenchError::Raw(format!("seeding the store's table: {e}")))?;
    // The store's claim order and ready index; a lease token and a version
    // bump like the store's fence. `env` is a plain literal: the bench
    // makes it from hex and a label.
    let claim = format!(
        "UPDATE tasks SET leased_until = ?1 + 600000000, attempts = attempts + 1, \
           version = version + 1, lease_token = 'raw' \
         WHERE id IN (SELECT id FROM tasks WHERE env = '{env}' AND kind = 'raw' \
           AND done_at IS NULL AND leased_until IS NULL AND wait_until IS NULL \
           ORDER BY leased_until, wait_until, created_at, id LIMIT ?2) \
         RETURNING id, data"
    );
    let complete = "UPDATE tasks SET done_at = ?1, leased_until = NULL, lease_token = NULL, \
         version = version + 1, outcome = 'completed' \
         WHERE id IN (SELECT value FROM json_each(?2))";
    let (total, seconds) =
        cycle(pool, &claim, complete, args.raw_batch, args.raw_concurrency).await?;
    sqlx::query("DELETE FROM tasks WHERE env = ?1")
        .bind(&env)
        .execute(pool)
        .await
        .map_err(|e| BenchError::Raw(format!("removing the raw tasks: {e}")))?;
    Ok(Row::new(
        ctx.backend(),
        "raw",
        format!(
            "store table, {}",
            super::raw_cycle_config(args.raw_batch, args.raw_concurrency, "conns")
        ),
    )
    .throughput(total, seconds)
    .note("hand-written SQL on oncetask's own table and indexes: the schema's limit"))
}

/// The raw single-row insert: one caller inserting `insert_single` rows,
/// one statement and one commit each, under the same `synchronous`
/// setting: the yardstick of oncetask's `create, one per call` row.
#[cfg(feature = "sqlite")]
async fn raw_inserts(ctx: &Ctx<'_>, pool: &sqlx::SqlitePool) -> Result<Row, BenchError> {
    let n = ctx.args.insert_single;
    ctx.say(&format!("raw: {n} single-row inserts, one caller"));
    let raw = |e: sqlx::Error| BenchError::Raw(format!("raw insert: {e}"));
    let mut conn = pool.acquire().await.map_err(raw)?;
    let started = std::time::Instant::now();
    for id in 0..n {
        sqlx::query(
            "INSERT INTO raw_jobs (id, kind, run_at, payload) \
             VALUES (?1, 'raw', ?2, json_object('n', ?1))",
        )
        .bind(i64::try_from(id).unwrap_or(i64::MAX))
        .bind(now_us())
        .execute(&mut *conn)
        .await
        .map_err(raw)?;
    }
    Ok(Row::new(
        ctx.backend(),
        "raw",
        "insert: 1 row per statement and commit, 1 conn",
    )
    .throughput(n, started.elapsed().as_secs_f64())
    .note("hand-written SQL, one caller, the yardstick of `create, one per call`"))
}

/// Built without SQLite: no rows.
#[cfg(not(feature = "sqlite"))]
pub async fn run(_: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    Ok(Vec::new())
}

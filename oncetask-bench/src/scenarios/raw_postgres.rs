//! The raw limit on PostgreSQL: a hand-written claim+complete cycle on a
//! bench table with a partial index, `FOR UPDATE SKIP LOCKED`, one task
//! and a batch per claim, each claim and each complete its own
//! (auto-committed) statement: the two round trips per cycle that a queue
//! cannot avoid.

use crate::error::BenchError;
use crate::report::Row;
use crate::scenarios::Ctx;

/// Rows for the single and the batch cycle (Postgres only).
#[cfg(feature = "postgres")]
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    let Some(admin) = ctx.ns.pg_admin() else {
        return Ok(Vec::new());
    };
    let crate::target::Backend::Postgres { url } = ctx.ns.backend() else {
        return Ok(Vec::new());
    };
    let schema = ctx.ns.name();
    let args = ctx.args;
    let table = format!("\"{schema}\".raw_jobs");
    let sql = |q: String| execute(admin, q);
    sql(format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, kind text NOT NULL, \
         run_at timestamptz NOT NULL, leased_until timestamptz, done_at timestamptz, \
         attempts integer NOT NULL DEFAULT 0, payload jsonb NOT NULL)"
    ))
    .await?;
    sql(format!(
        "CREATE INDEX raw_jobs_ready ON {table} (kind, run_at, id) WHERE done_at IS NULL"
    ))
    .await?;
    // No ping before every statement, as in the store's pool, so both pay
    // the same round trips per statement; custom plans (PostgreSQL's
    // default), which these simple statements plan best with.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .test_before_acquire(false)
        .max_connections(u32::try_from(args.raw_concurrency).unwrap_or(u32::MAX))
        .connect(url)
        .await
        .map_err(|e| BenchError::Unavailable(format!("cannot reach PostgreSQL: {e}")))?;
    let mut rows = Vec::new();
    for (label, limit) in [("single", 1), ("batch", args.raw_batch)] {
        let config = super::raw_cycle_config(limit, args.raw_concurrency, "conns");
        ctx.say(&format!("raw: {} rows, {label} cycle", args.raw_tasks));
        sql(format!("TRUNCATE {table}")).await?;
        sql(format!(
            "INSERT INTO {table} (id, kind, run_at, payload) \
             SELECT g, 'raw', now() - interval '1 second', jsonb_build_object('n', g) \
             FROM generate_series(1, {}) g",
            args.raw_tasks
        ))
        .await?;
        sql(format!("ANALYZE {table}")).await?;
        let claim = format!(
            "UPDATE {table} SET leased_until = now() + interval '10 minutes', \
             attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM {table} WHERE kind = 'raw' AND done_at IS NULL \
               AND run_at <= now() AND (leased_until IS NULL OR leased_until < now()) \
               ORDER BY run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING id, payload::text"
        );
        let complete =
            format!("UPDATE {table} SET done_at = now(), leased_until = NULL WHERE id = ANY($1)");
        let (total, seconds) =
            sql_cycle::<i64>(&pool, &claim, &complete, limit, args.raw_concurrency).await?;
        rows.push(
            Row::new(ctx.backend(), "raw", config)
                .throughput(total, seconds)
                .note("hand-written SQL, FOR UPDATE SKIP LOCKED, partial index"),
        );
    }
    rows.push(raw_on_store_table(ctx, &pool, &format!("\"{schema}\".tasks")).await?);
    rows.push(raw_inserts(ctx, &pool, &table).await?);
    pool.close().await;
    sql(format!("DROP TABLE {table}")).await?;
    Ok(rows)
}

/// Runs one set-up statement, naming it in the error.
#[cfg(feature = "postgres")]
async fn execute(pool: &sqlx::PgPool, q: String) -> Result<(), BenchError> {
    sqlx::query(&q)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(|e| BenchError::Raw(format!("{q}: {e}")))
}

/// Runs a claim + complete cycle on `callers` connections until every
/// claim comes back empty: the tasks completed and the seconds it took.
/// `claim` takes the limit as `$1` and returns `(id, payload)` rows;
/// `complete` takes the claimed ids as `$1`.
#[cfg(feature = "postgres")]
async fn sql_cycle<I>(
    pool: &sqlx::PgPool,
    claim: &str,
    complete: &str,
    limit: usize,
    callers: usize,
) -> Result<(u64, f64), BenchError>
where
    I: for<'r> sqlx::Decode<'r, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
        + sqlx::postgres::PgHasArrayType
        + for<'q> sqlx::Encode<'q, sqlx::Postgres>
        + Send
        + Unpin
        + 'static,
{
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let started = std::time::Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (pool, claim, complete) = (pool.clone(), claim.to_owned(), complete.to_owned());
        workers.spawn(async move {
            let mut done: u64 = 0;
            loop {
                let claimed: Vec<(I, String)> =
                    sqlx::query_as(&claim).bind(limit).fetch_all(&pool).await?;
                if claimed.is_empty() {
                    return Ok::<u64, sqlx::Error>(done);
                }
                let ids: Vec<I> = claimed.into_iter().map(|(id, _)| id).collect();
                done += ids.len() as u64;
                sqlx::query(&complete).bind(ids).execute(&pool).await?;
            }
        });
    }
    let total = super::join_callers(workers).await?;
    Ok((total, started.elapsed().as_secs_f64()))
}

/// The batch cycle of [`run`] on the store's own table (`table`: its
/// columns, row width and indexes), with the few columns a lease and a
/// completion change: what this schema allows hand-written SQL to reach,
/// which splits the gap between the `work` rows and the raw batch into
/// what the schema costs and what the store's statements and client cost.
#[cfg(feature = "postgres")]
async fn raw_on_store_table(
    ctx: &Ctx<'_>,
    pool: &sqlx::PgPool,
    table: &str,
) -> Result<Row, BenchError> {
    let args = ctx.args;
    let env = ctx.ns.env("raw-store");
    ctx.say(&format!(
        "raw: {} rows, batch cycle on the store's table",
        args.raw_tasks
    ));
    let sql = |q: String| execute(pool, q);
    sql(format!(
        "INSERT INTO {table} (id, kind, env, data, created_at, attempts, \
           cancellation_attempts, errors, is_cancelled, version) \
         SELECT '{env}-' || g, 'raw', '{env}', jsonb_build_object('n', g), \
           now() - interval '1 second', 0, 0, '[]'::jsonb, false, 1 \
         FROM generate_series(1, {}) g",
        args.raw_tasks
    ))
    .await?;
    sql(format!("ANALYZE {table}")).await?;
    // The store's claim order and ready index; a lease token and a version
    // bump like the store's fence.
    let claim = format!(
        "UPDATE {table} SET leased_until = now() + interval '10 minutes', \
         attempts = attempts + 1, version = version + 1, lease_token = 'raw' \
         WHERE id IN (SELECT id FROM {table} WHERE env = '{env}' AND kind = 'raw' \
           AND done_at IS NULL AND leased_until IS NULL AND wait_until IS NULL \
           ORDER BY leased_until NULLS FIRST, wait_until NULLS FIRST, created_at, id \
           LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, data::text"
    );
    let complete = format!(
        "UPDATE {table} SET done_at = now(), leased_until = NULL, lease_token = NULL, \
         version = version + 1, outcome = 'completed' WHERE id = ANY($1)"
    );
    let (total, seconds) = sql_cycle::<String>(
        pool,
        &claim,
        &complete,
        args.raw_batch,
        args.raw_concurrency,
    )
    .await?;
    sql(format!("DELETE FROM {table} WHERE env = '{env}'")).await?;
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
/// one statement and one commit each, under the server's durability
/// settings: the yardstick of oncetask's `create, one per call` row.
#[cfg(feature = "postgres")]
async fn raw_inserts(ctx: &Ctx<'_>, pool: &sqlx::PgPool, table: &str) -> Result<Row, BenchError> {
    let n = ctx.args.insert_single;
    ctx.say(&format!("raw: {n} single-row inserts, one caller"));
    let raw = |e: sqlx::Error| BenchError::Raw(format!("raw insert: {e}"));
    sqlx::query(&format!("TRUNCATE {table}"))
        .execute(pool)
        .await
        .map_err(raw)?;
    let insert = format!(
        "INSERT INTO {table} (id, kind, run_at, payload) \
         VALUES ($1, 'raw', now(), jsonb_build_object('n', $1))"
    );
    let mut conn = pool.acquire().await.map_err(raw)?;
    let started = std::time::Instant::now();
    for id in 0..n {
        sqlx::query(&insert)
            .bind(i64::try_from(id).unwrap_or(i64::MAX))
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

/// Built without Postgres: no rows.
#[cfg(not(feature = "postgres"))]
pub async fn run(_: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    Ok(Vec::new())
}

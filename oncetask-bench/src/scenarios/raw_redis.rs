//! The raw limit on Redis: hand-written Lua claim and complete scripts over
//! a ready sorted set, a lease sorted set and one hash per job (the shape
//! of any Redis queue), one task and a batch per call, callers sharing one
//! multiplexed connection as the store does.

use crate::error::BenchError;
use crate::report::Row;
use crate::scenarios::Ctx;

/// Moves up to ARGV[3] due jobs from the ready set to the lease set,
/// stamps their hashes, and returns their ids and payloads.
#[cfg(feature = "redis")]
const CLAIM: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[2], id)
  local job = ARGV[4] .. id
  redis.call('HSET', job, 'leased_until', ARGV[2])
  redis.call('HINCRBY', job, 'attempts', 1)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', job, 'payload')
end
return out
";

/// Marks the jobs ARGV[3..] done if KEYS[1] still leases them.
#[cfg(feature = "redis")]
const COMPLETE: &str = r"
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('HSET', ARGV[1] .. id, 'done_at', ARGV[2])
    redis.call('HDEL', ARGV[1] .. id, 'leased_until')
    n = n + 1
  end
end
return n
";

/// Rows for the single and the batch cycle (Redis only).
#[cfg(feature = "redis")]
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    let crate::target::Backend::Redis { url } = ctx.ns.backend() else {
        return Ok(Vec::new());
    };
    let args = ctx.args;
    let err = |e: redis::RedisError| BenchError::Raw(e.to_string());
    let client = redis::Client::open(url.as_str()).map_err(err)?;
    let conn = client.get_connection_manager().await.map_err(err)?;
    // One hash tag: every key of the cycle is in one cluster slot.
    let base = format!("{}:raw:{{q}}", ctx.ns.name());
    let (ready, leased, job) = (
        format!("{base}:ready"),
        format!("{base}:leased"),
        format!("{base}:job:"),
    );
    let claim = redis::Script::new(CLAIM);
    let complete = redis::Script::new(COMPLETE);
    let mut rows = Vec::new();
    for (label, limit) in [("single", 1), ("batch", args.raw_batch)] {
        let config = super::raw_cycle_config(limit, args.raw_concurrency, "callers");
        ctx.say(&format!("raw: {} jobs, {label} Lua cycle", args.raw_tasks));
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut c = conn.clone();
        for start in (0..args.raw_tasks).step_by(1000) {
            let mut pipe = redis::pipe();
            for n in start..args.raw_tasks.min(start + 1000) {
                pipe.cmd("HSET")
                    .arg(format!("{job}{label}{n}"))
                    .arg("payload")
                    .arg(format!("{{\"n\":{n}}}"))
                    .arg("attempts")
                    .arg(0)
                    .ignore();
                pipe.cmd("ZADD")
                    .arg(&ready)
                    .arg(now_ms - 1000)
                    .arg(format!("{label}{n}"))
                    .ignore();
            }
            pipe.query_async::<()>(&mut c).await.map_err(err)?;
        }
        let started = std::time::Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..args.raw_concurrency {
            let (mut c, claim, complete) = (conn.clone(), claim.clone(), complete.clone());
            let (ready, leased, job) = (ready.clone(), leased.clone(), job.clone());
            workers.spawn(async move {
                let mut done: u64 = 0;
                loop {
                    let now = chrono::Utc::now().timestamp_millis();
                    let claimed: Vec<String> = claim
                        .key(&ready)
                        .key(&leased)
                        .arg(now)
                        .arg(now + 600_000)
                        .arg(limit)
                        .arg(&job)
                        .invoke_async(&mut c)
                        .await?;
                    if claimed.is_empty() {
                        return Ok::<u64, redis::RedisError>(done);
                    }
                    let ids: Vec<&String> = claimed.iter().step_by(2).collect();
                    let mut call = complete.key(&leased);
                    call.arg(&job).arg(now);
                    for id in &ids {
                        call.arg(*id);
                    }
                    let completed: u64 = call.invoke_async(&mut c).await?;
                    done += completed;
                }
            });
        }
        let total = super::join_callers(workers).await?;
        let seconds = started.elapsed().as_secs_f64();
        rows.push(
            Row::new(ctx.backend(), "raw", config)
                .throughput(total, seconds)
                .note("hand-written Lua: ready zset, lease zset, job hashes"),
        );
    }
    // The namespace's purge removes the keys (they share its prefix).
    Ok(rows)
}

/// Built without Redis: no rows.
#[cfg(not(feature = "redis"))]
pub async fn run(_: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    Ok(Vec::new())
}

//! The dashboard's task list at depth (issue 22): N tasks of a realistic
//! mix (4 kinds, ~10 % with one of 1,000 resource keys, mostly completed,
//! ~5 % failed, ~5 % pending, ~5 % waiting) are stored through
//! `Store::create` in one environment; then `oncetask_ui::router` over an
//! operator manager of that store serves `GET /tasks?…&after=<cursor>`
//! in-process (`tower::ServiceExt::oneshot`), so a sample is the server's
//! time for one page (routing, store read, rendering, body), not a
//! browser's.
//!
//! Each shape (no filter; kind; kind + status failed; resource key) is a
//! row: the cursor of each request is a random seeded task in the deeper
//! half of the shape's listing order, and every page must hold the 50
//! tasks after it (fewer only at the listing's end). The seeded tasks'
//! positions are a function of their number (`created_at` = base + n ms),
//! so the expected page is known without reading the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use oncetask::backend::task::truncate_to_millis;
use oncetask::{AttemptError, Manager, Outcome, Store, Task, TaskCursor};
use serde_json::json;
use tower::ServiceExt;

use crate::error::BenchError;
use crate::measure::Percentiles;
use crate::report::Row;
use crate::scenarios::Ctx;
use crate::workload;

/// The seeded kinds.
const KINDS: [&str; 4] = ["bench_email", "bench_report", "bench_sync", "bench_webhook"];

/// Distinct resource keys of the keyed tasks.
const KEYS: u64 = 1_000;

/// Requests before the measured ones, per shape.
const WARM_UP: usize = 5;

/// Tasks per page (the dashboard's).
const PAGE: usize = oncetask_ui::PAGE_SIZE;

/// What seeded task `n` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    Completed,
    Failed,
    Pending,
    Waiting,
}

/// A well-mixed 64-bit hash of `n` (splitmix64), so that kind, status and
/// key are independent of each other.
fn mix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn kind_of(n: u64) -> usize {
    (mix64(n) % KINDS.len() as u64) as usize
}

fn mix_of(n: u64) -> Mix {
    match (mix64(n) >> 8) % 100 {
        0..5 => Mix::Failed,
        5..10 => Mix::Pending,
        10..15 => Mix::Waiting,
        _ => Mix::Completed,
    }
}

/// ~10 % of the tasks have one of [`KEYS`] resource keys.
fn key_of(n: u64) -> Option<u64> {
    let h = mix64(n);
    (h >> 16).is_multiple_of(10).then_some((h >> 24) % KEYS)
}

fn key_name(key: u64) -> String {
    format!("customer-{key}")
}

fn id_of(env: &str, n: u64) -> String {
    format!("{env}-{n}")
}

/// Creation times: one millisecond apart in task order, so the listing
/// order (created_at, id) is the order of `n`.
fn created_of(base: DateTime<Utc>, n: u64) -> DateTime<Utc> {
    base + TimeDelta::milliseconds(n as i64)
}

/// Seeded task `n` of `env`.
fn list_task(env: &str, n: u64, base: DateTime<Utc>) -> Task {
    let created = created_of(base, n);
    let mut task = Task::new(id_of(env, n), KINDS[kind_of(n)], env, created);
    if let Some(map) = json!({ "n": n, "to": format!("user{}@example.com", n % 9973) }).as_object()
    {
        task.data = map.clone();
    }
    task.resource_key = key_of(n).map(key_name);
    let done_at = truncate_to_millis(created + TimeDelta::seconds(2));
    match mix_of(n) {
        Mix::Completed => {
            task.done_at = Some(done_at);
            task.attempts = 1;
            task.outcome = Some(Outcome::Completed);
            task.result = Some(json!({ "ok": true }));
        }
        Mix::Failed => {
            task.done_at = Some(done_at);
            task.attempts = 3;
            task.outcome = Some(Outcome::Failed);
            task.errors = (0..3)
                .map(|i| AttemptError {
                    at: done_at - TimeDelta::seconds(2 - i),
                    error: format!("bench failure {i}: upstream answered 503"),
                })
                .collect();
        }
        Mix::Pending => {}
        Mix::Waiting => {
            task.wait_until = Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).single();
        }
    }
    task
}

/// Stores tasks `0..count` of `env` through `store`, `batch` per call.
async fn seed(
    store: Arc<dyn Store>,
    env: &str,
    count: u64,
    batch: usize,
    base: DateTime<Utc>,
) -> Result<(), BenchError> {
    let env = env.to_owned();
    workload::create_tasks(store, 0..count, batch, move |n| list_task(&env, n, base)).await
}

/// One request of a shape: its URI and how many tasks its page must hold.
struct Probe {
    uri: String,
    expected: usize,
}

/// A deterministic pseudo-random sequence (splitmix64 steps).
struct Rng(u64);

impl Rng {
    /// A number in `lo..hi` (`lo` when empty).
    fn below(&mut self, lo: usize, hi: usize) -> usize {
        self.0 = self.0.wrapping_add(1);
        if hi <= lo {
            return lo;
        }
        lo + (mix64(self.0) % (hi - lo) as u64) as usize
    }
}

/// `count` probes of a listing whose matching tasks are `matching` (in
/// listing order): each after a random task of its deeper half.
fn probes(
    env: &str,
    base: DateTime<Utc>,
    query: &str,
    matching: &[u64],
    count: usize,
    rng: &mut Rng,
) -> Vec<Probe> {
    (0..count)
        .map(|_| {
            let i = rng.below(matching.len() / 2, matching.len());
            probe(env, base, query, matching, i)
        })
        .collect()
}

/// The probe after `matching[i]`.
fn probe(env: &str, base: DateTime<Utc>, query: &str, matching: &[u64], i: usize) -> Probe {
    let n = matching.get(i).copied().unwrap_or(0);
    let cursor = TaskCursor {
        created_at: truncate_to_millis(created_of(base, n)),
        id: id_of(env, n),
    };
    let after: String = form_encode(&cursor.to_text());
    let sep = if query.is_empty() { "" } else { "&" };
    Probe {
        uri: format!("/tasks?{query}{sep}after={after}"),
        expected: matching.len().saturating_sub(i + 1).min(PAGE),
    }
}

/// Percent-encodes everything but unreserved characters.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One GET of `uri`: the status, the tasks on the page, whether it links
/// a next page, and the server's time in milliseconds (until the whole
/// body is read).
async fn get(app: &axum::Router, uri: &str) -> Result<(usize, bool, f64), BenchError> {
    let request = Request::get(uri)
        .header(header::HOST, "127.0.0.1")
        .body(Body::empty())
        .map_err(|e| BenchError::Raw(format!("request {uri}: {e}")))?;
    let started = Instant::now();
    let response = app
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| BenchError::Raw(format!("GET {uri}: {e}")))?;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .map_err(|e| BenchError::Raw(format!("GET {uri}: body: {e}")))?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let text = String::from_utf8_lossy(&body);
    if status != StatusCode::OK {
        return Err(BenchError::Raw(format!(
            "GET {uri}: {status}: {}",
            text.chars().take(300).collect::<String>()
        )));
    }
    if text.contains("The store cannot be read") {
        return Err(BenchError::Raw(format!(
            "GET {uri}: the page says the store cannot be read"
        )));
    }
    let rows = text.matches("name=\"id\" value=\"").count();
    let next = text.contains("next page »");
    Ok((rows, next, ms))
}

/// The rows: seeding, then one per shape.
pub async fn run(ctx: &Ctx<'_>) -> Result<Vec<Row>, BenchError> {
    let count = ctx.list_tasks();
    let samples = ctx.args.list_samples.max(1);
    ctx.ns.reset_memory();
    let env = ctx.ns.env("list");
    let base = truncate_to_millis(Utc::now() - TimeDelta::days(30));
    let mut rows = Vec::new();

    ctx.say(&format!("list: storing {count} tasks"));
    let started = Instant::now();
    seed(
        ctx.ns.store().await?,
        &env,
        count,
        ctx.args.batch_size,
        base,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    if !ctx.args.no_analyze {
        ctx.ns.analyze().await?;
    }
    rows.push(
        Row::new(ctx.backend(), "list", format!("store {count} tasks"))
            .throughput(count, seconds)
            .note(
                "Store::create in batches of --batch-size (setup); 4 kinds, ~10 % with one of \
                 1000 resource keys, ~80 % completed, ~5 % failed, ~5 % pending, ~5 % waiting",
            ),
    );

    // The matching tasks of each shape, in listing order.
    let kind = 0usize;
    let mut all = Vec::with_capacity(count as usize);
    let mut of_kind = Vec::new();
    let mut failed_of_kind = Vec::new();
    let mut keyed = Vec::new();
    let mut by_key: HashMap<u64, Vec<u64>> = HashMap::new();
    for n in 0..count {
        all.push(n);
        if kind_of(n) == kind {
            of_kind.push(n);
            if mix_of(n) == Mix::Failed {
                failed_of_kind.push(n);
            }
        }
        if let Some(key) = key_of(n) {
            keyed.push(n);
            by_key.entry(key).or_default().push(n);
        }
    }
    let kind_name = KINDS[kind];
    let mut rng = Rng(0x0001_1571);
    let total = samples + WARM_UP;
    let mut shapes: Vec<(String, Vec<Probe>)> = vec![
        (
            "no filter".to_owned(),
            probes(&env, base, "", &all, total, &mut rng),
        ),
        (
            format!("kind ({} tasks)", of_kind.len()),
            probes(
                &env,
                base,
                &format!("kind={kind_name}"),
                &of_kind,
                total,
                &mut rng,
            ),
        ),
        (
            format!("kind + status failed ({} tasks)", failed_of_kind.len()),
            probes(
                &env,
                base,
                &format!("kind={kind_name}&status=failed"),
                &failed_of_kind,
                total,
                &mut rng,
            ),
        ),
    ];
    // Resource key: a random keyed task of the deeper half; its key's listing after it.
    let mut key_probes = Vec::with_capacity(total);
    for _ in 0..total {
        let n = keyed
            .get(rng.below(keyed.len() / 2, keyed.len()))
            .copied()
            .unwrap_or(0);
        let Some(key) = key_of(n) else { break };
        let of_key = by_key.get(&key).map_or(&[][..], Vec::as_slice);
        let i = of_key.partition_point(|&m| m < n);
        key_probes.push(probe(
            &env,
            base,
            &format!("resource_key={}", key_name(key)),
            of_key,
            i,
        ));
    }
    shapes.push((
        format!(
            "resource key (~{} tasks per key)",
            keyed.len() as u64 / KEYS.max(1)
        ),
        key_probes,
    ));
    drop((all, of_kind, failed_of_kind, keyed, by_key));

    let store = ctx.ns.store().await?;
    let manager = Manager::builder(store)
        .env(&env)
        .start_workers(false)
        .accept_any_kind()
        .build();
    let app = oncetask_ui::router(manager.clone(), oncetask_ui::UiConfig::new("bench"));
    let measured = measure_shapes(ctx, &app, shapes, count).await;
    manager.shutdown(workload::SHUTDOWN_GRACE).await;
    rows.extend(measured?);
    Ok(rows)
}

async fn measure_shapes(
    ctx: &Ctx<'_>,
    app: &axum::Router,
    shapes: Vec<(String, Vec<Probe>)>,
    count: u64,
) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    for (shape, probes) in shapes {
        ctx.say(&format!("list: deep pages, {shape}"));
        let mut times = Vec::with_capacity(probes.len());
        let mut short = 0usize;
        let mut wrong = Vec::new();
        let started = Instant::now();
        let mut measured_seconds = 0.0;
        for (i, probe) in probes.iter().enumerate() {
            let (held, next, ms) = get(app, &probe.uri).await?;
            // A full page links the next one (it may be empty); a short one
            // is the listing's end.
            if held != probe.expected || (held < PAGE && next) {
                wrong.push(format!(
                    "{}: {held} tasks (expected {}), next link {next}",
                    probe.uri, probe.expected
                ));
            }
            if i >= WARM_UP {
                times.push(ms);
                measured_seconds += ms / 1e3;
                if held < PAGE {
                    short += 1;
                }
            }
            if started.elapsed() > ctx.timeout() {
                return Err(BenchError::Raw(format!(
                    "list {shape}: more than {} s (--row-timeout)",
                    ctx.timeout().as_secs()
                )));
            }
        }
        if let Some(first) = wrong.first() {
            return Err(BenchError::Raw(format!(
                "list {shape}: {} of {} pages did not hold the tasks after their cursor, e.g. {first}",
                wrong.len(),
                probes.len()
            )));
        }
        let n = times.len() as u64;
        let mut row = Row::new(
            ctx.backend(),
            "list",
            format!("deep page of {PAGE} at {count}, {shape}"),
        )
        .throughput(n, measured_seconds);
        row.per_second = None;
        row.latency = Percentiles::of(times);
        row.note = format!(
            "target p99 < 100 ms; GET /tasks in-process (oneshot), server time incl. body; \
             after = a random task of the deeper half; every page held the {PAGE} tasks after \
             its cursor ({short} of {n} fewer, at the listing's end); {WARM_UP} warm-up requests"
        );
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_realistic() {
        let now = Utc::now();
        let base = now - TimeDelta::days(30);
        let n = 20_000u64;
        let mut statuses: HashMap<String, u64> = HashMap::new();
        let mut kinds = [0u64; 4];
        let mut keyed = 0;
        for i in 0..n {
            let task = list_task("e", i, base);
            *statuses.entry(task.status(now).to_string()).or_default() += 1;
            kinds[kind_of(i)] += 1;
            keyed += u64::from(task.resource_key.is_some());
        }
        let share = |s: &str| statuses.get(s).copied().unwrap_or(0) as f64 / n as f64;
        assert!((0.04..0.06).contains(&share("failed")), "{statuses:?}");
        assert!((0.04..0.06).contains(&share("pending")), "{statuses:?}");
        assert!((0.04..0.06).contains(&share("waiting")), "{statuses:?}");
        assert!(share("completed") > 0.8, "{statuses:?}");
        assert!(kinds.iter().all(|&k| k > n / 5), "{kinds:?}");
        assert!((1500..2500).contains(&keyed), "{keyed}");
    }

    #[test]
    fn a_probe_expects_the_tasks_after_its_cursor() {
        let base = Utc::now();
        let matching = [1, 5, 9];
        let p = probe("e", base, "kind=k", &matching, 1);
        assert_eq!(p.expected, 1);
        assert!(p.uri.starts_with("/tasks?kind=k&after="), "{}", p.uri);
        let text = format!(
            "{}/e-5",
            truncate_to_millis(created_of(base, 5))
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        );
        assert!(p.uri.ends_with(&form_encode(&text)));
        assert_eq!(probe("e", base, "", &matching, 2).expected, 0);
    }
}

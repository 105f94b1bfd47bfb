//! Claims by priority, Redis-specific: random sequences of creates (at
//! several priorities), claims in both orders and both modes, outcomes,
//! heartbeats, reprioritizes, cancels, resets and deletes, applied to the
//! store and to the conformance suite's reference model, which must agree
//! on every answer and on the whole state after every step; after every
//! step the store's claim indexes are also checked against its tasks: each
//! not-done task in exactly the entries of its priority band, the bands in
//! use listed, no band index left behind.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use oncetask_conformance::ClaimTies;
use oncetask_conformance::model::ModelStore;
use oncetask_conformance::support::{
    ENV, KIND, OTHER_KIND, Swapped, TaskBuilder, at, policy, swap_of,
};
use oncetask_core::lifecycle::{self, HandlerPath, LeaseGrant};
use oncetask_core::store::{ClaimMode, ClaimOrder, ClaimRequest, CreateOutcome, Delete, Fetched};
use oncetask_core::{HandlerError, Store, Task};
use oncetask_redis::RedisStore;
use redis::Value;

/// A small deterministic generator (xorshift64*): no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const IDS: usize = 12;
const KINDS: [&str; 2] = [KIND, OTHER_KIND];
const KEYS: [Option<&str>; 4] = [None, Some("a"), Some("b"), Some("c:{x}")];
/// Priority 0 most often, like a real store; the others in a few bands.
const PRIORITIES: [i8; 7] = [0, 0, 0, -3, 5, 9, -10];

fn id(i: usize) -> String {
    format!("t{i}")
}

fn all_ids() -> Vec<String> {
    (0..IDS).map(id).collect()
}

/// Every task of the id pool, by id.
async fn state<S: Store>(store: &S) -> BTreeMap<String, Task> {
    store
        .get(&all_ids())
        .await
        .expect("get")
        .into_iter()
        .map(|f| match f {
            Fetched::Task(t) => (t.id.clone(), t),
            Fetched::Undecodable(u) => panic!("undecodable {u:?}"),
        })
        .collect()
}

/// Swaps `before` into `after` on both sides; both must answer alike.
async fn swap_both(redis: &RedisStore, model: &ModelStore, before: &Task, after: &Task) {
    let swap = swap_of(before, after);
    let r = redis.swap(std::slice::from_ref(&swap)).await.expect("swap");
    let m = model.swap(std::slice::from_ref(&swap)).await.expect("swap");
    assert_eq!(
        Swapped::from(&r[0]),
        Swapped::from(&m[0]),
        "swap of {}",
        before.id
    );
}

/// Runs one random sequence of `steps` operations.
async fn run_sequence(seed: u64, steps: usize) {
    let prefix = common::new_prefix();
    let redis = common::store_on(&prefix).await;
    let model = ModelStore::with_claim_ties(ClaimTies::Id);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut now = at(0);
    let mut held: Vec<Task> = Vec::new();
    let mut log = Vec::new();
    for step in 0..steps {
        let roll = rng.below(100);
        let what;
        if roll < 25 {
            let mut tasks = Vec::new();
            for _ in 0..=rng.below(3) {
                let mut b = TaskBuilder::new(&id(rng.below(IDS)))
                    .kind(rng.pick(&KINDS))
                    .priority(rng.pick(&PRIORITIES))
                    .created_at(now - TimeDelta::seconds(rng.below(100) as i64));
                if let Some(key) = rng.pick(&KEYS) {
                    b = b.key(key);
                }
                if rng.below(3) == 0 {
                    b = b.wait_until(now + TimeDelta::seconds(rng.below(200) as i64 - 100));
                }
                let mut task = b.build();
                task.version = (step as u64) << 32;
                tasks.push(task);
            }
            what = format!(
                "create {:?}",
                tasks
                    .iter()
                    .map(|t| (&t.id, &t.kind, &t.resource_key, t.priority, t.wait_until))
                    .collect::<Vec<_>>()
            );
            let r = redis.create(tasks.clone()).await.expect("create");
            let m = model.create(tasks).await.expect("create");
            let same = r.iter().zip(&m).all(|(a, b)| {
                matches!(
                    (a, b),
                    (CreateOutcome::Created, CreateOutcome::Created)
                        | (CreateOutcome::AlreadyExists, CreateOutcome::AlreadyExists)
                )
            });
            assert!(same, "seed {seed} step {step}: {r:?} vs {m:?}");
        } else if roll < 50 {
            let n = 1 + rng.below(4);
            let mode = if rng.below(3) == 0 {
                ClaimMode::ResourceGroup { max_group: n }
            } else {
                ClaimMode::Single { limit: n }
            };
            let order = if rng.below(3) == 0 {
                ClaimOrder::Oldest
            } else {
                ClaimOrder::Priority
            };
            let request = ClaimRequest {
                env: ENV.to_owned(),
                kind: rng.pick(&KINDS).to_owned(),
                now,
                grant: LeaseGrant::new(now, Duration::from_secs(30 + rng.below(300) as u64)),
                mode,
                order,
            };
            what = format!("claim {} {mode:?} {order:?}", request.kind);
            let r = redis.claim(&request).await.expect("claim");
            let m = model.claim(&request).await.expect("claim");
            assert!(r.undecodable.is_empty());
            let (mut ri, mut mi): (Vec<_>, Vec<_>) = (
                r.tasks.iter().map(|t| t.id.clone()).collect(),
                m.tasks.iter().map(|t| t.id.clone()).collect(),
            );
            if matches!(mode, ClaimMode::Single { .. }) {
                ri.sort();
                mi.sort();
            }
            assert_eq!(
                ri,
                mi,
                "seed {seed} step {step}: {what}\n{}",
                log.join("\n")
            );
            held.extend(r.tasks);
            let excess = held.len().saturating_sub(10);
            held.drain(..excess);
        } else if roll < 65 && !held.is_empty() {
            let task = held.remove(rng.below(held.len()));
            let token = task.lease_token.clone().expect("a held task has a token");
            let next = match rng.below(4) {
                0 => lifecycle::succeed(&task, &token, now, None),
                1 => lifecycle::release(&task, &token),
                2 => lifecycle::extend_lease(&task, &token, now, now + TimeDelta::seconds(400)),
                _ => {
                    let path = if task.is_cancelled {
                        HandlerPath::Cancellation
                    } else {
                        HandlerPath::Main
                    };
                    let error = HandlerError::msg("boom");
                    lifecycle::fail(&task, &token, now, &error, path, policy())
                }
            };
            what = format!("outcome of {}", task.id);
            if let Ok(next) = next {
                swap_both(&redis, &model, &task, &next).await;
            }
        } else if roll < 87 {
            let target = id(rng.below(IDS));
            let current = state(&model).await.remove(&target);
            let op = rng.below(4);
            what = format!("operator op {op} on {target}");
            if let Some(current) = current {
                let next = match op {
                    0 | 1 => lifecycle::reprioritize(&current, rng.pick(&PRIORITIES)),
                    2 if rng.below(2) == 0 => lifecycle::cancel(&current, now),
                    2 => lifecycle::reset(&current),
                    _ => {
                        let d = [Delete::any(&target)];
                        redis.delete(&d).await.expect("delete");
                        model.delete(&d).await.expect("delete");
                        Err(lifecycle::Rejection::NotApplicable)
                    }
                };
                if let Ok(next) = next {
                    swap_both(&redis, &model, &current, &next).await;
                }
            }
        } else {
            let secs = 1 + rng.below(250) as i64;
            now += TimeDelta::seconds(secs);
            what = format!("advance {secs} s");
        }
        log.push(format!("{step}: {what}"));
        let (r, m) = (state(&redis).await, state(&model).await);
        assert_eq!(r, m, "seed {seed} step {step}: {what}\n{}", log.join("\n"));
        for kind in KINDS {
            check_indexes(&redis, kind, &m, now)
                .await
                .unwrap_or_else(|e| panic!("seed {seed} step {step}: {what}: {e}"));
        }
    }
    redis.purge().await.expect("purge");
}

/// The member of a task in the claim indexes (`ord`).
fn ord(task: &Task) -> String {
    let hex = |t: Option<DateTime<Utc>>| t.map_or(0, |t| t.timestamp_millis() + (1_i64 << 53));
    format!(
        "{:016x}{:016x}{}",
        hex(task.wait_until),
        hex(Some(task.created_at)),
        task.id
    )
}

/// The band tag in key names: '' for priority 0.
fn tag(priority: i8) -> String {
    if priority == 0 {
        String::new()
    } else {
        format!("{priority:+}")
    }
}

fn score(t: Option<DateTime<Utc>>) -> f64 {
    t.map_or(f64::NEG_INFINITY, |t| t.timestamp_millis() as f64)
}

type Entries = BTreeMap<String, String>;

fn text(v: Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::SimpleString(s) => s,
        Value::Double(d) => d.to_string(),
        Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// A zset as member -> score (scores normalised through f64).
async fn zset(store: &RedisStore, key: &str) -> Entries {
    let mut conn = store.connection();
    let reply: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .expect("ZRANGE");
    reply.into_iter().map(|(m, s)| (m, s.to_string())).collect()
}

async fn hash(store: &RedisStore, key: &str) -> Entries {
    let mut conn = store.connection();
    let reply: Value = redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("HGETALL");
    let items: Vec<Value> = match reply {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => panic!("{other:?}"),
    };
    let mut out = Entries::new();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.insert(text(k), text(v));
    }
    out
}

/// Checks the claim indexes of `kind` against the tasks (`tasks`, the
/// model's, equal to the store's).
async fn check_indexes(
    store: &RedisStore,
    kind: &str,
    tasks: &BTreeMap<String, Task>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let base = store.env_key_base(ENV);
    let open: Vec<&Task> = tasks
        .values()
        .filter(|t| t.kind == kind && !t.is_done())
        .collect();
    let mut bands: BTreeSet<String> = open.iter().map(|t| tag(t.priority)).collect();
    bands.insert(String::new());
    bands.extend(PRIORITIES.iter().map(|p| tag(*p)));
    // Bands in use.
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for t in open.iter().filter(|t| t.priority != 0) {
        *counts.entry(tag(t.priority)).or_default() += 1;
    }
    let want_pb: Entries = counts
        .into_iter()
        .map(|(b, n)| (b, n.to_string()))
        .collect();
    let pb = hash(store, &format!("{base}pb:{kind}")).await;
    if pb != want_pb {
        return Err(format!("pb:{kind} {pb:?}, want {want_pb:?}"));
    }
    let parked = zset(store, &format!("{base}pk:{kind}")).await;
    let keys: BTreeSet<&str> = KEYS.iter().flatten().copied().collect();
    for r in parked.keys() {
        if !open
            .iter()
            .any(|t| t.resource_key.as_deref() == Some(r.as_str()))
        {
            return Err(format!("parked key {r} has no task"));
        }
    }
    for b in &bands {
        let in_band: Vec<&&Task> = open.iter().filter(|t| tag(t.priority) == *b).collect();
        // Leases of the band.
        let want_wl: Entries = in_band
            .iter()
            .filter(|t| t.leased_until.is_some())
            .map(|t| (ord(t), score(t.leased_until).to_string()))
            .collect();
        let wl = zset(store, &format!("{base}wl{b}:{kind}")).await;
        if wl != want_wl {
            return Err(format!("wl{b}:{kind} {wl:?}, want {want_wl:?}"));
        }
        let mut want_wf: Entries = in_band
            .iter()
            .filter(|t| t.leased_until.is_none() && t.resource_key.is_none())
            .map(|t| (ord(t), score(t.wait_until).to_string()))
            .collect();
        let mut want_kh = Entries::new();
        for r in &keys {
            let never: Vec<&&&Task> = in_band
                .iter()
                .filter(|t| t.leased_until.is_none() && t.resource_key.as_deref() == Some(r))
                .collect();
            let want_kf: Entries = never
                .iter()
                .map(|t| (ord(t), score(t.wait_until).to_string()))
                .collect();
            let kf = zset(store, &format!("{base}kf{b}:{kind}:{r}")).await;
            if kf != want_kf {
                return Err(format!("kf{b}:{kind}:{r} {kf:?}, want {want_kf:?}"));
            }
            let head = never
                .iter()
                .map(|t| (score(t.wait_until), ord(t)))
                .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            if let Some((s, m)) = head
                && !parked.contains_key(*r)
            {
                want_wf.insert(m.clone(), s.to_string());
                want_kh.insert((*r).to_owned(), m);
            }
        }
        let wf = zset(store, &format!("{base}wf{b}:{kind}")).await;
        if wf != want_wf {
            return Err(format!("wf{b}:{kind} {wf:?}, want {want_wf:?} (now {now})"));
        }
        let kh = hash(store, &format!("{base}kh{b}:{kind}")).await;
        if kh != want_kh {
            return Err(format!("kh{b}:{kind} {kh:?}, want {want_kh:?}"));
        }
    }
    // Per key, across bands: the group and the leases.
    for r in &keys {
        let of_key: Vec<&&Task> = open
            .iter()
            .filter(|t| t.resource_key.as_deref() == Some(r))
            .collect();
        let want_kg: Entries = of_key
            .iter()
            .map(|t| (ord(t), score(t.wait_until).to_string()))
            .collect();
        let kg = zset(store, &format!("{base}kg:{kind}:{r}")).await;
        if kg != want_kg {
            return Err(format!("kg:{kind}:{r} {kg:?}, want {want_kg:?}"));
        }
        let want_kl: Entries = of_key
            .iter()
            .filter(|t| t.leased_until.is_some())
            .map(|t| (ord(t), score(t.leased_until).to_string()))
            .collect();
        let kl = zset(store, &format!("{base}kl:{kind}:{r}")).await;
        if kl != want_kl {
            return Err(format!("kl:{kind}:{r} {kl:?}, want {want_kl:?}"));
        }
    }
    Ok(())
}

/// Random sequences against the model, indexes checked after every step.
/// `ONCETASK_PRIORITY_SEQUENCES` sets how many (default 40, 60 steps each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sequences_with_priorities_match_the_model_and_keep_every_band_index_exact() {
    let sequences: u64 = std::env::var("ONCETASK_PRIORITY_SEQUENCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    for seed in 1..=sequences {
        run_sequence(seed, 60).await;
    }
}

/// A store whose tasks are all at priority 0 has only the keys of a store
/// written before bands existed: no banded key and no band list.
#[tokio::test]
async fn priority_zero_tasks_use_only_the_unbanded_keys() {
    let prefix = common::new_prefix();
    let store = common::store_on(&prefix).await;
    let tasks: Vec<Task> = (0..6)
        .map(|i| {
            let b = TaskBuilder::new(&format!("p{i}")).created_at(at(-(i as i64)));
            if i % 2 == 0 {
                b.key("k").build()
            } else {
                b.build()
            }
        })
        .collect();
    store.create(tasks).await.expect("create");
    let request = ClaimRequest {
        env: ENV.to_owned(),
        kind: KIND.to_owned(),
        now: at(0),
        grant: LeaseGrant::new(at(0), Duration::from_secs(60)),
        mode: ClaimMode::Single { limit: 2 },
        order: ClaimOrder::Priority,
    };
    assert_eq!(store.claim(&request).await.expect("claim").tasks.len(), 2);
    let mut conn = store.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let base = store.env_key_base(ENV);
    for key in &keys {
        let Some(rest) = key.strip_prefix(&base) else {
            continue;
        };
        let what = rest.split(':').next().unwrap_or_default();
        assert!(
            [
                "t", "kinds", "ca", "cr", "cnt", "sw", "due", "wf", "wl", "kf", "kl", "kg", "kh",
                "pk", // The finished index's marker, written by the first create of a kind.
                "finb"
            ]
            .contains(&what),
            "unexpected key {key}"
        );
    }
    store.purge().await.expect("purge");
}

//! The property-based state machine: random operation sequences applied to
//! the store under test and to a naive reference model, compared after
//! every step.
//!
//! The reference model ([`ModelStore`]) is a `BTreeMap` plus the same pure
//! [`lifecycle`] functions; it re-implements selection with full scans, in
//! the plainest way the contract can be read. Both sides receive the same
//! operations, the same `now` and the same lease grants (tokens are
//! deterministic per step), so after each step their whole state must be
//! equal, as must every answer (per-item outcomes, claimed ids, reads).
//!
//! On top of that equality the test checks invariants of the store's state
//! across each step:
//! * a claim never takes a task whose lease was live;
//! * all live leases in one (env, kind, resource key) share one token (one
//!   single claim or one resource group);
//! * a write presenting a token that is not the stored one changes nothing;
//! * terminal tasks change only by reset or delete;
//! * `attempts` never decreases except by reset;
//! * every change of a task raises its version.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::ClaimTies;
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use oncetask_core::lifecycle::{self, HandlerPath, LeaseGrant, Rejection};
use oncetask_core::store::{
    ClaimMode, ClaimOrder, ClaimRequest, Claimed, CreateOutcome, Delete, DeleteOutcome, Fetched,
    FinishedQuery, StartsRequest, StatusCounts, Swap, SwapOutcome, TaskFilter,
};
use oncetask_core::{HandlerError, LeaseToken, Store, StoreError, Task};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;

use crate::StoreFactory;
use crate::support::*;

/// The id pool: small, so that creates collide and ops hit existing tasks.
const IDS: usize = 6;
/// Workers holding claimed tasks.
const WORKERS: usize = 3;
/// Tasks a worker remembers (older ones are forgotten).
const HOLDINGS: usize = 8;
const ENVS: [&str; 2] = [ENV, OTHER_ENV];
const KINDS: [&str; 2] = [KIND, OTHER_KIND];
const KEYS: [Option<&str>; 4] = [None, Some("K0"), Some("K1"), Some("K2")];
/// Default number of cases; `PROPTEST_CASES` overrides it.
const CASES: u32 = 64;
/// Longest operation sequence.
const MAX_OPS: usize = 40;

fn task_id(i: usize) -> String {
    format!("t{i}")
}

/// One task of a create call.
#[derive(Debug, Clone)]
struct NewTask {
    id: usize,
    env: usize,
    kind: usize,
    key: usize,
    /// Seconds after now, if the task waits.
    wait: Option<i64>,
}

/// The claim mode of a claim op.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Single(usize),
    Group(usize),
}

/// One operation of a sequence.
#[derive(Debug, Clone)]
enum Op {
    Create(Vec<NewTask>),
    Claim {
        worker: usize,
        env: usize,
        kind: usize,
        mode: Mode,
        lease_secs: u64,
    },
    Succeed {
        worker: usize,
        pick: usize,
    },
    Fail {
        worker: usize,
        pick: usize,
    },
    Release {
        worker: usize,
        pick: usize,
    },
    Extend {
        worker: usize,
        pick: usize,
        secs: i64,
    },
    Cancel(usize),
    Reset(usize),
    Delete(Vec<usize>),
    Advance(i64),
    ExpireLeases,
}

fn biased_pair() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0usize), 1 => Just(1usize)]
}

fn new_task() -> impl Strategy<Value = NewTask> {
    (
        0..IDS,
        biased_pair(),
        biased_pair(),
        prop_oneof![2 => Just(0usize), 3 => Just(1usize), 2 => Just(2usize), 1 => Just(3usize)],
        prop::option::weighted(0.3, -30i64..=120),
    )
        .prop_map(|(id, env, kind, key, wait)| NewTask {
            id,
            env,
            kind,
            key,
            wait,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let worker = 0..WORKERS;
    let pick = 0..HOLDINGS;
    prop_oneof![
        4 => prop::collection::vec(new_task(), 1..=3).prop_map(Op::Create),
        6 => (
            worker.clone(),
            biased_pair(),
            biased_pair(),
            prop_oneof![(0usize..=3).prop_map(Mode::Single), (1usize..=3).prop_map(Mode::Group)],
            prop_oneof![Just(30u64), Just(300u64)],
        )
            .prop_map(|(worker, env, kind, mode, lease_secs)| Op::Claim {
                worker,
                env,
                kind,
                mode,
                lease_secs,
            }),
        4 => (worker.clone(), pick.clone()).prop_map(|(worker, pick)| Op::Succeed { worker, pick }),
        3 => (worker.clone(), pick.clone()).prop_map(|(worker, pick)| Op::Fail { worker, pick }),
        1 => (worker.clone(), pick.clone()).prop_map(|(worker, pick)| Op::Release { worker, pick }),
        1 => (worker, pick, 1i64..=600).prop_map(|(worker, pick, secs)| Op::Extend {
            worker,
            pick,
            secs,
        }),
        2 => (0..IDS).prop_map(Op::Cancel),
        3 => (0..IDS).prop_map(Op::Reset),
        1 => prop::collection::vec(0..IDS, 1..=2).prop_map(Op::Delete),
        2 => (1i64..=400).prop_map(Op::Advance),
        1 => Just(Op::ExpireLeases),
    ]
}

/// One step of a read-modify-write protocol.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Swap(Swapped),
    Rejected(Rejection),
    Missing,
}

/// What an operation answered; must be equal on both sides.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Created(Vec<Created>),
    Claimed(Vec<String>),
    Protocol(Vec<Step>),
    NothingHeld,
    Deleted(Vec<Deleted>),
    Clock,
}

type Res<T> = Result<T, String>;

fn store_err(what: &str) -> impl Fn(StoreError) -> String + '_ {
    move |e| format!("store.{what} failed: {e}")
}

async fn read<S: Store>(store: &S, id: &str) -> Res<Option<Task>> {
    let fetched = store
        .get(&[id.to_owned()])
        .await
        .map_err(store_err("get"))?;
    match fetched.into_iter().next() {
        None => Ok(None),
        Some(Fetched::Task(t)) => Ok(Some(t)),
        Some(Fetched::Undecodable(u)) => Err(format!("{id} became undecodable: {u:?}")),
    }
}

/// The whole state: every task of the id pool.
async fn dump<S: Store>(store: &S) -> Res<BTreeMap<String, Task>> {
    let ids: Vec<String> = (0..IDS).map(task_id).collect();
    let mut state = BTreeMap::new();
    for fetched in store.get(&ids).await.map_err(store_err("get"))? {
        match fetched {
            Fetched::Task(t) => {
                state.insert(t.id.clone(), t);
            }
            Fetched::Undecodable(u) => return Err(format!("undecodable task {u:?}")),
        }
    }
    Ok(state)
}

/// Read-modify-write like the manager: apply `f` to `start`, swap with its
/// version; on conflict re-read and retry (bounded).
async fn protocol<S: Store>(
    store: &S,
    start: Task,
    f: impl Fn(&Task) -> Result<Task, Rejection>,
) -> Res<(Vec<Step>, Option<Task>)> {
    let mut current = start;
    let mut trace = Vec::new();
    for _ in 0..4 {
        let next = match f(&current) {
            Ok(next) => next,
            Err(r) => {
                trace.push(Step::Rejected(r));
                return Ok((trace, None));
            }
        };
        let outcomes = store
            .swap(&[swap_of(&current, &next)])
            .await
            .map_err(store_err("swap"))?;
        let first = outcomes.first().ok_or("swap returned no outcome")?;
        let outcome = Swapped::from(first);
        trace.push(Step::Swap(outcome.clone()));
        match outcome {
            Swapped::Applied => {
                // The next swap of this task is fenced on what this one wrote.
                let mut next = next;
                if let SwapOutcome::Applied { revision } = first {
                    next.revision = *revision;
                }
                return Ok((trace, Some(next)));
            }
            Swapped::Conflict => match read(store, &current.id).await? {
                Some(fresh) => current = fresh,
                None => {
                    trace.push(Step::Missing);
                    return Ok((trace, None));
                }
            },
            _ => return Ok((trace, None)),
        }
    }
    Ok((trace, None))
}

/// One side of the comparison: a store plus what its workers hold.
struct Side<S> {
    store: S,
    held: Vec<Vec<Task>>,
}

impl<S: Store> Side<S> {
    fn new(store: S) -> Self {
        Self {
            store,
            held: vec![Vec::new(); WORKERS],
        }
    }

    async fn worker_op(
        &mut self,
        worker: usize,
        pick: usize,
        f: impl Fn(&Task, &LeaseToken) -> Result<Task, Rejection>,
    ) -> Res<Answer> {
        // The op's worker, or the next one that holds something.
        let Some(worker) = (0..WORKERS)
            .map(|i| (worker + i) % WORKERS)
            .find(|w| !self.held[*w].is_empty())
        else {
            return Ok(Answer::NothingHeld);
        };
        let held = &self.held[worker];
        let index = pick % held.len();
        let snapshot = held[index].clone();
        let Some(token) = snapshot.lease_token.clone() else {
            return Err(format!("held task {} has no token", snapshot.id));
        };
        let (trace, applied) = protocol(&self.store, snapshot, |t| f(t, &token)).await?;
        // A worker keeps its copy while it still holds the lease (extend);
        // after an outcome it keeps the old copy, whose token is now stale.
        if let Some(applied) = applied.filter(|t| t.lease_token.is_some()) {
            self.held[worker][index] = applied;
        }
        Ok(Answer::Protocol(trace))
    }

    async fn user_op(
        &mut self,
        id: usize,
        f: impl Fn(&Task) -> Result<Task, Rejection>,
    ) -> Res<Answer> {
        match read(&self.store, &task_id(id)).await? {
            None => Ok(Answer::Protocol(vec![Step::Missing])),
            Some(current) => Ok(Answer::Protocol(protocol(&self.store, current, f).await?.0)),
        }
    }

    async fn apply(
        &mut self,
        op: &Op,
        now: DateTime<Utc>,
        step: usize,
        grant: &LeaseGrant,
    ) -> Res<Answer> {
        let policy = policy();
        match op {
            Op::Create(items) => {
                let tasks = items
                    .iter()
                    .map(|n| {
                        let mut b = TaskBuilder::new(&task_id(n.id))
                            .env(ENVS[n.env])
                            .kind(KINDS[n.kind])
                            .created_at(now)
                            .data("step", json!(step));
                        if let Some(key) = KEYS[n.key] {
                            b = b.key(key);
                        }
                        if let Some(w) = n.wait {
                            b = b.wait_until(now + TimeDelta::seconds(w));
                        }
                        let mut task = b.build();
                        // Like `Task::from_data` (which starts at a random
                        // version), a re-created id must not restart at a
                        // version an earlier incarnation used; the model keeps
                        // it deterministic so the store and the model agree.
                        task.version = (step as u64) << 32;
                        task
                    })
                    .collect();
                let outcomes = self
                    .store
                    .create(tasks)
                    .await
                    .map_err(store_err("create"))?;
                Ok(Answer::Created(
                    outcomes.iter().map(Created::from).collect(),
                ))
            }
            Op::Claim {
                worker,
                env,
                kind,
                mode,
                ..
            } => {
                let mode = match *mode {
                    Mode::Single(limit) => ClaimMode::Single { limit },
                    Mode::Group(max_group) => ClaimMode::ResourceGroup { max_group },
                };
                let request = ClaimRequest {
                    env: ENVS[*env].to_owned(),
                    kind: KINDS[*kind].to_owned(),
                    now,
                    grant: grant.clone(),
                    mode,
                    order: oncetask_core::store::ClaimOrder::Priority,
                };
                let claimed = self
                    .store
                    .claim(&request)
                    .await
                    .map_err(store_err("claim"))?;
                if !claimed.undecodable.is_empty() {
                    return Err(format!(
                        "claim reported undecodable {:?}",
                        claimed.undecodable
                    ));
                }
                let mut ids: Vec<String> = claimed.tasks.iter().map(|t| t.id.clone()).collect();
                if matches!(mode, ClaimMode::Single { .. }) {
                    ids.sort();
                }
                let held = &mut self.held[*worker];
                held.extend(claimed.tasks);
                let excess = held.len().saturating_sub(HOLDINGS);
                held.drain(..excess);
                Ok(Answer::Claimed(ids))
            }
            Op::Succeed { worker, pick } => {
                self.worker_op(*worker, *pick, |t, tok| {
                    lifecycle::succeed(t, tok, now, Some(json!(step)))
                })
                .await
            }
            Op::Fail { worker, pick } => {
                self.worker_op(*worker, *pick, |t, tok| {
                    let path = if t.is_cancelled {
                        HandlerPath::Cancellation
                    } else {
                        HandlerPath::Main
                    };
                    let error = HandlerError::msg(format!("failure at step {step}"));
                    lifecycle::fail(t, tok, now, &error, path, policy)
                })
                .await
            }
            Op::Release { worker, pick } => {
                self.worker_op(*worker, *pick, lifecycle::release).await
            }
            Op::Extend { worker, pick, secs } => {
                let until = now + TimeDelta::seconds(*secs);
                self.worker_op(*worker, *pick, |t, tok| {
                    lifecycle::extend_lease(t, tok, now, until)
                })
                .await
            }
            Op::Cancel(id) => self.user_op(*id, |t| lifecycle::cancel(t, now)).await,
            Op::Reset(id) => self.user_op(*id, lifecycle::reset).await,
            Op::Delete(ids) => {
                let deletes: Vec<Delete> = ids.iter().map(|i| Delete::any(task_id(*i))).collect();
                let outcomes = self
                    .store
                    .delete(&deletes)
                    .await
                    .map_err(store_err("delete"))?;
                Ok(Answer::Deleted(
                    outcomes.iter().map(Deleted::from).collect(),
                ))
            }
            Op::Advance(_) | Op::ExpireLeases => Ok(Answer::Clock),
        }
    }
}

/// The reads compared after every step: listings, counts and due times.
async fn reads<S: Store>(store: &S, now: DateTime<Utc>) -> Res<String> {
    let mut out = String::new();
    for env in ENVS {
        let mut filter = TaskFilter::env(env, now);
        let all: Vec<String> = store
            .find(&filter)
            .await
            .map_err(store_err("find"))?
            .into_iter()
            .map(|t| t.id)
            .collect();
        filter.not_done = true;
        filter.offset = 1;
        filter.limit = Some(2);
        let page: Vec<String> = store
            .find(&filter)
            .await
            .map_err(store_err("find"))?
            .into_iter()
            .map(|t| t.id)
            .collect();
        let counts = store
            .count_by_status(env, None, now)
            .await
            .map_err(store_err("count_by_status"))?;
        out.push_str(&format!(
            "{env}: find {all:?}, not-done page {page:?}, counts {counts:?}\n"
        ));
        for kind in KINDS {
            let due = store
                .next_due(env, kind, now)
                .await
                .map_err(store_err("next_due"))?;
            out.push_str(&format!("{env}/{kind}: next_due {due:?}\n"));
        }
    }
    Ok(out)
}

fn differences(store: &BTreeMap<String, Task>, model: &BTreeMap<String, Task>) -> String {
    let ids: BTreeSet<&String> = store.keys().chain(model.keys()).collect();
    let mut out = String::new();
    for id in ids {
        let (s, m) = (store.get(id), model.get(id));
        if s != m {
            out.push_str(&format!("  {id}:\n    store: {s:?}\n    model: {m:?}\n"));
        }
    }
    out
}

/// Invariants of the store's state across one step.
fn check_invariants(
    op: &Op,
    now: DateTime<Utc>,
    before: &BTreeMap<String, Task>,
    after: &BTreeMap<String, Task>,
    held_token: Option<&LeaseToken>,
    picked: Option<&str>,
) -> Res<()> {
    // All live leases of one (env, kind, key) belong to one claim.
    let mut holders: BTreeMap<(&str, &str, &str), &LeaseToken> = BTreeMap::new();
    for task in after.values() {
        if let (true, Some(key), Some(tok)) = (
            task.is_leased_at(now),
            task.resource_key.as_deref(),
            task.lease_token.as_ref(),
        ) {
            let slot = (task.env.as_str(), task.kind.as_str(), key);
            if let Some(other) = holders.insert(slot, tok)
                && other != tok
            {
                return Err(format!(
                    "two live leases with different tokens in {slot:?} ({other} and {tok})"
                ));
            }
        }
    }
    let targets: BTreeSet<String> = match op {
        Op::Reset(id) => BTreeSet::from([task_id(*id)]),
        Op::Delete(ids) => ids.iter().map(|i| task_id(*i)).collect(),
        _ => BTreeSet::new(),
    };
    for (id, old) in before {
        let Some(new) = after.get(id) else {
            if !matches!(op, Op::Delete(_)) {
                return Err(format!("{id} vanished without a delete"));
            }
            continue;
        };
        if new != old && new.version <= old.version {
            return Err(format!("{id} changed without raising its version"));
        }
        if old.is_done() && new != old && !targets.contains(id) {
            return Err(format!("terminal task {id} changed by {op:?}"));
        }
        if new.attempts < old.attempts && !matches!(op, Op::Reset(i) if task_id(*i) == *id) {
            return Err(format!("attempts of {id} decreased"));
        }
        if let Op::Claim { .. } = op
            && new.lease_token != old.lease_token
            && old.is_leased_at(now)
        {
            return Err(format!("{id} was claimed while its lease was live"));
        }
    }
    if let (Some(token), Some(id)) = (held_token, picked)
        && let Some(old) = before.get(id)
        && old.lease_token.as_ref() != Some(token)
        && after.get(id) != Some(old)
    {
        return Err(format!("a stale token changed {id}"));
    }
    Ok(())
}

/// The held task a worker op will use (same choice as [`Side::worker_op`]).
fn picked<'a>(held: &'a [Vec<Task>], op: &Op) -> Option<&'a Task> {
    let (worker, pick) = match op {
        Op::Succeed { worker, pick }
        | Op::Fail { worker, pick }
        | Op::Release { worker, pick }
        | Op::Extend { worker, pick, .. } => (*worker, *pick),
        _ => return None,
    };
    let held = (0..WORKERS)
        .map(|i| &held[(worker + i) % WORKERS])
        .find(|h| !h.is_empty())?;
    Some(&held[pick % held.len()])
}

async fn run_case<F: StoreFactory>(factory: &F, ops: &[Op]) -> Res<()> {
    let mut real = Side::new(factory.new_store().await);
    let mut model = Side::new(ModelStore::with_claim_ties(factory.claim_ties()));
    let mut now = base_time();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Advance(secs) => now += TimeDelta::seconds(*secs),
            Op::ExpireLeases => {
                let state = dump(&model.store).await?;
                if let Some(latest) = state
                    .values()
                    .filter(|t| t.is_leased_at(now))
                    .filter_map(|t| t.leased_until)
                    .max()
                {
                    now = latest;
                }
            }
            _ => {}
        }
        let lease = match op {
            Op::Claim { lease_secs, .. } => *lease_secs,
            _ => 0,
        };
        let grant = LeaseGrant {
            token: LeaseToken::from_stored(format!("step-{step}")),
            leased_until: now + TimeDelta::seconds(lease as i64),
        };
        let before = dump(&real.store).await?;
        let picked = picked(&real.held, op).cloned();
        let answer = real.apply(op, now, step, &grant).await?;
        let expected = model.apply(op, now, step, &grant).await?;
        let after = dump(&real.store).await?;
        let context = || format!("step {step} at {now}: {op:?}");
        if answer != expected {
            return Err(format!(
                "{}\n  store answered {answer:?}\n  model expected {expected:?}",
                context()
            ));
        }
        let model_state = dump(&model.store).await?;
        if after != model_state {
            return Err(format!(
                "{}\n state differs:\n{}",
                context(),
                differences(&after, &model_state)
            ));
        }
        check_invariants(
            op,
            now,
            &before,
            &after,
            picked.as_ref().and_then(|t| t.lease_token.as_ref()),
            picked.as_ref().map(|t| t.id.as_str()),
        )
        .map_err(|e| format!("{}: {e}", context()))?;
        if let Op::Claim { .. } = op {
            for task in real.held.iter().flatten() {
                if task.lease_token == Some(grant.token.clone())
                    && after.get(&task.id) != Some(task)
                {
                    return Err(format!(
                        "{}: claim returned {} differently from what it stored",
                        context(),
                        task.id
                    ));
                }
            }
        }
        let (seen, wanted) = (
            reads(&real.store, now).await?,
            reads(&model.store, now).await?,
        );
        if seen != wanted {
            return Err(format!(
                "{}\n reads differ:\n store:\n{seen}\n model:\n{wanted}",
                context()
            ));
        }
    }
    Ok(())
}

/// Random operation sequences (create, single and group claims, success,
/// failure, release, lease extension — with current or stale tokens —
/// cancel, reset, delete, clock jumps, lease expiry) over several workers,
/// 2 envs, 2 kinds and 3 resource keys: the store must agree with the
/// reference model after every step and keep the invariants listed in the
/// module docs.
///
/// Runs 64 cases of up to 40 operations (`PROPTEST_CASES` overrides the
/// count) on a current-thread runtime of its own.
pub fn model_matches_store(factory: &impl StoreFactory) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a current-thread tokio runtime");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    // Every case starts from a random population, then runs random ops.
    let cases = (
        prop::collection::vec(new_task(), 2..=8),
        prop::collection::vec(op(), 1..=MAX_OPS),
    )
        .prop_map(|(population, mut ops)| {
            ops.insert(0, Op::Create(population));
            ops
        });
    let result = runner.run(&cases, |ops| {
        runtime
            .block_on(run_case(factory, &ops))
            .map_err(TestCaseError::fail)
    });
    if let Err(failure) = result {
        panic!("the store diverged from the model: {failure}");
    }
}

/// The reference model: every task in a map, every query a full scan.
///
/// Clones share the same tasks. It passes the whole suite (this crate's own
/// tests run it), except what needs undecodable documents, which it cannot hold.
#[derive(Debug, Default, Clone)]
pub struct ModelStore {
    tasks: Arc<Mutex<BTreeMap<String, Task>>>,
    ties: ClaimTies,
    /// Paused `(env, kind)` pairs.
    paused: Arc<Mutex<BTreeSet<(String, String)>>>,
    /// Rate limiters: `(env, kind, key)` to `(window start, taken)`.
    limiters: Arc<Mutex<Limiters>>,
}

type Limiters = BTreeMap<(String, String, Option<String>), (DateTime<Utc>, u32)>;

impl ModelStore {
    /// A model whose claims break exact ties as `ties` says (the backend
    /// under test's [`StoreFactory::claim_ties`]).
    pub fn with_claim_ties(ties: ClaimTies) -> Self {
        Self {
            ties,
            ..Self::default()
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Task>) -> T) -> Result<T, StoreError> {
        let mut tasks = self
            .tasks
            .lock()
            .map_err(|_| StoreError::backend("model lock poisoned"))?;
        Ok(f(&mut tasks))
    }
}

fn model_claim(
    tasks: &mut BTreeMap<String, Task>,
    request: &ClaimRequest,
    ties: ClaimTies,
) -> Vec<Task> {
    let now = request.now;
    let mine = |t: &&Task| t.env == request.env && t.kind == request.kind;
    let busy = |key: &str| {
        tasks
            .values()
            .filter(mine)
            .any(|t| t.resource_key.as_deref() == Some(key) && t.is_leased_at(now))
    };
    let mut ready: Vec<&Task> = tasks
        .values()
        .filter(mine)
        .filter(|t| t.is_ready_at(now))
        .collect();
    ready.sort_by(|a, b| match request.order {
        ClaimOrder::Oldest => ties.order(a, b),
        _ => b.priority.cmp(&a.priority).then_with(|| ties.order(a, b)),
    });
    let mut chosen: Vec<String> = Vec::new();
    match request.mode {
        ClaimMode::Single { limit } => {
            let mut keys_taken = BTreeSet::new();
            for task in &ready {
                if chosen.len() >= limit {
                    break;
                }
                if let Some(key) = task.resource_key.as_deref()
                    && (busy(key) || !keys_taken.insert(key))
                {
                    continue;
                }
                chosen.push(task.id.clone());
            }
        }
        ClaimMode::ResourceGroup { max_group } if max_group > 0 => {
            for task in &ready {
                match task.resource_key.as_deref() {
                    None => {
                        chosen.push(task.id.clone());
                        break;
                    }
                    Some(key) if busy(key) => continue,
                    Some(key) => {
                        let mut group: Vec<&&Task> = ready
                            .iter()
                            .filter(|t| t.resource_key.as_deref() == Some(key))
                            .collect();
                        group.sort_by_key(|t| (t.wait_until, t.created_at, t.id.clone()));
                        chosen.extend(group.into_iter().take(max_group).map(|t| t.id.clone()));
                        break;
                    }
                }
            }
        }
        ClaimMode::ResourceGroup { .. } => {}
    }
    chosen
        .into_iter()
        .filter_map(|id| {
            let task = tasks.get_mut(&id)?;
            *task = lifecycle::claim(task, &request.grant);
            Some(task.clone())
        })
        .collect()
}

#[async_trait]
impl Store for ModelStore {
    async fn create(&self, new: Vec<Task>) -> Result<Vec<CreateOutcome>, StoreError> {
        self.with(|tasks| {
            new.into_iter()
                .map(|task| match tasks.get(&task.id) {
                    Some(old) if old.env == task.env => CreateOutcome::AlreadyExists,
                    Some(old) => CreateOutcome::ExistsInOtherEnv {
                        env: old.env.clone(),
                    },
                    None => {
                        tasks.insert(task.id.clone(), task);
                        CreateOutcome::Created
                    }
                })
                .collect()
        })
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
        self.with(|tasks| Claimed {
            tasks: model_claim(tasks, request, self.ties),
            undecodable: Vec::new(),
        })
    }

    async fn swap(&self, swaps: &[Swap]) -> Result<Vec<SwapOutcome>, StoreError> {
        self.with(|tasks| {
            swaps
                .iter()
                .map(|swap| match tasks.get_mut(swap.id()) {
                    None => SwapOutcome::NotFound,
                    Some(stored) if stored.version != swap.fence().version() => {
                        SwapOutcome::Conflict
                    }
                    Some(stored) => {
                        swap.apply_to(stored);
                        SwapOutcome::Applied { revision: None }
                    }
                })
                .collect()
        })
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<Fetched>, StoreError> {
        self.with(|tasks| {
            let mut seen = BTreeSet::new();
            ids.iter()
                .filter(|id| seen.insert(*id))
                .filter_map(|id| tasks.get(id).cloned().map(Fetched::Task))
                .collect()
        })
    }

    async fn find(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.with(|tasks| {
            let mut found: Vec<Task> = tasks
                .values()
                .filter(|t| filter.matches(t) && filter.is_after_cursor(t))
                .cloned()
                .collect();
            found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            found
                .into_iter()
                .skip(filter.offset)
                .take(filter.limit.unwrap_or(usize::MAX))
                .collect()
        })
    }

    async fn count_by_status(
        &self,
        env: &str,
        kind: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<StatusCounts, StoreError> {
        self.with(|tasks| {
            let mut counts = StatusCounts::new();
            for task in tasks.values() {
                if task.env == env && kind.is_none_or(|k| k == task.kind) {
                    *counts.entry(task.status(now)).or_insert(0) += 1;
                }
            }
            counts
        })
    }

    async fn delete(&self, deletes: &[Delete]) -> Result<Vec<DeleteOutcome>, StoreError> {
        self.with(|tasks| {
            deletes
                .iter()
                .map(|d| match tasks.get(&d.id) {
                    None => DeleteOutcome::NotFound,
                    Some(t) if d.expected_version.is_some_and(|v| v != t.version) => {
                        DeleteOutcome::Conflict
                    }
                    Some(_) => {
                        tasks.remove(&d.id);
                        DeleteOutcome::Deleted
                    }
                })
                .collect()
        })
    }

    async fn next_due(
        &self,
        env: &str,
        kind: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.with(|tasks| {
            tasks
                .values()
                .filter(|t| t.env == env && t.kind == kind)
                .filter_map(Task::due_at)
                .filter(|due| *due > after)
                .min()
        })
    }

    /// A full scan, filtered by the query's own rule and sorted.
    async fn find_finished(&self, query: &FinishedQuery) -> Result<Vec<Task>, StoreError> {
        self.with(|tasks| {
            let mut found: Vec<Task> = tasks
                .values()
                .filter(|t| query.matches(t))
                .cloned()
                .collect();
            found.sort_by(|a, b| (a.done_at, &a.id).cmp(&(b.done_at, &b.id)));
            found.truncate(query.limit);
            found
        })
    }

    async fn set_paused(&self, env: &str, kind: &str, paused: bool) -> Result<bool, StoreError> {
        let mut set = self
            .paused
            .lock()
            .map_err(|_| StoreError::backend("model lock poisoned"))?;
        let key = (env.to_owned(), kind.to_owned());
        Ok(if paused {
            set.insert(key)
        } else {
            set.remove(&key)
        })
    }

    async fn paused_kinds(&self, env: &str) -> Result<Vec<String>, StoreError> {
        let set = self
            .paused
            .lock()
            .map_err(|_| StoreError::backend("model lock poisoned"))?;
        Ok(set
            .iter()
            .filter(|(e, _)| e == env)
            .map(|(_, k)| k.clone())
            .collect())
    }

    async fn take_starts(&self, requests: &[StartsRequest]) -> Result<Vec<u32>, StoreError> {
        let mut limiters = self
            .limiters
            .lock()
            .map_err(|_| StoreError::backend("model lock poisoned"))?;
        Ok(requests
            .iter()
            .map(|r| {
                let key = (r.env.clone(), r.kind.clone(), r.resource_key.clone());
                let (granted, next) = r.grant(limiters.get(&key).copied());
                if let Some(next) = next {
                    limiters.insert(key, next);
                }
                granted
            })
            .collect())
    }

    async fn return_starts(&self, requests: &[StartsRequest]) -> Result<(), StoreError> {
        let mut limiters = self
            .limiters
            .lock()
            .map_err(|_| StoreError::backend("model lock poisoned"))?;
        for r in requests {
            let key = (r.env.clone(), r.kind.clone(), r.resource_key.clone());
            if let Some(next) = r.give_back(limiters.get(&key).copied()) {
                limiters.insert(key, next);
            }
        }
        Ok(())
    }
}

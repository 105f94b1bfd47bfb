//! The claiming loop of a kind: claims for free worker slots and a few
//! tasks ahead of them, with more than one claim in flight where the store
//! allows it, and hands each claimed unit to a slot as one frees up.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::add;
use super::backlog::{Backlog, RENEW_AFTER};
use super::guard::panic_message;
use super::pace::Pace;
use super::rate;
use super::run::{RunReport, run_claimed};
use crate::error::Error;
use crate::lifecycle::LeaseGrant;
use crate::manager::options::ClaimAhead;
use crate::manager::{HandlerShape, Inner, Registration, ShutdownPhase};
use crate::metrics;
use crate::store::{ClaimMode, ClaimRequest, Undecodable};
use crate::task::{LeaseToken, Task};

/// Most claims one `process_next` makes past claims whose every task was
/// deferred by its resource key's rate limit.
const MAX_DEFERRED_CLAIMS: usize = 100;

/// Longest back-off of a loop whose claims keep failing (store unreachable).
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(30);

pub(crate) fn spawn_workers(inner: &Arc<Inner>, registration: Arc<Registration>) {
    let mut workers = inner.workers.lock().unwrap_or_else(PoisonError::into_inner);
    let wake = inner.wake_receiver(&registration.kind);
    let phase = inner.shutdown.subscribe();
    let concurrent_claims = inner.store.concurrent_claims().max(1);
    let ahead = registration.options.ahead(inner.store.claims_ahead());
    workers.push(tokio::spawn(
        Dispatcher {
            manager: Arc::downgrade(inner),
            slots: Arc::new(Semaphore::new(registration.options.concurrency)),
            registration,
            concurrent_claims,
            ahead,
            running: JoinSet::new(),
            backlog: Backlog::default(),
            claims: FuturesUnordered::new(),
            asked: 0,
            idle: None,
            events: 0,
            short_at: None,
            failures: 0,
            quiet_due: None,
            claim_time: Pace::default(),
        }
        .run(wake, phase),
    ));
}

/// A claim on the wire, and what it asked for.
struct ClaimDone {
    /// Tasks (single-task kinds) or groups asked for.
    asked: usize,
    /// When the claim was issued: due times are looked up after this
    /// instant, not after "now" once it returned (the clock may pass a due
    /// time in between, and that task would be slept past).
    checked_at: DateTime<Utc>,
    /// The count of outside wake-ups when it was issued.
    outside_seen: u64,
    /// [`Dispatcher::events`] when it was issued.
    events_seen: u64,
    /// When it was issued, to time its round trip.
    issued: std::time::Instant,
    result: Result<Take, Error>,
}

/// What the claiming loop takes from one claim.
enum Take {
    /// Leased tasks (`None`: nothing was ready), and how many more it
    /// claimed but deferred to a later window of their resource key's
    /// rate limit (they count as received: other tasks may be ready).
    Claimed(Option<Claim>, usize),
    /// The kind claims nothing until `until` (`None`: until a wake-up or
    /// the poll interval): it is paused, or its rate limit is spent.
    Held(Option<DateTime<Utc>>),
}

/// What ended the loop's wait.
enum Event {
    /// A claim came back.
    Claimed(ClaimDone),
    /// The idle timer ran out.
    Timer,
    /// A slot freed up, a run ended, a wake-up or a shutdown phase change.
    Other,
}

/// Why the loop is not claiming, until when.
struct Idle {
    until: DateTime<Utc>,
    /// The wait ends at the poll interval (not at a known due time).
    at_horizon: bool,
    /// The next-due answer the wait is based on (`None`: after a failure).
    answer: Option<Option<DateTime<Utc>>>,
}

/// The one claiming loop of a kind. It keeps the kind's worker slots busy:
/// each claim asks for every free slot plus the claim-ahead room
/// ([`crate::manager::HandlerOptions::claim_ahead`]), claimed units wait in
/// the [`Backlog`] and start the moment a slot frees up. When a claim comes
/// back short, nothing else is ready: the loop sleeps until the next due
/// time, a wake-up, a slot freeing up, or the poll interval. A wake-up
/// wakes this one loop, not one loop per slot. The loop holds only a weak
/// reference while idle, so dropping the last `Manager` stops it; on
/// shutdown it stops claiming, hands the waiting tasks back and waits for
/// its running tasks.
struct Dispatcher {
    manager: Weak<Inner>,
    registration: Arc<Registration>,
    slots: Arc<Semaphore>,
    concurrent_claims: usize,
    /// Most tasks claimed ahead of free slots (before pacing).
    ahead: ClaimAhead,
    running: JoinSet<()>,
    backlog: Backlog,
    claims: FuturesUnordered<BoxFuture<'static, ClaimDone>>,
    /// Tasks (or groups) asked for by the claims in flight.
    asked: usize,
    idle: Option<Idle>,
    /// Wake-ups, freed slots, ended runs and claims that brought tasks so
    /// far: a claim that came back short after one of them may have looked
    /// before the change it announces (or skipped rows another claim of
    /// this loop held), so the loop claims again instead of idling.
    events: u64,
    /// Set (to `events` then) when a claim came back short while another
    /// claim was on the wire and nothing had happened since it was issued:
    /// no further claim goes out beside the one in flight until something
    /// happens or it returns. Without this, two claims that both find
    /// nothing keep re-issuing each other ("another claim is on the wire:
    /// claim again") and the loop never idles, and a store whose claims
    /// complete without waiting (memory) keeps the loop's worker thread
    /// so busy that a run it just spawned never starts.
    short_at: Option<u64>,
    failures: u32,
    /// The last next-due answer, kept while nothing happened: after an idle
    /// period that ended on the poll timer with no wake-up and no task of
    /// this loop running, and a claim that found nothing, the answer cannot
    /// have changed (another writer's change arrives as a wake-up through
    /// the store's notifications), so the poll costs one claim, not a claim
    /// and a next-due lookup (on Firestore: 1 read instead of 3). Without
    /// notifications, a task scheduled meanwhile by another process is found
    /// by the claim of the first poll after it is due.
    quiet_due: Option<Option<DateTime<Utc>>>,
    /// How long this loop's claims take to come back.
    claim_time: Pace,
}

impl Dispatcher {
    async fn run(
        mut self,
        mut wake: watch::Receiver<u64>,
        mut phase: watch::Receiver<ShutdownPhase>,
    ) {
        loop {
            // A store whose calls complete without waiting would let this
            // loop run without ever giving its worker thread back, and a run
            // it just spawned (kept for this thread) would not start.
            tokio::task::coop::consume_budget().await;
            while let Some(ended) = self.running.try_join_next() {
                log_abnormal_end(ended);
            }
            if *phase.borrow() != ShutdownPhase::Running {
                break;
            }
            let Some(inner) = self.manager.upgrade() else {
                break;
            };
            let outside = *wake.borrow();
            self.start_waiting(&inner, outside).await;
            let room = self.room();
            if room > 0 && self.idle.is_none() && self.may_claim() {
                wake.borrow_and_update();
                let outside_seen = *wake.borrow();
                self.issue_claim(inner, room, outside_seen);
                continue;
            }
            let clock = inner.clock.clone();
            drop(inner);
            let all_busy = self.slots.available_permits() == 0;
            let idle_until = self.idle.as_ref().map(|idle| idle.until);
            let slots = self.slots.clone();
            let event = tokio::select! {
                Some(done) = self.claims.next(), if !self.claims.is_empty() => Event::Claimed(done),
                // A slot freed up: start waiting work or claim for it. A
                // short claim may have lost tasks to concurrent claimers (an
                // optimistic backend cannot tell that from "nothing else is
                // ready"): without this the free slot would wait for a
                // wake-up or the poll.
                _ = slots.acquire(), if all_busy => Event::Other,
                Some(ended) = self.running.join_next(), if !self.running.is_empty() => {
                    log_abnormal_end(ended);
                    Event::Other
                }
                changed = wake.changed() => if changed.is_err() { break } else { Event::Other },
                changed = phase.changed() => if changed.is_err() { break } else { Event::Other },
                _ = sleep_until(&*clock, idle_until), if idle_until.is_some() => Event::Timer,
            };
            let timer_ended = match event {
                Event::Claimed(done) => {
                    self.asked = self.asked.saturating_sub(done.asked);
                    self.claimed(done).await;
                    continue;
                }
                Event::Timer => true,
                Event::Other => {
                    self.events = self.events.wrapping_add(1);
                    false
                }
            };
            let idle = self.idle.take();
            if timer_ended {
                // The poll timer ran out and nothing woke the loop: keep the answer.
                if let Some(idle) = idle.filter(|i| i.at_horizon && self.running.is_empty()) {
                    self.quiet_due = idle.answer;
                }
            } else {
                self.quiet_due = None;
            }
        }
        self.stop().await;
    }

    /// Whether another claim may go out now: fewer than the store's
    /// concurrent claims are on the wire, and, if one of them is, no claim
    /// came back short since the last event (`short_at`).
    fn may_claim(&self) -> bool {
        self.claims.is_empty()
            || (self.claims.len() < self.concurrent_claims && self.short_at != Some(self.events))
    }

    /// What the next claim asks for (0: no claim now): free slots plus
    /// the claim-ahead room, less what is waiting or asked for, in tasks
    /// for a single-task kind, in groups for a group kind. For a
    /// single-task kind, "free" and "waiting" are as expected when the
    /// claim comes back: the runs the slots finish during one claim round
    /// trip (at the mean run time) have freed their slots and used up
    /// that much of the waiting tasks.
    ///
    /// Tasks are claimed ahead only as far as slots work through them
    /// within half of [`RENEW_AFTER`] at the handlers' mean run time, so a
    /// task claimed ahead rarely needs its lease renewed, and long
    /// handlers claim no more than they have slots for. The room is
    /// claimed in batches of at least half the claim-ahead, not a claim
    /// per freed slot; a free slot with nothing waiting or asked for is
    /// always claimed for.
    fn room(&self) -> usize {
        let free = self.slots.available_permits();
        let options = &self.registration.options;
        match self.registration.shape {
            HandlerShape::Single(_) => {
                let pace = &self.registration.pace;
                let configured = if pace.mean().is_zero() {
                    self.ahead.untimed
                } else {
                    self.ahead.timed
                };
                task_room(Holding {
                    slots: options.concurrency,
                    free,
                    ahead: pace.ahead(configured, options.concurrency, RENEW_AFTER / 2),
                    waiting: self.backlog.tasks(),
                    asked: self.asked,
                    drained: pace.runs_within(options.concurrency, self.claim_time.mean()),
                })
            }
            HandlerShape::Group(_) => free.saturating_sub(self.backlog.units() + self.asked),
        }
    }

    /// Starts waiting units on the free slots, after re-reading them if an
    /// outside change (count `outside`) may have touched them.
    async fn start_waiting(&mut self, inner: &Arc<Inner>, outside: u64) {
        if self.backlog.is_empty() {
            return;
        }
        if inner.paused.is_paused(&self.registration.kind) {
            // Paused: what was claimed ahead goes back, unstarted.
            self.backlog.release_all(inner).await;
            return;
        }
        if self.slots.available_permits() == 0 {
            return;
        }
        self.backlog.refresh(inner, outside).await;
        while !self.backlog.is_empty() {
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            let Some(unit) = self.backlog.pop(inner.now()) else {
                break;
            };
            self.spawn_run(inner, unit, slot);
        }
    }

    fn spawn_run(&mut self, inner: &Arc<Inner>, unit: Claim, slot: OwnedSemaphorePermit) {
        let inner = inner.clone();
        let registration = self.registration.clone();
        self.running.spawn(async move {
            // The run gives the slot back when its last handler returns,
            // before the outcome is written.
            // Boxed: the run's future is large, and an unboxed one would be
            // copied whole each time the spawned task is moved (four times
            // per run, ~7 % of a memory drain's instructions).
            let run = AssertUnwindSafe(Box::pin(run_claimed(
                &inner,
                &registration,
                unit,
                Some(slot),
            )));
            if let Err(panic) = run.catch_unwind().await {
                // A bug must not silently stop the kind: log it and carry
                // on; the task stays leased until its lease expires.
                tracing::error!(kind = %registration.kind,
                    panic = %panic_message(panic.as_ref()), "worker panicked");
            }
        });
    }

    fn issue_claim(&mut self, inner: Arc<Inner>, room: usize, outside_seen: u64) {
        let registration = self.registration.clone();
        let (mode, asked) = match registration.shape {
            HandlerShape::Single(_) => (ClaimMode::Single { limit: room }, room),
            HandlerShape::Group(_) => (
                ClaimMode::ResourceGroup {
                    max_group: registration.options.max_group_size,
                },
                1,
            ),
        };
        self.asked += asked;
        let checked_at = inner.now();
        let events_seen = self.events;
        let issued = std::time::Instant::now();
        self.claims.push(
            async move {
                let attempt =
                    AssertUnwindSafe(claim(&inner, &registration, mode, false)).catch_unwind();
                // Undecodable documents are logged by `claim`; the loop only
                // needs what it leased.
                let attempt = attempt.map(|r| r.map(|claimed| claimed.map(Met::into_take)));
                let result = attempt.await.unwrap_or_else(|panic| {
                    Err(Error::Internal(format!(
                        "claim panicked: {}",
                        panic_message(panic.as_ref())
                    )))
                });
                ClaimDone {
                    asked,
                    checked_at,
                    outside_seen,
                    events_seen,
                    issued,
                    result,
                }
            }
            .boxed(),
        );
    }

    /// Takes a claim's result: its units wait for slots; a claim that came
    /// back short (with no other claim in flight) makes the loop idle until
    /// the next due time; a failed one backs off.
    async fn claimed(&mut self, done: ClaimDone) {
        let Some(inner) = self.manager.upgrade() else {
            return;
        };
        let (got, found_nothing) = match done.result {
            Ok(Take::Claimed(Some(claim), deferred)) => {
                self.failures = 0;
                self.claim_time.record(done.issued.elapsed());
                let units = claim.split(&self.registration.shape);
                let got = match self.registration.shape {
                    HandlerShape::Single(_) => units.iter().map(|u| u.tasks.len()).sum(),
                    HandlerShape::Group(_) => units.len(),
                };
                self.backlog.push(units, done.outside_seen);
                (got + deferred, false)
            }
            Ok(Take::Claimed(None, deferred)) => {
                self.failures = 0;
                (deferred, deferred == 0)
            }
            Ok(Take::Held(until)) => {
                // Paused (a wake-up or the poll re-reads it) or the rate
                // limit's window is spent (claim when the next one opens).
                self.failures = 0;
                let horizon = add(inner.now(), inner.config.poll_interval);
                let until = until.map_or(horizon, |u| u.min(horizon));
                self.idle = Some(Idle {
                    until,
                    at_horizon: false,
                    answer: None,
                });
                return;
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                tracing::warn!(kind = %self.registration.kind, error = %e, "claim failed");
                let backoff = Duration::from_millis(100)
                    .saturating_mul(2u32.saturating_pow(self.failures.min(16)))
                    .min(MAX_ERROR_BACKOFF)
                    .min(inner.config.poll_interval);
                self.idle = Some(Idle {
                    until: add(inner.now(), backoff),
                    at_horizon: false,
                    answer: None,
                });
                return;
            }
        };
        let raced = done.events_seen != self.events;
        if got > 0 {
            // A concurrent claim that comes back short may have skipped
            // the rows this one held while both were on the wire.
            self.events = self.events.wrapping_add(1);
        }
        if got < done.asked && !raced && !self.claims.is_empty() {
            // Nothing else was ready when this claim looked: leave the
            // next look to the claim on the wire (see `short_at`).
            self.short_at = Some(self.events);
            return;
        }
        if got >= done.asked || !self.claims.is_empty() || raced {
            // Every task asked for came (look for more as soon as there is
            // room), another claim is on the wire, or something happened
            // while this one was (a wake-up, a freed slot, an ended run,
            // another claim's tasks): claim again rather than idle.
            return;
        }
        // Fewer than asked for: nothing else is ready now.
        let horizon = add(inner.now(), inner.config.poll_interval);
        let quiet = found_nothing && self.running.is_empty();
        let known = self.quiet_due.take();
        let due = match known.filter(|d| quiet && d.is_none_or(|t| t > done.checked_at)) {
            Some(known) => Ok(known),
            None => {
                inner
                    .store
                    .next_due(&inner.env, &self.registration.kind, done.checked_at)
                    .await
            }
        };
        let (until, answer) = match due {
            Ok(Some(due)) => (due.min(horizon), Some(Some(due))),
            Ok(None) => (horizon, Some(None)),
            Err(e) => {
                tracing::warn!(kind = %self.registration.kind, error = %e, "next due time unavailable");
                (horizon, None)
            }
        };
        self.idle = Some(Idle {
            until,
            at_horizon: until == horizon,
            answer,
        });
    }

    /// Shutdown (or the manager is gone): claims in flight are awaited,
    /// everything waiting is handed back, and the running tasks finish, or
    /// are interrupted and release their leases, on their own.
    async fn stop(mut self) {
        if let Some(inner) = self.manager.upgrade() {
            while let Some(done) = self.claims.next().await {
                if let Ok(Take::Claimed(Some(claim), _)) = done.result {
                    self.backlog
                        .push(claim.split(&self.registration.shape), done.outside_seen);
                }
            }
            self.backlog.release_all(&inner).await;
        }
        while let Some(ended) = self.running.join_next().await {
            log_abnormal_end(ended);
        }
    }
}

/// What a single-task kind's loop holds when it may claim.
#[derive(Debug, Clone, Copy)]
struct Holding {
    /// The kind's worker slots, and how many of them are free now.
    slots: usize,
    free: usize,
    /// How many tasks it may hold beyond its slots (after pacing).
    ahead: usize,
    /// Tasks waiting for a slot, and asked for by the claims in flight.
    waiting: usize,
    asked: usize,
    /// Runs the slots are expected to finish during one claim round trip.
    drained: usize,
}

/// How many tasks a single-task kind's next claim asks for (0: no claim
/// now); see [`Dispatcher::room`].
///
/// What the slots work through while the claim is on the wire is gone by
/// the time it returns: counting it as still waiting would halve every
/// claim of short tasks, and one claim in flight could not keep the slots
/// busy. That credit is capped at the slots plus the claim-ahead, so when
/// the guess is wrong (a handler stalls) the loop holds at most twice
/// that many tasks, and there is none without claim-ahead.
fn task_room(h: Holding) -> usize {
    // No claim-ahead (set so, or paced down for long handlers) means no
    // task waits for a slot: nothing is claimed for a slot before it frees.
    let drained = if h.ahead == 0 {
        0
    } else {
        h.drained.min(h.slots + h.ahead)
    };
    let free_then = if drained > h.waiting {
        h.free.saturating_add(drained - h.waiting).min(h.slots)
    } else {
        h.free
    };
    let waiting_then = h.waiting.saturating_sub(drained);
    let room = (free_then + h.ahead).saturating_sub(waiting_then + h.asked);
    let starving = h.free > 0 && h.waiting + h.asked == 0;
    if starving || room >= (h.ahead / 2).max(1) {
        room
    } else {
        0
    }
}

/// Sleeps until `until` on `clock` (forever when `None`).
async fn sleep_until(clock: &dyn crate::clock::Clock, until: Option<DateTime<Utc>>) {
    match until {
        Some(until) => clock.sleep_until(until).await,
        None => std::future::pending().await,
    }
}

fn log_abnormal_end(ended: Result<(), tokio::task::JoinError>) {
    if let Err(e) = ended {
        tracing::error!(error = %e, "task execution ended abnormally");
    }
}

/// Tasks one claim leased, under one lease token.
pub(super) struct Claim {
    pub(super) token: LeaseToken,
    pub(super) claimed_at: DateTime<Utc>,
    pub(super) tasks: Vec<Task>,
    pub(super) undecodable: Vec<Undecodable>,
    /// It waited for a slot long enough to renew its lease before it starts.
    pub(super) waited: bool,
}

impl Claim {
    /// The units that run in one slot each: every task of a single-task
    /// kind alone (they share the claim's lease token, which fences each
    /// task on its own), a resource-key group as a whole.
    pub(super) fn split(self, shape: &HandlerShape) -> Vec<Claim> {
        match shape {
            HandlerShape::Group(_) => vec![self],
            HandlerShape::Single(_) => {
                let Claim {
                    token,
                    claimed_at,
                    tasks,
                    mut undecodable,
                    waited,
                } = self;
                tasks
                    .into_iter()
                    .map(|task| Claim {
                        token: token.clone(),
                        claimed_at,
                        tasks: vec![task],
                        undecodable: std::mem::take(&mut undecodable),
                        waited,
                    })
                    .collect()
            }
        }
    }
}

pub(crate) async fn process_next(
    inner: &Arc<Inner>,
    registration: &Arc<Registration>,
    fresh_pauses: bool,
) -> Result<Option<RunReport>, Error> {
    let mode = match registration.shape {
        HandlerShape::Single(_) => ClaimMode::Single { limit: 1 },
        HandlerShape::Group(_) => ClaimMode::ResourceGroup {
            max_group: registration.options.max_group_size,
        },
    };
    // A claim whose tasks were all deferred by their resource key's rate
    // limit ran nothing, but other tasks may be ready: claim again (the
    // deferred ones now wait, so this ends).
    let mut met = claim(inner, registration, mode, fresh_pauses).await?;
    for _ in 0..MAX_DEFERRED_CLAIMS {
        match met {
            Met::OnlyUndecodable(ref undecodable, deferred)
                if deferred > 0 && undecodable.is_empty() =>
            {
                met = claim(inner, registration, mode, false).await?;
            }
            _ => break,
        }
    }
    match met {
        Met::Leased(claim, _) => Ok(Some(run_claimed(inner, registration, claim, None).await)),
        Met::Held(_) => Ok(None),
        // Nothing ran, but a document of the kind cannot be decoded: say so
        // once (it is met again on every claim, and a caller looping until
        // `None` must not spin on it).
        Met::OnlyUndecodable(undecodable, _) if !undecodable.is_empty() => Ok(Some(RunReport {
            kind: registration.kind.clone(),
            undecodable,
            ..RunReport::default()
        })),
        Met::OnlyUndecodable(_, _) => Ok(None),
    }
}

/// What one claim met.
pub(super) enum Met {
    /// Tasks it leased (with any undecodable documents met beside them),
    /// and how many it deferred (a resource key's rate limit).
    Leased(Claim, usize),
    /// Nothing leased (but `usize` deferred); the undecodable documents met
    /// for the first time by this manager.
    OnlyUndecodable(Vec<Undecodable>, usize),
    /// Nothing claimed: the kind is paused (`None`) or its rate limit is
    /// spent until the given time.
    Held(Option<DateTime<Utc>>),
}

impl Met {
    fn into_take(self) -> Take {
        match self {
            Met::Leased(claim, deferred) => Take::Claimed(Some(claim), deferred),
            Met::OnlyUndecodable(_, deferred) => Take::Claimed(None, deferred),
            Met::Held(until) => Take::Held(until),
        }
    }
}

/// Claims ready tasks of the registration's kind, unless it is paused
/// (re-read first when the view is due, or always with `fresh`) or its
/// rate limit is spent; see [`crate::manager::RateLimit`].
async fn claim(
    inner: &Arc<Inner>,
    registration: &Registration,
    mode: ClaimMode,
    fresh: bool,
) -> Result<Met, Error> {
    inner.refresh_paused(fresh).await;
    if inner.paused.is_paused(&registration.kind) {
        return Ok(Met::Held(None));
    }
    let (mode, kind_starts) = match rate::take_kind_starts(inner, registration, mode).await? {
        rate::KindTake::Claim(mode, starts) => (mode, starts),
        rate::KindTake::Spent(until) => return Ok(Met::Held(Some(until))),
    };
    let met = claim_unlimited(inner, registration, mode).await;
    rate::settle(inner, registration, kind_starts, met).await
}

/// Claims ready tasks of the registration's kind.
async fn claim_unlimited(
    inner: &Arc<Inner>,
    registration: &Registration,
    mode: ClaimMode,
) -> Result<Met, Error> {
    let claimed_at = inner.now();
    let grant = LeaseGrant::new(claimed_at, registration.options.lease_duration);
    let request = ClaimRequest {
        env: inner.env.clone(),
        kind: registration.kind.clone(),
        now: claimed_at,
        grant,
        mode,
        order: registration.next_claim_order(),
    };
    let span = tracing::debug_span!(
        "oncetask.claim",
        env = %inner.env,
        kind = %registration.kind,
        claimed = tracing::field::Empty,
    );
    let claimed = inner.store.claim(&request).instrument(span.clone()).await?;
    span.record("claimed", claimed.tasks.len());
    metrics::claimed(&inner.env, &registration.kind, &claimed.tasks, claimed_at);
    let mut first_met = Vec::new();
    for bad in &claimed.undecodable {
        let first_time = inner
            .reported_undecodable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(bad.id.clone());
        if first_time {
            tracing::error!(task_id = %bad.id, kind = %registration.kind, reason = %bad.reason,
                "skipping a task that cannot be decoded");
            first_met.push(bad.clone());
        }
    }
    if claimed.tasks.is_empty() {
        return Ok(Met::OnlyUndecodable(first_met, 0));
    }
    Ok(Met::Leased(
        Claim {
            token: request.grant.token,
            claimed_at,
            tasks: claimed.tasks,
            undecodable: first_met,
            waited: false,
        },
        0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EIGHT_SLOTS: Holding = Holding {
        slots: 8,
        free: 0,
        ahead: 16,
        waiting: 0,
        asked: 0,
        drained: 0,
    };

    #[test]
    fn without_a_drain_estimate_the_room_is_free_slots_and_claim_ahead_less_what_is_held() {
        let idle = Holding {
            free: 8,
            ..EIGHT_SLOTS
        };
        assert_eq!(task_room(idle), 24);
        let full = Holding {
            waiting: 16,
            ..EIGHT_SLOTS
        };
        assert_eq!(task_room(full), 0);
        let half = Holding {
            waiting: 9,
            ..EIGHT_SLOTS
        };
        assert_eq!(
            task_room(half),
            0,
            "room for less than half the claim-ahead"
        );
        let starving = Holding {
            free: 1,
            ahead: 0,
            ..EIGHT_SLOTS
        };
        assert_eq!(task_room(starving), 1, "a free slot is always claimed for");
    }

    #[test]
    fn what_the_slots_finish_during_the_claim_is_asked_for_again() {
        let busy = Holding {
            waiting: 16,
            drained: 1_000,
            ..EIGHT_SLOTS
        };
        assert_eq!(task_room(busy), 24, "every slot and the claim-ahead");
        let partly = Holding {
            waiting: 16,
            drained: 10,
            ..EIGHT_SLOTS
        };
        assert_eq!(task_room(partly), 10, "6 still waiting, no slot freed");
        let none_ahead = Holding {
            free: 2,
            ahead: 0,
            drained: 1_000,
            ..EIGHT_SLOTS
        };
        assert_eq!(task_room(none_ahead), 2, "only the free slots");
    }

    #[test]
    fn a_wrong_drain_estimate_holds_at_most_twice_the_slots_and_claim_ahead() {
        // Nothing runs, but the estimate says everything drains: claim
        // whenever there is room and keep every task.
        let mut held = Holding {
            drained: usize::MAX,
            ..EIGHT_SLOTS
        };
        for _ in 0..100 {
            held.waiting += task_room(held);
        }
        assert!(held.waiting > 24, "the estimate is used");
        assert!(held.waiting <= 2 * (8 + 16), "held {}", held.waiting);
    }
}

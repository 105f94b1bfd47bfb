//! A claim under rate limits ([`crate::manager::RateLimit`]): the kind's
//! starts are taken from the store before the claim, which asks for no
//! more tasks than were granted; unused starts go back after it. Per
//! resource key, starts are taken after the claim, for the keys it met,
//! and a task over its key's limit is handed back unstarted (its attempt
//! not counted), waiting for the key's next window.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::dispatch::Met;
use crate::error::Error;
use crate::lifecycle;
use crate::manager::apply::apply_many;
use crate::manager::rate_limit::RateLimit;
use crate::manager::{Inner, Registration};
use crate::store::{Change, ClaimMode, StartsRequest};
use crate::task::Task;

/// The kind's starts taken for one claim: the request (to give unused
/// starts back to its window) and how many it granted.
pub(super) type KindStarts = Option<(StartsRequest, u32)>;

/// What a claim may take under the kind's rate limit.
pub(super) enum KindTake {
    /// Claim in this mode (shrunk to the starts granted).
    Claim(ClaimMode, KindStarts),
    /// The window is spent until then.
    Spent(DateTime<Utc>),
}

/// Takes the kind's starts for a claim of `mode`: the mode shrunk to what
/// was granted, or until when the window is spent.
pub(super) async fn take_kind_starts(
    inner: &Inner,
    registration: &Registration,
    mode: ClaimMode,
) -> Result<KindTake, Error> {
    let Some(limit) = registration.options.rate_limit else {
        return Ok(KindTake::Claim(mode, None));
    };
    let now = inner.now();
    if let Some(until) = registration.spent.until(now) {
        return Ok(KindTake::Spent(until));
    }
    let want = match mode {
        ClaimMode::Single { limit } => limit,
        ClaimMode::ResourceGroup { max_group } => max_group,
    };
    let want = u32::try_from(want).unwrap_or(u32::MAX);
    if want == 0 {
        return Ok(KindTake::Claim(mode, None));
    }
    let request = limit.request(&inner.env, &registration.kind, None, now, want);
    let granted = inner
        .store
        .take_starts(std::slice::from_ref(&request))
        .await?
        .first()
        .copied()
        .unwrap_or(0);
    if granted == 0 {
        // Nothing left in this window: ask again when it ends.
        registration.spent.set(request.window_end());
        return Ok(KindTake::Spent(request.window_end()));
    }
    let granted_tasks = usize::try_from(granted).unwrap_or(usize::MAX);
    let mode = match mode {
        ClaimMode::Single { .. } => ClaimMode::Single {
            limit: granted_tasks,
        },
        ClaimMode::ResourceGroup { .. } => ClaimMode::ResourceGroup {
            max_group: granted_tasks,
        },
    };
    Ok(KindTake::Claim(mode, Some((request, granted))))
}

/// After the claim: applies the per-key limits and gives the kind's unused
/// starts back.
pub(super) async fn settle(
    inner: &Arc<Inner>,
    registration: &Registration,
    kind_starts: KindStarts,
    met: Result<Met, Error>,
) -> Result<Met, Error> {
    let met = match (met, registration.options.key_rate_limit) {
        (Ok(met), Some(limit)) => defer_over_key_limits(inner, registration, limit, met).await,
        (met, _) => met,
    };
    if let Some((mut request, granted)) = kind_starts {
        let used = match &met {
            Ok(Met::Leased(claim, _)) => u32::try_from(claim.tasks.len()).unwrap_or(u32::MAX),
            _ => 0,
        };
        request.count = granted.saturating_sub(used);
        if request.count > 0
            && let Err(e) = inner.store.return_starts(&[request]).await
        {
            // Unused starts stay counted: the window runs short, never over.
            tracing::warn!(kind = %registration.kind, error = %e, "unused starts not given back");
        }
    }
    met
}

/// Takes a start per claimed task from its resource key's limiter; the
/// tasks over a key's limit are handed back to wait for its next window.
async fn defer_over_key_limits(
    inner: &Inner,
    registration: &Registration,
    limit: RateLimit,
    met: Met,
) -> Result<Met, Error> {
    let Met::Leased(mut claim, already) = met else {
        return Ok(met);
    };
    let now = inner.now();
    // Keys in the order the claim met them, with their task counts.
    let mut keys: Vec<(&str, u32)> = Vec::new();
    for task in &claim.tasks {
        if let Some(key) = task.resource_key.as_deref() {
            match keys.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1,
                None => keys.push((key, 1)),
            }
        }
    }
    if keys.is_empty() {
        return Ok(Met::Leased(claim, already));
    }
    let requests: Vec<StartsRequest> = keys
        .iter()
        .map(|(key, n)| limit.request(&inner.env, &registration.kind, Some(key), now, *n))
        .collect();
    let granted = match inner.store.take_starts(&requests).await {
        Ok(granted) if granted.len() == requests.len() => granted,
        Ok(_) => vec![0; requests.len()],
        Err(e) => {
            // No start could be counted: none may run. Hand them all back.
            hand_back(inner, &claim.token, std::mem::take(&mut claim.tasks), None).await;
            return Err(e.into());
        }
    };
    let mut left: HashMap<String, (u32, DateTime<Utc>)> = requests
        .iter()
        .zip(granted)
        .filter_map(|(r, g)| Some((r.resource_key.clone()?, (g, r.window_end()))))
        .collect();
    let mut deferred: Vec<(Task, DateTime<Utc>)> = Vec::new();
    let mut kept = Vec::with_capacity(claim.tasks.len());
    for task in std::mem::take(&mut claim.tasks) {
        match task.resource_key.as_ref().and_then(|k| left.get_mut(k)) {
            Some((0, until)) => deferred.push((task, *until)),
            Some((n, _)) => {
                *n -= 1;
                kept.push(task);
            }
            None => kept.push(task),
        }
    }
    claim.tasks = kept;
    let count = deferred.len();
    let until = deferred.iter().map(|(_, u)| *u).max();
    hand_back(
        inner,
        &claim.token,
        deferred.into_iter().map(|(t, _)| t).collect(),
        until,
    )
    .await;
    let deferred = already + count;
    if claim.tasks.is_empty() {
        return Ok(Met::OnlyUndecodable(claim.undecodable, deferred));
    }
    Ok(Met::Leased(claim, deferred))
}

/// Hands claimed tasks back unstarted, their attempts not counted: to
/// wait until `until` (a rate limit's next window), or ready at once.
async fn hand_back(
    inner: &Inner,
    token: &crate::task::LeaseToken,
    tasks: Vec<Task>,
    until: Option<DateTime<Utc>>,
) {
    if tasks.is_empty() {
        return;
    }
    let results = apply_many(
        inner.store.as_ref(),
        tasks,
        Change::Snooze,
        |task| match until {
            Some(until) => lifecycle::defer(task, token, until),
            None => lifecycle::unclaim(task, token),
        },
    )
    .await;
    for result in results {
        if let crate::manager::apply::Applied::Failed(e) = result {
            // Its lease ends on its own; the task is not lost.
            tracing::warn!(error = %e, "a task over its resource key's rate limit was not handed back");
        }
    }
}

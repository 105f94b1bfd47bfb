//! What the store keeps beside the tasks: paused kinds and rate limiter
//! windows. Under a lock of their own: claims never wait on them.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use oncetask_core::store::StartsRequest;

/// A limiter: env, kind and resource key (none for the kind's own).
type LimiterKey = (String, String, Option<String>);

#[derive(Debug, Default)]
pub(crate) struct Controls {
    /// Paused `(env, kind)` pairs.
    paused: BTreeSet<(String, String)>,
    /// Per limiter, its current window's start and the starts taken in it.
    limiters: HashMap<LimiterKey, (DateTime<Utc>, u32)>,
}

impl Controls {
    /// Pauses or resumes; whether that changed anything.
    pub(crate) fn set_paused(&mut self, env: &str, kind: &str, paused: bool) -> bool {
        let key = (env.to_owned(), kind.to_owned());
        if paused {
            self.paused.insert(key)
        } else {
            self.paused.remove(&key)
        }
    }

    /// The paused kinds of `env`, sorted.
    pub(crate) fn paused_kinds(&self, env: &str) -> Vec<String> {
        self.paused
            .iter()
            .filter(|(e, _)| e == env)
            .map(|(_, kind)| kind.clone())
            .collect()
    }

    /// Takes starts by [`StartsRequest::grant`].
    pub(crate) fn take(&mut self, request: &StartsRequest) -> u32 {
        let key = limiter_key(request);
        let (granted, next) = request.grant(self.limiters.get(&key).copied());
        if let Some(next) = next {
            self.limiters.insert(key, next);
        }
        self.forget_ended(request.window_start);
        granted
    }

    /// Gives starts back by [`StartsRequest::give_back`].
    pub(crate) fn give_back(&mut self, request: &StartsRequest) {
        let key = limiter_key(request);
        if let Some(next) = request.give_back(self.limiters.get(&key).copied()) {
            self.limiters.insert(key, next);
        }
    }

    /// Drops limiters whose window started more than a day before `now`,
    /// so per-key limiters do not pile up (a day is longer than any window
    /// worth keeping; an older window is "none" under the grant rule anyway).
    fn forget_ended(&mut self, now: DateTime<Utc>) {
        const KEEP: usize = 10_000;
        if self.limiters.len() > KEEP {
            let horizon = now - chrono::TimeDelta::days(1);
            self.limiters.retain(|_, (start, _)| *start >= horizon);
        }
    }
}

fn limiter_key(request: &StartsRequest) -> LimiterKey {
    (
        request.env.clone(),
        request.kind.clone(),
        request.resource_key.clone(),
    )
}

//! Claims: the ready window, resource-key lock documents, and leases
//! written with update-time preconditions in one commit.

use super::keys::{self, Kept};
use super::*;
use crate::document::{LEASE_FIELDS, due_bound, lease_fields, parse_time};
use oncetask_core::store::{ClaimOrder, ClaimTies};

/// How often a single-task claim that lost some leases to another claim
/// reads again for the slots it lost.
const TOP_UPS: usize = 3;

impl FirestoreStore {
    /// One claim attempt; `Ok(None)` when it lost a race (a precondition
    /// failed or Firestore aborted the commit) and should be retried.
    ///
    /// Candidates come from the ready query: a first page of `limit`
    /// documents (of the priority window, for a priority claim of a kind
    /// known to hold prioritized tasks: see [`crate::priority`]; each page
    /// is then ranked by priority), then, only while busy keys or
    /// undecodable documents keep the claim short of its limit, pages of
    /// what it still lacks, each after the last document read (pages are
    /// smaller while the kind's pages lately held runs of one key's
    /// backlog, see [`keys::KeyBook::page_window`]). Every page leaves out
    /// (`not-in`) up to 10 keys whose tasks the claim cannot take: the keys
    /// it met, the last read first, then those the store knows are busy. Each
    /// lease write carries an `updateTime` precondition, so a task another
    /// claimer took meanwhile fails the commit instead of being leased
    /// twice; a key's lock and leases are one atomic commit.
    ///
    /// A claim reads `limit` documents from the head of the claim order.
    /// After a lost race (`spread`, see [`SPREAD_CLAIMS`]) it starts at a
    /// random one of them (of the first `limit` in ranked order, when it
    /// read the priority window), so concurrent claimers rarely pick the
    /// same document first.
    ///
    /// While claims of the kind meet other processes' claims, each waits a
    /// random moment first ([`keys::Pace`]), and a single-task claim that
    /// lost some leases but won others reads again for the slots it lost
    /// (at most [`TOP_UPS`] times): returned short, the caller would look up
    /// the next due time (reads) before claiming them anyway.
    pub(super) async fn try_claim(
        &self,
        request: &ClaimRequest,
        spread: bool,
        undecodable: &mut Vec<Undecodable>,
    ) -> Result<Option<Vec<Task>>, StoreError> {
        let (mut taken, mut met) = match self.paced_attempt(request, spread, undecodable).await? {
            (Some(tasks), met) => (tasks, met),
            (None, _) => return Ok(None),
        };
        let ClaimMode::Single { limit } = request.mode else {
            return Ok(Some(taken));
        };
        let mut top_ups = 0;
        while met && !taken.is_empty() && taken.len() < limit && top_ups < TOP_UPS {
            top_ups += 1;
            let mut rest = request.clone();
            rest.mode = ClaimMode::Single {
                limit: limit - taken.len(),
            };
            let (more, again) = self.paced_attempt(&rest, true, undecodable).await?;
            met = again;
            taken.extend(more.unwrap_or_default());
        }
        Ok(Some(taken))
    }

    /// One attempt, after the wait the kind's [`keys::Pace`] asks for; also
    /// whether it met another claim (lost a lease or its commit).
    async fn paced_attempt(
        &self,
        request: &ClaimRequest,
        spread: bool,
        undecodable: &mut Vec<Undecodable>,
    ) -> Result<(Option<Vec<Task>>, bool), StoreError> {
        let window = self.keys.pace(&request.env, &request.kind).window();
        if !window.is_zero() {
            let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
            tokio::time::sleep(Duration::from_nanos(random_below_u64(nanos))).await;
        }
        let started = std::time::Instant::now();
        let attempt = self.attempt(request, spread, undecodable).await?;
        self.keys
            .paced(&request.env, &request.kind, started.elapsed(), attempt.1);
        Ok(attempt)
    }

    /// One claim attempt (see [`Self::try_claim`]): the leased tasks
    /// (`None`: every lease lost a race), and whether any lease was lost.
    async fn attempt(
        &self,
        request: &ClaimRequest,
        spread: bool,
        undecodable: &mut Vec<Undecodable>,
    ) -> Result<(Option<Vec<Task>>, bool), StoreError> {
        let now = request.now;
        // The query takes what may be due by the end of this second (waits
        // are stored rounded up, Go writes whole seconds); the exact check
        // below leaves out what is not due yet.
        let now_s = due_bound(now);
        // Each task taken may add a key-lock write: keep the commit under
        // Firestore's write limit.
        let (limit, group) = match request.mode {
            ClaimMode::Single { limit } => (limit.min(MAX_WRITES / 2), None),
            ClaimMode::ResourceGroup { max_group } => (1, Some(max_group.min(MAX_WRITES - 1))),
        };
        if limit == 0 || group == Some(0) {
            return Ok((Some(Vec::new()), false));
        }
        // Keys whose tasks this claim can take no more of: busy (`true`),
        // or taken by this claim.
        let mut keys_seen: HashMap<String, bool> = HashMap::new();
        let mut taken: Vec<Task> = Vec::new();
        let mut writes: Vec<Write> = Vec::new();
        let mut drained: HashMap<String, Kept> = HashMap::new();
        // Keys known busy (held here or elsewhere): pages leave their tasks
        // out (`not-in`) instead of reading them.
        let busy = self
            .keys
            .known_busy(&request.env, &request.kind, now, usize::MAX);
        for key in &busy {
            keys_seen.insert(key.clone(), true);
        }
        // Keys of the documents read so far, the last read first.
        let mut recent: Vec<String> = Vec::new();
        // Later pages go on in claim order after the last document read:
        // every document before it was read, or belongs to a key left out.
        let mut cursor: Option<Cursor> = None;
        // A priority claim's first page reads the priority window while the
        // kind is known to hold prioritized tasks (see `crate::priority`).
        let ranked = request.order == ClaimOrder::Priority;
        let wide = if ranked { self.priority_window } else { 0 };
        for page in 0..MAX_PAGES {
            if taken.len() >= limit {
                break;
            }
            let excluded = excluded_keys(&recent, &busy, &keys_seen);
            // A page reads what the claim still lacks, fewer while this
            // kind's pages lately held runs of one key's backlog (a claim
            // takes one task of a key): each document read is billed.
            let narrow = self
                .keys
                .page_window(&request.env, &request.kind, limit - taken.len());
            let first_wide = page == 0 && wide > narrow;
            let mut window = if first_wide && self.priorities.known(&request.env, &request.kind) {
                wide
            } else {
                narrow
            };
            let mut docs = self
                .ready_page(request, &now_s, &excluded, cursor.take(), window)
                .await?;
            if first_wide && window < wide && docs.len() >= window && shows_priority(request, &docs)
            {
                // A prioritized task at the head of a kind not known to
                // hold any: read on to the window before ranking.
                let after = docs.last().and_then(|last| ready_cursor(&last.doc));
                if after.is_some() {
                    let more = self
                        .ready_page(request, &now_s, &excluded, after, wide - docs.len())
                        .await?;
                    docs.extend(more);
                    window = wide;
                }
            }
            if shows_priority(request, &docs) {
                self.priorities.seen(&request.env, &request.kind);
            }
            let full = docs.len() >= window;
            cursor = docs.last().and_then(|last| ready_cursor(&last.doc));
            let mut page_keys: HashSet<&str> = HashSet::new();
            let fresh = docs
                .iter()
                .filter(|stored| match &stored.task {
                    Ok(t) => match &t.resource_key {
                        None => true,
                        Some(key) => !keys_seen.contains_key(key) && page_keys.insert(key),
                    },
                    Err(_) => false,
                })
                .count();
            self.keys
                .page_read(&request.env, &request.kind, docs.len(), fresh);
            let mut candidates: Vec<(Task, Stored)> = Vec::new();
            for stored in docs {
                match &stored.task {
                    Ok(t) => {
                        if let Some(key) = &t.resource_key {
                            recent.retain(|k| k != key);
                            recent.insert(0, key.clone());
                        }
                        if t.is_ready_at(now) && t.env == request.env && t.kind == request.kind {
                            candidates.push((t.clone(), stored));
                        }
                    }
                    Err(reason) => {
                        if !undecodable.iter().any(|u| u.id == stored.id) {
                            undecodable.push(Undecodable {
                                id: stored.id.clone(),
                                reason: reason.clone(),
                            });
                        }
                    }
                }
            }
            // Waits are stored rounded up to the second: order the page
            // by the exact times (ties as the query orders them).
            candidates.sort_by(|(a, _), (b, _)| ClaimTies::ResourceKeyThenId.order(a, b));
            if ranked {
                crate::priority::rank(&mut candidates, |(t, _)| t.priority);
            }
            // Spread over the head the claim would have read without the
            // window (all of a page without one), so a wide window keeps
            // its ranking.
            let head = candidates.len().min(narrow);
            if spread && page == 0 && head > 1 {
                let start = random_below(head);
                candidates[..head].rotate_left(start);
            }
            let (more_taken, more_writes) = self
                .select(
                    request,
                    limit - taken.len(),
                    group,
                    candidates,
                    &mut keys_seen,
                    &mut drained,
                )
                .await?;
            taken.extend(more_taken);
            writes.extend(more_writes);
            if taken.len() >= limit || !full || cursor.is_none() {
                break;
            }
        }
        if writes.is_empty() {
            return Ok((Some(taken), false));
        }
        // The writes must not land after the lease they write has ended.
        // Nor a drained lease after the first half of its hold's margin.
        let limit = drained
            .values()
            .map(|kept| kept.until - keys::DRAIN_MARGIN / 2)
            .fold(request.grant.leased_until, DateTime::min);
        let limit = (limit - now).to_std().unwrap_or(Duration::ZERO);
        // Leases with key locks: one atomic commit per key (its lock and
        // its leases), so a claim that meets another on one key keeps the
        // keys it won; leases without a lock stand alone, in one BatchWrite.
        // The claim returns its tasks in claim order, whatever call leased them.
        let order: HashMap<String, usize> = taken
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        let (locked, loose) = self.split_by_key(taken, writes);
        let loose = async {
            if loose.0.is_empty() {
                Ok((None, false))
            } else {
                self.lease_each(loose.0, loose.1, limit).await
            }
        };
        let locked = futures::future::join_all(
            locked
                .into_iter()
                .map(|(tasks, writes)| self.commit_keys(tasks, writes, limit)),
        );
        let (loose, locked) = futures::join!(loose, locked);
        let mut leased: Vec<Task> = Vec::new();
        let mut lost = false;
        let mut failure = None;
        let outcomes = std::iter::once(loose).chain(locked.into_iter().map(|r| {
            r.map(|tasks| {
                let met = tasks.is_none();
                if met {
                    Counters::add(&self.counters.lost_leases, 1);
                }
                (tasks, met)
            })
        }));
        for outcome in outcomes {
            match outcome {
                Ok((tasks, met)) => {
                    lost |= met;
                    leased.extend(tasks.unwrap_or_default());
                }
                Err(e) => failure = Some(e),
            }
        }
        leased.sort_by_key(|t| order.get(&t.id).copied());
        self.record_leases(request, &leased, &drained);
        match failure {
            Some(e) if leased.is_empty() => Err(e),
            Some(e) => {
                tracing::warn!(error = %e,
                    "some leases of a claim were not written; the tasks stay ready");
                Ok((Some(leased), lost))
            }
            None if leased.is_empty() => Ok((None, lost)),
            None => Ok((Some(leased), lost)),
        }
    }

    /// One page of the ready query: at most `n` documents after `cursor`
    /// (from the head without one), leaving out the keys in `excluded`.
    async fn ready_page(
        &self,
        request: &ClaimRequest,
        now_s: &str,
        excluded: &[String],
        cursor: Option<Cursor>,
        n: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let ready = ready_page_query(&self.collection, request, now_s, excluded, cursor, n);
        self.query(ready, None, |_| true).await
    }

    /// The name of the lock document of (`env`, `kind`, `key`).
    fn lock_name(&self, env: &str, kind: &str, key: &str) -> String {
        format!(
            "{}/{}-resourceKeys/{}",
            self.db.get_documents_path(),
            self.collection,
            lock_id(env, kind, key)
        )
    }

    /// The key whose lock `write` takes, if it is a lock write (see
    /// [`Self::key_lock`]); `None` for a lease write.
    fn lock_key(&self, write: &Write) -> Option<String> {
        let Some(Operation::Update(d)) = &write.operation else {
            return None;
        };
        let text = |field: &str| match d.fields.get(field) {
            Some(Value {
                value_type: Some(ValueType::StringValue(t)),
            }) => Some(t.as_str()),
            _ => None,
        };
        let (env, kind, key) = (text("env")?, text("type")?, text("resourceKey")?);
        (d.name == self.lock_name(env, kind, key)).then(|| key.to_owned())
    }

    /// Splits a claim's tasks and writes (lock writes and lease writes, the
    /// lease writes in the tasks' order) into one unit per key whose lock
    /// is written (its lock and its leases, to commit atomically), and the
    /// leases that need no lock write (keyless, or drained under a lock
    /// this store keeps).
    fn split_by_key(&self, taken: Vec<Task>, writes: Vec<Write>) -> (Vec<Unit>, Unit) {
        let mut locks: HashMap<String, Write> = HashMap::new();
        let mut leases: Vec<Write> = Vec::with_capacity(taken.len());
        for w in writes {
            match self.lock_key(&w) {
                Some(key) => {
                    locks.insert(key, w);
                }
                None => leases.push(w),
            }
        }
        let mut locked: HashMap<String, Unit> = HashMap::new();
        let mut loose = (Vec::new(), Vec::new());
        for (task, lease) in taken.into_iter().zip(leases) {
            let key = task.resource_key.clone();
            match key.and_then(|k| locks.remove(&k).map(|lock| (k, lock))) {
                Some((key, lock)) => {
                    locked.insert(key, (vec![task], vec![lock, lease]));
                }
                None => match task.resource_key.as_ref().and_then(|k| locked.get_mut(k)) {
                    // Another task of a key already locked (a group).
                    Some((tasks, writes)) => {
                        tasks.push(task);
                        writes.push(lease);
                    }
                    None => {
                        loose.0.push(task);
                        loose.1.push(lease);
                    }
                },
            }
        }
        (locked.into_values().collect(), loose)
    }

    /// Commits lock writes and lease writes atomically; the leased tasks
    /// with the revisions written, or `None` when another claim won.
    async fn commit_keys(
        &self,
        mut tasks: Vec<Task>,
        writes: Vec<Write>,
        limit: Duration,
    ) -> Result<Option<Vec<Task>>, StoreError> {
        let names: Vec<String> = writes
            .iter()
            .map(|w| match &w.operation {
                Some(Operation::Update(d)) => d.name.clone(),
                _ => String::new(),
            })
            .collect();
        match self.commit(writes, Vec::new(), limit).await {
            Ok(update_times) => {
                // Each leased task carries the revision its lease wrote, so
                // its outcome is fenced on exactly that state.
                let by_name: HashMap<String, Timestamp> = names
                    .into_iter()
                    .zip(update_times)
                    .filter_map(|(name, t)| Some((name, t?)))
                    .collect();
                for task in &mut tasks {
                    task.revision = by_name
                        .get(&self.doc_name(&task.id))
                        .map(|t| revision_of(*t, task.version));
                }
                Ok(Some(tasks))
            }
            Err(s) if lost_race(&s) => Ok(None),
            Err(s) => Err(status_error(s)),
        }
    }

    /// Writes the leases of tasks without a lock write (keyless, or drained
    /// under a lock this store keeps) in one BatchWrite,
    /// each conditional on its candidate's update time: a lease another
    /// claim took first fails alone, and the others are kept (an atomic
    /// commit would lose them all). `Ok(None)` when every lease lost a race;
    /// also whether any did.
    async fn lease_each(
        &self,
        taken: Vec<Task>,
        writes: Vec<Write>,
        limit: Duration,
    ) -> Result<(Option<Vec<Task>>, bool), StoreError> {
        let n = writes.len();
        let request = BatchWriteRequest {
            database: self.database(),
            writes,
            ..Default::default()
        };
        let limit = limit.min(self.call_timeout);
        let mut call = self.request(request);
        call.set_timeout(limit);
        let response = self
            .within("BatchWrite", limit, async {
                self.db.client().get().batch_write(call).await
            })
            .await
            .map_err(status_error)?
            .into_inner();
        let mut leased = Vec::with_capacity(n);
        let mut failure = None;
        let mut lost = false;
        for (i, mut task) in taken.into_iter().enumerate() {
            match response.status.get(i) {
                Some(s) if s.code != 0 => {
                    let status = Status::new(Code::from(s.code), s.message.clone());
                    if lost_race(&status) {
                        Counters::add(&self.counters.lost_leases, 1);
                        lost = true;
                    } else {
                        failure = Some(status);
                    }
                }
                _ => {
                    Counters::add(&self.counters.writes, 1);
                    let update_time = response.write_results.get(i).and_then(|r| r.update_time);
                    task.revision = update_time.map(|t| revision_of(t, task.version));
                    leased.push(task);
                }
            }
        }
        match failure {
            // Nothing leased and a real failure: report it.
            Some(status) if leased.is_empty() => Err(status_error(status)),
            Some(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(),
                    "some leases of a claim were not written; the tasks stay ready");
                Ok((Some(leased), lost))
            }
            None if leased.is_empty() => Ok((None, lost)),
            None => Ok((Some(leased), lost)),
        }
    }

    /// Picks the tasks to lease in candidate order and builds their writes:
    /// one lease write each, plus one key-lock write per resource key taken,
    /// except for keys drained under a lock this store keeps (`drained`,
    /// see [`keys`](super::keys)).
    pub(super) async fn select(
        &self,
        request: &ClaimRequest,
        limit: usize,
        group: Option<usize>,
        candidates: Vec<(Task, Stored)>,
        keys_seen: &mut HashMap<String, bool>,
        drained: &mut HashMap<String, Kept>,
    ) -> Result<(Vec<Task>, Vec<Write>), StoreError> {
        let (env, kind, now) = (&request.env, &request.kind, request.now);
        let mut lock_writes: Vec<Write> = Vec::new();
        let mut picked: Vec<(Task, Option<Timestamp>)> = Vec::new();
        for (task, stored) in candidates {
            if picked.len() >= limit {
                break;
            }
            let Some(key) = &task.resource_key else {
                picked.push((task, stored.update_time));
                continue;
            };
            if keys_seen.contains_key(key) {
                continue;
            }
            // Held by this store, or by another as last seen: busy, no
            // read needed.
            if self.keys.busy(env, kind, key, now) {
                keys_seen.insert(key.clone(), true);
                continue;
            }
            if let Some(kept) = self.keys.drainable(env, kind, key, now) {
                // Freed under a lock this store keeps: no other claim takes
                // the key before the hold ends. No read, no lock write.
                drained.insert(key.clone(), kept);
            } else {
                // Read the key's lock before its tasks: a claim that
                // committed the lock we read also committed its leases, so
                // the live-lease query after it sees them. At most one
                // document is read to tell whether the key is busy, however
                // long the key's backlog.
                let lock = self.key_lock(request, key).await?;
                let mine = lock.holder.as_deref() == Some(self.keys.holder());
                if let Some(until) = lock.held_until.filter(|u| *u > now && !mine) {
                    // Another process keeps the key (and drains it).
                    self.keys.busy_elsewhere(env, kind, key, until, now);
                    keys_seen.insert(key.clone(), true);
                    continue;
                }
                // A lock that still names a lease this store wrote and saw
                // end: no claim took the key since, so no lease on it is
                // live (see `keys`). Otherwise ask.
                let live = if self.keys.freed_with(env, kind, key, lock.token.as_deref()) {
                    None
                } else {
                    self.live_lease_end(request, key).await?
                };
                if let Some(end) = live {
                    let until = end.min(now + keys::BUSY_MEMORY);
                    self.keys.busy_elsewhere(env, kind, key, until, now);
                    keys_seen.insert(key.clone(), true);
                    continue;
                }
                lock_writes.push(lock.write);
            }
            keys_seen.insert(key.clone(), false);
            if let Some(max_group) = group {
                picked = self.key_ready(request, key, max_group).await?;
                break;
            }
            // The candidate as the ready query read it: its lease write
            // is conditional on that update time.
            picked.push((task, stored.update_time));
        }
        self.lease_writes(request, picked, lock_writes)
    }

    /// Until when a lock written by this claim keeps its key for this
    /// store: [`keys::LOCK_HOLD`], at most the claim's lease.
    fn kept_until(request: &ClaimRequest) -> DateTime<Utc> {
        request
            .grant
            .leased_until
            .min(request.now + keys::LOCK_HOLD)
    }

    /// Notes in the key book the keyed tasks of a committed claim.
    fn record_leases(
        &self,
        request: &ClaimRequest,
        tasks: &[Task],
        drained: &HashMap<String, Kept>,
    ) {
        let mut by_key: HashMap<&str, Vec<Task>> = HashMap::new();
        for task in tasks {
            if let Some(key) = task.resource_key.as_deref() {
                by_key.entry(key).or_default().push(task.clone());
            }
        }
        for (key, leased) in by_key {
            match drained.get(key) {
                Some(kept) => self.keys.leased(key, &kept.token, &leased, None),
                None => self.keys.leased(
                    key,
                    request.grant.token.as_str(),
                    &leased,
                    Some(Self::kept_until(request)),
                ),
            }
        }
    }

    /// The lease writes of `picked` (each conditional on the update time it
    /// was read at) and the lock writes of the keys among them.
    fn lease_writes(
        &self,
        request: &ClaimRequest,
        picked: Vec<(Task, Option<Timestamp>)>,
        lock_writes: Vec<Write>,
    ) -> Result<(Vec<Task>, Vec<Write>), StoreError> {
        if picked.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut taken = Vec::with_capacity(picked.len());
        let mut writes = Vec::with_capacity(picked.len() + lock_writes.len());
        // Only locks of keys whose tasks are taken.
        let taken_keys: HashSet<&str> = picked
            .iter()
            .filter_map(|(t, _)| t.resource_key.as_deref())
            .collect();
        for w in lock_writes {
            let key = self.lock_key(&w);
            if key.as_deref().is_some_and(|k| taken_keys.contains(k)) {
                writes.push(w.with_lease(
                    &request.grant,
                    self.keys.holder(),
                    Self::kept_until(request),
                ));
            }
        }
        for (task, update_time) in picked {
            let next = lifecycle::claim(&task, &request.grant);
            // Only the lease fields: the payload is neither sent nor rewritten.
            let fields = lease_fields(&next).map_err(|e| StoreError::Unencodable {
                id: next.id.clone(),
                reason: e.to_string(),
            })?;
            let mut write = self.masked_write(&next.id, fields, &LEASE_FIELDS);
            write.current_document = Some(Precondition {
                condition_type: Some(match update_time {
                    Some(t) => ConditionType::UpdateTime(t),
                    None => ConditionType::Exists(true),
                }),
            });
            writes.push(write);
            taken.push(next);
        }
        Ok((taken, writes))
    }

    /// When the live lease of a not-done task of `key` (same env and kind)
    /// ends, if one is live: one query with limit 1 (one read).
    pub(super) async fn live_lease_end(
        &self,
        request: &ClaimRequest,
        key: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let now = request.now;
        let mut q = queries::key_live_query(
            &self.collection,
            &request.env,
            &request.kind,
            key,
            &format_time(now),
        );
        q.limit = Some(1);
        let found = self.query(q, None, |_| true).await?;
        // A Go whole-second lease compares as the end of its second; the
        // decoded lease is exact.
        Ok(found.iter().find_map(|s| match &s.task {
            Ok(t) if t.is_leased_at(now) => t.leased_until,
            _ => None,
        }))
    }

    /// The ready tasks of `key` (same env and kind) in group order, at most
    /// `max_group`, with their update times.
    pub(super) async fn key_ready(
        &self,
        request: &ClaimRequest,
        key: &str,
        max_group: usize,
    ) -> Result<Vec<(Task, Option<Timestamp>)>, StoreError> {
        let now = request.now;
        let mut q = queries::key_ready_query(
            &self.collection,
            &request.env,
            &request.kind,
            key,
            &due_bound(now),
        );
        q.limit = Some(i32::try_from(max_group).unwrap_or(i32::MAX));
        let mut ready: Vec<(Task, Option<Timestamp>)> = self
            .query(q, None, |_| true)
            .await?
            .into_iter()
            .filter_map(|s| s.task.ok().map(|t| (t, s.update_time)))
            .filter(|(t, _)| t.is_ready_at(now) && t.resource_key.as_deref() == Some(key))
            .collect();
        // Time strings of Go and Rust order alike to the second; the
        // decoded times order exactly.
        ready.sort_by(|(a, _), (b, _)| {
            (a.wait_until, a.created_at, &a.id).cmp(&(b.wait_until, b.created_at, &b.id))
        });
        Ok(ready)
    }

    /// The write that takes the lock document of `key`, conditioned on the
    /// lock's current update time (or on its absence), and the lease token
    /// the lock names (that of the last claim of the key).
    ///
    /// Every claim of a key rewrites its lock in the same commit as the
    /// leases, so two claims of one key that read the same lock cannot both
    /// commit. The lock lives in a separate collection
    /// (`<collection>-resourceKeys`), out of the Go package's way.
    pub(super) async fn key_lock(
        &self,
        request: &ClaimRequest,
        key: &str,
    ) -> Result<Lock, StoreError> {
        let name = self.lock_name(&request.env, &request.kind, key);
        let request_get = BatchGetDocumentsRequest {
            database: self.database(),
            documents: vec![name.clone()],
            ..Default::default()
        };
        Counters::add(&self.counters.reads, 1);
        let call = async {
            let mut stream = self
                .db
                .client()
                .get()
                .batch_get_documents(self.request(request_get))
                .await?
                .into_inner();
            let mut found = (None, None, None, None);
            while let Some(response) = stream.message().await? {
                if let Some(batch_get_documents_response::Result::Found(doc)) = response.result {
                    let text = |field: &str| match doc
                        .fields
                        .get(field)
                        .and_then(|v| v.value_type.as_ref())
                    {
                        Some(ValueType::StringValue(t)) => Some(t.clone()),
                        _ => None,
                    };
                    let held_until = text("heldUntil").and_then(|t| parse_time(&t).ok());
                    found = (
                        doc.update_time,
                        text("leaseToken"),
                        text("holder"),
                        held_until,
                    );
                }
            }
            Ok(found)
        };
        let (update_time, token, holder, held_until) = self
            .within("BatchGetDocuments", self.call_timeout, call)
            .await
            .map_err(status_error)?;
        let write = Write {
            operation: Some(Operation::Update(Document {
                name,
                fields: HashMap::from([
                    ("env".to_owned(), str_value(&request.env)),
                    ("type".to_owned(), str_value(&request.kind)),
                    ("resourceKey".to_owned(), str_value(key)),
                ]),
                ..Default::default()
            })),
            current_document: Some(Precondition {
                condition_type: Some(match update_time {
                    Some(t) => ConditionType::UpdateTime(t),
                    None => ConditionType::Exists(false),
                }),
            }),
            ..Default::default()
        };
        Ok(Lock {
            write,
            token,
            holder,
            held_until,
        })
    }
}

/// Tasks of a claim and the writes that lease them.
type Unit = (Vec<Task>, Vec<Write>);

/// A key's lock document as a claim read it.
pub(super) struct Lock {
    /// The write that takes the lock, conditional on what was read.
    write: Write,
    /// The lease token of the claim that last wrote it.
    token: Option<String>,
    /// The store that wrote it, and until when it keeps the key.
    holder: Option<String>,
    held_until: Option<DateTime<Utc>>,
}

/// The id of the lock document of (env, kind, key): the names in hex (any
/// characters are allowed in them, `/` included), or, when that would pass
/// Firestore's 1 500-byte limit on ids, a name-based UUID (v5, the same in
/// every process and version) of them. Two keys sharing a lock would only
/// be serialized together, never run at once.
fn lock_id(env: &str, kind: &str, key: &str) -> String {
    let raw = [env, kind, key].join("\u{0}");
    if raw.len() <= 700 {
        raw.bytes().map(|b| format!("{b:02x}")).collect()
    } else {
        format!(
            "uuid-{}",
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, raw.as_bytes()).simple()
        )
    }
}

/// How long a key-lock document is kept after its last lease ends. Its
/// `expireAt` field (a Firestore timestamp) is meant for a TTL policy on the
/// lock collection, which removes locks of keys no longer used; a lock
/// removed early is harmless (the next claim creates it again, and a claim
/// that read it before fails its precondition and retries).
const LOCK_TTL: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// Stamps a key-lock write with the claim's lease and the hold of the store
/// writing it (`holder` keeps the key until `held_until`).
pub(super) trait WithLease {
    fn with_lease(
        self,
        grant: &oncetask_core::lifecycle::LeaseGrant,
        holder: &str,
        held_until: DateTime<Utc>,
    ) -> Self;
}

impl WithLease for Write {
    fn with_lease(
        mut self,
        grant: &oncetask_core::lifecycle::LeaseGrant,
        holder: &str,
        held_until: DateTime<Utc>,
    ) -> Self {
        if let Some(Operation::Update(d)) = &mut self.operation {
            d.fields.insert(
                "leasedUntil".to_owned(),
                str_value(&format_time(grant.leased_until)),
            );
            d.fields.insert("holder".to_owned(), str_value(holder));
            d.fields
                .insert("heldUntil".to_owned(), str_value(&format_time(held_until)));
            d.fields
                .insert("leaseToken".to_owned(), str_value(grant.token.as_str()));
            let expire = grant.leased_until + LOCK_TTL;
            d.fields.insert(
                "expireAt".to_owned(),
                Value {
                    value_type: Some(ValueType::TimestampValue(Timestamp {
                        seconds: expire.timestamp(),
                        nanos: i32::try_from(expire.timestamp_subsec_nanos()).unwrap_or(0),
                    })),
                },
            );
        }
        self
    }
}

/// A write that lost to a concurrent one: its precondition failed (an
/// `exists = false` one reports ALREADY_EXISTS), or Firestore aborted it on
/// a lock conflict.
pub(super) fn lost_race(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists
    )
}

/// The keys a page leaves out (at most [`queries::MAX_EXCLUDED_KEYS`], a
/// `not-in`'s limit): first the keys this claim met (busy, or taken by it),
/// the last read first, because their backlogs may go on past the page's
/// cursor; then the keys known busy before the claim read anything.
fn excluded_keys(
    recent: &[String],
    busy: &[String],
    keys_seen: &HashMap<String, bool>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(queries::MAX_EXCLUDED_KEYS);
    for key in recent
        .iter()
        .filter(|k| keys_seen.contains_key(k.as_str()))
        .chain(busy)
    {
        if out.len() >= queries::MAX_EXCLUDED_KEYS {
            break;
        }
        if !out.contains(key) {
            out.push(key.clone());
        }
    }
    out
}

/// A cursor just after `doc` in the ready query's order (`leasedUntil`,
/// `waitUntil`, `createdAt`, `resourceKey`, `__name__`), from its stored
/// values; `None` if one is missing.
pub(super) fn ready_cursor(doc: &Document) -> Option<Cursor> {
    let mut values = Vec::with_capacity(5);
    for field in ["leasedUntil", "waitUntil", "createdAt", "resourceKey"] {
        values.push(doc.fields.get(field)?.clone());
    }
    values.push(Value {
        value_type: Some(ValueType::ReferenceValue(doc.name.clone())),
    });
    Some(Cursor {
        values,
        before: false,
    })
}

/// The query of one ready page of a claim (see
/// [`FirestoreStore::ready_page`]). It never names `priority`, whatever the
/// claim's order: Firestore would leave out every document without the
/// field (see [`crate::priority`]).
fn ready_page_query(
    collection: &str,
    request: &ClaimRequest,
    now_s: &str,
    excluded: &[String],
    cursor: Option<Cursor>,
    n: usize,
) -> StructuredQuery {
    let mut ready = if excluded.is_empty() {
        queries::ready_query(collection, &request.env, &request.kind, now_s)
    } else {
        queries::ready_query_excluding(collection, &request.env, &request.kind, now_s, excluded)
    };
    ready.start_at = cursor;
    ready.limit = Some(i32::try_from(n).unwrap_or(i32::MAX));
    ready
}

/// Whether `docs` hold a task of the claim's env and kind with a priority
/// other than 0 (read, so not done).
fn shows_priority(request: &ClaimRequest, docs: &[Stored]) -> bool {
    docs.iter().any(|s| {
        s.task
            .as_ref()
            .is_ok_and(|t| t.priority != 0 && t.env == request.env && t.kind == request.kind)
    })
}

/// A random number below `n` (0 when `n` is 0).
fn random_below_u64(n: u64) -> u64 {
    let r = uuid::Uuid::new_v4().as_u128();
    u64::try_from(r % u128::from(n.max(1))).unwrap_or(0)
}

/// A random number below `n` (`n > 0`).
pub(super) fn random_below(n: usize) -> usize {
    let r = uuid::Uuid::new_v4().as_u128();
    usize::try_from(r % (n.max(1) as u128)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oncetask_core::lifecycle::LeaseGrant;

    /// Every query a claim sends, in either order, with a cursor taken from
    /// a prioritized document: none names `priority` (a query on it would
    /// leave out every Go document and every task at priority 0).
    #[test]
    fn no_claim_query_mentions_priority() {
        let now = chrono::Utc::now();
        let mut task = Task::new("t", "k", "E", now);
        task.priority = 7;
        task.resource_key = Some("r".to_owned());
        let doc = Document {
            name: "projects/p/databases/(default)/documents/onceTasks/t".to_owned(),
            fields: crate::encode_task(&task).expect("encodes"),
            ..Default::default()
        };
        assert!(doc.fields.contains_key(crate::document::PRIORITY));
        let cursor = ready_cursor(&doc).expect("a cursor");
        let now_s = due_bound(now);
        for order in [ClaimOrder::Priority, ClaimOrder::Oldest] {
            let request = ClaimRequest {
                env: "E".into(),
                kind: "k".into(),
                now,
                grant: LeaseGrant::new(now, Duration::from_secs(60)),
                mode: ClaimMode::Single { limit: 1 },
                order,
            };
            let excluded = ["r".to_owned()];
            let mut sent = Vec::new();
            for excluded in [&[][..], &excluded[..]] {
                for cursor in [None, Some(cursor.clone())] {
                    for n in [1, crate::DEFAULT_PRIORITY_WINDOW] {
                        sent.push(ready_page_query(
                            DEFAULT_COLLECTION,
                            &request,
                            &now_s,
                            excluded,
                            cursor.clone(),
                            n,
                        ));
                    }
                }
            }
            let t = format_time(now);
            sent.push(queries::key_live_query(
                DEFAULT_COLLECTION,
                "E",
                "k",
                "r",
                &t,
            ));
            sent.push(queries::key_ready_query(
                DEFAULT_COLLECTION,
                "E",
                "k",
                "r",
                &now_s,
            ));
            for q in sent {
                let text = format!("{q:?}");
                assert!(!text.contains("priority"), "{order:?}: {text}");
            }
        }
    }
}

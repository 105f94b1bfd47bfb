-- oncetask on SQLite: the task table, its indexes, paused kinds and rate
-- limiters, in one migration (the PostgreSQL backend's six, folded).
--
-- Times are INTEGER microseconds since the Unix epoch (UTC): they compare
-- and sort as numbers, and NULL sorts first, as the claim order wants.
-- JSON fields are TEXT. The table is not STRICT: a value of the wrong type
-- written by another program is read back and reported as undecodable
-- instead of making the whole statement fail.
CREATE TABLE tasks (
    id                    TEXT PRIMARY KEY NOT NULL,
    kind                  TEXT NOT NULL,
    env                   TEXT NOT NULL,
    data                  TEXT NOT NULL,
    resource_key          TEXT,
    wait_until            INTEGER,
    leased_until          INTEGER,
    created_at            INTEGER NOT NULL,
    done_at               INTEGER,
    attempts              INTEGER NOT NULL,
    cancellation_attempts INTEGER NOT NULL,
    errors                TEXT NOT NULL,
    result                TEXT,
    recurrence            TEXT,
    parent_recurrence_id  TEXT,
    occurrence_timestamp  INTEGER,
    is_cancelled          INTEGER NOT NULL,
    cancelled_at          INTEGER,
    lease_token           TEXT,
    version               INTEGER NOT NULL,
    outcome               TEXT,
    snoozes               INTEGER NOT NULL DEFAULT 0,
    priority              INTEGER NOT NULL DEFAULT 0,
    max_attempts          INTEGER,
    pruned_at             INTEGER
);

-- Claims in the oldest order: not-done tasks of one env/kind in claim order.
CREATE INDEX tasks_ready_idx ON tasks
    (env, kind, leased_until, wait_until, created_at, id)
    WHERE done_at IS NULL;

-- Claims by priority: the same, highest priority first.
CREATE INDEX tasks_priority_idx ON tasks
    (env, kind, priority DESC, leased_until, wait_until, created_at, id)
    WHERE done_at IS NULL;

-- Is a resource key busy (a live lease of one of its tasks)?
CREATE INDEX tasks_key_lease_idx ON tasks (env, kind, resource_key, leased_until)
    WHERE done_at IS NULL AND resource_key IS NOT NULL;

-- A key's group, in group order.
CREATE INDEX tasks_key_group_idx ON tasks
    (env, kind, resource_key, wait_until, created_at, id)
    WHERE done_at IS NULL AND resource_key IS NOT NULL;

-- Listings: oldest first per env, and by resource key.
CREATE INDEX tasks_created_idx ON tasks (env, created_at, id);
CREATE INDEX tasks_resource_key_idx ON tasks (env, resource_key, created_at, id)
    WHERE resource_key IS NOT NULL;

-- Next due time per env/kind (Store::next_due): the expression next_due
-- orders by, repeated verbatim there so the planner can use it.
CREATE INDEX tasks_due_idx ON tasks
    (env, kind, max(coalesce(wait_until, -9223372036854775808),
                    coalesce(leased_until, -9223372036854775808)))
    WHERE done_at IS NULL;

-- Pruners (Store::find_finished): finished tasks by finish time.
CREATE INDEX tasks_finished_idx ON tasks (env, kind, done_at, id)
    WHERE done_at IS NOT NULL;

-- Paused kinds (Store::set_paused): a row per paused env/kind.
-- `paused_at` (the process clock, microseconds) is for operators only.
CREATE TABLE paused_kinds (
    env       TEXT NOT NULL,
    kind      TEXT NOT NULL,
    paused_at INTEGER NOT NULL,
    PRIMARY KEY (env, kind)
) WITHOUT ROWID;

-- Rate limiters (Store::take_starts): one row per env, kind and resource
-- key (`keyed` 0 and key '' for the kind's own limiter), holding the
-- window it last saw and the starts taken in it.
CREATE TABLE rate_limits (
    env          TEXT NOT NULL,
    kind         TEXT NOT NULL,
    keyed        INTEGER NOT NULL,
    resource_key TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_end   INTEGER NOT NULL,
    taken        INTEGER NOT NULL,
    PRIMARY KEY (env, kind, keyed, resource_key)
) WITHOUT ROWID;
CREATE INDEX rate_limits_window_end_idx ON rate_limits (window_end);

-- Retention, pause and rate limits (issue 21).
--
-- `pruned_at`: set when a pruner turned a finished task into a tombstone
-- (payload, result and errors emptied; the id still answers "already
-- exists"). No default, so adding it changes only the catalog: a big
-- table is not rewritten (the brief ACCESS EXCLUSIVE lock of the catalog
-- update still waits for statements running on the table). Rows stored
-- before read NULL: full documents.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS pruned_at timestamptz;

-- Finished tasks for pruners (Store::find_finished): per env and kind, by
-- terminal status, full documents apart from tombstones, in (done_at, id)
-- order. The status and the tombstone flag are key columns, so a page of
-- one status reads only its own entries: with completed tasks kept for
-- ever and failed ones pruned, the failed pass never walks the completed
-- ones, nor a full-document pass the tombstones. The status expression is
-- the finished branch of the status the store computes
-- (FINISHED_STATUS in lib.rs), repeated verbatim by find_finished so that
-- the planner matches it; a plan test checks that it does. Not-done tasks
-- have no entry (the partial predicate), so claims and their writes never
-- touch it; each task gets an entry when it finishes and one more if it is
-- pruned.
--
-- Building it takes a SHARE lock on the table: on a large table writes
-- wait until it is built. Create it beforehand with CREATE INDEX
-- CONCURRENTLY and the same definition to avoid that (IF NOT EXISTS then
-- skips it).
CREATE INDEX IF NOT EXISTS tasks_finished_idx ON tasks
    (env, kind,
     (CASE WHEN is_cancelled THEN 'cancelled'
           WHEN outcome = 'completed' THEN 'completed'
           WHEN outcome = 'failed' THEN 'failed'
           WHEN outcome = 'cancelled' THEN 'cancelled'
           WHEN jsonb_typeof(errors) <> 'array' THEN 'failed'
           WHEN attempts > jsonb_array_length(errors) THEN 'completed'
           ELSE 'failed' END),
     (pruned_at IS NOT NULL), done_at, id)
    WHERE done_at IS NOT NULL;

-- Paused kinds (Store::set_paused): a row per paused env/kind, removed on
-- resume. `paused_at` (the server's clock) is for operators only.
CREATE TABLE IF NOT EXISTS paused_kinds (
    env       text NOT NULL,
    kind      text NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env, kind)
);

-- Rate limiters (Store::take_starts): one row per env, kind and resource
-- key (`keyed` false and `resource_key` '' for the kind's own limiter, so
-- that a key may be any text, the empty one included), holding the window
-- it last saw and the starts taken in it. `granted` is what the last take
-- granted (the upsert returns it), `starts_limit` the limit it applied.
-- Rows whose window ended an hour ago are deleted now and then by the
-- store (`rate_limits_window_end_idx`); within a window only `taken` and
-- `granted` change, so those updates stay HOT.
CREATE TABLE IF NOT EXISTS rate_limits (
    env          text NOT NULL,
    kind         text NOT NULL,
    keyed        boolean NOT NULL,
    resource_key text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    taken        bigint NOT NULL,
    granted      bigint NOT NULL,
    starts_limit bigint NOT NULL,
    PRIMARY KEY (env, kind, keyed, resource_key)
);
CREATE INDEX IF NOT EXISTS rate_limits_window_end_idx ON rate_limits (window_end);

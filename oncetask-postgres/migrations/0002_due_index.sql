-- Next due time per env/kind (Store::next_due, run by every idle worker):
-- the expression is the one next_due orders by, so it reads one index
-- entry instead of scanning every pending row.
CREATE INDEX IF NOT EXISTS tasks_due_idx ON tasks
    (env, kind, (greatest(coalesce(wait_until, '-infinity'::timestamptz),
                          coalesce(leased_until, '-infinity'::timestamptz))))
    WHERE done_at IS NULL;

-- Leases move fewer index entries.
--
-- tasks_ready_idx and tasks_priority_idx held every not-done task with
-- leased_until as a key column, and tasks_due_idx an expression of it, so
-- each lease moved a task in all three and each completion took it out of
-- all three: ten index writes per task after its creation, against one in
-- a hand-written queue whose lease changes no indexed column.
--
-- Now the not-done tasks are split by whether they hold a lease:
-- never-leased (or released) tasks in the claim order and in the priority
-- order, without leased_until; leased tasks (live or expired, few: a live
-- lease is a running task) by leased_until. A lease takes a task out of
-- the two unleased indexes and into the leased one; a completion takes it
-- out of the leased one: five index writes per task. Store::next_due reads
-- the least wait_until from tasks_unleased_idx and the leased tasks from
-- tasks_leased_idx, so tasks_due_idx goes.
DROP INDEX IF EXISTS tasks_ready_idx;
DROP INDEX IF EXISTS tasks_priority_idx;
DROP INDEX IF EXISTS tasks_due_idx;

CREATE INDEX IF NOT EXISTS tasks_unleased_idx ON tasks (env, kind, wait_until, created_at, id)
    WHERE done_at IS NULL AND leased_until IS NULL;

CREATE INDEX IF NOT EXISTS tasks_unleased_priority_idx ON tasks
    (env, kind, priority DESC, wait_until, created_at, id)
    WHERE done_at IS NULL AND leased_until IS NULL;

CREATE INDEX IF NOT EXISTS tasks_leased_idx ON tasks (env, kind, leased_until, wait_until, created_at, id)
    WHERE done_at IS NULL AND leased_until IS NOT NULL;

-- The ready claim by priority (ClaimOrder::Priority, most claims): not-done
-- tasks of one env/kind by priority, then in claim order. A claim walks
-- the priorities present from the highest (one probe of this index each:
-- the highest priority below the last) and reads three ranges within each
-- (never leased and never waiting; never leased and waiting until now or
-- earlier; expired leases), stopping once it has enough; so tasks waiting
-- for later, which sort between a priority's ready tasks and its expired
-- leases, are never walked. The oldest order (ClaimOrder::Oldest, every
-- n-th claim) still reads tasks_ready_idx.
--
-- Priority ascending: a probe for the highest priority (below another)
-- scans backward and lands on the end of that priority's range (its
-- latest leases or waits), not on its head, where every claim leaves the
-- entries of the tasks it took, dead until vacuum, for the range scan of
-- never-leased tasks to step over anyway.
--
-- `priority >= -32768` holds for every row (a smallint); it is in the
-- predicate so that only queries stating it, the claim's walk, can use
-- this index: no other statement's plan changes because it exists.
--
-- Like the other indexes over not-done tasks, it gets an entry on each
-- create and claim (leased_until changes). Building it takes a SHARE lock
-- on the table: on a large table, writes wait until it is built.
CREATE INDEX IF NOT EXISTS tasks_priority_idx ON tasks
    (env, kind, priority, leased_until NULLS FIRST, wait_until NULLS FIRST, created_at, id)
    WHERE done_at IS NULL AND priority >= -32768;

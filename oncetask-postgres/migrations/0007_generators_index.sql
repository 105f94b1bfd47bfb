-- The recurrence generators of an env (Store::find_generators, the
-- dashboard's recurring page): few rows, so a partial index over them
-- alone, read in id order, instead of a walk over every task of the env.
-- Building it takes a SHARE lock on the table: on a large table, writes
-- wait until it is built.
CREATE INDEX IF NOT EXISTS tasks_generators_idx ON tasks (env, id)
    WHERE recurrence IS NOT NULL;

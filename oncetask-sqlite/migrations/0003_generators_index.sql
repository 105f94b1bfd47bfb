-- The recurrence generators of an env (Store::find_generators, the
-- dashboard's recurring page): few rows, so a partial index over them
-- alone, in id order, instead of a walk over every task of the env.
CREATE INDEX tasks_generators_idx ON tasks (env, id) WHERE recurrence IS NOT NULL;

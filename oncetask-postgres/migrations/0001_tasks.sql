-- oncetask task table. Runs with search_path set to the store's schema, so
-- every name here is unqualified (see PostgresStore::migrate).
CREATE TABLE tasks (
    id                    text PRIMARY KEY,
    kind                  text NOT NULL,
    env                   text NOT NULL,
    data                  jsonb NOT NULL,
    resource_key          text,
    wait_until            timestamptz,
    leased_until          timestamptz,
    created_at            timestamptz NOT NULL,
    done_at               timestamptz,
    attempts              integer NOT NULL,
    cancellation_attempts integer NOT NULL,
    errors                jsonb NOT NULL,
    result                jsonb,
    recurrence            jsonb,
    parent_recurrence_id  text,
    occurrence_timestamp  timestamptz,
    is_cancelled          boolean NOT NULL,
    cancelled_at          timestamptz,
    lease_token           text,
    version               bigint NOT NULL,
    outcome               text
);

-- The ready claim: not-done tasks of one env/kind in claim order.
CREATE INDEX tasks_ready_idx ON tasks
    (env, kind, leased_until NULLS FIRST, wait_until NULLS FIRST, created_at, id)
    WHERE done_at IS NULL;

-- Live leases per resource key (is a key busy at now?), and a key's group.
CREATE INDEX tasks_key_lease_idx ON tasks (env, kind, resource_key, leased_until)
    WHERE done_at IS NULL AND resource_key IS NOT NULL;
CREATE INDEX tasks_key_group_idx ON tasks
    (env, kind, resource_key, wait_until NULLS FIRST, created_at, id)
    WHERE done_at IS NULL AND resource_key IS NOT NULL;

-- Listings: oldest first per env, and by resource key.
CREATE INDEX tasks_created_idx ON tasks (env, created_at, id);
CREATE INDEX tasks_resource_key_idx ON tasks (env, resource_key, created_at, id)
    WHERE resource_key IS NOT NULL;

-- Resource-key claims: one row per (env, kind, resource key) whose tasks a
-- claim has leased. Every claim that leases a task with a resource key
-- locks its key's row and bumps `claims` in the statement that writes the
-- lease, so any two claims of one key meet on this row; a one-statement
-- claim also compares the row's `claims` as its snapshot saw it with the
-- newest (locked) value, which tells it whether another claim of the key
-- committed after its snapshot was taken (see the crate docs, "Claims and
-- resource-key exclusion"). Claims create the rows; a delete that leaves a
-- key without tasks removes its row. The key leads the primary key, so a
-- lookup can only be planned as a probe for its keys, never as a walk over
-- every key of an env and kind (whatever the statistics say).
CREATE TABLE task_keys (
    resource_key text NOT NULL,
    env          text NOT NULL,
    kind         text NOT NULL,
    claims       bigint NOT NULL,
    PRIMARY KEY (resource_key, env, kind)
);

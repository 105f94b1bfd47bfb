-- Three task fields: `snoozes` (times a handler snoozed the task; a swap
-- writes it, a reset clears it), `priority` (claim priority within the
-- kind, -10..=10, default 0; set at create, changed by an operator's
-- swap) and `max_attempts` (the task's own attempt limit, fixed at create;
-- NULL leaves the handler's retry policy to decide).
--
-- Adding a column with a constant default (or none) changes only the
-- catalog in PostgreSQL 11 and later: rows written before read the default
-- from it, so a big table is neither rewritten nor locked for longer than
-- the catalog update (which still takes a brief ACCESS EXCLUSIVE lock, so
-- it waits for statements running on the table). Rows stored by earlier
-- versions get 0 snoozes, priority 0 and no limit. No index on priority
-- yet: claims do not order by it.
ALTER TABLE tasks
    ADD COLUMN IF NOT EXISTS snoozes      integer  NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS priority     smallint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS max_attempts integer;

-- Change notices for other processes (Store::subscribe): every write
-- transaction that announces a change adds a row per env and kind it
-- changed, in the same transaction. A store watching the file reads the
-- rows past the last one it saw and announces those other stores wrote.
--
-- `seq` is the rowid: a new row gets the largest one plus one, and only
-- rows well behind the newest are ever deleted, so it only grows.
-- `origin` is the writing store's random id; `touching` is 1 when the
-- change may have touched a task a worker holds.
CREATE TABLE changes (
    seq      INTEGER PRIMARY KEY,
    origin   INTEGER NOT NULL,
    env      TEXT NOT NULL,
    kind     TEXT NOT NULL,
    touching INTEGER NOT NULL
);

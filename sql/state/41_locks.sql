-- Documents being written (41_locks.sql: lock_documents()).

-- Documents being written: the rows of a side or chunked target that a worker's write
-- transaction is writing, one row per (target, key), inserted and deleted again by that
-- transaction (lock_documents(), 41_locks.sql). So it never holds a committed row, and needs no
-- durability (UNLOGGED). What it is for is its primary key: a transaction that inserts a key
-- another one inserted and has not yet committed (or rolled back) waits for it, even though that
-- one deleted its row again at once. Two writers of one document are thus ordered from before
-- the stale-write check of the first until its COMMIT (sql/56_side.sql, sql/55_chunks.sql).
-- No role but this schema's owner has any right on it, so no one else can take its locks: a
-- login that reads a target's id (embeddings.targets is readable) cannot hold up a write of
-- it, as it could with advisory locks, whose keys every login shares. `key_md5`: the md5 of the
-- key's canonical text (a key of any length fits the index).
CREATE UNLOGGED TABLE IF NOT EXISTS embeddings.documents_written (
    target_id integer NOT NULL,
    key_md5   uuid NOT NULL,
    PRIMARY KEY (target_id, key_md5)
);
REVOKE ALL ON embeddings.documents_written FROM PUBLIC;


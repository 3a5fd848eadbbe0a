-- Backfills and deferred HNSW indexes (62_backfill.sql).

-- A backfill under way: where it has got to.
CREATE TABLE IF NOT EXISTS embeddings.backfills (
    target_id     integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    -- Every row with content, not only those without a vector (the model or content changed).
    every_row     boolean NOT NULL,
    -- The last row key queued or passed, in its JSON form (as messages carry keys); NULL: none yet.
    after_key     jsonb,
    scanned_rows  bigint NOT NULL DEFAULT 0,
    enqueued_keys bigint NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL DEFAULT now(),
    stepped_at    timestamptz,
    -- Where its jobs go (enqueue_keys() lanes): 'backfill', or 'change' for a model change's
    -- rows (their jobs fill the shadow column, 44_changes.sql).
    lane          text NOT NULL DEFAULT 'backfill' CHECK (lane IN ('backfill', 'change'))
);
-- embeddings.status reads its progress as its caller; not after_key, a real row key (a login
-- without grants would read a table's keys as the cursor moves). The REVOKE also takes back a
-- whole-table grant an older install made (these lines run on every migrate).
REVOKE SELECT ON embeddings.backfills FROM PUBLIC;
GRANT SELECT (target_id, every_row, scanned_rows, enqueued_keys, started_at, stepped_at, lane)
    ON embeddings.backfills TO PUBLIC;
COMMENT ON TABLE embeddings.backfills IS 'Targets whose existing rows are still being queued, and where the queuing has got to';

-- HNSW indexes deferred until their target's backfill is done.
CREATE TABLE IF NOT EXISTS embeddings.deferred_indexes (
    target_id integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    since     timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON embeddings.deferred_indexes TO PUBLIC;  -- embeddings.status reads it as its caller


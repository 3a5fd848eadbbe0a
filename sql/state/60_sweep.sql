-- Where sweep() left off (60_sweep.sql).

-- Where each target's sweep left off: a row key in its JSON form, as text. Work per run is bounded by
-- max_rows per target, so a huge table is swept a slice at a time and never stalls the job.
-- failures_after: the dead letter's id after which the next step of resolving those of deleted
-- rows starts (60_sweep.sql: resolve_gone_failures()); NULL: from the first.
CREATE TABLE IF NOT EXISTS embeddings.sweep_cursors (
    target_id integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    after_key text,
    swept_at  timestamptz NOT NULL DEFAULT now(),
    failures_after bigint
);


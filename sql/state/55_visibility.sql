-- Why jobs wait (55_visibility.sql).

-- Targets the worker cannot serve right now (model missing, dimension mismatch...), with why.
-- Written by the worker when it defers a target's jobs, removed when it writes for it again;
-- embeddings.status shows the reason while the target has pending jobs.
CREATE TABLE IF NOT EXISTS embeddings.deferrals (
    target_id   integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    reason      text NOT NULL,
    jobs        integer NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON embeddings.deferrals TO PUBLIC;
COMMENT ON TABLE embeddings.deferrals IS 'Targets whose jobs the worker defers, with the reason; shown by embeddings.status';


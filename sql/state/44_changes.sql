-- Model changes (44_changes.sql), and the provenance of stored vectors.

-- The change in progress of a target (at most one).
CREATE TABLE IF NOT EXISTS embeddings.model_changes (
    target_id     integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    model         text NOT NULL REFERENCES embeddings.models (name),
    shadow_column name NOT NULL,
    keep_old      boolean NOT NULL DEFAULT false,
    rows_total    bigint,  -- rows with content when the change started (status recounts)
    started_at    timestamptz NOT NULL DEFAULT now(),
    -- The swap waiting for its table lock (complete_changes()): attempts in a row that found the
    -- table held, since when, and by whom at the last one. Reset by any other outcome.
    swap_attempts      integer NOT NULL DEFAULT 0,
    swap_waiting_since timestamptz,
    swap_holders       text,
    -- The swap failing (complete_changes()): its error, and since when it has been the same.
    -- Reset by a call that gets past it.
    swap_error         text,
    swap_failed_since  timestamptz
);
GRANT SELECT ON embeddings.model_changes TO PUBLIC;
COMMENT ON TABLE embeddings.model_changes IS 'Model changes in progress: the shadow column being filled with the new model''s vectors';

-- Which model produced the vectors of a target's column (shadow false) or of its shadow column
-- during a change (shadow true): registry name, revision (the model file's digest or hub
-- revision) and variant. Written by the first worker write, checked by every later one: a
-- worker running another revision or variant does not write there (it defers the target).
CREATE TABLE IF NOT EXISTS embeddings.provenance (
    target_id   integer NOT NULL REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    shadow      boolean NOT NULL,
    model       text NOT NULL,
    revision    text NOT NULL,
    variant     text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_id, shadow)
);
GRANT SELECT ON embeddings.provenance TO PUBLIC;
COMMENT ON TABLE embeddings.provenance IS 'Model, revision and variant that produced each target''s stored vectors';


-- Content fingerprints and the verifying sweep (64_verify.sql).

-- One fingerprint per stored vector: `slot` is the attribute number of the column holding it
-- (a model change's shadow column has its own, and after the swap the embedding column is the
-- former shadow column: its fingerprints come along with no rewrite); 0 for a chunked target
-- (its vectors live in its chunk table). `key` is the row key as jobs carry it.
CREATE TABLE IF NOT EXISTS embeddings.fingerprints (
    target_id   integer NOT NULL REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    slot        smallint NOT NULL,
    key         jsonb NOT NULL,
    fingerprint text NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_id, slot, key)
);

-- Where each target's verifying sweep is, and what its passes found: `after_key` the last key
-- of the slice verified (NULL: the next call starts a new pass), the current pass's counts, and
-- the last complete pass's.
CREATE TABLE IF NOT EXISTS embeddings.verify_cursors (
    target_id          integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    after_key          jsonb,
    pass_started_at    timestamptz,
    pass_rows          bigint NOT NULL DEFAULT 0,
    pass_queued        bigint NOT NULL DEFAULT 0,
    verified_at        timestamptz,
    last_pass_started  timestamptz,
    last_pass_finished timestamptz,
    last_pass_rows     bigint,
    last_pass_queued   bigint,
    -- where the pruning of fingerprints whose row is gone is (NULL: it starts over), by
    -- (slot, key) in the fingerprints' own order: verify_target()
    prune_slot         smallint,
    prune_after        jsonb
);
-- Its cursors are real row keys: operators read the progress through embeddings.verification
-- (64_verify.sql, with its owner's rights). The REVOKE also takes back a grant an older install
-- made (these lines run on every migrate).
REVOKE SELECT ON embeddings.verify_cursors FROM PUBLIC;


-- key_json_from_text_sql() of each target's definition version, kept: building it reads the
-- catalog (several milliseconds), and the worker needs it for every batch it writes. Written
-- only by record_fingerprints() (as this schema's owner); every ALTER of a watched table and
-- every watch() gives the target a new version, so a kept expression never outlives its key.
CREATE TABLE IF NOT EXISTS embeddings.fingerprint_keys (
    target_id integer NOT NULL REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    version   integer NOT NULL,
    key_sql   text NOT NULL,
    PRIMARY KEY (target_id, version)
);


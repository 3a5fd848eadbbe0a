-- Release 0.2.0, part 2 of its upgrade: the tables new in 0.2.0, as 0.2.0 made them, after
-- upgrade.sql brought 0.1.0's up to date. Until issue 38 they came from 0.2.0's frozen copy of
-- sql/, which also held its code; the code now always comes from sql/, installed once after
-- every pending revision ran, so a later release's upgrade.sql can rely on these tables.
-- Every statement is idempotent (a database at main's revisions 0002-0018 has some of them).

-- 22_inbox.sql
CREATE TABLE IF NOT EXISTS embeddings.inbox (
    target      integer NOT NULL,
    keys        integer NOT NULL,
    columns     jsonb NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);

-- 44_changes.sql
CREATE TABLE IF NOT EXISTS embeddings.model_changes (
    target_id     integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    model         text NOT NULL REFERENCES embeddings.models (name),
    shadow_column name NOT NULL,
    keep_old      boolean NOT NULL DEFAULT false,
    rows_total    bigint,  -- rows with content when the change started (status recounts)
    started_at    timestamptz NOT NULL DEFAULT now(),
    swap_attempts      integer NOT NULL DEFAULT 0,
    swap_waiting_since timestamptz,
    swap_holders       text
);

-- 44_changes.sql
CREATE TABLE IF NOT EXISTS embeddings.provenance (
    target_id   integer NOT NULL REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    shadow      boolean NOT NULL,
    model       text NOT NULL,
    revision    text NOT NULL,
    variant     text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_id, shadow)
);

-- 55_chunks.sql
CREATE TABLE IF NOT EXISTS embeddings.documents (
    target_id        integer NOT NULL REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    row_key          text NOT NULL,
    digest           text NOT NULL,
    state            text NOT NULL CHECK (state IN ('in_progress', 'over_ceiling')),
    bytes            bigint NOT NULL,
    chunks_done      integer NOT NULL DEFAULT 0,
    chunks_estimated integer,
    ceiling_bytes    bigint,
    started_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    target_version   integer NOT NULL,
    PRIMARY KEY (target_id, row_key)
);

-- 55_visibility.sql
CREATE TABLE IF NOT EXISTS embeddings.deferrals (
    target_id   integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    reason      text NOT NULL,
    jobs        integer NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);

-- 62_backfill.sql
CREATE TABLE IF NOT EXISTS embeddings.backfills (
    target_id     integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    every_row     boolean NOT NULL,
    after_key     jsonb,
    scanned_rows  bigint NOT NULL DEFAULT 0,
    enqueued_keys bigint NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL DEFAULT now(),
    stepped_at    timestamptz,
    lane          text NOT NULL DEFAULT 'backfill' CHECK (lane IN ('backfill', 'change'))
);

-- 62_backfill.sql
CREATE TABLE IF NOT EXISTS embeddings.deferred_indexes (
    target_id integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    since     timestamptz NOT NULL DEFAULT now()
);

-- 64_verify.sql
CREATE TABLE IF NOT EXISTS embeddings.fingerprints (
    target_id   integer NOT NULL REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    slot        smallint NOT NULL,
    key         jsonb NOT NULL,
    fingerprint text NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_id, slot, key)
);

-- 64_verify.sql
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
    prune_slot         smallint,
    prune_after        jsonb
);

-- 64_verify.sql
CREATE TABLE IF NOT EXISTS embeddings.fingerprint_keys (
    target_id integer NOT NULL REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    version   integer NOT NULL,
    key_sql   text NOT NULL,
    PRIMARY KEY (target_id, version)
);

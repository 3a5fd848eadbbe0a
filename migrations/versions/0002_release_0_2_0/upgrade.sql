-- Release 0.2.0, part 1 of its upgrade: the tables a 0.1.0 database has, brought to 0.2.0 before
-- the code reinstall (tables new in 0.2.0 come from sql/ then, with CREATE TABLE IF NOT EXISTS).
-- Every statement is idempotent: it also runs on databases at main's revisions 0002-0018, which
-- made some of these changes already. New columns go at the end, in the order sql/ lists them
-- (a migrated table and a fresh one must dump identically).

-- The event trigger of those revisions must not follow our own ALTERs (45_dropped.sql).
SELECT set_config('embeddings.following', 'on', true);

-- 0.1.0's table triggers ran shared functions that 0.2.0 has no more (enqueue_inserted,
-- enqueue_updated): off with them; sql/99_regenerate.sql gives every target its generated ones.
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT tg.tgname, tg.tgrelid::regclass AS rel FROM pg_trigger tg
        JOIN pg_proc p ON p.oid = tg.tgfoid
        WHERE p.pronamespace = 'embeddings'::regnamespace
          AND p.proname IN ('enqueue_inserted', 'enqueue_updated') AND tg.tgparentid = 0
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', g.tgname, g.rel);
    END LOOP;
END
$$;

-- embeddings.targets: the definition version a worker's write is checked against.
ALTER TABLE embeddings.targets ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;

-- Worker roles' row-security policies: 0.1.0's one FOR ALL policy per table and role goes. In
-- 0.2.0 worker roles reach watched tables only through functions that run as the tables' owners
-- (sql/32_access.sql); sql/80_roles.sql removes the policies and column grants of the revisions
-- between the releases.
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN
        SELECT pol.polname, pol.polrelid::regclass AS rel FROM pg_policy pol
        JOIN embeddings.worker_roles r ON pol.polname = 'embeddings_worker_' || r.role_name
        WHERE pol.polcmd = '*'
    LOOP
        EXECUTE format('DROP POLICY %I ON %s', p.polname, p.rel);
    END LOOP;
END
$$;

-- embeddings.targets: keys of one or more columns, attribute numbers (names follow renames),
-- replicas, problems.
ALTER TABLE embeddings.targets
    ADD COLUMN IF NOT EXISTS key_columns name[] CHECK (cardinality(key_columns) >= 1),
    ADD COLUMN IF NOT EXISTS key_types regtype[]
        CONSTRAINT targets_key_types_check CHECK (cardinality(key_types) = cardinality(key_columns)),
    ADD COLUMN IF NOT EXISTS key_attnums smallint[],
    ADD COLUMN IF NOT EXISTS content_attnum smallint,
    ADD COLUMN IF NOT EXISTS embedding_attnum smallint,
    ADD COLUMN IF NOT EXISTS replica boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS problem text;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute a
                   WHERE a.attrelid = 'embeddings.targets'::regclass AND a.attname = 'key_column'
                     AND NOT a.attisdropped) THEN
        RETURN;  -- converted already
    END IF;
    EXECUTE $convert$
        UPDATE embeddings.targets t
        SET key_columns = ARRAY[t.key_column], key_types = ARRAY[t.key_type],
            key_attnums = ARRAY[(SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = t.source AND a.attname = t.key_column AND NOT a.attisdropped)],
            content_attnum = (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = t.source AND a.attname = t.content_column AND NOT a.attisdropped),
            embedding_attnum = coalesce((SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = t.source AND a.attname = t.embedding_column AND NOT a.attisdropped), 0)
    $convert$;
    UPDATE embeddings.targets t SET key_attnums = '{0}' WHERE key_attnums = '{NULL}';
    -- Sweep cursors held a key as text; sweeps start over.
    UPDATE embeddings.sweep_cursors SET after_key = NULL;
END
$$;

ALTER TABLE embeddings.targets
    ALTER COLUMN key_columns SET NOT NULL,
    ALTER COLUMN key_types SET NOT NULL,
    ALTER COLUMN key_attnums SET NOT NULL,
    DROP COLUMN IF EXISTS key_column,
    DROP COLUMN IF EXISTS key_type;

-- embeddings.targets: chunked targets (no embedding column in the table itself).
ALTER TABLE embeddings.targets
    ALTER COLUMN embedding_attnum DROP NOT NULL,
    ADD COLUMN IF NOT EXISTS chunk_table regclass,
    ADD COLUMN IF NOT EXISTS chunk_tokens integer,
    ADD COLUMN IF NOT EXISTS chunk_overlap integer;

-- embeddings.targets: vectors in a side table (sql/56_side.sql).
ALTER TABLE embeddings.targets
    ADD COLUMN IF NOT EXISTS side_table regclass
        CONSTRAINT targets_side_table_check CHECK (side_table IS NULL OR chunk_table IS NULL);

-- Chunk tables: 0.1.0 typed their key columns without modifiers (a char(6) key as char(1),
-- whose rows' chunks could not be written); they get their source's (sql/55_chunks.sql). Matched
-- through the foreign key, before it goes (below).
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT fk.conrelid::regclass AS chunk_table, ca.attname, format_type(sa.atttypid, sa.atttypmod) AS ty
        FROM embeddings.targets t
        JOIN pg_constraint fk ON fk.conrelid = t.chunk_table AND fk.confrelid = t.source AND fk.contype = 'f'
        CROSS JOIN LATERAL unnest(fk.conkey, fk.confkey) AS k(chunk_num, source_num)
        JOIN pg_attribute ca ON ca.attrelid = fk.conrelid AND ca.attnum = k.chunk_num
        JOIN pg_attribute sa ON sa.attrelid = fk.confrelid AND sa.attnum = k.source_num
        WHERE ca.atttypid = sa.atttypid AND ca.atttypmod <> sa.atttypmod
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s', c.chunk_table, c.attname, c.ty);
    END LOOP;
END
$$;

-- Chunk tables: no foreign key to their source any more (it made TRUNCATE of the source fail);
-- the source's delete and truncate triggers follow up instead (sql/56_side.sql), installed by the
-- code reinstall.
DO $$
DECLARE
    fk record;
BEGIN
    FOR fk IN
        SELECT c.conrelid::regclass AS rel, c.conname FROM embeddings.targets t
        JOIN pg_constraint c ON c.conrelid = t.chunk_table AND c.confrelid = t.source AND c.contype = 'f'
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.rel, fk.conname);
    END LOOP;
END
$$;

-- embeddings.targets: full-text search for hybrid search (sql/59_hybrid.sql).
ALTER TABLE embeddings.targets
    ADD COLUMN IF NOT EXISTS fts_config regconfig,
    ADD COLUMN IF NOT EXISTS fts_column name;

-- embeddings.queues: a backfill lane names the live queue it serves.
ALTER TABLE embeddings.queues ADD COLUMN IF NOT EXISTS live_queue text;

-- embeddings.backfills (revisions 0008-0011 of main had it without lanes).
ALTER TABLE IF EXISTS embeddings.backfills
    ADD COLUMN IF NOT EXISTS lane text NOT NULL DEFAULT 'backfill' CHECK (lane IN ('backfill', 'change'));

-- embeddings.models: remote providers (sql/46_providers.sql).
ALTER TABLE embeddings.models
    ADD COLUMN IF NOT EXISTS provider text NOT NULL DEFAULT 'local' CHECK (provider IN ('local', 'openai', 'huggingface')),
    ADD COLUMN IF NOT EXISTS endpoint text,
    ADD COLUMN IF NOT EXISTS remote_model text,
    ADD COLUMN IF NOT EXISTS send_dimensions boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS max_inputs integer CHECK (max_inputs > 0),
    ADD COLUMN IF NOT EXISTS max_request_tokens integer CHECK (max_request_tokens > 0),
    ADD COLUMN IF NOT EXISTS max_in_flight integer CHECK (max_in_flight > 0),
    ADD COLUMN IF NOT EXISTS timeout_seconds double precision CHECK (timeout_seconds > 0),
    ADD COLUMN IF NOT EXISTS price_per_million_tokens numeric CHECK (price_per_million_tokens >= 0),
    ADD COLUMN IF NOT EXISTS credential text CHECK (credential ~ '^[A-Za-z0-9_.-]{1,64}$'),
    ADD COLUMN IF NOT EXISTS tokenizer text;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'embeddings.models'::regclass
                   AND conname = 'models_remote_check') THEN
        ALTER TABLE embeddings.models ADD CONSTRAINT models_remote_check
            CHECK (provider = 'local' OR (endpoint IS NOT NULL AND remote_model IS NOT NULL));
    END IF;
END
$$;

SELECT set_config('embeddings.following', 'off', true);

-- Waiting workers registered themselves in this table (revisions 0002-0018) so that writes
-- would NOTIFY them; 0.2.0's workers look for jobs instead (sql/20_queue.sql: wait_for_jobs).
DROP TABLE IF EXISTS embeddings.idle_workers;

-- embeddings.model_changes (new in 0.2.0; present at some unreleased revisions): the swap
-- waiting for its table lock (44_changes.sql).
ALTER TABLE IF EXISTS embeddings.model_changes
    ADD COLUMN IF NOT EXISTS swap_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS swap_waiting_since timestamptz,
    ADD COLUMN IF NOT EXISTS swap_holders text;
-- embeddings.worker_roles: roles by oid too, so that a renamed worker role keeps being granted
-- what tables watched later need (sql/80_roles.sql).
ALTER TABLE embeddings.worker_roles ADD COLUMN IF NOT EXISTS role_id oid;
UPDATE embeddings.worker_roles w SET role_id = r.oid
FROM pg_roles r WHERE w.role_id IS NULL AND r.rolname = w.role_name;
-- embeddings.verify_cursors (new in 0.2.0; present at some unreleased revisions): where the
-- verifying passes' pruning of deleted rows' fingerprints is (sql/64_verify.sql).
ALTER TABLE IF EXISTS embeddings.verify_cursors
    ADD COLUMN IF NOT EXISTS prune_slot smallint,
    ADD COLUMN IF NOT EXISTS prune_after jsonb;

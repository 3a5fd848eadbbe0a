-- Release 0.3.0, revision 0019: the tables of 0.2.0 brought up to date, before the code of
-- 0.3.0 is installed over them (migrations/versions/0019_release_0_3_0.py).
--
-- Every statement here is idempotent: ALTER TABLE ... ADD COLUMN IF NOT EXISTS, conversions
-- that leave converted rows alone. Tables new in 0.3.0 need no line here: sql/ creates them.

-- Chunk tables: each chunk's character offsets in its document (sql/55_chunks.sql), at the
-- end as a fresh chunk table has them, then its heading path and page. Chunks written before stay NULL until their document is
-- embedded again (the chunk write fills them in, vectors kept).
DO $$
DECLARE
    rel regclass;
BEGIN
    PERFORM set_config('embeddings.following', 'on', true);  -- our DDL: nothing to follow
    FOR rel IN
        SELECT t.chunk_table FROM embeddings.targets t
        WHERE t.chunk_table IS NOT NULL AND EXISTS (SELECT FROM pg_class c WHERE c.oid = t.chunk_table)
        ORDER BY t.id
    LOOP
        IF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = 'start_offset' AND NOT a.attisdropped)
           OR NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = 'end_offset' AND NOT a.attisdropped) THEN
            EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS start_offset integer, '
                           'ADD COLUMN IF NOT EXISTS end_offset integer', rel);
        END IF;
        -- Each chunk's heading path and PDF page (documents: sql/55_chunks.sql), after them.
        IF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = 'headings' AND NOT a.attisdropped)
           OR NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = 'page' AND NOT a.attisdropped) THEN
            EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS headings text[], '
                           'ADD COLUMN IF NOT EXISTS page integer', rel);
        END IF;
    END LOOP;
    PERFORM set_config('embeddings.following', 'off', true);
END
$$;

-- Row keys no role reads that need not (issue 36): 0.2.0's grant_worker() gave the worker roles
-- SELECT on every table PUBLIC could read, embeddings.backfills and embeddings.verify_cursors
-- with their cursors (real row keys) among them. Taken back here; the code reinstall takes
-- PUBLIC's (sql/62_backfill.sql, sql/64_verify.sql) and grant_worker() gives back the
-- backfills' columns without the cursor (sql/99_regenerate.sql).
DO $$
DECLARE
    role_name name;
BEGIN
    FOR role_name IN
        SELECT r.rolname FROM embeddings.worker_roles w
        JOIN pg_roles r ON r.oid = w.role_id OR (w.role_id IS NULL AND r.rolname = w.role_name) ORDER BY 1
    LOOP
        EXECUTE format('REVOKE SELECT ON embeddings.backfills, embeddings.verify_cursors FROM %I', role_name);
    END LOOP;
END
$$;

-- The recent rate counts from when its first batch began (status's rate and ETA came out 5x low
-- in the first minute of a drain): when the first batch of each minute was read.
ALTER TABLE embeddings.throughput ADD COLUMN IF NOT EXISTS since timestamptz;

-- The store kind is explicit in the registry (sql/54_stores.sql: each kind's functions are named
-- after it), derived from the store tables so that it cannot disagree with them.
ALTER TABLE embeddings.targets ADD COLUMN IF NOT EXISTS store_kind text NOT NULL GENERATED ALWAYS AS (
    CASE WHEN chunk_table IS NOT NULL THEN 'chunks' WHEN side_table IS NOT NULL THEN 'side' ELSE 'row' END) STORED;

-- Search's rerank stage, set per target (sql/57_rerank.sql).
ALTER TABLE embeddings.targets ADD COLUMN IF NOT EXISTS rerank_model text;
ALTER TABLE embeddings.targets ADD COLUMN IF NOT EXISTS rerank_depth integer;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'embeddings.targets'::regclass
                                               AND conname = 'targets_rerank_depth_check') THEN
        ALTER TABLE embeddings.targets
            ADD CONSTRAINT targets_rerank_depth_check CHECK (rerank_depth BETWEEN 1 AND 200);
    END IF;
END
$$;

-- A provider kind is any name register_model() knows (embeddings.provider_defaults()), not a
-- list fixed in the table: a new kind changes no table.
ALTER TABLE embeddings.models DROP CONSTRAINT IF EXISTS models_provider_check;
ALTER TABLE embeddings.models ADD CONSTRAINT models_provider_check CHECK (provider ~ '^[a-z][a-z0-9_]*$');

-- Documents (sql/55_chunks.sql, docs/documents.md): a chunked target's content format and its
-- context header's template.
ALTER TABLE embeddings.targets ADD COLUMN IF NOT EXISTS document_format text;
ALTER TABLE embeddings.targets ADD COLUMN IF NOT EXISTS context_header text;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'embeddings.targets'::regclass
                                               AND conname = 'targets_document_format_check') THEN
        ALTER TABLE embeddings.targets ADD CONSTRAINT targets_document_format_check
            CHECK (document_format IN ('auto', 'pdf', 'docx', 'html', 'markdown', 'text'));
    END IF;
END
$$;

-- What pgmq granted `pg_monitor` on the queue and archive tables of our queues (it read every
-- queued and dead-lettered key) needs no line here: the code reinstall after this file calls
-- embeddings.create_queue() for every registered queue (sql/99_regenerate.sql), which revokes
-- it (embeddings.revoke_pgmq_grants(), sql/20_queue.sql); `tests/migration` checks it.

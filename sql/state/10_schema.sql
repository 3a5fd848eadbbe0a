-- The `embeddings` schema and its registry: which models exist, which tables are watched, what
-- failed. The state of sql/: this folder runs first on every install and upgrade, every
-- statement re-runnable and calling none of our functions (the code files come after it).

-- Made by the installer, or refused: a schema of that name that another role made first (any
-- role with CREATE on the database may) would be adopted, and its owner could drop and replace
-- any function in it, which runs inside every watched table's triggers. So an `embeddings`
-- that exists must belong to the installer, a role it is a member of (a superuser being a
-- member of every role does not count), a superuser or the database's owner, and no other role
-- may create in it.
DO $$
DECLARE
    found pg_catalog.pg_namespace;
    owner_ok boolean;
BEGIN
    SELECT * INTO found FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'embeddings';
    IF found.oid IS NULL THEN
        CREATE SCHEMA embeddings;
        RETURN;
    END IF;
    owner_ok := found.nspowner OPERATOR(pg_catalog.=) (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user)
        OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) found.nspowner)
        OR found.nspowner OPERATOR(pg_catalog.=) (SELECT d.datdba FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
        OR (NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user)
            AND pg_catalog.pg_has_role(current_user, found.nspowner, 'MEMBER'));
    IF NOT owner_ok
       OR EXISTS (SELECT FROM pg_catalog.aclexplode(found.nspacl) a
                  WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
                    AND a.grantee OPERATOR(pg_catalog.<>) found.nspowner) THEN
        RAISE EXCEPTION 'schema embeddings exists and is not embed-worker''s: its owner is %, and may create in it: %; it must belong to %, a role % is a member of, a superuser or the database''s owner, and no other role may create in it',
            found.nspowner::pg_catalog.regrole,
            coalesce((SELECT pg_catalog.string_agg(CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::pg_catalog.regrole::pg_catalog.text END, ', ')
                      FROM pg_catalog.aclexplode(found.nspacl) a WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'), 'its owner'),
            current_user, current_user
            USING ERRCODE = 'duplicate_schema',
                  HINT = 'Drop that schema (or rename it) if nothing of yours is in it, or revoke CREATE on it from the others, then migrate again.';
    END IF;
END
$$;
COMMENT ON SCHEMA embeddings IS 'embed-worker: watched tables, models, queues, dead letters';

-- Roles that write to watched tables run our statement triggers, which read the target
-- registry; the registry holds table and column names only.
GRANT USAGE ON SCHEMA embeddings TO PUBLIC;

-- The internals: every function and composite type that is not the public API (docs/sql.md),
-- apart from it, so that no user mistakes one for a function to rely on. Tables, views and the
-- functions watch() generates per target stay in `embeddings`. Made by the installer, or
-- refused: a schema of that name that someone else made first (any role with CREATE on the
-- database may) would let its owner replace our code, which runs as the schema's owner and
-- inside every watched table's triggers. So it must belong to the owner of `embeddings`, and
-- no other role may create in it.
DO $$
DECLARE
    ours oid := (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'embeddings');
    found pg_catalog.pg_namespace;
BEGIN
    SELECT * INTO found FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'embeddings_internal';
    IF found.oid IS NULL THEN
        EXECUTE pg_catalog.format('CREATE SCHEMA embeddings_internal AUTHORIZATION %I', (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) ours));
        RETURN;
    END IF;
    IF found.nspowner OPERATOR(pg_catalog.<>) ours
       OR EXISTS (SELECT FROM pg_catalog.aclexplode(found.nspacl) a
                  WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
                    AND a.grantee OPERATOR(pg_catalog.<>) found.nspowner) THEN
        RAISE EXCEPTION 'schema embeddings_internal exists and is not embed-worker''s: its owner is %, and may create in it: %; it must be the owner of schema embeddings, %, alone',
            found.nspowner::pg_catalog.regrole,
            coalesce((SELECT pg_catalog.string_agg(CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::pg_catalog.regrole::pg_catalog.text END, ', ')
                      FROM pg_catalog.aclexplode(found.nspacl) a WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'), 'its owner'),
            ours::pg_catalog.regrole
            USING ERRCODE = 'duplicate_schema',
                  HINT = 'Drop that schema (or rename it) if nothing of yours is in it, then migrate again.';
    END IF;
END
$$;
COMMENT ON SCHEMA embeddings_internal IS 'embed-worker''s internals: not to be called, they may change in any release (docs/sql.md)';
-- Our triggers and the API run some internals with their caller's rights (sql/90_privileges.sql
-- lists which PUBLIC may execute); the rest are revoked from PUBLIC one by one.
GRANT USAGE ON SCHEMA embeddings_internal TO PUBLIC;

-- Models the worker can run. Dimensions decide the embedding column's type at watch() time;
-- the worker checks them against the model it loads. Add your own with register_model()
-- (sql/46_providers.sql); the built-in models' rows are below.
CREATE TABLE IF NOT EXISTS embeddings.models (
    name        text PRIMARY KEY,
    dimensions  integer NOT NULL CHECK (dimensions BETWEEN 1 AND 4000),
    max_tokens  integer NOT NULL CHECK (max_tokens > 0),
    pooling     text NOT NULL CHECK (pooling IN ('mean', 'cls')),
    is_default  boolean NOT NULL DEFAULT false,
    source      text,
    description text,
    -- Where the vectors come from (sql/46_providers.sql): 'local' runs the ONNX files on the
    -- worker's CPU; 'openai' calls an OpenAI-compatible /embeddings endpoint (OpenAI, Azure,
    -- text-embeddings-inference, vLLM, infinity, Ollama), 'huggingface' the Hugging Face
    -- Inference API's feature extraction. Remote models name their endpoint and the provider's
    -- model; the rest are request limits, a price for estimates, and the *name* of the API key
    -- (the key itself lives in the worker's environment or a file, never here).
    -- 'local', or a remote kind of embeddings.provider_defaults() (register_model() checks;
    -- the worker refuses a kind it does not know): a new kind changes no table.
    provider        text NOT NULL DEFAULT 'local' CONSTRAINT models_provider_check CHECK (provider ~ '^[a-z][a-z0-9_]*$'),
    endpoint        text,
    remote_model    text,
    send_dimensions boolean NOT NULL DEFAULT false,
    max_inputs      integer CHECK (max_inputs > 0),
    max_request_tokens integer CHECK (max_request_tokens > 0),
    max_in_flight   integer CHECK (max_in_flight > 0),
    timeout_seconds double precision CHECK (timeout_seconds > 0),
    price_per_million_tokens numeric CHECK (price_per_million_tokens >= 0),
    credential      text CHECK (credential ~ '^[A-Za-z0-9_.-]{1,64}$'),
    tokenizer       text,
    CONSTRAINT models_remote_check CHECK (provider = 'local' OR (endpoint IS NOT NULL AND remote_model IS NOT NULL))
);
-- At most one default model.
CREATE UNIQUE INDEX IF NOT EXISTS models_one_default ON embeddings.models (is_default) WHERE is_default;

INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling, is_default, source, description) VALUES
    ('gte-small', 384, 512, 'mean', true, 'Supabase/gte-small',
     'General Text Embeddings, small; what Supabase''s automatic embeddings use'),
    ('all-MiniLM-L6-v2', 384, 256, 'mean', false, 'sentence-transformers/all-MiniLM-L6-v2',
     'Sentence-transformers MiniLM, 6 layers'),
    ('bge-small-en-v1.5', 384, 512, 'cls', false, 'BAAI/bge-small-en-v1.5',
     'BAAI general embedding, small, English')
ON CONFLICT DO NOTHING;

-- pgmq queues the triggers write to. `created_here` records whether our migration created the
-- queue, so that uninstalling never drops a queue that existed before us (the Supabase guide
-- creates `embedding_jobs` itself).
CREATE TABLE IF NOT EXISTS embeddings.queues (
    name         text PRIMARY KEY,
    created_here boolean NOT NULL,
    live_queue   text  -- set on a backfill lane: the live queue it serves (embeddings.backfill_queue())
);

-- Watched tables: one row per (table, embedding column).
CREATE TABLE IF NOT EXISTS embeddings.targets (
    id               integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source           regclass NOT NULL,
    embedding_column name NOT NULL,
    content_column   name,
    content_function regprocedure,
    model            text NOT NULL REFERENCES embeddings.models (name),
    queue            text NOT NULL REFERENCES embeddings.queues (name),
    has_triggers     boolean NOT NULL,
    clear_on_update  boolean NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- Bumped by watch() whenever the registration changes: a worker's write is rejected when
    -- the version it read the batch under is no longer current (embeddings_internal.lock_target_version).
    version          integer NOT NULL DEFAULT 1,
    -- The row key: the primary key's columns, or a unique not-null key named at watch().
    -- Jobs carry a scalar per row for a one-column key, a JSON array in this order otherwise.
    key_columns      name[] NOT NULL CHECK (cardinality(key_columns) >= 1),
    key_types        regtype[] NOT NULL
                     CONSTRAINT targets_key_types_check CHECK (cardinality(key_types) = cardinality(key_columns)),
    -- Attribute numbers of the columns above in `source`: the names follow renames (the
    -- ddl_command_end event trigger re-reads them and regenerates the trigger functions).
    key_attnums      smallint[] NOT NULL,
    content_attnum   smallint,
    -- NULL for a target whose vectors are apart from `source` (store_table): its embedding
    -- column is there.
    embedding_attnum smallint,
    -- Triggers fire for rows applied by logical replication too (ENABLE ALWAYS TRIGGER).
    replica          boolean NOT NULL DEFAULT false,
    -- Why the target is not being served (its content column was dropped, say); NULL when fine.
    -- Set by the schema-change event trigger; the worker defers its jobs and status shows it.
    problem          text,
    -- Chunked targets (sql/55_chunks.sql): the splitter's settings.
    chunk_tokens     integer,
    chunk_overlap    integer,
    -- Full-text search for hybrid search (sql/59_hybrid.sql): the text search configuration
    -- and the tsvector column (in `source`, or `fts` in the chunk table); NULL: none.
    fts_config       regconfig,
    fts_column       name,
    -- How the vectors are kept, the store kind (sql/54_stores.sql lists the kinds; each kind's
    -- behaviour is in its functions, embeddings.<kind>_store_<operation>).
    store_kind       text NOT NULL CONSTRAINT targets_store_kind_check CHECK (store_kind ~ '^[a-z]+$'),
    -- Search's rerank stage by default for this target (sql/57_rerank.sql: set_rerank()): the
    -- cross-encoder's name and how many of the first ranking's results it reorders (NULL:
    -- the worker's default). NULL model: no rerank unless a search asks for one.
    rerank_model     text,
    rerank_depth     integer CONSTRAINT targets_rerank_depth_check CHECK (rerank_depth BETWEEN 1 AND 200),
    -- Chunked targets of documents (sql/55_chunks.sql, docs/documents.md): the content's format,
    -- which the worker extracts text from (`auto`: detected from the bytes of a bytea column);
    -- NULL: plain text, chunked as it is. The context header's template (NULL: the default).
    document_format  text CONSTRAINT targets_document_format_check
                         CHECK (document_format IN ('auto', 'pdf', 'docx', 'html', 'markdown', 'text')),
    context_header   text,
    -- Full-text fields (sql/59_hybrid.sql): with a weight, the content's text before its first
    -- U+001F is a title, its words weighted A in the tsvector and counted this many times in
    -- BM25's term frequency; NULL: one field.
    fts_title_weight double precision CONSTRAINT targets_fts_title_weight_check CHECK (fts_title_weight >= 1),
    -- The table the vectors are written to: `source` itself (the row store), or a table apart
    -- from it (a side or chunk table), keyed like it.
    store_table      regclass NOT NULL,
    -- The store table under the older names that workers of the previous release read during a
    -- rolling upgrade (docs/upgrading.md): derived from the two columns above, never written, and
    -- dropped once no supported release reads them (CHANGELOG.md).
    chunk_table      regclass GENERATED ALWAYS AS (CASE WHEN store_kind = 'chunks' THEN store_table END) STORED,
    side_table       regclass GENERATED ALWAYS AS (CASE WHEN store_kind = 'side' THEN store_table END) STORED,
    -- What a batch read under `version` depends on, digested when it was last given (watch(), a
    -- schema change that changed it: embeddings_internal.definition_digest()), and again by
    -- every install of the code (sql/99_regenerate.sql, an upgrade's too).
    definition_digest text,
    UNIQUE (source, embedding_column),
    CHECK ((content_column IS NULL) <> (content_function IS NULL))
);
GRANT SELECT ON embeddings.targets TO PUBLIC;
COMMENT ON TABLE embeddings.targets IS 'Tables whose rows embed-worker keeps embedded; managed by embeddings.watch()/unwatch()';

-- The side and chunk tables watch() made, each for its source. watch() uses an existing table
-- as a target's store only if it is here, for that source, and owned by the source's owner: a
-- table someone else made first under the name watch() would pick carries their triggers,
-- grants and policies, which our writes would then run with the owner's rights. A
-- table kept by unwatch() stays here, so watch() again takes it back. Rows go with the tables
-- (45_dropped.sql). Readable by no one but this schema's owner.
CREATE TABLE IF NOT EXISTS embeddings.made_tables (
    store  regclass PRIMARY KEY,
    source regclass NOT NULL,
    kind   text NOT NULL CONSTRAINT made_tables_kind_check CHECK (kind ~ '^[a-z]+$')  -- its store_kind
);
REVOKE ALL ON embeddings.made_tables FROM PUBLIC;
COMMENT ON TABLE embeddings.made_tables IS 'Side and chunk tables made by embeddings.watch(): the only existing tables it uses as a store';
-- The stores of targets registered before this table existed (an upgraded database): each is
-- ours by construction. Revision 0019's tables.sql relies on it.
INSERT INTO embeddings.made_tables (store, source, kind)
SELECT t.store_table, t.source, t.store_kind
FROM embeddings.targets t
WHERE t.store_table <> t.source
ON CONFLICT DO NOTHING;

-- Dead letters: one row per row key that exhausted its attempts, or per message that named no
-- registered target. `message` is a one-row job that embeddings.retry_failures() re-sends as is.
CREATE TABLE IF NOT EXISTS embeddings.failures (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_id  integer REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    target     text NOT NULL,
    row_key    jsonb,
    queue      text NOT NULL,
    message    jsonb NOT NULL,
    attempts   integer NOT NULL,
    last_error text NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);
-- A target's dead letters in id order: sweep() walks them a step at a time from a cursor
-- (sql/60_sweep.sql: resolve_gone_failures()); by target alone too (failures, status).
CREATE INDEX IF NOT EXISTS failures_target_id_id ON embeddings.failures (target_id, id);
-- A row's earlier dead letter, found when it is dead-lettered again (worker/queries.sql:
-- record_failures). Hash: a key of any length (a btree entry holds at most ~2.7 kB).
CREATE INDEX IF NOT EXISTS failures_row_key ON embeddings.failures USING hash (row_key);
-- The same by the key's text, as a written row's dead letter is found and removed (worker/
-- queries.sql: resolve_failures): without it every batch the worker wrote compared each of its
-- rows with every dead letter of its target (a batch of 128 rows took 4 s beside 100,000).
CREATE INDEX IF NOT EXISTS failures_row_key_text ON embeddings.failures USING hash ((row_key #>> ARRAY[]::text[]));
COMMENT ON TABLE embeddings.failures IS 'Dead-lettered embedding jobs; re-queue with embeddings.retry_failures() or `embed-worker failures --retry`';

-- Rows embedded per target and minute, written by the worker with each batch; feeds the
-- recent rate in embeddings.status. `since`: when the first batch counted in the minute was
-- read (NULL where not recorded). Old minutes are pruned by the worker.
CREATE TABLE IF NOT EXISTS embeddings.throughput (
    target_id integer NOT NULL REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    minute    timestamptz NOT NULL,
    rows      bigint NOT NULL,
    since     timestamptz,
    PRIMARY KEY (target_id, minute)
);

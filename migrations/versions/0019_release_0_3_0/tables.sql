-- Release 0.3.0, revision 0019: the tables new in 0.3.0, as sql/ makes them, after upgrade.sql
-- (docs/development.md, "Schema changes": a table new in a release is made by its revision too,
-- so that a later release's upgrade.sql can rely on it before sql/ runs). Idempotent.

-- sql/10_schema.sql: the side and chunk tables watch() made (issue 36). Its rows for the stores
-- a database already has come from sql/10_schema.sql, re-runnable.
CREATE TABLE IF NOT EXISTS embeddings.made_tables (
    store  regclass PRIMARY KEY,
    source regclass NOT NULL,
    kind   text NOT NULL CHECK (kind IN ('side', 'chunks'))
);
REVOKE ALL ON embeddings.made_tables FROM PUBLIC;

-- sql/57_rerank.sql: remote rerank APIs searches may name (register_reranker()); every role
-- reads them (a row names a key, never holds one).
CREATE TABLE IF NOT EXISTS embeddings.rerankers (
    name            text PRIMARY KEY CONSTRAINT rerankers_name_check CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$'),
    provider        text NOT NULL CONSTRAINT rerankers_provider_check CHECK (provider ~ '^[a-z][a-z0-9_]*$'),
    endpoint        text NOT NULL,
    remote_model    text,
    max_documents   integer NOT NULL CHECK (max_documents BETWEEN 1 AND 10000),
    max_tokens      integer NOT NULL CHECK (max_tokens BETWEEN 1 AND 1000000),
    max_in_flight   integer NOT NULL CHECK (max_in_flight BETWEEN 1 AND 64),
    timeout_seconds double precision NOT NULL CHECK (timeout_seconds > 0 AND timeout_seconds <= 600),
    credential      text CHECK (credential ~ '^[A-Za-z0-9_.-]{1,64}$'),
    description     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON embeddings.rerankers TO PUBLIC;

-- sql/41_locks.sql: documents being written, a row per document only inside the worker's write
-- transaction (it orders two writers of one document; advisory locks did, before 0.3.0).
CREATE UNLOGGED TABLE IF NOT EXISTS embeddings.documents_written (
    target_id integer NOT NULL,
    key_md5   uuid NOT NULL,
    PRIMARY KEY (target_id, key_md5)
);
REVOKE ALL ON embeddings.documents_written FROM PUBLIC;

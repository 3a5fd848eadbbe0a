-- The rerank stage's remote APIs (57_rerank.sql).

-- Remote rerank APIs (Cohere, Jina, Voyage, Hugging Face text-embeddings-inference), one row
-- per name. What a row holds is configuration every role may read (the searches that use it run
-- as the application's role, and read it on their own connection): the endpoint, the
-- provider's model, request limits, and the *name* of the API key (`credential`). The key itself
-- is the worker's (its environment or a mounted file: docs/providers.md), never the
-- database's: register_reranker() refuses an endpoint that carries one. Written by
-- register_reranker() and unregister_reranker() (this schema's owner only); a row set by hand
-- is checked again by the worker when a search builds it (kind, plain http).
CREATE TABLE IF NOT EXISTS embeddings.rerankers (
    name            text PRIMARY KEY CONSTRAINT rerankers_name_check CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$'),
    -- a kind of embeddings.reranker_defaults() (register_reranker() checks; the worker refuses
    -- a kind it does not know): a new kind changes no table.
    provider        text NOT NULL CONSTRAINT rerankers_provider_check CHECK (provider ~ '^[a-z][a-z0-9_]*$'),
    endpoint        text NOT NULL,  -- the base URL: requests go to {endpoint}/rerank
    remote_model    text,           -- the provider's model id; NULL where the kind sends none
    max_documents   integer NOT NULL CHECK (max_documents BETWEEN 1 AND 10000),  -- per request
    max_tokens      integer NOT NULL CHECK (max_tokens BETWEEN 1 AND 1000000),   -- per passage
    max_in_flight   integer NOT NULL CHECK (max_in_flight BETWEEN 1 AND 64),
    timeout_seconds double precision NOT NULL CHECK (timeout_seconds > 0 AND timeout_seconds <= 600),
    credential      text CHECK (credential ~ '^[A-Za-z0-9_.-]{1,64}$'),
    description     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON embeddings.rerankers TO PUBLIC;
COMMENT ON TABLE embeddings.rerankers IS 'Remote rerank APIs searches may name; managed by embeddings.register_reranker()/unregister_reranker()';


-- The rerank stage of a search, set per target: after the first ranking (by meaning, or
-- hybrid), a cross-encoder reads the question with each of the first `depth` results and
-- reorders them by its scores (worker/retrieval/rerank.py; docs/rag.md). The stage runs in the
-- worker (`POST /search`, `embed-worker search`), never in SQL: these are its defaults for
-- searches that do not say (a search may name another reranker, or none), and the remote
-- rerank APIs the worker may call. A reranker is named alike everywhere: a cross-encoder
-- directory on the worker's EMBED_MODEL_PATH, or a remote reranker registered below (the
-- registered one wins).

-- Refuses what is not a reranker's name: letters, digits, ".", "_", "-", at most 200, never a
-- path (a search must not make the worker read a directory it names). set_rerank(),
-- register_reranker() and the table's check take the same names, and so do searches
-- (worker/retrieval/request.py: RERANKER_NAME).
CREATE FUNCTION embeddings_internal.check_reranker_name(name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$' THEN
        RAISE EXCEPTION 'embeddings: % is not a reranker''s name', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A model directory''s name on the worker''s EMBED_MODEL_PATH or a registered remote reranker''s (letters, digits, ".", "_", "-"), never a path.';
    END IF;
END
$$;

-- Sets (or with model NULL, clears) the rerank stage of `source`'s target (of
-- `embedding_column`, when it has several). The model is a reranker's name: a remote one
-- registered with register_reranker(), else a cross-encoder's directory as the worker finds it
-- (on EMBED_MODEL_PATH, say); the worker checks it when a search first uses it. `depth`: how
-- many results it reorders (NULL: the worker's default, 3 x k and at least 20). Schema owner
-- only, like watch(): it changes what every search of the table does.
CREATE FUNCTION embeddings.set_rerank(source regclass, model text, depth integer DEFAULT NULL,
                                      embedding_column name DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets := embeddings_internal.search_target(source, embedding_column);
BEGIN
    IF model IS NOT NULL THEN
        PERFORM embeddings_internal.check_reranker_name(model);
    END IF;
    IF depth IS NOT NULL AND NOT depth BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'embeddings: a rerank depth is from 1 to 200, not %', depth
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF model IS NULL AND depth IS NOT NULL THEN
        RAISE EXCEPTION 'embeddings: a rerank depth needs a reranker (model)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE embeddings.targets tg
    SET rerank_model = set_rerank.model, rerank_depth = set_rerank.depth, updated_at = now()
    WHERE tg.id = t.id;
END
$$;
COMMENT ON FUNCTION embeddings.set_rerank IS
    'Sets or clears the rerank stage of a target''s searches. Schema owner only.';

-- The remote rerank kinds and their defaults: the one place in SQL that knows them (the
-- worker's side is a class per kind, worker/models/remote/rerank_providers.py, whose defaults
-- these are: tests/integration/test_rerank_kinds.py compares them). A new kind is a row here
-- and a class there; embeddings.rerankers takes any kind's name. `endpoint`: the base URL
-- (requests go to {endpoint}/rerank), NULL for a self-hosted server's (register_reranker()
-- needs one then); `max_documents` per request and `max_tokens` per passage (passages are cut
-- to about that before they are sent); `credential`: the key's name a registration gets by
-- default (NULL: none); `sends_model`: whether requests name the provider's model.
CREATE FUNCTION embeddings.reranker_defaults()
RETURNS TABLE (provider text, endpoint text, max_documents integer, max_tokens integer,
               credential text, sends_model boolean, description text)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    VALUES ('cohere', 'https://api.cohere.com/v2', 1000, 4096, 'cohere', true,
            'Cohere''s /v2/rerank (key: COHERE_API_KEY)'),
           ('jina', 'https://api.jina.ai/v1', 1000, 1024, 'jina', true,
            'Jina AI''s /v1/rerank (key: JINA_API_KEY)'),
           ('voyage', 'https://api.voyageai.com/v1', 1000, 16000, 'voyage', true,
            'Voyage AI''s /v1/rerank (key: VOYAGE_API_KEY)'),
           ('tei', NULL::text, 32, 512, NULL::text, false,
            'Hugging Face text-embeddings-inference''s /rerank (self-hosted: its base URL; a key only if it has --api-key)')
$$;
COMMENT ON FUNCTION embeddings.reranker_defaults IS
    'The remote rerank kinds register_reranker() takes, and their default endpoint and limits.';

-- Adds or updates remote reranker `name`, which searches (`"rerank": name`, `--rerank name`)
-- and set_rerank() then name. `provider`: a kind of reranker_defaults(). `endpoint`: the base
-- URL (default: the kind's; a self-hosted text-embeddings-inference's must be given).
-- `remote_model`: the provider's model id (default: `name`; text-embeddings-inference takes
-- none: its server serves one model). Limits left NULL get the kind's defaults, written into
-- the row: `max_documents` per request (a deeper rerank makes several requests),
-- `max_in_flight` requests at once per worker (4), `timeout_seconds` per request (30: a
-- search waits for it), `max_tokens` per passage. `credential` names the API key the worker
-- sends (default: the kind's, as reranker_defaults() says; '' for an endpoint without
-- authentication); the key never goes into the database, and goes over plain http only to a
-- loopback address (check_endpoint()). Returns the name. Searches read the registration when
-- they run: the next search uses what is registered now. Schema owner only, like
-- register_model().
CREATE FUNCTION embeddings.register_reranker(
    name text,
    provider text,
    endpoint text DEFAULT NULL,
    remote_model text DEFAULT NULL,
    max_documents integer DEFAULT NULL,
    max_in_flight integer DEFAULT NULL,
    timeout_seconds double precision DEFAULT NULL,
    credential text DEFAULT NULL,
    description text DEFAULT NULL,
    max_tokens integer DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kind record;
    r embeddings.rerankers;
BEGIN
    PERFORM embeddings_internal.check_reranker_name(name);
    SELECT * INTO kind FROM embeddings.reranker_defaults() d WHERE d.provider = register_reranker.provider;
    IF kind.provider IS NULL THEN
        RAISE EXCEPTION 'unknown rerank provider "%"', provider
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'One of ' || (SELECT string_agg(format('%s (%s)', d.provider, d.description), ', ' ORDER BY d.provider)
                                       FROM embeddings.reranker_defaults() d) || '.';
    END IF;
    IF remote_model IS NOT NULL AND NOT kind.sends_model THEN
        RAISE EXCEPTION '% takes no remote_model: its server serves one model', provider
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(endpoint, kind.endpoint) IS NULL THEN
        RAISE EXCEPTION 'a % reranker needs its endpoint: the base URL of its server (http://host:port)', provider
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('SELECT embeddings.register_reranker(%L, %L, ''http://127.0.0.1:8080'');', name, provider);
    END IF;
    -- The limits, as the table's checks bound them (said here by name, with the value given).
    PERFORM embeddings_internal.check_range('embeddings.register_reranker()', 'max_documents', max_documents, 1, 10000);
    PERFORM embeddings_internal.check_range('embeddings.register_reranker()', 'max_in_flight', max_in_flight, 1, 64);
    PERFORM embeddings_internal.check_range('embeddings.register_reranker()', 'max_tokens', max_tokens, 1, 1000000);
    PERFORM embeddings_internal.check_range('embeddings.register_reranker()', 'timeout_seconds',
                                            register_reranker.timeout_seconds::numeric, 0, 600, true);
    IF credential IS NOT NULL AND credential <> '' AND credential !~ '^[A-Za-z0-9_.-]{1,64}$' THEN
        RAISE EXCEPTION 'credential % is not a key''s name', quote_literal(credential)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The name of a file in the worker''s EMBED_API_KEY_DIR (letters, digits, ".", "_", "-"), never the key itself.';
    END IF;
    r.name := name;
    r.provider := provider;
    r.endpoint := rtrim(coalesce(endpoint, kind.endpoint), '/');
    r.remote_model := CASE WHEN kind.sends_model THEN coalesce(remote_model, name) END;
    r.max_documents := coalesce(max_documents, kind.max_documents);
    r.max_tokens := coalesce(max_tokens, kind.max_tokens);
    r.max_in_flight := coalesce(max_in_flight, 4);
    r.timeout_seconds := coalesce(register_reranker.timeout_seconds, 30);
    r.credential := CASE WHEN credential IS NULL THEN kind.credential ELSE nullif(credential, '') END;
    PERFORM embeddings_internal.check_endpoint(name, r.endpoint, r.credential);
    INSERT INTO embeddings.rerankers AS rr (name, provider, endpoint, remote_model, max_documents, max_tokens,
                                            max_in_flight, timeout_seconds, credential, description)
    VALUES (r.name, r.provider, r.endpoint, r.remote_model, r.max_documents, r.max_tokens,
            r.max_in_flight, r.timeout_seconds, r.credential, description)
    ON CONFLICT ON CONSTRAINT rerankers_pkey DO UPDATE
    SET provider = excluded.provider, endpoint = excluded.endpoint, remote_model = excluded.remote_model,
        max_documents = excluded.max_documents, max_tokens = excluded.max_tokens,
        max_in_flight = excluded.max_in_flight, timeout_seconds = excluded.timeout_seconds,
        credential = excluded.credential, description = coalesce(excluded.description, rr.description),
        updated_at = now();
    RETURN name;
END
$$;
COMMENT ON FUNCTION embeddings.register_reranker IS
    'Adds or updates a remote reranker that searches and set_rerank() may name. Schema owner only.';

-- Removes remote reranker `name`; false when there was none. Refused while a target's rerank
-- stage names it (set_rerank()): its searches would quietly fall back on a cross-encoder
-- directory of the same name, or fail, instead of what its owner chose. Searches that name it
-- themselves fail from then on (503, naming it), or use such a directory. Schema owner only.
CREATE FUNCTION embeddings.unregister_reranker(name text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    users text;
BEGIN
    PERFORM FROM embeddings.rerankers r WHERE r.name = unregister_reranker.name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT string_agg(embeddings_internal.target_name(t), ', ' ORDER BY t.id) INTO users
    FROM embeddings.targets t WHERE t.rerank_model = unregister_reranker.name;
    IF users IS NOT NULL THEN
        RAISE EXCEPTION 'reranker % is the rerank stage of %', name, users
            USING ERRCODE = 'object_in_use',
                  HINT = 'Set another first, or none: SELECT embeddings.set_rerank(<table>, NULL);';
    END IF;
    DELETE FROM embeddings.rerankers r WHERE r.name = unregister_reranker.name;
    RETURN true;
END
$$;
COMMENT ON FUNCTION embeddings.unregister_reranker IS
    'Removes a remote reranker no target''s rerank stage names. Schema owner only.';

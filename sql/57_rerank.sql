-- The rerank stage of a search, set per target: after the first ranking (by meaning, or
-- hybrid), the worker's cross-encoder reads the question with each of the first `depth`
-- results and reorders them by its scores (worker/retrieval/rerank.py; docs/rag.md). The
-- stage runs in the worker (`POST /search`, `embed-worker search`), never in SQL: these are its
-- defaults for searches that do not say (a search may name another reranker, or none).

-- Sets (or with model NULL, clears) the rerank stage of `source`'s target (of
-- `embedding_column`, when it has several). The model is a cross-encoder's name as the worker
-- finds it (a directory on EMBED_MODEL_PATH, say); the worker checks it when a search first
-- uses it. `depth`: how many results it reorders (NULL: the worker's default, 3 x k and at
-- least 20). Schema owner only, like watch(): it changes what every search of the table does.
CREATE FUNCTION embeddings.set_rerank(source regclass, model text, depth integer DEFAULT NULL,
                                      embedding_column name DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets := embeddings.search_target(source, embedding_column);
BEGIN
    IF model IS NOT NULL AND model !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$' THEN
        RAISE EXCEPTION 'embeddings: % is not a reranker''s name', quote_literal(model)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A model directory''s name on the worker''s EMBED_MODEL_PATH (letters, digits, ".", "_", "-"), never a path.';
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
REVOKE ALL ON FUNCTION embeddings.set_rerank(regclass, text, integer, name) FROM PUBLIC;

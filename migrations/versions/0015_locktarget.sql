-- 0015: the worker's write locks a target's table and registration in one call
-- (embeddings.lock_target, 42_definitions.sql) instead of a DO block and a second query.

CREATE FUNCTION embeddings.lock_target(target_id integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    SELECT tg.source, tg.embedding_column, tg.chunk_table INTO t
    FROM embeddings.targets tg WHERE tg.id = lock_target.target_id;
    BEGIN
        IF t.source IS NULL THEN
            NULL;
        ELSIF t.chunk_table IS NOT NULL THEN
            EXECUTE format('LOCK TABLE %s IN ACCESS SHARE MODE', t.source);
        ELSE
            EXECUTE format('EXPLAIN UPDATE %s SET %I = %I WHERE false',
                           t.source, t.embedding_column, t.embedding_column);
        END IF;
    EXCEPTION WHEN undefined_column OR undefined_table THEN
        NULL;
    END;
    RETURN embeddings.lock_target_version(target_id);
END
$$;

-- 0011: every ALTER of a watched table (renames of it or its columns included) bumps the target's definition
-- version, so a batch read under the old names is handed back instead of failing an attempt.
--   * embeddings.refresh_target() (45_dropped.sql)

CREATE OR REPLACE FUNCTION embeddings.refresh_target(target_id integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
    before embeddings.targets;
    rel regclass;
BEGIN
    SELECT * INTO before FROM embeddings.targets tg WHERE tg.id = target_id FOR UPDATE;
    IF NOT FOUND OR NOT EXISTS (SELECT FROM pg_class WHERE oid = before.source) THEN
        RETURN;
    END IF;
    UPDATE embeddings.targets tg
    SET key_columns = coalesce(r.key_names, tg.key_columns),
        key_types = coalesce(r.key_types, tg.key_types),
        content_column = coalesce(r.content_name, tg.content_column),
        embedding_column = coalesce(r.embedding_name, tg.embedding_column),
        problem = CASE
            WHEN r.key_names IS NULL OR cardinality(r.key_names) <> cardinality(tg.key_attnums) THEN
                format('its key column (%s) was dropped; watch the table again with a key', array_to_string(tg.key_columns, ', '))
            WHEN tg.content_function IS NULL AND r.content_name IS NULL THEN
                format('its content column %I was dropped; watch the table again with its new content', tg.content_column)
            WHEN tg.content_function IS NOT NULL AND NOT EXISTS (SELECT FROM pg_proc WHERE oid = tg.content_function) THEN
                'its content function was dropped; create it again and watch the table again'
        END
    FROM (SELECT
            (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(before.key_attnums) WITH ORDINALITY AS k(n, i)
             JOIN pg_attribute a ON a.attrelid = before.source AND a.attnum = k.n AND NOT a.attisdropped) AS key_names,
            (SELECT array_agg(a.atttypid::regtype ORDER BY k.i) FROM unnest(before.key_attnums) WITH ORDINALITY AS k(n, i)
             JOIN pg_attribute a ON a.attrelid = before.source AND a.attnum = k.n AND NOT a.attisdropped) AS key_types,
            (SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = before.source AND a.attnum = before.content_attnum AND NOT a.attisdropped) AS content_name,
            (SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = before.source AND a.attnum = before.embedding_attnum AND NOT a.attisdropped) AS embedding_name
         ) r
    WHERE tg.id = target_id
    RETURNING tg.* INTO t;
    IF t.problem IS NOT NULL AND t.problem IS DISTINCT FROM before.problem THEN
        RAISE WARNING 'embeddings: % is no longer embedded: %', embeddings.target_name(t), t.problem;
    END IF;
    IF t.chunk_table IS NOT NULL AND t.problem IS NULL THEN
        PERFORM embeddings.follow_chunk_keys(t);  -- renamed key columns (55_chunks.sql)
    END IF;
    FOREACH rel IN ARRAY embeddings.install_triggers(t) LOOP
        PERFORM embeddings.enqueue_rows(t, rel);  -- a partition attached with its rows
    END LOOP;
    IF (t.key_columns, t.key_types, t.content_column, t.embedding_column, t.problem)
       IS DISTINCT FROM (before.key_columns, before.key_types, before.content_column, before.embedding_column, before.problem) THEN
        UPDATE embeddings.targets tg SET updated_at = now() WHERE tg.id = target_id;
    END IF;
    -- A new version after every ALTER of the table: a batch read under the old names (of the
    -- table itself too, which the registration does not store) is handed back, not failed.
    -- The write transaction's table lock orders it before or after this one, never between.
    UPDATE embeddings.targets tg SET version = tg.version + 1 WHERE tg.id = target_id;
    PERFORM pg_notify('embeddings_targets', t.id::text);  -- workers re-read names
END
$$;

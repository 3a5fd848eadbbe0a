-- The row store: a target's vectors in an embedding column of the watched table itself, the
-- default (`embeddings.watch(source, content)`). Its store_table is the table. Its operations
-- (sql/54_stores.sql lists them) follow; worker/pipeline/stores/row.py is the worker's side.
--
-- The worker's write is an UPDATE of the application's rows, under the stale-write guard (the
-- row's content still has the md5 the worker loaded). With clear_on_update (the default), a
-- content change clears the stale vector in the same row version (the clear trigger,
-- sql/30_triggers.sql), so that no reader sees a vector of older content.

-- A row lacks its vector while its embedding column is NULL.
CREATE FUNCTION embeddings_internal.row_store_missing_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.render('%(alias)I.%(column)I IS NULL', jsonb_build_object('alias', alias, 'column', t.embedding_column))
$$;

CREATE FUNCTION embeddings_internal.row_store_holds_vector_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.render('%(alias)I.%(column)I IS NOT NULL', jsonb_build_object('alias', alias, 'column', t.embedding_column))
$$;

-- A new row comes with its vector when it was copied with it (a restore, replication). (The
-- alias as it is: the replica trigger's NEW.)
CREATE FUNCTION embeddings_internal.row_store_new_row_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.render('%(alias)s.%(column)I IS NULL', jsonb_build_object('alias', alias, 'column', t.embedding_column))
$$;

-- An updated row whose content is unchanged needs a job when its vector changed with its key.
-- With clear_on_update: a key whose embedding this statement cleared changed too. The clear
-- trigger compares each physical row with itself, the statement trigger each key with itself:
-- one UPDATE that moves keys and content together (SET pos = pos + 1, body = <text of pos + 1>)
-- leaves every key's content as it was, yet every row's embedding cleared. Without clearing,
-- each row such an UPDATE moves carries its vector to its new key, whose content is what it
-- was: a key whose vector changed in a statement that took some key away changed too (the
-- worker's own writes change no key). Reached only for rows whose content is unchanged; the
-- key test runs once per statement, first, and the vectors are compared as text (no operator
-- of the vector type is looked up here).
CREATE FUNCTION embeddings_internal.row_store_changed_vector_sql(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.render(
        CASE WHEN t.clear_on_update THEN '(n.%(column)I IS NULL AND o.%(column)I IS NOT NULL)'
             ELSE '(EXISTS (%(vanished)s) AND n.%(column)I::pg_catalog.text IS DISTINCT FROM o.%(column)I::pg_catalog.text)' END,
        jsonb_build_object('column', t.embedding_column, 'vanished', embeddings_internal.vanished_rows_sql(t)))
$$;

-- The write updates the table's rows: the lock an UPDATE takes.
CREATE FUNCTION embeddings_internal.row_store_lock_mode(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'ROW EXCLUSIVE'::text
$$;

-- The row store's writes, as the table's owner (access_spec()s, sql/32_access.sql): its
-- vectors, and its shadow column's during a model change (sql/44_changes.sql).
CREATE FUNCTION embeddings_internal.row_store_access(t embeddings.targets) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    shadow name := (SELECT c.name FROM embeddings_internal.vector_columns(t) c WHERE c.suffix = '_shadow');
    content text := embeddings_internal.content_sql(t, 't', NULL, wrapped => false);
    col record;
BEGIN
    -- The rows the write is about to store or clear, locked as its UPDATE would lock them
    -- (FOR NO KEY UPDATE), except that a row another transaction holds (an application's open
    -- transaction) is skipped rather than waited for. Returns the keys of those rows: the worker
    -- writes the others, and those wait for a later batch. A row gone is not returned.
    RETURN NEXT embeddings_internal.access_spec('_lock_rows', ARRAY['keys text[]'] || embeddings_internal.key_params(t), 'SETOF text', $template$
        held := ARRAY(SELECT v.key FROM ROWS FROM (%(key_rows)s) AS v(key%(key_aliases)s) JOIN %(source)s t ON %(key_match)s
                      FOR NO KEY UPDATE OF t SKIP LOCKED);
        IF pg_catalog.cardinality(held) OPERATOR(pg_catalog.<) pg_catalog.cardinality(%(fn)I.keys) THEN
            RETURN QUERY
                SELECT v.key FROM ROWS FROM (%(key_rows)s) AS v(key%(key_aliases)s)
                WHERE NOT (v.key OPERATOR(pg_catalog.=) ANY (held))
                  AND EXISTS (SELECT FROM %(source)s t WHERE %(key_match)s);
        END IF;
        $template$, declare => E'DECLARE\n    held text[];\n');

    -- Vectors where the content is still the one loaded (its md5), and blank content's cleared;
    -- the tsvector of full-text search (sql/59_hybrid.sql) with the embedding column's vector.
    FOR col IN SELECT * FROM embeddings_internal.vector_columns(t) LOOP
        RETURN NEXT embeddings_internal.access_spec('_store' || col.suffix,
            ARRAY['keys text[]'] || embeddings_internal.key_params(t) || ARRAY['vectors ' || col.type || '[]', 'digests text[]'],
            'SETOF text', $template$
            RETURN QUERY
                UPDATE %(source)s t SET %(column)I = v.e%(fts)s
                FROM ROWS FROM (%(key_rows)s, pg_catalog.unnest(%(fn)I.vectors), pg_catalog.unnest(%(fn)I.digests)) AS v(key%(key_aliases)s, e, h)
                WHERE %(key_match)s AND CASE WHEN v.h IS NULL THEN pg_catalog.md5(%(content)s) IS NULL ELSE pg_catalog.md5(%(content)s) OPERATOR(pg_catalog.=) v.h END
                RETURNING v.key;
            $template$,
            jsonb_build_object('column', col.name,
                               'fts', CASE WHEN col.suffix = '' THEN embeddings_internal.fts_assign_sql(t, content) ELSE '' END));
        RETURN NEXT embeddings_internal.access_spec('_blank' || col.suffix,
            ARRAY['keys text[]'] || embeddings_internal.key_params(t) || ARRAY['digests text[]'], 'SETOF text', $template$
            RETURN QUERY
                UPDATE %(source)s t SET %(column)I = NULL%(fts)s
                FROM ROWS FROM (%(key_rows)s, pg_catalog.unnest(%(fn)I.digests)) AS v(key%(key_aliases)s, h)
                WHERE %(key_match)s AND CASE WHEN v.h IS NULL THEN pg_catalog.md5(%(content)s) IS NULL ELSE pg_catalog.md5(%(content)s) OPERATOR(pg_catalog.=) v.h END AND t.%(column)I IS NOT NULL
                RETURNING v.key;
            $template$,
            jsonb_build_object('column', col.name,
                               'fts', CASE WHEN col.suffix = '' THEN embeddings_internal.fts_assign_sql(t, NULL) ELSE '' END));
    END LOOP;

    IF shadow IS NOT NULL THEN
        -- Model-change completion (embeddings_internal.complete_change): the rows with content still
        -- lacking the new vector and waiting in no job (`pending`: keys as jobs carry them)...
        RETURN NEXT embeddings_internal.access_spec('_unshadowed', ARRAY['pending jsonb[]'], 'SETOF jsonb', $template$
            RETURN QUERY
                SELECT s.k FROM (SELECT %(key_json)s AS k FROM %(source)s t
                                 WHERE t.%(shadow)I IS NULL AND (%(content)s) OPERATOR(pg_catalog.~) %(nonblank)L) s
                WHERE NOT (s.k OPERATOR(pg_catalog.=) ANY (%(fn)I.pending));
            $template$, jsonb_build_object('shadow', shadow), stable => true);
        -- ... and, under the table lock, whether the swap may go ahead (no row with a vector
        -- lacks the new one), clearing the new vectors of rows whose content changed since
        -- (their vector was cleared and their job is among `pending`).
        RETURN NEXT embeddings_internal.access_spec('_swap_prepare', ARRAY['pending jsonb[]'], 'boolean', $template$
            IF EXISTS (SELECT FROM %(source)s t WHERE t.%(shadow)I IS NULL AND t.%(column)I IS NOT NULL) THEN
                RETURN false;
            END IF;
            UPDATE %(source)s t SET %(shadow)I = NULL
            WHERE t.%(column)I IS NULL AND t.%(shadow)I IS NOT NULL AND %(key_json)s OPERATOR(pg_catalog.=) ANY (%(fn)I.pending);
            RETURN true;
            $template$, jsonb_build_object('shadow', shadow, 'column', t.embedding_column));
    END IF;
END
$$;

-- The verifying sweep clears the row's vector in place.
CREATE FUNCTION embeddings_internal.row_store_clear_sql(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.render('UPDATE %(source)s t SET %(column)I = NULL '
                             'WHERE t.tableoid OPERATOR(pg_catalog.=) r.rel AND t.ctid OPERATOR(pg_catalog.=) r.place',
                             jsonb_build_object('source', t.source::text, 'column', t.embedding_column))
$$;

-- Search reads the table `s` itself.
CREATE FUNCTION embeddings_internal.row_store_search_sql(t embeddings.targets) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.one_vector_search_sql(t, t.source::text || ' s', 's')
$$;

-- Status's exact counts: the table's rows, those with a vector, those with blank content.
CREATE FUNCTION embeddings_internal.row_store_exact_counts(t embeddings.targets,
    OUT total_rows bigint, OUT embedded_rows bigint, OUT cleared_rows bigint, OUT chunks bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.one_vector_exact_counts(
        t, t.source::text || ' s', embeddings_internal.render('s.%(column)I', jsonb_build_object('column', t.embedding_column)))
$$;

-- Status's estimate of the rows with a vector: each leaf's rows times the share of them whose
-- embedding column ANALYZE found not NULL (NULL where a leaf with rows has no statistics yet).
CREATE FUNCTION embeddings_internal.row_store_estimated_vectors(t embeddings.targets,
    OUT embedded double precision, OUT chunks double precision)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.estimated_not_null(t.source, t.embedding_column), NULL::double precision
$$;

-- Store kinds: where a target keeps its vectors, as strategies (worker/pipeline/stores/ is the
-- worker's side of the same split). embeddings.targets.store_kind names the kind:
--
--   row      the embedding column of the watched table itself (this file)
--   chunks   a chunk table, a row per chunk of a document (sql/55_chunks.sql)
--   side     a side table keyed like the watched table (sql/56_side.sql)
--
-- Each kind's behaviour is in its functions, named embeddings.<kind>_store_<operation>; for
-- these operations the shared code calls the dispatchers below, embeddings.store_<operation>(t,
-- ...), never asking which kind a target is. (Elsewhere a one-line test of store_kind remains
-- where one kind differs: watch()'s store changes, a model change, status's estimates.) A new
-- kind is a file of those functions, a value of store_kind, and a look at those tests. The
-- operations:
--
--   missing_sql(t, alias) text        a predicate true when the row `alias` lacks its vectors
--                                     (backfills, sweep(), scans)
--   holds_vector_sql(t, alias) text   a predicate true when the row `alias` has a vector that a
--                                     blank content must clear, or NULL: never (scans)
--   new_row_sql(t, alias) text        a predicate true when a new row (`alias`) needs a job
--                                     (the insert triggers, sql/30_triggers.sql)
--   lock_mode(t) text                 the table lock of the worker's write (embeddings.lock_target)
--   access(t, a) text[]               the kind's owner-run functions: the vector writes, their
--                                     model-change twins (sql/32_access.sql generates the rest)
--   search_sql(t) jsonb               the parts of a search statement (sql/58_search.sql)
--   exact_counts(t)                   status's exact counts (sql/50_status.sql)
--
-- The dispatchers run where code is made or an operator reads (watch(), generate_access(),
-- status), never on the write path: the triggers and the worker's functions they make are
-- plain SQL per target.

-- The function of target t's kind for `operation`; an error naming both when there is none.
-- A kind is a lowercase word: never a prefix that could name another function of this schema
-- (the per-target embeddings_<id>_store, say). Dispatchers run it with their caller's rights.
CREATE FUNCTION embeddings.store_function(t embeddings.targets, operation text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fn text := format('embeddings.%I', t.store_kind || '_store_' || operation);
BEGIN
    IF t.store_kind IS NULL OR t.store_kind !~ '^[a-z]+$' OR operation !~ '^[a-z_]+$' OR to_regproc(fn) IS NULL THEN
        RAISE EXCEPTION 'embeddings: the % store has no % operation (no function %)', t.store_kind, operation, fn
            USING ERRCODE = 'undefined_function';
    END IF;
    RETURN fn;
END
$$;

-- Whether target t's store holds several vectors per row (a chunked target's): search returns
-- one result per row, its best chunk. Plain SQL (inlined into search()).
CREATE FUNCTION embeddings.store_has_chunks(t embeddings.targets) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.store_kind = 'chunks'
$$;

-- The relation that holds target t's embedding column: its side table, its chunk table, or its
-- table itself.
CREATE FUNCTION embeddings.vector_relation(t embeddings.targets) RETURNS regclass
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(t.side_table, t.chunk_table, t.source)
$$;

-- The dispatchers (the list above says what each returns). The predicates' three share one
-- call: the kind's `operation` of (t, alias).
CREATE FUNCTION embeddings.store_predicate_sql(t embeddings.targets, operation text, alias text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found text;
BEGIN
    EXECUTE format('SELECT %s($1, $2)', embeddings.store_function(t, operation)) INTO found USING t, alias;
    RETURN found;
END
$$;

CREATE FUNCTION embeddings.embedding_missing_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings.store_predicate_sql(t, 'missing_sql', alias)
$$;

CREATE FUNCTION embeddings.store_holds_vector_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings.store_predicate_sql(t, 'holds_vector_sql', alias)
$$;

CREATE FUNCTION embeddings.store_new_row_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings.store_predicate_sql(t, 'new_row_sql', alias)
$$;

CREATE FUNCTION embeddings.store_lock_mode(t embeddings.targets) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found text;
BEGIN
    EXECUTE format('SELECT %s($1)', embeddings.store_function(t, 'lock_mode')) INTO found USING t;
    RETURN found;
END
$$;

CREATE FUNCTION embeddings.store_access(t embeddings.targets, a jsonb) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    made text[];
BEGIN
    EXECUTE format('SELECT %s($1, $2)', embeddings.store_function(t, 'access')) INTO made USING t, a;
    RETURN made;
END
$$;

CREATE FUNCTION embeddings.search_sql(t embeddings.targets) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parts jsonb;
BEGIN
    EXECUTE format('SELECT %s($1)', embeddings.store_function(t, 'search_sql')) INTO parts USING t;
    RETURN parts;
END
$$;

CREATE FUNCTION embeddings.exact_counts(t embeddings.targets,
    OUT total_rows bigint, OUT embedded_rows bigint, OUT cleared_rows bigint, OUT chunks bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('SELECT * FROM %s($1)', embeddings.store_function(t, 'exact_counts'))
        INTO total_rows, embedded_rows, cleared_rows, chunks USING t;
END
$$;

-- The row store: the vectors in the table's own embedding column.

CREATE FUNCTION embeddings.row_store_missing_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('%I.%I IS NULL', alias, t.embedding_column)
$$;

CREATE FUNCTION embeddings.row_store_holds_vector_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('%I.%I IS NOT NULL', alias, t.embedding_column)
$$;

-- A new row comes with its vector when it was copied with it (a restore, replication).
CREATE FUNCTION embeddings.row_store_new_row_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('%s.%I IS NULL', alias, t.embedding_column)
$$;

-- The write updates the table's rows: the lock an UPDATE takes.
CREATE FUNCTION embeddings.row_store_lock_mode(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'ROW EXCLUSIVE'::text
$$;

-- The row store's writes (its vectors, and its shadow column's during a model change).
-- Returns the names of the functions created.
CREATE FUNCTION embeddings.row_store_access(t embeddings.targets, a jsonb) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    shadow name := (SELECT c.name FROM embeddings.vector_columns(t, t.source) c WHERE c.suffix = '_shadow');
    made text[] := '{}';
    col record;
BEGIN
    -- The rows the write is about to store or clear, locked as its UPDATE would lock them
    -- (FOR NO KEY UPDATE), except that a row another transaction holds (an application's open
    -- transaction) is skipped rather than waited for. Returns the keys of those rows: the worker
    -- writes the others, and those wait for a later batch. A row gone is not returned.
    made := made || embeddings.create_access_function(a, '_lock_rows', format('keys text[]%s', a->>'key_params'),
        'SETOF text',
        format($b$held := ARRAY(SELECT v.key FROM ROWS FROM (%1$s) AS v(key%2$s) JOIN %3$s t ON %4$s
                              FOR NO KEY UPDATE OF t SKIP LOCKED);
            IF pg_catalog.cardinality(held) OPERATOR(pg_catalog.<) pg_catalog.cardinality($1) THEN
                RETURN QUERY
                    SELECT v.key FROM ROWS FROM (%1$s) AS v(key%2$s)
                    WHERE NOT (v.key OPERATOR(pg_catalog.=) ANY (held))
                      AND EXISTS (SELECT FROM %3$s t WHERE %4$s);
            END IF;$b$,
            a->>'key_rows', a->>'key_aliases', t.source, a->>'key_match'),
        head => E'DECLARE\n    held text[];\n');

    FOR col IN SELECT * FROM embeddings.vector_columns(t, t.source) LOOP
        made := made || embeddings.create_access_function(a, '_store' || col.suffix,
            format('keys text[]%s, vectors %s[], digests text[]', a->>'key_params', col.type), 'SETOF text',
            format($b$RETURN QUERY
                UPDATE %1$s t SET %2$I = v.e%9$s
                FROM ROWS FROM (%3$s, pg_catalog.unnest($%4$s), pg_catalog.unnest($%5$s)) AS v(key%6$s, e, h)
                WHERE %7$s AND CASE WHEN v.h IS NULL THEN pg_catalog.md5(%8$s) IS NULL ELSE pg_catalog.md5(%8$s) OPERATOR(pg_catalog.=) v.h END
                RETURNING v.key;$b$,
                t.source, col.name, a->>'key_rows', cardinality(t.key_columns) + 2, cardinality(t.key_columns) + 3,
                a->>'key_aliases', a->>'key_match', a->>'content',
                CASE WHEN col.suffix = '' THEN embeddings.fts_assign_sql(t, a->>'content') ELSE '' END));  -- sql/59_hybrid.sql
        made := made || embeddings.create_access_function(a, '_blank' || col.suffix,
            format('keys text[]%s, digests text[]', a->>'key_params'), 'SETOF text',
            format($b$RETURN QUERY
                UPDATE %1$s t SET %2$I = NULL%8$s
                FROM ROWS FROM (%3$s, pg_catalog.unnest($%4$s)) AS v(key%5$s, h)
                WHERE %6$s AND CASE WHEN v.h IS NULL THEN pg_catalog.md5(%7$s) IS NULL ELSE pg_catalog.md5(%7$s) OPERATOR(pg_catalog.=) v.h END AND t.%2$I IS NOT NULL
                RETURNING v.key;$b$,
                t.source, col.name, a->>'key_rows', cardinality(t.key_columns) + 2, a->>'key_aliases',
                a->>'key_match', a->>'content',
                CASE WHEN col.suffix = '' THEN embeddings.fts_assign_sql(t, NULL) ELSE '' END));
    END LOOP;

    IF shadow IS NOT NULL THEN
        -- Model-change completion (embeddings.complete_change): the rows with content still
        -- lacking the new vector and waiting in no job (`pending`: keys as jobs carry them)...
        made := made || embeddings.create_access_function(a, '_unshadowed', 'pending jsonb[]', 'SETOF jsonb',
            format($b$RETURN QUERY
                SELECT s.k FROM (SELECT %1$s AS k FROM %2$s t
                                 WHERE t.%3$I IS NULL AND (%4$s) OPERATOR(pg_catalog.~) '[^[:space:]]') s
                WHERE NOT (s.k OPERATOR(pg_catalog.=) ANY ($1));$b$,
                embeddings.key_json_sql(t, 't'), t.source, shadow, a->>'content'),
            stable => true);
        -- ... and, under the table lock, whether the swap may go ahead (no row with a vector
        -- lacks the new one), clearing the new vectors of rows whose content changed since
        -- (their vector was cleared and their job is among `pending`).
        made := made || embeddings.create_access_function(a, '_swap_prepare', 'pending jsonb[]', 'boolean',
            format($b$IF EXISTS (SELECT FROM %1$s t WHERE t.%2$I IS NULL AND t.%3$I IS NOT NULL) THEN
                RETURN false;
            END IF;
            UPDATE %1$s t SET %2$I = NULL
            WHERE t.%3$I IS NULL AND t.%2$I IS NOT NULL AND %4$s OPERATOR(pg_catalog.=) ANY ($1);
            RETURN true;$b$,
                t.source, shadow, t.embedding_column, embeddings.key_json_sql(t, 't')));
    END IF;

    RETURN made;
END
$$;

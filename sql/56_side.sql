-- Side tables: a target's vectors in a table of their own instead of a column of the watched
-- table (`embeddings.watch(..., store => 'side')`, docs/usage.md: "Where the vectors live").
--
-- The worker then never writes the application's rows: no new row version of them per vector, so
-- an application transaction at REPEATABLE READ or SERIALIZABLE that reads a row and then updates
-- it never fails because the worker embedded that row meanwhile, and the table's own UPDATE
-- triggers (updated_at, audit) do not fire for the worker's writes. The side table,
-- `<schema>.<table>_embeddings` unless side_table names another (`<table>_<embedding_column>`
-- for a second target whose embedding_column is not 'embedding'):
--
--   <the source's key column(s)>  same names, same types (with their modifiers and collation);
--                                  its primary key. No foreign key to the source: a foreign key
--                                  makes TRUNCATE of the source fail, and its cascades and
--                                  checks conflict with the application's REPEATABLE READ
--                                  transactions. Deletes are followed up instead (below).
--   <embedding_column>  halfvec(dim)  ('embedding' by default), with an HNSW cosine index
--   content_md5         text          md5 of the content the vector in <embedding_column> was
--                                      made from (as the worker's stale-write guard computes it:
--                                      md5 of the content's text): the vector's fingerprint, for
--                                      anything that verifies vectors against current content.
--                                      During a model change it describes that column's vector,
--                                      not the shadow column's; after the swap the new vector's
--                                      content is the one the row's next write records (a row
--                                      whose content changed during the change has its job)
--
-- It belongs to the source's owner, like the source's rows: the functions that read and write
-- it run as that role (sql/32_access.sql), and an ALTER TABLE ... OWNER TO of the source takes it
-- along. A row has a side row exactly while it has a vector; blank content deletes the side row.
--
-- Following the source:
--   * the worker's write orders itself after any other writer of the same keys
--     (embeddings_internal.lock_documents(), sql/41_locks.sql, as the chunk write does) before it checks
--     the content's md5 and upserts, so two writers of one row never interleave (stale-write
--     guard, exactly-once effect);
--   * DELETE: a statement trigger queues the deleted rows' keys; the worker finds them gone and
--     deletes their side rows (embeddings_<id>_forget). An UPDATE of the key queues the old key
--     as well. Nothing is written in the application's transaction but its keys;
--   * TRUNCATE: a statement trigger empties the side table (of the rows whose source row is
--     gone, when one partition of a partitioned table is truncated), in the same transaction;
--   * every read joins the source (search, status counts, backfills): a side row whose source
--     row is gone is never returned, even before its delete was followed up.
-- A content change does not clear the vector at once: the old vector stays until the new one
-- lands, as with clear_on_update => false, and watch() refuses clear_on_update => true for a side
-- table rather than ignore it. Clearing would be a write of the side table in the application's
-- transaction: at REPEATABLE READ it fails the application's UPDATE whenever the worker wrote
-- that vector since the transaction began (what the side table exists to avoid), and it cannot
-- keep a worker's write of the old content's vector, made in between, out without the worker
-- locking the application's rows. Readers that must not see a vector older than the content
-- compare content_md5 with the content's md5, or use the row store.
--
-- Chunk tables (sql/55_chunks.sql) have no foreign key either and follow deletes, key changes and
-- truncations the same way: both are stores apart from the table, whose shared functions are in
-- sql/54_stores.sql. The side store's operations (sql/54_stores.sql lists them) follow;
-- worker/pipeline/stores/side.py is the worker's side.
--
-- unwatch() and uninstall keep the side table and its vectors, as they keep an embedding column;
-- DROP TABLE it when no longer wanted. Dropping it forgets the target (45_dropped.sql).

-- Checks watch()'s `store` and `side_table` against the call and the target registered before
-- (`previous`; NULL id: none) and says whether the target keeps its vectors in a side table.
-- A target changes its store only by unwatch() and watch() again.
CREATE FUNCTION embeddings_internal.side_store(previous embeddings.targets, store text, side_table text, chunked boolean)
RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    was text := previous.store_kind;  -- NULL: none
    wanted text := coalesce(store, CASE WHEN side_table IS NOT NULL THEN 'side' END);
BEGIN
    IF store IS NOT NULL AND store NOT IN ('row', 'side') THEN
        RAISE EXCEPTION 'invalid store "%": ''row'' (a column of the table) or ''side'' (a side table)', store
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Chunked targets are made with chunk_tokens => N.';
    ELSIF store = 'row' AND side_table IS NOT NULL THEN
        RAISE EXCEPTION 'side_table is for store => ''side''' USING ERRCODE = 'invalid_parameter_value';
    ELSIF wanted IS NOT NULL AND chunked THEN
        RAISE EXCEPTION 'store and side_table are not for chunked targets: their vectors are in their chunk table'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF wanted IS NOT NULL AND was IS NOT NULL AND was <> wanted THEN
        RAISE EXCEPTION '%.% keeps its vectors %, not %', previous.source, previous.embedding_column,
                CASE was WHEN 'row' THEN 'in the table''s own column' WHEN 'side' THEN 'in a side table'
                         ELSE 'in a chunk table' END,
                CASE wanted WHEN 'row' THEN 'in the table''s own column' ELSE 'in a side table' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Unwatch it first (SELECT embeddings.unwatch(%L)), or pass another embedding_column.',
                                previous.source::text);
    END IF;
    RETURN coalesce(wanted, was, 'row') = 'side';
END
$$;

-- The kind of a target with one vector per row (watch_plain(), sql/40_watch.sql): side when
-- side_store() said so, else row.
CREATE FUNCTION embeddings_internal.plain_store_kind(side boolean) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN side THEN 'side' ELSE 'row' END
$$;

-- The side table of watch()'s call `o` (watch_store(), sql/40_watch.sql): the one the target
-- registered before (`previous`) keeps, whatever its name now (a renamed table's default name
-- is another), unless `side_table` names one; refused when that is another than the target's.
CREATE FUNCTION embeddings_internal.watch_side_table(o embeddings_internal.watch_options, previous embeddings.targets) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    side_name text := CASE WHEN o.side_table IS NULL AND previous.store_kind = 'side' THEN previous.store_table::text
                           ELSE embeddings_internal.side_table_name(o.source, o.side_table, o.embedding_column) END;
BEGIN
    IF previous.store_kind = 'side' AND to_regclass(side_name) IS DISTINCT FROM previous.store_table THEN
        RAISE EXCEPTION '%.% keeps its vectors in %, not %', o.source, o.embedding_column, previous.store_table, side_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Unwatch it first to move its vectors to another side table.';
    END IF;
    RETURN side_name;
END
$$;

-- The side table's name, schema-qualified and quoted: `side_table` as given (optionally
-- schema-qualified; unqualified, beside the source), else `<table>_embeddings` beside the
-- source, `<table>_<embedding_column>` for an embedding column not named 'embedding' (a second
-- target of the table). Either name refused past max_identifier_length.
CREATE FUNCTION embeddings_internal.side_table_name(source regclass, side_table text, embedding_column name) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parts text[];
    part text;
    found text;
    schema_name name;
    derived text;
BEGIN
    IF side_table IS NULL THEN
        SELECT n.nspname, c.relname || CASE WHEN embedding_column = 'embedding' THEN '_embeddings'
                                            ELSE '_' || embedding_column END
        INTO schema_name, derived FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source;
        found := format('%I.%I', schema_name, derived);
        -- (Postgres would cut it, to the table's own name for a name of 63 bytes)
        IF pg_catalog.octet_length(derived) > current_setting('max_identifier_length')::integer THEN
            RAISE EXCEPTION 'the side table''s name % is % bytes, over Postgres'' %', found, pg_catalog.octet_length(derived),
                    current_setting('max_identifier_length')
                USING ERRCODE = 'name_too_long', HINT = 'Name the table with side_table => ''...''.';
        END IF;
        RETURN found;
    END IF;
    BEGIN
        parts := parse_ident(side_table);
    EXCEPTION WHEN OTHERS THEN
        parts := NULL;
    END;
    found := CASE cardinality(parts)
        WHEN 1 THEN (SELECT format('%I.%I', n.nspname, parts[1])
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source)
        WHEN 2 THEN format('%I.%I', parts[1], parts[2])
    END;
    IF found IS NULL THEN
        RAISE EXCEPTION 'invalid side_table "%": a table name, optionally schema-qualified', side_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- (Postgres would cut it to 63 bytes, silently: another table's name, or another schema's)
    FOREACH part IN ARRAY parts LOOP
        IF pg_catalog.octet_length(part) > current_setting('max_identifier_length')::integer THEN
            RAISE EXCEPTION 'side_table => %: the name % is % bytes, over Postgres'' %', quote_literal(side_table),
                    format('%I', part), pg_catalog.octet_length(part), current_setting('max_identifier_length')
                USING ERRCODE = 'name_too_long',
                      HINT = 'Postgres would cut it to its first ' || current_setting('max_identifier_length')
                             || ' bytes (max_identifier_length): name a shorter table (or schema).';
        END IF;
    END LOOP;
    RETURN found;
END
$$;

-- Creates side table `side_name` (schema-qualified, quoted) for target `target_id` (NULL: a new
-- target) of `source`, keyed by the columns `key_nums` of the source, or checks that the existing
-- one has the expected shape and serves no other target. Without its HNSW index: watch() adds it
-- (or defers it, for a large table). Returns it.
CREATE FUNCTION embeddings_internal.ensure_side_table(
    side_name text,
    source regclass,
    key_nums smallint[],
    embedding_column name,
    dims integer,
    target_id integer
) RETURNS regclass
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    vschema name := embeddings.vector_schema();
    existing regclass := to_regclass(side_name);
    problem text;
    columns text;
    keys text;
BEGIN
    IF existing = source OR EXISTS (
        SELECT FROM embeddings.targets tg
        WHERE existing = tg.source OR (existing = tg.store_table AND tg.id IS DISTINCT FROM target_id)) THEN
        RAISE EXCEPTION 'table % is a watched table, or holds the vectors of another target', existing
            USING ERRCODE = 'duplicate_table', HINT = 'Name another table with side_table => ...';
    END IF;
    IF existing IS NOT NULL THEN
        PERFORM embeddings_internal.check_made_store(existing, source, 'side_table');
        -- The key columns with their exact types, the vector and md5 columns, a unique index on
        -- the key columns.
        SELECT string_agg(format_type(need.typ, need.typmod) || ' ' || quote_ident(need.col), ', ') INTO problem
        FROM (SELECT a.attname AS col, a.atttypid AS typ, a.atttypmod AS typmod
              FROM unnest(key_nums) AS k(n) JOIN pg_attribute a ON a.attrelid = source AND a.attnum = k.n
              UNION ALL VALUES (embedding_column, format('%I.halfvec', vschema)::regtype::oid, dims),
                               ('content_md5', 'text'::regtype::oid, -1)) need
        WHERE NOT EXISTS (
            SELECT FROM pg_attribute a
            WHERE a.attrelid = existing AND a.attname = need.col AND a.attnum > 0 AND NOT a.attisdropped
              AND a.atttypid = need.typ AND a.atttypmod = need.typmod);
        IF problem IS NULL AND NOT EXISTS (
            SELECT FROM pg_index i
            WHERE i.indrelid = existing AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
              AND i.indnkeyatts = cardinality(key_nums)
              AND (SELECT array_agg(a.attname ORDER BY x.i) FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS x(n, i)
                   JOIN pg_attribute a ON a.attrelid = existing AND a.attnum = x.n)
                  = (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(key_nums) WITH ORDINALITY AS k(n, i)
                     JOIN pg_attribute a ON a.attrelid = source AND a.attnum = k.n)) THEN
            problem := 'a unique index on the key columns, in key order';
        END IF;
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'table % exists but is not a side table for % (missing or mistyped: %)', existing, source, problem
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Drop it, or name another table with side_table => ...';
        END IF;
        RETURN existing;
    END IF;
    -- Key columns as the source has them: type modifiers (char(10), numeric(20,5)) and collation
    -- (equality under a nondeterministic collation) included, in key order; the primary key in
    -- that order (embeddings_internal.follow_store_keys() relies on it).
    SELECT string_agg(format('%I %s%s NOT NULL', a.attname, format_type(a.atttypid, a.atttypmod),
                             CASE WHEN a.attcollation <> 0 AND a.attcollation <> ty.typcollation
                                  THEN format(' COLLATE %I.%I', cn.nspname, co.collname) ELSE '' END), ', ' ORDER BY k.i),
           string_agg(format('%I', a.attname), ', ' ORDER BY k.i)
    INTO columns, keys
    FROM unnest(key_nums) WITH ORDINALITY AS k(n, i)
    JOIN pg_attribute a ON a.attrelid = source AND a.attnum = k.n
    JOIN pg_type ty ON ty.oid = a.atttypid
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace;
    EXECUTE format('CREATE TABLE %s (%s, %I %I.halfvec(%s), content_md5 text NOT NULL, PRIMARY KEY (%s))',
                   side_name, columns, embedding_column, vschema, dims, keys);
    existing := to_regclass(side_name);
    INSERT INTO embeddings.made_tables (store, source, kind) VALUES (existing, source, 'side')
    ON CONFLICT (store) DO UPDATE SET source = excluded.source, kind = excluded.kind;
    -- The source's owner's, as its rows are: the functions that write it run as that role.
    EXECUTE format('ALTER TABLE %s OWNER TO %I', existing,
                   (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = source));
    EXECUTE format('COMMENT ON TABLE %s IS %L', existing,
                   format('Embeddings of the rows of %s, kept by embed-worker (embeddings.watch, store => ''side'')', embeddings_internal.display_name(source)));
    RETURN existing;
END
$$;

-- The side store's operations ----------------------------------------------------------------

-- A row lacks its vector while no side row of its key holds one.
CREATE FUNCTION embeddings_internal.side_store_missing_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.render('NOT EXISTS (SELECT FROM %(store)s c WHERE %(same_key)s AND c.%(column)I IS NOT NULL)',
                             jsonb_build_object('store', t.store_table::text, 'same_key', embeddings_internal.key_equal_sql(t, alias, 'c'),
                                                'column', t.embedding_column))
$$;

CREATE FUNCTION embeddings_internal.side_store_holds_vector_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'NOT ' || embeddings_internal.side_store_missing_sql(t, alias)
$$;

-- The functions of a side-table target that read and write its side table, as the table's
-- owner (access_spec()s, sql/32_access.sql): the vector writes under the stale-write guard,
-- their model-change twins, and following the table's deletes and truncations.
--
-- Each write joins the row as it is now and writes only where its content's md5 is the one the
-- worker loaded (`cur`: the rows given, key_ the key as given, kc0, kc1, ... the row's key
-- values, e_ the vector, h_ the md5, f_ its tsvector with full-text search on, sql/59_hybrid.sql);
-- the worker has ordered itself after any other writer of the rows (embeddings_internal.lock_documents(),
-- sql/41_locks.sql) from before this check until its commit, so no other writer of the same row
-- comes in between. Every query names the table before the side table: locks are taken in that
-- order everywhere (the worker's write, search, status, TRUNCATE, a model change's swap), never
-- the other. The side table's key columns are named as the source's, and may be named as a
-- parameter (k0, keys, ...): ON CONFLICT names columns (#variable_conflict use_column), and
-- the parameters are qualified.
CREATE FUNCTION embeddings_internal.side_store_access(t embeddings.targets) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    shadow name := (SELECT c.name FROM embeddings_internal.vector_columns(t) c WHERE c.suffix = '_shadow');
    numbers jsonb := (SELECT jsonb_agg(jsonb_build_object('n', i - 1, 'column', c) ORDER BY i)
                      FROM unnest(t.key_columns) WITH ORDINALITY AS k(c, i));
    args jsonb := jsonb_build_object(
        'key_values', embeddings_internal.render_each(', t.%(column)I AS kc%(n)s', numbers, ''),
        'cur_values', embeddings_internal.render_each('cur.kc%(n)s', numbers, ', '),
        'side_cur', embeddings_internal.render_each('x.%(column)I %(equals)s cur.kc%(n)s',
                                           (SELECT jsonb_agg(jsonb_build_object('n', k.i - 1, 'column', k.c,
                                                                                'equals', embeddings_internal.key_operator(k.ty, 3)) ORDER BY k.i)
                                            FROM unnest(t.key_columns, t.key_types) WITH ORDINALITY AS k(c, ty, i)), ' AND '),
        'joined', embeddings_internal.key_equal_sql(t, 't', 'x'),
        'column', t.embedding_column, 'shadow', shadow,
        'content_is_current', embeddings_internal.render(
            'CASE WHEN v.h IS NULL THEN pg_catalog.md5(%(content)s) IS NULL ELSE pg_catalog.md5(%(content)s) OPERATOR(pg_catalog.=) v.h END',
            jsonb_build_object('content', embeddings_internal.content_sql(t, 't', NULL, wrapped => false))));
    -- the rows given to a write (with a vector each, or not) whose content is still the one
    -- loaded, joined to the table as it is now
    cur_with_vectors CONSTANT text :=
        'SELECT v.key AS key_%(key_values)s, v.e AS e_%(fts_value)s, v.h AS h_ '
        'FROM ROWS FROM (%(key_rows)s, pg_catalog.unnest(%(fn)I.vectors), pg_catalog.unnest(%(fn)I.digests)) AS v(key%(key_aliases)s, e, h) '
        'JOIN %(source)s t ON %(key_match)s WHERE %(content_is_current)s';
    cur_without CONSTANT text :=
        'SELECT v.key AS key_%(key_values)s, v.h AS h_ '
        'FROM ROWS FROM (%(key_rows)s, pg_catalog.unnest(%(fn)I.digests)) AS v(key%(key_aliases)s, h) '
        'JOIN %(source)s t ON %(key_match)s WHERE %(content_is_current)s';
    col record;
BEGIN
    -- Vectors (and during a model change the new model's, in the shadow column: a row with no
    -- side row yet gets one with only that, and the md5 of its content). The side row's md5 is
    -- that of the content of its embedding column's vector, and so is its tsvector, with
    -- full-text search on (written with the vector, from the content the write checked: it
    -- lags behind a content change exactly as the vector does).
    FOR col IN SELECT * FROM embeddings_internal.vector_columns(t) LOOP
        RETURN NEXT embeddings_internal.access_spec('_store' || col.suffix,
            ARRAY['keys text[]'] || embeddings_internal.key_params(t) || ARRAY['vectors ' || col.type || '[]', 'digests text[]'],
            'SETOF text', $template$
            RETURN QUERY
                WITH cur AS ($template$ || cur_with_vectors || $template$),
                written AS (
                    INSERT INTO %(store)s AS x (%(key_columns)s, %(vector)I, content_md5%(fts_column)s)
                    SELECT %(cur_values)s, cur.e_, cur.h_%(fts_insert)s FROM cur
                    ON CONFLICT (%(key_columns)s) DO UPDATE SET %(assignments)s
                    RETURNING 1)
                SELECT cur.key_ FROM cur;
            $template$,
            args || jsonb_build_object(
                'vector', col.name,
                'fts_value', CASE WHEN col.suffix = '' AND t.fts_config IS NOT NULL
                                  THEN ', ' || embeddings_internal.fts_sql(t, embeddings_internal.content_sql(t, 't', NULL, wrapped => false)) || ' AS f_'
                                  ELSE '' END,
                'fts_column', CASE WHEN col.suffix = '' AND t.fts_config IS NOT NULL
                                   THEN embeddings_internal.render(', %(fts)I', jsonb_build_object('fts', t.fts_column)) ELSE '' END,
                'fts_insert', CASE WHEN col.suffix = '' AND t.fts_config IS NOT NULL THEN ', cur.f_' ELSE '' END,
                'assignments', embeddings_internal.render(
                    CASE WHEN col.suffix = '' THEN '%(vector)I = excluded.%(vector)I, content_md5 = excluded.content_md5%(fts)s'
                         ELSE '%(vector)I = excluded.%(vector)I, content_md5 = CASE WHEN x.%(column)I IS NULL '
                              'THEN excluded.content_md5 ELSE x.content_md5 END' END,
                    jsonb_build_object('vector', col.name, 'column', t.embedding_column,
                                       'fts', CASE WHEN t.fts_config IS NOT NULL
                                                   THEN embeddings_internal.render(', %(fts)I = excluded.%(fts)I', jsonb_build_object('fts', t.fts_column))
                                                   ELSE '' END))),
            declare => E'#variable_conflict use_column\n');
    END LOOP;

    -- Blank content: the side row goes (both vectors); during a change, clearing only the new
    -- model's vector (the worker's rows whose new vector could not be made).
    RETURN NEXT embeddings_internal.access_spec('_blank', ARRAY['keys text[]'] || embeddings_internal.key_params(t) || ARRAY['digests text[]'],
        'SETOF text', $template$
        RETURN QUERY
            WITH cur AS ($template$ || cur_without || $template$)
            DELETE FROM %(store)s x USING cur WHERE %(side_cur)s RETURNING cur.key_;
        $template$, args);
    IF shadow IS NOT NULL THEN
        RETURN NEXT embeddings_internal.access_spec('_blank_shadow', ARRAY['keys text[]'] || embeddings_internal.key_params(t) || ARRAY['digests text[]'],
            'SETOF text', $template$
            RETURN QUERY
                WITH cur AS ($template$ || cur_without || $template$)
                UPDATE %(store)s x SET %(shadow)I = NULL FROM cur WHERE %(side_cur)s AND x.%(shadow)I IS NOT NULL RETURNING cur.key_;
            $template$, args);
        -- Model-change completion (embeddings_internal.complete_change): the rows with content still
        -- lacking the new vector and waiting in no job...
        RETURN NEXT embeddings_internal.access_spec('_unshadowed', ARRAY['pending jsonb[]'], 'SETOF jsonb', $template$
            RETURN QUERY
                SELECT s.k FROM (SELECT %(key_json)s AS k FROM %(source)s t LEFT JOIN %(store)s x ON %(joined)s
                                 WHERE x.%(shadow)I IS NULL AND (%(content)s) OPERATOR(pg_catalog.~) %(nonblank)L) s
                WHERE NOT (s.k OPERATOR(pg_catalog.=) ANY (%(fn)I.pending));
            $template$, args, stable => true);
        -- ... and, under the table lock, whether the swap may go ahead: no row's vector lacks the
        -- new one. (A content change clears nothing in a side table: a row whose job is pending
        -- keeps its vectors, and its job writes the new model's after the swap.)
        RETURN NEXT embeddings_internal.access_spec('_swap_prepare', ARRAY['pending jsonb[]'], 'boolean', $template$
            RETURN NOT EXISTS (SELECT FROM %(source)s t JOIN %(store)s x ON %(joined)s WHERE x.%(shadow)I IS NULL AND x.%(column)I IS NOT NULL);
            $template$, args);
    END IF;
    RETURN QUERY SELECT * FROM embeddings_internal.follow_access(t);  -- deletes and truncations (sql/54_stores.sql)
END
$$;

-- A side-table target's vectors are in its side table `v`, keyed like the table.
CREATE FUNCTION embeddings_internal.side_store_search_sql(t embeddings.targets) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.one_vector_search_sql(t, embeddings_internal.render('%(store)s v JOIN %(source)s s ON %(same_key)s', jsonb_build_object(
                                                    'store', t.store_table::text, 'source', t.source::text,
                                                    'same_key', embeddings_internal.key_equal_sql(t, 'v', 's'))),
                                            'v')
$$;

-- Status's exact counts: the table's rows, those with a side row that holds a vector (side rows
-- of deleted rows are not counted), those with blank content.
CREATE FUNCTION embeddings_internal.side_store_exact_counts(t embeddings.targets,
    OUT total_rows bigint, OUT embedded_rows bigint, OUT cleared_rows bigint, OUT chunks bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.one_vector_exact_counts(
        t, embeddings_internal.render('%(source)s s LEFT JOIN %(store)s x ON %(same_key)s', jsonb_build_object(
               'source', t.source::text, 'store', t.store_table::text, 'same_key', embeddings_internal.key_equal_sql(t, 's', 'x'))),
        embeddings_internal.render('x.%(column)I', jsonb_build_object('column', t.embedding_column)))
$$;

-- Status's estimate of the rows with a vector: the side table's rows times the share of them
-- with a vector (side rows of deleted rows not yet followed up counted too; status caps it at
-- the table's rows).
CREATE FUNCTION embeddings_internal.side_store_estimated_vectors(t embeddings.targets,
    OUT embedded double precision, OUT chunks double precision)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.estimated_not_null(t.store_table, t.embedding_column), NULL::double precision
$$;

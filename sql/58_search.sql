-- Search: the rows of a watched table nearest to a query vector, or for a chunked target the
-- documents whose best chunk is nearest (each once, with that chunk), optionally filtered on the
-- table's columns; and hybrid search, fusing that ranking with full-text search
-- (sql/59_hybrid.sql). The retrieval step of a RAG app (docs/rag.md).
--
-- These run with the caller's rights (SECURITY INVOKER): a search sees what the caller's own
-- SELECT sees, row-level security included, and needs SELECT on the table (and on a chunked
-- target's chunk table). Worker roles hold no such right; `POST /search` connects as the role
-- of EMBED_SEARCH_DATABASE_URL (docs/http.md).
--
-- Complete top-k: an HNSW index scan yields at most hnsw.ef_search tuples, so filtering or
-- keeping one chunk per document after it can leave fewer than k. Here the scan is iterative
-- (pgvector >= 0.8: hnsw.iterative_scan = relaxed_order, bounded by hnsw.max_scan_tuples), the
-- candidates are re-sorted by exact distance, chunked targets fetch twice as many candidates
-- until k documents are found, and whenever the index still yields fewer than k, an exact scan
-- answers (the filtered set, or the table, is then small or nearly exhausted). A table below
-- embeddings.exact_search_rows rows (a setting, default 10000) is scanned exactly at once.

-- The vectors a search of target t reads: the rows of its store table (the table itself, its
-- side table, its chunk table; the sum of its partitions' for a partitioned one), as ANALYZE
-- last estimated; NULL when unknown. (pg_partition_tree() lists nothing for a table that is not
-- partitioned: the relation itself counts then. A partitioned table's own reltuples is not its
-- rows': only its leaves count.)
CREATE FUNCTION embeddings_internal.search_rows_estimate(t embeddings.targets) RETURNS double precision
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT nullif(sum(greatest(c.reltuples, 0)), 0)::double precision
    FROM pg_class c
    WHERE c.relkind OPERATOR(pg_catalog.<>) 'p'
      AND c.oid IN (SELECT t.store_table::oid
                    UNION
                    SELECT p.relid::oid FROM pg_partition_tree(t.store_table) p WHERE p.isleaf)
$$;

-- search_rows_estimate(t) as an SQL expression for the statements generated for t: for a
-- store table that is not partitioned, its pg_class.reltuples read directly, a statement the
-- generated function's plan keeps; else the call, which lists the partitions. The relation is
-- found through the target's id, never an OID written into the function: a dump restored
-- elsewhere gives the table another OID, and keeps the target's id.
CREATE FUNCTION embeddings_internal.rows_estimate_sql(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.render(
        CASE WHEN (SELECT c.relkind FROM pg_class c WHERE c.oid = t.store_table) = 'r'
             THEN '(SELECT nullif(greatest(c.reltuples, 0), 0)::double precision'
                  ' FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=)'
                  ' (SELECT x.store_table::pg_catalog.oid FROM embeddings.targets x'
                  ' WHERE x.id OPERATOR(pg_catalog.=) %(id)s))'
             ELSE '(SELECT embeddings_internal.search_rows_estimate(x) FROM embeddings.targets x'
                  ' WHERE x.id OPERATOR(pg_catalog.=) %(id)s)' END,
        jsonb_build_object('id', t.id))
$$;

-- Refuses a search filter's value for column `col` (the key's JSON: a scalar, an array, an
-- object of comparisons) that the column's type `base` cannot read, naming the key and the
-- type: else the search fails as it runs with Postgres' "invalid input syntax for type integer"
-- alone. Every value of the key in one cast (one subtransaction a key, whatever the values).
CREATE FUNCTION embeddings_internal.search_filter_check(col text, base text, val jsonb) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    given text[] := ARRAY(SELECT v #>> '{}' FROM pg_catalog.jsonb_path_query(val, 'strict $.**') AS v
                          WHERE jsonb_typeof(v) NOT IN ('object', 'array', 'null'));
BEGIN
    EXECUTE format('SELECT count(x::%s) FROM unnest($1) AS x', base) USING given;
EXCEPTION WHEN data_exception THEN
    RAISE EXCEPTION 'embeddings: search filter: % is a column of type %, which cannot read this value: %',
            quote_ident(col), base, SQLERRM
        USING ERRCODE = SQLSTATE;
END
$$;

-- The SQL condition (on row alias `s` of t's table) of a structured filter: a JSON object
-- whose keys are column names of built-in scalar types, each value either a JSON scalar
-- (equality; null: IS NULL), an array (any of them, null among them matching NULL), or an object of comparisons
-- {"eq"|"ne"|"lt"|"lte"|"gt"|"gte": value, "in": [values]}; all must hold. Values are read
-- as the column's type from their JSON text (`param` is the filter's parameter, $n), never
-- spliced into the SQL. 'true' for NULL or {}.
CREATE FUNCTION embeddings_internal.search_filter_sql(t embeddings.targets, filter jsonb, param integer) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parts text[] := ARRAY['true'];
    col text;
    val jsonb;
    op text;
    arg jsonb;
    ty regtype;
    base text;
    column_sql text;
    value_sql text;
    ops CONSTANT jsonb := '{"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}';
BEGIN
    IF filter IS NULL THEN
        RETURN 'true';
    END IF;
    IF jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION 'embeddings: a search filter is a JSON object of column names, not %', jsonb_typeof(filter)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR col, val IN SELECT e.key, e.value FROM jsonb_each(filter) e ORDER BY e.key LOOP
        SELECT a.atttypid::regtype INTO ty FROM pg_attribute a
        WHERE a.attrelid = t.source AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
        IF ty IS NULL THEN
            -- (COLUMN: the caller's column, which the worker answers as a bad search; an
            -- undefined column of our own statements is a fault of ours: worker/retrieval/errors.py)
            RAISE EXCEPTION 'embeddings: search filter: % has no column %', t.source, quote_ident(col)
                USING ERRCODE = 'undefined_column', COLUMN = col;
        END IF;
        IF NOT embeddings_internal.builtin_scalar(ty) THEN
            RAISE EXCEPTION 'embeddings: search filter: column % is of type %; filters take columns of built-in scalar types', quote_ident(col), ty
                USING ERRCODE = 'feature_not_supported';
        END IF;
        base := format_type(embeddings_internal.base_type(ty), NULL);
        PERFORM embeddings_internal.search_filter_check(col, base, val);
        column_sql := embeddings_internal.as_base_sql(ty, format('s.%I', col));
        value_sql := format('($%s OPERATOR(pg_catalog.->) %L)', param, col);
        IF jsonb_typeof(val) = 'null' THEN
            parts := parts || format('%s IS NULL', column_sql);
        ELSIF jsonb_typeof(val) = 'array' THEN
            -- A null among the values matches NULL, as null alone does (= ANY never does).
            parts := parts || format('(%s OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT x::%s FROM pg_catalog.jsonb_array_elements_text(%s) x))%s)',
                                     column_sql, base, value_sql,
                                     CASE WHEN val @> '[null]' THEN format(' OR %s IS NULL', column_sql) ELSE '' END);
        ELSIF jsonb_typeof(val) = 'object' THEN
            FOR op, arg IN SELECT e.key, e.value FROM jsonb_each(val) e ORDER BY e.key LOOP
                IF op = 'in' AND jsonb_typeof(arg) = 'array' THEN
                    parts := parts || format('(%s OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT x::%s FROM pg_catalog.jsonb_array_elements_text(%s OPERATOR(pg_catalog.->) ''in'') x))%s)',
                                             column_sql, base, value_sql,
                                             CASE WHEN arg @> '[null]' THEN format(' OR %s IS NULL', column_sql) ELSE '' END);
                ELSIF ops ? op AND jsonb_typeof(arg) NOT IN ('object', 'array', 'null') THEN
                    parts := parts || format('%s OPERATOR(pg_catalog.%s) (%s OPERATOR(pg_catalog.->>) %L)::%s',
                                             column_sql, ops->>op, value_sql, op, base);
                ELSE
                    RAISE EXCEPTION 'embeddings: search filter: %: % takes %', quote_ident(col), op,
                        CASE WHEN op = 'in' THEN 'an array' WHEN ops ? op THEN 'a scalar' ELSE 'nothing: comparisons are eq, ne, lt, lte, gt, gte, in' END
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
            END LOOP;
        ELSE
            -- ->> and the type's input function are immutable: with the filter known (a
            -- search's EXECUTE ... USING), the planner folds the value into a constant, which
            -- it estimates from the column's statistics and compares without a JSON step per row.
            parts := parts || format('%s OPERATOR(pg_catalog.=) ($%s OPERATOR(pg_catalog.->>) %L)::%s',
                                     column_sql, param, col, base);
        END IF;
    END LOOP;
    RETURN array_to_string(parts, ' AND ');
END
$$;

-- The target of `source` to search: the one of `embedding_column`, or its only one. A chunk or
-- side table is not watched itself (watch() refuses it): the error names its target's table.
CREATE FUNCTION embeddings_internal.search_target(source regclass, embedding_column name DEFAULT NULL) RETURNS embeddings.targets
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found embeddings.targets[];  -- one look at the registry, every search
    owner embeddings.targets;
BEGIN
    SELECT array_agg(t ORDER BY t.id) INTO found FROM embeddings.targets t
    WHERE t.source = search_target.source AND (search_target.embedding_column IS NULL OR t.embedding_column = search_target.embedding_column);
    IF found IS NULL THEN
        SELECT * INTO owner FROM embeddings.targets t WHERE t.store_table = search_target.source AND t.source <> search_target.source
        ORDER BY t.id LIMIT 1;
        IF owner.id IS NOT NULL THEN  -- (undefined_object, as for any table not watched)
            RAISE EXCEPTION '% is the % table of target %: search %', embeddings_internal.display_name(source),
                    CASE owner.store_kind WHEN 'chunks' THEN 'chunk' ELSE owner.store_kind END,
                    embeddings_internal.target_name(owner), embeddings_internal.display_name(owner.source)
                USING ERRCODE = 'undefined_object',
                      HINT = format('Name %s, the table whose rows it holds the vectors of.',
                                    embeddings_internal.display_name(owner.source));
        END IF;
        RAISE EXCEPTION '% is not watched%', source,
            CASE WHEN embedding_column IS NULL THEN '' ELSE format(' with embedding column %I', embedding_column) END
            USING ERRCODE = 'undefined_object',
                  HINT = embeddings_internal.watched_columns_hint(source,
                             format('SELECT embeddings.watch(%L, ''<content column>'');', source::text));
    ELSIF cardinality(found) > 1 THEN
        RAISE EXCEPTION '% has several embedding columns: name one, embedding_column => %', source,
                (SELECT string_agg(quote_literal(f.embedding_column), ' or ' ORDER BY f.id) FROM unnest(found) f)
            USING ERRCODE = 'ambiguous_column';
    END IF;
    RETURN found[1];
END
$$;

-- The parts of a search statement over target t, as a JSON object of SQL fragments (the store
-- kind's search_sql(), sql/54_stores.sql, makes them):
--   from      the relations (`s` the table; a store apart from it joined to it)
--   store     the alias of the relation holding the vectors (and a tsvector: sql/59_hybrid.sql)
--   vector    the embedding column; key, content, seq, start_offset, end_offset, headings,
--             page the result's columns (content the content column's text (NULL for a content
--             function) and the others NULL for a plain target; for a chunked one the chunk's
--             text, position, character offsets, heading path and page, sql/55_chunks.sql)
--   order     what the nearest come first by (an index scan's ORDER BY)
--   distance  the cosine distance to $1 (a halfvec; cast to the column's type)
--   key_alias the alias of the relation whose key columns `key` is made of (the exact path
--             carries them raw, and makes the key only for the rows it may answer with)
-- Key values keep the table's type in JSON as jobs carry them (sql/25_keys.sql): a number for
-- an integer key, a string for text, an array of the columns' values for a composite key.

-- Sets pgvector's hnsw.iterative_scan and hnsw.ef_search for the transaction, each that is not
-- NULL (a server without them has none to set or put back): a search raises them, then puts
-- back the caller's (search_run(), search_answer()).
CREATE FUNCTION embeddings_internal.set_hnsw(iterative text, ef text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF iterative IS NOT NULL THEN
        PERFORM set_config('hnsw.iterative_scan', iterative, true);
    END IF;
    IF ef IS NOT NULL THEN
        PERFORM set_config('hnsw.ef_search', ef, true);
    END IF;
END
$$;

-- Runs `statement` (a query of (key, content, seq, distance) rows, $1 the query vector, $2 the
-- filter) with iterative index scans on, and returns its rows as one JSON array, by distance
-- (ties by key: duplicate texts have equal distances, and the answer must not depend on luck). The settings
-- are put back afterwards: they must not outlive the search in the caller's transaction.
-- STABLE, as search(): they write nothing (sql/90_privileges.sql grants such functions to
-- PUBLIC).
CREATE FUNCTION embeddings_internal.search_run(statement text, query anyelement, filter jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result jsonb;
    iterative text := current_setting('hnsw.iterative_scan', true);
    -- The HNSW candidate list raised as search() raises it (below).
    ef text := current_setting('hnsw.ef_search', true);
    ef_floor integer := coalesce(nullif(current_setting('embeddings.search_ef_search', true), '')::integer, 200);
BEGIN
    PERFORM embeddings_internal.set_hnsw(CASE WHEN iterative IS NOT NULL THEN 'relaxed_order' END,
                                CASE WHEN ef IS NOT NULL THEN least(greatest(ef::integer, ef_floor), 1000)::text END);
    EXECUTE format('SELECT coalesce(pg_catalog.jsonb_agg(r ORDER BY r.distance, r.key), ''[]'') FROM (%s) r', statement)
        INTO result USING query, filter;
    -- The statement ran the table's policies, the owner's code, which may have SET a search path
    -- for the session: a session-level SET outlives our SET clause, so the rest of this function
    -- (and of its callers, each of which pins it again) would resolve names in it. Ours again:
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM embeddings_internal.set_hnsw(iterative, ef);
    RETURN result;
END
$$;

-- The statements of a search of target t, made once per target with its other functions
-- (embeddings_internal.generate_access(), sql/32_access.sql, on watch() and on every change of the table
-- that can change them) rather than from the catalog on every call: building them cost
-- search() more than the index scan itself (docs/performance.md, "Figures behind the code's
-- choices").
--
--   embeddings_<id>_search(query, filter, n, exact) RETURNS jsonb
--     the rows of the index path (the n nearest candidates, each with `candidates`, their count;
--     for a chunked target one per document) or with `exact` the exact path's n nearest, as a
--     JSON array by distance, ties by key. Without a filter its statements are static (PL/pgSQL
--     prepares them once per session); a filter's condition is made for each call
--     (search_filter_sql(): the filter's columns vary).
--   embeddings_<id>_nearest(query, n, exact) RETURNS TABLE (key, seq, content, distance)
--     for a store of several vectors per row (a chunked target): the n nearest vectors
--     themselves, every chunk, by the index or with `exact` every one's distance (match_chunks())
--   embeddings_<id>_text_ranking(query, filter, depth) RETURNS jsonb
--     for a target with full-text search: fts_ranking_sql()'s rows (sql/59_hybrid.sql);
--   embeddings_<id>_bm25_ranking(the same) RETURNS jsonb
--     the same for text_match 'any': bm25_ranking_sql()'s rows (sql/59_bm25.sql).
--
-- Their statements name the parameters $1 (the query), $2 (the filter) and $3 (n, or the depth):
-- one text runs static, and with a filter's condition through EXECUTE ... USING in that order
-- (the search parts of the store kind, search_sql(), compare with $1 too).
-- Both SECURITY INVOKER: they run with the rights of whoever calls search(), row-level security
-- included, exactly as the statements they replace. So they are not the table owner's (unlike
-- the functions that read and write the table for the worker): owned by this schema's owner,
-- EXECUTE to PUBLIC as search() is; a table owner cannot redefine what its searchers run. A
-- searcher granted SELECT on a store apart from the table reads there only its rows of the
-- table (store_policy_code(), sql/54_stores.sql), as the statements do.
CREATE FUNCTION embeddings_internal.search_code(t embeddings.targets) RETURNS TABLE (name text, statement text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q jsonb := embeddings_internal.search_sql(t);
    args jsonb := q || jsonb_build_object(
        'name', 'embeddings_' || t.id || '_search', 'id', t.id, 'settings', embeddings_internal.key_settings_sql(t),
        'halfvec', to_regtype(quote_ident(embeddings.vector_schema()) || '.halfvec')::text,
        -- one result per row: a chunked target's best chunk
        'distinct_on', CASE WHEN embeddings_internal.store_has_chunks(t) THEN 'DISTINCT ON (r.key)' ELSE '' END,
        'distinct_order', CASE WHEN embeddings_internal.store_has_chunks(t) THEN 'ORDER BY r.key, r.distance' ELSE '' END);
    -- Each statement in three parts: its result (into which the static one selects), then its
    -- FROM in two halves around the filter's condition. The exact path's OFFSET 0 keeps the
    -- index from ordering the rows: every matching row's distance.
    unkeyed CONSTANT text := '%(content)s AS content, %(seq)s AS seq, %(start_offset)s AS start_offset, '
                             '%(end_offset)s AS end_offset, %(headings)s AS headings, %(page)s AS page, %(distance)s AS distance';
    columns CONSTANT text := '%(key)s AS key, ' || unkeyed;
    -- The exact path sorts every matching row by distance, and making each row's key (JSON)
    -- before the sort cost about as much as the distances (docs/performance.md): the key
    -- columns go raw (k1, k2, ...) through it, ties at the k-th distance kept by the columns'
    -- own order, and only the k rows kept get their JSON key. (WITH TIES instead would keep
    -- the JSON key's order at the boundary, but Postgres then sorts every row, not the top k:
    -- slower than before.) A chunked target's best chunk per document is found by the raw
    -- key too (its columns' own equality, the one its primary key keeps).
    raw_keys CONSTANT text := (SELECT string_agg(format('%I.%I AS k%s', q->>'key_alias', k.c, k.i), ', ' ORDER BY k.i)
                               FROM unnest(t.key_columns) WITH ORDINALITY AS k(c, i));
    raw_key_list CONSTANT text := (SELECT string_agg('r.k' || i, ', ' ORDER BY i)
                                   FROM generate_series(1, cardinality(t.key_columns)) AS i);
    late_key_target embeddings.targets := t;  -- t, its key columns named as the raw ones are
    late_args jsonb;
    index_sql text[] := ARRAY[
        'SELECT coalesce(pg_catalog.jsonb_agg(r ORDER BY r.distance, r.key), ''[]'')',
        embeddings_internal.render(' FROM (SELECT %(distinct_on)s r.* FROM (SELECT c.*, pg_catalog.count(*) OVER () AS candidates'
                          ' FROM (SELECT ' || columns || ' FROM %(from)s WHERE %(vector)s IS NOT NULL AND (', args),
        embeddings_internal.render(') ORDER BY %(order)s LIMIT $3) c) r %(distinct_order)s) r', args)];
    exact_sql text[];
BEGIN
    late_key_target.key_columns := ARRAY(SELECT 'k' || i FROM generate_series(1, cardinality(t.key_columns)) AS i);
    late_args := args || jsonb_build_object(
        'raw_keys', raw_keys, 'late_key', embeddings_internal.key_json_sql(late_key_target, 'r'),
        'distinct_on', CASE WHEN embeddings_internal.store_has_chunks(t) THEN 'DISTINCT ON (' || raw_key_list || ')' ELSE '' END,
        'distinct_order', CASE WHEN embeddings_internal.store_has_chunks(t) THEN 'ORDER BY ' || raw_key_list || ', r.distance' ELSE '' END);
    exact_sql := ARRAY[
        'SELECT coalesce(pg_catalog.jsonb_agg(d ORDER BY d.distance, d.key), ''[]'')',
        embeddings_internal.render(' FROM (SELECT %(late_key)s AS key, r.content, r.seq, r.start_offset, r.end_offset,'
                          ' r.headings, r.page, r.distance FROM (SELECT * FROM (SELECT %(distinct_on)s r.* FROM (SELECT %(raw_keys)s, ' || unkeyed
                          || ' FROM %(from)s WHERE %(vector)s IS NOT NULL AND (', late_args),
        embeddings_internal.render(') OFFSET 0) r %(distinct_order)s) r ORDER BY r.distance, ' || raw_key_list || ' LIMIT $3) r) d', late_args)];
    RETURN QUERY VALUES (args->>'name', embeddings_internal.render($template$
        CREATE FUNCTION embeddings.%(name)I(query %(halfvec)s, filter jsonb, n integer, exact boolean) RETURNS jsonb
        LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp%(settings)s AS $body$
        DECLARE
            result jsonb;
        BEGIN
            IF %(name)I.filter IS NOT NULL THEN
                EXECUTE CASE WHEN %(name)I.exact THEN %(exact_head)L ELSE %(index_head)L END
                        OPERATOR(pg_catalog.||) embeddings_internal.search_filter_sql(
                            (SELECT t FROM embeddings.targets t WHERE t.id OPERATOR(pg_catalog.=) %(id)s), %(name)I.filter, 2)
                        OPERATOR(pg_catalog.||) CASE WHEN %(name)I.exact THEN %(exact_tail)L ELSE %(index_tail)L END
                    INTO result USING %(name)I.query, %(name)I.filter, %(name)I.n;
            ELSIF %(name)I.exact THEN
                %(exact_static)s;
            ELSE
                %(index_static)s;
            END IF;
            RETURN result;
        END
        $body$
        $template$, args || jsonb_build_object(
            'exact_head', exact_sql[1] || exact_sql[2], 'exact_tail', exact_sql[3],
            'index_head', index_sql[1] || index_sql[2], 'index_tail', index_sql[3],
            'exact_static', exact_sql[1] || ' INTO result' || exact_sql[2] || 'true' || exact_sql[3],
            'index_static', index_sql[1] || ' INTO result' || index_sql[2] || 'true' || index_sql[3])));
    IF embeddings_internal.store_has_chunks(t) THEN
        -- A store of several vectors per row: its nearest vectors themselves too, every chunk
        -- (match_chunks(), sql/55_chunks.sql).
        RETURN QUERY VALUES ('embeddings_' || t.id || '_nearest', embeddings_internal.render($template$
            CREATE FUNCTION embeddings.%(name)I(query %(halfvec)s, n integer, exact boolean)
            RETURNS TABLE (key jsonb, seq integer, content text, distance double precision)
            LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp%(settings)s AS $body$
            BEGIN
                IF %(name)I.exact THEN  -- keys made late, as the search's exact path makes them
                    RETURN QUERY SELECT %(late_key)s, r.seq, r.content, r.distance
                        FROM (SELECT * FROM (%(raw_nearest)s OFFSET 0) r ORDER BY r.distance, %(raw_key_list)s LIMIT %(name)I.n) r
                        ORDER BY r.distance, %(raw_key_list)s;
                ELSE
                    RETURN QUERY %(nearest)s ORDER BY %(order)s LIMIT %(name)I.n;
                END IF;
            END
            $body$
            $template$, late_args || jsonb_build_object(
                'name', 'embeddings_' || t.id || '_nearest', 'raw_key_list', raw_key_list,
                'raw_nearest', embeddings_internal.render('SELECT %(raw_keys)s, %(seq)s AS seq, %(content)s AS content, %(distance)s AS distance '
                                                 'FROM %(from)s', late_args),
                'nearest', embeddings_internal.render('SELECT %(key)s AS key, %(seq)s AS seq, %(content)s AS content, %(distance)s AS distance '
                                             'FROM %(from)s', args))));
    END IF;
    RETURN QUERY SELECT * FROM embeddings_internal.ranking_code(t, args);
    RETURN QUERY SELECT * FROM embeddings_internal.store_policy_code(t);
END
$$;

-- Target t's full-text rankings for search_code() (`args`: its values), with full-text search
-- on: every word's and any word's (BM25: sql/59_bm25.sql). BM25's in three statements, chosen
-- by the table's estimate: from embeddings.bm25_sample_rows rows the one that estimates each
-- word's df from a sample of the table's pages and scores a budget of the rarer words' rows;
-- from embeddings.bm25_prune_rows the one that counts each word of the question first and
-- leaves its common words out of the candidates; below, one without those counts, which would
-- only add to its cost (and to its planning, on every call with a filter).
CREATE FUNCTION embeddings_internal.ranking_code(t embeddings.targets, args jsonb) RETURNS TABLE (name text, statement text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ranking text;
    named jsonb;
BEGIN
    FOREACH ranking IN ARRAY CASE WHEN t.fts_config IS NULL THEN '{}' ELSE ARRAY['text_ranking', 'bm25_ranking'] END LOOP
        named := args || jsonb_build_object('name', 'embeddings_' || t.id || '_' || ranking);
        -- One plan for every query text (plan_cache_mode): a plan made for each text, as
        -- Postgres makes the first five and keeps making while they look cheaper, cost about
        -- a third of the ranking itself (NFCorpus: BM25 ranking p50 4.4 against 3.2 ms); the
        -- generic one reads the GIN index for any text, as the planner chose for nearly all.
        RETURN QUERY VALUES (named->>'name', embeddings_internal.render($template$
            CREATE FUNCTION embeddings.%(name)I(query text, filter jsonb, depth integer) RETURNS jsonb
            LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan%(jit)s%(settings)s AS $body$
            DECLARE
                result jsonb;
            BEGIN
                %(run)s
                RETURN result;
            END
            $body$
            $template$, named || jsonb_build_object(
                -- No JIT for BM25: its generic plan on a large table costs above
                -- jit_above_cost, and compiling its expressions took 100-130 ms a call on
                -- 1,000,000 rows, more than the ranking's own work (80-265 ms).
                'jit', CASE ranking WHEN 'bm25_ranking' THEN ' SET jit = off' ELSE '' END,
                'run', CASE ranking
                WHEN 'bm25_ranking' THEN ltrim(embeddings_internal.render($run$
                    IF coalesce(%(estimate)s, 0) OPERATOR(pg_catalog.>=) coalesce(nullif(
                            pg_catalog.current_setting('embeddings.bm25_sample_rows', true), '')::double precision, 200000) THEN
                        %(sampled)s
                    ELSIF coalesce(%(estimate)s, 0) OPERATOR(pg_catalog.>=) coalesce(nullif(
                            pg_catalog.current_setting('embeddings.bm25_prune_rows', true), '')::double precision, 10000) THEN
                        %(pruned)s
                    ELSE
                        %(plain)s
                    END IF;
                    $run$, jsonb_build_object(
                        'estimate', embeddings_internal.rows_estimate_sql(t),
                        'sampled', embeddings_internal.ranking_run_code(named, embeddings_internal.bm25_ranking_sql(t, 'sampled'), 8),
                        'pruned', embeddings_internal.ranking_run_code(named, embeddings_internal.bm25_ranking_sql(t, 'pruned'), 8),
                        'plain', embeddings_internal.ranking_run_code(named, embeddings_internal.bm25_ranking_sql(t, 'plain'), 8)), 4), ' ')
                ELSE embeddings_internal.ranking_run_code(named, embeddings_internal.fts_ranking_sql(t), 4) END)));
    END LOOP;
END
$$;

-- The statements of a ranking function (ranking_code()) run, indented `indent` but for the
-- first line (it goes where its placeholder is): `parts` (a ranking's statement in parts
-- around the filter's condition) as one static statement without a filter, else through
-- EXECUTE with the filter's condition between each two.
CREATE FUNCTION embeddings_internal.ranking_run_code(args jsonb, parts text[], indent integer) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    parts[1] := ' FROM (' || parts[1];
    parts[cardinality(parts)] := parts[cardinality(parts)] || ') r';
    RETURN ltrim(embeddings_internal.render($run$
        IF %(name)I.filter IS NOT NULL THEN
            EXECUTE 'SELECT coalesce(pg_catalog.jsonb_agg(r), ''[]'')' OPERATOR(pg_catalog.||) pg_catalog.array_to_string(
                    %(parts)s, embeddings_internal.search_filter_sql(
                        (SELECT t FROM embeddings.targets t WHERE t.id OPERATOR(pg_catalog.=) %(id)s), %(name)I.filter, 2))
                INTO result USING %(name)I.query, %(name)I.filter, %(name)I.depth;
        ELSE
            %(static)s;
        END IF;
        $run$, args || jsonb_build_object(
            'parts', (SELECT 'ARRAY[' || string_agg(quote_literal(p), ', ' ORDER BY i) || ']'
                      FROM unnest(parts) WITH ORDINALITY AS x(p, i)),
            'static', 'SELECT coalesce(pg_catalog.jsonb_agg(r), ''[]'') INTO result' || array_to_string(parts, 'true')), indent), ' ');
END
$$;

-- Makes target t's search functions (search_code()) and its store's policy; EXECUTE to PUBLIC,
-- or where PUBLIC's on search() was revoked, to those that have search() (sql/80_roles.sql).
-- Every maker of those functions comes here: watch(), the event triggers, enable_fts(), a
-- model change, the upgrade's regeneration (sql/99_regenerate.sql).
CREATE FUNCTION embeddings_internal.generate_search(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM embeddings_internal.run_code(ARRAY(SELECT c.statement FROM embeddings_internal.search_code(t) c
                                               WHERE c.name NOT LIKE E'%\\_visible'));
    PERFORM embeddings_internal.generate_store_policy(t);  -- (sql/54_stores.sql)
    PERFORM embeddings_internal.follow_search_grants(t);
END
$$;

-- The vector ranking of a search of target t, as the JSON array embeddings_<id>_search()
-- returns (the rows nearest to `query` by distance, ties by key; for a chunked target each
-- document once, with its best chunk; `k` of them whenever k match, sometimes more on the
-- index path, which callers cut). search() and hybrid_search() rank by it: hybrid search
-- fuses the array as it comes, never as rows made and aggregated again.
SELECT pg_catalog.set_config('search_path', 'pg_catalog, ' || pg_catalog.quote_ident(embeddings.vector_schema()) || ', pg_temp', true);
CREATE FUNCTION embeddings_internal.search_answer(t embeddings.targets, query halfvec, k integer, filter jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run text := format('SELECT embeddings.%I($1, $2, $3, $4)', 'embeddings_' || t.id || '_search');
    -- The table's size as ANALYZE last estimated it (pg_class: no count(*) on every call).
    estimate double precision := embeddings_internal.search_rows_estimate(t);
    exact_below double precision := coalesce(nullif(current_setting('embeddings.exact_search_rows', true), '')::double precision, 10000);
    max_scan double precision := coalesce(nullif(current_setting('hnsw.max_scan_tuples', true), '')::double precision, 20000);
    iterative text := current_setting('hnsw.iterative_scan', true);
    -- The HNSW candidate list: the caller's hnsw.ef_search, raised to embeddings.search_ef_search
    -- (default 200: recall@10 0.95 against an exact scan at 100k rows, 0.74 with pgvector's 40;
    -- bench/retrieval.py, docs/performance.md "Search paths at scale") and to k.
    ef text := current_setting('hnsw.ef_search', true);
    ef_floor integer := coalesce(nullif(current_setting('embeddings.search_ef_search', true), '')::integer, 200);
    answer jsonb := '[]';
    n integer := 0;
    candidates integer := 0;
BEGIN
    IF to_regproc(format('embeddings.%I', 'embeddings_' || t.id || '_search')) IS NULL THEN
        RAISE EXCEPTION 'embeddings: the search function of % is missing%', t.source, coalesce(' (' || t.problem || ')', '')
            USING ERRCODE = 'undefined_function',
                  HINT = 'An ALTER TABLE of it, or watch() again, regenerates it.';
    END IF;
    -- Iterative index scans (pgvector >= 0.8), for this search only: put back below, as they
    -- must not outlive it in the caller's transaction.
    PERFORM embeddings_internal.set_hnsw(CASE WHEN iterative IS NOT NULL THEN 'relaxed_order' END,
                                CASE WHEN ef IS NOT NULL THEN least(greatest(ef::integer, ef_floor, k), 1000)::text END);
    IF estimate IS NULL OR estimate >= exact_below THEN
        -- The index: k rows, or for chunks candidates doubling until they hold k documents or
        -- the index yields no more (fewer candidates than asked for).
        n := CASE WHEN embeddings_internal.store_has_chunks(t) THEN greatest(k * 10, 40) ELSE k END;
        LOOP
            EXECUTE run INTO answer USING query, filter, n, false;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);  -- (search_run() says why)
            candidates := coalesce((answer->0->>'candidates')::integer, 0);
            EXIT WHEN jsonb_array_length(answer) >= k OR NOT embeddings_internal.store_has_chunks(t) OR candidates < n OR n >= max_scan;
            n := least(n * 2, max_scan)::integer;
        END LOOP;
    END IF;
    IF jsonb_array_length(answer) < k OR candidates < n THEN
        -- Exact: every matching row's distance, ties (duplicates) by key as the index path.
        -- Also when the index ran dry before k documents, or before the candidates asked for:
        -- the rows it can reach are few, and a graph full of dead or near-duplicate tuples
        -- may reach some rows from no entry point at all.
        EXECUTE run INTO answer USING query, filter, k, true;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);  -- (search_run() says why)
    END IF;
    PERFORM embeddings_internal.set_hnsw(iterative, ef);
    RETURN answer;
END
$$;

-- The `k` rows of `source` nearest to `query` (cosine distance), nearest first; for a chunked
-- target the k documents with the nearest chunks, each once with its best chunk (`seq`, its
-- position from 0, `content`, its text, and `start_offset`, `end_offset`, where that text is
-- in the document: characters, from 0, the end excluded; NULL for chunks written before
-- 0.3.0 until their document is embedded again, and for a plain target; a document's chunk's
-- `headings`, its heading path, and `page`, the PDF page it starts on). `filter`: see
-- search_filter_sql(). k rows whenever k rows match; fewer only when fewer match (none: no
-- row, no error).
-- pgvector's halfvec in the signature below, wherever pgvector is installed (public here,
-- `extensions` on Supabase): its schema is searched after pg_catalog while the function is
-- created, and only then (a type's name is unique in its schema; these statements call nothing).
CREATE FUNCTION embeddings.search(source regclass, query halfvec, k integer DEFAULT 10,
                                  filter jsonb DEFAULT NULL, embedding_column name DEFAULT NULL)
RETURNS TABLE (key jsonb, distance double precision, content text, seq integer,
               start_offset integer, end_offset integer, headings text[], page integer)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets := embeddings_internal.search_target(source, embedding_column);
BEGIN
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'embeddings.search: k must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Without one, the rows would come in no order, each with a NULL distance: "results" for
    -- an application whose question's embedding failed.
    IF query IS NULL THEN
        RAISE EXCEPTION 'embeddings.search: query must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN QUERY
        SELECT r.value->'key', (r.value->>'distance')::double precision, r.value->>'content', (r.value->>'seq')::integer,
               (r.value->>'start_offset')::integer, (r.value->>'end_offset')::integer,
               CASE WHEN jsonb_typeof(r.value->'headings') = 'array'
                    THEN ARRAY(SELECT jsonb_array_elements_text(r.value->'headings')) END,
               (r.value->>'page')::integer
        FROM jsonb_array_elements(embeddings_internal.search_answer(t, query, k, filter)) WITH ORDINALITY AS r(value, i)
        ORDER BY r.i LIMIT k;
END
$$;
COMMENT ON FUNCTION embeddings.search IS
    'The k rows of a watched table nearest to a query vector (cosine distance), nearest first; a chunked table''s k documents, each with its best chunk. Reads with the caller''s rights.';
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

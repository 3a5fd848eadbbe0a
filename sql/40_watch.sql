-- embeddings.watch() and embeddings.unwatch(): the SQL API users call once per table.

-- Schema of the vector extension (public here, `extensions` on Supabase): type and operator
-- class names are qualified with it.
CREATE FUNCTION embeddings.vector_schema() RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'vector'
$$;
COMMENT ON FUNCTION embeddings.vector_schema IS
    'The schema of the vector extension (public, or extensions on Supabase).';

-- The attribute number of column `col` of `rel`.
CREATE FUNCTION embeddings_internal.attnum_of(rel regclass, col name) RETURNS smallint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.attnum FROM pg_attribute a
    WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped
$$;

-- Levenshtein distance between a and b, case-insensitive (fuzzystrmatch is not everywhere).
-- For a mistyped model name: model names are short and embeddings.models has a few rows.
CREATE FUNCTION embeddings_internal.edit_distance(a text, b text) RETURNS int
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    x text := lower(a);
    y text := lower(b);
    previous int[];
    current int[];
    i int;
    j int;
BEGIN
    previous := array(SELECT generate_series(0, length(y)));
    FOR i IN 1 .. length(x) LOOP
        current := ARRAY[i];
        FOR j IN 1 .. length(y) LOOP
            current := current || least(
                previous[j + 1] + 1,
                current[j] + 1,
                previous[j] + CASE WHEN substr(x, i, 1) = substr(y, j, 1) THEN 0 ELSE 1 END);
        END LOOP;
        previous := current;
    END LOOP;
    RETURN previous[length(y) + 1];
END
$$;

-- The HINT of an "unknown model" error: the closest known name (a typo is the usual cause),
-- the known ones, and how to add one (register_model(): providers.md for a remote model,
-- models.md for a directory of one's own).
CREATE FUNCTION embeddings_internal.unknown_model_hint(name text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT concat_ws(' ',
        (SELECT format('Did you mean "%s"?', m.name) FROM embeddings.models m
         WHERE embeddings_internal.edit_distance(m.name, unknown_model_hint.name)
               <= greatest(2, length(unknown_model_hint.name) / 4)
         ORDER BY embeddings_internal.edit_distance(m.name, unknown_model_hint.name), m.name LIMIT 1),
        format('Known models: %s.', coalesce(
            (SELECT string_agg(m.name, ', ' ORDER BY m.name) FROM embeddings.models m), 'none')),
        'Register it with embeddings.register_model(): a remote provider''s model (docs/providers.md),'
        ' or a model directory of yours with provider => ''local'' (docs/models.md).')
$$;

-- Enqueues the keys of the rows of `rel` (target t's table, or one of its partitions: a
-- partition attached with its rows) that have no embedding (no chunk, for a chunked target) and
-- content in their content column, on target t's lane `lane` (embeddings_internal.enqueue_keys():
-- existing rows are backfill work, behind the application's writes). A content function is
-- never evaluated here (this runs in the event trigger, as its superuser owner): its rows are
-- queued by key, and the worker clears what turns out blank. Returns the number of messages
-- sent.
CREATE FUNCTION embeddings_internal.enqueue_rows(t embeddings.targets, rel regclass, lane text DEFAULT 'backfill')
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
-- Keys as one text whichever session calls (embeddings_internal.key_settings()).
SET extra_float_digits = 3 SET IntervalStyle = postgres SET DateStyle = 'ISO, MDY' SET TimeZone = 'UTC'
SET bytea_output = hex AS $$
DECLARE
    sent integer;
BEGIN
    EXECUTE format('SELECT embeddings_internal.enqueue_keys($1, pg_catalog.array_agg(%s), 0, $2) FROM %s n WHERE %s%s',
                   embeddings_internal.key_json_sql(t, 'n'), rel, embeddings_internal.embedding_missing_sql(t, 'n'),  -- 55_chunks.sql
                   CASE WHEN t.content_column IS NOT NULL
                        THEN format(' AND (%s) OPERATOR(pg_catalog.<>) ''''', embeddings_internal.content_compared_sql(t, 'n')) ELSE '' END)
        INTO sent USING t.id, lane;
    RETURN sent;
END
$$;

-- watch()'s options, passed whole to each of its steps: one field per parameter of watch(),
-- named and typed alike (tests/unit/test_sql_layout.py checks it), the model's default applied.
CREATE TYPE embeddings_internal.watch_options AS (
    source           regclass,
    content          text,
    embedding_column name,
    model            text,
    triggers         boolean,
    clear_on_update  boolean,
    queue            text,
    key              name[],
    replica          boolean,
    chunk_tokens     integer,
    chunk_overlap    integer,
    chunk_table      text,
    backfill         boolean,
    keep_old         boolean,
    store            text,
    side_table       text,
    fts              regconfig,
    format           text,
    context_header   text,
    fts_title_weight double precision
);

-- What watch() resolved from its options and the catalog before it acts (watch_resolve()).
CREATE TYPE embeddings_internal.watch_plan AS (
    dims          integer,       -- the model's dimensions
    key_names     name[],        -- the row key (watch_key())
    key_types     regtype[],
    key_nums      smallint[],
    content_col   name,          -- the content (watch_content()): a column of the table,
    content_fn    regprocedure,  -- or a function of its row type
    content_type  regtype,
    content_num   smallint,
    chunked       boolean,       -- chunk options given, or a chunked target watched again
    side          boolean,       -- the vectors in a side table (sql/56_side.sql)
    side_name     text,          -- the side table's name, whether it exists yet or not
    vec_rel       regclass,      -- where the embedding column is: the table, or its side table
                                 -- (NULL: a side table not made yet)
    clear_updates boolean,       -- clear_on_update, its default for the store applied
    emb_type      regtype,       -- the embedding column's type and typmod; NULL: not there yet
    emb_typmod    integer
);

-- `name` unquoted where it is written as SQL quotes a name (`"Body Text"`); NULL for any other.
-- Our functions take column names as pg_attribute holds them (`Body Text`), as Postgres's own
-- do (has_column_privilege()): a quoted one names a column whose name holds the quotes.
CREATE FUNCTION embeddings_internal.unquoted_identifier(name text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT replace(substr(name, 2, length(name) - 2), '""', '"') WHERE name ~ '^"([^"]|"")+"$'
$$;

-- The HINT for column names `given` that name no column of `source`: the names to pass where
-- one is written in SQL's quotes and names a column unquoted; else `otherwise`.
CREATE FUNCTION embeddings_internal.column_names_hint(source regclass, given text[], otherwise text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(
        (SELECT 'Column names are given as they are, without SQL''s double quotes: '
                || string_agg(quote_literal(u.name), ', ' ORDER BY u.ord) || '.'
         FROM (SELECT embeddings_internal.unquoted_identifier(g.name) AS name, g.ord
               FROM unnest(given) WITH ORDINALITY AS g(name, ord)) u
         WHERE EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = source AND a.attname = u.name::name
                                                    AND a.attnum > 0 AND NOT a.attisdropped)),
        otherwise)  -- (no such name: the aggregate NULL, and the text with it)
$$;

-- The HINT for a target of `source` named by an embedding column it is not watched with: the
-- names it is watched with (a name in SQL's double quotes, `'"embedding"'`, names a column
-- whose name holds the quotes); else `otherwise`.
CREATE FUNCTION embeddings_internal.watched_columns_hint(source regclass, otherwise text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(
        (SELECT watched_columns_hint.source::text || ' is watched with embedding_column => '
                || string_agg(quote_literal(t.embedding_column), ' or ' ORDER BY t.id) || '.'
         FROM embeddings.targets t WHERE t.source = watched_columns_hint.source),
        otherwise)  -- (no target: the aggregate NULL, and the text with it)
$$;

-- The key columns target t is watched with, by the names they have now (NULL for no target,
-- or when one of them is gone: watch() then takes the primary key, or refuses, as for a new
-- target). watch() keeps it when no key is given.
CREATE FUNCTION embeddings_internal.watched_key(t embeddings.targets) RETURNS name[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT array_agg(a.attname ORDER BY k.ord)
            FROM unnest(t.key_attnums) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = t.source AND a.attnum = k.attnum AND NOT a.attisdropped
            HAVING count(*) = cardinality(t.key_attnums));
END
$$;

-- watch()'s row key: the primary key, or the unique not-null key named by `key`. Any number of
-- columns, of any types with an equality operator whose values travel exactly as text.
CREATE FUNCTION embeddings_internal.watch_key(source regclass, key name[],
                                     OUT key_names name[], OUT key_regtypes regtype[], OUT key_nums smallint[])
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    unique_now boolean;  -- a unique index of the key's columns, checked at once
    deferrable_name name;  -- a DEFERRABLE constraint's, when that is all there is
BEGIN
    IF key IS NULL THEN
        SELECT array_agg(a.attname ORDER BY k.ord), array_agg(a.atttypid::regtype ORDER BY k.ord),
               array_agg(a.attnum ORDER BY k.ord)
        INTO key_names, key_regtypes, key_nums
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = source AND i.indisprimary;
        IF key_names IS NULL THEN
            RAISE EXCEPTION 'table % has no primary key', source
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'embed-worker finds rows by their key: add a primary key, or name a unique not-null key with key => array[''col'', ...].';
        END IF;
    ELSE
        SELECT array_agg(a.attname ORDER BY k.ord), array_agg(a.atttypid::regtype ORDER BY k.ord),
               array_agg(a.attnum ORDER BY k.ord)
        INTO key_names, key_regtypes, key_nums
        FROM unnest(key) WITH ORDINALITY AS k(name, ord)
        JOIN pg_attribute a ON a.attrelid = source AND a.attname = k.name AND a.attnum > 0 AND NOT a.attisdropped;
        IF cardinality(key) = 0 OR coalesce(cardinality(key_names), 0) <> cardinality(key)
           OR cardinality(key) <> (SELECT count(DISTINCT k) FROM unnest(key) AS k) THEN
            RAISE EXCEPTION 'key % does not name distinct columns of %', key, source
                USING ERRCODE = 'undefined_column',
                      HINT = embeddings_internal.column_names_hint(source, key::text[],
                          'Name each column of a unique key once, as the table spells it.');
        END IF;
        IF EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = source AND a.attnum = ANY(key_nums) AND NOT a.attnotnull) THEN
            RAISE EXCEPTION 'key (%) of % has nullable columns', array_to_string(key, ', '), source
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Make the key columns NOT NULL.';
        END IF;
    END IF;
    -- Keys are compared and ordered only with their type's default btree operator class (an
    -- operator found by name could be the table owner's), and travel as text from the writer's
    -- session to the worker's: what cannot make that trip exactly is refused (sql/25_keys.sql).
    FOR i IN 1 .. cardinality(key_regtypes) LOOP
        IF embeddings_internal.key_type_problem(key_regtypes[i]) IS NOT NULL THEN
            RAISE EXCEPTION 'key column %.% has type %, %', source, key_names[i],
                    (SELECT format_type(a.atttypid, a.atttypmod)
                            || CASE WHEN ty.typtype = 'd' THEN format(' (a domain over %s)', format_type(ty.typbasetype, ty.typtypmod)) ELSE '' END
                     FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
                     WHERE a.attrelid = source AND a.attnum = key_nums[i]),
                    embeddings_internal.key_type_problem(key_regtypes[i])
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'Name another unique, not-null key with key => array[...] (a column of a type such as bigint, text, uuid, numeric, a date or timestamp), or add one.';
        END IF;
    END LOOP;
    -- Unique at every moment: a constraint's index, of the columns alone. (After the types: a
    -- type without a default btree class cannot have the constraint that hint would add.) A
    -- DEFERRABLE one is checked when it fires (at COMMIT when deferred): until then two rows may
    -- share a key, which the worker reads and writes rows by.
    IF key IS NOT NULL THEN
        SELECT bool_or(i.indimmediate), min(c.conname) FILTER (WHERE NOT i.indimmediate)
        INTO unique_now, deferrable_name
        FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = source
        WHERE i.indrelid = source AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
          AND i.indnkeyatts = cardinality(key_nums)
          AND (SELECT array_agg(x ORDER BY x) FROM unnest(i.indkey[0:i.indnkeyatts - 1]) AS x)
              = (SELECT array_agg(x ORDER BY x) FROM unnest(key_nums) AS x);
        IF NOT coalesce(unique_now, false) AND deferrable_name IS NOT NULL THEN
            RAISE EXCEPTION 'key (%) of % is unique only by its DEFERRABLE constraint %, which does not count',
                    array_to_string(key, ', '), source, deferrable_name
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = format('A deferrable constraint is checked when it fires (at COMMIT when deferred): until then two rows '
                                    'may share a key, and the worker finds rows by it. Make it not deferrable: ALTER TABLE %1$s '
                                    'DROP CONSTRAINT %2$I, ADD CONSTRAINT %2$I UNIQUE (%3$s); (or, if the application needs it '
                                    'deferred, add a second one that is not: ALTER TABLE %1$s ADD UNIQUE (%3$s);).',
                                    source, deferrable_name, array_to_string(key, ', '));
        ELSIF NOT coalesce(unique_now, false) THEN
            RAISE EXCEPTION 'key (%) of % is not unique', array_to_string(key, ', '), source
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = format('Add one: ALTER TABLE %s ADD UNIQUE (%s).', source, array_to_string(key, ', '));
        END IF;
    END IF;
END
$$;

-- Why a content column of type `content_type` cannot be a target's content, or NULL: text (any
-- type of the string category), or bytea when the target is `chunked` (documents: PDF, DOCX,
-- ...; sql/55_chunks.sql). watch()'s rule, and target_problems()' (52_stopped.sql) for a column
-- retyped since: the text of another type (an integer, JSON, a bytea's base64) is not what
-- the rows say, and embedding it would store vectors of something else.
CREATE FUNCTION embeddings_internal.content_type_problem(content_type regtype, chunked boolean) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN content_type = 'pg_catalog.bytea'::regtype
                THEN CASE WHEN NOT chunked THEN 'is bytea: documents are chunked' END
                WHEN (SELECT ty.typcategory FROM pg_type ty WHERE ty.oid = content_type) IS DISTINCT FROM 'S'
                THEN format('has type %s, not text (or bytea, for documents)', content_type) END
$$;

-- watch()'s content: a text (or, for documents, bytea) column of `source`, else a function of
-- its row type returning text (checked by check_content_function()). Exactly one of
-- content_col, content_fn is set.
CREATE FUNCTION embeddings_internal.watch_content(source regclass, content text,
                                         OUT content_col name, OUT content_fn regprocedure,
                                         OUT content_type regtype, OUT content_num smallint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel_schema name;
    rel_name name;
BEGIN
    SELECT n.nspname, c.relname INTO rel_schema, rel_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source;
    SELECT a.attname, a.atttypid::regtype, a.attnum INTO content_col, content_type, content_num
    FROM pg_attribute a
    WHERE a.attrelid = source AND a.attname = content AND a.attnum > 0 AND NOT a.attisdropped;
    IF content_col IS NOT NULL THEN
        -- bytea: documents (PDF, DOCX, ...), for a chunked target only (watch_check_plan()).
        IF embeddings_internal.content_type_problem(content_type, true) IS NOT NULL THEN
            RAISE EXCEPTION 'content column %.% %', source, content_col, embeddings_internal.content_type_problem(content_type, true)
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Use a content function that returns text, e.g. one that casts or formats the column.';
        END IF;
    ELSE
        BEGIN
            -- as the caller's own sessions find it (sql/15_names.sql)
            content_fn := embeddings_internal.function_named(format('%s(%I.%I)', content, rel_schema, rel_name));
        EXCEPTION WHEN OTHERS THEN
            content_fn := NULL;  -- not even a valid function name
        END;
        IF content_fn IS NULL THEN
            RAISE EXCEPTION 'content "%" is neither a column of % nor a function %(%)', content, source, content, source
                USING ERRCODE = 'undefined_column',
                      HINT = embeddings_internal.column_names_hint(source, ARRAY[content],
                          'Pass a text column name, or the name of a function that takes the table''s row type and returns text.');
        END IF;
        SELECT p.prorettype::regtype INTO content_type FROM pg_proc p WHERE p.oid = content_fn;
        IF content_type NOT IN ('text'::regtype, 'character varying'::regtype) OR
           (SELECT p.proretset FROM pg_proc p WHERE p.oid = content_fn) THEN
            RAISE EXCEPTION 'content function % returns %, not text', content_fn,
                    CASE WHEN (SELECT p.proretset FROM pg_proc p WHERE p.oid = content_fn)
                         THEN 'a set of ' ELSE '' END || content_type
                USING ERRCODE = 'datatype_mismatch';
        END IF;
        PERFORM embeddings_internal.check_content_function(source, content_fn);  -- trusted, not VOLATILE
    END IF;
END
$$;

-- watch()'s HNSW index on `embedding_column` of `vec_rel` (of kind `vec_kind`, with its type
-- `emb_type`), made now or deferred; returns whether it is deferred (the worker builds it).
-- `deferred_name`: the name of a deferred index (embeddings_internal.deferred_index_name()).
CREATE FUNCTION embeddings_internal.watch_index(source regclass, vec_rel regclass, vec_kind "char", embedding_column name,
                                       emb_type regtype, emb_exists boolean, vschema name, deferred_name name)
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    defer_index boolean := false;
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_am am ON am.oid = ic.relam
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = vec_rel AND am.amname = 'hnsw' AND a.attname = embedding_column
    ) THEN
        -- A column added just now to a large table: building even an empty index scans the
        -- whole table under our lock, and inserting each vector into HNSW costs ~10x its share
        -- of a build. The worker builds it CONCURRENTLY once the backfill ends (62_backfill.sql).
        -- A partitioned table (one level of partitions) gets the index on the parent only now,
        -- invalid and instant, so that partitions created meanwhile get theirs; the worker
        -- builds each partition's and attaches it, and the last one makes it valid.
        -- A side table made just now is empty, but the backfill would fill it one vector at a
        -- time all the same.
        defer_index := NOT emb_exists
            AND (vec_kind = 'r' OR NOT EXISTS (SELECT FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhrelid
                                               WHERE i.inhparent = source AND pc.relkind = 'p'))
            AND (SELECT sum(embeddings_internal.estimated_rows(r)) FROM embeddings_internal.leaf_relations(source) r) > embeddings.index_defer_rows();
        IF NOT defer_index OR vec_kind = 'p' THEN
            EXECUTE format('CREATE INDEX %s ON %s %s USING hnsw (%I %I.%I)',
                CASE WHEN defer_index THEN quote_ident(deferred_name) ELSE '' END,
                CASE WHEN defer_index THEN 'ONLY' ELSE '' END, vec_rel, embedding_column, vschema,
                CASE WHEN (SELECT typname FROM pg_type WHERE oid = emb_type) = 'halfvec'
                     THEN 'halfvec_cosine_ops' ELSE 'vector_cosine_ops' END);
        END IF;
    END IF;
    RETURN defer_index;
END
$$;

-- watch()'s store for `o.source`: whether it clears a stale vector at once (`clear_on_update`,
-- which only the row store does: asked of another, refused rather than ignored), and where the
-- vectors live: the table itself, or its side table (`side`, sql/56_side.sql), which a target
-- keeps under whatever name it has now (a renamed table's default name is another). vec_rel
-- is NULL for a side table not made yet.
CREATE FUNCTION embeddings_internal.watch_store(o embeddings_internal.watch_options, previous embeddings.targets,
                                       side boolean, chunked boolean,
                                       OUT clear_updates boolean, OUT side_name text, OUT vec_rel regclass)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (side OR chunked) AND o.clear_on_update THEN
        RAISE EXCEPTION 'clear_on_update => true is for store => ''row'': % keeps its vectors in a % table', o.source,
                CASE WHEN side THEN 'side' ELSE 'chunk' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = CASE WHEN side
                      THEN 'Clearing a side table''s vector at once would write the side table in the application''s '
                           'transaction, which the side table exists to avoid: its old vector stays until the new one lands.'
                      ELSE 'A document''s old chunks keep their vectors until the new ones land, to reuse those of '
                           'unchanged chunks.' END,
                  HINT = 'Leave clear_on_update out (or pass clear_on_update => false), or use store => ''row''.';
    END IF;
    -- Not given: as it is for a watched table that keeps its store; else the store's default.
    clear_updates := coalesce(o.clear_on_update,
                              CASE WHEN NOT chunked AND previous.store_kind = embeddings_internal.plain_store_kind(side)
                                   THEN previous.clear_on_update END,
                              NOT side);
    IF side THEN
        side_name := embeddings_internal.watch_side_table(o, previous);
        vec_rel := to_regclass(side_name);
    ELSE
        vec_rel := o.source;
    END IF;
END
$$;

-- Target `target_id`'s pending jobs move from queue `from_queue` to `to_queue`, each lane's to
-- the same lane (watch() with another queue).
CREATE FUNCTION embeddings_internal.move_target_jobs(target_id integer, from_queue text, to_queue text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
BEGIN
    EXECUTE format(
        'WITH moved AS (DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1) RETURNING message) '
        'SELECT count(*) FROM moved, LATERAL pgmq.send(%L, moved.message)',
        embeddings_internal.lane_table(from_queue, 'live'), to_queue) USING target_id;
    EXECUTE format(
        'WITH moved AS (DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1) RETURNING message) '
        'SELECT count(*) FROM moved, LATERAL pgmq.send(%L, moved.message)',
        embeddings_internal.lane_table(from_queue, 'backfill'),
        embeddings_internal.backfill_queue(to_queue)) USING target_id;
END
$$;

-- watch() with another model on a watched plain target starts a blue/green change
-- (sql/44_changes.sql; the column keeps serving the old model until the swap), and returns the
-- target's id; NULL when this call is no model change. A change changes nothing else at once.
CREATE FUNCTION embeddings_internal.watch_model_change(o embeddings_internal.watch_options, plan embeddings_internal.watch_plan,
                                              previous embeddings.targets)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    differing text[];
BEGIN
    IF previous.id IS NULL OR embeddings_internal.store_has_chunks(previous) OR previous.problem IS NOT NULL
       OR o.chunk_tokens IS NOT NULL OR o.chunk_overlap IS NOT NULL OR o.chunk_table IS NOT NULL
       OR embeddings_internal.attnum_of(plan.vec_rel, o.embedding_column) IS NULL
       OR (previous.model = o.model
           AND NOT EXISTS (SELECT FROM embeddings.model_changes mc WHERE mc.target_id = previous.id)) THEN
        RETURN NULL;
    END IF;
    -- Each setting given that differs from the target's, named with both values.
    differing := array_remove(ARRAY[
        CASE WHEN previous.content_column IS DISTINCT FROM plan.content_col
                  OR previous.content_function IS DISTINCT FROM plan.content_fn
             THEN format('content (%s, given %s)', coalesce(previous.content_column::text, previous.content_function::regproc::text), o.content) END,
        CASE WHEN previous.key_columns <> plan.key_names
             THEN format('key (%s, given %s)', array_to_string(previous.key_columns, ', '), array_to_string(plan.key_names, ', ')) END,
        CASE WHEN previous.replica <> o.replica THEN format('replica (%s, given %s)', previous.replica::text, o.replica::text) END,
        CASE WHEN previous.has_triggers <> o.triggers THEN format('triggers (%s, given %s)', previous.has_triggers::text, o.triggers::text) END,
        CASE WHEN previous.clear_on_update <> plan.clear_updates
             THEN format('clear_on_update (%s, given %s)', previous.clear_on_update::text, plan.clear_updates::text) END,
        CASE WHEN previous.queue <> o.queue THEN format('queue (%s, given %s)', previous.queue, o.queue) END], NULL);
    IF cardinality(differing) > 0 THEN
        RAISE EXCEPTION 'a model change cannot change other settings of %.% at the same time: %', o.source, o.embedding_column,
                array_to_string(differing, '; ')
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Call watch() with the current model and the new settings first, then with the new model '
                         '(or leave the settings out: a setting not given stays as it is).';
    END IF;
    RETURN embeddings_internal.start_change(previous, o.model, o.keep_old);
END
$$;

-- watch()'s registration of a plain target: a new row of embeddings.targets, or `previous`
-- updated (a new version: in-flight writes under the old definition are rejected), its pending
-- jobs moved to another queue. `store_kind`, `store_table`: its store's kind and the table its vectors are written to.
-- `reembed`: every row again, since another content column under the same name (dropped and
-- added again), another content function or model, or a target that was deferred (its
-- triggers gone, so content changes went unseen).
CREATE FUNCTION embeddings_internal.watch_register(previous embeddings.targets, o embeddings_internal.watch_options,
                                          plan embeddings_internal.watch_plan, store_kind text, store_table regclass,
                                          OUT t embeddings.targets, OUT reembed boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    emb_attnum smallint := CASE WHEN store_table = o.source THEN embeddings_internal.attnum_of(o.source, o.embedding_column) END;
BEGIN
    reembed := false;
    IF previous.id IS NULL THEN
        INSERT INTO embeddings.targets AS tg (source, embedding_column, content_column, content_function, model,
                                              queue, has_triggers, clear_on_update, key_columns, key_types,
                                              key_attnums, content_attnum, embedding_attnum, replica, store_kind, store_table)
        VALUES (o.source, o.embedding_column, plan.content_col, plan.content_fn, o.model,
                o.queue, o.triggers, plan.clear_updates, plan.key_names, plan.key_types,
                plan.key_nums, plan.content_num, emb_attnum, o.replica,
                watch_register.store_kind, watch_register.store_table)
        RETURNING * INTO t;
        RETURN;
    END IF;
    reembed := previous.content_column IS DISTINCT FROM plan.content_col
               OR previous.content_attnum IS DISTINCT FROM plan.content_num
               OR previous.content_function IS DISTINCT FROM plan.content_fn
               OR previous.problem IS NOT NULL
               OR previous.model <> o.model;
    IF previous.queue <> o.queue THEN
        PERFORM embeddings_internal.move_target_jobs(previous.id, previous.queue, o.queue);
    END IF;
    UPDATE embeddings.targets tg
    SET content_column = plan.content_col, content_function = plan.content_fn, model = o.model,
        key_columns = plan.key_names, key_types = plan.key_types, key_attnums = plan.key_nums,
        content_attnum = plan.content_num, embedding_attnum = emb_attnum,
        replica = o.replica, problem = NULL, queue = o.queue,
        has_triggers = o.triggers, clear_on_update = plan.clear_updates, updated_at = now(),
        version = tg.version + 1
    WHERE tg.id = previous.id
    RETURNING * INTO t;
END
$$;

-- Target `target_id`'s pending jobs in queue `queue`, both lanes, deleted (superseded: every
-- row of the target is queued again; sql/45_dropped.sql).
CREATE FUNCTION embeddings_internal.drop_target_jobs(target_id integer, queue text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    lane text;
BEGIN
    FOREACH lane IN ARRAY ARRAY['live', 'backfill'] LOOP
        IF to_regclass(format('pgmq.%I', embeddings_internal.lane_table(queue, lane))) IS NOT NULL THEN
            EXECUTE format('DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1)',
                           embeddings_internal.lane_table(queue, lane)) USING target_id;
        END IF;
    END LOOP;
END
$$;

-- watch()'s full-text options for target `target_id`: full-text search with configuration
-- `fts` and fields of title weight `title_weight` (sql/59_hybrid.sql), each NULL: as it is.
-- enable_fts() again when either changes.
CREATE FUNCTION embeddings_internal.watch_fts(target_id integer, fts regconfig, title_weight double precision) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
BEGIN
    SELECT * INTO t FROM embeddings.targets tg WHERE tg.id = target_id;
    IF (fts IS NOT NULL AND fts IS DISTINCT FROM t.fts_config)
       OR (title_weight IS NOT NULL AND title_weight IS DISTINCT FROM t.fts_title_weight) THEN
        IF coalesce(fts, t.fts_config) IS NULL THEN
            RAISE EXCEPTION 'fts_title_weight weighs full-text fields: pass fts => too (e.g. ''english'')'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM embeddings.enable_fts(t.source, coalesce(fts, t.fts_config), t.embedding_column,
                                      coalesce(title_weight, t.fts_title_weight));
    END IF;
END
$$;

-- watch()'s checks of its options alone: none NULL that must not be, no name empty, `source`
-- a table, the model known (and, for a built-in model, registered as the worker runs it).
CREATE FUNCTION embeddings_internal.watch_check(o embeddings_internal.watch_options) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m embeddings.models;
    problem text;
BEGIN
    IF o.source IS NULL OR o.content IS NULL OR o.embedding_column IS NULL OR o.model IS NULL
       OR o.triggers IS NULL OR o.queue IS NULL OR o.replica IS NULL
       OR o.backfill IS NULL OR o.keep_old IS NULL THEN
        RAISE EXCEPTION 'embeddings.watch(): arguments must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- (else it reaches our DDL as "" and Postgres answers with a syntax error)
    IF o.embedding_column = '' OR o.content = '' THEN
        RAISE EXCEPTION 'embeddings.watch(): % must not be empty',
                CASE WHEN o.content = '' THEN 'content' ELSE 'embedding_column' END
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = o.source) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', o.source USING ERRCODE = 'wrong_object_type';
    END IF;
    SELECT * INTO m FROM embeddings.models mo WHERE mo.name = o.model;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown model "%"', o.model
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = embeddings_internal.unknown_model_hint(o.model);
    END IF;
    -- A built-in model's row that an earlier release let register_model() redefine (a remote
    -- model under its name, other dimensions): the worker runs the built-in model all the same,
    -- so a column made for the row would never be filled.
    problem := embeddings_internal.built_in_mismatch(m.name, m.provider, m.dimensions, NULL);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'model % is registered otherwise than the worker runs it: %', o.model, problem
            USING ERRCODE = 'invalid_parameter_value', HINT = embeddings_internal.built_in_hint(o.model);
    END IF;
END
$$;

-- watch()'s table: one whose rows a worker can serve, and that no other target embeds.
-- Refused: a temporary table (the worker's sessions cannot see another session's, and when that
-- session ends no event trigger fires: its target would hold every job, then stay behind); a
-- table of ours or pgmq's (the registry, the queues: watch() would add a column and triggers to
-- them), or of the system catalogs; another target's side or chunk table (the worker writes
-- it: a trigger there would queue a job for each vector written); a partition of a table watched on the same embedding column, or a partitioned table
-- one of whose partitions is (two targets would embed each of its rows into the same column).
CREATE FUNCTION embeddings_internal.watch_check_table(o embeddings_internal.watch_options) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    other embeddings.targets;
    above boolean;  -- the other target's table is an ancestor of `source`, not a partition of it
BEGIN
    IF (SELECT c.relpersistence FROM pg_class c WHERE c.oid = o.source) = 't' THEN
        RAISE EXCEPTION '% is a temporary table', o.source
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'The worker''s sessions cannot read another session''s temporary tables: its rows would never be embedded.',
                  HINT = 'Watch a permanent (or unlogged) table.';
    END IF;
    IF (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = o.source)
       IN ('embeddings', 'embeddings_internal', 'pgmq') THEN
        RAISE EXCEPTION '% is a table of embed-worker''s own (or of pgmq''s): it cannot be watched', o.source
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = o.source)
       IN ('pg_catalog', 'information_schema') THEN
        RAISE EXCEPTION '% is a table of the system catalogs (%): it cannot be watched', o.source,
                (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = o.source)
            USING ERRCODE = 'wrong_object_type';
    END IF;
    SELECT * INTO other FROM embeddings.targets tg WHERE tg.store_table = o.source AND tg.source <> o.source
    ORDER BY tg.id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '% is the % table of target %: it cannot be watched', o.source,
                CASE other.store_kind WHEN 'chunks' THEN 'chunk' ELSE other.store_kind END,
                embeddings_internal.target_name(other)
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'The worker writes its vectors there; its rows are that target''s, not an application''s.',
                  HINT = format('Watch %s, the table whose rows they embed.', other.source);
    END IF;
    SELECT * INTO other FROM embeddings.targets tg
    WHERE tg.embedding_column = o.embedding_column AND tg.source <> o.source
      AND (tg.source IN (SELECT pg_partition_ancestors(o.source)) OR o.source IN (SELECT pg_partition_ancestors(tg.source)))
    ORDER BY tg.id LIMIT 1;
    IF FOUND THEN
        above := other.source IN (SELECT pg_partition_ancestors(o.source));
        RAISE EXCEPTION '%', format(CASE WHEN above THEN '%s is a partition of %s, which is watched with embedding_column => %L'
                                         ELSE '%s has a partition, %s, watched with embedding_column => %L' END,
                                    o.source, other.source, o.embedding_column)
                             || ': its rows would be embedded twice, into the same column'
            USING ERRCODE = 'object_in_use',
                  DETAIL = format('Target %s embeds them already.', embeddings_internal.target_name(other)),
                  HINT = 'Watch the partitioned table or its partitions, not both; or name another embedding_column.';
    END IF;
END
$$;

-- watch()'s plan: the row key, the content, and the store (`previous`: the target registered
-- before, NULL id when none), each checked as it is resolved.
CREATE FUNCTION embeddings_internal.watch_resolve(o embeddings_internal.watch_options, previous embeddings.targets)
RETURNS embeddings_internal.watch_plan
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    plan embeddings_internal.watch_plan;
BEGIN
    SELECT m.dimensions INTO plan.dims FROM embeddings.models m WHERE m.name = o.model;
    SELECT wk.key_names, wk.key_regtypes, wk.key_nums INTO plan.key_names, plan.key_types, plan.key_nums
    FROM embeddings_internal.watch_key(o.source, o.key) wk;
    SELECT wc.content_col, wc.content_fn, wc.content_type, wc.content_num
    INTO plan.content_col, plan.content_fn, plan.content_type, plan.content_num
    FROM embeddings_internal.watch_content(o.source, o.content) wc;
    plan.chunked := o.chunk_tokens IS NOT NULL OR o.chunk_overlap IS NOT NULL OR o.chunk_table IS NOT NULL
                    OR embeddings_internal.store_has_chunks(previous);
    plan.side := embeddings_internal.side_store(previous, o.store, o.side_table, plan.chunked);
    SELECT ws.clear_updates, ws.side_name, ws.vec_rel INTO plan.clear_updates, plan.side_name, plan.vec_rel
    FROM embeddings_internal.watch_store(o, previous, plan.side, plan.chunked) ws;
    SELECT a.atttypid::regtype, a.atttypmod INTO plan.emb_type, plan.emb_typmod
    FROM pg_attribute a
    WHERE a.attrelid = plan.vec_rel AND a.attname = o.embedding_column AND a.attnum > 0 AND NOT a.attisdropped;
    RETURN plan;
END
$$;

-- watch()'s checks of the plan for a target it registers (a model change has its own): the
-- embedding column, if there, fits the model; the content is another column; the queue's name
-- is one pgmq takes; the table has no other set of triggers; documents are chunked.
CREATE FUNCTION embeddings_internal.watch_check_plan(o embeddings_internal.watch_options, plan embeddings_internal.watch_plan)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF plan.emb_type IS NOT NULL AND NOT EXISTS (
        SELECT FROM pg_type ty JOIN pg_namespace ns ON ns.oid = ty.typnamespace
        WHERE ty.oid = plan.emb_type AND ty.typname IN ('vector', 'halfvec') AND ns.nspname = embeddings.vector_schema()
    ) THEN
        RAISE EXCEPTION 'embedding column %.% has type %, expected vector(%) or halfvec(%)',
                o.source, o.embedding_column, format_type(plan.emb_type, plan.emb_typmod), plan.dims, plan.dims
            USING ERRCODE = 'datatype_mismatch';
    ELSIF plan.emb_type IS NOT NULL AND plan.emb_typmod <> plan.dims THEN
        RAISE EXCEPTION 'embedding column %.% is %, but model "%" produces % dimensions',
                o.source, o.embedding_column, format_type(plan.emb_type, plan.emb_typmod), o.model, plan.dims
            USING ERRCODE = 'datatype_mismatch',
                  HINT = format('Use a %s-dimensional column, or a model whose dimensions match.', plan.dims);
    END IF;
    -- A column watch() makes: a name written in SQL's quotes would keep them.
    IF plan.emb_type IS NULL AND embeddings_internal.unquoted_identifier(o.embedding_column) IS NOT NULL THEN
        RAISE EXCEPTION 'embedding column % of % is written in SQL''s double quotes, which the column made would keep in its name',
                quote_literal(o.embedding_column), o.source
            USING ERRCODE = 'invalid_name',
                  HINT = format('Column names are given as they are: embedding_column => %L.',
                                embeddings_internal.unquoted_identifier(o.embedding_column));
    END IF;
    IF o.embedding_column = plan.content_col AND NOT plan.side THEN
        RAISE EXCEPTION 'the embedding column cannot be the content column' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF o.queue !~ '^[a-z_][a-z0-9_]{0,46}$' THEN
        RAISE EXCEPTION 'invalid queue name "%": lower-case letters, digits and _ only, at most 47', o.queue
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Every live queue has its backfill lane, `<queue>_backfill` (embeddings_internal.backfill_queue()):
    -- a queue so named would be a lane of another queue, or its own lane another's live queue. A
    -- live queue an earlier release registered under such a name keeps serving.
    IF o.queue ~ '_backfill$' AND NOT EXISTS (SELECT FROM embeddings.queues q WHERE q.name = o.queue AND q.live_queue IS NULL) THEN
        RAISE EXCEPTION 'invalid queue name "%": a name ending in _backfill is a backfill lane''s', o.queue
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Each queue has a backfill lane named after it (%s for %s)%s.',
                                  embeddings_internal.backfill_queue(regexp_replace(o.queue, '_backfill$', '')),
                                  regexp_replace(o.queue, '_backfill$', ''),
                                  (SELECT format(': %s is the backfill lane of queue %s', q.name, q.live_queue)
                                   FROM embeddings.queues q WHERE q.name = o.queue)),
                  HINT = 'Give the queue a name that does not end in _backfill.';
    END IF;
    -- Both sets would queue a job for every change.
    PERFORM embeddings_internal.refuse_guide_triggers(o.source, o.triggers);
    -- A document (a bytea column, a format, a header template) is split into chunks.
    IF NOT plan.chunked
       AND (embeddings_internal.content_type_problem(plan.content_type, false) IS NOT NULL
            OR o.format IS NOT NULL OR o.context_header IS NOT NULL) THEN
        RAISE EXCEPTION '%', CASE WHEN embeddings_internal.content_type_problem(plan.content_type, false) IS NOT NULL
                                  THEN format('content column %s.%s %s', o.source, plan.content_col,
                                              embeddings_internal.content_type_problem(plan.content_type, false))
                                  ELSE 'format and context_header are for documents, which are chunked' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass chunk_tokens => N too (e.g. 200): each document is split into chunks, one vector each.';
    END IF;
END
$$;

-- Whether watch()'s call `o` (its plan `plan`) registers the target `previous` as it is, in what
-- every kind registers: the content, the model, the key, the triggers, the queue, the replica
-- setting (watch_plain() and watch_chunked() compare their kinds' own settings besides).
CREATE FUNCTION embeddings_internal.watch_same(o embeddings_internal.watch_options, plan embeddings_internal.watch_plan, previous embeddings.targets)
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT previous.id IS NOT NULL
       AND previous.content_column IS NOT DISTINCT FROM plan.content_col
       AND previous.content_function IS NOT DISTINCT FROM plan.content_fn
       AND previous.model = o.model
       AND previous.key_columns = plan.key_names AND previous.key_types = plan.key_types
       AND previous.has_triggers = o.triggers AND previous.queue = o.queue AND previous.replica = o.replica
$$;

-- Target t's triggers and generated functions made anew (those of another shape, its key or
-- content changed, go first), and the worker roles (embeddings.grant_worker()) given its queues:
-- watch()'s last steps of a registration, whatever the kind.
CREATE FUNCTION embeddings_internal.watch_install(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM embeddings_internal.drop_triggers(t);
    PERFORM embeddings_internal.install_triggers(t);
    PERFORM embeddings_internal.grant_worker_target(r.role_name, t) FROM embeddings_internal.worker_role_names() AS r(role_name);
    -- (what the version given now guards: a schema change that leaves it alone keeps it)
    UPDATE embeddings.targets tg SET definition_digest = embeddings_internal.definition_digest(t) WHERE tg.id = t.id;
END
$$;

-- watch() of a plain target, its plan checked: one vector per row, in a column of the table or
-- of its side table. Unchanged, only its full-text options may change. Otherwise the table's
-- lock is taken first, in short attempts that never stall the application (41_locks.sql); the
-- embedding column (or side table) and its index are made, the target registered, its
-- triggers and functions generated, and its rows queued by a backfill after this transaction.
CREATE FUNCTION embeddings_internal.watch_plain(o embeddings_internal.watch_options, plan embeddings_internal.watch_plan,
                                       previous embeddings.targets)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    vschema name := embeddings.vector_schema();
    vec_rel regclass := plan.vec_rel;
    emb_type regtype := plan.emb_type;
    defer_index boolean;
    registered record;
    t embeddings.targets;
BEGIN
    IF embeddings_internal.watch_same(o, plan, previous) AND plan.emb_type IS NOT NULL
       AND previous.clear_on_update = plan.clear_updates
       AND embeddings_internal.target_problem(previous) IS NULL THEN  -- as the catalog is now (52_stopped.sql)
        PERFORM embeddings_internal.watch_fts(previous.id, o.fts, o.fts_title_weight);
        RETURN previous.id;
    END IF;
    -- A re-registration in place (a target with a problem, e.g. its content column dropped and
    -- added again) abandons a model change in progress.
    IF previous.id IS NOT NULL AND EXISTS (SELECT FROM embeddings.model_changes mc WHERE mc.target_id = previous.id) THEN
        PERFORM embeddings.cancel_change(o.source, o.embedding_column);
    END IF;

    PERFORM embeddings_internal.lock_table(o.source);
    PERFORM set_config('embeddings.following', 'on', true);  -- our DDL: nothing to follow
    PERFORM embeddings_internal.ensure_queue(o.queue);
    IF plan.side THEN  -- the side table, with its embedding column (sql/56_side.sql)
        vec_rel := embeddings_internal.ensure_side_table(plan.side_name, o.source, plan.key_nums, o.embedding_column,
                                                plan.dims, previous.id);
        emb_type := format('%I.halfvec', vschema)::regtype;
    ELSIF plan.emb_type IS NULL THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I %I.halfvec(%s)', o.source, o.embedding_column, vschema, plan.dims);
        emb_type := format('%I.halfvec', vschema)::regtype;
    END IF;
    registered := embeddings_internal.watch_register(previous, o, plan, embeddings_internal.plain_store_kind(plan.side), vec_rel);
    t := registered.t;
    -- (registered first: a deferred index's name has the target's id)
    defer_index := embeddings_internal.watch_index(o.source, vec_rel, (SELECT c.relkind FROM pg_class c WHERE c.oid = vec_rel),
                                          o.embedding_column, emb_type, plan.emb_type IS NOT NULL, vschema,
                                          embeddings_internal.deferred_index_name(t));
    PERFORM embeddings_internal.watch_install(t);

    -- Existing rows: those with content and no embedding, or every row with content when the
    -- content source or the model changed; none with backfill => false. Queued on the backfill
    -- lane in key ranges after this transaction (sql/62_backfill.sql): one bounded step here,
    -- not the whole table under the lock.
    IF o.backfill THEN
        PERFORM embeddings_internal.start_backfill(t, registered.reembed);
    END IF;
    IF defer_index THEN
        INSERT INTO embeddings.deferred_indexes (target_id) VALUES (t.id) ON CONFLICT DO NOTHING;
        RAISE NOTICE 'embeddings: the HNSW index of %.% is built once its existing rows are embedded; search scans exactly meanwhile',
            o.source, o.embedding_column;
    END IF;
    PERFORM embeddings_internal.watch_fts(t.id, o.fts, o.fts_title_weight);
    PERFORM set_config('embeddings.following', 'off', true);
    RETURN t.id;
END
$$;

-- Validates everything, then registers `source` for embedding: creates the embedding column
-- (halfvec(dim)) when missing, its HNSW index, the triggers, and enqueues existing rows that
-- have content but no embedding. All or nothing: any error leaves no trace.
--
--   content           a text column of `source`, or the name of a function taking the
--                     table's row type and returning text (the Supabase guide's content function)
--   triggers          false registers without triggers (jobs come from elsewhere, e.g. the
--                     Supabase guide's own util.queue_embeddings triggers). NULL: as it is
--                     for a watched table, else true; so are queue, key and replica
--   clear_on_update   true: a content change clears the stale embedding at once;
--                     false: the old embedding stays until the new one lands. NULL: true for
--                     a row store; false for a side table or a chunked target, which refuse
--                     true (clearing would write the side table in the application's
--                     transaction: sql/56_side.sql says why not; a chunked target reuses the
--                     vectors of unchanged chunks)
--   queue             the pgmq queue for this table's jobs
--   key               the row key's columns when the table has no primary key (or another
--                     key should be used): they must form a unique, not-null key. NULL: the
--                     key a watched table is watched with (not its primary key of now)
--   replica           true: rows applied by logical replication enqueue too (a subscriber's
--                     table); the triggers fire ALWAYS
--   chunk_tokens      not NULL: split each row's content into chunks of at most this many
--                     tokens, one vector each, in a chunk table (see sql/55_chunks.sql);
--                     chunk_overlap (default chunk_tokens / 10) and chunk_table go with it
--   backfill          false: existing rows are not enqueued at all (bring your own vectors;
--                     rows that hold a vector are never re-embedded by watch() anyway)
--   keep_old          a model change keeps the old column as embeddings_internal.kept_column()
--   store             where the vectors live: 'row' (a column of the table, the default for a
--                     new target) or 'side' (a side table keyed like the table, sql/56_side.sql:
--                     the worker never writes the table's rows); NULL keeps the target's store
--   side_table        the side table's name (store => 'side'), default <table>_embeddings
--   format            documents, with chunk_tokens (sql/55_chunks.sql, docs/documents.md):
--                     'pdf', 'docx', 'html', 'markdown' or 'text'; a bytea content column's
--                     format is detected from its bytes unless given ('auto'), a text column's
--                     is plain text unless given ('html', 'markdown'); NULL: as it is
--   context_header    documents: the template of the header embedded in front of each chunk,
--                     {title} and {headings} its placeholders (NULL: as it is; at first the
--                     default, E'{title}\n{headings}\n\n'; '' for none)
--   fts_title_weight  full-text fields (sql/59_hybrid.sql): the content's text before its first
--                     U+001F (chr(31)) is a title, its words weighted A and counted this many
--                     times in BM25 (at least 1); the vector embeds the text with a space there.
--                     Needs fts (now or before); not for chunked targets; NULL: as it is
--
-- With another model on a watched table it starts a model change without downtime
-- (sql/44_changes.sql): the column keeps serving the old model until the swap.
--
-- Calling it again with the same arguments changes nothing; with other arguments it updates the
-- registration (a new content source or model re-enqueues every row with content).
-- Returns the target id.
--
-- Its steps take its options whole (embeddings_internal.watch_options): watch_check() checks them alone,
-- watch_resolve() resolves the key, the content and the store into a plan, and one of
-- watch_model_change(), watch_chunked() (sql/55_chunks.sql) and watch_plain() acts.
CREATE FUNCTION embeddings.watch(
    source regclass,
    content text,
    embedding_column name DEFAULT 'embedding',
    model text DEFAULT NULL,  -- NULL: embeddings.default_model(), see embeddings.set_default_model()
    triggers boolean DEFAULT NULL,  -- NULL: a watched table's own, else true
    clear_on_update boolean DEFAULT NULL,  -- NULL: a watched table's own (same store), else true for store => 'row', false for the others
    queue text DEFAULT NULL,  -- NULL: a watched table's own, else 'embedding_jobs'
    key name[] DEFAULT NULL,  -- NULL: a watched table's own key, else the primary key
    replica boolean DEFAULT NULL,  -- NULL: a watched table's own, else false
    chunk_tokens integer DEFAULT NULL,
    chunk_overlap integer DEFAULT NULL,
    chunk_table text DEFAULT NULL,
    backfill boolean DEFAULT true,
    keep_old boolean DEFAULT false,
    store text DEFAULT NULL,  -- NULL: the target's current store, 'row' for a new target
    side_table text DEFAULT NULL,
    fts regconfig DEFAULT NULL,  -- full-text search for hybrid search (sql/59_hybrid.sql); NULL: as it is
    format text DEFAULT NULL,  -- documents (sql/55_chunks.sql): the content's format; NULL: as it is
    context_header text DEFAULT NULL,  -- documents: the context header's template; NULL: as it is
    fts_title_weight double precision DEFAULT NULL  -- full-text fields: the title's weight; NULL: as it is
) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o embeddings_internal.watch_options;
    previous embeddings.targets;  -- the target registered before; NULL id: none
    plan embeddings_internal.watch_plan;
    changing integer;
BEGIN
    o.source := watch.source;
    o.content := watch.content;
    o.embedding_column := watch.embedding_column;
    -- No model named: a watched table's own (or the one a change in progress moves it to), as
    -- set_default_model() promises; a new target's, the database's default model.
    o.model := coalesce(watch.model,
                        (SELECT coalesce(mc.model, tg.model) FROM embeddings.targets tg
                         LEFT JOIN embeddings.model_changes mc ON mc.target_id = tg.id
                         WHERE tg.source = watch.source AND tg.embedding_column = watch.embedding_column),
                        embeddings.default_model());
    SELECT * INTO previous FROM embeddings.targets tg
    WHERE tg.source = watch.source AND tg.embedding_column = watch.embedding_column;
    -- Not given: a watched table's own queue, triggers, replica setting and key (a one-line
    -- model change changes its model only; a watch() again, nothing it was not given); a new
    -- target's, the default queue, triggers, no replica, the primary key. The key is the one
    -- watched (by its columns' numbers: a renamed column stays it), not the primary key of now.
    o.queue := coalesce(watch.queue, previous.queue, 'embedding_jobs');
    o.triggers := coalesce(watch.triggers, previous.has_triggers, true);
    o.replica := coalesce(watch.replica, previous.replica, false);
    o.key := coalesce(watch.key, embeddings_internal.watched_key(previous));
    o.clear_on_update := watch.clear_on_update;
    o.chunk_tokens := watch.chunk_tokens;
    o.chunk_overlap := watch.chunk_overlap;
    o.chunk_table := watch.chunk_table;
    o.backfill := watch.backfill;
    o.keep_old := watch.keep_old;
    o.store := watch.store;
    o.side_table := watch.side_table;
    o.fts := watch.fts;
    o.format := watch.format;
    o.context_header := watch.context_header;
    o.fts_title_weight := watch.fts_title_weight;

    PERFORM embeddings_internal.watch_check(o);
    -- Until COMMIT, no other session's watch() of this table's partition tree passes its check
    -- against this one's registration (41_locks.sql).
    PERFORM embeddings_internal.lock_partition_tree(o.source);
    PERFORM embeddings_internal.watch_check_table(o);
    SELECT * INTO previous FROM embeddings.targets tg  -- (again: after the lock)
    WHERE tg.source = o.source AND tg.embedding_column = o.embedding_column;
    plan := embeddings_internal.watch_resolve(o, previous);
    IF previous.id IS NOT NULL THEN  -- (of a new target, or one it changes: install_triggers())
        PERFORM embeddings_internal.drop_strays(previous);  -- what a restore left on its tables
    END IF;
    -- Another model on a watched plain target: a blue/green change (sql/44_changes.sql), which
    -- checks the rest itself (the column is the old model's until the swap).
    changing := embeddings_internal.watch_model_change(o, plan, previous);
    IF changing IS NOT NULL THEN
        RETURN changing;
    END IF;
    PERFORM embeddings_internal.watch_check_plan(o, plan);
    IF plan.chunked THEN  -- vectors in a chunk table, none in the table (sql/55_chunks.sql)
        RETURN embeddings_internal.watch_chunked(o, plan, previous);
    END IF;
    RETURN embeddings_internal.watch_plain(o, plan, previous);
END
$$;
COMMENT ON FUNCTION embeddings.watch IS
    'Watches a table: its rows are embedded by the worker and kept current by triggers. Creates the embedding column (or side or chunk table), its index, the triggers, and queues existing rows. Schema owner only.';

-- Stops watching: drops the triggers, the registration, its pending jobs and dead letters.
-- The embedding column, its values and its index stay (a side table, or chunk table, and its
-- vectors too). Returns false (with a NOTICE) when the table was not watched.
CREATE FUNCTION embeddings.unwatch(source regclass, embedding_column name DEFAULT 'embedding')
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
BEGIN
    IF source IS NULL OR embedding_column IS NULL THEN
        RAISE EXCEPTION 'embeddings.unwatch(): % must not be NULL', CASE WHEN source IS NULL THEN 'source' ELSE 'embedding_column' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO t FROM embeddings.targets tg
    WHERE tg.source = unwatch.source AND tg.embedding_column = unwatch.embedding_column;
    IF NOT FOUND THEN
        RAISE NOTICE '%.% is not watched', source, embedding_column
            USING HINT = embeddings_internal.watched_columns_hint(source, format('No column of %s is watched.', source));
        RETURN false;
    END IF;
    PERFORM embeddings_internal.forget_target(t);
    RETURN true;
END
$$;
COMMENT ON FUNCTION embeddings.unwatch IS
    'Stops watching a table: drops its triggers, registration, pending jobs and dead letters; the vectors stay. Schema owner only.';

-- Unregisters target t: its triggers and functions, its queued jobs, its registration
-- (failures and throughput go with it), and tells workers.
CREATE FUNCTION embeddings_internal.forget_target(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
BEGIN
    PERFORM embeddings_internal.drop_access(t);
    IF EXISTS (SELECT FROM pg_class WHERE oid = t.source) THEN
        PERFORM embeddings_internal.drop_triggers(t);
    END IF;
    -- model change: a change in progress goes (its shadow column is ours)
    IF EXISTS (SELECT FROM embeddings.model_changes mc WHERE mc.target_id = t.id)
       AND EXISTS (SELECT FROM pg_class WHERE oid = t.source) THEN
        PERFORM embeddings.cancel_change(t.source, t.embedding_column);
    END IF;
    DELETE FROM embeddings.inbox i WHERE i.target = t.id;
    EXECUTE format('DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1)',
                   embeddings_internal.lane_table(t.queue, 'live')) USING t.id;
    EXECUTE format('DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1)',  -- lanes
                   embeddings_internal.lane_table(t.queue, 'backfill')) USING t.id;
    DELETE FROM embeddings.targets tg WHERE tg.id = t.id;
END
$$;

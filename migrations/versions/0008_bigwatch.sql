-- watch() on a large table (issue 16 sections 2 and 4): watch() records a backfill cursor and
-- queues one bounded step; the worker (when its queue is empty) and sweep() queue the rest a key
-- range at a time, and a large table's HNSW index is built after the backfill
-- (sql/62_backfill.sql). status counts rows still to be queued as pending (backfill_rows) and
-- says when the index is deferred; worker roles may step backfills.

CREATE TABLE embeddings.backfills (
    target_id     integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    -- Every row with content, not only those without a vector (the model or content changed).
    every_row     boolean NOT NULL,
    -- The last row key queued or passed, in its JSON form (as messages carry keys); NULL: none yet.
    after_key     jsonb,
    scanned_rows  bigint NOT NULL DEFAULT 0,
    enqueued_keys bigint NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL DEFAULT now(),
    stepped_at    timestamptz
);
GRANT SELECT ON embeddings.backfills TO PUBLIC;  -- embeddings.status reads it as its caller
COMMENT ON TABLE embeddings.backfills IS 'Targets whose existing rows are still being queued, and where the queuing has got to';

-- Rows one step examines by default (sweep(), and watch()'s inline first step).
CREATE OR REPLACE FUNCTION embeddings.backfill_step_keys() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 1000;

-- A predicate on row alias n: the row needs a job. Without `every_row`: content and no vector
-- (no chunk, for a chunked target); with it: content, or a vector to clear (its content column
-- was dropped and added again). `with_content` false leaves the content out (a content function
-- that raises must not stop the backfill: the worker dead-letters such rows with their error).
CREATE OR REPLACE FUNCTION embeddings.backfill_missing_sql(t embeddings.targets, every_row boolean, with_content boolean)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN NOT with_content THEN CASE WHEN every_row THEN 'true' ELSE embeddings.embedding_missing_sql(t, 'n') END
        WHEN every_row THEN format('(%s <> ''''%s)', embeddings.content_sql(t, 'n'),
                                   CASE WHEN t.chunk_table IS NULL
                                        THEN format(' OR n.%I IS NOT NULL', t.embedding_column) ELSE '' END)
        ELSE format('%s AND %s <> ''''', embeddings.embedding_missing_sql(t, 'n'), embeddings.content_sql(t, 'n'))
    END
$$;

-- The one function that sends backfill work: keys (JSON forms) of target `target_id`, as
-- messages of keys_per_message() keys. Today into the target's own queue. SECURITY DEFINER
-- (through enqueue_keys), so executable by no one but its owner unless granted.
CREATE OR REPLACE FUNCTION embeddings.send_backfill(target_id integer, keys jsonb[]) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings.enqueue_keys(target_id, keys)
$$;
REVOKE ALL ON FUNCTION embeddings.send_backfill(integer, jsonb[]) FROM PUBLIC;

-- Starts (or restarts) target t's backfill and takes its first step inline. `every_row`
-- restarts from the first key; otherwise a running backfill keeps its cursor.
CREATE OR REPLACE FUNCTION embeddings.start_backfill(t embeddings.targets, every_row boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO embeddings.backfills AS b (target_id, every_row)
    VALUES (t.id, every_row)
    ON CONFLICT (target_id) DO UPDATE
    SET every_row = b.every_row OR excluded.every_row,
        after_key = CASE WHEN excluded.every_row THEN NULL ELSE b.after_key END,
        started_at = CASE WHEN excluded.every_row THEN now() ELSE b.started_at END;
    PERFORM embeddings.backfill_step(t.id, embeddings.backfill_step_keys());
END
$$;

-- One step of the backfill `b` of target `t`, whose cursor row the caller has locked: queues
-- the keys among the next `max_keys` rows after the cursor that need a job and wait in none,
-- and moves the cursor past them; at the end of the table the backfill is done (its row goes).
-- Every row again (`every_row`) queues keys that wait in a job too: that job may be one the
-- worker deferred (its target could not be served), not due for a while.
CREATE OR REPLACE FUNCTION embeddings.backfill_range(
    t embeddings.targets, b embeddings.backfills, max_keys integer,
    OUT scanned integer, OUT enqueued integer
)
LANGUAGE plpgsql AS $$
DECLARE
    last_key jsonb;
    keys jsonb[];
    statement text := $q$
        WITH slice AS (
            SELECT pg_catalog.to_jsonb(%1$s) AS k, (%2$s) AS missing
            FROM %3$s n
            WHERE $1::jsonb IS NULL OR (%4$s) > (%5$s)
            ORDER BY %4$s
            LIMIT $2
        ),
        numbered AS (
            SELECT s.*, row_number() OVER () AS ord FROM slice s
        )
        SELECT (SELECT count(*) FROM numbered)::int,
               (SELECT k FROM numbered ORDER BY ord DESC LIMIT 1),
               ARRAY(SELECT s.k FROM numbered s
                     WHERE s.missing AND ($4 OR s.k NOT IN (SELECT p.k FROM embeddings.pending_keys($3) p))
                     ORDER BY s.ord)
        $q$;
BEGIN
    BEGIN
        EXECUTE format(statement, embeddings.key_sql(t, 'n'), embeddings.backfill_missing_sql(t, b.every_row, true),
                       t.source, embeddings.key_columns_sql(t, 'n'), embeddings.key_from_json_sql(t, '$1::jsonb'))
            INTO scanned, last_key, keys USING b.after_key, max_keys, t, b.every_row;
    EXCEPTION WHEN OTHERS THEN
        IF t.content_function IS NULL THEN
            RAISE;
        END IF;
        RAISE WARNING 'embeddings: content function of % failed (%); queued its rows unfiltered', t.source, SQLERRM;
        EXECUTE format(statement, embeddings.key_sql(t, 'n'), embeddings.backfill_missing_sql(t, b.every_row, false),
                       t.source, embeddings.key_columns_sql(t, 'n'), embeddings.key_from_json_sql(t, '$1::jsonb'))
            INTO scanned, last_key, keys USING b.after_key, max_keys, t, b.every_row;
    END;
    enqueued := cardinality(keys);
    IF enqueued > 0 THEN
        PERFORM embeddings.send_backfill(t.id, keys);
    END IF;
    IF scanned < max_keys THEN
        DELETE FROM embeddings.backfills WHERE target_id = t.id;  -- the end of the table
    ELSE
        UPDATE embeddings.backfills
        SET after_key = last_key, scanned_rows = scanned_rows + scanned,
            enqueued_keys = enqueued_keys + enqueued, stepped_at = now()
        WHERE target_id = t.id;
    END IF;
END
$$;

-- One step of target `target_id`'s backfill, unless another session is taking one (then, or
-- when there is no backfill or the target is not served: 0 rows). Returns the rows examined
-- and the keys queued.
CREATE OR REPLACE FUNCTION embeddings.backfill_step(
    target_id integer, max_keys integer DEFAULT embeddings.backfill_step_keys(),
    OUT scanned integer, OUT enqueued integer
)
LANGUAGE plpgsql AS $$
DECLARE
    b embeddings.backfills;
    t embeddings.targets;
BEGIN
    scanned := 0;
    enqueued := 0;
    IF max_keys IS NULL OR max_keys < 1 THEN
        RAISE EXCEPTION 'max_keys must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO b FROM embeddings.backfills bf WHERE bf.target_id = backfill_step.target_id
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO t FROM embeddings.targets tg WHERE tg.id = b.target_id;
    IF t.problem IS NOT NULL OR NOT EXISTS (SELECT FROM pg_class WHERE oid = t.source) THEN
        RETURN;  -- not served now: watch() again restarts it
    END IF;
    SELECT r.scanned, r.enqueued INTO scanned, enqueued FROM embeddings.backfill_range(t, b, max_keys) r;
END
$$;

-- One step of the first backfill of a target on `queue` that no other session is stepping
-- (the worker calls this when its queue is empty). Returns the rows examined (0: none to step)
-- and the keys queued.
CREATE OR REPLACE FUNCTION embeddings.backfill_next(
    queue text, max_keys integer DEFAULT embeddings.backfill_step_keys(),
    OUT scanned integer, OUT enqueued integer
)
LANGUAGE plpgsql AS $$
DECLARE
    b embeddings.backfills;
    t embeddings.targets;
BEGIN
    scanned := 0;
    enqueued := 0;
    IF max_keys IS NULL OR max_keys < 1 THEN
        RAISE EXCEPTION 'max_keys must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT bf.* INTO b FROM embeddings.backfills bf
    JOIN embeddings.targets tg ON tg.id = bf.target_id
    WHERE tg.queue = backfill_next.queue AND tg.problem IS NULL
      AND EXISTS (SELECT FROM pg_class c WHERE c.oid = tg.source)
    ORDER BY bf.target_id
    LIMIT 1
    FOR UPDATE OF bf SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO t FROM embeddings.targets tg WHERE tg.id = b.target_id;
    SELECT r.scanned, r.enqueued INTO scanned, enqueued FROM embeddings.backfill_range(t, b, max_keys) r;
END
$$;

-- Rows of target t that its backfill has still to pass and that need a job (for
-- embeddings.status: they are pending too). NULL when t has no backfill.
CREATE OR REPLACE FUNCTION embeddings.backfill_rows_left(t embeddings.targets) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    b embeddings.backfills;
    statement text := 'SELECT count(*) FROM %s n WHERE (%s) AND ($1::jsonb IS NULL OR (%s) > (%s))';
    left_rows bigint;
BEGIN
    SELECT * INTO b FROM embeddings.backfills bf WHERE bf.target_id = t.id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    BEGIN
        EXECUTE format(statement, t.source, embeddings.backfill_missing_sql(t, b.every_row, true),
                       embeddings.key_columns_sql(t, 'n'), embeddings.key_from_json_sql(t, '$1::jsonb'))
            INTO left_rows USING b.after_key;
    EXCEPTION WHEN OTHERS THEN  -- a content function that raises: count without it
        EXECUTE format(statement, t.source, embeddings.backfill_missing_sql(t, b.every_row, false),
                       embeddings.key_columns_sql(t, 'n'), embeddings.key_from_json_sql(t, '$1::jsonb'))
            INTO left_rows USING b.after_key;
    END;
    RETURN left_rows;
END
$$;

-- Deferred HNSW indexes (issue 16 §4). When watch() adds the embedding column to a large table,
-- it builds no index: building one, even empty, scans the table under watch()'s lock, and
-- inserting the backfill's vectors one by one into HNSW costs about ten times their share of a
-- build (15.7 vs 1.37 ms per row, measured here at 200k rows). Search scans exactly
-- meanwhile (status: index_deferred). Once the backfill has ended and its jobs are done, a
-- worker that may (the table's owner) builds the index CONCURRENTLY, so that writes go on.
-- Partitioned tables are indexed at watch() as before (no CONCURRENTLY on their parent).
CREATE TABLE embeddings.deferred_indexes (
    target_id integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    since     timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON embeddings.deferred_indexes TO PUBLIC;  -- embeddings.status reads it as its caller

-- Tables with more rows than this (the planner's estimate) get their HNSW index deferred.
CREATE OR REPLACE FUNCTION embeddings.index_defer_rows() RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 100000;

-- The name and the statement of target t's deferred index.
CREATE OR REPLACE FUNCTION embeddings.deferred_index_name(t embeddings.targets) RETURNS name
LANGUAGE sql STABLE AS $$
    SELECT (left(c.relname, 40) || '_' || left(t.embedding_column, 16) || '_hnsw')::name
    FROM pg_class c WHERE c.oid = t.source
$$;

-- Keys of target t waiting in its queue (in flight included).
CREATE OR REPLACE FUNCTION embeddings.pending_count(t embeddings.targets, OUT pending_jobs bigint, OUT oldest_pending_seconds double precision)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(g.keys), 0)::bigint, extract(epoch FROM clock_timestamp() - min(g.oldest))::double precision
    FROM embeddings.queue_pending(t.queue) g
    JOIN pg_class c ON c.oid = t.source JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE g.target_id = to_jsonb(t.id)
       OR (g.schema_name = n.nspname AND g.table_name = c.relname AND g.embedding_column = t.embedding_column)
$$;

-- Deferred indexes a worker of `queue` may build now: their backfill ended, its jobs are nearly
-- done (fewer than one step's keys wait: live writes never stop it), and the current role owns
-- the table. `cleanup` drops what an interrupted build left
-- (an invalid index); `statement` builds the index CONCURRENTLY (top level only).
CREATE OR REPLACE FUNCTION embeddings.deferred_index_ready(queue text)
RETURNS TABLE (target_id integer, cleanup text, statement text)
LANGUAGE sql STABLE AS $$
    SELECT t.id,
           (SELECT format('DROP INDEX CONCURRENTLY %I.%I', n.nspname, ic.relname)
            FROM pg_class ic JOIN pg_index i ON i.indexrelid = ic.oid
            WHERE ic.relnamespace = c.relnamespace AND ic.relname = embeddings.deferred_index_name(t)
              AND NOT i.indisvalid),
           format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %s USING hnsw (%I %I.%I)',
                  embeddings.deferred_index_name(t), t.source, t.embedding_column, tn.nspname,
                  ty.typname || '_cosine_ops')
    FROM embeddings.deferred_indexes d
    JOIN embeddings.targets t ON t.id = d.target_id
    JOIN pg_class c ON c.oid = t.source
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = t.source AND a.attname = t.embedding_column AND NOT a.attisdropped
    JOIN pg_type ty ON ty.oid = a.atttypid
    JOIN pg_namespace tn ON tn.oid = ty.typnamespace
    WHERE t.queue = deferred_index_ready.queue AND t.problem IS NULL
      AND NOT EXISTS (SELECT FROM embeddings.backfills b WHERE b.target_id = t.id)
      AND (SELECT p.pending_jobs FROM embeddings.pending_count(t) p) < embeddings.backfill_step_keys()
      AND pg_has_role(c.relowner, 'USAGE')
    ORDER BY t.id
$$;

-- Forgets target `target_id`'s deferred index once a valid HNSW index is on its column.
-- SECURITY DEFINER: the worker that built it may not write the registry; it removes nothing
-- that is not done.
CREATE OR REPLACE FUNCTION embeddings.deferred_index_built(target_id integer) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM embeddings.deferred_indexes d
    USING embeddings.targets t
    WHERE d.target_id = deferred_index_built.target_id AND t.id = d.target_id
      AND EXISTS (
          SELECT FROM pg_index i
          JOIN pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_am am ON am.oid = ic.relam
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
          WHERE i.indrelid = t.source AND am.amname = 'hnsw' AND a.attname = t.embedding_column
            AND i.indisvalid)
    RETURNING true
$$;

CREATE OR REPLACE FUNCTION embeddings.watch(
    source regclass,
    content text,
    embedding_column name DEFAULT 'embedding',
    model text DEFAULT NULL,  -- NULL: embeddings.default_model(), see embeddings.set_default_model()
    triggers boolean DEFAULT true,
    clear_on_update boolean DEFAULT true,
    queue text DEFAULT 'embedding_jobs',
    key name[] DEFAULT NULL,
    replica boolean DEFAULT false,
    chunk_tokens integer DEFAULT NULL,
    chunk_overlap integer DEFAULT NULL,
    chunk_table text DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    dims integer;
    rel_kind "char";
    rel_schema name;
    rel_name name;
    key_names name[];
    key_regtypes regtype[];
    key_nums smallint[];
    content_num smallint;
    content_col name;
    content_fn regprocedure;
    content_type regtype;
    emb_type regtype;
    emb_typmod integer;
    emb_exists boolean;
    vschema name := embeddings.vector_schema();
    previous embeddings.targets;
    t embeddings.targets;
    fresh boolean;
    reembed boolean := false;
    defer_index boolean := false;
BEGIN
    model := coalesce(model, embeddings.default_model());  -- newcomer: the database-level default model
    IF source IS NULL OR content IS NULL OR embedding_column IS NULL OR model IS NULL
       OR triggers IS NULL OR clear_on_update IS NULL OR queue IS NULL OR replica IS NULL THEN
        RAISE EXCEPTION 'embeddings.watch(): arguments must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;

    -- The table.
    SELECT c.relkind, n.nspname, c.relname INTO rel_kind, rel_schema, rel_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source;
    IF rel_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', source USING ERRCODE = 'wrong_object_type';
    END IF;

    -- The model.
    SELECT m.dimensions INTO dims FROM embeddings.models m WHERE m.name = model;
    IF dims IS NULL THEN
        RAISE EXCEPTION 'unknown model "%"', model
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Known models: %s. Add one with INSERT INTO embeddings.models.',
                                (SELECT string_agg(m.name, ', ' ORDER BY m.name) FROM embeddings.models m));
    END IF;

    -- The row key: the primary key, or the unique not-null key named by `key`. Any number of
    -- columns, of any types with an equality operator.
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
                USING ERRCODE = 'undefined_column';
        END IF;
        IF EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = source AND a.attnum = ANY(key_nums) AND NOT a.attnotnull) THEN
            RAISE EXCEPTION 'key (%) of % has nullable columns', array_to_string(key, ', '), source
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Make the key columns NOT NULL.';
        END IF;
        IF NOT EXISTS (
            SELECT FROM pg_index i
            WHERE i.indrelid = source AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
              AND i.indimmediate AND i.indnkeyatts = cardinality(key_nums)
              AND (SELECT array_agg(x ORDER BY x) FROM unnest(i.indkey[0:i.indnkeyatts - 1]) AS x)
                  = (SELECT array_agg(x ORDER BY x) FROM unnest(key_nums) AS x)
        ) THEN
            RAISE EXCEPTION 'key (%) of % is not unique', array_to_string(key, ', '), source
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = format('Add one: ALTER TABLE %s ADD UNIQUE (%s).', source, array_to_string(key, ', '));
        END IF;
    END IF;
    FOR i IN 1 .. cardinality(key_regtypes) LOOP
        BEGIN
            EXECUTE format('SELECT NULL::%1$s = NULL::%1$s', key_regtypes[i]);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'key column %.% has type %, which has no equality operator', source, key_names[i], key_regtypes[i]
                USING ERRCODE = 'feature_not_supported';
        END;
    END LOOP;

    -- The content: a text column, else a function of the row type returning text.
    SELECT a.attname, a.atttypid::regtype, a.attnum INTO content_col, content_type, content_num
    FROM pg_attribute a
    WHERE a.attrelid = source AND a.attname = content AND a.attnum > 0 AND NOT a.attisdropped;
    IF content_col IS NOT NULL THEN
        IF (SELECT typcategory FROM pg_type WHERE oid = content_type) <> 'S' THEN
            RAISE EXCEPTION 'content column %.% has type %, not text', source, content_col, content_type
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Use a content function that returns text, e.g. one that casts or formats the column.';
        END IF;
    ELSE
        BEGIN
            content_fn := to_regprocedure(format('%s(%I.%I)', content, rel_schema, rel_name));
        EXCEPTION WHEN OTHERS THEN
            content_fn := NULL;  -- not even a valid function name
        END;
        IF content_fn IS NULL THEN
            RAISE EXCEPTION 'content "%" is neither a column of % nor a function %(%)', content, source, content, source
                USING ERRCODE = 'undefined_column',
                      HINT = 'Pass a text column name, or the name of a function that takes the table''s row type and returns text.';
        END IF;
        SELECT p.prorettype::regtype INTO content_type FROM pg_proc p WHERE p.oid = content_fn;
        IF content_type NOT IN ('text'::regtype, 'character varying'::regtype) OR
           (SELECT p.proretset FROM pg_proc p WHERE p.oid = content_fn) THEN
            RAISE EXCEPTION 'content function % returns %, not text', content_fn,
                    CASE WHEN (SELECT p.proretset FROM pg_proc p WHERE p.oid = content_fn)
                         THEN 'a set of ' ELSE '' END || content_type
                USING ERRCODE = 'datatype_mismatch';
        END IF;
        PERFORM embeddings.check_content_function(source, content_fn);  -- trusted, not VOLATILE
    END IF;

    -- The embedding column: absent (we add it), or vector(dims) / halfvec(dims).
    SELECT a.atttypid::regtype, a.atttypmod INTO emb_type, emb_typmod
    FROM pg_attribute a
    WHERE a.attrelid = source AND a.attname = embedding_column AND a.attnum > 0 AND NOT a.attisdropped;
    emb_exists := emb_type IS NOT NULL;
    IF emb_exists THEN
        IF NOT EXISTS (SELECT FROM pg_type ty JOIN pg_namespace ns ON ns.oid = ty.typnamespace
                       WHERE ty.oid = emb_type AND ty.typname IN ('vector', 'halfvec') AND ns.nspname = vschema) THEN
            RAISE EXCEPTION 'embedding column %.% has type %, expected vector(%) or halfvec(%)',
                    source, embedding_column, format_type(emb_type, emb_typmod), dims, dims
                USING ERRCODE = 'datatype_mismatch';
        ELSIF emb_typmod <> dims THEN
            RAISE EXCEPTION 'embedding column %.% is %, but model "%" produces % dimensions',
                    source, embedding_column, format_type(emb_type, emb_typmod), model, dims
                USING ERRCODE = 'datatype_mismatch',
                      HINT = format('Use a %s-dimensional column, or a model whose dimensions match.', dims);
        END IF;
    END IF;
    IF embedding_column = content_col THEN
        RAISE EXCEPTION 'the embedding column cannot be the content column' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF queue !~ '^[a-z_][a-z0-9_]{0,46}$' THEN
        RAISE EXCEPTION 'invalid queue name "%": lower-case letters, digits and _ only, at most 47', queue
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM embeddings.refuse_guide_triggers(source, triggers);  -- newcomer: never two sets of triggers

    -- >>> chunked targets (sql/55_chunks.sql): vectors in a chunk table, none in the source
    IF chunk_tokens IS NOT NULL OR chunk_overlap IS NOT NULL OR chunk_table IS NOT NULL
       OR EXISTS (SELECT FROM embeddings.targets tg WHERE tg.source = watch.source
                  AND tg.embedding_column = watch.embedding_column AND tg.chunk_table IS NOT NULL) THEN
        RETURN embeddings.watch_chunked(source, content_col, content_fn, embedding_column, model, triggers,
                                        queue, key_names, key_regtypes, key_nums, content_num, replica,
                                        chunk_tokens, chunk_overlap, chunk_table);
    END IF;
    -- <<< chunked targets

    -- Everything is valid: act.
    SELECT * INTO previous FROM embeddings.targets tg
    WHERE tg.source = watch.source AND tg.embedding_column = watch.embedding_column;
    fresh := previous.id IS NULL;
    IF NOT fresh AND emb_exists
       AND previous.content_column IS NOT DISTINCT FROM content_col
       AND previous.content_function IS NOT DISTINCT FROM content_fn
       AND previous.model = watch.model
       AND previous.key_columns = key_names AND previous.key_types = key_regtypes
       AND previous.has_triggers = triggers AND previous.clear_on_update = watch.clear_on_update
       AND previous.queue = watch.queue AND previous.replica = watch.replica
       AND previous.problem IS NULL THEN
        RETURN previous.id;
    END IF;

    -- The DDL below is ours: the schema-change event trigger need not follow it.
    PERFORM set_config('embeddings.following', 'on', true);
    PERFORM embeddings.ensure_queue(queue);

    IF NOT emb_exists THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I %I.halfvec(%s)', source, embedding_column, vschema, dims);
        emb_type := format('%I.halfvec', vschema)::regtype;
    END IF;

    IF NOT EXISTS (
        SELECT FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_am am ON am.oid = ic.relam
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = source AND am.amname = 'hnsw' AND a.attname = embedding_column
    ) THEN
        -- A column added just now to a large table: building even an empty index scans the
        -- whole table under our lock, and inserting each vector into HNSW costs ~10x its share
        -- of a build. The worker builds it CONCURRENTLY once the backfill ends (62_backfill.sql).
        defer_index := NOT emb_exists AND rel_kind = 'r' AND embeddings.estimated_rows(source) > embeddings.index_defer_rows();
        IF NOT defer_index THEN
            EXECUTE format('CREATE INDEX ON %s USING hnsw (%I %I.%I)', source, embedding_column, vschema,
                CASE WHEN (SELECT typname FROM pg_type WHERE oid = emb_type) = 'halfvec'
                     THEN 'halfvec_cosine_ops' ELSE 'vector_cosine_ops' END);
        END IF;
    END IF;

    IF fresh THEN
        INSERT INTO embeddings.targets AS tg (source, embedding_column, content_column, content_function, model,
                                              queue, has_triggers, clear_on_update, key_columns, key_types,
                                              key_attnums, content_attnum, embedding_attnum, replica)
        VALUES (source, embedding_column, content_col, content_fn, model,
                queue, triggers, clear_on_update, key_names, key_regtypes,
                key_nums, content_num, embeddings.attnum_of(source, embedding_column), replica)
        RETURNING * INTO t;
    ELSE
        -- Another content column under the same name (dropped and added again), or a target
        -- that was deferred (its triggers gone, so content changes went unseen): every row again.
        reembed := previous.content_column IS DISTINCT FROM content_col
                   OR previous.content_attnum IS DISTINCT FROM content_num
                   OR previous.content_function IS DISTINCT FROM content_fn
                   OR previous.problem IS NOT NULL
                   OR previous.model <> watch.model;
        IF previous.queue <> watch.queue THEN
            -- Pending jobs move with the target.
            EXECUTE format(
                'WITH moved AS (DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1) RETURNING message) '
                'SELECT count(*) FROM moved, LATERAL pgmq.send(%L, moved.message)',
                pgmq.format_table_name(previous.queue, 'q'), queue) USING previous.id;
        END IF;
        UPDATE embeddings.targets tg
        SET content_column = content_col, content_function = content_fn, model = watch.model,
            key_columns = key_names, key_types = key_regtypes, key_attnums = key_nums,
            content_attnum = content_num, embedding_attnum = embeddings.attnum_of(watch.source, watch.embedding_column),
            replica = watch.replica, problem = NULL, queue = watch.queue,
            has_triggers = triggers, clear_on_update = watch.clear_on_update, updated_at = now(),
            version = tg.version + 1  -- in-flight writes under the old definition are rejected
        WHERE tg.id = previous.id
        RETURNING * INTO t;
    END IF;

    PERFORM embeddings.drop_triggers(t);  -- functions of another shape (key, content) go first
    PERFORM embeddings.install_triggers(t);
    -- Worker roles set up by embeddings.grant_worker() serve this table too. (The function is
    -- defined in 80_roles.sql; plpgsql resolves it when this line runs.)
    PERFORM embeddings.grant_worker_target(r.role_name, t) FROM embeddings.worker_roles r;

    -- Existing rows: those with content and no embedding, or every row with content when the
    -- content source or the model changed. Queued by a backfill in key ranges after this
    -- transaction (sql/62_backfill.sql): one bounded step here, not the whole table under the lock.
    PERFORM embeddings.start_backfill(t, reembed);
    IF defer_index THEN
        INSERT INTO embeddings.deferred_indexes (target_id) VALUES (t.id) ON CONFLICT DO NOTHING;
        RAISE NOTICE 'embeddings: the HNSW index of %.% is built once its existing rows are embedded; search scans exactly meanwhile',
            source, embedding_column;
    END IF;

    PERFORM set_config('embeddings.following', 'off', true);
    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN t.id;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.watch_chunked(
    source regclass,
    content_col name,
    content_fn regprocedure,
    embedding_column name,
    model text,
    triggers boolean,
    queue text,
    key_names name[],
    key_types regtype[],
    key_nums smallint[],
    content_num smallint,
    replica boolean,
    chunk_tokens integer,
    chunk_overlap integer,
    chunk_table text
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    m embeddings.models;
    overlap integer := coalesce(chunk_overlap, chunk_tokens / 10);
    previous embeddings.targets;
    t embeddings.targets;
    table_parts text[];
    table_name text;
    chunks regclass;
    reembed boolean := false;
BEGIN
    SELECT * INTO previous FROM embeddings.targets tg
    WHERE tg.source = watch_chunked.source AND tg.embedding_column = watch_chunked.embedding_column;
    IF previous.id IS NOT NULL AND previous.chunk_table IS NULL THEN
        RAISE EXCEPTION '%.% is watched with one vector per row, not in chunks', source, embedding_column
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Unwatch it first (SELECT embeddings.unwatch(%L)), or pass another embedding_column.', source::text);
    ELSIF chunk_tokens IS NULL AND previous.id IS NULL THEN
        RAISE EXCEPTION 'chunk_overlap and chunk_table need chunk_tokens' USING ERRCODE = 'invalid_parameter_value';
    ELSIF chunk_tokens IS NULL THEN
        RAISE EXCEPTION '% is watched in chunks of % tokens: pass chunk_tokens', source, previous.chunk_tokens
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'To keep one vector per row instead, unwatch it first.';
    END IF;

    SELECT * INTO m FROM embeddings.models mo WHERE mo.name = watch_chunked.model;
    IF chunk_tokens < 8 OR chunk_tokens > m.max_tokens - 2 THEN
        RAISE EXCEPTION 'chunk_tokens must be between 8 and % for model "%", not %', m.max_tokens - 2, model, chunk_tokens
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('The model reads %s tokens, two of them [CLS] and [SEP].', m.max_tokens);
    END IF;
    IF overlap < 0 OR overlap > chunk_tokens / 2 THEN
        RAISE EXCEPTION 'chunk_overlap must be between 0 and half of chunk_tokens (%), not %', chunk_tokens / 2, overlap
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF queue !~ '^[a-z_][a-z0-9_]{0,46}$' THEN
        RAISE EXCEPTION 'invalid queue name "%": lower-case letters, digits and _ only, at most 47', queue
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- The chunk table: chunk_table as given (optionally schema-qualified), else <table>_chunks
    -- beside the source.
    IF chunk_table IS NULL THEN
        SELECT format('%I.%I', n.nspname, c.relname || '_chunks') INTO table_name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source;
    ELSE
        table_parts := parse_ident(chunk_table);
        table_name := CASE cardinality(table_parts)
            WHEN 1 THEN (SELECT format('%I.%I', n.nspname, table_parts[1])
                         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source)
            WHEN 2 THEN format('%I.%I', table_parts[1], table_parts[2])
        END;
        IF table_name IS NULL THEN
            RAISE EXCEPTION 'invalid chunk_table "%": a table name, optionally schema-qualified', chunk_table
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF EXISTS (SELECT FROM embeddings.targets tg
               WHERE tg.chunk_table = to_regclass(table_name) AND tg.id IS DISTINCT FROM previous.id) THEN
        RAISE EXCEPTION 'table % already holds the chunks of another target', table_name
            USING ERRCODE = 'duplicate_table', HINT = 'Name another table with chunk_table => ...';
    END IF;

    IF previous.id IS NOT NULL
       AND previous.content_column IS NOT DISTINCT FROM content_col
       AND previous.content_function IS NOT DISTINCT FROM content_fn
       AND previous.model = watch_chunked.model
       AND previous.key_columns = key_names AND previous.key_types = watch_chunked.key_types
       AND previous.has_triggers = triggers AND previous.queue = watch_chunked.queue
       AND previous.replica = watch_chunked.replica AND previous.problem IS NULL
       AND previous.chunk_table = to_regclass(table_name)
       AND previous.chunk_tokens = watch_chunked.chunk_tokens AND previous.chunk_overlap = overlap THEN
        RETURN previous.id;
    END IF;

    -- The DDL below is ours: the schema-change event trigger need not follow it.
    PERFORM set_config('embeddings.following', 'on', true);
    PERFORM embeddings.ensure_queue(queue);
    chunks := embeddings.ensure_chunk_table(table_name, source, key_names, key_types, embedding_column, m.dimensions);

    IF previous.id IS NULL THEN
        -- No embedding_attnum: the embedding column is in the chunk table.
        INSERT INTO embeddings.targets AS tg (source, embedding_column, content_column, content_function, model,
                                              queue, has_triggers, clear_on_update, key_columns, key_types,
                                              key_attnums, content_attnum, embedding_attnum, replica,
                                              chunk_table, chunk_tokens, chunk_overlap)
        VALUES (source, embedding_column, content_col, content_fn, model,
                queue, triggers, false, key_names, key_types,
                key_nums, content_num, NULL, replica,
                chunks, chunk_tokens, overlap)
        RETURNING * INTO t;
    ELSE
        reembed := previous.content_column IS DISTINCT FROM content_col
                   OR previous.content_function IS DISTINCT FROM content_fn
                   OR previous.model <> watch_chunked.model
                   OR previous.chunk_tokens <> watch_chunked.chunk_tokens
                   OR previous.chunk_overlap <> overlap
                   OR previous.chunk_table <> chunks;
        IF previous.queue <> watch_chunked.queue THEN
            -- Pending jobs move with the target.
            EXECUTE format(
                'WITH moved AS (DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1) RETURNING message) '
                'SELECT count(*) FROM moved, LATERAL pgmq.send(%L, moved.message)',
                pgmq.format_table_name(previous.queue, 'q'), queue) USING previous.id;
        END IF;
        UPDATE embeddings.targets tg
        SET content_column = content_col, content_function = content_fn, model = watch_chunked.model,
            key_columns = key_names, key_types = watch_chunked.key_types, key_attnums = key_nums,
            content_attnum = content_num, embedding_attnum = NULL, replica = watch_chunked.replica,
            problem = NULL, queue = watch_chunked.queue, has_triggers = triggers, clear_on_update = false,
            chunk_table = chunks, chunk_tokens = watch_chunked.chunk_tokens, chunk_overlap = overlap, updated_at = now(),
            version = tg.version + 1  -- in-flight writes under the old definition are rejected
        WHERE tg.id = previous.id
        RETURNING * INTO t;
    END IF;

    PERFORM embeddings.drop_triggers(t);  -- functions of another shape (key, content) go first
    PERFORM embeddings.install_triggers(t);  -- the generated ones, chunk-aware (30_triggers.sql)
    PERFORM embeddings.grant_worker_target(r.role_name, t) FROM embeddings.worker_roles r;

    -- Documents with content and no chunks, or every document with content when the content
    -- source, the model or the chunk settings changed: a backfill in key ranges (62_backfill.sql).
    PERFORM embeddings.start_backfill(t, reembed);

    PERFORM set_config('embeddings.following', 'off', true);
    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN t.id;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.sweep(
    max_rows integer DEFAULT 1000,
    archive_retention interval DEFAULT '7 days'
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t embeddings.targets;
    rel_schema name;
    rel_name name;
    cursor_key text;
    last_key text;
    scanned integer;
    enqueued integer;
    total integer := 0;
    queue_low boolean;
    q record;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR t IN SELECT * FROM embeddings.targets ORDER BY id LOOP
        SELECT n.nspname, c.relname INTO rel_schema, rel_name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t.source;
        CONTINUE WHEN rel_name IS NULL OR t.problem IS NOT NULL;  -- table dropped, or not served
        IF EXISTS (SELECT FROM embeddings.backfills b WHERE b.target_id = t.id) THEN
            -- Its existing rows are still being queued (62_backfill.sql): a backfill step instead
            -- of a slice (which would queue the rows ahead of the backfill twice), when the
            -- queue is low, so that live jobs are not buried (a pulling worker steps it too).
            EXECUTE format('SELECT count(*) < $1 FROM (SELECT FROM pgmq.%I LIMIT $1) q',
                           pgmq.format_table_name(t.queue, 'q'))
                INTO queue_low USING embeddings.backfill_step_keys() / embeddings.keys_per_message() + 1;
            IF queue_low THEN
                total := total + coalesce((SELECT s.enqueued FROM embeddings.backfill_step(t.id) s), 0);
            END IF;
            CONTINUE;
        END IF;
        SELECT after_key INTO cursor_key FROM embeddings.sweep_cursors WHERE target_id = t.id;

        BEGIN
            -- One slice of the table in key order. A row is missing when it has real content
            -- (whitespace-only content would be cleared and queued again forever), no embedding,
            -- no pending job in either message shape, and no dead letter (those wait for
            -- `failures --retry`). Keys are compared in their JSON form, as messages carry them.
            EXECUTE format($q$
                WITH slice AS (
                    SELECT pg_catalog.to_jsonb(%1$s) AS k, (%2$s AND (%3$s) ~ '[^[:space:]]') AS missing
                    FROM %4$s n
                    WHERE $2::jsonb IS NULL OR (%5$s) > (%6$s)
                    ORDER BY %5$s
                    LIMIT $3
                ),
                numbered AS (
                    SELECT s.*, row_number() OVER () AS ord FROM slice s
                ),
                queued AS (
                    SELECT embeddings.enqueue_keys($1, array_agg(s.k)) AS messages, count(*)::int AS keys
                    FROM numbered s
                    WHERE s.missing
                      AND s.k NOT IN (SELECT p.k FROM embeddings.pending_keys($4) p)
                )
                SELECT (SELECT count(*) FROM numbered)::int,
                       (SELECT k::text FROM numbered ORDER BY ord DESC LIMIT 1), keys
                FROM queued
                $q$,
                embeddings.key_sql(t, 'n'), embeddings.embedding_missing_sql(t, 'n'),  -- or no chunk (55_chunks.sql)
                embeddings.content_sql(t, 'n'), t.source,
                embeddings.key_columns_sql(t, 'n'), embeddings.key_from_json_sql(t, '$2::jsonb'))
            INTO scanned, last_key, enqueued
            USING t.id, cursor_key, max_rows, t;
        EXCEPTION WHEN OTHERS THEN
            -- User code failed (a content function raising for some row): the same slice one
            -- row at a time, so that one row stops neither its target nor the others.
            BEGIN
                SELECT r.scanned, r.last_key, r.enqueued INTO scanned, last_key, enqueued
                FROM embeddings.sweep_rows(t, cursor_key, max_rows) r;
            EXCEPTION WHEN OTHERS THEN
                RAISE WARNING 'embeddings.sweep(): skipped %.%: %', t.source, t.embedding_column, SQLERRM;
                CONTINUE;
            END;
        END;

        -- A short slice means the end of the table: start again from the top next time.
        INSERT INTO embeddings.sweep_cursors AS sc (target_id, after_key, swept_at)
        VALUES (t.id, CASE WHEN scanned < max_rows THEN NULL ELSE last_key END, now())
        ON CONFLICT (target_id) DO UPDATE SET after_key = excluded.after_key, swept_at = now();
        total := total + coalesce(enqueued, 0);
    END LOOP;

    -- Archived jobs (dead letters' messages, pgmq.archive) older than the retention.
    IF archive_retention IS NOT NULL THEN
        FOR q IN SELECT name FROM embeddings.queues LOOP
            EXECUTE format(
                'DELETE FROM pgmq.%1$I WHERE msg_id IN ('
                '  SELECT msg_id FROM pgmq.%1$I WHERE archived_at < now() - $1 LIMIT 10000)',
                pgmq.format_table_name(q.name, 'a')) USING archive_retention;
        END LOOP;
    END IF;
    -- Throughput minutes older than a day feed nothing.
    DELETE FROM embeddings.throughput WHERE minute < now() - interval '1 day';
    RETURN total;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.grant_worker(role_name name) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t embeddings.targets;
    q embeddings.queues;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', role_name
            USING ERRCODE = 'undefined_object',
                  HINT = format('CREATE ROLE %I LOGIN PASSWORD ''...''; first.', role_name);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA embeddings, pgmq TO %I', role_name);
    EXECUTE format('GRANT SELECT ON embeddings.targets, embeddings.models, embeddings.queues, embeddings.status, embeddings.status_exact TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON embeddings.failures TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON embeddings.throughput TO %I', role_name);
    EXECUTE format('GRANT SELECT ON pgmq.meta TO %I', role_name);
    -- Its write transaction locks the registrations it writes for (definition versions).
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.lock_target_version(integer) TO %I', role_name);
    -- It steps the backfills of its queue's targets when the queue is empty (62_backfill.sql).
    EXECUTE format('GRANT SELECT, UPDATE, DELETE ON embeddings.backfills TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.send_backfill(integer, jsonb[]) TO %I', role_name);
    FOR q IN SELECT * FROM embeddings.queues LOOP
        PERFORM embeddings.grant_worker_queue(role_name, q.name);
    END LOOP;
    FOR t IN SELECT * FROM embeddings.targets LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_class WHERE oid = t.source);
        PERFORM embeddings.grant_worker_target(role_name, t);
    END LOOP;
    INSERT INTO embeddings.worker_roles VALUES (role_name) ON CONFLICT DO NOTHING;
END
$$;

-- The status views gain backfill_rows and index_deferred.
DROP VIEW embeddings.status_exact;
DROP VIEW embeddings.status;
DROP FUNCTION embeddings.target_status(boolean);

-- One row per target. Row counts are exact for targets up to embeddings.status_exact_rows()
-- rows and estimated above (`estimated`: see embeddings.estimated_counts()), so that reading
-- the status costs the same for ten rows or ten million and never waits on a watched table's
-- lock. `exact => true` counts every target exactly (scans each table: embeddings.status_exact),
-- `exact => false` estimates every one.
-- Pending jobs, dead letters and the rate are exact either way: they come from the queue and
-- our own tables, not from the watched tables. `deferred_reason` says why the pending jobs
-- wait, when the worker defers them. `backfill_rows`: rows a running backfill (62_backfill.sql)
-- has still to queue, counted in pending_jobs too (estimated targets: the rows it has not yet
-- passed); NULL when no backfill runs. `index_deferred`: the HNSW index waits for the
-- backfill's end (62_backfill.sql); search scans exactly meanwhile.
CREATE OR REPLACE FUNCTION embeddings.target_status(exact boolean DEFAULT NULL) RETURNS TABLE (
    target                 text,
    total_rows             bigint,
    embedded_rows          bigint,
    pending_jobs           bigint,
    failed_jobs            bigint,
    oldest_pending_seconds double precision,
    target_id              integer,
    model                  text,
    rows_per_second        double precision,
    cleared_rows           bigint,
    deferred_reason        text,
    deferred_since         timestamptz,
    problem                text,
    chunks                 bigint,
    estimated              boolean,
    backfill_rows          bigint,
    index_deferred         boolean
)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t embeddings.targets;
    pending jsonb := '{}';  -- per queue: embeddings.queue_pending(), read once per call
BEGIN
    FOR t IN SELECT * FROM embeddings.targets ORDER BY id LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_class WHERE oid = t.source);  -- table dropped
        target := embeddings.target_name(t);
        target_id := t.id;
        model := t.model;
        problem := t.problem;  -- why it is not served (a schema change it cannot follow)
        estimated := NOT coalesce(exact, embeddings.target_rows(t) <= embeddings.status_exact_rows());
        IF estimated THEN
            SELECT * INTO total_rows, embedded_rows, cleared_rows, chunks FROM embeddings.estimated_counts(t);
        ELSE
            SELECT * INTO total_rows, embedded_rows, cleared_rows, chunks FROM embeddings.exact_counts(t);
        END IF;
        IF NOT pending ? t.queue THEN
            pending := pending || jsonb_build_object(t.queue,
                (SELECT coalesce(jsonb_agg(qp), '[]') FROM embeddings.queue_pending(t.queue) qp));
        END IF;
        SELECT coalesce(sum(g.keys), 0)::bigint, extract(epoch FROM clock_timestamp() - min(g.oldest))::double precision
        INTO pending_jobs, oldest_pending_seconds
        FROM jsonb_to_recordset(pending -> t.queue)
             AS g(target_id jsonb, schema_name text, table_name text, embedding_column text, keys bigint, oldest timestamptz)
        JOIN pg_class c ON c.oid = t.source JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE g.target_id = to_jsonb(t.id)
           OR (g.schema_name = n.nspname AND g.table_name = c.relname AND g.embedding_column = t.embedding_column);
        -- Rows a running backfill has still to queue are pending too (62_backfill.sql).
        IF estimated THEN
            SELECT greatest(total_rows - b.scanned_rows, 0) INTO backfill_rows
            FROM embeddings.backfills b WHERE b.target_id = t.id;
        ELSE
            backfill_rows := embeddings.backfill_rows_left(t);
        END IF;
        pending_jobs := pending_jobs + coalesce(backfill_rows, 0);
        index_deferred := EXISTS (SELECT FROM embeddings.deferred_indexes d WHERE d.target_id = t.id);
        SELECT count(*) INTO failed_jobs FROM embeddings.failures f WHERE f.target_id = t.id;
        -- The last five whole minutes plus the current one, as a rate per second.
        SELECT coalesce(sum(tp.rows), 0) / greatest(extract(epoch FROM clock_timestamp() - min(tp.minute)), 60)
        INTO rows_per_second
        FROM embeddings.throughput tp
        WHERE tp.target_id = t.id AND tp.minute >= date_trunc('minute', clock_timestamp()) - interval '5 minutes';
        deferred_reason := NULL;
        deferred_since := NULL;
        SELECT d.reason, d.since INTO deferred_reason, deferred_since
        FROM embeddings.deferrals d WHERE d.target_id = t.id AND pending_jobs > 0;
        RETURN NEXT;
    END LOOP;
END
$$;

-- What `embed-worker status` shows. total_rows, embedded_rows, cleared_rows and chunks are
-- estimates where `estimated` is true (large tables); every other column is exact.
CREATE VIEW embeddings.status AS
    SELECT target, total_rows, embedded_rows, pending_jobs, failed_jobs, oldest_pending_seconds,
           target_id, model, rows_per_second, cleared_rows, deferred_reason, deferred_since, problem,
           chunks, estimated, backfill_rows, index_deferred
    FROM embeddings.target_status();
COMMENT ON VIEW embeddings.status IS 'Per watched table: rows, embedded, pending jobs, dead letters, age of the oldest job, blank rows, why jobs wait; chunks of chunked targets; rows a running backfill has still to queue; whether the HNSW index waits for the backfill. Row counts of large tables are estimates (estimated = true); embeddings.status_exact counts them';

-- The same, every count exact: scans every watched table (`embed-worker status --exact`).
CREATE VIEW embeddings.status_exact AS
    SELECT target, total_rows, embedded_rows, pending_jobs, failed_jobs, oldest_pending_seconds,
           target_id, model, rows_per_second, cleared_rows, deferred_reason, deferred_since, problem,
           chunks, estimated, backfill_rows, index_deferred
    FROM embeddings.target_status(exact => true);
COMMENT ON VIEW embeddings.status_exact IS 'embeddings.status with exact counts: scans every watched table';

-- Worker roles: the view was recreated, and they step backfills.
DO $$
DECLARE
    r embeddings.worker_roles;
BEGIN
    FOR r IN SELECT * FROM embeddings.worker_roles LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r.role_name);
        EXECUTE format('GRANT SELECT ON embeddings.status, embeddings.status_exact TO %I', r.role_name);
        EXECUTE format('GRANT SELECT, UPDATE, DELETE ON embeddings.backfills TO %I', r.role_name);
        EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.send_backfill(integer, jsonb[]) TO %I', r.role_name);
    END LOOP;
END
$$;

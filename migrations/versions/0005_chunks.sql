-- Revision 0005: chunked targets (long documents split into chunks, one vector per chunk).
-- The same definitions as sql/ (10_schema, 40_watch, 45_dropped, 50_status, 55_chunks,
-- 55_visibility, 60_sweep, 80_roles), applied as a difference.

ALTER TABLE embeddings.targets
    ADD COLUMN chunk_table regclass,
    ADD COLUMN chunk_tokens integer,
    ADD COLUMN chunk_overlap integer;

-- watch() gains chunk_tokens, chunk_overlap and chunk_table: a new signature.
DROP FUNCTION embeddings.watch(regclass, text, name, text, boolean, boolean, text);

-- Validates everything, then registers `source` for embedding: creates the embedding column
-- (halfvec(dim)) when missing, its HNSW index, the triggers, and enqueues existing rows that
-- have content but no embedding. All or nothing: any error leaves no trace.
--
--   content           a text column of `source`, or the name of a function taking the
--                     table's row type and returning text (the Supabase guide's content function)
--   triggers          false registers without triggers (jobs come from elsewhere, e.g. the
--                     Supabase guide's own util.queue_embeddings triggers)
--   clear_on_update   true: a content change clears the stale embedding at once;
--                     false: the old embedding stays until the new one lands
--   queue             the pgmq queue for this table's jobs
--   chunk_tokens      not NULL: split each row's content into chunks of at most this many
--                     tokens, one vector each, in a chunk table (see sql/55_chunks.sql);
--                     chunk_overlap (default chunk_tokens / 10) and chunk_table go with it
--
-- Calling it again with the same arguments changes nothing; with other arguments it updates the
-- registration (a new content source or model re-enqueues every row with content).
-- Returns the target id.
CREATE FUNCTION embeddings.watch(
    source regclass,
    content text,
    embedding_column name DEFAULT 'embedding',
    model text DEFAULT NULL,  -- NULL: embeddings.default_model(), see embeddings.set_default_model()
    triggers boolean DEFAULT true,
    clear_on_update boolean DEFAULT true,
    queue text DEFAULT 'embedding_jobs',
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
    key_types regtype[];
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
    backfill text;
BEGIN
    model := coalesce(model, embeddings.default_model());  -- newcomer: the database-level default model
    IF source IS NULL OR content IS NULL OR embedding_column IS NULL OR model IS NULL
       OR triggers IS NULL OR clear_on_update IS NULL OR queue IS NULL THEN
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

    -- The primary key: one column of a type jobs can carry in JSON.
    SELECT array_agg(a.attname ORDER BY k.ord), array_agg(a.atttypid::regtype ORDER BY k.ord)
    INTO key_names, key_types
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = source AND i.indisprimary;
    IF key_names IS NULL THEN
        RAISE EXCEPTION 'table % has no primary key', source
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'embed-worker finds rows by primary key; add one (e.g. id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY).';
    ELSIF cardinality(key_names) > 1 THEN
        RAISE EXCEPTION 'table % has a composite primary key (%), which is not supported', source,
                array_to_string(key_names, ', ')
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Add a single-column key (bigint, integer, uuid or text) and make it the primary key.';
    ELSIF key_types[1] NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype,
                               'uuid'::regtype, 'text'::regtype, 'character varying'::regtype) THEN
        RAISE EXCEPTION 'primary key %.% has type %; supported: bigint, integer, smallint, uuid, text, varchar',
                source, key_names[1], key_types[1]
            USING ERRCODE = 'feature_not_supported';
    END IF;

    -- The content: a text column, else a function of the row type returning text.
    SELECT a.attname, a.atttypid::regtype INTO content_col, content_type
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
                                        queue, key_names, key_types, chunk_tokens, chunk_overlap, chunk_table);
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
       AND previous.key_column = key_names[1] AND previous.key_type = key_types[1]
       AND previous.has_triggers = triggers AND previous.clear_on_update = watch.clear_on_update
       AND previous.queue = watch.queue THEN
        RETURN previous.id;
    END IF;

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
        EXECUTE format('CREATE INDEX ON %s USING hnsw (%I %I.%I)', source, embedding_column, vschema,
            CASE WHEN (SELECT typname FROM pg_type WHERE oid = emb_type) = 'halfvec'
                 THEN 'halfvec_cosine_ops' ELSE 'vector_cosine_ops' END);
    END IF;

    IF fresh THEN
        INSERT INTO embeddings.targets AS tg (source, embedding_column, content_column, content_function, model,
                                              key_column, key_type, queue, has_triggers, clear_on_update)
        VALUES (source, embedding_column, content_col, content_fn, model,
                key_names[1], key_types[1], queue, triggers, clear_on_update)
        RETURNING * INTO t;
    ELSE
        reembed := previous.content_column IS DISTINCT FROM content_col
                   OR previous.content_function IS DISTINCT FROM content_fn
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
            key_column = key_names[1], key_type = key_types[1], queue = watch.queue,
            has_triggers = triggers, clear_on_update = watch.clear_on_update, updated_at = now(),
            version = tg.version + 1  -- in-flight writes under the old definition are rejected
        WHERE tg.id = previous.id
        RETURNING * INTO t;
    END IF;

    PERFORM embeddings.install_triggers(t);
    -- Worker roles set up by embeddings.grant_worker() serve this table too. (The function is
    -- defined in 80_roles.sql; plpgsql resolves it when this line runs.)
    PERFORM embeddings.grant_worker_target(r.role_name, t) FROM embeddings.worker_roles r;

    -- Existing rows, in one statement: those with content and no embedding, or every row with
    -- content when the content source or the model changed. A content function that raises
    -- for some row must not make watch() fail: then the rows go unfiltered, and the worker
    -- dead-letters the culprits with their error.
    backfill := format('FROM %s n WHERE %s', source,
        CASE WHEN reembed THEN 'true' ELSE format('n.%I IS NULL', t.embedding_column) END);
    BEGIN
        EXECUTE embeddings.enqueue_sql(t, backfill || ' AND ' || embeddings.has_content_sql(t, 'n'))
            USING t.id;
    EXCEPTION WHEN OTHERS THEN
        IF t.content_function IS NULL THEN
            RAISE;
        END IF;
        RAISE WARNING 'embeddings: content function of % failed (%); enqueued the rows unfiltered',
            source, SQLERRM;
        EXECUTE embeddings.enqueue_sql(t, backfill) USING t.id;
    END;

    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN t.id;
END
$$;

-- Forgets every target whose table, or whose embedding column (in its chunk table for a chunked
-- target), no longer exists; returns how
-- many. Run it by hand where the event trigger below could not be installed (it needs a
-- superuser). A renamed embedding column counts as gone: re-watch the table under its new name.
CREATE OR REPLACE FUNCTION embeddings.unwatch_dropped() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t embeddings.targets;
    forgotten integer := 0;
BEGIN
    FOR t IN
        SELECT * FROM embeddings.targets tg
        WHERE NOT EXISTS (
            SELECT FROM pg_attribute a
            WHERE a.attrelid = coalesce(tg.chunk_table, tg.source) AND a.attname = tg.embedding_column
              AND a.attnum > 0 AND NOT a.attisdropped)
        ORDER BY tg.id
    LOOP
        PERFORM embeddings.forget_target(t);
        RAISE NOTICE 'embeddings: target % is no longer watched: its table or embedding column is gone', t.id;
        forgotten := forgotten + 1;
    END LOOP;
    RETURN forgotten;
END
$$;

-- Called at every DROP: forgets the targets whose table or embedding column this drop removed.
-- SECURITY DEFINER because whoever may drop a table may not write our registry or the queue; it
-- only acts on the objects Postgres reports as dropped. It never fails the user's DROP.
CREATE OR REPLACE FUNCTION embeddings.forget_dropped_targets() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
BEGIN
    FOR t IN
        SELECT DISTINCT tg.* FROM embeddings.targets tg
        JOIN pg_event_trigger_dropped_objects() d
          ON d.classid = 'pg_class'::regclass AND d.objid IN (tg.source::oid, tg.chunk_table::oid)
        WHERE d.objsubid = 0                                     -- the table (or chunk table)
           OR d.address_names[3] = tg.embedding_column::text     -- its embedding column
    LOOP
        BEGIN
            PERFORM embeddings.forget_target(t);
            RAISE NOTICE 'embeddings: target % is no longer watched: its table or embedding column was dropped', t.id;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'embeddings: could not forget dropped target % (%); run SELECT embeddings.unwatch_dropped()', t.id, SQLERRM;
        END;
    END LOOP;
END
$$;

-- The status view gains a chunks column.
DROP VIEW embeddings.status;
DROP FUNCTION embeddings.target_status();

-- One row per target. Counts are exact, so this scans each watched table. Rows whose content is
-- NULL or blank (whitespace only) are `cleared_rows`: the worker keeps them without an embedding
-- on purpose. `deferred_reason` says why the pending jobs wait, when the worker defers them.
CREATE FUNCTION embeddings.target_status() RETURNS TABLE (
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
    chunks                 bigint
)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t embeddings.targets;
    content_sql text;
BEGIN
    FOR t IN SELECT * FROM embeddings.targets ORDER BY id LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_class WHERE oid = t.source);  -- table dropped
        target := embeddings.target_name(t);
        target_id := t.id;
        model := t.model;
        content_sql := CASE WHEN t.content_column IS NOT NULL THEN format('s.%I', t.content_column)
                            ELSE format('%s(s)', t.content_function::regproc) END;
        IF t.chunk_table IS NULL THEN
            BEGIN
                EXECUTE format('SELECT count(*), count(s.%I), count(*) FILTER (WHERE %s IS NULL OR %s !~ ''[^[:space:]]'') FROM %s s',
                               t.embedding_column, content_sql, content_sql, t.source)
                    INTO total_rows, embedded_rows, cleared_rows;
            EXCEPTION WHEN OTHERS THEN  -- a content function that raises: count without it
                BEGIN
                    EXECUTE format('SELECT count(*), count(s.%I), NULL::bigint FROM %s s', t.embedding_column, t.source)
                        INTO total_rows, embedded_rows, cleared_rows;
                EXCEPTION WHEN OTHERS THEN  -- the embedding column is gone: the other targets still show
                    total_rows := NULL;
                    embedded_rows := NULL;
                    cleared_rows := NULL;
                END;
            END;
            chunks := NULL;
        ELSE
            -- A chunked target: documents with chunks count as embedded (sql/55_chunks.sql).
            BEGIN
                EXECUTE format('SELECT count(*), count(*) FILTER (WHERE %s IS NULL OR %s !~ ''[^[:space:]]'') FROM %s s',
                               content_sql, content_sql, t.source)
                    INTO total_rows, cleared_rows;
            EXCEPTION WHEN OTHERS THEN  -- a content function that raises: count without it
                EXECUTE format('SELECT count(*), NULL::bigint FROM %s', t.source) INTO total_rows, cleared_rows;
            END;
            BEGIN
                SELECT cc.documents, cc.chunks INTO embedded_rows, chunks FROM embeddings.chunk_counts(t) cc;
            EXCEPTION WHEN OTHERS THEN  -- the chunk table is gone: the other targets still show
                embedded_rows := NULL;
                chunks := NULL;
            END;
        END IF;
        EXECUTE embeddings.pending_sql(t) INTO pending_jobs, oldest_pending_seconds;
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

CREATE VIEW embeddings.status AS
    SELECT target, total_rows, embedded_rows, pending_jobs, failed_jobs, oldest_pending_seconds,
           target_id, model, rows_per_second, cleared_rows, deferred_reason, deferred_since, chunks
    FROM embeddings.target_status();

COMMENT ON VIEW embeddings.status IS 'Per watched table: rows, embedded, pending jobs, dead letters, age of the oldest job, blank rows, why jobs wait; chunks of chunked targets';

-- Worker roles lost their grant on the view with it.
DO $$
DECLARE
    r embeddings.worker_roles;
BEGIN
    FOR r IN SELECT * FROM embeddings.worker_roles LOOP
        EXECUTE format('GRANT SELECT ON embeddings.status TO %I', r.role_name);
    END LOOP;
END
$$;

-- Chunked targets: long documents split into chunks, one vector per chunk.
--
-- embeddings.watch(source, content, ..., chunk_tokens => N, chunk_overlap => M) hands over to
-- embeddings.watch_chunked() below. The worker splits each document with the model's own
-- tokenizer and keeps its chunks in a table of their own, `<schema>.<table>_chunks` unless
-- chunk_table names another:
--
--   <the source's primary key column(s)>  same names and types; a foreign key to the source,
--                                          ON DELETE CASCADE: a deleted document takes its chunks
--   seq         integer   the chunk's position in the document, from 0
--   chunk       text      the chunk's text, an exact slice of the document: what was embedded
--   chunk_hash  text      md5 of the model name and the chunk text: when a document changes, a
--                         chunk whose text did not change keeps its vector (no re-embedding)
--   <embedding_column>  halfvec(dim)  ('embedding' by default), with an HNSW cosine index
--
-- The source table gets no embedding column. A changed document keeps its old chunks until its
-- new ones land (clear_on_update does not apply: the old vectors are what makes reuse possible).

-- "alias.k1 = chunk_alias.k1 AND ...": joins a source row to its chunks over the key columns.
CREATE FUNCTION embeddings.chunk_join_sql(key_names name[], alias text, chunk_alias text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT string_agg(format('%1$I.%3$I = %2$I.%3$I', alias, chunk_alias, k), ' AND ' ORDER BY o)
    FROM unnest(key_names) WITH ORDINALITY AS u(k, o)
$$;

-- The primary key column names of `source`, in key order.
CREATE FUNCTION embeddings.primary_key_names(source regclass) RETURNS name[]
LANGUAGE sql STABLE AS $$
    SELECT array_agg(a.attname ORDER BY k.ord)
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = source AND i.indisprimary
$$;

-- A predicate true when the row of alias `alias` lacks its embedding: a NULL embedding column,
-- or, for a chunked target, no chunk at all. Used by backfills and embeddings.sweep().
CREATE FUNCTION embeddings.embedding_missing_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN t.chunk_table IS NULL THEN format('%I.%I IS NULL', alias, t.embedding_column)
        ELSE format('NOT EXISTS (SELECT FROM %s c WHERE %s)', t.chunk_table,
                    embeddings.chunk_join_sql(embeddings.primary_key_names(t.source), alias, 'c'))
    END
$$;

-- Creates the chunk table `chunk_table` (schema-qualified, quoted) for `source`, or checks that
-- the existing one has the expected shape. Generic over the key: one or several columns.
CREATE FUNCTION embeddings.ensure_chunk_table(
    chunk_table text,
    source regclass,
    key_names name[],
    key_types regtype[],
    embedding_column name,
    dims integer
) RETURNS regclass
LANGUAGE plpgsql AS $$
DECLARE
    vschema name := embeddings.vector_schema();
    existing regclass := to_regclass(chunk_table);
    columns text;
    keys text;
    problem text;
BEGIN
    IF existing IS NOT NULL THEN
        SELECT string_agg(format_type(need.typ, need.typmod) || ' ' || quote_ident(need.col), ', ') INTO problem
        FROM (SELECT k AS col, ty AS typ, NULL::integer AS typmod FROM unnest(key_names, key_types) AS u(k, ty)
              UNION ALL VALUES ('seq'::name, 'integer'::regtype, NULL::integer), ('chunk', 'text', NULL),
                               ('chunk_hash', 'text', NULL),
                               (embedding_column, format('%I.halfvec', vschema)::regtype, dims)) need
        WHERE NOT EXISTS (
            SELECT FROM pg_attribute a
            WHERE a.attrelid = existing AND a.attname = need.col AND a.attnum > 0 AND NOT a.attisdropped
              AND a.atttypid = need.typ AND (need.typmod IS NULL OR a.atttypmod = need.typmod));
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'table % exists but is not a chunk table for % (missing or mistyped: %)',
                    existing, source, problem
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Drop it, or name another table with chunk_table => ...';
        END IF;
        RETURN existing;
    END IF;
    SELECT string_agg(format('%I %s NOT NULL', k, format_type(ty, NULL)), ', ' ORDER BY o),
           string_agg(format('%I', k), ', ' ORDER BY o)
    INTO columns, keys
    FROM unnest(key_names, key_types) WITH ORDINALITY AS u(k, ty, o);
    EXECUTE format(
        'CREATE TABLE %1$s (%2$s, seq integer NOT NULL, chunk text NOT NULL, chunk_hash text NOT NULL, '
        '%3$I %4$I.halfvec(%5$s) NOT NULL, PRIMARY KEY (%6$s, seq), '
        'FOREIGN KEY (%6$s) REFERENCES %7$s (%6$s) ON DELETE CASCADE ON UPDATE CASCADE)',
        chunk_table, columns, embedding_column, vschema, dims, keys, source);
    existing := to_regclass(chunk_table);
    EXECUTE format('CREATE INDEX ON %s USING hnsw (%I %I.halfvec_cosine_ops)', existing, embedding_column, vschema);
    EXECUTE format('COMMENT ON TABLE %s IS %L', existing,
                   format('Chunks of %s and their embeddings, kept by embed-worker (embeddings.watch)', source));
    RETURN existing;
END
$$;

-- AFTER INSERT, FOR EACH STATEMENT, REFERENCING NEW TABLE AS new_rows, on chunked targets:
-- every inserted row with content is queued (a new row has no chunks yet).
CREATE FUNCTION embeddings.enqueue_inserted_chunks() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t embeddings.targets;
BEGIN
    SELECT * INTO t FROM embeddings.targets WHERE id = TG_ARGV[0]::integer;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF t.content_function IS NULL THEN
        EXECUTE embeddings.enqueue_sql(t, 'FROM new_rows n WHERE ' || embeddings.has_content_sql(t, 'n'))
            USING t.id;
        RETURN NULL;
    END IF;
    -- A content function is user code: if it raises, the write must still succeed.
    BEGIN
        EXECUTE embeddings.enqueue_sql(t, 'FROM new_rows n WHERE ' || embeddings.has_content_sql(t, 'n'))
            USING t.id;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'embeddings: content function of % failed (%); enqueued the rows unfiltered',
            t.source, SQLERRM;
        EXECUTE embeddings.enqueue_sql(t, 'FROM new_rows n') USING t.id;
    END;
    RETURN NULL;
END
$$;

-- The triggers of a chunked target: inserts as above, updates as for any target
-- (embeddings.enqueue_updated: content changes only). Same trigger names as install_triggers(),
-- so drop_triggers() removes them.
CREATE FUNCTION embeddings.install_chunk_triggers(t embeddings.targets) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM embeddings.drop_triggers(t);
    IF NOT t.has_triggers THEN
        RETURN;
    END IF;
    EXECUTE format(
        'CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
        'FOR EACH STATEMENT EXECUTE FUNCTION embeddings.enqueue_inserted_chunks(%L)',
        'embeddings_' || t.id || '_insert', t.source, t.id);
    EXECUTE format(
        'CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
        'FOR EACH STATEMENT EXECUTE FUNCTION embeddings.enqueue_updated(%L)',
        'embeddings_' || t.id || '_update', t.source, t.id);
END
$$;

-- watch() for chunked targets (called by it once the table, model, key and content are
-- validated). Creates the chunk table, registers the target, installs its triggers and queues
-- the documents that have content and no chunks (every document with content when the content
-- source, the model or the chunk settings changed). Returns the target id.
CREATE FUNCTION embeddings.watch_chunked(
    source regclass,
    content_col name,
    content_fn regprocedure,
    embedding_column name,
    model text,
    triggers boolean,
    queue text,
    key_names name[],
    key_types regtype[],
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
    backfill text;
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
       AND previous.key_column = key_names[1] AND previous.key_type = key_types[1]
       AND previous.has_triggers = triggers AND previous.queue = watch_chunked.queue
       AND previous.chunk_table = to_regclass(table_name)
       AND previous.chunk_tokens = watch_chunked.chunk_tokens AND previous.chunk_overlap = overlap THEN
        RETURN previous.id;
    END IF;

    PERFORM embeddings.ensure_queue(queue);
    chunks := embeddings.ensure_chunk_table(table_name, source, key_names, key_types, embedding_column, m.dimensions);

    IF previous.id IS NULL THEN
        INSERT INTO embeddings.targets AS tg (source, embedding_column, content_column, content_function, model,
                                              key_column, key_type, queue, has_triggers, clear_on_update,
                                              chunk_table, chunk_tokens, chunk_overlap)
        VALUES (source, embedding_column, content_col, content_fn, model,
                key_names[1], key_types[1], queue, triggers, false,
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
            key_column = key_names[1], key_type = key_types[1], queue = watch_chunked.queue,
            has_triggers = triggers, clear_on_update = false, chunk_table = chunks,
            chunk_tokens = watch_chunked.chunk_tokens, chunk_overlap = overlap, updated_at = now(),
            version = tg.version + 1  -- in-flight writes under the old definition are rejected
        WHERE tg.id = previous.id
        RETURNING * INTO t;
    END IF;

    PERFORM embeddings.install_chunk_triggers(t);
    PERFORM embeddings.grant_worker_target(r.role_name, t) FROM embeddings.worker_roles r;

    backfill := format('FROM %s n WHERE %s', source,
        CASE WHEN reembed THEN 'true' ELSE embeddings.embedding_missing_sql(t, 'n') END);
    BEGIN
        EXECUTE embeddings.enqueue_sql(t, backfill || ' AND ' || embeddings.has_content_sql(t, 'n'))
            USING t.id;
    EXCEPTION WHEN OTHERS THEN
        IF t.content_function IS NULL THEN
            RAISE;
        END IF;
        RAISE WARNING 'embeddings: content function of % failed (%); enqueued the rows unfiltered',
            source, SQLERRM;
        EXECUTE embeddings.enqueue_sql(t, backfill) USING t.id;
    END;

    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN t.id;
END
$$;

-- Documents with at least one chunk, and chunks, of chunked target t (for embeddings.status).
CREATE FUNCTION embeddings.chunk_counts(t embeddings.targets, OUT documents bigint, OUT chunks bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    keys text := (SELECT string_agg(format('%I', k), ', ') FROM unnest(embeddings.primary_key_names(t.source)) AS k);
BEGIN
    EXECUTE format('SELECT count(*), coalesce(sum(n), 0)::bigint FROM (SELECT count(*) AS n FROM %s GROUP BY %s) d',
                   t.chunk_table, keys)
        INTO documents, chunks;
END
$$;

-- The `k` chunks of `source`'s chunked target nearest to `query` (cosine distance), nearest
-- first: the retrieval step of a RAG app that embeds its question itself (the pattern of
-- Supabase's match_documents). `key` is the document's primary key as JSON (an array for a
-- composite key). Raise hnsw.ef_search (default 40) to get more than 40 chunks.
CREATE FUNCTION embeddings.match_chunks(source regclass, query halfvec, k integer DEFAULT 10)
RETURNS TABLE (key jsonb, seq integer, chunk text, distance double precision)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t embeddings.targets;
    key_names name[] := embeddings.primary_key_names(source);
BEGIN
    SELECT * INTO t FROM embeddings.targets tg
    WHERE tg.source = match_chunks.source AND tg.chunk_table IS NOT NULL
    ORDER BY tg.id LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not watched in chunks', source
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT embeddings.watch(''<table>'', ''<content>'', chunk_tokens => 200) first.';
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT %s, c.seq, c.chunk, (c.%I OPERATOR(%I.<=>) $1)::double precision '
        'FROM %s c ORDER BY c.%2$I OPERATOR(%3$I.<=>) $1 LIMIT $2',
        CASE WHEN cardinality(key_names) = 1 THEN format('to_jsonb(c.%I)', key_names[1])
             ELSE format('jsonb_build_array(%s)',
                         (SELECT string_agg(format('c.%I', kn), ', ') FROM unnest(key_names) AS kn)) END,
        t.embedding_column, embeddings.vector_schema(), t.chunk_table)
        USING query, k;
END
$$;
GRANT EXECUTE ON FUNCTION embeddings.match_chunks(regclass, halfvec, integer) TO PUBLIC;

-- sweep()'s slice of target t, one row at a time: each row's content is evaluated in a
-- subtransaction of its own. A row whose content function raises is queued (it has no
-- embedding, so it needs one): the worker meets the error and dead-letters it with the error,
-- and sweep() leaves dead-lettered rows alone afterwards.
CREATE OR REPLACE FUNCTION embeddings.sweep_rows(
    t embeddings.targets, after_key text, max_rows integer,
    OUT scanned integer, OUT last_key text, OUT enqueued integer
)
LANGUAGE plpgsql AS $$
DECLARE
    rel_schema name;
    rel_name name;
    key_type text := format_type(t.key_type, NULL);
    pending text[];
    missing_keys text[] := '{}';
    k text;
    unembedded boolean;
    missing boolean;
BEGIN
    scanned := 0;
    SELECT n.nspname, c.relname INTO rel_schema, rel_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t.source;
    EXECUTE format($q$
        SELECT array_agg(key_text) FROM (
            SELECT key_text FROM pgmq.%1$I m,
                 LATERAL jsonb_array_elements_text(m.message -> 'keys') AS key_text
            WHERE m.message @> jsonb_build_object('target', $1)
            UNION ALL
            SELECT m.message ->> 'id' FROM pgmq.%1$I m
            WHERE m.message @> jsonb_build_object('schema', %2$L, 'table', %3$L)
              AND coalesce(m.message ->> 'embeddingColumn', 'embedding') = %4$L
            UNION ALL
            SELECT f.row_key #>> '{}' FROM embeddings.failures f WHERE f.target_id = $1
        ) p WHERE key_text IS NOT NULL
        $q$, pgmq.format_table_name(t.queue, 'q'), rel_schema, rel_name, t.embedding_column)
    INTO pending USING t.id;
    FOR k, unembedded IN EXECUTE format(
        'SELECT n.%1$I::text, %2$s FROM %3$s n'
        ' WHERE $1::text IS NULL OR n.%1$I > $1::%4$s ORDER BY n.%1$I LIMIT $2',
        t.key_column, embeddings.embedding_missing_sql(t, 'n'), t.source, key_type)  -- 55_chunks.sql
        USING after_key, max_rows
    LOOP
        scanned := scanned + 1;
        last_key := k;
        CONTINUE WHEN NOT unembedded OR k = ANY(coalesce(pending, '{}'));
        BEGIN
            EXECUTE format('SELECT (%s) ~ ''[^[:space:]]'' FROM %s n WHERE n.%I = $1::%s',
                           embeddings.content_sql(t, 'n'), t.source, t.key_column, key_type)
            INTO missing USING k;
        EXCEPTION WHEN OTHERS THEN
            missing := true;
        END;
        IF missing THEN
            missing_keys := missing_keys || k;
        END IF;
    END LOOP;
    enqueued := cardinality(missing_keys);
    IF enqueued > 0 THEN
        EXECUTE format('SELECT embeddings.enqueue_keys($1, $2::%s[])', key_type)
            USING t.id, missing_keys;
    END IF;
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
    q record;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR t IN SELECT * FROM embeddings.targets ORDER BY id LOOP
        SELECT n.nspname, c.relname INTO rel_schema, rel_name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t.source;
        CONTINUE WHEN rel_name IS NULL;  -- table dropped
        SELECT after_key INTO cursor_key FROM embeddings.sweep_cursors WHERE target_id = t.id;

        BEGIN
            -- One slice of the table in key order. A row is missing when it has real content
            -- (whitespace-only content would be cleared and queued again forever), no embedding,
            -- no pending job in either message shape, and no dead letter (those wait for
            -- `failures --retry`).
            EXECUTE format($q$
                WITH slice AS (
                    SELECT n.%1$I AS k, (%10$s AND (%3$s) ~ '[^[:space:]]') AS missing
                    FROM %4$s n
                    WHERE $2::text IS NULL OR n.%1$I > $2::%5$s
                    ORDER BY n.%1$I
                    LIMIT $3
                ),
                pending AS (
                    SELECT key_text FROM pgmq.%6$I m,
                         LATERAL jsonb_array_elements_text(m.message -> 'keys') AS key_text
                    WHERE m.message @> jsonb_build_object('target', $1)
                    UNION ALL
                    SELECT m.message ->> 'id' FROM pgmq.%6$I m
                    WHERE m.message @> jsonb_build_object('schema', %7$L, 'table', %8$L)
                      AND coalesce(m.message ->> 'embeddingColumn', 'embedding') = %9$L
                    UNION ALL
                    SELECT f.row_key #>> '{}' FROM embeddings.failures f WHERE f.target_id = $1
                ),
                queued AS (
                    SELECT embeddings.enqueue_keys($1, array_agg(s.k)) AS messages, count(*)::int AS keys
                    FROM slice s
                    WHERE s.missing
                      AND s.k::text NOT IN (SELECT key_text FROM pending WHERE key_text IS NOT NULL)
                )
                SELECT (SELECT count(*) FROM slice)::int, (SELECT max(k)::text FROM slice), keys
                FROM queued
                $q$,
                t.key_column, t.embedding_column, embeddings.content_sql(t, 'n'), t.source,
                format_type(t.key_type, NULL), pgmq.format_table_name(t.queue, 'q'),
                rel_schema, rel_name, t.embedding_column,
                embeddings.embedding_missing_sql(t, 'n'))  -- no embedding, or no chunk (55_chunks.sql)
            INTO scanned, last_key, enqueued
            USING t.id, cursor_key, max_rows;
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

-- Grants `role_name` what the worker needs on one target (also called by watch()).
CREATE OR REPLACE FUNCTION embeddings.grant_worker_target(role_name name, t embeddings.targets) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    policy name := 'embeddings_worker_' || role_name;
BEGIN
    EXECUTE format('GRANT SELECT ON %s TO %I', t.source, role_name);
    IF t.chunk_table IS NULL THEN
        EXECUTE format('GRANT UPDATE (%I) ON %s TO %I', t.embedding_column, t.source, role_name);
    ELSE
        -- A chunked target's vectors live in its chunk table (sql/55_chunks.sql).
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I', t.chunk_table, role_name);
    END IF;
    IF (SELECT relrowsecurity FROM pg_class WHERE oid = t.source) THEN
        IF NOT EXISTS (SELECT FROM pg_policy WHERE polrelid = t.source AND polname = policy) THEN
            EXECUTE format('CREATE POLICY %I ON %s FOR SELECT TO %I USING (true)',
                           policy, t.source, role_name);
        END IF;
        IF NOT EXISTS (SELECT FROM pg_policy WHERE polrelid = t.source AND polname = policy || '_update') THEN
            EXECUTE format('CREATE POLICY %I ON %s FOR UPDATE TO %I USING (true) WITH CHECK (true)',
                           policy || '_update', t.source, role_name);
        END IF;
    END IF;
    PERFORM embeddings.grant_worker_queue(role_name, t.queue);
END
$$;

-- Whether the current role may write target t's embeddings: UPDATE of its embedding column,
-- or of the table where that column is gone (a deferral says so); for a chunked target, INSERT
-- into its chunk table (sql/55_chunks.sql). Never raises.
CREATE OR REPLACE FUNCTION embeddings.may_write_embeddings(t embeddings.targets) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN t.chunk_table IS NOT NULL THEN coalesce(has_table_privilege(t.chunk_table, 'INSERT'), false)
        WHEN EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = t.source
                     AND a.attname = t.embedding_column AND a.attnum > 0 AND NOT a.attisdropped)
        THEN has_column_privilege(t.source, t.embedding_column, 'UPDATE')
        ELSE coalesce(has_table_privilege(t.source, 'UPDATE'), false)
    END
$$;

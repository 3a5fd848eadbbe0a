-- 0004 (newcomer): deferrals shown in embeddings.status, blank rows counted as cleared, a
-- database-level default model for watch(), and watch() refusing to double the Supabase
-- guide's triggers. sql/55_visibility.sql, sql/50_status.sql and sql/40_watch.sql hold the same.

-- What a newcomer needs to see: why jobs wait (deferrals), which model watch() uses by default,
-- and whether a table still carries the Supabase guide's triggers.

-- Targets the worker cannot serve right now (model missing, dimension mismatch...), with why.
-- Written by the worker when it defers a target's jobs, removed when it writes for it again;
-- embeddings.status shows the reason while the target has pending jobs.
CREATE TABLE embeddings.deferrals (
    target_id   integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    reason      text NOT NULL,
    jobs        integer NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON embeddings.deferrals TO PUBLIC;
COMMENT ON TABLE embeddings.deferrals IS 'Targets whose jobs the worker defers, with the reason; shown by embeddings.status';

-- Whether the current role may write target t's embeddings: UPDATE of its embedding column,
-- or of the table where that column is gone (a deferral says so). Never raises.
CREATE FUNCTION embeddings.may_write_embeddings(t embeddings.targets) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = t.source
                     AND a.attname = t.embedding_column AND a.attnum > 0 AND NOT a.attisdropped)
        THEN has_column_privilege(t.source, t.embedding_column, 'UPDATE')
        ELSE coalesce(has_table_privilege(t.source, 'UPDATE'), false)
    END
$$;

-- Records deferrals (one reason per target). Only a role that may write the target's embedding
-- column (a worker) may say why its jobs wait.
CREATE FUNCTION embeddings.note_deferrals(target_ids integer[], reasons text[], job_counts integer[])
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO embeddings.deferrals AS d (target_id, reason, jobs)
    SELECT n.target_id, n.reason, n.jobs
    FROM unnest(target_ids, reasons, job_counts) AS n(target_id, reason, jobs)
    JOIN embeddings.targets t ON t.id = n.target_id
    WHERE embeddings.may_write_embeddings(t)
    ON CONFLICT (target_id) DO UPDATE
    SET reason = excluded.reason, jobs = excluded.jobs, last_seen = now(),
        since = CASE WHEN d.reason = excluded.reason THEN d.since ELSE now() END
$$;
REVOKE ALL ON FUNCTION embeddings.note_deferrals(integer[], text[], integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION embeddings.note_deferrals(integer[], text[], integer[]) TO PUBLIC;

-- Forgets the deferrals of targets the worker served again.
CREATE FUNCTION embeddings.clear_deferrals(target_ids integer[]) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM embeddings.deferrals d
    USING embeddings.targets t
    WHERE d.target_id = ANY(target_ids) AND t.id = d.target_id
      AND embeddings.may_write_embeddings(t)
$$;

-- The model watch() uses when none is named.
CREATE FUNCTION embeddings.default_model() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT name FROM embeddings.models WHERE is_default
$$;

-- Makes `name` the model watch() uses when none is named (existing targets keep theirs).
CREATE FUNCTION embeddings.set_default_model(name text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM embeddings.models m WHERE m.name = set_default_model.name) THEN
        RAISE EXCEPTION 'unknown model "%"', name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Known models: %s. Add one with INSERT INTO embeddings.models.',
                                (SELECT string_agg(m.name, ', ' ORDER BY m.name) FROM embeddings.models m));
    END IF;
    UPDATE embeddings.models m SET is_default = false WHERE m.is_default AND m.name <> set_default_model.name;
    UPDATE embeddings.models m SET is_default = true WHERE m.name = set_default_model.name;
    RETURN name;
END
$$;

-- Refuses to install our triggers on a table that still has the Supabase guide's
-- util.queue_embeddings triggers: both sets would queue a job for every change.
CREATE FUNCTION embeddings.refuse_guide_triggers(source regclass, triggers boolean) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    theirs text;
BEGIN
    IF NOT triggers THEN
        RETURN;
    END IF;
    SELECT string_agg(format('DROP TRIGGER %I ON %s;', tg.tgname, source), ' ' ORDER BY tg.tgname)
    INTO theirs
    FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
    WHERE tg.tgrelid = source AND NOT tg.tgisinternal AND p.proname = 'queue_embeddings';
    IF theirs IS NOT NULL THEN
        RAISE EXCEPTION '% already has the Supabase guide''s util.queue_embeddings triggers: ours would queue every change twice', source
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Keep theirs and let the worker serve their jobs: watch(..., triggers => false). Or drop theirs first: %s', theirs);
    END IF;
END
$$;

-- embeddings.status gains cleared_rows, deferred_reason, deferred_since.
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
    deferred_since         timestamptz
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
           target_id, model, rows_per_second, cleared_rows, deferred_reason, deferred_since
    FROM embeddings.target_status();
COMMENT ON VIEW embeddings.status IS 'Per watched table: rows, embedded, pending jobs, dead letters, age of the oldest job, blank rows, why jobs wait';

-- Worker roles lost their grant on the view with it.
DO $do$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT role_name FROM embeddings.worker_roles LOOP
        EXECUTE format('GRANT SELECT ON embeddings.status TO %I', r.role_name);
    END LOOP;
END
$do$;

-- watch(): model NULL means embeddings.default_model(); refuses a second set of triggers.
CREATE OR REPLACE FUNCTION embeddings.watch(
    source regclass,
    content text,
    embedding_column name DEFAULT 'embedding',
    model text DEFAULT NULL,  -- NULL: embeddings.default_model(), see embeddings.set_default_model()
    triggers boolean DEFAULT true,
    clear_on_update boolean DEFAULT true,
    queue text DEFAULT 'embedding_jobs'
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

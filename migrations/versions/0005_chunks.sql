-- Revision 0005: chunked targets (long documents split into chunks, one vector per chunk).
-- The same definitions as sql/ (10_schema, 30_triggers, 40_watch, 45_dropped, 50_status,
-- 55_chunks, 55_visibility, 60_sweep, 80_roles), applied as a difference to revision 0003.

-- A chunked target's embedding column is in its chunk table: no embedding_attnum in the source.
ALTER TABLE embeddings.targets
    ALTER COLUMN embedding_attnum DROP NOT NULL,
    ADD COLUMN chunk_table regclass,
    ADD COLUMN chunk_tokens integer,
    ADD COLUMN chunk_overlap integer;

-- 30_triggers.sql
-- Creates (or replaces) the trigger functions of target t. SECURITY DEFINER: whoever causes the
-- regeneration (a DDL statement's event trigger), the functions belong to this schema's owner.
CREATE OR REPLACE FUNCTION embeddings.generate_functions(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    prefix text := 'embeddings_' || t.id;
    by_function boolean := t.content_function IS NOT NULL;
    partitioned boolean := (SELECT c.relkind = 'p' FROM pg_class c WHERE c.oid = t.source);
    row_type regclass := CASE WHEN partitioned THEN t.source END;
    table_owner regrole := (SELECT c.relowner::regrole FROM pg_class c WHERE c.oid = t.source);
    new_content text := embeddings.content_sql(t, 'n', row_type);
    old_content text := embeddings.content_sql(t, 'o', row_type);
    inserted text;
    changed text;
    body text;
    fallback text;
    inputs name[] := embeddings.content_inputs(t);
    -- A new row needs a job when it has no embedding yet; a chunked target's new row has no
    -- chunks yet (sql/55_chunks.sql), whatever the source holds.
    unembedded text := CASE WHEN t.chunk_table IS NULL THEN format('n.%I IS NULL', t.embedding_column)
                            ELSE 'true' END;
BEGIN
    inserted := format('FROM new_rows n WHERE %s AND %s OPERATOR(pg_catalog.<>) ''''',
                       unembedded, new_content);
    -- A row whose key changed has no old row: it counts as changed.
    changed := format('FROM new_rows n LEFT JOIN old_rows o ON %s WHERE (o.%I IS NULL OR %s IS DISTINCT FROM %s)',
                      embeddings.key_equal_sql(t, 'o', 'n'), t.key_columns[1], new_content, old_content);
    IF t.clear_on_update THEN
        -- A change to blank content needs no job: the clear trigger already cleared the row.
        changed := changed || format(' AND %s OPERATOR(pg_catalog.<>) ''''', new_content);
    END IF;

    IF by_function THEN
        EXECUTE format(
            $f$CREATE OR REPLACE FUNCTION embeddings.%1$I(keys jsonb[]) RETURNS void
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
            BEGIN
                INSERT INTO pgmq.%2$I (vt, message)
                SELECT pg_catalog.clock_timestamp(),
                       pg_catalog.jsonb_build_object('target', %3$s, 'keys', pg_catalog.to_jsonb(keys[i : i + %4$s - 1]))
                FROM pg_catalog.generate_series(1, pg_catalog.cardinality(keys), %4$s) AS i;
            END
            $body$ $f$,
            prefix || '_enqueue', pgmq.format_table_name(t.queue, 'q'), t.id, embeddings.keys_per_message());
        EXECUTE format('REVOKE ALL ON FUNCTION embeddings.%I(jsonb[]) FROM PUBLIC', prefix || '_enqueue');
        EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.%I(jsonb[]) TO %I', prefix || '_enqueue', table_owner);
    END IF;

    -- INSERT and UPDATE. A content function that raises (for any row) must not fail the write:
    -- the rows then go unfiltered, and the worker dead-letters the culprit with its error.
    FOREACH body IN ARRAY ARRAY['insert', 'update'] LOOP
        fallback := CASE body WHEN 'insert' THEN 'FROM new_rows n WHERE ' || unembedded
                              ELSE 'FROM new_rows n' END;
        EXECUTE format(
            $f$CREATE OR REPLACE FUNCTION embeddings.%1$I() RETURNS trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
            BEGIN
                %2$s;
                RETURN NULL;%3$s
            END
            $body$ $f$,
            prefix || '_' || body,
            embeddings.enqueue_statement(t, CASE body WHEN 'insert' THEN inserted ELSE changed END, by_function),
            CASE WHEN by_function THEN format(
                E'\n            EXCEPTION WHEN OTHERS THEN\n'
                 '                RAISE WARNING ''embeddings: content function of %% failed (%%); enqueued the rows unfiltered'', %s, SQLERRM;\n'
                 '                %s;\n'
                 '                RETURN NULL;',
                quote_literal(t.source::text), embeddings.enqueue_statement(t, fallback, true))
            ELSE '' END);
        IF by_function THEN
            -- User code runs with the table owner's rights, not ours.
            EXECUTE format('ALTER FUNCTION embeddings.%I() OWNER TO %I', prefix || '_' || body, table_owner);
        END IF;
        EXECUTE format('REVOKE ALL ON FUNCTION embeddings.%I() FROM PUBLIC', prefix || '_' || body);
    END LOOP;

    -- Rows applied by logical replication, one at a time (replica targets only).
    IF t.replica THEN
        EXECUTE format(
            $f$CREATE OR REPLACE FUNCTION embeddings.%1$I() RETURNS trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
            BEGIN
                IF (TG_OP = 'INSERT' AND %2$s AND %3$s OPERATOR(pg_catalog.<>) '')
                   OR (TG_OP = 'UPDATE' AND (NOT (%4$s) OR %3$s IS DISTINCT FROM %5$s) AND %3$s OPERATOR(pg_catalog.<>) '') THEN
                    INSERT INTO pgmq.%6$I (vt, message)
                    VALUES (pg_catalog.clock_timestamp(),
                            pg_catalog.jsonb_build_object('target', %7$s, 'keys', pg_catalog.jsonb_build_array(%8$s)));
                END IF;
                RETURN NULL;%9$s
            END
            $body$ $f$,
            prefix || '_replica',
            CASE WHEN t.chunk_table IS NULL THEN format('NEW.%I IS NULL', t.embedding_column) ELSE 'true' END,
            embeddings.content_sql(t, 'new', row_type), embeddings.key_equal_sql(t, 'old', 'new'),
            embeddings.content_sql(t, 'old', row_type),
            pgmq.format_table_name(t.queue, 'q'), t.id, embeddings.key_sql(t, 'new'),
            CASE WHEN by_function THEN E'\n            EXCEPTION WHEN OTHERS THEN\n                RETURN NULL;' ELSE '' END);
        EXECUTE format('REVOKE ALL ON FUNCTION embeddings.%I() FROM PUBLIC', prefix || '_replica');
    END IF;

    IF NOT t.clear_on_update OR t.chunk_table IS NOT NULL THEN
        RETURN;  -- a chunked target has no embedding column to clear
    END IF;
    -- The clear trigger names no column (no UPDATE OF, no WHEN), so that dropping or retyping
    -- the content column is never refused because of it; it compares in its body, as text
    -- (any type has a text form; not every type has an equality operator).
    IF by_function THEN
        -- A content function is user code and may raise (for the very row being fixed): then
        -- it cannot tell, and clears.
        body := format(
            $b$IF %1$s IS DISTINCT FROM %2$s THEN
                    NEW.%3$I := NULL;
                END IF;
                RETURN NEW;
            EXCEPTION WHEN OTHERS THEN
                NEW.%3$I := NULL;  -- cannot compare: the embedding may be stale
                RETURN NEW;$b$,
            embeddings.content_sql(t, 'old', row_type), embeddings.content_sql(t, 'new', row_type), t.embedding_column);
    ELSIF cardinality(inputs) = 0 THEN
        body := 'RETURN NEW;';  -- generated from constants: it never changes
    ELSE
        body := format(
            $b$IF %1$s THEN
                    NEW.%2$I := NULL;
                END IF;
                RETURN NEW;$b$,
            (SELECT string_agg(format('(OLD.%1$I)::pg_catalog.text IS DISTINCT FROM (NEW.%1$I)::pg_catalog.text', c), ' OR ')
             FROM unnest(inputs) AS c),
            t.embedding_column);
    END IF;
    -- Invoker's rights: it only edits NEW.
    EXECUTE format(
        $f$CREATE OR REPLACE FUNCTION embeddings.%1$I() RETURNS trigger LANGUAGE plpgsql AS $body$
            BEGIN
                %2$s
            END
            $body$ $f$,
        prefix || '_clear', body);
END
$$;
REVOKE ALL ON FUNCTION embeddings.generate_functions(embeddings.targets) FROM PUBLIC;

-- 30_triggers.sql
-- Brings target t's triggers in line with its registration and its table as it is now: the
-- functions regenerated, statement triggers on the table and each of its partitions (dropped
-- from tables no longer covered), the row triggers, replica mode. With has_triggers false, or
-- a problem, drops them. Returns the tables newly covered (partitions attached since), whose
-- rows the caller may need to enqueue.
CREATE OR REPLACE FUNCTION embeddings.install_triggers(t embeddings.targets) RETURNS regclass[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    prefix text := 'embeddings_' || t.id;
    rel regclass;
    added regclass[] := '{}';
    fired text := CASE WHEN t.replica THEN 'ALWAYS ' ELSE '' END;
BEGIN
    IF NOT t.has_triggers OR t.problem IS NOT NULL THEN
        PERFORM embeddings.drop_triggers(t);
        RETURN added;
    END IF;
    PERFORM embeddings.generate_functions(t);

    -- Statement triggers: on every covered table, off every other.
    PERFORM embeddings.drop_triggers(t, only_uncovered => true);
    FOR rel IN SELECT * FROM embeddings.covered_tables(t) LOOP
        IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = prefix || '_insert') THEN
            EXECUTE format(
                'CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
                'FOR EACH STATEMENT EXECUTE FUNCTION embeddings.%I()',
                prefix || '_insert', rel, prefix || '_insert');
            IF rel <> t.source THEN
                added := added || rel;
            END IF;
        END IF;
        IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = prefix || '_update') THEN
            EXECUTE format(
                'CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                'FOR EACH STATEMENT EXECUTE FUNCTION embeddings.%I()',
                prefix || '_update', rel, prefix || '_update');
        END IF;
    END LOOP;

    -- Row triggers: on the table itself (Postgres clones them onto partitions).
    IF t.clear_on_update AND t.chunk_table IS NULL THEN
        IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = t.source AND tgname = prefix || '_clear') THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION embeddings.%I()',
                           prefix || '_clear', t.source, prefix || '_clear');
        END IF;
        EXECUTE format('ALTER TABLE %s ENABLE %sTRIGGER %I', t.source, fired, prefix || '_clear');
    ELSIF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = t.source AND tgname = prefix || '_clear') THEN
        EXECUTE format('DROP TRIGGER %I ON %s', prefix || '_clear', t.source);
    END IF;
    IF t.replica THEN
        IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = t.source AND tgname = prefix || '_replica') THEN
            -- Only rows applied by replication (the origin's rows have the statement triggers).
            EXECUTE format(
                'CREATE TRIGGER %I AFTER INSERT OR UPDATE ON %s FOR EACH ROW '
                'WHEN (pg_catalog.current_setting(''session_replication_role'') = ''replica'') '
                'EXECUTE FUNCTION embeddings.%I()',
                prefix || '_replica', t.source, prefix || '_replica');
        END IF;
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', t.source, prefix || '_replica');
    ELSIF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = t.source AND tgname = prefix || '_replica') THEN
        EXECUTE format('DROP TRIGGER %I ON %s', prefix || '_replica', t.source);
    END IF;
    RETURN added;
END
$$;
REVOKE ALL ON FUNCTION embeddings.install_triggers(embeddings.targets) FROM PUBLIC;

-- 40_watch.sql
-- Enqueues the rows of `rel` (target t's table, or one of its partitions) that have content
-- and no embedding (no chunk, for a chunked target), or with `every_row` all that have
-- content. A content function that raises for some row must not make this fail: then the rows
-- go unfiltered, and the worker dead-letters the culprits with their error. Returns the number
-- of messages sent.
CREATE OR REPLACE FUNCTION embeddings.enqueue_rows(t embeddings.targets, rel regclass, every_row boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    row_type regclass := CASE WHEN rel <> t.source THEN t.source END;
    from_where text := format('FROM %s n WHERE %s', rel,
        CASE WHEN every_row THEN 'true' ELSE embeddings.embedding_missing_sql(t, 'n') END);  -- 55_chunks.sql
    statement text := 'SELECT embeddings.enqueue_keys($1, array_agg(' || embeddings.key_sql(t, 'n') || ')) ';
    sent integer;
BEGIN
    BEGIN
        EXECUTE statement || from_where || format(' AND %s <> ''''', embeddings.content_sql(t, 'n', row_type))
            INTO sent USING t.id;
    EXCEPTION WHEN OTHERS THEN
        IF t.content_function IS NULL THEN
            RAISE;
        END IF;
        RAISE WARNING 'embeddings: content function of % failed (%); enqueued the rows unfiltered', rel, SQLERRM;
        EXECUTE statement || from_where INTO sent USING t.id;
    END;
    RETURN sent;
END
$$;

-- 45_dropped.sql
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

-- 45_dropped.sql
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
REVOKE ALL ON FUNCTION embeddings.forget_dropped_targets() FROM PUBLIC;

-- 45_dropped.sql
-- Schema changes of watched tables: renames of the table, its key (a chunked target's chunk
-- table's key columns follow), content or embedding column, a move to another schema, a
-- retyped content column, a new owner, partitions created, attached or detached. Target `target_id`'s registration is brought in line with its table:
-- column names re-read from the attribute numbers, trigger functions regenerated, triggers on
-- every partition (rows of newly attached partitions enqueued). What cannot be followed (the
-- content or key column dropped) becomes the target's `problem`: its triggers go, the worker
-- defers its jobs, status shows why; watch() again clears it.
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
    PERFORM pg_notify('embeddings_targets', t.id::text);  -- workers re-read names
END
$$;
REVOKE ALL ON FUNCTION embeddings.refresh_target(integer) FROM PUBLIC;

-- 55_chunks.sql
-- "alias.k1 = chunk_alias.k1 AND ...": joins a source row to its chunks over the key columns.
CREATE OR REPLACE FUNCTION embeddings.chunk_join_sql(key_names name[], alias text, chunk_alias text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT string_agg(format('%1$I.%3$I = %2$I.%3$I', alias, chunk_alias, k), ' AND ' ORDER BY o)
    FROM unnest(key_names) WITH ORDINALITY AS u(k, o)
$$;

-- 55_chunks.sql
-- A predicate true when the row of alias `alias` lacks its embedding: a NULL embedding column,
-- or, for a chunked target, no chunk at all. Used by backfills and embeddings.sweep().
CREATE OR REPLACE FUNCTION embeddings.embedding_missing_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN t.chunk_table IS NULL THEN format('%I.%I IS NULL', alias, t.embedding_column)
        ELSE format('NOT EXISTS (SELECT FROM %s c WHERE %s)', t.chunk_table,
                    embeddings.chunk_join_sql(t.key_columns, alias, 'c'))
    END
$$;

-- 55_chunks.sql
-- Creates the chunk table `chunk_table` (schema-qualified, quoted) for `source`, or checks that
-- the existing one has the expected shape. Generic over the key: one or several columns.
CREATE OR REPLACE FUNCTION embeddings.ensure_chunk_table(
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

-- 55_chunks.sql
-- Renames the key columns of chunked target t's chunk table after the source's key columns
-- (matched through the foreign key, which follows attribute numbers), so that the worker's
-- queries name both alike. Called by embeddings.refresh_target() with the event trigger's DDL
-- following switched off.
CREATE OR REPLACE FUNCTION embeddings.follow_chunk_keys(t embeddings.targets) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT ca.attname AS chunk_name, sa.attname AS source_name
        FROM pg_constraint fk
        CROSS JOIN LATERAL unnest(fk.conkey, fk.confkey) AS k(chunk_num, source_num)
        JOIN pg_attribute ca ON ca.attrelid = fk.conrelid AND ca.attnum = k.chunk_num
        JOIN pg_attribute sa ON sa.attrelid = fk.confrelid AND sa.attnum = k.source_num
        WHERE fk.conrelid = t.chunk_table AND fk.confrelid = t.source AND fk.contype = 'f'
          AND ca.attname <> sa.attname
    LOOP
        EXECUTE format('ALTER TABLE %s RENAME COLUMN %I TO %I', t.chunk_table, col.chunk_name, col.source_name);
    END LOOP;
END
$$;

-- 55_chunks.sql
-- watch() for chunked targets (called by it once the table, model, key and content are
-- validated). Creates the chunk table, registers the target, installs its triggers and queues
-- the documents that have content and no chunks (every document with content when the content
-- source, the model or the chunk settings changed). Returns the target id.
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
    -- source, the model or the chunk settings changed.
    PERFORM embeddings.enqueue_rows(t, source, reembed);

    PERFORM set_config('embeddings.following', 'off', true);
    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN t.id;
END
$$;

-- 55_chunks.sql
-- Documents with at least one chunk, and chunks, of chunked target t (for embeddings.status).
CREATE OR REPLACE FUNCTION embeddings.chunk_counts(t embeddings.targets, OUT documents bigint, OUT chunks bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    keys text := (SELECT string_agg(format('%I', k), ', ') FROM unnest(t.key_columns) AS k);
BEGIN
    EXECUTE format('SELECT count(*), coalesce(sum(n), 0)::bigint FROM (SELECT count(*) AS n FROM %s GROUP BY %s) d',
                   t.chunk_table, keys)
        INTO documents, chunks;
END
$$;

-- 55_chunks.sql
-- The `k` chunks of `source`'s chunked target nearest to `query` (cosine distance), nearest
-- first: the retrieval step of a RAG app that embeds its question itself (the pattern of
-- Supabase's match_documents). `key` is the document's primary key as JSON (an array for a
-- composite key). Raise hnsw.ef_search (default 40) to get more than 40 chunks.
CREATE OR REPLACE FUNCTION embeddings.match_chunks(source regclass, query halfvec, k integer DEFAULT 10)
RETURNS TABLE (key jsonb, seq integer, chunk text, distance double precision)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t embeddings.targets;
    key_names name[];
BEGIN
    SELECT * INTO t FROM embeddings.targets tg
    WHERE tg.source = match_chunks.source AND tg.chunk_table IS NOT NULL
    ORDER BY tg.id LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not watched in chunks', source
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT embeddings.watch(''<table>'', ''<content>'', chunk_tokens => 200) first.';
    END IF;
    key_names := t.key_columns;  -- the chunk table's key columns are named alike (follow_chunk_keys)
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

-- 55_visibility.sql
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

-- 60_sweep.sql
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
    pending jsonb[] := ARRAY(SELECT p.k FROM embeddings.pending_keys(t) p);
    missing_keys jsonb[] := '{}';
    k jsonb;
    unembedded boolean;
    missing boolean;
BEGIN
    scanned := 0;
    FOR k, unembedded IN EXECUTE format(
        'SELECT pg_catalog.to_jsonb(%1$s), %2$s FROM %3$s n'
        ' WHERE $1::jsonb IS NULL OR (%4$s) > (%5$s) ORDER BY %4$s LIMIT $2',
        embeddings.key_sql(t, 'n'), embeddings.embedding_missing_sql(t, 'n'), t.source,  -- 55_chunks.sql
        embeddings.key_columns_sql(t, 'n'), embeddings.key_from_json_sql(t, '$1::jsonb'))
        USING after_key, max_rows
    LOOP
        scanned := scanned + 1;
        last_key := k::text;
        CONTINUE WHEN NOT unembedded OR k = ANY(pending);
        BEGIN
            EXECUTE format('SELECT (%s) ~ ''[^[:space:]]'' FROM %s n WHERE (%s) = (%s)',
                           embeddings.content_sql(t, 'n'), t.source,
                           embeddings.key_columns_sql(t, 'n'), embeddings.key_from_json_sql(t, '$1'))
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
        PERFORM embeddings.enqueue_keys(t.id, missing_keys);
    END IF;
END
$$;

-- 60_sweep.sql
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
        CONTINUE WHEN rel_name IS NULL OR t.problem IS NOT NULL;  -- table dropped, or not served
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

-- 80_roles.sql
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

-- watch() gains chunk_tokens, chunk_overlap and chunk_table: a new signature.
DROP FUNCTION embeddings.watch(regclass, text, name, text, boolean, boolean, text, name[], boolean);

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
--   key               the row key's columns when the table has no primary key (or another
--                     key should be used): they must form a unique, not-null key
--   replica           true: rows applied by logical replication enqueue too (a subscriber's
--                     table); the triggers fire ALWAYS
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
        EXECUTE format('CREATE INDEX ON %s USING hnsw (%I %I.%I)', source, embedding_column, vschema,
            CASE WHEN (SELECT typname FROM pg_type WHERE oid = emb_type) = 'halfvec'
                 THEN 'halfvec_cosine_ops' ELSE 'vector_cosine_ops' END);
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

    -- Existing rows, in one statement: those with content and no embedding, or every row with
    -- content when the content source or the model changed.
    PERFORM embeddings.enqueue_rows(t, source, reembed);

    PERFORM set_config('embeddings.following', 'off', true);
    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN t.id;
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
    problem                text,
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
        problem := t.problem;  -- why it is not served (a schema change it cannot follow)
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
           target_id, model, rows_per_second, cleared_rows, deferred_reason, deferred_since, problem,
           chunks
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

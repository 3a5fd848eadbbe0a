-- Trigger messages carry row keys by column, an integer key column as its Postgres array text
-- (issue 13, issue 16 §1: the write path's cost of encoding keys). The worker and these
-- functions read both shapes: jobs queued before this revision keep theirs. The queues'
-- notification trigger becomes a row trigger: a statement that queues nothing pays nothing.

CREATE OR REPLACE FUNCTION embeddings.message_key_count(message jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN jsonb_typeof(message -> 'keys') = 'array' THEN jsonb_array_length(message -> 'keys')
    WHEN jsonb_typeof(message -> 'columns' -> 0) = 'array' THEN jsonb_array_length(message -> 'columns' -> 0)
    WHEN jsonb_typeof(message -> 'columns' -> 0) = 'string' THEN  -- '{1,2,3}': commas + 1
        length(message -> 'columns' ->> 0) - length(replace(message -> 'columns' ->> 0, ',', '')) + 1
    ELSE 1
END;

CREATE OR REPLACE FUNCTION embeddings.message_keys(message jsonb) RETURNS SETOF jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT k.value FROM jsonb_array_elements(
        CASE WHEN jsonb_typeof(message -> 'keys') = 'array' THEN message -> 'keys' END) AS k
    UNION ALL
    (SELECT CASE WHEN jsonb_array_length(message -> 'columns') = 1 THEN v.key -> 0 ELSE v.key END
     FROM (SELECT e.n, jsonb_agg(e.value ORDER BY c.i) AS key
           FROM jsonb_array_elements(
                    CASE WHEN jsonb_typeof(message -> 'columns') = 'array' THEN message -> 'columns' END)
                    WITH ORDINALITY AS c(col, i),
                LATERAL (SELECT a.value, a.n FROM jsonb_array_elements(
                             CASE WHEN jsonb_typeof(c.col) = 'array' THEN c.col END) WITH ORDINALITY AS a(value, n)
                         UNION ALL
                         SELECT b.value::jsonb, b.n FROM unnest(string_to_array(btrim(
                             CASE WHEN jsonb_typeof(c.col) = 'string' THEN c.col #>> '{}' END, '{}'), ','))
                             WITH ORDINALITY AS b(value, n)) AS e
           GROUP BY e.n) AS v
     ORDER BY v.n)
$$;

CREATE OR REPLACE FUNCTION embeddings.enqueue_statement(t embeddings.targets, from_where text, via_enqueue boolean) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
    WHEN via_enqueue THEN
        format('PERFORM embeddings.%I(ARRAY(SELECT pg_catalog.to_jsonb(%s) %s))',
               'embeddings_' || t.id || '_enqueue', embeddings.key_sql(t, 'n'), from_where)
    ELSE format(
        'INSERT INTO pgmq.%1$I (vt, message) '
        'SELECT pg_catalog.clock_timestamp(), '
        'pg_catalog.jsonb_build_object(''target'', %2$s, ''columns'', pg_catalog.jsonb_build_array(%4$s)) '
        'FROM (SELECT pg_catalog.count(*) AS keys, %5$s %6$s) AS s, '
        'pg_catalog.generate_series(1, s.keys, %3$s) AS i',
        pgmq.format_table_name(t.queue, 'q'), t.id, embeddings.keys_per_message(),
        (SELECT string_agg(format(CASE WHEN k.ty = ANY ('{int2,int4,int8}'::regtype[])
                                           THEN '(s.k%1$s[i : i + %2$s - 1])::pg_catalog.text'
                                       WHEN ty.typlen > 0
                                           THEN 'pg_catalog.to_jsonb(s.k%1$s[i : i + %2$s - 1])'
                                       ELSE 'pg_catalog.jsonb_path_query_array(s.k%1$s, ''$[$a to $b]'', '
                                            'pg_catalog.jsonb_build_object(''a'', i - 1, ''b'', i + %2$s - 2))' END,
                                  k.i - 1, embeddings.keys_per_message()), ', ' ORDER BY k.i)
         FROM unnest(t.key_types) WITH ORDINALITY AS k(ty, i) JOIN pg_type ty ON ty.oid = k.ty),
        (SELECT string_agg(format(CASE WHEN ty.typlen > 0 THEN 'pg_catalog.array_agg(n.%1$I) AS k%2$s'
                                       ELSE 'pg_catalog.to_jsonb(pg_catalog.array_agg(n.%1$I)) AS k%2$s' END,
                                  k.c, k.i - 1), ', ' ORDER BY k.i)
         FROM unnest(t.key_columns, t.key_types) WITH ORDINALITY AS k(c, ty, i) JOIN pg_type ty ON ty.oid = k.ty),
        from_where)
    END
$$;

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
                -- Sliced as one jsonb array: slicing jsonb[] itself is O(n^2) (enqueue_statement).
                INSERT INTO pgmq.%2$I (vt, message)
                SELECT pg_catalog.clock_timestamp(),
                       pg_catalog.jsonb_build_object('target', %3$s, 'keys', pg_catalog.jsonb_path_query_array(
                           s.all_keys, '$[$a to $b]', pg_catalog.jsonb_build_object('a', i - 1, 'b', i + %4$s - 2)))
                FROM (SELECT pg_catalog.to_jsonb(keys) AS all_keys) AS s,
                     pg_catalog.generate_series(1, pg_catalog.cardinality(keys), %4$s) AS i;
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


CREATE OR REPLACE FUNCTION embeddings.pending_keys(t embeddings.targets) RETURNS TABLE (k jsonb)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    rel_schema name;
    rel_name name;
BEGIN
    SELECT n.nspname, c.relname INTO rel_schema, rel_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t.source;
    RETURN QUERY EXECUTE format($q$
        SELECT key_json FROM pgmq.%1$I m, LATERAL embeddings.message_keys(m.message) AS key_json
        WHERE m.message @> jsonb_build_object('target', $1)
        UNION ALL
        SELECT key_json FROM pgmq.%5$I m, LATERAL embeddings.message_keys(m.message) AS key_json
        WHERE m.message @> jsonb_build_object('target', $1)
        UNION ALL
        SELECT m.message -> 'id' FROM pgmq.%1$I m
        WHERE m.message @> jsonb_build_object('schema', %2$L, 'table', %3$L)
          AND coalesce(m.message ->> 'embeddingColumn', 'embedding') = %4$L
          AND m.message -> 'id' IS NOT NULL
        UNION ALL
        SELECT f.row_key FROM embeddings.failures f WHERE f.target_id = $1 AND f.row_key IS NOT NULL
        $q$, pgmq.format_table_name(t.queue, 'q'), rel_schema, rel_name, t.embedding_column,
        pgmq.format_table_name(embeddings.backfill_queue(t.queue), 'q'))
    USING t.id;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.enqueue_keys(target_id integer, keys anyarray, delay integer DEFAULT 0,
                                        lane text DEFAULT 'live')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queue_name text;
    total integer := coalesce(cardinality(keys), 0);
    per_message integer := embeddings.keys_per_message();
    extra jsonb := CASE WHEN lane = 'change' THEN '{"shadow": true}'::jsonb ELSE '{}'::jsonb END;
    all_keys jsonb;
BEGIN
    IF total = 0 THEN
        RETURN 0;
    END IF;
    IF lane IS NULL OR lane NOT IN ('live', 'backfill', 'change') THEN
        RAISE EXCEPTION 'embeddings: unknown lane "%"', lane USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT t.queue INTO queue_name FROM embeddings.targets t WHERE t.id = target_id;
    IF queue_name IS NULL THEN
        RAISE EXCEPTION 'embeddings: no target with id %', target_id;
    END IF;
    IF lane <> 'live' THEN
        queue_name := embeddings.backfill_queue(queue_name);
    END IF;
    -- Slicing an array is several times cheaper than grouping rows into chunks; a jsonb array,
    -- since slicing a Postgres array of variable-width keys (text, composite keys' jsonb) walks
    -- it from its start each time: O(n^2) for n keys (30_triggers.sql).
    all_keys := to_jsonb(keys);
    PERFORM pgmq.send_batch(
        queue_name,
        ARRAY(SELECT jsonb_build_object('target', target_id, 'keys', jsonb_path_query_array(
                         all_keys, '$[$a to $b]', jsonb_build_object('a', i - 1, 'b', i + per_message - 2))) || extra
              FROM generate_series(1, total, per_message) AS i),
        delay);
    RETURN (total + per_message - 1) / per_message;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.ensure_queue(queue_name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lane text;
BEGIN
    PERFORM embeddings.create_queue(queue_name, NULL);
    -- lanes: BEGIN (every live queue has a backfill queue beside it)
    IF (SELECT q.live_queue FROM embeddings.queues q WHERE q.name = queue_name) IS NULL THEN
        lane := embeddings.backfill_queue(queue_name);
        IF embeddings.create_queue(lane, queue_name) AND to_regclass('embeddings.worker_roles') IS NOT NULL THEN
            PERFORM embeddings.grant_worker_queue(r.role_name, lane) FROM embeddings.worker_roles r;
        END IF;
    END IF;
    -- lanes: END
END
$$;

CREATE OR REPLACE FUNCTION embeddings.create_queue(queue_name text, live_queue text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    created boolean := false;
BEGIN
    IF EXISTS (SELECT FROM embeddings.queues WHERE name = queue_name) THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT FROM pgmq.meta m WHERE m.queue_name = create_queue.queue_name) THEN
        PERFORM pgmq.create(queue_name);
        created := true;
    END IF;
    EXECUTE format(
        'CREATE TRIGGER embeddings_notify_workers AFTER INSERT ON pgmq.%I '
        'FOR EACH ROW EXECUTE FUNCTION embeddings.notify_workers(%L)',
        pgmq.format_table_name(queue_name, 'q'), coalesce(live_queue, queue_name));
    INSERT INTO embeddings.queues (name, created_here, live_queue) VALUES (queue_name, created, live_queue);
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.queue_pending(queue text) RETURNS TABLE (
    target_id        jsonb,
    schema_name      text,
    table_name       text,
    embedding_column text,
    keys             bigint,
    oldest           timestamptz
)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT g.target, g.schema_name, g.table_name, g.embedding_column, sum(g.n)::bigint, min(g.enqueued_at) '
        'FROM (SELECT m.target, '
        '             CASE WHEN m.target IS NULL THEN q.message->>''schema'' END AS schema_name, '
        '             CASE WHEN m.target IS NULL THEN q.message->>''table'' END AS table_name, '
        '             CASE WHEN m.target IS NULL THEN q.message->>''embeddingColumn'' END AS embedding_column, '
        '             embeddings.message_key_count(q.message) AS n, '
        '             q.enqueued_at '
        '      FROM pgmq.%I q '
        '      CROSS JOIN LATERAL (SELECT q.message->''target'' AS target OFFSET 0) m) g '
        'GROUP BY 1, 2, 3, 4',
        pgmq.format_table_name(queue, 'q'));
END
$$;

-- The queues' notification trigger fires per message, not per statement (20_queue.sql).
DO $$
DECLARE
    q embeddings.queues;
BEGIN
    FOR q IN SELECT * FROM embeddings.queues LOOP
        IF to_regclass(format('pgmq.%I', pgmq.format_table_name(q.name, 'q'))) IS NOT NULL THEN
            EXECUTE format('DROP TRIGGER IF EXISTS embeddings_notify_workers ON pgmq.%I',
                           pgmq.format_table_name(q.name, 'q'));
            EXECUTE format(
                'CREATE TRIGGER embeddings_notify_workers AFTER INSERT ON pgmq.%I '
                'FOR EACH ROW EXECUTE FUNCTION embeddings.notify_workers(%L)',
                pgmq.format_table_name(q.name, 'q'), coalesce(q.live_queue, q.name));
        END IF;
    END LOOP;
END
$$;

-- Targets get trigger functions that send the column shape.
DO $$
DECLARE
    t embeddings.targets;
BEGIN
    PERFORM set_config('embeddings.following', 'on', true);
    FOR t IN SELECT * FROM embeddings.targets ORDER BY id LOOP
        IF EXISTS (SELECT FROM pg_class WHERE oid = t.source) THEN
            PERFORM embeddings.install_triggers(t);
        END IF;
    END LOOP;
    PERFORM set_config('embeddings.following', 'off', true);
END
$$;

-- 0018: embeddings.status samples the pending keys of a lane that holds more than
-- embeddings.status_exact_rows() messages (embeddings.queue_pending(queue, sample_percent));
-- status_exact counts them all.

DROP FUNCTION embeddings.queue_pending(text);

CREATE FUNCTION embeddings.queue_pending(queue text, sample_percent double precision DEFAULT NULL)
RETURNS TABLE (
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
        'SELECT g.target, g.schema_name, g.table_name, g.embedding_column, '
        '       round(sum(g.n) * g.scale)::bigint, min(g.enqueued_at) '
        'FROM (SELECT m.target, '
        '             CASE WHEN m.target IS NULL THEN q.message->>''schema'' END AS schema_name, '
        '             CASE WHEN m.target IS NULL THEN q.message->>''table'' END AS table_name, '
        '             CASE WHEN m.target IS NULL THEN q.message->>''embeddingColumn'' END AS embedding_column, '
        '             embeddings.message_key_count(q.message) AS n, '
        '             q.enqueued_at, 100 / coalesce($2, 100) AS scale '
        '      FROM pgmq.%I q %s '
        '      CROSS JOIN LATERAL (SELECT q.message->''target'' AS target OFFSET 0) m '
        '      UNION ALL '  -- the inbox of a live queue (22_inbox.sql)
        '      SELECT pg_catalog.to_jsonb(i.target_id), NULL, NULL, NULL, i.keys, i.oldest, 1 '
        '      FROM embeddings.inbox_pending($1) i) g '
        'GROUP BY 1, 2, 3, 4, g.scale',
        pgmq.format_table_name(queue, 'q'),
        CASE WHEN sample_percent IS NOT NULL THEN 'TABLESAMPLE SYSTEM ($2)' ELSE '' END)
    USING queue, sample_percent;
END
$$;

CREATE FUNCTION embeddings.queue_messages(queue text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(pg_stat_get_live_tuples(to_regclass(format('pgmq.%I', pgmq.format_table_name(queue, 'q')))), 0)
$$;

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
    index_deferred         boolean,
    pending_live           bigint,
    pending_backfill       bigint,
    vectors_from           text,
    change_model           text,
    change_done_rows       bigint,
    change_total_rows      bigint,
    change_rows_per_second double precision,
    change_eta_seconds     double precision
)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t embeddings.targets;
    pending jsonb := '{}';  -- per queue: embeddings.queue_pending(), read once per call
    sampled text[] := '{}';  -- the queues whose pending keys were estimated
    messages bigint;
    lanes text[];
    lane text;
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
        -- Both lanes (20_queue.sql): the application's writes, and backfill work behind them.
        lanes := ARRAY[t.queue, embeddings.backfill_queue(t.queue)];
        FOREACH lane IN ARRAY lanes LOOP
            IF NOT pending ? lane THEN
                -- A lane of many messages: about 2,000 of them sampled (an exact count reads
                -- every message, ~5 us each: 364 ms for 10 million keys in 128-key messages).
                -- A target with few messages among very many may be missed: `status --exact`.
                messages := embeddings.queue_messages(lane);
                IF NOT coalesce(exact, false) AND messages > embeddings.status_exact_rows() THEN
                    sampled := sampled || lane;
                END IF;
                pending := pending || jsonb_build_object(lane,
                    (SELECT coalesce(jsonb_agg(qp), '[]') FROM embeddings.queue_pending(lane,
                         CASE WHEN lane = ANY (sampled) THEN least(100, 100.0 * 2000 / messages) END) qp));
            END IF;
        END LOOP;
        SELECT coalesce(sum(g.keys) FILTER (WHERE g.lane = lanes[1]), 0)::bigint,
               coalesce(sum(g.keys) FILTER (WHERE g.lane = lanes[2]), 0)::bigint,
               extract(epoch FROM clock_timestamp() - min(g.oldest))::double precision
        INTO pending_live, pending_backfill, oldest_pending_seconds
        FROM unnest(lanes) AS l(lane)
        CROSS JOIN LATERAL jsonb_to_recordset(pending -> l.lane)
             AS r(target_id jsonb, schema_name text, table_name text, embedding_column text, keys bigint, oldest timestamptz)
        CROSS JOIN LATERAL (SELECT l.lane, r.target_id, r.schema_name, r.table_name, r.embedding_column, r.keys, r.oldest) g
        JOIN pg_class c ON c.oid = t.source JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE g.target_id = to_jsonb(t.id)
           OR (g.schema_name = n.nspname AND g.table_name = c.relname AND g.embedding_column = t.embedding_column);
        -- Rows a running backfill has still to queue are pending too, in the backfill lane
        -- (62_backfill.sql).
        IF estimated THEN
            -- The rows it has not yet passed, times the share of the table that needs a job.
            SELECT round(greatest(total_rows - b.scanned_rows, 0)
                         * CASE WHEN b.every_row OR total_rows = 0 THEN 1
                                ELSE greatest(1 - coalesce(embedded_rows, 0)::float8 / total_rows, 0) END)
            INTO backfill_rows
            FROM embeddings.backfills b WHERE b.target_id = t.id;
        ELSE
            backfill_rows := embeddings.backfill_rows_left(t);
        END IF;
        pending_backfill := pending_backfill + coalesce(backfill_rows, 0);
        pending_jobs := pending_live + pending_backfill;
        index_deferred := EXISTS (SELECT FROM embeddings.deferred_indexes d WHERE d.target_id = t.id);
        -- model change: provenance, and the progress of a change in progress
        SELECT * INTO vectors_from, change_model, change_done_rows, change_total_rows,
                      change_rows_per_second, change_eta_seconds
        FROM embeddings.change_status(t, NOT estimated);
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
        estimated := estimated OR lanes && sampled;  -- its pending counts, sampled
        RETURN NEXT;
    END LOOP;
END
$$;


-- Workers look for jobs (embeddings.wait_for_jobs()) instead of being notified: nothing of ours
-- sends a NOTIFY in the application's transaction any more (PREPARE TRANSACTION refuses one),
-- and the registry of waiting workers, which any login could fill, is gone. Folded into the
-- 0.2.0 release revision by the migration squash.
DO $$
DECLARE
    q embeddings.queues;
BEGIN
    FOR q IN SELECT * FROM embeddings.queues LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS embeddings_notify_workers ON pgmq.%I',
                       pgmq.format_table_name(q.name, 'q'));
    END LOOP;
END
$$;
DROP FUNCTION embeddings.notify_workers();
DROP FUNCTION embeddings.worker_idle(text);
DROP FUNCTION embeddings.worker_busy(text);
DROP TABLE embeddings.idle_workers;

CREATE FUNCTION embeddings.wait_for_jobs(queue_name text, timeout_ms integer, backfill boolean DEFAULT true,
                                         poll_ms integer DEFAULT 2)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => greatest(timeout_ms, 0) / 1000.0);
    -- The earliest visibility timeout of either lane: visible now when it has passed.
    next_job_query text := format(
        'SELECT least((SELECT min(q.vt) FROM pgmq.%I q), %s)',
        pgmq.format_table_name(queue_name, 'q'),
        CASE WHEN backfill THEN format('(SELECT min(b.vt) FROM pgmq.%I b)',
                                       pgmq.format_table_name(embeddings.backfill_queue(queue_name), 'q'))
             ELSE 'NULL' END);
    next_job timestamptz;
    looked_at text;
    snapshot text;
BEGIN
    LOOP
        snapshot := pg_current_snapshot()::text;
        IF snapshot IS DISTINCT FROM looked_at OR clock_timestamp() >= next_job THEN
            looked_at := snapshot;
            IF EXISTS (SELECT FROM embeddings.inbox i JOIN embeddings.targets t ON t.id = i.target
                       WHERE t.queue = queue_name) THEN
                RETURN true;
            END IF;
            EXECUTE next_job_query INTO next_job;
            IF next_job <= clock_timestamp() THEN
                RETURN true;
            END IF;
        END IF;
        EXIT WHEN clock_timestamp() >= deadline;
        PERFORM pg_sleep(least(greatest(poll_ms, 1) / 1000.0,
                               extract(epoch FROM deadline - clock_timestamp())));
    END LOOP;
    RETURN false;
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
    INSERT INTO embeddings.queues (name, created_here, live_queue) VALUES (queue_name, created, live_queue);
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.enqueue_statement(t embeddings.targets, from_where text, via_enqueue boolean) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
    WHEN via_enqueue THEN
        format('PERFORM embeddings.%I(ARRAY(SELECT pg_catalog.to_jsonb(%s) %s))',
               'embeddings_' || t.id || '_enqueue', embeddings.key_sql(t, 'n'), from_where)
    ELSE format(
        'INSERT INTO embeddings.inbox (target, keys, columns) '
        'SELECT %1$s, LEAST(s.keys - i + 1, %3$s), '
        'pg_catalog.jsonb_build_array(%4$s) '
        'FROM (SELECT pg_catalog.count(*)::integer AS keys, %5$s %6$s) AS s, '
        'pg_catalog.generate_series(1, s.keys, %3$s) AS i',
        t.id, t.queue, embeddings.inbox_keys_per_row(),
        (SELECT string_agg(format(CASE WHEN k.ty = ANY ('{int2,int4,int8}'::regtype[])
                                           THEN '(s.k%1$s[i : i + %2$s - 1])::pg_catalog.text'
                                       WHEN ty.typlen > 0
                                           THEN 'pg_catalog.to_jsonb(s.k%1$s[i : i + %2$s - 1])'
                                       ELSE 'pg_catalog.jsonb_path_query_array(s.k%1$s, ''$[$a to $b]'', '
                                            'pg_catalog.jsonb_build_object(''a'', i - 1, ''b'', i + %2$s - 2))' END,
                                  k.i - 1, embeddings.inbox_keys_per_row()), ', ' ORDER BY k.i)
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
                -- Sliced as one jsonb array: slicing a jsonb[] walks it from its start each time, O(n^2).
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

-- Registry changes told workers by NOTIFY (watch(), unwatch(), model changes, schema changes):
-- workers compare definition versions before serving a batch instead.
DO $$
DECLARE
    f oid;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p
             WHERE p.pronamespace = 'embeddings'::regnamespace
               AND p.prosrc LIKE '%pg_notify(''embeddings_targets''%'
    LOOP
        EXECUTE regexp_replace(pg_get_functiondef(f),
                               '\n[ ]*PERFORM pg_notify\(''embeddings_targets'', t\.id::text\);[^\n]*', '', 'g');
    END LOOP;
END
$$;

SELECT embeddings.generate_functions(t) FROM embeddings.targets t
WHERE t.has_triggers AND t.problem IS NULL AND EXISTS (SELECT FROM pg_class c WHERE c.oid = t.source);

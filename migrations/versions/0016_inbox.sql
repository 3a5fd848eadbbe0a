-- 0016: the triggers write one row per statement into embeddings.inbox instead of job
-- messages into the queue; the worker (and sweep(), dispatch()) moves the inbox into the live
-- queue (sql/22_inbox.sql). Existing targets' trigger functions are regenerated; jobs already
-- queued are untouched.

CREATE TABLE embeddings.inbox (
    target      integer NOT NULL,
    keys        integer NOT NULL,
    columns     jsonb NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);

-- A statement's keys go into rows of up to this many: a 10-million-row INSERT writes 2,442 rows
-- rather than one jsonb of ~80 MB that every move and count would read whole.
CREATE FUNCTION embeddings.inbox_keys_per_row() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 4096;

-- Moves inbox rows of the targets on live queue `queue_name` into it, up to `max_rows` rows and
-- about `max_keys` keys (whole rows: at least one); returns the number of messages sent. Cheap
-- when the inbox is empty (the worker calls it before every read), and a move takes what
-- accumulated since the last, so the inbox stays short and the queue keeps the order.
-- SECURITY DEFINER: worker roles need no rights on the queue's insert.
CREATE FUNCTION embeddings.move_inbox(queue_name text, max_rows integer DEFAULT 10000,
                                      max_keys integer DEFAULT 100000) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sent integer;
BEGIN
    IF NOT EXISTS (SELECT FROM embeddings.inbox) THEN
        RETURN 0;
    END IF;
    EXECUTE format($q$
        WITH candidates AS (
            SELECT b.ctid AS place, b.keys FROM embeddings.inbox b
            JOIN embeddings.targets t ON t.id = b.target
            WHERE t.queue = $1
            LIMIT $2 FOR UPDATE OF b SKIP LOCKED),
        taken AS (
            DELETE FROM embeddings.inbox i
            WHERE i.ctid = ANY (ARRAY(
                SELECT c.place FROM (SELECT place, sum(keys) OVER (ORDER BY place) - keys AS before
                                     FROM candidates) c
                WHERE c.before < $4))
            RETURNING i.target, i.columns, i.enqueued_at, i.ctid AS place),
        keyed AS (  -- each key once, at its first place in write order
            SELECT k.target, k.key, min(k.enqueued_at) AS enqueued_at, min(k.pos) AS pos
            FROM (SELECT t.target, t.enqueued_at, m.key,
                         row_number() OVER (ORDER BY t.enqueued_at, t.place, m.n) AS pos
                  FROM taken t,
                       LATERAL embeddings.message_keys(jsonb_build_object('columns', t.columns))
                           WITH ORDINALITY AS m(key, n)) k
            GROUP BY k.target, k.key),
        parts AS (
            SELECT target, key, enqueued_at, pos,
                   (row_number() OVER (PARTITION BY target ORDER BY pos) - 1) / $3 AS part
            FROM keyed)
        INSERT INTO pgmq.%I (enqueued_at, vt, message)
        SELECT min(p.enqueued_at), clock_timestamp(),
               jsonb_build_object('target', p.target, 'keys', jsonb_agg(p.key ORDER BY p.pos))
        FROM parts p
        GROUP BY p.target, p.part
        ORDER BY min(p.pos)$q$,
        pgmq.format_table_name(queue_name, 'q'))
    USING queue_name, max_rows, embeddings.keys_per_message(), max_keys;
    GET DIAGNOSTICS sent = ROW_COUNT;
    RETURN sent;
END
$$;
REVOKE ALL ON FUNCTION embeddings.move_inbox(text, integer, integer) FROM PUBLIC;

-- What waits in the inbox for live queue `queue_name`, per target: rows (statements), row keys,
-- the oldest write. The inbox's part of embeddings.queue_pending() and of the worker's gauges.
-- SECURITY DEFINER: whoever may read the status or run a worker may read these counts.
CREATE FUNCTION embeddings.inbox_pending(queue_name text)
RETURNS TABLE (target_id integer, rows bigint, keys bigint, oldest timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT i.target, count(*), sum(i.keys), min(i.enqueued_at)
    FROM embeddings.inbox i JOIN embeddings.targets t ON t.id = i.target
    WHERE t.queue = queue_name
    GROUP BY i.target
$$;

CREATE OR REPLACE FUNCTION embeddings.enqueue_statement(t embeddings.targets, from_where text, via_enqueue boolean) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
    WHEN via_enqueue THEN
        format('PERFORM embeddings.%I(ARRAY(SELECT pg_catalog.to_jsonb(%s) %s))',
               'embeddings_' || t.id || '_enqueue', embeddings.key_sql(t, 'n'), from_where)
    ELSE format(
        'WITH queued AS ('
        'INSERT INTO embeddings.inbox (target, keys, columns) '
        'SELECT %1$s, LEAST(s.keys - i + 1, %3$s), '
        'pg_catalog.jsonb_build_array(%4$s) '
        'FROM (SELECT pg_catalog.count(*)::integer AS keys, %5$s %6$s) AS s, '
        'pg_catalog.generate_series(1, s.keys, %3$s) AS i '
        'RETURNING 1) '
        'SELECT pg_catalog.pg_notify(''embeddings_jobs'', w.queue)::pg_catalog.text INTO woken '
        'FROM embeddings.idle_workers w WHERE w.queue OPERATOR(pg_catalog.=) %2$L AND EXISTS (SELECT FROM queued) LIMIT 1',
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
            DECLARE
                woken text;  -- enqueue_statement()'s wake-up
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

CREATE OR REPLACE FUNCTION embeddings.forget_target(t embeddings.targets) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_class WHERE oid = t.source) THEN
        PERFORM embeddings.drop_triggers(t);
        PERFORM embeddings.drop_worker_policies(t);
    END IF;
    -- model change: a change in progress goes (its shadow column is ours)
    IF EXISTS (SELECT FROM embeddings.model_changes mc WHERE mc.target_id = t.id)
       AND EXISTS (SELECT FROM pg_class WHERE oid = t.source) THEN
        PERFORM embeddings.cancel_change(t.source, t.embedding_column);
    END IF;
    DELETE FROM embeddings.inbox i WHERE i.target = t.id;
    EXECUTE format('DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1)',
                   pgmq.format_table_name(t.queue, 'q')) USING t.id;
    EXECUTE format('DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1)',  -- lanes
                   pgmq.format_table_name(embeddings.backfill_queue(t.queue), 'q')) USING t.id;
    DELETE FROM embeddings.targets tg WHERE tg.id = t.id;
    PERFORM pg_notify('embeddings_targets', t.id::text);
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
        '      CROSS JOIN LATERAL (SELECT q.message->''target'' AS target OFFSET 0) m '
        '      UNION ALL '  -- the inbox of a live queue (22_inbox.sql)
        '      SELECT pg_catalog.to_jsonb(i.target_id), NULL, NULL, NULL, i.keys, i.oldest '
        '      FROM embeddings.inbox_pending($1) i) g '
        'GROUP BY 1, 2, 3, 4',
        pgmq.format_table_name(queue, 'q')) USING queue;
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
        SELECT key_json FROM embeddings.inbox i,
             LATERAL embeddings.message_keys(jsonb_build_object('columns', i.columns)) AS key_json
        WHERE i.target = $1
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
    -- Keys the triggers left in the inbox, where no worker moves them (push mode, or none
    -- running): into their live queues (22_inbox.sql).
    PERFORM embeddings.move_inbox(lq.name, 100000, 10000000) FROM embeddings.queues lq WHERE lq.live_queue IS NULL;
    FOR t IN SELECT * FROM embeddings.targets ORDER BY id LOOP
        SELECT n.nspname, c.relname INTO rel_schema, rel_name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t.source;
        CONTINUE WHEN rel_name IS NULL OR t.problem IS NOT NULL;  -- table dropped, or not served
        IF EXISTS (SELECT FROM embeddings.backfills b WHERE b.target_id = t.id) THEN
            -- Its existing rows are still being queued (62_backfill.sql): a backfill step instead
            -- of a slice (which would queue the rows ahead of the backfill twice), when its
            -- backfill lane is low, so that the lane holds a step or two at most, not the table
            -- (a pulling worker steps it too).
            IF NOT embeddings.backfill_lane_full(t.queue, embeddings.backfill_step_keys()) THEN
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
                    SELECT embeddings.enqueue_keys($1, array_agg(s.k), 0, 'backfill') AS messages, count(*)::int AS keys
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

CREATE OR REPLACE FUNCTION embeddings.dispatch_batches(
    batch_size integer DEFAULT 10,
    max_requests integer DEFAULT 10,
    timeout_seconds integer DEFAULT 300,
    queue text DEFAULT 'embedding_jobs'
) RETURNS SETOF jsonb
LANGUAGE plpgsql AS $$
DECLARE
    wanted integer := batch_size * max_requests;
    live jsonb[];
    backfill jsonb[] := '{}';
BEGIN
    PERFORM embeddings.move_inbox(queue);  -- the triggers' keys (22_inbox.sql)
    live := ARRAY(SELECT r.message || jsonb_build_object('jobId', r.msg_id)
                  FROM pgmq.read(queue, timeout_seconds, wanted) AS r ORDER BY r.msg_id);
    -- lanes: backfill work fills what the live queue leaves; its jobs say their lane (job ids
    -- are per queue).
    IF cardinality(live) < wanted
       AND EXISTS (SELECT FROM embeddings.queues q WHERE q.name = embeddings.backfill_queue(dispatch_batches.queue)) THEN
        backfill := ARRAY(SELECT r.message || jsonb_build_object('jobId', r.msg_id, 'lane', 'backfill')
                          FROM pgmq.read(embeddings.backfill_queue(queue), timeout_seconds, wanted - cardinality(live)) AS r
                          ORDER BY r.msg_id);
    END IF;
    RETURN QUERY
        SELECT jsonb_agg(j.job ORDER BY j.n)
        FROM unnest(live || backfill) WITH ORDINALITY AS j(job, n)
        GROUP BY (j.n - 1) / batch_size
        ORDER BY (j.n - 1) / batch_size;
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
    -- It moves the triggers' keys into its live queue before reading that, and skips keys
    -- waiting there when it steps a backfill (22_inbox.sql).
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.move_inbox(text, integer, integer) TO %I', role_name);
    EXECUTE format('GRANT SELECT ON embeddings.inbox TO %I', role_name);
    -- It steps the backfills of its queue's targets when the queue is empty (62_backfill.sql).
    EXECUTE format('GRANT SELECT, UPDATE, DELETE ON embeddings.backfills TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.send_backfill(integer, jsonb[]) TO %I', role_name);
    -- model change: it completes changes and records which model produced the vectors.
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.complete_changes() TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.claim_provenance(integer, boolean, text, text, text) TO %I', role_name);
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


-- Worker roles may move and read the inbox; every target's trigger functions write it.
SELECT embeddings.grant_worker(r.role_name) FROM embeddings.worker_roles r;
SELECT embeddings.generate_functions(t) FROM embeddings.targets t
WHERE t.has_triggers AND t.problem IS NULL AND EXISTS (SELECT FROM pg_class c WHERE c.oid = t.source);

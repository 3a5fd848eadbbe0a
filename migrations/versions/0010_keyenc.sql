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

CREATE OR REPLACE FUNCTION embeddings.pending_sql(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format(
        'SELECT coalesce(sum(embeddings.message_key_count(message)), 0)::bigint, '
        '       extract(epoch FROM clock_timestamp() - min(enqueued_at))::double precision '
        'FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', %s) '
        '   OR message @> jsonb_build_object(''schema'', %L, ''table'', %L, ''embeddingColumn'', %L)',
        pgmq.format_table_name(t.queue, 'q'), t.id, n.nspname, c.relname, t.embedding_column)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = t.source
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
        SELECT m.message -> 'id' FROM pgmq.%1$I m
        WHERE m.message @> jsonb_build_object('schema', %2$L, 'table', %3$L)
          AND coalesce(m.message ->> 'embeddingColumn', 'embedding') = %4$L
          AND m.message -> 'id' IS NOT NULL
        UNION ALL
        SELECT f.row_key FROM embeddings.failures f WHERE f.target_id = $1 AND f.row_key IS NOT NULL
        $q$, pgmq.format_table_name(t.queue, 'q'), rel_schema, rel_name, t.embedding_column)
    USING t.id;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.enqueue_keys(target_id integer, keys anyarray, delay integer DEFAULT 0)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queue_name text;
    total integer := coalesce(cardinality(keys), 0);
    per_message integer := embeddings.keys_per_message();
    all_keys jsonb;
BEGIN
    IF total = 0 THEN
        RETURN 0;
    END IF;
    SELECT t.queue INTO queue_name FROM embeddings.targets t WHERE t.id = target_id;
    IF queue_name IS NULL THEN
        RAISE EXCEPTION 'embeddings: no target with id %', target_id;
    END IF;
    -- Slicing an array is several times cheaper than grouping rows into chunks; a jsonb array,
    -- since slicing a Postgres array of variable-width keys (text, composite keys' jsonb) walks
    -- it from its start each time: O(n^2) for n keys (30_triggers.sql).
    all_keys := to_jsonb(keys);
    PERFORM pgmq.send_batch(
        queue_name,
        ARRAY(SELECT jsonb_build_object('target', target_id, 'keys', jsonb_path_query_array(
                         all_keys, '$[$a to $b]', jsonb_build_object('a', i - 1, 'b', i + per_message - 2)))
              FROM generate_series(1, total, per_message) AS i),
        delay);
    RETURN (total + per_message - 1) / per_message;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.ensure_queue(queue_name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    created boolean := false;
BEGIN
    IF EXISTS (SELECT FROM embeddings.queues WHERE name = queue_name) THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT FROM pgmq.meta m WHERE m.queue_name = ensure_queue.queue_name) THEN
        PERFORM pgmq.create(queue_name);
        created := true;
    END IF;
    EXECUTE format(
        'CREATE TRIGGER embeddings_notify_workers AFTER INSERT ON pgmq.%I '
        'FOR EACH ROW EXECUTE FUNCTION embeddings.notify_workers(%L)',
        pgmq.format_table_name(queue_name, 'q'), queue_name);
    INSERT INTO embeddings.queues (name, created_here) VALUES (queue_name, created);
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
                pgmq.format_table_name(q.name, 'q'), q.name);
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

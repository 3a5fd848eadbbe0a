-- Trigger messages carry row keys by column, an integer key column as its Postgres array text
-- (issue 13, issue 16 §1: the write path's cost of encoding keys). The worker and these
-- functions read both shapes: jobs queued before this revision keep theirs.

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
        'FROM (SELECT %5$s %6$s) AS s, '
        'pg_catalog.generate_series(1, pg_catalog.cardinality(s.k0), %3$s) AS i',
        pgmq.format_table_name(t.queue, 'q'), t.id, embeddings.keys_per_message(),
        (SELECT string_agg(format(CASE WHEN ty = ANY ('{int2,int4,int8}'::regtype[])
                                       THEN '(s.k%1$s[i : i + %2$s - 1])::pg_catalog.text'
                                       ELSE 'pg_catalog.to_jsonb(s.k%1$s[i : i + %2$s - 1])' END,
                                  i - 1, embeddings.keys_per_message()), ', ' ORDER BY i)
         FROM unnest(t.key_types) WITH ORDINALITY AS k(ty, i)),
        (SELECT string_agg(format('pg_catalog.array_agg(n.%I) AS k%s', c, i - 1), ', ' ORDER BY i)
         FROM unnest(t.key_columns) WITH ORDINALITY AS k(c, i)),
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

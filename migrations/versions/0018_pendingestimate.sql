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

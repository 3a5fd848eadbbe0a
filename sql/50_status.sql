-- What is going on: per-target progress, and the dead letters.

-- A target's display name: schema.table.column, quoted where needed.
CREATE FUNCTION embeddings.target_name(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('%I.%I.%I', n.nspname, c.relname, t.embedding_column)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = t.source
$$;

-- Jobs of target t waiting in its queue (in flight included): our messages count their keys,
-- messages in the Supabase guide's shape count one row each.
CREATE FUNCTION embeddings.pending_sql(t embeddings.targets) RETURNS text
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

-- Re-queues dead letters (all, or those with the given ids) and removes them from
-- embeddings.failures. Returns how many were re-queued.
CREATE FUNCTION embeddings.retry_failures(ids bigint[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    f embeddings.failures;
    retried integer := 0;
BEGIN
    FOR f IN
        DELETE FROM embeddings.failures WHERE ids IS NULL OR id = ANY(ids) RETURNING *
    LOOP
        PERFORM embeddings.ensure_queue(f.queue);
        PERFORM pgmq.send(f.queue, f.message);
        retried := retried + 1;
    END LOOP;
    RETURN retried;
END
$$;

-- Self-healing: embeddings.sweep() finds rows that should have an embedding and have no job
-- (a job lost to a TRUNCATE of the queue, rows written while triggers were off, an embedding set
-- to NULL by hand), queues them, and prunes old archived jobs. Opt in to running it every
-- minute with embeddings.schedule_sweep() where pg_cron is installed, or call it from any
-- scheduler.

-- Where each target's sweep left off: a primary key, as text. Work per run is bounded by
-- max_rows per target, so a huge table is swept a slice at a time and never stalls the job.
CREATE TABLE embeddings.sweep_cursors (
    target_id integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    after_key text,
    swept_at  timestamptz NOT NULL DEFAULT now()
);

-- sweep()'s slice of target t, one row at a time: each row's content is evaluated in a
-- subtransaction of its own. A row whose content function raises is queued (it has no
-- embedding, so it needs one): the worker meets the error and dead-letters it with the error,
-- and sweep() leaves dead-lettered rows alone afterwards.
CREATE FUNCTION embeddings.sweep_rows(
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

CREATE FUNCTION embeddings.sweep(
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

-- Runs embeddings.sweep() on a pg_cron schedule (default: every minute; pg_cron 1.4 has minute
-- granularity, 1.5+ also takes '30 seconds'). Calling it again replaces the schedule.
-- Returns the pg_cron job id.
CREATE FUNCTION embeddings.schedule_sweep(
    schedule text DEFAULT '* * * * *',
    max_rows integer DEFAULT 1000,
    archive_retention interval DEFAULT '7 days'
) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('cron.job') IS NULL THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING HINT = 'CREATE EXTENSION pg_cron (it must be in shared_preload_libraries and cron.database_name must name this database), or call embeddings.sweep() from another scheduler.';
    END IF;
    RETURN cron.schedule(
        'embeddings-sweep', schedule,
        format('SELECT embeddings.sweep(%s, %L::interval)', max_rows, archive_retention));
END
$$;

CREATE FUNCTION embeddings.unschedule_sweep() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('cron.job') IS NULL THEN
        RETURN false;  -- (a separate IF: cron.job must not be planned where it does not exist)
    END IF;
    IF NOT EXISTS (SELECT FROM cron.job WHERE jobname = 'embeddings-sweep') THEN
        RETURN false;
    END IF;
    RETURN cron.unschedule('embeddings-sweep');
END
$$;

-- Self-healing: embeddings.sweep() finds rows that should have an embedding and have no job
-- (a job lost to a TRUNCATE of the queue, rows written while triggers were off, an embedding set
-- to NULL by hand), queues them, moves the inbox, and prunes old archived jobs. Opt in to running it every
-- minute with embeddings.schedule_sweep() where pg_cron is installed, or call it from any
-- scheduler.

-- A predicate on a queue message `m`: a job of the Supabase guide's shape ({"id", "schema",
-- "table", "embeddingColumn"}) for target t's table and column. Such jobs are t's too, though
-- they name no target (pending_keys(), and a model change's moving_live_keys()).
CREATE FUNCTION embeddings_internal.guide_job_sql(t embeddings.targets, m text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.render('%(m)I.message @> pg_catalog.jsonb_build_object(''schema'', %(schema)L, ''table'', %(table)L)'
                             ' AND coalesce(%(m)I.message ->> ''embeddingColumn'', ''embedding'') = %(column)L'
                             ' AND %(m)I.message -> ''id'' IS NOT NULL',
                             jsonb_build_object('m', m, 'column', t.embedding_column,
                                                'schema', (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                                           WHERE c.oid = t.source),
                                                'table', (SELECT c.relname FROM pg_class c WHERE c.oid = t.source)))
$$;

-- Row keys (JSON form) of target t that need no sweeping: queued in either message shape (in
-- either lane, or in the inbox), or dead-lettered (those wait for `failures --retry`).
CREATE FUNCTION embeddings_internal.pending_keys(t embeddings.targets) RETURNS TABLE (k jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT key_json FROM pgmq.%1$I m, LATERAL embeddings_internal.message_keys(m.message) AS key_json
        WHERE m.message @> jsonb_build_object('target', $1)
        UNION ALL
        SELECT key_json FROM pgmq.%3$I m, LATERAL embeddings_internal.message_keys(m.message) AS key_json
        WHERE m.message @> jsonb_build_object('target', $1)
        UNION ALL
        SELECT key_json FROM embeddings.inbox i,
             LATERAL embeddings_internal.message_keys(jsonb_build_object('columns', i.columns)) AS key_json
        WHERE i.target = $1
        UNION ALL
        SELECT m.message -> 'id' FROM pgmq.%1$I m WHERE %2$s
        UNION ALL
        SELECT f.row_key FROM embeddings.failures f WHERE f.target_id = $1 AND f.row_key IS NOT NULL
        $q$, embeddings_internal.lane_table(t.queue, 'live'), embeddings_internal.guide_job_sql(t, 'm'),
        embeddings_internal.lane_table(t.queue, 'backfill'))
    USING t.id;
END
$$;

-- Row keys (JSON form, as the scans return them) of target t's documents settled with no text
-- (embeddings.documents, state no_text: an empty page, a PDF of images only) under its
-- definition now, each with the md5 of the content it was settled for: sweep() does not queue
-- them (they have no chunk, and never will for that content), the verifying sweep only once
-- their content is another (sql/64_verify.sql). The worker records canonical key text: read
-- back with the key settings pinned, as record_fingerprints() reads it.
CREATE FUNCTION embeddings_internal.no_text_keys(t embeddings.targets) RETURNS TABLE (k jsonb, digest text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, MDY' SET IntervalStyle = postgres SET extra_float_digits = 3
SET bytea_output = hex AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM embeddings.documents d WHERE d.target_id = t.id AND d.state = 'no_text') THEN
        RETURN;  -- (nearly every target: no key conversion to render)
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT %s, d.digest FROM embeddings.documents d'
        ' WHERE d.target_id = $1 AND d.state = ''no_text'' AND d.target_version = $2',
        embeddings_internal.key_json_from_text_sql(t, 'd.row_key'))  -- 64_verify.sql
    USING t.id, t.version;
END
$$;

-- One step of resolving target t's dead letters whose row is gone: the next `max_rows` of them,
-- in id order from where the last step stopped (sweep_cursors.failures_after), whose rows are
-- asked of the target's embeddings_<id>_existing() as the table's owner (sql/64_verify.sql); the
-- letters of keys no row has are deleted here, where no code of the owner's runs. A side or
-- chunk table's DELETE queues a job, which finds its row gone and resolves the letter
-- (worker/pipeline/deferrals.py); a row store's queues none (a DELETE trigger would cost every
-- application's deletes): without this its letter was counted in failed_jobs for good. Bounded:
-- 100,000 dead letters take 100 sweeps of 1,000, each an index range of (target_id, id). A
-- letter the worker replaces meanwhile (its row inserted and failed again) has a new id, and is
-- kept. Returns the number of dead letters resolved, and whether the target has more after those
-- this step looked at (the next step goes on from there), and says both in a NOTICE.
CREATE FUNCTION embeddings_internal.resolve_gone_failures(t embeddings.targets, max_rows integer,
                                                          OUT resolved integer, OUT more boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nkeys integer := cardinality(t.key_columns);
    after bigint;
    scanned integer;
    last_id bigint;
BEGIN
    resolved := 0;
    more := false;
    IF NOT EXISTS (SELECT FROM embeddings.failures f WHERE f.target_id = t.id AND f.row_key IS NOT NULL) THEN
        RETURN;  -- (nearly every target: no key arrays to render)
    END IF;
    SELECT sc.failures_after INTO after FROM embeddings.sweep_cursors sc WHERE sc.target_id = t.id;
    EXECUTE format($q$
        WITH batch AS MATERIALIZED (
            SELECT f.id, f.row_key FROM embeddings.failures f
            WHERE f.target_id = $1 AND f.id > $2 AND f.row_key IS NOT NULL
            ORDER BY f.target_id, f.id LIMIT $3  -- the index's order (failures_target_id_id): no sort
        ),
        living AS (
            SELECT e.k FROM embeddings.%I(
                (SELECT pg_catalog.array_agg(b.row_key::text ORDER BY b.id) FROM batch b)%s) AS e(k)
        ),
        gone AS (
            DELETE FROM embeddings.failures f USING batch b
            WHERE f.id = b.id AND b.row_key::text NOT IN (SELECT l.k FROM living l)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM batch)::int, (SELECT max(b.id) FROM batch b), (SELECT count(*) FROM gone)::int
        $q$,
        'embeddings_' || t.id || '_existing',
        (SELECT string_agg(format(', (SELECT pg_catalog.array_agg(%s ORDER BY b.id) FROM batch b)',
                                  CASE WHEN nkeys = 1 THEN 'b.row_key #>> ''{}''' ELSE format('b.row_key ->> %s', i - 1) END),
                           '' ORDER BY i)
         FROM generate_series(1, nkeys) i))
    INTO scanned, last_id, resolved
    USING t.id, coalesce(after, 0), max_rows;
    more := scanned >= max_rows AND EXISTS (
        SELECT FROM embeddings.failures f
        WHERE f.target_id = t.id AND f.id > last_id AND f.row_key IS NOT NULL);
    -- The end of the target's dead letters: the next step starts over.
    INSERT INTO embeddings.sweep_cursors AS sc (target_id, failures_after)
    VALUES (t.id, CASE WHEN more THEN last_id END)
    ON CONFLICT (target_id) DO UPDATE SET failures_after = excluded.failures_after;
    -- Said as sweep()'s skipped steps are (its WARNINGs): sweep() returns the rows it queued.
    IF resolved > 0 OR more THEN
        RAISE NOTICE '%', format('embeddings.sweep(): resolved %s dead letter(s) whose key names no row of %s now (deleted, or its key changed)%s',
            resolved, embeddings_internal.target_name(t),
            CASE WHEN more THEN format('; more are left to look at: the next sweep takes the next %s', max_rows) ELSE '' END);
    END IF;
END
$$;

-- With `verify`, also a slice of the verifying pass (sql/64_verify.sql): rows whose vector is not
-- that of their current content and definition are queued too.
CREATE FUNCTION embeddings.sweep(
    max_rows integer DEFAULT 1000,
    archive_retention interval DEFAULT '7 days',
    verify boolean DEFAULT false
) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    t embeddings.targets;
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
    PERFORM embeddings_internal.move_inbox(lq.name, 100000, 10000000) FROM embeddings.queues lq WHERE lq.live_queue IS NULL;
    FOR t IN SELECT * FROM embeddings.targets ORDER BY id LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = t.source)
                      OR t.problem IS NOT NULL;  -- table dropped, or not served
        BEGIN  -- (its failure costs only this step: never the sweep)
            PERFORM embeddings_internal.resolve_gone_failures(t, max_rows);  -- (says what it did)
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'embeddings.sweep(): dead letters of deleted rows of %.% not resolved: %', t.source, t.embedding_column, SQLERRM;
        END;
        IF EXISTS (SELECT FROM embeddings.backfills b WHERE b.target_id = t.id) THEN
            -- Its existing rows are still being queued (62_backfill.sql): a backfill step instead
            -- of a slice (which would queue the rows ahead of the backfill twice), when its
            -- backfill lane is low, so that the lane holds a step or two at most, not the table
            -- (a pulling worker steps it too).
            IF NOT embeddings_internal.backfill_lane_full(t.queue, embeddings.backfill_step_keys()) THEN
                total := total + coalesce((SELECT s.enqueued FROM embeddings_internal.backfill_step(t.id) s), 0);
            END IF;
            CONTINUE;
        END IF;
        -- A verifying sweep queues rows without a vector too (below): one evaluation per row.
        CONTINUE WHEN verify;
        SELECT after_key INTO cursor_key FROM embeddings.sweep_cursors WHERE target_id = t.id;

        BEGIN
            -- One slice of the table in key order, read by the target's embeddings_<id>_scan(),
            -- which runs as the table's owner and evaluates the content as that role
            -- (sql/32_access.sql). A row is missing when it has real content (whitespace-only
            -- content would be cleared and queued again forever), no embedding, no pending job
            -- in either message shape, no dead letter (those wait for `failures --retry`), and
            -- is no document settled with no text (no_text_keys()). Keys are compared in their
            -- JSON form, as messages carry them.
            EXECUTE format($q$
                WITH slice AS (
                    SELECT s.key AS k, s.missing, row_number() OVER () AS ord
                    FROM embeddings.%I($1::jsonb, $2, false, true, true) AS s
                ),
                queued AS (
                    SELECT embeddings_internal.enqueue_keys($3, array_agg(s.k), 0, 'backfill') AS messages, count(*)::int AS keys
                    FROM slice s
                    WHERE s.missing
                      AND s.k NOT IN (SELECT p.k FROM embeddings_internal.pending_keys($4) p)
                      AND s.k NOT IN (SELECT n.k FROM embeddings_internal.no_text_keys($4) n)
                )
                SELECT (SELECT count(*) FROM slice)::int,
                       (SELECT k::text FROM slice ORDER BY ord DESC LIMIT 1), keys
                FROM queued
                $q$, 'embeddings_' || t.id || '_scan')
            INTO scanned, last_key, enqueued
            USING cursor_key, max_rows, t.id, t;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'embeddings.sweep(): skipped %.%: %', t.source, t.embedding_column, SQLERRM;
            CONTINUE;
        END;

        -- A short slice means the end of the table: start again from the top next time.
        INSERT INTO embeddings.sweep_cursors AS sc (target_id, after_key, swept_at)
        VALUES (t.id, CASE WHEN scanned < max_rows THEN NULL ELSE last_key END, now())
        ON CONFLICT (target_id) DO UPDATE SET after_key = excluded.after_key, swept_at = now();
        total := total + coalesce(enqueued, 0);
    END LOOP;

    IF verify THEN
        total := total + embeddings.verify(max_rows);
    END IF;

    -- Archived jobs (dead letters' messages, pgmq.archive) older than the retention.
    IF archive_retention IS NOT NULL THEN
        FOR q IN SELECT name FROM embeddings.queues LOOP
            EXECUTE format(
                'DELETE FROM pgmq.%1$I WHERE msg_id IN ('
                '  SELECT msg_id FROM pgmq.%1$I WHERE archived_at < now() - $1 LIMIT 10000)',
                pgmq.format_table_name(q.name, 'a')) USING archive_retention;
        END LOOP;
    END IF;
    -- Throughput minutes older than a day feed nothing (workers prune too: record_throughput).
    DELETE FROM embeddings.throughput WHERE minute < now() - interval '1 day';
    RETURN total;
END
$$;
COMMENT ON FUNCTION embeddings.sweep IS
    'Queues what the triggers could not: rows missing their vector, a step of each backfill, and with verify a slice of the verifying pass. Schema owner only.';

-- Runs embeddings.sweep() on a pg_cron schedule (default: every minute; pg_cron 1.4 has minute
-- granularity, 1.5+ also takes '30 seconds'). Calling it again replaces the schedule.
-- Returns the pg_cron job id.
CREATE FUNCTION embeddings.schedule_sweep(
    schedule text DEFAULT '* * * * *',
    max_rows integer DEFAULT 1000,
    archive_retention interval DEFAULT '7 days',
    verify boolean DEFAULT false
) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF to_regclass('cron.job') IS NULL THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING HINT = 'CREATE EXTENSION pg_cron (it must be in shared_preload_libraries and cron.database_name must name this database), or call embeddings.sweep() from another scheduler.';
    END IF;
    RETURN cron.schedule(
        'embeddings-sweep', schedule,
        format('SELECT embeddings.sweep(%s, %L::interval%s)', max_rows, archive_retention,
               CASE WHEN verify THEN ', verify => true' ELSE '' END));
END
$$;
COMMENT ON FUNCTION embeddings.schedule_sweep IS
    'Runs sweep() on a pg_cron schedule; returns the pg_cron job id. Schema owner only.';

CREATE FUNCTION embeddings.unschedule_sweep() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
COMMENT ON FUNCTION embeddings.unschedule_sweep IS
    'Removes the pg_cron schedule of sweep(). Schema owner only.';

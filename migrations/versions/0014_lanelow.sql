-- 0014: one check of whether a backfill lane is full, for the worker's steps and sweep()'s.
--   * backfill_lane_full(), backfill_next() (62_backfill.sql), sweep() (60_sweep.sql)

CREATE FUNCTION embeddings.backfill_lane_full(queue text, max_keys integer) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    lane_full boolean;
BEGIN
    EXECUTE format('SELECT count(*) >= $1 FROM (SELECT FROM pgmq.%I LIMIT $1) q',
                   pgmq.format_table_name(embeddings.backfill_queue(queue), 'q'))
        INTO lane_full USING max_keys / embeddings.keys_per_message() + 1;
    RETURN lane_full;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.backfill_next(
    queue text, max_keys integer DEFAULT embeddings.backfill_step_keys(),
    OUT scanned integer, OUT enqueued integer
)
LANGUAGE plpgsql AS $$
DECLARE
    b embeddings.backfills;
    t embeddings.targets;
BEGIN
    scanned := 0;
    enqueued := 0;
    IF max_keys IS NULL OR max_keys < 1 THEN
        RAISE EXCEPTION 'max_keys must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Not while the backfill lane holds a step's worth of jobs: a worker whose reads run short
    -- because its backfill batch is still in flight must not queue the whole table meanwhile.
    IF embeddings.backfill_lane_full(queue, max_keys) THEN
        RETURN;
    END IF;
    SELECT bf.* INTO b FROM embeddings.backfills bf
    JOIN embeddings.targets tg ON tg.id = bf.target_id
    WHERE tg.queue = backfill_next.queue AND tg.problem IS NULL
      AND EXISTS (SELECT FROM pg_class c WHERE c.oid = tg.source)
    ORDER BY bf.target_id
    LIMIT 1
    FOR UPDATE OF bf SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO t FROM embeddings.targets tg WHERE tg.id = b.target_id;
    SELECT r.scanned, r.enqueued INTO scanned, enqueued FROM embeddings.backfill_range(t, b, max_keys) r;
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

-- The live lane's inbox: where the triggers put the keys an application's statement needs
-- embedded, one row per statement (per 4,096 keys), and whence the worker moves them into the
-- live pgmq queue (a bulk statement's into its backfill lane: bulk_statement_keys()).
--
-- Why not straight into pgmq: most applications write one row per statement, and for those the
-- queue row was most of what watching cost. A pgmq queue table has an identity column, two
-- indexes and seven columns; this table has none of the first two and four columns, and the
-- statement's keys go in as its key columns' arrays: single-row INSERTs run measurably faster
-- (docs/performance.md, "The inbox: no queue row per statement"). A bulk statement writes one row per 4,096 keys.
--
-- Moving (embeddings_internal.move_inbox) deletes inbox rows and inserts their keys as job messages of
-- up to keys_per_message() keys, one transaction, so a key is in exactly one of the two places
-- at any moment; SKIP LOCKED keeps concurrent movers apart. Keys of single-row statements are
-- coalesced into shared messages, and a key written twice before a move is queued once. The
-- worker moves before each read of its live queue; sweep() and dispatch() move too, so the
-- inbox empties with no worker running (push mode) or after an old worker. Everything that
-- counts or looks for queued keys (status, pending_keys, the worker's gauges) reads both.

-- A statement's keys go into rows of up to this many: a 10-million-row INSERT writes 2,442 rows
-- rather than one jsonb of ~80 MB that every move and count would read whole.
CREATE FUNCTION embeddings_internal.inbox_keys_per_row() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 4096;

-- A statement that writes more than this many rows of one target is a bulk load (a COPY, an
-- INSERT ... SELECT, an UPDATE of a whole table): its keys go to the backfill lane, so that the
-- rows single statements write after it, of any table, are embedded first, and not minutes later
-- behind its backlog (docs/scaling.md, "Bulk loads"). 1,000 rows are about a minute of
-- inference on two cores; an application's multi-row INSERT of a form or a page stays live.
-- The setting embeddings.bulk_statement_rows says otherwise (per database or role). Read where the inbox is moved, once a move, by the sessions that
-- move it (the worker's, sweep()'s, dispatch()'s): the triggers only count, so the write path
-- pays nothing for it, and a writer's own session cannot route its loads live.
CREATE FUNCTION embeddings_internal.bulk_statement_keys() RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT greatest(coalesce(nullif(current_setting('embeddings.bulk_statement_rows', true), '')::integer, 1000), 0)
$$;

-- Moves inbox rows of the targets on live queue `queue_name` into it, up to `max_rows` rows and
-- about `max_keys` keys (whole rows: at least one); returns the number of messages sent. Cheap
-- when the inbox is empty (the worker calls it before every read), and a move takes what
-- accumulated since the last, so the inbox stays short and the queue keeps the order. The keys
-- of a bulk statement (more than bulk_statement_keys() rows: the inbox row says how many its
-- statement wrote) go to the queue's backfill lane instead; a key that a smaller statement
-- wrote too goes live, once. Rows written before statement_keys was (an older trigger's) are
-- live, as they were.
-- SECURITY DEFINER: worker roles need no rights on the queue's insert.
CREATE FUNCTION embeddings_internal.move_inbox(queue_name text, max_rows integer DEFAULT 10000,
                                      max_keys integer DEFAULT 100000) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    sent integer;
    backfill_table text := pgmq.format_table_name(embeddings_internal.backfill_queue(queue_name), 'q');
    bulk_keys integer := embeddings_internal.bulk_statement_keys();
BEGIN
    IF NOT EXISTS (SELECT FROM embeddings.inbox) THEN
        RETURN 0;
    END IF;
    -- A queue without a backfill lane (ensure_queue() gives every live queue one): all live.
    IF to_regclass(format('pgmq.%I', backfill_table)) IS NULL THEN
        backfill_table := pgmq.format_table_name(queue_name, 'q');
        bulk_keys := NULL;
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
            RETURNING i.target, i.columns, i.enqueued_at, i.ctid AS place,
                      coalesce(i.statement_keys > $5, false) AS bulk),
        keyed AS (  -- each key once, at its first place in write order; live if any write was
            SELECT k.target, k.key, min(k.enqueued_at) AS enqueued_at, min(k.pos) AS pos, bool_and(k.bulk) AS bulk
            FROM (SELECT t.target, t.enqueued_at, t.bulk, m.key,
                         row_number() OVER (ORDER BY t.enqueued_at, t.place, m.n) AS pos
                  FROM taken t,
                       LATERAL embeddings_internal.message_keys(jsonb_build_object('columns', t.columns))
                           WITH ORDINALITY AS m(key, n)) k
            GROUP BY k.target, k.key),
        parts AS (
            SELECT target, key, enqueued_at, pos, bulk,
                   (row_number() OVER (PARTITION BY target, bulk ORDER BY pos) - 1) / $3 AS part
            FROM keyed),
        jobs AS (
            SELECT min(p.enqueued_at) AS enqueued_at, min(p.pos) AS pos, p.bulk,
                   jsonb_build_object('target', p.target, 'keys', jsonb_agg(p.key ORDER BY p.pos)) AS message
            FROM parts p
            GROUP BY p.target, p.bulk, p.part),
        live AS (
            INSERT INTO pgmq.%I (enqueued_at, vt, message)
            SELECT j.enqueued_at, clock_timestamp(), j.message FROM jobs j WHERE NOT j.bulk ORDER BY j.pos
            RETURNING 1),
        backfill AS (
            INSERT INTO pgmq.%I (enqueued_at, vt, message)
            SELECT j.enqueued_at, clock_timestamp(), j.message FROM jobs j WHERE j.bulk ORDER BY j.pos
            RETURNING 1)
        SELECT (SELECT count(*) FROM live) + (SELECT count(*) FROM backfill)$q$,
        pgmq.format_table_name(queue_name, 'q'), backfill_table)
    USING queue_name, max_rows, embeddings_internal.keys_per_message(), max_keys, bulk_keys
    INTO sent;
    RETURN sent;
END
$$;

-- What waits in the inbox for queue `queue_name`, per target and per lane the move sends it to
-- (`lane`: the live queue, or its backfill lane for a bulk statement's keys, as move_inbox()
-- decides): rows (statements), row keys, the oldest write. Given a live queue, the rows of its
-- targets in both lanes (all that its move takes); given a backfill lane, the same rows of the
-- targets it serves: a caller counting one lane's work takes the rows whose `lane` is it (the
-- inbox's part of embeddings_internal.queue_pending() and of the worker's gauges).
-- SECURITY DEFINER: whoever may read the status or run a worker may read these counts.
CREATE FUNCTION embeddings_internal.inbox_pending(queue_name text)
RETURNS TABLE (target_id integer, rows bigint, keys bigint, oldest timestamptz, lane text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
    SELECT i.target, count(*), sum(i.keys), min(i.enqueued_at),
           CASE WHEN i.statement_keys > embeddings_internal.bulk_statement_keys()
                     AND to_regclass(format('pgmq.%I', pgmq.format_table_name(l.backfill, 'q'))) IS NOT NULL
                THEN l.backfill ELSE t.queue END
    FROM embeddings.inbox i JOIN embeddings.targets t ON t.id = i.target
    CROSS JOIN LATERAL (SELECT embeddings_internal.backfill_queue(t.queue) AS backfill) l
    WHERE queue_name IN (t.queue, l.backfill)
    GROUP BY 1, 5
$$;

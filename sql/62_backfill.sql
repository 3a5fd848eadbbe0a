-- Backfills: queuing the rows a table already holds when watch() registers it, after watch()
-- commits, one key range at a time.
--
-- watch() runs in its caller's transaction and may hold ACCESS EXCLUSIVE on the table (adding
-- the embedding column): queuing every key there would hold the lock for the whole enqueue
-- (every read of the table blocked, for seconds at millions of rows) and build one array of all
-- keys (Postgres's 1 GB limit near 100M keys). Instead watch() records a cursor
-- (embeddings.backfills) and queues one step inline (at most backfill_step_keys() rows: a
-- bounded cost, whatever the table's size); the rest is queued by later steps, each in its own
-- short transaction:
--   * the worker steps the backfills of its queue when it finds the queue empty, so that live
--     jobs are never buried under a backfill (worker/process/backfill.py);
--   * embeddings.sweep() steps them too when their queue is low (pg_cron, push mode).
-- A step reads the next rows after the cursor in key order (keyset pagination: a row
-- comparison on the key columns, served by the key's index), queues those that need a vector
-- as messages of keys_per_message() keys, and advances the cursor in the same transaction.
-- Concurrent steppers skip a backfill whose cursor row another holds (FOR UPDATE SKIP LOCKED),
-- so no range is queued twice, and a stepper killed mid-step leaves the cursor where it was.
-- Rows written meanwhile are queued by the triggers: a step skips keys already waiting in a
-- job (or dead-lettered), and rows that hold a vector.

-- Rows one step examines by default (sweep(), and watch()'s inline first step).
CREATE FUNCTION embeddings.backfill_step_keys() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 1000;
COMMENT ON FUNCTION embeddings.backfill_step_keys IS
    'Rows one backfill step examines (sweep(), and watch()''s first step).';

-- The one function that sends backfill work: keys (JSON forms) of target `target_id`, as
-- messages of keys_per_message() keys, into its backfill lane (20_queue.sql). SECURITY DEFINER
-- (through enqueue_keys), so executable by no one but its owner unless granted.
CREATE FUNCTION embeddings_internal.send_backfill(target_id integer, keys jsonb[]) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.enqueue_keys(target_id, keys, 0, coalesce(  -- behind the live writes
        (SELECT b.lane FROM embeddings.backfills b WHERE b.target_id = send_backfill.target_id), 'backfill'))
$$;

-- Starts (or restarts) target t's backfill and takes its first step inline. `every_row`
-- restarts from the first key; otherwise a running backfill keeps its cursor. `lane`: where its
-- jobs go, 'change' for a model change (44_changes.sql).
CREATE FUNCTION embeddings_internal.start_backfill(t embeddings.targets, every_row boolean, lane text DEFAULT 'backfill')
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO embeddings.backfills AS b (target_id, every_row, lane)
    VALUES (t.id, every_row, lane)
    ON CONFLICT (target_id) DO UPDATE
    SET every_row = b.every_row OR excluded.every_row,
        after_key = CASE WHEN excluded.every_row THEN NULL ELSE b.after_key END,
        started_at = CASE WHEN excluded.every_row THEN now() ELSE b.started_at END,
        scanned_rows = CASE WHEN excluded.every_row THEN 0 ELSE b.scanned_rows END,
        enqueued_keys = CASE WHEN excluded.every_row THEN 0 ELSE b.enqueued_keys END,
        lane = CASE WHEN excluded.every_row THEN excluded.lane ELSE b.lane END;
    PERFORM embeddings_internal.backfill_step(t.id, embeddings.backfill_step_keys());
END
$$;

-- One step of the backfill `b` of target `t`, whose cursor row the caller has locked: queues
-- the keys among the next `max_keys` rows after the cursor that need a job and wait in none,
-- and moves the cursor past them; at the end of the table the backfill is done (its row goes).
-- Every row again (`every_row`) queues keys that wait in a job too: that job may be one the
-- worker deferred (its target could not be served), not due for a while.
CREATE FUNCTION embeddings_internal.backfill_range(
    t embeddings.targets, b embeddings.backfills, max_keys integer,
    OUT scanned integer, OUT enqueued integer
)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    last_key jsonb;
    keys jsonb[];
BEGIN
    -- Read by the target's embeddings_<id>_scan(), as the table's owner (sql/32_access.sql):
    -- keys only, and a content column's text (no content function is evaluated by a
    -- backfill: the worker clears what turns out blank, and dead-letters a row whose content
    -- function raises, with its error).
    EXECUTE format($q$
        WITH slice AS (
            SELECT s.key AS k, s.missing, row_number() OVER () AS ord
            FROM embeddings.%I($1, $2, $4, $5) AS s
        )
        SELECT (SELECT count(*) FROM slice)::int,
               (SELECT k FROM slice ORDER BY ord DESC LIMIT 1),
               ARRAY(SELECT s.k FROM slice s
                     WHERE s.missing AND ($4 OR s.k NOT IN (SELECT p.k FROM embeddings_internal.pending_keys($3) p))
                     ORDER BY s.ord)
        $q$, 'embeddings_' || t.id || '_scan')
        INTO scanned, last_key, keys USING b.after_key, max_keys, t, b.every_row, t.content_column IS NOT NULL;
    enqueued := cardinality(keys);
    IF enqueued > 0 THEN
        PERFORM embeddings_internal.send_backfill(t.id, keys);
    END IF;
    IF scanned < max_keys THEN
        DELETE FROM embeddings.backfills WHERE target_id = t.id;  -- the end of the table
    ELSE
        UPDATE embeddings.backfills
        SET after_key = last_key, scanned_rows = scanned_rows + scanned,
            enqueued_keys = enqueued_keys + enqueued, stepped_at = now()
        WHERE target_id = t.id;
    END IF;
END
$$;

-- One step of target `target_id`'s backfill, unless another session is taking one (then, or
-- when there is no backfill or the target is not served: 0 rows). Returns the rows examined
-- and the keys queued.
CREATE FUNCTION embeddings_internal.backfill_step(
    target_id integer, max_keys integer DEFAULT embeddings.backfill_step_keys(),
    OUT scanned integer, OUT enqueued integer
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b embeddings.backfills;
    t embeddings.targets;
BEGIN
    scanned := 0;
    enqueued := 0;
    IF max_keys IS NULL OR max_keys < 1 THEN
        RAISE EXCEPTION 'max_keys must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO b FROM embeddings.backfills bf WHERE bf.target_id = backfill_step.target_id
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO t FROM embeddings.targets tg WHERE tg.id = b.target_id;
    IF t.problem IS NOT NULL OR NOT EXISTS (SELECT FROM pg_class WHERE oid = t.source) THEN
        RETURN;  -- not served now: watch() again restarts it
    END IF;
    SELECT r.scanned, r.enqueued INTO scanned, enqueued FROM embeddings_internal.backfill_range(t, b, max_keys) r;
END
$$;

-- Whether `queue`'s backfill lane already holds a step of `max_keys` keys (in messages of
-- keys_per_message() keys). Steps that are not watch()'s own wait until it does not, so that the
-- lane holds a step or two, never the table. Reads at most that many messages.
CREATE FUNCTION embeddings_internal.backfill_lane_full(queue text, max_keys integer) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    lane_full boolean;
BEGIN
    EXECUTE format('SELECT count(*) >= $1 FROM (SELECT FROM pgmq.%I LIMIT $1) q',
                   embeddings_internal.lane_table(queue, 'backfill'))
        INTO lane_full USING max_keys / embeddings_internal.keys_per_message() + 1;
    RETURN lane_full;
END
$$;

-- One step of a backfill of a target on `queue` that no other session is stepping and whose
-- jobs in the backfill lane are fewer than a step's (`max_keys` keys), the one stepped longest
-- ago first (the worker calls this when its reads run short, and after each backfill batch).
-- Each backfill keeps a step or two in the lane, never its table, and gets its turns there
-- (read_jobs_by_target, worker/queries.sql) beside another target's: a bulk load's jobs
-- (22_inbox.sql), or another backfill's. Returns the rows examined (0: none to step) and the
-- keys queued.
CREATE FUNCTION embeddings_internal.backfill_next(
    queue text, max_keys integer DEFAULT embeddings.backfill_step_keys(),
    OUT scanned integer, OUT enqueued integer
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    chosen integer;
BEGIN
    scanned := 0;
    enqueued := 0;
    -- (A max_keys under 1 goes straight to backfill_step(), which refuses it.)
    IF max_keys IS NULL OR max_keys < 1 THEN
        SELECT s.scanned, s.enqueued INTO scanned, enqueued FROM embeddings_internal.backfill_step(NULL, max_keys) s;
        RETURN;
    END IF;
    -- The backfill taken (locked here: backfill_step() locks it again, ours already). Its
    -- target's jobs counted by the lane's (target, msg_id) index (20_queue.sql), a step's at most.
    EXECUTE format($q$
        SELECT bf.target_id FROM embeddings.backfills bf
        JOIN embeddings.targets tg ON tg.id = bf.target_id
        WHERE tg.queue = $1 AND tg.problem IS NULL
          AND EXISTS (SELECT FROM pg_class c WHERE c.oid = tg.source)
          AND (SELECT count(*) FROM (SELECT FROM pgmq.%I q WHERE q.message -> 'target' = to_jsonb(bf.target_id)
                                     LIMIT $2) j) < $2
        ORDER BY bf.stepped_at NULLS FIRST, bf.target_id
        LIMIT 1
        FOR UPDATE OF bf SKIP LOCKED$q$, embeddings_internal.lane_table(queue, 'backfill'))
        INTO chosen USING queue, max_keys / embeddings_internal.keys_per_message() + 1;
    IF chosen IS NOT NULL THEN
        SELECT s.scanned, s.enqueued INTO scanned, enqueued FROM embeddings_internal.backfill_step(chosen, max_keys) s;
    END IF;
END
$$;

-- Rows of target t that its backfill has still to pass and that need a job (for
-- embeddings.status: they are pending too). NULL when t has no backfill. Counted by the
-- target's embeddings_<id>_scan(), as the table's owner (sql/32_access.sql), like the
-- backfill's steps: SECURITY DEFINER, for the worker roles (grant_worker()) and the schema's
-- owner; status leaves the count out for other callers.
CREATE FUNCTION embeddings_internal.backfill_rows_left(t embeddings.targets) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b embeddings.backfills;
    left_rows bigint;
BEGIN
    SELECT * INTO b FROM embeddings.backfills bf WHERE bf.target_id = t.id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT count(*) FROM embeddings.%I($1, NULL, $2, $3) AS s WHERE s.missing',
                   'embeddings_' || t.id || '_scan')
        INTO left_rows USING b.after_key, b.every_row, t.content_column IS NOT NULL;
    RETURN left_rows;
END
$$;

-- Deferred HNSW indexes (embeddings.deferred_indexes). When watch() adds the embedding column to
-- a large table, it builds no index: building one, even empty, scans the table under watch()'s
-- lock, and inserting the backfill's vectors one by one into HNSW costs about ten times their
-- share of a build (docs/performance.md, "Figures behind the code's choices"). Search scans
-- exactly meanwhile (status: index_deferred). Once the backfill has ended and its jobs are done,
-- a worker that may (the table's owner) builds the index CONCURRENTLY, so that writes go on.
-- Partitioned tables are indexed at watch() (no CONCURRENTLY on their parent).

-- Tables with more rows than this (the planner's estimate) get their HNSW index deferred.
CREATE FUNCTION embeddings.index_defer_rows() RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 100000;
COMMENT ON FUNCTION embeddings.index_defer_rows IS
    'Tables estimated larger than this get their HNSW index deferred until their backfill is done.';

-- The name of target t's deferred index on `rel`: its store table (its table, or its side table:
-- sql/56_side.sql), or a partition of it. `<table>_<column>_<target id>_hnsw`, through
-- suffixed_name() (sql/15_names.sql): the target id keeps two targets' apart (a table `a_b`'s
-- column `c` and a table `a`'s column `b_c`), the hash two long names that share their first
-- bytes (partitions `<long name>_2024_01` and `_2024_02`). An index that 0.3.0 made under its
-- name for it, `left(<table>, 40)_left(<column>, 16)_hnsw` (an HNSW index on the column of
-- `rel`), keeps its name: an upgraded target's parent index, an interrupted build's leftover.
CREATE FUNCTION embeddings_internal.deferred_index_on(t embeddings.targets, rel regclass) RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(
        (SELECT ic.relname FROM pg_index i
         JOIN pg_class ic ON ic.oid = i.indexrelid
         JOIN pg_am am ON am.oid = ic.relam
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = rel AND am.amname = 'hnsw' AND a.attname = t.embedding_column
           AND ic.relname = (left(c.relname, 40) || '_' || left(t.embedding_column, 16) || '_hnsw')::name),
        embeddings_internal.suffixed_name(c.relname || '_' || t.embedding_column, '_' || t.id || '_hnsw'))
    FROM pg_class c WHERE c.oid = rel
$$;

-- The name of target t's deferred index on its store table.
CREATE FUNCTION embeddings_internal.deferred_index_name(t embeddings.targets) RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.deferred_index_on(t, t.store_table)
$$;

-- The last statement of a deferred index's build (deferred_index_ready()): raises unless index
-- `index_name` is on `rel` (in its schema), valid, and, on a partition, attached to the
-- parent's index `parent_index`. CREATE INDEX CONCURRENTLY IF NOT EXISTS skips a build whose
-- name is taken, by another table's index or by anything else of the schema: the build must
-- not count as done then, nor be logged as built. Reads the catalog only.
CREATE FUNCTION embeddings_internal.deferred_index_check(target_id integer, rel regclass, index_name name,
                                                parent_index regclass DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found pg_class;
    index_schema name := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel);
    on_rel oid;
BEGIN
    SELECT c.* INTO found FROM pg_class c
    WHERE c.relnamespace = (SELECT c2.relnamespace FROM pg_class c2 WHERE c2.oid = rel) AND c.relname = index_name;
    SELECT i.indrelid INTO on_rel FROM pg_index i WHERE i.indexrelid = found.oid;
    IF found.oid IS NULL OR on_rel IS DISTINCT FROM rel::oid THEN
        RAISE EXCEPTION 'the deferred index of target % was not built on %: %', target_id, rel,
                CASE WHEN found.oid IS NULL THEN 'no index ' || format('%I.%I', index_schema, index_name) || ' was made'
                     WHEN on_rel IS NULL THEN format('the name %I.%I is taken by a %s', index_schema, index_name,
                                                     CASE found.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view'
                                                          WHEN 'S' THEN 'sequence' ELSE 'relation' END)
                     ELSE format('the name %I.%I is taken by an index of %s', index_schema, index_name, on_rel::regclass) END
            USING ERRCODE = 'duplicate_table',
                  HINT = format('Rename or drop %I.%I; the worker builds the index once the name is free.', index_schema, index_name);
    END IF;
    IF NOT (SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = found.oid) THEN
        RAISE EXCEPTION 'the deferred index %.% of target % is not valid', quote_ident(index_schema), quote_ident(index_name), target_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF parent_index IS NOT NULL
       AND NOT EXISTS (SELECT FROM pg_inherits h WHERE h.inhrelid = found.oid AND h.inhparent = parent_index) THEN
        RAISE EXCEPTION 'the deferred index %.% of target % is not attached to %', quote_ident(index_schema),
                quote_ident(index_name), target_id, parent_index
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN true;
END
$$;

-- Keys of target t waiting in either lane of its queue (in flight included):
-- embeddings_internal.queue_pending()'s groups of t (50_status.sql).
CREATE FUNCTION embeddings_internal.pending_count(t embeddings.targets, OUT pending_jobs bigint, OUT oldest_pending_seconds double precision)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(sum(g.keys), 0)::bigint, extract(epoch FROM clock_timestamp() - min(g.oldest))::double precision
    FROM (SELECT * FROM embeddings_internal.queue_pending(t.queue)
          UNION ALL
          SELECT * FROM embeddings_internal.queue_pending(embeddings_internal.backfill_queue(t.queue))) g
    JOIN pg_class c ON c.oid = t.source JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE g.target_id = to_jsonb(t.id)
       OR (g.schema_name = n.nspname AND g.table_name = c.relname AND g.embedding_column = t.embedding_column)
$$;
-- Deferred indexes a worker of `queue` may build now: their backfill ended, its jobs are nearly
-- done (fewer than one step's keys wait: live writes never stop it), the current role owns
-- the table, and no index of it is being built. `cleanup` drops what an interrupted build left
-- (an invalid index); `statements` build the index CONCURRENTLY (each at top level, in order).
-- For a partitioned table, one partition at a time: its index, then its attachment to the
-- parent's (invalid) index, which becomes valid with the last one.
CREATE FUNCTION embeddings.deferred_index_ready(queue text)
RETURNS TABLE (target_id integer, cleanup text, statements text[])
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.id,
           (SELECT format('DROP INDEX CONCURRENTLY %I.%I', ns.nspname, ic.relname)
            FROM pg_class ic JOIN pg_index i ON i.indexrelid = ic.oid
            JOIN pg_namespace ns ON ns.oid = ic.relnamespace
            WHERE ic.relnamespace = coalesce(leaf.relnamespace, c.relnamespace)
              AND ic.relname = coalesce(leaf.index_name, embeddings_internal.deferred_index_name(t))
              AND i.indrelid = coalesce(leaf.oid, c.oid)
              AND NOT i.indisvalid),
           CASE WHEN c.relkind = 'r' THEN
               ARRAY[format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %s USING hnsw (%I %I.%I)',
                            embeddings_internal.deferred_index_name(t), c.oid::regclass, t.embedding_column, tn.nspname,
                            ty.typname || '_cosine_ops'),
                     format('SELECT embeddings_internal.deferred_index_check(%s, %L, %L)',
                            t.id, c.oid::regclass, embeddings_internal.deferred_index_name(t))]
           ELSE
               ARRAY[format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %s USING hnsw (%I %I.%I)',
                            leaf.index_name, leaf.oid::regclass, t.embedding_column, tn.nspname,
                            ty.typname || '_cosine_ops'),
                     format('ALTER INDEX %I.%I ATTACH PARTITION %I.%I', n.nspname,
                            embeddings_internal.deferred_index_name(t), leaf.nspname, leaf.index_name),
                     format('SELECT embeddings_internal.deferred_index_check(%s, %L, %L, %L)',
                            t.id, leaf.oid::regclass, leaf.index_name,
                            format('%I.%I', n.nspname, embeddings_internal.deferred_index_name(t)))]
           END
    FROM embeddings.deferred_indexes d
    JOIN embeddings.targets t ON t.id = d.target_id
    JOIN pg_class c ON c.oid = t.store_table  -- where the embedding column is
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = t.embedding_column AND NOT a.attisdropped
    JOIN pg_type ty ON ty.oid = a.atttypid
    JOIN pg_namespace tn ON tn.oid = ty.typnamespace
    -- A partitioned table: its first partition whose index is not yet attached to the parent's.
    LEFT JOIN LATERAL (
        SELECT pc.oid, pc.relnamespace, pn.nspname,
               embeddings_internal.deferred_index_on(t, pc.oid) AS index_name
        FROM pg_inherits pi JOIN pg_class pc ON pc.oid = pi.inhrelid
        JOIN pg_namespace pn ON pn.oid = pc.relnamespace
        WHERE pi.inhparent = t.source
          AND NOT EXISTS (
              SELECT FROM pg_inherits ii
              JOIN pg_class parent_index ON parent_index.oid = ii.inhparent
              JOIN pg_index ci ON ci.indexrelid = ii.inhrelid
              WHERE ci.indrelid = pc.oid AND parent_index.relname = embeddings_internal.deferred_index_name(t)
                AND parent_index.relnamespace = c.relnamespace)
        ORDER BY pc.oid
        LIMIT 1
    ) leaf ON c.relkind = 'p'
    WHERE t.queue = deferred_index_ready.queue AND t.problem IS NULL
      AND (c.relkind = 'r' OR leaf.oid IS NOT NULL)
      AND NOT EXISTS (SELECT FROM embeddings.backfills b WHERE b.target_id = t.id)
      -- Counted for the targets with a deferred index alone: naming `d` keeps the count above
      -- the join (on `t` alone, the planner counted every target of the queue, 0.8 ms each,
      -- at every backfill read: 0.8 s a batch beside 1,000 watched tables).
      AND (SELECT p.pending_jobs FROM embeddings_internal.pending_count(t) p
           WHERE d.target_id IS NOT NULL) < embeddings.backfill_step_keys()
      AND pg_has_role(c.relowner, 'USAGE')
      -- Not while an index of the table is being built (another worker's build of this one:
      -- its cleanup would wait for that build, then drop the index it made). Another role's
      -- builds show without their table (pg_stat_progress_*): the build waits for them. (An
      -- array, read once: as a join, it made the planner's search cost 7 ms a call.)
      AND coalesce(leaf.oid, c.oid) <> ALL (ARRAY(SELECT p.relid FROM pg_stat_progress_create_index p WHERE p.relid IS NOT NULL))
    ORDER BY t.id
$$;
COMMENT ON FUNCTION embeddings.deferred_index_ready IS
    'The deferred HNSW indexes of a queue''s tables that may be built now, with the statements that build them.';

-- Forgets target `target_id`'s deferred index once a valid HNSW index is on its column.
-- SECURITY DEFINER: the worker that built it may not write the registry; it removes nothing
-- that is not done.
CREATE FUNCTION embeddings_internal.deferred_index_built(target_id integer) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM embeddings.deferred_indexes d
    USING embeddings.targets t
    WHERE d.target_id = deferred_index_built.target_id AND t.id = d.target_id
      AND EXISTS (
          SELECT FROM pg_index i
          JOIN pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_am am ON am.oid = ic.relam
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
          WHERE i.indrelid = t.store_table AND am.amname = 'hnsw' AND a.attname = t.embedding_column
            AND i.indisvalid)
    RETURNING true
$$;

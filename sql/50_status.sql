-- What is going on: per-target progress, and the dead letters.

-- A target's display name: schema.table.column, quoted where needed.
CREATE FUNCTION embeddings_internal.target_name(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('%I.%I.%I', n.nspname, c.relname, t.embedding_column)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = t.source
$$;

-- Row keys waiting in `queue` (in flight included; the inbox's keys that a move sends to it too), in one
-- pass over it for all its targets: grouped by the message's target id, or for messages in the
-- Supabase guide's shape (one row each) by schema, table and embedding column; with the
-- oldest job of each group. Each message is decompressed twice (target and keys), whatever the
-- number of targets: the cost follows the backlog, never the watched tables. With
-- `sample_percent`, an estimate from that share of the queue's pages (TABLESAMPLE SYSTEM),
-- each group's keys scaled up by it; the inbox part stays exact (it is short). A caller sums a
-- group's rows (the queue's and the inbox's come apart).
CREATE FUNCTION embeddings_internal.queue_pending(queue text, sample_percent double precision DEFAULT NULL)
RETURNS TABLE (
    target_id        jsonb,
    schema_name      text,
    table_name       text,
    embedding_column text,
    keys             bigint,
    oldest           timestamptz
)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
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
        '      FROM embeddings_internal.inbox_pending($1) i WHERE i.lane = $1) g '
        'GROUP BY 1, 2, 3, 4, g.scale',
        pgmq.format_table_name(queue, 'q'),
        CASE WHEN sample_percent IS NOT NULL THEN 'TABLESAMPLE SYSTEM ($2)' ELSE '' END)
    USING queue, sample_percent;
END
$$;

-- Messages in `queue` as the statistics system counts them (inserts and deletes, reported at
-- each transaction's end): no scan.
CREATE FUNCTION embeddings_internal.queue_messages(queue text) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
    SELECT coalesce(pg_stat_get_live_tuples(to_regclass(format('pgmq.%I', pgmq.format_table_name(queue, 'q')))), 0)
$$;

-- Exact counts of target t: scans its table (and chunk table), with the caller's rights. Rows
-- whose content is NULL or blank (whitespace only) are `cleared_rows`: the worker keeps them
-- without an embedding on purpose; NULL for a content function, which status never evaluates
-- (it is the table owner's code: sql/32_access.sql). Each store kind counts (its exact_counts:
-- embeddings_internal.exact_counts() dispatches, sql/54_stores.sql): a chunked target's embedded rows are
-- its documents with chunks; a side-table target's, its rows with a side row that holds a
-- vector. A store that is gone (dropped under us) counts NULL: the other targets still show.

-- The count of target t's cleared rows over its table `s`, as a SELECT list item.
CREATE FUNCTION embeddings_internal.cleared_count_sql(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN t.content_column IS NOT NULL
                THEN format('count(*) FILTER (WHERE (%1$s) IS NULL OR (%1$s) !~ %2$L)',
                            embeddings_internal.content_sql(t, 's'), embeddings_internal.nonblank_pattern())
                ELSE 'NULL::bigint' END
$$;

-- The relations holding rel's rows, as count(*) on rel reads them: rel, or its partitions and
-- inheritance children, partitioned tables left out (they hold no rows). Walked through
-- pg_inherits, taking no lock: pg_partition_tree() would lock every partition, and status must
-- not wait behind a long ALTER TABLE on a watched table.
CREATE FUNCTION embeddings_internal.leaf_relations(rel regclass) RETURNS SETOF regclass
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
        WITH RECURSIVE tree (relid) AS (
            SELECT rel::oid
            UNION ALL
            SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid
        )
        SELECT tree.relid::regclass FROM tree JOIN pg_class c ON c.oid = tree.relid WHERE c.relkind <> 'p';
END
$$;

-- Estimated live rows of one table or partition, without reading or locking it: the statistics
-- system's live-row count (pg_stat_user_tables.n_live_tup: inserts and deletes as they commit,
-- flushed within about a second; set to what each VACUUM and ANALYZE counts). Where the
-- statistics system knows nothing of the relation (after a crash or pg_stat_reset(), on a
-- standby), what the last VACUUM or ANALYZE counted (pg_class.reltuples); 0 when neither ran.
CREATE FUNCTION embeddings_internal.estimated_rows(rel regclass) RETURNS double precision
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_deleted(c.oid)
                     + pg_stat_get_vacuum_count(c.oid) + pg_stat_get_autovacuum_count(c.oid)
                     + pg_stat_get_analyze_count(c.oid) + pg_stat_get_autoanalyze_count(c.oid) > 0
                THEN pg_stat_get_live_tuples(c.oid)::double precision
                ELSE greatest(c.reltuples, 0)::double precision END
    FROM pg_class c WHERE c.oid = rel
$$;

-- Estimated rows of target t's table (all partitions) and of its store apart from it.
CREATE FUNCTION embeddings_internal.target_rows(t embeddings.targets) RETURNS double precision
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(sum(embeddings_internal.estimated_rows(r)), 0)
    FROM (SELECT embeddings_internal.leaf_relations(t.source) AS r
          UNION ALL
          SELECT embeddings_internal.leaf_relations(t.store_table) WHERE t.store_table <> t.source) rels
$$;

-- Up to how many rows (estimated, table and chunk table together) embeddings.status counts a
-- target exactly: 5000 unless the setting embeddings.status_exact_rows says otherwise (per
-- database, role or session); 0 always estimates.
CREATE FUNCTION embeddings_internal.status_exact_rows() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(nullif(current_setting('embeddings.status_exact_rows', true), '')::bigint, 5000)
$$;

-- Estimated counts of target t in time that does not grow with its table: rows from
-- embeddings_internal.estimated_rows() over its leaf relations; embedded rows and cleared rows scale
-- those by the shares ANALYZE sampled (pg_stats): embeddings not NULL, content NULL or blank
-- (blank among the most common values only). A count is NULL where a leaf with rows has no
-- statistics of that column yet (never analyzed since watch()), and cleared rows are NULL for a
-- content function. Chunked targets: chunks estimated likewise, embedded documents NULL.
-- Side-table targets (sql/56_side.sql): embedded rows from the side table's rows and the share of
-- them with a vector (side rows of deleted rows not yet followed up counted too).
CREATE FUNCTION embeddings_internal.estimated_counts(t embeddings.targets,
    OUT total_rows bigint, OUT embedded_rows bigint, OUT cleared_rows bigint, OUT chunks bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    leaf regclass;
    n double precision;
    cleared_share double precision;
    total double precision := 0;
    cleared double precision := CASE WHEN t.content_column IS NOT NULL THEN 0 END;
    vectors record := embeddings_internal.store_estimated_vectors(t);  -- the store kind's (sql/54_stores.sql)
BEGIN
    -- One short statement per leaf (plans cached by the session), not one query over the
    -- pg_stats view, which costs milliseconds to plan on every call; pg_stats found by the
    -- leaf's schema and name (not_null_share(), sql/54_stores.sql, says why).
    FOR leaf IN SELECT embeddings_internal.leaf_relations(t.source) LOOP
        n := embeddings_internal.estimated_rows(leaf);
        total := total + n;
        CONTINUE WHEN n < 1;
        SELECT s.null_frac + coalesce((SELECT sum(m.f) FROM unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS m(v, f)
                                       WHERE m.v !~ embeddings_internal.nonblank_pattern()), 0)
        INTO cleared_share
        FROM pg_stats s
        WHERE (s.schemaname, s.tablename) = (SELECT ns.nspname, c.relname FROM pg_class c
                                             JOIN pg_namespace ns ON ns.oid = c.relnamespace WHERE c.oid = leaf)
          AND s.attname = t.content_column AND NOT s.inherited;
        cleared := cleared + n * cleared_share;
    END LOOP;
    total_rows := round(total);
    -- (a store apart may hold rows of deleted rows not yet followed up: never more than the
    -- table's; NULL, no statistics yet, stays NULL)
    embedded_rows := round(CASE WHEN vectors.embedded IS NOT NULL THEN least(vectors.embedded, total) END);
    cleared_rows := round(cleared);
    chunks := round(vectors.chunks);
END
$$;

-- The key of a group of queue_pending() (status_read_lanes() files each lane's groups by it):
-- its messages' target id, or for messages in the Supabase guide's shape their schema, table
-- and embedding column (pending_count(), sql/62_backfill.sql, matches a target's groups by the
-- same rule, field by field); status_pending() makes a target's two. A SQL-standard body,
-- its names bound as it is made (under pg_catalog only), and no SET search_path, so that the
-- planner inlines it into the statement that files every group.
CREATE FUNCTION embeddings_internal.pending_group_key(target_id jsonb, schema_name text, table_name text,
                                                      embedding_column text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN target_id IS NOT NULL THEN 'target ' || target_id::text
            ELSE 'name ' || jsonb_build_array(schema_name, table_name, embedding_column)::text END;

-- The pending keys of each lane of `lanes` that `pending` (by lane) lacks, read once per status
-- call with embeddings_internal.queue_pending(): per lane, an object of [keys, oldest] by
-- pending_group_key(), so that each target finds its own in constant time (a list of every
-- target's groups searched by each target cost status 1.4 s beside 1,000 tables). A lane of
-- many messages (more than status_exact_rows(), `exact` not true) is sampled, about 2,000 of
-- its messages, and named in `sampled` (an exact count reads every message:
-- docs/performance.md, "Figures behind the code's choices"). A target with few messages among
-- very many may be missed: `status --exact`.
CREATE FUNCTION embeddings_internal.status_read_lanes(INOUT pending jsonb, INOUT sampled text[], lanes text[], exact boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lane text;
    messages bigint;
BEGIN
    FOREACH lane IN ARRAY lanes LOOP
        CONTINUE WHEN pending ? lane;
        messages := embeddings_internal.queue_messages(lane);
        IF NOT coalesce(exact, false) AND messages > embeddings_internal.status_exact_rows() THEN
            sampled := sampled || lane;
        END IF;
        pending := pending || jsonb_build_object(lane, (
            SELECT coalesce(jsonb_object_agg(g.key, jsonb_build_array(g.keys, g.oldest)), '{}')
            FROM (SELECT embeddings_internal.pending_group_key(qp.target_id, qp.schema_name, qp.table_name,
                                                              qp.embedding_column) AS key,
                         sum(qp.keys) AS keys, min(qp.oldest) AS oldest
                  FROM embeddings_internal.queue_pending(lane,
                           CASE WHEN lane = ANY (sampled) THEN least(100, 100.0 * 2000 / messages) END) qp
                  GROUP BY 1) g));
    END LOOP;
END
$$;

-- Target t's pending keys in its lanes `lanes` (live, backfill), from `pending` (read by
-- status_read_lanes()): its messages, and those of the Supabase guide's shape naming its table
-- and column; and the age of the oldest.
CREATE FUNCTION embeddings_internal.status_pending(t embeddings.targets, lanes text[], pending jsonb,
                                          OUT pending_live bigint, OUT pending_backfill bigint,
                                          OUT oldest_pending_seconds double precision)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    SELECT coalesce(sum((g.hit ->> 0)::bigint) FILTER (WHERE g.lane = lanes[1]), 0)::bigint,
           coalesce(sum((g.hit ->> 0)::bigint) FILTER (WHERE g.lane = lanes[2]), 0)::bigint,
           extract(epoch FROM clock_timestamp() - min((g.hit ->> 1)::timestamptz))::double precision
    INTO pending_live, pending_backfill, oldest_pending_seconds
    FROM unnest(lanes) AS l(lane)
    CROSS JOIN unnest(ARRAY[  -- its own messages', and those of the guide's shape naming its table
        embeddings_internal.pending_group_key(to_jsonb(t.id), NULL, NULL, NULL),
        (SELECT embeddings_internal.pending_group_key(NULL, n.nspname, c.relname, t.embedding_column)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t.source)]) AS k(key)
    CROSS JOIN LATERAL (SELECT l.lane, pending -> l.lane -> k.key AS hit) g;
END
$$;

-- The rows target t's running backfill (62_backfill.sql) has still to queue; NULL when none
-- runs. Estimated targets (`estimated`, of `total_rows` rows, `embedded_rows` with a vector):
-- the rows it has not yet passed, times the share of the table that needs a job. Others:
-- counted as the table's owner, for the roles granted that (grant_worker()); NULL for the rest.
CREATE FUNCTION embeddings_internal.status_backfill_rows(t embeddings.targets, estimated boolean,
                                                total_rows bigint, embedded_rows bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    backfill_rows bigint;
BEGIN
    IF estimated THEN
        SELECT round(greatest(total_rows - b.scanned_rows, 0)
                     * CASE WHEN b.every_row OR total_rows = 0 THEN 1
                            ELSE greatest(1 - coalesce(embedded_rows, 0)::float8 / total_rows, 0) END)
        INTO backfill_rows
        FROM embeddings.backfills b WHERE b.target_id = t.id;
    ELSIF EXISTS (SELECT FROM embeddings.backfills b WHERE b.target_id = t.id) THEN
        BEGIN
            backfill_rows := embeddings_internal.backfill_rows_left(t);
        EXCEPTION WHEN insufficient_privilege OR SQLSTATE 'EW001' THEN
            backfill_rows := NULL;
        END;
    END IF;
    RETURN backfill_rows;
END
$$;

-- Target t's rows embedded per second: those of the last five whole minutes and the current
-- one, over the time since the first batch among them began (the minute's start where that is
-- not recorded), so that a drain 10 s old is counted over 10 s, not over a minute.
CREATE FUNCTION embeddings_internal.status_rate(t embeddings.targets) RETURNS double precision
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(sum(tp.rows), 0)
           / greatest(extract(epoch FROM clock_timestamp() - min(coalesce(tp.since, tp.minute))), 1)
    FROM embeddings.throughput tp
    WHERE tp.target_id = t.id AND tp.minute >= date_trunc('minute', clock_timestamp()) - interval '5 minutes'
$$;

-- One row per target. Row counts are exact for targets up to embeddings_internal.status_exact_rows()
-- rows and estimated above (`estimated`: see embeddings_internal.estimated_counts()), so that reading
-- the status costs the same for ten rows or ten million and never waits on a watched table's
-- lock. `exact => true` counts every target exactly (scans each table: embeddings.status_exact),
-- `exact => false` estimates every one. The setting embeddings.counted_targets (target ids, as an
-- array: `embed-worker status TABLE` sets it for its transaction) narrows it to those targets:
-- one table's status beside a thousand, exact or not, counts that table alone.
-- Pending jobs are exact unless a lane holds more than embeddings_internal.status_exact_rows() messages
-- and `exact` is not true: then sampled (embeddings_internal.queue_pending(), `estimated` true). Dead letters and the rate are exact either way: they come from our own tables. `deferred_reason` says why the pending jobs
-- wait, when the worker defers them; `held_jobs` how many wait so (held: put back without an
-- attempt, not failed), as opposed to rows that failed and wait for their retry. `swap_*`: a
-- model change's swap waiting for its table lock (since when, attempts, who holds the table),
-- from the first attempt; the stopped state swap_waiting (52_stopped.sql) after swap_wait_alarm(). `backfill_rows`: rows a running backfill (62_backfill.sql)
-- has still to queue, counted in pending_jobs too (estimated targets: the rows it has not yet
-- passed, scaled by the share without a vector, so pending_jobs is an estimate too while a
-- backfill runs); NULL when no backfill runs. `index_deferred`: the HNSW index waits for the
-- backfill's end (62_backfill.sql); search scans exactly meanwhile.
-- SECURITY DEFINER, for this schema's owner and the worker roles (grant_worker(); grant it and
-- SELECT on the views to a monitoring role likewise): it counts every watched table whoever
-- reads the status, and evaluates nothing of the tables' owners (docs/security.md), so what
-- it reads with its owner's rights is rows counted, never run.
CREATE FUNCTION embeddings_internal.target_status(exact boolean DEFAULT NULL) RETURNS TABLE (
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
    change_eta_seconds     double precision,
    stopped                jsonb,
    held_jobs              bigint,
    swap_waiting_since     timestamptz,
    swap_attempts          integer,
    swap_holders           text
)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
    stops jsonb := embeddings_internal.status_stops();  -- read once
    pending jsonb := '{}';  -- per lane: embeddings_internal.queue_pending(), read once per call
    sampled text[] := '{}';  -- the lanes whose pending keys were estimated
    lanes text[];
    only_ids integer[] := nullif(current_setting('embeddings.counted_targets', true), '')::integer[];
BEGIN
    FOR t IN SELECT * FROM embeddings.targets tg WHERE only_ids IS NULL OR tg.id = ANY (only_ids) ORDER BY tg.id LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_class WHERE oid = t.source);  -- table dropped
        target := embeddings_internal.target_name(t);
        target_id := t.id;
        model := t.model;
        -- What stops its progress, if anything (52_stopped.sql): `problem` says why in words
        -- (every state's reason), `stopped` lists each state with its reason, fix and since.
        stopped := stops -> t.id::text;
        problem := (SELECT string_agg(e ->> 'reason', '; ') FROM jsonb_array_elements(stopped) e);
        estimated := NOT coalesce(exact, embeddings_internal.target_rows(t) <= embeddings_internal.status_exact_rows());
        IF estimated THEN
            SELECT * INTO total_rows, embedded_rows, cleared_rows, chunks FROM embeddings_internal.estimated_counts(t);
        ELSE
            SELECT * INTO total_rows, embedded_rows, cleared_rows, chunks FROM embeddings_internal.exact_counts(t);
        END IF;
        -- Both lanes (20_queue.sql): the application's writes, and backfill work behind them;
        -- the rows a running backfill has still to queue are pending in the second.
        lanes := ARRAY[t.queue, embeddings_internal.backfill_queue(t.queue)];
        SELECT * INTO pending, sampled FROM embeddings_internal.status_read_lanes(pending, sampled, lanes, exact);
        SELECT * INTO pending_live, pending_backfill, oldest_pending_seconds
        FROM embeddings_internal.status_pending(t, lanes, pending);
        backfill_rows := embeddings_internal.status_backfill_rows(t, estimated, total_rows, embedded_rows);
        pending_backfill := pending_backfill + coalesce(backfill_rows, 0);
        pending_jobs := pending_live + pending_backfill;
        index_deferred := EXISTS (SELECT FROM embeddings.deferred_indexes d WHERE d.target_id = t.id);
        -- model change: provenance, and the progress of a change in progress
        SELECT * INTO vectors_from, change_model, change_done_rows, change_total_rows,
                      change_rows_per_second, change_eta_seconds
        FROM embeddings_internal.change_status(t, NOT estimated);
        SELECT count(*) INTO failed_jobs FROM embeddings.failures f WHERE f.target_id = t.id;
        rows_per_second := embeddings_internal.status_rate(t);
        -- NULL when none, or when it was the definition's before watch() changed it (not seen since).
        SELECT d.reason, d.since INTO deferred_reason, deferred_since
        FROM embeddings.deferrals d
        WHERE d.target_id = t.id AND pending_jobs > 0 AND d.last_seen >= t.updated_at;
        -- Held: the jobs the worker puts back without an attempt (deferred_reason says why),
        -- unlike those of rows that failed and wait for their retry (not counted here).
        held_jobs := CASE WHEN deferred_reason IS NOT NULL THEN pending_jobs ELSE 0 END;
        -- A model change's swap waiting for its table lock, from its first attempt that found
        -- the table held (the stopped state swap_waiting comes after swap_wait_alarm()).
        SELECT mc.swap_waiting_since, mc.swap_attempts, mc.swap_holders  -- NULL when none
        INTO swap_waiting_since, swap_attempts, swap_holders
        FROM embeddings.model_changes mc WHERE mc.target_id = t.id AND mc.swap_waiting_since IS NOT NULL;
        estimated := estimated OR lanes && sampled;  -- its pending counts, sampled
        RETURN NEXT;
    END LOOP;
END
$$;

-- What `embed-worker status` shows. total_rows, embedded_rows, cleared_rows and chunks are
-- estimates where `estimated` is true (large tables), and so are the pending counts when a lane
-- holds more than embeddings_internal.status_exact_rows() messages; every other column is exact.
CREATE VIEW embeddings.status AS
    SELECT target, total_rows, embedded_rows, pending_jobs, failed_jobs, oldest_pending_seconds,
           target_id, model, rows_per_second, cleared_rows, deferred_reason, deferred_since, problem,
           chunks, estimated, backfill_rows, index_deferred, pending_live, pending_backfill,
           vectors_from, change_model, change_done_rows, change_total_rows, change_rows_per_second,
           change_eta_seconds, stopped, held_jobs, swap_waiting_since, swap_attempts, swap_holders
    FROM embeddings_internal.target_status();
COMMENT ON VIEW embeddings.status IS 'Per watched table: rows, embedded, pending jobs, dead letters, age of the oldest job, blank rows, why jobs wait; chunks of chunked targets; rows a running backfill has still to queue; whether the HNSW index waits for the backfill. Row counts of large tables are estimates (estimated = true); embeddings.status_exact counts them';

-- The same, every count exact: scans every watched table (`embed-worker status --exact`). Its
-- columns are status's, target_status()'s all, in their order.
CREATE VIEW embeddings.status_exact AS
    SELECT * FROM embeddings_internal.target_status(exact => true);
COMMENT ON VIEW embeddings.status_exact IS 'embeddings.status with exact counts: scans every watched table';

-- Re-queues dead letters (all, or those with the given ids) and removes them from
-- embeddings.failures, oldest first, one queue's in one send; returns how many were re-queued.
-- SECURITY DEFINER, for this schema's owner and the worker roles (`embed-worker failures
-- --retry` under the worker's role). A queue is made sure of once, not once a dead letter: that
-- revokes pgmq's grants on its tables, which cost 1.9 ms a dead letter (100,000 took 188 s). The
-- statement is planned for the ids given at each call (EXECUTE): one id or a few found by the
-- primary key, many matched through a hashed list, all without a list (a statement kept for
-- any ids could do neither: `ids IS NULL OR ...` read every dead letter for one id, 36 ms
-- among 200,000; `= ANY (ids)` compared each with every id given).
CREATE FUNCTION embeddings.retry_failures(ids bigint[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    lane record;
    retried integer := 0;
BEGIN
    FOR lane IN EXECUTE
        'WITH gone AS ( '
        '    DELETE FROM embeddings.failures f '
        '    WHERE $1 IS NULL OR f.id OPERATOR(pg_catalog.=) ANY ($1) '
        '    RETURNING f.id, f.queue, f.message '
        ') '
        'SELECT g.queue, pg_catalog.array_agg(g.message ORDER BY g.id) AS messages '
        'FROM gone g GROUP BY g.queue ORDER BY g.queue'
        USING ids
    LOOP
        PERFORM embeddings_internal.ensure_queue(lane.queue);
        -- lanes: a retry is backfill work (the live lane stays the application's writes')
        PERFORM pgmq.send_batch(embeddings_internal.backfill_queue(lane.queue), lane.messages);
        retried := retried + pg_catalog.cardinality(lane.messages);
    END LOOP;
    RETURN retried;
END
$$;
COMMENT ON FUNCTION embeddings.retry_failures IS
    'Re-queues dead letters (all, or those with the given ids); returns how many. Schema owner and worker roles.';

-- 0012: a model change queues its rows in key ranges (the backfill of 0008, on the change's
-- lane) instead of all keys in one statement under watch()'s lock; status estimates the
-- progress of a change on a large table without reading it.
--   * embeddings.backfills.lane; start_backfill(t, every_row, lane), send_backfill() (62_backfill.sql)
--   * start_change(), complete_change(), cancel_change(), change_status(t, exact) (44_changes.sql)
--   * target_status() (50_status.sql)

ALTER TABLE embeddings.backfills
    ADD COLUMN lane text NOT NULL DEFAULT 'backfill' CHECK (lane IN ('backfill', 'change'));

DROP FUNCTION embeddings.start_backfill(embeddings.targets, boolean);
CREATE FUNCTION embeddings.start_backfill(t embeddings.targets, every_row boolean, lane text DEFAULT 'backfill')
RETURNS void
LANGUAGE plpgsql AS $$
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
    PERFORM embeddings.backfill_step(t.id, embeddings.backfill_step_keys());
END
$$;

CREATE OR REPLACE FUNCTION embeddings.send_backfill(target_id integer, keys jsonb[]) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings.enqueue_keys(target_id, keys, 0, coalesce(  -- behind the live writes
        (SELECT b.lane FROM embeddings.backfills b WHERE b.target_id = send_backfill.target_id), 'backfill'))
$$;

CREATE OR REPLACE FUNCTION embeddings.start_change(
    t embeddings.targets, new_model text, keep_old boolean DEFAULT false, reembed boolean DEFAULT false
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    c embeddings.model_changes;
    dims integer;
    vschema name := embeddings.vector_schema();
    shadow name := embeddings.shadow_column(t.embedding_column);
    total bigint;
    following text := coalesce(current_setting('embeddings.following', true), 'off');
BEGIN
    -- The registration first, the table after (as complete_change() and worker writes do).
    SELECT * INTO t FROM embeddings.targets tg WHERE tg.id = t.id FOR UPDATE;
    IF t.chunk_table IS NOT NULL THEN
        RAISE EXCEPTION '%.% is a chunked target: a blue/green model change is for plain targets', t.source, t.embedding_column
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'watch() a chunked target with the new model to re-embed its chunks in place.';
    END IF;
    SELECT * INTO c FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
    IF FOUND AND c.model = new_model AND NOT reembed THEN
        UPDATE embeddings.model_changes mc SET keep_old = start_change.keep_old WHERE mc.target_id = t.id;
        RETURN t.id;
    END IF;
    IF FOUND THEN
        PERFORM embeddings.cancel_change(t.source, t.embedding_column);
        SELECT * INTO t FROM embeddings.targets tg WHERE tg.id = t.id;
    END IF;
    IF new_model = t.model AND NOT reembed THEN
        RETURN t.id;
    END IF;
    SELECT m.dimensions INTO dims FROM embeddings.models m WHERE m.name = new_model;
    IF dims IS NULL THEN
        RAISE EXCEPTION 'unknown model "%"', new_model USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF embeddings.attnum_of(t.source, shadow) IS NOT NULL THEN
        RAISE EXCEPTION 'column %.% exists: a model change needs that name for its shadow column', t.source, shadow
            USING ERRCODE = 'duplicate_column', HINT = 'Rename or drop that column, then watch() again.';
    END IF;
    IF keep_old AND embeddings.attnum_of(t.source, embeddings.kept_column(t.embedding_column)) IS NOT NULL THEN
        RAISE EXCEPTION 'column %.% exists (kept from an earlier change?)', t.source,
                embeddings.kept_column(t.embedding_column)
            USING ERRCODE = 'duplicate_column', HINT = 'Drop it first, or change with keep_old => false.';
    END IF;
    PERFORM set_config('embeddings.following', 'on', true);  -- our DDL: nothing to follow
    EXECUTE format('ALTER TABLE %s ADD COLUMN %I %I.halfvec(%s)', t.source, shadow, vschema, dims);
    EXECUTE format('CREATE INDEX ON %s USING hnsw (%I %I.halfvec_cosine_ops)', t.source, shadow, vschema);
    EXECUTE format('CREATE INDEX %I ON %s ((true)) WHERE %I IS NULL',
                   embeddings.missing_index_name(t.id), t.source, shadow);
    PERFORM set_config('embeddings.following', following, true);
    PERFORM embeddings.grant_worker_shadow(r.role_name, t.source, shadow) FROM embeddings.worker_roles r;
    -- In-flight batches read under the old definition are handed back and redone with both models.
    UPDATE embeddings.targets tg SET version = tg.version + 1, updated_at = now()
    WHERE tg.id = t.id RETURNING * INTO t;
    DELETE FROM embeddings.provenance p WHERE p.target_id = t.id AND p.shadow;
    -- Every row with content, queued in key ranges on the backfill lane after this transaction
    -- (62_backfill.sql): one bounded step here, not the whole table under the lock.
    PERFORM embeddings.start_backfill(t, true, 'change');
    -- Rows to do, for the progress: counted on small tables, estimated on large ones.
    total := round(embeddings.target_rows(t));
    IF total <= embeddings.status_exact_rows() THEN
        EXECUTE format('SELECT count(*) FROM %s', t.source) INTO total;
    END IF;
    INSERT INTO embeddings.model_changes (target_id, model, shadow_column, keep_old, rows_total)
    VALUES (t.id, new_model, shadow, keep_old, total);
    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN t.id;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.complete_change(target_id integer) RETURNS text
LANGUAGE plpgsql SET lock_timeout = '2s' AS $$
DECLARE
    t embeddings.targets;
    c embeddings.model_changes;
    change_jobs bigint;
    queuing boolean;
    pending jsonb[];
    unqueued text;
    missing bigint;
    lost boolean;
    old_index regclass;
    new_index regclass;
    old_index_name name;
    rel_schema name;
    following text := coalesce(current_setting('embeddings.following', true), 'off');
BEGIN
    SELECT * INTO c FROM embeddings.model_changes mc WHERE mc.target_id = complete_change.target_id;
    IF NOT FOUND THEN
        RETURN 'no change in progress';
    END IF;
    SELECT * INTO t FROM embeddings.targets tg WHERE tg.id = c.target_id;
    EXECUTE format('SELECT count(*) FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1, ''shadow'', true)',
                   pgmq.format_table_name(embeddings.backfill_queue(t.queue), 'q'))
        INTO change_jobs USING t.id;
    IF change_jobs > 0 THEN
        RETURN format('%s jobs of the change are waiting', change_jobs);
    END IF;
    SELECT true INTO queuing FROM embeddings.backfills b WHERE b.target_id = t.id;
    IF queuing THEN
        RETURN 'its rows are still being queued (a backfill in key ranges)';
    END IF;
    -- Rows with content still lacking the new vector, with no job (lost, dead-lettered, or
    -- given a vector of the old model by hand). Real content: whitespace-only content is
    -- cleared by the worker, never embedded.
    pending := ARRAY(SELECT p.k FROM embeddings.pending_keys(t) p);
    unqueued := format('FROM %s n WHERE n.%I IS NULL AND (%s) ~ ''[^[:space:]]'' AND NOT (pg_catalog.to_jsonb(%s) = ANY($2))',
                       t.source, c.shadow_column, embeddings.content_sql(t, 'n'), embeddings.key_sql(t, 'n'));
    EXECUTE 'SELECT count(*) ' || unqueued INTO missing USING t.id, pending;
    IF missing > 0 THEN
        IF EXISTS (SELECT FROM embeddings.failures f WHERE f.target_id = t.id) THEN
            RETURN format('%s rows lack the new vector and the target has dead letters (embed-worker failures)', missing);
        END IF;
        EXECUTE format('SELECT embeddings.enqueue_keys($1, array_agg(%s), 0, ''change'') ', embeddings.key_sql(t, 'n'))
                || unqueued USING t.id, pending;
        RETURN format('%s rows lacked the new vector: queued', missing);
    END IF;

    -- The swap. The table first (waits for application and worker writes in progress), then
    -- the registration, as ALTER TABLE and worker writes take them: writes that start later
    -- wait for us and then see the new version.
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', t.source);
    PERFORM FROM embeddings.targets tg WHERE tg.id = t.id FOR UPDATE;
    -- No row that has a vector may lose it (the partial index holds the rows to look at).
    EXECUTE format('SELECT EXISTS (SELECT FROM %s n WHERE n.%I IS NULL AND n.%I IS NOT NULL)',
                   t.source, c.shadow_column, t.embedding_column) INTO lost;
    IF lost THEN
        RETURN 'rows written meanwhile lack the new vector: not yet';
    END IF;
    -- A row whose content changed has its vector cleared (clear_on_update) and a job queued:
    -- its new vector, of the old content, must not show up either.
    pending := ARRAY(SELECT p.k FROM embeddings.pending_keys(t) p);
    EXECUTE format('UPDATE %1$s n SET %2$I = NULL WHERE n.%3$I IS NULL AND n.%2$I IS NOT NULL '
                   'AND pg_catalog.to_jsonb(%4$s) = ANY($1)',
                   t.source, c.shadow_column, t.embedding_column, embeddings.key_sql(t, 'n')) USING pending;
    SELECT n.nspname INTO rel_schema FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace
    WHERE cl.oid = t.source;
    PERFORM set_config('embeddings.following', 'on', true);  -- our DDL: the registry follows below
    EXECUTE format('DROP INDEX IF EXISTS %I.%I', rel_schema, embeddings.missing_index_name(t.id));
    old_index := embeddings.hnsw_index(t.source, t.embedding_column);
    new_index := embeddings.hnsw_index(t.source, c.shadow_column);
    SELECT relname INTO old_index_name FROM pg_class WHERE oid = old_index;
    -- Renames first, the drop last: a drop of a column named like the target's would make the
    -- event trigger of 45_dropped.sql forget the target.
    EXECUTE format('ALTER TABLE %s RENAME COLUMN %I TO %I', t.source, t.embedding_column,
                   CASE WHEN c.keep_old THEN embeddings.kept_column(t.embedding_column)
                        ELSE 'embeddings_' || t.id || '_replaced' END);
    IF old_index IS NOT NULL THEN
        EXECUTE format('ALTER INDEX %s RENAME TO %I', old_index, left(old_index_name, 54) || '_previous');
    END IF;
    EXECUTE format('ALTER TABLE %s RENAME COLUMN %I TO %I', t.source, c.shadow_column, t.embedding_column);
    IF new_index IS NOT NULL AND old_index_name IS NOT NULL THEN
        EXECUTE format('ALTER INDEX %s RENAME TO %I', new_index, old_index_name);
    END IF;
    IF NOT c.keep_old THEN
        EXECUTE format('ALTER TABLE %s DROP COLUMN %I', t.source, 'embeddings_' || t.id || '_replaced');
    END IF;
    UPDATE embeddings.targets tg
    SET model = c.model, embedding_attnum = embeddings.attnum_of(t.source, t.embedding_column),
        version = tg.version + 1, updated_at = now()
    WHERE tg.id = t.id RETURNING * INTO t;
    PERFORM embeddings.install_triggers(t);  -- the generated functions name the new column
    PERFORM set_config('embeddings.following', following, true);
    DELETE FROM embeddings.provenance p WHERE p.target_id = t.id AND NOT p.shadow;
    UPDATE embeddings.provenance p SET shadow = false WHERE p.target_id = t.id AND p.shadow;
    DELETE FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
    PERFORM embeddings.grant_worker_target(r.role_name, t) FROM embeddings.worker_roles r;
    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN 'done';
END
$$;

CREATE OR REPLACE FUNCTION embeddings.cancel_change(source regclass, embedding_column name DEFAULT 'embedding')
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    t embeddings.targets;
    c embeddings.model_changes;
    following text := coalesce(current_setting('embeddings.following', true), 'off');
BEGIN
    SELECT * INTO t FROM embeddings.targets tg
    WHERE tg.source = cancel_change.source AND tg.embedding_column = cancel_change.embedding_column FOR UPDATE;
    SELECT * INTO c FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
    IF NOT FOUND THEN
        RAISE NOTICE 'no model change in progress for %.%', source, embedding_column;
        RETURN false;
    END IF;
    PERFORM set_config('embeddings.following', 'on', true);
    EXECUTE format('DROP INDEX IF EXISTS %I.%I',
                   (SELECT n.nspname FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE cl.oid = t.source),
                   embeddings.missing_index_name(t.id));
    IF embeddings.attnum_of(t.source, c.shadow_column) IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %s DROP COLUMN %I', t.source, c.shadow_column);
    END IF;
    PERFORM set_config('embeddings.following', following, true);
    EXECUTE format('DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1, ''shadow'', true)',
                   pgmq.format_table_name(embeddings.backfill_queue(t.queue), 'q')) USING t.id;
    -- The change's backfill becomes an ordinary one again, from the first key: rows it would
    -- have reached (a backfill it replaced, say) still get their vector of the current model.
    UPDATE embeddings.backfills b SET lane = 'backfill', every_row = false, after_key = NULL
    WHERE b.target_id = t.id AND b.lane = 'change';
    DELETE FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
    DELETE FROM embeddings.provenance p WHERE p.target_id = t.id AND p.shadow;
    UPDATE embeddings.targets tg SET version = tg.version + 1, updated_at = now() WHERE tg.id = t.id;
    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN true;
END
$$;

DROP FUNCTION embeddings.change_status(embeddings.targets);
CREATE FUNCTION embeddings.change_status(
    t embeddings.targets, exact boolean DEFAULT true,
    OUT vectors_from text, OUT change_model text, OUT change_done_rows bigint,
    OUT change_total_rows bigint, OUT change_rows_per_second double precision,
    OUT change_eta_seconds double precision
)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c embeddings.model_changes;
    queued bigint;
BEGIN
    SELECT concat_ws(' ', p.model, p.revision, p.variant) INTO vectors_from
    FROM embeddings.provenance p WHERE p.target_id = t.id AND NOT p.shadow;
    SELECT * INTO c FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    change_model := c.model;
    IF NOT exact THEN
        -- Without reading the table (status of a large one): the rows its backfill has passed
        -- (all of them once it ended), less the change's jobs still queued.
        EXECUTE format('SELECT coalesce(sum(embeddings.message_key_count(message)), 0) FROM pgmq.%I '
                       'WHERE message @> jsonb_build_object(''target'', $1, ''shadow'', true)',
                       pgmq.format_table_name(embeddings.backfill_queue(t.queue), 'q'))
            INTO queued USING t.id;
        change_total_rows := c.rows_total;
        change_done_rows := greatest(least(coalesce(
            (SELECT b.scanned_rows FROM embeddings.backfills b WHERE b.target_id = t.id AND b.lane = 'change'),
            c.rows_total), c.rows_total) - queued, 0);
    ELSE
        BEGIN
            EXECUTE format('SELECT count(s.%I), count(*) FILTER (WHERE s.%I IS NOT NULL OR (%s) ~ ''[^[:space:]]'') FROM %s s',
                           c.shadow_column, c.shadow_column, embeddings.content_sql(t, 's'), t.source)
                INTO change_done_rows, change_total_rows;
        EXCEPTION WHEN OTHERS THEN  -- a content function that raises: the total as the change began
            change_total_rows := c.rows_total;
        END;
    END IF;
    change_rows_per_second := change_done_rows / greatest(extract(epoch FROM clock_timestamp() - c.started_at), 1);
    change_eta_seconds := CASE WHEN change_rows_per_second > 0
        THEN greatest(change_total_rows - change_done_rows, 0) / change_rows_per_second END;
END
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
                pending := pending || jsonb_build_object(lane,
                    (SELECT coalesce(jsonb_agg(qp), '[]') FROM embeddings.queue_pending(lane) qp));
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
        RETURN NEXT;
    END LOOP;
END
$$;

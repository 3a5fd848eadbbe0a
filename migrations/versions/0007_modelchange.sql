-- Issue 15: priority lanes (a backfill queue beside every live queue), model changes without
-- downtime (blue/green, sql/44_changes.sql), provenance of stored vectors, watch(backfill,
-- keep_old). The same definitions as sql/ (10_schema, 20_queue, 40_watch, 44_changes,
-- 50_status, 60_sweep, 70_dispatch, 80_roles).

ALTER TABLE embeddings.queues ADD COLUMN live_queue text;

CREATE OR REPLACE FUNCTION embeddings.backfill_queue(queue_name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN length(queue_name) <= 38 THEN queue_name || '_backfill'
                ELSE left(queue_name, 28) || '_' || left(md5(queue_name), 8) || '_backfill' END
$$;

CREATE OR REPLACE FUNCTION embeddings.create_queue(queue_name text, live_queue text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    created boolean := false;
BEGIN
    IF EXISTS (SELECT FROM embeddings.queues WHERE name = queue_name) THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT FROM pgmq.meta m WHERE m.queue_name = create_queue.queue_name) THEN
        PERFORM pgmq.create(queue_name);
        created := true;
    END IF;
    EXECUTE format(
        'CREATE TRIGGER embeddings_notify_workers AFTER INSERT ON pgmq.%I '
        'FOR EACH STATEMENT EXECUTE FUNCTION embeddings.notify_workers(%L)',
        pgmq.format_table_name(queue_name, 'q'), coalesce(live_queue, queue_name));
    INSERT INTO embeddings.queues (name, created_here, live_queue) VALUES (queue_name, created, live_queue);
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.ensure_queue(queue_name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lane text;
BEGIN
    PERFORM embeddings.create_queue(queue_name, NULL);
    -- lanes: BEGIN (every live queue has a backfill queue beside it)
    IF (SELECT q.live_queue FROM embeddings.queues q WHERE q.name = queue_name) IS NULL THEN
        lane := embeddings.backfill_queue(queue_name);
        IF embeddings.create_queue(lane, queue_name) AND to_regclass('embeddings.worker_roles') IS NOT NULL THEN
            PERFORM embeddings.grant_worker_queue(r.role_name, lane) FROM embeddings.worker_roles r;
        END IF;
    END IF;
    -- lanes: END
END
$$;

DROP FUNCTION embeddings.enqueue_keys(integer, anyarray, integer);
CREATE OR REPLACE FUNCTION embeddings.enqueue_keys(target_id integer, keys anyarray, delay integer DEFAULT 0,
                                        lane text DEFAULT 'live')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queue_name text;
    total integer := coalesce(cardinality(keys), 0);
    per_message integer := embeddings.keys_per_message();
    extra jsonb := CASE WHEN lane = 'change' THEN '{"shadow": true}'::jsonb ELSE '{}'::jsonb END;
BEGIN
    IF total = 0 THEN
        RETURN 0;
    END IF;
    IF lane IS NULL OR lane NOT IN ('live', 'backfill', 'change') THEN
        RAISE EXCEPTION 'embeddings: unknown lane "%"', lane USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT t.queue INTO queue_name FROM embeddings.targets t WHERE t.id = target_id;
    IF queue_name IS NULL THEN
        RAISE EXCEPTION 'embeddings: no target with id %', target_id;
    END IF;
    IF lane <> 'live' THEN
        queue_name := embeddings.backfill_queue(queue_name);
    END IF;
    -- Slicing an array is several times cheaper than grouping rows into chunks.
    PERFORM pgmq.send_batch(
        queue_name,
        ARRAY(SELECT jsonb_build_object('target', target_id, 'keys', to_jsonb(keys[i : i + per_message - 1])) || extra
              FROM generate_series(1, total, per_message) AS i),
        delay);
    RETURN (total + per_message - 1) / per_message;
END
$$;

REVOKE ALL ON FUNCTION embeddings.enqueue_keys(integer, anyarray, integer, text) FROM PUBLIC;

-- Model changes and provenance: all of sql/44_changes.sql.

-- Model changes without downtime (blue/green), and the provenance of stored vectors.
--
-- Plain targets only (a chunked target's model change is in place; see docs/models.md).
--
-- A change re-embeds every row into a shadow column (the new model's dimension, its own HNSW
-- index) while the target's column keeps serving the old model's vectors for every row. Rows
-- written meanwhile get both vectors (the worker writes both columns in one statement pair
-- under the same stale-write guard). When every row with content has its new vector and no
-- job of the target is queued, embeddings.complete_change() swaps the columns and indexes by
-- renaming them in one short transaction, and sets the target's model. Nothing ever writes one
-- model's vectors into the other model's column.

-- The change in progress of a target (at most one).
CREATE TABLE embeddings.model_changes (
    target_id     integer PRIMARY KEY REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    model         text NOT NULL REFERENCES embeddings.models (name),
    shadow_column name NOT NULL,
    keep_old      boolean NOT NULL DEFAULT false,
    rows_total    bigint,  -- rows with content when the change started (status recounts)
    started_at    timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON embeddings.model_changes TO PUBLIC;
COMMENT ON TABLE embeddings.model_changes IS 'Model changes in progress: the shadow column being filled with the new model''s vectors';

-- Which model produced the vectors of a target's column (shadow false) or of its shadow column
-- during a change (shadow true): registry name, revision (the model file's digest or hub
-- revision) and variant. Written by the first worker write, checked by every later one: a
-- worker running another revision or variant does not write there (it defers the target).
CREATE TABLE embeddings.provenance (
    target_id   integer NOT NULL REFERENCES embeddings.targets (id) ON DELETE CASCADE,
    shadow      boolean NOT NULL,
    model       text NOT NULL,
    revision    text NOT NULL,
    variant     text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_id, shadow)
);
GRANT SELECT ON embeddings.provenance TO PUBLIC;
COMMENT ON TABLE embeddings.provenance IS 'Model, revision and variant that produced each target''s stored vectors';

-- Records (model, revision, variant) as the producer of target_id's column (or shadow column)
-- unless one is recorded already; returns the recorded producer as 'model revision variant'.
-- The worker compares it with its own in its write transaction. SECURITY DEFINER: worker roles
-- have no rights on the table.
CREATE OR REPLACE FUNCTION embeddings.claim_provenance(
    target_id integer, shadow boolean, model text, revision text, variant text
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    recorded text;
BEGIN
    INSERT INTO embeddings.provenance AS p (target_id, shadow, model, revision, variant)
    VALUES (claim_provenance.target_id, claim_provenance.shadow, claim_provenance.model,
            claim_provenance.revision, claim_provenance.variant)
    ON CONFLICT ON CONSTRAINT provenance_pkey DO NOTHING;
    SELECT concat_ws(' ', p.model, p.revision, p.variant) INTO recorded
    FROM embeddings.provenance p
    WHERE p.target_id = claim_provenance.target_id AND p.shadow = claim_provenance.shadow;
    RETURN recorded;
END
$$;
REVOKE ALL ON FUNCTION embeddings.claim_provenance(integer, boolean, text, text, text) FROM PUBLIC;

-- Names of the shadow column and of the old column kept by a change with keep_old.
CREATE OR REPLACE FUNCTION embeddings.shadow_column(embedding_column name) RETURNS name
LANGUAGE sql IMMUTABLE AS $$ SELECT (left(embedding_column, 54) || '_next')::name $$;

CREATE OR REPLACE FUNCTION embeddings.kept_column(embedding_column name) RETURNS name
LANGUAGE sql IMMUTABLE AS $$ SELECT (left(embedding_column, 50) || '_previous')::name $$;

-- The HNSW index on column `col` of `source`, if any.
CREATE OR REPLACE FUNCTION embeddings.hnsw_index(source regclass, col name) RETURNS regclass
LANGUAGE sql STABLE AS $$
    SELECT i.indexrelid::regclass FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_am am ON am.oid = ic.relam
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = source AND am.amname = 'hnsw' AND a.attname = col
    ORDER BY i.indexrelid LIMIT 1
$$;

-- The partial index of rows still lacking their new vector: completion checks it under the
-- table lock without scanning the table.
CREATE OR REPLACE FUNCTION embeddings.missing_index_name(target_id integer) RETURNS name
LANGUAGE sql IMMUTABLE AS $$ SELECT ('embeddings_' || target_id || '_change_missing')::name $$;

-- Starts changing target t's model to `new_model` (see the top of this file). A change to the
-- model already being changed to only updates keep_old; a change to another model replaces it;
-- a change back to the target's own model cancels it. `reembed` starts a change even to the
-- same model (new vectors from another revision or variant). Every row with content gets a
-- shadow-only job on the backfill lane. Returns the target id.
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
    PERFORM embeddings.enqueue_rows(t, t.source, every_row => true, lane => 'change');
    EXECUTE format('SELECT count(*) FROM %s', t.source) INTO total;
    INSERT INTO embeddings.model_changes (target_id, model, shadow_column, keep_old, rows_total)
    VALUES (t.id, new_model, shadow, keep_old, total);
    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN t.id;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.grant_worker_shadow(role_name name, source regclass, shadow name) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT UPDATE (%I) ON %s TO %I', shadow, source, role_name);
END
$$;

-- Changes the model of an existing target (blue/green), or re-embeds it with the same model
-- when `model` is its current one (another revision or variant). Returns the target id.
CREATE OR REPLACE FUNCTION embeddings.rewatch(
    source regclass,
    embedding_column name DEFAULT 'embedding',
    model text DEFAULT NULL,
    keep_old boolean DEFAULT false
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t embeddings.targets;
BEGIN
    SELECT * INTO t FROM embeddings.targets tg
    WHERE tg.source = rewatch.source AND tg.embedding_column = rewatch.embedding_column FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%.% is not watched', source, embedding_column
            USING ERRCODE = 'undefined_object', HINT = 'Register it with embeddings.watch() first.';
    END IF;
    RETURN embeddings.start_change(t, coalesce(model, t.model), keep_old, reembed => coalesce(model, t.model) = t.model);
END
$$;

-- Abandons the change of a target: its shadow column and index are dropped, its shadow-only
-- jobs removed; the target's column and model are as before. Returns false (with a NOTICE)
-- when no change was in progress.
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
    DELETE FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
    DELETE FROM embeddings.provenance p WHERE p.target_id = t.id AND p.shadow;
    UPDATE embeddings.targets tg SET version = tg.version + 1, updated_at = now() WHERE tg.id = t.id;
    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN true;
END
$$;

-- Completes target_id's change when it is complete. It is when no shadow-only job of the change
-- is queued, every row with content has its new vector or a job queued (a job left after the
-- swap is simply served with the new model), and, checked under the table lock, no row that has
-- a vector lacks the new one. Then, in this one transaction: rows whose vector was cleared by a
-- content change (their job is queued) have their stale new vector cleared too; the target's
-- column is dropped (or kept as embeddings.kept_column()); the shadow column and its index take
-- the column's name and the index's name; the registry's attribute number follows (the rename
-- follower is off for our own DDL); the target's model is set and its definition version
-- bumped (batches read before are handed back and redone). Returns 'done', or what it waits
-- for. Locks are taken with a 2 s lock_timeout, so a busy table never queues its readers behind
-- the swap for long (lock_not_available: try later).
CREATE OR REPLACE FUNCTION embeddings.complete_change(target_id integer) RETURNS text
LANGUAGE plpgsql SET lock_timeout = '2s' AS $$
DECLARE
    t embeddings.targets;
    c embeddings.model_changes;
    change_jobs bigint;
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

-- Tries to complete every change in progress (the worker calls it when its queues are idle;
-- anyone may call it). A table busy past the lock timeout is left for the next call. Returns
-- one row per change: target id and complete_change()'s answer.
CREATE OR REPLACE FUNCTION embeddings.complete_changes(OUT target_id integer, OUT result text) RETURNS SETOF record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id integer;
BEGIN
    -- Not while a target cannot be served (its problem: watch() again first).
    FOR id IN SELECT mc.target_id FROM embeddings.model_changes mc
              JOIN embeddings.targets tg ON tg.id = mc.target_id
              WHERE tg.problem IS NULL AND EXISTS (SELECT FROM pg_class WHERE oid = tg.source)
              ORDER BY mc.target_id LOOP
        target_id := id;
        BEGIN
            result := embeddings.complete_change(id);
        EXCEPTION WHEN lock_not_available THEN
            result := 'table busy: retried later';
        WHEN dependent_objects_still_exist THEN
            -- A view or trigger of the user's uses the old column: it cannot be dropped.
            result := format('the old column cannot be dropped (%s): drop what uses it, or cancel '
                             'and change again with keep_old => true', SQLERRM);
        WHEN OTHERS THEN
            result := 'could not complete: ' || SQLERRM;  -- never fails the caller (the worker)
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION embeddings.complete_changes() FROM PUBLIC;

-- For embeddings.status: the producer of target t's vectors ('model revision variant') and the
-- progress of its change in progress, if any (rows with the new vector / rows with content).
CREATE OR REPLACE FUNCTION embeddings.change_status(
    t embeddings.targets,
    OUT vectors_from text, OUT change_model text, OUT change_done_rows bigint,
    OUT change_total_rows bigint, OUT change_rows_per_second double precision,
    OUT change_eta_seconds double precision
)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c embeddings.model_changes;
BEGIN
    SELECT concat_ws(' ', p.model, p.revision, p.variant) INTO vectors_from
    FROM embeddings.provenance p WHERE p.target_id = t.id AND NOT p.shadow;
    SELECT * INTO c FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    change_model := c.model;
    BEGIN
        EXECUTE format('SELECT count(s.%I), count(*) FILTER (WHERE s.%I IS NOT NULL OR (%s) ~ ''[^[:space:]]'') FROM %s s',
                       c.shadow_column, c.shadow_column, embeddings.content_sql(t, 's'), t.source)
            INTO change_done_rows, change_total_rows;
    EXCEPTION WHEN OTHERS THEN  -- a content function that raises: the total as the change began
        change_total_rows := c.rows_total;
    END;
    change_rows_per_second := change_done_rows / greatest(extract(epoch FROM clock_timestamp() - c.started_at), 1);
    change_eta_seconds := CASE WHEN change_rows_per_second > 0
        THEN greatest(change_total_rows - change_done_rows, 0) / change_rows_per_second END;
END
$$;

DROP FUNCTION embeddings.enqueue_rows(embeddings.targets, regclass, boolean);
CREATE OR REPLACE FUNCTION embeddings.enqueue_rows(t embeddings.targets, rel regclass, every_row boolean DEFAULT false,
                                        lane text DEFAULT 'backfill')
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    row_type regclass := CASE WHEN rel <> t.source THEN t.source END;
    from_where text := format('FROM %s n WHERE %s', rel,
        CASE WHEN every_row THEN 'true' ELSE embeddings.embedding_missing_sql(t, 'n') END);  -- 55_chunks.sql
    statement text := 'SELECT embeddings.enqueue_keys($1, array_agg(' || embeddings.key_sql(t, 'n') || '), 0, $2) ';
    sent integer;
BEGIN
    BEGIN
        -- Every row: those holding a vector but no content too (their content column was
        -- dropped and added again), so that the worker clears their vectors. (A chunked target
        -- keeps no vector in the row.)
        EXECUTE statement || from_where || format(' AND (%s <> ''''%s)', embeddings.content_sql(t, 'n', row_type),
                CASE WHEN every_row AND t.chunk_table IS NULL
                     THEN format(' OR n.%I IS NOT NULL', t.embedding_column) ELSE '' END)
            INTO sent USING t.id, lane;
    EXCEPTION WHEN OTHERS THEN
        IF t.content_function IS NULL THEN
            RAISE;
        END IF;
        RAISE WARNING 'embeddings: content function of % failed (%); enqueued the rows unfiltered', rel, SQLERRM;
        EXECUTE statement || from_where INTO sent USING t.id, lane;
    END;
    RETURN sent;
END
$$;

DROP FUNCTION embeddings.watch(regclass, text, name, text, boolean, boolean, text, name[], boolean, integer, integer, text);
CREATE OR REPLACE FUNCTION embeddings.watch(
    source regclass,
    content text,
    embedding_column name DEFAULT 'embedding',
    model text DEFAULT NULL,  -- NULL: embeddings.default_model(), see embeddings.set_default_model()
    triggers boolean DEFAULT true,
    clear_on_update boolean DEFAULT true,
    queue text DEFAULT 'embedding_jobs',
    key name[] DEFAULT NULL,
    replica boolean DEFAULT false,
    chunk_tokens integer DEFAULT NULL,
    chunk_overlap integer DEFAULT NULL,
    chunk_table text DEFAULT NULL,
    backfill boolean DEFAULT true,
    keep_old boolean DEFAULT false
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    dims integer;
    rel_kind "char";
    rel_schema name;
    rel_name name;
    key_names name[];
    key_regtypes regtype[];
    key_nums smallint[];
    content_num smallint;
    content_col name;
    content_fn regprocedure;
    content_type regtype;
    emb_type regtype;
    emb_typmod integer;
    emb_exists boolean;
    vschema name := embeddings.vector_schema();
    previous embeddings.targets;
    t embeddings.targets;
    fresh boolean;
    reembed boolean := false;
    defer_index boolean := false;
BEGIN
    model := coalesce(model, embeddings.default_model());  -- newcomer: the database-level default model
    IF source IS NULL OR content IS NULL OR embedding_column IS NULL OR model IS NULL
       OR triggers IS NULL OR clear_on_update IS NULL OR queue IS NULL OR replica IS NULL
       OR backfill IS NULL OR keep_old IS NULL THEN
        RAISE EXCEPTION 'embeddings.watch(): arguments must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;

    -- The table.
    SELECT c.relkind, n.nspname, c.relname INTO rel_kind, rel_schema, rel_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source;
    IF rel_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', source USING ERRCODE = 'wrong_object_type';
    END IF;

    -- The model.
    SELECT m.dimensions INTO dims FROM embeddings.models m WHERE m.name = model;
    IF dims IS NULL THEN
        RAISE EXCEPTION 'unknown model "%"', model
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Known models: %s. Add one with INSERT INTO embeddings.models.',
                                (SELECT string_agg(m.name, ', ' ORDER BY m.name) FROM embeddings.models m));
    END IF;

    -- The row key: the primary key, or the unique not-null key named by `key`. Any number of
    -- columns, of any types with an equality operator.
    IF key IS NULL THEN
        SELECT array_agg(a.attname ORDER BY k.ord), array_agg(a.atttypid::regtype ORDER BY k.ord),
               array_agg(a.attnum ORDER BY k.ord)
        INTO key_names, key_regtypes, key_nums
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = source AND i.indisprimary;
        IF key_names IS NULL THEN
            RAISE EXCEPTION 'table % has no primary key', source
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'embed-worker finds rows by their key: add a primary key, or name a unique not-null key with key => array[''col'', ...].';
        END IF;
    ELSE
        SELECT array_agg(a.attname ORDER BY k.ord), array_agg(a.atttypid::regtype ORDER BY k.ord),
               array_agg(a.attnum ORDER BY k.ord)
        INTO key_names, key_regtypes, key_nums
        FROM unnest(key) WITH ORDINALITY AS k(name, ord)
        JOIN pg_attribute a ON a.attrelid = source AND a.attname = k.name AND a.attnum > 0 AND NOT a.attisdropped;
        IF cardinality(key) = 0 OR coalesce(cardinality(key_names), 0) <> cardinality(key)
           OR cardinality(key) <> (SELECT count(DISTINCT k) FROM unnest(key) AS k) THEN
            RAISE EXCEPTION 'key % does not name distinct columns of %', key, source
                USING ERRCODE = 'undefined_column';
        END IF;
        IF EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = source AND a.attnum = ANY(key_nums) AND NOT a.attnotnull) THEN
            RAISE EXCEPTION 'key (%) of % has nullable columns', array_to_string(key, ', '), source
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Make the key columns NOT NULL.';
        END IF;
        IF NOT EXISTS (
            SELECT FROM pg_index i
            WHERE i.indrelid = source AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
              AND i.indimmediate AND i.indnkeyatts = cardinality(key_nums)
              AND (SELECT array_agg(x ORDER BY x) FROM unnest(i.indkey[0:i.indnkeyatts - 1]) AS x)
                  = (SELECT array_agg(x ORDER BY x) FROM unnest(key_nums) AS x)
        ) THEN
            RAISE EXCEPTION 'key (%) of % is not unique', array_to_string(key, ', '), source
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = format('Add one: ALTER TABLE %s ADD UNIQUE (%s).', source, array_to_string(key, ', '));
        END IF;
    END IF;
    FOR i IN 1 .. cardinality(key_regtypes) LOOP
        BEGIN
            EXECUTE format('SELECT NULL::%1$s = NULL::%1$s', key_regtypes[i]);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'key column %.% has type %, which has no equality operator', source, key_names[i], key_regtypes[i]
                USING ERRCODE = 'feature_not_supported';
        END;
    END LOOP;

    -- The content: a text column, else a function of the row type returning text.
    SELECT a.attname, a.atttypid::regtype, a.attnum INTO content_col, content_type, content_num
    FROM pg_attribute a
    WHERE a.attrelid = source AND a.attname = content AND a.attnum > 0 AND NOT a.attisdropped;
    IF content_col IS NOT NULL THEN
        IF (SELECT typcategory FROM pg_type WHERE oid = content_type) <> 'S' THEN
            RAISE EXCEPTION 'content column %.% has type %, not text', source, content_col, content_type
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Use a content function that returns text, e.g. one that casts or formats the column.';
        END IF;
    ELSE
        BEGIN
            content_fn := to_regprocedure(format('%s(%I.%I)', content, rel_schema, rel_name));
        EXCEPTION WHEN OTHERS THEN
            content_fn := NULL;  -- not even a valid function name
        END;
        IF content_fn IS NULL THEN
            RAISE EXCEPTION 'content "%" is neither a column of % nor a function %(%)', content, source, content, source
                USING ERRCODE = 'undefined_column',
                      HINT = 'Pass a text column name, or the name of a function that takes the table''s row type and returns text.';
        END IF;
        SELECT p.prorettype::regtype INTO content_type FROM pg_proc p WHERE p.oid = content_fn;
        IF content_type NOT IN ('text'::regtype, 'character varying'::regtype) OR
           (SELECT p.proretset FROM pg_proc p WHERE p.oid = content_fn) THEN
            RAISE EXCEPTION 'content function % returns %, not text', content_fn,
                    CASE WHEN (SELECT p.proretset FROM pg_proc p WHERE p.oid = content_fn)
                         THEN 'a set of ' ELSE '' END || content_type
                USING ERRCODE = 'datatype_mismatch';
        END IF;
        PERFORM embeddings.check_content_function(source, content_fn);  -- trusted, not VOLATILE
    END IF;

    -- model change: BEGIN (another model on a watched plain target is a blue/green change,
    -- sql/44_changes.sql; the column keeps serving the old model until the swap)
    SELECT * INTO previous FROM embeddings.targets tg
    WHERE tg.source = watch.source AND tg.embedding_column = watch.embedding_column;
    IF previous.id IS NOT NULL AND previous.chunk_table IS NULL AND previous.problem IS NULL
       AND chunk_tokens IS NULL AND chunk_overlap IS NULL AND chunk_table IS NULL
       AND embeddings.attnum_of(source, embedding_column) IS NOT NULL
       AND (previous.model <> watch.model
            OR EXISTS (SELECT FROM embeddings.model_changes mc WHERE mc.target_id = previous.id)) THEN
        IF previous.content_column IS DISTINCT FROM content_col
           OR previous.content_function IS DISTINCT FROM content_fn
           OR previous.key_columns <> key_names OR previous.replica <> watch.replica
           OR previous.has_triggers <> triggers OR previous.clear_on_update <> watch.clear_on_update
           OR previous.queue <> watch.queue THEN
            RAISE EXCEPTION 'a model change cannot change other settings of %.% at the same time', source, embedding_column
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'Call watch() with the current model and the new settings first, then with the new model.';
        END IF;
        RETURN embeddings.start_change(previous, watch.model, keep_old);
    END IF;
    -- model change: END

    -- The embedding column: absent (we add it), or vector(dims) / halfvec(dims).
    SELECT a.atttypid::regtype, a.atttypmod INTO emb_type, emb_typmod
    FROM pg_attribute a
    WHERE a.attrelid = source AND a.attname = embedding_column AND a.attnum > 0 AND NOT a.attisdropped;
    emb_exists := emb_type IS NOT NULL;
    IF emb_exists THEN
        IF NOT EXISTS (SELECT FROM pg_type ty JOIN pg_namespace ns ON ns.oid = ty.typnamespace
                       WHERE ty.oid = emb_type AND ty.typname IN ('vector', 'halfvec') AND ns.nspname = vschema) THEN
            RAISE EXCEPTION 'embedding column %.% has type %, expected vector(%) or halfvec(%)',
                    source, embedding_column, format_type(emb_type, emb_typmod), dims, dims
                USING ERRCODE = 'datatype_mismatch';
        ELSIF emb_typmod <> dims THEN
            RAISE EXCEPTION 'embedding column %.% is %, but model "%" produces % dimensions',
                    source, embedding_column, format_type(emb_type, emb_typmod), model, dims
                USING ERRCODE = 'datatype_mismatch',
                      HINT = format('Use a %s-dimensional column, or a model whose dimensions match.', dims);
        END IF;
    END IF;
    IF embedding_column = content_col THEN
        RAISE EXCEPTION 'the embedding column cannot be the content column' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF queue !~ '^[a-z_][a-z0-9_]{0,46}$' THEN
        RAISE EXCEPTION 'invalid queue name "%": lower-case letters, digits and _ only, at most 47', queue
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM embeddings.refuse_guide_triggers(source, triggers);  -- newcomer: never two sets of triggers

    -- >>> chunked targets (sql/55_chunks.sql): vectors in a chunk table, none in the source
    IF chunk_tokens IS NOT NULL OR chunk_overlap IS NOT NULL OR chunk_table IS NOT NULL
       OR EXISTS (SELECT FROM embeddings.targets tg WHERE tg.source = watch.source
                  AND tg.embedding_column = watch.embedding_column AND tg.chunk_table IS NOT NULL) THEN
        IF NOT backfill THEN
            RAISE EXCEPTION 'backfill => false is for plain targets; a chunked target embeds its existing rows'
                USING ERRCODE = 'feature_not_supported';
        END IF;
        RETURN embeddings.watch_chunked(source, content_col, content_fn, embedding_column, model, triggers,
                                        queue, key_names, key_regtypes, key_nums, content_num, replica,
                                        chunk_tokens, chunk_overlap, chunk_table);
    END IF;
    -- <<< chunked targets

    -- Everything is valid: act.
    SELECT * INTO previous FROM embeddings.targets tg
    WHERE tg.source = watch.source AND tg.embedding_column = watch.embedding_column;
    fresh := previous.id IS NULL;
    IF NOT fresh AND emb_exists
       AND previous.content_column IS NOT DISTINCT FROM content_col
       AND previous.content_function IS NOT DISTINCT FROM content_fn
       AND previous.model = watch.model
       AND previous.key_columns = key_names AND previous.key_types = key_regtypes
       AND previous.has_triggers = triggers AND previous.clear_on_update = watch.clear_on_update
       AND previous.queue = watch.queue AND previous.replica = watch.replica
       AND previous.problem IS NULL THEN
        RETURN previous.id;
    END IF;

    -- model change: a re-registration in place (a target with a problem, e.g. its content
    -- column dropped and added again) abandons a change in progress.
    IF NOT fresh AND EXISTS (SELECT FROM embeddings.model_changes mc WHERE mc.target_id = previous.id) THEN
        PERFORM embeddings.cancel_change(source, embedding_column);
    END IF;

    -- The DDL below is ours: the schema-change event trigger need not follow it.
    PERFORM set_config('embeddings.following', 'on', true);
    PERFORM embeddings.ensure_queue(queue);

    IF NOT emb_exists THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I %I.halfvec(%s)', source, embedding_column, vschema, dims);
        emb_type := format('%I.halfvec', vschema)::regtype;
    END IF;

    IF NOT EXISTS (
        SELECT FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_am am ON am.oid = ic.relam
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = source AND am.amname = 'hnsw' AND a.attname = embedding_column
    ) THEN
        -- A column added just now to a large table: building even an empty index scans the
        -- whole table under our lock, and inserting each vector into HNSW costs ~10x its share
        -- of a build. The worker builds it CONCURRENTLY once the backfill ends (62_backfill.sql).
        defer_index := NOT emb_exists AND rel_kind = 'r' AND embeddings.estimated_rows(source) > embeddings.index_defer_rows();
        IF NOT defer_index THEN
            EXECUTE format('CREATE INDEX ON %s USING hnsw (%I %I.%I)', source, embedding_column, vschema,
                CASE WHEN (SELECT typname FROM pg_type WHERE oid = emb_type) = 'halfvec'
                     THEN 'halfvec_cosine_ops' ELSE 'vector_cosine_ops' END);
        END IF;
    END IF;

    IF fresh THEN
        INSERT INTO embeddings.targets AS tg (source, embedding_column, content_column, content_function, model,
                                              queue, has_triggers, clear_on_update, key_columns, key_types,
                                              key_attnums, content_attnum, embedding_attnum, replica)
        VALUES (source, embedding_column, content_col, content_fn, model,
                queue, triggers, clear_on_update, key_names, key_regtypes,
                key_nums, content_num, embeddings.attnum_of(source, embedding_column), replica)
        RETURNING * INTO t;
    ELSE
        -- Another content column under the same name (dropped and added again), or a target
        -- that was deferred (its triggers gone, so content changes went unseen): every row again.
        reembed := previous.content_column IS DISTINCT FROM content_col
                   OR previous.content_attnum IS DISTINCT FROM content_num
                   OR previous.content_function IS DISTINCT FROM content_fn
                   OR previous.problem IS NOT NULL
                   OR previous.model <> watch.model;
        IF previous.queue <> watch.queue THEN
            -- Pending jobs move with the target.
            EXECUTE format(
                'WITH moved AS (DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1) RETURNING message) '
                'SELECT count(*) FROM moved, LATERAL pgmq.send(%L, moved.message)',
                pgmq.format_table_name(previous.queue, 'q'), queue) USING previous.id;
            EXECUTE format(  -- lanes: and the backfill lane's to the new backfill lane
                'WITH moved AS (DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1) RETURNING message) '
                'SELECT count(*) FROM moved, LATERAL pgmq.send(%L, moved.message)',
                pgmq.format_table_name(embeddings.backfill_queue(previous.queue), 'q'),
                embeddings.backfill_queue(queue)) USING previous.id;
        END IF;
        UPDATE embeddings.targets tg
        SET content_column = content_col, content_function = content_fn, model = watch.model,
            key_columns = key_names, key_types = key_regtypes, key_attnums = key_nums,
            content_attnum = content_num, embedding_attnum = embeddings.attnum_of(watch.source, watch.embedding_column),
            replica = watch.replica, problem = NULL, queue = watch.queue,
            has_triggers = triggers, clear_on_update = watch.clear_on_update, updated_at = now(),
            version = tg.version + 1  -- in-flight writes under the old definition are rejected
        WHERE tg.id = previous.id
        RETURNING * INTO t;
    END IF;

    PERFORM embeddings.drop_triggers(t);  -- functions of another shape (key, content) go first
    PERFORM embeddings.install_triggers(t);
    -- Worker roles set up by embeddings.grant_worker() serve this table too. (The function is
    -- defined in 80_roles.sql; plpgsql resolves it when this line runs.)
    PERFORM embeddings.grant_worker_target(r.role_name, t) FROM embeddings.worker_roles r;

    -- Existing rows: those with content and no embedding, or every row with content when the
    -- content source or the model changed; none with backfill => false. Queued on the backfill
    -- lane by a backfill in key ranges after this transaction (sql/62_backfill.sql): one bounded
    -- step here, not the whole table under the lock.
    IF backfill THEN
        PERFORM embeddings.start_backfill(t, reembed);
    END IF;
    IF defer_index THEN
        INSERT INTO embeddings.deferred_indexes (target_id) VALUES (t.id) ON CONFLICT DO NOTHING;
        RAISE NOTICE 'embeddings: the HNSW index of %.% is built once its existing rows are embedded; search scans exactly meanwhile',
            source, embedding_column;
    END IF;

    PERFORM set_config('embeddings.following', 'off', true);
    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN t.id;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.forget_target(t embeddings.targets) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_class WHERE oid = t.source) THEN
        PERFORM embeddings.drop_triggers(t);
        PERFORM embeddings.drop_worker_policies(t);
    END IF;
    -- model change: a change in progress goes (its shadow column is ours)
    IF EXISTS (SELECT FROM embeddings.model_changes mc WHERE mc.target_id = t.id)
       AND EXISTS (SELECT FROM pg_class WHERE oid = t.source) THEN
        PERFORM embeddings.cancel_change(t.source, t.embedding_column);
    END IF;
    EXECUTE format('DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1)',
                   pgmq.format_table_name(t.queue, 'q')) USING t.id;
    EXECUTE format('DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1)',  -- lanes
                   pgmq.format_table_name(embeddings.backfill_queue(t.queue), 'q')) USING t.id;
    DELETE FROM embeddings.targets tg WHERE tg.id = t.id;
    PERFORM pg_notify('embeddings_targets', t.id::text);
END
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
        SELECT key_json FROM pgmq.%1$I m, LATERAL jsonb_array_elements(m.message -> 'keys') AS key_json
        WHERE m.message @> jsonb_build_object('target', $1)
        UNION ALL
        SELECT key_json FROM pgmq.%5$I m, LATERAL jsonb_array_elements(m.message -> 'keys') AS key_json
        WHERE m.message @> jsonb_build_object('target', $1)
        UNION ALL
        SELECT m.message -> 'id' FROM pgmq.%1$I m
        WHERE m.message @> jsonb_build_object('schema', %2$L, 'table', %3$L)
          AND coalesce(m.message ->> 'embeddingColumn', 'embedding') = %4$L
          AND m.message -> 'id' IS NOT NULL
        UNION ALL
        SELECT f.row_key FROM embeddings.failures f WHERE f.target_id = $1 AND f.row_key IS NOT NULL
        $q$, pgmq.format_table_name(t.queue, 'q'), rel_schema, rel_name, t.embedding_column,
        pgmq.format_table_name(embeddings.backfill_queue(t.queue), 'q'))
    USING t.id;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.sweep_rows(
    t embeddings.targets, after_key text, max_rows integer,
    OUT scanned integer, OUT last_key text, OUT enqueued integer
)
LANGUAGE plpgsql AS $$
DECLARE
    pending jsonb[] := ARRAY(SELECT p.k FROM embeddings.pending_keys(t) p);
    missing_keys jsonb[] := '{}';
    k jsonb;
    unembedded boolean;
    missing boolean;
BEGIN
    scanned := 0;
    FOR k, unembedded IN EXECUTE format(
        'SELECT pg_catalog.to_jsonb(%1$s), %2$s FROM %3$s n'
        ' WHERE $1::jsonb IS NULL OR (%4$s) > (%5$s) ORDER BY %4$s LIMIT $2',
        embeddings.key_sql(t, 'n'), embeddings.embedding_missing_sql(t, 'n'), t.source,  -- 55_chunks.sql
        embeddings.key_columns_sql(t, 'n'), embeddings.key_from_json_sql(t, '$1::jsonb'))
        USING after_key, max_rows
    LOOP
        scanned := scanned + 1;
        last_key := k::text;
        CONTINUE WHEN NOT unembedded OR k = ANY(pending);
        BEGIN
            EXECUTE format('SELECT (%s) ~ ''[^[:space:]]'' FROM %s n WHERE (%s) = (%s)',
                           embeddings.content_sql(t, 'n'), t.source,
                           embeddings.key_columns_sql(t, 'n'), embeddings.key_from_json_sql(t, '$1'))
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
        PERFORM embeddings.enqueue_keys(t.id, missing_keys, 0, 'backfill');  -- lanes: backfill work
    END IF;
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
    queue_low boolean;
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
            EXECUTE format('SELECT count(*) < $1 FROM (SELECT FROM pgmq.%I LIMIT $1) q',
                           pgmq.format_table_name(embeddings.backfill_queue(t.queue), 'q'))
                INTO queue_low USING embeddings.backfill_step_keys() / embeddings.keys_per_message() + 1;
            IF queue_low THEN
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

CREATE OR REPLACE FUNCTION embeddings.retry_failures(ids bigint[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    f embeddings.failures;
    retried integer := 0;
BEGIN
    FOR f IN
        DELETE FROM embeddings.failures WHERE ids IS NULL OR id = ANY(ids) RETURNING *
    LOOP
        PERFORM embeddings.ensure_queue(f.queue);
        -- lanes: a retry is backfill work (the live lane stays the application's writes')
        PERFORM pgmq.send(embeddings.backfill_queue(f.queue), f.message);
        retried := retried + 1;
    END LOOP;
    RETURN retried;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.dispatch_batches(
    batch_size integer DEFAULT 10,
    max_requests integer DEFAULT 10,
    timeout_seconds integer DEFAULT 300,
    queue text DEFAULT 'embedding_jobs'
) RETURNS SETOF jsonb
LANGUAGE plpgsql AS $$
DECLARE
    wanted integer := batch_size * max_requests;
    live jsonb[];
    backfill jsonb[] := '{}';
BEGIN
    live := ARRAY(SELECT r.message || jsonb_build_object('jobId', r.msg_id)
                  FROM pgmq.read(queue, timeout_seconds, wanted) AS r ORDER BY r.msg_id);
    -- lanes: backfill work fills what the live queue leaves; its jobs say their lane (job ids
    -- are per queue).
    IF cardinality(live) < wanted
       AND EXISTS (SELECT FROM embeddings.queues q WHERE q.name = embeddings.backfill_queue(dispatch_batches.queue)) THEN
        backfill := ARRAY(SELECT r.message || jsonb_build_object('jobId', r.msg_id, 'lane', 'backfill')
                          FROM pgmq.read(embeddings.backfill_queue(queue), timeout_seconds, wanted - cardinality(live)) AS r
                          ORDER BY r.msg_id);
    END IF;
    RETURN QUERY
        SELECT jsonb_agg(j.job ORDER BY j.n)
        FROM unnest(live || backfill) WITH ORDINALITY AS j(job, n)
        GROUP BY (j.n - 1) / batch_size
        ORDER BY (j.n - 1) / batch_size;
END
$$;

CREATE OR REPLACE FUNCTION embeddings.grant_worker_target(role_name name, t embeddings.targets) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    policy name := 'embeddings_worker_' || role_name;
BEGIN
    EXECUTE format('GRANT SELECT ON %s TO %I', t.source, role_name);
    IF t.chunk_table IS NULL THEN
        EXECUTE format('GRANT UPDATE (%I) ON %s TO %I', t.embedding_column, t.source, role_name);
        -- model change: the shadow column of a change in progress (sql/44_changes.sql)
        PERFORM embeddings.grant_worker_shadow(role_name, t.source, mc.shadow_column)
        FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
    ELSE
        -- A chunked target's vectors live in its chunk table (sql/55_chunks.sql).
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I', t.chunk_table, role_name);
    END IF;
    IF (SELECT relrowsecurity FROM pg_class WHERE oid = t.source) THEN
        IF NOT EXISTS (SELECT FROM pg_policy WHERE polrelid = t.source AND polname = policy) THEN
            EXECUTE format('CREATE POLICY %I ON %s FOR SELECT TO %I USING (true)',
                           policy, t.source, role_name);
        END IF;
        IF NOT EXISTS (SELECT FROM pg_policy WHERE polrelid = t.source AND polname = policy || '_update') THEN
            EXECUTE format('CREATE POLICY %I ON %s FOR UPDATE TO %I USING (true) WITH CHECK (true)',
                           policy || '_update', t.source, role_name);
        END IF;
    END IF;
    PERFORM embeddings.grant_worker_queue(role_name, t.queue);
    PERFORM embeddings.grant_worker_queue(role_name, embeddings.backfill_queue(t.queue));  -- lanes
END
$$;

CREATE OR REPLACE FUNCTION embeddings.grant_worker(role_name name) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t embeddings.targets;
    q embeddings.queues;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', role_name
            USING ERRCODE = 'undefined_object',
                  HINT = format('CREATE ROLE %I LOGIN PASSWORD ''...''; first.', role_name);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA embeddings, pgmq TO %I', role_name);
    EXECUTE format('GRANT SELECT ON embeddings.targets, embeddings.models, embeddings.queues, embeddings.status, embeddings.status_exact TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON embeddings.failures TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON embeddings.throughput TO %I', role_name);
    EXECUTE format('GRANT SELECT ON pgmq.meta TO %I', role_name);
    -- Its write transaction locks the registrations it writes for (definition versions).
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.lock_target_version(integer) TO %I', role_name);
    -- It steps the backfills of its queue's targets when the queue is empty (62_backfill.sql).
    EXECUTE format('GRANT SELECT, UPDATE, DELETE ON embeddings.backfills TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.send_backfill(integer, jsonb[]) TO %I', role_name);
    -- model change: it completes changes and records which model produced the vectors.
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.complete_changes() TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.claim_provenance(integer, boolean, text, text, text) TO %I', role_name);
    FOR q IN SELECT * FROM embeddings.queues LOOP
        PERFORM embeddings.grant_worker_queue(role_name, q.name);
    END LOOP;
    FOR t IN SELECT * FROM embeddings.targets LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_class WHERE oid = t.source);
        PERFORM embeddings.grant_worker_target(role_name, t);
    END LOOP;
    INSERT INTO embeddings.worker_roles VALUES (role_name) ON CONFLICT DO NOTHING;
END
$$;

-- The status views gain the lanes' and the change's columns.
DROP VIEW embeddings.status_exact;
DROP VIEW embeddings.status;
DROP FUNCTION embeddings.target_status(boolean);

-- One row per target. Row counts are exact for targets up to embeddings.status_exact_rows()
-- rows and estimated above (`estimated`: see embeddings.estimated_counts()), so that reading
-- the status costs the same for ten rows or ten million and never waits on a watched table's
-- lock. `exact => true` counts every target exactly (scans each table: embeddings.status_exact),
-- `exact => false` estimates every one.
-- Pending jobs, dead letters and the rate are exact either way: they come from the queue and
-- our own tables, not from the watched tables. `deferred_reason` says why the pending jobs
-- wait, when the worker defers them. `backfill_rows`: rows a running backfill (62_backfill.sql)
-- has still to queue, counted in pending_jobs too (estimated targets: the rows it has not yet
-- passed, scaled by the share without a vector, so pending_jobs is an estimate too while a
-- backfill runs); NULL when no backfill runs. `index_deferred`: the HNSW index waits for the
-- backfill's end (62_backfill.sql); search scans exactly meanwhile.
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
        FROM embeddings.change_status(t);
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

-- What `embed-worker status` shows. total_rows, embedded_rows, cleared_rows and chunks are
-- estimates where `estimated` is true (large tables); every other column is exact.
CREATE VIEW embeddings.status AS
    SELECT target, total_rows, embedded_rows, pending_jobs, failed_jobs, oldest_pending_seconds,
           target_id, model, rows_per_second, cleared_rows, deferred_reason, deferred_since, problem,
           chunks, estimated, backfill_rows, index_deferred, pending_live, pending_backfill,
           vectors_from, change_model, change_done_rows, change_total_rows, change_rows_per_second,
           change_eta_seconds
    FROM embeddings.target_status();
COMMENT ON VIEW embeddings.status IS 'Per watched table: rows, embedded, pending jobs, dead letters, age of the oldest job, blank rows, why jobs wait; chunks of chunked targets; rows a running backfill has still to queue; whether the HNSW index waits for the backfill. Row counts of large tables are estimates (estimated = true); embeddings.status_exact counts them';

-- The same, every count exact: scans every watched table (`embed-worker status --exact`).
CREATE VIEW embeddings.status_exact AS
    SELECT target, total_rows, embedded_rows, pending_jobs, failed_jobs, oldest_pending_seconds,
           target_id, model, rows_per_second, cleared_rows, deferred_reason, deferred_since, problem,
           chunks, estimated, backfill_rows, index_deferred, pending_live, pending_backfill,
           vectors_from, change_model, change_done_rows, change_total_rows, change_rows_per_second,
           change_eta_seconds
    FROM embeddings.target_status(exact => true);
COMMENT ON VIEW embeddings.status_exact IS 'embeddings.status with exact counts: scans every watched table';

-- Worker roles lost their grant on the view with it; they also complete changes and claim
-- provenance now.
DO $$
DECLARE
    r embeddings.worker_roles;
BEGIN
    FOR r IN SELECT * FROM embeddings.worker_roles LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r.role_name);
        EXECUTE format('GRANT SELECT ON embeddings.status, embeddings.status_exact TO %I', r.role_name);
        EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.complete_changes() TO %I', r.role_name);
        EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.claim_provenance(integer, boolean, text, text, text) TO %I', r.role_name);
    END LOOP;
END
$$;

-- Every live queue gets its backfill lane (granted to the worker roles by ensure_queue()).
SELECT embeddings.ensure_queue(q) FROM unnest(ARRAY(SELECT name FROM embeddings.queues WHERE live_queue IS NULL ORDER BY name)) q;

-- The backfill in key ranges (0008) sends to the backfill lane, counts both lanes, and steps
-- only while the backfill lane is low.
CREATE OR REPLACE FUNCTION embeddings.send_backfill(target_id integer, keys jsonb[]) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings.enqueue_keys(target_id, keys, 0, 'backfill')  -- behind the live writes
$$;

CREATE OR REPLACE FUNCTION embeddings.pending_count(t embeddings.targets, OUT pending_jobs bigint, OUT oldest_pending_seconds double precision)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(g.keys), 0)::bigint, extract(epoch FROM clock_timestamp() - min(g.oldest))::double precision
    FROM (SELECT * FROM embeddings.queue_pending(t.queue)
          UNION ALL
          SELECT * FROM embeddings.queue_pending(embeddings.backfill_queue(t.queue))) g
    JOIN pg_class c ON c.oid = t.source JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE g.target_id = to_jsonb(t.id)
       OR (g.schema_name = n.nspname AND g.table_name = c.relname AND g.embedding_column = t.embedding_column)
$$;

CREATE OR REPLACE FUNCTION embeddings.backfill_next(
    queue text, max_keys integer DEFAULT embeddings.backfill_step_keys(),
    OUT scanned integer, OUT enqueued integer
)
LANGUAGE plpgsql AS $$
DECLARE
    b embeddings.backfills;
    t embeddings.targets;
    lane_full boolean;
BEGIN
    scanned := 0;
    enqueued := 0;
    IF max_keys IS NULL OR max_keys < 1 THEN
        RAISE EXCEPTION 'max_keys must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Not while the backfill lane holds a step's worth of jobs: a worker whose reads run short
    -- because its backfill batch is still in flight must not queue the whole table meanwhile.
    EXECUTE format('SELECT count(*) >= $1 FROM (SELECT FROM pgmq.%I LIMIT $1) q',
                   pgmq.format_table_name(embeddings.backfill_queue(queue), 'q'))
        INTO lane_full USING max_keys / embeddings.keys_per_message() + 1;
    IF lane_full THEN
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

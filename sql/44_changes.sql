-- Model changes without downtime (blue/green), and the provenance of stored vectors.
--
-- Plain targets only (a chunked target's model change is in place; see docs/models.md). A
-- side-table target (sql/56_side.sql) has its shadow column in its side table, where the swap
-- renames; the table is locked first all the same.
--
-- A change re-embeds every row into a shadow column (the new model's dimension, its own HNSW
-- index) while the target's column keeps serving the old model's vectors for every row. Rows
-- written meanwhile get both vectors (the worker writes both columns in one statement pair
-- under the same stale-write guard). When every row with content has its new vector and no
-- job of the target is queued, embeddings_internal.complete_change() swaps the columns and indexes by
-- renaming them in one short transaction, and sets the target's model. Nothing ever writes one
-- model's vectors into the other model's column.

-- Records (model, revision, variant) as the producer of target_id's column (or shadow column)
-- unless one is recorded already; returns the recorded producer as 'model revision variant'.
-- The worker compares it with its own in its write transaction. SECURITY DEFINER: worker roles
-- have no rights on the table.
CREATE FUNCTION embeddings_internal.claim_provenance(
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

-- Names of the shadow column and of the old column kept by a change with keep_old, and of the
-- old index kept with it (sql/15_names.sql: never the name they are made from).
CREATE FUNCTION embeddings_internal.shadow_column(embedding_column name) RETURNS name
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$ SELECT embeddings_internal.suffixed_name(embedding_column, '_next') $$;

CREATE FUNCTION embeddings_internal.kept_column(embedding_column name) RETURNS name
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$ SELECT embeddings_internal.suffixed_name(embedding_column, '_previous') $$;

CREATE FUNCTION embeddings_internal.kept_index(index_name name) RETURNS name
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$ SELECT embeddings_internal.suffixed_name(index_name, '_previous') $$;

-- The HNSW index on column `col` of `source`, if any.
CREATE FUNCTION embeddings_internal.hnsw_index(source regclass, col name) RETURNS regclass
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT i.indexrelid::regclass FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_am am ON am.oid = ic.relam
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = source AND am.amname = 'hnsw' AND a.attname = col
    ORDER BY i.indexrelid LIMIT 1
$$;

-- The partial index of rows still lacking their new vector: completion checks it under the
-- table lock without scanning the table.
CREATE FUNCTION embeddings_internal.missing_index_name(target_id integer) RETURNS name
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$ SELECT ('embeddings_' || target_id || '_change_missing')::name $$;

-- The names a swap with keep_old gives the old column and its HNSW index (kept_column(), and
-- the index's name with `_previous`) must be free when the change starts: a column or index
-- kept by an earlier change would make every swap fail. Raises, naming it and how to drop it,
-- when `keep_old` and either is taken.
CREATE FUNCTION embeddings_internal.check_keep_old(t embeddings.targets, keep_old boolean) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kept name := embeddings_internal.kept_column(t.embedding_column);
    rel_schema name := (SELECT n.nspname FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace
                        WHERE cl.oid = t.store_table);
    kept_index name := (SELECT embeddings_internal.kept_index(ic.relname) FROM pg_class ic
                        WHERE ic.oid = embeddings_internal.hnsw_index(t.store_table, t.embedding_column));
BEGIN
    IF NOT keep_old THEN
        RETURN;
    END IF;
    IF embeddings_internal.attnum_of(t.store_table, kept) IS NOT NULL THEN
        RAISE EXCEPTION 'column %.% exists (kept from an earlier change?): keep_old => true would keep the old column under that name',
                t.store_table, kept
            USING ERRCODE = 'duplicate_column',
                  HINT = format('Drop it first (ALTER TABLE %s DROP COLUMN %I; its index goes with it), or change with keep_old => false.',
                                t.store_table, kept);
    END IF;
    IF to_regclass(format('%I.%I', rel_schema, kept_index)) IS NOT NULL THEN
        RAISE EXCEPTION 'relation %.% exists (kept from an earlier change?): keep_old => true would keep the old index under that name',
                quote_ident(rel_schema), quote_ident(kept_index)
            USING ERRCODE = 'duplicate_table',
                  HINT = format('Drop it first (DROP INDEX %I.%I), or change with keep_old => false.', rel_schema, kept_index);
    END IF;
END
$$;

-- Target t's held jobs, of both lanes, made visible now; returns how many. Held is what the
-- worker's defer_jobs marked (worker/queries.sql: `held`, its target and the vt it set) and
-- what no one touched since, as release_held_jobs there: a job leased, retried or released
-- since has another vt and is left alone. Only jobs not visible are candidates, found by
-- pgmq's vt index: the time is a parameter (clock_timestamp() in the condition, volatile, made
-- it a scan of the whole lane, every visible job of a backlog included).
CREATE FUNCTION embeddings_internal.release_held(t embeddings.targets) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    lane text;
    moved bigint;
    released bigint := 0;
BEGIN
    FOREACH lane IN ARRAY ARRAY['live', 'backfill'] LOOP
        EXECUTE format($q$
            UPDATE pgmq.%I q SET vt = $2
            WHERE q.vt > $2
              AND q.message #> '{held,until}' = pg_catalog.to_jsonb(EXTRACT(epoch FROM q.vt))
              AND q.message #> '{held,target}' = pg_catalog.to_jsonb($1)
            $q$, embeddings_internal.lane_table(t.queue, lane)) USING t.id, pg_catalog.clock_timestamp();
        GET DIAGNOSTICS moved = ROW_COUNT;
        released := released + moved;
    END LOOP;
    RETURN released;
END
$$;

-- Starts changing target t's model to `new_model` (see the top of this file). A change to the
-- model already being changed to only updates keep_old; a change to another model replaces it;
-- a change back to the target's own model cancels it. `reembed` starts a change even to the
-- same model (new vectors from another revision or variant). Every row with content gets a
-- shadow-only job on the backfill lane. Returns the target id.
CREATE FUNCTION embeddings_internal.start_change(
    t embeddings.targets, new_model text, keep_old boolean DEFAULT false, reembed boolean DEFAULT false
) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c embeddings.model_changes;
    dims integer;
    vschema name := embeddings.vector_schema();
    shadow name := embeddings_internal.shadow_column(t.embedding_column);
    total bigint;
    following text := coalesce(current_setting('embeddings.following', true), 'off');
    vec_rel regclass := t.store_table;  -- where the embedding column is
BEGIN
    -- The table first, the registration after, as the worker's write (embeddings_internal.lock_target)
    -- and complete_change() take them: the other order deadlocks with a write in flight. The
    -- table in the mode ALTER TABLE will take anyway (a weaker one would have to be upgraded),
    -- in short attempts that never stall the application's statements (41_locks.sql).
    PERFORM embeddings_internal.lock_table(t.source);
    SELECT * INTO t FROM embeddings.targets tg WHERE tg.id = t.id FOR UPDATE;
    IF embeddings_internal.store_has_chunks(t) THEN
        RAISE EXCEPTION '%.% is a chunked target: a blue/green model change is for plain targets', t.source, t.embedding_column
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'watch() a chunked target with the new model to re-embed its chunks in place.';
    END IF;
    SELECT * INTO c FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
    IF FOUND AND c.model = new_model AND NOT reembed THEN
        PERFORM embeddings_internal.check_keep_old(t, keep_old AND NOT c.keep_old);
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
        RAISE EXCEPTION 'unknown model "%"', new_model
            USING ERRCODE = 'invalid_parameter_value', HINT = embeddings_internal.unknown_model_hint(new_model);
    END IF;
    IF embeddings_internal.attnum_of(vec_rel, shadow) IS NOT NULL THEN
        RAISE EXCEPTION 'column %.% exists: a model change needs that name for its shadow column', vec_rel, shadow
            USING ERRCODE = 'duplicate_column', HINT = 'Rename or drop that column, then watch() again.';
    END IF;
    PERFORM embeddings_internal.check_keep_old(t, keep_old);
    PERFORM set_config('embeddings.following', 'on', true);  -- our DDL: nothing to follow
    EXECUTE format('ALTER TABLE %s ADD COLUMN %I %I.halfvec(%s)', vec_rel, shadow, vschema, dims);
    EXECUTE format('CREATE INDEX ON %s USING hnsw (%I %I.halfvec_cosine_ops)', vec_rel, shadow, vschema);
    EXECUTE format('CREATE INDEX %I ON %s ((true)) WHERE %I IS NULL',
                   embeddings_internal.missing_index_name(t.id), vec_rel, shadow);
    PERFORM set_config('embeddings.following', following, true);
    -- In-flight batches read under the old definition are handed back and redone with both models.
    UPDATE embeddings.targets tg SET version = tg.version + 1, updated_at = now()
    WHERE tg.id = t.id RETURNING * INTO t;
    -- The digest with it (the shadow column is a side table's): a later change of nothing a
    -- batch depends on must not give yet another version (sql/45_dropped.sql).
    UPDATE embeddings.targets tg SET definition_digest = embeddings_internal.definition_digest(t)
    WHERE tg.id = t.id RETURNING * INTO t;
    -- Jobs the worker held for the old definition (its model cannot load, say) are taken at
    -- once: a worker that has the new model serves them now (while the old model cannot load,
    -- with the new vector alone: worker/pipeline/shadow.py), and one that cannot holds them
    -- again, under the new definition, where status shows why. Left held, they waited out
    -- their minute unseen: status ignores a hold of the definition replaced, `run --once`
    -- left them behind, and the swap waited for them.
    PERFORM embeddings_internal.release_held(t);
    DELETE FROM embeddings.provenance p WHERE p.target_id = t.id AND p.shadow;
    -- Every row with content, queued in key ranges on the backfill lane after this transaction
    -- (62_backfill.sql): one bounded step here, not the whole table under the lock.
    PERFORM embeddings_internal.start_backfill(t, true, 'change');
    -- Rows to do, for the progress: counted on small tables, estimated on large ones.
    total := round(embeddings_internal.target_rows(t));
    IF total <= embeddings_internal.status_exact_rows() THEN
        EXECUTE format('SELECT pg_catalog.count(*) FROM %s', t.source) INTO total;
    END IF;
    INSERT INTO embeddings.model_changes (target_id, model, shadow_column, keep_old, rows_total)
    VALUES (t.id, new_model, shadow, keep_old, total);
    -- The functions that write the shadow column too (sql/32_access.sql).
    PERFORM embeddings_internal.generate_access(t);
    RETURN t.id;
END
$$;

-- Changes the model of an existing target (blue/green), or re-embeds it with the same model
-- when `model` is its current one (another revision or variant). Returns the target id.
CREATE FUNCTION embeddings.rewatch(
    source regclass,
    embedding_column name DEFAULT 'embedding',
    model text DEFAULT NULL,
    keep_old boolean DEFAULT false
) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
BEGIN
    IF source IS NULL OR embedding_column IS NULL OR keep_old IS NULL THEN
        RAISE EXCEPTION 'embeddings.rewatch(): % must not be NULL',
                CASE WHEN source IS NULL THEN 'source' WHEN embedding_column IS NULL THEN 'embedding_column' ELSE 'keep_old' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM embeddings_internal.lock_table(source);  -- as start_change()
    SELECT * INTO t FROM embeddings.targets tg
    WHERE tg.source = rewatch.source AND tg.embedding_column = rewatch.embedding_column FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%.% is not watched', source, embedding_column
            USING ERRCODE = 'undefined_object',
                  HINT = embeddings_internal.watched_columns_hint(source, 'Register it with embeddings.watch() first.');
    END IF;
    RETURN embeddings_internal.start_change(t, coalesce(model, t.model), keep_old, reembed => coalesce(model, t.model) = t.model);
END
$$;
COMMENT ON FUNCTION embeddings.rewatch IS
    'Changes a target''s model (blue/green, through a shadow column), or re-embeds it with the same one. Schema owner only.';

-- Abandons the change of a target: its shadow column and index are dropped, its shadow-only
-- jobs removed; the target's column and model are as before. Returns false (with a NOTICE)
-- when no change was in progress.
CREATE FUNCTION embeddings.cancel_change(source regclass, embedding_column name DEFAULT 'embedding')
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    t embeddings.targets;
    c embeddings.model_changes;
    following text := coalesce(current_setting('embeddings.following', true), 'off');
BEGIN
    IF source IS NULL OR embedding_column IS NULL THEN
        RAISE EXCEPTION 'embeddings.cancel_change(): % must not be NULL',
                CASE WHEN source IS NULL THEN 'source' ELSE 'embedding_column' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM embeddings_internal.lock_table(source);  -- as start_change()
    SELECT * INTO t FROM embeddings.targets tg
    WHERE tg.source = cancel_change.source AND tg.embedding_column = cancel_change.embedding_column FOR UPDATE;
    IF t.id IS NULL THEN
        RAISE NOTICE '%.% is not watched', source, embedding_column
            USING HINT = embeddings_internal.watched_columns_hint(source, format('No column of %s is watched.', source));
        RETURN false;
    END IF;
    SELECT * INTO c FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
    IF NOT FOUND THEN
        RAISE NOTICE 'no model change in progress for %.%', source, embedding_column;
        RETURN false;
    END IF;
    PERFORM set_config('embeddings.following', 'on', true);
    EXECUTE format('DROP INDEX IF EXISTS %I.%I',
                   (SELECT n.nspname FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace
                    WHERE cl.oid = t.store_table),
                   embeddings_internal.missing_index_name(t.id));
    IF embeddings_internal.attnum_of(t.store_table, c.shadow_column) IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %s DROP COLUMN %I', t.store_table, c.shadow_column);
    END IF;
    PERFORM set_config('embeddings.following', following, true);
    EXECUTE format('DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1, ''shadow'', true)',
                   embeddings_internal.lane_table(t.queue, 'backfill')) USING t.id;
    -- The change's backfill becomes an ordinary one again, from the first key: rows it would
    -- have reached (a backfill it replaced, say) still get their vector of the current model.
    UPDATE embeddings.backfills b SET lane = 'backfill', every_row = false, after_key = NULL
    WHERE b.target_id = t.id AND b.lane = 'change';
    DELETE FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
    DELETE FROM embeddings.provenance p WHERE p.target_id = t.id AND p.shadow;
    -- A hold of the change's jobs (its model cannot load) goes with them. updated_at alone does
    -- not hide it: a worker may hold them again after this transaction began (it waited for the
    -- table), and a hold of the target as it is now is noted again by the next batch.
    DELETE FROM embeddings.deferrals d WHERE d.target_id = t.id;
    UPDATE embeddings.targets tg SET version = tg.version + 1, updated_at = now() WHERE tg.id = t.id
    RETURNING * INTO t;
    -- (the digest with it, the shadow column gone: sql/45_dropped.sql)
    UPDATE embeddings.targets tg SET definition_digest = embeddings_internal.definition_digest(t)
    WHERE tg.id = t.id RETURNING * INTO t;
    PERFORM embeddings_internal.generate_access(t);  -- no shadow column to write any more
    RETURN true;
END
$$;
COMMENT ON FUNCTION embeddings.cancel_change IS
    'Abandons a target''s model change in progress; its column and model stay as before. Schema owner only.';

-- Row keys (JSON form) of target t that the application changed and whose jobs are moving: in
-- the inbox, or in the live lane (either message shape) and visible or being embedded, not
-- held back (a deferred job is put back unread: read_ct 0, vt ahead). Only such a row may
-- lack its new vector at the swap (its content changed, so its old vector was cleared too,
-- and its job writes the new one at once); `held` counts the live jobs held back.
CREATE FUNCTION embeddings_internal.moving_live_keys(t embeddings.targets, OUT keys jsonb[], OUT held bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
BEGIN
    EXECUTE format($q$
        SELECT pg_catalog.array_agg(s.k) FILTER (WHERE NOT s.held),
               pg_catalog.count(DISTINCT s.msg_id) FILTER (WHERE s.held)
        FROM (SELECT m.msg_id, key_json AS k, m.read_ct = 0 AND m.vt > pg_catalog.clock_timestamp() AS held
              FROM pgmq.%1$I m, LATERAL embeddings_internal.message_keys(m.message) AS key_json
              WHERE m.message @> pg_catalog.jsonb_build_object('target', $1)
              UNION ALL
              SELECT m.msg_id, m.message -> 'id', m.read_ct = 0 AND m.vt > pg_catalog.clock_timestamp()
              FROM pgmq.%1$I m WHERE %2$s
              UNION ALL
              SELECT NULL, key_json, false FROM embeddings.inbox i,
                   LATERAL embeddings_internal.message_keys(pg_catalog.jsonb_build_object('columns', i.columns)) AS key_json
              WHERE i.target = $1) s
        $q$, embeddings_internal.lane_table(t.queue, 'live'), embeddings_internal.guide_job_sql(t, 'm'))
        INTO keys, held USING t.id;
    keys := coalesce(keys, '{}');
END
$$;

-- What target t's model change waits for before its swap, or NULL when nothing: jobs of the
-- change still queued, its rows still being queued (a backfill in key ranges), rows with
-- content still lacking the new vector with no job (lost, dead-lettered, or given a vector of
-- the old model by hand: queued now, unless the target has dead letters), or jobs of the
-- application's writes held back (their target deferred: say the old model cannot be loaded),
-- without which their rows would swap without a vector. Real content only: whitespace-only
-- content is cleared by the worker, never embedded. The content is evaluated by the target's
-- embeddings_<id>_unshadowed(), as the table's owner (sql/32_access.sql).
CREATE FUNCTION embeddings_internal.change_waits_for(t embeddings.targets) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    change_jobs bigint;
    unqueued jsonb[];
    missing bigint;
    held bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1, ''shadow'', true)',
                   embeddings_internal.lane_table(t.queue, 'backfill'))
        INTO change_jobs USING t.id;
    IF change_jobs > 0 THEN
        RETURN format('%s jobs of the change are waiting', change_jobs);
    END IF;
    IF EXISTS (SELECT FROM embeddings.backfills b WHERE b.target_id = t.id) THEN
        RETURN 'its rows are still being queued (a backfill in key ranges)';
    END IF;
    EXECUTE format('SELECT pg_catalog.array_agg(u.k) FROM embeddings.%I($1) AS u(k)', 'embeddings_' || t.id || '_unshadowed')
        INTO unqueued USING ARRAY(SELECT p.k FROM embeddings_internal.pending_keys(t) p);
    missing := coalesce(cardinality(unqueued), 0);
    IF missing > 0 THEN
        IF EXISTS (SELECT FROM embeddings.failures f WHERE f.target_id = t.id) THEN
            RETURN format('%s rows lack the new vector and the target has dead letters (embed-worker failures)', missing);
        END IF;
        PERFORM embeddings_internal.enqueue_keys(t.id, unqueued, 0, 'change');
        RETURN format('%s rows lacked the new vector: queued', missing);
    END IF;
    SELECT m.held INTO held FROM embeddings_internal.moving_live_keys(t) m;
    IF held > 0 THEN
        RETURN format('%s jobs of the application''s writes are held back (deferred): waiting for them', held);
    END IF;
    RETURN NULL;
END
$$;

-- Under target t's table lock, what its swap waits for, or NULL when it may swap. No row that
-- has a vector may lose it (the partial index holds the rows to look at). And a row whose
-- content changed has its vector cleared (clear_on_update) and a job queued: its new vector, of
-- the old content, must not show up either. Every row with content has its new vector, except
-- rows the application changed whose jobs are moving (a row with any other job, in the
-- backfill lane or held, would keep the swap waiting, and have its new vector cleared). Only
-- those rows' new vectors may be stale (their content changed after it was written): only
-- theirs are cleared. Both as the table's owner, by embeddings_<id>_swap_prepare()
-- (sql/32_access.sql), whose triggers fire on that UPDATE; both read through the partial index
-- of rows lacking the new vector.
CREATE FUNCTION embeddings_internal.prepare_swap(t embeddings.targets) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    live jsonb[];
    held bigint;
    missing bigint;
    ready boolean;
BEGIN
    SELECT * INTO live, held FROM embeddings_internal.moving_live_keys(t);
    IF held > 0 THEN
        RETURN format('%s jobs of the application''s writes are held back (deferred): waiting for them', held);
    END IF;
    EXECUTE format('SELECT pg_catalog.count(*) FROM embeddings.%I($1)', 'embeddings_' || t.id || '_unshadowed')
        INTO missing USING live;
    IF missing > 0 THEN
        RETURN format('%s rows lack the new vector and wait for their jobs: not yet', missing);
    END IF;
    EXECUTE format('SELECT embeddings.%I($1)', 'embeddings_' || t.id || '_swap_prepare') INTO ready USING live;
    IF NOT ready THEN
        RETURN 'rows written meanwhile lack the new vector: not yet';
    END IF;
    RETURN NULL;
END
$$;

-- The swap's DDL, on target t's table or side table: change c's shadow column takes the name of
-- the target's column, and its index the name of the column's index; the old column is kept as
-- embeddings_internal.kept_column() (keep_old) or dropped. Renames first, the drop last: a drop of a
-- column named like the target's would make the event trigger of 45_dropped.sql forget the
-- target. Leaves embeddings.following on: the caller brings the registry in line.
CREATE FUNCTION embeddings_internal.swap_columns(t embeddings.targets, c embeddings.model_changes) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    vec_rel regclass := t.store_table;  -- the table, or its side table
    rel_schema name := (SELECT n.nspname FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace
                        WHERE cl.oid = vec_rel);
    old_index regclass;
    new_index regclass;
    old_index_name name;
BEGIN
    PERFORM set_config('embeddings.following', 'on', true);  -- our DDL
    EXECUTE format('DROP INDEX IF EXISTS %I.%I', rel_schema, embeddings_internal.missing_index_name(t.id));
    old_index := embeddings_internal.hnsw_index(vec_rel, t.embedding_column);
    new_index := embeddings_internal.hnsw_index(vec_rel, c.shadow_column);
    SELECT relname INTO old_index_name FROM pg_class WHERE oid = old_index;
    EXECUTE format('ALTER TABLE %s RENAME COLUMN %I TO %I', vec_rel, t.embedding_column,
                   CASE WHEN c.keep_old THEN embeddings_internal.kept_column(t.embedding_column)
                        ELSE 'embeddings_' || t.id || '_replaced' END);
    -- The old index frees its name for the new one: kept beside its column, or dropped with it
    -- (renamed, it would take `<index>_previous`, which an earlier keep_old may hold).
    IF old_index IS NOT NULL AND c.keep_old THEN
        EXECUTE format('ALTER INDEX %s RENAME TO %I', old_index, embeddings_internal.kept_index(old_index_name));
    ELSIF old_index IS NOT NULL THEN
        EXECUTE format('DROP INDEX %s', old_index);
    END IF;
    EXECUTE format('ALTER TABLE %s RENAME COLUMN %I TO %I', vec_rel, c.shadow_column, t.embedding_column);
    IF new_index IS NOT NULL AND old_index_name IS NOT NULL THEN
        EXECUTE format('ALTER INDEX %s RENAME TO %I', new_index, old_index_name);
    END IF;
    IF NOT c.keep_old THEN
        EXECUTE format('ALTER TABLE %s DROP COLUMN %I', vec_rel, 'embeddings_' || t.id || '_replaced');
    END IF;
END
$$;

-- Completes target_id's change when it is complete. It is when no shadow-only job of the change
-- is queued, every row with content has its new vector or a job queued (a job left after the
-- swap is simply served with the new model), and, checked under the table lock, no row that has
-- a vector lacks the new one. Then, in this one transaction: rows whose vector was cleared by a
-- content change (their job is queued) have their stale new vector cleared too; the target's
-- column is dropped (or kept as embeddings_internal.kept_column()); the shadow column and its index take
-- the column's name and the index's name; the registry's attribute number follows (the rename
-- follower is off for our own DDL); the target's model is set and its definition version
-- bumped (batches read before are handed back and redone). Returns 'done', or what it waits
-- for. The table lock is asked for in short attempts for up to `lock_wait` (41_locks.sql), so
-- the swap never queues the application's statements behind it for more than one attempt
-- (lock_not_available: try later; complete_changes() records the wait). Every other lock
-- (the registration, the indexes) is bounded by a 50 ms lock_timeout.
CREATE FUNCTION embeddings_internal.complete_change(target_id integer, lock_wait interval DEFAULT interval '200 milliseconds')
RETURNS text
LANGUAGE plpgsql SET lock_timeout = '50ms' SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
    c embeddings.model_changes;
    waiting text;
    following text := coalesce(current_setting('embeddings.following', true), 'off');
BEGIN
    SELECT * INTO c FROM embeddings.model_changes mc WHERE mc.target_id = complete_change.target_id;
    IF NOT FOUND THEN
        RETURN 'no change in progress';
    END IF;
    SELECT * INTO t FROM embeddings.targets tg WHERE tg.id = c.target_id;
    waiting := embeddings_internal.change_waits_for(t);
    IF waiting IS NOT NULL THEN
        RETURN waiting;
    END IF;
    -- The swap. The table first (waits for application and worker writes in progress), then
    -- the registration, as ALTER TABLE and worker writes take them: writes that start later
    -- wait for us and then see the new version.
    PERFORM embeddings_internal.lock_table(t.source, lock_wait);
    PERFORM FROM embeddings.targets tg WHERE tg.id = t.id FOR UPDATE;
    waiting := embeddings_internal.prepare_swap(t);
    IF waiting IS NOT NULL THEN
        RETURN waiting;
    END IF;
    PERFORM embeddings_internal.swap_columns(t, c);
    UPDATE embeddings.targets tg
    SET model = c.model,
        embedding_attnum = CASE WHEN NOT embeddings_internal.store_apart(t) THEN embeddings_internal.attnum_of(t.source, t.embedding_column) END,
        version = tg.version + 1, updated_at = now()
    WHERE tg.id = t.id RETURNING * INTO t;
    -- (the digest with it, the columns swapped: sql/45_dropped.sql)
    UPDATE embeddings.targets tg SET definition_digest = embeddings_internal.definition_digest(t)
    WHERE tg.id = t.id RETURNING * INTO t;
    PERFORM embeddings_internal.install_triggers(t);  -- the generated functions name the new column
    PERFORM set_config('embeddings.following', following, true);
    DELETE FROM embeddings.provenance p WHERE p.target_id = t.id AND NOT p.shadow;
    UPDATE embeddings.provenance p SET shadow = false WHERE p.target_id = t.id AND p.shadow;
    DELETE FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
    PERFORM embeddings_internal.grant_worker_target(r.role_name, t) FROM embeddings_internal.worker_role_names() AS r(role_name);
    RETURN 'done';
END
$$;

-- Tries to complete every change in progress (the worker calls it when its queues are idle;
-- anyone may call it). A table busy past the lock timeout is left for the next call. Returns
-- one row per change: target id and complete_change()'s answer. A swap that fails (a view or
-- trigger of the user's uses the old column, a name taken) is recorded in the change
-- (swap_error, since when: the stopped state swap_failed, sql/52_stopped.sql) until a call
-- gets past it: it does not go away by waiting.
CREATE FUNCTION embeddings_internal.complete_changes(OUT target_id integer, OUT result text) RETURNS SETOF record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id integer;
    detail text;
BEGIN
    -- Not while a target cannot be served (its problem: watch() again first).
    FOR id IN SELECT mc.target_id FROM embeddings.model_changes mc
              JOIN embeddings.targets tg ON tg.id = mc.target_id
              WHERE tg.problem IS NULL AND EXISTS (SELECT FROM pg_class WHERE oid = tg.source)
              ORDER BY mc.target_id LOOP
        target_id := id;
        BEGIN
            result := embeddings_internal.complete_change(id);
        EXCEPTION WHEN lock_not_available THEN
            result := 'table busy: retried later';
            UPDATE embeddings.model_changes mc
            SET swap_attempts = mc.swap_attempts + 1, swap_waiting_since = coalesce(mc.swap_waiting_since, now()),
                swap_holders = (SELECT embeddings_internal.lock_holders(tg.source) FROM embeddings.targets tg WHERE tg.id = mc.target_id)
            WHERE mc.target_id = id;
        WHEN dependent_objects_still_exist THEN
            -- A view or trigger of the user's uses the old column: it cannot be dropped. The
            -- DETAIL names what uses it; the column by the name the user knows, not the one
            -- the swap renamed it to.
            GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
            SELECT format('could not complete: the old column %s.%I cannot be dropped (%s)', tg.store_table,
                          tg.embedding_column, replace(replace(detail, E'\n', '; '), 'embeddings_' || tg.id || '_replaced',
                                                       quote_ident(tg.embedding_column)))
            INTO result FROM embeddings.targets tg WHERE tg.id = complete_changes.target_id;
        WHEN OTHERS THEN
            result := 'could not complete: ' || SQLERRM;  -- never fails the caller (the worker)
        END;
        IF result NOT LIKE 'table busy%' THEN
            UPDATE embeddings.model_changes mc SET swap_attempts = 0, swap_waiting_since = NULL, swap_holders = NULL
            WHERE mc.target_id = id AND mc.swap_attempts > 0;
        END IF;
        IF result LIKE 'could not complete%' THEN
            UPDATE embeddings.model_changes mc
            SET swap_error = result,
                swap_failed_since = CASE WHEN mc.swap_error = result THEN mc.swap_failed_since ELSE now() END
            WHERE mc.target_id = id AND mc.swap_error IS DISTINCT FROM result;
        ELSIF result NOT LIKE 'table busy%' THEN  -- past the failure (or not there yet)
            UPDATE embeddings.model_changes mc SET swap_error = NULL, swap_failed_since = NULL
            WHERE mc.target_id = id AND mc.swap_error IS NOT NULL;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- For embeddings.status: the producer of target t's vectors ('model revision variant') and the
-- progress of its change in progress, if any (rows with the new vector / rows with content).
CREATE FUNCTION embeddings_internal.change_status(
    t embeddings.targets, exact boolean DEFAULT true,
    OUT vectors_from text, OUT change_model text, OUT change_done_rows bigint,
    OUT change_total_rows bigint, OUT change_rows_per_second double precision,
    OUT change_eta_seconds double precision
)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
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
                       embeddings_internal.lane_table(t.queue, 'backfill'))
            INTO queued USING t.id;
        change_total_rows := c.rows_total;
        change_done_rows := greatest(least(coalesce(
            (SELECT b.scanned_rows FROM embeddings.backfills b WHERE b.target_id = t.id AND b.lane = 'change'),
            c.rows_total), c.rows_total) - queued, 0);
    ELSE
        -- Rows with the new vector, and rows with content (a content function is not evaluated
        -- by status: its total is the one counted as the change began).
        BEGIN
            IF NOT embeddings_internal.store_apart(t) THEN
                EXECUTE format('SELECT pg_catalog.count(s.%I), pg_catalog.count(*) FILTER (WHERE s.%I IS NOT NULL OR (%s) OPERATOR(pg_catalog.~) %L) FROM %s s',
                               c.shadow_column, c.shadow_column,
                               CASE WHEN t.content_column IS NOT NULL THEN embeddings_internal.content_sql(t, 's') ELSE 'NULL' END,
                               embeddings_internal.nonblank_pattern(),
                               t.source)
                    INTO change_done_rows, change_total_rows;
            ELSE  -- the rows of its store of existing rows (a side table: sql/56_side.sql)
                EXECUTE format('SELECT pg_catalog.count(x.%I), pg_catalog.count(*) FILTER (WHERE x.%I IS NOT NULL OR (%s) OPERATOR(pg_catalog.~) %L) FROM %s s LEFT JOIN %s x ON %s',
                               c.shadow_column, c.shadow_column,
                               CASE WHEN t.content_column IS NOT NULL THEN embeddings_internal.content_sql(t, 's') ELSE 'NULL' END,
                               embeddings_internal.nonblank_pattern(),
                               t.source, t.store_table, embeddings_internal.key_equal_sql(t, 's', 'x'))
                    INTO change_done_rows, change_total_rows;
            END IF;
        EXCEPTION WHEN OTHERS THEN  -- a table the caller may not read
            change_total_rows := c.rows_total;
        END;
        IF t.content_column IS NULL THEN
            change_total_rows := greatest(c.rows_total, change_done_rows);
        END IF;
    END IF;
    change_rows_per_second := change_done_rows / greatest(extract(epoch FROM clock_timestamp() - c.started_at), 1);
    change_eta_seconds := CASE WHEN change_rows_per_second > 0
        THEN greatest(change_total_rows - change_done_rows, 0) / change_rows_per_second END;
END
$$;

-- 0017: start_change(), rewatch() and cancel_change() lock the table before the registration,
-- as the worker's write (embeddings.lock_target, revision 0015) and complete_change() do; the
-- other order deadlocked with a write in flight.

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
    -- The table first, the registration after, as the worker's write (embeddings.lock_target)
    -- and complete_change() take them: the other order deadlocked with a write in flight. The
    -- table in the mode ALTER TABLE will take anyway (a weaker one would have to be upgraded).
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', t.source);
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
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', source);  -- as start_change()
    SELECT * INTO t FROM embeddings.targets tg
    WHERE tg.source = rewatch.source AND tg.embedding_column = rewatch.embedding_column FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%.% is not watched', source, embedding_column
            USING ERRCODE = 'undefined_object', HINT = 'Register it with embeddings.watch() first.';
    END IF;
    RETURN embeddings.start_change(t, coalesce(model, t.model), keep_old, reembed => coalesce(model, t.model) = t.model);
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
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', source);  -- as start_change()
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

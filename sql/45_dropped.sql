-- Watched tables (or their embedding columns) that get dropped: their targets are forgotten
-- with the drop, so that no worker dead-letters their queued jobs and `status` stays clean.

-- Forgets every target whose table, or whose embedding column (in its chunk table for a chunked
-- target, its side table for a side-table target), no longer exists; returns how
-- many. Run it by hand where the event trigger below could not be installed (it needs a
-- superuser). A renamed embedding column counts as gone: re-watch the table under its new name.
CREATE FUNCTION embeddings.unwatch_dropped() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
    forgotten integer := 0;
BEGIN
    FOR t IN
        SELECT * FROM embeddings.targets tg
        WHERE NOT EXISTS (
            SELECT FROM pg_attribute a
            WHERE a.attrelid = tg.store_table AND a.attname = tg.embedding_column
              AND a.attnum > 0 AND NOT a.attisdropped)
        ORDER BY tg.id
    LOOP
        PERFORM embeddings_internal.forget_target(t);
        RAISE NOTICE 'embeddings: target % is no longer watched: its table or embedding column is gone', t.id;
        forgotten := forgotten + 1;
    END LOOP;
    RETURN forgotten;
END
$$;
COMMENT ON FUNCTION embeddings.unwatch_dropped IS
    'Forgets every target whose table or embedding column is gone; returns how many. Schema owner only.';

-- Called at every DROP: forgets the targets whose table or embedding column this drop removed.
-- SECURITY DEFINER because whoever may drop a table may not write our registry or the queue; it
-- only acts on the objects Postgres reports as dropped. It never fails the user's DROP.
CREATE FUNCTION embeddings_internal.forget_dropped_targets() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
BEGIN
    DELETE FROM embeddings.made_tables m
    USING pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND d.objid = m.store::oid;
    FOR t IN
        SELECT DISTINCT tg.* FROM embeddings.targets tg
        JOIN pg_event_trigger_dropped_objects() d
          ON d.classid = 'pg_class'::regclass AND d.objid IN (tg.source::oid, tg.store_table::oid)
        WHERE d.objsubid = 0                                     -- the table (or its store: a chunk or side table)
           OR (d.address_names[3] = tg.embedding_column::text   -- its embedding column
               AND d.objid = tg.store_table)                     -- (in its store)
    LOOP
        BEGIN
            PERFORM embeddings_internal.forget_target(t);
            RAISE NOTICE 'embeddings: target % is no longer watched: its table or embedding column was dropped', t.id;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'embeddings: could not forget dropped target % (%); run SELECT embeddings.unwatch_dropped()', t.id, SQLERRM;
        END;
    END LOOP;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'embeddings_forget_dropped') THEN
        NULL;  -- installed already (a reinstall over an existing schema)
    ELSIF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        CREATE EVENT TRIGGER embeddings_forget_dropped ON sql_drop
            EXECUTE FUNCTION embeddings_internal.forget_dropped_targets();
    ELSE
        RAISE NOTICE 'embeddings: not a superuser, so no event trigger forgets dropped watched tables; after dropping one, run SELECT embeddings.unwatch_dropped()';
    END IF;
END
$$;

-- Target t's key retyped (ALTER COLUMN ... TYPE ... USING): the keys queued before it are of the
-- old type, and may name no row now (0.4762 where an int is wanted; the row is 0 now). They are
-- marked `key_retyped`: a worker acknowledges such a key that is not of the key's type, where it
-- dead-letters one sent so by hand (worker/pipeline/messages.py). The rows without vectors are
-- queued again under their new keys by a backfill (62_backfill.sql); the triggers' inbox is
-- moved first, so that its keys are marked too.
CREATE FUNCTION embeddings_internal.follow_key_retype(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    lane text;
BEGIN
    PERFORM embeddings_internal.move_inbox(t.queue);
    FOREACH lane IN ARRAY ARRAY['live', 'backfill'] LOOP
        IF to_regclass(format('pgmq.%I', embeddings_internal.lane_table(t.queue, lane))) IS NOT NULL THEN
            EXECUTE format('UPDATE pgmq.%I SET message = message || ''{"key_retyped": true}''::jsonb'
                           ' WHERE message @> jsonb_build_object(''target'', $1)',
                           embeddings_internal.lane_table(t.queue, lane)) USING t.id;
        END IF;
    END LOOP;
    PERFORM embeddings_internal.start_backfill(t, false);
END
$$;

-- Schema changes of watched tables: renames and retypes of the table's key (a chunked target's
-- chunk table's key columns follow, a side table's too), content or embedding column, a rename or move
-- of its side or chunk table, a move to another schema, a
-- retyped content column, a new owner (the functions that run as the owner follow it),
-- partitions created, attached or detached, an ALTER of the functions generated for it. Target
-- `target_id`'s registration is brought in line with its table: column names re-read from the
-- attribute numbers, trigger functions and the owner's functions regenerated, triggers on every
-- partition (the keys of newly attached partitions' rows enqueued). What cannot be followed (the
-- content or key column dropped) becomes the target's `problem`: its triggers go, the worker
-- defers its jobs, status shows why; watch() again clears it.
CREATE FUNCTION embeddings_internal.refresh_target(target_id integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
    before embeddings.targets;
    rel regclass;
BEGIN
    SELECT * INTO before FROM embeddings.targets tg WHERE tg.id = target_id FOR UPDATE;
    IF NOT FOUND OR NOT EXISTS (SELECT FROM pg_class WHERE oid = before.source) THEN
        RETURN;
    END IF;
    UPDATE embeddings.targets tg
    SET key_columns = coalesce(r.key_names, tg.key_columns),
        key_types = coalesce(r.key_types, tg.key_types),
        content_column = coalesce(r.content_name, tg.content_column),
        embedding_column = coalesce(r.embedding_name, tg.embedding_column),
        problem = CASE
            WHEN r.key_names IS NULL OR cardinality(r.key_names) <> cardinality(tg.key_attnums) THEN
                format('its key column (%s) was dropped; watch the table again with a key', array_to_string(tg.key_columns, ', '))
            WHEN tg.content_function IS NULL AND r.content_name IS NULL THEN
                format('its content column %I was dropped; watch the table again with its new content', tg.content_column)
            WHEN tg.content_function IS NOT NULL AND NOT EXISTS (SELECT FROM pg_proc WHERE oid = tg.content_function) THEN
                'its content function was dropped; create it again and watch the table again'
            -- The table or the function changed hands: the function would run with the rights
            -- of a role that did not write it (watch()'s rule, embeddings_internal.check_content_function).
            WHEN tg.content_function IS NOT NULL AND EXISTS (
                    SELECT FROM pg_proc p JOIN pg_roles fr ON fr.oid = p.proowner
                    WHERE p.oid = tg.content_function AND NOT fr.rolsuper
                      AND p.proowner <> (SELECT c.relowner FROM pg_class c WHERE c.oid = before.source)) THEN
                format('its content function %s is owned by %s, not by the table''s owner %s: it would run with '
                       'the table owner''s rights; ALTER FUNCTION ... OWNER TO the table''s owner, then watch the table again',
                       tg.content_function,
                       (SELECT pg_get_userbyid(p.proowner) FROM pg_proc p WHERE p.oid = tg.content_function),
                       (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = before.source))
        END
    FROM (SELECT
            (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(before.key_attnums) WITH ORDINALITY AS k(n, i)
             JOIN pg_attribute a ON a.attrelid = before.source AND a.attnum = k.n AND NOT a.attisdropped) AS key_names,
            (SELECT array_agg(a.atttypid::regtype ORDER BY k.i) FROM unnest(before.key_attnums) WITH ORDINALITY AS k(n, i)
             JOIN pg_attribute a ON a.attrelid = before.source AND a.attnum = k.n AND NOT a.attisdropped) AS key_types,
            (SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = before.source AND a.attnum = before.content_attnum AND NOT a.attisdropped) AS content_name,
            (SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = before.source AND a.attnum = before.embedding_attnum AND NOT a.attisdropped) AS embedding_name
         ) r
    WHERE tg.id = target_id
    RETURNING tg.* INTO t;
    IF embeddings_internal.store_apart(t) AND t.problem IS NULL THEN
        PERFORM embeddings_internal.follow_store_keys(t);  -- renamed key columns (54_stores.sql)
        -- retyped ones: a store that cannot follow is a problem, not rows dead-lettered
        UPDATE embeddings.targets tg SET problem = embeddings_internal.follow_store_key_types(t)
        WHERE tg.id = target_id
        RETURNING tg.* INTO t;
    END IF;
    IF t.problem IS NULL AND before.problem IS NULL AND t.key_types IS DISTINCT FROM before.key_types THEN
        PERFORM embeddings_internal.follow_key_retype(t);
    END IF;
    IF t.problem IS NOT NULL AND t.problem IS DISTINCT FROM before.problem THEN
        RAISE WARNING 'embeddings: % is no longer embedded: %', embeddings_internal.target_name(t), t.problem;
    END IF;
    IF t.problem IS NOT NULL THEN
        -- (without a problem, install_triggers() regenerates the functions, which moves it too)
        PERFORM embeddings_internal.give_store_to_owner(t);
    END IF;
    FOREACH rel IN ARRAY embeddings_internal.install_triggers(t) LOOP
        PERFORM embeddings_internal.enqueue_rows(t, rel);  -- a partition attached with its rows
    END LOOP;
    -- A problem that went away (the table and its content function in one owner's hands again,
    -- after one ALTER ... OWNER and before the other): the triggers were off meanwhile, so rows
    -- written then were queued by nothing, and a row updated then may hold the vector of its
    -- old content. Every row is queued again.
    -- The jobs queued before are superseded by that, and may carry keys of the old type (a
    -- key retyped while its store could not follow: `1` where a uuid is now wanted), which a
    -- worker would dead-letter as invalid keys: they go.
    IF before.problem IS NOT NULL AND t.problem IS NULL THEN
        PERFORM embeddings_internal.drop_target_jobs(t.id, t.queue);
        PERFORM embeddings_internal.start_backfill(t, true);
    END IF;
    IF (t.key_columns, t.key_types, t.content_column, t.embedding_column, t.problem)
       IS DISTINCT FROM (before.key_columns, before.key_types, before.content_column, before.embedding_column, before.problem) THEN
        UPDATE embeddings.targets tg SET updated_at = now() WHERE tg.id = target_id;
    END IF;
    -- A new version when what a batch read under the old one depends on changed (its names, the
    -- table's too, which the registration does not store; types; owner: definition_digest()):
    -- such a batch is handed back, not failed. A change that leaves it alone (a partition
    -- made, a storage parameter) keeps the version: the batches in flight are written, and
    -- repeated ones never starve the target. The write transaction's table lock orders this
    -- before or after a write, never between.
    UPDATE embeddings.targets tg SET version = tg.version + 1, definition_digest = d.digest
    FROM (SELECT embeddings_internal.definition_digest(t) AS digest) d
    WHERE tg.id = target_id AND tg.definition_digest IS DISTINCT FROM d.digest;
END
$$;

-- Called at the end of every ALTER TABLE, CREATE TABLE, ALTER FUNCTION and ALTER SCHEMA:
-- refreshes the targets on the tables (or partition trees, content functions, generated
-- functions, schemas holding them) the command touched. It
-- never fails the user's DDL: a target that cannot be refreshed gets a problem and a WARNING.
-- Except these: renaming schema embeddings, embeddings_internal or pgmq is refused (the ALTER
-- rolls back). Every function of ours, the generated trigger functions among them, names its
-- tables by schema (fixed search paths): renamed, every write to a watched table (or every
-- read of the queues) would fail. No release renames them (migrations and downgrades create
-- and drop, never rename).
CREATE FUNCTION embeddings_internal.follow_schema_changes() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target_id integer;
    renamed name;
BEGIN
    SELECT n.nspname INTO renamed
    FROM pg_event_trigger_ddl_commands() c JOIN pg_namespace n ON n.oid = c.objid
    WHERE c.command_tag = 'ALTER SCHEMA' AND c.classid = 'pg_namespace'::regclass
      AND n.nspname NOT IN ('embeddings', 'embeddings_internal')
      AND (to_regnamespace('embeddings') IS NULL OR to_regnamespace('embeddings_internal') IS NULL);
    IF renamed IS NOT NULL THEN
        RAISE EXCEPTION 'embeddings: schema % holds embed-worker''s tables or functions, which name it by its name (embeddings or embeddings_internal): renamed, every write to a watched table would fail', renamed
            USING ERRCODE = 'object_in_use',
                  HINT = 'Keep its name. The schemas of watched tables may be renamed: their targets follow.';
    END IF;
    -- pgmq's schema (the extension's, or its SQL installed as plain SQL): ours and pgmq's own
    -- functions name it pgmq (its extension is not relocatable).
    SELECT n.nspname INTO renamed
    FROM pg_event_trigger_ddl_commands() c JOIN pg_namespace n ON n.oid = c.objid
    WHERE c.command_tag = 'ALTER SCHEMA' AND c.classid = 'pg_namespace'::regclass
      AND n.nspname <> 'pgmq' AND to_regnamespace('pgmq') IS NULL
      AND EXISTS (SELECT FROM pg_proc p WHERE p.pronamespace = n.oid AND p.proname = 'format_table_name');
    IF renamed IS NOT NULL THEN
        RAISE EXCEPTION 'embeddings: schema % is pgmq''s, which embed-worker''s queues are in and its functions name pgmq: renamed, the worker, sweep() and status would fail on every queue', renamed
            USING ERRCODE = 'object_in_use',
                  HINT = 'Keep its name while embed-worker is installed (`embed-worker downgrade base` removes it).';
    END IF;
    BEGIN
        -- Our own DDL (watch(), regenerating triggers) runs inside; it needs no following.
        IF current_setting('embeddings.following', true) = 'on' THEN
            RETURN;
        END IF;
        PERFORM set_config('embeddings.following', 'on', true);
        FOR target_id IN
            SELECT DISTINCT tg.id FROM embeddings.targets tg
            JOIN pg_event_trigger_ddl_commands() c
              ON (c.classid = 'pg_class'::regclass
                  AND (tg.source = c.objid OR tg.source IN (SELECT pg_partition_ancestors(c.objid))
                       -- its side or chunk table (renamed, moved: the functions name it)
                       OR c.objid = tg.store_table))
              OR (c.classid = 'pg_proc'::regclass AND c.objid = tg.content_function)
              -- ALTER SCHEMA ... RENAME (or OWNER) of the schema of its table, chunk table or
              -- content function: the generated SQL names them by their schema.
              OR (c.classid = 'pg_namespace'::regclass
                  AND (c.objid IN (SELECT r.relnamespace FROM pg_class r WHERE r.oid IN (tg.source, tg.store_table))
                       OR c.objid = (SELECT p.pronamespace FROM pg_proc p WHERE p.oid = tg.content_function)))
              -- The functions generated for it, which its table's owner owns and may ALTER (to
              -- SECURITY INVOKER, say): regenerated as they must be (sql/32_access.sql).
              OR (c.classid = 'pg_proc'::regclass
                  AND EXISTS (SELECT FROM pg_proc p WHERE p.oid = c.objid
                              AND p.proname ~ ('^embeddings_' || tg.id || '_[a-z_]+$')))
            ORDER BY tg.id
        LOOP
            BEGIN
                PERFORM embeddings_internal.refresh_target(target_id);
            EXCEPTION WHEN OTHERS THEN
                RAISE WARNING 'embeddings: could not follow the change for target % (%)', target_id, SQLERRM;
                UPDATE embeddings.targets tg SET problem = 'could not follow a schema change: ' || SQLERRM
                WHERE tg.id = target_id;
            END;
        END LOOP;
        PERFORM set_config('embeddings.following', 'off', true);
    EXCEPTION WHEN OTHERS THEN
        PERFORM set_config('embeddings.following', 'off', true);
        RAISE WARNING 'embeddings: could not follow a schema change (%)', SQLERRM;
    END;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'embeddings_follow_schema_changes'
               AND evttags @> ARRAY['ALTER SCHEMA']) THEN
        NULL;  -- installed already (a reinstall over an existing schema)
    ELSIF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        -- One that does not follow ALTER SCHEMA (an older install's) is replaced.
        DROP EVENT TRIGGER IF EXISTS embeddings_follow_schema_changes;
        CREATE EVENT TRIGGER embeddings_follow_schema_changes ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'ALTER FUNCTION', 'ALTER SCHEMA')
            EXECUTE FUNCTION embeddings_internal.follow_schema_changes();
    ELSE
        RAISE NOTICE 'embeddings: not a superuser, so no event trigger follows renames of watched tables'' columns; after one, call embeddings.watch() again';
    END IF;
END
$$;

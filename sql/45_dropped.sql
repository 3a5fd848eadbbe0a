-- Watched tables (or their embedding columns) that get dropped: their targets are forgotten
-- with the drop, so that no worker dead-letters their queued jobs and `status` stays clean.

-- Forgets every target whose table, or whose embedding column (in its chunk table for a chunked
-- target), no longer exists; returns how
-- many. Run it by hand where the event trigger below could not be installed (it needs a
-- superuser). A renamed embedding column counts as gone: re-watch the table under its new name.
CREATE FUNCTION embeddings.unwatch_dropped() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t embeddings.targets;
    forgotten integer := 0;
BEGIN
    FOR t IN
        SELECT * FROM embeddings.targets tg
        WHERE NOT EXISTS (
            SELECT FROM pg_attribute a
            WHERE a.attrelid = coalesce(tg.chunk_table, tg.source) AND a.attname = tg.embedding_column
              AND a.attnum > 0 AND NOT a.attisdropped)
        ORDER BY tg.id
    LOOP
        PERFORM embeddings.forget_target(t);
        RAISE NOTICE 'embeddings: target % is no longer watched: its table or embedding column is gone', t.id;
        forgotten := forgotten + 1;
    END LOOP;
    RETURN forgotten;
END
$$;

-- Called at every DROP: forgets the targets whose table or embedding column this drop removed.
-- SECURITY DEFINER because whoever may drop a table may not write our registry or the queue; it
-- only acts on the objects Postgres reports as dropped. It never fails the user's DROP.
CREATE FUNCTION embeddings.forget_dropped_targets() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
BEGIN
    FOR t IN
        SELECT DISTINCT tg.* FROM embeddings.targets tg
        JOIN pg_event_trigger_dropped_objects() d
          ON d.classid = 'pg_class'::regclass AND d.objid IN (tg.source::oid, tg.chunk_table::oid)
        WHERE d.objsubid = 0                                     -- the table (or chunk table)
           OR d.address_names[3] = tg.embedding_column::text     -- its embedding column
    LOOP
        BEGIN
            PERFORM embeddings.forget_target(t);
            RAISE NOTICE 'embeddings: target % is no longer watched: its table or embedding column was dropped', t.id;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'embeddings: could not forget dropped target % (%); run SELECT embeddings.unwatch_dropped()', t.id, SQLERRM;
        END;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION embeddings.forget_dropped_targets() FROM PUBLIC;

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        CREATE EVENT TRIGGER embeddings_forget_dropped ON sql_drop
            EXECUTE FUNCTION embeddings.forget_dropped_targets();
    ELSE
        RAISE NOTICE 'embeddings: not a superuser, so no event trigger forgets dropped watched tables; after dropping one, run SELECT embeddings.unwatch_dropped()';
    END IF;
END
$$;

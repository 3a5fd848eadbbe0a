-- Removes everything embed-worker installed: the triggers on watched tables, the queues it
-- created (a queue that existed before it keeps its messages, without the notification trigger
-- an older install may have put on it), and the schemas `embeddings` and `embeddings_internal`.
-- User tables, their rows, embedding columns and HNSW indexes stay. Extensions stay too: other code may use them,
-- and the embedding columns need `vector`. Objects of others that depend on the schemas (a user's
-- view over embeddings.status) stop it, named, before anything is dropped for good.

DROP EVENT TRIGGER IF EXISTS embeddings_forget_dropped;
DROP EVENT TRIGGER IF EXISTS embeddings_follow_schema_changes;

DO $$
DECLARE
    t embeddings.targets;
    q embeddings.queues;
BEGIN
    IF to_regclass('cron.job') IS NOT NULL THEN
        PERFORM cron.unschedule(jobid) FROM cron.job WHERE jobname LIKE 'embeddings-%';
    END IF;
    FOR t IN SELECT * FROM embeddings.targets LOOP
        PERFORM embeddings_internal.drop_access(t);  -- the functions owned by the tables' owners
        IF EXISTS (SELECT FROM pg_class WHERE oid = t.source) THEN
            PERFORM embeddings_internal.drop_triggers(t);
        END IF;
    END LOOP;
    FOR q IN SELECT * FROM embeddings.queues LOOP
        IF q.created_here THEN
            PERFORM pgmq.drop_queue(q.name);
        ELSE
            EXECUTE format('DROP TRIGGER IF EXISTS embeddings_notify_workers ON pgmq.%I',
                           pgmq.format_table_name(q.name, 'q'));
        END IF;
    END LOOP;
END
$$;

-- What still depends on the schemas now is not ours (ours went above): a view of the user's over
-- embeddings.status, a function calling ours, a foreign key to our tables. DROP SCHEMA ... CASCADE
-- would take it along without a word, so the downgrade stops here, naming each, and its
-- transaction undoes the above (worker/schema/install.py: uninstall; migrate refuses the same,
-- worker/schema/code.py: refuse_foreign_dependents). A dependent that belongs to an object of
-- ours (a view's rewrite rule, a table's constraint, default or trigger) goes with it.
DO $$
DECLARE
    listed text;
BEGIN
    WITH schemas AS (
        SELECT n.oid FROM pg_namespace n WHERE n.nspname IN ('embeddings', 'embeddings_internal')
    ), ours AS (
        SELECT 'pg_namespace'::regclass AS classid, s.oid AS objid FROM schemas s
        UNION ALL
        SELECT 'pg_class'::regclass, c.oid FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM schemas)
        UNION ALL
        SELECT 'pg_proc'::regclass, p.oid FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM schemas)
        UNION ALL
        SELECT 'pg_type'::regclass, t.oid FROM pg_type t WHERE t.typnamespace IN (SELECT oid FROM schemas)
    ), dependents AS (
        SELECT d.*, CASE d.classid
                        WHEN 'pg_rewrite'::regclass THEN (SELECT r.ev_class FROM pg_rewrite r WHERE r.oid = d.objid)
                        WHEN 'pg_trigger'::regclass THEN (SELECT g.tgrelid FROM pg_trigger g WHERE g.oid = d.objid)
                        WHEN 'pg_attrdef'::regclass THEN (SELECT a.adrelid FROM pg_attrdef a WHERE a.oid = d.objid)
                        WHEN 'pg_constraint'::regclass THEN (SELECT k.conrelid FROM pg_constraint k WHERE k.oid = d.objid)
                        WHEN 'pg_policy'::regclass THEN (SELECT y.polrelid FROM pg_policy y WHERE y.oid = d.objid)
                    END AS home
        FROM pg_depend d JOIN ours o ON o.classid = d.refclassid AND o.objid = d.refobjid
        WHERE d.deptype IN ('n', 'a')
    )
    SELECT string_agg(format(E'\n  %s (uses %s)', f.dependent, f.uses), '' ORDER BY f.dependent) INTO listed
    FROM (SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS dependent,
                 string_agg(DISTINCT pg_describe_object(d.refclassid, d.refobjid, 0), ', ') AS uses
          FROM dependents d
          WHERE (d.classid, d.objid) NOT IN (SELECT classid, objid FROM ours)
            AND (d.home IS NULL OR d.home NOT IN (SELECT objid FROM ours WHERE classid = 'pg_class'::regclass))
          GROUP BY 1) f;
    IF listed IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'dependent_objects_still_exist',
            MESSAGE = 'cannot remove the embeddings schema: these objects depend on it, and would be '
                      'dropped with it:' || listed,
            HINT = E'Drop them (psql\'s \\sv and \\sf print their definitions), then downgrade again; '
                   'nothing was changed';
    END IF;
END
$$;

DROP SCHEMA embeddings CASCADE;
DROP SCHEMA IF EXISTS embeddings_internal CASCADE;  -- (IF EXISTS: an older install has none)

-- Removes everything embed-worker installed: the triggers on watched tables, the queues it
-- created (a queue that existed before it keeps its messages, without the notification trigger
-- an older install may have put on it), and the schemas `embeddings` and `embeddings_internal`.
-- User tables, their rows, embedding columns and HNSW indexes stay. Extensions stay too: other code may use them,
-- and the embedding columns need `vector`.

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

DROP SCHEMA embeddings CASCADE;
DROP SCHEMA IF EXISTS embeddings_internal CASCADE;  -- (IF EXISTS: an older install has none)

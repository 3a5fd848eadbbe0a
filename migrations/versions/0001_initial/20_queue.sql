-- Queueing: how jobs get into pgmq and how workers hear about them.
--
-- A job message is {"target": <targets.id>, "keys": [<primary key>, ...]} with up to
-- keys_per_message() keys: one message per row would cost a bulk INSERT ~2.5x its own time,
-- one per 128 keys ~1.3x (measured on bulk INSERTs of 100k rows). Messages that the worker re-sends after a partial failure also carry
-- "attempts" (attempts already spent on those keys). Messages in the Supabase guide's shape
-- ({"id", "schema", "table", "contentFunction", "embeddingColumn"}) share the queue.

CREATE FUNCTION embeddings.keys_per_message() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 128;

-- Wakes listening workers once per statement that adds messages (NOTIFY folds duplicates
-- within a transaction), whoever enqueued them: our triggers, pgmq.send, the Supabase guide.
CREATE FUNCTION embeddings.notify_workers() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('embeddings_jobs', TG_ARGV[0]);
    RETURN NULL;
END
$$;

-- Creates the pgmq queue unless it exists, and the notification trigger on it.
CREATE FUNCTION embeddings.ensure_queue(queue_name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    created boolean := false;
BEGIN
    IF EXISTS (SELECT FROM embeddings.queues WHERE name = queue_name) THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT FROM pgmq.meta m WHERE m.queue_name = ensure_queue.queue_name) THEN
        PERFORM pgmq.create(queue_name);
        created := true;
    END IF;
    EXECUTE format(
        'CREATE TRIGGER embeddings_notify_workers AFTER INSERT ON pgmq.%I '
        'FOR EACH STATEMENT EXECUTE FUNCTION embeddings.notify_workers(%L)',
        pgmq.format_table_name(queue_name, 'q'), queue_name);
    INSERT INTO embeddings.queues (name, created_here) VALUES (queue_name, created);
END
$$;

-- Sends `keys` (primary keys of one target's rows) as job messages of up to
-- keys_per_message() keys each. SECURITY DEFINER so that roles writing to watched tables need
-- no rights on pgmq; it only ever sends well-formed jobs for registered targets.
CREATE FUNCTION embeddings.enqueue_keys(target_id integer, keys anyarray, delay integer DEFAULT 0)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queue_name text;
    total integer := coalesce(cardinality(keys), 0);
    per_message integer := embeddings.keys_per_message();
BEGIN
    IF total = 0 THEN
        RETURN 0;
    END IF;
    SELECT t.queue INTO queue_name FROM embeddings.targets t WHERE t.id = target_id;
    IF queue_name IS NULL THEN
        RAISE EXCEPTION 'embeddings: no target with id %', target_id;
    END IF;
    -- Slicing an array is several times cheaper than grouping rows into chunks.
    PERFORM pgmq.send_batch(
        queue_name,
        ARRAY(SELECT jsonb_build_object('target', target_id, 'keys', to_jsonb(keys[i : i + per_message - 1]))
              FROM generate_series(1, total, per_message) AS i),
        delay);
    RETURN (total + per_message - 1) / per_message;
END
$$;
GRANT EXECUTE ON FUNCTION embeddings.enqueue_keys(integer, anyarray, integer) TO PUBLIC;

SELECT embeddings.ensure_queue('embedding_jobs');

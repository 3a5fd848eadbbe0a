-- Queueing: how jobs get into pgmq and how workers hear about them.
--
-- A job message carries up to keys_per_message() row keys of one target, in one of two shapes:
--   {"target": <targets.id>, "columns": [<column>, ...]}  what the triggers send: one entry per
--       key column in key-column order, all of one length, the i-th key made of each column's
--       i-th value. An integer column is its Postgres array text ("{1,2,3}"); any other a JSON
--       array of its values as to_jsonb() writes them.
--   {"target": <targets.id>, "keys": [<row key>, ...]}  a row key is the key column's JSON value,
--       or for a composite key a JSON array of them in key-column order (watch()'s backfill,
--       sweep(), retries; and every job queued before the column shape existed).
-- One message per row would cost a bulk INSERT ~2.5x its own time, one per 128 keys ~1.3x
-- (measured on bulk INSERTs of 100k rows). Messages that the worker re-sends after a partial
-- failure also carry "attempts" (attempts already spent on those keys). Messages in the
-- Supabase guide's shape ({"id", "schema", "table", "contentFunction", "embeddingColumn"})
-- share the queue.

CREATE FUNCTION embeddings.keys_per_message() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 128;

-- How many row keys a job message carries (a message of another shape: 1).
CREATE FUNCTION embeddings.message_key_count(message jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN jsonb_typeof(message -> 'keys') = 'array' THEN jsonb_array_length(message -> 'keys')
    WHEN jsonb_typeof(message -> 'columns' -> 0) = 'array' THEN jsonb_array_length(message -> 'columns' -> 0)
    WHEN jsonb_typeof(message -> 'columns' -> 0) = 'string' THEN  -- '{1,2,3}': commas + 1
        length(message -> 'columns' ->> 0) - length(replace(message -> 'columns' ->> 0, ',', '')) + 1
    ELSE 1
END;

-- The row keys of a job message of either of our shapes, each as the "keys" shape writes it (a
-- JSON scalar, or a JSON array for a composite key), in message order.
CREATE FUNCTION embeddings.message_keys(message jsonb) RETURNS SETOF jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT k.value FROM jsonb_array_elements(
        CASE WHEN jsonb_typeof(message -> 'keys') = 'array' THEN message -> 'keys' END) AS k
    UNION ALL
    (SELECT CASE WHEN jsonb_array_length(message -> 'columns') = 1 THEN v.key -> 0 ELSE v.key END
     FROM (SELECT e.n, jsonb_agg(e.value ORDER BY c.i) AS key
           FROM jsonb_array_elements(
                    CASE WHEN jsonb_typeof(message -> 'columns') = 'array' THEN message -> 'columns' END)
                    WITH ORDINALITY AS c(col, i),
                LATERAL (SELECT a.value, a.n FROM jsonb_array_elements(
                             CASE WHEN jsonb_typeof(c.col) = 'array' THEN c.col END) WITH ORDINALITY AS a(value, n)
                         UNION ALL
                         SELECT b.value::jsonb, b.n FROM unnest(string_to_array(btrim(
                             CASE WHEN jsonb_typeof(c.col) = 'string' THEN c.col #>> '{}' END, '{}'), ','))
                             WITH ORDINALITY AS b(value, n)) AS e
           GROUP BY e.n) AS v
     ORDER BY v.n)
$$;

-- Workers waiting for jobs: a worker with nothing to do registers here before it re-checks the
-- queue and sleeps on LISTEN, and leaves when it finds work. Unlogged: after a crash it is
-- empty, and waiting workers register again within one poll interval.
CREATE UNLOGGED TABLE IF NOT EXISTS embeddings.idle_workers (
    queue text NOT NULL,
    pid   integer NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, pid)
);
GRANT SELECT ON embeddings.idle_workers TO PUBLIC;

-- Wakes waiting workers when a statement adds messages, whoever enqueued them: our triggers,
-- pgmq.send, the Supabase guide. Only when some worker waits: a NOTIFY serialises every
-- committing writer on one lock (it cost a third of a single-row INSERT's throughput), and a
-- busy worker reads the queue again anyway. A row trigger, not a statement trigger: our
-- triggers run their INSERT into the queue for every statement on a watched table, and one
-- that adds no message (an UPDATE that changes no content) then costs nothing here (a
-- statement trigger cost such an UPDATE ~5 µs, a quarter of its triggers' cost); a statement
-- adds one message per 128 rows, so a bulk one pays a few calls. A worker registers (worker_idle) before its last
-- look at the queue, so a job committed after that look always finds it registered; at worst
-- a race with a writer's snapshot delays a job by one poll interval, never loses it.
CREATE FUNCTION embeddings.notify_workers() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM embeddings.idle_workers w WHERE w.queue = TG_ARGV[0]) THEN
        PERFORM pg_notify('embeddings_jobs', TG_ARGV[0]);
    END IF;
    RETURN NULL;
END
$$;

-- The calling worker (its session) waits for jobs of `queue_name`; forgets workers that are
-- gone. SECURITY DEFINER: worker roles need no rights on the table; a session can only
-- register or remove itself (at worst, cause NOTIFYs).
CREATE FUNCTION embeddings.worker_idle(queue_name text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM embeddings.idle_workers w
    WHERE NOT EXISTS (SELECT FROM pg_stat_activity a WHERE a.pid = w.pid);
    INSERT INTO embeddings.idle_workers (queue, pid) VALUES (queue_name, pg_backend_pid())
    ON CONFLICT DO NOTHING;
$$;

-- The calling worker has work again.
CREATE FUNCTION embeddings.worker_busy(queue_name text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM embeddings.idle_workers w WHERE w.queue = queue_name AND w.pid = pg_backend_pid();
$$;

-- Creates the pgmq queue unless it exists, and the notification trigger on it; for a live
-- queue, its backfill lane too (embeddings.backfill_queue()), granted to the worker roles.
CREATE FUNCTION embeddings.ensure_queue(queue_name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lane text;
BEGIN
    PERFORM embeddings.create_queue(queue_name, NULL);
    -- lanes: BEGIN (every live queue has a backfill queue beside it)
    IF (SELECT q.live_queue FROM embeddings.queues q WHERE q.name = queue_name) IS NULL THEN
        lane := embeddings.backfill_queue(queue_name);
        -- Not while the schema is being installed (80_roles.sql grants every queue then).
        IF embeddings.create_queue(lane, queue_name)
           AND to_regprocedure('embeddings.grant_worker_queue(name, text)') IS NOT NULL THEN
            PERFORM embeddings.grant_worker_queue(r.role_name, lane) FROM embeddings.worker_roles r;
        END IF;
    END IF;
    -- lanes: END
END
$$;

-- Registers pgmq queue `queue_name` (created unless it exists) with its notification trigger;
-- `live_queue` names the live queue a backfill lane serves: its trigger wakes the workers
-- waiting on that one. Returns false when it was registered already; a registered queue gets
-- back a missing pgmq queue or trigger (a code reinstall drops the trigger with notify_workers()).
CREATE FUNCTION embeddings.create_queue(queue_name text, live_queue text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    created boolean := false;
    registered embeddings.queues;
BEGIN
    SELECT * INTO registered FROM embeddings.queues q WHERE q.name = queue_name;
    IF NOT EXISTS (SELECT FROM pgmq.meta m WHERE m.queue_name = create_queue.queue_name) THEN
        PERFORM pgmq.create(queue_name);
        created := true;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_trigger g
                   WHERE g.tgrelid = format('pgmq.%I', pgmq.format_table_name(queue_name, 'q'))::regclass
                     AND g.tgname = 'embeddings_notify_workers') THEN
        EXECUTE format(
            'CREATE TRIGGER embeddings_notify_workers AFTER INSERT ON pgmq.%I '
            'FOR EACH ROW EXECUTE FUNCTION embeddings.notify_workers(%L)',
            pgmq.format_table_name(queue_name, 'q'),
            coalesce(CASE WHEN registered.name IS NOT NULL THEN registered.live_queue ELSE live_queue END, queue_name));
    END IF;
    IF registered.name IS NOT NULL THEN
        RETURN false;
    END IF;
    INSERT INTO embeddings.queues (name, created_here, live_queue) VALUES (queue_name, created, live_queue);
    RETURN true;
END
$$;

-- lanes: BEGIN
-- The backfill lane of live queue `queue_name`: `<queue>_backfill` (shortened with a hash where
-- that would pass pgmq's 47 characters). The application's writes (the triggers) go to the live
-- queue; watch()'s initial enqueue, model changes, sweep() and `failures --retry` go here.
-- Workers read the live queue first, so a row the application writes never waits behind a
-- backfill (worker/lanes.py).
CREATE FUNCTION embeddings.backfill_queue(queue_name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN length(queue_name) <= 38 THEN queue_name || '_backfill'
                ELSE left(queue_name, 28) || '_' || left(md5(queue_name), 8) || '_backfill' END
$$;
-- lanes: END

-- Sends `keys` (row keys of one target: scalars, or JSON arrays for composite keys) as job
-- messages of up to keys_per_message() keys each, to the target's lane `lane`: 'live', or
-- 'backfill' (watch()'s initial enqueue, sweep()), or 'change' (a model change's jobs: backfill
-- lane, marked "shadow": only the new model's vector is missing). The triggers insert into the
-- live queue themselves. SECURITY DEFINER so that its callers need no rights on pgmq, and so
-- executable by no one but its owner unless granted: any role that could call it could flood
-- any target's queue.
CREATE FUNCTION embeddings.enqueue_keys(target_id integer, keys anyarray, delay integer DEFAULT 0,
                                        lane text DEFAULT 'live')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queue_name text;
    total integer := coalesce(cardinality(keys), 0);
    per_message integer := embeddings.keys_per_message();
    extra jsonb := CASE WHEN lane = 'change' THEN '{"shadow": true}'::jsonb ELSE '{}'::jsonb END;
    all_keys jsonb;
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
    -- Slicing an array is several times cheaper than grouping rows into chunks; a jsonb array,
    -- since slicing a Postgres array of variable-width keys (text, composite keys' jsonb) walks
    -- it from its start each time: O(n^2) for n keys (30_triggers.sql).
    all_keys := to_jsonb(keys);
    PERFORM pgmq.send_batch(
        queue_name,
        ARRAY(SELECT jsonb_build_object('target', target_id, 'keys', jsonb_path_query_array(
                         all_keys, '$[$a to $b]', jsonb_build_object('a', i - 1, 'b', i + per_message - 2))) || extra
              FROM generate_series(1, total, per_message) AS i),
        delay);
    RETURN (total + per_message - 1) / per_message;
END
$$;
REVOKE ALL ON FUNCTION embeddings.enqueue_keys(integer, anyarray, integer, text) FROM PUBLIC;

SELECT embeddings.ensure_queue('embedding_jobs');

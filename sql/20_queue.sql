-- Queueing: how jobs get into pgmq and how workers hear about them.
--
-- A job message carries up to keys_per_message() row keys of one target, in one of two shapes:
--   {"target": <targets.id>, "columns": [<column>, ...]}  what the triggers send: one entry per
--       key column in key-column order, all of one length, the i-th key made of each column's
--       i-th value. An integer column is its Postgres array text ("{1,2,3}"); any other a JSON
--       array of its values as to_jsonb() writes them.
--   {"target": <targets.id>, "keys": [<row key>, ...]}  a row key is the key column's JSON value,
--       or for a composite key a JSON array of them in key-column order (watch()'s backfill,
--       sweep(), retries).
-- Many keys per message: one message per row costs a bulk INSERT about twice what one per 128
-- keys does (docs/performance.md, "Figures behind the code's choices"). Messages that the worker re-sends after a partial
-- failure also carry "attempts" (attempts already spent on those keys). Messages in the
-- Supabase guide's shape ({"id", "schema", "table", "contentFunction", "embeddingColumn"})
-- share the queue.

CREATE FUNCTION embeddings_internal.keys_per_message() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 128;

-- How many row keys a job message carries (a message of another shape: 1, as it is one job a worker
-- takes: the Supabase guide's carries a row; one no worker reads, `{}` or NULL, is dead-lettered
-- by the worker that takes it; docs/sql.md). Like every function
-- with a SQL-standard body (RETURN, BEGIN ATOMIC), its names were bound when migrate created it
-- (under pg_catalog only), so it needs no SET search_path, which would keep the planner from
-- inlining it into the statements that call it once per message (status, sweep, the inbox's move).
CREATE FUNCTION embeddings.message_key_count(message jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN jsonb_typeof(message -> 'keys') = 'array' THEN jsonb_array_length(message -> 'keys')
    WHEN jsonb_typeof(message -> 'columns' -> 0) = 'array' THEN jsonb_array_length(message -> 'columns' -> 0)
    WHEN jsonb_typeof(message -> 'columns' -> 0) = 'string' THEN  -- '{1,2,3}': commas + 1
        length(message -> 'columns' ->> 0) - length(replace(message -> 'columns' ->> 0, ',', '')) + 1
    ELSE 1
END;
COMMENT ON FUNCTION embeddings.message_key_count IS
    'How many row keys a queued job message carries (for queue-length autoscalers such as KEDA).';

-- The row keys of a job message of either of our shapes, each as the "keys" shape writes it (a
-- JSON scalar, or a JSON array for a composite key), in message order.
CREATE FUNCTION embeddings_internal.message_keys(message jsonb) RETURNS SETOF jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
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
     ORDER BY v.n);
END;

-- How workers hear about jobs: they look. Nothing of ours runs in the application's
-- transaction except the INSERT of its keys: no NOTIFY (Postgres refuses PREPARE TRANSACTION
-- after one, so XA/JTA applications could not write a watched table) and no read of state that
-- other sessions set (a registry of waiting workers let any login, or a worker that exited,
-- make every write NOTIFY).
--
-- A worker with nothing in flight calls wait_for_jobs(), which returns as soon as the queue may
-- have work for it: keys in the inbox for one of the queue's targets, or a job of the live queue
-- or (`backfill`) of its backfill lane that is visible, including one whose visibility timeout
-- runs out while it waits (a retry, a deferral, the lease of a worker that died). It looks every
-- `poll_ms` ms, but runs its queries only when some transaction has ended since its last look
-- (the current snapshot changed: a commit or rollback anywhere, COMMIT PREPARED included) or
-- that timeout has come: on a quiet database a look costs a snapshot, and the wake-up from the
-- sleep is most of the cost. With timeout_ms = 0 it looks once. A call holds its snapshot's xmin
-- (as any statement does): callers keep calls short (the worker: at most a second) and call
-- again. Runs with its caller's rights: the worker's role may read its queues and the inbox.
CREATE FUNCTION embeddings.wait_for_jobs(queue_name text, timeout_ms integer, backfill boolean DEFAULT true,
                                         poll_ms integer DEFAULT 2)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => greatest(timeout_ms, 0) / 1000.0);
    live_table text;
    backfill_table text;
    next_job_query text;
    next_job timestamptz;
    looked_at text;
    snapshot text;
BEGIN
    -- A queue that is none is said so (else the EXECUTE below fails with pgmq's table names).
    IF queue_name IS NULL THEN
        RAISE EXCEPTION 'embeddings.wait_for_jobs(): queue_name must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    live_table := format('pgmq.%I', embeddings_internal.lane_table(queue_name, 'live'));
    backfill_table := format('pgmq.%I', embeddings_internal.lane_table(queue_name, 'backfill'));
    IF to_regclass(live_table) IS NULL OR (backfill AND to_regclass(backfill_table) IS NULL) THEN
        RAISE EXCEPTION 'embeddings.wait_for_jobs(): no queue "%"%', queue_name,
                CASE WHEN to_regclass(live_table) IS NULL THEN '' ELSE ' with a backfill lane (backfill => false waits on it alone)' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The queues are those watch() made (embeddings.targets.queue; embedding_jobs unless named).';
    END IF;
    -- The earliest visibility timeout of either lane: visible now when it has passed.
    next_job_query := format('SELECT least((SELECT min(q.vt) FROM %s q), %s)', live_table,
                             CASE WHEN backfill THEN format('(SELECT min(b.vt) FROM %s b)', backfill_table) ELSE 'NULL' END);
    LOOP
        snapshot := pg_current_snapshot()::text;
        IF snapshot IS DISTINCT FROM looked_at OR clock_timestamp() >= next_job THEN
            looked_at := snapshot;
            IF EXISTS (SELECT FROM embeddings.inbox i JOIN embeddings.targets t ON t.id = i.target
                       WHERE t.queue = queue_name) THEN
                RETURN true;
            END IF;
            EXECUTE next_job_query INTO next_job;
            IF next_job <= clock_timestamp() THEN
                RETURN true;
            END IF;
        END IF;
        EXIT WHEN clock_timestamp() >= deadline;
        PERFORM pg_sleep(least(greatest(poll_ms, 1) / 1000.0,
                               extract(epoch FROM deadline - clock_timestamp())));
    END LOOP;
    RETURN false;
END
$$;
COMMENT ON FUNCTION embeddings.wait_for_jobs IS
    'Waits until a queue may have work for a worker, or a timeout. Schema owner and worker roles.';

-- Creates the pgmq queue unless it exists; for a live queue, its backfill lane too
-- (embeddings_internal.backfill_queue()), granted to the worker roles.
CREATE FUNCTION embeddings_internal.ensure_queue(queue_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lane text;
BEGIN
    PERFORM embeddings_internal.create_queue(queue_name, NULL);
    -- lanes: BEGIN (every live queue has a backfill queue beside it)
    IF (SELECT q.live_queue FROM embeddings.queues q WHERE q.name = queue_name) IS NULL THEN
        lane := embeddings_internal.backfill_queue(queue_name);
        -- Not while the schema is being installed (80_roles.sql grants every queue then).
        IF embeddings_internal.create_queue(lane, queue_name)
           AND to_regprocedure('embeddings_internal.grant_worker_queue(name, text)') IS NOT NULL THEN
            PERFORM embeddings_internal.grant_worker_queue(r.role_name, lane) FROM embeddings_internal.worker_role_names() AS r(role_name);
        END IF;
    END IF;
    -- lanes: END
END
$$;

-- What pgmq grants on a queue's tables goes: pgmq 1.13 grants SELECT on every table it creates
-- in schema pgmq to `pg_monitor` (its default privileges there), so that any monitoring login
-- (postgres_exporter, Datadog, pganalyze) would read the row keys of every queued and
-- dead-lettered job. Only the roles docs/security.md names read ours: whatever PUBLIC or a role
-- built into Postgres (names starting with "pg_", which only Postgres makes) holds on the queue
-- table, its archive and its message id sequence is revoked. Grants an operator gave a role of
-- its own stay; pgmq's other tables (its registry of queues) hold no keys and are left as they are.
CREATE FUNCTION embeddings_internal.revoke_pgmq_grants(queue_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    queue_table regclass := pg_catalog.to_regclass(pg_catalog.format('pgmq.%I', pgmq.format_table_name(queue_name, 'q')));
    archive_table regclass := pg_catalog.to_regclass(pg_catalog.format('pgmq.%I', pgmq.format_table_name(queue_name, 'a')));
    id_sequence regclass;
    held record;
BEGIN
    IF queue_table IS NOT NULL THEN
        id_sequence := pg_catalog.to_regclass(pg_catalog.pg_get_serial_sequence(queue_table::text, 'msg_id'));
    END IF;
    FOR held IN
        SELECT DISTINCT c.oid::regclass AS relation,
               CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r.rolname) END AS grantee
        FROM pg_catalog.pg_class c
        CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
        LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
        -- (the three named by variables: with a name looked up in the list, pg_class was read
        -- whole, 8 ms a queue beside 1,000 watched tables, twice in every watch())
        WHERE c.oid IN (queue_table, id_sequence, archive_table)
          AND (a.grantee = 0 OR r.rolname LIKE E'pg\\_%')
        ORDER BY 1, 3
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON %s %s FROM %s', held.kind, held.relation, held.grantee);
    END LOOP;
END
$$;

-- Registers pgmq queue `queue_name` (created unless it exists); `live_queue` names the live
-- queue a backfill lane serves. Returns false when it was registered already; a registered
-- queue gets back a missing pgmq queue, and loses what pgmq granted (on every install and
-- upgrade too: sql/99_regenerate.sql).
CREATE FUNCTION embeddings_internal.create_queue(queue_name text, live_queue text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    created boolean := false;
    registered embeddings.queues;
BEGIN
    SELECT * INTO registered FROM embeddings.queues q WHERE q.name = queue_name;
    IF NOT EXISTS (SELECT FROM pgmq.meta m WHERE m.queue_name = create_queue.queue_name) THEN
        PERFORM pgmq.create(queue_name);
        created := true;
    END IF;
    PERFORM embeddings_internal.revoke_pgmq_grants(queue_name);
    -- lanes: BEGIN
    -- A backfill lane is read a target at a time, in turns (worker/queries.sql:
    -- read_jobs_by_target; backfill_next()): its jobs by target, oldest first. Made here, so
    -- on every install and upgrade for each lane registered before.
    IF coalesce(registered.live_queue, live_queue) IS NOT NULL THEN
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I ((message OPERATOR(pg_catalog.->) ''target''), msg_id)',
                       pgmq.format_table_name(queue_name, 'q') || '_target_idx', pgmq.format_table_name(queue_name, 'q'));
    END IF;
    -- lanes: END
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
CREATE FUNCTION embeddings_internal.backfill_queue(queue_name text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN length(queue_name) <= 38 THEN queue_name || '_backfill'
                ELSE left(queue_name, 28) || '_' || left(md5(queue_name), 8) || '_backfill' END
$$;

-- The pgmq table (in schema pgmq) that holds the jobs of lane `lane` ('live' or 'backfill') of
-- live queue `queue_name`, by pgmq's own naming rule (pgmq.format_table_name()): the one place
-- that says where a lane's jobs are, for every function that reads or changes them in their
-- table (wait_for_jobs(), release_held(), dispatch_batches(), watch()'s and unwatch()'s moves
-- and removals, a model change's, sweep()'s and a backfill's reads) and doctor's check of
-- what the worker role may do. PL/pgSQL: its one expression runs without an executor per call,
-- as a SQL function that cannot be inlined (it sets the settings it is called under) does not
-- (7-15 us a call against 38-61 us: the functions that name a lane per step or per status row
-- would have paid the difference).
CREATE FUNCTION embeddings_internal.lane_table(queue_name text, lane text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
BEGIN
    RETURN pgmq.format_table_name(CASE lane WHEN 'live' THEN queue_name
                                            WHEN 'backfill' THEN embeddings_internal.backfill_queue(queue_name) END,
                                  'q');
END
$$;
-- lanes: END

-- Sends `keys` (row keys of one target: scalars, or JSON arrays for composite keys) as job
-- messages of up to keys_per_message() keys each, to the target's lane `lane`: 'live', or
-- 'backfill' (watch()'s initial enqueue, sweep()), or 'change' (a model change's jobs: backfill
-- lane, marked "shadow": only the new model's vector is missing). The triggers insert into the
-- live queue themselves. SECURITY DEFINER so that its callers need no rights on pgmq, and so
-- executable by no one but its owner unless granted: any role that could call it could flood
-- any target's queue.
CREATE FUNCTION embeddings_internal.enqueue_keys(target_id integer, keys anyarray, delay integer DEFAULT 0,
                                        lane text DEFAULT 'live')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    queue_name text;
    total integer := coalesce(cardinality(keys), 0);
    per_message integer := embeddings_internal.keys_per_message();
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
        queue_name := embeddings_internal.backfill_queue(queue_name);
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

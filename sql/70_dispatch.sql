-- Push mode from the database: embeddings.dispatch() leases jobs and posts them, in the Supabase
-- guide's Edge Function format (a JSON array of jobs, each with its `jobId`), to a worker's
-- POST /functions/v1/embed through pg_net. For deployments where the worker only runs on
-- demand (scaled to zero, woken by HTTP); schedule it with pg_cron like the guide's
-- util.process_embeddings(). A job the worker does not complete stays leased until
-- `timeout_seconds` pass, then the next dispatch retries it.

-- The request bodies: leases up to batch_size * max_requests jobs (pgmq.read, visibility
-- timeout timeout_seconds) and returns one JSON array of jobs per request: at most batch_size
-- jobs and at most 1024 rows (the jobs' keys, embeddings.message_key_count()) in each, the
-- most a worker embeds for one request (worker/http/push.py: MAX_ROWS); a job of more rows
-- goes alone. Jobs read that no request has room for are handed back at once, their read not
-- counted. dispatch() posts them; tests and other HTTP clients can post them themselves.
CREATE FUNCTION embeddings.dispatch_batches(
    batch_size integer DEFAULT 10,
    max_requests integer DEFAULT 10,
    timeout_seconds integer DEFAULT 300,
    queue text DEFAULT 'embedding_jobs'
) RETURNS SETOF jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    max_rows CONSTANT integer := 1024;
    wanted integer := batch_size * max_requests;
    live jsonb[];
    backfill jsonb[] := '{}';
    job jsonb;
    body jsonb := '[]';
    body_rows integer := 0;
    job_rows integer;
    requests integer := 0;
    left_over jsonb[] := '{}';
    lane text;
BEGIN
    PERFORM embeddings_internal.move_inbox(queue);  -- the triggers' keys (22_inbox.sql)
    live := ARRAY(SELECT r.message || jsonb_build_object('jobId', r.msg_id)
                  FROM pgmq.read(queue, timeout_seconds, wanted) AS r ORDER BY r.msg_id);
    -- lanes: backfill work fills what the live queue leaves; its jobs say their lane (job ids
    -- are per queue).
    IF cardinality(live) < wanted
       AND EXISTS (SELECT FROM embeddings.queues q WHERE q.name = embeddings_internal.backfill_queue(dispatch_batches.queue)) THEN
        backfill := ARRAY(SELECT r.message || jsonb_build_object('jobId', r.msg_id, 'lane', 'backfill')
                          FROM pgmq.read(embeddings_internal.backfill_queue(queue), timeout_seconds, wanted - cardinality(live)) AS r
                          ORDER BY r.msg_id);
    END IF;
    FOREACH job IN ARRAY live || backfill LOOP
        job_rows := greatest(embeddings.message_key_count(job), 1);
        IF jsonb_array_length(body) > 0
           AND (jsonb_array_length(body) >= batch_size OR body_rows + job_rows > max_rows) THEN
            RETURN NEXT body;
            requests := requests + 1;
            body := '[]';
            body_rows := 0;
        END IF;
        IF requests >= max_requests THEN
            left_over := left_over || job;
        ELSE
            body := body || jsonb_build_array(job);
            body_rows := body_rows + job_rows;
        END IF;
    END LOOP;
    IF jsonb_array_length(body) > 0 THEN
        RETURN NEXT body;
    END IF;
    -- No room for these: visible again now, as if never read, in their lane's queue table (a
    -- backfill job says its lane; job ids are per queue).
    FOR lane IN SELECT DISTINCT CASE WHEN j ->> 'lane' = 'backfill' THEN 'backfill' ELSE 'live' END
                FROM unnest(left_over) j LOOP
        EXECUTE format('UPDATE pgmq.%I q SET vt = clock_timestamp(), read_ct = greatest(q.read_ct - 1, 0)'
                       ' WHERE q.msg_id = ANY($1)', embeddings_internal.lane_table(queue, lane))
        USING ARRAY(SELECT (j ->> 'jobId')::bigint FROM unnest(left_over) j
                    WHERE CASE WHEN j ->> 'lane' = 'backfill' THEN 'backfill' ELSE 'live' END = lane);
    END LOOP;
END
$$;
COMMENT ON FUNCTION embeddings.dispatch_batches IS
    'Leases jobs and returns them as the request bodies dispatch() posts. Schema owner only.';

-- Posts each batch with pg_net (asynchronously: responses land in net._http_response).
-- `token` is sent as a bearer token (the worker's EMBED_HTTP_TOKEN). Returns the number of
-- requests made.
CREATE FUNCTION embeddings.dispatch(
    url text,
    batch_size integer DEFAULT 10,
    max_requests integer DEFAULT 10,
    token text DEFAULT NULL,
    timeout_seconds integer DEFAULT 300,
    queue text DEFAULT 'embedding_jobs'
) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    body jsonb;
    requests integer := 0;
BEGIN
    IF to_regprocedure('net.http_post(text, jsonb, jsonb, jsonb, integer)') IS NULL THEN
        RAISE EXCEPTION 'pg_net is not installed in this database'
            USING HINT = 'CREATE EXTENSION pg_net (it must be in shared_preload_libraries), or run the worker in pull mode (`embed-worker run`).';
    END IF;
    FOR body IN SELECT * FROM embeddings.dispatch_batches(batch_size, max_requests, timeout_seconds, queue) LOOP
        EXECUTE 'SELECT net.http_post(url => $1, body => $2, headers => $3, timeout_milliseconds => $4)'
        USING url, body,
              jsonb_strip_nulls(jsonb_build_object(
                  'Content-Type', 'application/json',
                  'Authorization', 'Bearer ' || token)),
              timeout_seconds * 1000;
        requests := requests + 1;
    END LOOP;
    RETURN requests;
END
$$;
COMMENT ON FUNCTION embeddings.dispatch IS
    'Posts leased batches of jobs to an HTTP worker with pg_net; returns the number of requests. Schema owner only.';

-- Push mode from the database: embeddings.dispatch() leases jobs and posts them, in the Supabase
-- guide's Edge Function format (a JSON array of jobs, each with its `jobId`), to a worker's
-- POST /functions/v1/embed through pg_net. For deployments where the worker only runs on
-- demand (scaled to zero, woken by HTTP); schedule it with pg_cron like the guide's
-- util.process_embeddings(). A job the worker does not complete stays leased until
-- `timeout_seconds` pass, then the next dispatch retries it.

-- The request bodies: leases up to batch_size * max_requests jobs (pgmq.read, visibility
-- timeout timeout_seconds) and returns one JSON array of jobs per request. dispatch() posts
-- them; tests and other HTTP clients can post them themselves.
CREATE FUNCTION embeddings.dispatch_batches(
    batch_size integer DEFAULT 10,
    max_requests integer DEFAULT 10,
    timeout_seconds integer DEFAULT 300,
    queue text DEFAULT 'embedding_jobs'
) RETURNS SETOF jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    wanted integer := batch_size * max_requests;
    live jsonb[];
    backfill jsonb[] := '{}';
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
    RETURN QUERY
        SELECT jsonb_agg(j.job ORDER BY j.n)
        FROM unnest(live || backfill) WITH ORDINALITY AS j(job, n)
        GROUP BY (j.n - 1) / batch_size
        ORDER BY (j.n - 1) / batch_size;
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

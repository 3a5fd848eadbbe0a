-- Push mode from the database: embeddings.dispatch() leases jobs and posts them, in the Supabase
-- guide's Edge Function format (a JSON array of jobs, each with its `jobId`), to a worker's
-- POST /functions/v1/embed through pg_net. For deployments where the worker only runs on
-- demand (scaled to zero, woken by HTTP); schedule it with pg_cron like the guide's
-- util.process_embeddings(). A job the worker does not complete stays leased until
-- `timeout_seconds` pass, then the next dispatch retries it; a job whose post never reached
-- the worker (or that the worker did not take) is given its read back by the next dispatch
-- and posted again at once (settle_dispatched()).

-- The requests to make: leases up to batch_size * max_requests jobs (pgmq.read, visibility
-- timeout timeout_seconds) and returns one request per JSON array of jobs: at most batch_size
-- jobs and at most 1024 rows (the jobs' keys, embeddings.message_key_count()) in each, the
-- most a worker embeds for one request (worker/http/push.py: MAX_ROWS); a job of more rows
-- goes alone. With each body, the reads of its jobs (each job's lane, msg_id, and the read_ct
-- and vt this read gave it): dispatch() records them, and gives a job its read back only while
-- its message is still in that read (settle_dispatched()). Jobs read that no request has room
-- for are handed back at once, their read not counted.
CREATE FUNCTION embeddings_internal.dispatch_requests(
    batch_size integer, max_requests integer, timeout_seconds integer, queue text,
    OUT body jsonb, OUT lanes text[], OUT msg_ids bigint[], OUT read_cts integer[], OUT vts timestamptz[]
) RETURNS SETOF record
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    max_rows CONSTANT integer := 1024;
    wanted integer := batch_size * max_requests;
    jobs jsonb[];
    job_cts integer[];
    job_vts timestamptz[];
    more_jobs jsonb[];
    more_cts integer[];
    more_vts timestamptz[];
    job jsonb;
    body_rows integer := 0;
    job_rows integer;
    requests integer := 0;
    left_over jsonb[] := '{}';
    lane text;
BEGIN
    PERFORM embeddings_internal.move_inbox(queue);  -- the triggers' keys (22_inbox.sql)
    SELECT coalesce(array_agg(r.message || jsonb_build_object('jobId', r.msg_id) ORDER BY r.msg_id), '{}'),
           coalesce(array_agg(r.read_ct ORDER BY r.msg_id), '{}'), coalesce(array_agg(r.vt ORDER BY r.msg_id), '{}')
    INTO jobs, job_cts, job_vts
    FROM pgmq.read(queue, timeout_seconds, wanted) AS r;
    -- lanes: backfill work fills what the live queue leaves; its jobs say their lane (job ids
    -- are per queue).
    IF cardinality(jobs) < wanted
       AND EXISTS (SELECT FROM embeddings.queues q WHERE q.name = embeddings_internal.backfill_queue(dispatch_requests.queue)) THEN
        SELECT coalesce(array_agg(r.message || jsonb_build_object('jobId', r.msg_id, 'lane', 'backfill') ORDER BY r.msg_id), '{}'),
               coalesce(array_agg(r.read_ct ORDER BY r.msg_id), '{}'), coalesce(array_agg(r.vt ORDER BY r.msg_id), '{}')
        INTO more_jobs, more_cts, more_vts
        FROM pgmq.read(embeddings_internal.backfill_queue(queue), timeout_seconds, wanted - cardinality(jobs)) AS r;
        jobs := jobs || more_jobs;
        job_cts := job_cts || more_cts;
        job_vts := job_vts || more_vts;
    END IF;
    body := '[]';
    lanes := '{}';
    msg_ids := '{}';
    read_cts := '{}';
    vts := '{}';
    FOR i IN 1 .. cardinality(jobs) LOOP
        job := jobs[i];
        job_rows := greatest(embeddings.message_key_count(job), 1);
        IF jsonb_array_length(body) > 0
           AND (jsonb_array_length(body) >= batch_size OR body_rows + job_rows > max_rows) THEN
            RETURN NEXT;
            requests := requests + 1;
            body := '[]';
            lanes := '{}';
            msg_ids := '{}';
            read_cts := '{}';
            vts := '{}';
            body_rows := 0;
        END IF;
        IF requests >= max_requests THEN
            left_over := left_over || job;
        ELSE
            body := body || jsonb_build_array(job);
            lanes := lanes || (CASE WHEN job ->> 'lane' = 'backfill' THEN 'backfill' ELSE 'live' END)::text;
            msg_ids := msg_ids || (job ->> 'jobId')::bigint;
            read_cts := read_cts || job_cts[i];
            vts := vts || job_vts[i];
            body_rows := body_rows + job_rows;
        END IF;
    END LOOP;
    IF jsonb_array_length(body) > 0 THEN
        RETURN NEXT;
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

-- The request bodies of dispatch_requests(): dispatch() posts them; tests and other HTTP
-- clients can post them themselves.
CREATE FUNCTION embeddings.dispatch_batches(
    batch_size integer DEFAULT 10,
    max_requests integer DEFAULT 10,
    timeout_seconds integer DEFAULT 300,
    queue text DEFAULT 'embedding_jobs'
) RETURNS SETOF jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT r.body FROM embeddings_internal.dispatch_requests(batch_size, max_requests, timeout_seconds, queue) AS r;
END
$$;
COMMENT ON FUNCTION embeddings.dispatch_batches IS
    'Leases jobs and returns them as the request bodies dispatch() posts. Schema owner only.';

-- pg_net's answers to the requests dispatch() made (embeddings.dispatched), read at the start of
-- each dispatch(). A request pg_net could not deliver (no HTTP status: connection refused, a
-- timeout) or that the worker did not take (any status but 2xx: the push route answers 200 for
-- every body it takes, whatever the jobs' fates; 401 a wrong token, 503 stopping or not ready,
-- 404 a wrong URL) gives each of its jobs its read back and makes it visible now, only while
-- the message is still in the read dispatch() made (the same read_ct and vt): a job the worker
-- did receive (leased again, renewed, failed with a backoff, handed back) or that was read again
-- since is left alone, so the worker's own failures stay attempts. Returns the jobs given back.
-- The answers also say how each endpoint fares (note_endpoints(): its backoff), and a request
-- not answered yet keeps the jobs of its read past their lease (hold_unanswered()).
-- Forgets answered requests that went well, failed ones after an hour (doctor's window) and
-- unanswered ones after pg_net's TTL (its answer is gone by then).
CREATE FUNCTION embeddings_internal.settle_dispatched() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    ttl interval := coalesce(nullif(current_setting('pg_net.ttl', true), '')::interval, interval '6 hours');
    since timestamptz;
    -- the jobs of the failed requests, one element each
    requests bigint[];
    queues text[];
    lanes text[];
    msg_ids bigint[];
    read_cts integer[];
    vts timestamptz[];
    failed bigint[];  -- the failed requests
    went_well bigint[];  -- the requests the worker took: forgotten at once
    back bigint[] := '{}';  -- a request's id per job given back
    -- each answered request's endpoint, sending time and error (NULL: it went well)
    urls text[];
    sent_ats timestamptz[];
    errors text[];
    lane_queue record;
    lane_table text;
BEGIN
    SELECT min(d.sent_at) INTO since FROM embeddings.dispatched d WHERE d.answered_at IS NULL;
    IF since IS NULL THEN
        requests := '{}';
    ELSE
        -- (pg_net indexes its answers by time only: those since our oldest unanswered request)
        WITH answered AS (
            UPDATE embeddings.dispatched d
            SET answered_at = r.created, status_code = r.status_code,
                error = CASE WHEN r.status_code BETWEEN 200 AND 299 THEN NULL
                             WHEN r.status_code IS NULL THEN coalesce(r.error_msg, CASE WHEN r.timed_out THEN 'timed out' END, 'no answer')
                             ELSE 'HTTP ' || r.status_code || coalesce(': ' || left(r.content, 200), '') END
            FROM net._http_response r
            WHERE d.answered_at IS NULL AND r.created >= since AND r.id = d.request_id
            RETURNING d.*
        )
        SELECT coalesce(array_agg(a.request_id), '{}'), array_agg(a.queue), array_agg(j.lane), array_agg(j.msg_id),
               array_agg(j.read_ct), array_agg(j.vt), coalesce(array_agg(DISTINCT a.request_id), '{}'),
               ARRAY(SELECT o.request_id FROM answered o WHERE o.error IS NULL),
               ARRAY(SELECT o.url FROM answered o ORDER BY o.request_id),
               ARRAY(SELECT o.sent_at FROM answered o ORDER BY o.request_id),
               ARRAY(SELECT o.error FROM answered o ORDER BY o.request_id)
        INTO requests, queues, lanes, msg_ids, read_cts, vts, failed, went_well, urls, sent_ats, errors
        FROM answered a, unnest(a.lanes, a.msg_ids, a.read_cts, a.vts) AS j (lane, msg_id, read_ct, vt)
        WHERE a.error IS NOT NULL;
        DELETE FROM embeddings.dispatched d WHERE d.request_id = ANY (went_well);
        -- (all went well, and no endpoint was failing: nothing to note)
        IF cardinality(urls) > 0
           AND (cardinality(failed) > 0 OR EXISTS (SELECT FROM embeddings.dispatch_endpoints)) THEN
            PERFORM embeddings_internal.note_endpoints(urls, sent_ats, errors);
        END IF;
    END IF;
    FOR lane_queue IN SELECT DISTINCT q, l FROM unnest(queues, lanes) AS x (q, l) LOOP
        lane_table := embeddings_internal.lane_table(lane_queue.q, lane_queue.l);
        CONTINUE WHEN to_regclass(format('pgmq.%I', lane_table)) IS NULL;  -- the queue dropped since
        EXECUTE format('WITH back AS (UPDATE pgmq.%I q SET vt = clock_timestamp(), read_ct = q.read_ct - 1'
                       ' FROM unnest($1, $2, $3, $4, $5, $6) AS j (request_id, queue, lane, msg_id, read_ct, vt)'
                       ' WHERE j.queue = $7 AND j.lane = $8 AND q.msg_id = j.msg_id AND q.read_ct = j.read_ct AND q.vt = j.vt'
                       ' RETURNING j.request_id) SELECT $9 || coalesce(array_agg(request_id), ''{}'') FROM back', lane_table)
        INTO back USING requests, queues, lanes, msg_ids, read_cts, vts, lane_queue.q, lane_queue.l, back;
    END LOOP;
    IF cardinality(failed) > 0 THEN
        UPDATE embeddings.dispatched d
        SET given_back = (SELECT count(*) FROM unnest(back) b WHERE b = d.request_id)
        WHERE d.request_id = ANY (failed);
    END IF;
    -- (by the index on sent_at: only the requests old enough to go are read)
    DELETE FROM embeddings.dispatched d
    WHERE d.sent_at < now() - least(ttl, interval '1 hour')
      AND (d.answered_at < now() - interval '1 hour' OR d.sent_at < now() - ttl);
    IF since IS NOT NULL THEN  -- (some request was unanswered)
        PERFORM embeddings_internal.hold_unanswered();
    END IF;
    RETURN cardinality(back);
END
$$;

-- The jobs of requests pg_net has not answered yet that are still in the read their request
-- made (same msg_id, read_ct and vt) and past that read's lease: leased a minute more, the new
-- vt recorded with the request, so that no dispatch() reads and posts them again before the
-- answer says whether the post reached the worker. pg_net answers a timeout only after the
-- lease has ended (its timeout is the lease, counted from when its worker takes the request,
-- and it commits the answers of a batch of requests when the last of them is done): without
-- the hold, a timed-out post was given back only where its answer came before the next
-- dispatch(); after it, that dispatch() read the jobs again and the post counted. Every
-- dispatch() renews the hold (settle_dispatched()) until the answer comes or pg_net's TTL
-- passes (the request forgotten). Returns the jobs held.
CREATE FUNCTION embeddings_internal.hold_unanswered() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
    lane_queue record;
    lane_table text;
    held integer;
    total integer := 0;
BEGIN
    FOR lane_queue IN SELECT DISTINCT d.queue AS q, j.lane AS l
                      FROM embeddings.dispatched d, unnest(d.lanes, d.vts) AS j (lane, vt)
                      WHERE d.answered_at IS NULL AND j.vt <= clock_timestamp() LOOP
        lane_table := embeddings_internal.lane_table(lane_queue.q, lane_queue.l);
        CONTINUE WHEN to_regclass(format('pgmq.%I', lane_table)) IS NULL;  -- the queue dropped since
        EXECUTE format(
            'WITH held AS (UPDATE pgmq.%I q SET vt = clock_timestamp() + interval ''1 minute'''
            ' FROM (SELECT d.request_id, j.n, j.msg_id, j.read_ct, j.vt FROM embeddings.dispatched d,'
            '             unnest(d.lanes, d.msg_ids, d.read_cts, d.vts) WITH ORDINALITY AS j (lane, msg_id, read_ct, vt, n)'
            '       WHERE d.answered_at IS NULL AND d.queue = $1 AND j.lane = $2 AND j.vt <= clock_timestamp()) j'
            ' WHERE q.msg_id = j.msg_id AND q.read_ct = j.read_ct AND q.vt = j.vt'
            ' RETURNING j.request_id, j.n, q.vt),'
            ' recorded AS (UPDATE embeddings.dispatched d'
            ' SET vts = ARRAY(SELECT coalesce(h.vt, v.vt) FROM unnest(d.vts) WITH ORDINALITY AS v (vt, n)'
            '                 LEFT JOIN held h ON h.request_id = d.request_id AND h.n = v.n ORDER BY v.n)'
            ' WHERE d.request_id IN (SELECT h.request_id FROM held h))'
            ' SELECT count(*) FROM held', lane_table)
        INTO held USING lane_queue.q, lane_queue.l;
        total := total + held;
    END LOOP;
    RETURN total;
END
$$;

-- How each endpoint (dispatch()'s url) fares, from the answers settle_dispatched() just read:
-- each request's url, sending time and error (NULL: it went well). A post that went well
-- clears its endpoint's failures; the failed posts since the last one that went well count up,
-- and from the third in a row on, the endpoint is backing off (embeddings.dispatch_endpoints:
-- next_probe_at): dispatch() posts it one job (a probe) when the last probe is answered and a
-- delay has passed, 10 s after the third failure, doubling with each failed probe up to 5
-- minutes, until a post goes through. Says so in the server's log: a WARNING as the endpoint
-- starts backing off (pg_cron reports every run as succeeded), a LOG line when it recovers.
CREATE FUNCTION embeddings_internal.note_endpoints(urls text[], sent_ats timestamptz[], errors text[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    backoff_after CONSTANT integer := 3;
    answer record;
    was embeddings.dispatch_endpoints;
    now_failed integer;
BEGIN
    FOR answer IN
        WITH a AS (SELECT * FROM unnest(urls, sent_ats, errors) AS a (url, sent_at, error)),
        last_ok AS (SELECT a.url, max(a.sent_at) FILTER (WHERE a.error IS NULL) AS at FROM a GROUP BY a.url)
        SELECT l.url, l.at AS last_ok, count(a.url) AS failed, min(a.sent_at) AS first_failed,
               (array_agg(a.error ORDER BY a.sent_at DESC))[1] AS last_error
        FROM last_ok l
        LEFT JOIN a ON a.url = l.url AND a.error IS NOT NULL AND (l.at IS NULL OR a.sent_at > l.at)
        GROUP BY l.url, l.at
    LOOP
        SELECT * INTO was FROM embeddings.dispatch_endpoints e WHERE e.url = answer.url FOR UPDATE;
        IF answer.last_ok IS NOT NULL AND was.url IS NOT NULL THEN
            DELETE FROM embeddings.dispatch_endpoints e WHERE e.url = answer.url;
            IF was.next_probe_at IS NOT NULL THEN
                RAISE LOG 'embeddings.dispatch(): posts to % go through again, after % failed since %',
                    answer.url, was.failed_posts, was.failing_since;
            END IF;
            was := NULL;
        END IF;
        CONTINUE WHEN answer.failed = 0;
        INSERT INTO embeddings.dispatch_endpoints AS e (url, failed_posts, failing_since, last_error)
        VALUES (answer.url, answer.failed, answer.first_failed, answer.last_error)
        ON CONFLICT (url) DO UPDATE SET failed_posts = e.failed_posts + excluded.failed_posts,
                                        last_error = excluded.last_error
        RETURNING e.failed_posts INTO now_failed;
        CONTINUE WHEN now_failed < backoff_after;
        UPDATE embeddings.dispatch_endpoints e
        SET next_probe_at = clock_timestamp()
                            + least(interval '10 seconds' * (2 OPERATOR(pg_catalog.^) least(now_failed - backoff_after, 5)), interval '5 minutes')
        WHERE e.url = answer.url;
        IF was.next_probe_at IS NULL THEN
            RAISE WARNING 'embeddings.dispatch(): % posts in a row to % failed, since %; the last: %',
                now_failed, answer.url, coalesce(was.failing_since, answer.first_failed), answer.last_error
                USING HINT = 'Backing off: one job at a time, at most every 5 minutes, until a post goes through. '
                             'embed-worker doctor reports it; docs/supabase.md, "Troubleshooting push mode".';
        END IF;
    END LOOP;
END
$$;

-- Posts each batch with pg_net (asynchronously: responses land in net._http_response), and
-- records each request (embeddings.dispatched) after settling those of earlier runs whose
-- answer came (settle_dispatched()): an undelivered post is not an attempt. An endpoint
-- backing off (its posts kept failing: note_endpoints()) gets one job, a probe, when one is
-- due, and nothing in between: no job is read for it.
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
    request record;
    request_id bigint;
    requests integer := 0;
    probe_at timestamptz;
BEGIN
    IF to_regprocedure('net.http_post(text, jsonb, jsonb, jsonb, integer)') IS NULL THEN
        RAISE EXCEPTION 'pg_net is not installed in this database'
            USING HINT = 'CREATE EXTENSION pg_net (it must be in shared_preload_libraries), or run the worker in pull mode (`embed-worker run`).';
    END IF;
    IF has_table_privilege('net._http_response', 'SELECT') THEN
        PERFORM embeddings_internal.settle_dispatched();
    ELSE
        RAISE WARNING 'embeddings.dispatch(): % cannot read net._http_response: posts that failed count as attempts', current_user
            USING HINT = 'GRANT SELECT ON net._http_response TO the role that runs dispatch().';
    END IF;
    SELECT e.next_probe_at INTO probe_at FROM embeddings.dispatch_endpoints e WHERE e.url = dispatch.url;
    IF probe_at IS NOT NULL THEN
        IF probe_at > now()
           OR EXISTS (SELECT FROM embeddings.dispatched d WHERE d.answered_at IS NULL AND d.url = dispatch.url) THEN
            RETURN 0;
        END IF;
        batch_size := 1;
        max_requests := 1;
    END IF;
    FOR request IN SELECT * FROM embeddings_internal.dispatch_requests(batch_size, max_requests, timeout_seconds, queue) LOOP
        EXECUTE 'SELECT net.http_post(url => $1, body => $2, headers => $3, timeout_milliseconds => $4)'
        INTO request_id
        USING url, request.body,
              jsonb_strip_nulls(jsonb_build_object(
                  'Content-Type', 'application/json',
                  'Authorization', 'Bearer ' || token)),
              timeout_seconds * 1000;
        -- (a request id pg_net gives again, its sequence restarted, replaces the old request)
        INSERT INTO embeddings.dispatched AS d (request_id, url, queue, lanes, msg_ids, read_cts, vts)
        VALUES (request_id, dispatch.url, dispatch.queue, request.lanes, request.msg_ids, request.read_cts, request.vts)
        ON CONFLICT ON CONSTRAINT dispatched_pkey DO UPDATE
        SET url = excluded.url, queue = excluded.queue, lanes = excluded.lanes, msg_ids = excluded.msg_ids,
            read_cts = excluded.read_cts, vts = excluded.vts, sent_at = excluded.sent_at,
            answered_at = NULL, status_code = NULL, error = NULL, given_back = NULL;
        requests := requests + 1;
    END LOOP;
    RETURN requests;
END
$$;
COMMENT ON FUNCTION embeddings.dispatch IS
    'Posts leased batches of jobs to an HTTP worker with pg_net; returns the number of requests. Schema owner only.';

-- The requests of push mode (70_dispatch.sql: dispatch()).

-- Each request embeddings.dispatch() made through pg_net, by pg_net's request id (the id of its
-- answer in net._http_response), with the reads of the jobs it carries: per job its lane
-- ('live' or 'backfill' of `queue`), msg_id, and the read_ct and vt that dispatch's read gave
-- it, which say whether the message is still in that read. The next dispatch() reads pg_net's
-- answer: a request pg_net could not deliver (no HTTP status: refused, timed out) or that the
-- worker did not take (any status but 2xx: its push route answers 200 for every body it
-- takes, whatever the jobs' fates) gives its jobs their read back, so an undelivered post is
-- not an attempt. Answered requests that went well are forgotten at once, failed ones after an
-- hour (doctor reports them), unanswered ones after pg_net's TTL (pg_net.ttl): its answer gone.
-- The schema's owner's alone: dispatch() writes it, doctor reads it.
CREATE TABLE IF NOT EXISTS embeddings.dispatched (
    request_id  bigint PRIMARY KEY,
    url         text NOT NULL,
    queue       text NOT NULL,
    lanes       text[] NOT NULL,
    msg_ids     bigint[] NOT NULL,
    read_cts    integer[] NOT NULL,
    vts         timestamptz[] NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    answered_at timestamptz,
    status_code integer,
    error       text,
    given_back  integer
);
CREATE INDEX IF NOT EXISTS dispatched_unanswered ON embeddings.dispatched (sent_at) WHERE answered_at IS NULL;
CREATE INDEX IF NOT EXISTS dispatched_sent_at ON embeddings.dispatched (sent_at);  -- what to forget
REVOKE ALL ON embeddings.dispatched FROM PUBLIC;
COMMENT ON TABLE embeddings.dispatched IS 'Push mode: the requests embeddings.dispatch() made with pg_net, until their answer is read';

-- The endpoints (dispatch()'s url) whose last posts failed, as dispatch() read their answers:
-- how many in a row, since when (the first one's sending), the last error. From the third on
-- the endpoint is backing off (next_probe_at set): dispatch() posts it one job at a time, once
-- the last one is answered and next_probe_at has come, until a post goes through, which
-- deletes the row. The schema's owner's alone: dispatch() writes it, doctor reads it.
CREATE TABLE IF NOT EXISTS embeddings.dispatch_endpoints (
    url           text PRIMARY KEY,
    failed_posts  integer NOT NULL,
    failing_since timestamptz NOT NULL,
    last_error    text NOT NULL,
    next_probe_at timestamptz
);
REVOKE ALL ON embeddings.dispatch_endpoints FROM PUBLIC;
COMMENT ON TABLE embeddings.dispatch_endpoints IS 'Push mode: the endpoints whose posts fail, and their backoff';

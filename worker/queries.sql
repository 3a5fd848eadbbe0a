-- The worker's runtime SQL. Each query starts with `-- name: NAME` and a one-line description;
-- worker/queries.py loads them. `{queue_table}` and a target's functions (`{load}`, `{store}`,
-- `{blank}`, `{forget}`, `{reusable}`, `{chunks}`: embeddings.embeddings_<id>_<name>,
-- which read and write its table as the table's owner, sql/32_access.sql) are filled with psycopg.sql
-- identifiers of registered targets only, `{key_arrays}` with one text[] parameter per key
-- column (%(k0)s, ...: see Target.sql_names); values are always bound parameters. Row keys go
-- in as the canonical keys the worker holds (%(keys)s) beside their columns' texts, and come
-- back as given, never re-rendered by Postgres. The worker touches no user table itself.
--
-- `-- ours:` in a header: the statement runs no code of anyone else's (no target's function, no
-- user table, no SQL function that reaches one). After any other statement the session may hold
-- what a table owner's code left in it, and worker/session_guard.py resets it before the next.

-- name: read_jobs
-- Leases visible jobs, oldest first, until about %(max_keys)s row keys are leased. Same effect
-- as pgmq.read (vt, read_ct, SKIP LOCKED) but bounded by keys, since one message carries up to
-- 128 of them and pgmq.read can only count messages. {read_stamp} sets last_read_at where the
-- queue has it (pgmq >= 1.8; Supabase ships older pgmq without the column).
-- ours: touches only our tables and pgmq's, runs no one else's code
WITH visible AS (
    SELECT msg_id,
           greatest(CASE WHEN jsonb_typeof(message -> 'keys') = 'array' THEN jsonb_array_length(message -> 'keys')
                         WHEN jsonb_typeof(message -> 'columns' -> 0) = 'array'
                         THEN jsonb_array_length(message -> 'columns' -> 0)
                         WHEN jsonb_typeof(message -> 'columns' -> 0) = 'string'  -- array text: commas + 1
                         THEN length(message -> 'columns' ->> 0)
                              - length(replace(message -> 'columns' ->> 0, ',', '')) + 1
                         ELSE 1 END, 1) AS keys
    FROM {queue_table}
    WHERE vt <= clock_timestamp()
    ORDER BY msg_id
    LIMIT %(max_keys)s
    FOR UPDATE SKIP LOCKED
), chosen AS (
    SELECT msg_id FROM (
        SELECT msg_id, sum(keys) OVER (ORDER BY msg_id) - keys AS before FROM visible
    ) v
    WHERE before < %(max_keys)s
)
UPDATE {queue_table} q
SET vt = clock_timestamp() + make_interval(secs => %(vt)s),
    read_ct = q.read_ct + 1
    {read_stamp}
FROM chosen
WHERE q.msg_id = chosen.msg_id
RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message;

-- name: read_jobs_by_target
-- Leases visible jobs of a backfill lane, about %(max_keys)s row keys as read_jobs does, taking
-- turns between the targets with jobs there: a turn is each target's oldest job, the targets in
-- id order starting after %(after)s (the target the reader's last batch ended with; NULL: the
-- first), then the next turn. So a 200,000-row load of one table does not hold back another
-- table's 2,000-row load or backfill (first in, first out, it did), and batches of one job each
-- serve the targets in rotation. Targets are found by skipping along the lane's
-- (target, msg_id) index (sql/20_queue.sql), a step per target; jobs without a target (the
-- Supabase guide's shape) are one more, after them.
-- ours: touches only our tables and pgmq's, runs no one else's code
WITH RECURSIVE targets AS (
    (SELECT q.message -> 'target' AS target FROM {queue_table} q
     WHERE q.message -> 'target' IS NOT NULL ORDER BY q.message -> 'target' LIMIT 1)
    UNION ALL
    SELECT (SELECT q.message -> 'target' FROM {queue_table} q
            WHERE q.message -> 'target' > t.target ORDER BY q.message -> 'target' LIMIT 1)
    FROM targets t WHERE t.target IS NOT NULL
), turns AS (  -- each target's place in a turn: at most max_keys of them fill a batch
    SELECT t.target, row_number() OVER (ORDER BY coalesce(t.target <= %(after)s::jsonb, false),
                                                t.target NULLS LAST) AS place
    FROM (SELECT target FROM targets WHERE target IS NOT NULL
          UNION ALL
          SELECT NULL WHERE EXISTS (SELECT FROM {queue_table} q WHERE q.message -> 'target' IS NULL)) t
    ORDER BY place
    LIMIT %(max_keys)s
), share AS (  -- jobs read of each target: enough turns for a batch of one-key jobs
    SELECT greatest(pg_catalog.ceil(%(max_keys)s::numeric / count(*)), 1)::bigint AS jobs FROM turns
), visible AS (
    SELECT t.place, v.msg_id, v.keys, row_number() OVER (PARTITION BY t.place ORDER BY v.msg_id) AS turn
    FROM turns t, LATERAL (
        SELECT * FROM (SELECT q.msg_id, q.message FROM {queue_table} q
                       WHERE q.message -> 'target' = t.target AND q.vt <= clock_timestamp()
                       ORDER BY q.msg_id LIMIT (SELECT jobs FROM share)
                       FOR UPDATE SKIP LOCKED) of_target
        UNION ALL
        SELECT * FROM (SELECT q.msg_id, q.message FROM {queue_table} q
                       WHERE t.target IS NULL AND q.message -> 'target' IS NULL
                         AND q.vt <= clock_timestamp()
                       ORDER BY q.msg_id LIMIT (SELECT jobs FROM share)
                       FOR UPDATE SKIP LOCKED) of_none
    ) j,
    LATERAL (SELECT j.msg_id,
                    greatest(CASE WHEN jsonb_typeof(j.message -> 'keys') = 'array' THEN jsonb_array_length(j.message -> 'keys')
                                  WHEN jsonb_typeof(j.message -> 'columns' -> 0) = 'array'
                                  THEN jsonb_array_length(j.message -> 'columns' -> 0)
                                  WHEN jsonb_typeof(j.message -> 'columns' -> 0) = 'string'
                                  THEN length(j.message -> 'columns' ->> 0)
                                       - length(replace(j.message -> 'columns' ->> 0, ',', '')) + 1
                                  ELSE 1 END, 1) AS keys) v
), chosen AS (
    SELECT msg_id FROM (
        SELECT msg_id, sum(keys) OVER (ORDER BY turn, place) - keys AS before FROM visible
    ) v
    WHERE before < %(max_keys)s
)
UPDATE {queue_table} q
SET vt = clock_timestamp() + make_interval(secs => %(vt)s),
    read_ct = q.read_ct + 1
    {read_stamp}
FROM chosen
WHERE q.msg_id = chosen.msg_id
RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message;

-- name: extend_leases
-- Pushes back the visibility timeout of jobs we still hold (vt unchanged since we set it),
-- never shortening a longer lease (a push job's dispatch() lease).
-- ours: touches only our tables and pgmq's, runs no one else's code
UPDATE {queue_table} q
SET vt = greatest(q.vt, clock_timestamp() + make_interval(secs => %(vt)s))
FROM unnest(%(msg_ids)s::bigint[], %(vts)s::timestamptz[]) AS l(msg_id, vt)
WHERE q.msg_id = l.msg_id AND q.vt = l.vt
RETURNING q.msg_id, q.vt;

-- name: release_leases
-- Hands jobs we still hold back to the queue at once, without counting the attempt.
-- ours: touches only our tables and pgmq's, runs no one else's code
UPDATE {queue_table} q
SET vt = clock_timestamp(), read_ct = greatest(q.read_ct - 1, 0)
FROM unnest(%(msg_ids)s::bigint[], %(vts)s::timestamptz[]) AS l(msg_id, vt)
WHERE q.msg_id = l.msg_id AND q.vt = l.vt
RETURNING q.msg_id;

-- name: defer_jobs
-- Makes jobs visible again after %(delay)s seconds without counting the attempt: their target
-- cannot be served now (model missing, dimension mismatch), which is not the jobs' fault. Each
-- is marked held (`held`: its target and the vt set here), so that a worker that can serve the
-- target releases it at once (release_held_jobs) instead of leaving it to wait for the delay.
-- ours: touches only our tables and pgmq's, runs no one else's code
UPDATE {queue_table} q
SET vt = h.until, read_ct = greatest(q.read_ct - 1, 0),
    message = q.message || jsonb_build_object(
        'held', jsonb_build_object('target', d.target_id, 'until', extract(epoch FROM h.until)))
FROM unnest(%(msg_ids)s::bigint[], %(target_ids)s::integer[]) AS d(msg_id, target_id),
     (SELECT clock_timestamp() + make_interval(secs => %(delay)s) AS until) AS h
WHERE q.msg_id = d.msg_id;

-- name: release_held_jobs
-- Makes the held jobs of these targets visible now (a worker that can serve them started, or
-- can again). Held is what defer_jobs marked and what no one touched since: a lease (ours or
-- pgmq.read), a retry or a release all set another vt, so a job another worker is processing
-- never matches, and a message locked meanwhile is checked again once its lock is released.
-- Compared as JSON values (no cast that a malformed message could make fail); `until` in epoch
-- seconds (exact to the microsecond, whatever the sessions' time zones). Only jobs not visible
-- are candidates, found by pgmq's vt index: "now" is the statement's time, one instant that the
-- planner knows (a stable function, as embeddings_internal.release_held()'s parameter), for the
-- condition and the new vt alike; clock_timestamp() (volatile) in the condition made it a scan
-- of the whole lane, every visible job of a backlog included. Run when a target becomes
-- servable, not per batch.
-- ours: touches only our tables and pgmq's, runs no one else's code
UPDATE {queue_table} q
SET vt = pg_catalog.statement_timestamp()
WHERE q.vt > pg_catalog.statement_timestamp()
  AND q.message #> '{{held,until}}' = to_jsonb(extract(epoch FROM q.vt))
  AND q.message #> '{{held,target}}' IN (SELECT to_jsonb(t) FROM unnest(%(target_ids)s::integer[]) AS t)
RETURNING q.msg_id;

-- name: read_held_jobs
-- Leases held jobs of these targets (%(target_ids)s: those this worker can serve and did not
-- hold itself), oldest first, bounded by keys as read_jobs: the jobs a worker that cannot serve
-- a target put back for a minute, taken by one that can whenever it has room (a lease, not a
-- release: made visible, they went to the workers that cannot serve them, held again).
-- Held as release_held_jobs finds them (by pgmq's vt index): a lease, a retry or a release
-- since set another vt.
-- ours: touches only our tables and pgmq's, runs no one else's code
WITH held AS (
    SELECT msg_id,
           greatest(CASE WHEN jsonb_typeof(message -> 'keys') = 'array' THEN jsonb_array_length(message -> 'keys')
                         WHEN jsonb_typeof(message -> 'columns' -> 0) = 'array'
                         THEN jsonb_array_length(message -> 'columns' -> 0)
                         WHEN jsonb_typeof(message -> 'columns' -> 0) = 'string'  -- array text: commas + 1
                         THEN length(message -> 'columns' ->> 0)
                              - length(replace(message -> 'columns' ->> 0, ',', '')) + 1
                         ELSE 1 END, 1) AS keys
    FROM {queue_table}
    WHERE vt > pg_catalog.statement_timestamp()
      AND message #> '{{held,until}}' = to_jsonb(extract(epoch FROM vt))
      AND message #> '{{held,target}}' IN (SELECT to_jsonb(t) FROM unnest(%(target_ids)s::integer[]) AS t)
    ORDER BY msg_id
    LIMIT %(max_keys)s
    FOR UPDATE SKIP LOCKED
), chosen AS (
    SELECT msg_id FROM (
        SELECT msg_id, sum(keys) OVER (ORDER BY msg_id) - keys AS before FROM held
    ) h
    WHERE before < %(max_keys)s
)
UPDATE {queue_table} q
SET vt = clock_timestamp() + make_interval(secs => %(vt)s),
    read_ct = q.read_ct + 1
    {read_stamp}
FROM chosen
WHERE q.msg_id = chosen.msg_id
RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message;

-- name: held_job_counts
-- How many jobs each of these targets has held (what defer_jobs marked and no one touched
-- since, as release_held_jobs finds them): a worker that cannot serve a target records why
-- for those jobs, though it never leased them (worker/process/held.py). Scans the queue: run
-- when a target's reason changes, not per batch.
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT q.message #> '{{held,target}}', count(*)
FROM {queue_table} q
WHERE q.vt > clock_timestamp()
  AND q.message #> '{{held,until}}' = to_jsonb(extract(epoch FROM q.vt))
  AND q.message #> '{{held,target}}' IN (SELECT to_jsonb(t) FROM unnest(%(target_ids)s::integer[]) AS t)
GROUP BY 1;

-- name: held_targets
-- The targets of live queue %(queue)s whose jobs a worker held lately (embeddings.deferrals,
-- recent as status counts it: embeddings_internal.deferral_fresh()), for the keeper to look for
-- what mends them (worker/process/held.py, held_mends). An index scan of a table of a row per
-- held target: nothing, when nothing is held.
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT d.target_id FROM embeddings.deferrals d JOIN embeddings.targets t ON t.id = d.target_id
WHERE t.queue = %(queue)s AND d.last_seen > pg_catalog.now() - interval '5 minutes';

-- name: held_mends
-- Of these held targets, those a catalog row they depend on changed since they were last held
-- (a worker holding them again writes their embeddings.deferrals row again), with those rows'
-- versions (the keeper acts once per version). A GRANT, a REVOKE, an ALTER, a CREATE OR REPLACE
-- writes a new version of the rows it changes (xmin: a later transaction, a smaller age());
-- ANALYZE and VACUUM write theirs in place. The rows: its table's and its store's (owner, ACL,
-- row security, a column added), their schemas' and its content function's (USAGE), schema
-- embeddings' (the worker's USAGE), its content function's and its functions'
-- (%(functions)s: their names by target id; EXECUTE, owner, SECURITY DEFINER), its key, content and
-- embedding columns', and the role memberships of its table's owner and of the worker.
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT t.id, pg_catalog.string_agg(x.v::text, ' ' ORDER BY x.k, x.v::text)
FROM embeddings.targets t
JOIN embeddings.deferrals d ON d.target_id = t.id
CROSS JOIN LATERAL (SELECT pg_catalog.age(d.xmin) AS held) h
CROSS JOIN LATERAL (
    SELECT 1 AS k, r.xmin AS v FROM pg_catalog.pg_class r WHERE r.oid IN (t.source, t.store_table)
    UNION ALL
    SELECT 2, n.xmin FROM pg_catalog.pg_namespace n
    WHERE n.oid IN (SELECT r.relnamespace FROM pg_catalog.pg_class r WHERE r.oid IN (t.source, t.store_table)
                    UNION ALL
                    SELECT p.pronamespace FROM pg_catalog.pg_proc p WHERE p.oid = t.content_function
                    UNION ALL
                    SELECT 'embeddings'::pg_catalog.regnamespace)
    UNION ALL
    SELECT 3, p.xmin FROM pg_catalog.pg_proc p WHERE p.oid = t.content_function
    UNION ALL
    SELECT 3, p.xmin FROM pg_catalog.pg_proc p
    WHERE p.proname = ANY (ARRAY(SELECT pg_catalog.jsonb_array_elements_text(%(functions)s::jsonb -> t.id::text)))
      AND p.pronamespace = 'embeddings'::pg_catalog.regnamespace
    UNION ALL
    SELECT 4, a.xmin FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = t.source AND a.attnum = ANY (t.key_attnums || t.content_attnum)
    UNION ALL
    SELECT 4, a.xmin FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = t.store_table AND a.attname = t.embedding_column
    UNION ALL
    SELECT 5, m.xmin FROM pg_catalog.pg_auth_members m
    WHERE m.member IN ((SELECT r.relowner FROM pg_catalog.pg_class r WHERE r.oid = t.source),
                       (SELECT u.oid FROM pg_catalog.pg_roles u WHERE u.rolname = current_user))
) x
WHERE t.id = ANY (%(target_ids)s::integer[])
GROUP BY t.id, h.held
HAVING pg_catalog.bool_or(pg_catalog.age(x.v) < h.held);

-- name: retry_jobs
-- Backs failed jobs off: each becomes visible again after its own delay (as pgmq.set_vt), and
-- carries its last error, so that `status` tells the jobs waiting for another attempt from
-- fresh ones (retrying_keys).
-- ours: touches only our tables and pgmq's, runs no one else's code
UPDATE {queue_table} q
SET vt = clock_timestamp() + make_interval(secs => d.delay),
    message = q.message || jsonb_build_object('last_error', d.error)
FROM unnest(%(msg_ids)s::bigint[], %(delays)s::integer[], %(errors)s::text[]) AS d(msg_id, delay, error)
WHERE q.msg_id = d.msg_id;

-- name: delete_jobs
-- Acknowledges finished jobs.
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT pgmq.delete(%(queue)s, %(msg_ids)s::bigint[]);

-- name: archive_jobs
-- Moves dead jobs to the queue's archive table (their rows are in embeddings.failures).
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT pgmq.archive(%(queue)s, %(msg_ids)s::bigint[]);

-- name: send_jobs
-- Sends new jobs, each with its own delay in seconds (the failed part of a split message).
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT pgmq.send(%(queue)s, m.message, m.delay)
FROM unnest(%(messages)s::jsonb[], %(delays)s::integer[]) AS m(message, delay);

-- name: record_failures
-- Dead-letters rows: one embeddings.failures row each, which replaces the row's earlier one of
-- its lane (a model change's shadow jobs are another): a row whose content keeps failing as the
-- application keeps writing it has one dead letter, its latest, not one per job. A letter of no
-- target or no key (a message nothing could read) is its own.
-- ours: touches only our tables and pgmq's, runs no one else's code
WITH letter AS (
    SELECT l.*, l.target_id IS NULL OR l.row_key IS NULL AS alone
    FROM unnest(%(target_ids)s::integer[], %(targets)s::text[], %(row_keys)s::jsonb[],
                %(queues)s::text[], %(messages)s::jsonb[], %(attempts)s::integer[],
                %(errors)s::text[]) WITH ORDINALITY
         AS l(target_id, target, row_key, queue, message, attempts, last_error, n)
), replaced AS (
    DELETE FROM embeddings.failures f USING letter l
    WHERE f.row_key = l.row_key AND f.target_id = l.target_id
      AND (f.message -> 'shadow') IS NOT DISTINCT FROM (l.message -> 'shadow')
)
INSERT INTO embeddings.failures (target_id, target, row_key, queue, message, attempts, last_error)
SELECT DISTINCT ON (l.target_id, l.row_key, l.message -> 'shadow', CASE WHEN l.alone THEN l.n END)
       l.target_id, l.target, l.row_key, l.queue, l.message, l.attempts, l.last_error
FROM letter l
ORDER BY l.target_id, l.row_key, l.message -> 'shadow', CASE WHEN l.alone THEN l.n END, l.n DESC;

-- name: record_throughput
-- Counts rows embedded for a target in the current minute (feeds embeddings.status), with when
-- the first batch counted in it began (read %(seconds)s seconds before this write): the recent
-- rate counts from there, not from the minute's start.
-- The target's minutes older than a day go with it, up to 1,000 a write (the rate reads five
-- minutes, the backfill stall alarm its own interval; sweep() keeps a day too): a worker keeps
-- the table bounded by itself, sweep() being opt-in. The probe is one look at the start of the
-- target's range of the primary key; a backlog (minutes of an older worker's years) goes in
-- steps that keep the transaction short.
-- ours: touches only our tables and pgmq's, runs no one else's code
WITH aged AS (
    DELETE FROM embeddings.throughput o
    WHERE (o.target_id, o.minute) IN (
        SELECT a.target_id, a.minute FROM embeddings.throughput a
        WHERE a.target_id = %(target_id)s AND a.minute < now() - interval '1 day'
        ORDER BY a.target_id, a.minute LIMIT 1000
        FOR UPDATE SKIP LOCKED)  -- (a sweep() deleting them holds them to its end: not waited for)
)
INSERT INTO embeddings.throughput AS tp (target_id, minute, rows, since)
VALUES (%(target_id)s, date_trunc('minute', clock_timestamp()), %(rows)s,
        clock_timestamp() - make_interval(secs => %(seconds)s))
ON CONFLICT (target_id, minute) DO UPDATE
SET rows = tp.rows + excluded.rows, since = least(tp.since, excluded.since);

-- name: load_targets
-- The registered targets ({which}: all of them, or a search's) with what the worker needs to
-- serve them, from the catalog, by name (worker/pipeline/targets.py: target_of); each one's
-- problem as `status` shows it (sql/52_stopped.sql: its registration's, what the catalog says
-- now, such as a content column retyped to what watch() refuses, or why its functions cannot
-- serve it now).
-- The embedding column is in the target's store table (the table itself, or a side or chunk
-- table: sql/54_stores.sql).
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT t.id, n.nspname AS schema, c.relname AS "table", t.embedding_column,
       ty.typname AS embedding_type, a.atttypmod AS embedding_dims, t.content_column,
       fn_ns.nspname AS function_schema, p.proname AS function_name, t.model,
       t.key_columns::text[] AS key_columns,
       ARRAY(SELECT kt.typname::text FROM unnest(t.key_types) WITH ORDINALITY AS k(ty, i)
             JOIN pg_type kt ON kt.oid = k.ty ORDER BY k.i) AS key_types,
       t.queue, tp.problem AS registry_problem, t.version,
       t.chunk_tokens, t.chunk_overlap, t.fts_config IS NOT NULL AS has_fulltext, t.store_kind,
       embeddings_internal.store_has_chunks(t) AS chunked, t.rerank_model, t.rerank_depth,
       t.document_format, t.context_header,
       coalesce(ca.atttypid = 'pg_catalog.bytea'::regtype, false) AS content_bytes,
       t.source::oid AS source, embeddings_internal.target_name(t) AS qualified_name
FROM embeddings.targets t
LEFT JOIN pg_class c ON c.oid = t.source
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = t.store_table AND a.attname = t.embedding_column
                        AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type ty ON ty.oid = a.atttypid
LEFT JOIN pg_proc p ON p.oid = t.content_function
LEFT JOIN pg_namespace fn_ns ON fn_ns.oid = p.pronamespace
LEFT JOIN pg_attribute ca ON ca.attrelid = t.source AND ca.attnum = t.content_attnum
                         AND t.content_column IS NOT NULL AND NOT ca.attisdropped
-- (one call for the targets read: called once a target, it starts its statement each time)
LEFT JOIN embeddings_internal.target_problems(ARRAY(SELECT t.id FROM embeddings.targets t WHERE {which})) tp
       ON tp.target_id = t.id
WHERE {which}
ORDER BY t.id

-- name: default_model_defined
-- Whether the database has our default-model function (the CLI may talk to an older schema).
SELECT to_regprocedure('embeddings.default_model()') IS NOT NULL;

-- name: default_model
-- The database's default model: what watch() uses when none is named (set_default_model()).
SELECT embeddings.default_model();

-- name: remote_models
-- The remote models of the registry (sql/46_providers.sql): what a RemoteModel is built from.
-- No column holds a secret: `credential` is the name of the worker's key.
SELECT name, provider, endpoint, remote_model, dimensions, max_tokens, pooling, send_dimensions,
       max_inputs, max_request_tokens, max_in_flight, timeout_seconds, price_per_million_tokens,
       credential, tokenizer
FROM embeddings.models WHERE provider <> 'local' ORDER BY name;

-- name: local_models
-- The names of the registry's local models (provider 'local': the catalog's, and those
-- register_model() added for a directory on EMBED_MODEL_PATH): POST /embed may name one.
SELECT name FROM embeddings.models WHERE provider = 'local' ORDER BY name;

-- name: target_versions
-- The definition version of every registered target (a registry read under an older one is
-- refreshed before a batch is served with it).
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT id, version FROM embeddings.targets;

-- name: lock_target
-- Locks a target's table, then its registration, until the write transaction ends; returns its
-- current definition version (NULL when it was unwatched). See embeddings_internal.lock_target().
SELECT embeddings_internal.lock_target(%(target_id)s);

-- name: move_inbox
-- Moves the triggers' keys from the inbox into the live queue as job messages (sql/22_inbox.sql).
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT embeddings_internal.move_inbox(%(queue)s);

-- name: inbox_pending
-- What waits in the inbox for live queue %(queue)s, per target and lane (rows, keys, the oldest
-- write; the rows its move takes, for either lane),
-- for `run --once` finding nothing to read: not moved yet, or being moved by another worker
-- (its move holds the rows until it commits, and ours skips them). worker/process/elsewhere.py.
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT target_id, rows, keys, oldest FROM embeddings_internal.inbox_pending(%(queue)s) ORDER BY target_id, lane;

-- name: queue_depth
-- Jobs in the queue, how many are visible now, and the age of the oldest in seconds; for a live
-- queue, the inbox's rows its move sends to this lane count as visible jobs (each becomes one or
-- more when moved).
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT q.jobs + i.jobs, q.visible + i.jobs,
       coalesce(extract(epoch FROM clock_timestamp() - least(q.oldest, i.oldest)), 0)::float8
FROM (SELECT count(*) AS jobs, count(*) FILTER (WHERE vt <= clock_timestamp()) AS visible,
             min(enqueued_at) AS oldest
      FROM {queue_table}) q,
     (SELECT coalesce(sum(p.rows), 0) AS jobs, min(p.oldest) AS oldest
      FROM embeddings_internal.inbox_pending(%(queue)s) p WHERE p.lane = %(queue)s) i;

-- name: pending_keys
-- Row keys waiting in the queue and its inbox (messages count their keys, in either of our
-- shapes: embeddings.message_key_count(), written out here; the inbox counts its own, those
-- its move sends to this lane).
SELECT coalesce(sum(CASE WHEN jsonb_typeof(message -> 'keys') = 'array' THEN jsonb_array_length(message -> 'keys')
                         WHEN jsonb_typeof(message -> 'columns' -> 0) = 'array'
                         THEN jsonb_array_length(message -> 'columns' -> 0)
                         WHEN jsonb_typeof(message -> 'columns' -> 0) = 'string'  -- array text: commas + 1
                         THEN length(message -> 'columns' ->> 0)
                              - length(replace(message -> 'columns' ->> 0, ',', '')) + 1
                         ELSE 1 END), 0)::bigint
       + (SELECT coalesce(sum(p.keys), 0) FROM embeddings_internal.inbox_pending(%(queue)s) p
          WHERE p.lane = %(queue)s)::bigint
FROM {queue_table};

-- name: load_content
-- The content of a target's rows by key, with its md5 for the stale-write guard: read by the
-- target's embeddings_<id>_load(), which runs as the table's owner (sql/32_access.sql).
SELECT key, content, digest FROM {load}(%(keys)s::text[]{key_arrays});

-- name: load_content_known
-- As load_content, for rows of which this worker caches a long document between its pieces
-- (worker/pipeline/pieces.py): a row whose md5 is still the cached one's comes without its
-- content (`known`), so that a 10 MB document is not sent again for each piece; the database
-- still reads and hashes it (the stale-write guard needs the md5 as it is now).
SELECT l.key,
       CASE WHEN c.digest = l.digest THEN NULL ELSE l.content END,
       l.digest,
       coalesce(c.digest = l.digest, false) AS known
FROM {load}(%(keys)s::text[]{key_arrays}) l
LEFT JOIN unnest(%(known_keys)s::text[], %(known_digests)s::text[]) AS c (key, digest)
       ON c.key = l.key;

-- name: lock_rows
-- A row store's rows about to be written, locked until COMMIT as the write would lock them,
-- skipping those another transaction holds: the target's embeddings_<id>_lock_rows(), as the
-- table's owner. Returns the keys of the rows skipped (they wait for a later batch).
SELECT k FROM {lock_rows}(%(keys)s::text[]{key_arrays}) AS k;

-- name: write_vectors
-- Stores embeddings, except where the content changed since it was loaded (its md5 differs):
-- that row's newer content has its own job. The target's embeddings_<id>_store() (its
-- _store_shadow(): the shadow column of a model change). Returns the keys written.
SELECT k FROM {store}(%(keys)s::text[]{key_arrays}, %(embeddings)b, %(hashes)s::text[]) AS k;

-- name: clear_vectors
-- Clears the embedding of rows whose content is blank, unless it changed since it was loaded.
SELECT k FROM {blank}(%(keys)s::text[]{key_arrays}, %(hashes)s::text[]) AS k;

-- name: forget_rows
-- Side-table targets: deletes the side rows of rows that are gone (deleted since their job was
-- queued; a row of that key inserted since keeps its side row): the target's
-- embeddings_<id>_forget(). Returns the keys whose side row was deleted.
SELECT k FROM {forget}(%(keys)s::text[]{key_arrays}) AS k;

-- name: lease_jobs_by_id
-- Leases the named jobs (push mode: dispatch() or util.process_embeddings already leased them
-- with pgmq.read; this makes sure the lease lasts at least %(vt)s seconds, never shortening a
-- longer one, without counting another attempt).
-- ours: touches only our tables and pgmq's, runs no one else's code
UPDATE {queue_table} q
SET vt = greatest(q.vt, clock_timestamp() + make_interval(secs => %(vt)s))
WHERE q.msg_id = ANY(%(msg_ids)s::bigint[])
RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message;

-- name: resolve_failures
-- Removes the dead letters of rows just written or cleared (target ids, canonical keys and the
-- keys as their jobs carried them, pairwise). A composite key's JSON array, or a key whose JSON
-- text differs from its canonical text, matches by value; the rest by canonical text. Two joins
-- by key, not one by target filtered pair by pair (128 rows x every dead letter of the target:
-- 4 s beside 100,000), each served by a hash index where the planner wants one
-- (failures_row_key, failures_row_key_text).
-- ours: touches only our tables, runs no one else's code
WITH r AS (
    SELECT * FROM unnest(%(target_ids)s::integer[], %(keys)s::text[], %(raw_keys)s::jsonb[])
        AS r(target_id, key, raw_key)
)
DELETE FROM embeddings.failures f
WHERE f.id IN (SELECT g.id FROM r JOIN embeddings.failures g
                   ON g.target_id = r.target_id AND g.row_key = r.raw_key
               UNION ALL
               SELECT g.id FROM r JOIN embeddings.failures g
                   ON g.target_id = r.target_id AND g.row_key #>> ARRAY[]::text[] = r.key);

-- name: note_deferrals
-- Records why targets' jobs were deferred (embeddings.status shows it).
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT embeddings_internal.note_deferrals(%(target_ids)s::integer[], %(reasons)s::text[], %(jobs)s::integer[]);

-- name: clear_deferrals
-- Forgets the deferrals of targets served again.
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT embeddings_internal.clear_deferrals(%(target_ids)s::integer[]);

-- Chunked targets (worker/pipeline/chunks/). A document's chunks are keyed by (key, seq); each
-- carries the md5 of its model and text (chunk_hash), by which unchanged chunks keep their vector.

-- name: load_reusable_chunks
-- Vectors already stored for chunks of these documents with these hashes (the chunks that an
-- edit left unchanged): they are not embedded again. (real[]: the loading connection needs
-- no pgvector types.) One entry per chunk: the key arrays repeat each document's key.
SELECT key, chunk_hash, embedding FROM {reusable}(%(keys)s::text[]{key_arrays}, %(hashes)s::text[]);

-- name: lock_documents
-- Orders writers of the same documents until commit (embeddings_internal.lock_documents(), sql/41_locks.sql:
-- rows of a table of ours no one else may lock, in key order so that two writers never
-- deadlock): the stale-write check and the chunk writes that follow it see no other writer in
-- between. Side-table targets' writes take them too.
-- ours: touches only our tables, runs no one else's code
SELECT embeddings_internal.lock_documents(%(target_id)s, %(keys)s::text[]);

-- name: write_chunks
-- Writes the chunks of documents whose content is still what was loaded (same md5; NULL for
-- NULL content) and deletes each one's chunks past its new count (all of them for 0): the
-- target's embeddings_<id>_chunks(). Each chunk with its character offsets in its document,
-- and a document's with its heading path (a JSON array of them; NULL for plain text) and page.
-- Per document: whether it was current, and lost chunks.
SELECT key, is_current, trimmed
FROM {chunks}(%(keys)s::text[]{key_arrays}, %(hashes)s::text[], %(counts)s::integer[],
              %(chunk_keys)s::text[], %(seqs)s::integer[], %(chunks)s::text[], %(chunk_hashes)s::text[],
              %(embeddings)b, %(starts)s::integer[], %(ends)s::integer[], %(headings)s::jsonb,
              %(pages)s::integer[]);

-- name: search_target
-- Table %(table)s as the caller's own sessions find it (sql/15_names.sql: named_in_path, in the
-- path %(path)s the session started with, NULL: read now), or target %(target)s's table, and
-- its targets (of its embedding column %(column)s, when given), in load_targets' columns: one row per
-- target; one row of NULLs when the table is not watched; none when there is no such table. A
-- search resolves its target in this one statement (worker/retrieval/targets.py).
-- ours: touches only our tables and the catalog, runs no one else's code
WITH source AS (
    SELECT coalesce(embeddings_internal.named_in_path(%(table)s, false, %(path)s)::oid,
                    (SELECT t.source::oid FROM embeddings.targets t WHERE t.id = %(target)s::integer)) AS oid
)
SELECT found.*
FROM source LEFT JOIN LATERAL ({targets}) AS found ON true
WHERE source.oid IS NOT NULL;

-- name: unwatched_relation
-- What relation %(table)s (as search_target finds it, in the path %(path)s) is, when it is not
-- watched: its kind (pg_class.relkind), for a partition the nearest ancestor watched (to search
-- instead: watch() refuses a partition of a watched table), for a view the watched tables
-- its query reads (watch() takes tables only), and for the chunk or side table of a target
-- the kind of store, the target and its table (to search instead: watch() refuses it too).
-- Whose relation it is, when watch() refuses it for that (`ours`, `pgmq`, `catalog`), else NULL.
-- None when there is no such relation.
-- ours: touches only our tables and the catalog, runs no one else's code
WITH rel AS (SELECT embeddings_internal.named_in_path(%(table)s, false, %(path)s)::oid AS oid)
SELECT c.relkind::text AS kind,
       (SELECT CASE WHEN n.nspname IN ('embeddings', 'embeddings_internal') THEN 'ours'
                    WHEN n.nspname = 'pgmq' THEN 'pgmq'
                    WHEN n.nspname IN ('pg_catalog', 'information_schema') THEN 'catalog' END
        FROM pg_namespace n WHERE n.oid = c.relnamespace) AS owned_by,
       (SELECT jsonb_build_array(CASE t.store_kind WHEN 'chunks' THEN 'chunk' ELSE t.store_kind END,
                                 embeddings_internal.target_name(t), embeddings_internal.display_name(t.source))
        FROM embeddings.targets t WHERE t.store_table = c.oid AND t.source <> c.oid
        ORDER BY t.id LIMIT 1) AS store_of,
       (SELECT embeddings_internal.display_name(a.relid::regclass)
        FROM pg_partition_ancestors(c.oid) WITH ORDINALITY AS a(relid, n)
        WHERE a.relid <> c.oid AND EXISTS (SELECT FROM embeddings.targets t WHERE t.source = a.relid)
        ORDER BY a.n LIMIT 1) AS watched_parent,
       ARRAY(SELECT DISTINCT embeddings_internal.display_name(d.refobjid::regclass)
             FROM pg_rewrite r
             JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
             WHERE r.ev_class = c.oid AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> c.oid
               AND EXISTS (SELECT FROM embeddings.targets t WHERE t.source = d.refobjid)
             ORDER BY 1) AS watched_read
FROM rel JOIN pg_class c ON c.oid = rel.oid;

-- name: tables_alike
-- The tables the caller may read (%(watched)s: the watched ones only) whose names are
-- %(table)s's but for case, as a default search path spells them (`"Documents"`,
-- `docs."Notes"`): the hint of a command whose table is not found, where Postgres folded an
-- unquoted name to lower case (`Documents` is `documents`) and tables made by Supabase's table
-- editor keep their capitals. %(table)s is a name (parse_ident raises for anything else),
-- NFC-normalized by the caller; so are the names it is compared with, in a UTF8 database (an
-- accented letter composed or decomposed: other bytes, so another name, to Postgres).
-- ours: touches only our tables and the catalog, runs no one else's code
WITH given AS (SELECT parse_ident(%(table)s) AS parts,
                      pg_catalog.getdatabaseencoding() = 'UTF8' AS unicode)
SELECT DISTINCT embeddings_internal.display_name(c.oid::regclass) AS name
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN given
WHERE c.relkind IN ('r', 'p')
  AND lower(CASE WHEN given.unicode THEN pg_catalog.normalize(c.relname::text, 'NFC') ELSE c.relname::text END)
      = lower(given.parts[cardinality(given.parts)])
  AND (cardinality(given.parts) = 1
       OR (cardinality(given.parts) = 2
           AND lower(CASE WHEN given.unicode THEN pg_catalog.normalize(n.nspname::text, 'NFC') ELSE n.nspname::text END)
               = lower(given.parts[1])))
  AND (NOT %(watched)s OR EXISTS (SELECT FROM embeddings.targets t WHERE t.source = c.oid))
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY 1
LIMIT 3;

-- name: rerankers
-- The remote reranker registered as %(name)s (sql/57_rerank.sql), if any, or with %(name)s NULL
-- every one (doctor, `model list`): what a RemoteReranker is built from, read by each search
-- that reranks, on its own connection (a registration changed is used by the next search). No
-- column holds a secret: `credential` names the key.
-- ours: touches only our tables, runs no one else's code
SELECT name, provider, endpoint, remote_model, max_documents, max_tokens, max_in_flight,
       timeout_seconds, credential
FROM embeddings.rerankers WHERE %(name)s::text IS NULL OR name = %(name)s::text
ORDER BY name;

-- name: search_target_check
-- The targets of table %(table)s (as the caller's own sessions find it, in the path %(path)s
-- they start with: named_in_path), of its embedding column %(column)s when given, with what a
-- search compares with the target it read last (worker/retrieval/targets.py: KnownTargets):
-- its definition version and what a search uses that may change without it. Cheaper than
-- search_target by the catalog reads it skips.
-- ours: touches only our tables and the catalog, runs no one else's code
SELECT t.id, t.version, t.model, t.fts_config IS NOT NULL AS has_fulltext, t.rerank_model,
       t.rerank_depth, t.problem, t.source::oid AS source
FROM embeddings.targets t
WHERE t.source = embeddings_internal.named_in_path(%(table)s, false, %(path)s)::oid
  AND (%(column)s::name IS NULL OR t.embedding_column = %(column)s::name)
ORDER BY t.id;

-- name: search_target_version
-- The definition version of target %(target)s (NULL: gone), checked after each search: a model
-- change that swapped its column meanwhile means the query was embedded by the old model. A
-- pooled search sends it last, after the DISCARD of its session, in the same exchange
-- (worker/retrieval/targets.py: is_current); the operator is schema-qualified all the same.
-- ours: touches only our tables, runs no one else's code
SELECT version FROM embeddings.targets WHERE id OPERATOR(pg_catalog.=) %(target)s;

-- name: search
-- The %(k)s rows (documents, for a chunked target) of table %(source)s (its oid) nearest to
-- %(query)s among those matching %(filter)s: embeddings.search() (sql/58_search.sql), with the
-- caller's rights. The table by its oid, which its target read (not its target's id): a search
-- then plans no read of embeddings.targets of its own (about 0.15 ms a search). The key as its
-- JSON text, which the worker reads without turning a numeric's digits into a float's.
SELECT key::pg_catalog.text, distance, content, seq, start_offset, end_offset, headings, page
FROM embeddings.search(%(source)s::pg_catalog.regclass,
                       %(query)s, %(k)s, %(filter)s::jsonb, %(column)s::name);

-- name: hybrid_search
-- The %(k)s documents best by the fusion of the vector ranking of %(query)s and the full-text
-- ranking of %(text)s, tuned as %(fusion)s, %(rrf_k)s, %(vector_weight)s, %(text_weight)s (NULL:
-- the fusion's default), %(depth)s and %(text_match)s say: embeddings.hybrid_search()
-- (sql/59_hybrid.sql) of table %(source)s (its oid, as for search), the key as its JSON text.
SELECT key::pg_catalog.text, score, content, seq, distance, vector_rank, text_rank, start_offset, end_offset, headings, page
FROM embeddings.hybrid_search(%(source)s::pg_catalog.regclass,
                              %(text)s, %(query)s, %(k)s, %(filter)s::jsonb, %(column)s::name,
                              rrf_k => %(rrf_k)s::double precision,
                              vector_weight => %(vector_weight)s::double precision,
                              text_weight => %(text_weight)s::double precision,
                              depth => %(depth)s::integer,
                              text_match => %(text_match)s::text,
                              fusion => %(fusion)s::text);

-- name: document_progress
-- Long documents of a target in progress or over the ceiling (embeddings.documents): what a
-- worker continues from (under the definition %(version)s only), and what tells it whether
-- its last piece committed or another job's piece went on since.
SELECT row_key, digest, state, chunks_done, target_version = %(version)s
FROM embeddings.documents
WHERE target_id = %(target_id)s AND row_key = ANY(%(keys)s::text[]);

-- name: long_documents
-- For `status` and `doctor`: every long document in progress or over the ceiling, and every
-- document settled with no text.
SELECT target_id, row_key, state, chunks_done, chunks_estimated, bytes, ceiling_bytes, started_at, updated_at
FROM embeddings.document_progress ORDER BY target_id, started_at;

-- name: lock_document_progress
-- Inside a piece's write transaction, after lock_documents: each document's committed progress.
SELECT row_key, digest, chunks_done
FROM embeddings.documents
WHERE target_id = %(target_id)s AND row_key = ANY(%(keys)s::text[]) AND state = 'in_progress'
  AND target_version = %(version)s
FOR UPDATE;

-- name: note_document_progress
-- A piece's chunks were written (same transaction): its document's chunks 0 .. done - 1 are
-- those of the content `digest`.
INSERT INTO embeddings.documents AS d (target_id, row_key, digest, state, bytes, chunks_done, chunks_estimated,
                                       target_version)
SELECT %(target_id)s, n.key, n.digest, 'in_progress', n.bytes, n.done, n.estimated, %(version)s
FROM unnest(%(keys)s::text[], %(digests)s::text[], %(bytes)s::bigint[], %(done)s::integer[],
            %(estimated)s::integer[]) AS n(key, digest, bytes, done, estimated)
ON CONFLICT (target_id, row_key) DO UPDATE
SET digest = excluded.digest, state = excluded.state, bytes = excluded.bytes,
    chunks_done = excluded.chunks_done, chunks_estimated = excluded.chunks_estimated,
    ceiling_bytes = NULL, updated_at = now(), target_version = excluded.target_version,
    started_at = CASE WHEN d.digest = excluded.digest AND d.state = 'in_progress' THEN d.started_at ELSE now() END;

-- name: forget_documents
-- Documents written whole (or by their last piece), cleared or gone: no progress, no ceiling,
-- no settling for want of text.
DELETE FROM embeddings.documents
WHERE target_id = %(target_id)s AND row_key = ANY(%(keys)s::text[]);

-- name: forget_other_documents
-- Documents that failed for good, their chunks removed (same transaction): no progress of a
-- chain of pieces, no record of an earlier content; the record of the content that failed (its
-- ceiling) stays.
DELETE FROM embeddings.documents d
USING unnest(%(keys)s::text[], %(digests)s::text[]) AS n(key, digest)
WHERE d.target_id = %(target_id)s AND d.row_key = n.key
  AND (d.state = 'in_progress' OR d.digest IS DISTINCT FROM n.digest);

-- name: note_over_ceiling
-- Documents whose content (`digests`) is over the worker's ceiling: their jobs fail at once.
INSERT INTO embeddings.documents AS d (target_id, row_key, digest, state, bytes, ceiling_bytes, target_version)
SELECT %(target_id)s, n.key, n.digest, 'over_ceiling', n.bytes, %(ceiling)s, %(version)s
FROM unnest(%(keys)s::text[], %(digests)s::text[], %(bytes)s::bigint[]) AS n(key, digest, bytes)
ON CONFLICT (target_id, row_key) DO UPDATE
SET digest = excluded.digest, state = excluded.state, bytes = excluded.bytes, chunks_done = 0,
    chunks_estimated = NULL, ceiling_bytes = excluded.ceiling_bytes, updated_at = now(),
    target_version = excluded.target_version,
    started_at = CASE WHEN d.state = 'over_ceiling' THEN d.started_at ELSE now() END;

-- name: note_no_text
-- Documents whose content (`digests`) holds no text to embed, in the write transaction that
-- clears their chunks: settled, for sweep() (sql/60_sweep.sql: no_text_keys()) and status.
INSERT INTO embeddings.documents AS d (target_id, row_key, digest, state, bytes, target_version)
SELECT %(target_id)s, n.key, n.digest, 'no_text', n.bytes, %(version)s
FROM unnest(%(keys)s::text[], %(digests)s::text[], %(bytes)s::bigint[]) AS n(key, digest, bytes)
ON CONFLICT (target_id, row_key) DO UPDATE
SET digest = excluded.digest, state = excluded.state, bytes = excluded.bytes, chunks_done = 0,
    chunks_estimated = NULL, ceiling_bytes = NULL, updated_at = now(),
    target_version = excluded.target_version,
    started_at = CASE WHEN d.state = 'no_text' AND d.digest = excluded.digest THEN d.started_at ELSE now() END;

-- name: backfill_next
-- One step of a backfill of a target on %(queue)s that no other worker is stepping: queues the
-- next %(max_keys)s rows' keys that need a job and advances its cursor (sql/62_backfill.sql).
SELECT scanned, enqueued FROM embeddings_internal.backfill_next(%(queue)s, %(max_keys)s);

-- name: backfill_cursors
-- Where the backfills of %(queue)s's served targets have got to (target, rows scanned, last
-- step), for `run --once` finding nothing to read or step: a step another worker takes holds
-- its backfill's row until it commits, and ours skips it. worker/process/elsewhere.py.
-- ours: reads only the catalog and our tables, runs no one else's code
SELECT b.target_id, b.scanned_rows, b.stepped_at
FROM embeddings.backfills b JOIN embeddings.targets t ON t.id OPERATOR(pg_catalog.=) b.target_id
WHERE t.queue OPERATOR(pg_catalog.=) %(queue)s AND t.problem IS NULL
  AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) t.source)
ORDER BY b.target_id;

-- name: deferred_index_ready
-- Deferred HNSW indexes of %(queue)s's targets this worker may build now (sql/62_backfill.sql).
SELECT target_id, cleanup, statements FROM embeddings.deferred_index_ready(%(queue)s);

-- name: index_build_held
-- What session %(pid)s, a deferred index build of this worker's, waits for: 'table' for what its
-- table's users hold (the table's lock; the transactions writing it: any lock wait but the
-- next), 'older' for the transactions older than it, which every build in the database waits
-- for; NULL when it waits for no lock. And the sessions it waits for.
SELECT CASE WHEN a.wait_event_type IS DISTINCT FROM 'Lock' THEN NULL
            WHEN p.phase = 'waiting for old snapshots' THEN 'older' ELSE 'table' END,
       pg_catalog.pg_blocking_pids(a.pid)
FROM pg_catalog.pg_stat_activity a
LEFT JOIN pg_catalog.pg_stat_progress_create_index p ON p.pid = a.pid
WHERE a.pid = %(pid)s;

-- name: server_backend
-- The server backend running this transaction, as the server says it (the pooler check at start
-- and doctor's, worker/pooler.py: behind a pooler libpq's backend pid is the pooler's cancel key).
-- ours: reads a value, runs no one else's code
SELECT pg_catalog.pg_backend_pid();

-- name: index_build_session
-- Behind a transaction pooler, the server session of a deferred index build of this worker's:
-- the one session of our role running exactly %(statement)s (worker/process/index_builder.py:
-- the statement runs alone, in whichever server session the pooler gives it); none when there
-- is not exactly one.
SELECT pg_catalog.min(a.pid)
FROM pg_catalog.pg_stat_activity a
WHERE a.query OPERATOR(pg_catalog.=) %(statement)s AND a.usename OPERATOR(pg_catalog.=) CURRENT_USER
  AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
HAVING pg_catalog.count(*) OPERATOR(pg_catalog.=) 1;

-- name: deferred_index_built
-- Forgets a deferred index once a valid HNSW index is on the target's column.
SELECT embeddings_internal.deferred_index_built(%(target_id)s);

-- model change: BEGIN (queries of the blue/green model change, sql/44_changes.sql)

-- name: load_changes
-- Targets being changed to another model: the model, its shadow column and that column's type.
SELECT mc.target_id, mc.model, mc.shadow_column, ty.typname, a.atttypmod
FROM embeddings.model_changes mc
JOIN embeddings.targets t ON t.id = mc.target_id
LEFT JOIN pg_attribute a ON a.attrelid = t.store_table AND a.attname = mc.shadow_column
                        AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type ty ON ty.oid = a.atttypid;

-- name: claim_provenance
-- Records this worker's model as the producer of a target's (shadow) vectors unless one is
-- recorded; returns the recorded producer ('model revision variant').
-- ours: touches only our tables, runs no one else's code
SELECT embeddings_internal.claim_provenance(%(target_id)s, %(shadow)s, %(model)s, %(revision)s, %(variant)s);

-- name: load_provenance
-- The recorded producer of every target's vectors (shadow: of its shadow column).
SELECT target_id, shadow, concat_ws(' ', model, revision, variant) FROM embeddings.provenance;

-- name: complete_changes
-- Completes the model changes whose every row has its new vector (embeddings_internal.complete_change).
SELECT target_id, result FROM embeddings_internal.complete_changes();

-- name: change_definitions
-- Each model change in progress as its swap depends on it, one digest per change: the target's
-- definition version, the change (its model, shadow column, keep_old) and the new model's
-- registration. A failing swap's pause starts over when one changes (worker/process/changes.py).
SELECT mc.target_id,
       md5(concat_ws(' ', t.version, mc.model, mc.shadow_column, mc.keep_old, m::text))
FROM embeddings.model_changes mc
JOIN embeddings.targets t ON t.id = mc.target_id
LEFT JOIN embeddings.models m ON m.name = mc.model;

-- model change: END

-- name: target_lanes
-- The pgmq tables of each target's lanes (embeddings_internal.lane_table(), pgmq's naming rule)
-- and its table, for the targets in %(target_ids)s: where `status` looks for their retries.
SELECT t.id, embeddings_internal.lane_table(t.queue, 'live'), embeddings_internal.lane_table(t.queue, 'backfill'),
       n.nspname, c.relname, t.embedding_column
FROM embeddings.targets t
JOIN pg_class c ON c.oid = t.source
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.id = ANY(%(target_ids)s::integer[]);

-- name: retrying_keys
-- Row keys waiting for another attempt after an error, by target (our messages by target id,
-- the Supabase guide's by table and column), with the most recent error and the most attempts
-- spent: messages the worker backed off or re-sent carry `last_error`. `status` reads it per
-- lane, and only from a lane of at most embeddings.status_exact_rows messages (one bounded
-- look first), so that it costs nothing at scale, where one retried row would not move an ETA.
WITH threshold AS (
    SELECT coalesce(nullif(current_setting('embeddings.status_exact_rows', true), '')::bigint, 5000) AS n
), small AS (
    SELECT count(*) <= (SELECT n FROM threshold) AS yes
    FROM (SELECT 1 FROM {queue_table} LIMIT (SELECT n + 1 FROM threshold)) m
)
SELECT message -> 'target' AS target_id,
       message ->> 'schema' AS schema_name,
       message ->> 'table' AS table_name,
       coalesce(message ->> 'embeddingColumn', 'embedding') AS embedding_column,
       sum(CASE WHEN jsonb_typeof(message -> 'keys') = 'array' THEN jsonb_array_length(message -> 'keys')
                WHEN jsonb_typeof(message -> 'columns' -> 0) = 'array' THEN jsonb_array_length(message -> 'columns' -> 0)
                WHEN jsonb_typeof(message -> 'columns' -> 0) = 'string'  -- array text: commas + 1
                THEN length(message -> 'columns' ->> 0) - length(replace(message -> 'columns' ->> 0, ',', '')) + 1
                ELSE 1 END)::bigint AS keys,
       (array_agg(message ->> 'last_error' ORDER BY msg_id DESC))[1] AS last_error,
       max(read_ct + CASE WHEN jsonb_typeof(message -> 'attempts') = 'number'
                          THEN (message ->> 'attempts')::integer ELSE 0 END) AS attempts
FROM {queue_table}
WHERE (SELECT yes FROM small) AND message ? 'last_error'
GROUP BY 1, 2, 3, 4;

-- name: stopped_targets
-- What stops the progress of the targets of queue %(queue)s (sql/52_stopped.sql), one row per
-- state: the source of /readyz's stopped_targets and the embed_worker_target_stopped gauge.
SELECT target, state, reason, fix, since FROM embeddings_internal.stopped_targets() WHERE queue = %(queue)s;
-- name: unserved_targets
-- `run --once`'s end (worker/process/unserved.py): the targets of queue %(queue)s whose jobs
-- are held or that cannot be served (sql/52_stopped.sql).
-- ours: touches only our tables and the catalog, runs no one else's code
SELECT DISTINCT target_id FROM embeddings_internal.stopped_targets()
WHERE queue = %(queue)s AND state IN ('held', 'problem');

-- name: unserved_jobs
-- Of the targets with ids %(targets)s (status_only narrows the count to them), those with jobs
-- waiting: id, name, how many, the problem that stops them, why a worker holds them (as the
-- last worker to say so recorded it), and status's problem.
SELECT s.target_id, s.target, s.pending_jobs,
       (SELECT e ->> 'reason' FROM pg_catalog.jsonb_array_elements(s.stopped) e
        WHERE e ->> 'state' = 'problem' LIMIT 1),
       s.deferred_reason, s.problem
FROM embeddings.status s
WHERE s.target_id OPERATOR(pg_catalog.=) ANY (%(targets)s::integer[]) AND s.pending_jobs > 0
ORDER BY s.target;

-- name: record_fingerprints
-- The fingerprints (content and definition) of the vectors this write transaction stores: what
-- embeddings.sweep(verify => true) checks each row's vector against (sql/64_verify.sql).
SELECT embeddings_internal.record_fingerprints(%(target_id)s, %(shadow)s, %(keys)s::text[], %(hashes)s::text[]);

-- name: clear_failing
-- Clears the vectors of rows whose content function raises now: no vector rather than one of
-- an older definition. The target's embeddings_<id>_clear_failing(), as the table's owner.
SELECT k FROM {clear_failing}(%(keys)s::text[]{key_arrays}) AS k;

-- catalog: BEGIN (what is installed and who may do what: start-up, `doctor`, `migrate`)

-- name: schema_installed
-- Whether the embeddings schema is installed (its targets table is there).
SELECT to_regclass('embeddings.targets') IS NOT NULL;

-- name: installed_schema_revision
-- The release revision whose tables an installed schema has, told by what each release added to
-- them (0.4.0 targets.store_table, 0.3.0 targets.rerank_model, 0.2.0 embeddings.inbox): where
-- Alembic's record of it is missing (worker/schema/revisions.py: install_initial).
-- ours: reads only the catalog, runs no one else's code
SELECT CASE
    WHEN EXISTS (SELECT FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = 'embeddings.targets'::regclass AND a.attname = 'store_table'
                   AND NOT a.attisdropped) THEN '0020'
    WHEN EXISTS (SELECT FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = 'embeddings.targets'::regclass AND a.attname = 'rerank_model'
                   AND NOT a.attisdropped) THEN '0019'
    WHEN pg_catalog.to_regclass('embeddings.inbox') IS NOT NULL THEN '0002'
    ELSE '0001' END;

-- name: schema_revision_defined
-- Where the schema records its revision for worker roles: 'internal' (this release's
-- embeddings_internal.schema_revision()), '0.3.0' (that release kept it in schema embeddings;
-- today's schema keeps a forwarder of that name, so the internal one is looked for first), or
-- NULL (neither: a schema of 0.2.0 or older). Read from pg_proc, not by to_regprocedure(),
-- which raises for a role without USAGE on the schema (a monitoring role where PUBLIC's
-- rights were revoked: every command stopped there, before its own statements).
-- ours: reads only the catalog, runs no one else's code
SELECT CASE WHEN 'embeddings_internal' = ANY (found.schemas) THEN 'internal'
            WHEN 'embeddings' = ANY (found.schemas) THEN '0.3.0' END
FROM (SELECT ARRAY(SELECT n.nspname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE p.proname = 'schema_revision' AND p.pronargs = 0
                     AND n.nspname IN ('embeddings', 'embeddings_internal')) AS schemas) found;

-- name: schema_revision
-- The Alembic revision the schema was migrated to (NULL: installed without Alembic's record).
-- ours: reads only our tables, runs no one else's code
SELECT embeddings_internal.schema_revision();

-- name: schema_revision_0_3_0
-- schema_revision of a 0.3.0 schema, which kept the function in schema embeddings.
-- ours: reads only our tables, runs no one else's code
SELECT embeddings.schema_revision();

-- name: migration_tables
-- The tables `migrate` locks before it changes anything (worker/schema/locks.py): ours, and
-- every table a target writes (every column of its registry row that names a table: its source
-- and its store_table, before 0.4.0 its side_table or chunk_table; read by name, so that the
-- schema of any release serves), that this role may lock, as regclass text (quoted,
-- qualified), in oid order.
-- ours: reads only the catalog and our tables, runs no one else's code
SELECT r::text FROM (
    SELECT c.oid::regclass AS r FROM pg_catalog.pg_class c
    WHERE c.relnamespace = 'embeddings'::regnamespace AND c.relkind IN ('r', 'p')
    UNION
    SELECT x.r FROM embeddings.targets t
    CROSS JOIN LATERAL (SELECT CASE WHEN e.key = 'source' OR e.key LIKE E'%%\\_table' THEN e.value::regclass END
                        FROM pg_catalog.jsonb_each_text(pg_catalog.to_jsonb(t)) AS e) AS x(r)
    WHERE x.r IS NOT NULL
) AS tables
WHERE pg_catalog.has_table_privilege(r, 'UPDATE, DELETE, TRUNCATE')
ORDER BY r::oid;

-- name: lock_for_migration
-- Every table of migration_tables at once ({tables}), under set_local_statement_timeout.
-- ours: locks tables, runs no one else's code
LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE;

-- name: try_migration_lock
-- One `migrate` at a time (worker/schema/locks.py: serialize): the transaction's advisory lock
-- %(key)s if it is free, never waited for (any login may hold that key).
-- ours: takes a lock, runs no one else's code
SELECT pg_catalog.pg_try_advisory_xact_lock(%(key)s::bigint);

-- name: migration_lock_holders
-- Sessions other than this one holding a lock on a table `migrate` locks, or its advisory
-- lock %(key)s (a bigint key below 2^32: classid 0, objid the key, objsubid 1): who keeps it
-- waiting (worker/schema/locks.py). One row per session, naming the tables it holds (not their
-- indexes or our views: a session that holds a table's holds them too), schema-qualified.
-- ours: reads only the catalog and our tables, runs no one else's code
SELECT a.pid, a.application_name, a.state,
       pg_catalog.date_part('epoch', pg_catalog.now() - coalesce(a.xact_start, a.backend_start))::float8,
       pg_catalog.string_agg(DISTINCT h.what, ', ')
FROM (SELECT l.pid,
             CASE WHEN l.locktype = 'advisory' THEN 'the advisory lock of migrate'
                  ELSE pg_catalog.format('%%I.%%I', n.nspname, c.relname) END AS what
      FROM pg_catalog.pg_locks l
      LEFT JOIN pg_catalog.pg_class c ON c.oid = l.relation
      LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE l.granted AND l.pid <> pg_catalog.pg_backend_pid()
        AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
        AND ((l.locktype = 'relation' AND c.relkind IN ('r', 'p')
              AND (c.relnamespace = 'embeddings'::regnamespace
                   OR l.relation IN (SELECT CASE WHEN e.key = 'source' OR e.key LIKE E'%%\\_table' THEN e.value::regclass END
                                     FROM embeddings.targets t
                                     CROSS JOIN LATERAL pg_catalog.jsonb_each_text(pg_catalog.to_jsonb(t)) AS e)))
             OR (l.locktype = 'advisory' AND l.classid = 0 AND l.objsubid = 1 AND l.objid = %(key)s::bigint::oid))) AS h
JOIN pg_catalog.pg_stat_activity a ON a.pid = h.pid
GROUP BY a.pid, a.application_name, a.state, a.xact_start, a.backend_start
ORDER BY a.xact_start NULLS LAST, a.pid
LIMIT 10;

-- name: deadlock_timeout_ms
-- The server's deadlock_timeout in milliseconds: `migrate` waits for its locks less than half of it.
-- ours: reads a setting, runs no one else's code
SELECT pg_catalog.date_part('epoch', pg_catalog.current_setting('deadlock_timeout')::interval) * 1000;

-- name: statement_timeout_now
-- ours: reads a setting, runs no one else's code
SELECT pg_catalog.current_setting('statement_timeout');

-- name: set_local_statement_timeout
-- The statement timeout until the transaction ends (%(ms)s: a setting's text, '500ms').
-- ours: sets a setting, runs no one else's code
SELECT pg_catalog.set_config('statement_timeout', %(ms)s, true);

-- name: vector_schema
-- The schema pgvector is installed in (public here, `extensions` on Supabase), quoted.
SELECT quote_ident(n.nspname) FROM pg_extension e
JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector';

-- name: queue_has_last_read_at
-- Whether pgmq's table %(queue_table)s has last_read_at (pgmq before 1.8, Supabase's, has not).
SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass(%(queue_table)s)
               AND attname = 'last_read_at' AND NOT attisdropped);

-- name: installed_extensions
-- Every extension of this database and its version.
SELECT extname, extversion FROM pg_extension;

-- name: offered_extensions
-- The versions of pgvector and pgmq the server offers.
SELECT name, default_version FROM pg_available_extensions WHERE name IN ('vector', 'pgmq');

-- name: pgmq_schema_exists
-- Whether a pgmq schema exists (pgmq installed as plain SQL has no extension row).
SELECT to_regnamespace('pgmq') IS NOT NULL;

-- name: pgmq_state
-- Whether pgmq is installed here, and whether the server offers it as an extension.
SELECT to_regclass('pgmq.meta') IS NOT NULL,
       EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pgmq');

-- name: create_pgmq
-- pgmq as an extension (where the server offers it).
CREATE EXTENSION pgmq;

-- name: pg_cron_available
-- Whether the server offers pg_cron.
SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_cron');

-- name: preload_libraries
-- shared_preload_libraries (a role without pg_read_all_settings may not read it).
SELECT current_setting('shared_preload_libraries');

-- name: target_tables
-- `doctor`: each target's table as a command names it (in our sessions' path: qualified).
SELECT id, source::text FROM embeddings.targets;

-- name: subscribed_targets
-- `doctor`: targets watched without replica => true whose table (or a partition of it) a
-- logical-replication subscription of this database writes to: rows the apply worker writes
-- fire no ordinary trigger, so they are never queued. pg_subscription_rel, as any role reads it.
-- ours: reads only the catalog and our tables, runs no one else's code
SELECT DISTINCT t.source::text, s.subname::text
FROM embeddings.targets t
JOIN pg_catalog.pg_subscription_rel r
  ON r.srrelid = t.source
  OR t.source IN (SELECT a.relid FROM pg_catalog.pg_partition_ancestors(r.srrelid) AS a)
JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid
WHERE NOT t.replica AND t.has_triggers
ORDER BY 1, 2;

-- name: current_role
-- The role this connection runs as.
SELECT current_user;

-- name: can_read_table
-- Whether this role may SELECT from %(table)s.
SELECT has_table_privilege(%(table)s, 'SELECT');

-- name: session_identity
-- The role this connection runs as, the same as an identifier in a statement, and its database.
SELECT current_user, quote_ident(current_user), current_database();

-- name: unsearchable_tables
-- The watched tables, and the tables apart that hold their vectors (a chunked or a side-table
-- target's), on no column of which role %(role)s holds SELECT: its searches of them are refused
-- (42501; POST /search answers 403). Column grants count: a role that holds some may search.
SELECT DISTINCT r.rel::regclass::text
FROM embeddings.targets t
CROSS JOIN LATERAL (VALUES (t.source), (t.store_table)) AS r(rel)
WHERE NOT pg_catalog.has_any_column_privilege(%(role)s, r.rel, 'SELECT')
ORDER BY 1;

-- name: fulltext_columns_missing
-- The targets with full-text search (fts_config) whose store lacks their tsvector column: their
-- hybrid and BM25 searches fail (doctor's full-text check), each with the enable_fts() call
-- that makes the column again, its arguments quoted.
SELECT t.source::regclass::text, t.fts_config::text, t.store_table::regclass::text, t.fts_column,
       pg_catalog.concat('SELECT embeddings.enable_fts(', pg_catalog.quote_literal(t.source::regclass::text), ', ',
                         pg_catalog.quote_literal(t.fts_config::text), ', ',
                         pg_catalog.quote_literal(t.embedding_column), ');')
FROM embeddings.targets t
WHERE t.fts_config IS NOT NULL
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = t.store_table AND a.attname = t.fts_column
                    AND a.attnum > 0 AND NOT a.attisdropped)
ORDER BY t.id;

-- name: search_index_sizes
-- The HNSW indexes a search walks (on each target's vector table, its partitions' included),
-- each with its size in bytes, largest first, the index scans it served since the statistics
-- were last reset (0: no search walked it; a table under exact_search_rows is scanned instead),
-- and the server's shared_buffers in bytes.
SELECT DISTINCT c.oid::pg_catalog.regclass::text, pg_catalog.pg_relation_size(c.oid),
       pg_catalog.pg_stat_get_numscans(c.oid),
       pg_catalog.pg_size_bytes(pg_catalog.current_setting('shared_buffers'))
FROM embeddings.targets t
-- pg_partition_tree() lists nothing for a table neither partitioned nor a partition.
CROSS JOIN LATERAL (SELECT t.store_table::oid AS relid
                    UNION SELECT relid FROM pg_catalog.pg_partition_tree(t.store_table)) p
JOIN pg_catalog.pg_index i ON i.indrelid = p.relid
JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid AND c.relkind = 'i'  -- a partitioned one holds none
JOIN pg_catalog.pg_am am ON am.oid = c.relam AND am.amname = 'hnsw'
ORDER BY 2 DESC, 1;

-- name: model_dimensions
-- The dimensions of each model the database knows.
SELECT name, dimensions FROM embeddings.models;

-- name: watched_models
-- The model of each target.
SELECT model FROM embeddings.targets;

-- name: live_queues
-- The live queues (not their backfill lanes) by name: the queues a worker may serve (EMBED_QUEUE).
-- ours: touches only our tables, runs no one else's code
SELECT q.name FROM embeddings.queues q WHERE q.live_queue IS NULL ORDER BY q.name;

-- name: target_grants
-- Each target's name, model, column typmod and whether this role may do its work: execute the
-- functions through which the worker reads and writes the table as its owner
-- (sql/32_access.sql; it holds no privilege on the table itself), use its queue, record
-- failures. Run without parameters (its `%I` is format()'s). The functions are read in one pass
-- over our schema, grouped by the target id in their names: a pass per target (a regular
-- expression per function per target) took 40 s at 1,000 targets. The queue's table is found in
-- pg_class by its lane's name (embeddings_internal.lane_table(), pgmq's naming rule), asked only
-- of a role with USAGE on schema pgmq: one without (the very one doctor must tell to
-- grant_worker()) could not even name pgmq's function, and doctor ended with no report.
-- A target without any of its functions gets NULL, not false: nothing to grant. Its problem
-- dropped them (a content or key column dropped), or says they are missing
-- (access_problems(), sql/32_access.sql): doctor reports that problem with its own fix.
WITH functions AS (
    SELECT substring(p.proname FROM '^embeddings_([0-9]+)_')::integer AS target_id,
           bool_and(has_function_privilege(p.oid, 'EXECUTE')) AS can_run
    FROM pg_proc p
    WHERE p.pronamespace = 'embeddings'::regnamespace
      AND p.proname ~ '^embeddings_[0-9]+_(lock|lock_rows|load|store|blank|reusable|chunks)$'
    GROUP BY 1
)
SELECT embeddings_internal.target_name(t), t.model, a.atttypmod, f.can_run,
       has_schema_privilege('pgmq', 'USAGE')
           AND coalesce(has_table_privilege(q.oid, 'SELECT, UPDATE, DELETE'), false),
       has_table_privilege('embeddings.failures', 'INSERT')
FROM embeddings.targets t JOIN pg_attribute a ON a.attrelid = t.source
 AND a.attname = t.embedding_column AND NOT a.attisdropped
LEFT JOIN functions f ON f.target_id = t.id
LEFT JOIN pg_class q ON q.relnamespace = 'pgmq'::regnamespace
 AND q.relname = CASE WHEN has_schema_privilege('pgmq', 'USAGE')  -- (CASE: never asked without)
                      THEN embeddings_internal.lane_table(t.queue, 'live') END
ORDER BY t.id;

-- name: targets_have_key_column
-- Whether embeddings.targets still has key_column: main's 0002 from before the squash had it.
SELECT EXISTS (SELECT FROM pg_attribute a
               WHERE a.attrelid = to_regclass('embeddings.targets') AND a.attname = 'key_column'
                 AND NOT a.attisdropped);

-- name: version_table_exists
-- Whether our Alembic version table %(version_table)s is there.
SELECT to_regclass(%(version_table)s) IS NOT NULL;

-- name: current_revision
-- The revision Alembic recorded in {version_table}.
SELECT version_num FROM {version_table};

-- name: restamp_0001
-- Marks the database as at revision 0001 (a squashed revision's database, upgraded from there).
UPDATE {version_table} SET version_num = '0001';

-- catalog: END

-- name: wait_for_jobs
-- Waits up to %(ms)s ms for jobs on %(queue)s (or its backfill lane, when %(backfill)s),
-- looking every %(poll_ms)s ms; true when it found some (sql/20_queue.sql).
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT embeddings.wait_for_jobs(%(queue)s, %(ms)s, %(backfill)s, %(poll_ms)s);

-- name: short_statement_timeout
-- Statements of this transaction give up after 3 s (SET LOCAL: behind a transaction pooler a
-- plain SET would outlive us on a server connection that other clients then get).
-- ours: touches only our tables and pgmq's, runs no one else's code
SET LOCAL statement_timeout = '3s';

-- name: takes_no_writes
-- Why the database refuses every write of the worker (db.READ_ONLY says what each means), or NULL:
-- a hot standby (DATABASE_URL names a replica, or a failover left us on the old primary:
-- 'standby'), or transactions read-only by default ('read_only':
-- `ALTER DATABASE ... SET default_transaction_read_only = on`, a freeze for maintenance). Asked
-- in a transaction of its own: what it reads is the server's state and the database's and role's
-- defaults, which no table owner's code can change for us (a SET LOCAL ends with the function
-- with a SET clause that runs the owner's code, and the session guard resets the rest).
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT CASE
    WHEN pg_catalog.pg_is_in_recovery() THEN 'standby'
    WHEN pg_catalog.current_setting('transaction_read_only')::boolean THEN 'read_only'
END;

-- name: session_discard
-- A pooled connection given back (db.pool, POST /search): everything a session holds beyond its
-- settings dropped too (temporary tables, LISTENs, prepared statements, advisory locks), which
-- someone's code run by a search (a policy, a content function) may have left; its cached plans
-- too unless the search keeps them for its table's next searches (session_discard_plans).
-- session_reset follows in the same exchange (worker/session_guard.py: discard_session), which
-- DISCARD ALL itself refuses (it cannot run in a transaction block, and several statements in
-- one query string are one): so it is spelled out, as the PostgreSQL manual defines it.
CLOSE ALL;
SET SESSION AUTHORIZATION DEFAULT;
RESET ALL;
DEALLOCATE ALL;
UNLISTEN *;
SELECT pg_catalog.pg_advisory_unlock_all();
DISCARD TEMP;
DISCARD SEQUENCES;

-- name: session_discard_plans
-- ours: the rest of DISCARD ALL, the session's cached plans. A table owner's code run by a search
-- may search other tables under planner settings it chose, and PL/pgSQL caches the plans it
-- builds then for the session: they may serve only the searches of the table whose search ran
-- that code (worker/retrieval/search.py), and are dropped before any other's.
DISCARD PLANS;

-- name: session_reset
-- Every connection's first statement (db.connect), and again after anyone else's code may have
-- run in the session (worker/session_guard.py): every setting back to what the role and the
-- database give it (RESET ALL), then ours. The search path: pg_catalog, then pg_temp (which is
-- never searched for functions or operators when named last), and nothing else: not the role's
-- "$user" or `public`, where a tenant may create a schema named after our role, or CREATE, and
-- plant an exact-type overload (`make_interval(secs smallint)`, `unnest(text[])`) that Postgres
-- would prefer to pg_catalog's polymorphic or cast-needing one. What is not pg_catalog's is
-- schema-qualified (tests/unit/test_qualified_names.py); table names the user gives (`search
-- docs`) are looked up as the user's own sessions find them (sql/15_names.sql:
-- relation_named). The formats psycopg reads dates, timestamps and intervals in: a database or
-- role whose DateStyle is not ISO (`ALTER DATABASE ... SET DateStyle = 'German'`), or
-- PGDATESTYLE, would otherwise make every timestamptz the worker reads (a queue message's,
-- status's) an error. `ISO` alone keeps the session's day/month order, which only parses input.
-- A SET rather than startup options: PgBouncer refuses unknown startup parameters, and
-- re-applies DateStyle and IntervalStyle (reported parameters) on whatever server connection
-- serves us. Content is evaluated under these same formats in every session (sql/32_access.sql:
-- content_settings_sql), so what the worker embeds and what the verifying sweep checks agree.
-- Backslashes in string constants as the SQL standard reads them (the default, which a role or
-- database may turn off): pgmq's functions, parsed in our sessions, need it
-- (pgmq.format_table_name's '\'' would end its string). Our transactions at READ COMMITTED,
-- whatever a database or role makes the default (`default_transaction_isolation =
-- 'serializable'` is common): every statement of ours is written for it, re-checking a row
-- another session wrote meanwhile (a vector's write compares the content's md5, and skips a
-- changed row) where REPEATABLE READ and SERIALIZABLE fail the whole transaction (40001); two
-- workers and an application writing at once failed most batches so, spending the rows'
-- attempts (docs/reliability.md, "Isolation and conflicts"). Text in UTF-8, whatever the
-- database's encoding or a client setting (worker/db.py: CLIENT_ENCODING says why).
-- The settings themselves are session_settings', which follows in the same exchange
-- (worker/session_guard.py: _settings), as it follows transaction_discard behind a pooler.
RESET ALL;
SELECT pg_catalog.set_config('default_transaction_isolation', 'read committed', false);

-- name: transaction_discard
-- Behind a transaction pooler (EMBED_POOL_MODE=transaction), first in each transaction of ours,
-- in the exchange of its first statement (worker/session_guard.py: per_transaction): whatever the
-- server session carries from the clients that used it before, gone for this transaction and
-- after it: every setting (RESET ALL: a search path with someone's schema first, a 1 ms
-- statement_timeout, default_transaction_read_only, session_replication_role), the role (SET
-- ROLE and SET SESSION AUTHORIZATION, which RESET ALL keeps), cursors, LISTENs, session advisory
-- locks (one held there would let our transaction-level ones through), temporary tables,
-- sequence state. Not DEALLOCATE ALL (session_discard has it): we never run a prepared statement
-- by name, and PgBouncer 1.21 and later keeps its own prepared statements on server sessions
-- that DEALLOCATE ALL would take from under its other clients; not the cached plans
-- (session_discard_plans): they are our own functions' (fixed search paths), and dropping them
-- in every transaction would plan every function again. Sent one statement at a time (a
-- pipeline takes one a message); session_settings follows.
CLOSE ALL;
SET SESSION AUTHORIZATION DEFAULT;
RESET ALL;
UNLISTEN *;
SELECT pg_catalog.pg_advisory_unlock_all();
DISCARD TEMP;
DISCARD SEQUENCES;

-- name: session_settings
-- Our settings (session_reset says why each): after session_reset's RESET ALL for the session
-- ({local} false), or after transaction_discard behind a transaction pooler for this transaction
-- alone ({local} true: none outlives our COMMIT on a server session the pooler then hands to
-- another client; the isolation level is then the transaction's BEGIN's). Which server session
-- runs ours, in the same statement (no exchange of its own: worker/server_session.py), as libpq
-- cannot say it behind a pooler (its backend pid is the pooler's cancel key): the session's pid,
-- read from the row; per transaction, whose row arrives only with the exchange's end, the
-- transaction's marker too, an advisory lock of a key the connection drew at random
-- ({marker_1}, {marker_2}), held until our transaction ends, which pg_locks shows at once.
-- ours: sets settings, runs no one else's code
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', {local}),
       pg_catalog.set_config('DateStyle', 'ISO', {local}),
       pg_catalog.set_config('IntervalStyle', 'postgres', {local}),
       pg_catalog.set_config('standard_conforming_strings', 'on', {local}),
       pg_catalog.set_config('client_encoding', 'UTF8', {local}),
       pg_catalog.pg_backend_pid() AS server_pid,
       CASE WHEN {local} THEN pg_catalog.pg_try_advisory_xact_lock({marker_1}, {marker_2}) END
         AS server_marker;

-- name: session_start_path
-- The search path the session started with, what RESET restores (pg_settings.reset_val): read
-- once, after the connection's first session_reset in the same exchange (worker/session_guard.py:
-- start_path), for looking up the names a user gives as the user's own sessions do. Read here
-- rather than by sql/15_names.sql's session_start_path(): connections are made before migrate
-- installs it.
-- ours: reads the catalog, runs no one else's code
SELECT s.reset_val FROM pg_catalog.pg_settings s WHERE s.name OPERATOR(pg_catalog.=) 'search_path';

-- name: installer_path
-- `migrate`'s transaction (migrations/env.py), before anything of sql/ or a revision runs, and
-- each file of sql/ wherever it is run (schema.run_files): the search path of our sessions
-- (session_reset), so that nothing a tenant created in a schema named after the migrating role,
-- or in `public`, is called by the installer. Everything of ours is schema-qualified; pgvector,
-- when missing, is created in `public` (sql/state/00_extensions.sql).
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

-- name: session_lock_timeout
-- After every session_reset (worker/session_guard.py): no statement waits longer than {ms} for
-- a lock (EMBED_LOCK_TIMEOUT_MS), whatever the role or the database set; a session setting, as
-- the reset's own are ({local} false), or the transaction's alone behind a transaction pooler
-- ({local} true). {ms} is a literal: the statement goes in the reset's exchange.
-- ours: sets a setting, runs no one else's code
SELECT pg_catalog.set_config('lock_timeout', {ms}, {local});

-- name: session_statement_timeout
-- After every session_reset, on a connection made to wait for others by design (db.connect's
-- `unbounded`: the index builder's CREATE INDEX CONCURRENTLY): the statement_timeout {ms},
-- whatever the role or the database set ({local}: as session_lock_timeout's).
-- ours: sets a setting, runs no one else's code
SELECT pg_catalog.set_config('statement_timeout', {ms}, {local});

-- name: session_client_check
-- With session_lock_timeout (PostgreSQL 14 and later): a statement of ours whose client is gone
-- (a worker killed while a table owner's code ran, and went on, in its session) ends within a
-- second instead of running on, holding its locks ({local}: as session_lock_timeout's).
-- ours: sets a setting, runs no one else's code
SELECT pg_catalog.set_config('client_connection_check_interval', '1s', {local});

-- name: session_idle_timeout
-- After every session_reset, with our other settings: a transaction of ours left idle longer
-- than {ms} ends with its session (idle_in_transaction_session_timeout), whatever the role or the
-- database set. Ours never idle that long between two statements (no inference, no wait inside
-- one: the longest gap measured in a write transaction was 0.59 s, two cores at load 9); a
-- worker frozen inside one (SIGSTOP, `docker pause`, a cgroup freezer) otherwise holds its
-- locks on the application's table and ours, and the vacuum horizon, until it is thawed
-- ({local}: as session_lock_timeout's).
-- ours: sets a setting, runs no one else's code
SELECT pg_catalog.set_config('idle_in_transaction_session_timeout', {ms}, {local});

-- name: statement_bound
-- The statements that may run a table owner's code (its triggers, its content function) in
-- a bounded block (worker/session_guard.py: bounded()) run at most {ms}: SET LOCAL, so the
-- bound ends with the transaction.
-- ours: sets a setting, runs no one else's code
SELECT pg_catalog.set_config('statement_timeout', {ms}, true);

-- name: terminate_backend
-- Ends our server session whose statement ran a table owner's code past its bound and caught
-- the cancel (worker/process/watchdog.py); a role may end its own sessions. Only while it runs
-- that statement: a session that finished it and waits for us to read its result (a worker whose
-- process was paused past the bound, or starved of CPU) runs no one's code. The session is the
-- server's (worker/server_session.py): pid %(pid)s, or behind a transaction pooler the one
-- holding our transaction's marker (%(marker_1)s, %(marker_2)s), only while it runs that
-- transaction: once it ended, the pooler may have handed the session to another client. The
-- pids of the sessions ended. The sessions are found first (MATERIALIZED): a filter beside
-- pg_terminate_backend() may run after it, on every row.
-- ours: touches nothing but that session, runs no one else's code
WITH found AS MATERIALIZED (
  SELECT %(pid)s::pg_catalog.int4 AS pid WHERE %(pid)s::pg_catalog.int4 IS NOT NULL
  UNION
  SELECT l.pid FROM pg_catalog.pg_locks l
  WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
    AND l.objsubid OPERATOR(pg_catalog.=) 2
    AND l.classid OPERATOR(pg_catalog.=) %(marker_1)s::pg_catalog.int8::pg_catalog.oid
    AND l.objid OPERATOR(pg_catalog.=) %(marker_2)s::pg_catalog.int8::pg_catalog.oid
    AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                           WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
),
running AS MATERIALIZED (  -- running the statement, not done and waiting for us (a late worker)
  SELECT f.pid FROM found f JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) f.pid
  WHERE a.state OPERATOR(pg_catalog.=) 'active'
    AND coalesce(a.wait_event_type, '') OPERATOR(pg_catalog.<>) 'Client'
)
SELECT r.pid FROM running r WHERE pg_catalog.pg_terminate_backend(r.pid);

-- name: list_failures
-- The dead-lettered jobs, oldest first: of the targets %(targets)s and with the ids %(ids)s (NULL:
-- any), at most %(limit)s (NULL: all), each with how many there are in all.
SELECT id, target, row_key, attempts, last_error, failed_at, count(*) OVER () AS total
FROM embeddings.failures f
WHERE (%(targets)s::integer[] IS NULL OR f.target_id = ANY(%(targets)s::integer[]))
  AND (%(ids)s::bigint[] IS NULL OR f.id = ANY(%(ids)s::bigint[]))
ORDER BY id
LIMIT %(limit)s;

-- name: table_targets
-- `failures TABLE`, `status TABLE`: table %(table)s as the caller's own sessions find it
-- (relation_named), its name as Postgres quotes it, the ids of its targets, and when it is the
-- chunk or side table of a target (its rows are that target's), the kind of store, the target's
-- name, its table and its id; NULL when there is none. (Names made here, as target_name() and
-- display_name() make them: a monitoring role may run no more of ours than relation_named(),
-- docs/sql.md.)
SELECT r.rel::pg_catalog.text,
       ARRAY(SELECT t.id FROM embeddings.targets t WHERE t.source OPERATOR(pg_catalog.=) r.rel ORDER BY t.id),
       (SELECT pg_catalog.jsonb_build_array(
                   CASE WHEN t.store_kind OPERATOR(pg_catalog.=) 'chunks' THEN 'chunk' ELSE t.store_kind END,
                   pg_catalog.format('%%I.%%I.%%I', n.nspname, c.relname, t.embedding_column),
                   CASE WHEN n.nspname OPERATOR(pg_catalog.=) 'public' THEN pg_catalog.quote_ident(c.relname)
                        ELSE pg_catalog.format('%%I.%%I', n.nspname, c.relname) END,
                   t.id)
        FROM embeddings.targets t
        JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.source
        JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
        WHERE t.store_table OPERATOR(pg_catalog.=) r.rel AND t.source OPERATOR(pg_catalog.<>) r.rel
        ORDER BY t.id LIMIT 1)
FROM (SELECT embeddings_internal.relation_named(%(table)s::pg_catalog.text) AS rel) r;

-- name: retry_failures
-- Sends the dead-lettered jobs with the ids %(ids)s (NULL: every one) back to their backfill
-- lane; returns how many.
SELECT embeddings.retry_failures(%(ids)s::bigint[]);

-- name: status_only
-- `status TABLE`: the status views count the targets with ids %(targets)s (an array's text;
-- '': every target again) alone, until the transaction ends (embeddings_internal.target_status()).
-- ours: touches only our tables and pgmq's, runs no one else's code
SELECT pg_catalog.set_config('embeddings.counted_targets', %(targets)s, true);

-- name: status_rows
-- `status`: the columns {columns} of view {view} (embeddings.status, or status_exact), of the
-- targets with ids %(targets)s (NULL: every one).
SELECT {columns} FROM {view}
WHERE %(targets)s::integer[] IS NULL OR target_id OPERATOR(pg_catalog.=) ANY (%(targets)s::integer[])
ORDER BY target;

-- name: changed_since_analyze
-- `status`: of the targets with ids %(targets)s whose vectors live in their own table, the rows
-- inserted, updated or deleted since each leaf's last ANALYZE (the statistics system's count,
-- no scan): how far the statistics an estimate of embedded rows comes from may lag behind.
-- ours: reads only the catalog, the statistics system and our tables, runs no one else's code
SELECT t.id, pg_catalog.sum(pg_catalog.pg_stat_get_mod_since_analyze(l.leaf))::bigint
FROM embeddings.targets t
CROSS JOIN LATERAL embeddings_internal.leaf_relations(t.source) AS l(leaf)
WHERE t.id OPERATOR(pg_catalog.=) ANY (%(targets)s::integer[]) AND t.store_table = t.source
GROUP BY t.id;

-- name: sweep
-- One embeddings.sweep() (`embed-worker sweep`): rows that lost their job, and with %(verify)s
-- a slice of the verifying pass (sql/64_verify.sql); returns the rows queued.
SELECT embeddings.sweep(max_rows => %(max_rows)s, verify => %(verify)s);

-- name: count_lock_holders
-- `status`: the sessions that hold, or wait for, a lock that stops a count of the tables of
-- the targets with ids %(targets)s (ACCESS EXCLUSIVE: every other mode lets a count read), as
-- migration_lock_holders names them: who to ask, or end.
-- ours: reads only the catalog and our tables, runs no one else's code
SELECT t.id, l.relation::regclass::text, a.pid, a.application_name, a.state,
       pg_catalog.date_part('epoch', pg_catalog.now() - a.xact_start)::float8, l.granted
FROM embeddings.targets t
JOIN pg_catalog.pg_locks l ON l.locktype = 'relation' AND l.relation IN (t.source, t.store_table)
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE t.id OPERATOR(pg_catalog.=) ANY (%(targets)s::integer[])
  AND l.mode = 'AccessExclusiveLock' AND l.pid <> pg_catalog.pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
ORDER BY t.id, l.granted DESC, a.xact_start NULLS LAST, a.pid
LIMIT 50;

-- name: verification
-- How far each target's verifying sweep got (`status`, `sweep`): the last complete pass and
-- the pass in progress.
SELECT target, target_id, verified_rows, last_verified, pass_rows, pass_started
FROM embeddings.verification ORDER BY target;

-- name: targets_watched_at
-- When each target was watched (doctor: no verifying pass is due before max age has passed).
SELECT id, created_at FROM embeddings.targets;

-- name: pg_cron_here
-- Whether pg_cron is installed in this database (it runs jobs in cron.database_name only):
-- embeddings.schedule_sweep() needs it here.
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron');

-- name: cron_database
-- The database pg_cron runs jobs in (cron.database_name; NULL: pg_cron not loaded) and this one
-- (`doctor`: schedule_sweep() works only there).
SELECT current_setting('cron.database_name', true), current_database();

-- name: models_have_providers
-- Whether embeddings.models has remote models' columns (a schema before 0.2.0 has not).
SELECT EXISTS (SELECT FROM information_schema.columns WHERE table_schema = 'embeddings'
               AND table_name = 'models' AND column_name = 'provider');

-- name: rerankers_readable
-- Whether the schema has remote rerankers (embeddings.rerankers: one before 0.3.0 has not) and
-- this role may read them (every role may, unless an administrator revoked it).
SELECT CASE WHEN to_regclass('embeddings.rerankers') IS NULL THEN false
            ELSE has_table_privilege('embeddings.rerankers', 'SELECT') END;

-- name: target_rerankers
-- The reranker each target's rerank stage names (set_rerank()), with the targets naming it.
SELECT t.rerank_model, string_agg(embeddings_internal.target_name(t), ', ' ORDER BY t.id)
FROM embeddings.targets t WHERE t.rerank_model IS NOT NULL GROUP BY 1 ORDER BY 1;

-- name: plan_model
-- `plan`: a model's limits and price (worker/cli/plan.py).
SELECT name, provider, max_tokens, max_inputs, max_request_tokens, price_per_million_tokens
FROM embeddings.models WHERE name = %(model)s;

-- name: plan_targets
-- `plan`: the watched columns of a table (one, when %(column)s names it), with their chunking
-- and whether their content is a bytea column of files (sql/55_chunks.sql).
SELECT t.id, t.model, t.content_column, t.embedding_column, t.chunk_tokens, t.chunk_overlap,
       coalesce((SELECT a.atttypid = 'pg_catalog.bytea'::pg_catalog.regtype FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = t.source AND a.attnum = t.content_attnum AND t.content_column IS NOT NULL),
                false) AS content_bytes
FROM embeddings.targets t
WHERE t.source = embeddings_internal.relation_named(%(table)s) AND (%(column)s::name IS NULL OR t.embedding_column = %(column)s::name)
ORDER BY t.id;

-- name: plan_target_rows
-- `plan`: a target's rows, those with a vector, and those cleared (NULL or blank content: no
-- vector is wanted), as embeddings.status has them: counted up to status_exact_rows() rows, else
-- estimated (`estimated`). Not target_status(true), which counts every watched table, however
-- large, to give one (18.7 s for a 200-row table beside two of a million rows).
SELECT total_rows, embedded_rows, estimated, cleared_rows
FROM embeddings_internal.target_status() WHERE target_id = %(target_id)s;

-- name: plan_relation
-- `plan`: table %(table)s as the caller's own sessions find it (relation_named): its name as Postgres quotes it,
-- its kind (pg_class.relkind) and its row type's name; no row when there is none.
SELECT c.oid::pg_catalog.regclass::pg_catalog.text, c.relkind::pg_catalog.text,
       pg_catalog.format('%%I.%%I', n.nspname, c.relname)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = embeddings_internal.relation_named(%(table)s::pg_catalog.text);

-- name: plan_column_name
-- `plan`: column name %(column)s as a statement writes it (quote_ident: in double quotes where
-- SQL needs them, a keyword's too), for the statements plan prints for someone to run.
SELECT pg_catalog.quote_ident(%(column)s::pg_catalog.text);

-- name: plan_content_column
-- `plan`: column %(column)s of table %(table)s, from the catalog: its type, and whether that
-- type is of the string category watch() takes for a content column (sql/40_watch.sql).
SELECT pg_catalog.format_type(a.atttypid, a.atttypmod), t.typcategory OPERATOR(pg_catalog.=) 'S'
FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = embeddings_internal.relation_named(%(table)s::pg_catalog.text)
  AND a.attname = %(column)s::pg_catalog.name AND a.attnum > 0 AND NOT a.attisdropped;

-- name: plan_content_function
-- `plan`: the content function %(function)s of the row type %(row_type)s names, as watch()
-- finds it (sql/40_watch.sql): looked up, not called. NULL when there is none.
SELECT embeddings_internal.function_named(pg_catalog.format('%%s(%%s)', %(function)s::pg_catalog.text,
                                                    %(row_type)s::pg_catalog.text))::pg_catalog.text;

-- name: plan_estimated_rows
-- `plan`: the rows of table %(table)s not watched, estimated from the catalog, reading no row
-- (a row read would run what the table's owner defined with the caller's rights): per leaf
-- relation, the planner's estimate (reltuples of the last VACUUM or ANALYZE, scaled to the
-- pages the table has now), else the statistics system's live rows (inserts and deletes as they
-- commit), else 0 for a relation without pages; NULL when a leaf has none of these (a table
-- filled moments ago whose statistics are not flushed yet, or after pg_stat_reset()).
SELECT CASE WHEN pg_catalog.bool_and(e.n IS NOT NULL) THEN pg_catalog.round(pg_catalog.sum(e.n))::bigint END
FROM (SELECT CASE WHEN c.reltuples >= 0 AND c.relpages > 0
                  THEN c.reltuples / c.relpages * pg_catalog.ceil(pg_catalog.pg_relation_size(c.oid)
                                                                   / pg_catalog.current_setting('block_size')::float8)
                  WHEN pg_catalog.pg_stat_get_tuples_inserted(c.oid) + pg_catalog.pg_stat_get_tuples_deleted(c.oid)
                       + pg_catalog.pg_stat_get_vacuum_count(c.oid) + pg_catalog.pg_stat_get_autovacuum_count(c.oid)
                       + pg_catalog.pg_stat_get_analyze_count(c.oid) + pg_catalog.pg_stat_get_autoanalyze_count(c.oid) > 0
                  THEN pg_catalog.pg_stat_get_live_tuples(c.oid)::float8
                  WHEN pg_catalog.pg_relation_size(c.oid) = 0 THEN 0 END AS n
      FROM embeddings_internal.leaf_relations(embeddings_internal.relation_named(%(table)s::pg_catalog.text)) l
      JOIN pg_catalog.pg_class c ON c.oid = l) e;

-- name: plan_column_width
-- `plan`: the planner's average width in bytes of content column %(column)s of table %(table)s
-- (pg_stats: as ANALYZE measured it, run as the table's owner), where the caller may read its
-- statistics (pg_stats shows only columns the caller can SELECT): the table's own (a
-- partitioned table's once it was analyzed itself), else its leaf relations' weighted by their
-- rows (autovacuum analyzes partitions, never their parent). NULL without statistics. And the
-- bytes a row the table holds out of line (TOAST, compressed, every column's): ANALYZE counts
-- an out-of-line value's pointer (18 bytes), not its text, so a table of documents longer than
-- about 2 kB would otherwise seem to hold a few tokens a row.
WITH own AS (
    SELECT s.avg_width::float8 AS width
    FROM pg_catalog.pg_stats s
    JOIN pg_catalog.pg_class c ON c.relname = s.tablename
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname
    WHERE c.oid = embeddings_internal.relation_named(%(table)s::pg_catalog.text) AND s.attname = %(column)s::pg_catalog.name
    ORDER BY s.inherited DESC LIMIT 1
), leaves AS (
    SELECT pg_catalog.sum(s.avg_width * greatest(c.reltuples, 1)) / pg_catalog.sum(greatest(c.reltuples, 1)) AS width
    FROM embeddings_internal.leaf_relations(embeddings_internal.relation_named(%(table)s::pg_catalog.text)) l
    JOIN pg_catalog.pg_class c ON c.oid = l
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname
                              AND s.attname = %(column)s::pg_catalog.name AND NOT s.inherited
), out_of_line AS (
    SELECT pg_catalog.sum(CASE WHEN c.reltoastrelid OPERATOR(pg_catalog.<>) 0
                               THEN pg_catalog.pg_relation_size(c.reltoastrelid) ELSE 0 END)::float8
           / greatest(pg_catalog.sum(greatest(c.reltuples, 0)), 1) AS per_row
    FROM embeddings_internal.leaf_relations(embeddings_internal.relation_named(%(table)s::pg_catalog.text)) l
    JOIN pg_catalog.pg_class c ON c.oid = l
)
SELECT coalesce((SELECT width FROM own), (SELECT width FROM leaves)), (SELECT per_row FROM out_of_line);


-- name: failed_posts
-- Push mode: the requests of the last hour embeddings.dispatch() made that failed (pg_net
-- could not deliver them, or the worker did not take them), as the next dispatch() read their
-- answers: how many, the jobs given back, the first error and when it was sent; and how many
-- requests of more than a minute ago wait for that read still (dispatch() not run since).
SELECT pg_catalog.count(*) FILTER (WHERE d.error IS NOT NULL AND d.answered_at > pg_catalog.now() - interval '1 hour'),
       pg_catalog.sum(d.given_back) FILTER (WHERE d.error IS NOT NULL AND d.answered_at > pg_catalog.now() - interval '1 hour'),
       (pg_catalog.array_agg(d.error ORDER BY d.sent_at)
            FILTER (WHERE d.error IS NOT NULL AND d.answered_at > pg_catalog.now() - interval '1 hour'))[1],
       pg_catalog.min(d.sent_at) FILTER (WHERE d.error IS NOT NULL AND d.answered_at > pg_catalog.now() - interval '1 hour'),
       pg_catalog.count(*) FILTER (WHERE d.answered_at IS NULL AND d.sent_at < pg_catalog.now() - interval '1 minute')
FROM embeddings.dispatched d

-- name: backing_off_endpoints
-- Push mode: the endpoints embeddings.dispatch() is backing off from (its posts to them kept
-- failing: it posts them one job at a time until one goes through), with the failed posts in a
-- row, since when, the last error and when the next probe may go.
SELECT e.url, e.failed_posts, e.failing_since, e.last_error, e.next_probe_at
FROM embeddings.dispatch_endpoints e
WHERE e.next_probe_at IS NOT NULL
ORDER BY e.failing_since

-- name: unread_failed_posts
-- Push mode: of the requests dispatch() made that it has not read the answer of (it has not run
-- since), those pg_net answered with a failure (no status, or not 2xx), and the first error.
SELECT pg_catalog.count(*),
       (pg_catalog.array_agg(COALESCE(r.error_msg, 'HTTP ' || r.status_code) ORDER BY d.sent_at))[1]
FROM embeddings.dispatched d
JOIN net._http_response r ON r.id = d.request_id AND r.created >= d.sent_at
WHERE d.answered_at IS NULL AND (r.status_code IS NULL OR r.status_code NOT BETWEEN 200 AND 299)

-- name: untaken_posts
-- Push mode: the requests dispatch() made more than a minute ago that pg_net's background
-- worker has not taken (still in its queue, unanswered: it deletes what it takes), how many and
-- when the oldest was sent (pg_net's queue has no time of its own). Where pg_net exists.
SELECT pg_catalog.count(*), pg_catalog.min(d.sent_at)
FROM embeddings.dispatched d
JOIN net.http_request_queue q ON q.id = d.request_id
WHERE d.answered_at IS NULL AND d.sent_at < pg_catalog.now() - interval '1 minute'
  AND NOT EXISTS (SELECT FROM net._http_response r WHERE r.id = q.id AND r.created >= d.sent_at)

-- name: renamed_schemas
-- `doctor`: a schema holding embed-worker's tables (its targets and made_tables), its internal
-- functions or pgmq under another name than theirs, whose name no schema has (an ALTER SCHEMA
-- ... RENAME where no event trigger refused it: a non-superuser install): its name, the one it
-- must have, and its name as a statement writes it.
SELECT n.nspname::text, w.wanted, pg_catalog.quote_ident(n.nspname)
FROM pg_catalog.pg_namespace n
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relname = 'targets')
         AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relname = 'made_tables')
        THEN 'embeddings'
        -- (schema embeddings itself held the internal functions before 0.4.0: an older
        -- release's schema, which the schema check reports as such, is no renamed one)
        WHEN n.nspname <> 'embeddings'
         AND EXISTS (SELECT FROM pg_catalog.pg_proc p
                     WHERE p.pronamespace = n.oid AND p.proname = 'follow_schema_changes')
        THEN 'embeddings_internal'
        -- pgmq's (the extension's or its plain SQL's), renamed before our event trigger could
        -- refuse it (before install, or in an install by a non-superuser)
        WHEN EXISTS (SELECT FROM pg_catalog.pg_proc p
                     WHERE p.pronamespace = n.oid AND p.proname = 'format_table_name')
         AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relname = 'meta')
        THEN 'pgmq' END AS wanted) w
WHERE w.wanted IS NOT NULL AND n.nspname <> w.wanted
  AND pg_catalog.to_regnamespace(w.wanted) IS NULL
ORDER BY 2;

-- name: stray_objects
-- `doctor`: triggers and policies named as a target's (embeddings_<id>_<kind>; a policy, calling a
-- visibility function of ours) on a table that is not that target's table, a partition of it
-- or its store: a table dumped alone (`pg_dump -t`) and restored into another database brings
-- them, bound to this database's target of the same id, or to none (sql/30_triggers.sql:
-- stray_triggers() and stray_policies() are watch()'s view of the same); each with its name as
-- a statement writes it.
SELECT s.kind, s.name::text, s.rel::regclass::text, s.target_id, t.source::text, pg_catalog.quote_ident(s.name)
FROM (SELECT 'trigger' AS kind, g.tgname AS name, g.tgrelid AS rel,
             substring(g.tgname FROM '^embeddings_([0-9]+)_')::integer AS target_id
      FROM pg_catalog.pg_trigger g
      WHERE g.tgparentid = 0
        AND g.tgname ~ '^embeddings_[0-9]{1,9}_(insert|update|clear|replica|delete|truncate)$'
        -- calling a function of ours, not a user's trigger of the name (sql/30_triggers.sql:
        -- stray_triggers())
        AND EXISTS (SELECT FROM pg_catalog.pg_proc f WHERE f.oid = g.tgfoid
                      AND f.pronamespace = 'embeddings'::pg_catalog.regnamespace AND f.proname = g.tgname)
      UNION ALL
      SELECT 'policy', p.polname, p.polrelid, substring(p.polname FROM '^embeddings_([0-9]+)_')::integer
      FROM pg_catalog.pg_policy p
      WHERE p.polname ~ '^embeddings_[0-9]{1,9}_visible$'
        -- ours: it calls a visibility function of ours (a user's own policy of the name does not)
        AND EXISTS (SELECT FROM pg_catalog.pg_depend d
                    JOIN pg_catalog.pg_proc f ON f.oid = d.refobjid
                    JOIN pg_catalog.pg_namespace n ON n.oid = f.pronamespace
                    WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid = p.oid
                      AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                      AND n.nspname = 'embeddings' AND f.proowner = n.nspowner
                      AND f.proname ~ '^embeddings_[0-9]+_visible$')) s
LEFT JOIN embeddings.targets t ON t.id = s.target_id
WHERE t.id IS NULL
   OR NOT (s.rel IN (t.source, t.store_table)
           OR s.rel IN (SELECT r.relid FROM pg_catalog.pg_partition_tree(t.source) r))
ORDER BY 3, 2;

-- name: stores_without_policy
-- `doctor`: side and chunk tables with row-level security on and no policy, which show their
-- rows to their owner only (the worker; no searcher): a target's store whose policy was dropped
-- (a target with a problem has none: that is reported as its problem), or a table watch()
-- made in another database (its comment says so) that is no store here, restored without its
-- policy (which names a visibility function this database lacks); each with the target's id
-- and table, NULL for none.
SELECT c.oid::pg_catalog.regclass::text, t.id, t.source::text
FROM pg_catalog.pg_class c
LEFT JOIN embeddings.targets t ON t.store_table = c.oid AND t.store_table <> t.source
WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid)
  AND CASE WHEN t.id IS NOT NULL THEN t.problem IS NULL
           ELSE NOT EXISTS (SELECT FROM embeddings.made_tables m WHERE m.store = c.oid)
                AND pg_catalog.obj_description(c.oid, 'pg_class')
                    LIKE '%, kept by embed-worker (embeddings.watch%' END
ORDER BY 1;

-- name: objects_in_our_schemas
-- `downgrade` to base (worker/schema/install.py: uninstall): what schemas embeddings and
-- embeddings_internal hold that DROP SCHEMA ... CASCADE would take along, each with its name,
-- the statement word that moves it (ALTER <word> ... SET SCHEMA), its name as a statement
-- writes it and its description: relations (not indexes, nor a sequence a column owns),
-- standalone types (not a relation's row type, an array or a range's multirange), and
-- functions where the schema is of 0.4.0's layout (embeddings_internal exists) and a function
-- is not one watch() generated (embeddings_<id>_...).
SELECT c.relname::text, CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                 WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE'
                                 WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END,
       c.oid::pg_catalog.regclass::text, pg_catalog.pg_describe_object('pg_catalog.pg_class'::pg_catalog.regclass, c.oid, 0)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('embeddings', 'embeddings_internal')
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
                    AND d.deptype IN ('a', 'i', 'e'))
UNION ALL
SELECT t.typname::text, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
       t.oid::pg_catalog.regtype::text, pg_catalog.pg_describe_object('pg_catalog.pg_type'::pg_catalog.regclass, t.oid, 0)
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname IN ('embeddings', 'embeddings_internal')
  AND t.typrelid = 0 AND t.typelem = 0
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = t.oid
                    AND d.deptype IN ('i', 'e'))
UNION ALL
SELECT p.proname::text, CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
       p.oid::pg_catalog.regprocedure::text, pg_catalog.pg_describe_object('pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, 0)
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname IN ('embeddings', 'embeddings_internal')
  AND pg_catalog.to_regnamespace('embeddings_internal') IS NOT NULL
  AND p.proname !~ '^embeddings_[0-9]+_'
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
                    AND d.deptype = 'e')
ORDER BY 4;

-- Targets whose progress has stopped, with why and what to do: the one source that
-- `embed-worker status` (the table and --json's `problem`), `doctor`, the worker's /readyz and
-- its embed_worker_target_stopped metric all read, so that they never disagree.
--
-- A state here is one that does not go away by waiting: an operator has to act (or at least
-- know). States:
--   problem           the target cannot be served: a schema change it cannot follow (content,
--                     key or embedding column dropped, the content column retyped to what
--                     watch() refuses, content function dropped or handed to another owner), functions that cannot run as the table's owner, FORCE ROW
--                     LEVEL SECURITY. Read from the catalog as it is now, so it shows whether or
--                     not the event triggers of 45_dropped.sql (superuser only) are installed.
--   held              the worker puts the target's jobs back without an attempt (its model
--                     cannot be loaded, the column's dimensions do not fit the model...): jobs
--                     held, not failed (rows that failed and wait for their retry are not
--                     this: they are `retrying` in status). Written by the worker
--                     (55_visibility.sql: embeddings.deferrals); shown while the worker has
--                     held them within embeddings_internal.deferral_fresh() and since the
--                     target was last redefined (a hold of the definition watch() replaced
--                     says nothing of the new one).
--   swap_waiting      a model change is complete but its swap has found the table held by
--                     another transaction for longer than embeddings_internal.swap_wait_alarm() (status
--                     shows the wait from the first attempt: embeddings.status's swap_* columns)
--                     (44_changes.sql records each attempt; 41_locks.sql bounds them).
--   swap_failed       a model change is complete but its swap fails (a view or trigger of the
--                     user's uses the old column, a name the swap needs is taken): recorded by
--                     complete_changes() (44_changes.sql) with its error; it does not go away
--                     by waiting.
--   backfill_stalled  a backfill (62_backfill.sql) has queued nothing, and none of the target's
--                     rows was embedded, for embeddings_internal.backfill_stall_alarm(): no worker
--                     serves its queue.
--   over_ceiling      documents of a chunked target longer than the worker's ceiling
--                     (EMBED_MAX_DOCUMENT_BYTES), failed without being embedded
--                     (embeddings.documents); they stay until the ceiling is raised and they are
--                     retried, or they are shortened.
-- Hook for further states: add a branch at "(Hook: ...)" below, a SELECT of (rank, state, reason,
-- fix, since) for target t; document the state here, in docs/operating.md's table
-- and in worker/metrics.py's STOPPED_STATES (the metric's documented label values); status,
-- doctor, /readyz, the metric and its alert pick it up unchanged.

-- How recent a deferral must be to count: the worker retries deferred jobs every minute.
CREATE FUNCTION embeddings_internal.deferral_fresh() RETURNS interval
LANGUAGE sql IMMUTABLE RETURN interval '5 minutes';

-- How long a swap may wait for its table lock before it counts as stopped: 1 minute unless
-- the setting embeddings.swap_wait_alarm says otherwise (per database or role).
CREATE FUNCTION embeddings_internal.swap_wait_alarm() RETURNS interval
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(nullif(current_setting('embeddings.swap_wait_alarm', true), '')::interval, interval '1 minute')
$$;

-- How long a backfill may go without progress (no step, no row embedded) before it counts as
-- stopped: 10 minutes unless the setting embeddings.backfill_stall_alarm says otherwise.
CREATE FUNCTION embeddings_internal.backfill_stall_alarm() RETURNS interval
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(nullif(current_setting('embeddings.backfill_stall_alarm', true), '')::interval, interval '10 minutes')
$$;

-- Why each target (of `only_ids`, or every target when NULL) cannot be served, as its
-- registration and the catalog say now, or NULL. One statement for every target, as
-- access_problems() (32_access.sql) for the same reason.
CREATE FUNCTION embeddings_internal.target_problems(only_ids integer[] DEFAULT NULL)
RETURNS TABLE (target_id integer, problem text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT t.id, coalesce(t.problem, CASE
        WHEN NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = t.source) THEN
            'its table no longer exists: SELECT embeddings.unwatch_dropped()'
        WHEN EXISTS (SELECT FROM unnest(t.key_attnums) AS k(n)
                     WHERE NOT EXISTS (SELECT FROM pg_attribute a
                                       WHERE a.attrelid = t.source AND a.attnum = k.n AND NOT a.attisdropped)) THEN
            format('its key column (%s) was dropped; watch the table again with a key', array_to_string(t.key_columns, ', '))
        WHEN t.content_function IS NULL AND NOT EXISTS (
                SELECT FROM pg_attribute a WHERE a.attrelid = t.source AND a.attnum = t.content_attnum AND NOT a.attisdropped) THEN
            format('its content column %I was dropped; watch the table again with its new content', t.content_column)
        -- Retyped since watch(): its text would be another thing's (an integer, JSON, base64).
        WHEN ct.problem IS NOT NULL THEN
            format('its content column %I %s; ALTER it back to text, or watch the table again with a '
                   'content function that returns text', t.content_column, ct.problem)
        WHEN t.content_function IS NOT NULL AND NOT EXISTS (SELECT FROM pg_proc p WHERE p.oid = t.content_function) THEN
            'its content function was dropped; create it again and watch the table again'
        WHEN NOT EXISTS (
                SELECT FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
                WHERE a.attrelid = t.store_table AND a.attname = t.embedding_column AND NOT a.attisdropped
                  AND ty.typname IN ('vector', 'halfvec')) THEN
            format('its embedding column %I is missing or not vector/halfvec; watch the table again', t.embedding_column)
    END, a.problem)
    FROM embeddings.targets t
    JOIN embeddings_internal.access_problems(only_ids) a ON a.target_id = t.id
    LEFT JOIN LATERAL (
        SELECT embeddings_internal.content_type_problem(ca.atttypid, embeddings_internal.store_has_chunks(t)) AS problem
        FROM pg_attribute ca
        WHERE t.content_function IS NULL AND ca.attrelid = t.source AND ca.attnum = t.content_attnum
          AND NOT ca.attisdropped) ct ON true;
END
$$;

-- The same for one registered target (t as embeddings.targets holds it).
CREATE FUNCTION embeddings_internal.target_problem(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.problem FROM embeddings_internal.target_problems(ARRAY[t.id]) p
$$;

-- What makes target t's held jobs go, held for `reason`: the model the worker cannot load made
-- loadable (during a model change the change's: the application's rows are embedded by the old
-- model without it, worker/pipeline/shadow.py), or the change cancelled, or the table on another
-- model. A model that produces other dimensions than registered cannot be made to serve by the
-- worker's side: registered right under a new name (register_model() refuses to change the
-- dimensions of a model in use) and changed to. The worker's messages of that case
-- (worker/models/remote/protocol.py, worker/pipeline/shadow.py, worker/target.py) are matched.
-- Where the embedding column's dimensions are not the model's (outside a change, whose new
-- column is its own), no model load helps, nor a model change (the old model's rows are held
-- meanwhile): the column made to fit the model.
-- A remote model whose own circuit is open (its answers malformed or late while its host
-- answers) needs its answers mended or more time, not its host reachable.
CREATE FUNCTION embeddings_internal.held_fix(t embeddings.targets, reason text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN mc.model IS NULL AND col.dims > 0 AND col.dims <> m.dimensions
                THEN format('make the column fit the model: model %s produces %s dimensions, the column '
                            'holds %s, so loading the model does not help. ALTER TABLE %s ALTER COLUMN %I '
                            'TYPE %s(%s) USING NULL; (its vectors, of the wrong size, go: `embed-worker '
                            'sweep` queues rows left without one). The worker retries its jobs every minute',
                            m.name, m.dimensions, col.dims, t.store_table::text, t.embedding_column,
                            col.type_name, m.dimensions)
           WHEN dims.produced IS NOT NULL
           THEN format('register the model with the dimensions it produces under a new name '
                       '(SELECT embeddings.register_model(''NEW_NAME'', %s, ...), %s: register_model() '
                       'refuses to change the dimensions of a model in use) and change to it: %s; or %s',
                       dims.produced,
                       CASE WHEN m.provider IS DISTINCT FROM 'local'
                            THEN format('provider %L, endpoint %L and remote model %L as %s has them',
                                        m.provider, m.endpoint, m.remote_model, m.name)
                            ELSE format('provider ''local'', a directory NEW_NAME/ holding %s''s files', m.name) END,
                       replace(w.call, '''NAME''', '''NEW_NAME'''),
                       CASE WHEN mc.model IS NOT NULL THEN w.cancel
                            ELSE 'move the table to a model the worker has: ' || w.call END)
           -- The model's own circuit (worker/models/remote/breaker.py): its host answers, its
           -- requests fail; the host's fix (the endpoint up, the network open) is not this one.
           WHEN m.provider IS DISTINCT FROM 'local'
                AND strpos(held_fix.reason, format('model %s at ', m.name)) > 0
                AND strpos(held_fix.reason, ' is failing (') > 0
           THEN format('make model %1$s''s requests succeed: its provider at %2$s answers, but its answers '
                       'to remote model %3$L are malformed or too large, or come later than its '
                       'timeout_seconds (%4$s): check what the provider serves as %3$L, or give it longer '
                       '(SELECT embeddings.register_model(%1$L, %5$s, timeout_seconds => SECONDS)); or %6$s. '
                       'The worker probes the model by itself and takes its jobs once it answers',
                       m.name, substring(m.endpoint FROM '^[a-z]+://[^/?#]+'), m.remote_model,
                       m.timeout_seconds, m.dimensions,
                       CASE WHEN mc.model IS NOT NULL THEN 'the change to it cancelled: ' || w.cancel
                            ELSE 'move the table to a model the worker has: ' || w.call END)
           ELSE format('make the target servable: %s, or %s; a column that fits the model. The worker '
                  'retries its jobs every minute',
                  CASE WHEN m.provider IS DISTINCT FROM 'local'
                       THEN format('its provider reachable from the worker (model %s at %s: the '
                                   'endpoint up, the network open, its key valid)',
                                   m.name, substring(m.endpoint FROM '^[a-z]+://[^/?#]+'))
                       WHEN m.source IS NULL  -- registered by hand: nothing to download
                       THEN format('model %1$s loadable where the worker runs (EMBED_MODEL_PATH '
                                   'naming a directory that holds %1$s/)', m.name)
                       ELSE format('model %1$s loadable where the worker runs (`embed-worker model '
                                   'download %1$s`, or EMBED_MODEL_PATH naming a directory that '
                                   'holds %1$s/)', m.name) END,
                  CASE WHEN mc.model IS NOT NULL
                       THEN 'the change to it cancelled: ' || w.cancel
                       ELSE format('the table on a model the worker has: %s; (and SELECT '
                                   'embeddings.set_default_model(''NAME''); for watch() without a model)',
                                   w.call) END) END
    FROM embeddings.models m
    LEFT JOIN embeddings.model_changes mc ON mc.target_id = t.id
    -- The embedding column as the catalog has it now: its type and dimensions (0: none given).
    LEFT JOIN LATERAL (
        SELECT ty.typname::text AS type_name, a.atttypmod AS dims
        FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
        WHERE a.attrelid = t.store_table AND a.attname = t.embedding_column AND NOT a.attisdropped
          AND ty.typname IN ('vector', 'halfvec')) col ON true
    -- The target as it is: watch() without its column would start another target, and a
    -- chunked one re-watched without chunk_tokens is refused.
    CROSS JOIN LATERAL (
        SELECT format('SELECT embeddings.watch(%L, %L, %smodel => ''NAME''%s)', t.source::text,
                      coalesce(t.content_column::text, t.content_function::regproc::text),
                      CASE WHEN t.embedding_column <> 'embedding'
                           THEN format('embedding_column => %L, ', t.embedding_column) END,
                      CASE WHEN t.chunk_tokens IS NOT NULL
                           THEN format(', chunk_tokens => %s', t.chunk_tokens) END) AS call,
               format('SELECT embeddings.cancel_change(%L, %L)', t.source::text, t.embedding_column) AS cancel
    ) w
    CROSS JOIN LATERAL (
        SELECT coalesce(substring(held_fix.reason FROM 'answered ([0-9]+)-dimensional vectors; .* is registered with [0-9]+ dimensions'),
                        substring(held_fix.reason FROM 'has [0-9]+ dimensions, the model produces ([0-9]+)'),
                        substring(held_fix.reason FROM 'but model .* produces ([0-9]+) dimensions')) AS produced
    ) dims
    WHERE m.name = coalesce(mc.model, t.model)
$$;

-- One row per stopped state of each target (a target may be in several), in a fixed order of
-- states. SECURITY DEFINER, like embeddings_internal.target_status(): for this schema's owner and the
-- worker roles (grant_worker()); it reads our tables and the catalog, and runs nothing of the
-- tables' owners. One statement for every target (it was a loop of five a target: 0.24 s beside
-- 1,000 watched tables, every 5 s in every worker's keeper).
CREATE FUNCTION embeddings_internal.stopped_targets()
RETURNS TABLE (target_id integer, target text, queue text, state text, reason text, fix text, since timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.id, coalesce(embeddings_internal.target_name(t), format('target %s', t.id)), t.queue,
           s.state, s.reason, s.fix, s.since
    FROM embeddings.targets t
    JOIN embeddings_internal.target_problems() p ON p.target_id = t.id
    CROSS JOIN (SELECT embeddings_internal.deferral_fresh() AS deferral_fresh,
                       embeddings_internal.swap_wait_alarm() AS swap_wait_alarm,
                       embeddings_internal.backfill_stall_alarm() AS backfill_stall_alarm) alarm
    CROSS JOIN LATERAL (
        -- watch() again only where the reason says it is the fix (a dropped column or function):
        -- the others (FORCE ROW LEVEL SECURITY, a content column retyped, a store's owner) end
        -- with the ALTER that mends them. `since`: the registration's last change, which is
        -- when a problem it records began (a dropped column); one read from the catalog as it
        -- is now (FORCE ROW LEVEL SECURITY, a retyped content column) began then or later,
        -- and when is nowhere recorded.
        SELECT 1, 'problem', p.problem,
               CASE WHEN strpos(p.problem, 'watch the table again') > 0  -- (not offered as another way)
                         AND strpos(p.problem, ', or watch the table again') = 0
                    THEN 'fix what the reason names, then watch() the table again; its jobs wait meanwhile (held, not failed)'
                    ELSE 'fix what the reason names (no watch() needed: the worker resumes once the catalog says it '
                         'is fixed); its jobs wait meanwhile (held, not failed)' END,
               t.updated_at
        WHERE p.problem IS NOT NULL
        UNION ALL
        -- Deferred by the worker (a target with a problem is deferred for that problem).
        SELECT 2, 'held', format('its jobs are held, put back without an attempt (not failed): %s', d.reason),
               embeddings_internal.held_fix(t, d.reason), d.since
        FROM embeddings.deferrals d
        WHERE p.problem IS NULL AND d.target_id = t.id AND d.last_seen > now() - alarm.deferral_fresh
          AND d.last_seen >= t.updated_at  -- not a hold of the definition watch() replaced
        UNION ALL
        SELECT 3, 'swap_waiting',
               format('the swap to model %s has waited for its table lock since %s (%s attempts): other '
                      'transactions hold the table (%s)', mc.model, to_char(mc.swap_waiting_since, 'YYYY-MM-DD HH24:MI:SS TZ'),
                      mc.swap_attempts, coalesce(mc.swap_holders, 'none named')),
               'end or shorten the long transaction(s) named (SELECT pg_terminate_backend(pid)); the swap '
               'retries by itself and never queues the application behind it for more than '
               || embeddings_internal.lock_attempt_ms() || ' ms',
               mc.swap_waiting_since
        FROM embeddings.model_changes mc
        WHERE mc.target_id = t.id AND mc.swap_waiting_since <= now() - alarm.swap_wait_alarm
        UNION ALL
        SELECT 4, 'swap_failed',
               format('the swap to model %s fails: %s', mc.model, mc.swap_error),
               CASE WHEN mc.swap_error LIKE '%cannot be dropped%'
                    THEN format('drop or alter what uses the old column (named above), or keep it: SELECT '
                                'embeddings.rewatch(%L, %L, model => %L, keep_old => true) (the swap keeps it as %I); '
                                'the swap retries by itself', t.source::text, t.embedding_column, mc.model,
                                embeddings_internal.kept_column(t.embedding_column))
                    ELSE format('fix the cause the reason names; the swap retries by itself (or abandon the change: '
                                'SELECT embeddings.cancel_change(%L, %L))', t.source::text, t.embedding_column) END,
               mc.swap_failed_since
        FROM embeddings.model_changes mc
        WHERE mc.target_id = t.id AND mc.swap_error IS NOT NULL
        UNION ALL
        SELECT 5, 'backfill_stalled',
               format('its backfill has queued no rows since %s and no row was embedded since (%s rows scanned '
                      'so far)', to_char(coalesce(b.stepped_at, b.started_at), 'YYYY-MM-DD HH24:MI:SS TZ'), b.scanned_rows),
               format('start a worker for queue %s (`embed-worker run`), or see why it stopped (its log; '
                      '`embed-worker status`)', t.queue),
               coalesce(b.stepped_at, b.started_at)
        FROM embeddings.backfills b
        WHERE b.target_id = t.id AND coalesce(b.stepped_at, b.started_at) <= now() - alarm.backfill_stall_alarm
          AND NOT EXISTS (SELECT FROM embeddings.throughput tp
                          WHERE tp.target_id = t.id AND tp.minute > now() - alarm.backfill_stall_alarm)
        UNION ALL
        SELECT 6, 'over_ceiling',
               format('%s document(s) longer than the ceiling of %s bytes (EMBED_MAX_DOCUMENT_BYTES) were not '
                      'embedded; the longest has %s bytes', count(*), max(d.ceiling_bytes), max(d.bytes)),
               'raise EMBED_MAX_DOCUMENT_BYTES and `embed-worker failures --retry`, or shorten the documents',
               min(d.updated_at)
        FROM embeddings.documents d
        WHERE d.target_id = t.id AND d.state = 'over_ceiling'
        HAVING count(*) > 0
        -- (Hook: further states join here; see the top of this file.)
    ) s(rank, state, reason, fix, since)
    ORDER BY t.id, s.rank
$$;

-- What stops each target, by target id: a list of its states, each with its reason, fix and
-- since (embeddings_internal.target_status() reads it once per call).
CREATE FUNCTION embeddings_internal.status_stops() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(jsonb_object_agg(s.target_id::text, s.states), '{}')
    FROM (SELECT st.target_id, jsonb_agg(jsonb_build_object(
                     'state', st.state, 'reason', st.reason, 'fix', st.fix, 'since', st.since)
                 ORDER BY st.ordinality) AS states
          FROM embeddings_internal.stopped_targets() WITH ORDINALITY AS st
          GROUP BY st.target_id) s
$$;

CREATE VIEW embeddings.stopped AS SELECT * FROM embeddings_internal.stopped_targets();
COMMENT ON VIEW embeddings.stopped IS 'Targets whose progress has stopped: state, why, the fix, since when (one row per state)';

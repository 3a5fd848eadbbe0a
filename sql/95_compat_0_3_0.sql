-- Forwarders for the workers of release 0.3.0, kept during a rolling upgrade (docs/upgrading.md).
-- 0.4.0 keeps only the public API in schema `embeddings` and its internals in
-- `embeddings_internal`; a 0.3.0 worker still running after `embed-worker migrate` knows the
-- internals by their 0.3.0 names, in `embeddings`. Each function here keeps one such name and
-- signature, runs with its caller's rights and calls the internal function of the same name,
-- arguments and result unchanged; each has the grants of the function it forwards to (those
-- of 0.3.0 for the functions 0.3.0's worker calls). They go in 0.5.0, whose workers replace
-- 0.4.0's: this file is then deleted, with the call of
-- embeddings_internal.compat_worker_functions() in sql/80_roles.sql. The workers of 0.2.0 call
-- a subset of them, under the same signatures.
--
-- This file keeps the old names on purpose: the internals moved everywhere else, not here.

-- What 0.3.0's worker calls (its worker/queries.sql; its Python names no other function of
-- ours but the per-target ones, which stay in `embeddings`).

CREATE FUNCTION embeddings.access_problem(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.access_problem($1)
$$;

CREATE FUNCTION embeddings.backfill_next(queue text, max_keys integer DEFAULT
    embeddings.backfill_step_keys(), OUT scanned integer, OUT enqueued integer) RETURNS record
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.backfill_next($1, $2)
$$;

CREATE FUNCTION embeddings.claim_provenance(target_id integer, shadow boolean, model text, revision
    text, variant text) RETURNS text
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.claim_provenance($1, $2, $3, $4, $5)
$$;

CREATE FUNCTION embeddings.clear_deferrals(target_ids integer[]) RETURNS void
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.clear_deferrals($1)
$$;

CREATE FUNCTION embeddings.complete_changes(OUT target_id integer, OUT result text) RETURNS SETOF
    record
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.complete_changes()
$$;

CREATE FUNCTION embeddings.deferred_index_built(target_id integer) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.deferred_index_built($1)
$$;

CREATE FUNCTION embeddings.function_named(signature text) RETURNS regprocedure
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.function_named($1)
$$;

CREATE FUNCTION embeddings.inbox_pending(queue_name text) RETURNS TABLE(target_id integer, rows
    bigint, keys bigint, oldest timestamp with time zone)
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.inbox_pending($1)
$$;

CREATE FUNCTION embeddings.leaf_relations(rel regclass) RETURNS SETOF regclass
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.leaf_relations($1)
$$;

CREATE FUNCTION embeddings.lock_documents(target_id integer, keys text[]) RETURNS integer
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.lock_documents($1, $2)
$$;

CREATE FUNCTION embeddings.lock_target(target_id integer) RETURNS integer
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.lock_target($1)
$$;

CREATE FUNCTION embeddings.move_inbox(queue_name text, max_rows integer DEFAULT 10000, max_keys
    integer DEFAULT 100000) RETURNS integer
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.move_inbox($1, $2, $3)
$$;

CREATE FUNCTION embeddings.note_deferrals(target_ids integer[], reasons text[], job_counts
    integer[]) RETURNS void
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.note_deferrals($1, $2, $3)
$$;

CREATE FUNCTION embeddings.record_fingerprints(target_id integer, shadow boolean, keys text[],
    digests text[]) RETURNS integer
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.record_fingerprints($1, $2, $3, $4)
$$;

CREATE FUNCTION embeddings.relation_named(name text) RETURNS regclass
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.relation_named($1)
$$;

CREATE FUNCTION embeddings.schema_revision() RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.schema_revision()
$$;

CREATE FUNCTION embeddings.stopped_targets() RETURNS TABLE(target_id integer, target text, queue
    text, state text, reason text, fix text, since timestamp with time zone)
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.stopped_targets()
$$;

CREATE FUNCTION embeddings.target_name(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.target_name($1)
$$;

CREATE FUNCTION embeddings.target_status(exact boolean DEFAULT NULL::boolean) RETURNS TABLE(target
    text, total_rows bigint, embedded_rows bigint, pending_jobs bigint, failed_jobs bigint,
    oldest_pending_seconds double precision, target_id integer, model text, rows_per_second double
    precision, cleared_rows bigint, deferred_reason text, deferred_since timestamp with time zone,
    problem text, chunks bigint, estimated boolean, backfill_rows bigint, index_deferred boolean,
    pending_live bigint, pending_backfill bigint, vectors_from text, change_model text,
    change_done_rows bigint, change_total_rows bigint, change_rows_per_second double precision,
    change_eta_seconds double precision, stopped jsonb, held_jobs bigint, swap_waiting_since
    timestamp with time zone, swap_attempts integer, swap_holders text)
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.target_status($1)
$$;

-- What the bodies of those functions and of the API's that 0.3.0's worker calls, as 0.3.0
-- installed them, call (and the per-target search functions' bodies). A 0.3.0 worker may be
-- inside one of them when `migrate` commits: a statement it started while `migrate` held its
-- locks waits on its first table, then runs the rest of the 0.3.0 body, whose every later call
-- looks its name up again.

CREATE FUNCTION embeddings.any_lexeme_query(v tsvector) RETURNS tsquery
LANGUAGE sql IMMUTABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.any_lexeme_query($1)
$$;

CREATE FUNCTION embeddings.backfill_lane_full(queue text, max_keys integer) RETURNS boolean
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.backfill_lane_full($1, $2)
$$;

CREATE FUNCTION embeddings.backfill_queue(queue_name text) RETURNS text
LANGUAGE sql IMMUTABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.backfill_queue($1)
$$;

CREATE FUNCTION embeddings.backfill_range(t embeddings.targets, b embeddings.backfills, max_keys
    integer, OUT scanned integer, OUT enqueued integer) RETURNS record
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.backfill_range($1, $2, $3)
$$;

CREATE FUNCTION embeddings.backfill_rows_left(t embeddings.targets) RETURNS bigint
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.backfill_rows_left($1)
$$;

CREATE FUNCTION embeddings.backfill_stall_alarm() RETURNS interval
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.backfill_stall_alarm()
$$;

CREATE FUNCTION embeddings.backfill_step(target_id integer, max_keys integer DEFAULT
    embeddings.backfill_step_keys(), OUT scanned integer, OUT enqueued integer) RETURNS record
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.backfill_step($1, $2)
$$;

CREATE FUNCTION embeddings.change_status(t embeddings.targets, exact boolean DEFAULT true, OUT
    vectors_from text, OUT change_model text, OUT change_done_rows bigint, OUT change_total_rows
    bigint, OUT change_rows_per_second double precision, OUT change_eta_seconds double precision)
    RETURNS record
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.change_status($1, $2)
$$;

CREATE FUNCTION embeddings.complete_change(target_id integer, lock_wait interval DEFAULT
    '00:00:00.2'::interval) RETURNS text
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.complete_change($1, $2)
$$;

CREATE FUNCTION embeddings.deferral_fresh() RETURNS interval
LANGUAGE sql IMMUTABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.deferral_fresh()
$$;

CREATE FUNCTION embeddings.deferred_index_name(t embeddings.targets) RETURNS name
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.deferred_index_name($1)
$$;

CREATE FUNCTION embeddings.definition_tag(t embeddings.targets, model text) RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.definition_tag($1, $2)
$$;

CREATE FUNCTION embeddings.enqueue_keys(target_id integer, keys anyarray, delay integer DEFAULT 0,
    lane text DEFAULT 'live'::text) RETURNS integer
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.enqueue_keys($1, $2, $3, $4)
$$;

CREATE FUNCTION embeddings.ensure_queue(queue_name text) RETURNS void
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.ensure_queue($1)
$$;

CREATE FUNCTION embeddings.estimated_counts(t embeddings.targets, OUT total_rows bigint, OUT
    embedded_rows bigint, OUT cleared_rows bigint, OUT chunks bigint) RETURNS record
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.estimated_counts($1)
$$;

CREATE FUNCTION embeddings.exact_counts(t embeddings.targets, OUT total_rows bigint, OUT
    embedded_rows bigint, OUT cleared_rows bigint, OUT chunks bigint) RETURNS record
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.exact_counts($1)
$$;

CREATE FUNCTION embeddings.fingerprint_slot(t embeddings.targets, shadow boolean DEFAULT false, OUT
    slot smallint, OUT model text) RETURNS record
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.fingerprint_slot($1, $2)
$$;

CREATE FUNCTION embeddings.key_json_from_text_sql(t embeddings.targets, expr text) RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.key_json_from_text_sql($1, $2)
$$;

CREATE FUNCTION embeddings.keys_per_message() RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.keys_per_message()
$$;

CREATE FUNCTION embeddings.lock_attempt_ms() RETURNS integer
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.lock_attempt_ms()
$$;

CREATE FUNCTION embeddings.lock_holders(rel regclass) RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.lock_holders($1)
$$;

CREATE FUNCTION embeddings.lock_target_version(target_id integer) RETURNS integer
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.lock_target_version($1)
$$;

CREATE FUNCTION embeddings.message_keys(message jsonb) RETURNS SETOF jsonb
LANGUAGE sql IMMUTABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.message_keys($1)
$$;

CREATE FUNCTION embeddings.pending_count(t embeddings.targets, OUT pending_jobs bigint, OUT
    oldest_pending_seconds double precision) RETURNS record
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.pending_count($1)
$$;

CREATE FUNCTION embeddings.pending_keys(t embeddings.targets) RETURNS TABLE(k jsonb)
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.pending_keys($1)
$$;

CREATE FUNCTION embeddings.queue_messages(queue text) RETURNS bigint
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.queue_messages($1)
$$;

CREATE FUNCTION embeddings.queue_pending(queue text, sample_percent double precision DEFAULT
    NULL::double precision) RETURNS TABLE(target_id jsonb, schema_name text, table_name text,
    embedding_column text, keys bigint, oldest timestamp with time zone)
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM embeddings_internal.queue_pending($1, $2)
$$;

CREATE FUNCTION embeddings.search_filter_sql(t embeddings.targets, filter jsonb, param integer)
    RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.search_filter_sql($1, $2, $3)
$$;

CREATE FUNCTION embeddings.search_target(source regclass, embedding_column name DEFAULT NULL::name)
    RETURNS embeddings.targets
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.search_target($1, $2)
$$;

CREATE FUNCTION embeddings.session_start_path() RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.session_start_path()
$$;

CREATE FUNCTION embeddings.status_exact_rows() RETURNS bigint
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.status_exact_rows()
$$;

CREATE FUNCTION embeddings.swap_wait_alarm() RETURNS interval
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.swap_wait_alarm()
$$;

CREATE FUNCTION embeddings.target_problem(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.target_problem($1)
$$;

CREATE FUNCTION embeddings.target_rows(t embeddings.targets) RETURNS double precision
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.target_rows($1)
$$;

-- Those whose signatures name halfvec, read with the vector extension's schema searched (and
-- the lists below, which name them too).
SELECT pg_catalog.set_config('search_path', 'pg_catalog, ' || pg_catalog.quote_ident(embeddings.vector_schema()) || ', pg_temp', true);

CREATE FUNCTION embeddings.search_answer(t embeddings.targets, query halfvec, k integer, filter
    jsonb) RETURNS jsonb
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.search_answer($1, $2, $3, $4)
$$;

-- Which of them worker roles may run (grant_worker() grants them with
-- embeddings.worker_functions()).
CREATE FUNCTION embeddings_internal.compat_worker_functions() RETURNS regprocedure[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY[
        'embeddings.backfill_next(text, integer)',
        'embeddings.backfill_rows_left(embeddings.targets)',
        'embeddings.claim_provenance(integer, boolean, text, text, text)',
        'embeddings.clear_deferrals(integer[])',
        'embeddings.complete_changes()',
        'embeddings.deferred_index_built(integer)',
        'embeddings.inbox_pending(text)',
        'embeddings.lock_documents(integer, text[])',
        'embeddings.lock_target(integer)',
        'embeddings.lock_target_version(integer)',
        'embeddings.move_inbox(text, integer, integer)',
        'embeddings.note_deferrals(integer[], text[], integer[])',
        'embeddings.record_fingerprints(integer, boolean, text[], text[])',
        'embeddings.schema_revision()',
        'embeddings.stopped_targets()',
        'embeddings.target_status(boolean)'
    ]::regprocedure[]
$$;

DO $$
DECLARE
    -- as PUBLIC may run the functions they forward to
    anyone CONSTANT regprocedure[] := ARRAY[
        'embeddings.access_problem(embeddings.targets)',
        'embeddings.any_lexeme_query(tsvector)',
        'embeddings.backfill_queue(text)',
        'embeddings.deferred_index_name(embeddings.targets)',
        'embeddings.function_named(text)',
        'embeddings.leaf_relations(regclass)',
        'embeddings.pending_count(embeddings.targets)',
        'embeddings.queue_pending(text, double precision)',
        'embeddings.relation_named(text)',
        'embeddings.search_answer(embeddings.targets, halfvec, integer, jsonb)',
        'embeddings.search_filter_sql(embeddings.targets, jsonb, integer)',
        'embeddings.search_target(regclass, name)',
        'embeddings.session_start_path()',
        'embeddings.target_name(embeddings.targets)'
    ]::regprocedure[];
    -- as only the schema's owner may run the functions they forward to
    owner_only CONSTANT regprocedure[] := ARRAY[
        'embeddings.backfill_lane_full(text, integer)',
        'embeddings.backfill_range(embeddings.targets, embeddings.backfills, integer)',
        'embeddings.backfill_stall_alarm()',
        'embeddings.backfill_step(integer, integer)',
        'embeddings.change_status(embeddings.targets, boolean)',
        'embeddings.complete_change(integer, interval)',
        'embeddings.deferral_fresh()',
        'embeddings.definition_tag(embeddings.targets, text)',
        'embeddings.enqueue_keys(integer, anyarray, integer, text)',
        'embeddings.ensure_queue(text)',
        'embeddings.estimated_counts(embeddings.targets)',
        'embeddings.exact_counts(embeddings.targets)',
        'embeddings.fingerprint_slot(embeddings.targets, boolean)',
        'embeddings.key_json_from_text_sql(embeddings.targets, text)',
        'embeddings.keys_per_message()',
        'embeddings.lock_attempt_ms()',
        'embeddings.lock_holders(regclass)',
        'embeddings.message_keys(jsonb)',
        'embeddings.pending_keys(embeddings.targets)',
        'embeddings.queue_messages(text)',
        'embeddings.status_exact_rows()',
        'embeddings.swap_wait_alarm()',
        'embeddings.target_problem(embeddings.targets)',
        'embeddings.target_rows(embeddings.targets)'
    ]::regprocedure[];
    fn regprocedure;
BEGIN
    FOREACH fn IN ARRAY anyone || owner_only || embeddings_internal.compat_worker_functions() LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
        EXECUTE format('COMMENT ON FUNCTION %s IS %L', fn,
                       format('Internal to embed-worker, not to be called: kept for workers of release 0.3.0 during a rolling upgrade, '
                              'it forwards to embeddings_internal.%s(); it goes in 0.5.0.', (SELECT p.proname FROM pg_proc p WHERE p.oid = fn)));
    END LOOP;
    FOREACH fn IN ARRAY anyone LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', fn);
    END LOOP;
END
$$;
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
REVOKE ALL ON FUNCTION embeddings_internal.compat_worker_functions() FROM PUBLIC;
COMMENT ON FUNCTION embeddings_internal.compat_worker_functions() IS
    'Internal to embed-worker, not to be called: the forwarders of sql/95_compat_0_3_0.sql that worker roles may run; goes in 0.5.0.';

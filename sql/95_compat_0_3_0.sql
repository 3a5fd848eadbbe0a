-- Forwarders for the workers of release 0.3.0, kept during a rolling upgrade (docs/upgrading.md):
-- a 0.3.0 worker still running after `embed-worker migrate` calls these functions by their names
-- of 0.3.0 (its worker/queries.sql), in schema `embeddings`, where 0.4.0 keeps only the public
-- API and the internals moved to `embeddings_internal`. Each runs with its caller's rights and
-- calls the internal function of the same name, arguments and result unchanged; each has the
-- grants it had in 0.3.0 (PUBLIC's, or the worker roles', grant_worker()). They go in 0.5.0,
-- whose workers replace 0.4.0's: this file is then deleted, with the call of
-- embeddings_internal.compat_worker_functions() in sql/80_roles.sql.
--
-- The workers of 0.2.0 call a subset of these, under the same signatures.
--
-- This file keeps the old names on purpose: /work/briefs/rename_internal.py leaves it alone.

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

-- Which of them worker roles may run (grant_worker() grants them with
-- embeddings.worker_functions()); the others PUBLIC may run, as in 0.3.0.
CREATE FUNCTION embeddings_internal.compat_worker_functions() RETURNS regprocedure[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY[
        'embeddings.backfill_next(text, integer)',
        'embeddings.claim_provenance(integer, boolean, text, text, text)',
        'embeddings.clear_deferrals(integer[])',
        'embeddings.complete_changes()',
        'embeddings.deferred_index_built(integer)',
        'embeddings.inbox_pending(text)',
        'embeddings.lock_documents(integer, text[])',
        'embeddings.lock_target(integer)',
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
    anyone CONSTANT regprocedure[] := ARRAY[
        'embeddings.access_problem(embeddings.targets)',
        'embeddings.function_named(text)',
        'embeddings.leaf_relations(regclass)',
        'embeddings.relation_named(text)',
        'embeddings.target_name(embeddings.targets)'
    ]::regprocedure[];
    fn regprocedure;
BEGIN
    FOREACH fn IN ARRAY anyone || embeddings_internal.compat_worker_functions() LOOP
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
REVOKE ALL ON FUNCTION embeddings_internal.compat_worker_functions() FROM PUBLIC;
COMMENT ON FUNCTION embeddings_internal.compat_worker_functions() IS
    'Internal to embed-worker, not to be called: the forwarders of sql/95_compat_0_3_0.sql that worker roles may run; goes in 0.5.0.';

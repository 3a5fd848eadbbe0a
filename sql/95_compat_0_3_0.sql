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

-- What they keep: every function of ours that 0.3.0's worker calls (its worker/queries.sql; its
-- Python names no other function of ours but the per-target ones, which stay in `embeddings`),
-- and what the bodies of those functions and of the API's that 0.3.0's worker calls, as 0.3.0
-- installed them, call (and the per-target search functions' bodies). A 0.3.0 worker may be
-- inside one of them when `migrate` commits: a statement it started while `migrate` held its
-- locks waits on its first table, then runs the rest of the 0.3.0 body, whose every later call
-- looks its name up again.
--
-- Each forwarder is listed by its 0.3.0 name and argument types, under who may run it; the rest
-- of its signature (argument names, defaults, OUT arguments, result) and its volatility are
-- those of the internal function it calls, which has 0.3.0's. The lists name halfvec: they are
-- read with the vector extension's schema searched.
SELECT pg_catalog.set_config('search_path', 'pg_catalog, ' || pg_catalog.quote_ident(embeddings.vector_schema()) || ', pg_temp', true);
DO $$
DECLARE
    -- Each forwarder, made from the internal function it calls
    forwarder CONSTANT text := $template$
        CREATE FUNCTION embeddings.%(name)I(%(arguments)s) RETURNS %(result)s
        LANGUAGE sql %(volatility)s SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $body$
            %(select)s embeddings_internal.%(name)I(%(parameters)s)
        $body$
    $template$;
    -- as PUBLIC may run the functions they forward to
    anyone CONSTANT text[] := ARRAY[
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
    ];
    -- as only the schema's owner may run the functions they forward to
    owner_only CONSTANT text[] := ARRAY[
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
    ];
    -- as only the schema's owner and worker roles may run the functions they forward to (those
    -- 0.3.0's worker calls; grant_worker() grants them, embeddings_internal.compat_worker_functions())
    workers CONSTANT text[] := ARRAY[
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
    ];
    signature text;
    internal pg_proc;
    fn regprocedure;
BEGIN
    FOREACH signature IN ARRAY anyone || owner_only || workers LOOP
        SELECT * INTO internal FROM pg_proc
        WHERE oid = to_regprocedure(regexp_replace(signature, E'^embeddings\\.', 'embeddings_internal.'));
        IF NOT FOUND THEN
            RAISE EXCEPTION 'sql/95_compat_0_3_0.sql: % forwards to no function of embeddings_internal', signature;
        END IF;
        EXECUTE embeddings_internal.render(forwarder, jsonb_build_object(
            'name', internal.proname,
            'arguments', pg_catalog.pg_get_function_arguments(internal.oid),
            'result', pg_catalog.pg_get_function_result(internal.oid),
            'volatility', CASE internal.provolatile WHEN 'i' THEN 'IMMUTABLE' WHEN 's' THEN 'STABLE' ELSE 'VOLATILE' END,
            -- a set, or a record of OUT arguments, is passed on as rows; anything else as a value
            'select', CASE WHEN internal.proretset OR internal.prorettype = 'record'::regtype THEN 'SELECT * FROM' ELSE 'SELECT' END,
            'parameters', (SELECT string_agg('$' || i, ', ' ORDER BY i) FROM generate_series(1, internal.pronargs) i)));
        fn := signature::regprocedure;
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
        EXECUTE format('COMMENT ON FUNCTION %s IS %L', fn,
                       format('Internal to embed-worker, not to be called: kept for workers of release 0.3.0 during a rolling upgrade, '
                              'it forwards to embeddings_internal.%s(); it goes in 0.5.0.', internal.proname));
    END LOOP;
    FOREACH fn IN ARRAY anyone::regprocedure[] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', fn);
    END LOOP;
END
$$;
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

-- Which of them worker roles may run (grant_worker() grants them with
-- embeddings.worker_functions()): those that forward to a function worker roles may run.
CREATE FUNCTION embeddings_internal.compat_worker_functions() RETURNS regprocedure[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(f.forwarder ORDER BY f.forwarder::text), '{}')
    FROM unnest(embeddings.worker_functions()) AS w(fn)
    JOIN pg_proc p ON p.oid = w.fn AND p.pronamespace = 'embeddings_internal'::regnamespace
    CROSS JOIN LATERAL to_regprocedure(format('embeddings.%I(%s)', p.proname, pg_catalog.oidvectortypes(p.proargtypes))) AS f(forwarder)
    WHERE f.forwarder IS NOT NULL
$$;
REVOKE ALL ON FUNCTION embeddings_internal.compat_worker_functions() FROM PUBLIC;
COMMENT ON FUNCTION embeddings_internal.compat_worker_functions() IS
    'Internal to embed-worker, not to be called: the forwarders of sql/95_compat_0_3_0.sql that worker roles may run; goes in 0.5.0.';

-- Who may run what: the public API, and every grant of our functions to PUBLIC, in one list.
-- docs/sql.md documents each entry of the API (signature, rights, an example), and
-- tests/integration/test_sql_reference.py compares that page, this list and the catalog.
--
-- The API is schema `embeddings`; everything else is in schema `embeddings_internal` (the
-- functions watch() generates per target and the forwarders kept for the previous release's
-- workers, sql/95_compat_0_3_0.sql, aside). Postgres grants EXECUTE on a new function to PUBLIC: every
-- function of both schemas is revoked from PUBLIC here and granted back by this list only. The
-- internals' COMMENTs say they are internal: they may change in any release. Internal functions run as the schema's owner (who owns them),
-- as a worker role (embeddings.worker_functions(), granted by grant_worker()), or from our
-- triggers and event triggers (whose EXECUTE is not checked when they fire). Postgres checks
-- EXECUTE against the real caller, so nothing here relies on current_user inside a SECURITY
-- DEFINER function. The functions generated per target (embeddings_<id>_*) are granted as they
-- are made (sql/30_triggers.sql, sql/32_access.sql) and are not listed here.

-- What PUBLIC may execute of ours, as installed: the API's searches and readers, and the
-- internals they run with their caller's rights. This file grants them to PUBLIC; where an
-- administrator revoked that (docs/security.md), embeddings.grant_search() grants them to a
-- role by name.
CREATE FUNCTION embeddings_internal.public_functions() RETURNS regprocedure[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- The lists name halfvec unqualified: read with the vector extension's schema in the path
    -- (for this call alone: the function's own search_path comes back at its end).
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, ' || pg_catalog.quote_ident(embeddings.vector_schema()) || ', pg_temp', true);
    DECLARE
        -- The public API: what users call, and may rely on across releases.
        -- Anyone (PUBLIC): they write nothing, and read with their caller's rights.
        api_anyone CONSTANT regprocedure[] := ARRAY[
            'embeddings.search(regclass, halfvec, integer, jsonb, name)',
            'embeddings.hybrid_search(regclass, text, halfvec, integer, jsonb, name, double precision, double precision, double precision, integer, text, text)',
            'embeddings.match_chunks(regclass, halfvec, integer)',
            'embeddings.default_model()',
            'embeddings.provider_defaults()',
            'embeddings.reranker_defaults()',
            'embeddings.vector_schema()',
            'embeddings.message_key_count(jsonb)',
            'embeddings.deferred_index_ready(text)',
            'embeddings.backfill_step_keys()',
            'embeddings.index_defer_rows()',
            'embeddings.worker_functions()'
        ]::regprocedure[];
        -- Internal, but run with their caller's rights by the API above and by the functions
        -- generated per target (a search, a hybrid search's rankings, deferred_index_ready()), or
        -- resolving a name the caller typed as its own sessions would: anyone may execute them;
        -- users are told not to call them (docs/sql.md). Each writes nothing.
        internal_anyone CONSTANT regprocedure[] := ARRAY[
            -- search(), hybrid_search(), match_chunks() and the generated search and rankings
            'embeddings_internal.search_target(regclass, name)',
            'embeddings_internal.watched_columns_hint(regclass, text)',  -- search_target()'s refusal
            'embeddings_internal.search_answer(embeddings.targets, halfvec, integer, jsonb)',
            'embeddings_internal.search_rows_estimate(embeddings.targets)',
            'embeddings_internal.search_run(text, anyelement, jsonb)',
            'embeddings_internal.set_hnsw(text, text)',
            'embeddings_internal.search_filter_sql(embeddings.targets, jsonb, integer)',
            'embeddings_internal.search_filter_check(text, text, jsonb)',  -- search_filter_sql()'s refusal of a value
            'embeddings_internal.hybrid_tuning_check(integer, integer, double precision, double precision, double precision, text, text)',
            'embeddings_internal.any_lexeme_query(tsvector)',
            'embeddings_internal.fulltext_words(text)',  -- the words hybrid_search()'s full-text side reads
            'embeddings_internal.websearch_distinct(text)',  -- fulltext_words()' terms given again left out
            -- the tsvector of full-text fields, which the generated store functions write
            'embeddings_internal.fields_tsvector(regconfig, text)',
            'embeddings_internal.store_kinds()',
            'embeddings_internal.store_has_chunks(embeddings.targets)',
            'embeddings_internal.key_json_sql(embeddings.targets, text)',
            'embeddings_internal.key_part_json_sql(regtype, text)',
            'embeddings_internal.key_equal_sql(embeddings.targets, text, text)',
            'embeddings_internal.key_operator(regtype, integer)',
            'embeddings_internal.text_sql(regtype, text)',
            'embeddings_internal.builtin_or_other_sql(regtype, text, text, text)',
            'embeddings_internal.as_base_sql(regtype, text)',
            'embeddings_internal.builtin_scalar(regtype)',
            'embeddings_internal.base_type(regtype)',
            -- deferred_index_ready(), and the check its statements end with
            'embeddings_internal.deferred_index_name(embeddings.targets)',
            'embeddings_internal.deferred_index_on(embeddings.targets, regclass)',
            'embeddings_internal.deferred_index_check(integer, regclass, name, regclass)',
            'embeddings_internal.suffixed_name(text, text)',
            'embeddings_internal.pending_count(embeddings.targets)',
            'embeddings_internal.queue_pending(text, double precision)',
            'embeddings_internal.backfill_queue(text)',
            'embeddings_internal.lane_table(text, text)',  -- doctor's check of the worker role's rights
            -- names as the caller's sessions resolve them (docs/security.md), and as status shows them
            'embeddings_internal.session_start_path()',
            'embeddings_internal.named_in_path(text, boolean, text)',
            'embeddings_internal.relation_named(text)',
            'embeddings_internal.function_named(text)',
            'embeddings_internal.display_name(regclass)',
            'embeddings_internal.target_name(embeddings.targets)',
            'embeddings_internal.leaf_relations(regclass)',
            -- why a target cannot be served, read whenever a search or a worker loads the targets
            'embeddings_internal.access_problem(embeddings.targets)',
            'embeddings_internal.access_problems(integer[])',
            'embeddings_internal.target_problems(integer[])',
            'embeddings_internal.content_type_problem(regtype, boolean)',
            -- what every guard around a table owner's code calls, as its caller: the worker roles,
            -- the schema's owner, and the table's owner, whoever that is (sql/32_access.sql); they
            -- set the caller's own settings, nothing else
            'embeddings_internal.guarded_settings()',
            'embeddings_internal.guard_save()',
            'embeddings_internal.guard_restore(text[])'
        ]::regprocedure[];
    BEGIN
        RETURN api_anyone || internal_anyone;
    END;
END
$$;

DO $$
DECLARE
    -- The schema's owner only (it owns them: nothing to grant). Each writes the registry, a
    -- queue or a watched table's triggers.
    api_owner CONSTANT regprocedure[] := ARRAY[
        'embeddings.watch(regclass, text, name, text, boolean, boolean, text, name[], boolean, integer, integer, text, boolean, boolean, text, text, regconfig, text, text, double precision)',
        'embeddings.unwatch(regclass, name)',
        'embeddings.rewatch(regclass, name, text, boolean)',
        'embeddings.unwatch_dropped()',
        'embeddings.cancel_change(regclass, name)',
        'embeddings.adopt_vectors(regclass, name, text, text, text)',
        'embeddings.adopt_fingerprints(regclass, name)',
        'embeddings.enable_fts(regclass, regconfig, name, double precision)',
        'embeddings.disable_fts(regclass, name)',
        'embeddings.set_rerank(regclass, text, integer, name)',
        'embeddings.register_model(text, integer, text, text, text, integer, boolean, integer, integer, integer, double precision, numeric, text, text, text, text)',
        'embeddings.unregister_model(text)',
        'embeddings.set_default_model(text)',
        'embeddings.register_reranker(text, text, text, text, integer, integer, double precision, text, text, integer)',
        'embeddings.unregister_reranker(text)',
        'embeddings.sweep(integer, interval, boolean)',
        'embeddings.schedule_sweep(text, integer, interval, boolean)',
        'embeddings.unschedule_sweep()',
        'embeddings.verify(integer)',
        'embeddings.dispatch(text, integer, integer, text, integer, text)',
        'embeddings.dispatch_batches(integer, integer, integer, text)',
        'embeddings.grant_worker(name)',
        'embeddings.grant_search(name)'
    ]::regprocedure[];
    -- The schema's owner and the worker roles (embeddings.worker_functions() lists them).
    api_owner_and_workers CONSTANT regprocedure[] := ARRAY[
        'embeddings.retry_failures(bigint[])',
        'embeddings.wait_for_jobs(text, integer, boolean, integer)'
    ]::regprocedure[];
    -- Anyone's (PUBLIC's), listed above: the API's among them.
    public_functions CONSTANT regprocedure[] := embeddings_internal.public_functions();
    api_anyone CONSTANT regprocedure[] := ARRAY(SELECT f FROM unnest(public_functions) f
                                                JOIN pg_proc p ON p.oid = f
                                                WHERE p.pronamespace = 'embeddings'::regnamespace);
    fn regprocedure;
    ty regtype;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE (p.pronamespace = 'embeddings'::regnamespace AND p.proname !~ '^embeddings_[0-9]+_')
           OR p.pronamespace = 'embeddings_internal'::regnamespace
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
        -- Every function outside the API says so. The API's comments sit beside their
        -- definitions. Nothing but the API is left in schema embeddings.
        IF fn <> ALL (api_anyone || api_owner || api_owner_and_workers) THEN
            IF (SELECT p.pronamespace FROM pg_proc p WHERE p.oid = fn) = 'embeddings'::regnamespace THEN
                RAISE EXCEPTION 'embeddings: % is not in the API''s list: it belongs in schema embeddings_internal', fn;
            END IF;
            EXECUTE format('COMMENT ON FUNCTION %s IS %L', fn,
                           'Internal to embed-worker, not to be called: not part of its API (docs/sql.md), it may change in any release.');
        END IF;
    END LOOP;
    -- The composite types our functions take (watch()'s options, say) are internal too, and
    -- no one else's to use: a column or function of someone else's over one would keep
    -- `embed-worker migrate` from replacing it (worker/schema/code.py refuses such dependents).
    FOR ty IN
        SELECT c.reltype::regtype FROM pg_class c
        WHERE c.relnamespace IN ('embeddings'::regnamespace, 'embeddings_internal'::regnamespace) AND c.relkind = 'c'
    LOOP
        EXECUTE format('REVOKE USAGE ON TYPE %s FROM PUBLIC', ty);
        EXECUTE format('COMMENT ON TYPE %s IS %L', ty,
                       'Internal to embed-worker, not to be used: not part of its API (docs/sql.md), it may change in any release.');
    END LOOP;
    FOREACH fn IN ARRAY public_functions LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', fn);
    END LOOP;
    -- The owner's and the workers' are granted by grant_worker(), from worker_functions().
    FOREACH fn IN ARRAY api_owner_and_workers LOOP
        IF fn <> ALL (embeddings.worker_functions()) THEN
            RAISE EXCEPTION 'embeddings: % is for worker roles but not in embeddings.worker_functions()', fn;
        END IF;
    END LOOP;
END
$$;
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

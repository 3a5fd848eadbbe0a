-- How the worker, and our own code wherever it reads or writes a watched table's rows, reaches
-- the table: through functions generated per target by embeddings.generate_access(t), owned by
-- the table's owner, SECURITY DEFINER with the owner's search path (and pg_temp last), EXECUTE
-- revoked from PUBLIC and granted to this schema's owner and to the worker roles. So
-- whatever the table's owner wrote (its content function, its triggers, its key types' casts,
-- operators and domain checks) runs with its rights and never more, and worker roles need no
-- privilege on user tables at all (docs/security.md).
--
--   embeddings_<id>_content(row)      the content function of a row, for content-function
--                                     targets: the wrapper through which the trigger functions
--                                     (owned by this schema's owner) evaluate it
--   embeddings_<id>_lock()            locks the table for the worker's write (lock_target())
--   embeddings_<id>_load(keys, k0..)  each key's row: key, content, md5 of the content
--   embeddings_<id>_lock_rows(keys, k0..)  a row store's rows locked for the write, skipping
--                                     (and returning) those another transaction holds
--   embeddings_<id>_store(keys, k0.., vectors, digests) / _blank(keys, k0.., digests)
--                                     writes or clears vectors where the content is still the
--                                     one loaded (its md5): the stale-write guard; returns the
--                                     keys written; _store_shadow / _blank_shadow the same for
--                                     the shadow column of a model change (sql/44_changes.sql)
--   embeddings_<id>_unshadowed(pending) / _swap_prepare(pending)   model-change completion
--   embeddings_<id>_scan(after, max_rows, every_row, content, sweep)  the keys after `after`
--                                     in key order, each with whether it needs a job: backfills
--                                     (sql/62_backfill.sql), sweep(), status
--   embeddings_<id>_reusable(keys, k0.., hashes) / _chunks(...)   a chunked target's chunk
--                                     table: vectors to reuse; the chunk write
--   embeddings_<id>_forget(keys, k0..) / _prune()   a side-table target's side rows of rows that
--                                     are gone: deleted (the worker), truncated (the TRUNCATE
--                                     trigger); the side table's writes (sql/56_side.sql)
--
-- Keys arrive as text: `keys` the worker's canonical keys (returned as they came), k0, k1, ...
-- one array per key column, cast to the column's type here, as the owner.
--
-- Each function first checks that it runs as the table's current owner
-- (embeddings.check_serving(), made inline by check_serving_sql()): the owner may ALTER them (they are its), to SECURITY INVOKER
-- say, which would make them run as their caller. The event trigger regenerates them after any
-- such ALTER; where there is none (an install by a non-superuser) the check refuses, with
-- SQLSTATE EW001, which the worker takes as a reason to defer the target, never as a row's
-- failure. Those that read the table refuse (EW001) while it has FORCE ROW LEVEL SECURITY: the
-- owner's policies would hide rows, and a hidden row would look deleted.

-- Refuses (SQLSTATE EW001) unless table `source` (its name as the functions were generated
-- with: renamed since, it has not been regenerated) exists and the caller runs as its owner,
-- and, with `reads`, unless it is free of FORCE ROW LEVEL SECURITY. `store`: a side table
-- (sql/56_side.sql), which must have the same owner and no FORCE ROW LEVEL SECURITY either.
-- Invoker's rights: it must see who runs.
CREATE FUNCTION embeddings.check_serving(source text, reads boolean DEFAULT true, store text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner_name name;
    forced boolean;
BEGIN
    SELECT pg_get_userbyid(c.relowner), c.relrowsecurity AND c.relforcerowsecurity INTO owner_name, forced
    FROM pg_class c WHERE c.oid = to_regclass(source);
    IF store IS NOT NULL AND owner_name IS NOT NULL THEN
        SELECT CASE WHEN pg_get_userbyid(c.relowner) OPERATOR(pg_catalog.=) owner_name THEN owner_name END,
               forced OR (c.relrowsecurity AND c.relforcerowsecurity)
        INTO owner_name, forced
        FROM pg_class c WHERE c.oid = to_regclass(store);
        IF owner_name IS NULL THEN
            RAISE EXCEPTION 'embeddings: the side table % of % is missing or not owned by the table''s owner', store, source
                USING ERRCODE = 'EW001',
                      HINT = format('ALTER TABLE %s OWNER TO the owner of %s (or any ALTER TABLE of %s, with the event trigger)', store, source, source);
        END IF;
    END IF;
    IF owner_name IS NULL THEN
        RAISE EXCEPTION 'embeddings: the functions of table % find no table of that name (renamed?)', source
            USING ERRCODE = 'EW001',
                  HINT = 'They are regenerated by any ALTER TABLE of it (with the event trigger) and by embeddings.watch(); see docs/security.md.';
    ELSIF owner_name <> current_user THEN
        RAISE EXCEPTION 'embeddings: the functions of % run as %, not as its owner %', source, current_user, owner_name
            USING ERRCODE = 'EW001',
                  HINT = 'They are regenerated by any ALTER TABLE of it (with the event trigger) and by embeddings.watch(); see docs/security.md.';
    END IF;
    IF reads AND forced THEN
        RAISE EXCEPTION 'embeddings: % has FORCE ROW LEVEL SECURITY: the worker reads and writes it as its owner, whom its policies would hide rows from', source
            USING ERRCODE = 'EW001',
                  HINT = format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', source);
    END IF;
END
$$;

-- check_serving() as PL/pgSQL statements, for the generated functions to make inline: they run
-- as the table's owner, who may have no right to this schema (REVOKE USAGE ON SCHEMA embeddings
-- FROM PUBLIC, REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA embeddings FROM PUBLIC), and must
-- still serve the worker. Only pg_catalog is named.
CREATE FUNCTION embeddings.check_serving_sql(source text, reads boolean DEFAULT true, store text DEFAULT NULL) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format(
        $c$DECLARE
                serving_owner pg_catalog.name;
                serving_forced boolean;
            BEGIN
                SELECT pg_catalog.pg_get_userbyid(c.relowner), c.relrowsecurity AND c.relforcerowsecurity
                INTO serving_owner, serving_forced
                FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(%1$L);%4$s
                IF serving_owner IS NULL THEN
                    RAISE EXCEPTION 'embeddings: the functions of table %% find no table of that name (renamed?)', %1$L
                        USING ERRCODE = 'EW001', HINT = %2$L;
                ELSIF serving_owner OPERATOR(pg_catalog.<>) CURRENT_USER THEN
                    RAISE EXCEPTION 'embeddings: the functions of %% run as %%, not as its owner %%', %1$L, CURRENT_USER, serving_owner
                        USING ERRCODE = 'EW001', HINT = %2$L;
                END IF;%3$s
            END;$c$,
        source,
        'They are regenerated by any ALTER TABLE of it (with the event trigger) and by embeddings.watch(); see docs/security.md.',
        CASE WHEN reads THEN format(
            $c$
                IF serving_forced THEN
                    RAISE EXCEPTION 'embeddings: %% has FORCE ROW LEVEL SECURITY: the worker reads and writes it as its owner, whom its policies would hide rows from', %1$L
                        USING ERRCODE = 'EW001', HINT = %2$L;
                END IF;$c$,
            source, format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', source)) ELSE '' END,
        -- a side table (its store): the table owner's too, and under its policies too
        CASE WHEN store IS NOT NULL THEN format(
            $c$
                IF serving_owner IS NOT NULL THEN
                    SELECT CASE WHEN pg_catalog.pg_get_userbyid(c.relowner) OPERATOR(pg_catalog.=) serving_owner THEN serving_owner END,
                           serving_forced OR (c.relrowsecurity AND c.relforcerowsecurity)
                    INTO serving_owner, serving_forced
                    FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(%2$L);
                    IF serving_owner IS NULL THEN
                        RAISE EXCEPTION 'embeddings: the side table %% of %% is missing or not owned by the table''s owner', %2$L, %1$L
                            USING ERRCODE = 'EW001', HINT = %3$L;
                    END IF;
                END IF;$c$,
            source, store,
            format('ALTER TABLE %s OWNER TO the owner of %s (or any ALTER TABLE of %s, with the event trigger)', store, source, source))
        ELSE '' END)
$$;

-- Why the functions of target t cannot serve it now (a target problem for status, doctor and
-- the worker), or NULL: missing, not owned by the table's owner, altered since they were
-- generated, or the table's FORCE ROW LEVEL SECURITY.
CREATE FUNCTION embeddings.access_problem(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = t.source) OR t.problem IS NOT NULL THEN NULL
        WHEN (SELECT c.relrowsecurity AND c.relforcerowsecurity FROM pg_class c WHERE c.oid = t.source) THEN
            format('%s has FORCE ROW LEVEL SECURITY: the worker reads and writes it as its owner, whom its policies would hide rows from; ALTER TABLE %s NO FORCE ROW LEVEL SECURITY',
                   t.source, t.source)
        -- A side table (sql/56_side.sql): its owner's, readable by its owner.
        WHEN t.store_kind = 'side' AND NOT EXISTS (SELECT FROM pg_class c JOIN pg_class s ON s.relowner = c.relowner
                                                      WHERE c.oid = t.source AND s.oid = t.side_table) THEN
            format('its side table %s is missing or not owned by the owner of %s: ALTER TABLE %s OWNER TO %s',
                   t.side_table, t.source, t.side_table, (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = t.source))
        WHEN (SELECT c.relrowsecurity AND c.relforcerowsecurity FROM pg_class c WHERE c.oid = t.side_table) THEN
            format('%s has FORCE ROW LEVEL SECURITY: the worker reads and writes it as its owner, whom its policies would hide rows from; ALTER TABLE %s NO FORCE ROW LEVEL SECURITY',
                   t.side_table, t.side_table)
        WHEN NOT EXISTS (SELECT FROM pg_proc p WHERE p.pronamespace = 'embeddings'::regnamespace
                         AND p.proname = 'embeddings_' || t.id || '_load') THEN
            'its functions are missing: watch the table again'
        WHEN EXISTS (SELECT FROM pg_proc p JOIN pg_class c ON c.oid = t.source
                     WHERE p.pronamespace = 'embeddings'::regnamespace
                       AND p.proname ~ ('^embeddings_' || t.id || '_[a-z_]+$')
                       AND p.proname !~ '_(search|text_ranking|bm25_ranking|visible)$'  -- the caller's (sql/58_search.sql, 56_side.sql)
                       -- a guard (create_access_function()): the caller's, around the owner's body
                       AND NOT EXISTS (SELECT FROM pg_proc b WHERE b.pronamespace = p.pronamespace
                                                               AND b.proname = p.proname || '_body')
                       AND p.prorettype <> 'trigger'::regtype
                       AND (p.proowner <> c.relowner OR NOT p.prosecdef)) THEN
            format('its functions do not run as the owner of %s (%s) as generated: an ALTER TABLE of it, or watch() again, regenerates them',
                   t.source, (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = t.source))
    END
$$;

-- The search path role `role_oid` gets in this database, as SET would take it: the setting of
-- ALTER ROLE ... IN DATABASE, ALTER ROLE or ALTER DATABASE, else the server's. The functions
-- below run with it (and pg_temp last): the owner's own triggers fire inside them when they write
-- the table, and its content function runs there, both written for the owner's sessions. Their
-- own SQL is schema-qualified throughout (operators too), so the path changes nothing of ours.
CREATE FUNCTION embeddings.owner_search_path(role_oid oid) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found text;
BEGIN
    SELECT substr(c.setting, length('search_path=') + 1) INTO found
    FROM pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) AS c(setting)
    WHERE c.setting LIKE 'search\_path=%'
      AND s.setrole IN (role_oid, 0)
      AND s.setdatabase IN ((SELECT d.oid FROM pg_database d WHERE d.datname = current_database()), 0)
      AND NOT (s.setrole = 0 AND s.setdatabase = 0)
    ORDER BY s.setrole <> 0 AND s.setdatabase <> 0 DESC, s.setrole <> 0 DESC
    LIMIT 1;
    IF found IS NULL THEN
        BEGIN  -- postgresql.conf (readable by superusers and pg_read_all_settings)
            SELECT f.setting INTO found FROM pg_file_settings f
            WHERE f.name = 'search_path' AND f.applied ORDER BY f.seqno DESC LIMIT 1;
        EXCEPTION WHEN insufficient_privilege THEN
            found := NULL;
        END;
    END IF;
    RETURN coalesce(nullif(btrim(found), ''), (SELECT s.boot_val FROM pg_settings s WHERE s.name = 'search_path'));
END
$$;

-- Gives function `fn` the search path of role `role_oid` (owner_search_path()), pg_temp last.
-- Through the setting itself, never spliced into SQL: a role sets its own search path (ALTER
-- ROLE ... SET), and this runs as the schema's owner. A path Postgres refuses: its default.
CREATE FUNCTION embeddings.give_owner_path(fn regprocedure, role_oid oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    statement text := format('ALTER FUNCTION %s SET search_path FROM CURRENT', fn);
BEGIN
    BEGIN
        PERFORM set_config('search_path', embeddings.owner_search_path(role_oid) || ', pg_temp', true);
    EXCEPTION WHEN OTHERS THEN
        PERFORM set_config('search_path', '"$user", public, pg_temp', true);
    END;
    EXECUTE statement;
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
END
$$;

-- "The rows `v` (unnested keys: v.k0, v.k1, ... as text) and `table_alias` have the same key":
-- each key value cast to its column's type (`types`, as format_type() writes them), compared
-- with the operator of the type's default btree operator class.
CREATE FUNCTION embeddings.access_match_sql(t embeddings.targets, table_alias text, types text[]) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(format('%I.%I %s (v.k%s)::%s', table_alias, k.c, embeddings.key_operator(k.ty, 3), k.i - 1,
                             types[k.i]), ' AND ' ORDER BY k.i)
    FROM unnest(t.key_columns, t.key_types) WITH ORDINALITY AS k(c, ty, i)
$$;

-- What the generators below share about target t, as a JSON object:
--   prefix       embeddings_<id>
--   key_params   ', k0 text[], k1 text[]'
--   key_rows     'pg_catalog.unnest($1), pg_catalog.unnest($2), ...': the canonical keys and
--                the key arrays, for ROWS FROM (unnest() of several arrays is resolved by
--                name, unqualified, through the search path)
--   key_aliases  ', k0, k1'
--   key_match    access_match_sql(t, 't', ...)
--   check_call   the check every function makes first
--   content      the content of row t, as the owner evaluates it
--   key_order    't.k0, t.k1': row t's key columns, for ORDER BY
--   key_after    "row t's key comes after the key in $1" (a key as jobs carry it, JSON), for
--                the functions that go through a table a slice of keys at a time
CREATE FUNCTION embeddings.access_parts(t embeddings.targets) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'key_order', (SELECT string_agg(format('t.%I', k.c), ', ' ORDER BY k.i)
                      FROM unnest(t.key_columns) WITH ORDINALITY AS k(c, i)),
        'key_after', embeddings.key_after_sql(t, 't', ARRAY(
            SELECT format(CASE WHEN c.n = 1 THEN '($1 OPERATOR(pg_catalog.#>>) ''{}'')::%2$s' ELSE '($1 OPERATOR(pg_catalog.->>) %1$s)::%2$s' END,
                          i - 1, (embeddings.key_sql_types(t))[i])
            FROM generate_series(1, c.n) i ORDER BY i)),
        'prefix', 'embeddings_' || t.id,
        'key_params', (SELECT string_agg(format(', k%s text[]', i - 1), '' ORDER BY i) FROM generate_series(1, c.n) i),
        'key_rows', (SELECT string_agg(format('pg_catalog.unnest($%s)', i), ', ' ORDER BY i) FROM generate_series(1, c.n + 1) i),
        'key_aliases', (SELECT string_agg(format(', k%s', i - 1), '' ORDER BY i) FROM generate_series(1, c.n) i),
        'key_match', embeddings.access_match_sql(t, 't', embeddings.key_sql_types(t)),
        'check_call', embeddings.check_serving_sql(t.source::text, true, t.side_table::text),
        'content', embeddings.content_sql(t, 't', NULL, wrapped => false))
    FROM (SELECT cardinality(t.key_columns) AS n) c
$$;

-- The vector columns target t's writes go to in `rel` (its table, or its side table), a _store
-- and a _blank function each: its embedding column, with its type (halfvec or vector), suffix
-- ''; during a model change also the shadow column (halfvec), suffix '_shadow'. (PL/pgSQL: the
-- model changes' table comes later, sql/44_changes.sql.)
CREATE FUNCTION embeddings.vector_columns(t embeddings.targets, rel regclass)
RETURNS TABLE (suffix text, name name, type text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
        SELECT ''::text, t.embedding_column, format('%I.%I', n.nspname, ty.typname)
        FROM pg_attribute at JOIN pg_type ty ON ty.oid = at.atttypid JOIN pg_namespace n ON n.oid = ty.typnamespace
        WHERE at.attrelid = rel AND at.attname = t.embedding_column AND NOT at.attisdropped
        UNION ALL
        SELECT '_shadow'::text, mc.shadow_column, format('%I.halfvec', embeddings.vector_schema())
        FROM embeddings.model_changes mc
        WHERE mc.target_id = t.id AND embeddings.attnum_of(rel, mc.shadow_column) IS NOT NULL;
END
$$;

-- The SET clauses of every function that evaluates a target's content (these below, and
-- embeddings_<id>_verify(), sql/64_verify.sql): the formats of dates, timestamps and intervals
-- pinned, whoever calls. The worker's sessions need them to read what they fetch (worker/db.py:
-- session_formats), and a content function that formats a date must give the verifying sweep,
-- run from pg_cron or psql under the database's DateStyle, the text the worker embedded: else
-- every such row would look stale at every pass, and be embedded again. `ISO` alone keeps the
-- caller's day/month order (it only parses input); TimeZone stays the caller's (a content
-- function that shows local times means the database's zone: docs/reliability.md).
CREATE FUNCTION embeddings.content_settings_sql() RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ' SET DateStyle = ISO SET IntervalStyle = postgres'
$$;

-- Creates function embeddings.<prefix><suffix>(params) RETURNS returns, as every function of the
-- generators below is made: PL/pgSQL, SECURITY DEFINER with the search path pg_catalog, pg_temp
-- and the content formats above (generate_access() then gives it to the table's owner, with the
-- owner's path), `head` before
-- its BEGIN (a DECLARE block, #variable_conflict), the check every function makes first (`a`'s
-- check_call unless `check_call` is given), then `body`. So each generator says only what its
-- function does. Returns the function's name.
-- The settings the owner's code could leave in the caller's session (set_config(name, value,
-- false) outlives a SECURITY DEFINER function, its SET clauses included): each `guarded`
-- access function puts back whichever of them the owner's code changed (create_access_function).
CREATE FUNCTION embeddings.guarded_settings() RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY['search_path', 'statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout',
                 'default_transaction_read_only', 'default_transaction_isolation', 'default_transaction_deferrable',
                 'DateStyle', 'IntervalStyle', 'TimeZone', 'bytea_output', 'extra_float_digits',
                 'standard_conforming_strings', 'transform_null_equals', 'row_security', 'synchronous_commit',
                 'array_nulls', 'quote_all_identifiers', 'default_text_search_config', 'xmloption',
                 'lc_monetary', 'lc_numeric', 'lc_time', 'check_function_bodies', 'session_replication_role']
$$;

CREATE FUNCTION embeddings.create_access_function(
    a jsonb,
    suffix text,
    params text,
    returns text,
    body text,
    stable boolean DEFAULT false,
    head text DEFAULT '',
    check_call text DEFAULT NULL,
    formats boolean DEFAULT true,
    immediate boolean DEFAULT true
) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fn_name text := (a->>'prefix') || suffix;
    -- `immediate`: the function is called by the worker and by our operations (sweep(),
    -- watch(), ...), never in the application's own transactions (the triggers' `_content`,
    -- the TRUNCATE trigger's `_prune` pass false). Two things then hold:
    -- * SET CONSTRAINTS ALL IMMEDIATE first. The owner's code that runs inside (its triggers,
    --   its content function) may queue deferred triggers, which Postgres 15 fires at COMMIT as
    --   whoever is the current user then: the worker, or the superuser running sweep().
    --   Immediate, they fire at the end of the statement that queued them, as the owner.
    --   Postgres refuses SET CONSTRAINTS in a STABLE function, and the owner's STABLE content
    --   function may still call a VOLATILE one that writes: such a function is VOLATILE.
    -- * The body is `<name>_body`, and `<name>` a guard around it that puts back every setting
    --   of guarded_settings() the owner's code changed with set_config(..., false): a search
    --   path naming the owner's schema first would otherwise pick the owner's functions for the
    --   caller's next unqualified call (sweep()'s own, a superuser's next statement), as the
    --   caller. The guard has no SET clause (the settings it reads and puts back are the
    --   caller's), so it names only pg_catalog and this schema, and only qualified. It runs as
    --   its caller (SECURITY INVOKER: it does nothing a caller could not) and stays this
    --   schema's, so the table's owner cannot ALTER it; the body is the owner's, as before, and
    --   needs no right to this schema.
    body_name text := fn_name || CASE WHEN immediate THEN '_body' ELSE '' END;
    settings text[] := embeddings.guarded_settings();
    setof boolean := returns ~* '^\s*(TABLE|SETOF)\M';
    void boolean := returns ~* '^\s*void\s*$';
    args text;
BEGIN
    EXECUTE format(
        $f$CREATE FUNCTION embeddings.%1$I(%2$s) RETURNS %3$s
        LANGUAGE plpgsql%4$s SECURITY DEFINER SET search_path = pg_catalog, pg_temp%8$s AS $body$
        %5$sBEGIN
            %9$s%6$s
            %7$s
        END
        $body$ $f$,
        body_name, params, returns, CASE WHEN stable AND NOT immediate THEN ' STABLE' ELSE '' END, head,
        coalesce(check_call, a->>'check_call'), body,
        CASE WHEN formats THEN embeddings.content_settings_sql() ELSE '' END,
        CASE WHEN immediate THEN 'SET CONSTRAINTS ALL IMMEDIATE;' ELSE '' END);
    IF NOT immediate THEN
        RETURN fn_name;
    END IF;
    SELECT coalesce(string_agg(format('$%s', i), ', ' ORDER BY i), '') INTO args
    FROM generate_series(1, (SELECT p.pronargs FROM pg_proc p
                             WHERE p.oid = format('embeddings.%I', body_name)::regproc)) AS i;
    EXECUTE format(
        $f$CREATE FUNCTION embeddings.%1$I(%2$s) RETURNS %3$s
        LANGUAGE plpgsql SECURITY INVOKER AS $body$
        DECLARE
            guarded_saved pg_catalog.text[] := ARRAY[%4$s];%5$s
        BEGIN
            %6$s
            %7$s
            %8$s
        END
        $body$ $f$,
        fn_name, params, returns,
        (SELECT string_agg(format('pg_catalog.current_setting(%L)', n), ', ' ORDER BY i)
         FROM unnest(settings) WITH ORDINALITY AS s(n, i)),
        CASE WHEN setof OR void THEN '' ELSE format(E'\n            guarded_result %s;', returns) END,
        CASE WHEN setof THEN format('RETURN QUERY SELECT * FROM embeddings.%I(%s);', body_name, args)
             WHEN void THEN format('PERFORM embeddings.%I(%s);', body_name, args)
             ELSE format('guarded_result := embeddings.%I(%s);', body_name, args) END,
        (SELECT string_agg(format(
                    'IF pg_catalog.current_setting(%1$L) OPERATOR(pg_catalog.<>) guarded_saved[%2$s] THEN '
                    'PERFORM pg_catalog.set_config(%1$L, guarded_saved[%2$s], false); END IF;', n, i),
                E'\n            ' ORDER BY i)
         FROM unnest(settings) WITH ORDINALITY AS s(n, i)),
        CASE WHEN setof OR void THEN 'RETURN;' ELSE 'RETURN guarded_result;' END);
    RETURN fn_name;
END
$$;

-- Creates (replacing any there are) the functions above for target t, as its table is now.
-- SECURITY DEFINER: whoever causes the regeneration, they are created by this schema's owner,
-- then given to the table's owner and granted.
-- Gives target t's chunk or side table to its table's owner, if another role owns it: the store
-- holds the table's rows' vectors (and keys), and goes with the table, whatever else keeps the
-- target from being served (a content function left with the table's old owner: the target has a
-- problem and no functions, and the old owner must not keep a table of the new owner's data).
-- Called by generate_access() and, for a target with a problem, by refresh_target() (our DDL:
-- the caller has set embeddings.following).
CREATE FUNCTION embeddings.give_store_to_owner(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(t.chunk_table, t.side_table) IS NOT NULL
       AND (SELECT c.relowner FROM pg_class c WHERE c.oid = coalesce(t.chunk_table, t.side_table))
           <> (SELECT c.relowner FROM pg_class c WHERE c.oid = t.source) THEN
        EXECUTE format('ALTER TABLE %s OWNER TO %I', coalesce(t.chunk_table, t.side_table),
                       (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = t.source));
    END IF;
END
$$;

CREATE FUNCTION embeddings.generate_access(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a jsonb := embeddings.access_parts(t);
    owner_name name := (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = t.source);
    missing text := embeddings.embedding_missing_sql(t, 't');
    following text := coalesce(current_setting('embeddings.following', true), 'off');
    made text[] := '{}';
    fn regprocedure;
    guard boolean;
    role_name name;
BEGIN
    PERFORM set_config('embeddings.following', 'on', true);  -- our DDL: nothing to follow
    PERFORM embeddings.drop_access(t);
    -- A chunked target's chunk table, or a side table, is its table owner's too (a new owner
    -- takes it along).
    PERFORM embeddings.give_store_to_owner(t);

    IF t.content_function IS NOT NULL THEN
        -- Called for each row by the trigger functions: the owner's name is compared first (a
        -- name: cheap), the catalog only where it differs (after REASSIGN OWNED, say). Without
        -- the content formats: the triggers only compare a row's old and new content in one
        -- session, which any format tells apart, and two more settings per call would cost
        -- the application's statements; the texts that are embedded and fingerprinted come
        -- from _load and _verify, which pin them.
        made := made || embeddings.create_access_function(a, '_content', format('r %s', t.source), 'text',
            format($b$IF current_user OPERATOR(pg_catalog.<>) %1$L::pg_catalog.name THEN
                %2$s
            END IF;
            RETURN %3$s;$b$,
                owner_name, embeddings.check_serving_sql(t.source::text, false),
                embeddings.content_sql(t, 'r', NULL, wrapped => false)),
            stable => true, check_call => '', formats => false, immediate => false);
    END IF;

    -- The write transaction's first lock (embeddings.lock_target): the table, before the
    -- registration, as ALTER TABLE takes them.
    made := made || embeddings.create_access_function(a, '_lock', '', 'void',
        format('EXECUTE %L;', format('LOCK TABLE %s IN %s MODE', t.source::text, embeddings.store_lock_mode(t))),
        check_call => embeddings.check_serving_sql(t.source::text, false));

    made := made || embeddings.create_access_function(a, '_load', format('keys text[]%s', a->>'key_params'),
        'TABLE (key text, content text, digest text)',
        format($b$RETURN QUERY
                SELECT v.key, c.content, pg_catalog.md5(c.content)
                FROM ROWS FROM (%1$s) AS v(key%2$s)
                JOIN %3$s t ON %4$s
                CROSS JOIN LATERAL (SELECT %5$s AS content OFFSET 0) c;$b$,
            a->>'key_rows', a->>'key_aliases', t.source, a->>'key_match', a->>'content'),
        stable => true);

    -- Keys in key order after `after` (NULL: from the first), at most `max_rows` (NULL: all),
    -- each with whether it needs a job: no vector (no chunk), or with `every_row` any row; with
    -- `with_content`, only rows with content (a plain target's row holding a vector too, with
    -- `every_row`: its vector is cleared); `sweep`: no vector and content that is not blank. A
    -- content function that raises for some row: the rows one at a time, a row it raises for
    -- counted as needing a job (the worker dead-letters it with its error).
    made := made || embeddings.create_access_function(a, '_scan',
        'after jsonb, max_rows integer, every_row boolean, with_content boolean, sweep boolean DEFAULT false',
        'TABLE (key jsonb, missing boolean)',
        format($b$BEGIN
                -- (aggregated in the order of the sorted slice)
                SELECT pg_catalog.array_agg(s.k), pg_catalog.array_agg(s.m) INTO keys, flags
                FROM (SELECT %1$s AS k, %2$s AS m FROM %3$s t WHERE $1 IS NULL OR %4$s ORDER BY %5$s LIMIT $2) s;
                RETURN QUERY SELECT u.k, u.m FROM ROWS FROM (pg_catalog.unnest(keys), pg_catalog.unnest(flags)) AS u(k, m);
                RETURN;
            EXCEPTION WHEN OTHERS THEN
                IF NOT $4 THEN
                    RAISE;
                END IF;
            END;
            FOR r IN SELECT t.tableoid AS rel, t.ctid AS place, %1$s AS k
                     FROM %3$s t WHERE $1 IS NULL OR %4$s ORDER BY %5$s LIMIT $2 LOOP
                key := r.k;
                BEGIN
                    SELECT %2$s INTO missing FROM %3$s t
                    WHERE t.tableoid OPERATOR(pg_catalog.=) r.rel AND t.ctid OPERATOR(pg_catalog.=) r.place;
                EXCEPTION WHEN OTHERS THEN
                    missing := true;
                END;
                RETURN NEXT;
            END LOOP;$b$,
            embeddings.key_json_sql(t, 't'),
            format('CASE WHEN NOT $4 THEN $3 OR %1$s '
                   'WHEN $5 THEN %1$s AND (%2$s) OPERATOR(pg_catalog.~) ''[^[:space:]]'' '
                   'WHEN $3 THEN (%2$s) OPERATOR(pg_catalog.<>) ''''%3$s '
                   'ELSE %1$s AND (%2$s) OPERATOR(pg_catalog.<>) '''' END',
                   missing, (a->>'content'),
                   coalesce(' OR ' || embeddings.store_holds_vector_sql(t, 't'), '')),
            t.source, a->>'key_after', a->>'key_order'),
        stable => true, head => E'DECLARE\n    keys jsonb[];\n    flags boolean[];\n    r record;\n');

    made := made || embeddings.store_access(t, a);  -- the store kind's writes (sql/54_stores.sql)
    IF t.store_kind <> 'row' THEN
        -- Deletes and truncations followed into the side or chunk table (sql/56_side.sql).
        made := made || embeddings.generate_follow_access(t, a);
    END IF;
    made := made || embeddings.generate_verify_access(t, a);  -- the verifying sweep's (sql/64_verify.sql)

    -- The owner's, run by this schema's owner (the trigger functions) and the worker roles,
    -- with the owner's search path (written with ours: owner_search_path() says why).
    FOR fn, guard IN
        SELECT p.oid::regprocedure,
               EXISTS (SELECT FROM pg_proc b WHERE b.pronamespace = p.pronamespace AND b.proname = p.proname || '_body')
        FROM pg_proc p
        WHERE p.pronamespace = 'embeddings'::regnamespace
          AND (p.proname = ANY (made) OR p.proname = ANY (ARRAY(SELECT m || '_body' FROM unnest(made) AS m)))
    LOOP
        -- A guard (create_access_function()) keeps no SET clause: it puts back its caller's.
        IF NOT guard THEN
            PERFORM embeddings.give_owner_path(fn, (SELECT c.relowner FROM pg_class c WHERE c.oid = t.source));
        END IF;
        -- Those that turn keys into JSON (for backfills, model changes, search) do it alike in
        -- every session: a float key with extra_float_digits < 1 would lose digits and match no
        -- row (embeddings.key_settings_sql()).
        IF NOT guard AND fn::text ~ '_(scan|unshadowed|nearest)(_body)?\(' AND embeddings.key_settings_sql(t) <> '' THEN
            EXECUTE format('ALTER FUNCTION %s %s', fn, btrim(embeddings.key_settings_sql(t)));
        END IF;
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
        IF owner_name <> current_user AND NOT guard THEN
            BEGIN
                EXECUTE format('ALTER FUNCTION %s OWNER TO %I', fn, owner_name);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'embeddings: cannot give the functions of % to its owner %: %', t.source, owner_name, SQLERRM
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'They must run as the table''s owner: watch it as a superuser, or as a member of that role.';
            END;
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, current_user);
        ELSIF guard AND owner_name <> current_user THEN
            -- ours, run as the caller: the owner may call it as it may call its body
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, owner_name);
        END IF;
        FOR role_name IN SELECT r.role_name FROM embeddings.worker_role_names() AS r(role_name) LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, role_name);
        END LOOP;
    END LOOP;
    -- Search's statements (sql/58_search.sql): the caller's, not the owner's; ours, for PUBLIC.
    PERFORM embeddings.generate_search(t);
    PERFORM set_config('embeddings.following', following, true);
END
$$;


-- Drops target t's functions above and its store's policy (the trigger functions are
-- drop_triggers()').
CREATE FUNCTION embeddings.drop_access(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fn regprocedure;
BEGIN
    PERFORM embeddings.drop_store_policy(t);  -- it calls _visible (sql/56_side.sql)
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'embeddings'::regnamespace
          AND p.proname ~ ('^embeddings_' || t.id || '_(content|lock|lock_rows|load|scan|store|blank|store_shadow|blank_shadow'
                           '|unshadowed|swap_prepare|nearest|reusable|chunks|forget|prune|verify|clear_failing|existing|search|text_ranking|bm25_ranking'
                           '|visible)(_body)?$')  -- (a guard's body: create_access_function())
    LOOP
        EXECUTE format('DROP FUNCTION %s', fn);
    END LOOP;
END
$$;

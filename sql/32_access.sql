-- How the worker, and our own code wherever it reads or writes a watched table's rows, reaches
-- the table: through functions generated per target by embeddings_internal.generate_access(t), owned by
-- the table's owner, SECURITY DEFINER with the owner's search path (and pg_temp last), EXECUTE
-- revoked from PUBLIC and granted to this schema's owner and to the worker roles. So
-- whatever the table's owner wrote (its content function, its triggers, its key types' casts,
-- operators and domain checks) runs with its rights and never more, and worker roles need no
-- privilege on user tables at all (docs/security.md).
--
--   embeddings_<id>_content(r)        the content function of a row, for content-function
--                                     targets: the wrapper through which the trigger functions
--                                     (owned by this schema's owner) evaluate it
--   embeddings_<id>_lock()            locks the table for the worker's write (lock_target())
--   embeddings_<id>_load(keys, k0..)  each key's row: key, content, md5 of the content
--   embeddings_<id>_scan(after, max_rows, every_row, with_content, sweep)  the keys after
--                                     `after` in key order, each with whether it needs a job:
--                                     backfills (sql/62_backfill.sql), sweep(), status
--   the store kind's (its file, sql/54_stores.sql lists them): the vector writes under the
--                                     stale-write guard (_store, _blank, a model change's
--                                     _store_shadow, _blank_shadow, _unshadowed, _swap_prepare),
--                                     a row store's _lock_rows, a chunk table's _reusable and
--                                     _chunks, a store apart's _forget and _prune
--   the verifying sweep's (sql/64_verify.sql): _verify, _clear_failing, _existing
--
-- Keys arrive as text: `keys` the worker's canonical keys (returned as they came), k0, k1, ...
-- one array per key column, cast to the column's type here, as the owner. A function names its
-- parameters qualified by its own name (embeddings_<id>_load_body.keys): a column of the table
-- may have any name.
--
-- Each function first checks that it runs as the table's current owner (check_serving_sql()):
-- the owner may ALTER them (they are its), to SECURITY INVOKER say, which would make them run as
-- their caller. The event trigger regenerates them after any such ALTER; where there is none (an
-- install by a non-superuser) the check refuses, with SQLSTATE EW001, which the worker takes as
-- a reason to defer the target, never as a row's failure. Those that read the table refuse
-- (EW001) while it has FORCE ROW LEVEL SECURITY: the owner's policies would hide rows, and a
-- hidden row would look deleted.
--
-- Each function is a spec (access_spec(): its name, parameters, result and a template of its
-- body) made into SQL by access_function_code(), listed for a target by access_code() and
-- installed by generate_access().

-- The check every generated function makes first, as a PL/pgSQL block: the caller runs as the
-- owner of table `source` (its name as the functions were generated with: renamed since, it has
-- not been regenerated), which exists; with `reads`, it has no FORCE ROW LEVEL SECURITY. `store`:
-- the table holding its vectors, when apart from it (sql/54_stores.sql), which must have the
-- same owner and, with `reads`, no FORCE ROW LEVEL SECURITY either. They run as the table's
-- owner, who may have no right to this schema (REVOKE USAGE ON SCHEMA embeddings FROM PUBLIC,
-- REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA embeddings FROM PUBLIC), and must still serve the
-- worker: only pg_catalog is named. `indent`: render()'s.
CREATE FUNCTION embeddings_internal.check_serving_sql(source text, reads boolean DEFAULT true, store text DEFAULT NULL,
                                             indent integer DEFAULT 0) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.render($template$
        DECLARE
            serving_owner pg_catalog.name;
            serving_forced boolean;
        BEGIN
            SELECT pg_catalog.pg_get_userbyid(c.relowner), c.relrowsecurity AND c.relforcerowsecurity
            INTO serving_owner, serving_forced
            FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(%(source)L);%(store_check)s
            IF serving_owner IS NULL THEN
                RAISE EXCEPTION 'embeddings: the functions of table % find no table of that name (renamed?)', %(source)L
                    USING ERRCODE = 'EW001', HINT = %(hint)L;
            ELSIF serving_owner OPERATOR(pg_catalog.<>) CURRENT_USER THEN
                RAISE EXCEPTION 'embeddings: the functions of % run as %, not as its owner %', %(source)L, CURRENT_USER, serving_owner
                    USING ERRCODE = 'EW001', HINT = %(hint)L;
            END IF;%(reads_check)s
        END;
        $template$, args || jsonb_build_object(
            -- its store: the table owner's too, and under its policies too
            'store_check', CASE WHEN store IS NOT NULL THEN E'\n' || embeddings_internal.render($template$
                IF serving_owner IS NOT NULL THEN
                    SELECT CASE WHEN pg_catalog.pg_get_userbyid(c.relowner) OPERATOR(pg_catalog.=) serving_owner THEN serving_owner END,
                           serving_forced OR (c.relrowsecurity AND c.relforcerowsecurity)
                    INTO serving_owner, serving_forced
                    FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(%(store)L);
                    IF serving_owner IS NULL THEN
                        RAISE EXCEPTION 'embeddings: the table % holding the vectors of % is missing or not owned by the table''s owner', %(store)L, %(source)L
                            USING ERRCODE = 'EW001', HINT = %(store_hint)L;
                    END IF;
                END IF;
                $template$, args, indent => indent + 4) END,
            'reads_check', CASE WHEN reads THEN E'\n' || embeddings_internal.render($template$
                IF serving_forced THEN
                    RAISE EXCEPTION 'embeddings: % has FORCE ROW LEVEL SECURITY: the worker reads and writes it as its owner, whom its policies would hide rows from', %(source)L
                        USING ERRCODE = 'EW001', HINT = %(forced_hint)L;
                END IF;
                $template$, args, indent => indent + 4) END), indent)
    FROM (SELECT jsonb_build_object(
                     'source', source, 'store', store,
                     'hint', 'They are regenerated by any ALTER TABLE of it (with the event trigger) and by embeddings.watch(); see docs/security.md.',
                     'forced_hint', 'ALTER TABLE ' || source || ' NO FORCE ROW LEVEL SECURITY',
                     'store_hint', 'ALTER TABLE ' || store || ' OWNER TO the owner of ' || source
                                   || ' (or any ALTER TABLE of ' || source || ', with the event trigger)')) a(args)
$$;

-- Why the functions of each target (of `only_ids`, or every target when NULL) cannot serve it
-- now (a target problem for status, doctor and the worker), or NULL: missing, not owned by the
-- table's owner, altered since they were generated, or the table's FORCE ROW LEVEL SECURITY (or
-- its store's, apart from it). One statement for every target: called once a target, a function
-- starts its statement's executor each time (0.15 ms a target: stopped_targets(), which every
-- worker runs every 5 s, spent 0.16 s of its 0.24 s on it beside 1,000 watched tables).
-- PL/pgSQL, whose plan the session keeps: an SQL function plans its statement at every call.
CREATE FUNCTION embeddings_internal.access_problems(only_ids integer[] DEFAULT NULL)
RETURNS TABLE (target_id integer, problem text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT t.id, CASE
        WHEN c.oid IS NULL OR t.problem IS NOT NULL THEN NULL
        WHEN c.relrowsecurity AND c.relforcerowsecurity THEN
            t.source || ' has FORCE ROW LEVEL SECURITY: the worker reads and writes it as its owner, whom its policies would hide rows from; ALTER TABLE '
                || t.source || ' NO FORCE ROW LEVEL SECURITY'
        -- A store apart from the table (sql/54_stores.sql): its owner's, readable by its owner.
        WHEN t.store_table <> t.source AND NOT EXISTS (SELECT FROM pg_class s WHERE s.oid = t.store_table AND s.relowner = c.relowner) THEN
            'the table ' || t.store_table || ' holding its vectors is missing or not owned by the owner of ' || t.source
                || ': ALTER TABLE ' || t.store_table || ' OWNER TO ' || quote_ident(pg_get_userbyid(c.relowner))
        WHEN t.store_table <> t.source
             AND (SELECT s.relrowsecurity AND s.relforcerowsecurity FROM pg_class s WHERE s.oid = t.store_table) THEN
            t.store_table || ' has FORCE ROW LEVEL SECURITY: the worker reads and writes it as its owner, whom its policies would hide rows from; ALTER TABLE '
                || t.store_table || ' NO FORCE ROW LEVEL SECURITY'
        WHEN NOT EXISTS (SELECT FROM pg_proc p WHERE p.pronamespace = 'embeddings'::regnamespace
                         AND p.proname = 'embeddings_' || t.id || '_load') THEN
            'its functions are missing: watch the table again'
        WHEN EXISTS (SELECT FROM pg_proc p
                     WHERE p.pronamespace = 'embeddings'::regnamespace
                       -- The target's names as a range the name index finds (a pattern alone read
                       -- every function of the database for each target: 10 ms a target), then
                       -- the rest of the name matched by a pattern that is the same for every
                       -- target (compiled once: the regex cache holds 32).
                       AND p.proname >= ('embeddings_' || t.id || '_')::name
                       AND p.proname < ('embeddings_' || t.id || '`')::name  -- '`' follows '_'
                       AND starts_with(p.proname, 'embeddings_' || t.id || '_')
                       AND substr(p.proname, length('embeddings_' || t.id || '_') + 1) ~ '^[a-z_]+$'
                       AND p.proname !~ '_(search|nearest|text_ranking|bm25_ranking|visible)$'  -- the caller's (sql/58_search.sql, 54_stores.sql)
                       -- a guard (access_function_code()): the caller's, around the owner's body
                       AND NOT EXISTS (SELECT FROM pg_proc b WHERE b.pronamespace = p.pronamespace
                                                               AND b.proname = p.proname || '_body')
                       AND p.prorettype <> 'trigger'::regtype
                       AND (p.proowner <> c.relowner OR NOT p.prosecdef)) THEN
            'its functions do not run as the owner of ' || t.source || ' (' || pg_get_userbyid(c.relowner)
                || ') as generated: an ALTER TABLE of it, or watch() again, regenerates them'
    END
    FROM embeddings.targets t
    LEFT JOIN pg_class c ON c.oid = t.source
    -- (found by the key's index in a plan made for any `only_ids`, which the session may keep)
    WHERE t.id = ANY (coalesce(only_ids, ARRAY(SELECT a.id FROM embeddings.targets a)));
END
$$;

-- The same for one registered target (t as embeddings.targets holds it).
CREATE FUNCTION embeddings_internal.access_problem(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.problem FROM embeddings_internal.access_problems(ARRAY[t.id]) a
$$;

-- The search path role `role_oid` gets in this database, as SET would take it: the setting of
-- ALTER ROLE ... IN DATABASE, ALTER ROLE or ALTER DATABASE, else the server's. The functions
-- below run with it (and pg_temp last): the owner's own triggers fire inside them when they write
-- the table, and its content function runs there, both written for the owner's sessions. Their
-- own SQL is schema-qualified throughout (operators too), so the path changes nothing of ours.
CREATE FUNCTION embeddings_internal.owner_search_path(role_oid oid) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found text;
BEGIN
    SELECT substr(c.setting, length('search_path=') + 1) INTO found
    FROM pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) AS c(setting)
    WHERE c.setting LIKE E'search\\_path=%'
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
CREATE FUNCTION embeddings_internal.give_owner_path(fn regprocedure, role_oid oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    statement text := format('ALTER FUNCTION %s SET search_path FROM CURRENT', fn);
BEGIN
    BEGIN
        PERFORM set_config('search_path', embeddings_internal.owner_search_path(role_oid) || ', pg_temp', true);
    EXCEPTION WHEN OTHERS THEN
        PERFORM set_config('search_path', '"$user", public, pg_temp', true);
    END;
    EXECUTE statement;
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
END
$$;

-- "The rows `v` (unnested keys: v.k0, v.k1, ... as text) and `table_alias` have the same key":
-- each key value cast to its column's type (`types`, as format_type() writes them), compared

-- "The rows `v` (unnested keys: v.k0, v.k1, ... as text) and `table_alias` have the same key":
-- each key value cast to its column's type (key_sql_types()), compared with the operator of the
-- type's default btree operator class.
CREATE FUNCTION embeddings_internal.access_match_sql(t embeddings.targets, table_alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.render_each('%(alias)I.%(column)I %(equals)s (v.k%(n)s)::%(type)s',
                                  jsonb_agg(jsonb_build_object('column', k.c, 'equals', embeddings_internal.key_operator(k.ty, 3),
                                                               'n', k.i - 1, 'type', (embeddings_internal.key_sql_types(t))[k.i])
                                            ORDER BY k.i),
                                  ' AND ', jsonb_build_object('alias', table_alias))
    FROM unnest(t.key_columns, t.key_types) WITH ORDINALITY AS k(c, ty, i)
$$;

-- Content is blank (NULL, empty, or white space only: the worker stores no vector for it) where
-- it does not match this pattern: a character that is not white space as Python's
-- str.isspace() says, which the worker's str.strip() takes away (tests/unit/test_blank_pattern.py
-- compares the two). Spelled out rather than [[:space:]], whose characters follow the database's
-- LC_CTYPE (C.UTF-8 leaves out U+00A0 and U+0085, 'C' U+3000 too), so that the worker, status,
-- sweep(), the verifying sweep and a model change's counts agree in every database, LATIN1 too
-- (the regex reads the \u escapes; no string literal holds a character its encoding lacks). The
-- one place it is written: the generated code renders it (access_parts()'s `nonblank`), as do
-- status and a model change's counts.
CREATE FUNCTION embeddings_internal.nonblank_pattern() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT E'[^\\t\\n\\v\\f\\r \\u001c-\\u001f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]'
$$;

-- What every access template may name about target t (access_function_code() adds the
-- function's own: access_key_args()):
--   prefix       embeddings_<id>
--   source       the table; store: the table its vectors are written to (sql/54_stores.sql)
--   id           the target's id
--   key_aliases  ', k0, k1': the key columns' texts, as unnested (ROWS FROM ... AS v(key, k0, k1))
--   key_match    "the row `t` has the key of v" (access_match_sql())
--   key_order    't.a, t.b': row t's key columns, for ORDER BY
--   key_json     row t's key as jobs carry it (JSON)
--   key_columns  'a, b': the key columns, as a column list of the table (and of its store)
--   content      the content of row t, as the owner evaluates it
--   nonblank     nonblank_pattern(), as a literal: content that does not match it is blank
--   vector_schema  pgvector's schema
CREATE FUNCTION embeddings_internal.access_parts(t embeddings.targets) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    numbers jsonb := (SELECT jsonb_agg(jsonb_build_object('n', i - 1) ORDER BY i)
                      FROM generate_series(1, cardinality(t.key_columns)) i);
    columns jsonb := (SELECT jsonb_agg(jsonb_build_object('column', u.c) ORDER BY u.i)
                      FROM unnest(t.key_columns) WITH ORDINALITY AS u(c, i));
BEGIN
    RETURN jsonb_build_object(
        'prefix', 'embeddings_' || t.id,
        'id', t.id,
        'source', t.source::text,
        'store', t.store_table::text,
        'key_aliases', embeddings_internal.render_each(', k%(n)s', numbers, ''),
        'key_match', embeddings_internal.access_match_sql(t, 't'),
        'key_order', embeddings_internal.render_each('t.%(column)I', columns, ', '),
        'key_columns', embeddings_internal.render_each('%(column)I', columns, ', '),
        'key_json', embeddings_internal.key_json_sql(t, 't'),
        'content', embeddings_internal.content_sql(t, 't', NULL, wrapped => false),
        'nonblank', embeddings_internal.nonblank_pattern(),
        'vector_schema', embeddings.vector_schema());
END
$$;

-- The name of target t's function `suffix` that holds the owner's code: embeddings_<id><suffix>,
-- with `_body` for a guarded one (access_function_code()). Its parameters are qualified by it.
CREATE FUNCTION embeddings_internal.access_body_name(t embeddings.targets, suffix text, guarded boolean DEFAULT true) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'embeddings_' || t.id || suffix || CASE WHEN guarded THEN '_body' ELSE '' END
$$;

-- The parameters of key arrays, after `keys`: {k0 text[], k1 text[], ...}, one per key column.
CREATE FUNCTION embeddings_internal.key_params(t embeddings.targets) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT array_agg('k' || (i - 1) || ' text[]' ORDER BY i) FROM generate_series(1, cardinality(t.key_columns)) i
$$;

-- What access templates may name about function `fn` (its name) of target t:
--   fn        the function, which qualifies its parameters
--   key_rows  'pg_catalog.unnest(fn.keys), pg_catalog.unnest(fn.k0), ...': the canonical keys
--             and the key arrays, for ROWS FROM
CREATE FUNCTION embeddings_internal.access_key_args(t embeddings.targets, fn text) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'fn', fn,
        'key_rows', embeddings_internal.render_each('pg_catalog.unnest(%(fn)I.%(param)I)',
                                           (SELECT jsonb_agg(jsonb_build_object('param', p.name) ORDER BY p.i)
                                            FROM unnest(ARRAY['keys'] || ARRAY(SELECT 'k' || (i - 1)
                                                                               FROM generate_series(1, cardinality(t.key_columns)) i
                                                                               ORDER BY i)) WITH ORDINALITY AS p(name, i)),
                                           ', ', jsonb_build_object('fn', fn)))
$$;

-- "Row t's key comes after the key in parameter `after` of function `fn`" (a key as jobs carry
-- it, JSON), for the functions that go through a table a slice of keys at a time.
CREATE FUNCTION embeddings_internal.key_after_param_sql(t embeddings.targets, fn text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.key_after_sql(t, 't', ARRAY(
        SELECT embeddings_internal.render(CASE WHEN cardinality(t.key_columns) = 1 THEN '(%(fn)I.after OPERATOR(pg_catalog.#>>) ''{}'')::%(type)s'
                                      ELSE '(%(fn)I.after OPERATOR(pg_catalog.->>) %(n)s)::%(type)s' END,
                                 jsonb_build_object('fn', fn, 'n', i - 1, 'type', (embeddings_internal.key_sql_types(t))[i]))
        FROM generate_series(1, cardinality(t.key_columns)) i ORDER BY i))
$$;

-- The vector columns target t's writes go to in its store table (the table itself, or its side
-- table), a _store and a _blank function each: its embedding column, with its type (halfvec or
-- vector), suffix ''; during a model change also the shadow column (halfvec), suffix
-- '_shadow'. (PL/pgSQL: the model changes' table comes later, sql/44_changes.sql.)
CREATE FUNCTION embeddings_internal.vector_columns(t embeddings.targets)
RETURNS TABLE (suffix text, name name, type text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
        SELECT ''::text, t.embedding_column, at.atttypid::regtype::text
        FROM pg_attribute at
        WHERE at.attrelid = t.store_table AND at.attname = t.embedding_column AND NOT at.attisdropped
        UNION ALL
        SELECT '_shadow'::text, mc.shadow_column, to_regtype(quote_ident(embeddings.vector_schema()) || '.halfvec')::text
        FROM embeddings.model_changes mc
        WHERE mc.target_id = t.id AND embeddings_internal.attnum_of(t.store_table, mc.shadow_column) IS NOT NULL;
END
$$;
-- The SET clauses of every function that evaluates a target's content (these below, and
-- embeddings_<id>_verify(), sql/64_verify.sql): the formats of dates, timestamps and intervals
-- pinned, whoever calls. The worker's sessions need them to read what they fetch (worker/db.py:
-- session_formats), and a content function that formats a date must give the verifying sweep,
-- run from pg_cron or psql under the database's DateStyle, the text the worker embedded: else
-- every such row would look stale at every pass, and be embedded again. `ISO` alone keeps the
-- caller's day/month order (it only parses input); TimeZone stays the caller's (a content
-- function that shows local times means the database's zone: docs/reliability.md). A content
-- function's string constants read as the SQL standard does ('\t' two characters, not a tab),
-- whatever standard_conforming_strings the database or the caller's session starts with.
CREATE FUNCTION embeddings_internal.content_settings_sql() RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ' SET DateStyle = ISO SET IntervalStyle = postgres SET standard_conforming_strings = on'
$$;

-- The settings the owner's code could leave in the caller's session (set_config(name, value,
-- false) outlives a SECURITY DEFINER function, its SET clauses included): each `guarded`
-- access function puts back whichever of them the owner's code changed (access_function_code()).
CREATE FUNCTION embeddings_internal.guarded_settings() RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY['search_path', 'statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout',
                 'default_transaction_read_only', 'default_transaction_isolation', 'default_transaction_deferrable',
                 'DateStyle', 'IntervalStyle', 'TimeZone', 'bytea_output', 'extra_float_digits',
                 'standard_conforming_strings', 'transform_null_equals', 'row_security', 'synchronous_commit',
                 'array_nulls', 'quote_all_identifiers', 'default_text_search_config', 'xmloption',
                 'lc_monetary', 'lc_numeric', 'lc_time', 'check_function_bodies', 'session_replication_role']
$$;

-- A guard's two halves (access_function_code()): the caller's values of guarded_settings()
-- before the owner's code runs, and after it, each one it changed put back. Shared by every
-- guard rather than spelled out in each: a session keeps a plan for each expression of each
-- PL/pgSQL function it ran, and 25 settings compared in each of a target's nine guards held
-- most of the 2 MB a session held for every table it had written (500 MB after 300 tables).
-- No SET clause (they read and set the caller's settings: a SET search_path would be put back
-- over the one restored), so everything in them is qualified. They do nothing a caller could
-- not do with set_config(), and whoever runs a guard runs them: anyone may.
CREATE FUNCTION embeddings_internal.guard_save() RETURNS pg_catalog.text[]
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN ARRAY(SELECT pg_catalog.current_setting(g.setting)
                 FROM pg_catalog.unnest(embeddings_internal.guarded_settings()) WITH ORDINALITY AS g(setting, i)
                 ORDER BY g.i);
END
$$;

CREATE FUNCTION embeddings_internal.guard_restore(saved pg_catalog.text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    settings pg_catalog.text[] := embeddings_internal.guarded_settings();
BEGIN
    FOR i IN 1 .. pg_catalog.cardinality(settings) LOOP
        IF pg_catalog.current_setting(settings[i]) OPERATOR(pg_catalog.<>) saved[i] THEN
            PERFORM pg_catalog.set_config(settings[i], saved[i], false);
        END IF;
    END LOOP;
END
$$;

-- One function a target's code holds, run as the table's owner: what access_function_code()
-- makes it from.
--   suffix     its name after embeddings_<id>
--   params     its parameters, each 'name type' (the key arrays: key_params())
--   returns    its result type
--   body       a template of its statements (render(): access_parts(), access_key_args() and
--              `args` name its values), after the check
--   declare    what goes before its BEGIN: a DECLARE block, #variable_conflict, a label
--   stable     STABLE (it writes nothing)
--   check      'reads': the check (check_serving_sql()) of a function that reads the table and
--              its store; 'owner': that it runs as the owner only; 'none': its body checks
--   formats    the content formats pinned (content_settings_sql()): it evaluates content
--   guarded    called by the worker and by our operations, never in the application's own
--              transactions (the triggers' _content, the TRUNCATE trigger's _prune are not):
--              SET CONSTRAINTS ALL IMMEDIATE first, and the body `<name>_body` inside a guard
--              `<name>` (access_function_code() says why)
CREATE FUNCTION embeddings_internal.access_spec(
    suffix text,
    params text[],
    returns text,
    body text,
    args jsonb DEFAULT '{}',
    declare text DEFAULT '',
    stable boolean DEFAULT false,
    "check" text DEFAULT 'reads',
    formats boolean DEFAULT true,
    guarded boolean DEFAULT true
) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('suffix', suffix, 'params', to_jsonb(coalesce(params, '{}')), 'returns', returns,
                              'body', body, 'args', args, 'declare', declare, 'stable', stable, 'check', "check",
                              'formats', formats, 'guarded', guarded)
$$;

-- A function of a target's code that is not run as its table's owner, `code` the statement
-- that makes it (a kind's compatibility form, say): access_function_code() gives it as it is,
-- and generate_access() grants it as a guard (EXECUTE to the table's owner and the worker roles).
CREATE FUNCTION embeddings_internal.access_code_spec(name text, code text) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('name', name, 'code', code)
$$;

-- The statements that make target t's function of `spec` (access_spec()), `parts` its
-- access_parts(): the function, PL/pgSQL, SECURITY DEFINER with the search path pg_catalog,
-- pg_temp (generate_access() gives it to the table's owner, with the owner's path), its check
-- first, then its body; and for a guarded one, the guard around it. So each spec says only what
-- its function does.
--
-- A guarded function's body is `<name>_body`, and `<name>` a guard around it that puts back
-- every setting of guarded_settings() the owner's code changed with set_config(..., false)
-- (guard_save() before the body, guard_restore() after): a
-- search path naming the owner's schema first would otherwise pick the owner's functions for the
-- caller's next unqualified call (sweep()'s own, a superuser's next statement), as the caller.
-- The guard has no SET clause (the settings it reads and puts back are the caller's), so it
-- names only pg_catalog and this schema, and only qualified. It runs as its caller (SECURITY
-- INVOKER: it does nothing a caller could not) and stays this schema's, so the table's owner
-- cannot ALTER it; the body is the owner's, and needs no right to this schema. The body first
-- sets every constraint IMMEDIATE: the owner's code that runs inside (its triggers, its
-- content function) may queue deferred triggers, which Postgres 15 fires at COMMIT as whoever
-- is the current user then (the worker, or the superuser running sweep()); immediate, they fire
-- at the end of the statement that queued them, as the owner. Postgres refuses SET CONSTRAINTS
-- in a STABLE function, and the owner's STABLE content function may still call a VOLATILE one
-- that writes: such a function is VOLATILE.
CREATE FUNCTION embeddings_internal.access_function_code(t embeddings.targets, spec jsonb, parts jsonb)
RETURNS TABLE (name text, statement text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    guarded boolean := (spec->>'guarded')::boolean;
    fn_name text := (parts->>'prefix') || (spec->>'suffix');
    body_name text := embeddings_internal.access_body_name(t, spec->>'suffix', guarded);
    returns text := spec->>'returns';
    setof boolean := returns ~* E'^\\s*(TABLE|SETOF)\\M';
    void boolean := returns ~* E'^\\s*void\\s*$';
    params jsonb := (SELECT coalesce(jsonb_agg(jsonb_build_object('name', split_part(p.value, ' ', 1),
                                                                  'type', substr(p.value, strpos(p.value, ' ') + 1))
                                               ORDER BY p.i), '[]')
                     FROM jsonb_array_elements_text(spec->'params') WITH ORDINALITY AS p(value, i));
    args jsonb := jsonb_build_object('name', body_name, 'returns', returns,
                                     'params', coalesce(embeddings_internal.render_each('%(name)I %(type)s', params, ', '), ''));
BEGIN
    IF spec ? 'code' THEN  -- made by its kind as it is (access_code_spec())
        RETURN QUERY VALUES (spec->>'name', spec->>'code');
        RETURN;
    END IF;
    RETURN QUERY VALUES (body_name, embeddings_internal.render($template$
        CREATE FUNCTION embeddings.%(name)I(%(params)s) RETURNS %(returns)s
        LANGUAGE plpgsql%(volatility)s SECURITY DEFINER SET search_path = pg_catalog, pg_temp%(settings)s AS $body$
        %(declare)sBEGIN
        %(immediate)s%(check)s%(body)s
        END
        $body$
        $template$, args || jsonb_build_object(
            'volatility', CASE WHEN (spec->>'stable')::boolean AND NOT guarded THEN ' STABLE' ELSE '' END,
            'settings', CASE WHEN (spec->>'formats')::boolean THEN embeddings_internal.content_settings_sql() ELSE '' END,
            'declare', spec->>'declare',
            'immediate', CASE WHEN guarded THEN E'    SET CONSTRAINTS ALL IMMEDIATE;\n' ELSE '' END,
            'check', CASE spec->>'check'
                         WHEN 'none' THEN ''
                         WHEN 'owner' THEN embeddings_internal.check_serving_sql(t.source::text, false, NULL, indent => 4) || E'\n'
                         ELSE embeddings_internal.check_serving_sql(t.source::text, true,
                                                           CASE WHEN t.store_table <> t.source THEN t.store_table::text END,
                                                           indent => 4) || E'\n' END,
            'body', embeddings_internal.render(spec->>'body', parts || embeddings_internal.access_key_args(t, body_name) || (spec->'args'),
                                      indent => 4))));
    IF NOT guarded THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT fn_name, embeddings_internal.render($template$
        CREATE FUNCTION embeddings.%(name)I(%(params)s) RETURNS %(returns)s
        LANGUAGE plpgsql SECURITY INVOKER AS $body$
        DECLARE
            guarded_saved pg_catalog.text[] := embeddings_internal.guard_save();%(result)s
        BEGIN
            %(call)s
            PERFORM embeddings_internal.guard_restore(guarded_saved);
            %(return)s
        END
        $body$
        $template$, args || jsonb_build_object(
            'name', fn_name,
            'result', CASE WHEN setof OR void THEN '' ELSE embeddings_internal.render(E'\n    guarded_result %(returns)s;', args) END,
            'call', embeddings_internal.render(CASE WHEN setof THEN 'RETURN QUERY SELECT * FROM embeddings.%(body)I(%(args)s);'
                                           WHEN void THEN 'PERFORM embeddings.%(body)I(%(args)s);'
                                           ELSE 'guarded_result := embeddings.%(body)I(%(args)s);' END,
                                      jsonb_build_object('body', body_name,
                                                         'args', coalesce(embeddings_internal.render_each('%(name)I', params, ', '), ''))),
            'return', CASE WHEN setof OR void THEN 'RETURN;' ELSE 'RETURN guarded_result;' END));
END
$$;

-- Creates target t's function of a spec given piece by piece, `a` its access_parts(), `body`
-- its statements as they are (no template), `params` its parameter list; returns its name.
-- For code made outside the target's own list (enable_fts()'s one-off fill, sql/59_hybrid.sql;
-- follow_store_key_types()'s, sql/54_stores.sql), run and dropped by its caller.
CREATE FUNCTION embeddings_internal.create_access_function(
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
    t embeddings.targets;
BEGIN
    SELECT * INTO t FROM embeddings.targets tg WHERE tg.id = (a->>'id')::integer;
    PERFORM embeddings_internal.run_code(ARRAY(
        SELECT c.statement FROM embeddings_internal.access_function_code(t, embeddings_internal.access_spec(
            suffix, string_to_array(nullif(params, ''), ', '), returns, '%(given)s', jsonb_build_object('given', body),
            declare => head, stable => stable, "check" => coalesce(check_call, 'reads'), formats => formats,
            guarded => immediate), a) c));
    RETURN (a->>'prefix') || suffix;
END
$$;

-- Target t's functions that run as its table's owner, as specs (access_spec()), in the order
-- they are made: the content wrapper, the lock, the load and the scan (below), its store
-- kind's (sql/54_stores.sql), the verifying sweep's (sql/64_verify.sql).
CREATE FUNCTION embeddings_internal.access_specs(t embeddings.targets) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner_name name := (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = t.source);
BEGIN
    IF t.content_function IS NOT NULL THEN
        -- Called for each row by the trigger functions: the owner's name is compared first (a
        -- name: cheap), the catalog only where it differs (after REASSIGN OWNED, say). Without
        -- the content formats: the triggers only compare a row's old and new content in one
        -- session, which any format tells apart, and two more settings per call would cost
        -- the application's statements; the texts that are embedded and fingerprinted come
        -- from _load and _verify, which pin them.
        RETURN NEXT embeddings_internal.access_spec('_content', ARRAY['r ' || t.source::text], 'text', $template$
            IF current_user OPERATOR(pg_catalog.<>) %(owner)L::pg_catalog.name THEN
                %(check)s
            END IF;
            RETURN %(row_content)s;
            $template$,
            jsonb_build_object('owner', owner_name, 'check', embeddings_internal.check_serving_sql(t.source::text, false),
                               'row_content', embeddings_internal.content_sql(t, 'r', NULL, wrapped => false)),
            stable => true, "check" => 'none', formats => false, guarded => false);
    END IF;

    -- The write transaction's first lock (embeddings_internal.lock_target): the table, before the
    -- registration, as ALTER TABLE takes them.
    RETURN NEXT embeddings_internal.access_spec('_lock', '{}', 'void', $template$
        EXECUTE %(lock)L;
        $template$,
        jsonb_build_object('lock', 'LOCK TABLE ' || t.source::text || ' IN ' || embeddings_internal.store_lock_mode(t) || ' MODE'),
        "check" => 'owner');

    RETURN NEXT embeddings_internal.access_spec('_load', ARRAY['keys text[]'] || embeddings_internal.key_params(t),
        'TABLE (key text, content text, digest text)', $template$
        RETURN QUERY
            SELECT v.key, c.content, pg_catalog.md5(c.content)
            FROM ROWS FROM (%(key_rows)s) AS v(key%(key_aliases)s)
            JOIN %(source)s t ON %(key_match)s
            CROSS JOIN LATERAL (SELECT %(content)s AS content OFFSET 0) c;
        $template$, stable => true);

    -- Keys in key order after `after` (NULL: from the first), at most `max_rows` (NULL: all),
    -- each with whether it needs a job: no vector (no chunk), or with `every_row` any row; with
    -- `with_content`, only rows with content (a row holding a vector too, with `every_row`: its
    -- vector is cleared); `sweep`: no vector and content that is not blank. A content function
    -- that raises for some row: the rows one at a time, a row it raises for counted as needing
    -- a job (the worker dead-letters it with its error).
    RETURN NEXT embeddings_internal.access_spec('_scan',
        ARRAY['after jsonb', 'max_rows integer', 'every_row boolean', 'with_content boolean', 'sweep boolean DEFAULT false'],
        'TABLE (key jsonb, missing boolean)', $template$
        BEGIN
            -- (aggregated in the order of the sorted slice)
            SELECT pg_catalog.array_agg(s.k), pg_catalog.array_agg(s.m) INTO keys, flags
            FROM (SELECT %(key_json)s AS k, %(needs_job)s AS m FROM %(source)s t
                  WHERE %(fn)I.after IS NULL OR %(key_after)s ORDER BY %(key_order)s LIMIT %(fn)I.max_rows) s;
            RETURN QUERY SELECT u.k, u.m FROM ROWS FROM (pg_catalog.unnest(keys), pg_catalog.unnest(flags)) AS u(k, m);
            RETURN;
        EXCEPTION WHEN OTHERS THEN
            IF NOT %(fn)I.with_content THEN
                RAISE;
            END IF;
        END;
        FOR r IN SELECT t.tableoid AS rel, t.ctid AS place, %(key_json)s AS k
                 FROM %(source)s t WHERE %(fn)I.after IS NULL OR %(key_after)s ORDER BY %(key_order)s LIMIT %(fn)I.max_rows LOOP
            key := r.k;
            BEGIN
                SELECT %(needs_job)s INTO missing FROM %(source)s t
                WHERE t.tableoid OPERATOR(pg_catalog.=) r.rel AND t.ctid OPERATOR(pg_catalog.=) r.place;
            EXCEPTION WHEN OTHERS THEN
                missing := true;
            END;
            RETURN NEXT;
        END LOOP;
        $template$,
        jsonb_build_object(
            'key_after', embeddings_internal.key_after_param_sql(t, embeddings_internal.access_body_name(t, '_scan')),
            'needs_job', embeddings_internal.render(
                'CASE WHEN NOT %(fn)I.with_content THEN %(fn)I.every_row OR %(missing)s '
                'WHEN %(fn)I.sweep THEN %(missing)s AND (%(content)s) OPERATOR(pg_catalog.~) %(nonblank)L '
                'WHEN %(fn)I.every_row THEN (%(content)s) OPERATOR(pg_catalog.<>) ''''%(or_holds_vector)s '
                'ELSE %(missing)s AND (%(content)s) OPERATOR(pg_catalog.<>) '''' END',
                jsonb_build_object('fn', embeddings_internal.access_body_name(t, '_scan'),
                                   'missing', embeddings_internal.embedding_missing_sql(t, 't'),
                                   'content', embeddings_internal.content_sql(t, 't', NULL, wrapped => false),
                                   'nonblank', embeddings_internal.nonblank_pattern(),
                                   'or_holds_vector', ' OR ' || embeddings_internal.store_holds_vector_sql(t, 't')))),
        declare => E'DECLARE\n    keys jsonb[];\n    flags boolean[];\n    r record;\n', stable => true);

    RETURN QUERY SELECT * FROM embeddings_internal.store_access(t);   -- the store kind's (sql/54_stores.sql)
    RETURN QUERY SELECT * FROM embeddings_internal.verify_access(t);  -- the verifying sweep's (sql/64_verify.sql)
END
$$;

-- The statements that make target t's functions run as its table's owner (access_specs()), in
-- order: what generate_access() runs.
CREATE FUNCTION embeddings_internal.access_code(t embeddings.targets) RETURNS TABLE (name text, statement text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parts jsonb := embeddings_internal.access_parts(t);  -- (once: it reads the catalog)
    spec jsonb;
BEGIN
    FOR spec IN SELECT * FROM embeddings_internal.access_specs(t) LOOP
        RETURN QUERY SELECT * FROM embeddings_internal.access_function_code(t, spec, parts);
    END LOOP;
END
$$;

-- Creates (replacing any there are) the functions of access_code() for target t, as its table
-- is now. SECURITY DEFINER: whoever causes the regeneration, they are created by this schema's
-- owner, then given to the table's owner and granted.
CREATE FUNCTION embeddings_internal.generate_access(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    following text := coalesce(current_setting('embeddings.following', true), 'off');
    code record;
BEGIN
    PERFORM set_config('embeddings.following', 'on', true);  -- our DDL: nothing to follow
    PERFORM embeddings_internal.drop_access(t);
    -- A store apart from the table is its table owner's too (a new owner takes it along).
    PERFORM embeddings_internal.give_store_to_owner(t);
    FOR code IN SELECT * FROM embeddings_internal.access_code(t) LOOP
        EXECUTE code.statement;
        PERFORM embeddings_internal.grant_access_function(t, code.name);
    END LOOP;
    -- Search's statements (sql/58_search.sql): the caller's, not the owner's; ours, for PUBLIC.
    PERFORM embeddings_internal.generate_search(t);
    PERFORM set_config('embeddings.following', following, true);
END
$$;

-- Gives target t's access function `name` (just made) to whom it belongs: the table owner's,
-- run by this schema's owner (the trigger functions) and the worker roles, with the owner's
-- search path (written with ours: owner_search_path() says why); a guard stays ours, run as its
-- caller, and keeps no SET clause (it puts back its caller's).
CREATE FUNCTION embeddings_internal.grant_access_function(t embeddings.targets, name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner_name name := (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = t.source);
    fn regprocedure;
    guard boolean;
    role_name name;
    args jsonb;
BEGIN
    FOR fn, guard IN
        SELECT p.oid::regprocedure,
               EXISTS (SELECT FROM pg_proc b WHERE b.pronamespace = p.pronamespace AND b.proname = p.proname || '_body')
        FROM pg_proc p
        WHERE p.pronamespace = 'embeddings'::regnamespace AND p.proname = grant_access_function.name
    LOOP
        args := jsonb_build_object('fn', fn::text, 'owner', owner_name, 'us', current_user);
        IF NOT guard THEN
            PERFORM embeddings_internal.give_owner_path(fn, (SELECT c.relowner FROM pg_class c WHERE c.oid = t.source));
        END IF;
        -- Those that turn keys into JSON (for backfills, model changes, search) do it alike in
        -- every session: a float key with extra_float_digits < 1 would lose digits and match no
        -- row (embeddings_internal.key_settings_sql()).
        IF NOT guard AND fn::text ~ E'_(scan|unshadowed|nearest)(_body)?\\(' AND embeddings_internal.key_settings_sql(t) <> '' THEN
            EXECUTE embeddings_internal.render('ALTER FUNCTION %(fn)s %(settings)s',
                                      args || jsonb_build_object('settings', btrim(embeddings_internal.key_settings_sql(t))));
        END IF;
        EXECUTE embeddings_internal.render('REVOKE ALL ON FUNCTION %(fn)s FROM PUBLIC', args);
        IF owner_name <> current_user AND NOT guard THEN
            BEGIN
                EXECUTE embeddings_internal.render('ALTER FUNCTION %(fn)s OWNER TO %(owner)I', args);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'embeddings: cannot give the functions of % to its owner %: %', t.source, owner_name, SQLERRM
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'They must run as the table''s owner: watch it as a superuser, or as a member of that role.';
            END;
            EXECUTE embeddings_internal.render('GRANT EXECUTE ON FUNCTION %(fn)s TO %(us)I', args);
        ELSIF guard AND owner_name <> current_user THEN
            -- ours, run as the caller: the owner may call it as it may call its body
            EXECUTE embeddings_internal.render('GRANT EXECUTE ON FUNCTION %(fn)s TO %(owner)I', args);
        END IF;
        FOR role_name IN SELECT r.role_name FROM embeddings_internal.worker_role_names() AS r(role_name) LOOP
            EXECUTE embeddings_internal.render('GRANT EXECUTE ON FUNCTION %(fn)s TO %(role)I', args || jsonb_build_object('role', role_name));
        END LOOP;
    END LOOP;
END
$$;

-- Drops target t's functions above and its store's policy (the trigger functions are
-- drop_triggers()').
CREATE FUNCTION embeddings_internal.drop_access(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fn regprocedure;
BEGIN
    PERFORM embeddings_internal.drop_store_policy(t);  -- it calls _visible (sql/54_stores.sql)
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'embeddings'::regnamespace
          AND p.proname ~ ('^embeddings_' || t.id || '_(content|lock|lock_rows|load|scan|store|blank|store_shadow|blank_shadow'
                           '|unshadowed|swap_prepare|nearest|reusable|chunks|forget|prune|verify|clear_failing|existing|search|text_ranking|bm25_ranking'
                           '|visible)(_body)?$')  -- (a guard's body: access_function_code())
    LOOP
        EXECUTE embeddings_internal.render('DROP FUNCTION %(fn)s', jsonb_build_object('fn', fn::text));
    END LOOP;
END
$$;

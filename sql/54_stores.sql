-- Store kinds: where a target keeps its vectors, as strategies (worker/pipeline/stores/ is the
-- worker's side of the same split). embeddings.targets.store_kind names the kind, and
-- embeddings.targets.store_table the table its vectors are written to:
--
--   row      the embedding column of the watched table itself (sql/55_row.sql); store_table is
--            the table
--   chunks   a chunk table, a row per chunk of a document (sql/55_chunks.sql)
--   side     a side table keyed like the watched table (sql/56_side.sql)
--
-- A kind is one file of functions named embeddings_internal.<kind>_store_<operation>, one for
-- each operation below, and one line in store_kinds(); a kind whose vectors are in a table apart
-- from the watched one (store_kinds()' `apart`) leaves out the operations it answers as every
-- such store does, and is served the shared apart_store_<operation> (at the end of this file).
-- The shared code calls the dispatchers below
-- (embeddings.store_<operation>(t, ...)), never asking which kind a target is; what a kind is
-- (several vectors per row or one) store_kinds() says, and where its vectors are, store_table
-- (a store apart from the table: store_apart()). The operations:
--
--   missing_sql(t, alias) text        a predicate true when the row `alias` lacks its vectors
--                                     (backfills, sweep(), scans, the verifying sweep)
--   holds_vector_sql(t, alias) text   a predicate true when the row `alias` has a vector that a
--                                     blank content must clear, or NULL: never (scans)
--   new_row_sql(t, alias) text        a predicate true when a new row (`alias`) needs a job
--                                     (the insert triggers, sql/30_triggers.sql)
--   changed_vector_sql(t) text        a predicate on an updated row (n, o: its new and old
--                                     version) true when its vector changed so that it needs
--                                     a job though its content did not, or NULL (the update
--                                     trigger, sql/30_triggers.sql)
--   lock_mode(t) text                 the table lock of the worker's write (embeddings_internal.lock_target)
--   access(t) SETOF jsonb             the kind's owner-run functions, as access_spec()s (their
--                                     templates): the vector writes and their model-change
--                                     twins (sql/32_access.sql makes the rest)
--   clear_sql(t) text                 the statement that clears the vectors of the row at
--                                     (r.rel, r.place) (the verifying sweep, sql/64_verify.sql)
--   search_sql(t) jsonb               the parts of a search statement (sql/58_search.sql)
--   exact_counts(t)                   status's exact counts (sql/50_status.sql)
--   estimated_vectors(t)              status's estimates of the rows with vectors, and chunks
--                                     (sql/50_status.sql)
--
-- The dispatchers run where code is made or an operator reads (watch(), generate_access(),
-- status), never on the write path: the triggers and the worker's functions they make are
-- plain SQL per target. tests/integration/test_store_kinds.py checks that every kind has every
-- operation.

-- The store kinds, one line each (its file beside it): `chunked` when it keeps several vectors
-- per row of the table, one per chunk (search returns each row once, with its best chunk);
-- `apart` when they are in a table apart from the watched one (store_table; store_apart()).
CREATE FUNCTION embeddings_internal.store_kinds() RETURNS TABLE (kind text, chunked boolean, apart boolean)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    VALUES ('row', false, false),    -- sql/55_row.sql
           ('chunks', true, true),   -- sql/55_chunks.sql
           ('side', false, true)     -- sql/56_side.sql
$$;

-- The function of target t's kind for `operation`: its own, else for a kind apart the one the
-- stores apart share; an error naming both when there is none. Dispatchers run it with their
-- caller's rights.
CREATE FUNCTION embeddings_internal.store_function(t embeddings.targets, operation text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fn text := embeddings_internal.render('embeddings_internal.%(name)I', jsonb_build_object('name', t.store_kind || '_store_' || operation));
    shared text := embeddings_internal.render('embeddings_internal.%(name)I', jsonb_build_object('name', 'apart_store_' || operation));
    apart boolean := (SELECT k.apart FROM embeddings_internal.store_kinds() k WHERE k.kind = t.store_kind);
BEGIN
    IF apart IS NOT NULL AND operation ~ '^[a-z_]+$' THEN
        IF to_regproc(fn) IS NOT NULL THEN
            RETURN fn;
        ELSIF apart AND to_regproc(shared) IS NOT NULL THEN
            RETURN shared;
        END IF;
    END IF;
    RAISE EXCEPTION 'embeddings: the % store has no % operation (no function %)', t.store_kind, operation, fn
        USING ERRCODE = 'undefined_function';
END
$$;

-- Whether target t's store holds several vectors per row (a chunked target's): search returns
-- one result per row, its best chunk. Plain SQL (inlined into search()).
CREATE FUNCTION embeddings_internal.store_has_chunks(t embeddings.targets) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT k.chunked FROM embeddings_internal.store_kinds() k WHERE k.kind = t.store_kind), false)
$$;

-- Whether target t's vectors are in a table apart from its table (a side or chunk table):
-- such a store has no foreign key to the table (one makes TRUNCATE fail), so deletes, key
-- changes and truncations are followed (the triggers, sql/30_triggers.sql, and the functions
-- below), it belongs to the table's owner and shows a reader only the rows of the table it may
-- see (its policy, below).
CREATE FUNCTION embeddings_internal.store_apart(t embeddings.targets) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.store_table IS DISTINCT FROM t.source
$$;

-- The dispatchers (the list above says what each returns). The predicates share one call: the
-- kind's `operation` of (t, alias).
CREATE FUNCTION embeddings_internal.store_predicate_sql(t embeddings.targets, operation text, alias text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found text;
BEGIN
    EXECUTE 'SELECT ' || embeddings_internal.store_function(t, operation) || '($1, $2)' INTO found USING t, alias;
    RETURN found;
END
$$;

CREATE FUNCTION embeddings_internal.embedding_missing_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.store_predicate_sql(t, 'missing_sql', alias)
$$;

CREATE FUNCTION embeddings_internal.store_holds_vector_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.store_predicate_sql(t, 'holds_vector_sql', alias)
$$;

CREATE FUNCTION embeddings_internal.store_new_row_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.store_predicate_sql(t, 'new_row_sql', alias)
$$;

-- The operations of t alone, each returning text.
CREATE FUNCTION embeddings_internal.store_text(t embeddings.targets, operation text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found text;
BEGIN
    EXECUTE 'SELECT ' || embeddings_internal.store_function(t, operation) || '($1)' INTO found USING t;
    RETURN found;
END
$$;

CREATE FUNCTION embeddings_internal.store_changed_vector_sql(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.store_text(t, 'changed_vector_sql')
$$;

CREATE FUNCTION embeddings_internal.store_lock_mode(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.store_text(t, 'lock_mode')
$$;

CREATE FUNCTION embeddings_internal.store_clear_sql(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.store_text(t, 'clear_sql')
$$;

CREATE FUNCTION embeddings_internal.store_access(t embeddings.targets) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE 'SELECT * FROM ' || embeddings_internal.store_function(t, 'access') || '($1)' USING t;
END
$$;

CREATE FUNCTION embeddings_internal.search_sql(t embeddings.targets) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parts jsonb;
BEGIN
    EXECUTE 'SELECT ' || embeddings_internal.store_function(t, 'search_sql') || '($1)' INTO parts USING t;
    RETURN parts;
END
$$;

CREATE FUNCTION embeddings_internal.exact_counts(t embeddings.targets,
    OUT total_rows bigint, OUT embedded_rows bigint, OUT cleared_rows bigint, OUT chunks bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE 'SELECT * FROM ' || embeddings_internal.store_function(t, 'exact_counts') || '($1)'
        INTO total_rows, embedded_rows, cleared_rows, chunks USING t;
END
$$;

CREATE FUNCTION embeddings_internal.store_estimated_vectors(t embeddings.targets,
    OUT embedded double precision, OUT chunks double precision)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE 'SELECT * FROM ' || embeddings_internal.store_function(t, 'estimated_vectors') || '($1)' INTO embedded, chunks USING t;
END
$$;

-- Shared by the kinds ------------------------------------------------------------------------

-- The share of rows of `rel` (a table or partition) whose column `col` is not NULL, as ANALYZE
-- sampled it (pg_stats); NULL before its first ANALYZE. PL/pgSQL, so that the session keeps the
-- plan (planning a query over the pg_stats view costs milliseconds); pg_stats found by the
-- relation's schema and name, read first (as a join to pg_class by oid, the kept generic plan
-- read all of pg_class: 1.2 ms a call beside 1,000 tables).
CREATE FUNCTION embeddings_internal.not_null_share(rel regclass, col name) RETURNS double precision
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT 1 - s.null_frac FROM pg_stats s
            WHERE (s.schemaname, s.tablename) = (SELECT ns.nspname, c.relname FROM pg_class c
                                                 JOIN pg_namespace ns ON ns.oid = c.relnamespace WHERE c.oid = rel)
              AND s.attname = col AND NOT s.inherited);
END
$$;

-- Status's exact counts for a store with one vector per row: the rows of the table `s` in
-- `from_sql` (joined to its store, alias `x`, for a store apart from it), those whose `vector`
-- is not NULL, those with blank content (cleared_count_sql(), sql/50_status.sql); NULL when
-- the store or its column is gone (dropped under us: the other targets still show).
CREATE FUNCTION embeddings_internal.one_vector_exact_counts(t embeddings.targets, from_sql text, vector text,
    OUT total_rows bigint, OUT embedded_rows bigint, OUT cleared_rows bigint, OUT chunks bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE embeddings_internal.render('SELECT count(*), count(%(vector)s), %(cleared)s FROM %(from)s', jsonb_build_object(
                'vector', vector, 'cleared', embeddings_internal.cleared_count_sql(t), 'from', from_sql))
        INTO total_rows, embedded_rows, cleared_rows;
EXCEPTION WHEN OTHERS THEN
    total_rows := NULL;
    embedded_rows := NULL;
    cleared_rows := NULL;
END
$$;

-- The estimated rows of relation `rel` (its leaves: a partitioned table's partitions) whose
-- column `col` is not NULL: each leaf's rows (estimated_rows(), sql/50_status.sql) times the
-- share ANALYZE found not NULL; NULL where a leaf with rows has no statistics yet.
CREATE FUNCTION embeddings_internal.estimated_not_null(rel regclass, col name) RETURNS double precision
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    leaf regclass;
    n double precision;
    found double precision := 0;
BEGIN
    FOR leaf IN SELECT embeddings_internal.leaf_relations(rel) LOOP
        n := embeddings_internal.estimated_rows(leaf);
        CONTINUE WHEN n < 1;
        found := found + n * embeddings_internal.not_null_share(leaf, col);
    END LOOP;
    RETURN found;
END
$$;

-- The parts of a search statement (search_sql()) for a store with one vector per row, in
-- `from` (its relations: `s` the table), the vector `vec` (a column reference, of relation
-- alias `store`): the row store's and the side store's.
CREATE FUNCTION embeddings_internal.one_vector_search_sql(t embeddings.targets, from_sql text, store text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    args jsonb := jsonb_build_object(
        'store', store, 'vector', t.embedding_column, 'vector_schema', embeddings.vector_schema(),
        'type', (SELECT at.atttypid::regtype::text FROM pg_attribute at
                 WHERE at.attrelid = t.store_table AND at.attname = t.embedding_column AND NOT at.attisdropped));
BEGIN
    RETURN jsonb_build_object(
        'from', from_sql,
        'store', store,
        'vector', embeddings_internal.render('%(store)I.%(vector)I', args),
        'key', embeddings_internal.key_json_sql(t, 's'),
        'key_alias', 's',
        'content', CASE WHEN t.content_column IS NOT NULL
                        THEN embeddings_internal.text_sql((SELECT a.atttypid::regtype FROM pg_attribute a
                                                  WHERE a.attrelid = t.source AND a.attname = t.content_column),
                                                 embeddings_internal.render('s.%(column)I', jsonb_build_object('column', t.content_column)))
                        ELSE 'NULL::text' END,
        'seq', 'NULL::integer',
        'start_offset', 'NULL::integer',
        'end_offset', 'NULL::integer',
        'headings', 'NULL::text[]',
        'page', 'NULL::integer',
        'order', embeddings_internal.render('%(store)I.%(vector)I OPERATOR(%(vector_schema)I.<=>) ($1)::%(type)s', args),
        'distance', embeddings_internal.render('(%(store)I.%(vector)I OPERATOR(%(vector_schema)I.<=>) ($1)::%(type)s)::double precision', args));
END
$$;

-- Shared by the stores apart from the table (side and chunk tables) -------------------------

-- Refuses (SQLSTATE duplicate_table) to use `existing` as a store of `source` unless watch()
-- made it for `source` (embeddings.made_tables) and the source's owner owns it: a table someone
-- else made first, under the name watch() would pick, may carry their triggers, rules, grants
-- and policies, and our writes would run them with the owner's rights. `option`: the watch()
-- argument that names another table.
CREATE FUNCTION embeddings_internal.check_made_store(existing regclass, source regclass, option text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner_name name := (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = source);
    -- Made for this table, or for one of this name that was dropped since (DROP TABLE, CREATE
    -- TABLE, watch() again takes its store back, as before: rows whose content changed are
    -- embedded again).
    made_by_us boolean := EXISTS (SELECT FROM embeddings.made_tables m
                                  WHERE m.store = existing
                                    AND (m.source = check_made_store.source
                                         OR NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = m.source)));
BEGIN
    IF NOT made_by_us THEN
        RAISE EXCEPTION 'table % already exists, and embed-worker did not make it for %', existing, source
            USING ERRCODE = 'duplicate_table',
                  DETAIL = 'watch() uses only tables it made: a table made by someone else could carry their triggers and grants, which its writes would run with the rights of the owner of ' || source::text || '.',
                  HINT = 'Name another table with ' || option || ' => ..., or drop ' || existing || ' if it is not wanted.';
    END IF;
    IF (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = existing) IS DISTINCT FROM owner_name THEN
        RAISE EXCEPTION 'table % was made by embed-worker for %, but is now owned by %, not by %''s owner %',
                existing, source, (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = existing), source, owner_name
            USING ERRCODE = 'duplicate_table',
                  HINT = 'Check its triggers and grants, then ALTER TABLE ' || existing || ' OWNER TO ' || quote_ident(owner_name)
                         || '; or drop it, or name another table with ' || option || ' => ...';
    END IF;
    UPDATE embeddings.made_tables m SET source = check_made_store.source
    WHERE m.store = existing AND m.source IS DISTINCT FROM check_made_store.source;
END
$$;

-- Gives target t's store, apart from its table, to its table's owner, if another role owns it:
-- the store holds the table's rows' vectors (and keys), and goes with the table, whatever else
-- keeps the target from being served (a content function left with the table's old owner: the
-- target has a problem and no functions, and the old owner must not keep a table of the new
-- owner's data). Called by generate_access() and, for a target with a problem, by
-- refresh_target() (our DDL: the caller has set embeddings.following).
CREATE FUNCTION embeddings_internal.give_store_to_owner(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF embeddings_internal.store_apart(t)
       AND (SELECT c.relowner FROM pg_class c WHERE c.oid = t.store_table)
           <> (SELECT c.relowner FROM pg_class c WHERE c.oid = t.source) THEN
        EXECUTE embeddings_internal.render('ALTER TABLE %(store)s OWNER TO %(owner)I', jsonb_build_object(
            'store', t.store_table::text, 'owner', (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = t.source)));
    END IF;
END
$$;

-- Renames the key columns of target t's store (apart from its table) after the source's key
-- columns, so that the generated functions name both alike: the columns of its unique index on
-- the key (key and seq for a chunk table), in key order -- its primary key for a table watch()
-- made. Called by embeddings_internal.refresh_target() with the event trigger's DDL following switched
-- off.
CREATE FUNCTION embeddings_internal.follow_store_keys(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT sa.attname AS store_name, t.key_columns[k.i] AS source_name
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey[0:cardinality(t.key_columns) - 1]) WITH ORDINALITY AS k(n, i)
        JOIN pg_attribute sa ON sa.attrelid = i.indrelid AND sa.attnum = k.n
        WHERE i.indexrelid = (SELECT u.indexrelid FROM pg_index u
                              WHERE u.indrelid = t.store_table AND u.indisunique AND u.indpred IS NULL
                                AND u.indexprs IS NULL
                                AND u.indnkeyatts = cardinality(t.key_columns) + CASE WHEN embeddings_internal.store_has_chunks(t) THEN 1 ELSE 0 END
                              ORDER BY u.indisprimary DESC, u.indexrelid LIMIT 1)
          AND sa.attname <> t.key_columns[k.i]
        ORDER BY k.i
    LOOP
        EXECUTE embeddings_internal.render('ALTER TABLE %(store)s RENAME COLUMN %(from)I TO %(to)I', jsonb_build_object(
            'store', t.store_table::text, 'from', col.store_name, 'to', col.source_name));
    END LOOP;
END
$$;

-- Retypes the key columns of target t's store (apart from its table) as the source's are now
-- (type and modifiers: integer to bigint, varchar(10) to varchar(100)), after
-- follow_store_keys() named them alike: the store's keys are the source's rows' keys, and a key
-- the store cannot hold ("integer out of range") would dead-letter its row. Called by
-- embeddings_internal.refresh_target(), in the transaction of the user's ALTER TABLE, with the event
-- trigger's DDL following off. Returns NULL, or the target's problem when the store cannot
-- follow.
--
-- The store is rewritten inside the user's DDL, whatever its size: the source was just
-- rewritten under the same lock (a plain target's vectors and HNSW index with it), and a
-- deferred conversion would leave keys the store cannot hold in between. A rewrite evaluates
-- what the owner may have defined (a cast, a domain's CHECK, a CHECK constraint or a generated
-- column of the store): it runs as the table's owner, in a function made for this one call
-- (SECURITY DEFINER, owned by the owner, granted to no one, dropped at once). A conversion that
-- fails (no cast from the old type, a value the new type rejects: the source's own conversion
-- may have had a USING we do not know) is a problem: its jobs wait, no attempt spent, until
-- the store's key columns are converted by hand (that ALTER TABLE is followed, clearing it).
CREATE FUNCTION embeddings_internal.follow_store_key_types(t embeddings.targets) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner_name name := (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = t.source);
    changes jsonb;
    wanted text;
    fn text := embeddings_internal.access_body_name(t, '_retype_keys', false);
    problem text;
BEGIN
    SELECT jsonb_agg(jsonb_build_object('column', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
                                        'collate', CASE WHEN a.attcollation <> 0 AND a.attcollation <> ty.typcollation
                                                        THEN embeddings_internal.render(' COLLATE %(schema)I.%(name)I',
                                                                               jsonb_build_object('schema', cn.nspname, 'name', co.collname))
                                                        ELSE '' END,
                                        'now', format_type(sa.atttypid, sa.atttypmod)) ORDER BY k.i)
    INTO changes
    FROM unnest(t.key_attnums) WITH ORDINALITY AS k(n, i)
    JOIN pg_attribute a ON a.attrelid = t.source AND a.attnum = k.n AND NOT a.attisdropped
    JOIN pg_type ty ON ty.oid = a.atttypid
    JOIN pg_attribute sa ON sa.attrelid = t.store_table AND sa.attname = a.attname AND sa.attnum > 0 AND NOT sa.attisdropped
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
    WHERE (sa.atttypid, sa.atttypmod) IS DISTINCT FROM (a.atttypid, a.atttypmod);
    IF changes IS NULL THEN
        RETURN NULL;
    END IF;
    wanted := embeddings_internal.render_each('%(column)I %(type)s (now %(now)s)', changes, ', ');
    PERFORM embeddings_internal.give_store_to_owner(t);  -- the owner alters it
    -- Its row-level security policy names the key columns, and Postgres alters no column a
    -- policy uses: dropped here, made again with the functions right after (refresh_target());
    -- meanwhile, and if the change cannot be followed, only the owner reads the store.
    PERFORM embeddings_internal.drop_store_policy(t);
    -- made, run once and dropped here: no guard around it
    PERFORM embeddings_internal.run_code(ARRAY(
        SELECT c.statement FROM embeddings_internal.access_function_code(t, embeddings_internal.access_spec('_retype_keys', '{}', 'void', $template$
            EXECUTE %(statement)L;
            $template$,
            jsonb_build_object('statement', embeddings_internal.render('ALTER TABLE %(store)s %(changes)s', jsonb_build_object(
                'store', t.store_table::text,
                'changes', embeddings_internal.render_each('ALTER COLUMN %(column)I TYPE %(type)s%(collate)s USING %(column)I::%(type)s',
                                                  changes, ', ')))),
            "check" => 'owner', formats => false, guarded => false), embeddings_internal.access_parts(t)) c));
    EXECUTE embeddings_internal.render('REVOKE ALL ON FUNCTION embeddings.%(fn)I() FROM PUBLIC', jsonb_build_object('fn', fn));
    IF owner_name <> current_user THEN
        EXECUTE embeddings_internal.render('ALTER FUNCTION embeddings.%(fn)I() OWNER TO %(owner)I',
                                  jsonb_build_object('fn', fn, 'owner', owner_name));
    END IF;
    BEGIN
        EXECUTE embeddings_internal.render('SELECT embeddings.%(fn)I()', jsonb_build_object('fn', fn));
    EXCEPTION WHEN OTHERS THEN
        problem := 'its key changed type and the table ' || t.store_table || ' holding its vectors could not follow ('
                   || wanted || '): '
                   -- a data error's message quotes the value: a row key, for status (readable
                   -- by the worker roles) and the registry (by PUBLIC)
                   || CASE WHEN SQLSTATE LIKE '22%' THEN 'a key the new type rejects (SQLSTATE ' || SQLSTATE || ')'
                           ELSE SQLERRM END
                   || '; convert that table''s key columns as the table''s were (ALTER TABLE ' || t.store_table
                   || ' ALTER COLUMN ... TYPE ... USING ...)';
    END;
    EXECUTE embeddings_internal.render('DROP FUNCTION embeddings.%(fn)I()', jsonb_build_object('fn', fn));
    RETURN problem;
END
$$;

-- The functions with which a store apart from its table follows the table's deletes and
-- truncations, as the table's owner (a kind's access(), sql/32_access.sql): `_forget` (the
-- worker's jobs of deleted rows, and the old keys of rows whose key changed: their rows of the
-- store go, unless a row of that key was inserted since; returns the keys whose rows were
-- deleted) and `_prune` (after a TRUNCATE, its trigger's: an empty table empties its store; one
-- partition truncated, the rows of the store whose row is gone go).
CREATE FUNCTION embeddings_internal.follow_access(t embeddings.targets) RETURNS SETOF jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    VALUES (embeddings_internal.access_spec('_forget', ARRAY['keys text[]'] || embeddings_internal.key_params(t), 'SETOF text', $template$
                RETURN QUERY
                    DELETE FROM %(store)s x USING ROWS FROM (%(key_rows)s) AS v(key%(key_aliases)s)
                    WHERE %(store_match)s AND NOT EXISTS (SELECT FROM %(source)s t WHERE %(key_match)s)
                    RETURNING v.key;
                $template$, jsonb_build_object('store_match', embeddings_internal.access_match_sql(t, 'x')))),
           (embeddings_internal.access_spec('_prune', '{}', 'void', $template$
                IF NOT EXISTS (SELECT FROM %(source)s t) THEN
                    TRUNCATE %(store)s;
                ELSE
                    DELETE FROM %(store)s x WHERE NOT EXISTS (SELECT FROM %(source)s t WHERE %(same_key)s);
                END IF;
                $template$, jsonb_build_object('same_key', embeddings_internal.key_equal_sql(t, 't', 'x')), guarded => false))
$$;

-- The operations every store apart from its table answers alike (store_function() serves them
-- to a kind apart that has none of its own).

-- A new row always needs a job: its vectors are not in it, and a row of its key in the store
-- (left by a deleted row) is not its.
CREATE FUNCTION embeddings_internal.apart_store_new_row_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'true'::text
$$;

-- Vectors live under their row's key in the store: an UPDATE of the table moves none.
CREATE FUNCTION embeddings_internal.apart_store_changed_vector_sql(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT NULL::text
$$;

-- The write goes to the store: the table is only read.
CREATE FUNCTION embeddings_internal.apart_store_lock_mode(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'ACCESS SHARE'::text
$$;

-- The vectors of the row at (r.rel, r.place) go with its rows of the store.
CREATE FUNCTION embeddings_internal.apart_store_clear_sql(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.render('DELETE FROM %(store)s c USING %(source)s t WHERE %(same_key)s '
                             'AND t.tableoid OPERATOR(pg_catalog.=) r.rel AND t.ctid OPERATOR(pg_catalog.=) r.place',
                             jsonb_build_object('store', t.store_table::text, 'source', t.source::text,
                                                'same_key', embeddings_internal.key_equal_sql(t, 'c', 't')))
$$;

-- Row-level security of a store apart from its table: a role that may read it sees exactly the
-- rows whose row of the table it may see, so that the SELECT a searcher is granted on the store
-- (search() and hybrid_search() read it with the caller's rights, sql/58_search.sql) shows no
-- other tenant's keys, chunks, vectors or tsvectors. The table's owner, who writes the store
-- through its functions (sql/32_access.sql), is exempt, as an owner is from its table's
-- policies: the worker's writes see every row.
--
--   embeddings_<id>_visible()  the key of every row of the table the caller may see: a SQL
--       function of one SELECT, STABLE, SECURITY INVOKER and without SET clauses, so that the
--       planner inlines it where the policy calls it and the table's own policies apply to the
--       caller (an index probe per store row read, or one hashed scan of the visible keys,
--       whichever the plan finds cheaper). Its body is text, which Postgres does not track: a
--       policy naming the table itself would make every DROP TABLE of it fail, where our event
--       trigger forgets the target instead (sql/45_dropped.sql). Owned by this schema's owner
--       and executable by PUBLIC, as search's statements are (a table owner could otherwise
--       make every reader of its store run its code). Schema-qualified throughout: it runs with
--       the caller's search path. (`visible`, a constant, besides the keys: a function
--       returning one column of a composite type returns that type, whose fields would stand
--       in FROM in place of k0.)
--   policy embeddings_<id>_visible on the store, FOR ALL, TO PUBLIC: the row's key is among
--       them; the store's columns by its own name (a policy's expression sees the table under
--       it), the visible keys under an alias no table of ours takes.
--
-- Made with the search statements (generate_search(), on every regeneration: watch(), ALTER
-- TABLE of the table or store, a model change, every upgrade's sql/99_regenerate.sql), dropped
-- with them (drop_access()). Row-level security stays on: a store left without the policy (its
-- target unwatched or forgotten, or the policy not made: a key column gone) shows its rows to
-- its owner only. NULL for a target whose vectors are in its table.
CREATE FUNCTION embeddings_internal.store_policy_code(t embeddings.targets) RETURNS TABLE (name text, statement text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    args jsonb := jsonb_build_object(
        'name', 'embeddings_' || t.id || '_visible', 'source', t.source::text, 'store', t.store_table::text,
        'store_name', (SELECT c.relname FROM pg_class c WHERE c.oid = t.store_table),
        'columns', (SELECT embeddings_internal.render_each('k%(n)s %(type)s',
                                                  jsonb_agg(jsonb_build_object('n', k.i - 1, 'type', format_type(a.atttypid, NULL))
                                                            ORDER BY k.i), ', ')
                    FROM unnest(t.key_columns) WITH ORDINALITY AS k(c, i)
                    JOIN pg_attribute a ON a.attrelid = t.source AND a.attname = k.c AND NOT a.attisdropped),
        'keys', embeddings_internal.render_each('s.%(column)I', (SELECT jsonb_agg(jsonb_build_object('column', c) ORDER BY i)
                                                         FROM unnest(t.key_columns) WITH ORDINALITY AS k(c, i)), ', '));
BEGIN
    IF NOT embeddings_internal.store_apart(t) THEN
        RETURN;
    END IF;
    args := args || jsonb_build_object('visible', embeddings_internal.render_each(
        'embeddings_visible_row.k%(n)s %(equals)s %(store_name)I.%(column)I',
        (SELECT jsonb_agg(jsonb_build_object('n', k.i - 1, 'equals', embeddings_internal.key_operator(k.ty, 3), 'column', k.c) ORDER BY k.i)
         FROM unnest(t.key_columns, t.key_types) WITH ORDINALITY AS k(c, ty, i)),
        ' AND ', args));
    RETURN QUERY VALUES
        (args->>'name', embeddings_internal.render($template$
            CREATE FUNCTION embeddings.%(name)I() RETURNS TABLE (%(columns)s, visible boolean) LANGUAGE sql STABLE AS $body$
                SELECT %(keys)s, true FROM %(source)s s
            $body$
            $template$, args)),
        (args->>'name', embeddings_internal.render('GRANT EXECUTE ON FUNCTION embeddings.%(name)I() TO PUBLIC', args)),
        (args->>'name', embeddings_internal.render(
            'CREATE POLICY %(name)I ON %(store)s USING (EXISTS (SELECT FROM embeddings.%(name)I() embeddings_visible_row WHERE %(visible)s))',
            args));
END
$$;

-- Makes target t's store policy (store_policy_code()), its store's row-level security on.
CREATE FUNCTION embeddings_internal.generate_store_policy(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF embeddings_internal.store_apart(t) AND NOT (SELECT c.relrowsecurity FROM pg_class c WHERE c.oid = t.store_table) THEN
        EXECUTE embeddings_internal.render('ALTER TABLE %(store)s ENABLE ROW LEVEL SECURITY', jsonb_build_object('store', t.store_table::text));
    END IF;
    PERFORM embeddings_internal.run_code(ARRAY(SELECT c.statement FROM embeddings_internal.store_policy_code(t) c));
END
$$;

-- Drops the policies that call target t's embeddings_<id>_visible() (whatever they have been
-- renamed to), before the function goes (drop_access(), sql/32_access.sql).
CREATE FUNCTION embeddings_internal.drop_store_policy(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    policy record;
BEGIN
    FOR policy IN
        SELECT pol.polname, pol.polrelid::regclass AS rel
        FROM pg_depend d
        JOIN pg_policy pol ON d.classid = 'pg_policy'::regclass AND pol.oid = d.objid
        WHERE d.refclassid = 'pg_proc'::regclass
          AND d.refobjid = (SELECT p.oid FROM pg_proc p WHERE p.pronamespace = 'embeddings'::regnamespace
                            AND p.proname = 'embeddings_' || t.id || '_visible')
    LOOP
        EXECUTE embeddings_internal.render('DROP POLICY %(name)I ON %(rel)s', jsonb_build_object('name', policy.polname, 'rel', policy.rel::text));
    END LOOP;
END
$$;

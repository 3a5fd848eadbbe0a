-- Side tables: a target's vectors in a table of their own instead of a column of the watched
-- table (`embeddings.watch(..., store => 'side')`, docs/usage.md: "Where the vectors live").
--
-- The worker then never writes the application's rows: no new row version of them per vector, so
-- an application transaction at REPEATABLE READ or SERIALIZABLE that reads a row and then updates
-- it never fails because the worker embedded that row meanwhile, and the table's own UPDATE
-- triggers (updated_at, audit) do not fire for the worker's writes. The side table,
-- `<schema>.<table>_embeddings` unless side_table names another (`<table>_<embedding_column>`
-- for a second target whose embedding_column is not 'embedding'):
--
--   <the source's key column(s)>  same names, same types (with their modifiers and collation);
--                                  its primary key. No foreign key to the source: a foreign key
--                                  makes TRUNCATE of the source fail, and its cascades and
--                                  checks conflict with the application's REPEATABLE READ
--                                  transactions. Deletes are followed up instead (below).
--   <embedding_column>  halfvec(dim)  ('embedding' by default), with an HNSW cosine index
--   content_md5         text          md5 of the content the vector in <embedding_column> was
--                                      made from (as the worker's stale-write guard computes it:
--                                      md5 of the content's text): the vector's fingerprint, for
--                                      anything that verifies vectors against current content.
--                                      During a model change it describes that column's vector,
--                                      not the shadow column's; after the swap the new vector's
--                                      content is the one the row's next write records (a row
--                                      whose content changed during the change has its job)
--
-- It belongs to the source's owner, like the source's rows: the functions that read and write
-- it run as that role (sql/32_access.sql), and an ALTER TABLE ... OWNER TO of the source takes it
-- along. A row has a side row exactly while it has a vector; blank content deletes the side row.
--
-- Following the source:
--   * the worker's write orders itself after any other writer of the same keys
--     (embeddings.lock_documents(), sql/41_locks.sql, as the chunk write does) before it checks
--     the content's md5 and upserts, so two writers of one row never interleave (stale-write
--     guard, exactly-once effect);
--   * DELETE: a statement trigger queues the deleted rows' keys; the worker finds them gone and
--     deletes their side rows (embeddings_<id>_forget). An UPDATE of the key queues the old key
--     as well. Nothing is written in the application's transaction but its keys;
--   * TRUNCATE: a statement trigger empties the side table (of the rows whose source row is
--     gone, when one partition of a partitioned table is truncated), in the same transaction;
--   * every read joins the source (search, status counts, backfills): a side row whose source
--     row is gone is never returned, even before its delete was followed up.
-- A content change does not clear the vector at once: the old vector stays until the new one
-- lands, as with clear_on_update => false, and watch() refuses clear_on_update => true for a side
-- table rather than ignore it. Clearing would be a write of the side table in the application's
-- transaction: at REPEATABLE READ it fails the application's UPDATE whenever the worker wrote
-- that vector since the transaction began (what the side table exists to avoid), and it cannot
-- keep a worker's write of the old content's vector, made in between, out without the worker
-- locking the application's rows. Readers that must not see a vector older than the content
-- compare content_md5 with the content's md5, or use the row store.
--
-- Chunk tables (sql/55_chunks.sql) have no foreign key either and follow deletes, key changes and
-- truncations the same way: the triggers (sql/30_triggers.sql) and the functions of
-- embeddings.generate_follow_access() below serve both kinds of "store".
--
-- unwatch() and uninstall keep the side table and its vectors, as they keep an embedding column;
-- DROP TABLE it when no longer wanted. Dropping it forgets the target (45_dropped.sql).

-- Checks watch()'s `store` and `side_table` against the call and the target registered before
-- (`previous`; NULL id: none) and says whether the target keeps its vectors in a side table.
-- A target changes its store only by unwatch() and watch() again.
CREATE FUNCTION embeddings.side_store(previous embeddings.targets, store text, side_table text, chunked boolean)
RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    was text := previous.store_kind;  -- NULL: none
    wanted text := coalesce(store, CASE WHEN side_table IS NOT NULL THEN 'side' END);
BEGIN
    IF store IS NOT NULL AND store NOT IN ('row', 'side') THEN
        RAISE EXCEPTION 'invalid store "%": ''row'' (a column of the table) or ''side'' (a side table)', store
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Chunked targets are made with chunk_tokens => N.';
    ELSIF store = 'row' AND side_table IS NOT NULL THEN
        RAISE EXCEPTION 'side_table is for store => ''side''' USING ERRCODE = 'invalid_parameter_value';
    ELSIF wanted IS NOT NULL AND chunked THEN
        RAISE EXCEPTION 'store and side_table are not for chunked targets: their vectors are in their chunk table'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF wanted IS NOT NULL AND was IS NOT NULL AND was <> wanted THEN
        RAISE EXCEPTION '%.% keeps its vectors %, not %', previous.source, previous.embedding_column,
                CASE was WHEN 'row' THEN 'in the table''s own column' WHEN 'side' THEN 'in a side table'
                         ELSE 'in a chunk table' END,
                CASE wanted WHEN 'row' THEN 'in the table''s own column' ELSE 'in a side table' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Unwatch it first (SELECT embeddings.unwatch(%L)), or pass another embedding_column.',
                                previous.source::text);
    END IF;
    RETURN coalesce(wanted, was, 'row') = 'side';
END
$$;

-- The side table's name, schema-qualified and quoted: `side_table` as given (optionally
-- schema-qualified; unqualified, beside the source), else `<table>_embeddings` beside the
-- source, `<table>_<embedding_column>` for an embedding column not named 'embedding' (a second
-- target of the table).
CREATE FUNCTION embeddings.side_table_name(source regclass, side_table text, embedding_column name) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parts text[];
    found text;
BEGIN
    IF side_table IS NULL THEN
        SELECT format('%I.%I', n.nspname, c.relname || CASE WHEN embedding_column = 'embedding' THEN '_embeddings'
                                                            ELSE '_' || embedding_column END)
        INTO found FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source;
        RETURN found;
    END IF;
    BEGIN
        parts := parse_ident(side_table);
    EXCEPTION WHEN OTHERS THEN
        parts := NULL;
    END;
    found := CASE cardinality(parts)
        WHEN 1 THEN (SELECT format('%I.%I', n.nspname, parts[1])
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source)
        WHEN 2 THEN format('%I.%I', parts[1], parts[2])
    END;
    IF found IS NULL THEN
        RAISE EXCEPTION 'invalid side_table "%": a table name, optionally schema-qualified', side_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN found;
END
$$;

-- Refuses (SQLSTATE duplicate_table) to use `existing` as a store of `source` unless watch()
-- made it for `source` (embeddings.made_tables) and the source's owner owns it: a table someone
-- else made first, under the name watch() would pick, may carry their triggers, rules, grants
-- and policies, and our writes would run them with the owner's rights. `option`: the watch()
-- argument that names another table.
CREATE FUNCTION embeddings.check_made_store(existing regclass, source regclass, option text) RETURNS void
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
                  HINT = format('Name another table with %s => ..., or drop %s if it is not wanted.', option, existing);
    END IF;
    IF (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = existing) IS DISTINCT FROM owner_name THEN
        RAISE EXCEPTION 'table % was made by embed-worker for %, but is now owned by %, not by %''s owner %',
                existing, source, (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = existing), source, owner_name
            USING ERRCODE = 'duplicate_table',
                  HINT = format('Check its triggers and grants, then ALTER TABLE %s OWNER TO %I; or drop it, or name another table with %s => ...', existing, owner_name, option);
    END IF;
    UPDATE embeddings.made_tables m SET source = check_made_store.source
    WHERE m.store = existing AND m.source IS DISTINCT FROM check_made_store.source;
END
$$;

-- Creates side table `side_name` (schema-qualified, quoted) for target `target_id` (NULL: a new
-- target) of `source`, keyed by the columns `key_nums` of the source, or checks that the existing
-- one has the expected shape and serves no other target. Without its HNSW index: watch() adds it
-- (or defers it, for a large table). Returns it.
CREATE FUNCTION embeddings.ensure_side_table(
    side_name text,
    source regclass,
    key_nums smallint[],
    embedding_column name,
    dims integer,
    target_id integer
) RETURNS regclass
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    vschema name := embeddings.vector_schema();
    existing regclass := to_regclass(side_name);
    problem text;
    columns text;
    keys text;
BEGIN
    IF existing = source OR EXISTS (
        SELECT FROM embeddings.targets tg
        WHERE existing IN (tg.source, tg.chunk_table)
           OR (existing = tg.side_table AND tg.id IS DISTINCT FROM target_id)) THEN
        RAISE EXCEPTION 'table % is a watched table, or holds the vectors of another target', existing
            USING ERRCODE = 'duplicate_table', HINT = 'Name another table with side_table => ...';
    END IF;
    IF existing IS NOT NULL THEN
        PERFORM embeddings.check_made_store(existing, source, 'side_table');
        -- The key columns with their exact types, the vector and md5 columns, a unique index on
        -- the key columns.
        SELECT string_agg(format_type(need.typ, need.typmod) || ' ' || quote_ident(need.col), ', ') INTO problem
        FROM (SELECT a.attname AS col, a.atttypid AS typ, a.atttypmod AS typmod
              FROM unnest(key_nums) AS k(n) JOIN pg_attribute a ON a.attrelid = source AND a.attnum = k.n
              UNION ALL VALUES (embedding_column, format('%I.halfvec', vschema)::regtype::oid, dims),
                               ('content_md5', 'text'::regtype::oid, -1)) need
        WHERE NOT EXISTS (
            SELECT FROM pg_attribute a
            WHERE a.attrelid = existing AND a.attname = need.col AND a.attnum > 0 AND NOT a.attisdropped
              AND a.atttypid = need.typ AND a.atttypmod = need.typmod);
        IF problem IS NULL AND NOT EXISTS (
            SELECT FROM pg_index i
            WHERE i.indrelid = existing AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
              AND i.indnkeyatts = cardinality(key_nums)
              AND (SELECT array_agg(a.attname ORDER BY x.i) FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS x(n, i)
                   JOIN pg_attribute a ON a.attrelid = existing AND a.attnum = x.n)
                  = (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(key_nums) WITH ORDINALITY AS k(n, i)
                     JOIN pg_attribute a ON a.attrelid = source AND a.attnum = k.n)) THEN
            problem := 'a unique index on the key columns, in key order';
        END IF;
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'table % exists but is not a side table for % (missing or mistyped: %)', existing, source, problem
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Drop it, or name another table with side_table => ...';
        END IF;
        RETURN existing;
    END IF;
    -- Key columns as the source has them: type modifiers (char(10), numeric(20,5)) and collation
    -- (equality under a nondeterministic collation) included, in key order; the primary key in
    -- that order (embeddings.follow_store_keys() relies on it).
    SELECT string_agg(format('%I %s%s NOT NULL', a.attname, format_type(a.atttypid, a.atttypmod),
                             CASE WHEN a.attcollation <> 0 AND a.attcollation <> ty.typcollation
                                  THEN format(' COLLATE %I.%I', cn.nspname, co.collname) ELSE '' END), ', ' ORDER BY k.i),
           string_agg(format('%I', a.attname), ', ' ORDER BY k.i)
    INTO columns, keys
    FROM unnest(key_nums) WITH ORDINALITY AS k(n, i)
    JOIN pg_attribute a ON a.attrelid = source AND a.attnum = k.n
    JOIN pg_type ty ON ty.oid = a.atttypid
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace;
    EXECUTE format('CREATE TABLE %s (%s, %I %I.halfvec(%s), content_md5 text NOT NULL, PRIMARY KEY (%s))',
                   side_name, columns, embedding_column, vschema, dims, keys);
    existing := to_regclass(side_name);
    INSERT INTO embeddings.made_tables (store, source, kind) VALUES (existing, source, 'side')
    ON CONFLICT (store) DO UPDATE SET source = excluded.source, kind = excluded.kind;
    -- The source's owner's, as its rows are: the functions that write it run as that role.
    EXECUTE format('ALTER TABLE %s OWNER TO %I', existing,
                   (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = source));
    EXECUTE format('COMMENT ON TABLE %s IS %L', existing,
                   format('Embeddings of the rows of %s, kept by embed-worker (embeddings.watch, store => ''side'')', embeddings.display_name(source)));
    RETURN existing;
END
$$;

-- Renames the key columns of target t's side table or chunk table (its "store") after the
-- source's key columns, so that the generated functions name both alike: the columns of its
-- unique index on the key (key and seq for a chunk table), in key order -- its primary key for a
-- table watch() made. Called by embeddings.refresh_target() with the event trigger's DDL
-- following switched off.
CREATE FUNCTION embeddings.follow_store_keys(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    store regclass := coalesce(t.side_table, t.chunk_table);
    col record;
BEGIN
    FOR col IN
        SELECT sa.attname AS store_name, t.key_columns[k.i] AS source_name
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey[0:cardinality(t.key_columns) - 1]) WITH ORDINALITY AS k(n, i)
        JOIN pg_attribute sa ON sa.attrelid = i.indrelid AND sa.attnum = k.n
        WHERE i.indexrelid = (SELECT u.indexrelid FROM pg_index u
                              WHERE u.indrelid = store AND u.indisunique AND u.indpred IS NULL
                                AND u.indexprs IS NULL
                                AND u.indnkeyatts = cardinality(t.key_columns) + CASE WHEN t.store_kind = 'chunks' THEN 1 ELSE 0 END
                              ORDER BY u.indisprimary DESC, u.indexrelid LIMIT 1)
          AND sa.attname <> t.key_columns[k.i]
        ORDER BY k.i
    LOOP
        EXECUTE format('ALTER TABLE %s RENAME COLUMN %I TO %I', store, col.store_name, col.source_name);
    END LOOP;
END
$$;

-- Retypes the key columns of target t's side or chunk table as the source's are now (type and
-- modifiers: integer to bigint, varchar(10) to varchar(100)), after follow_store_keys() named
-- them alike: the store's keys are the source's rows' keys, and a key the store cannot hold
-- ("integer out of range") would dead-letter its row. Called by embeddings.refresh_target(),
-- in the transaction of the user's ALTER TABLE, with the event trigger's DDL following off.
-- Returns NULL, or the target's problem when the store cannot follow.
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
CREATE FUNCTION embeddings.follow_store_key_types(t embeddings.targets) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    store regclass := coalesce(t.side_table, t.chunk_table);
    owner_name name := (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = t.source);
    changes text;
    wanted text;
    fn text;
    problem text;
BEGIN
    SELECT string_agg(format('ALTER COLUMN %1$I TYPE %2$s%3$s USING %1$I::%2$s', a.attname,
                             format_type(a.atttypid, a.atttypmod),
                             CASE WHEN a.attcollation <> 0 AND a.attcollation <> ty.typcollation
                                  THEN format(' COLLATE %I.%I', cn.nspname, co.collname) ELSE '' END), ', ' ORDER BY k.i),
           string_agg(format('%I %s (now %s)', a.attname, format_type(a.atttypid, a.atttypmod),
                             format_type(sa.atttypid, sa.atttypmod)), ', ' ORDER BY k.i)
    INTO changes, wanted
    FROM unnest(t.key_attnums) WITH ORDINALITY AS k(n, i)
    JOIN pg_attribute a ON a.attrelid = t.source AND a.attnum = k.n AND NOT a.attisdropped
    JOIN pg_type ty ON ty.oid = a.atttypid
    JOIN pg_attribute sa ON sa.attrelid = store AND sa.attname = a.attname AND sa.attnum > 0 AND NOT sa.attisdropped
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
    WHERE (sa.atttypid, sa.atttypmod) IS DISTINCT FROM (a.atttypid, a.atttypmod);
    IF changes IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM embeddings.give_store_to_owner(t);  -- the owner alters it
    -- Its row-level security policy names the key columns, and Postgres alters no column a
    -- policy uses: dropped here, made again with the functions right after (refresh_target());
    -- meanwhile, and if the change cannot be followed, only the owner reads the store.
    PERFORM embeddings.drop_store_policy(t);
    fn := embeddings.create_access_function(jsonb_build_object('prefix', 'embeddings_' || t.id), '_retype_keys',
        '', 'void', format('EXECUTE %L;', format('ALTER TABLE %s %s', store, changes)),
        check_call => embeddings.check_serving_sql(t.source::text, false, store::text), formats => false,
        immediate => false);  -- made, run once and dropped here: no guard around it
    EXECUTE format('REVOKE ALL ON FUNCTION embeddings.%I() FROM PUBLIC', fn);
    IF owner_name <> current_user THEN
        EXECUTE format('ALTER FUNCTION embeddings.%I() OWNER TO %I', fn, owner_name);
    END IF;
    BEGIN
        EXECUTE format('SELECT embeddings.%I()', fn);
    EXCEPTION WHEN OTHERS THEN
        problem := format('its key changed type and its %s %s could not follow (%s): %s; convert that table''s '
                          'key columns as the table''s were (ALTER TABLE %s ALTER COLUMN ... TYPE ... USING ...)',
                          CASE WHEN t.store_kind = 'side' THEN 'side table' ELSE 'chunk table' END,
                          store, wanted,
                          -- a data error's message quotes the value: a row key, for status
                          -- (readable by the worker roles) and the registry (by PUBLIC)
                          CASE WHEN SQLSTATE LIKE '22%' THEN format('a key the new type rejects (SQLSTATE %s)', SQLSTATE)
                               ELSE SQLERRM END,
                          store);
    END;
    EXECUTE format('DROP FUNCTION embeddings.%I()', fn);
    RETURN problem;
END
$$;

-- For the functions below: a query of the rows given to a write (keys, `with_vectors` a vector
-- each, digests) whose content is still the one loaded (the md5 `digests`), joined to the table
-- as it is now: key_ (the key as given), kc0, kc1, ... (the row's key values), e_ (the vector),
-- h_ (the md5); with vectors and full-text search on, f_ (the content's tsvector, sql/59_hybrid.sql).
CREATE FUNCTION embeddings.side_current_rows(t embeddings.targets, a jsonb, with_vectors boolean) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nkeys integer := cardinality(t.key_columns);
BEGIN
    RETURN format(
        'SELECT v.key AS key_%1$s%2$s, v.h AS h_ FROM ROWS FROM (%3$s%4$s, pg_catalog.unnest($%5$s)) AS v(key%6$s%7$s, h) '
        'JOIN %8$s t ON %9$s WHERE CASE WHEN v.h IS NULL THEN pg_catalog.md5(%10$s) IS NULL ELSE pg_catalog.md5(%10$s) OPERATOR(pg_catalog.=) v.h END',
        (SELECT string_agg(format(', t.%I AS kc%s', c, i - 1), '' ORDER BY i) FROM unnest(t.key_columns) WITH ORDINALITY AS k(c, i)),
        CASE WHEN NOT with_vectors THEN ''
             WHEN t.fts_config IS NOT NULL THEN format(', v.e AS e_, %s AS f_', embeddings.fts_sql(t, a->>'content'))
             ELSE ', v.e AS e_' END,
        (a->>'key_rows'),
        CASE WHEN with_vectors THEN format(', pg_catalog.unnest($%s)', nkeys + 2) ELSE '' END,
        nkeys + CASE WHEN with_vectors THEN 3 ELSE 2 END,
        (a->>'key_aliases'),
        CASE WHEN with_vectors THEN ', e' ELSE '' END,
        t.source, (a->>'key_match'), (a->>'content'));
END
$$;

-- The functions of a side-table target that read and write its side table, as the table's owner
-- (called by embeddings.generate_access(), sql/32_access.sql, which gives them to the owner and
-- grants them): the vector writes under the stale-write guard, their model-change twins, and
-- search. Returns the names of the functions created.
--
-- Each write joins the row as it is now and writes only where its content's md5 is the one the
-- worker loaded; the worker has ordered itself after any other writer of the rows
-- (embeddings.lock_documents(), sql/41_locks.sql) from before this check until its commit, so no
-- other writer of the same row comes in between.
-- Every query names the table before the side table: locks are taken in that order everywhere
-- (the worker's write, search, status, TRUNCATE, a model change's swap), never the other.
CREATE FUNCTION embeddings.side_store_access(t embeddings.targets, a jsonb) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    shadow name := (SELECT c.name FROM embeddings.vector_columns(t, t.side_table) c WHERE c.suffix = '_shadow');
    key_list text := (SELECT string_agg(format('%I', c), ', ' ORDER BY i) FROM unnest(t.key_columns) WITH ORDINALITY AS k(c, i));
    cur_values text := (SELECT string_agg(format('cur.kc%s', i - 1), ', ' ORDER BY i)
                        FROM generate_series(1, cardinality(t.key_columns)) i);
    side_cur text := (SELECT string_agg(format('x.%I %s cur.kc%s', k.c, embeddings.key_operator(k.ty, 3), k.i - 1), ' AND ' ORDER BY k.i)
                      FROM unnest(t.key_columns, t.key_types) WITH ORDINALITY AS k(c, ty, i));
    joined text := embeddings.key_equal_sql(t, 't', 'x');
    -- the rows given to a write whose content is still the one loaded (side_current_rows())
    current_rows text := embeddings.side_current_rows(t, a, false);
    made text[] := '{}';
    col record;
BEGIN

    -- Vectors (and during a model change the new model's, in the shadow column: a row with no
    -- side row yet gets one with only that, and the md5 of its content). The side row's md5 is
    -- that of the content of its embedding column's vector, and so is its tsvector, with
    -- full-text search on (written with the vector, from the content the write checked: it
    -- lags behind a content change exactly as the vector does). The side table's key columns
    -- are named as the source's, and may be named as a parameter (k0, keys, ...): ON CONFLICT
    -- names columns, and the parameters are referred to by number.
    FOR col IN SELECT c.*, CASE WHEN c.suffix = '' THEN format('%1$I = excluded.%1$I, content_md5 = excluded.content_md5', c.name)
                                    || fts.assignment
                                ELSE format('%1$I = excluded.%1$I, content_md5 = CASE WHEN x.%2$I IS NULL '
                                            'THEN excluded.content_md5 ELSE x.content_md5 END', c.name, t.embedding_column)
                           END AS assignments,
                           CASE WHEN c.suffix = '' THEN fts.insert_column ELSE '' END AS fts_column,
                           CASE WHEN c.suffix = '' THEN fts.insert_value ELSE '' END AS fts_value
               FROM embeddings.vector_columns(t, t.side_table) c
               CROSS JOIN (SELECT CASE WHEN t.fts_config IS NULL THEN '' ELSE format(', %1$I = excluded.%1$I', t.fts_column) END,
                                  CASE WHEN t.fts_config IS NULL THEN '' ELSE format(', %I', t.fts_column) END,
                                  CASE WHEN t.fts_config IS NULL THEN '' ELSE ', cur.f_' END) AS fts(assignment, insert_column, insert_value) LOOP
        made := made || embeddings.create_access_function(a, '_store' || col.suffix,
            format('keys text[]%s, vectors %s[], digests text[]', a->>'key_params', col.type), 'SETOF text',
            format($b$RETURN QUERY
                WITH cur AS (%1$s),
                written AS (
                    INSERT INTO %2$s AS x (%3$s, %4$I, content_md5%7$s)
                    SELECT %5$s, cur.e_, cur.h_%8$s FROM cur
                    ON CONFLICT (%3$s) DO UPDATE SET %6$s
                    RETURNING 1)
                SELECT cur.key_ FROM cur;$b$,
                embeddings.side_current_rows(t, a, true), t.side_table, key_list, col.name, cur_values,
                col.assignments, col.fts_column, col.fts_value),
            head => E'#variable_conflict use_column\n');
    END LOOP;

    -- Blank content: the side row goes (both vectors); during a change, clearing only the new
    -- model's vector (the worker's rows whose new vector could not be made).
    made := made || embeddings.create_access_function(a, '_blank',
        format('keys text[]%s, digests text[]', a->>'key_params'), 'SETOF text',
        format($b$RETURN QUERY
            WITH cur AS (%1$s)
            DELETE FROM %2$s x USING cur WHERE %3$s RETURNING cur.key_;$b$,
            current_rows, t.side_table, side_cur));
    IF shadow IS NOT NULL THEN
        made := made || embeddings.create_access_function(a, '_blank_shadow',
            format('keys text[]%s, digests text[]', a->>'key_params'), 'SETOF text',
            format($b$RETURN QUERY
                WITH cur AS (%1$s)
                UPDATE %2$s x SET %4$I = NULL FROM cur WHERE %3$s AND x.%4$I IS NOT NULL RETURNING cur.key_;$b$,
                current_rows, t.side_table, side_cur, shadow));
        -- Model-change completion (embeddings.complete_change): the rows with content still
        -- lacking the new vector and waiting in no job...
        made := made || embeddings.create_access_function(a, '_unshadowed', 'pending jsonb[]', 'SETOF jsonb',
            format($b$RETURN QUERY
                SELECT s.k FROM (SELECT %1$s AS k FROM %2$s t LEFT JOIN %3$s x ON %4$s
                                 WHERE x.%5$I IS NULL AND (%6$s) OPERATOR(pg_catalog.~) '[^[:space:]]') s
                WHERE NOT (s.k OPERATOR(pg_catalog.=) ANY ($1));$b$,
                embeddings.key_json_sql(t, 't'), t.source, t.side_table, joined, shadow, a->>'content'),
            stable => true);
        -- ... and, under the table lock, whether the swap may go ahead: no row's vector lacks the
        -- new one. (A content change clears nothing in a side table: a row whose job is pending
        -- keeps its vectors, and its job writes the new model's after the swap.)
        made := made || embeddings.create_access_function(a, '_swap_prepare', 'pending jsonb[]', 'boolean',
            format('RETURN NOT EXISTS (SELECT FROM %s t JOIN %s x ON %s WHERE x.%I IS NULL AND x.%I IS NOT NULL);',
                   t.source, t.side_table, joined, shadow, t.embedding_column));
    END IF;

    RETURN made;
END
$$;

-- The functions that make a side table or a chunk table (the target's "store": neither has a
-- foreign key to the table) follow the table's deletes and truncations, as the table's owner
-- (called by embeddings.generate_access(), sql/32_access.sql). Returns the names of the functions
-- created.
CREATE FUNCTION embeddings.generate_follow_access(t embeddings.targets, a jsonb) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    store regclass := coalesce(t.side_table, t.chunk_table);
BEGIN
    RETURN ARRAY[
    -- Rows gone (the worker's jobs of deleted rows, and the old keys of rows whose key changed):
    -- their rows of the store go (a row of that key inserted since keeps them). Returns the keys
    -- whose rows were deleted.
    embeddings.create_access_function(a, '_forget', format('keys text[]%s', a->>'key_params'), 'SETOF text',
        format($b$RETURN QUERY
            DELETE FROM %1$s x USING ROWS FROM (%2$s) AS v(key%3$s)
            WHERE %4$s AND NOT EXISTS (SELECT FROM %5$s t WHERE %6$s)
            RETURNING v.key;$b$,
            store, a->>'key_rows', a->>'key_aliases', embeddings.access_match_sql(t, 'x', embeddings.key_sql_types(t)),
            t.source, a->>'key_match')),

    -- After a TRUNCATE (its trigger): an empty table empties its store; one partition truncated,
    -- the rows of the store whose row is gone go.
    embeddings.create_access_function(a, '_prune', '', 'void',
        format($b$IF NOT EXISTS (SELECT FROM %1$s t) THEN
                TRUNCATE %2$s;
            ELSE
                DELETE FROM %2$s x WHERE NOT EXISTS (SELECT FROM %1$s t WHERE %3$s);
            END IF;$b$,
            t.source, store, embeddings.key_equal_sql(t, 't', 'x')),
        immediate => false)];
END
$$;

-- Row-level security of a side table or chunk table (its "store"): a role that may read it sees
-- exactly the rows whose row of the table it may see, so that the SELECT a searcher is granted on
-- the store (search() and hybrid_search() read it with the caller's rights, sql/58_search.sql)
-- shows no other tenant's keys, chunks, vectors or tsvectors. The table's owner, who writes the
-- store through its functions (above, sql/32_access.sql), is exempt, as an owner is from its
-- table's policies: the worker's writes see every row.
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
--       the caller's search path.
--   policy embeddings_<id>_visible on the store, FOR ALL, TO PUBLIC: the row's key is among them.
--
-- Made with the search statements (generate_search(), on every regeneration: watch(), ALTER
-- TABLE of the table or store, a model change, every upgrade's sql/99_regenerate.sql), dropped
-- with them (drop_access()). Row-level security stays on: a store left without the policy (its
-- target unwatched or forgotten, or the policy not made: a key column gone) shows its rows to
-- its owner only.
CREATE FUNCTION embeddings.generate_store_policy(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    store regclass := coalesce(t.side_table, t.chunk_table);
    fn text := 'embeddings_' || t.id || '_visible';
    store_name name := (SELECT c.relname FROM pg_class c WHERE c.oid = store);
BEGIN
    IF store IS NULL THEN
        RETURN;
    END IF;
    -- (`visible`, a constant, besides the keys: a function returning one column of a composite
    -- type returns that type, whose fields would stand in FROM in place of k0.)
    EXECUTE format('CREATE FUNCTION embeddings.%I() RETURNS TABLE (%s, visible boolean) LANGUAGE sql STABLE AS %L',
        fn,
        (SELECT string_agg(format('k%s %s', k.i - 1, format_type(a.atttypid, NULL)), ', ' ORDER BY k.i)
         FROM unnest(t.key_columns) WITH ORDINALITY AS k(c, i)
         JOIN pg_attribute a ON a.attrelid = t.source AND a.attname = k.c AND NOT a.attisdropped),
        format('SELECT %s, true FROM %s s',
               (SELECT string_agg(format('s.%I', c), ', ' ORDER BY i) FROM unnest(t.key_columns) WITH ORDINALITY AS k(c, i)),
               t.source));
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.%I() TO PUBLIC', fn);
    IF NOT (SELECT c.relrowsecurity FROM pg_class c WHERE c.oid = store) THEN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', store);
    END IF;
    -- The store's columns by its own name (a policy's expression sees the table under it), the
    -- visible keys under an alias no table of ours takes.
    EXECUTE format('CREATE POLICY %I ON %s USING (EXISTS (SELECT FROM embeddings.%I() embeddings_visible_row WHERE %s))',
        fn, store, fn,
        (SELECT string_agg(format('embeddings_visible_row.k%s %s %I.%I', k.i - 1, embeddings.key_operator(k.ty, 3), store_name, k.c),
                           ' AND ' ORDER BY k.i)
         FROM unnest(t.key_columns, t.key_types) WITH ORDINALITY AS k(c, ty, i)));
END
$$;

-- Drops the policies that call target t's embeddings_<id>_visible() (whatever they have been
-- renamed to), before the function goes (drop_access(), sql/32_access.sql).
CREATE FUNCTION embeddings.drop_store_policy(t embeddings.targets) RETURNS void
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
        EXECUTE format('DROP POLICY %I ON %s', policy.polname, policy.rel);
    END LOOP;
END
$$;

-- The side store's operations (sql/54_stores.sql lists them).

-- A row lacks its vector while no side row of its key holds one.
CREATE FUNCTION embeddings.side_store_missing_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('NOT EXISTS (SELECT FROM %s c WHERE %s AND c.%I IS NOT NULL)',
                  t.side_table, embeddings.key_equal_sql(t, alias, 'c'), t.embedding_column)
$$;

CREATE FUNCTION embeddings.side_store_holds_vector_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'NOT ' || embeddings.side_store_missing_sql(t, alias)
$$;

-- A new row may find a side row left by a deleted row of its key: it always needs a job.
CREATE FUNCTION embeddings.side_store_new_row_sql(t embeddings.targets, alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'true'::text
$$;

-- The write goes to the side table: the table is only read.
CREATE FUNCTION embeddings.side_store_lock_mode(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'ACCESS SHARE'::text
$$;

-- Target definitions: the version a worker's write is checked against, and the rule for which
-- content functions may run with the table owner's rights.

-- Locks target `target_id`'s registration FOR SHARE until the end of the calling transaction
-- and returns its definition version (NULL when the target is gone). The worker calls it first
-- in its write transaction and writes a target's rows only when the version is the one it read
-- the batch under: watch() updates the registration row, so it waits for writes in progress
-- and writes that start after it see the new version. SECURITY DEFINER because FOR SHARE needs
-- UPDATE rights on embeddings.targets, which the worker role must not have.
CREATE FUNCTION embeddings_internal.lock_target_version(target_id integer) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.version FROM embeddings.targets t WHERE t.id = target_id FOR SHARE
$$;

-- Locks target `target_id`'s table, then its registration (lock_target_version), and returns
-- the definition version; the worker's write calls it for each target, in id order. ALTER
-- TABLE takes the table first and then, in the event trigger that follows renames, the
-- registration row: the same order makes the two wait in line instead of deadlocking. The
-- write needs ROW EXCLUSIVE on the table (a chunked target only reads it: ACCESS SHARE), taken
-- by the target's embeddings_<id>_lock(), which runs as the table's owner (sql/32_access.sql):
-- worker roles hold no privilege on the table. SECURITY DEFINER: worker roles are granted this
-- function, not the lock functions. A table gone, or functions that cannot serve it now (their
-- problem is the worker's to report): nothing to lock, the version all the same.
-- Either lock held by another transaction for longer than the caller's lock_timeout (a CREATE
-- INDEX or LOCK TABLE of the application's, a watch() in progress), or the call past the
-- caller's statement_timeout: -1, and nothing of the target is locked; the worker postpones the
-- target's rows, and writes the rest of its batch.
CREATE FUNCTION embeddings_internal.lock_target(target_id integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_proc p WHERE p.pronamespace = 'embeddings'::regnamespace
               AND p.proname = 'embeddings_' || target_id || '_lock') THEN
        BEGIN
            EXECUTE format('SELECT embeddings.%I()', 'embeddings_' || target_id || '_lock');
        EXCEPTION WHEN undefined_table OR undefined_function OR SQLSTATE 'EW001' THEN
            NULL;
        END;
    END IF;
    RETURN embeddings_internal.lock_target_version(target_id);
EXCEPTION WHEN lock_not_available OR query_canceled THEN
    RETURN -1;
END
$$;

-- What a batch read under target t's definition depends on, as the catalog says now, digested:
-- the names (schema too) and owner of its table and of its store table, the names and types of
-- its key, content and embedding columns (a store apart: all its columns), its content function's
-- name, schema, owner and volatility, and why it cannot be served. A schema change that leaves it
-- alone (a partition created, attached or detached, a storage parameter, a statistics target, a
-- column added) needs no new definition version: the batches in flight are written
-- (refresh_target, sql/45_dropped.sql). plpgsql: target_problem() is made later (52_stopped.sql).
CREATE FUNCTION embeddings_internal.definition_digest(t embeddings.targets) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN md5(concat_ws(E'\n',
        (SELECT string_agg(format('%I.%I %s', n.nspname, c.relname, c.relowner), ' ' ORDER BY c.oid = t.source DESC)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid IN (t.source, t.store_table)),
        (SELECT string_agg(format('%s %I %s %s', a.attrelid = t.store_table, a.attname, a.atttypid, a.atttypmod), ','
                           ORDER BY a.attrelid = t.store_table, a.attnum)
         FROM pg_attribute a
         WHERE NOT a.attisdropped AND a.attnum > 0
           AND ((a.attrelid = t.source AND (a.attnum = ANY (t.key_attnums) OR a.attnum = t.content_attnum
                                           OR a.attnum = t.embedding_attnum))
                OR (a.attrelid = t.store_table AND t.store_table <> t.source))),
        (SELECT format('%I.%I %s %s', n.nspname, p.proname, p.proowner, p.provolatile)
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = t.content_function),
        embeddings_internal.target_problem(t)));
END
$$;

-- Refuses a content function that cannot be trusted to run with the table owner's rights (as
-- it does: sql/32_access.sql): one whose owner is neither the table's owner nor a superuser
-- (anyone who owns it can redefine it later), and a VOLATILE one (its result can change between loading the
-- content and writing the vector, so the content check of the write could never match).
CREATE FUNCTION embeddings_internal.check_content_function(source regclass, fn regprocedure) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fn_owner oid;
    fn_volatility "char";
    table_owner oid;
BEGIN
    SELECT p.proowner, p.provolatile INTO fn_owner, fn_volatility FROM pg_proc p WHERE p.oid = fn;
    SELECT c.relowner INTO table_owner FROM pg_class c WHERE c.oid = source;
    IF fn_volatility = 'v' THEN
        RAISE EXCEPTION 'content function % is VOLATILE', fn
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Declare it STABLE or IMMUTABLE (ALTER FUNCTION %s STABLE) if its result '
                                'depends only on the row; the worker compares it before and after embedding.', fn);
    END IF;
    IF fn_owner <> table_owner AND NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.oid = fn_owner) THEN
        RAISE EXCEPTION 'content function % is owned by %, not by the owner of % (%) or a superuser',
                fn, pg_get_userbyid(fn_owner), source, pg_get_userbyid(table_owner)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('It runs with the rights of the table''s owner; '
                                'ALTER FUNCTION %s OWNER TO %I if that role should be trusted with them.',
                                fn, pg_get_userbyid(table_owner));
    END IF;
END
$$;

-- The Alembic revision the schema was migrated to (NULL: installed without Alembic's record),
-- read by a starting worker to refuse a schema of another release with a message that says
-- what to run (worker/schema/revisions.py: mismatch). The record lives in `migrate`'s table, which worker
-- roles may not read: they are granted this function (worker_functions()).
CREATE FUNCTION embeddings_internal.schema_revision() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.to_regclass('public.embed_worker_alembic_version') IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT v.version_num FROM public.embed_worker_alembic_version v LIMIT 1);
END
$$;

-- Target definitions: the version a worker's write is checked against, and the rule for which
-- content functions may run with the worker's (often privileged) rights.

-- Locks target `target_id`'s registration FOR SHARE until the end of the calling transaction
-- and returns its definition version (NULL when the target is gone). The worker calls it first
-- in its write transaction and writes a target's rows only when the version is the one it read
-- the batch under: watch() updates the registration row, so it waits for writes in progress
-- and writes that start after it see the new version. SECURITY DEFINER because FOR SHARE needs
-- UPDATE rights on embeddings.targets, which the worker role must not have.
CREATE FUNCTION embeddings.lock_target_version(target_id integer) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.version FROM embeddings.targets t WHERE t.id = target_id FOR SHARE
$$;
REVOKE ALL ON FUNCTION embeddings.lock_target_version(integer) FROM PUBLIC;

-- Locks target `target_id`'s table, then its registration (lock_target_version), and returns
-- the definition version; the worker's write calls it for each target, in id order. ALTER
-- TABLE takes the table first and then, in the event trigger that follows renames, the
-- registration row: the same order makes the two wait in line instead of deadlocking. The
-- write needs ROW EXCLUSIVE on the table, but the worker holds only a column's UPDATE
-- privilege, which LOCK TABLE does not accept: planning an UPDATE of that column (EXPLAIN, so
-- nothing runs and no trigger fires) takes the same lock with the same privilege, so this runs
-- with the caller's rights. A chunked target only reads its table: ACCESS SHARE. Names stale
-- by now (renamed meanwhile) lock nothing: the version returned is then a newer one, and the
-- batch is handed back. Nothing to lock once the table is gone.
CREATE FUNCTION embeddings.lock_target(target_id integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    SELECT tg.source, tg.embedding_column, tg.chunk_table INTO t
    FROM embeddings.targets tg WHERE tg.id = lock_target.target_id;
    BEGIN
        IF t.source IS NULL THEN
            NULL;
        ELSIF t.chunk_table IS NOT NULL THEN
            EXECUTE format('LOCK TABLE %s IN ACCESS SHARE MODE', t.source);
        ELSE
            EXECUTE format('EXPLAIN UPDATE %s SET %I = %I WHERE false',
                           t.source, t.embedding_column, t.embedding_column);
        END IF;
    EXCEPTION WHEN undefined_column OR undefined_table THEN
        NULL;
    END;
    RETURN embeddings.lock_target_version(target_id);
END
$$;

-- Refuses a content function that cannot be trusted to run as the worker or sweep() (often a
-- superuser): one whose owner is neither the table's owner nor a superuser (anyone who owns
-- it can redefine it later), and a VOLATILE one (its result can change between loading the
-- content and writing the vector, so the content check of the write could never match).
CREATE FUNCTION embeddings.check_content_function(source regclass, fn regprocedure) RETURNS void
LANGUAGE plpgsql STABLE AS $$
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
                  HINT = format('The worker and embeddings.sweep() run it with their own rights; '
                                'ALTER FUNCTION %s OWNER TO %I if that role should be trusted with it.',
                                fn, pg_get_userbyid(table_owner));
    END IF;
END
$$;

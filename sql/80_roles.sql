-- A least-privilege role for the worker. `SELECT embeddings.grant_worker('embed_worker');` gives
-- an existing role exactly what `embed-worker run` needs, and watch() extends it to every table
-- registered later:
--   * USAGE on the schemas embeddings, embeddings_internal and pgmq; the registry tables to read, dead letters,
--     throughput and long documents' progress to write
--   * its queues' tables (leasing, acknowledging, retrying, archiving: pgmq's functions run
--     with the caller's rights)
--   * EXECUTE on the functions only worker roles may run (list below), and on every target's
--     functions that read and write its table as the table's owner (sql/32_access.sql)
-- and nothing on user tables: no SELECT, no UPDATE, no row-level security policy. The role needs
-- no superuser, no BYPASSRLS, no ownership of anything.

-- The current names of the worker roles that still exist (renamed: the new name; dropped: none,
-- so that watch() never tries to grant to a role that is gone).
CREATE FUNCTION embeddings_internal.worker_role_names() RETURNS SETOF name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.rolname FROM embeddings.worker_roles w
    JOIN pg_roles r ON CASE WHEN w.role_id IS NULL THEN r.rolname = w.role_name ELSE r.oid = w.role_id END
$$;

-- The functions of ours that worker roles may run and no one else (besides its owner), internals
-- most of them; and, while workers of the previous release may still run, the names it calls
-- them by (embeddings_internal.compat_worker_functions(), sql/95_compat_0_3_0.sql):
-- what they write is what operators read (queues, deferrals, provenance, backfills, model
-- changes). Postgres checks EXECUTE against the real caller (docs/security.md).
CREATE FUNCTION embeddings.worker_functions() RETURNS regprocedure[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY[
        'embeddings_internal.lock_target(integer)',
        'embeddings_internal.lock_target_version(integer)',
        'embeddings_internal.schema_revision()',  -- a starting worker refuses another release's schema
        'embeddings_internal.lock_documents(integer, text[])',  -- sql/41_locks.sql
        'embeddings_internal.move_inbox(text, integer, integer)',
        'embeddings_internal.inbox_pending(text)',
        'embeddings_internal.backfill_next(text, integer)',
        'embeddings_internal.backfill_rows_left(embeddings.targets)',
        'embeddings_internal.target_status(boolean)',  -- embeddings.status, embeddings.status_exact
        'embeddings_internal.stopped_targets()',  -- embeddings.stopped: status, doctor, /readyz, metrics
        'embeddings_internal.complete_changes()',
        'embeddings_internal.claim_provenance(integer, boolean, text, text, text)',
        'embeddings_internal.note_deferrals(integer[], text[], integer[])',
        'embeddings_internal.clear_deferrals(integer[])',
        'embeddings.wait_for_jobs(text, integer, boolean, integer)',
        'embeddings_internal.deferred_index_built(integer)',
        'embeddings.retry_failures(bigint[])',  -- `embed-worker failures --retry` as the worker role
        'embeddings_internal.record_fingerprints(integer, boolean, text[], text[])'  -- sql/64_verify.sql
    ]::regprocedure[]
$$;
COMMENT ON FUNCTION embeddings.worker_functions IS
    'The functions of embed-worker that grant_worker() lets worker roles run, and no one else but the owner.';

-- Grants `role_name` what the worker needs on one target (also called by watch()): its queues,
-- and its functions that run as the table's owner (sql/32_access.sql; generate_access() grants
-- those of targets watched or regenerated later itself). Its search functions (run as their
-- caller: sql/58_search.sql) go as search() goes (follow_search_grants()), as they go again each
-- time they are made: a worker role granted them here alone, without search(), lost them at the
-- next ALTER TABLE, and one granted search() lacked bm25_ranking (no digit in this name pattern).
CREATE FUNCTION embeddings_internal.grant_worker_target(role_name name, t embeddings.targets) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'embeddings'::regnamespace
          AND p.proname ~ ('^embeddings_' || t.id || '_[a-z_]+$') AND p.prorettype <> 'trigger'::regtype
          AND p.proname !~ '_(search|nearest|text_ranking|bm25_ranking|visible)$'
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, role_name);
    END LOOP;
    PERFORM embeddings_internal.follow_search_grants(t);
    PERFORM embeddings_internal.grant_worker_queue(role_name, t.queue);
    PERFORM embeddings_internal.grant_worker_queue(role_name, embeddings_internal.backfill_queue(t.queue));  -- lanes
END
$$;

CREATE FUNCTION embeddings_internal.grant_worker_queue(role_name name, queue_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON pgmq.%I TO %I',
                   pgmq.format_table_name(queue_name, 'q'), role_name);
    EXECUTE format('GRANT SELECT, INSERT ON pgmq.%I TO %I',
                   pgmq.format_table_name(queue_name, 'a'), role_name);
END
$$;

-- The refusals grant_worker() and grant_search() make of the role they are given (`purpose`:
-- 'worker' or 'search'), before they grant anything: NULL; PUBLIC (every role would be a
-- worker role; PUBLIC has what grant_search() gives unless it was revoked); for a worker role,
-- a role built into Postgres (pg_monitor, pg_database_owner, ...: Postgres reserves the prefix
-- pg_), each of whose members would be one; a role that does not exist. Reads pg_roles only.
CREATE FUNCTION embeddings_internal.check_grantee(role_name name, purpose text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF role_name IS NULL THEN
        RAISE EXCEPTION 'embeddings.grant_%(): role_name must not be NULL', purpose USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF role_name = 'public' AND purpose = 'search' THEN
        RAISE EXCEPTION 'PUBLIC has what grant_search() gives unless it was revoked: grant it to the role that searches'
            USING ERRCODE = 'reserved_name',
                  HINT = 'CREATE ROLE app_search LOGIN PASSWORD ''...''; SELECT embeddings.grant_search(''app_search'');';
    ELSIF role_name = 'public' OR role_name ~ '^pg_' AND purpose = 'worker' THEN
        RAISE EXCEPTION '%', CASE WHEN role_name = 'public' THEN 'PUBLIC cannot be a worker role: every role would be one'
                                  ELSE format('role %I is built into Postgres and cannot be a worker role: each of its members would be one', role_name) END
            USING ERRCODE = 'reserved_name',
                  HINT = 'Make a role for the worker alone: CREATE ROLE embed_worker LOGIN PASSWORD ''...''; SELECT embeddings.grant_worker(''embed_worker'');';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', role_name
            USING ERRCODE = 'undefined_object',
                  HINT = format('CREATE ROLE %I LOGIN PASSWORD ''...''; first.', role_name);
    END IF;
END
$$;

-- Gives `role_name`, a role of the installer's, what the worker needs. Never PUBLIC nor a role
-- built into Postgres (pg_monitor, pg_read_all_stats, pg_database_owner, ...: Postgres reserves
-- the prefix pg_): every login that is a member of one (a monitoring agent's, any database
-- owner's) would become a worker role, and read rows' content through the targets' functions,
-- the queues' keys, the dead letters (docs/security.md: such roles read what PUBLIC reads).
CREATE FUNCTION embeddings.grant_worker(role_name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
    q embeddings.queues;
    fn regprocedure;
    rel regclass;
    col name;
BEGIN
    PERFORM embeddings_internal.check_grantee(role_name, 'worker');
    EXECUTE format('GRANT USAGE ON SCHEMA embeddings, embeddings_internal, pgmq TO %I', role_name);
    EXECUTE format('GRANT SELECT ON embeddings.targets, embeddings.models, embeddings.queues, embeddings.status, embeddings.status_exact TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON embeddings.failures TO %I', role_name);
    -- (DELETE: each write prunes the target's minutes older than a day, worker/queries.sql)
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON embeddings.throughput TO %I', role_name);
    -- Long documents' progress, documents over the ceiling (55_chunks.sql).
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON embeddings.documents TO %I', role_name);
    EXECUTE format('GRANT SELECT ON embeddings.document_progress TO %I', role_name);
    EXECUTE format('GRANT SELECT ON pgmq.meta TO %I', role_name);
    -- It skips keys waiting in the inbox when it counts its queue (22_inbox.sql).
    EXECUTE format('GRANT SELECT ON embeddings.inbox TO %I', role_name);
    FOREACH fn IN ARRAY embeddings.worker_functions() || embeddings_internal.compat_worker_functions() LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, role_name);
    END LOOP;
    -- What it uses of ours that PUBLIC may use, its own: an administrator may revoke from PUBLIC
    -- what this schema grants it (REVOKE ... ON ALL FUNCTIONS / TABLES IN SCHEMA embeddings or
    -- embeddings_internal FROM PUBLIC), and the worker must keep working. Only what PUBLIC has now: nothing
    -- revoked from PUBLIC by design (sql/90_privileges.sql) is given.
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace IN ('embeddings'::regnamespace, 'embeddings_internal'::regnamespace)
          AND p.prokind IN ('f', 'p') AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
          AND p.proname !~ '^embeddings_[0-9]+_'
          AND (p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a
                                          WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, role_name);
    END LOOP;
    FOR rel IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.relnamespace = 'embeddings'::regnamespace AND c.relkind IN ('r', 'v', 'p')
          AND EXISTS (SELECT FROM aclexplode(c.relacl) a WHERE a.grantee = 0 AND a.privilege_type = 'SELECT')
    LOOP
        EXECUTE format('GRANT SELECT ON %s TO %I', rel, role_name);
    END LOOP;
    -- and the columns PUBLIC may read of a table it may not read whole (embeddings.backfills:
    -- all but its cursor, a row key).
    FOR rel, col IN
        SELECT c.oid::regclass, a.attname FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relnamespace = 'embeddings'::regnamespace AND c.relkind IN ('r', 'v', 'p')
          AND EXISTS (SELECT FROM aclexplode(a.attacl) x WHERE x.grantee = 0 AND x.privilege_type = 'SELECT')
    LOOP
        EXECUTE format('GRANT SELECT (%I) ON %s TO %I', col, rel, role_name);
    END LOOP;
    FOR q IN SELECT * FROM embeddings.queues LOOP
        PERFORM embeddings_internal.grant_worker_queue(role_name, q.name);
    END LOOP;
    FOR t IN SELECT * FROM embeddings.targets LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_class WHERE oid = t.source);
        PERFORM embeddings_internal.grant_worker_target(role_name, t);
    END LOOP;
    -- Roles renamed since they were granted go by their names now; dropped ones go.
    DELETE FROM embeddings.worker_roles w
    WHERE NOT EXISTS (SELECT FROM pg_roles r WHERE r.oid = w.role_id OR (w.role_id IS NULL AND r.rolname = w.role_name));
    UPDATE embeddings.worker_roles w SET role_name = r.rolname, role_id = r.oid
    FROM pg_roles r
    WHERE CASE WHEN w.role_id IS NULL THEN r.rolname = w.role_name ELSE r.oid = w.role_id END
      AND (w.role_name, w.role_id) IS DISTINCT FROM (r.rolname, r.oid);
    INSERT INTO embeddings.worker_roles AS w (role_name, role_id)
    VALUES (grant_worker.role_name, (SELECT r.oid FROM pg_roles r WHERE r.rolname = grant_worker.role_name))
    ON CONFLICT ON CONSTRAINT worker_roles_pkey DO UPDATE SET role_id = excluded.role_id;
END
$$;
COMMENT ON FUNCTION embeddings.grant_worker IS
    'Gives an existing role exactly what `embed-worker run` needs; watch() extends it to tables watched later. Schema owner only.';

-- Gives `role_name`, by name, what searches run of ours with their caller's rights, which PUBLIC
-- has on a schema as installed: USAGE on both schemas, the registry's targets and rerankers to
-- read, EXECUTE on embeddings_internal.public_functions() (search(), hybrid_search(),
-- match_chunks() and the internals they call) and on each target's functions that searches
-- run as their caller (its search, nearest, rankings and store policy's visible()). Where an
-- administrator revoked PUBLIC's rights (docs/security.md), a search role (POST /search's,
-- an application's) keeps searching; what it finds stays what its own SELECT on the tables
-- and their row-level security let it read. Nothing that PUBLIC lacks as installed is given.
-- Targets watched later, and those whose functions are made again, follow (follow_search_grants()).
CREATE FUNCTION embeddings.grant_search(role_name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fn regprocedure;
BEGIN
    PERFORM embeddings_internal.check_grantee(role_name, 'search');
    EXECUTE format('GRANT USAGE ON SCHEMA embeddings, embeddings_internal TO %I', role_name);
    EXECUTE format('GRANT SELECT ON embeddings.targets, embeddings.rerankers TO %I', role_name);
    FOREACH fn IN ARRAY embeddings_internal.public_functions() LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, role_name);
    END LOOP;
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'embeddings'::regnamespace
          AND p.proname ~ '^embeddings_[0-9]+_(search|nearest|text_ranking|bm25_ranking|visible)$'
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, role_name);
    END LOOP;
END
$$;
COMMENT ON FUNCTION embeddings.grant_search IS
    'Gives an existing role by name what searches use of ours that PUBLIC has as installed, for a database where PUBLIC''s rights were revoked. Schema owner only.';

-- Target t's search functions (search_code(), sql/58_search.sql: those run as their caller,
-- which grant_search() gives by name), just made by generate_search() or granted to a worker
-- role (grant_worker_target()), given as search() is given: EXECUTE to every role that may
-- execute search() by a grant of its own (the search roles of grant_search(), a worker role of
-- grant_worker() made while PUBLIC had search()), and where an administrator revoked PUBLIC's
-- EXECUTE on search() (docs/security.md, "Revoking from PUBLIC") not to PUBLIC either. Those
-- roles' grants are made as installed too (PUBLIC has the functions as made): functions made
-- before a revocation stay theirs after it, as those made after it are (a grant of
-- grant_search() or grant_worker() made before the revocation, then an ALTER TABLE, then the
-- revocation, left them PUBLIC's alone, and the revocation took them from everyone).
-- search()'s ACL is the record, no table: it is the entry point every search goes through
-- (hybrid_search() and match_chunks() are granted with it, by the same list), and its name
-- needs no list read. As installed with no such role (search()'s ACL NULL), nothing changes.
CREATE FUNCTION embeddings_internal.follow_search_grants(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    entry oid := to_regprocedure(format('embeddings.search(regclass, %I.halfvec, integer, jsonb, name)',
                                        embeddings.vector_schema()));
    acl aclitem[];
    entry_owner oid;
    public_too boolean;
    fn regprocedure;
    grantee name;
BEGIN
    SELECT p.proacl, p.proowner INTO acl, entry_owner FROM pg_proc p WHERE p.oid = entry;
    IF acl IS NULL THEN
        RETURN;
    END IF;
    public_too := EXISTS (SELECT FROM aclexplode(acl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE');
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'embeddings'::regnamespace
          AND p.proname ~ ('^embeddings_' || t.id || '_(search|nearest|text_ranking|bm25_ranking|visible)$')
    LOOP
        IF NOT public_too THEN
            EXECUTE embeddings_internal.render('REVOKE ALL ON FUNCTION %(fn)s FROM PUBLIC', jsonb_build_object('fn', fn::text));
        END IF;
        FOR grantee IN
            SELECT DISTINCT r.rolname FROM aclexplode(acl) a JOIN pg_roles r ON r.oid = a.grantee
            WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> entry_owner
        LOOP
            EXECUTE embeddings_internal.render('GRANT EXECUTE ON FUNCTION %(fn)s TO %(role)I',
                                               jsonb_build_object('fn', fn::text, 'role', grantee));
        END LOOP;
    END LOOP;
END
$$;

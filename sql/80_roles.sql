-- A least-privilege role for the worker. `SELECT embeddings.grant_worker('embed_worker');` gives
-- an existing role exactly what `embed-worker run` needs, and watch() extends it to every table
-- registered later:
--   * USAGE on the schemas embeddings and pgmq; the registry tables to read, dead letters,
--     throughput and long documents' progress to write
--   * its queues' tables (leasing, acknowledging, retrying, archiving: pgmq's functions run
--     with the caller's rights)
--   * EXECUTE on the functions only worker roles may run (list below), and on every target's
--     functions that read and write its table as the table's owner (sql/32_access.sql)
-- and nothing on user tables: no SELECT, no UPDATE, no row-level security policy. The role needs
-- no superuser, no BYPASSRLS, no ownership of anything.

CREATE TABLE IF NOT EXISTS embeddings.worker_roles (
    role_name name PRIMARY KEY
);

-- The functions of this schema that worker roles may run and no one else (besides its owner):
-- what they write is what operators read (queues, deferrals, provenance, backfills, model
-- changes). Postgres checks EXECUTE against the real caller (docs/security.md).
CREATE FUNCTION embeddings.worker_functions() RETURNS regprocedure[]
LANGUAGE sql STABLE AS $$
    SELECT ARRAY[
        'embeddings.lock_target(integer)',
        'embeddings.lock_target_version(integer)',
        'embeddings.move_inbox(text, integer, integer)',
        'embeddings.inbox_pending(text)',
        'embeddings.backfill_next(text, integer)',
        'embeddings.backfill_rows_left(embeddings.targets)',
        'embeddings.target_status(boolean)',  -- embeddings.status, embeddings.status_exact
        'embeddings.complete_changes()',
        'embeddings.claim_provenance(integer, boolean, text, text, text)',
        'embeddings.note_deferrals(integer[], text[], integer[])',
        'embeddings.clear_deferrals(integer[])',
        'embeddings.wait_for_jobs(text, integer, boolean, integer)',
        'embeddings.deferred_index_built(integer)',
        'embeddings.retry_failures(bigint[])'  -- `embed-worker failures --retry` as the worker role
    ]::regprocedure[]
$$;

-- Grants `role_name` what the worker needs on one target (also called by watch()): its queues,
-- and its functions (sql/32_access.sql; generate_access() grants those of targets watched or
-- regenerated later itself).
CREATE FUNCTION embeddings.grant_worker_target(role_name name, t embeddings.targets) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'embeddings'::regnamespace
          AND p.proname ~ ('^embeddings_' || t.id || '_[a-z_]+$') AND p.prorettype <> 'trigger'::regtype
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, role_name);
    END LOOP;
    PERFORM embeddings.grant_worker_queue(role_name, t.queue);
    PERFORM embeddings.grant_worker_queue(role_name, embeddings.backfill_queue(t.queue));  -- lanes
END
$$;

CREATE FUNCTION embeddings.grant_worker_queue(role_name name, queue_name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON pgmq.%I TO %I',
                   pgmq.format_table_name(queue_name, 'q'), role_name);
    EXECUTE format('GRANT SELECT, INSERT ON pgmq.%I TO %I',
                   pgmq.format_table_name(queue_name, 'a'), role_name);
END
$$;

CREATE FUNCTION embeddings.grant_worker(role_name name) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t embeddings.targets;
    q embeddings.queues;
    fn regprocedure;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', role_name
            USING ERRCODE = 'undefined_object',
                  HINT = format('CREATE ROLE %I LOGIN PASSWORD ''...''; first.', role_name);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA embeddings, pgmq TO %I', role_name);
    EXECUTE format('GRANT SELECT ON embeddings.targets, embeddings.models, embeddings.queues, embeddings.status, embeddings.status_exact TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON embeddings.failures TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON embeddings.throughput TO %I', role_name);
    -- Long documents' progress, documents over the ceiling (55_chunks.sql).
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON embeddings.documents TO %I', role_name);
    EXECUTE format('GRANT SELECT ON embeddings.document_progress TO %I', role_name);
    EXECUTE format('GRANT SELECT ON pgmq.meta TO %I', role_name);
    -- It skips keys waiting in the inbox when it counts its queue (22_inbox.sql).
    EXECUTE format('GRANT SELECT ON embeddings.inbox TO %I', role_name);
    FOREACH fn IN ARRAY embeddings.worker_functions() LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, role_name);
    END LOOP;
    FOR q IN SELECT * FROM embeddings.queues LOOP
        PERFORM embeddings.grant_worker_queue(role_name, q.name);
    END LOOP;
    FOR t IN SELECT * FROM embeddings.targets LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_class WHERE oid = t.source);
        PERFORM embeddings.grant_worker_target(role_name, t);
    END LOOP;
    INSERT INTO embeddings.worker_roles VALUES (role_name) ON CONFLICT DO NOTHING;
END
$$;

-- Databases from before 0.2.0, when worker roles read and wrote watched tables themselves: the
-- row-level security policies and the privileges on embedding columns and chunk tables that
-- grant_worker() gave them go (a table-level SELECT stays: other code may rely on it; revoke it
-- by hand where nothing does).
DO $$
DECLARE
    t embeddings.targets;
    worker_role name;
    policy name;
BEGIN
    FOR t IN SELECT * FROM embeddings.targets tg WHERE EXISTS (SELECT FROM pg_class c WHERE c.oid = tg.source) LOOP
        FOR worker_role IN SELECT r.role_name FROM embeddings.worker_roles r
                           WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = r.role_name) LOOP
            FOR policy IN SELECT p.polname FROM pg_policy p
                          WHERE p.polrelid = t.source
                            AND p.polname IN ('embeddings_worker_' || worker_role, 'embeddings_worker_' || worker_role || '_update')
            LOOP
                EXECUTE format('DROP POLICY %I ON %s', policy, t.source);
            END LOOP;
            IF t.chunk_table IS NULL AND embeddings.attnum_of(t.source, t.embedding_column) IS NOT NULL THEN
                EXECUTE format('REVOKE UPDATE (%I) ON %s FROM %I', t.embedding_column, t.source, worker_role);
            ELSIF t.chunk_table IS NOT NULL AND EXISTS (SELECT FROM pg_class c WHERE c.oid = t.chunk_table) THEN
                EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON %s FROM %I', t.chunk_table, worker_role);
            END IF;
        END LOOP;
    END LOOP;
END
$$;

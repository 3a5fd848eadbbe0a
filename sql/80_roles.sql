-- A least-privilege role for the worker. `SELECT embeddings.grant_worker('embed_worker');` gives
-- an existing role exactly what `embed-worker run` needs, and watch() extends it to every table
-- registered later:
--   * USAGE on the schemas embeddings and pgmq; the registry tables to read, dead letters and
--     throughput to write
--   * its queues' tables (leasing, acknowledging, retrying, archiving: pgmq's functions run
--     with the caller's rights)
--   * per watched table: SELECT (keys, content, whatever a content function reads) and UPDATE of
--     the embedding column only; for a chunked target, its chunk table instead of the column
--   * where a table has row-level security, policies that let the worker see and update every
--     row (FOR SELECT and FOR UPDATE only: a worker role that also inserts or deletes as an
--     application stays under the table's own policies for that): otherwise rows it cannot
--     see look deleted and their jobs would be dropped
-- The role needs no superuser, no BYPASSRLS, no ownership of anything.

CREATE TABLE IF NOT EXISTS embeddings.worker_roles (
    role_name name PRIMARY KEY
);

-- Grants `role_name` what the worker needs on one target (also called by watch()).
CREATE FUNCTION embeddings.grant_worker_target(role_name name, t embeddings.targets) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    policy name := 'embeddings_worker_' || role_name;
BEGIN
    EXECUTE format('GRANT SELECT ON %s TO %I', t.source, role_name);
    IF t.chunk_table IS NULL THEN
        EXECUTE format('GRANT UPDATE (%I) ON %s TO %I', t.embedding_column, t.source, role_name);
        -- model change: the shadow column of a change in progress (sql/44_changes.sql)
        PERFORM embeddings.grant_worker_shadow(role_name, t.source, mc.shadow_column)
        FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
    ELSE
        -- A chunked target's vectors live in its chunk table (sql/55_chunks.sql).
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I', t.chunk_table, role_name);
    END IF;
    IF (SELECT relrowsecurity FROM pg_class WHERE oid = t.source) THEN
        IF NOT EXISTS (SELECT FROM pg_policy WHERE polrelid = t.source AND polname = policy) THEN
            EXECUTE format('CREATE POLICY %I ON %s FOR SELECT TO %I USING (true)',
                           policy, t.source, role_name);
        END IF;
        IF NOT EXISTS (SELECT FROM pg_policy WHERE polrelid = t.source AND polname = policy || '_update') THEN
            EXECUTE format('CREATE POLICY %I ON %s FOR UPDATE TO %I USING (true) WITH CHECK (true)',
                           policy || '_update', t.source, role_name);
        END IF;
    END IF;
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
    EXECUTE format('GRANT SELECT ON pgmq.meta TO %I', role_name);
    -- Its write transaction locks the registrations it writes for (definition versions).
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.lock_target_version(integer) TO %I', role_name);
    -- It moves the triggers' keys into its live queue before reading that, and skips keys
    -- waiting there when it steps a backfill (22_inbox.sql).
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.move_inbox(text, integer, integer) TO %I', role_name);
    EXECUTE format('GRANT SELECT ON embeddings.inbox TO %I', role_name);
    -- It steps the backfills of its queue's targets when the queue is empty (62_backfill.sql).
    EXECUTE format('GRANT SELECT, UPDATE, DELETE ON embeddings.backfills TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.send_backfill(integer, jsonb[]) TO %I', role_name);
    -- model change: it completes changes and records which model produced the vectors.
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.complete_changes() TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.claim_provenance(integer, boolean, text, text, text) TO %I', role_name);
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

CREATE FUNCTION embeddings.drop_worker_policies(t embeddings.targets) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    policy name;
BEGIN
    FOR policy IN
        SELECT p.polname FROM pg_policy p
        JOIN embeddings.worker_roles r
          ON p.polname IN ('embeddings_worker_' || r.role_name, 'embeddings_worker_' || r.role_name || '_update')
        WHERE p.polrelid = t.source
    LOOP
        EXECUTE format('DROP POLICY %I ON %s', policy, t.source);
    END LOOP;
END
$$;

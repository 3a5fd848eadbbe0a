-- Worker roles (80_roles.sql: grant_worker()).

-- A role by its oid (`role_id`; NULL in a row that named the role only, until grant_worker()
-- runs again): a role renamed since keeps its grants on tables watched later. `role_name` is its
-- name when it was granted; worker_role_names() has the current ones.
CREATE TABLE IF NOT EXISTS embeddings.worker_roles (
    role_name name PRIMARY KEY,
    role_id oid
);

-- Worker roles reach watched tables only through the functions that run as the tables' owners
-- (32_access.sql), never with rights of their own: the row-level security policies and the
-- privileges on embedding columns and chunk tables that grant_worker() gave them in an older
-- install go (a table-level SELECT stays: other code may rely on it; revoke it by hand where
-- nothing does). Revision 0002's upgrade.sql relies on it.
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
            IF t.chunk_table IS NULL AND EXISTS (SELECT FROM pg_attribute a
                                                 WHERE a.attrelid = t.source AND a.attname = t.embedding_column
                                                   AND a.attnum > 0 AND NOT a.attisdropped) THEN
                EXECUTE format('REVOKE UPDATE (%I) ON %s FROM %I', t.embedding_column, t.source, worker_role);
            ELSIF EXISTS (SELECT FROM pg_class c WHERE c.oid = t.chunk_table) THEN
                EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON %s FROM %I', t.chunk_table, worker_role);
            END IF;
        END LOOP;
    END LOOP;
END
$$;

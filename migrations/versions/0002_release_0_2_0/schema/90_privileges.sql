-- Who may run what (docs/security.md has the table of roles and actions). Functions are
-- EXECUTE to PUBLIC by default: every function of this schema is revoked from PUBLIC here, and
-- granted back only where it can change nothing: the STABLE and IMMUTABLE functions that are
-- not SECURITY DEFINER (SQL builders, status, match_chunks(): they write nothing, and read with
-- their caller's rights). The rest is for this schema's owner (install, watch(), sweep(),
-- model changes, retries), for the worker roles (embeddings.worker_functions(), granted by
-- grant_worker()), or run by our triggers and event triggers (whose EXECUTE is not checked when
-- they fire). Postgres checks EXECUTE against the real caller, so nothing here relies on
-- current_user inside a SECURITY DEFINER function. The functions generated per target
-- (embeddings_<id>_*) are granted as they are made (sql/30_triggers.sql, sql/32_access.sql).
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'embeddings'::regnamespace AND p.proname !~ '^embeddings_[0-9]+_'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    END LOOP;
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'embeddings'::regnamespace AND p.proname !~ '^embeddings_[0-9]+_'
          AND p.provolatile <> 'v' AND NOT p.prosecdef AND p.prokind = 'f'
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', fn);
    END LOOP;
END
$$;

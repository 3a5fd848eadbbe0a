-- Extensions the `embeddings` schema stands on.
--
--   vector   required: pgvector >= 0.7 (halfvec columns, HNSW with halfvec_cosine_ops).
--   pgmq     required: the extension when the server offers it. Servers that cannot add it
--            (some managed services) get the SQL bundled in the pgmq PyPI package installed as
--            plain SQL instead; worker/schema/install.py does that before running this file.
--   pg_cron  optional: schedules embeddings.sweep() (see 60_sweep.sql).
--   pg_net   optional: lets embeddings.dispatch() push jobs to the worker over HTTP.
-- Optional extensions that are missing, not preloaded or not permitted are skipped with a
-- NOTICE naming what was skipped and why; nothing else depends on them at install time.

DO $$
DECLARE
    available text;
BEGIN
    SELECT default_version INTO available FROM pg_available_extensions WHERE name = 'vector';
    IF available IS NULL THEN
        RAISE EXCEPTION 'pgvector (extension "vector") is not installed on this server'
            USING HINT = 'Install pgvector >= 0.7; on Debian/Ubuntu `make db` shows how (scripts/postgres-deps.sh).';
    END IF;
END
$$;

-- Where it is missing, in `public`, named: migrate's search path holds pg_catalog only.
CREATE EXTENSION IF NOT EXISTS vector SCHEMA public;

DO $$
DECLARE
    installed text := (SELECT extversion FROM pg_extension WHERE extname = 'vector');
BEGIN
    IF string_to_array(split_part(installed, '-', 1), '.')::int[] < ARRAY[0, 7] THEN
        RAISE EXCEPTION 'pgvector % is too old: halfvec needs 0.7 or newer', installed
            USING HINT = 'ALTER EXTENSION vector UPDATE after installing a newer pgvector.';
    END IF;
END
$$;

DO $$
BEGIN
    IF to_regclass('pgmq.meta') IS NOT NULL THEN
        RETURN;  -- already there, as an extension or as plain SQL
    END IF;
    IF NOT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pgmq') THEN
        RAISE EXCEPTION 'pgmq is neither installed nor available as an extension'
            USING HINT = 'Run `embed-worker migrate`, which installs pgmq''s SQL when the extension is missing.';
    END IF;
    CREATE EXTENSION pgmq;
END
$$;

DO $$
DECLARE
    cron_db text;
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
        RETURN;
    ELSIF NOT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_cron') THEN
        RAISE NOTICE 'pg_cron skipped: not available on this server (embeddings.sweep() can still be scheduled by other means)';
        RETURN;
    END IF;
    -- Preloaded, pg_cron's settings are readable by superusers and pg_read_all_settings only:
    -- a database's owner that is neither (a managed service's installer) is told, not failed.
    BEGIN
        cron_db := current_setting('cron.database_name', true);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'pg_cron skipped: % may not read cron.database_name, the database pg_cron runs jobs in (it needs pg_read_all_settings); as a superuser, SHOW cron.database_name: if it is %, run CREATE EXTENSION pg_cron in it, then SELECT embeddings.schedule_sweep(); if another, `embed-worker doctor` says how to schedule the sweep from there',
            current_user, current_database();
        RETURN;
    END;
    IF cron_db IS NULL THEN
        RAISE NOTICE 'pg_cron skipped: not in shared_preload_libraries';
    ELSIF cron_db <> current_database() THEN
        RAISE NOTICE 'pg_cron skipped: it runs in database "%" (cron.database_name), not "%"', cron_db, current_database();
    ELSE
        BEGIN
            CREATE EXTENSION pg_cron;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'pg_cron skipped: %', SQLERRM;
        END;
    END IF;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_net') THEN
        RETURN;
    ELSIF NOT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_net') THEN
        RAISE NOTICE 'pg_net skipped: not available on this server (embeddings.dispatch() needs it)';
    ELSE
        BEGIN
            CREATE EXTENSION pg_net;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'pg_net skipped: %', SQLERRM;
        END;
    END IF;
END
$$;

-- Release 0.4.0, revision 0020: the tables of 0.3.0 brought up to date, before the code of
-- 0.4.0 is installed over them (migrations/versions/0020_release_0_4_0.py).
--
-- Every statement here is idempotent: ALTER TABLE ... ADD COLUMN IF NOT EXISTS, conversions
-- that leave converted rows alone. Tables new in 0.4.0 need no line here: sql/ creates them.
--
-- The internals' move to schema embeddings_internal needs no line here either: the schema is
-- state (sql/state/10_schema.sql makes it, or refuses one that is not ours), and the functions
-- are code, which the reinstall after this file drops from embeddings (all but the generated
-- embeddings_<id>_* ones, which stay) and creates from sql/ in embeddings_internal, in this
-- same transaction (worker/schema/code.py); sql/95_compat_0_3_0.sql keeps the names 0.3.0's
-- workers call.

-- Full-text fields (sql/59_hybrid.sql): the title's weight. With IF NOT EXISTS the column and
-- its check come together or not at all.
ALTER TABLE embeddings.targets ADD COLUMN IF NOT EXISTS fts_title_weight double precision
    CONSTRAINT targets_fts_title_weight_check CHECK (fts_title_weight >= 1);

-- Store kinds (sql/54_stores.sql): the kind is a column of its own, written by watch(), and the
-- table the vectors are written to another (store_table: the table itself for the row store),
-- where the kind was derived from two nullable columns. Those two, chunk_table and side_table,
-- stay for 0.3.0's workers during a rolling upgrade, derived from the new ones. The old pair is
-- renamed before the new is added and dropped after: the event triggers of the release being
-- upgraded still run (its code is replaced after this file), and name them.
SELECT pg_catalog.set_config('embeddings.following', 'on', true);  -- our DDL: nothing to follow
ALTER TABLE embeddings.targets ADD COLUMN IF NOT EXISTS store_table regclass;
UPDATE embeddings.targets SET store_table = coalesce(side_table, chunk_table, source) WHERE store_table IS NULL;
ALTER TABLE embeddings.targets ALTER COLUMN store_table SET NOT NULL;
ALTER TABLE embeddings.targets ALTER COLUMN store_kind DROP EXPRESSION IF EXISTS;
ALTER TABLE embeddings.targets DROP CONSTRAINT IF EXISTS targets_store_kind_check,
    ADD CONSTRAINT targets_store_kind_check CHECK (store_kind ~ '^[a-z]+$');
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = 'embeddings.targets'::regclass
               AND a.attname = 'chunk_table' AND a.attgenerated = '' AND NOT a.attisdropped) THEN
        ALTER TABLE embeddings.targets RENAME COLUMN chunk_table TO chunk_table_until_0_4_0;
        ALTER TABLE embeddings.targets RENAME COLUMN side_table TO side_table_until_0_4_0;
        ALTER TABLE embeddings.targets
            ADD COLUMN chunk_table regclass GENERATED ALWAYS AS (CASE WHEN store_kind = 'chunks' THEN store_table END) STORED,
            ADD COLUMN side_table regclass GENERATED ALWAYS AS (CASE WHEN store_kind = 'side' THEN store_table END) STORED;
        ALTER TABLE embeddings.targets DROP COLUMN chunk_table_until_0_4_0, DROP COLUMN side_table_until_0_4_0;
    END IF;
END
$$;
-- Document chunks' full text reads their heading paths (sql/59_hybrid.sql: headed_fts_sql()):
-- a document target's chunk table with full-text search gets its generated tsvector column again,
-- at the end, with the expression headed_fts_sql() gives (Postgres 15 cannot change a generated
-- column's expression in place; the code that builds it is installed after this file, so it is
-- written out here, as sql/ would write it). Rewrites that chunk table and rebuilds its indexes,
-- its HNSW index too (docs/upgrading.md). Plain text's chunks hold no heading: their tables stay.
-- Done where the column does not read `headings` yet (idempotent).
DO $$
DECLARE
    t record;
    dots text := E'(\\w)\\.(?=\\w)';
    path text := (SELECT string_agg(format('coalesce(headings[%s], '''')', i),
                                    ' OPERATOR(pg_catalog.||) '' '' OPERATOR(pg_catalog.||) ' ORDER BY i)
                  FROM pg_catalog.generate_series(1, 9) AS i);
BEGIN
    FOR t IN
        SELECT tg.store_table::regclass AS rel, tg.fts_config::text AS config, tg.fts_column AS col
        FROM embeddings.targets tg
        JOIN pg_catalog.pg_attribute f ON f.attrelid = tg.store_table AND f.attname = tg.fts_column
                                      AND f.attnum > 0 AND NOT f.attisdropped AND f.attgenerated = 's'
        JOIN pg_catalog.pg_attribute h ON h.attrelid = tg.store_table AND h.attname = 'headings'
                                      AND h.attnum > 0 AND NOT h.attisdropped
        WHERE tg.store_kind = 'chunks' AND tg.document_format IS NOT NULL AND tg.fts_config IS NOT NULL
          AND NOT EXISTS (SELECT FROM pg_catalog.pg_attrdef d
                          JOIN pg_catalog.pg_depend p ON p.classid = 'pg_catalog.pg_attrdef'::regclass AND p.objid = d.oid
                          WHERE d.adrelid = tg.store_table AND d.adnum = f.attnum
                            AND p.refclassid = 'pg_catalog.pg_class'::regclass AND p.refobjid = tg.store_table
                            AND p.refobjsubid = h.attnum)
        ORDER BY tg.id
    LOOP
        EXECUTE format('ALTER TABLE %s DROP COLUMN %I', t.rel, t.col);
        EXECUTE format(
            'ALTER TABLE %1$s ADD COLUMN %2$I tsvector GENERATED ALWAYS AS ('
            'CASE WHEN pg_catalog.cardinality(headings) OPERATOR(pg_catalog.>) 0'
            ' THEN pg_catalog.setweight(pg_catalog.to_tsvector(%3$L::pg_catalog.regconfig, pg_catalog.regexp_replace(%4$s, %5$L, %6$L, ''g'')), ''A'')'
            ' OPERATOR(pg_catalog.||) pg_catalog.to_tsvector(%3$L::pg_catalog.regconfig, pg_catalog.regexp_replace(chunk, %5$L, %6$L, ''g''))'
            ' ELSE pg_catalog.to_tsvector(%3$L::pg_catalog.regconfig, pg_catalog.regexp_replace(chunk, %5$L, %6$L, ''g'')) END) STORED',
            t.rel, t.col, t.config, path, dots, E'\\1 ');
        EXECUTE format('CREATE INDEX ON %s USING gin (%I)', t.rel, t.col);
    END LOOP;
END
$$;
-- A store made by watch() may be of any kind apart from its table.
ALTER TABLE embeddings.made_tables DROP CONSTRAINT IF EXISTS made_tables_kind_check,
    ADD CONSTRAINT made_tables_kind_check CHECK (kind ~ '^[a-z]+$');
-- Dead letters (worker/queries.sql: record_failures, resolve_failures): a row's earlier one is
-- found, and replaced, when it is dead-lettered again; found, and removed, when it is written.
CREATE INDEX IF NOT EXISTS failures_row_key ON embeddings.failures USING hash (row_key);
CREATE INDEX IF NOT EXISTS failures_row_key_text ON embeddings.failures USING hash ((row_key #>> ARRAY[]::text[]));
-- Documents with no text (sql/state/55_chunks.sql): a third state of embeddings.documents, so
-- that sweep() stops queuing them again. (The constraint's name is the one CREATE TABLE gives.)
ALTER TABLE embeddings.documents DROP CONSTRAINT IF EXISTS documents_state_check,
    ADD CONSTRAINT documents_state_check CHECK (state IN ('in_progress', 'over_ceiling', 'no_text'));
-- A model change's swap that fails (sql/44_changes.sql: complete_changes()), recorded for the
-- stopped state swap_failed (sql/52_stopped.sql).
ALTER TABLE embeddings.model_changes ADD COLUMN IF NOT EXISTS swap_error text,
    ADD COLUMN IF NOT EXISTS swap_failed_since timestamptz;
-- Dead letters of deleted rows, resolved by sweep() a step at a time (sql/60_sweep.sql:
-- resolve_gone_failures()): its cursor, and the index it walks (by target, then id), which
-- serves what the index by target alone served.
ALTER TABLE embeddings.sweep_cursors ADD COLUMN IF NOT EXISTS failures_after bigint;
CREATE INDEX IF NOT EXISTS failures_target_id_id ON embeddings.failures (target_id, id);
DROP INDEX IF EXISTS embeddings.failures_target_id;
SELECT pg_catalog.set_config('embeddings.following', 'off', true);

-- Worker roles that grant_worker() took before 0.4.0 and refuses now: the roles built into
-- Postgres (pg_monitor, ...: sql/80_roles.sql says why; PUBLIC it always refused, as a role
-- pg_roles does not list). Every member of such a role (a monitoring agent's login, a database
-- owner) could run the targets' functions, which read and write watched tables as their
-- owners, and write the dead letters and long documents' progress. What grant_worker() gave it
-- is taken back here and its row goes, with a NOTICE naming what was revoked. (Kept, they failed
-- the upgrade too: the reinstall after this file grants every registered worker role again, and
-- grant_worker() refuses these now.) Taken back: every right on schema embeddings, its tables
-- and views and its functions (the targets' included), a grant made by hand included: such a
-- role reads what PUBLIC reads and nothing more (docs/security.md), and the reinstall would
-- keep a right on our functions and views of a role that is no worker role. And on schema pgmq
-- and pgmq.meta, but for pg_monitor, to which pgmq grants them itself (its grants on our
-- queues' tables every install takes back: embeddings_internal.revoke_pgmq_grants()).
DO $$
DECLARE
    w embeddings.worker_roles;
    grantee text;
    fn regprocedure;
BEGIN
    FOR w IN SELECT * FROM embeddings.worker_roles r WHERE r.role_name ~ '^pg_' ORDER BY r.role_name LOOP
        DELETE FROM embeddings.worker_roles r WHERE r.role_name = w.role_name;
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = w.role_name);
        grantee := quote_ident(w.role_name);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA embeddings FROM %s', grantee);
        FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE n.nspname IN ('embeddings', 'embeddings_internal') LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', fn, grantee);
        END LOOP;
        EXECUTE format('REVOKE ALL ON SCHEMA embeddings FROM %s', grantee);
        IF w.role_name <> 'pg_monitor' THEN
            EXECUTE format('REVOKE ALL ON pgmq.meta FROM %s', grantee);
            EXECUTE format('REVOKE ALL ON SCHEMA pgmq FROM %s', grantee);
        END IF;
        RAISE NOTICE 'embeddings: role % is built into Postgres and was a worker role (grant_worker() refuses it since 0.4.0: each of its members was one); revoked from it every right on schema embeddings, its tables, views and functions%',
            grantee, CASE WHEN w.role_name <> 'pg_monitor' THEN ', and on schema pgmq and pgmq.meta' ELSE '' END
            USING HINT = 'Make a role for the worker alone: CREATE ROLE embed_worker LOGIN PASSWORD ''...''; SELECT embeddings.grant_worker(''embed_worker'');';
    END LOOP;
END
$$;

-- What a batch read under a target's definition version depends on, digested (sql/42_definitions.sql:
-- definition_digest()): a schema change that leaves it alone keeps the version. Filled for
-- every target by the code's reinstall after this file (sql/99_regenerate.sql), which makes the
-- function: left NULL, the first schema change after the upgrade gave each target a new version
-- once, and the batches in flight were handed back.
ALTER TABLE embeddings.targets ADD COLUMN IF NOT EXISTS definition_digest text;

-- Bulk statements go to the backfill lane (sql/22_inbox.sql, bulk_statement_keys()): each inbox
-- row says how many keys its statement wrote; NULL in the rows 0.3.0's triggers wrote, which
-- are moved live, as before.
ALTER TABLE embeddings.inbox ADD COLUMN IF NOT EXISTS statement_keys integer;

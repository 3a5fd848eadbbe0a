-- Revision 0002 (correctness, issue 12): what changed in sql/ since 0001, and only that.
--   * embeddings.targets.version: the definition version watch() bumps; the worker's write
--     locks the registration and rejects batches read under an older version
--   * embeddings.lock_target_version(), embeddings.check_content_function() (42_definitions.sql)
--   * watch(): bumps the version; refuses untrusted and VOLATILE content functions
--   * sweep(): a raising content function is isolated per target and per row (sweep_rows)
--   * grant_worker(): row-security policies FOR SELECT and FOR UPDATE instead of FOR ALL
-- Functions are replaced with the same text as sql/ (a fresh install and a migrated database
-- must dump identically).

ALTER TABLE embeddings.targets ADD COLUMN version integer NOT NULL DEFAULT 1;

-- sql/42_definitions.sql (new)
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

-- from sql/40_watch.sql
CREATE OR REPLACE FUNCTION embeddings.watch(
    source regclass,
    content text,
    embedding_column name DEFAULT 'embedding',
    model text DEFAULT 'gte-small',
    triggers boolean DEFAULT true,
    clear_on_update boolean DEFAULT true,
    queue text DEFAULT 'embedding_jobs'
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    dims integer;
    rel_kind "char";
    rel_schema name;
    rel_name name;
    key_names name[];
    key_types regtype[];
    content_col name;
    content_fn regprocedure;
    content_type regtype;
    emb_type regtype;
    emb_typmod integer;
    emb_exists boolean;
    vschema name := embeddings.vector_schema();
    previous embeddings.targets;
    t embeddings.targets;
    fresh boolean;
    reembed boolean := false;
    backfill text;
BEGIN
    IF source IS NULL OR content IS NULL OR embedding_column IS NULL OR model IS NULL
       OR triggers IS NULL OR clear_on_update IS NULL OR queue IS NULL THEN
        RAISE EXCEPTION 'embeddings.watch(): arguments must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;

    -- The table.
    SELECT c.relkind, n.nspname, c.relname INTO rel_kind, rel_schema, rel_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source;
    IF rel_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', source USING ERRCODE = 'wrong_object_type';
    END IF;

    -- The model.
    SELECT m.dimensions INTO dims FROM embeddings.models m WHERE m.name = model;
    IF dims IS NULL THEN
        RAISE EXCEPTION 'unknown model "%"', model
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Known models: %s. Add one with INSERT INTO embeddings.models.',
                                (SELECT string_agg(m.name, ', ' ORDER BY m.name) FROM embeddings.models m));
    END IF;

    -- The primary key: one column of a type jobs can carry in JSON.
    SELECT array_agg(a.attname ORDER BY k.ord), array_agg(a.atttypid::regtype ORDER BY k.ord)
    INTO key_names, key_types
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = source AND i.indisprimary;
    IF key_names IS NULL THEN
        RAISE EXCEPTION 'table % has no primary key', source
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'embed-worker finds rows by primary key; add one (e.g. id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY).';
    ELSIF cardinality(key_names) > 1 THEN
        RAISE EXCEPTION 'table % has a composite primary key (%), which is not supported', source,
                array_to_string(key_names, ', ')
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Add a single-column key (bigint, integer, uuid or text) and make it the primary key.';
    ELSIF key_types[1] NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype,
                               'uuid'::regtype, 'text'::regtype, 'character varying'::regtype) THEN
        RAISE EXCEPTION 'primary key %.% has type %; supported: bigint, integer, smallint, uuid, text, varchar',
                source, key_names[1], key_types[1]
            USING ERRCODE = 'feature_not_supported';
    END IF;

    -- The content: a text column, else a function of the row type returning text.
    SELECT a.attname, a.atttypid::regtype INTO content_col, content_type
    FROM pg_attribute a
    WHERE a.attrelid = source AND a.attname = content AND a.attnum > 0 AND NOT a.attisdropped;
    IF content_col IS NOT NULL THEN
        IF (SELECT typcategory FROM pg_type WHERE oid = content_type) <> 'S' THEN
            RAISE EXCEPTION 'content column %.% has type %, not text', source, content_col, content_type
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Use a content function that returns text, e.g. one that casts or formats the column.';
        END IF;
    ELSE
        BEGIN
            content_fn := to_regprocedure(format('%s(%I.%I)', content, rel_schema, rel_name));
        EXCEPTION WHEN OTHERS THEN
            content_fn := NULL;  -- not even a valid function name
        END;
        IF content_fn IS NULL THEN
            RAISE EXCEPTION 'content "%" is neither a column of % nor a function %(%)', content, source, content, source
                USING ERRCODE = 'undefined_column',
                      HINT = 'Pass a text column name, or the name of a function that takes the table''s row type and returns text.';
        END IF;
        SELECT p.prorettype::regtype INTO content_type FROM pg_proc p WHERE p.oid = content_fn;
        IF content_type NOT IN ('text'::regtype, 'character varying'::regtype) OR
           (SELECT p.proretset FROM pg_proc p WHERE p.oid = content_fn) THEN
            RAISE EXCEPTION 'content function % returns %, not text', content_fn,
                    CASE WHEN (SELECT p.proretset FROM pg_proc p WHERE p.oid = content_fn)
                         THEN 'a set of ' ELSE '' END || content_type
                USING ERRCODE = 'datatype_mismatch';
        END IF;
        PERFORM embeddings.check_content_function(source, content_fn);  -- trusted, not VOLATILE
    END IF;

    -- The embedding column: absent (we add it), or vector(dims) / halfvec(dims).
    SELECT a.atttypid::regtype, a.atttypmod INTO emb_type, emb_typmod
    FROM pg_attribute a
    WHERE a.attrelid = source AND a.attname = embedding_column AND a.attnum > 0 AND NOT a.attisdropped;
    emb_exists := emb_type IS NOT NULL;
    IF emb_exists THEN
        IF NOT EXISTS (SELECT FROM pg_type ty JOIN pg_namespace ns ON ns.oid = ty.typnamespace
                       WHERE ty.oid = emb_type AND ty.typname IN ('vector', 'halfvec') AND ns.nspname = vschema) THEN
            RAISE EXCEPTION 'embedding column %.% has type %, expected vector(%) or halfvec(%)',
                    source, embedding_column, format_type(emb_type, emb_typmod), dims, dims
                USING ERRCODE = 'datatype_mismatch';
        ELSIF emb_typmod <> dims THEN
            RAISE EXCEPTION 'embedding column %.% is %, but model "%" produces % dimensions',
                    source, embedding_column, format_type(emb_type, emb_typmod), model, dims
                USING ERRCODE = 'datatype_mismatch',
                      HINT = format('Use a %s-dimensional column, or a model whose dimensions match.', dims);
        END IF;
    END IF;
    IF embedding_column = content_col THEN
        RAISE EXCEPTION 'the embedding column cannot be the content column' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF queue !~ '^[a-z_][a-z0-9_]{0,46}$' THEN
        RAISE EXCEPTION 'invalid queue name "%": lower-case letters, digits and _ only, at most 47', queue
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Everything is valid: act.
    SELECT * INTO previous FROM embeddings.targets tg
    WHERE tg.source = watch.source AND tg.embedding_column = watch.embedding_column;
    fresh := previous.id IS NULL;
    IF NOT fresh AND emb_exists
       AND previous.content_column IS NOT DISTINCT FROM content_col
       AND previous.content_function IS NOT DISTINCT FROM content_fn
       AND previous.model = watch.model
       AND previous.key_column = key_names[1] AND previous.key_type = key_types[1]
       AND previous.has_triggers = triggers AND previous.clear_on_update = watch.clear_on_update
       AND previous.queue = watch.queue THEN
        RETURN previous.id;
    END IF;

    PERFORM embeddings.ensure_queue(queue);

    IF NOT emb_exists THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN %I %I.halfvec(%s)', source, embedding_column, vschema, dims);
        emb_type := format('%I.halfvec', vschema)::regtype;
    END IF;

    IF NOT EXISTS (
        SELECT FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_am am ON am.oid = ic.relam
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = source AND am.amname = 'hnsw' AND a.attname = embedding_column
    ) THEN
        EXECUTE format('CREATE INDEX ON %s USING hnsw (%I %I.%I)', source, embedding_column, vschema,
            CASE WHEN (SELECT typname FROM pg_type WHERE oid = emb_type) = 'halfvec'
                 THEN 'halfvec_cosine_ops' ELSE 'vector_cosine_ops' END);
    END IF;

    IF fresh THEN
        INSERT INTO embeddings.targets AS tg (source, embedding_column, content_column, content_function, model,
                                              key_column, key_type, queue, has_triggers, clear_on_update)
        VALUES (source, embedding_column, content_col, content_fn, model,
                key_names[1], key_types[1], queue, triggers, clear_on_update)
        RETURNING * INTO t;
    ELSE
        reembed := previous.content_column IS DISTINCT FROM content_col
                   OR previous.content_function IS DISTINCT FROM content_fn
                   OR previous.model <> watch.model;
        IF previous.queue <> watch.queue THEN
            -- Pending jobs move with the target.
            EXECUTE format(
                'WITH moved AS (DELETE FROM pgmq.%I WHERE message @> jsonb_build_object(''target'', $1) RETURNING message) '
                'SELECT count(*) FROM moved, LATERAL pgmq.send(%L, moved.message)',
                pgmq.format_table_name(previous.queue, 'q'), queue) USING previous.id;
        END IF;
        UPDATE embeddings.targets tg
        SET content_column = content_col, content_function = content_fn, model = watch.model,
            key_column = key_names[1], key_type = key_types[1], queue = watch.queue,
            has_triggers = triggers, clear_on_update = watch.clear_on_update, updated_at = now(),
            version = tg.version + 1  -- in-flight writes under the old definition are rejected
        WHERE tg.id = previous.id
        RETURNING * INTO t;
    END IF;

    PERFORM embeddings.install_triggers(t);
    -- Worker roles set up by embeddings.grant_worker() serve this table too. (The function is
    -- defined in 80_roles.sql; plpgsql resolves it when this line runs.)
    PERFORM embeddings.grant_worker_target(r.role_name, t) FROM embeddings.worker_roles r;

    -- Existing rows, in one statement: those with content and no embedding, or every row with
    -- content when the content source or the model changed. A content function that raises
    -- for some row must not make watch() fail: then the rows go unfiltered, and the worker
    -- dead-letters the culprits with their error.
    backfill := format('FROM %s n WHERE %s', source,
        CASE WHEN reembed THEN 'true' ELSE format('n.%I IS NULL', t.embedding_column) END);
    BEGIN
        EXECUTE embeddings.enqueue_sql(t, backfill || ' AND ' || embeddings.has_content_sql(t, 'n'))
            USING t.id;
    EXCEPTION WHEN OTHERS THEN
        IF t.content_function IS NULL THEN
            RAISE;
        END IF;
        RAISE WARNING 'embeddings: content function of % failed (%); enqueued the rows unfiltered',
            source, SQLERRM;
        EXECUTE embeddings.enqueue_sql(t, backfill) USING t.id;
    END;

    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN t.id;
END
$$;

-- from sql/80_roles.sql
CREATE OR REPLACE FUNCTION embeddings.grant_worker_target(role_name name, t embeddings.targets) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    policy name := 'embeddings_worker_' || role_name;
BEGIN
    EXECUTE format('GRANT SELECT ON %s TO %I', t.source, role_name);
    EXECUTE format('GRANT UPDATE (%I) ON %s TO %I', t.embedding_column, t.source, role_name);
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
END
$$;

-- from sql/80_roles.sql
CREATE OR REPLACE FUNCTION embeddings.grant_worker(role_name name) RETURNS void
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
    EXECUTE format('GRANT SELECT ON embeddings.targets, embeddings.models, embeddings.queues, embeddings.status TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON embeddings.failures TO %I', role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON embeddings.throughput TO %I', role_name);
    EXECUTE format('GRANT SELECT ON pgmq.meta TO %I', role_name);
    -- Its write transaction locks the registrations it writes for (definition versions).
    EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.lock_target_version(integer) TO %I', role_name);
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

-- from sql/80_roles.sql
CREATE OR REPLACE FUNCTION embeddings.drop_worker_policies(t embeddings.targets) RETURNS void
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

-- from sql/60_sweep.sql
CREATE OR REPLACE FUNCTION embeddings.sweep_rows(
    t embeddings.targets, after_key text, max_rows integer,
    OUT scanned integer, OUT last_key text, OUT enqueued integer
)
LANGUAGE plpgsql AS $$
DECLARE
    rel_schema name;
    rel_name name;
    key_type text := format_type(t.key_type, NULL);
    pending text[];
    missing_keys text[] := '{}';
    k text;
    unembedded boolean;
    missing boolean;
BEGIN
    scanned := 0;
    SELECT n.nspname, c.relname INTO rel_schema, rel_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t.source;
    EXECUTE format($q$
        SELECT array_agg(key_text) FROM (
            SELECT key_text FROM pgmq.%1$I m,
                 LATERAL jsonb_array_elements_text(m.message -> 'keys') AS key_text
            WHERE m.message @> jsonb_build_object('target', $1)
            UNION ALL
            SELECT m.message ->> 'id' FROM pgmq.%1$I m
            WHERE m.message @> jsonb_build_object('schema', %2$L, 'table', %3$L)
              AND coalesce(m.message ->> 'embeddingColumn', 'embedding') = %4$L
            UNION ALL
            SELECT f.row_key #>> '{}' FROM embeddings.failures f WHERE f.target_id = $1
        ) p WHERE key_text IS NOT NULL
        $q$, pgmq.format_table_name(t.queue, 'q'), rel_schema, rel_name, t.embedding_column)
    INTO pending USING t.id;
    FOR k, unembedded IN EXECUTE format(
        'SELECT n.%1$I::text, n.%2$I IS NULL FROM %3$s n'
        ' WHERE $1::text IS NULL OR n.%1$I > $1::%4$s ORDER BY n.%1$I LIMIT $2',
        t.key_column, t.embedding_column, t.source, key_type)
        USING after_key, max_rows
    LOOP
        scanned := scanned + 1;
        last_key := k;
        CONTINUE WHEN NOT unembedded OR k = ANY(coalesce(pending, '{}'));
        BEGIN
            EXECUTE format('SELECT (%s) ~ ''[^[:space:]]'' FROM %s n WHERE n.%I = $1::%s',
                           embeddings.content_sql(t, 'n'), t.source, t.key_column, key_type)
            INTO missing USING k;
        EXCEPTION WHEN OTHERS THEN
            missing := true;
        END;
        IF missing THEN
            missing_keys := missing_keys || k;
        END IF;
    END LOOP;
    enqueued := cardinality(missing_keys);
    IF enqueued > 0 THEN
        EXECUTE format('SELECT embeddings.enqueue_keys($1, $2::%s[])', key_type)
            USING t.id, missing_keys;
    END IF;
END
$$;

-- from sql/60_sweep.sql
CREATE OR REPLACE FUNCTION embeddings.sweep(
    max_rows integer DEFAULT 1000,
    archive_retention interval DEFAULT '7 days'
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    t embeddings.targets;
    rel_schema name;
    rel_name name;
    cursor_key text;
    last_key text;
    scanned integer;
    enqueued integer;
    total integer := 0;
    q record;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR t IN SELECT * FROM embeddings.targets ORDER BY id LOOP
        SELECT n.nspname, c.relname INTO rel_schema, rel_name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t.source;
        CONTINUE WHEN rel_name IS NULL;  -- table dropped
        SELECT after_key INTO cursor_key FROM embeddings.sweep_cursors WHERE target_id = t.id;

        BEGIN
            -- One slice of the table in key order. A row is missing when it has real content
            -- (whitespace-only content would be cleared and queued again forever), no embedding,
            -- no pending job in either message shape, and no dead letter (those wait for
            -- `failures --retry`).
            EXECUTE format($q$
                WITH slice AS (
                    SELECT n.%1$I AS k, (n.%2$I IS NULL AND (%3$s) ~ '[^[:space:]]') AS missing
                    FROM %4$s n
                    WHERE $2::text IS NULL OR n.%1$I > $2::%5$s
                    ORDER BY n.%1$I
                    LIMIT $3
                ),
                pending AS (
                    SELECT key_text FROM pgmq.%6$I m,
                         LATERAL jsonb_array_elements_text(m.message -> 'keys') AS key_text
                    WHERE m.message @> jsonb_build_object('target', $1)
                    UNION ALL
                    SELECT m.message ->> 'id' FROM pgmq.%6$I m
                    WHERE m.message @> jsonb_build_object('schema', %7$L, 'table', %8$L)
                      AND coalesce(m.message ->> 'embeddingColumn', 'embedding') = %9$L
                    UNION ALL
                    SELECT f.row_key #>> '{}' FROM embeddings.failures f WHERE f.target_id = $1
                ),
                queued AS (
                    SELECT embeddings.enqueue_keys($1, array_agg(s.k)) AS messages, count(*)::int AS keys
                    FROM slice s
                    WHERE s.missing
                      AND s.k::text NOT IN (SELECT key_text FROM pending WHERE key_text IS NOT NULL)
                )
                SELECT (SELECT count(*) FROM slice)::int, (SELECT max(k)::text FROM slice), keys
                FROM queued
                $q$,
                t.key_column, t.embedding_column, embeddings.content_sql(t, 'n'), t.source,
                format_type(t.key_type, NULL), pgmq.format_table_name(t.queue, 'q'),
                rel_schema, rel_name, t.embedding_column)
            INTO scanned, last_key, enqueued
            USING t.id, cursor_key, max_rows;
        EXCEPTION WHEN OTHERS THEN
            -- User code failed (a content function raising for some row): the same slice one
            -- row at a time, so that one row stops neither its target nor the others.
            BEGIN
                SELECT r.scanned, r.last_key, r.enqueued INTO scanned, last_key, enqueued
                FROM embeddings.sweep_rows(t, cursor_key, max_rows) r;
            EXCEPTION WHEN OTHERS THEN
                RAISE WARNING 'embeddings.sweep(): skipped %.%: %', t.source, t.embedding_column, SQLERRM;
                CONTINUE;
            END;
        END;

        -- A short slice means the end of the table: start again from the top next time.
        INSERT INTO embeddings.sweep_cursors AS sc (target_id, after_key, swept_at)
        VALUES (t.id, CASE WHEN scanned < max_rows THEN NULL ELSE last_key END, now())
        ON CONFLICT (target_id) DO UPDATE SET after_key = excluded.after_key, swept_at = now();
        total := total + coalesce(enqueued, 0);
    END LOOP;

    -- Archived jobs (dead letters' messages, pgmq.archive) older than the retention.
    IF archive_retention IS NOT NULL THEN
        FOR q IN SELECT name FROM embeddings.queues LOOP
            EXECUTE format(
                'DELETE FROM pgmq.%1$I WHERE msg_id IN ('
                '  SELECT msg_id FROM pgmq.%1$I WHERE archived_at < now() - $1 LIMIT 10000)',
                pgmq.format_table_name(q.name, 'a')) USING archive_retention;
        END LOOP;
    END IF;
    -- Throughput minutes older than a day feed nothing.
    DELETE FROM embeddings.throughput WHERE minute < now() - interval '1 day';
    RETURN total;
END
$$;

-- Roles granted before this revision: the new function, and their FOR ALL row-security
-- policies replaced by FOR SELECT + FOR UPDATE ones.
DO $$
DECLARE
    r embeddings.worker_roles;
    t embeddings.targets;
BEGIN
    FOR r IN SELECT * FROM embeddings.worker_roles LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r.role_name);
        EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.lock_target_version(integer) TO %I', r.role_name);
        FOR t IN SELECT tg.* FROM embeddings.targets tg
                 JOIN pg_policy p ON p.polrelid = tg.source
                 WHERE p.polname = 'embeddings_worker_' || r.role_name AND p.polcmd = '*' LOOP
            EXECUTE format('DROP POLICY %I ON %s', 'embeddings_worker_' || r.role_name, t.source);
            PERFORM embeddings.grant_worker_target(r.role_name, t);
        END LOOP;
    END LOOP;
END
$$;

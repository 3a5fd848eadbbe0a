-- 0003: the enqueue-trigger layer, generated per target (issues 12, 13, 16).
--   * per-target trigger functions with static SQL, inserting straight into the queue table
--   * NOTIFY only when a worker waits (embeddings.idle_workers)
--   * enqueue_keys no longer executable by PUBLIC
--   * composite and declared keys (key_columns, key_types), attribute numbers that follow
--     renames, replica targets, a visible `problem`; partitions covered
--   * a ddl_command_end event trigger follows schema changes

-- The old triggers and their functions go first (they read columns that change below).
DO $$
DECLARE
    t embeddings.targets;
BEGIN
    FOR t IN SELECT * FROM embeddings.targets LOOP
        IF EXISTS (SELECT FROM pg_class WHERE oid = t.source) THEN
            PERFORM embeddings.drop_triggers(t);
        END IF;
    END LOOP;
END
$$;
DROP FUNCTION embeddings.drop_triggers(embeddings.targets);
DROP FUNCTION embeddings.install_triggers(embeddings.targets);
DROP FUNCTION embeddings.enqueue_inserted();
DROP FUNCTION embeddings.enqueue_updated();
DROP FUNCTION embeddings.enqueue_sql(embeddings.targets, text);
DROP FUNCTION embeddings.has_content_sql(embeddings.targets, text);
DROP FUNCTION embeddings.content_sql(embeddings.targets, text);
DROP FUNCTION embeddings.watch(regclass, text, name, text, boolean, boolean, text);

ALTER TABLE embeddings.targets
    ADD COLUMN key_columns name[] CHECK (cardinality(key_columns) >= 1),
    ADD COLUMN key_types regtype[] CONSTRAINT targets_key_types_check CHECK (cardinality(key_types) = cardinality(key_columns)),
    ADD COLUMN key_attnums smallint[],
    ADD COLUMN content_attnum smallint,
    ADD COLUMN embedding_attnum smallint,
    ADD COLUMN replica boolean NOT NULL DEFAULT false,
    ADD COLUMN problem text;
UPDATE embeddings.targets t
SET key_columns = ARRAY[t.key_column], key_types = ARRAY[t.key_type],
    key_attnums = ARRAY[(SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = t.source AND a.attname = t.key_column AND NOT a.attisdropped)],
    content_attnum = (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = t.source AND a.attname = t.content_column AND NOT a.attisdropped),
    embedding_attnum = coalesce((SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = t.source AND a.attname = t.embedding_column AND NOT a.attisdropped), 0);
UPDATE embeddings.targets t SET key_attnums = '{0}' WHERE key_attnums = '{NULL}';
ALTER TABLE embeddings.targets
    ALTER COLUMN key_columns SET NOT NULL,
    ALTER COLUMN key_types SET NOT NULL,
    ALTER COLUMN key_attnums SET NOT NULL,
    ALTER COLUMN embedding_attnum SET NOT NULL,
    DROP COLUMN key_column,
    DROP COLUMN key_type;
-- Cursors now hold keys in their JSON form: sweeps start again from the top.
UPDATE embeddings.sweep_cursors SET after_key = NULL;


-- Workers waiting for jobs: a worker with nothing to do registers here before it re-checks the
-- queue and sleeps on LISTEN, and leaves when it finds work. Unlogged: after a crash it is
-- empty, and waiting workers register again within one poll interval.
CREATE UNLOGGED TABLE embeddings.idle_workers (
    queue text NOT NULL,
    pid   integer NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, pid)
);

GRANT SELECT ON embeddings.idle_workers TO PUBLIC;

-- Wakes waiting workers when a statement adds messages, whoever enqueued them: our triggers,
-- pgmq.send, the Supabase guide. Only when some worker waits: a NOTIFY serialises every
-- committing writer on one lock (it cost a third of a single-row INSERT's throughput), and a
-- busy worker reads the queue again anyway. A worker registers (worker_idle) before its last
-- look at the queue, so a job committed after that look always finds it registered; at worst
-- a race with a writer's snapshot delays a job by one poll interval, never loses it.
CREATE OR REPLACE FUNCTION embeddings.notify_workers() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM embeddings.idle_workers w WHERE w.queue = TG_ARGV[0]) THEN
        PERFORM pg_notify('embeddings_jobs', TG_ARGV[0]);
    END IF;
    RETURN NULL;
END
$$;

-- The calling worker (its session) waits for jobs of `queue_name`; forgets workers that are
-- gone. SECURITY DEFINER: worker roles need no rights on the table; a session can only
-- register or remove itself (at worst, cause NOTIFYs).
CREATE OR REPLACE FUNCTION embeddings.worker_idle(queue_name text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM embeddings.idle_workers w
    WHERE NOT EXISTS (SELECT FROM pg_stat_activity a WHERE a.pid = w.pid);
    INSERT INTO embeddings.idle_workers (queue, pid) VALUES (queue_name, pg_backend_pid())
    ON CONFLICT DO NOTHING;
$$;

-- The calling worker has work again.
CREATE OR REPLACE FUNCTION embeddings.worker_busy(queue_name text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM embeddings.idle_workers w WHERE w.queue = queue_name AND w.pid = pg_backend_pid();
$$;

-- Sends `keys` (row keys of one target: scalars, or JSON arrays for composite keys) as job
-- messages of up to keys_per_message() keys each. For watch()'s backfill and sweep(); the
-- triggers insert into the queue themselves. SECURITY DEFINER so that its callers need no
-- rights on pgmq, and so executable by no one but its owner unless granted: any role that
-- could call it could flood any target's queue.
CREATE OR REPLACE FUNCTION embeddings.enqueue_keys(target_id integer, keys anyarray, delay integer DEFAULT 0)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queue_name text;
    total integer := coalesce(cardinality(keys), 0);
    per_message integer := embeddings.keys_per_message();
BEGIN
    IF total = 0 THEN
        RETURN 0;
    END IF;
    SELECT t.queue INTO queue_name FROM embeddings.targets t WHERE t.id = target_id;
    IF queue_name IS NULL THEN
        RAISE EXCEPTION 'embeddings: no target with id %', target_id;
    END IF;
    -- Slicing an array is several times cheaper than grouping rows into chunks.
    PERFORM pgmq.send_batch(
        queue_name,
        ARRAY(SELECT jsonb_build_object('target', target_id, 'keys', to_jsonb(keys[i : i + per_message - 1]))
              FROM generate_series(1, total, per_message) AS i),
        delay);
    RETURN (total + per_message - 1) / per_message;
END
$$;

REVOKE ALL ON FUNCTION embeddings.enqueue_keys(integer, anyarray, integer) FROM PUBLIC;

-- The content of row alias `row_alias` as text (a column, or the content function applied to
-- the row). `row_type`, when given, rebuilds the row as the source's row type: a partition's
-- rows have the partition's own type.
CREATE OR REPLACE FUNCTION embeddings.content_sql(t embeddings.targets, row_alias text, row_type regclass DEFAULT NULL)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN t.content_column IS NOT NULL THEN format('(%I.%I)::pg_catalog.text', row_alias, t.content_column)
        WHEN row_type IS NULL THEN
            (SELECT format('%I.%I(%I.*)', n.nspname, p.proname, row_alias)
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE p.oid = t.content_function)
        ELSE
            (SELECT format('%I.%I(ROW(%s)::%s)', n.nspname, p.proname,
                           (SELECT string_agg(format('%I.%I', row_alias, a.attname), ', ' ORDER BY a.attnum)
                            FROM pg_attribute a
                            WHERE a.attrelid = row_type AND a.attnum > 0 AND NOT a.attisdropped),
                           row_type)
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE p.oid = t.content_function)
    END
$$;

-- The row key of row alias `row_alias` as it goes into a message: the key column itself (its
-- JSON form is a scalar), or a JSON array of the key columns.
CREATE OR REPLACE FUNCTION embeddings.key_sql(t embeddings.targets, row_alias text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN cardinality(t.key_columns) = 1 THEN format('%I.%I', row_alias, t.key_columns[1])
           ELSE format('pg_catalog.jsonb_build_array(%s)',
                       (SELECT string_agg(format('%I.%I', row_alias, c), ', ' ORDER BY i)
                        FROM unnest(t.key_columns) WITH ORDINALITY AS k(c, i)))
           END
$$;

-- "Same key" between two row aliases, with each key type's own equality operator (qualified:
-- the generated functions run with search_path = pg_catalog).
CREATE OR REPLACE FUNCTION embeddings.key_equal_sql(t embeddings.targets, left_alias text, right_alias text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT string_agg(format('%1$I.%3$I OPERATOR(%4$I.=) %2$I.%3$I', left_alias, right_alias, k.c,
                             coalesce((SELECT o.oprnamespace::regnamespace::name FROM pg_operator o
                                       WHERE o.oprname = '=' AND o.oprleft = k.ty AND o.oprright = k.ty
                                       LIMIT 1), 'pg_catalog')),
                      ' AND ' ORDER BY k.i)
    FROM unnest(t.key_columns, t.key_types) WITH ORDINALITY AS k(c, ty, i)
$$;

-- Columns whose change can change the content: the content column, or, for a generated
-- content column, the columns its expression reads (a BEFORE trigger cannot see NEW generated
-- values). NULL for a content function (it may read anything).
CREATE OR REPLACE FUNCTION embeddings.content_inputs(t embeddings.targets) RETURNS name[]
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN t.content_column IS NULL THEN NULL
        WHEN (SELECT a.attgenerated FROM pg_attribute a WHERE a.attrelid = t.source AND a.attnum = t.content_attnum) = 's' THEN
            -- The generation expression (pg_attrdef) depends on the columns it reads.
            coalesce((SELECT array_agg(a.attname ORDER BY a.attnum)
                      FROM pg_attrdef ad
                      JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                      JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                      WHERE ad.adrelid = t.source AND ad.adnum = t.content_attnum
                        AND d.refclassid = 'pg_class'::regclass AND d.refobjid = t.source
                        AND d.refobjsubid NOT IN (0, t.content_attnum)), '{}')
        ELSE ARRAY[t.content_column]
    END
$$;

-- The statement that enqueues the keys of the rows `from_where` selects (it binds alias n),
-- sliced into messages; 0 rows send nothing. `via_enqueue`: through embeddings_<id>_enqueue().
-- A composite key is aggregated column by column and paired up per message: building one
-- JSON array per row first costs a 100k-row INSERT three times as much.
CREATE OR REPLACE FUNCTION embeddings.enqueue_statement(t embeddings.targets, from_where text, via_enqueue boolean) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
    WHEN via_enqueue THEN
        format('PERFORM embeddings.%I(ARRAY(SELECT pg_catalog.to_jsonb(%s) %s))',
               'embeddings_' || t.id || '_enqueue', embeddings.key_sql(t, 'n'), from_where)
    WHEN cardinality(t.key_columns) = 1 THEN format(
        'INSERT INTO pgmq.%1$I (vt, message) '
        'SELECT pg_catalog.clock_timestamp(), '
        'pg_catalog.jsonb_build_object(''target'', %2$s, ''keys'', pg_catalog.to_jsonb(s.keys[i : i + %3$s - 1])) '
        'FROM (SELECT pg_catalog.array_agg(%4$s) AS keys %5$s) AS s, '
        'pg_catalog.generate_series(1, pg_catalog.cardinality(s.keys), %3$s) AS i',
        pgmq.format_table_name(t.queue, 'q'), t.id, embeddings.keys_per_message(),
        embeddings.key_sql(t, 'n'), from_where)
    ELSE format(
        'INSERT INTO pgmq.%1$I (vt, message) '
        'SELECT pg_catalog.clock_timestamp(), '
        'pg_catalog.jsonb_build_object(''target'', %2$s, ''keys'', '
        '(SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(%4$s) ORDER BY u.ord) '
        'FROM ROWS FROM (%5$s) WITH ORDINALITY AS u(%6$s, ord))) '
        'FROM (SELECT %7$s %8$s) AS s, '
        'pg_catalog.generate_series(1, pg_catalog.cardinality(s.k0), %3$s) AS i',
        pgmq.format_table_name(t.queue, 'q'), t.id, embeddings.keys_per_message(),
        (SELECT string_agg(format('u.k%s', i - 1), ', ' ORDER BY i) FROM generate_series(1, cardinality(t.key_columns)) i),
        (SELECT string_agg(format('pg_catalog.unnest(s.k%s[i : i + %s - 1])', i - 1, embeddings.keys_per_message()), ', ' ORDER BY i)
         FROM generate_series(1, cardinality(t.key_columns)) i),
        (SELECT string_agg(format('k%s', i - 1), ', ' ORDER BY i) FROM generate_series(1, cardinality(t.key_columns)) i),
        (SELECT string_agg(format('pg_catalog.array_agg(n.%I) AS k%s', c, i - 1), ', ' ORDER BY i)
         FROM unnest(t.key_columns) WITH ORDINALITY AS k(c, i)),
        from_where)
    END
$$;

-- Creates (or replaces) the trigger functions of target t. SECURITY DEFINER: whoever causes the
-- regeneration (a DDL statement's event trigger), the functions belong to this schema's owner.
CREATE OR REPLACE FUNCTION embeddings.generate_functions(t embeddings.targets) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    prefix text := 'embeddings_' || t.id;
    by_function boolean := t.content_function IS NOT NULL;
    partitioned boolean := (SELECT c.relkind = 'p' FROM pg_class c WHERE c.oid = t.source);
    row_type regclass := CASE WHEN partitioned THEN t.source END;
    table_owner regrole := (SELECT c.relowner::regrole FROM pg_class c WHERE c.oid = t.source);
    new_content text := embeddings.content_sql(t, 'n', row_type);
    old_content text := embeddings.content_sql(t, 'o', row_type);
    inserted text;
    changed text;
    body text;
    fallback text;
    inputs name[] := embeddings.content_inputs(t);
BEGIN
    inserted := format('FROM new_rows n WHERE n.%I IS NULL AND %s OPERATOR(pg_catalog.<>) ''''',
                       t.embedding_column, new_content);
    -- A row whose key changed has no old row: it counts as changed.
    changed := format('FROM new_rows n LEFT JOIN old_rows o ON %s WHERE (o.%I IS NULL OR %s IS DISTINCT FROM %s)',
                      embeddings.key_equal_sql(t, 'o', 'n'), t.key_columns[1], new_content, old_content);
    IF t.clear_on_update THEN
        -- A change to blank content needs no job: the clear trigger already cleared the row.
        changed := changed || format(' AND %s OPERATOR(pg_catalog.<>) ''''', new_content);
    END IF;

    IF by_function THEN
        EXECUTE format(
            $f$CREATE OR REPLACE FUNCTION embeddings.%1$I(keys jsonb[]) RETURNS void
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
            BEGIN
                INSERT INTO pgmq.%2$I (vt, message)
                SELECT pg_catalog.clock_timestamp(),
                       pg_catalog.jsonb_build_object('target', %3$s, 'keys', pg_catalog.to_jsonb(keys[i : i + %4$s - 1]))
                FROM pg_catalog.generate_series(1, pg_catalog.cardinality(keys), %4$s) AS i;
            END
            $body$ $f$,
            prefix || '_enqueue', pgmq.format_table_name(t.queue, 'q'), t.id, embeddings.keys_per_message());
        EXECUTE format('REVOKE ALL ON FUNCTION embeddings.%I(jsonb[]) FROM PUBLIC', prefix || '_enqueue');
        EXECUTE format('GRANT EXECUTE ON FUNCTION embeddings.%I(jsonb[]) TO %I', prefix || '_enqueue', table_owner);
    END IF;

    -- INSERT and UPDATE. A content function that raises (for any row) must not fail the write:
    -- the rows then go unfiltered, and the worker dead-letters the culprit with its error.
    FOREACH body IN ARRAY ARRAY['insert', 'update'] LOOP
        fallback := CASE body WHEN 'insert' THEN format('FROM new_rows n WHERE n.%I IS NULL', t.embedding_column)
                              ELSE 'FROM new_rows n' END;
        EXECUTE format(
            $f$CREATE OR REPLACE FUNCTION embeddings.%1$I() RETURNS trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
            BEGIN
                %2$s;
                RETURN NULL;%3$s
            END
            $body$ $f$,
            prefix || '_' || body,
            embeddings.enqueue_statement(t, CASE body WHEN 'insert' THEN inserted ELSE changed END, by_function),
            CASE WHEN by_function THEN format(
                E'\n            EXCEPTION WHEN OTHERS THEN\n'
                 '                RAISE WARNING ''embeddings: content function of %% failed (%%); enqueued the rows unfiltered'', %s, SQLERRM;\n'
                 '                %s;\n'
                 '                RETURN NULL;',
                quote_literal(t.source::text), embeddings.enqueue_statement(t, fallback, true))
            ELSE '' END);
        IF by_function THEN
            -- User code runs with the table owner's rights, not ours.
            EXECUTE format('ALTER FUNCTION embeddings.%I() OWNER TO %I', prefix || '_' || body, table_owner);
        END IF;
        EXECUTE format('REVOKE ALL ON FUNCTION embeddings.%I() FROM PUBLIC', prefix || '_' || body);
    END LOOP;

    -- Rows applied by logical replication, one at a time (replica targets only).
    IF t.replica THEN
        EXECUTE format(
            $f$CREATE OR REPLACE FUNCTION embeddings.%1$I() RETURNS trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
            BEGIN
                IF (TG_OP = 'INSERT' AND NEW.%2$I IS NULL AND %3$s OPERATOR(pg_catalog.<>) '')
                   OR (TG_OP = 'UPDATE' AND (NOT (%4$s) OR %3$s IS DISTINCT FROM %5$s) AND %3$s OPERATOR(pg_catalog.<>) '') THEN
                    INSERT INTO pgmq.%6$I (vt, message)
                    VALUES (pg_catalog.clock_timestamp(),
                            pg_catalog.jsonb_build_object('target', %7$s, 'keys', pg_catalog.jsonb_build_array(%8$s)));
                END IF;
                RETURN NULL;%9$s
            END
            $body$ $f$,
            prefix || '_replica', t.embedding_column,
            embeddings.content_sql(t, 'new', row_type), embeddings.key_equal_sql(t, 'old', 'new'),
            embeddings.content_sql(t, 'old', row_type),
            pgmq.format_table_name(t.queue, 'q'), t.id, embeddings.key_sql(t, 'new'),
            CASE WHEN by_function THEN E'\n            EXCEPTION WHEN OTHERS THEN\n                RETURN NULL;' ELSE '' END);
        EXECUTE format('REVOKE ALL ON FUNCTION embeddings.%I() FROM PUBLIC', prefix || '_replica');
    END IF;

    IF NOT t.clear_on_update THEN
        RETURN;
    END IF;
    -- The clear trigger names no column (no UPDATE OF, no WHEN), so that dropping or retyping
    -- the content column is never refused because of it; it compares in its body, as text
    -- (any type has a text form; not every type has an equality operator).
    IF by_function THEN
        -- A content function is user code and may raise (for the very row being fixed): then
        -- it cannot tell, and clears.
        body := format(
            $b$IF %1$s IS DISTINCT FROM %2$s THEN
                    NEW.%3$I := NULL;
                END IF;
                RETURN NEW;
            EXCEPTION WHEN OTHERS THEN
                NEW.%3$I := NULL;  -- cannot compare: the embedding may be stale
                RETURN NEW;$b$,
            embeddings.content_sql(t, 'old', row_type), embeddings.content_sql(t, 'new', row_type), t.embedding_column);
    ELSIF cardinality(inputs) = 0 THEN
        body := 'RETURN NEW;';  -- generated from constants: it never changes
    ELSE
        body := format(
            $b$IF %1$s THEN
                    NEW.%2$I := NULL;
                END IF;
                RETURN NEW;$b$,
            (SELECT string_agg(format('(OLD.%1$I)::pg_catalog.text IS DISTINCT FROM (NEW.%1$I)::pg_catalog.text', c), ' OR ')
             FROM unnest(inputs) AS c),
            t.embedding_column);
    END IF;
    -- Invoker's rights: it only edits NEW.
    EXECUTE format(
        $f$CREATE OR REPLACE FUNCTION embeddings.%1$I() RETURNS trigger LANGUAGE plpgsql AS $body$
            BEGIN
                %2$s
            END
            $body$ $f$,
        prefix || '_clear', body);
END
$$;

REVOKE ALL ON FUNCTION embeddings.generate_functions(embeddings.targets) FROM PUBLIC;

-- The tables target t's statement triggers belong on: its table, and every partition at any
-- level when it is partitioned.
CREATE OR REPLACE FUNCTION embeddings.covered_tables(t embeddings.targets) RETURNS SETOF regclass
LANGUAGE sql STABLE AS $$
    SELECT t.source
    UNION
    SELECT p.relid FROM pg_partition_tree(t.source) p
    WHERE (SELECT c.relkind FROM pg_class c WHERE c.oid = t.source) = 'p'
$$;

-- Brings target t's triggers in line with its registration and its table as it is now: the
-- functions regenerated, statement triggers on the table and each of its partitions (dropped
-- from tables no longer covered), the row triggers, replica mode. With has_triggers false, or
-- a problem, drops them. Returns the tables newly covered (partitions attached since), whose
-- rows the caller may need to enqueue.
CREATE OR REPLACE FUNCTION embeddings.install_triggers(t embeddings.targets) RETURNS regclass[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    prefix text := 'embeddings_' || t.id;
    rel regclass;
    added regclass[] := '{}';
    fired text := CASE WHEN t.replica THEN 'ALWAYS ' ELSE '' END;
BEGIN
    IF NOT t.has_triggers OR t.problem IS NOT NULL THEN
        PERFORM embeddings.drop_triggers(t);
        RETURN added;
    END IF;
    PERFORM embeddings.generate_functions(t);

    -- Statement triggers: on every covered table, off every other.
    PERFORM embeddings.drop_triggers(t, only_uncovered => true);
    FOR rel IN SELECT * FROM embeddings.covered_tables(t) LOOP
        IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = prefix || '_insert') THEN
            EXECUTE format(
                'CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
                'FOR EACH STATEMENT EXECUTE FUNCTION embeddings.%I()',
                prefix || '_insert', rel, prefix || '_insert');
            IF rel <> t.source THEN
                added := added || rel;
            END IF;
        END IF;
        IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = prefix || '_update') THEN
            EXECUTE format(
                'CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                'FOR EACH STATEMENT EXECUTE FUNCTION embeddings.%I()',
                prefix || '_update', rel, prefix || '_update');
        END IF;
    END LOOP;

    -- Row triggers: on the table itself (Postgres clones them onto partitions).
    IF t.clear_on_update THEN
        IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = t.source AND tgname = prefix || '_clear') THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION embeddings.%I()',
                           prefix || '_clear', t.source, prefix || '_clear');
        END IF;
        EXECUTE format('ALTER TABLE %s ENABLE %sTRIGGER %I', t.source, fired, prefix || '_clear');
    ELSIF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = t.source AND tgname = prefix || '_clear') THEN
        EXECUTE format('DROP TRIGGER %I ON %s', prefix || '_clear', t.source);
    END IF;
    IF t.replica THEN
        IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = t.source AND tgname = prefix || '_replica') THEN
            -- Only rows applied by replication (the origin's rows have the statement triggers).
            EXECUTE format(
                'CREATE TRIGGER %I AFTER INSERT OR UPDATE ON %s FOR EACH ROW '
                'WHEN (pg_catalog.current_setting(''session_replication_role'') = ''replica'') '
                'EXECUTE FUNCTION embeddings.%I()',
                prefix || '_replica', t.source, prefix || '_replica');
        END IF;
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', t.source, prefix || '_replica');
    ELSIF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = t.source AND tgname = prefix || '_replica') THEN
        EXECUTE format('DROP TRIGGER %I ON %s', prefix || '_replica', t.source);
    END IF;
    RETURN added;
END
$$;

REVOKE ALL ON FUNCTION embeddings.install_triggers(embeddings.targets) FROM PUBLIC;

-- Drops target t's triggers (all, or only those on tables it no longer covers: detached
-- partitions) and, when all go, its generated functions.
CREATE OR REPLACE FUNCTION embeddings.drop_triggers(t embeddings.targets, only_uncovered boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    prefix text := 'embeddings_' || t.id;
    tg record;
    fn regprocedure;
BEGIN
    FOR tg IN
        SELECT g.tgname, g.tgrelid::regclass AS rel FROM pg_trigger g
        WHERE g.tgname IN (prefix || '_insert', prefix || '_update', prefix || '_clear', prefix || '_replica')
          AND g.tgparentid = 0  -- clones go with their parent trigger
          AND NOT (only_uncovered AND g.tgrelid IN (SELECT * FROM embeddings.covered_tables(t)))
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', tg.tgname, tg.rel);
    END LOOP;
    IF only_uncovered THEN
        RETURN;
    END IF;
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'embeddings'::regnamespace
          AND p.proname IN (prefix || '_insert', prefix || '_update', prefix || '_clear', prefix || '_replica',
                            prefix || '_enqueue')
    LOOP
        EXECUTE format('DROP FUNCTION %s', fn);
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION embeddings.drop_triggers(embeddings.targets, boolean) FROM PUBLIC;

-- The attribute number of column `col` of `rel`.
CREATE OR REPLACE FUNCTION embeddings.attnum_of(rel regclass, col name) RETURNS smallint
LANGUAGE sql STABLE AS $$
    SELECT a.attnum FROM pg_attribute a
    WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped
$$;

-- Enqueues the rows of `rel` (target t's table, or one of its partitions) that have content
-- and no embedding, or with `every_row` all that have content. A content function that raises
-- for some row must not make this fail: then the rows go unfiltered, and the worker
-- dead-letters the culprits with their error. Returns the number of messages sent.
CREATE OR REPLACE FUNCTION embeddings.enqueue_rows(t embeddings.targets, rel regclass, every_row boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    row_type regclass := CASE WHEN rel <> t.source THEN t.source END;
    from_where text := format('FROM %s n WHERE %s', rel,
        CASE WHEN every_row THEN 'true' ELSE format('n.%I IS NULL', t.embedding_column) END);
    statement text := 'SELECT embeddings.enqueue_keys($1, array_agg(' || embeddings.key_sql(t, 'n') || ')) ';
    sent integer;
BEGIN
    BEGIN
        EXECUTE statement || from_where || format(' AND %s <> ''''', embeddings.content_sql(t, 'n', row_type))
            INTO sent USING t.id;
    EXCEPTION WHEN OTHERS THEN
        IF t.content_function IS NULL THEN
            RAISE;
        END IF;
        RAISE WARNING 'embeddings: content function of % failed (%); enqueued the rows unfiltered', rel, SQLERRM;
        EXECUTE statement || from_where INTO sent USING t.id;
    END;
    RETURN sent;
END
$$;

-- Validates everything, then registers `source` for embedding: creates the embedding column
-- (halfvec(dim)) when missing, its HNSW index, the triggers, and enqueues existing rows that
-- have content but no embedding. All or nothing: any error leaves no trace.
--
--   content           a text column of `source`, or the name of a function taking the
--                     table's row type and returning text (the Supabase guide's content function)
--   triggers          false registers without triggers (jobs come from elsewhere, e.g. the
--                     Supabase guide's own util.queue_embeddings triggers)
--   clear_on_update   true: a content change clears the stale embedding at once;
--                     false: the old embedding stays until the new one lands
--   queue             the pgmq queue for this table's jobs
--   key               the row key's columns when the table has no primary key (or another
--                     key should be used): they must form a unique, not-null key
--   replica           true: rows applied by logical replication enqueue too (a subscriber's
--                     table); the triggers fire ALWAYS
--
-- Calling it again with the same arguments changes nothing; with other arguments it updates the
-- registration (a new content source or model re-enqueues every row with content).
-- Returns the target id.
CREATE OR REPLACE FUNCTION embeddings.watch(
    source regclass,
    content text,
    embedding_column name DEFAULT 'embedding',
    model text DEFAULT NULL,  -- NULL: embeddings.default_model(), see embeddings.set_default_model()
    triggers boolean DEFAULT true,
    clear_on_update boolean DEFAULT true,
    queue text DEFAULT 'embedding_jobs',
    key name[] DEFAULT NULL,
    replica boolean DEFAULT false
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    dims integer;
    rel_kind "char";
    rel_schema name;
    rel_name name;
    key_names name[];
    key_regtypes regtype[];
    key_nums smallint[];
    content_num smallint;
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
BEGIN
    model := coalesce(model, embeddings.default_model());  -- newcomer: the database-level default model
    IF source IS NULL OR content IS NULL OR embedding_column IS NULL OR model IS NULL
       OR triggers IS NULL OR clear_on_update IS NULL OR queue IS NULL OR replica IS NULL THEN
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

    -- The row key: the primary key, or the unique not-null key named by `key`. Any number of
    -- columns, of any types with an equality operator.
    IF key IS NULL THEN
        SELECT array_agg(a.attname ORDER BY k.ord), array_agg(a.atttypid::regtype ORDER BY k.ord),
               array_agg(a.attnum ORDER BY k.ord)
        INTO key_names, key_regtypes, key_nums
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = source AND i.indisprimary;
        IF key_names IS NULL THEN
            RAISE EXCEPTION 'table % has no primary key', source
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'embed-worker finds rows by their key: add a primary key, or name a unique not-null key with key => array[''col'', ...].';
        END IF;
    ELSE
        SELECT array_agg(a.attname ORDER BY k.ord), array_agg(a.atttypid::regtype ORDER BY k.ord),
               array_agg(a.attnum ORDER BY k.ord)
        INTO key_names, key_regtypes, key_nums
        FROM unnest(key) WITH ORDINALITY AS k(name, ord)
        JOIN pg_attribute a ON a.attrelid = source AND a.attname = k.name AND a.attnum > 0 AND NOT a.attisdropped;
        IF cardinality(key) = 0 OR coalesce(cardinality(key_names), 0) <> cardinality(key)
           OR cardinality(key) <> (SELECT count(DISTINCT k) FROM unnest(key) AS k) THEN
            RAISE EXCEPTION 'key % does not name distinct columns of %', key, source
                USING ERRCODE = 'undefined_column';
        END IF;
        IF EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = source AND a.attnum = ANY(key_nums) AND NOT a.attnotnull) THEN
            RAISE EXCEPTION 'key (%) of % has nullable columns', array_to_string(key, ', '), source
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Make the key columns NOT NULL.';
        END IF;
        IF NOT EXISTS (
            SELECT FROM pg_index i
            WHERE i.indrelid = source AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
              AND i.indimmediate AND i.indnkeyatts = cardinality(key_nums)
              AND (SELECT array_agg(x ORDER BY x) FROM unnest(i.indkey[0:i.indnkeyatts - 1]) AS x)
                  = (SELECT array_agg(x ORDER BY x) FROM unnest(key_nums) AS x)
        ) THEN
            RAISE EXCEPTION 'key (%) of % is not unique', array_to_string(key, ', '), source
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = format('Add one: ALTER TABLE %s ADD UNIQUE (%s).', source, array_to_string(key, ', '));
        END IF;
    END IF;
    FOR i IN 1 .. cardinality(key_regtypes) LOOP
        BEGIN
            EXECUTE format('SELECT NULL::%1$s = NULL::%1$s', key_regtypes[i]);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'key column %.% has type %, which has no equality operator', source, key_names[i], key_regtypes[i]
                USING ERRCODE = 'feature_not_supported';
        END;
    END LOOP;

    -- The content: a text column, else a function of the row type returning text.
    SELECT a.attname, a.atttypid::regtype, a.attnum INTO content_col, content_type, content_num
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

    PERFORM embeddings.refuse_guide_triggers(source, triggers);  -- newcomer: never two sets of triggers

    -- Everything is valid: act.
    SELECT * INTO previous FROM embeddings.targets tg
    WHERE tg.source = watch.source AND tg.embedding_column = watch.embedding_column;
    fresh := previous.id IS NULL;
    IF NOT fresh AND emb_exists
       AND previous.content_column IS NOT DISTINCT FROM content_col
       AND previous.content_function IS NOT DISTINCT FROM content_fn
       AND previous.model = watch.model
       AND previous.key_columns = key_names AND previous.key_types = key_regtypes
       AND previous.has_triggers = triggers AND previous.clear_on_update = watch.clear_on_update
       AND previous.queue = watch.queue AND previous.replica = watch.replica
       AND previous.problem IS NULL THEN
        RETURN previous.id;
    END IF;

    -- The DDL below is ours: the schema-change event trigger need not follow it.
    PERFORM set_config('embeddings.following', 'on', true);
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
                                              queue, has_triggers, clear_on_update, key_columns, key_types,
                                              key_attnums, content_attnum, embedding_attnum, replica)
        VALUES (source, embedding_column, content_col, content_fn, model,
                queue, triggers, clear_on_update, key_names, key_regtypes,
                key_nums, content_num, embeddings.attnum_of(source, embedding_column), replica)
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
            key_columns = key_names, key_types = key_regtypes, key_attnums = key_nums,
            content_attnum = content_num, embedding_attnum = embeddings.attnum_of(watch.source, watch.embedding_column),
            replica = watch.replica, problem = NULL, queue = watch.queue,
            has_triggers = triggers, clear_on_update = watch.clear_on_update, updated_at = now(),
            version = tg.version + 1  -- in-flight writes under the old definition are rejected
        WHERE tg.id = previous.id
        RETURNING * INTO t;
    END IF;

    PERFORM embeddings.drop_triggers(t);  -- functions of another shape (key, content) go first
    PERFORM embeddings.install_triggers(t);
    -- Worker roles set up by embeddings.grant_worker() serve this table too. (The function is
    -- defined in 80_roles.sql; plpgsql resolves it when this line runs.)
    PERFORM embeddings.grant_worker_target(r.role_name, t) FROM embeddings.worker_roles r;

    -- Existing rows, in one statement: those with content and no embedding, or every row with
    -- content when the content source or the model changed.
    PERFORM embeddings.enqueue_rows(t, source, reembed);

    PERFORM set_config('embeddings.following', 'off', true);
    PERFORM pg_notify('embeddings_targets', t.id::text);
    RETURN t.id;
END
$$;

-- Schema changes of watched tables: renames of the table, its key, content or embedding
-- column, a move to another schema, a retyped content column, a new owner, partitions created,
-- attached or detached. Target `target_id`'s registration is brought in line with its table:
-- column names re-read from the attribute numbers, trigger functions regenerated, triggers on
-- every partition (rows of newly attached partitions enqueued). What cannot be followed (the
-- content or key column dropped) becomes the target's `problem`: its triggers go, the worker
-- defers its jobs, status shows why; watch() again clears it.
CREATE OR REPLACE FUNCTION embeddings.refresh_target(target_id integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
    before embeddings.targets;
    rel regclass;
BEGIN
    SELECT * INTO before FROM embeddings.targets tg WHERE tg.id = target_id FOR UPDATE;
    IF NOT FOUND OR NOT EXISTS (SELECT FROM pg_class WHERE oid = before.source) THEN
        RETURN;
    END IF;
    UPDATE embeddings.targets tg
    SET key_columns = coalesce(r.key_names, tg.key_columns),
        key_types = coalesce(r.key_types, tg.key_types),
        content_column = coalesce(r.content_name, tg.content_column),
        embedding_column = coalesce(r.embedding_name, tg.embedding_column),
        problem = CASE
            WHEN r.key_names IS NULL OR cardinality(r.key_names) <> cardinality(tg.key_attnums) THEN
                format('its key column (%s) was dropped; watch the table again with a key', array_to_string(tg.key_columns, ', '))
            WHEN tg.content_function IS NULL AND r.content_name IS NULL THEN
                format('its content column %I was dropped; watch the table again with its new content', tg.content_column)
            WHEN tg.content_function IS NOT NULL AND NOT EXISTS (SELECT FROM pg_proc WHERE oid = tg.content_function) THEN
                'its content function was dropped; create it again and watch the table again'
        END
    FROM (SELECT
            (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(before.key_attnums) WITH ORDINALITY AS k(n, i)
             JOIN pg_attribute a ON a.attrelid = before.source AND a.attnum = k.n AND NOT a.attisdropped) AS key_names,
            (SELECT array_agg(a.atttypid::regtype ORDER BY k.i) FROM unnest(before.key_attnums) WITH ORDINALITY AS k(n, i)
             JOIN pg_attribute a ON a.attrelid = before.source AND a.attnum = k.n AND NOT a.attisdropped) AS key_types,
            (SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = before.source AND a.attnum = before.content_attnum AND NOT a.attisdropped) AS content_name,
            (SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = before.source AND a.attnum = before.embedding_attnum AND NOT a.attisdropped) AS embedding_name
         ) r
    WHERE tg.id = target_id
    RETURNING tg.* INTO t;
    IF t.problem IS NOT NULL AND t.problem IS DISTINCT FROM before.problem THEN
        RAISE WARNING 'embeddings: % is no longer embedded: %', embeddings.target_name(t), t.problem;
    END IF;
    FOREACH rel IN ARRAY embeddings.install_triggers(t) LOOP
        PERFORM embeddings.enqueue_rows(t, rel);  -- a partition attached with its rows
    END LOOP;
    IF (t.key_columns, t.key_types, t.content_column, t.embedding_column, t.problem)
       IS DISTINCT FROM (before.key_columns, before.key_types, before.content_column, before.embedding_column, before.problem) THEN
        UPDATE embeddings.targets tg SET updated_at = now() WHERE tg.id = target_id;
    END IF;
    PERFORM pg_notify('embeddings_targets', t.id::text);  -- workers re-read names
END
$$;

REVOKE ALL ON FUNCTION embeddings.refresh_target(integer) FROM PUBLIC;

-- Called at the end of every ALTER TABLE, CREATE TABLE and ALTER FUNCTION: refreshes the
-- targets on the tables (or partition trees, or content functions) the command touched. It
-- never fails the user's DDL: a target that cannot be refreshed gets a problem and a WARNING.
CREATE OR REPLACE FUNCTION embeddings.follow_schema_changes() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target_id integer;
BEGIN
    -- Our own DDL (watch(), regenerating triggers) runs inside; it needs no following.
    IF current_setting('embeddings.following', true) = 'on' THEN
        RETURN;
    END IF;
    PERFORM set_config('embeddings.following', 'on', true);
    FOR target_id IN
        SELECT DISTINCT tg.id FROM embeddings.targets tg
        JOIN pg_event_trigger_ddl_commands() c
          ON (c.classid = 'pg_class'::regclass
              AND (tg.source = c.objid OR tg.source IN (SELECT pg_partition_ancestors(c.objid))))
          OR (c.classid = 'pg_proc'::regclass AND c.objid = tg.content_function)
        ORDER BY tg.id
    LOOP
        BEGIN
            PERFORM embeddings.refresh_target(target_id);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'embeddings: could not follow the change for target % (%)', target_id, SQLERRM;
            UPDATE embeddings.targets tg SET problem = 'could not follow a schema change: ' || SQLERRM
            WHERE tg.id = target_id;
        END;
    END LOOP;
    PERFORM set_config('embeddings.following', 'off', true);
EXCEPTION WHEN OTHERS THEN
    PERFORM set_config('embeddings.following', 'off', true);
    RAISE WARNING 'embeddings: could not follow a schema change (%)', SQLERRM;
END
$$;

REVOKE ALL ON FUNCTION embeddings.follow_schema_changes() FROM PUBLIC;

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        CREATE EVENT TRIGGER embeddings_follow_schema_changes ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'ALTER FUNCTION')
            EXECUTE FUNCTION embeddings.follow_schema_changes();
    ELSE
        RAISE NOTICE 'embeddings: not a superuser, so no event trigger follows renames of watched tables'' columns; after one, call embeddings.watch() again';
    END IF;
END
$$;

-- status gains a `problem` column.
DROP VIEW embeddings.status;
DROP FUNCTION embeddings.target_status();

-- One row per target. Counts are exact, so this scans each watched table.
CREATE OR REPLACE FUNCTION embeddings.target_status() RETURNS TABLE (
    target                 text,
    total_rows             bigint,
    embedded_rows          bigint,
    pending_jobs           bigint,
    failed_jobs            bigint,
    oldest_pending_seconds double precision,
    target_id              integer,
    model                  text,
    rows_per_second        double precision,
    cleared_rows           bigint,
    deferred_reason        text,
    deferred_since         timestamptz,
    problem                text
)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t embeddings.targets;
    content_sql text;
BEGIN
    FOR t IN SELECT * FROM embeddings.targets ORDER BY id LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_class WHERE oid = t.source);  -- table dropped
        target := embeddings.target_name(t);
        target_id := t.id;
        model := t.model;
        problem := t.problem;  -- why it is not served (a schema change it cannot follow)
        content_sql := CASE WHEN t.content_column IS NOT NULL THEN format('s.%I', t.content_column)
                            ELSE format('%s(s)', t.content_function::regproc) END;
        BEGIN
            EXECUTE format('SELECT count(*), count(s.%I), count(*) FILTER (WHERE %s IS NULL OR %s !~ ''[^[:space:]]'') FROM %s s',
                           t.embedding_column, content_sql, content_sql, t.source)
                INTO total_rows, embedded_rows, cleared_rows;
        EXCEPTION WHEN OTHERS THEN  -- a content function that raises: count without it
            BEGIN
                EXECUTE format('SELECT count(*), count(s.%I), NULL::bigint FROM %s s', t.embedding_column, t.source)
                    INTO total_rows, embedded_rows, cleared_rows;
            EXCEPTION WHEN OTHERS THEN  -- the embedding column is gone: the other targets still show
                total_rows := NULL;
                embedded_rows := NULL;
                cleared_rows := NULL;
            END;
        END;
        EXECUTE embeddings.pending_sql(t) INTO pending_jobs, oldest_pending_seconds;
        SELECT count(*) INTO failed_jobs FROM embeddings.failures f WHERE f.target_id = t.id;
        -- The last five whole minutes plus the current one, as a rate per second.
        SELECT coalesce(sum(tp.rows), 0) / greatest(extract(epoch FROM clock_timestamp() - min(tp.minute)), 60)
        INTO rows_per_second
        FROM embeddings.throughput tp
        WHERE tp.target_id = t.id AND tp.minute >= date_trunc('minute', clock_timestamp()) - interval '5 minutes';
        deferred_reason := NULL;
        deferred_since := NULL;
        SELECT d.reason, d.since INTO deferred_reason, deferred_since
        FROM embeddings.deferrals d WHERE d.target_id = t.id AND pending_jobs > 0;
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE VIEW embeddings.status AS
    SELECT target, total_rows, embedded_rows, pending_jobs, failed_jobs, oldest_pending_seconds,
           target_id, model, rows_per_second, cleared_rows, deferred_reason, deferred_since, problem
    FROM embeddings.target_status();
COMMENT ON VIEW embeddings.status IS 'Per watched table: rows, embedded, pending jobs, dead letters, age of the oldest job, blank rows, why jobs wait';

DO $$
DECLARE
    r embeddings.worker_roles;
BEGIN
    FOR r IN SELECT * FROM embeddings.worker_roles LOOP
        EXECUTE format('GRANT SELECT ON embeddings.status TO %I', r.role_name);
    END LOOP;
END
$$;

-- The key columns of row alias `row_alias`, in key order (for row comparisons).
CREATE FUNCTION embeddings.key_columns_sql(t embeddings.targets, row_alias text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT string_agg(format('%I.%I', row_alias, c), ', ' ORDER BY i)
    FROM unnest(t.key_columns) WITH ORDINALITY AS k(c, i)
$$;

-- The same key decoded from the jsonb expression `json_sql` (a scalar for a one-column key, an
-- array otherwise, as messages carry keys), in key order.
CREATE FUNCTION embeddings.key_from_json_sql(t embeddings.targets, json_sql text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT string_agg(CASE WHEN cardinality(t.key_columns) = 1 THEN format('(%s #>> ''{}'')::%s', json_sql, ty)
                           ELSE format('(%s ->> %s)::%s', json_sql, i - 1, ty) END, ', ' ORDER BY i)
    FROM unnest(t.key_types) WITH ORDINALITY AS k(ty, i)
$$;

-- Row keys (JSON form) of target t that need no sweeping: queued in either message shape, or
-- dead-lettered (those wait for `failures --retry`).
CREATE FUNCTION embeddings.pending_keys(t embeddings.targets) RETURNS TABLE (k jsonb)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    rel_schema name;
    rel_name name;
BEGIN
    SELECT n.nspname, c.relname INTO rel_schema, rel_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t.source;
    RETURN QUERY EXECUTE format($q$
        SELECT key_json FROM pgmq.%1$I m, LATERAL jsonb_array_elements(m.message -> 'keys') AS key_json
        WHERE m.message @> jsonb_build_object('target', $1)
        UNION ALL
        SELECT m.message -> 'id' FROM pgmq.%1$I m
        WHERE m.message @> jsonb_build_object('schema', %2$L, 'table', %3$L)
          AND coalesce(m.message ->> 'embeddingColumn', 'embedding') = %4$L
          AND m.message -> 'id' IS NOT NULL
        UNION ALL
        SELECT f.row_key FROM embeddings.failures f WHERE f.target_id = $1 AND f.row_key IS NOT NULL
        $q$, pgmq.format_table_name(t.queue, 'q'), rel_schema, rel_name, t.embedding_column)
    USING t.id;
END
$$;

-- sweep()'s slice of target t, one row at a time: each row's content is evaluated in a
-- subtransaction of its own. A row whose content function raises is queued (it has no
-- embedding, so it needs one): the worker meets the error and dead-letters it with the error,
-- and sweep() leaves dead-lettered rows alone afterwards.
DROP FUNCTION embeddings.sweep_rows(embeddings.targets, text, integer);
CREATE FUNCTION embeddings.sweep_rows(
    t embeddings.targets, after_key text, max_rows integer,
    OUT scanned integer, OUT last_key text, OUT enqueued integer
)
LANGUAGE plpgsql AS $$
DECLARE
    pending jsonb[] := ARRAY(SELECT p.k FROM embeddings.pending_keys(t) p);
    missing_keys jsonb[] := '{}';
    k jsonb;
    unembedded boolean;
    missing boolean;
BEGIN
    scanned := 0;
    FOR k, unembedded IN EXECUTE format(
        'SELECT pg_catalog.to_jsonb(%1$s), n.%2$I IS NULL FROM %3$s n'
        ' WHERE $1::jsonb IS NULL OR (%4$s) > (%5$s) ORDER BY %4$s LIMIT $2',
        embeddings.key_sql(t, 'n'), t.embedding_column, t.source,
        embeddings.key_columns_sql(t, 'n'), embeddings.key_from_json_sql(t, '$1::jsonb'))
        USING after_key, max_rows
    LOOP
        scanned := scanned + 1;
        last_key := k::text;
        CONTINUE WHEN NOT unembedded OR k = ANY(pending);
        BEGIN
            EXECUTE format('SELECT (%s) ~ ''[^[:space:]]'' FROM %s n WHERE (%s) = (%s)',
                           embeddings.content_sql(t, 'n'), t.source,
                           embeddings.key_columns_sql(t, 'n'), embeddings.key_from_json_sql(t, '$1'))
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
        PERFORM embeddings.enqueue_keys(t.id, missing_keys);
    END IF;
END
$$;

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
        CONTINUE WHEN rel_name IS NULL OR t.problem IS NOT NULL;  -- table dropped, or not served
        SELECT after_key INTO cursor_key FROM embeddings.sweep_cursors WHERE target_id = t.id;

        BEGIN
            -- One slice of the table in key order. A row is missing when it has real content
            -- (whitespace-only content would be cleared and queued again forever), no embedding,
            -- no pending job in either message shape, and no dead letter (those wait for
            -- `failures --retry`). Keys are compared in their JSON form, as messages carry them.
            EXECUTE format($q$
                WITH slice AS (
                    SELECT pg_catalog.to_jsonb(%1$s) AS k, (n.%2$I IS NULL AND (%3$s) ~ '[^[:space:]]') AS missing
                    FROM %4$s n
                    WHERE $2::jsonb IS NULL OR (%5$s) > (%6$s)
                    ORDER BY %5$s
                    LIMIT $3
                ),
                numbered AS (
                    SELECT s.*, row_number() OVER () AS ord FROM slice s
                ),
                queued AS (
                    SELECT embeddings.enqueue_keys($1, array_agg(s.k)) AS messages, count(*)::int AS keys
                    FROM numbered s
                    WHERE s.missing
                      AND s.k NOT IN (SELECT p.k FROM embeddings.pending_keys($4) p)
                )
                SELECT (SELECT count(*) FROM numbered)::int,
                       (SELECT k::text FROM numbered ORDER BY ord DESC LIMIT 1), keys
                FROM queued
                $q$,
                embeddings.key_sql(t, 'n'), t.embedding_column, embeddings.content_sql(t, 'n'), t.source,
                embeddings.key_columns_sql(t, 'n'), embeddings.key_from_json_sql(t, '$2::jsonb'))
            INTO scanned, last_key, enqueued
            USING t.id, cursor_key, max_rows, t;
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

-- Targets get their new triggers.
DO $$
DECLARE
    t embeddings.targets;
BEGIN
    PERFORM set_config('embeddings.following', 'on', true);
    FOR t IN SELECT * FROM embeddings.targets ORDER BY id LOOP
        IF EXISTS (SELECT FROM pg_class WHERE oid = t.source) THEN
            PERFORM embeddings.install_triggers(t);
        END IF;
    END LOOP;
    PERFORM set_config('embeddings.following', 'off', true);
END
$$;

-- Content fingerprints and the verifying sweep: the system knows what each stored vector was
-- made from, so writes the triggers never saw (session_replication_role = replica on a target
-- not watched with replica => true, a partition detached, edited and attached again, ALTER
-- TABLE ... DISABLE TRIGGER windows, restores with triggers off, a re-registration whose new
-- content function raises) cannot leave a vector of older content unnoticed.
--
-- The worker writes a row's fingerprint in the transaction that writes its vector (the
-- application's write path does nothing more): md5 of the target's definition tag (content
-- source, model, chunking) and of the content the vector was made from. embeddings.sweep(verify
-- => true) (or `embed-worker sweep --verify`) walks each target in key order, a bounded slice per
-- call, evaluates each row's content through the target's embeddings_<id>_verify() (run as the
-- table's owner, like every read of a user table: sql/32_access.sql) and queues every row whose
-- vector lacks a fingerprint or whose fingerprint is not that of its content and definition now.

-- What a vector of target t is made by besides its content: where the content comes from (the
-- column's attribute number or the function's oid: both follow renames), the model, and the
-- chunking. A re-registration with another content source or model changes it, so every
-- vector of the old definition stops matching.
CREATE FUNCTION embeddings_internal.definition_tag(t embeddings.targets, model text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.md5(concat_ws('|', 'v1', t.content_attnum, t.content_function::oid, model,
                                    t.chunk_tokens, t.chunk_overlap))
$$;

-- The slot of target t's vectors (its embedding column, or with `shadow` its model change's
-- shadow column; 0 for a chunked target), and the model they are made with.
CREATE FUNCTION embeddings_internal.fingerprint_slot(t embeddings.targets, shadow boolean DEFAULT false,
                                            OUT slot smallint, OUT model text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
-- (PL/pgSQL: its statements' plans are kept for the session; the worker calls it per batch)
DECLARE
    change embeddings.model_changes;
BEGIN
    model := t.model;
    IF embeddings_internal.store_has_chunks(t) THEN
        slot := 0;
        RETURN;
    END IF;
    IF shadow THEN
        SELECT * INTO change FROM embeddings.model_changes mc WHERE mc.target_id = t.id;
        model := change.model;
    END IF;
    SELECT a.attnum INTO slot FROM pg_attribute a  -- in its store table: the table, or its side table
    WHERE a.attrelid = t.store_table AND a.attname = CASE WHEN shadow THEN change.shadow_column ELSE t.embedding_column END
      AND a.attnum > 0 AND NOT a.attisdropped;
END
$$;

-- The row key in its JSON form (as jobs carry it and embeddings_<id>_verify() returns it) of
-- the canonical key text `expr` (the worker's: worker/pipeline/targets.py): each part read by
-- its built-in type's input function (a domain: its base type) and given to to_jsonb(), as the
-- triggers do; a user type's part stays the JSON string of its text.
CREATE FUNCTION embeddings_internal.key_json_from_text_sql(t embeddings.targets, expr text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN cardinality(t.key_types) = 1
                THEN part.sql[1]
                ELSE format('pg_catalog.jsonb_build_array(%s)', array_to_string(part.sql, ', ')) END
    FROM (SELECT array_agg(CASE WHEN embeddings_internal.builtin_scalar(k.ty)
                                THEN format('pg_catalog.to_jsonb((%s)::%I.%I)', k.part, b.nspname, b.typname)
                                ELSE format('pg_catalog.to_jsonb(%s)', k.part) END ORDER BY k.i) AS sql
          FROM (SELECT u.ty, u.i,
                       CASE WHEN cardinality(t.key_types) = 1 THEN expr
                            ELSE format('((%s)::pg_catalog.jsonb ->> %s)', expr, u.i - 1) END AS part
                FROM unnest(t.key_types) WITH ORDINALITY AS u(ty, i)) k
          -- the base type by its qualified name, which has no implied length: `character` is
          -- char(1) and `bit` bit(1) (a cast to them cut every longer key), pg_catalog.bpchar and
          -- pg_catalog.bit are of any length
          JOIN LATERAL (SELECT n.nspname, ty.typname FROM pg_catalog.pg_type ty
                        JOIN pg_catalog.pg_namespace n ON n.oid = ty.typnamespace
                        WHERE ty.oid = embeddings_internal.base_type(k.ty)) b ON true) part
$$;

-- Records the fingerprints of vectors the worker is writing (in its write transaction): rows
-- `keys` (canonical text) of target `target_id`, made from content whose md5 is `digests`
-- (NULL: nothing stored, nothing recorded); `shadow`: in the model change's shadow column.
-- Worker roles only (80_roles.sql). A failure here never fails the write: a vector without its
-- fingerprint is only verified (and embedded) once more.
-- Its settings: the keys' JSON as the triggers and embeddings_<id>_verify() write it, whatever
-- the worker's session's (embeddings_internal.key_settings()).
CREATE FUNCTION embeddings_internal.record_fingerprints(target_id integer, shadow boolean, keys text[], digests text[])
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, MDY' SET IntervalStyle = postgres SET extra_float_digits = 3
SET bytea_output = hex AS $$
DECLARE
    t embeddings.targets;
    s record;
    key_sql text;
    recorded integer;
BEGIN
    SELECT * INTO t FROM embeddings.targets tg WHERE tg.id = record_fingerprints.target_id;
    IF t.id IS NULL OR cardinality(keys) IS NULL THEN
        RETURN 0;
    END IF;
    s := embeddings_internal.fingerprint_slot(t, shadow);
    IF s.slot IS NULL THEN
        RETURN 0;
    END IF;
    SELECT fk.key_sql INTO key_sql FROM embeddings.fingerprint_keys fk
    WHERE fk.target_id = t.id AND fk.version = t.version;
    IF key_sql IS NULL THEN
        key_sql := embeddings_internal.key_json_from_text_sql(t, 'v.k');
        DELETE FROM embeddings.fingerprint_keys fk WHERE fk.target_id = t.id;
        INSERT INTO embeddings.fingerprint_keys VALUES (t.id, t.version, key_sql) ON CONFLICT DO NOTHING;
    END IF;
    BEGIN
        EXECUTE format(
            'INSERT INTO embeddings.fingerprints AS f (target_id, slot, key, fingerprint)'
            ' SELECT DISTINCT ON (1, 2, 3) $1, $2, %s, pg_catalog.md5($3 || v.h)'
            ' FROM ROWS FROM (pg_catalog.unnest($4), pg_catalog.unnest($5)) AS v(k, h) WHERE v.h IS NOT NULL'
            ' ON CONFLICT (target_id, slot, key) DO UPDATE'
            ' SET fingerprint = excluded.fingerprint, written_at = excluded.written_at',
            key_sql)
        USING t.id, s.slot, embeddings_internal.definition_tag(t, s.model), keys, digests;
        GET DIAGNOSTICS recorded = ROW_COUNT;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'embeddings: fingerprints of %.% not recorded: %', t.source, t.embedding_column, SQLERRM;
        recorded := 0;
    END;
    RETURN recorded;
END
$$;

-- The spec (access_spec()) of target t's embeddings_<id>_verify(after, max_rows): `args` as
-- verify_access() makes them. The rows' keys are rendered with the key settings pinned, then
-- their content evaluated with the caller's put back (a target whose keys need no setting reads
-- both at once).
CREATE FUNCTION embeddings_internal.verify_spec(t embeddings.targets, args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    verify_returns CONSTANT text := 'TABLE (key jsonb, has_vector boolean, digest text, blank boolean, failed boolean)';
    -- Both forms end alike: every row's content at once, and when that raises (a content
    -- function failing for some row), the rows one at a time, each row's content by its place,
    -- `row_*` naming where the form keeps each row's key, vector flag and place.
    all_at_once CONSTANT text := $template$
                RETURN QUERY
                    SELECT u.k, u.v, pg_catalog.md5(u.c), u.c IS NULL OR u.c OPERATOR(pg_catalog.!~) %(nonblank)L, false
                    FROM ROWS FROM (pg_catalog.unnest(keys), pg_catalog.unnest(vectors), pg_catalog.unnest(contents)) AS u(k, v, c);
                RETURN;
            EXCEPTION WHEN OTHERS THEN
                NULL;  -- a content function raised for some row: one row at a time below
            END;$template$;
    one_at_a_time CONSTANT text := $template$
                key := %(row_key)s;
                has_vector := %(row_vector)s;
                failed := false;
                BEGIN
                    SELECT pg_catalog.md5(c.c), c.c IS NULL OR c.c OPERATOR(pg_catalog.!~) %(nonblank)L INTO digest, blank
                    FROM (SELECT %(content)s AS c FROM %(source)s t
                          WHERE t.tableoid OPERATOR(pg_catalog.=) %(row_rel)s AND t.ctid OPERATOR(pg_catalog.=) %(row_place)s) c;
                EXCEPTION WHEN OTHERS THEN
                    digest := NULL;
                    blank := false;
                    failed := true;
                END;
                RETURN NEXT;
            END LOOP;
            $template$;
BEGIN
    IF args->>'pin' <> '' THEN
        -- The rows' keys with the settings pinned, then their content with the caller's put back.
        RETURN embeddings_internal.access_spec('_verify', ARRAY['after jsonb', 'max_rows integer'], verify_returns, $template$
            %(save)s %(pin)s
            SELECT pg_catalog.array_agg(s.k), pg_catalog.array_agg(s.v), pg_catalog.array_agg(s.r), pg_catalog.array_agg(s.p)
            INTO keys, vectors, rels, places
            FROM (SELECT %(key_json)s AS k, %(has_vector)s AS v, t.tableoid AS r, t.ctid AS p
                  FROM %(source)s t WHERE %(fn)I.after IS NULL OR %(key_after)s ORDER BY %(key_order)s LIMIT %(fn)I.max_rows) s;
            %(restore)s
            BEGIN
                SELECT pg_catalog.array_agg(c.c ORDER BY u.i) INTO contents
                FROM ROWS FROM (pg_catalog.unnest(rels), pg_catalog.unnest(places)) WITH ORDINALITY AS u(r, p, i)
                LEFT JOIN LATERAL (SELECT %(content)s AS c FROM %(source)s t
                                   WHERE t.tableoid OPERATOR(pg_catalog.=) u.r AND t.ctid OPERATOR(pg_catalog.=) u.p) c ON true;$template$
            || all_at_once || $template$
            FOR i IN 1 .. coalesce(pg_catalog.cardinality(keys), 0) LOOP$template$
            || one_at_a_time,
            args || jsonb_build_object('row_key', 'keys[i]', 'row_vector', 'vectors[i]', 'row_rel', 'rels[i]', 'row_place', 'places[i]'), stable => true,
            declare => E'DECLARE\n    keys jsonb[];\n    vectors boolean[];\n    rels oid[];\n    places tid[];\n    contents text[];\n    saved text[];\n');
    ELSE
        RETURN embeddings_internal.access_spec('_verify', ARRAY['after jsonb', 'max_rows integer'], verify_returns, $template$
            BEGIN
                -- (into arrays first: rows a RETURN QUERY returned stay returned when it raises)
                SELECT pg_catalog.array_agg(s.k), pg_catalog.array_agg(s.v), pg_catalog.array_agg(s.c)
                INTO keys, vectors, contents
                FROM (SELECT %(key_json)s AS k, %(has_vector)s AS v, %(content)s AS c
                      FROM %(source)s t WHERE %(fn)I.after IS NULL OR %(key_after)s ORDER BY %(key_order)s LIMIT %(fn)I.max_rows) s;$template$
            || all_at_once || $template$
            FOR r IN SELECT t.tableoid AS rel, t.ctid AS place, %(key_json)s AS k, %(has_vector)s AS v
                     FROM %(source)s t WHERE %(fn)I.after IS NULL OR %(key_after)s ORDER BY %(key_order)s LIMIT %(fn)I.max_rows LOOP$template$
            || one_at_a_time,
            args || jsonb_build_object('row_key', 'r.k', 'row_vector', 'r.v', 'row_rel', 'r.rel', 'row_place', 'r.place'), stable => true,
            declare => E'DECLARE\n    r record;\n    keys jsonb[];\n    vectors boolean[];\n    contents text[];\n');
    END IF;
END
$$;

-- Target t's functions for the verifying sweep, run as the table's owner (access_spec()s,
-- sql/32_access.sql, which gives them to the owner):
--   embeddings_<id>_verify(after, max_rows)  the rows after `after` in key order, at most
--       `max_rows`: key (JSON form), whether a vector is stored, the md5 of the content, whether
--       the content is blank, and whether evaluating it raised (then the rows one at a time)
--   embeddings_<id>_clear_failing(keys, k0..)  clears the vectors of these rows whose content
--       raises now (a re-registration's content function failing for them): no vector rather
--       than one of an older definition (its store kind's clear_sql()). Returns the keys cleared.
--   embeddings_<id>_existing(keys, k0..)  the keys whose row exists (pruning fingerprints)
CREATE FUNCTION embeddings_internal.verify_access(t embeddings.targets) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    verify_fn text := embeddings_internal.access_body_name(t, '_verify');
    -- Keys whose text depends on session settings (embeddings_internal.key_settings()): rendered with
    -- them pinned, as the triggers and the worker render them, whoever calls; the content with
    -- the function's own (embeddings_internal.content_settings_sql(): as the worker's load evaluates it;
    -- a content function may format dates).
    settings jsonb := (SELECT jsonb_agg(jsonb_build_object('setting', k.name, 'value', k.value, 'i', k.i) ORDER BY k.i)
                       FROM (SELECT s.name, s.value, row_number() OVER (ORDER BY s.name) AS i FROM embeddings_internal.key_settings(t) s) k);
    args jsonb := jsonb_build_object(
        'key_after', embeddings_internal.key_after_param_sql(t, verify_fn),
        'has_vector', 'NOT (' || embeddings_internal.embedding_missing_sql(t, 't') || ')',  -- sql/54_stores.sql
        'clear', embeddings_internal.store_clear_sql(t),
        'pin', coalesce(embeddings_internal.render_each('PERFORM pg_catalog.set_config(%(setting)L, %(value)L, true);', settings, ' '), ''),
        'save', coalesce(embeddings_internal.render('saved := ARRAY[%(list)s];', jsonb_build_object(
                             'list', embeddings_internal.render_each('pg_catalog.current_setting(%(setting)L)', settings, ', '))), ''),
        'restore', coalesce(embeddings_internal.render_each('PERFORM pg_catalog.set_config(%(setting)L, saved[%(i)s], true);', settings, ' '), ''),
        'key_texts', embeddings_internal.render_each('r.k%(n)s AS k%(n)s', (SELECT jsonb_agg(jsonb_build_object('n', i - 1) ORDER BY i)
                                                                   FROM generate_series(1, cardinality(t.key_columns)) i), ', '));
BEGIN
    RETURN NEXT embeddings_internal.verify_spec(t, args);
    RETURN NEXT embeddings_internal.access_spec('_clear_failing', ARRAY['keys text[]'] || embeddings_internal.key_params(t), 'SETOF text', $template$
        FOR r IN SELECT v.key, t.tableoid AS rel, t.ctid AS place
                 FROM ROWS FROM (%(key_rows)s) AS v(key%(key_aliases)s) JOIN %(source)s t ON %(key_match)s WHERE %(has_vector)s LOOP
            BEGIN
                SELECT %(content)s INTO ignored FROM %(source)s t
                WHERE t.tableoid OPERATOR(pg_catalog.=) r.rel AND t.ctid OPERATOR(pg_catalog.=) r.place;
            EXCEPTION WHEN OTHERS THEN
                %(clear)s;
                RETURN NEXT r.key;
            END;
        END LOOP;
        $template$, args, declare => E'DECLARE\n    r record;\n    ignored text;\n');

    -- The keys (`keys`: any text naming each; k0..: the key columns' texts) whose row exists.
    -- A key that is no value of its column's type now (the table watched again with another
    -- key) names no row: one key at a time then, so that it does not stop the others.
    RETURN NEXT embeddings_internal.access_spec('_existing', ARRAY['keys text[]'] || embeddings_internal.key_params(t), 'SETOF text', $template$
        BEGIN
            SELECT pg_catalog.array_agg(v.key) INTO found FROM ROWS FROM (%(key_rows)s) AS v(key%(key_aliases)s)
            WHERE EXISTS (SELECT FROM %(source)s t WHERE %(key_match)s);
            RETURN QUERY SELECT pg_catalog.unnest(found);
            RETURN;
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
        FOR r IN SELECT * FROM ROWS FROM (%(key_rows)s) AS v(key%(key_aliases)s) LOOP
            BEGIN
                IF EXISTS (SELECT FROM (SELECT %(key_texts)s) v, %(source)s t WHERE %(key_match)s) THEN
                    RETURN NEXT r.key;
                END IF;
            EXCEPTION WHEN OTHERS THEN
                NULL;
            END;
        END LOOP;
        $template$, args, stable => true, declare => E'DECLARE\n    r record;\n    found text[];\n');
END
$$;

-- One slice (at most max_rows rows) of target t's verifying pass: queues (backfill lane) every
-- row whose vector is not that of its content and definition now (no fingerprint, another one,
-- content now blank or raising) and every row with content but no vector (but a document
-- settled with no text for the content it holds now), unless it is pending already or
-- dead-lettered. Returns the number of rows queued. The content is evaluated only
-- by embeddings_<id>_verify(), as the table's owner; the comparison with our fingerprints
-- happens here, where the owner's code does not run.
CREATE FUNCTION embeddings_internal.verify_target(t embeddings.targets, max_rows integer) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c embeddings.verify_cursors;
    s record := embeddings_internal.fingerprint_slot(t, false);
    scanned integer;
    last_key jsonb;
    enqueued integer;
BEGIN
    INSERT INTO embeddings.verify_cursors (target_id) VALUES (t.id) ON CONFLICT DO NOTHING;
    SELECT * INTO c FROM embeddings.verify_cursors vc WHERE vc.target_id = t.id FOR UPDATE;
    EXECUTE format($q$
        WITH slice AS (
            SELECT v.key AS k, v.has_vector, v.digest, v.blank, v.failed, row_number() OVER () AS ord
            FROM embeddings.%I($1, $2) AS v
        ),
        settled AS MATERIALIZED (SELECT n.k, n.digest FROM embeddings_internal.no_text_keys($4) n),
        wrong AS (
            SELECT s.k FROM slice s
            LEFT JOIN embeddings.fingerprints f ON f.target_id = $3 AND f.slot = $5 AND f.key = s.k
            LEFT JOIN settled n ON n.k = s.k AND n.digest = s.digest
            WHERE CASE WHEN s.has_vector
                       THEN s.failed OR s.blank OR f.fingerprint IS DISTINCT FROM pg_catalog.md5($6 || s.digest)
                       ELSE NOT s.blank AND n.k IS NULL END
        ),
        queued AS (
            SELECT embeddings_internal.enqueue_keys($3, array_agg(w.k), 0, 'backfill') AS messages, count(*)::int AS keys
            FROM wrong w
            WHERE w.k NOT IN (SELECT p.k FROM embeddings_internal.pending_keys($4) p)
        )
        SELECT (SELECT count(*) FROM slice)::int, (SELECT k FROM slice ORDER BY ord DESC LIMIT 1), keys
        FROM queued
        $q$, 'embeddings_' || t.id || '_verify')
    INTO scanned, last_key, enqueued
    USING c.after_key, max_rows, t.id, t, coalesce(s.slot, -1), embeddings_internal.definition_tag(t, s.model);
    enqueued := coalesce(enqueued, 0);

    IF c.after_key IS NULL THEN  -- a new pass
        c.pass_started_at := now();
        c.pass_rows := 0;
        c.pass_queued := 0;
    END IF;
    c.pass_rows := c.pass_rows + scanned;
    c.pass_queued := c.pass_queued + enqueued;
    IF scanned < max_rows THEN  -- the end of the table: the pass is complete
        UPDATE embeddings.verify_cursors SET after_key = NULL, pass_started_at = NULL, pass_rows = 0, pass_queued = 0,
            verified_at = now(), last_pass_started = c.pass_started_at, last_pass_finished = now(),
            last_pass_rows = c.pass_rows, last_pass_queued = c.pass_queued
        WHERE target_id = t.id;
    ELSE
        UPDATE embeddings.verify_cursors SET after_key = last_key, pass_started_at = c.pass_started_at,
            pass_rows = c.pass_rows, pass_queued = c.pass_queued, verified_at = now()
        WHERE target_id = t.id;
    END IF;
    -- As many fingerprints as rows verified, checked for a row that still exists (65_prune.sql).
    -- Its failure costs only the pruning: never the verification.
    BEGIN
        PERFORM embeddings_internal.prune_fingerprints(t, max_rows);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'embeddings.sweep(verify => true): fingerprints of %.% not pruned: %', t.source, t.embedding_column, SQLERRM;
    END;
    RETURN enqueued;
END
$$;

-- A verifying slice of every target that can be served and has no backfill in progress (its
-- rows are being queued anyway). A target whose slice fails is skipped with a warning. Returns
-- the number of rows queued. Called by embeddings.sweep(verify => true).
CREATE FUNCTION embeddings.verify(max_rows integer DEFAULT 1000) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
    total integer := 0;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR t IN SELECT * FROM embeddings.targets tg ORDER BY tg.id LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = t.source) OR t.problem IS NOT NULL;
        CONTINUE WHEN EXISTS (SELECT FROM embeddings.backfills b WHERE b.target_id = t.id);
        BEGIN
            total := total + embeddings_internal.verify_target(t, max_rows);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'embeddings.sweep(verify => true): skipped %.%: %', t.source, t.embedding_column, SQLERRM;
        END;
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION embeddings.verify IS
    'Queues the rows of a slice of every target whose vector is not that of their current content. Schema owner only.';

-- Per target: how far its verification is. `verified_rows` the rows of the last complete pass,
-- `last_verified` when it finished; `pass_rows` the rows of the pass in progress.
CREATE VIEW embeddings.verification AS
SELECT embeddings_internal.target_name(t) AS target,  -- as status and failures name it
       t.id AS target_id,
       c.last_pass_rows AS verified_rows,
       c.last_pass_finished AS last_verified,
       c.last_pass_queued AS queued_by_last_pass,
       coalesce(c.pass_rows, 0) AS pass_rows,
       c.pass_started_at AS pass_started,
       coalesce(c.pass_queued, 0) AS pass_queued,
       c.verified_at
FROM embeddings.targets t
LEFT JOIN embeddings.verify_cursors c ON c.target_id = t.id
WHERE EXISTS (SELECT FROM pg_class r WHERE r.oid = t.source);
COMMENT ON VIEW embeddings.verification IS 'Per target: how far the verifying sweep has got (the last pass, the pass in progress) and the rows it queued';
GRANT SELECT ON embeddings.verification TO PUBLIC;

-- Trusts the vectors target (source, embedding_column) holds now: records, for every row with a
-- vector and no fingerprint, the fingerprint of its current content and definition, so that the
-- verifying sweep does not queue it. For vectors written before fingerprints existed (a database
-- upgraded from the first release), when re-embedding them all once is not wanted; only where they are known
-- to be current. The content is evaluated by embeddings_<id>_verify(), as the table's owner.
-- Returns the number of fingerprints recorded.
CREATE FUNCTION embeddings.adopt_fingerprints(source regclass, embedding_column name DEFAULT 'embedding')
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t embeddings.targets;
    s record;
    after jsonb;
    scanned integer;
    added integer;
    total bigint := 0;
BEGIN
    SELECT * INTO t FROM embeddings.targets tg
    WHERE tg.source = adopt_fingerprints.source AND tg.embedding_column = adopt_fingerprints.embedding_column;
    IF t.id IS NULL THEN
        RAISE EXCEPTION '%.% is not watched', source, embedding_column
            USING ERRCODE = 'undefined_object', HINT = embeddings_internal.watched_columns_hint(source, 'Watch it first with embeddings.watch().');
    END IF;
    s := embeddings_internal.fingerprint_slot(t, false);
    LOOP
        EXECUTE format($q$
            WITH slice AS (SELECT v.*, row_number() OVER () AS ord FROM embeddings.%I($1, 10000) v),
            added AS (
                INSERT INTO embeddings.fingerprints (target_id, slot, key, fingerprint)
                SELECT $2, $3, x.key, pg_catalog.md5($4 || x.digest) FROM slice x
                WHERE x.has_vector AND NOT x.failed AND NOT x.blank
                ON CONFLICT (target_id, slot, key) DO NOTHING
                RETURNING 1)
            SELECT (SELECT count(*) FROM slice)::int, (SELECT key FROM slice ORDER BY ord DESC LIMIT 1),
                   (SELECT count(*) FROM added)::int
            $q$, 'embeddings_' || t.id || '_verify')
        INTO scanned, after, added
        USING after, t.id, s.slot, embeddings_internal.definition_tag(t, s.model);
        total := total + added;
        EXIT WHEN scanned < 10000;
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION embeddings.adopt_fingerprints IS
    'Trusts the vectors a target holds now, so that the verifying sweep does not queue them again. Schema owner only.';

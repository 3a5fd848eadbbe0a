-- Triggers on watched tables. Statement-level with transition tables: one enqueue call per
-- statement however many rows it touches. They run as the writing role; the only privileged
-- step, sending to pgmq, is embeddings.enqueue_keys() (SECURITY DEFINER).
-- TG_ARGV[0] of every trigger is the target id; its registry row says the rest.

-- SQL for the content of row alias `row_alias` (a column, or the content function applied to
-- the whole row). Identifiers come from the catalog and are quoted here.
CREATE FUNCTION embeddings.content_sql(t embeddings.targets, row_alias text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN t.content_column IS NOT NULL THEN format('%I.%I', row_alias, t.content_column)
        ELSE (SELECT format('%I.%I(%I.*)', n.nspname, p.proname, row_alias)
              FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE p.oid = t.content_function)
    END
$$;

-- A predicate true when the row has content. Whitespace-only content passes (a regex test
-- would cost a bulk INSERT ~0.3x more); the worker treats it as blank and clears the row.
CREATE FUNCTION embeddings.has_content_sql(t embeddings.targets, row_alias text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('(%s) <> ''''', embeddings.content_sql(t, row_alias))
$$;

-- A statement that enqueues the keys of the rows selected by `from_where` (which binds the
-- row alias n); $1 is the target id.
CREATE FUNCTION embeddings.enqueue_sql(t embeddings.targets, from_where text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('SELECT embeddings.enqueue_keys($1, array_agg(n.%I)) %s', t.key_column, from_where)
$$;

-- AFTER INSERT, FOR EACH STATEMENT, REFERENCING NEW TABLE AS new_rows.
-- Enqueues inserted rows that have content and arrived without an embedding (rows restored
-- or copied together with their embedding are trusted).
CREATE FUNCTION embeddings.enqueue_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t embeddings.targets;
BEGIN
    SELECT * INTO t FROM embeddings.targets WHERE id = TG_ARGV[0]::integer;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF t.content_function IS NULL THEN
        EXECUTE embeddings.enqueue_sql(t, format(
            'FROM new_rows n WHERE n.%I IS NULL AND %s',
            t.embedding_column, embeddings.has_content_sql(t, 'n'))) USING t.id;
        RETURN NULL;
    END IF;
    -- A content function is user code: if it raises, the write must still succeed. Enqueue
    -- every new row instead; the worker meets the error and dead-letters the row with it.
    BEGIN
        EXECUTE embeddings.enqueue_sql(t, format(
            'FROM new_rows n WHERE n.%I IS NULL AND %s',
            t.embedding_column, embeddings.has_content_sql(t, 'n'))) USING t.id;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'embeddings: content function of % failed (%); enqueued the rows unfiltered',
            t.source, SQLERRM;
        EXECUTE embeddings.enqueue_sql(t, format('FROM new_rows n WHERE n.%I IS NULL', t.embedding_column))
            USING t.id;
    END;
    RETURN NULL;
END
$$;

-- AFTER UPDATE, FOR EACH STATEMENT, REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows.
-- Enqueues rows whose content changed (through the content function too). Updates of other
-- columns, and updates that set the same content, enqueue nothing. In clear-on-update mode a
-- change to blank content needs no job: embeddings.clear_embedding() already cleared the row.
CREATE FUNCTION embeddings.enqueue_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t embeddings.targets;
    changed text;
BEGIN
    SELECT * INTO t FROM embeddings.targets WHERE id = TG_ARGV[0]::integer;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- A row whose key changed has no old row: it counts as changed.
    changed := format(
        'FROM new_rows n LEFT JOIN old_rows o ON o.%1$I = n.%1$I '
        'WHERE (o.%1$I IS NULL OR (%2$s) IS DISTINCT FROM (%3$s))',
        t.key_column, embeddings.content_sql(t, 'n'), embeddings.content_sql(t, 'o'));
    IF t.clear_on_update THEN
        changed := changed || ' AND ' || embeddings.has_content_sql(t, 'n');
    END IF;
    IF t.content_function IS NULL THEN
        EXECUTE embeddings.enqueue_sql(t, changed) USING t.id;
        RETURN NULL;
    END IF;
    BEGIN
        EXECUTE embeddings.enqueue_sql(t, changed) USING t.id;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'embeddings: content function of % failed (%); enqueued the rows unfiltered',
            t.source, SQLERRM;
        EXECUTE embeddings.enqueue_sql(t, 'FROM new_rows n') USING t.id;
    END;
    RETURN NULL;
END
$$;

-- (Re)creates the triggers of target t; with has_triggers false, only drops them.
CREATE FUNCTION embeddings.install_triggers(t embeddings.targets) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    prefix text := 'embeddings_' || t.id;
BEGIN
    PERFORM embeddings.drop_triggers(t);
    IF NOT t.has_triggers THEN
        RETURN;
    END IF;
    EXECUTE format(
        'CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
        'FOR EACH STATEMENT EXECUTE FUNCTION embeddings.enqueue_inserted(%L)',
        prefix || '_insert', t.source, t.id);
    EXECUTE format(
        'CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
        'FOR EACH STATEMENT EXECUTE FUNCTION embeddings.enqueue_updated(%L)',
        prefix || '_update', t.source, t.id);
    IF NOT t.clear_on_update THEN
        RETURN;
    END IF;
    -- BEFORE UPDATE, FOR EACH ROW: a content change clears the now-stale embedding in the same
    -- row version, so a search never returns the vector of text that is gone. Each target gets
    -- a small function of its own: static SQL runs several times faster per row than a generic
    -- function rewriting NEW by column name.
    IF t.content_function IS NULL THEN
        EXECUTE format(
            $f$CREATE FUNCTION embeddings.%1$I() RETURNS trigger LANGUAGE plpgsql AS $body$
            BEGIN
                NEW.%2$I := NULL;
                RETURN NEW;
            END
            $body$ $f$,
            prefix || '_clear', t.embedding_column);
        -- UPDATE OF and WHEN: it fires only when the content really changed, never for the
        -- worker's own writes to the embedding column.
        EXECUTE format(
            'CREATE TRIGGER %1$I BEFORE UPDATE OF %2$I ON %3$s FOR EACH ROW '
            'WHEN (OLD.%2$I IS DISTINCT FROM NEW.%2$I) EXECUTE FUNCTION embeddings.%1$I()',
            prefix || '_clear', t.content_column, t.source);
    ELSE
        -- A content function is user code and may raise (for the very row being fixed): a
        -- WHEN clause would then fail the UPDATE, so the function compares, and clears when it
        -- cannot tell.
        EXECUTE format(
            $f$CREATE FUNCTION embeddings.%1$I() RETURNS trigger LANGUAGE plpgsql AS $body$
            BEGIN
                IF %2$s IS DISTINCT FROM %3$s THEN
                    NEW.%4$I := NULL;
                END IF;
                RETURN NEW;
            EXCEPTION WHEN OTHERS THEN
                NEW.%4$I := NULL;  -- cannot compare: the embedding may be stale
                RETURN NEW;
            END
            $body$ $f$,
            prefix || '_clear', embeddings.content_sql(t, 'old'), embeddings.content_sql(t, 'new'),
            t.embedding_column);
        EXECUTE format(
            'CREATE TRIGGER %1$I BEFORE UPDATE ON %2$s FOR EACH ROW EXECUTE FUNCTION embeddings.%1$I()',
            prefix || '_clear', t.source);
    END IF;
END
$$;

CREATE FUNCTION embeddings.drop_triggers(t embeddings.targets) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    trigger_name name;
BEGIN
    FOR trigger_name IN
        SELECT tg.tgname FROM pg_trigger tg
        WHERE tg.tgrelid = t.source
          AND tg.tgname IN ('embeddings_' || t.id || '_insert', 'embeddings_' || t.id || '_update',
                            'embeddings_' || t.id || '_clear')
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, t.source);
    END LOOP;
    IF to_regprocedure(format('embeddings.%I()', 'embeddings_' || t.id || '_clear')) IS NOT NULL THEN
        EXECUTE format('DROP FUNCTION embeddings.%I()', 'embeddings_' || t.id || '_clear');
    END IF;
END
$$;

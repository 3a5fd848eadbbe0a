-- Generated SQL: every function, trigger and policy made for one target is text first. A
-- builder returns it (a template with named placeholders, filled by render() below); an
-- installer runs it. target_code() below lists what the builders return for one target, and
-- the golden files of tests/integration/generated/ hold it for every kind of table: a changed
-- template shows there as a diff (docs/development.md, "Generated SQL").
--
-- A template names its values, each with how it is written into the SQL:
--
--   %(name)I   an identifier, quoted where needed (format()'s %I)
--   %(name)L   a literal, NULL for a JSON null (format()'s %L)
--   %(name)s   SQL as it is: a fragment another builder rendered, a type or a relation as
--              Postgres prints it (regtype and regclass text is quoted already), a number
--
-- The templates themselves live with what they make: the trigger functions in
-- sql/30_triggers.sql, the functions run as a table's owner in sql/32_access.sql and in each
-- store kind's file (sql/54_stores.sql lists them), search's in sql/58_search.sql, the
-- verifying sweep's in sql/64_verify.sql.

-- `template` with each placeholder replaced by its value in `args` (a JSON object of strings,
-- numbers, booleans or nulls), written as the placeholder says. The one place where generated
-- SQL quotes names and values. A placeholder without a value is an error, never an empty
-- string; %(name)s of a JSON null is the empty string (an optional fragment left out). A
-- template that starts with a line break is a block, written indented in its builder: its
-- lines lose the indentation they share, and its first and last blank lines go; with
-- `indent`, its lines are indented by that many spaces instead (a block to go inside another:
-- only the template's own lines move, never a value's).
CREATE FUNCTION embeddings_internal.render(template text, args jsonb, indent integer DEFAULT 0) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pieces text[];
    rendered text;
    i integer := 1;
    placeholder text[];
    margin integer;
    value text;
BEGIN
    IF template ~ E'^[ ]*\\n' THEN
        template := regexp_replace(regexp_replace(template, E'^[ ]*\\n', ''), E'\\n[ ]*$', '');
        margin := (SELECT min(length(l) - length(ltrim(l, ' '))) FROM unnest(string_to_array(template, E'\n')) l
                   WHERE l ~ '[^ ]');
        template := array_to_string(ARRAY(SELECT CASE WHEN l ~ '[^ ]' THEN repeat(' ', indent) || substr(l, margin + 1) ELSE '' END
                                          FROM unnest(string_to_array(template, E'\n')) WITH ORDINALITY AS u(l, n)
                                          ORDER BY n), E'\n');
    END IF;
    pieces := regexp_split_to_array(template, E'%\\(\\w+\\)[IsL]');
    rendered := pieces[1];
    FOR placeholder IN SELECT regexp_matches(template, E'%\\((\\w+)\\)([IsL])', 'g') LOOP
        IF NOT args ? placeholder[1] THEN
            RAISE EXCEPTION 'embeddings_internal.render: the template names %%(%)%, which has no value', placeholder[1], placeholder[2]
                USING ERRCODE = 'undefined_parameter',
                      DETAIL = format('Values given: %s.', (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(args) k));
        END IF;
        i := i + 1;
        value := format('%' || placeholder[2], args ->> placeholder[1]);
        -- Function bodies are quoted $body$ ... $body$: a name or value holding that tag (a
        -- column named so) would end the body there, and what follows would be run as SQL.
        IF strpos(value, '$body$') > 0 THEN
            RAISE EXCEPTION 'embeddings_internal.render: the value of %%(%)% holds "$body$", which generated code may not contain: %',
                    placeholder[1], placeholder[2], left(value, 200)
                USING ERRCODE = 'invalid_name', HINT = 'Rename the table, column or function whose name holds it.';
        END IF;
        rendered := rendered || value || pieces[i];
    END LOOP;
    RETURN rendered;
END
$$;

-- The texts of `template` rendered with each element of `each` (a JSON array of objects: each
-- element's values over `args`), joined by `separator`: a list (a key's columns, say) from one
-- template. NULL for an empty array.
CREATE FUNCTION embeddings_internal.render_each(template text, each jsonb, separator text, args jsonb DEFAULT '{}')
RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(embeddings_internal.render(template, args || e.value), separator ORDER BY e.i)
    FROM jsonb_array_elements(each) WITH ORDINALITY AS e(value, i)
$$;

-- Runs the statements a builder returned, in order (an installer's one step).
CREATE FUNCTION embeddings_internal.run_code(code text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    statement text;
BEGIN
    FOREACH statement IN ARRAY coalesce(code, '{}') LOOP
        EXECUTE statement;
    END LOOP;
END
$$;

-- Every statement that makes target t's code, as its builders return it, in the order its
-- installers run it: the functions run as its table's owner (access_code(), sql/32_access.sql,
-- run by generate_access()), the trigger functions and the triggers on its table
-- (trigger_code() and trigger_ddl(), sql/30_triggers.sql, run by generate_functions() and
-- install_triggers()), search's functions and its store's policy (search_code(),
-- sql/58_search.sql). The installers add only grants and owners.
CREATE FUNCTION embeddings_internal.target_code(t embeddings.targets) RETURNS TABLE (part text, name text, statement text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT 'access'::text, c.name, c.statement FROM embeddings_internal.access_code(t) c;
    RETURN QUERY SELECT 'trigger function'::text, c.name, c.statement FROM embeddings_internal.trigger_code(t) c;
    RETURN QUERY SELECT 'trigger'::text, d.name, s.statement
                 FROM embeddings_internal.trigger_ddl(t, t.source) WITH ORDINALITY AS d(name, statement, firing, i)
                 CROSS JOIN LATERAL (VALUES (1, d.statement), (2, d.firing)) AS s(j, statement)
                 WHERE s.statement IS NOT NULL ORDER BY d.i, s.j;
    RETURN QUERY SELECT 'search'::text, c.name, c.statement FROM embeddings_internal.search_code(t) c;
END
$$;

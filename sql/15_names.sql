-- Names a user typed, resolved as the user's own sessions resolve them.
--
-- Our sessions (the worker's, the CLI's, the HTTP server's, migrate's) and every function of
-- this schema search pg_catalog only for functions, operators and types (`pg_catalog, pg_temp`:
-- worker/queries.sql session_reset, and each function's SET search_path): a schema a tenant may
-- create, named after the role we connect as ("$user") or `public`, is never on the path, so
-- an exact-type overload planted there runs nowhere. A table or function name the user gives
-- (`embed-worker search docs`, POST /search's "table", `plan --content`, watch()'s content
-- function) is looked up here in the search path the caller's session started with: its role's
-- and database's setting (ALTER ROLE/DATABASE ... SET), else its connection's options, else the
-- server's; what RESET would restore. Looking a name up runs no one's code.

-- The search path the caller's session started with (pg_settings.reset_val).
CREATE FUNCTION embeddings_internal.session_start_path() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.reset_val FROM pg_catalog.pg_settings s WHERE s.name OPERATOR(pg_catalog.=) 'search_path'
$$;

-- Relation (`is_function` false: to_regclass()) or function (true: to_regprocedure()) `name`
-- as a session whose search path is `path` finds it (NULL: the path this session started
-- with), NULL when there is none: looked up in that path, ours put back after. Qualified
-- throughout: it is parsed under that path. A caller that looks names up often reads the path
-- once (a search: worker/session_guard.py, start_path): session_start_path() reads
-- pg_settings, every setting made into text, which cost a search's check of its target more
-- than the check itself. Any path is safe to pass: a name is only looked up, and a caller may
-- name a table by its schema anyway.
CREATE FUNCTION embeddings_internal.named_in_path(name text, is_function boolean, path text) RETURNS oid
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found oid;
    too_long text;
BEGIN
    -- A relation's name part past max_identifier_length bytes is refused, not cut to another
    -- table's name as Postgres cuts it (a regclass argument's text is cut before any function
    -- sees it; this text we see). Only a name that long is parsed (a search names its table
    -- each time), and one parse_ident() cannot read is left to to_regclass()'s own error.
    IF NOT is_function AND pg_catalog.octet_length(name) > current_setting('max_identifier_length')::integer THEN
        BEGIN
            SELECT p INTO too_long FROM unnest(pg_catalog.parse_ident(name)) AS p
            WHERE pg_catalog.octet_length(p) > current_setting('max_identifier_length')::integer LIMIT 1;
        EXCEPTION WHEN invalid_parameter_value THEN
            too_long := NULL;
        END;
        IF too_long IS NOT NULL THEN
            RAISE EXCEPTION 'the name % is % bytes, over Postgres'' % (max_identifier_length): it would be cut to another',
                    quote_ident(too_long), pg_catalog.octet_length(too_long), current_setting('max_identifier_length')
                USING ERRCODE = 'name_too_long';
        END IF;
    END IF;
    PERFORM pg_catalog.set_config('search_path', coalesce(path, embeddings_internal.session_start_path()), true);
    found := CASE WHEN is_function THEN pg_catalog.to_regprocedure(name)::pg_catalog.oid
                  ELSE pg_catalog.to_regclass(name)::pg_catalog.oid END;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    RETURN found;
END
$$;

-- Table (or view, ...) `name` as the caller's sessions find it: NULL when there is none.
CREATE FUNCTION embeddings_internal.relation_named(name text) RETURNS regclass
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.named_in_path(name, false, NULL)::pg_catalog.regclass
$$;

-- Function `signature` (`name(argument types)`) as the caller's sessions find it: NULL when
-- there is none.
CREATE FUNCTION embeddings_internal.function_named(signature text) RETURNS regprocedure
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.named_in_path(signature, true, NULL)::pg_catalog.regprocedure
$$;

-- Relation `rel` as a default search path ("$user", public) spells it: unqualified in public,
-- else schema-qualified. For text that names a table to a person (a store table's COMMENT),
-- the same whichever session made it.
CREATE FUNCTION embeddings_internal.display_name(rel regclass) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN n.nspname OPERATOR(pg_catalog.=) 'public' THEN pg_catalog.quote_ident(c.relname)
                ELSE pg_catalog.format('%I.%I', n.nspname, c.relname) END
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
    WHERE c.oid OPERATOR(pg_catalog.=) rel
$$;

-- The name `base || suffix`, for a name we generate (a shadow column, a kept column or index, a
-- deferred index, a full-text column): whole when it fits max_identifier_length bytes (63,
-- fixed when the server was built: IMMUTABLE); else `base` cut at a character boundary, with
-- '_' and 8 hex digits of md5(base) before the suffix. Cut by bytes, not characters: a
-- multibyte name cut by characters was then cut again by Postgres, suffix and all, into the
-- very name it was made from (a column's shadow named like the column). The hash keeps apart
-- two long names that share their first bytes, and keeps a cut name from ever being `base`.
CREATE FUNCTION embeddings_internal.suffixed_name(base text, suffix text) RETURNS name
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    room integer := current_setting('max_identifier_length')::integer - pg_catalog.octet_length(suffix);
    kept text;
BEGIN
    IF pg_catalog.octet_length(base) <= room THEN
        RETURN (base || suffix)::name;
    END IF;
    room := room - 9;  -- '_' and the hash
    kept := left(base, room);  -- at most `room` characters: at least that many bytes
    WHILE pg_catalog.octet_length(kept) > room LOOP
        kept := left(kept, -1);
    END LOOP;
    RETURN (kept || '_' || left(md5(base), 8) || suffix)::name;
END
$$;

-- Row keys and values in generated SQL that runs with more rights than a table owner's: the
-- trigger functions (owned by this schema's owner), the event triggers, status, match_chunks()
-- (whoever calls them). A table owner can define code that Postgres runs implicitly on values
-- of its types: an `=` operator for its enum (found by name), a cast from its type to json
-- (to_jsonb() looks it up) or to text, a domain CHECK (run by every cast to the domain). None of
-- it may run there (docs/security.md). So:
--   * keys are compared only with the operators of their type's default btree operator class
--     (operator classes are created by superusers only), named by schema;
--   * a key or content value is turned into text by its type's output function (format('%s')),
--     never by a cast, unless the type is built in (oid below 16384: nobody can add casts from
--     it), and into JSON by to_jsonb() of such a built-in scalar only (to_jsonb() looks for
--     user casts to json only above that line), else as the JSON string of its text;
--   * a domain is handled as its base type: casts to it (and its CHECK) never run.
-- Typed key values are made from text only in the functions that run as the table's owner
-- (sql/32_access.sql).

-- A domain's base type (through domains over domains); any other type itself.
CREATE FUNCTION embeddings_internal.base_type(ty regtype) RETURNS regtype
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
        WITH RECURSIVE d (oid, base) AS (
            SELECT t.oid, t.typbasetype FROM pg_catalog.pg_type t WHERE t.oid = ty
            UNION ALL
            SELECT t.oid, t.typbasetype FROM pg_catalog.pg_type t JOIN d ON t.oid = d.base
        )
        SELECT d.oid::regtype FROM d WHERE d.base = 0);
END
$$;

-- Whether values of type `ty` (a domain: its base type) are built-in scalars: a type of the
-- system catalog that is neither an array nor a composite. Only those are cast to text or
-- given to to_jsonb() in privileged code. Not jsonb: to_jsonb() of one is the value itself, whose
-- text the worker could not write back as Postgres does (key order, number format), so a jsonb
-- key travels as the string of its text, as a user type's does.
CREATE FUNCTION embeddings_internal.builtin_scalar(ty regtype) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
        SELECT t.oid < 16384 AND t.typtype = 'b' AND t.typcategory NOT IN ('A', 'C')
               AND t.oid <> 'pg_catalog.jsonb'::regtype
        FROM pg_catalog.pg_type t WHERE t.oid = embeddings_internal.base_type(ty));
END
$$;

-- The operator of strategy `strategy` (1 <, 3 =, 5 >) of the default btree operator class of
-- type `ty` (a domain: of its base type), as OPERATOR(schema.name); NULL when there is none
-- (watch() refuses such key types). The class is the type's own, or that of a type it is
-- binary-coercible to (varchar: text's), or the polymorphic one of its kind (enums, composites,
-- arrays, ranges). Used as OPERATOR(schema.name) the operator is resolved in that schema only,
-- for the operands' types: a type binary-coercible only in assignment (xml to text) would not
-- find it, so only implicit coercions count, as Postgres's own choice of a default class has it.
CREATE FUNCTION embeddings_internal.key_operator(ty regtype, strategy integer) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH b AS (
        SELECT t.oid, t.typtype, t.typsubscript FROM pg_catalog.pg_type t
        WHERE t.oid = embeddings_internal.base_type(ty)
    ), candidates (intype, preference) AS (
        SELECT b.oid, 0 FROM b
        UNION ALL
        SELECT c.casttarget, 1 FROM pg_catalog.pg_cast c, b
        WHERE c.castsource = b.oid AND c.castmethod = 'b' AND c.castcontext = 'i'
        UNION ALL
        SELECT CASE b.typtype WHEN 'e' THEN 'anyenum'::regtype WHEN 'c' THEN 'record'::regtype
                              WHEN 'r' THEN 'anyrange'::regtype WHEN 'm' THEN 'anymultirange'::regtype END, 2
        FROM b WHERE b.typtype IN ('e', 'c', 'r', 'm')
        UNION ALL
        SELECT 'anyarray'::regtype, 2 FROM b WHERE b.typsubscript = 'pg_catalog.array_subscript_handler'::regproc
    )
    SELECT format('OPERATOR(%I.%s)', n.nspname, o.oprname)
    FROM candidates c
    JOIN pg_catalog.pg_opclass oc ON oc.opcintype = c.intype AND oc.opcdefault
    JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod AND am.amname = 'btree'
    JOIN pg_catalog.pg_amop a ON a.amopfamily = oc.opcfamily AND a.amoplefttype = oc.opcintype
                             AND a.amoprighttype = oc.opcintype AND a.amopstrategy = strategy
    JOIN pg_catalog.pg_operator o ON o.oid = a.amopopr
    JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
    ORDER BY c.preference
    LIMIT 1
$$;

-- Expression `expr` of type `ty` as its base type: a domain's value cast to the base type (no
-- cast function, no CHECK), anything else as it is.
CREATE FUNCTION embeddings_internal.as_base_sql(ty regtype, expr text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
        SELECT CASE WHEN embeddings_internal.base_type(ty) = ty THEN expr
                    ELSE (SELECT format('(%s)::%I.%I', expr, n.nspname, t.typname)
                          FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
                          WHERE t.oid = embeddings_internal.base_type(ty)) END);
END
$$;

-- Expression `expr` of type `ty` written with no cast of a user type: by format() template
-- `builtin` of its base-type expression (as_base_sql()) when ty is a built-in scalar, else by
-- template `other` of expr as it is (text_sql(), key_part_json_sql()).
CREATE FUNCTION embeddings_internal.builtin_or_other_sql(ty regtype, expr text, builtin text, other text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
        SELECT CASE WHEN embeddings_internal.builtin_scalar(ty) THEN format(builtin, embeddings_internal.as_base_sql(ty, expr))
                    ELSE format(other, expr) END);
END
$$;

-- The text of expression `expr` of type `ty`, NULL for NULL, with no cast of a user type: a
-- built-in type's cast to text, else its output function.
CREATE FUNCTION embeddings_internal.text_sql(ty regtype, expr text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
        SELECT embeddings_internal.builtin_or_other_sql(ty, expr, '(%s)::pg_catalog.text',
                                               'CASE WHEN (%1$s) IS NULL THEN NULL ELSE pg_catalog.format(''%%s'', %1$s) END'));
END
$$;

-- The JSON of expression `expr` of key type `ty`, as jobs carry key values: to_jsonb() of a
-- built-in scalar, else the JSON string of its text.
CREATE FUNCTION embeddings_internal.key_part_json_sql(ty regtype, expr text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT embeddings_internal.builtin_or_other_sql(ty, expr, 'pg_catalog.to_jsonb(%s)', 'pg_catalog.to_jsonb(pg_catalog.format(''%%s'', %s))')
$$;

-- The row key of row alias `row_alias` as it goes into a message: the key column's JSON (a
-- scalar), or a JSON array of the key columns'.
CREATE FUNCTION embeddings_internal.key_json_sql(t embeddings.targets, row_alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN cardinality(t.key_columns) = 1
                THEN embeddings_internal.key_part_json_sql(t.key_types[1], format('%I.%I', row_alias, t.key_columns[1]))
                ELSE format('pg_catalog.jsonb_build_array(%s)',
                            (SELECT string_agg(embeddings_internal.key_part_json_sql(k.ty, format('%I.%I', row_alias, k.c)),
                                               ', ' ORDER BY k.i)
                             FROM unnest(t.key_columns, t.key_types) WITH ORDINALITY AS k(c, ty, i)))
           END
$$;

-- "Same key" between two row aliases, with the equality operator of each key column's type's
-- default btree operator class.
CREATE FUNCTION embeddings_internal.key_equal_sql(t embeddings.targets, left_alias text, right_alias text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(format('%1$I.%3$I %4$s %2$I.%3$I', left_alias, right_alias, k.c,
                             embeddings_internal.key_operator(k.ty, 3)),
                      ' AND ' ORDER BY k.i)
    FROM unnest(t.key_columns, t.key_types) WITH ORDINALITY AS k(c, ty, i)
$$;

-- "The key of row alias `row_alias` comes after `values`" (SQL expressions of the key columns'
-- types, in key order) in the key's order (ORDER BY the key columns), with the operators of the
-- key types' default btree operator classes: one row comparison where they are all of one
-- schema (an index range), else spelled out column by column.
CREATE FUNCTION embeddings_internal.key_after_sql(t embeddings.targets, row_alias text, key_values text[]) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH k AS (
        SELECT c, ty, i, v, embeddings_internal.key_operator(ty, 5) AS gt, embeddings_internal.key_operator(ty, 3) AS eq
        FROM unnest(t.key_columns, t.key_types, key_values) WITH ORDINALITY AS u(c, ty, v, i)
    )
    SELECT CASE
        WHEN (SELECT count(DISTINCT gt) FROM k) = 1 THEN
            format('(%s) %s (%s)',
                   (SELECT string_agg(format('%I.%I', row_alias, c), ', ' ORDER BY i) FROM k),
                   (SELECT min(gt) FROM k),
                   (SELECT string_agg(format('(%s)', v), ', ' ORDER BY i) FROM k))
        ELSE
            (SELECT string_agg(format('(%s%I.%I %s (%s))',
                                      (SELECT string_agg(format('%I.%I %s (%s) AND ', row_alias, e.c, e.eq, e.v), '' ORDER BY e.i)
                                       FROM k e WHERE e.i < k.i),
                                      row_alias, k.c, k.gt, k.v), ' OR ' ORDER BY k.i)
             FROM k)
    END
$$;

-- The key column types of table `source` with their modifiers, as format_type() writes them
-- (char(10), not character), for casts of key values made from text.
CREATE FUNCTION embeddings_internal.key_sql_types(t embeddings.targets) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.i)
    FROM unnest(t.key_attnums) WITH ORDINALITY AS k(n, i)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = t.source AND a.attnum = k.n
$$;

-- The types the text of a value of key type `ty` is made of: the type itself (a domain: its base
-- type) and, `nested` in it, an array's elements, a range's subtype (a multirange's range), a
-- composite's fields, recursively.
CREATE FUNCTION embeddings_internal.key_part_types(ty regtype) RETURNS TABLE (part regtype, nested boolean)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE p (part, nested, depth) AS (
        SELECT embeddings_internal.base_type(ty), false, 0
        UNION ALL
        SELECT embeddings_internal.base_type(c.child), true, p.depth + 1
        FROM p CROSS JOIN LATERAL (
            SELECT t.typelem FROM pg_catalog.pg_type t
            WHERE t.oid = p.part AND t.typsubscript = 'pg_catalog.array_subscript_handler'::regproc
            UNION ALL
            SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = p.part
            UNION ALL
            SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = p.part
            UNION ALL
            SELECT a.atttypid FROM pg_catalog.pg_type t
            JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE t.oid = p.part AND t.typtype = 'c'
        ) AS c (child)
        WHERE p.depth < 8
    )
    SELECT DISTINCT p.part::regtype, p.nested FROM p
$$;

-- Why values of type `ty` cannot be row keys, or NULL. Keys travel as text from the session that
-- wrote the row (its triggers) to the worker's, and are compared there with their type's default
-- btree equality: a type without one cannot be a key, and neither can one whose text reads back
-- as another value in another session (money: lc_monetary; the reg* types: search_path). An
-- array's or a composite's default class (array_ops, record_ops) compares the elements or fields
-- with theirs, and fails on the first comparison when one has none (point[]; a composite holding
-- xml): every part must have one. (A range compares its bounds with the class its definition
-- names, so one over a type without a default class is refused too: a superuser's type.)
CREATE FUNCTION embeddings_internal.key_type_problem(ty regtype) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH incomparable AS (
        SELECT string_agg(DISTINCT format_type(p.part, NULL), ', ') AS parts
        FROM embeddings_internal.key_part_types(ty) p
        WHERE p.nested AND (embeddings_internal.key_operator(p.part, 3) IS NULL OR embeddings_internal.key_operator(p.part, 5) IS NULL)
    )
    SELECT CASE
        WHEN embeddings_internal.key_operator(ty, 3) IS NULL OR embeddings_internal.key_operator(ty, 5) IS NULL THEN
            'which has no default btree operator class: rows are found by their key''s equality and order'
        WHEN (SELECT parts FROM incomparable) IS NOT NULL THEN
            format('holding %s, which has no default btree operator class: rows are found by their key''s equality and order',
                   (SELECT parts FROM incomparable))
        WHEN EXISTS (SELECT FROM embeddings_internal.key_part_types(ty) p WHERE p.part = 'pg_catalog.money'::regtype) THEN
            'whose text depends on lc_monetary: a key written by a session with another setting than the worker''s would read back as another value'
        WHEN EXISTS (SELECT FROM embeddings_internal.key_part_types(ty) p JOIN pg_catalog.pg_type t ON t.oid = p.part
                     WHERE t.typnamespace = 'pg_catalog'::regnamespace AND t.typname ~ '^reg[a-z]+$') THEN
            'whose text depends on search_path: a key written by a session with another setting than the worker''s would read back as another object'
    END
$$;

-- The settings the text of target t's keys depends on, pinned (as SET clauses of CREATE
-- FUNCTION) in every generated function that turns keys into text: the statement triggers run in
-- the application's sessions, whose settings are theirs, and the worker reads the keys in its
-- own. Keys are compared and stored as that text (queue messages, fingerprints, dead letters,
-- the verifying sweep), so one value must have one text whichever session writes it, not only a
-- text that reads back as the same value: extra_float_digits for a float (below 1 it rounds),
-- IntervalStyle for an interval, TimeZone for a timestamptz (to_jsonb() writes its offset from
-- the session's zone), bytea_output for a bytea, DateStyle for a date or timestamp in an array,
-- range or composite (to_jsonb() writes a key column's own in ISO whatever the setting). '' for
-- the keys of most tables, whose functions stay as they were (a SET clause costs every call).
-- Our own functions that turn keys into text off the application's write path (recording
-- fingerprints, enqueueing a table's rows) pin all of them, for every target, written out:
--   SET TimeZone = 'UTC' SET DateStyle = 'ISO, MDY' SET IntervalStyle = postgres
--   SET extra_float_digits = 3 SET bytea_output = hex
CREATE FUNCTION embeddings_internal.key_settings(t embeddings.targets) RETURNS TABLE (name text, value text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT DISTINCT s.name, s.value
    FROM unnest(t.key_types) AS k(ty)
    CROSS JOIN LATERAL embeddings_internal.key_part_types(k.ty) p
    JOIN (VALUES ('pg_catalog.float4'::regtype, false, 'extra_float_digits', '3'),
                 ('pg_catalog.float8'::regtype, false, 'extra_float_digits', '3'),
                 ('pg_catalog.interval'::regtype, false, 'IntervalStyle', 'postgres'),
                 ('pg_catalog.timestamptz'::regtype, false, 'TimeZone', 'UTC'),
                 ('pg_catalog.bytea'::regtype, false, 'bytea_output', 'hex'),
                 ('pg_catalog.date'::regtype, true, 'DateStyle', 'ISO, MDY'),
                 ('pg_catalog.timestamp'::regtype, true, 'DateStyle', 'ISO, MDY'),
                 ('pg_catalog.timestamptz'::regtype, true, 'DateStyle', 'ISO, MDY')
         ) AS s(part, nested_only, name, value) ON s.part = p.part AND (p.nested OR NOT s.nested_only)
$$;

-- The same as SET clauses of CREATE FUNCTION (' SET TimeZone = ''UTC''...'), or ''.
CREATE FUNCTION embeddings_internal.key_settings_sql(t embeddings.targets) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(string_agg(format(' SET %s = %L', s.name, s.value), '' ORDER BY s.name), '')
    FROM embeddings_internal.key_settings(t) s
$$;

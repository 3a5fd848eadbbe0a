"""The harness's name-capture floor: exact-type overloads of every function and operator our
SQL names unqualified (tests/support/catalog_names.py, what tests/unit/test_qualified_names.py
finds), planted by the hostile tenant where a session's path could reach them: in a schema named
after each role we connect as (a path's "$user") and in `public`.

Postgres prefers an exact-type match anywhere on the path to pg_catalog's polymorphic or
cast-needing one (`unnest(text[])` over `unnest(anyarray)`, `make_interval(secs smallint)` over
its double precision `secs`). So for each pg_catalog signature of each name, the plantings
replace its polymorphic arguments, and its numeric or string ones, by each of the concrete types
our statements pass (psycopg's smallint, integer, bigint, text, jsonb, ...), keeping argument
names and defaults (`make_interval(secs => ...)`), variadic ones as one argument (`format(text,
text)` over `format(text, VARIADIC "any")`), aggregates as aggregates. Each runs the tenant's
hook, `public.hook('search path functions')`: whoever runs it is recorded, and only the owner's
own sessions may (harness.verdict()).
"""

from __future__ import annotations

from tests.support.catalog_names import CATALOG_NAMES

# The concrete types the plantings take: what our statements pass (psycopg's parameters, casts,
# columns of ours).
CONCRETE = (
    "text",
    "name",
    "smallint",
    "integer",
    "bigint",
    "numeric",
    "double precision",
    "boolean",
    "jsonb",
    "timestamptz",
    "interval",
    "bytea",
    "oid",
    "regclass",
)

PLANT = r"""
DO $plant$
DECLARE
    schemas text[] := %(schemas)s;
    names text[] := %(functions)s;
    operators text[] := %(operators)s;
    concrete text[] := %(concrete)s;
    numbers regtype[] := '{int2,int4,int8,numeric,float4,float8}';
    strings regtype[] := '{text,varchar,name,bpchar}';
    s text;
    c text;
    f record;
    o record;
    i integer;
    n integer := 0;
    args text[];
    sig text;
    rettype text;
    ty regtype;
BEGIN
    FOREACH s IN ARRAY schemas LOOP
        FOR f IN
            SELECT p.proname, p.prokind, p.proretset, p.provariadic <> 0 AS variadic,
                   p.proargtypes::regtype[] AS types, p.prorettype::regtype AS ret,
                   p.proargnames, p.pronargdefaults, p.pronargs
            FROM pg_catalog.pg_proc p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY (names)
              AND p.prokind IN ('f', 'a') AND p.pronargs BETWEEN 1 AND 7
              AND p.prorettype NOT IN ('trigger'::regtype, 'internal'::regtype, 'event_trigger'::regtype)
              AND NOT ('internal'::regtype = ANY (p.proargtypes::regtype[]))
        LOOP
            FOREACH c IN ARRAY concrete LOOP
                args := '{}';
                FOR i IN 1 .. f.pronargs LOOP
                    ty := f.types[i - 1];
                    sig := CASE
                        WHEN ty IN ('anyelement', 'anynonarray', 'anycompatible', 'anycompatiblenonarray', '"any"') THEN c
                        WHEN ty IN ('anyarray', 'anycompatiblearray') THEN c || '[]'
                        WHEN ty = ANY (numbers) AND c::regtype = ANY (numbers) THEN c
                        WHEN ty = ANY (strings) AND c::regtype = ANY (strings) THEN c
                        WHEN (SELECT t.typcategory = 'P' FROM pg_catalog.pg_type t WHERE t.oid = ty) THEN NULL
                        ELSE ty::text END;
                    EXIT WHEN sig IS NULL;
                    IF f.proargnames IS NOT NULL AND f.proargnames[i] <> '' THEN
                        sig := pg_catalog.quote_ident(f.proargnames[i]) || ' ' || sig;
                    END IF;
                    IF i > f.pronargs - f.pronargdefaults THEN
                        sig := sig || ' DEFAULT NULL';
                    END IF;
                    args := args || sig;
                END LOOP;
                CONTINUE WHEN pg_catalog.cardinality(args) <> f.pronargs;
                rettype := CASE
                    WHEN f.ret IN ('anyelement', 'anynonarray', 'anycompatible', 'anycompatiblenonarray') THEN c
                    WHEN f.ret IN ('anyarray', 'anycompatiblearray') THEN c || '[]'
                    WHEN (SELECT t.typcategory = 'P' FROM pg_catalog.pg_type t WHERE t.oid = f.ret) THEN 'text'
                    ELSE f.ret::text END;
                BEGIN
                    IF f.prokind = 'a' THEN
                        EXECUTE pg_catalog.format(
                            'CREATE FUNCTION %%I.%%I(%%s, %%s) RETURNS %%s LANGUAGE plpgsql AS '
                            '$f$ BEGIN PERFORM public.hook(''search path functions''); RETURN $1; END $f$',
                            s, 'captured_' || n, rettype, pg_catalog.array_to_string(args, ', '), rettype);
                        EXECUTE pg_catalog.format('CREATE AGGREGATE %%I.%%I(%%s) (SFUNC = %%I.%%I, STYPE = %%s)',
                            s, f.proname, pg_catalog.array_to_string(args, ', '), s, 'captured_' || n, rettype);
                    ELSE
                        EXECUTE pg_catalog.format(
                            'CREATE FUNCTION %%I.%%I(%%s) RETURNS %%s%%s LANGUAGE plpgsql AS '
                            '$f$ BEGIN PERFORM public.hook(''search path functions''); RETURN%%s; END $f$',
                            s, f.proname, pg_catalog.array_to_string(args, ', '),
                            CASE WHEN f.proretset THEN 'SETOF ' ELSE '' END, rettype,
                            CASE WHEN f.proretset THEN '' ELSE ' NULL' END);
                    END IF;
                    n := n + 1;
                EXCEPTION WHEN OTHERS THEN NULL;  -- the same signature twice, an impossible one
                END;
            END LOOP;
        END LOOP;
        FOR o IN
            SELECT p.oprname, p.oprleft::regtype AS l, p.oprright::regtype AS r, p.oprresult::regtype AS ret
            FROM pg_catalog.pg_operator p
            WHERE p.oprnamespace = 'pg_catalog'::regnamespace AND p.oprname = ANY (operators)
              AND p.oprkind = 'b'
        LOOP
            FOREACH c IN ARRAY concrete LOOP
                args := ARRAY(SELECT CASE
                        WHEN a.t IN ('anyelement', 'anynonarray', 'anycompatible', 'anycompatiblenonarray') THEN c
                        WHEN a.t IN ('anyarray', 'anycompatiblearray') THEN c || '[]'
                        WHEN a.t = ANY (numbers) AND c::regtype = ANY (numbers) THEN c
                        WHEN a.t = ANY (strings) AND c::regtype = ANY (strings) THEN c
                        WHEN (SELECT t.typcategory = 'P' FROM pg_catalog.pg_type t WHERE t.oid = a.t) THEN NULL
                        ELSE a.t::text END
                    FROM pg_catalog.unnest(ARRAY[o.l, o.r]) AS a(t));
                CONTINUE WHEN pg_catalog.array_position(args, NULL) IS NOT NULL;
                rettype := CASE WHEN (SELECT t.typcategory = 'P' FROM pg_catalog.pg_type t WHERE t.oid = o.ret)
                                THEN args[1] ELSE o.ret::text END;
                BEGIN
                    EXECUTE pg_catalog.format(
                        'CREATE FUNCTION %%I.%%I(%%s, %%s) RETURNS %%s LANGUAGE plpgsql AS '
                        '$f$ BEGIN PERFORM public.hook(''search path functions''); RETURN NULL; END $f$',
                        s, 'captured_' || n, args[1], args[2], rettype);
                    EXECUTE pg_catalog.format('CREATE OPERATOR %%I.%%s (LEFTARG = %%s, RIGHTARG = %%s, FUNCTION = %%I.%%I)',
                        s, o.oprname, args[1], args[2], s, 'captured_' || n);
                    n := n + 1;
                EXCEPTION WHEN OTHERS THEN NULL;
                END;
            END LOOP;
        END LOOP;
    END LOOP;
END
$plant$;
"""


def _array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]::text[]"


def plant_script(schemas: list[str]) -> str:
    """The tenant's script: overloads of every listed function and operator in `schemas`."""
    functions = sorted(n for k, n in CATALOG_NAMES if k == "function")
    operators = sorted(n for k, n in CATALOG_NAMES if k == "operator")
    return PLANT % {
        "schemas": _array(schemas),
        "functions": _array(functions),
        "operators": _array(operators),
        "concrete": _array(list(CONCRETE)),
    }

"""The functions of schemas `embeddings` and `embeddings_internal` as installed, those watch()
generates for every kind of target included, name nothing a tenant could capture (tests/unit/test_qualified_names.py walks
sql/ and what the package sends; the SQL that generators build at run time is seen only here).

Each function's body (PL/pgSQL or SQL, from pg_proc) is walked with pglast:
- a function with SET search_path = pg_catalog, pg_temp (ours, generated or not) names
  unqualified only pg_catalog's listed names (tests/support/catalog_names.py);
- the functions that run as a table's owner with the owner's search path (its content
  function and triggers are written for its sessions), and the guards around them (no SET
  clause: they put back their caller's settings), name nothing unqualified at all;
- anything qualified is in pg_catalog, our schemas, pgmq's or pgvector's.
And each listed name is pg_catalog's on this server: what resolves there, whatever a tenant
creates anywhere else.
"""

from __future__ import annotations

from typing import Any

import psycopg

from tests.security.conftest import Roles
from tests.security.every_kind import install_every_kind
from tests.support import sql_names
from tests.support.catalog_names import CATALOG_NAMES
from tests.support.sql_literals import plain_literals_with_backslashes

Conn = psycopg.Connection[Any]

# What every guard calls before and after the owner's code (sql/32_access.sql).
GUARD_HALVES = {"embeddings_internal.guard_save", "embeddings_internal.guard_restore"}

_FUNCTIONS = """
SELECT p.oid::regprocedure::text, pg_catalog.pg_get_functiondef(p.oid), l.lanname,
       p.prosecdef, p.proconfig, p.prosqlbody IS NOT NULL
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE p.pronamespace IN ('embeddings'::regnamespace, 'embeddings_internal'::regnamespace)
  AND p.prokind IN ('f', 'p')
"""


def installed_functions(
    conn: Conn,
) -> list[tuple[str, str, str, bool, list[str] | None, bool]]:
    return [tuple(row) for row in conn.execute(_FUNCTIONS).fetchall()]


def _path(config: list[str] | None) -> tuple[str, ...] | None:
    for setting in config or []:
        name, _, value = setting.partition("=")
        if name == "search_path":
            return tuple(s.strip() for s in value.split(","))
    return None


def test_installed_functions_name_only_what_they_may(roles: Roles) -> None:
    targets = install_every_kind(roles)
    with roles.connect() as su:
        functions = installed_functions(su)
        vector_schema = su.execute("SELECT embeddings.vector_schema()").fetchone()
    installer = {
        "pg_catalog",
        "embeddings",
        "embeddings_internal",
        "pgmq",
        "cron",
        *(vector_schema or ()),
    }
    generated = [f for f in functions if f[0].startswith("embeddings.embeddings_")]
    # The walk covers both schemas: the internals (and nothing generated) in the internal one.
    internal = [f for f in functions if f[0].startswith("embeddings_internal.")]
    assert len(internal) > 200
    assert not [f for f in internal if f[0].startswith("embeddings_internal.embeddings_")]
    for kind, target in targets.items():  # every kind's functions are there
        assert any(f[0].startswith(f"embeddings.embeddings_{target}_") for f in generated), kind
    # Without a SET clause, by design: the guards around the owner-run functions and the two
    # halves they share (they read and put back their caller's settings: sql/32_access.sql),
    # a content column's clear trigger (it runs for every row an UPDATE touches: a SET clause
    # costs each call; sql/30_triggers.sql), embeddings_<id>_visible(), which the planner
    # inlines into its store's policy (sql/56_side.sql), and SQL-standard bodies (bound to their
    # objects when created, under migrate's path): all name nothing unqualified but types.
    bodies = {f[0].split("(")[0] for f in functions if f[0].split("(")[0].endswith("_body")}
    wrong: dict[str, set[str]] = {}
    unparsed = []
    for signature, definition, language, definer, config, standard in functions:
        if language not in ("sql", "plpgsql"):
            continue
        found = sql_names.function_body(definition)
        if definition in found.unparsed:  # (a template in it may not parse: seen installed)
            unparsed.append(signature)
        path = _path(config)
        problems = {
            str(r)
            for r in found.references
            if r.schema and r.schema not in installer and not sql_names.placeholder(r)
        }
        if path == sql_names.FIXED_PATH or (standard and path is None):
            problems |= {
                str(r) for r in found.unqualified() if (r.kind, r.name) not in CATALOG_NAMES
            }
        else:  # the owner's path (definer), a guard, or a store policy's key list: nothing
            # unqualified but pg_catalog's types (a key's type as format_type() spells it:
            # `text`), which resolve in pg_catalog first unless the owner's own path names it later
            name = signature.split("(")[0]
            assert definer or (
                path is None
                and (
                    name + "_body" in bodies
                    or name.endswith(("_visible", "_clear"))
                    or name in GUARD_HALVES
                )
            ), (
                signature,
                config,
            )
            problems |= {
                str(r)
                for r in found.unqualified()
                if r.kind != "type" or (r.kind, r.name) not in CATALOG_NAMES
            }
        if problems:
            wrong[signature] = problems
    assert wrong == {}
    assert unparsed == []


def test_the_listed_names_are_pg_catalogs(conn: Conn) -> None:
    """Each name our SQL leaves unqualified is pg_catalog's here."""
    missing = []
    for kind, name in sorted(CATALOG_NAMES):
        query = {
            "function": "SELECT 1 FROM pg_proc WHERE proname = %s AND pronamespace = 11",
            "operator": "SELECT 1 FROM pg_operator WHERE oprname = %s AND oprnamespace = 11",
            "type": "SELECT 1 FROM pg_type WHERE typname = %s AND typnamespace = 11",
            "collation": "SELECT 1 FROM pg_collation WHERE collname = %s AND collnamespace = 11",
        }[kind]
        if conn.execute(query, (name,)).fetchone() is None:
            missing.append((kind, name))
    assert missing == []


def test_installed_functions_read_the_same_under_either_setting(roles: Roles) -> None:
    """Every function as installed, those watch() generates for every kind of target included,
    writes a constant holding a backslash as an escape string or dollar-quoted: its body is
    parsed under the calling session's standard_conforming_strings (tests/unit/
    test_escape_literals.py walks sql/; what generators build at run time is seen only here)."""
    install_every_kind(roles)
    with roles.connect() as su:
        functions = installed_functions(su)
    assert any(f[0].startswith("embeddings.embeddings_") for f in functions)
    found = {
        f"{signature}: {raw}"
        for signature, definition, language, *_ in functions
        if language in ("sql", "plpgsql")
        for raw in plain_literals_with_backslashes(definition)
    }
    assert not found, "\n".join(sorted(found))

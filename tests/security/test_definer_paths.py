"""Every SECURITY DEFINER function in schema `embeddings` has a fixed search_path, `pg_temp` last:
ours (sql/) and the per-target `embeddings_<id>_*` that watch() generates for each kind of target.
Without a SET search_path such a function resolves names in its caller's path, which the caller
chooses; with `pg_temp` left out of the path, Postgres searches the caller's temporary schema
first, where any login may create tables (docs/security.md)."""

from __future__ import annotations

import re
from typing import Any

import psycopg

from tests.security.conftest import Roles
from tests.security.every_kind import install_every_kind

Conn = psycopg.Connection[Any]


def search_path(config: list[str] | None) -> list[str] | None:
    """The schemas of a function's SET search_path, or None when it sets none."""
    for setting in config or []:
        name, _, value = setting.partition("=")
        if name.lower() == "search_path":
            return [s.strip() for s in value.split(",")]
    return None


def test_every_security_definer_function_has_a_fixed_search_path(roles: Roles) -> None:
    targets = install_every_kind(roles)
    with roles.connect() as su:
        definers = su.execute(
            "SELECT p.proname::text, p.oid::regprocedure::text, p.proconfig FROM pg_proc p"
            " WHERE p.pronamespace IN ('embeddings'::regnamespace, 'embeddings_internal'::regnamespace)"
            " AND p.prosecdef"
        ).fetchall()
        # The guards around the access functions the worker and our operations call
        # (sql/32_access.sql: create_access_function): SECURITY INVOKER and no SET clause,
        # since the settings they put back are their caller's; their source names only
        # pg_catalog and this schema, qualified.
        guards = dict(
            su.execute(
                "SELECT p.oid::regprocedure::text, p.prosrc FROM pg_proc p"
                " WHERE p.pronamespace IN ('embeddings'::regnamespace,"
                " 'embeddings_internal'::regnamespace) AND NOT p.prosecdef"
                " AND EXISTS (SELECT FROM pg_proc b WHERE b.pronamespace = p.pronamespace"
                "             AND b.proname = p.proname || '_body')"
            ).fetchall()
        )

    # The listing covers ours and each kind's generated functions (the content wrapper of a
    # content-function target, a side table's and a chunk table's own).
    names = {name for name, _, _ in definers} | {
        g.split("(")[0].removeprefix("embeddings.") for g in guards
    }
    assert "generate_functions" in names, sorted(names)
    for kind, target in targets.items():
        generated = {n for n in names if n.startswith(f"embeddings_{target}_")}
        assert {f"embeddings_{target}_{f}" for f in ("load", "scan", "insert", "update")} <= (
            generated
        ), (kind, sorted(generated))
    assert f"embeddings_{targets['function']}_content" in names
    assert f"embeddings_{targets['side']}_prune" in names
    assert f"embeddings_{targets['chunked']}_prune" in names

    unfixed = [
        (signature, config)
        for _, signature, config in definers
        if signature not in guards
        and ((path := search_path(config)) is None or path[-1] != "pg_temp")
    ]
    assert unfixed == []
    assert {g.split("(")[0] for g in guards} >= {
        f"embeddings.embeddings_{targets['plain']}_{f}" for f in ("load", "scan", "store")
    }
    for signature, source in guards.items():
        assert guards_name_only_qualified_objects(source), (signature, source)


# What a guard's source may call: pg_catalog's functions and operators, our schemas' functions
# (the body it guards, the internals), and PL/pgSQL's own words.
_CALL = re.compile(r"([A-Za-z_][A-Za-z_0-9.]*)\s*\(")
_PLPGSQL = {
    "ARRAY",
    "IF",
    "SELECT",
    "FROM",
    "RETURN",
    "QUERY",
    "PERFORM",
    "THEN",
    "END",
    "OPERATOR",
}


def guards_name_only_qualified_objects(source: str) -> bool:
    calls = {m.group(1) for m in _CALL.finditer(source)}
    loose = {
        c
        for c in calls
        if not c.startswith(("pg_catalog.", "embeddings.", "embeddings_internal."))
        and c not in _PLPGSQL
    }
    operators = re.findall(r"OPERATOR\(([^)]*)\)", source)
    return not loose and all(o.startswith("pg_catalog.") for o in operators) and " = " not in source

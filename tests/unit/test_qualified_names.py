"""Nothing we send or install names a function, operator or type that a tenant could capture.

Postgres prefers an exact-type match anywhere on the search path to pg_catalog's polymorphic or
cast-needing function, so an unqualified name is safe only where the path searched holds
nothing but pg_catalog (and pg_temp last, never searched for functions and operators). Walked
with Postgres' own grammar (pglast, tests/support/sql_names.py):
- every statement of worker/queries.sql, rendered as the package composes it, the code
  reinstall's statements (worker/schema/code.py), and the statements of sql/ outside functions
  (run by migrate): our sessions' path is pg_catalog, pg_temp (session_reset, installer_path);
- every function of sql/: it has SET search_path = pg_catalog, pg_temp (or a SQL-standard
  body, bound to its objects when migrate created it), and its body (SQL or PL/pgSQL, and the
  format() templates in it, as far as they parse) names nothing else unqualified.
What these leave unqualified must be pg_catalog's: the names in CATALOG_NAMES, each checked
against the server by tests/security/test_installed_names.py, which also walks the functions
watch() generates as installed. The hostile-tenant harness plants an exact-type overload of
every one of them (tests/security/harness.py). A new unqualified name fails here until it is
added to CATALOG_NAMES, and so joins the harness.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pglast
from pglast import ast

from tests.support import sql_names
from tests.support.catalog_names import CATALOG_NAMES, GENERATED_ONLY, VECTOR_TYPES
from worker import queries
from worker.pipeline import jobs
from worker.retrieval import targets as retrieval_targets
from worker.schema import code as schema_code
from worker.schema import files as schema_files

_PARAM = re.compile(r"%\((\w+)\)[sb]")
_FILL = re.compile(r"(?<!\{)\{(\w+)\}(?!\})")


def _fills() -> dict[str, str]:
    return {
        "key_arrays": ", NULL::pg_catalog.text[]",
        "which": retrieval_targets._OF_THE_TABLE.as_string(),
        "read_stamp": jobs.LAST_READ_STAMP,
        "targets": rendered("load_targets"),
        "columns": "x_",
    }


def rendered(name: str) -> str:
    """Query `name` as SQL: its {placeholders} as the package fills them (identifiers: a
    qualified name), its parameters NULL."""
    text = queries.get(name).removeprefix(queries.OURS)
    fills = _fills() if name != "load_targets" else {"which": "true"}
    text = _FILL.sub(lambda m: fills.get(m.group(1), "embeddings.x_"), text)
    text = text.replace("{{", "{").replace("}}", "}")
    return _PARAM.sub("NULL", text).replace("%%", "%")


def statements_we_send() -> dict[str, str]:
    """Every statement the package sends, by where it comes from."""
    sent = {f"queries.sql: {name}": rendered(name) for name in queries.names()}
    for name in dir(schema_code):
        value = getattr(schema_code, name)
        if isinstance(value, str) and value.lstrip().startswith(("SELECT", "WITH")):
            sent[f"schema_code.{name}"] = _PARAM.sub("NULL", value).replace("%%", "%")
    return sent


def _loose(found: sql_names.Found, *, types: frozenset[str] = frozenset()) -> set[str]:
    """What `found` names unqualified that is not a listed pg_catalog name (nor in `types`)."""
    return {
        str(r)
        for r in found.unqualified()
        if (r.kind, r.name) not in CATALOG_NAMES and not (r.kind == "type" and r.name in types)
    }


def _sql_files() -> list[Path]:
    return [*schema_files.install_files(), schema_files.sql_dir() / "uninstall.sql"]


def _path_switch(stmt: Any) -> str | None:
    """The path a top-level `SELECT pg_catalog.set_config('search_path', ..., true)` of sql/
    sets: "fixed" (pg_catalog, pg_temp), "vector" (pgvector's schema too), else None."""
    if not isinstance(stmt, ast.SelectStmt) or not stmt.targetList:
        return None
    call: Any = stmt.targetList[0].val
    if not isinstance(call, ast.FuncCall) or sql_names._names(call.funcname)[1] != "set_config":
        return None
    first, value = call.args[0], call.args[1]  # type: ignore[index]
    if not (isinstance(first, ast.A_Const) and getattr(first.val, "sval", None) == "search_path"):
        return None
    if isinstance(value, ast.A_Const) and getattr(value.val, "sval", None) == "pg_catalog, pg_temp":
        return "fixed"
    return "vector"


# Functions without a SET clause by design: they read and put back their caller's settings (a
# SET search_path would be put back over the one they restore: sql/32_access.sql), so they
# name nothing unqualified but types.
CALLERS_SETTINGS = {"embeddings_internal.guard_save", "embeddings_internal.guard_restore"}


def walk_sql_files() -> tuple[dict[str, set[str]], sql_names.Found]:
    """Per function or statement of sql/ that breaks the rule, what is wrong; and everything
    the files name."""
    wrong: dict[str, set[str]] = {}
    everything = sql_names.Found()
    for path in _sql_files():
        text = path.read_text()
        context = "fixed"
        for raw in pglast.parse_sql(text):
            stmt = raw.stmt
            where = f"{path.name}: "
            switch = _path_switch(stmt)
            if switch:
                context = switch
                continue
            found = sql_names._statement(stmt, text, raw)
            everything.add(found)
            problems: set[str] = set()
            if isinstance(stmt, ast.CreateFunctionStmt):
                where += ".".join(str(n.sval) for n in stmt.funcname or ())
                path_set = sql_names.function_search_path(stmt)
                # A SQL-standard body (RETURN, BEGIN ATOMIC) was bound to its objects when
                # migrate created it, under pg_catalog only: it needs no SET (which would keep
                # the planner from inlining it).
                standard = sql_names.function_body_text(stmt) is None
                name = ".".join(str(n.sval) for n in stmt.funcname or ())
                if name in CALLERS_SETTINGS and path_set is None:
                    problems |= {str(r) for r in found.unqualified() if r.kind != "type"}
                elif path_set != sql_names.FIXED_PATH and not (standard and path_set is None):
                    problems.add(f"SET search_path = {path_set}")
            else:
                where += f"{type(stmt).__name__} at {raw.stmt_location}"
            if context == "vector":  # only pgvector's types may be unqualified, nothing called
                header = {str(r) for r in found.unqualified() if r.kind in ("function", "operator")}
                problems |= header & {str(r) for r in _header_refs(stmt)}
                problems |= _loose(found, types=VECTOR_TYPES)
            else:
                problems |= _loose(found)
            if problems:
                wrong.setdefault(where, set()).update(problems)
    return wrong, everything


def _header_refs(stmt: Any) -> set[sql_names.Reference]:
    found = sql_names.Found()
    if isinstance(stmt, ast.CreateFunctionStmt):
        header = ast.CreateFunctionStmt(**{a: getattr(stmt, a) for a in stmt})
        header.options = ()
        sql_names._walk(header, found)
    else:
        sql_names._walk(stmt, found)
    return found.references


def test_every_function_of_sql_has_our_path_and_names_only_pg_catalog_unqualified() -> None:
    wrong, everything = walk_sql_files()
    assert wrong == {}
    # The walk reached the bodies: PL/pgSQL, SQL, DO blocks and format() templates.
    names = {r.name for r in everything.references}
    assert {"make_interval", "format", "jsonb_build_object", "clock_timestamp"} <= names


def test_every_statement_we_send_names_only_pg_catalog_unqualified() -> None:
    wrong = {}
    for where, text in statements_we_send().items():
        found = sql_names.references(text)
        assert found.unparsed == [], where
        if loose := _loose(found):
            wrong[where] = loose
    assert wrong == {}


def test_our_sessions_search_pg_catalog_only() -> None:
    """Our sessions' settings (session_settings, after session_reset or transaction_discard)
    and migrate's installer_path: pg_catalog, pg_temp, and nothing else."""
    for name in ("session_settings", "installer_path"):
        text = queries.get(name)
        assert "'search_path', 'pg_catalog, pg_temp'" in text, name
        assert "current_setting('search_path')" not in text


def test_the_list_of_unqualified_names_is_what_our_sql_names() -> None:
    """CATALOG_NAMES holds what our SQL names unqualified, and nothing it no longer does (the
    harness plants overloads of each; test_installed_names adds the generated functions')."""
    _, everything = walk_sql_files()
    for text in statements_we_send().values():
        everything.add(sql_names.references(text))
    found = {(r.kind, r.name) for r in everything.unqualified()}
    unused = {n for n in CATALOG_NAMES - found if n not in GENERATED_ONLY}
    assert unused == set(), "names our SQL no longer uses: remove them from CATALOG_NAMES"


def test_a_new_unqualified_call_is_found() -> None:
    """The walk finds what an overload could capture, wherever it is written."""
    body = """CREATE FUNCTION embeddings.f(a smallint) RETURNS interval LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp AS $$
        DECLARE v integer := pg_catalog.length('x');
        BEGIN
            EXECUTE format('SELECT my_new(%L) IS DISTINCT FROM 1', a);
            RETURN CASE a WHEN 1 THEN brand_new(secs => a::halfvec) END;
        END $$"""
    found = {str(r) for r in sql_names.references(body).references}
    assert {
        "function brand_new",
        "function my_new",
        "operator =",
        "type halfvec",
        "function pg_catalog.length",
        "function format",
    } <= found
    unset = "CREATE FUNCTION embeddings.g() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$"
    stmt = pglast.parse_sql(unset)[0].stmt
    assert isinstance(stmt, ast.CreateFunctionStmt)
    assert sql_names.function_search_path(stmt) is None

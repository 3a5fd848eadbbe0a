"""No string constant of ours reads differently when standard_conforming_strings is off.

A plain literal ('...') takes a backslash as an escape when standard_conforming_strings is off:
a setting Postgres still honours, from a role or database default (ALTER DATABASE ... SET), a
legacy application's session, or a table owner's policy SETting it in the middle of a search.
Our functions' bodies are parsed in the calling session, under its setting (a SQL function's
each call, a PL/pgSQL function's at first use), so '\\s' in a regular expression became 's' and
any_lexeme_query()'s '\\' ended its string early: hybrid search failed with a syntax error.
Every constant holding a backslash is therefore written so that it reads the same under either
setting: an escape string (E'\\\\s') or dollar-quoted ($r$\\s$r$). Walked with Postgres' own
scanner (pglast), into dollar-quoted bodies and format() templates, in every file of sql/ and
every statement of worker/queries.sql. Generated code quotes with format()'s %L, which writes
an escape string whenever a backslash is in the value.

pgmq's functions are not ours to rewrite (pgmq.format_table_name's '\\'' ends its string early
when the setting is off): every function of ours that calls one sets standard_conforming_strings
on for the call, so that pgmq's are parsed under it, and our sessions set it (session_reset).
"""

from __future__ import annotations

import pglast
from pglast import ast
from psycopg import sql

from tests.support import sql_names
from tests.support.sql_literals import plain_literals_with_backslashes
from tests.unit.test_qualified_names import _sql_files, rendered
from worker import queries


def test_every_constant_of_sql_reads_the_same_under_either_setting() -> None:
    found = {
        f"{path.name}: {raw}"
        for path in _sql_files()
        for raw in plain_literals_with_backslashes(path.read_text())
    }
    assert not found, "write these as E'' (each backslash doubled) or $$-quoted:\n" + "\n".join(
        sorted(found)
    )


def test_every_statement_we_send_reads_the_same_under_either_setting() -> None:
    found = {
        f"queries.sql {name}: {raw}"
        for name in queries.names()
        for raw in plain_literals_with_backslashes(rendered(name))
    }
    assert not found, "\n".join(sorted(found))


def test_every_function_that_calls_pgmq_reads_it_under_standard_strings() -> None:
    """pgmq's functions are parsed, at their first call in a session, under the setting of the
    moment: a function of ours that calls one (directly or in a format() template) sets it."""
    calling, unset = set(), set()
    for path in _sql_files():
        text = path.read_text()
        for raw in pglast.parse_sql(text):
            stmt = raw.stmt
            found = sql_names._statement(stmt, text, raw)
            if not any(r.kind == "function" and r.schema == "pgmq" for r in found.references):
                continue
            if not isinstance(stmt, ast.CreateFunctionStmt):
                continue  # a statement migrate or uninstall runs: in our session (session_reset)
            name = ".".join(str(n.sval) for n in stmt.funcname or ())
            calling.add(name)
            settings = {
                (option.arg.name, ",".join(str(a.val.sval) for a in option.arg.args or ()))
                for option in stmt.options or ()
                if option.defname == "set"
            }
            if ("standard_conforming_strings", "on") not in settings:
                unset.add(f"{path.name}: {name}")
    assert "embeddings.sweep" in calling and "embeddings_internal.dispatch_requests" in calling
    assert not unset, "add SET standard_conforming_strings = on:\n" + "\n".join(sorted(unset))


def test_our_sessions_read_standard_strings() -> None:
    """session_settings, for the session (after session_reset) and for a transaction alone
    (behind a transaction pooler)."""
    for local in ("false", "true"):
        settings = queries.compose(
            "session_settings",
            local=sql.SQL(local),
            marker_1=sql.Literal(1),
            marker_2=sql.Literal(2),
        ).as_string()
        assert f"pg_catalog.set_config('standard_conforming_strings', 'on', {local})" in settings


def test_a_plain_backslash_is_found_at_any_depth() -> None:
    body = "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT format('%s', 'a\\b') $$"
    assert list(plain_literals_with_backslashes(body)) == ["'a\\b'"]
    nested = "SELECT $o$ SELECT $i$ SELECT '\\s' $i$ $o$"
    assert list(plain_literals_with_backslashes(nested)) == ["'\\s'"]
    fine = "SELECT E'\\\\s', $r$\\s$r$, 'no backslash', U&'\\0041'"
    assert list(plain_literals_with_backslashes(fine)) == []

"""The shape of sql/, read with Postgres' own grammar (tests/support/sql_layout.py): state
(sql/state/) apart from code, functions short enough to read in one sitting, watch()'s options
one field per parameter, and comments that say why rather than when."""

from __future__ import annotations

import re

import pglast
from pglast import ast
from pglast.stream import RawStream

from tests.support import sql_layout, sql_names
from worker.schema import files as schema_files

# About a screen: a function longer than this does several things, each of which can be a
# function of its own with a name that says what it does.
MAX_LINES = 100


def test_no_function_of_sql_runs_over_a_screen() -> None:
    long = [
        f"{f.name} ({f.where}): {f.lines} lines"
        for f in sql_layout.functions()
        if f.lines > MAX_LINES
    ]
    assert long == []


def test_the_splitter_measures_whole_functions() -> None:
    """A function's length runs from CREATE to the end of its body, dollar quotes and all: the
    longest function of sql/ is found, and no statement starts inside a body."""
    longest = sql_layout.functions()[0]
    assert longest.text.startswith("CREATE FUNCTION") and longest.text.endswith("$$")
    assert longest.lines == longest.text.count("\n") + 1 > MAX_LINES * 0.9
    assert all(f.lines <= longest.lines for f in sql_layout.functions())
    text = """-- a comment\n\nCREATE FUNCTION a() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RETURN 1;  -- ; $x$ 'quoted'
END
$$;
-- another
SELECT 1;
"""
    found = pglast.parse_sql(text)
    assert [type(r.stmt).__name__ for r in found] == ["CreateFunctionStmt", "SelectStmt"]


def _statement(path_name: str, kind: type, name: str) -> object:
    path = schema_files.sql_dir() / path_name
    for statement in sql_layout.statements(path):
        if statement.name == name:
            found = pglast.parse_sql(statement.text)[0].stmt
            if isinstance(found, kind):
                return found
    raise AssertionError(f"{name} not in {path_name}")


def test_watch_options_are_watch_parameters() -> None:
    """watch() passes its options whole (embeddings_internal.watch_options): a field per parameter, in
    its order, named and typed alike, so that no step takes them by position."""
    watch = _statement("40_watch.sql", ast.CreateFunctionStmt, "embeddings.watch")
    options = _statement("40_watch.sql", ast.CompositeTypeStmt, "embeddings_internal.watch_options")
    assert isinstance(watch, ast.CreateFunctionStmt)
    assert isinstance(options, ast.CompositeTypeStmt)
    parameters = [(p.name, RawStream()(p.argType)) for p in watch.parameters or ()]
    fields = [(c.colname, RawStream()(c.typeName)) for c in options.coldeflist or ()]
    assert len(parameters) == 20
    assert fields == parameters


# What sql/state/ holds: extensions, the schema, tables and their indexes, grants and comments on
# them, seed rows, and conversions of rows (DO blocks) that earlier releases' revisions rely on.
STATE = (
    ast.CreateExtensionStmt,
    ast.CreateSchemaStmt,
    ast.CreateStmt,
    ast.IndexStmt,
    ast.GrantStmt,
    ast.CommentStmt,
    ast.InsertStmt,
    ast.DoStmt,
)
# What only sql/state/ may hold (a code file's DO block may not make a table or index either).
STATE_ONLY = (
    ast.CreateExtensionStmt,
    ast.CreateSchemaStmt,
    ast.CreateStmt,
    ast.CreateTableAsStmt,
    ast.IndexStmt,
    ast.InsertStmt,
    ast.UpdateStmt,
    ast.AlterTableStmt,
)
MAKES_STATE = re.compile(
    r"\bCREATE\s+(UNLOGGED\s+)?TABLE\s+(IF\s+NOT\s+EXISTS\s+)?embeddings\."
    r"|\bCREATE\s+(UNIQUE\s+)?INDEX\b[^;]*\bON\s+embeddings\.",
    re.I,
)


def _kinds(names: tuple[type, ...]) -> set[str]:
    return {k.__name__ for k in names}


def test_state_is_apart_from_code() -> None:
    """sql/state/ holds tables, indexes and seed rows, and calls none of our functions (during
    an upgrade it runs after the old code was dropped, before the new code is installed); the
    code files hold none of them."""
    wrong = []
    for path in sql_layout.sql_files():
        for s in sql_layout.statements(path):
            if sql_layout.is_state(path):
                if s.kind not in _kinds(STATE):
                    wrong.append(f"{s.where}: {s.kind} in a state file")
                calls = {
                    str(r)
                    for r in sql_names.references(s.text).references
                    if r.kind == "function" and r.schema == "embeddings"
                }
                wrong += [f"{s.where}: calls {c}" for c in sorted(calls)]
            elif s.kind in _kinds(STATE_ONLY) or (
                s.kind == "DoStmt" and MAKES_STATE.search(s.text)
            ):
                wrong.append(f"{s.where}: {s.kind} in a code file")
    assert wrong == []
    state = [p for p in sql_layout.sql_files() if sql_layout.is_state(p)]
    assert state and state == sorted(state) and schema_files.install_files()[: len(state)] == state


HISTORY = re.compile(
    r"\bissues? \d+|§|\b(since|before|until|after|from|in|of) (0\.\d+|release)\b"
    r"|\breleases? before\b|\b20\d\d-\d\d-\d\d\b",
    re.I,
)


def test_comments_say_why_not_when() -> None:
    """History (releases, issue numbers, dated figures) belongs in CHANGELOG.md."""
    found = [
        f"{sql_layout.relative(path)}:{number}: {text}"
        for path in sql_layout.sql_files()
        if "_compat_" not in path.name  # a release's forwarders: they are about releases
        for number, text in sql_layout.comments(path)
        if HISTORY.search(text)
    ]
    assert found == []
    assert HISTORY.search("-- NULL for minutes recorded before 0.3.0 (issue 25 §2)")

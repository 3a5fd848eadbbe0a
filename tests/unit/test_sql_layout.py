"""The shape of sql/, read with Postgres' own grammar (tests/support/sql_layout.py): functions
short enough to read in one sitting, and watch()'s options one field per parameter."""

from __future__ import annotations

import pglast
from pglast import ast
from pglast.stream import RawStream

from tests.support import sql_layout
from worker.schema import files as schema_files

# About a screen: a function longer than this does several things, each of which can be a
# function of its own with a name that says what it does.
MAX_LINES = 100
# Longer ones that wait for their split (issue 48: generated SQL from named templates, one file
# per store kind), each at most as long as it is now.
LONGER = {
    "embeddings.generate_functions": 153,
    "embeddings.generate_verify_access": 149,
    "embeddings.generate_access": 141,
    "embeddings.chunks_store_access": 102,
}


def test_no_function_of_sql_runs_over_a_screen() -> None:
    long = {f.name: f for f in sql_layout.functions() if f.lines > MAX_LINES}
    grown = {
        f"{name} ({f.where}): {f.lines} lines"
        for name, f in long.items()
        if f.lines > LONGER.get(name, MAX_LINES)
    }
    assert grown == set()


def test_the_splitter_measures_whole_functions() -> None:
    """A function's length runs from CREATE to the end of its body, dollar quotes and all: the
    longest function of sql/ is found, and no statement starts inside a body."""
    longest = sql_layout.functions()[0]
    assert longest.text.startswith("CREATE FUNCTION") and longest.text.endswith("$$")
    assert longest.lines == longest.text.count("\n") + 1 > MAX_LINES
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
    """watch() passes its options whole (embeddings.watch_options): a field per parameter, in
    its order, named and typed alike, so that no step takes them by position."""
    watch = _statement("40_watch.sql", ast.CreateFunctionStmt, "embeddings.watch")
    options = _statement("40_watch.sql", ast.CompositeTypeStmt, "embeddings.watch_options")
    assert isinstance(watch, ast.CreateFunctionStmt)
    assert isinstance(options, ast.CompositeTypeStmt)
    parameters = [(p.name, RawStream()(p.argType)) for p in watch.parameters or ()]
    fields = [(c.colname, RawStream()(c.typeName)) for c in options.coldeflist or ()]
    assert len(parameters) == 20
    assert fields == parameters

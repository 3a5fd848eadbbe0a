"""The statements of sql/, split by Postgres' own grammar (pglast, which knows dollar quotes and
PL/pgSQL bodies): what each file creates, and how long each function is.

`python -m tests.support.sql_layout [N]` prints the N longest functions (default 15).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pglast
from pglast import ast

from worker.schema import files as schema_files


@dataclass(frozen=True)
class Statement:
    path: Path
    line: int  # of its first word, from 1
    lines: int  # from its first word to its end, the body of a function included
    kind: str  # the parse node's name: CreateFunctionStmt, CreateStmt, InsertStmt, ...
    name: str  # what it creates or names, schema-qualified where written so ('' if nothing)
    text: str

    @property
    def where(self) -> str:
        return f"{relative(self.path)}:{self.line}"


def relative(path: Path) -> str:
    """`path` as sql/ names it: `40_watch.sql`, `state/10_schema.sql`."""
    return path.relative_to(schema_files.sql_dir()).as_posix()


def _name(stmt: object) -> str:
    if isinstance(stmt, ast.CreateFunctionStmt):
        return ".".join(str(n.sval) for n in stmt.funcname or ())
    relation = getattr(stmt, "relation", None)
    if isinstance(stmt, ast.ViewStmt):
        relation = stmt.view
    if isinstance(stmt, ast.CompositeTypeStmt):
        relation = stmt.typevar
    if relation is not None:
        return ".".join(p for p in (relation.schemaname, relation.relname) if p)
    if isinstance(stmt, ast.IndexStmt):
        return str(stmt.idxname or "")
    return ""


def statements(path: Path) -> Iterator[Statement]:
    """The statements of one file, in order."""
    text = path.read_text()
    for raw in pglast.parse_sql(text):
        start = raw.stmt_location or 0
        own = text[start : start + raw.stmt_len] if raw.stmt_len else text[start:]
        # pglast's statement starts after the previous one's semicolon: the blank lines and
        # comments before its first word are not part of it.
        lead = 0
        for line in own.splitlines(keepends=True):
            if line.strip() and not line.lstrip().startswith("--"):
                lead += len(line) - len(line.lstrip())
                break
            lead += len(line)
        body = own[lead:].rstrip()
        yield Statement(
            path=path,
            line=text.count("\n", 0, start + lead) + 1,
            lines=body.count("\n") + 1,
            kind=type(raw.stmt).__name__,
            name=_name(raw.stmt),
            text=body,
        )


def sql_files() -> list[Path]:
    """Every file `migrate` runs, in its order, and uninstall.sql."""
    return [*schema_files.install_files(), schema_files.sql_dir() / "uninstall.sql"]


def is_state(path: Path) -> bool:
    return path.parent.name == "state"


def comments(path: Path) -> Iterator[tuple[int, str]]:
    """The `--` comments of a file, by line (a `--` inside a string or body counts too)."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if "--" in line:
            yield number, line[line.index("--") :]


def functions() -> list[Statement]:
    """Every CREATE FUNCTION of sql/, longest first."""
    found = [s for path in sql_files() for s in statements(path) if s.kind == "CreateFunctionStmt"]
    return sorted(found, key=lambda s: (-s.lines, s.name))


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    for function in functions()[:count]:
        print(f"{function.lines:5d}  {function.name:45s} {function.where}")

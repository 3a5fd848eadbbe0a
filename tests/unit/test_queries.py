"""worker/queries.sql holds only queries the worker runs: each name is spelled in the package."""

from __future__ import annotations

from pathlib import Path

from worker import queries

PACKAGE = Path(queries.__file__).parent


def test_every_named_query_is_used_by_the_package() -> None:
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "queries.py")
    unused = [n for n in queries.names() if f'"{n}"' not in source and f"'{n}'" not in source]
    assert unused == [], "named queries nothing runs: remove them from queries.sql"

"""What `PUBLIC` may read in schema `embeddings`, against what docs/security.md says: the
registry and progress tables it names, and nothing that holds row keys or content."""

from __future__ import annotations

import re
from typing import Any

import psycopg

from tests.support.cluster import REPO

Conn = psycopg.Connection[Any]

# The paragraph of docs/security.md that names them.
PARAGRAPH = re.compile(
    r"No table or view of ours that holds row keys or content is readable by.*?\n\n", re.S
)


def _documented() -> set[str]:
    found = PARAGRAPH.search((REPO / "docs" / "security.md").read_text())
    assert found, "docs/security.md says which of our tables PUBLIC may read"
    readable = found.group(0).split(" are, and hold neither")[0]
    # A table named "`x` only by ..." is said not to be PUBLIC's.
    return set(re.findall(r"`([a-z_]+)`", readable)) - set(
        re.findall(r"`([a-z_]+)` only by", readable)
    )


def test_public_reads_exactly_the_tables_the_docs_name(conn: Conn) -> None:
    readable = {
        name
        for (name,) in conn.execute(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'embeddings' AND c.relkind IN ('r', 'v', 'p', 'm')
                 AND (has_table_privilege('public', c.oid, 'SELECT')
                      OR has_any_column_privilege('public', c.oid, 'SELECT'))"""
        )
    }
    assert readable == _documented()


def test_public_reads_no_column_of_the_models_registry(conn: Conn) -> None:
    row = conn.execute(
        "SELECT has_any_column_privilege('public', 'embeddings.models', 'SELECT')"
    ).fetchone()
    assert row == (False,)

"""embeddings.stopped's fix for a `problem` says to watch() the table again only where that is
needed (QA 5a): FORCE ROW LEVEL SECURITY, or a content column retyped, end with the ALTER that
mends them; a dropped content column needs watch() again."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support import stores

Conn = psycopg.Connection[Any]


def stopped_fix(conn: Conn) -> str:
    rows = conn.execute("SELECT fix FROM embeddings.stopped WHERE state = 'problem'").fetchall()
    assert len(rows) == 1, rows
    return str(rows[0][0])


@pytest.mark.parametrize(
    ("breaks", "mends"),
    [
        (
            "ALTER TABLE docs ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY",
            "ALTER TABLE docs NO FORCE ROW LEVEL SECURITY",
        ),
        (
            "ALTER TABLE docs ALTER COLUMN body TYPE jsonb USING to_jsonb(body)",
            "ALTER TABLE docs ALTER COLUMN body TYPE text USING body #>> '{}'",
        ),
    ],
    ids=["force_rls", "content_retyped"],
)
def test_a_problem_an_alter_mends_does_not_ask_for_watch(
    conn: Conn, breaks: str, mends: str
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    stores.watch_with(conn, "docs", model="all-MiniLM-L6-v2")
    conn.execute(breaks)
    fix = stopped_fix(conn)
    assert "watch() the table again" not in fix, fix
    assert fix.startswith("fix what the reason names (no watch() needed"), fix
    conn.execute(mends)  # and nothing else
    assert conn.execute("SELECT * FROM embeddings.stopped").fetchall() == []


def test_a_dropped_content_column_asks_for_watch(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    stores.watch_with(conn, "docs", model="all-MiniLM-L6-v2")
    conn.execute("ALTER TABLE docs DROP COLUMN body")
    assert "then watch() the table again" in stopped_fix(conn)

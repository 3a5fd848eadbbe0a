"""`embed-worker status TABLE`: beside many watched tables, one table's rows alone, named as
`search` and `failures` name a table; a name that is no watched table is refused, saying so."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.support import stores

Conn = psycopg.Connection[Any]


def test_status_of_one_table_shows_its_targets_alone(
    conn: Conn, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from worker.cli import main as cli

    for table in ("docs", "notes"):
        stores.texts_table(conn, {}, table=table)
        conn.execute(f"SELECT embeddings.watch('{table}', 'body')")
    conn.execute("CREATE SCHEMA other")
    conn.execute("CREATE TABLE other.notes (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('other.notes', 'body')")
    conn.execute("CREATE TABLE plain (id int)")

    def status(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["status", *argv, "--database-url", dsn])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = status("--json")
    assert code == 0 and len(json.loads(out)) == 3
    code, out, _ = status("notes", "--json")
    assert code == 0 and [r["target"] for r in json.loads(out)] == ["public.notes.embedding"]
    code, out, _ = status("other.notes")
    assert code == 0 and "other.notes.embedding" in out and "public." not in out, out

    code, out, err = status("nosuch")
    assert code == 2 and "no table nosuch" in err and out == ""
    code, out, err = status("plain")
    assert code == 2 and "plain is not watched: SELECT embeddings.watch(" in err and out == ""
    code, _, err = status("My Notes.x")  # no name at all: Postgres's reason, not a traceback
    assert code == 2 and "no table My Notes.x" in err, err

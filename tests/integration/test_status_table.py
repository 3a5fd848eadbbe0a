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


def test_an_exact_status_of_one_table_counts_that_table_alone(conn: Conn) -> None:
    """`status TABLE` filtered the view's rows: `status docs --exact` counted every watched
    table exactly, scanning each (beside a thousand large tables, minutes), to show one. The
    view counts the targets named alone now (embeddings.counted_targets, for the transaction)."""
    from worker import status

    targets = {}
    for table in ("docs", "notes"):
        stores.texts_table(conn, {1: "one", 2: "two"}, table=table)
        row = conn.execute(f"SELECT embeddings.watch('{table}', 'body')").fetchone()
        assert row is not None
        targets[table] = row[0]
    scans = (
        "SELECT relname::text, seq_scan + coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables"
        " WHERE relname IN ('docs', 'notes')"
    )
    with conn.transaction():  # (this transaction's scans: pg_stat_xact_user_tables)
        before = dict(conn.execute(scans).fetchall())
        rows = status.fetch(conn, exact=True, targets=[targets["docs"]])
        after = dict(conn.execute(scans).fetchall())
        assert conn.execute("SELECT count(*) FROM embeddings.status_exact").fetchone() == (2,)
    assert [(r["target"], r["total_rows"]) for r in rows] == [("public.docs.embedding", 2)]
    assert after["docs"] > before["docs"] and after["notes"] == before["notes"], (before, after)


def test_a_count_a_lock_stops_names_who_holds_the_lock(conn: Conn, dsn: str) -> None:
    """`status --exact` beside a session that holds its table locked: `?` with the session that
    holds the lock, as migrate names them (it printed `?` and a note telling to ANALYZE the
    table or run `status --exact`, the command just run)."""
    from worker import db, status
    from worker.cli.status import UNKNOWN_NOTE, render

    stores.texts_table(conn, {1: "one", 2: "two"})
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    with psycopg.connect(dsn, application_name="nightly-rebuild") as locker:
        locker.execute("LOCK TABLE docs IN ACCESS EXCLUSIVE MODE")
        pid = locker.info.backend_pid
        with db.connect(dsn, lock_timeout_ms=100) as reader:
            (row,) = status.fetch(reader, exact=True)
    assert row["total_rows"] is None
    skipped = row["counts_skipped"]
    assert f"pid {pid} (nightly-rebuild, " in skipped and "holds ACCESS EXCLUSIVE on" in skipped
    lines = render([row])
    said = next(line for line in lines if "counts skipped" in line)
    assert said.startswith("public.docs.embedding: ? counts skipped, not waited for: its table")
    assert f"pid {pid} (nightly-rebuild" in said
    assert UNKNOWN_NOTE not in lines

    with db.connect(dsn) as reader:  # released: counted, nothing skipped
        (row,) = status.fetch(reader, exact=True)
    assert (row["total_rows"], row["counts_skipped"]) == (2, None)

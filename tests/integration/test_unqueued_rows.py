"""Rows with content, no vector and no job (QA 5b, finding 3): their writes queued nothing (a
logical-replication subscriber watched without replica => true, triggers disabled), so no
worker will ever embed them. status must not call such a target "done", and doctor warns; an
estimate says so only where the statistics cannot explain the gap."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.integration.test_status_counts import VECTOR, fill, flush_statistics, tiny_model
from worker import status as status_model
from worker.cli import doctor
from worker.cli import status as status_cli
from worker.config import Settings

Conn = psycopg.Connection[Any]

TARGET = "public.docs.embedding"


def target_row(conn: Conn) -> dict[str, Any]:
    (row,) = [r for r in status_model.fetch(conn) if r["target"] == TARGET]
    return row


def test_rows_written_with_triggers_disabled_are_not_done(
    conn: Conn, dsn: str, settings: Settings
) -> None:
    tiny_model(conn)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, embedding halfvec(4))")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'tiny4')")
    conn.execute(f"INSERT INTO docs VALUES (1, 'embedded', {VECTOR}), (2, NULL, NULL)")
    conn.execute("ALTER TABLE docs DISABLE TRIGGER USER")
    conn.execute("INSERT INTO docs (id, body) VALUES (3, 'never queued'), (4, 'nor this')")
    conn.execute("ALTER TABLE docs ENABLE TRIGGER USER")

    row = target_row(conn)
    assert (row["pending_jobs"], row["unqueued_rows"]) == (0, 2), row
    text = "\n".join(status_cli.render([row]))
    line = next(x for x in text.splitlines() if x.startswith(TARGET))
    assert "not queued" in line and "done" not in line, text
    assert "not queued: 2 row(s) have content but no vector" in text, text
    found = [f for f in doctor.check(dsn, settings) if f.check == f"queue {TARGET}"]
    assert [(f.level, "2 row(s) have content but no vector" in f.detail) for f in found] == [
        ("warn", True)
    ], found
    assert "sweep" in found[0].fix

    conn.execute("SELECT embeddings.sweep()")  # what the fix says: they are queued now
    row = target_row(conn)
    assert (row["pending_jobs"], row["unqueued_rows"]) == (2, 0), row


def test_a_settled_target_is_still_done(conn: Conn) -> None:
    tiny_model(conn)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, embedding halfvec(4))")
    conn.execute(f"INSERT INTO docs VALUES (1, 'a', {VECTOR}), (2, NULL, NULL)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'tiny4')")

    row = target_row(conn)
    assert (row["pending_jobs"], row["unqueued_rows"]) == (0, 0), row
    line = next(x for x in status_cli.render([row]) if x.startswith(TARGET))
    assert " done " in f"{line} ", line


def test_an_estimate_tells_unqueued_rows_from_stale_statistics(conn: Conn) -> None:
    tiny_model(conn)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, embedding halfvec(4))")
    conn.execute("ALTER TABLE docs SET (autovacuum_enabled = false)")  # ANALYZE when we say
    fill(conn)  # 2000 embedded, 500 with content and no vector, 500 NULL or blank
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'tiny4', backfill => false)")
    flush_statistics(conn)  # (the inserts counted before the ANALYZE, not after it)
    conn.execute("ANALYZE docs")
    flush_statistics(conn)
    conn.execute("SET embeddings.status_exact_rows = 0")  # estimate even this small table

    row = target_row(conn)
    assert row["estimated"] and row["pending_jobs"] == 0
    assert row["unqueued_rows"] is not None and abs(row["unqueued_rows"] - 500) <= 60, row
    assert "not queued: ~" in "\n".join(status_cli.render([row]))

    # Embedded since the ANALYZE (as a drain leaves the statistics): the changed rows explain
    # the gap, so the estimate claims nothing.
    conn.execute(
        f"UPDATE docs SET embedding = {VECTOR} WHERE embedding IS NULL AND body ~ '[^[:space:]]'"
    )
    flush_statistics(conn)
    assert target_row(conn)["unqueued_rows"] == 0

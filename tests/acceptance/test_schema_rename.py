"""A running worker follows `ALTER SCHEMA ... RENAME` of the schema holding a watched table and
its content function (issue 24 §4): rows written before, during and after the rename are all
embedded, none dead-lettered, whatever the worker was doing when it happened."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import psycopg

from tests.support.jobs import JOBS
from tests.support.process import WorkerProcess, wait_for

Conn = psycopg.Connection[Any]


def count(conn: Conn, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_a_running_worker_follows_a_schema_rename(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    conn.execute("CREATE SCHEMA app")
    conn.execute("CREATE TABLE app.docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "CREATE FUNCTION app.doc_text(d app.docs) RETURNS text LANGUAGE sql STABLE"
        " AS $$ SELECT 'doc: ' || d.body $$"
    )
    conn.execute("SELECT embeddings.watch('app.docs', 'app.doc_text', model => 'all-MiniLM-L6-v2')")
    worker = start_worker(EMBED_MAX_ATTEMPTS=3)
    worker.wait_ready()
    conn.execute("INSERT INTO app.docs VALUES (1, 'before the rename')")
    wait_for(
        lambda: count(conn, "SELECT count(embedding) FROM app.docs") == 1,
        timeout=30,
        what="the first row to be embedded",
    )
    # Rows queued and, likely, a batch in flight when the schema is renamed.
    conn.execute(
        "INSERT INTO app.docs SELECT g, 'row ' || g || ' ' || repeat('words ', g % 50)"
        " FROM generate_series(2, 400) g"
    )
    conn.execute("ALTER SCHEMA app RENAME TO app2")
    conn.execute("INSERT INTO app2.docs VALUES (1000, 'after the rename')")
    conn.execute("UPDATE app2.docs SET body = 'edited after the rename' WHERE id = 1")
    wait_for(
        lambda: (
            count(conn, "SELECT count(*) FROM app2.docs WHERE embedding IS NULL") == 0
            and count(conn, f"SELECT count(*) FROM {JOBS}") == 0
        ),
        timeout=240,
        what="every row to be embedded after the rename",
    )
    assert conn.execute("SELECT row_key, last_error FROM embeddings.failures").fetchall() == []
    status = conn.execute("SELECT target FROM embeddings.status").fetchall()
    assert status == [("app2.docs.embedding",)]
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(30) == 0

"""`status` tells rows that failed and wait for another attempt from fresh ones: no ETA from the
rate of the rows that passed, and the error they failed with; once the last attempt has sent a
row to `failures`, nothing of it is pending."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from worker import status as status_model
from worker.cli import status
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
TARGET = "public.notes.embedding"


def test_a_row_bound_to_fail_shows_retrying_and_its_error(
    conn: Conn, minilm: str, run_once: Callable[..., Worker]
) -> None:
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute(
        "CREATE FUNCTION note_content(n notes) RETURNS text LANGUAGE plpgsql STABLE AS $$"
        " BEGIN IF n.body = 'poison' THEN RAISE EXCEPTION 'cannot read note %', n.id; END IF;"
        " RETURN n.body; END $$"
    )
    conn.execute("SELECT embeddings.watch('notes', 'note_content', model => %s)", (minilm,))
    conn.execute("INSERT INTO notes SELECT g, 'note number ' || g FROM generate_series(1, 5) g")
    conn.execute("INSERT INTO notes VALUES (99, 'poison')")

    run_once(backoff_base_seconds=3600)  # its next attempt is an hour away

    (row,) = status_model.fetch(conn)
    assert (row["target"], row["pending_jobs"], row["failed_jobs"]) == (TARGET, 1, 0)
    assert row["retrying_rows"] == 1 and row["retry_attempts"] == 1
    assert "cannot read note 99" in row["retry_error"]
    assert row["rows_per_second"] > 0 and row["eta_seconds"] is None
    lines = status.render([row])
    assert next(x for x in lines if x.startswith(TARGET)).split()[-1] == "retrying"
    assert any("1 row(s) failed and wait for another attempt" in x for x in lines)

    # Its last attempt: into `failures`, nothing pending, nothing retrying.
    conn.execute("UPDATE pgmq.q_embedding_jobs SET vt = now()")
    run_once(max_attempts=2)
    (row,) = status_model.fetch(conn)
    assert (row["pending_jobs"], row["failed_jobs"], row["retrying_rows"]) == (0, 1, 0)

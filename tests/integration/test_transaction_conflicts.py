"""A transaction of ours that Postgres rolls back for a concurrent one's sake (a deadlock, a
serialization failure) runs again, as one whose lock wait passed the lock timeout does: no
worker stops, no job waits for its lease, no attempt is spent (docs/reliability.md, "Isolation
and conflicts").

Postgres ends such a transaction only under an interleaving no test holds still; a trigger on a
table of ours that raises the error's SQLSTATE once stands in for it, at the statement where
it would happen. Our sessions run at READ COMMITTED whatever the database's default
(tests/integration/test_session_defaults.py), so it is a deadlock there, or a table owner's
code, that raises one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import Running
from tests.support.process import wait_for
from worker import db, exceptions
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

ROWS = 6


def conflict_once(conn: Conn, table: str, event: str, sqlstate: str) -> None:
    """The first `event` statement on `table` fails with `sqlstate`; the next ones go through."""
    conn.execute("CREATE SEQUENCE public.conflicts")
    conn.execute(
        "CREATE FUNCTION public.conflict() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF nextval('public.conflicts') = 1 THEN"
        f" RAISE EXCEPTION 'injected conflict' USING ERRCODE = '{sqlstate}'; END IF;"
        " RETURN NULL; END $$"
    )
    conn.execute(
        f"CREATE TRIGGER conflict AFTER {event} ON {table}"
        " FOR EACH STATEMENT EXECUTE FUNCTION public.conflict()"
    )


def fired(conn: Conn) -> int:
    """How often the trigger ran (the first time failing)."""
    row = conn.execute("SELECT last_value, is_called FROM public.conflicts").fetchone()
    assert row is not None
    return int(row[0]) if row[1] else 0


def docs(conn: Conn, minilm: str) -> None:
    conn.execute("CREATE TABLE docs (id integer PRIMARY KEY, body text, embedding vector(384))")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    conn.execute(f"INSERT INTO docs SELECT g, 'note ' || g FROM generate_series(1, {ROWS}) g")


def nothing_failed(conn: Conn) -> None:
    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_a_conflict_is_translated_as_contention(conn: Conn, dsn: str, sqlstate: str) -> None:
    conn.execute(
        "CREATE FUNCTION public.raise_it(state text) RETURNS void LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = state; END $$"
    )
    session = db.connect(dsn)
    try:
        with pytest.raises(exceptions.TransactionConflict) as raised, db.translated():
            session.execute("SELECT public.raise_it(%s)", (sqlstate,))
        assert isinstance(raised.value, exceptions.Contention)
    finally:
        session.close()


def test_a_read_rolled_back_for_a_concurrent_transaction_is_read_again(
    conn: Conn, minilm: str, run_once: Callable[..., Worker]
) -> None:
    """The fetcher's move of the triggers' keys out of the inbox fails once: the fetcher thread
    stopped the worker (exit 1, every row left queued); it reads again."""
    docs(conn, minilm)
    conflict_once(conn, "embeddings.inbox", "DELETE", "40001")
    run_once()  # (asserts exit 0)
    assert fired(conn) >= 2
    nothing_failed(conn)


def test_a_write_rolled_back_for_a_deadlock_is_written_again_at_once(
    conn: Conn, minilm: str, running: Callable[..., Running]
) -> None:
    """The writer's delete of its batch's jobs is chosen as a deadlock's victim once: the batch
    is written again at once, where it had been left to its lease (300 s here)."""
    docs(conn, minilm)
    conflict_once(conn, "pgmq.q_embedding_jobs", "DELETE", "40P01")
    running(vt_seconds=300)
    wait_for(
        lambda: conn.execute("SELECT count(embedding) FROM docs").fetchone() == (ROWS,),
        timeout=20,
        what="every row embedded",
    )
    assert fired(conn) >= 2
    nothing_failed(conn)
    row = conn.execute(
        "SELECT count(*) FROM pgmq.q_embedding_jobs WHERE message ? 'last_error'"
    ).fetchone()
    assert row == (0,)

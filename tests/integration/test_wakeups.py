"""Waiting for jobs without being told: embeddings.wait_for_jobs() and the fetcher's Waiter
(worker/process/wakeups.py) against a real database."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.fetch import fetch_row, fetch_value
from tests.support.jobs import clear_queue
from tests.support.process import wait_for
from worker import db
from worker.process import wakeups

Conn = psycopg.Connection[Any]
LONG_MS = 60_000  # a timeout no test waits out: a call that returns found what it waited for


@pytest.fixture
def docs(conn: Conn) -> Iterator[int]:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    row = fetch_row(conn, "SELECT embeddings.watch('docs', 'body')")
    clear_queue(conn)
    yield int(row[0])


def wait(conn: Conn, timeout_ms: int, backfill: bool = True) -> bool:
    return bool(
        fetch_value(
            conn,
            "SELECT embeddings.wait_for_jobs('embedding_jobs', %s, %s)",
            (timeout_ms, backfill),
        )
    )


def waiting(dsn: str) -> None:
    """Returns once some session is inside a call of wait_for_jobs."""
    with psycopg.connect(dsn, autocommit=True) as watcher:
        wait_for(
            lambda: (
                watcher.execute(
                    "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE state = 'active'"
                    " AND query LIKE '%wait_for_jobs%' AND pid <> pg_backend_pid())"
                ).fetchone()
                == (True,)
            ),
            timeout=10,
            what="a call of wait_for_jobs",
        )


def in_thread(body: Any) -> threading.Thread:
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def once_it_waits(dsn: str, statement: str) -> threading.Thread:
    """Runs `statement` from a connection of its own, in a thread, once a wait has begun."""

    def run() -> None:
        waiting(dsn)
        with psycopg.connect(dsn, autocommit=True) as other:
            other.execute(statement)

    return in_thread(run)


def test_nothing_to_do_returns_false_after_the_timeout(conn: Conn, docs: int) -> None:
    assert wait(conn, 0) is False
    assert wait(conn, 50) is False


def test_keys_in_the_inbox_or_visible_jobs_in_either_lane_return_at_once(
    conn: Conn, docs: int
) -> None:
    conn.execute("INSERT INTO docs VALUES (1, 'one')")  # the inbox
    assert wait(conn, LONG_MS) is True
    clear_queue(conn)
    conn.execute("SELECT pgmq.send('embedding_jobs', '{\"target\": 1, \"keys\": [1]}')")
    assert wait(conn, LONG_MS) is True
    clear_queue(conn)
    conn.execute("SELECT pgmq.send('embedding_jobs_backfill', '{\"target\": 1, \"keys\": [1]}')")
    assert wait(conn, LONG_MS) is True
    assert wait(conn, 0, backfill=False) is False  # the backfill lane is not asked about


def test_a_write_committed_while_it_waits_ends_the_wait(conn: Conn, dsn: str, docs: int) -> None:
    writer = once_it_waits(dsn, "INSERT INTO docs VALUES (1, 'one')")
    assert wait(conn, LONG_MS) is True
    writer.join()


def test_a_prepared_transaction_ends_the_wait_when_it_commits(
    conn: Conn, dsn: str, docs: int
) -> None:
    row = conn.execute("SHOW max_prepared_transactions").fetchone()
    if row is None or int(row[0]) == 0:
        pytest.skip("the server allows no prepared transactions")
    with psycopg.connect(dsn, autocommit=True) as app:
        app.execute("BEGIN")
        app.execute("INSERT INTO docs VALUES (1, 'one')")
        app.execute("PREPARE TRANSACTION 'wakeups-1'")
    try:
        assert wait(conn, 100) is False  # prepared is not committed: nothing to read yet
        committer = once_it_waits(dsn, "COMMIT PREPARED 'wakeups-1'")
        assert wait(conn, LONG_MS) is True
        committer.join()
    finally:
        if conn.execute("SELECT FROM pg_prepared_xacts WHERE gid = 'wakeups-1'").fetchone():
            conn.execute("ROLLBACK PREPARED 'wakeups-1'")


def test_a_job_whose_visibility_timeout_runs_out_ends_the_wait(conn: Conn, docs: int) -> None:
    """A retry, a deferral, the lease of a worker that died: no transaction ends, time does."""
    conn.execute(
        "SELECT pgmq.send('embedding_jobs', '{\"target\": 1, \"keys\": [1]}', 1)"
    )  # visible in 1 s
    assert wait(conn, 0) is False
    assert wait(conn, LONG_MS) is True


def test_a_login_without_grants_cannot_look(conn: Conn, dsn: str, docs: int) -> None:
    """It runs with its caller's rights: only roles that may read the queue learn about it."""
    conn.execute("CREATE ROLE stranger LOGIN")
    try:
        with (
            psycopg.connect(dsn, user="stranger", autocommit=True) as stranger,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            wait(stranger, 0)
    finally:
        conn.execute("DROP OWNED BY stranger")
        conn.execute("DROP ROLE stranger")


def test_the_waiter_is_interrupted_when_stopping(
    dsn: str, docs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while idle: the call waiting in the database is cancelled, not waited out."""
    monkeypatch.setattr(wakeups, "CALL_SECONDS", 600.0)
    stop = threading.Event()
    wake_r, wake_w = os.pipe()
    waiter = wakeups.Waiter("embedding_jobs", stop, wake_r)
    conn = db.connect(dsn)
    try:
        idle = in_thread(lambda: waiter.idle(conn, 600))
        waiting(dsn)
        stop.set()
        waiter.interrupt()
        idle.join(timeout=10)
        assert not idle.is_alive(), "the wait was not interrupted"
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is fine
    finally:
        conn.close()
        for fd in (wake_r, wake_w):
            os.close(fd)


def test_the_waiter_wakes_on_the_pipe_when_busy(dsn: str, docs: int) -> None:
    """A batch that ends wakes the fetcher (the backfill lane may be read again) at once."""
    stop = threading.Event()
    wake_r, wake_w = os.pipe()
    waiter = wakeups.Waiter("embedding_jobs", stop, wake_r)
    conn = db.connect(dsn)
    try:
        busy = in_thread(lambda: waiter.busy(conn, 600, backfill=True))
        os.write(wake_w, b"x")
        busy.join(timeout=10)
        assert not busy.is_alive()
    finally:
        conn.close()
        os.close(wake_r)
        os.close(wake_w)


def test_the_waiter_looks_less_often_after_a_quiet_spell() -> None:
    """Waking up from each sleep is what waiting costs: every FAST_POLL_MS while work comes,
    every SLOW_POLL_MS once none came for QUIET_SECONDS, often again as soon as some does."""
    read_fd, write_fd = os.pipe()
    try:
        waiter = wakeups.Waiter("embedding_jobs", threading.Event(), read_fd)
        assert waiter.poll_ms == wakeups.FAST_POLL_MS  # a worker starting may find work at once
        waiter._work_found_at -= wakeups.QUIET_SECONDS
        assert waiter.poll_ms == wakeups.SLOW_POLL_MS
        waiter.found_work()
        assert waiter.poll_ms == wakeups.FAST_POLL_MS
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_queue_that_is_none_is_refused_by_name(conn: Conn) -> None:
    """An unknown queue failed with pgmq's internals: relation "pgmq.q_nosuchq" does not
    exist, and the internal query that read it."""
    for queue, said in (("nosuchq", 'no queue "nosuchq"'), (None, "queue_name must not be NULL")):
        with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
            conn.execute("SELECT embeddings.wait_for_jobs(%s, 500)", (queue,))
        assert str(refused.value.diag.message_primary) == f"embeddings.wait_for_jobs(): {said}"
        conn.rollback()

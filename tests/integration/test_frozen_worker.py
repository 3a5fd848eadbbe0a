"""A worker whose process stops running (SIGSTOP, `docker pause`, a cgroup freezer) inside a
transaction of ours holds nothing without bound, and is not taken, once it runs again, for a
table owner's code that ignored its bound (QA ops2, finding 1: the frozen writer's transaction
stayed "idle in transaction" with its locks on the application's table, and on SIGCONT the
watchdog ended its session blaming the tenant)."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from worker import db, session_settings, sessions
from worker.process.watchdog import Watchdog
from worker.session_guard import GuardedConnection

Conn = psycopg.Connection[Any]


def gone(conn: Conn, pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if conn.execute(
            "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)", (pid,)
        ).fetchone() == (True,):
            return True
    return False


def test_a_transaction_of_ours_left_idle_ends_with_its_session(
    conn: Conn, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_settings, "IDLE_IN_TRANSACTION_MS", 300)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    # (a role or database that says otherwise changes nothing: ours is set after RESET ALL)
    conn.execute("SELECT set_config('idle_in_transaction_session_timeout', '0', false)")
    timeout = psycopg.errors.IdleInTransactionSessionTimeout
    with db.connect(dsn) as frozen, pytest.raises(timeout), frozen.transaction():
        frozen.execute("INSERT INTO public.docs VALUES (1, 'written, never committed')")
        pid = frozen.info.backend_pid
        # the process stops here: its session is ended, its locks go with it
        assert gone(conn, pid), conn.execute(
            "SELECT state, now() - state_change FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        conn.execute("SET lock_timeout = '2s'")
        conn.execute("ALTER TABLE docs ADD COLUMN extra int")
    assert conn.execute("SELECT count(*) FROM docs").fetchone() == (0,)


def test_the_watchdog_leaves_a_session_that_finished_its_statement_while_the_worker_was_late(
    conn: Conn, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The bound passed while the process did not run: the server finished the statement and
    waits for us to read its result. Not the owner's code; nothing to end."""
    session = sessions.Session(dsn, "writer", threading.Event())
    late = session.get()
    assert isinstance(late, GuardedConnection)
    watchdog = Watchdog(dsn, lock_timeout_ms=500)
    watchdog.watch(session)
    with late.transaction():
        late.execute("SELECT 1")
        # as the writer's thread left it, frozen between the statement's end and reading it
        late.running_bounded = (time.monotonic() - 5, "public.docs.embedding's triggers")
        overdue = watchdog.overdue()
        assert [name for name, *_ in overdue] == ["writer"]
        assert watchdog.end(overdue) == []
        late.running_bounded = None
        assert late.execute("SELECT 2").fetchone() == (2,)
    assert "went on past its bound" not in caplog.text
    session.close()

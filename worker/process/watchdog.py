"""The watchdog: a statement that runs a table owner's code and ignores its bound ends with its
session.

The bound of such a statement (worker/pipeline/bounds.py) is a statement timeout, which Postgres
enforces by cancelling the statement, and PL/pgSQL can catch a cancel (`EXCEPTION WHEN
query_canceled`): an owner's trigger or content function that catches it and goes on would hold
the worker's writer, or its fetcher, for as long as it liked. So a thread of its own looks at the
pipeline's connections every POLL_SECONDS (reading what each says it runs: no database), and
ends the session of one whose bounded statement is GRACE_SECONDS past its bound and that the
server still runs (not one done and waiting for us: a late process's), from a
short-lived connection of its own (pg_terminate_backend: a FATAL error, which no code can catch;
a role may end its own sessions). The thread that ran the statement gets ConnectionLost, reads
from its connection whose code it was (`ended_by`), and goes on with its batch on a new
connection: that target's rows a row at a time, then without the row whose code it was, which
fails (an attempt, as any row whose code ran past its bound).

The session ended is the server backend that runs the statement, as the server says it
(worker/server_session.py): behind a pooler libpq's backend pid is the pooler's cancel key, and
ending it ended an unrelated backend or none. Behind a transaction pooler, only while that
backend still runs our transaction, whose marker it holds.
"""

from __future__ import annotations

import logging
import threading
import time

from worker import db, exceptions, queries, sessions
from worker.server_session import ServerSession
from worker.session_guard import GuardedConnection

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1
GRACE_SECONDS = 0.25
# A look this much later than POLL_SECONDS after the last: this process did not run meanwhile
# (SIGSTOP, `docker pause`, a cgroup freezer, or starved of CPU), and what looks overdue now
# may be our own lateness: a session that finished its statement, its result unread, is never
# ended (terminate_backend in queries.sql ends only one still running it), and the pause is said.
LATE_SECONDS = 1.0


class Watchdog:
    """The sessions whose bounded statements it watches (the fetcher's, the writer's)."""

    def __init__(self, dsn: str, lock_timeout_ms: int, per_transaction: bool = False) -> None:
        self.dsn = dsn
        self.lock_timeout_ms = lock_timeout_ms
        self.per_transaction = per_transaction
        self._sessions: list[sessions.Session] = []
        self._lock = threading.Lock()

    def watch(self, session: sessions.Session) -> None:
        with self._lock:
            self._sessions.append(session)

    def run(self, finished: threading.Event) -> None:
        """Looks every POLL_SECONDS until `finished`."""
        looked = time.monotonic()
        while not finished.wait(POLL_SECONDS):
            late, looked = time.monotonic() - looked - POLL_SECONDS, time.monotonic()
            if late > LATE_SECONDS:
                logger.warning(
                    "watchdog: this process ran nothing for %.1f s (paused: SIGSTOP, docker"
                    " pause, a cgroup freezer; or starved of CPU): a statement of ours that looks"
                    " past its bound now ends its session only if the server still runs it",
                    late,
                )
            overdue = self.overdue()
            if overdue:
                self.end(overdue)

    def overdue(self) -> list[tuple[str, GuardedConnection, ServerSession, object]]:
        """The watched sessions whose bounded statement ran GRACE_SECONDS past its bound: name,
        connection, the server session running it, the statement's label."""
        with self._lock:
            sessions = list(self._sessions)
        now = time.monotonic()
        found = []
        for session in sessions:
            conn = session.current()
            if not isinstance(conn, GuardedConnection):
                continue
            running = conn.running_bounded
            if running is None or now < running[0] + GRACE_SECONDS:
                continue
            found.append((session.name, conn, conn.server_session(), running[1]))
        return found

    def end(self, overdue: list[tuple[str, GuardedConnection, ServerSession, object]]) -> list[int]:
        """Ends the sessions of `overdue`; the server backends' pids ended."""
        ended: list[int] = []
        try:
            with (
                db.connect(
                    self.dsn,
                    connect_timeout=3,
                    lock_timeout_ms=self.lock_timeout_ms,
                    per_transaction=self.per_transaction,
                ) as conn,
                db.translated(),
            ):
                for name, watched, server, label in overdue:
                    watched.ended_by = label  # (before: its thread reads it once ended)
                    rows = conn.execute(queries.get("terminate_backend"), server.params())
                    pids = [int(pid) for (pid,) in rows.fetchall()]
                    if not pids:  # (its statement ended meanwhile, its result not read yet)
                        watched.ended_by = None
                        continue
                    ended += pids
                    logger.warning(
                        "%s: a statement running a table owner's code (%s) went on past its"
                        " bound, catching the cancel: its session (pid %s) is ended",
                        name,
                        label,
                        ", ".join(map(str, pids)),
                    )
        except exceptions.EmbedWorkerError as exc:
            logger.warning("watchdog: could not end an overdue session (%s)", exc)
        return ended

"""The deferred HNSW indexes' builds: watch() defers a large table's index until its backfill
ends (sql/62_backfill.sql), and a worker whose role owns the table builds it CONCURRENTLY.

A build waits for two kinds of things. What every CONCURRENTLY build in the database waits for,
the transactions older than it, it waits for without bound: another table's build would wait
for them too. What one table's users hold, its lock (a VACUUM, a LOCK TABLE, an index of theirs
being built) or a write to it not yet committed, it waits for only while no other table's index
is ready: after TABLE_WAIT_SECONDS of such a wait it is cancelled, and the table's turn comes
after the others' (docs/reliability.md, "Bounded waits"). Of the first wait it says every
OLDER_SAY_SECONDS which sessions it waits for: only they can end it, and a `run --once` waits
for the build.

The build's session is the server backend's, as the server says it: behind a pooler libpq's
backend pid is the pooler's cancel key, which pg_stat_activity does not know. Behind a
transaction pooler each statement of the build runs alone, in whichever server session the
pooler gives it, with no statement of ours in its exchange to say which: there the session is
the one of our role running that very statement (queries.sql: index_build_session).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from worker import db, exceptions, queries

logger = logging.getLogger(__name__)

# How long a build may wait for what its table's users hold while another table's index is
# ready. Long enough for an application's ordinary write transactions, which a build waits for
# at two of its steps; looked at in the fetcher's idle rounds (EMBED_POLL_SECONDS apart).
TABLE_WAIT_SECONDS = 10.0
LOOK_SECONDS = 1.0  # at most one look at a waiting build a second
# A build waiting for transactions older than it (a session left idle in a transaction) logs
# which, once it has waited this long, and again as often.
OLDER_SAY_SECONDS = 60.0
# A build that failed (its name taken, its table's index left invalid, ...) is tried again
# after this long, doubled at each failure up to FAILED_RETRY_MAX_SECONDS; the other tables'
# ready indexes are built meanwhile. Before, it was tried again at once, many times a second,
# and as the first of the queue's targets it kept every later one from being built.
FAILED_RETRY_SECONDS = 10.0
FAILED_RETRY_MAX_SECONDS = 600.0

Ready = tuple[int, str | None, list[str]]  # target id, cleanup, statements


@dataclass
class _Build:
    """A build under way, as its thread and the fetcher's looks at it share it."""

    target_id: int
    connection: db.Connection | None = None  # its session, once connected
    pid: int | None = None  # that session's server backend (read once: it may be closing)
    statement: str | None = None  # the statement it runs (per transaction: how pid is found)
    held_since: float | None = None  # when a look first found it waiting for its table
    older_since: float | None = None  # ... for transactions older than it
    older_said: float = 0.0  # when that wait was last logged
    given_way: bool = False  # cancelled for another table's: not a failure
    stopped: bool = False  # cancelled by the worker's stop: not a failure either


class IndexBuilder:
    """Builds the HNSW indexes watch() deferred on large tables, CONCURRENTLY (so that writes
    go on), one at a time in a thread of its own, once their backfill has ended. Only where
    this worker's role owns the table; otherwise the index waits for its owner (status shows
    `index_deferred`). A build interrupted by a stop leaves an invalid index, dropped before
    the next try. A partitioned table's index is built one partition per run (the partition's
    index, then its attachment to the parent's), until the parent's is valid."""

    def __init__(self, dsn: str, queue: str, *, per_transaction: bool = False) -> None:
        self.dsn = dsn
        self.per_transaction = per_transaction
        self.queue = queue
        self._thread: threading.Thread | None = None
        self._build: _Build | None = None
        self._given_way: dict[int, int] = {}  # target id: builds cancelled for others' turns
        self._failed: dict[int, tuple[int, float]] = {}  # target id: failures in a row, next try
        self._next_look = 0.0
        self._stopping = threading.Event()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def maybe_start(self, conn: db.Connection) -> None:
        """Starts the build of a ready index, those that gave way the fewest times first; or,
        when one is under way, looks at what it waits for."""
        if self._stopping.is_set():
            return
        if self.busy:
            self._look(conn)
            return
        now = time.monotonic()
        ready = [row for row in self._ready(conn) if self._failed.get(row[0], (0, now))[1] <= now]
        if not ready:
            return
        target_id, cleanup, statements = min(
            ready,
            key=lambda row: (
                self._given_way.get(row[0], 0) + self._failed.get(row[0], (0, now))[0],
                row[0],
            ),
        )
        self._build = _Build(target_id)
        self._thread = threading.Thread(
            target=self._run,
            args=(self._build, cleanup, statements),
            name="index-builder",
            daemon=True,
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancels the build under way, if any, and waits for its thread: a worker that stops
        leaves no build of its own running (an invalid index it leaves is dropped before the
        next try). Before, the thread and its session outlived a worker run in a process that
        went on, and a stopped process's build went on in the database until its end."""
        self._stopping.set()
        thread, build = self._thread, self._build
        if thread is None or build is None:
            return
        build.stopped = True
        deadline = time.monotonic() + timeout
        while thread.is_alive() and time.monotonic() < deadline:
            if build.connection is not None:  # (None: still connecting, it checks _stopping)
                try:
                    build.connection.cancel_safe(timeout=max(0.1, deadline - time.monotonic()))
                except psycopg.Error as exc:  # (it ended meanwhile)
                    logger.debug("target %d: no cancel: %s", build.target_id, exc)
            thread.join(0.2)
        if thread.is_alive():
            logger.warning(
                "target %d: its index build did not stop in %.0f s", build.target_id, timeout
            )

    def _ready(self, conn: db.Connection) -> list[Ready]:
        rows = _read(conn, "deferred_index_ready", {"queue": self.queue})
        return [(row[0], row[1], row[2]) for row in rows]

    def _look(self, conn: db.Connection) -> None:
        """Cancels the build under way when it has waited for its table's users for
        TABLE_WAIT_SECONDS and another table's index is ready."""
        build, now = self._build, time.monotonic()
        if build is None or build.connection is None or now < self._next_look:
            return
        self._next_look = now + LOOK_SECONDS
        pid = self.build_pid(conn)
        if pid is None:
            return
        waits_for, holders = self._waits(conn, pid)
        if waits_for == "older":
            self._say_older(build, holders, now)
        else:
            build.older_since = None
        if waits_for != "table":
            build.held_since = None
            return
        if build.held_since is None:
            build.held_since = now
        waited = now - build.held_since
        if waited < TABLE_WAIT_SECONDS:
            return
        if not [row for row in self._ready(conn) if row[0] != build.target_id]:
            return  # nothing waits behind it
        self._given_way[build.target_id] = self._given_way.get(build.target_id, 0) + 1
        build.given_way = True
        logger.warning(
            "target %d: its index build has waited %.0f s for sessions holding its table "
            "(pids %s); cancelled: the other tables' ready indexes are built first, then it "
            "is tried again",
            build.target_id,
            waited,
            ", ".join(map(str, holders)) or "gone",
        )
        try:
            build.connection.cancel_safe(timeout=5.0)
        except psycopg.Error as exc:  # (it ended meanwhile)
            logger.debug("target %d: no cancel: %s", build.target_id, exc)

    def build_pid(self, conn: db.Connection) -> int | None:
        """The server backend of the build under way (None: none, or not found): the one its
        connection's reset named; per transaction, the one running its statement now, looked up
        on `conn`."""
        build = self._build
        if build is None or not self.per_transaction:
            return None if build is None else build.pid
        statement = build.statement
        if statement is None:
            return None
        rows = _read(conn, "index_build_session", {"statement": statement})
        return rows[0][0] if rows else None

    def _waits(self, conn: db.Connection, pid: int) -> tuple[str | None, list[int]]:
        """What session `pid` waits for ('table': what its table's users hold; 'older':
        transactions older than it; None: no lock), and the sessions it waits for."""
        rows = _read(conn, "index_build_held", {"pid": pid})
        return (rows[0][0], list(rows[0][1] or ())) if rows else (None, [])

    @staticmethod
    def _say_older(build: _Build, holders: list[int], now: float) -> None:
        """Logs a build's wait for older transactions (`holders`) every OLDER_SAY_SECONDS it
        lasts."""
        if build.older_since is None:
            build.older_since = build.older_said = now
        if now - build.older_said < OLDER_SAY_SECONDS:
            return
        build.older_said = now
        logger.warning(
            "target %d: its index build has waited %.0f s for transactions older than it "
            "(pids %s), as any CONCURRENTLY build in the database would; it goes on when they end",
            build.target_id,
            now - build.older_since,
            ", ".join(map(str, holders)) or "gone",
        )

    def _run(self, build: _Build, cleanup: str | None, statements: list[str]) -> None:
        target_id = build.target_id
        try:
            # No lock or statement timeout, not even the database's: a CONCURRENTLY build
            # waits for every transaction older than it (lock waits, to Postgres), and takes
            # minutes on a large table, in a thread of its own that nothing waits for. Cut
            # short, it would leave an invalid index and start over at each try. What one
            # table's users hold, the fetcher's looks bound (_look).
            with (
                db.connect(self.dsn, unbounded=True, per_transaction=self.per_transaction) as conn,
                db.translated(),
            ):
                build.pid = db.server_pid(conn)
                build.connection = conn
                if self._stopping.is_set():
                    return
                if cleanup:
                    build.statement = cleanup
                    db.execute_alone(conn, cleanup.encode())
                logger.info(
                    "target %d: building its deferred index: %s", target_id, "; ".join(statements)
                )
                started = time.monotonic()
                for statement in statements:  # each at top level (CONCURRENTLY)
                    build.statement = statement
                    db.execute_alone(conn, statement.encode())
                row = conn.execute(
                    queries.get("deferred_index_built"), {"target_id": target_id}
                ).fetchone()
                self._failed.pop(target_id, None)
                # (the statements' last checks the index they built: sql/62_backfill.sql,
                # deferred_index_check(); a partitioned table's is done with its last partition)
                logger.info(
                    "target %d: %s built in %.1f s",
                    target_id,
                    "index" if row is not None and row[0] else "a partition's index",
                    time.monotonic() - started,
                )
        except exceptions.EmbedWorkerError as exc:
            if build.stopped:
                logger.info("target %d: index build stopped with the worker", target_id)
            elif not build.given_way:
                failures = self._failed.get(target_id, (0, 0.0))[0] + 1
                wait = min(FAILED_RETRY_MAX_SECONDS, FAILED_RETRY_SECONDS * 2 ** (failures - 1))
                self._failed[target_id] = (failures, time.monotonic() + wait)
                logger.warning(
                    "target %d: deferred index build failed (tried again in %.0f s): %s",
                    target_id,
                    wait,
                    exc,
                )


def _read(conn: db.Connection, name: str, params: dict[str, Any]) -> list[Any]:
    """The rows of named query `name`; none when it fails (a schema older than deferred
    indexes, a view this role may not read), but for a lost connection, which the fetcher
    handles."""
    try:
        with db.translated():
            return conn.execute(queries.get(name), params).fetchall()
    except exceptions.ConnectionLost:
        raise
    except exceptions.DatabaseError as exc:
        logger.debug("index builder: no %s: %s", name, exc)
        return []

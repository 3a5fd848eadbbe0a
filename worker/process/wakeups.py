"""Waiting for work: the fetcher looks for jobs; nothing tells it.

Nothing of ours may send a NOTIFY in the application's transaction (Postgres refuses PREPARE
TRANSACTION after one, and XA/JTA applications prepare theirs), nor make the application's
writes depend on state other sessions set. So the fetcher finds new jobs by looking, cheaply:

* Nothing in flight (idle): in the database. embeddings.wait_for_jobs() (sql/20_queue.sql) returns
  as soon as the queue may have work, looking every few milliseconds but running its queries
  only when some transaction has ended since it last did, so that a quiet database pays for a
  snapshot, not a query; each call lasts at most CALL_SECONDS (it holds its snapshot's xmin
  meanwhile). Stopping cancels the call in progress (`interrupt`). What is left of its cost is
  waking up from each sleep (0.1 to 0.2 ms of CPU on the 2-core VM of bench/results/idle.json),
  so it looks every FAST_POLL_MS while work came within QUIET_SECONDS (a new row waits 1 ms
  for the look on average; about 4% of a core in the database there) and every SLOW_POLL_MS
  after that (5 ms; about 1.5%): bursts of writes get the short wait, and a worker idle for
  hours costs little. docs/performance.md has the measurements and the alternatives.
* Batches in flight (busy): here. The wake pipe (a batch ended: the backfill lane may be read
  again) or, every BUSY_POLL_SECONDS, one look (wait_for_jobs with no timeout), whichever comes
  first. A call waiting in the database could not be woken by a batch's end: cancelling it then
  could cancel the fetcher's next statement instead, if the call had returned meanwhile.

No LISTEN either: new targets and changed definitions reach the worker through the definition
versions it compares before serving a batch (TargetRegistry.current_definitions), and a
transaction pooler (PgBouncer, Supavisor), behind which LISTEN hears nothing, changes nothing
here. EMBED_LISTEN is still accepted, and ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Iterable

import psycopg

from worker import db, exceptions, queries

logger = logging.getLogger(__name__)

CALL_SECONDS = 1.0  # one wait_for_jobs call at most: its snapshot holds back vacuum meanwhile
FAST_POLL_MS = 2  # wait_for_jobs looks this often while work came recently
SLOW_POLL_MS = 10  # ... and this often after QUIET_SECONDS without any
QUIET_SECONDS = 10.0
BUSY_POLL_SECONDS = 0.01  # with batches in flight: one look this often at most
CANCEL_TIMEOUT = 3  # seconds for a cancel request to reach the server


class WakePipe:
    """Written to wake a fetcher waiting for work: a batch ended, or the worker stops."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)  # a full pipe already wakes: never block a writer
        os.set_blocking(self.read_fd, False)

    def wake(self) -> bool:
        """False once closed: nothing left to wake."""
        if self._write_fd < 0:
            return False
        with contextlib.suppress(OSError):  # a full pipe already wakes the fetcher
            os.write(self._write_fd, b"x")
        return True

    def close(self) -> None:
        if self._write_fd >= 0:
            os.close(self.read_fd)
            os.close(self._write_fd)
            self.read_fd = self._write_fd = -1

    def close_unless_in_use(self, threads: Iterable[threading.Thread]) -> None:
        """Closes the pipe once none of `threads` can use it any more. A thread that outlived
        its join keeps it open: a closed descriptor's number may be reused by another file, and
        a late wake-up must not write into that."""
        if not any(thread.is_alive() for thread in threads):
            self.close()


class Waiter:
    """Waits for the jobs of live queue `queue` (and its backfill lane) in the ways above; every
    wait also ends when the wake pipe `wake_fd` is written or `stop` is set."""

    def __init__(self, queue: str, stop: threading.Event, wake_fd: int) -> None:
        self.queue = queue
        self.stop = stop
        self.wake_fd = wake_fd
        self._lock = threading.Lock()
        self._waiting_on: db.Connection | None = None  # a call in progress, for `interrupt`
        self._unavailable: str | None = None  # why the database cannot wait at all
        self._failures: set[str] = set()  # errors of wait calls, each logged once
        self._work_found_at = time.monotonic()  # a worker starting may find some at once

    def idle(self, conn: db.Connection, timeout: float) -> None:
        """Until the queue may have work, at most `timeout` seconds: in the database."""
        deadline = time.monotonic() + timeout
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            with self._lock:
                if self.stop.is_set():
                    return
                self._waiting_on = conn
            try:
                found = self._wait(conn, min(left, CALL_SECONDS), backfill=True)
            finally:
                with self._lock:
                    self._waiting_on = None
            if found is None:  # the database cannot wait: read again after the timeout
                self.sleep(deadline - time.monotonic())
            if found is not False:
                return

    def busy(self, conn: db.Connection, timeout: float, *, backfill: bool) -> None:
        """Until the queue may have work (its backfill lane only with `backfill`) or the wake
        pipe is written, at most `timeout` seconds: here, looking every BUSY_POLL_SECONDS."""
        deadline = time.monotonic() + timeout
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if self.sleep(min(left, BUSY_POLL_SECONDS)):
                return
            found = self._wait(conn, 0, backfill=backfill)
            if found is None:
                self.sleep(deadline - time.monotonic())
            if found is not False:
                return

    def sleep(self, timeout: float) -> bool:
        """Sleeps on the wake pipe; True when it was written."""
        readable, _, _ = select.select([self.wake_fd], [], [], max(timeout, 0))
        if readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self.wake_fd, 4096)
            return True
        return False

    def interrupt(self) -> None:
        """Cancels a call waiting in the database (when stopping: the fetcher runs no other
        statement on that connection after a wait that `stop` ended)."""
        with self._lock:
            conn = self._waiting_on
            if conn is None or conn.closed:
                return
            try:
                conn.cancel_safe(timeout=CANCEL_TIMEOUT)
            except psycopg.Error as exc:
                logger.debug("could not cancel the wait for jobs: %s", exc)

    def found_work(self) -> None:
        """The fetcher leased a batch: looks are frequent again for QUIET_SECONDS."""
        self._work_found_at = time.monotonic()

    @property
    def poll_ms(self) -> int:
        """How often a wait in the database looks: often while work came recently."""
        quiet = time.monotonic() - self._work_found_at >= QUIET_SECONDS
        return SLOW_POLL_MS if quiet else FAST_POLL_MS

    def _wait(self, conn: db.Connection, seconds: float, *, backfill: bool) -> bool | None:
        """One call of embeddings.wait_for_jobs(): True when the queue may have work, False
        when it found none in `seconds` (or `interrupt` cancelled it), None when the database
        cannot wait (a schema older than this worker, a statement_timeout shorter than a
        call, ...): the caller then sleeps out its timeout and reads the queue."""
        if self._unavailable is not None:
            return None
        try:
            with db.translated():
                row = conn.execute(
                    queries.get("wait_for_jobs"),
                    {
                        "queue": self.queue,
                        "ms": round(seconds * 1000),
                        "backfill": backfill,
                        "poll_ms": self.poll_ms,
                    },
                ).fetchone()
        except exceptions.ConnectionLost:
            raise
        except exceptions.DatabaseError as exc:
            if self.stop.is_set() and isinstance(exc.__cause__, psycopg.errors.QueryCanceled):
                return False
            if isinstance(exc.__cause__, psycopg.errors.UndefinedFunction):
                self._unavailable = str(exc)  # until a restart (after `embed-worker migrate`)
            if str(exc) not in self._failures:
                self._failures.add(str(exc))
                logger.warning(
                    "cannot wait for jobs in the database (%s): reading the queue every "
                    "EMBED_POLL_SECONDS meanwhile%s",
                    exc,
                    "; run `embed-worker migrate`" if self._unavailable else "",
                )
            return None
        return bool(row and row[0])

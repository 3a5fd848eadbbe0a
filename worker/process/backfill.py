"""Backfills: the worker queues the existing rows of newly watched tables, a key range at a time.

watch() only records a cursor (and queues one bounded step) so that it holds its locks for a
time that does not grow with the table; the rest of the rows are queued by steps that run
after it committed (sql/62_backfill.sql). The fetcher takes a step whenever it finds its
queue without visible jobs, so a backfill never buries live jobs: they are always read first.
A step another worker takes holds its backfill's row until it commits, and ours skips it: `run
--once` waits for that backfill while its cursor moves (worker/process/elsewhere.py).
"""

from __future__ import annotations

import logging
import time

import psycopg

from worker import db, exceptions, queries

logger = logging.getLogger(__name__)

# Rows one step examines, in batches: 2048 rows (16 messages) at the default batch size. Small
# enough that a step is a short transaction, large enough that the fetcher rarely finds the
# queue empty during a backfill.
STEP_BATCHES = 16
# A role without the grants of embeddings.grant_worker(), or a schema older than backfills.
_CANNOT_STEP = (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction)


class Backfiller:
    """Steps the backfills of one queue's targets."""

    def __init__(self, queue: str, batch_size: int, owner_code_seconds: float = 1.0) -> None:
        self.queue = queue
        self.step_keys = batch_size * STEP_BATCHES
        self.unavailable: str | None = None  # why this worker cannot step (logged once)
        # A step scans a table as its owner (its key type's checks run), and may find it locked:
        # it runs at most this long (a scan of keys, however many: the content is not read),
        # and after a step that failed, the next waits a while (1 s, doubling to 30 s).
        self.bound_ms = round(owner_code_seconds * 1000)
        self._failures = 0
        self._resume_at = 0.0

    def step(self, conn: db.Connection) -> bool:
        """Takes one step; True when it examined rows (the queue may have new jobs, and the
        backfill more rows). ConnectionLost propagates; other errors stop stepping, since
        embeddings.sweep() steps backfills too."""
        if self.unavailable is not None or time.monotonic() < self._resume_at:
            return False
        try:
            with db.translated(), db.bounded(conn, self.bound_ms):
                row = conn.execute(
                    queries.get("backfill_next"), {"queue": self.queue, "max_keys": self.step_keys}
                ).fetchone()
        except exceptions.ConnectionLost:
            raise
        except exceptions.DatabaseError as exc:
            if not isinstance(exc.__cause__, _CANNOT_STEP):
                self._failures += 1
                pause = min(2.0 ** (self._failures - 1), 30.0)
                self._resume_at = time.monotonic() + pause
                logger.warning("backfill step failed (retried in %.0f s): %s", pause, exc)
                return False
            self.unavailable = str(exc)
            logger.warning(
                "this worker cannot step backfills (%s); embeddings.sweep() still does: "
                "grant it with SELECT embeddings.grant_worker('<role>')",
                exc,
            )
            return False
        self._failures = 0
        scanned, enqueued = row if row is not None else (0, 0)
        if scanned:
            logger.debug("backfill: examined %d rows, queued %d keys", scanned, enqueued)
        return bool(scanned)

"""The writer thread: stores a batch's vectors and settles its jobs in one short transaction
(worker/pipeline/write.py), or hands the batch's jobs back; and handing back every job a worker
holds, at shutdown."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from worker import db, exceptions, metrics, queries, sessions
from worker.config import Settings
from worker.pipeline import stages, write
from worker.pipeline.batch import Batch, RowState
from worker.pipeline.lanes import Lanes
from worker.process.handoffs import Handoff, Handoffs
from worker.process.watchdog import Watchdog

logger = logging.getLogger(__name__)

# Times a write transaction that one of our own statements' lock wait rolled back is run again.
LOCK_RETRIES = 3


@dataclass(kw_only=True)
class Writer:
    """What the writer uses, given by the runner (worker/process/runner.py)."""

    dsn: str
    settings: Settings  # attempts and backoff (the write stage)
    watchdog: Watchdog  # ends its session when a table owner's code ignores its bound
    lanes: Lanes  # each batch's queue and leases
    embedded: Handoffs  # from the embedder
    finished: threading.Event  # set when the writer ends: the pipeline has drained
    end: Callable[[Batch], None]  # a batch is no longer in flight
    wake: Callable[[], None]  # wakes the main thread and a fetcher waiting for work
    rows_done: int = 0  # rows written, for the progress line
    # Why this worker's batches held each target, as its last written batch of the target said
    # (none once one served it): `run --once`'s last line says this run's reason.
    held_for: dict[int, str] = field(default_factory=dict)

    def run(self) -> None:
        session = sessions.Session(
            self.dsn,
            "writer",
            self.finished,
            vectors=True,
            lock_timeout_ms=self.settings.lock_timeout_ms,
            max_tables=self.settings.session_max_tables,
            per_transaction=self.settings.per_transaction,
        )
        self.watchdog.watch(session)
        try:
            while True:
                item = self.embedded.get()
                if item is None:
                    return
                try:
                    self._write(session, item)
                finally:
                    self.end(item.batch)
        finally:
            session.close()
            self.finished.set()
            self.wake()

    def _write(self, session: sessions.Session, item: Handoff) -> None:
        batch = item.batch
        lane = self.lanes.of(batch)
        held = lane.leases.held(batch.msg_ids)
        # Settled jobs are no longer ours to renew.
        lane.leases.drop(batch.msg_ids)
        lock_waits = 0
        attempt = 0
        conn: db.Connection | None = None
        while attempt < 2:  # once more after a reconnect; then the leases expire
            try:
                conn = session.get()
                if item.release:
                    released = lane.queue.release(conn, held)
                    metrics.JOBS.labels("released").inc(released)
                    logger.info("handed back %d jobs", released)
                    return
                write.write(conn, lane.queue, batch, self.settings)
                session.served(batch.target_ids)
                stages.log_batch(batch)
                self.rows_done += sum(1 for r in batch.rows.values() if r.state is RowState.WRITTEN)
                self._held(batch)
                return
            except exceptions.ConnectionLost as exc:
                ended_for = db.ended_by_watchdog(conn)
                session.lost()
                if batch.ignored(ended_for):
                    # A table owner's code caught the cancel of its bound, and the watchdog ended
                    # the session (worker/process/watchdog.py): written again, on a new one,
                    # that code's rows a row at a time, or without that row.
                    continue
                logger.warning(
                    "writer: connection lost (%s)%s",
                    exc,
                    "; retrying" if attempt == 0 else "; its jobs return after their lease",
                )
                attempt += 1
            except exceptions.Contention as exc:
                # One of our own statements waited past EMBED_LOCK_TIMEOUT_MS (a table of ours
                # held by a migration, a row by another worker's write), or Postgres ended the
                # transaction for a concurrent one's (a deadlock): it rolled back whole, and
                # writing it again redoes everything.
                lock_waits += 1
                if lock_waits > LOCK_RETRIES:
                    logger.error(
                        "writing a batch met other sessions %d times (%s); its jobs return after"
                        " their lease",
                        lock_waits,
                        exc,
                    )
                    return
                logger.warning("writer: %s; writing the batch again", exc)
                self.finished.wait(0.1 * 2**lock_waits)
            except exceptions.DatabaseError as exc:
                logger.error("writing a batch failed (%s); its jobs return after their lease", exc)
                if isinstance(exc, exceptions.ReadOnlyTransaction):
                    session.lost()  # (a new one waits for a database that takes writes)
                return

    def _held(self, batch: Batch) -> None:
        for target_id in batch.target_ids:
            why = batch.deferred.get(target_id) or batch.change_held.get(target_id)
            if why:
                self.held_for[target_id] = why
            else:
                self.held_for.pop(target_id, None)


def hand_back(dsn: str, lanes: Lanes, settings: Settings) -> None:
    """Makes every job held in `lanes` visible again at once (a fresh, short-lived
    connection)."""
    for lane in lanes:
        held = lane.leases.held()
        if not held:
            continue
        try:
            conn = db.connect(
                dsn,
                connect_timeout=3,
                lock_timeout_ms=settings.lock_timeout_ms,
                per_transaction=settings.per_transaction,
            )
            try:
                with db.translated(), conn.transaction():
                    conn.execute(queries.get("short_statement_timeout"))
                    released = lane.queue.release(conn, held)
                metrics.JOBS.labels("released").inc(released)
                logger.info("handed back %d of %d jobs", released, len(held))
            finally:
                conn.close()
        except exceptions.EmbedWorkerError as exc:
            logger.warning("could not hand jobs back (%s); they return after their lease", exc)
        lane.leases.drop(held)

"""The keeper thread of a worker: leases of jobs in flight renewed, model changes completed,
queue gauges refreshed, the progress line of a one-shot run."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from worker import db, exceptions
from worker.process.progress import ProgressLine
from worker.process.stopped import REFRESH_SECONDS

if TYPE_CHECKING:
    from worker.process.runner import Worker

logger = logging.getLogger(__name__)


def keep(worker: Worker) -> None:
    """The keeper thread: renews the leases of jobs in flight (every third of the lease),
    completes model changes, refreshes the queue gauges and shows progress with --once."""
    session = db.Session(worker.dsn, "keeper", worker.finished)
    renew_every = worker.settings.vt_seconds / 3
    last_renew = last_gauges = time.monotonic()
    last_stopped = float("-inf")
    progress = ProgressLine(worker) if worker.progress and worker.once else None
    try:
        while not worker.finished.wait(0.5 if progress else 1.0):
            now = time.monotonic()
            try:
                conn = session.get()
                if now - last_renew >= renew_every:
                    for lane in worker.lanes:
                        held = lane.leases.held()
                        lane.leases.renewed(
                            lane.queue.extend(conn, held, worker.settings.vt_seconds)
                        )
                    last_renew = now
                if worker.settings.pull and not worker.once:
                    worker.changes.run(conn, worker.registry, force=False)
                if now - last_stopped >= REFRESH_SECONDS:
                    last_stopped = now
                    worker.stopped.refresh(conn)
                if now - last_gauges >= 5 or progress:
                    worker.lanes.gauges(conn)
                    last_gauges = now
                    if progress:
                        progress.show(conn)
            except exceptions.ConnectionLost:
                session.lost()
            except exceptions.DatabaseError as exc:
                logger.warning("keeper: %s", exc)
    finally:
        if progress:
            progress.close()
        session.close()

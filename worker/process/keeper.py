"""The keeper thread of a worker: leases of jobs in flight renewed, model changes completed,
held jobs of targets that became servable taken, queue gauges refreshed, the default model's
failed download retried, the progress line of a one-shot run."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from worker import db, exceptions, sessions
from worker.pipeline.lanes import Lanes
from worker.process.held import HeldJobs
from worker.process.progress import ProgressLine
from worker.process.stopped import REFRESH_SECONDS, StoppedTargets

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Keeper:
    """What the keeper uses, given by the runner (worker/process/runner.py)."""

    dsn: str
    lock_timeout_ms: int  # EMBED_LOCK_TIMEOUT_MS: the longest its statements wait for a lock
    per_transaction: bool  # EMBED_POOL_MODE=transaction (db.connect)
    lanes: Lanes  # whose leases it renews and whose gauges it refreshes
    vt_seconds: int  # a lease's length: renewed every third of it
    finished: threading.Event  # the pipeline has drained: the keeper ends
    stopped: StoppedTargets  # what stops each target's progress, refreshed for /readyz
    held: HeldJobs  # held jobs of targets that become servable (a model loaded, a provider back)
    # Completes model changes (worker/process/changes.py); None where the fetcher does it
    # (--once) or no worker pulls (push only).
    complete_changes: Callable[[db.Connection], object] | None
    # Forgets the failed loads of models nothing uses any more (their gauge leaves /metrics).
    forget_unused_models: Callable[[], object]
    # Loads the default model if it is not (DefaultModel.problem), downloading it: after a
    # failed download, at most every retry_after seconds. The worker's own retry, as no
    # request (/readyz, POST /embed) starts a download; nothing for a one-shot run, which
    # waited for it at start.
    load_default_model: Callable[[], object]
    # Rows written so far, for the progress line of `run --once` on a terminal; None: no line.
    rows_done: Callable[[], int] | None

    def run(self) -> None:
        """Renews the leases of jobs in flight (every third of the lease), completes model
        changes, refreshes the queue gauges and shows progress, until the pipeline drains."""
        session = sessions.Session(
            self.dsn,
            "keeper",
            self.finished,
            lock_timeout_ms=self.lock_timeout_ms,
            per_transaction=self.per_transaction,
        )
        renew_every = self.vt_seconds / 3
        last_renew = last_gauges = time.monotonic()
        last_stopped = float("-inf")
        progress = ProgressLine(self.lanes, self.rows_done) if self.rows_done else None
        try:
            while not self.finished.wait(0.5 if progress else 1.0):
                now = time.monotonic()
                self.load_default_model()  # (no database needed)
                try:
                    if session.current() is None:
                        # Lost (here, or in a statement that caught it): get() waits for the
                        # database, and the queue gauges say unknown meanwhile.
                        self.lanes.gauges_unknown()
                        last_gauges = float("-inf")  # (read as soon as it is back)
                    conn = session.get()
                    if now - last_renew >= renew_every:
                        for lane in self.lanes:
                            held = lane.leases.held()
                            lane.leases.renewed(lane.queue.extend(conn, held, self.vt_seconds))
                        last_renew = now
                    if self.complete_changes is not None:
                        self.complete_changes(conn)
                    # (the database: definitions once a minute, jobs when a target became servable)
                    self.held.release(conn)
                    self.forget_unused_models()
                    if now - last_stopped >= REFRESH_SECONDS:
                        last_stopped = now
                        self.stopped.refresh(conn)
                    if now - last_gauges >= 5 or progress:
                        self.lanes.gauges(conn)
                        last_gauges = now
                        if progress:
                            progress.show(conn)
                except (exceptions.ConnectionLost, exceptions.ReadOnlyTransaction):
                    session.lost()  # (a new one waits for a database that takes writes)
                except exceptions.DatabaseError as exc:
                    self.lanes.gauges_unknown()
                    last_gauges = float("-inf")
                    logger.warning("keeper: %s", exc)
        finally:
            if progress:
                progress.close()
            session.close()

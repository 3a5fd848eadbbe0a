"""The worker process: pipeline threads, waiting for work, leases, signals and shutdown.

Threads, each with its own connection:
  fetcher  waits for work (looks for it: worker/process/wakeups.py), leases a batch, loads
           its content
  embedder runs the model (onnxruntime releases the GIL, so the others keep going)
  writer   stores vectors and settles jobs in one short transaction, or hands batches back
  keeper   renews the leases of jobs in flight, refreshes queue gauges, shows progress
At most one batch waits between two stages, so database I/O overlaps inference without
leasing far ahead.

SIGTERM/SIGINT: stop reading; the batch being embedded is finished and written, batches not
started are handed back; after `grace_seconds` whatever is still held is handed back and the
process exits 0. A second signal hands back at once and exits. A thread that dies of a bug
stops the whole worker (exit 1) rather than leaving it half-alive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue as stdqueue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from worker import db, exceptions, metrics, queries
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline import stages, write
from worker.pipeline.batch import Batch, RowState
from worker.pipeline.lanes import Lanes
from worker.pipeline.targets import TargetRegistry
from worker.process import keeper, startup, systemd
from worker.process.backfill import Backfiller, IndexBuilder
from worker.process.changes import Completer
from worker.process.stopped import StoppedTargets
from worker.process.wakeups import Waiter

logger = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], Any] | int | None  # what signal.signal returns


@dataclass
class Handoff:
    batch: Batch
    release: bool = False  # hand the jobs back instead of writing


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        once: bool = False,
        embedders: LoadedModels | None = None,
        progress: bool | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.settings = settings
        self.once = once
        self.dsn = settings.dsn
        # Priority lanes (worker/pipeline/lanes.py): live jobs before backfill work.
        self.lanes = Lanes(settings.queue, settings.batch_size)
        self.queue = self.lanes.live.queue
        self.leases = self.lanes.live.leases
        # Backfills in key ranges, stepped when reads run short (worker/process/backfill.py).
        self.backfill = Backfiller(settings.queue, settings.batch_size)
        self.indexer = IndexBuilder(self.dsn, settings.queue)
        self.registry = TargetRegistry()
        self.changes = Completer()  # completes model changes (worker/process/changes.py)
        self.stopped = StoppedTargets(settings.queue)  # for /readyz and the metric
        self.embedders = embedders or LoadedModels(
            variant=settings.model_variant,
            threads=settings.threads,
            location=settings.model_location,
            downloads=settings.downloads,
            api_key=settings.api_key,
        )
        self.embedders.follow(self.registry.remote_models)  # remote models: as registered
        self.stopping = threading.Event()  # no more reading
        self.finished = threading.Event()  # the pipeline has drained
        self.started = threading.Event()  # connected, schema present, models tried
        self.ready = threading.Event()  # ... and the default model loaded
        self.failure: BaseException | None = None
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.handle_signals = handle_signals
        self._loaded: stdqueue.Queue[Handoff | None] = stdqueue.Queue(maxsize=1)
        self._embedded: stdqueue.Queue[Handoff | None] = stdqueue.Queue(maxsize=1)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # a full pipe already wakes: never block a writer
        os.set_blocking(self._wake_r, False)
        self.waiter = Waiter(settings.queue, self.stopping, self._wake_r)
        self._threads: list[threading.Thread] = []
        self._previous_handlers: dict[signal.Signals, SignalHandler] = {}
        self._stop_requested_at: float | None = None
        self.rows_done = 0

    # --- lifecycle ------------------------------------------------------------------------------
    def run(self) -> int:
        """Runs until stopped (with `once`: until the queue is drained); returns the exit code."""
        self._install_signal_handlers()
        logger.info(
            "embed-worker starting: database %s, queue %s%s, model %s (%s), batch %d",
            db.describe(self.dsn),
            self.settings.queue,
            "" if self.settings.pull else " (push only: no pulling)",
            self.settings.model or "the database's default",
            self.settings.model_variant,
            self.settings.batch_size,
        )
        try:
            try:
                self.start()
            except exceptions.EmbedWorkerError as exc:
                logger.error("%s", exc)
                return 1
            if self.stopping.is_set() and not self._threads:
                return 0
            return self.wait()
        finally:
            self._restore_signal_handlers()
            self._close_wake_pipe()

    def start(self) -> None:
        """Connects, checks the schema and the models, then starts the pipeline threads."""
        startup.start(self)  # worker/process/startup.py
        for name, target in (
            ("fetcher", self._fetcher),
            ("embedder", self._embedder),
            ("writer", self._writer),
            ("keeper", lambda: keeper.keep(self)),  # worker/process/keeper.py
        ):
            thread = threading.Thread(target=self._guarded(target), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait(self) -> int:
        while not self.finished.is_set():
            self.finished.wait(0.2)
            if self.failure is not None:
                break
            if (
                self._stop_requested_at is not None
                and time.monotonic() - self._stop_requested_at > self.settings.grace_seconds
            ):
                logger.warning("grace period over: handing back what is still in flight")
                self.hand_back_all()
                break
        self.finished.set()
        self._wake()
        for thread in self._threads:
            thread.join(timeout=2)
        if self.failure is not None:
            logger.error("worker stopped by an internal error: %r", self.failure)
            self.hand_back_all()
            return 1
        logger.info("embed-worker stopped")
        return 0

    def request_stop(self, why: str = "requested") -> None:
        if not self.stopping.is_set():
            logger.info("stopping (%s): finishing the batch in flight", why)
            systemd.notify(stopping=True, status=f"stopping ({why})")
            self._stop_requested_at = time.monotonic()
        self.stopping.set()
        self._wake()

    def _install_signal_handlers(self) -> None:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        """The handlers from before run(): a worker run inside another program (tests, an
        embedding application) leaves its signals as it found them."""
        for signum, handler in self._previous_handlers.items():
            if handler is not None:  # None: a handler not set from Python, which we cannot set
                signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stopping.is_set():
            logger.warning("second %s: handing back jobs in flight and exiting now", name)
            self.hand_back_all()
            logging.shutdown()
            os._exit(0)
        self.request_stop(name)

    def hand_back_all(self) -> None:
        """Makes every job we hold visible again at once (a fresh, short-lived connection)."""
        for lane in self.lanes:
            held = lane.leases.held()
            if not held:
                continue
            try:
                conn = db.connect(self.dsn, connect_timeout=3)
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

    def _guarded(self, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except BaseException as exc:
                logger.exception("%s thread failed", threading.current_thread().name)
                self.failure = exc
                self.stopping.set()
                self.finished.set()
                self._wake()

        return run

    def _wake(self) -> None:
        if self._wake_w < 0:
            return  # stopped: nothing left to wake
        with contextlib.suppress(OSError):  # a full pipe already wakes the fetcher
            os.write(self._wake_w, b"x")
        if self.stopping.is_set():
            self.waiter.interrupt()  # a wait for jobs in the database

    def _close_wake_pipe(self) -> None:
        """Closes the wake pipe once no pipeline thread can use it any more. A thread that
        outlived its join keeps it open: a closed descriptor's number may be reused by another
        file, and a late wake-up must not write into that."""
        if self._wake_w < 0 or any(thread.is_alive() for thread in self._threads):
            return
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_r = self._wake_w = -1

    # --- fetcher --------------------------------------------------------------------------------
    def _fetcher(self) -> None:
        session = db.Session(self.dsn, "fetcher", self.stopping)
        try:
            while not self.stopping.is_set():
                try:
                    batch = self._next_batch(session)
                except exceptions.ConnectionLost as exc:
                    logger.warning("fetcher: connection lost (%s)", exc)
                    metrics.DATABASE_UP.set(0)
                    session.lost()
                    continue
                if batch is None:
                    break  # drained (--once) or stopping
                self._pass(self._loaded, Handoff(batch, release=self.stopping.is_set()))
        finally:
            session.close()
            self._loaded.put(None)

    def _next_batch(self, session: db.Session) -> Batch | None:
        while not self.stopping.is_set():
            if not self.settings.pull:
                self.waiter.sleep(self.settings.poll_seconds)  # push only: lease nothing
                continue
            conn = session.get()
            # For --once: nothing was in flight when this read began, so it read both lanes
            # (a backfill batch in flight keeps the backfill lane unread until it ends), and
            # found nothing. Asked after the read, a batch ending meanwhile passed for drained
            # with the backfill lane unread, and the worker exited with jobs queued.
            idle = self.lanes.drained()
            batch = self.lanes.read(conn, self.registry, self.settings)
            metrics.DATABASE_UP.set(1)
            drained = batch is None and idle
            if self._work_behind_reads(conn, batch):
                continue
            if batch is not None:
                self.waiter.found_work()
                self._begin(batch)
                try:
                    stages.load(conn, batch, self.embedders)
                except BaseException:
                    self._end(batch)
                    raise
                return batch
            if self.once and drained and self.changes.run(conn, self.registry, force=True):
                continue  # a model change completed or re-queued rows: read again
            if self.once and drained and not self.indexer.busy:
                return None
            self._wait_for_work(conn)
        return None

    def _wait_for_work(self, conn: db.Connection) -> None:
        """Until the queue may have work, a batch ends, or the poll interval is over (50 ms
        with --once): in the database when nothing is in flight, else here (wakeups.py)."""
        if self.once:
            self.waiter.busy(conn, 0.05, backfill=self.lanes.backfill_room())
        elif self.lanes.drained():
            self.waiter.idle(conn, self.settings.poll_seconds)
        else:
            self.waiter.busy(conn, self.settings.poll_seconds, backfill=self.lanes.backfill_room())

    def _work_behind_reads(self, conn: db.Connection, batch: Batch | None) -> bool:
        """When a read runs short: the next range of a backfill (so that backfills are queued
        only behind live jobs, worker/process/backfill.py), and an index deferred until a backfill's
        end. True when the backfill queued jobs and nothing was read: read again at once."""
        low = batch is None or len(batch.rows) < self.settings.batch_size
        if low and self.backfill.step(conn) and batch is None:
            return True
        if batch is None:
            self.indexer.maybe_start(conn)
        return False

    def _begin(self, batch: Batch) -> None:
        self.lanes.begin(batch)
        metrics.IN_FLIGHT.set(self.lanes.held())

    def _end(self, batch: Batch) -> None:
        self.lanes.end(batch)
        self._wake()  # the fetcher may read backfill work again
        metrics.IN_FLIGHT.set(self.lanes.held())

    def _pass(self, q: stdqueue.Queue[Handoff | None], item: Handoff) -> None:
        """Hands a batch to the next stage, waiting while it is busy."""
        while True:
            try:
                q.put(item, timeout=0.2)
                return
            except stdqueue.Full:
                if self.finished.is_set():
                    return

    # --- embedder -------------------------------------------------------------------------------
    def _embedder(self) -> None:
        try:
            while True:
                item = self._loaded.get()
                if item is None:
                    return
                if self.stopping.is_set():
                    item.release = True  # not started: hand it back rather than keep it
                if not item.release:
                    stages.embed(self.embedders, item.batch)
                self._pass(self._embedded, item)
        finally:
            self._embedded.put(None)

    # --- writer ---------------------------------------------------------------------------------
    def _writer(self) -> None:
        session = db.Session(self.dsn, "writer", self.finished, vectors=True)
        try:
            while True:
                item = self._embedded.get()
                if item is None:
                    return
                try:
                    self._write(session, item)
                finally:
                    self._end(item.batch)
        finally:
            session.close()
            self.finished.set()
            self._wake()

    def _write(self, session: db.Session, item: Handoff) -> None:
        batch = item.batch
        lane = self.lanes.of(batch)
        held = lane.leases.held(batch.msg_ids)
        # Settled jobs are no longer ours to renew.
        lane.leases.drop(batch.msg_ids)
        for attempt in range(2):  # once more after a reconnect; then the leases expire
            try:
                conn = session.get()
                if item.release:
                    released = lane.queue.release(conn, held)
                    metrics.JOBS.labels("released").inc(released)
                    logger.info("handed back %d jobs", released)
                    return
                write.write(conn, lane.queue, batch, self.settings)
                stages.log_batch(batch)
                self.rows_done += sum(1 for r in batch.rows.values() if r.state is RowState.WRITTEN)
                return
            except exceptions.ConnectionLost as exc:
                metrics.DATABASE_UP.set(0)
                session.lost()
                logger.warning(
                    "writer: connection lost (%s)%s",
                    exc,
                    "; retrying" if attempt == 0 else "; its jobs return after their lease",
                )
            except exceptions.DatabaseError as exc:
                logger.error("writing a batch failed (%s); its jobs return after their lease", exc)
                return

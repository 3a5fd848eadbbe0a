"""The worker process: pipeline threads, waiting for work, leases, signals and shutdown.

Threads, each with its own connection:
  fetcher  waits for work (looks for it: worker/process/wakeups.py), leases a batch, loads
           its content (worker/process/fetcher.py)
  embedder runs the model (onnxruntime releases the GIL, so the others keep going):
           embed_batches() below
  writer   stores vectors and settles jobs in one short transaction, or hands batches back
           (worker/process/writer.py)
  keeper   renews the leases of jobs in flight, refreshes queue gauges, shows progress,
           retries the default model's failed download
           (worker/process/keeper.py)
  watchdog ends a fetcher's or writer's session whose table owner's code ignores its bound
           (worker/process/watchdog.py; it connects only then)
The Worker builds each of them, and start-up (worker/process/startup.py), with what it uses.
At most one batch waits between two stages, so database I/O overlaps inference without
leasing far ahead.

SIGTERM/SIGINT: stop reading; the batch being embedded is finished and written, batches not
started are handed back; after `grace_seconds` whatever is still held is handed back and the
process exits 0. A second signal hands back at once and exits. A thread that dies of a bug
stops the whole worker (exit 1) rather than leaving it half-alive.
"""

from __future__ import annotations

import functools
import logging
import os
import queue as stdqueue
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from worker import exceptions, exits, outages
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline.lanes import Lanes
from worker.pipeline.targets import TargetRegistry
from worker.process import systemd, unserved
from worker.process.embedding import embed_batches
from worker.process.fetcher import Fetcher
from worker.process.handoffs import Handoffs
from worker.process.held import HeldJobs
from worker.process.keeper import Keeper
from worker.process.startup import (
    DefaultModel,
    Startup,
    Waiting,
    announce,
    startup_timeout_message,
)
from worker.process.stopped import StoppedTargets
from worker.process.wakeups import Waiter, WakePipe
from worker.process.watchdog import Watchdog
from worker.process.writer import Writer, hand_back

logger = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], Any] | int | None  # what signal.signal returns


class SignalHandlers:
    """SIGTERM and SIGINT handled while a worker runs, and the handlers from before put back:
    a worker run inside another program (tests, an embedding application) leaves its signals
    as it found them."""

    def __init__(self, handler: Callable[[int, FrameType | None], None]) -> None:
        self.handler = handler
        self.previous: dict[signal.Signals, SignalHandler] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.previous[signum] = signal.signal(signum, self.handler)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            if handler is not None:  # None: a handler not set from Python, which we cannot set
                signal.signal(signum, handler)
        self.previous.clear()


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        once: bool = False,
        embedders: LoadedModels | None = None,
        progress: bool | None = None,
        handle_signals: bool = True,
        registry: TargetRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.once = once
        self.dsn = settings.dsn
        # Priority lanes (worker/pipeline/lanes.py): live jobs before backfill work.
        self.lanes = Lanes(settings.queue, settings.batch_size)
        self.registry = registry or TargetRegistry()  # given: one across runs (tests)
        self.stopped = StoppedTargets(settings.queue)  # for /readyz and the metric
        self.embedders = embedders or settings.loaded_models()
        # remote models: as registered
        self.embedders.follow(self.registry.remote_models, self.registry.refused_remote_models)
        self.held = HeldJobs(settings.queue, self.lanes, self.registry, self.embedders)
        self.stopping = threading.Event()  # no more reading
        # A model downloading on first use holds only its own targets' jobs (a one-shot run
        # waits for it), and a stop ends the download.
        self.embedders.serve_while_downloading(self.stopping, wait=once)
        self.finished = threading.Event()  # the pipeline has drained
        self.started = threading.Event()  # connected, schema present, models tried
        # What start-up waits for (the pooler's check, the schema's release), said meanwhile.
        self.waiting = Waiting(checking_pooler=not settings.per_transaction)
        self.default_model = DefaultModel(
            settings=settings,
            registry=self.registry,
            embedders=self.embedders,
            started=self.started,
        )
        self.failure: BaseException | None = None
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.signals = SignalHandlers(self._on_signal) if handle_signals else None
        self._loaded: Handoffs = stdqueue.Queue(maxsize=1)
        self._embedded: Handoffs = stdqueue.Queue(maxsize=1)
        self._wake_pipe = WakePipe()
        self.waiter = Waiter(settings.queue, self.stopping, self._wake_pipe.read_fd)
        # Ends a pipeline session whose table owner's code ignores its bound.
        self.watchdog = Watchdog(self.dsn, settings.lock_timeout_ms, settings.per_transaction)
        self.fetcher = Fetcher(
            dsn=self.dsn,
            settings=settings,
            watchdog=self.watchdog,
            once=once,
            lanes=self.lanes,
            registry=self.registry,
            embedders=self.embedders,
            waiter=self.waiter,
            stopping=self.stopping,
            finished=self.finished,
            loaded=self._loaded,
            wake=self._wake,
            takeable=lambda: self.held.takeable(self.writer.held_for),
        )
        self.writer = Writer(
            dsn=self.dsn,
            settings=settings,
            watchdog=self.watchdog,
            lanes=self.lanes,
            embedded=self._embedded,
            finished=self.finished,
            end=self.fetcher.end,
            wake=self._wake,
        )
        # The HTTP side's requests in progress, waited for on shutdown (worker/http/server.py
        # sets it): given a deadline, True once every one was answered.
        self.drain: Callable[[float], bool] | None = None
        # A request was still embedding when the grace period ended: its jobs were handed
        # back, and the process must end without waiting for its thread (`run` does).
        self.abandoned = False
        self._threads: list[threading.Thread] = []
        self._stop_requested_at: float | None = None
        self._interrupted_by: signal.Signals | None = None  # the signal that stopped a run

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The pipeline's threads, once started, and the probe that looks for the database while
        they wait to reconnect (worker/outages.py). run() gives each a moment (2 s) to end and
        returns: one still in a statement ends after it. A process that goes on after run()
        (the tests' in-process workers) joins them, or they log after it moved on."""
        probe = outages.probe_of(self.dsn)
        return (*self._threads, *([probe] if probe is not None else []))

    # --- lifecycle ------------------------------------------------------------------------------
    def run(self) -> int:
        """Runs until stopped (with `once`: until the queue is drained); returns the exit code."""
        if self.signals:
            self.signals.install()
        announce(self.settings)
        try:
            try:
                self.start()
            except exceptions.ConfigError as exc:
                logger.error("%s", exc)
                return exits.USAGE  # bad configuration, as the command line's usage errors
            except exceptions.StatementTimeout as exc:
                logger.error("%s", startup_timeout_message(exc))
                return exits.FAILURE
            except exceptions.EmbedWorkerError as exc:
                logger.error("%s", exc)
                return exits.FAILURE
            if self.stopping.is_set() and not self._threads:
                return exits.OK
            return self.wait()
        finally:
            if self.signals:
                self.signals.restore()
            self._join_probe()  # (start-up's waits too: stopped while it waited for the database)
            self._wake_pipe.close_unless_in_use(self._threads)

    def start(self) -> None:
        """Connects, checks the schema and the models, then starts the pipeline threads."""
        Startup(
            dsn=self.dsn,
            queue=self.settings.queue,
            once=self.once,
            stopping=self.stopping,
            registry=self.registry,
            embedders=self.embedders,
            default=self.default_model,
            started=self.started,
            held=self.held,
            lock_timeout_ms=self.settings.lock_timeout_ms,
            per_transaction=self.settings.per_transaction,
            waiting=self.waiting,
            search_dsn=self.settings.search_database_url,
        ).run()
        keeper = _keeper(self)
        embedder = functools.partial(
            embed_batches,
            self._loaded,
            self._embedded,
            self.embedders,
            stopping=self.stopping,
            finished=self.finished,
            # Questions first where this process answers them (POST /search, /embed).
            nice=self.settings.backlog_nice if self.settings.http_port is not None else 0,
        )
        for name, target in (
            ("fetcher", self.fetcher.run),
            ("embedder", embedder),
            ("writer", self.writer.run),
            ("keeper", keeper.run),
            ("watchdog", functools.partial(self.watchdog.run, self.finished)),
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
                hand_back(self.dsn, self.lanes, self.settings)
                break
        if self.drain is not None and self.failure is None and not self.drain(self._deadline()):
            # Push requests (POST /functions/v1/embed) stop between batches: one still
            # embedding now has a batch longer than the grace period.
            logger.warning("grace period over: handing back the jobs of requests in progress")
            hand_back(self.dsn, self.lanes, self.settings)
            self.abandoned = True
        self.finished.set()
        self._wake()
        for thread in self._threads:
            thread.join(timeout=2)
        self._join_probe()
        if self.failure is not None:
            logger.error("worker stopped by an internal error: %r", self.failure)
            hand_back(self.dsn, self.lanes, self.settings)
            return exits.FAILURE
        if self.once and self._interrupted_by is not None:
            # `--once` promised a drained queue: a script must not go on as if it were.
            logger.warning("stopped by %s before the queue drained", self._interrupted_by.name)
            return exits.interrupted(self._interrupted_by)
        for model in self.embedders.downloading():
            # (on a daemon thread: the exit ends it; the next start fetches the model again)
            logger.info("the download of model %s is abandoned", model)
        logger.info("embed-worker stopped")
        if self.once and (
            left := unserved.left(
                self.dsn,
                self.settings.queue,
                self.settings.lock_timeout_ms,
                self.settings.per_transaction,
                own={**self.writer.held_for, **self.held.reasons()},  # (as it is now, first)
            )
        ):
            logger.error("%s", left)  # a script must not take what is left for done
            return exits.UNSERVED
        return exits.OK

    def _join_probe(self) -> None:
        """Joins the probe that looked for the database while our sessions waited: it ends once
        none waits any longer, giving up a connection attempt under way at once."""
        probe = outages.probe_of(self.dsn)
        if probe is not None:
            probe.join(timeout=2)

    def _deadline(self) -> float:
        """When the grace period of the stop requested ends (time.monotonic())."""
        started = self._stop_requested_at
        return (started if started is not None else time.monotonic()) + self.settings.grace_seconds

    def request_stop(self, why: str = "requested") -> None:
        if not self.stopping.is_set():
            logger.info("stopping (%s): finishing the batch in flight", why)
            systemd.notify(stopping=True, status=f"stopping ({why})")
            self._stop_requested_at = time.monotonic()
        self.stopping.set()
        self._wake()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stopping.is_set():
            logger.warning("second %s: handing back jobs in flight and exiting now", name)
            hand_back(self.dsn, self.lanes, self.settings)
            logging.shutdown()
            os._exit(exits.interrupted(signal.Signals(signum)) if self.once else exits.OK)
        self._interrupted_by = signal.Signals(signum)
        self.request_stop(name)

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
        if self._wake_pipe.wake() and self.stopping.is_set():
            self.waiter.interrupt()  # a wait for jobs in the database


def _keeper(worker: Worker) -> Keeper:
    """What `worker`'s keeper thread uses: its leases, its model changes (a one-shot run's
    fetcher completes them itself, when the queue drains), its progress."""
    changes = worker.fetcher.changes if worker.settings.pull and not worker.once else None
    return Keeper(
        dsn=worker.dsn,
        lock_timeout_ms=worker.settings.lock_timeout_ms,
        per_transaction=worker.settings.per_transaction,
        lanes=worker.lanes,
        vt_seconds=worker.settings.vt_seconds,
        finished=worker.finished,
        stopped=worker.stopped,
        held=worker.held,
        complete_changes=(
            (lambda conn: changes.run(conn, worker.registry, force=False)) if changes else None
        ),
        forget_unused_models=lambda: worker.embedders.forget_unused(worker.default_model.in_use()),
        load_default_model=(
            (lambda: None) if worker.once else lambda: worker.default_model.problem(download=True)
        ),
        rows_done=(lambda: worker.writer.rows_done) if worker.progress and worker.once else None,
    )

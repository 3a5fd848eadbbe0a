"""The fetcher thread: waits for work (worker/process/wakeups.py), leases a batch from the
lanes, loads its content and hands it on to the embedder. When a read runs short it steps the
next backfill range and starts indexes deferred until a backfill's end; with --once it ends
when the queue is drained. A live batch found just after a long document's piece was loaded
goes to the embedder before the piece."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from worker import db, exceptions, metrics, sessions
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline import faults, stages
from worker.pipeline import jobs as jobqueue
from worker.pipeline.batch import Batch
from worker.pipeline.lanes import Lanes
from worker.pipeline.targets import TargetRegistry
from worker.process.backfill import Backfiller
from worker.process.changes import Completer
from worker.process.elsewhere import WorkElsewhere
from worker.process.handoffs import Handoff, Handoffs, pass_on
from worker.process.index_builder import IndexBuilder
from worker.process.wakeups import Waiter
from worker.process.watchdog import Watchdog

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Fetcher:
    """What the fetcher uses, given by the runner (worker/process/runner.py) but for the
    backfill stepper, index builder and completer it builds from its settings."""

    dsn: str
    settings: Settings  # pull, poll interval, batch size; what the lanes' read takes
    watchdog: Watchdog  # ends its session when a table owner's code ignores its bound
    once: bool  # end when the queue is drained
    lanes: Lanes  # read from, and count the batches in flight
    registry: TargetRegistry
    embedders: LoadedModels
    waiter: Waiter
    stopping: threading.Event  # no more reading
    finished: threading.Event  # the pipeline ended: stop waiting for the embedder
    loaded: Handoffs  # to the embedder
    wake: Callable[[], None]  # wakes a fetcher waiting for work
    # The targets whose held jobs it takes when a read finds nothing visible: those this worker
    # can serve that other workers held (worker/process/held.py: HeldJobs.takeable).
    takeable: Callable[[], Sequence[int]]
    # Backfills in key ranges, stepped when reads run short (worker/process/backfill.py), the
    # indexes deferred until a backfill's end, and model changes completed (a one-shot run
    # completes them when the queue drains; a running worker's keeper, through `changes`).
    backfill: Backfiller = field(init=False)
    indexer: IndexBuilder = field(init=False)
    # What other sessions hold of the queue's work, which a one-shot run waits for while it moves.
    elsewhere: WorkElsewhere = field(init=False)
    changes: Completer = field(init=False, default_factory=Completer)

    def __post_init__(self) -> None:
        s = self.settings
        backfill = Backfiller(s.queue, s.batch_size, s.owner_code_timeout_seconds)
        object.__setattr__(self, "backfill", backfill)  # (frozen)
        indexer = IndexBuilder(self.dsn, s.queue, per_transaction=s.per_transaction)
        object.__setattr__(self, "indexer", indexer)
        elsewhere = WorkElsewhere(s.queue, s.owner_code_timeout_seconds)
        object.__setattr__(self, "elsewhere", elsewhere)

    def run(self) -> None:
        session = sessions.Session(
            self.dsn,
            "fetcher",
            self.stopping,
            lock_timeout_ms=self.settings.lock_timeout_ms,
            max_tables=self.settings.session_max_tables,
            per_transaction=self.settings.per_transaction,
        )
        self.watchdog.watch(session)
        try:
            while not self.stopping.is_set():
                try:
                    batch = self._next_batch(session)
                except exceptions.ConnectionLost as exc:
                    _connection_lost(session, exc)
                    continue
                except exceptions.ReadOnlyTransaction as exc:
                    # The database stopped taking writes (a failover demoted it, a freeze): a
                    # new connection waits until it takes them again (sessions.Session).
                    logger.warning("fetcher: %s", exc)
                    session.lost()
                    continue
                except exceptions.Contention as exc:
                    # One of our own statements (the queue's, the registry's) found a table of
                    # ours locked past EMBED_LOCK_TIMEOUT_MS (a migration's DDL), or was rolled
                    # back for a concurrent transaction's sake: look again.
                    logger.warning("fetcher: %s; reading again in a second", exc)
                    self.stopping.wait(1.0)
                    continue
                if batch is None:
                    break  # drained (--once) or stopping
                ahead = self._live_ahead_of(session, batch)
                for item in (ahead, batch):
                    if item is not None:
                        release = self.stopping.is_set()
                        pass_on(self.loaded, Handoff(item, release=release), self.finished)
        finally:
            self.indexer.stop()
            session.close()
            self.loaded.put(None)

    def begin(self, batch: Batch) -> None:
        self.lanes.begin(batch)
        metrics.IN_FLIGHT.set(self.lanes.held())

    def end(self, batch: Batch) -> None:
        """A batch was written or handed back (the writer says so)."""
        self.lanes.end(batch)
        self.wake()  # the fetcher may read backfill work again
        metrics.IN_FLIGHT.set(self.lanes.held())

    def _next_batch(self, session: sessions.Session) -> Batch | None:
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
            # What other sessions hold of the queue's work (the inbox another worker moves, a
            # backfill it steps), asked before the read: once let go, it is in the read's view.
            # Asked after, a move committed in between passed for none, jobs left queued.
            held_elsewhere = self.once and idle and self.elsewhere.waiting(conn)
            batch = self.lanes.read(conn, self.registry, self.settings)
            if batch is None:
                # Room, and nothing visible: what other workers hold because they cannot serve
                # it, this one takes now rather than after their hold (a mixed fleet).
                batch = self.lanes.read_held(conn, self.registry, self.settings, self.takeable())
            drained = batch is None and idle
            if batch is None:
                faults.reached("read_empty")
            if self._work_behind_reads(conn, batch):
                continue
            if batch is not None:
                self._load(session, batch)
                return batch
            if self.once and drained and self.changes.run(conn, self.registry, force=True):
                continue  # a model change completed or re-queued rows: read again
            if self.once and drained and not self.indexer.busy:
                # Not drained while another worker moves the inbox into the queue or steps a
                # backfill (our read and step skipped what it holds until it commits): a
                # second `run --once` started beside the first exited at once, its share undone.
                if not held_elsewhere:
                    return None
                self.stopping.wait(0.05)
                continue
            self._wait_for_work(conn)
        return None

    def _live_ahead_of(self, session: sessions.Session, batch: Batch) -> Batch | None:
        """A live batch to embed before `batch`, a piece of a long document just loaded: the
        application's rows that arrived while the piece was being loaded wait for one piece at
        most (the one in the embedder), not for this one too. None when there is none."""
        if not batch.has_piece or self.stopping.is_set():
            return None
        try:
            conn = session.get()
            ahead = self.lanes.read_live(conn, self.registry, self.settings)
            if ahead is not None:
                self._load(session, ahead)
        except exceptions.ConnectionLost as exc:  # the piece still goes on; its lease holds
            _connection_lost(session, exc)
            return None
        return ahead

    def _load(self, session: sessions.Session, batch: Batch) -> None:
        """Counts a batch just leased as in flight and loads its content (not in flight again
        when the load fails). When a table owner's code caught the cancel of its bound and the
        watchdog ended the session (worker/process/watchdog.py), the rest is loaded on a new
        connection, that code's rows a row at a time, or without the row it was."""
        self.waiter.found_work()
        self.begin(batch)
        try:
            while True:
                conn = session.get()
                try:
                    stages.load(conn, batch, self.embedders)
                    session.served(batch.target_ids)
                    return
                except exceptions.ConnectionLost:
                    if not batch.ignored(db.ended_by_watchdog(conn)):
                        raise
                    session.lost()  # then loaded again (worker/process/watchdog.py)
        except BaseException:
            self.end(batch)
            raise

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
        """When a read runs short or was a backfill batch: the next range of a backfill whose
        jobs in the backfill lane run low (so that backfills are queued only behind live jobs,
        and take their turns in the lane beside a bulk load: worker/process/backfill.py), and
        an index deferred until a backfill's end. True when the backfill queued jobs and
        nothing was read: read again at once."""
        low = (
            batch is None
            or len(batch.rows) < self.settings.batch_size
            or batch.lane == jobqueue.BACKFILL
        )
        if low and self.backfill.step(conn) and batch is None:
            return True
        if batch is None:
            self.indexer.maybe_start(conn)
        return False


def _connection_lost(session: sessions.Session, exc: exceptions.ConnectionLost) -> None:
    logger.warning("fetcher: connection lost (%s)", exc)
    session.lost()

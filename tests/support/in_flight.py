"""The worker in the test's own process: whole (`in_process_worker`), or a batch taken through its
stages by hand, so that a test can act between them: the batch leased and its content loaded,
then (after the test's own writes) embedded and written."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from tests.support.fetch import fetch_value
from tests.support.process import wait_for
from worker import db
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline import jobs as jobqueue
from worker.pipeline import stages, write
from worker.pipeline.batch import Batch
from worker.pipeline.targets import TargetRegistry
from worker.process.runner import Worker


def in_process_worker(
    settings: Settings, embedders: LoadedModels, *, once: bool = False, **overrides: Any
) -> Worker:
    """A worker with the test's loaded models, `settings` overridden as given; `once`: it stops
    when the queue is empty (`run --once`)."""
    return Worker(
        settings.with_overrides(**overrides),
        once=once,
        embedders=embedders,
        progress=False,
        handle_signals=False,
    )


def stop_worker(worker: Worker, thread: threading.Thread, timeout: float = 60) -> None:
    """Stops an in-process worker running on `thread` and joins it and every thread of its
    pipeline (worker.run() returns with one still in a statement): nothing of it logs after
    the test's teardown, once pytest has closed the test's capture ("Logging error: I/O
    operation on closed file")."""
    worker.request_stop("test over")
    join_threads(worker, thread, timeout=timeout)


def join_threads(worker: Worker, *more: threading.Thread, timeout: float = 60) -> None:
    """Joins `more` and every thread of `worker`'s pipeline (run() gives them 2 s, and returns
    with one still in a statement); fails the test if one is still running after `timeout`."""
    deadline = time.monotonic() + timeout
    for each in (*more, *worker.threads):
        each.join(timeout=max(0.0, deadline - time.monotonic()))
    left = [each.name for each in (*more, *worker.threads) if each.is_alive()]
    assert not left, f"the worker did not stop within {timeout} s: {left} still running"


def run_in_thread(worker: Worker) -> tuple[threading.Thread, list[int]]:
    """`worker.run()` on a daemon thread, and the list its exit code goes into."""
    exits: list[int] = []
    thread = threading.Thread(target=lambda: exits.append(worker.run()), daemon=True)
    thread.start()
    return thread, exits


def run_within(worker: Worker, seconds: float) -> list[int]:
    """`worker.run()` given `seconds` to end (on a thread, so that one that does not end fails
    the test rather than hanging it); the exit code it ended with, if it did."""
    thread, exits = run_in_thread(worker)
    thread.join(seconds)
    if exits:
        join_threads(worker)
    return exits


def run_until(worker: Worker, ready: Callable[[], bool], then: Callable[[], None]) -> list[int]:
    """Runs a `--once` worker on a thread until `ready()` (or it ended), calls `then` (another
    session lets go of what it held), and waits for the worker to end; returns the exit code it
    ended with (none if it did not end in 60 s)."""
    thread, exits = run_in_thread(worker)
    wait_for(lambda: not thread.is_alive() or ready(), what="the worker to be ready (or end)")
    then()
    thread.join(60)
    if exits:
        join_threads(worker)
    return exits


def waiting_for_work(conn: psycopg.Connection[Any]) -> bool:
    """The worker found nothing to read or step: it ran what it runs last in each round while
    it waits (the look for deferred indexes, after a read and a step that found nothing)."""
    return bool(
        fetch_value(
            conn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s AND query LIKE '%%deferred_index_ready%%'",
            (db.APPLICATION_NAME,),
        )
    )


def backfill_lane(settings: Settings) -> jobqueue.Queue:
    """The lane watch()'s jobs are on."""
    return jobqueue.Queue(
        jobqueue.backfill_queue_name(settings.queue), lane=jobqueue.BACKFILL, home=settings.queue
    )


@dataclass(frozen=True)
class InFlight:
    settings: Settings
    dsn: str
    embedders: LoadedModels

    def lease(self) -> tuple[Batch, jobqueue.Queue]:
        """Leases a batch of watch()'s jobs (on the backfill lane) and loads its content."""
        queue = backfill_lane(self.settings)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            batch = stages.read(conn, queue, TargetRegistry(), self.settings)
            assert batch is not None
            stages.load(conn, batch, self.embedders)
        return batch, queue

    def finish(self, batch: Batch, queue: jobqueue.Queue) -> None:
        """Embeds the leased batch and writes it in the worker's write transaction."""
        stages.embed(self.embedders, batch)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            db.register_vector_types(conn)
            write.write(conn, queue, batch, self.settings)

    @contextlib.contextmanager
    def read(self) -> Iterator[tuple[db.Connection, jobqueue.Queue, Batch]]:
        """A batch of watch()'s jobs read (not yet loaded) on a worker connection of its own,
        which the test takes through the other stages."""
        queue = backfill_lane(self.settings)
        with db.connect(self.dsn) as conn:
            db.register_vector_types(conn)
            batch = stages.read(conn, queue, TargetRegistry(), self.settings)
            assert batch is not None
            yield conn, queue, batch

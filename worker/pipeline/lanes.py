"""Priority lanes: the application's writes go before backfill work.

Every live queue has a backfill queue beside it (embeddings_internal.backfill_queue():
`<queue>_backfill`).
The triggers send the application's writes to the live queue; watch()'s initial enqueue, model
changes, sweep() and `failures --retry` send to the backfill lane. The fetcher reads the live
queue first, and a backfill batch only

  * when the live queue has nothing visible, or in turn right after a small live batch (a steady
    trickle of live rows must not starve a backfill or a model change), and
  * while fewer than BACKFILL_IN_FLIGHT backfill batches are in flight: a live row that arrives
    behind a backfill waits for at most that many batches (the pipeline holds up to four).

Measured on the modelchange branch (bench lanes, 20k-row backfill, tiny model): one backfill
batch in flight gives a live p50 of about 2x idle plus one batch, at -18% backfill throughput;
two give about twice that latency. Jobs of the two queues have separate ids: leases are per lane.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from worker import db, metrics
from worker.config import Settings
from worker.pipeline import jobs as jobqueue
from worker.pipeline import stages
from worker.pipeline.batch import Batch
from worker.pipeline.targets import TargetRegistry

BACKFILL_IN_FLIGHT = 1


@dataclass
class Lane:
    queue: jobqueue.Queue
    leases: jobqueue.Leases

    @property
    def name(self) -> str:
        return self.queue.lane


class Lanes:
    """The live lane and the backfill lane of one queue, and which to read next."""

    def __init__(self, queue: str, batch_size: int) -> None:
        self.live = Lane(jobqueue.Queue(queue), jobqueue.Leases())
        self.backfill = Lane(
            jobqueue.Queue(jobqueue.backfill_queue_name(queue), lane=jobqueue.BACKFILL, home=queue),
            jobqueue.Leases(),
        )
        self._small = max(batch_size // 4, 1)  # a live batch under this many rows is small
        self._lock = threading.Lock()
        # Batches leased and not yet written (or handed back), per lane: the one count of what
        # is in flight (the fetcher's "drained", the backfill lane's room).
        self._in_flight = {jobqueue.LIVE: 0, jobqueue.BACKFILL: 0}
        self._live_was_small = False  # the last batch read was a small live one

    def __iter__(self) -> Iterator[Lane]:
        """The live lane first."""
        return iter((self.live, self.backfill))

    def of(self, batch: Batch) -> Lane:
        return self.backfill if batch.lane == jobqueue.BACKFILL else self.live

    def read(
        self, conn: db.Connection, registry: TargetRegistry, settings: Settings
    ) -> Batch | None:
        """Leases the next batch by the rules above; None when neither lane has one for us."""
        room = self.backfill_room()
        batch = None
        if room and self._live_was_small:
            batch = stages.read(conn, self.backfill.queue, registry, settings)
        if batch is None:
            batch = stages.read(conn, self.live.queue, registry, settings)
        if batch is None and room and not self._live_was_small:
            batch = stages.read(conn, self.backfill.queue, registry, settings)
        self._live_was_small = (
            batch is not None and batch.lane == jobqueue.LIVE and len(batch.rows) < self._small
        )
        return batch

    def read_held(
        self,
        conn: db.Connection,
        registry: TargetRegistry,
        settings: Settings,
        target_ids: Sequence[int],
    ) -> Batch | None:
        """Leases held jobs of `target_ids` (worker/process/held.py: jobs other workers could not
        serve), the live lane's first, the backfill lane's while it has room; None when neither
        has any."""
        if not target_ids:
            return None
        batch = stages.read(conn, self.live.queue, registry, settings, held_for=target_ids)
        if batch is None and self.backfill_room():
            batch = stages.read(conn, self.backfill.queue, registry, settings, held_for=target_ids)
        return batch

    def read_live(
        self, conn: db.Connection, registry: TargetRegistry, settings: Settings
    ) -> Batch | None:
        """Leases a live batch only (the fetcher's look-ahead past a long document's piece: the
        application's rows first); the next read() still follows the rules above."""
        return stages.read(conn, self.live.queue, registry, settings)

    def readable(self) -> list[Lane]:
        """The lanes the fetcher may read now (for the time to the next visible job)."""
        return [self.live, self.backfill] if self.backfill_room() else [self.live]

    def backfill_room(self) -> bool:
        with self._lock:
            return self._in_flight[jobqueue.BACKFILL] < BACKFILL_IN_FLIGHT

    def drained(self) -> bool:
        """No batch of either lane is in flight."""
        with self._lock:
            return not any(self._in_flight.values())

    def begin(self, batch: Batch) -> None:
        self.of(batch).leases.add(batch.jobs)
        with self._lock:
            self._in_flight[self.of(batch).queue.lane] += 1

    def end(self, batch: Batch) -> None:
        self.of(batch).leases.drop(batch.msg_ids)
        with self._lock:
            self._in_flight[self.of(batch).queue.lane] -= 1

    def held(self) -> int:
        return len(self.live.leases) + len(self.backfill.leases)

    def gauges(self, conn: db.Connection) -> None:
        """Queue depth per lane, and the totals (both lanes) that the queue gauges show."""
        jobs = visible = 0
        oldest = 0.0
        for lane in self:
            lane_jobs, lane_visible, lane_oldest = lane.queue.depth(conn)
            metrics.LANE_JOBS.labels(lane.name).set(lane_jobs)
            metrics.LANE_OLDEST.labels(lane.name).set(lane_oldest)
            jobs, visible = jobs + lane_jobs, visible + lane_visible
            oldest = max(oldest, lane_oldest)
        metrics.QUEUE_JOBS.set(jobs)
        metrics.QUEUE_VISIBLE.set(visible)
        metrics.QUEUE_OLDEST.set(oldest)

    def gauges_unknown(self) -> None:
        """The queue gauges NaN while they cannot be read (the database is down): their last
        reading, kept, read as a queue that waits with no progress (EmbedWorkerStalled), and
        NaN compares false in every alert."""
        for lane in self:
            metrics.LANE_JOBS.labels(lane.name).set(math.nan)
            metrics.LANE_OLDEST.labels(lane.name).set(math.nan)
        for gauge in (metrics.QUEUE_JOBS, metrics.QUEUE_VISIBLE, metrics.QUEUE_OLDEST):
            gauge.set(math.nan)

"""Push mode: the Supabase guide's Edge Function contract, served at POST /functions/v1/embed.

`util.process_embeddings()` leases jobs with pgmq.read and posts them, each with its `jobId`,
through pg_net. We take only the job ids from the request: the jobs themselves are read back
from the queue, so a request cannot make the worker touch anything that is not both queued and
registered. They then go through the same pipeline as pulled jobs (load, embed, write,
settle), and the answer says which completed and which failed, with the error.

Leases: reading the jobs back never shortens the lease dispatch() took (300 s by default), and
the jobs are registered with the worker's leases, so its keeper renews them like pulled ones
while the request is processed. Bounds: at most MAX_ROWS rows per request, embedded in batches
of EMBED_BATCH_SIZE rows (each written and settled as it is done), and at most
MAX_CONCURRENT_REQUESTS requests at a time; jobs past a bound are answered as failed and left to
their dispatch lease, so the next dispatch() retries them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worker import db, queries
from worker.pipeline import inline, messages, pieces, stages
from worker.pipeline import jobs as jobqueue
from worker.pipeline.batch import Batch, RowState
from worker.pipeline.settlement import Settlement

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.models.loaded import LoadedModels
    from worker.pipeline.lanes import Lane, Lanes
    from worker.pipeline.targets import TargetRegistry

MAX_JOBS = 1000
MAX_ROWS = 1024  # rows one request may make the worker embed (dispatch_batches() fills to it)
MAX_CONCURRENT_REQUESTS = 2  # the model uses every core already: more would only queue
BUSY_WAIT_SECONDS = 30.0  # how long a request waits for a slot before it is answered "busy"
SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_REQUESTS)


class InvalidRequest(ValueError):
    """The request body does not follow the contract."""


@dataclass
class PushResult:
    """Each list in the order the jobs were sent. `handed_back`: jobs this request did not
    start because the worker is stopping, visible in the queue again at once (also in
    `failed`, with that reason)."""

    completed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    handed_back: int = 0


def job_ids(body: Any) -> list[tuple[int, dict[str, Any]]]:
    """(jobId, job as sent) for each job of a valid request body; InvalidRequest otherwise."""
    if not isinstance(body, list):
        raise InvalidRequest("invalid request body: expected a JSON array of jobs")
    if len(body) > MAX_JOBS:
        raise InvalidRequest(f"invalid request body: at most {MAX_JOBS} jobs per request")
    found = []
    for index, job in enumerate(body):
        if not isinstance(job, dict):
            raise InvalidRequest(f"invalid request body: job {index} is not an object")
        job_id = job.get("jobId")
        # A JSON integer only: int() would cut 1.9 to job 1, another job, and take "1" too.
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            raise InvalidRequest(f"invalid request body: job {index} has no integer jobId")
        if not -(2**63) <= job_id < 2**63:  # pgmq's msg_id is a bigint
            raise InvalidRequest(f"invalid request body: job {index} has a jobId out of range")
        found.append((job_id, job))
    return found


class InFlight:
    """The jobs requests are working on, claimed and let go as a whole request's at once."""

    def __init__(self) -> None:
        self._held: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def claim(self, lane: str, job_ids: Sequence[int]) -> set[int]:
        """Claims the ids no other request holds; returns those (the rest are busy)."""
        with self._lock:
            free = {job_id for job_id in job_ids if (lane, job_id) not in self._held}
            self._held.update((lane, job_id) for job_id in free)
            return free

    def release(self, lane: str, job_ids: Iterable[int]) -> None:
        with self._lock:
            self._held.difference_update((lane, job_id) for job_id in job_ids)


@dataclass(frozen=True, kw_only=True)
class Push:
    """What push mode uses of a worker (wired by worker/http/server.py's serve())."""

    dsn: str
    settings: Settings  # lease length, batch size, attempts and backoff (the write stage)
    lanes: Lanes  # pushed jobs are held in these leases: the worker's keeper renews them
    registry: TargetRegistry
    embedders: LoadedModels
    # Set on SIGTERM: no batch starts after it; the jobs not started are handed back.
    stopping: threading.Event = field(default_factory=threading.Event)
    # (lane, job id) of the jobs requests to this process are working on: a second delivery
    # of one (pg_net retrying, a cron run overlapping the last) is answered busy, not redone.
    in_flight: InFlight = field(default_factory=InFlight)


# Why a row went back to the queue in a message of its own (worker/pipeline/settlement.py).
_RESENT = {
    RowState.BLOCKED: "held up by another session's lock",
    RowState.POSTPONED: "postponed",
    RowState.PIECE: "a long document's next piece",
}

# What became of one job of a request: completed, or the reason it was not.
_Fate = tuple[bool, str | None]

HANDED_BACK = (
    "handed back: the worker is stopping (SIGTERM) and did not start this job; it is visible "
    "in the queue again now, for the next dispatch"
)
BUSY = (
    "not processed: a request to this worker is processing the job already (a duplicate "
    "delivery); that request settles it"
)


def process(push: Push, body: Any) -> PushResult:
    requested = job_ids(body)
    if not requested:
        return PushResult()
    if not _slot(push.stopping):
        error = (
            f"worker busy ({MAX_CONCURRENT_REQUESTS} requests in progress); "
            "the job is retried after its lease"
        )
        return PushResult(failed=[{**sent, "error": error} for _, sent in requested])
    # (stopping, no slot taken: the jobs are only leased and handed back, nothing embedded)
    took = not push.stopping.is_set()
    try:
        # Jobs that embeddings.dispatch() leased from the backfill lane say so ("lane"): each
        # lane's jobs are leased and settled in their own queue (job ids are per queue).
        fates: dict[int, _Fate] = {}
        for lane in push.lanes:
            mine = [
                (index, job_id)
                for index, (job_id, sent) in enumerate(requested)
                if (sent.get("lane") == jobqueue.BACKFILL) == (lane.name == jobqueue.BACKFILL)
            ]
            if mine:
                fates.update(_claimed(push, mine, lane))
    finally:
        if took:
            SLOTS.release()
    # The answer lists the jobs in the order they were sent, whatever their lanes.
    result = PushResult()
    for index, (_, sent) in enumerate(requested):
        completed, why = fates[index]
        if completed:
            result.completed.append(sent)
        else:
            result.failed.append({**sent, "error": why})
            result.handed_back += why == HANDED_BACK
    return result


def _slot(stopping: threading.Event) -> bool:
    """Waits for a place to work in, BUSY_WAIT_SECONDS at most; True when one was taken, or
    when the worker is stopping (then there is nothing to wait for: the request only hands
    its jobs back)."""
    deadline = time.monotonic() + BUSY_WAIT_SECONDS
    while not stopping.is_set():
        # (in steps, so that a SIGTERM does not wait behind a request in progress)
        if SLOTS.acquire(timeout=min(0.5, max(deadline - time.monotonic(), 0))):
            return True
        if time.monotonic() >= deadline:
            return False
    return True


def _claimed(push: Push, requested: list[tuple[int, int]], lane: Lane) -> dict[int, _Fate]:
    """`requested` (index in the request, job id) processed in `lane`, but for the jobs
    another request holds: those are answered busy."""
    free = push.in_flight.claim(lane.name, [job_id for _, job_id in requested])
    fates: dict[int, _Fate] = {i: (False, BUSY) for i, job_id in requested if job_id not in free}
    try:
        mine = [(i, job_id) for i, job_id in requested if job_id in free]
        if mine:
            fates.update(_process(push, mine, lane))
    finally:
        push.in_flight.release(lane.name, free)
    return fates


@dataclass
class _Done:
    job: messages.Job
    batch: Batch
    settlement: Settlement


def _process(push: Push, requested: list[tuple[int, int]], lane: Lane) -> dict[int, _Fate]:
    done: dict[int, _Done] = {}
    over: set[int] = set()
    handed_back: set[int] = set()
    conn = db.connect(
        push.dsn,
        lock_timeout_ms=push.settings.lock_timeout_ms,
        per_transaction=push.settings.per_transaction,
    )
    try:
        db.register_vector_types(conn)
        with db.translated():
            rows = conn.execute(
                queries.compose("lease_jobs_by_id", queue_table=lane.queue.table),
                {"msg_ids": [job_id for _, job_id in requested], "vt": push.settings.vt_seconds},
            ).fetchall()
        jobs = stages.parse_jobs(conn, rows, push.registry)
        jobs.sort(key=lambda job: job.msg_id)
        taken = _within(jobs, MAX_ROWS)
        over = {job.msg_id for job in jobs[len(taken) :]}
        lane.leases.add(taken)  # the keeper renews them while we work
        limits = pieces.Limits.of(push.settings)  # long documents: a piece per batch
        try:
            for chunk in _batches(taken, push.settings.batch_size):
                if push.stopping.is_set():
                    # SIGTERM: the batch in flight was finished; the rest go back at once.
                    handed_back.update(_hand_back(conn, lane, taken, done))
                    break
                batch = Batch(jobs=list(chunk), lane=lane.name, limits=limits)
                settlement = inline.process(conn, lane.queue, batch, push.embedders, push.settings)
                lane.leases.drop(batch.msg_ids)
                done.update({job.msg_id: _Done(job, batch, settlement) for job in batch.jobs})
        finally:
            lane.leases.drop(job.msg_id for job in taken)
    finally:
        conn.close()

    fates: dict[int, _Fate] = {}
    for index, job_id in requested:
        item = done.get(job_id)
        if job_id in handed_back:
            fates[index] = (False, HANDED_BACK)
        elif item is not None and _completed(item):
            fates[index] = (True, None)
        elif job_id in over:
            fates[index] = (
                False,
                f"not processed: the request carries more than {MAX_ROWS} rows; the job is "
                "retried after its lease (dispatch smaller batches)",
            )
        else:
            fates[index] = (False, _why(item, lane.queue.name))
    return fates


def _hand_back(
    conn: db.Connection, lane: Lane, taken: Sequence[messages.Job], done: dict[int, _Done]
) -> set[int]:
    """Makes the jobs of `taken` not yet processed visible again now, without counting the
    attempt (as a pulled worker's SIGTERM does); returns their ids."""
    rest = [job.msg_id for job in taken if job.msg_id not in done]
    with db.translated(), conn.transaction():
        lane.queue.release(conn, lane.leases.held(rest))
    return set(rest)


def _completed(item: _Done) -> bool:
    """Settled by this request: its job deleted with every row done, none of them sent back to
    the queue in a message of their own (held up by a lock, postponed, a long document's next
    piece): those are embedded by a later delivery, not this one."""
    job = item.job
    if job.msg_id not in item.settlement.delete or job.target is None:
        return False
    return not any((job.target.id, key) in item.settlement.resent for key in job.keys)


def _rows(job: messages.Job) -> int:
    return max(len(job.keys) + len(job.bad_keys), 1)


def _within(jobs: Sequence[messages.Job], max_rows: int) -> list[messages.Job]:
    """The leading jobs whose rows add up to at most `max_rows` (the first one always)."""
    taken: list[messages.Job] = []
    total = 0
    for job in jobs:
        if taken and total + _rows(job) > max_rows:
            break
        taken.append(job)
        total += _rows(job)
    return taken


def _batches(jobs: Sequence[messages.Job], batch_size: int) -> Iterator[list[messages.Job]]:
    """Consecutive groups of jobs of at most `batch_size` rows (one job at least)."""
    group: list[messages.Job] = []
    rows = 0
    for job in jobs:
        if group and rows + _rows(job) > batch_size:
            yield group
            group, rows = [], 0
        group.append(job)
        rows += _rows(job)
    if group:
        yield group


def _why(item: _Done | None, queue: str) -> str:
    if item is None:
        return f"no such job in queue {queue} (already processed, or never queued there)"
    job, batch = item.job, item.batch
    if job.error:
        return job.error
    if job.msg_id in item.settlement.release:
        return "the target was redefined (embeddings.watch()) while it was processed; retried"
    if job.target is not None and job.target.id in batch.deferred:
        return batch.deferred[job.target.id]
    resent = [
        batch.rows[row_key]
        for key in job.keys
        if job.target is not None and (row_key := (job.target.id, key)) in item.settlement.resent
    ]
    if resent:
        why = sorted({_RESENT.get(row.state, row.state.value) for row in resent})
        return (
            f"not finished: {len(resent)} of its {len(job.keys)} rows went back to the queue "
            f"as a new job ({', '.join(why)}); a later delivery embeds them"
        )
    errors = [
        row.error
        for key in job.keys
        if (row := batch.rows[(job.target.id, key)]).error  # type: ignore[union-attr]
    ] + [error for _, error in job.bad_keys]
    return "; ".join(e for e in errors if e) or "failed"

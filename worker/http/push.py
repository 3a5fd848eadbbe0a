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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worker import db, queries
from worker.pipeline import inline, messages, pieces, stages
from worker.pipeline import jobs as jobqueue
from worker.pipeline.batch import Batch
from worker.pipeline.settlement import Settlement

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.models.loaded import LoadedModels
    from worker.pipeline.lanes import Lane, Lanes
    from worker.pipeline.targets import TargetRegistry

MAX_JOBS = 1000
MAX_ROWS = 1024  # rows one request may make the worker embed
MAX_CONCURRENT_REQUESTS = 2  # the model uses every core already: more would only queue
BUSY_WAIT_SECONDS = 30.0  # how long a request waits for a slot before it is answered "busy"
SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_REQUESTS)


class InvalidRequest(ValueError):
    """The request body does not follow the contract."""


@dataclass
class PushResult:
    completed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)


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


@dataclass(frozen=True, kw_only=True)
class Push:
    """What push mode uses of a worker (wired by worker/http/server.py's serve())."""

    dsn: str
    settings: Settings  # lease length, batch size, attempts and backoff (the write stage)
    lanes: Lanes  # pushed jobs are held in these leases: the worker's keeper renews them
    registry: TargetRegistry
    embedders: LoadedModels


def process(push: Push, body: Any) -> PushResult:
    requested = job_ids(body)
    if not requested:
        return PushResult()
    if not SLOTS.acquire(timeout=BUSY_WAIT_SECONDS):
        error = (
            f"worker busy ({MAX_CONCURRENT_REQUESTS} requests in progress); "
            "the job is retried after its lease"
        )
        return PushResult(failed=[{**sent, "error": error} for _, sent in requested])
    try:
        # Jobs that embeddings.dispatch() leased from the backfill lane say so ("lane"): each
        # lane's jobs are leased and settled in their own queue (job ids are per queue).
        result = PushResult()
        for lane in push.lanes:
            mine = [
                (job_id, sent)
                for job_id, sent in requested
                if (sent.get("lane") == jobqueue.BACKFILL) == (lane.name == jobqueue.BACKFILL)
            ]
            if mine:
                part = _process(push, mine, lane)
                result.completed += part.completed
                result.failed += part.failed
        return result
    finally:
        SLOTS.release()


@dataclass
class _Done:
    job: messages.Job
    batch: Batch
    settlement: Settlement


def _process(push: Push, requested: list[tuple[int, dict[str, Any]]], lane: Lane) -> PushResult:
    done: dict[int, _Done] = {}
    over: set[int] = set()
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
                {"msg_ids": [job_id for job_id, _ in requested], "vt": push.settings.vt_seconds},
            ).fetchall()
        jobs = stages.parse_jobs(conn, rows, push.registry)
        jobs.sort(key=lambda job: job.msg_id)
        taken = _within(jobs, MAX_ROWS)
        over = {job.msg_id for job in jobs[len(taken) :]}
        lane.leases.add(taken)  # the keeper renews them while we work
        limits = pieces.Limits.of(push.settings)  # long documents: a piece per batch
        try:
            for chunk in _batches(taken, push.settings.batch_size):
                batch = Batch(jobs=list(chunk), lane=lane.name, limits=limits)
                settlement = inline.process(conn, lane.queue, batch, push.embedders, push.settings)
                lane.leases.drop(batch.msg_ids)
                done.update({job.msg_id: _Done(job, batch, settlement) for job in batch.jobs})
        finally:
            lane.leases.drop(job.msg_id for job in taken)
    finally:
        conn.close()

    result = PushResult()
    for job_id, sent in requested:
        item = done.get(job_id)
        if item is not None and job_id in item.settlement.delete:
            result.completed.append(sent)
        elif job_id in over:
            error = (
                f"not processed: the request carries more than {MAX_ROWS} rows; the job is "
                "retried after its lease (dispatch smaller batches)"
            )
            result.failed.append({**sent, "error": error})
        else:
            result.failed.append({**sent, "error": _why(item, lane.queue.name)})
    return result


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
    errors = [
        row.error
        for key in job.keys
        if (row := batch.rows[(job.target.id, key)]).error  # type: ignore[union-attr]
    ] + [error for _, error in job.bad_keys]
    return "; ".join(e for e in errors if e) or "failed"

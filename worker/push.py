"""Push mode: the Supabase guide's Edge Function contract, served at POST /functions/v1/embed.

`util.process_embeddings()` leases jobs with pgmq.read and posts them, each with its `jobId`,
through pg_net. We take only the job ids from the request: the jobs themselves are read back
from the queue, so a request cannot make the worker touch anything that is not both queued and
registered. They then go through the same pipeline as pulled jobs (load, embed, write,
settle), and the answer says which completed and which failed, with the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worker import db, pipeline, queries
from worker import queue as jobqueue

if TYPE_CHECKING:
    from worker.runner import Worker

MAX_JOBS = 1000


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
        raw = job.get("jobId")
        try:
            if isinstance(raw, bool) or raw is None:
                raise ValueError
            job_id = int(raw)
        except (TypeError, ValueError):
            raise InvalidRequest(
                f"invalid request body: job {index} has no numeric jobId"
            ) from None
        found.append((job_id, job))
    return found


def process(worker: Worker, body: Any) -> PushResult:
    requested = job_ids(body)
    result = PushResult()
    if not requested:
        return result
    conn = db.connect(worker.dsn)
    try:
        db.register_vector_types(conn)
        with db.translated():
            rows = conn.execute(
                queries.compose("lease_jobs_by_id", queue_table=worker.queue.table),
                {"msg_ids": [job_id for job_id, _ in requested], "vt": worker.settings.vt_seconds},
            ).fetchall()
        targets = worker.registry.current_definitions(conn)
        jobs = [jobqueue.parse(row, targets) for row in rows]
        if any(job.error and job.target is None for job in jobs):
            targets = worker.registry.refresh(conn)
            jobs = [jobqueue.parse(row, targets) for row in rows]
        batch = pipeline.Batch(jobs=jobs)
        pipeline.prepare(batch)
        pipeline.load(conn, batch)
        pipeline.embed(worker.embedders, batch)
        settlement = pipeline.write(conn, worker.queue, batch, worker.settings)
        pipeline.log_batch(batch)
    finally:
        conn.close()

    by_id = {job.msg_id: job for job in jobs}
    done = set(settlement.delete)
    for job_id, sent in requested:
        job = by_id.get(job_id)
        if job is not None and job_id in done:
            result.completed.append(sent)
        else:
            result.failed.append({**sent, "error": _why(job, batch, worker.queue.name)})
    return result


def _why(job: jobqueue.Job | None, batch: pipeline.Batch, queue: str) -> str:
    if job is None:
        return f"no such job in queue {queue} (already processed, or never queued there)"
    if job.error:
        return job.error
    if job.target is not None and job.target.id in batch.deferred:
        return batch.deferred[job.target.id]
    errors = [
        row.error
        for key in job.keys
        if (row := batch.rows[(job.target.id, key)]).error  # type: ignore[union-attr]
    ] + [error for _, error in job.bad_keys]
    return "; ".join(e for e in errors if e) or "failed"

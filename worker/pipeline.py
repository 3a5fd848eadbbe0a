"""The pipeline: a batch of jobs goes read → load → embed → write, one function per stage.

No stage holds a transaction across another: `read` and `load` are single autocommit
statements, `embed` touches no database, and `write` stores the vectors and settles every job
of the batch in one short transaction (exactly-once effect per job). The runner runs the stages
in separate threads so that database I/O overlaps inference.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from pgvector import HalfVector, Vector

from worker import chunkstore, db, exceptions, metrics, queries, visibility
from worker import queue as jobqueue
from worker.config import Settings
from worker.embedders import Embedders
from worker.targets import Registry, Target

logger = logging.getLogger(__name__)

# A target that cannot be served (model missing, dimension mismatch) has its jobs put back
# this long, without counting an attempt.
DEFER_SECONDS = 60


class RowState(enum.Enum):
    PENDING = "pending"  # not loaded yet
    READY = "ready"  # content loaded, to embed
    BLANK = "blank"  # NULL, empty or whitespace-only content: the embedding is cleared
    GONE = "gone"  # no such row (deleted): acknowledged
    EMBEDDED = "embedded"  # vector computed, to write
    FAILED = "failed"  # this row's own error: retried, then dead-lettered
    WRITTEN = "written"
    CLEARED = "cleared"
    STALE = "stale"  # content changed since loading: its newer job embeds it
    # Chunked targets: past the batch's chunk budget; re-queued with no attempt counted.
    POSTPONED = "postponed"


@dataclass
class Row:
    target: Target
    key: str
    state: RowState = RowState.PENDING
    content: str | None = None
    digest: str | None = None
    vector: np.ndarray[Any, np.dtype[np.float32]] | None = None
    error: str | None = None
    chunks: chunkstore.DocumentChunks | None = None  # chunked targets: set by chunkstore.prepare

    def fail(self, error: str) -> None:
        self.state = RowState.FAILED
        self.error = error


@dataclass
class TargetStats:
    jobs: int = 0
    rows: int = 0
    tokens: int = 0
    embed_ms: float = 0.0


@dataclass
class Batch:
    jobs: list[jobqueue.Job]
    rows: dict[tuple[int, str], Row] = field(default_factory=dict)
    deferred: dict[int, str] = field(default_factory=dict)  # target id -> why
    stats: dict[int, TargetStats] = field(default_factory=lambda: defaultdict(TargetStats))
    load_ms: float = 0.0
    write_ms: float = 0.0

    def by_target(self, state: RowState | None = None) -> dict[Target, list[Row]]:
        groups: dict[Target, list[Row]] = defaultdict(list)
        for row in self.rows.values():
            if row.target.id in self.deferred:
                continue
            if state is None or row.state is state:
                groups[row.target].append(row)
        return groups

    @property
    def msg_ids(self) -> list[int]:
        return [job.msg_id for job in self.jobs]


# --- read ---------------------------------------------------------------------------------------
def read(
    conn: db.Connection, queue: jobqueue.Queue, registry: Registry, settings: Settings
) -> Batch | None:
    """Leases up to `batch_size` rows' worth of visible jobs; None when there are none."""
    started = time.perf_counter()
    raw = queue.read(conn, max_keys=settings.batch_size, vt=settings.vt_seconds)
    metrics.STAGE_SECONDS.labels("read").observe(time.perf_counter() - started)
    if not raw:
        return None
    targets = registry.current(conn)
    jobs = [jobqueue.parse(r, targets) for r in raw]
    if any(job.error and job.target is None for job in jobs):
        # A target registered since we last looked: read the registry again, once.
        targets = registry.refresh(conn)
        jobs = [jobqueue.parse(r, targets) for r in raw]
    batch = Batch(jobs=jobs)
    prepare(batch)
    return batch


def prepare(batch: Batch) -> None:
    """One Row per distinct (target, key) of the batch's jobs; unservable targets deferred."""
    for job in batch.jobs:
        if job.target is None:
            continue
        problem = job.target.problem()
        if problem:
            batch.deferred[job.target.id] = problem
        batch.stats[job.target.id].jobs += 1
        for key in job.keys:
            batch.rows.setdefault((job.target.id, key), Row(job.target, key))


# --- load ---------------------------------------------------------------------------------------
def load(conn: db.Connection, batch: Batch) -> None:
    """Loads the content of every row, one query per target. If a target's query fails (a
    content function raising for some row), rows are loaded one by one to find the culprits."""
    started = time.perf_counter()
    for target, rows in batch.by_target(RowState.PENDING).items():
        try:
            found = _load_rows(conn, target, [r.key for r in rows])
        except exceptions.ConnectionLost:
            raise
        except exceptions.DatabaseError:
            for row in rows:
                try:
                    _apply_loaded(row, _load_rows(conn, target, [row.key]))
                except exceptions.ConnectionLost:
                    raise
                except exceptions.DatabaseError as exc:
                    row.fail(f"loading the content failed: {exc}")
            continue
        for row in rows:
            _apply_loaded(row, found)
    chunkstore.prepare(conn, batch)  # chunked targets: split, find the vectors already stored
    batch.load_ms = (time.perf_counter() - started) * 1000
    metrics.STAGE_SECONDS.labels("load").observe(batch.load_ms / 1000)


def _load_rows(
    conn: db.Connection, target: Target, keys: list[str]
) -> dict[str, tuple[str | None, str | None]]:
    with db.translated():
        rows = conn.execute(target.query("load_content"), {"keys": keys}).fetchall()
    return {key: (content, digest) for key, content, digest in rows}


def _apply_loaded(row: Row, found: dict[str, tuple[str | None, str | None]]) -> None:
    if row.key not in found:
        row.state = RowState.GONE
        return
    row.content, row.digest = found[row.key]
    row.state = RowState.READY if row.content and row.content.strip() else RowState.BLANK


# --- embed --------------------------------------------------------------------------------------
def embed(embedders: Embedders, batch: Batch) -> None:
    """Embeds every loaded row with its target's model. A model that cannot be loaded, or whose
    dimensions do not fit the column, defers the target; a text the model fails on fails only
    its own row (the batch is split until the culprit is alone)."""
    for target, rows in batch.by_target(RowState.READY).items():
        try:
            model = embedders.get(target.model)
        except exceptions.ModelError as exc:
            batch.deferred[target.id] = str(exc)
            continue
        problem = target.problem(model.dim)
        if problem:
            batch.deferred[target.id] = problem
            continue
        started = time.perf_counter()
        if target.chunk_table is not None:  # chunked targets: only the chunks that changed
            tokens = chunkstore.embed(model, rows)
        else:
            tokens = _embed_isolating(model, rows)
        stats = batch.stats[target.id]
        stats.tokens += tokens
        stats.embed_ms += (time.perf_counter() - started) * 1000
        metrics.TOKENS.labels(target.model).inc(tokens)
    total_ms = sum(s.embed_ms for s in batch.stats.values())
    metrics.STAGE_SECONDS.labels("embed").observe(total_ms / 1000)


def _embed_isolating(model: Any, rows: Sequence[Row]) -> int:
    try:
        result = model.embed_with_stats([row.content for row in rows])
    except Exception as exc:  # the model's failure on some input: find which
        if len(rows) == 1:
            rows[0].fail(f"embedding failed: {type(exc).__name__}: {exc}")
            return 0
        middle = len(rows) // 2
        return _embed_isolating(model, rows[:middle]) + _embed_isolating(model, rows[middle:])
    for row, vector in zip(rows, result.vectors, strict=True):
        row.vector = vector
        row.state = RowState.EMBEDDED
    return int(result.tokens)


# --- write --------------------------------------------------------------------------------------
@dataclass
class Settlement:
    """What happens to each job of a batch, decided before the write transaction."""

    delete: list[int] = field(default_factory=list)
    archive: list[int] = field(default_factory=list)
    retry: dict[int, int] = field(default_factory=dict)  # msg_id -> delay
    defer: list[int] = field(default_factory=list)
    resend: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    dead: list[jobqueue.DeadLetter] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def write(
    conn: db.Connection,
    queue: jobqueue.Queue,
    batch: Batch,
    settings: Settings,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Settlement:
    """Stores vectors, clears blank rows and settles every job, in one transaction."""
    started = time.perf_counter()
    with db.translated(), conn.transaction():
        for target, rows in batch.by_target().items():
            _write_target(conn, target, rows)
        settlement = settle(batch, settings, now())
        queue.delete(conn, settlement.delete)
        queue.archive(conn, settlement.archive)
        queue.retry(conn, settlement.retry)
        queue.defer(conn, settlement.defer, DEFER_SECONDS)
        queue.send(conn, settlement.resend)
        jobqueue.record_failures(conn, queue.name, settlement.dead)
        visibility.record(conn, batch)  # deferral reasons for status; dead letters resolved
        for target_id, count in _written_per_target(batch).items():
            conn.execute(
                queries.compose("record_throughput"), {"target_id": target_id, "rows": count}
            )
    batch.write_ms = (time.perf_counter() - started) * 1000
    metrics.STAGE_SECONDS.labels("write").observe(batch.write_ms / 1000)
    _count(batch, settlement)
    return settlement


def _write_target(conn: db.Connection, target: Target, rows: list[Row]) -> None:
    embedded = [r for r in rows if r.state is RowState.EMBEDDED]
    blank = [r for r in rows if r.state is RowState.BLANK]
    if not embedded and not blank:
        return
    try:
        with conn.transaction():  # a savepoint: a failure here fails only this target's rows
            _store(conn, target, embedded, blank)
    except psycopg.Error as exc:
        if db.is_connection_error(exc):
            raise
        # Something in the table refused the write (a trigger, a constraint): one row at a
        # time, to fail only the rows it refuses.
        for row in embedded + blank:
            try:
                with conn.transaction():
                    if row.state is RowState.EMBEDDED:
                        _store(conn, target, [row], [])
                    else:
                        _store(conn, target, [], [row])
            except psycopg.Error as row_exc:
                if db.is_connection_error(row_exc):
                    raise
                row.fail(f"storing the embedding failed: {db.redact(str(row_exc).strip())}")


def _vector(row: Row) -> np.ndarray[Any, np.dtype[np.float32]]:
    assert row.vector is not None, "only embedded rows are stored"
    return row.vector


def _store(conn: db.Connection, target: Target, embedded: list[Row], blank: list[Row]) -> None:
    if target.chunk_table is not None:  # chunked targets: chunkstore writes, rows settle alike
        outcome = chunkstore.store(conn, target, embedded, blank)
        for row in embedded + blank:
            row.state = outcome[row.key]
        return
    if embedded:
        wrap = HalfVector if target.embedding_type == "halfvec" else Vector
        written = {
            key
            for (key,) in conn.execute(
                target.query("write_vectors"),
                {
                    "keys": [r.key for r in embedded],
                    "embeddings": [wrap(_vector(r)) for r in embedded],
                    "hashes": [r.digest for r in embedded],
                },
            )
        }
        for row in embedded:
            row.state = RowState.WRITTEN if row.key in written else RowState.STALE
    if blank:
        cleared = {
            key
            for (key,) in conn.execute(
                target.query("clear_vectors"),
                {"keys": [r.key for r in blank], "hashes": [r.digest for r in blank]},
            )
        }
        for row in blank:
            # Not cleared: already NULL, or the content changed since (its own job handles it).
            row.state = RowState.CLEARED if row.key in cleared else RowState.BLANK


def settle(batch: Batch, settings: Settings, now: datetime) -> Settlement:
    """Decides each job's fate from its rows' outcomes (pure; no database)."""
    out = Settlement()
    for job in batch.jobs:
        target = job.target
        if target is None:
            # Nothing named in the message runs unless registered: dead-letter it as it is.
            out.archive.append(job.msg_id)
            out.dead.append(
                jobqueue.DeadLetter(
                    target=None,
                    target_label=_label(job),
                    row_key=job.message.get("id") if isinstance(job.message, dict) else None,
                    message=job.message,
                    attempts=job.attempts,
                    error=job.error or "unknown target",
                )
            )
            continue
        if target.id in batch.deferred:
            out.defer.append(job.msg_id)
            continue
        failed = [
            (key, row.error or "failed")
            for key in job.keys
            if (row := batch.rows[(target.id, key)]).state is RowState.FAILED
        ]
        # >>> chunked targets: documents past the batch's chunk budget go back to the queue
        # in a message of their own, visible at once, with the attempts spent before this one.
        postponed = [
            job.raw_keys[key]
            for key in job.keys
            if batch.rows[(target.id, key)].state is RowState.POSTPONED
        ]
        if postponed:
            message = {"target": target.id, "keys": postponed, "attempts": job.attempts - 1}
            out.resend.append((message, 0))
        # <<< chunked targets
        if not failed and not job.bad_keys:
            out.delete.append(job.msg_id)
            out.latencies.append((now - job.enqueued_at).total_seconds())
            continue
        exhausted = job.attempts >= settings.max_attempts
        dead = (
            [(job.raw_keys[k], job.single_key_message(k), e) for k, e in failed]
            if exhausted
            else []
        )
        # An invalid key can never succeed: dead at once.
        dead += [
            (
                raw,
                {"target": target.id, "keys": [raw]} if not job.supabase_shape else job.message,
                e,
            )
            for raw, e in job.bad_keys
        ]
        retry_keys = [k for k, _ in failed] if not exhausted else []
        for raw, message, error in dead:
            out.dead.append(
                jobqueue.DeadLetter(target, target.name, raw, message, job.attempts, error)
            )
        delay = jobqueue.backoff_seconds(
            job.attempts, settings.backoff_base_seconds, settings.backoff_max_seconds
        )
        if retry_keys and len(retry_keys) == len(job.keys) and not job.bad_keys:
            out.retry[job.msg_id] = delay  # the whole job failed: back it off as it is
            continue
        if retry_keys:
            # Part of the job failed: its other rows are done. Re-send only the failed keys,
            # carrying the attempts spent so far.
            out.resend.append(
                (
                    {
                        "target": target.id,
                        "keys": [job.raw_keys[k] for k in retry_keys],
                        "attempts": job.attempts,
                    },
                    delay,
                )
            )
        (out.archive if dead else out.delete).append(job.msg_id)
    return out


def _label(job: jobqueue.Job) -> str:
    message = job.message if isinstance(job.message, dict) else {}
    if "schema" in message and "table" in message:
        return (
            f"{message['schema']}.{message['table']}.{message.get('embeddingColumn', 'embedding')}"
        )
    if "target" in message:
        return f"target {message['target']}"
    return "unknown"


def _written_per_target(batch: Batch) -> dict[int, int]:
    counts: dict[int, int] = defaultdict(int)
    for row in batch.rows.values():
        if row.state is RowState.WRITTEN:
            counts[row.target.id] += 1
    return counts


def _count(batch: Batch, settlement: Settlement) -> None:
    """Metrics of a committed batch. Rows of deferred targets are not counted: their jobs went
    back to the queue as they were (metrics.row_outcome maps the other states)."""
    metrics.JOBS.labels("done").inc(len(settlement.delete))
    metrics.JOBS.labels("retried").inc(len(settlement.retry) + len(settlement.resend))
    metrics.JOBS.labels("dead").inc(len(settlement.dead))
    metrics.JOBS.labels("deferred").inc(len(settlement.defer))
    targets = {job.target.id: job.target.name for job in batch.jobs if job.target is not None}
    for target_id, name in targets.items():
        metrics.TARGET_DEFERRED.labels(name).set(1 if target_id in batch.deferred else 0)
    for row in batch.rows.values():
        if row.target.id not in batch.deferred:
            metrics.count_row(row.target.name, row.state.value)
    for latency in settlement.latencies:
        metrics.JOB_LATENCY.observe(latency)


def log_batch(batch: Batch) -> None:
    """One line per target of the batch."""
    per_target: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    names: dict[int, str] = {}
    for row in batch.rows.values():
        per_target[row.target.id][row.state.value] += 1
        names[row.target.id] = row.target.name
    for target_id, states in per_target.items():
        stats = batch.stats[target_id]
        if target_id in batch.deferred:
            logger.warning(
                "deferred target=%s jobs=%d rows=%d reason=%s",
                names[target_id],
                stats.jobs,
                sum(states.values()),
                batch.deferred[target_id],
            )
            continue
        logger.info(
            "batch target=%s jobs=%d rows=%d embedded=%d cleared=%d gone=%d stale=%d failed=%d "
            "tokens=%d load_ms=%.1f embed_ms=%.1f write_ms=%.1f",
            names[target_id],
            stats.jobs,
            sum(states.values()),
            states["written"],
            states["cleared"] + states["blank"],
            states["gone"],
            states["stale"],
            states["failed"],
            stats.tokens,
            batch.load_ms,
            stats.embed_ms,
            batch.write_ms,
            extra={
                "target": names[target_id],
                "jobs": stats.jobs,
                "rows": sum(states.values()),
                "embedded": states["written"],
                "failed": states["failed"],
                "stale": states["stale"],
                "tokens": stats.tokens,
                "load_ms": round(batch.load_ms, 1),
                "embed_ms": round(stats.embed_ms, 1),
                "write_ms": round(batch.write_ms, 1),
            },
        )
    for row in batch.rows.values():
        if row.state is RowState.FAILED:
            logger.warning("row failed target=%s key=%s: %s", row.target.name, row.key, row.error)
    for job in batch.jobs:
        if job.error:
            logger.warning("job %d dead-lettered: %s", job.msg_id, job.error)

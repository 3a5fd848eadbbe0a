"""The pipeline: a batch of jobs goes read → load → embed → write, one function per stage.

No stage holds a transaction across another: `read` and `load` are single autocommit
statements, `embed` touches no database, and `write` stores the vectors and settles every job
of the batch in one short transaction (exactly-once effect per job). The runner runs the stages
in separate threads so that database I/O overlaps inference.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from worker import db, exceptions, metrics
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline import bounds, faults, messages, pieces, stores
from worker.pipeline import jobs as jobqueue
from worker.pipeline.batch import Batch, Row, RowState
from worker.pipeline.chunks import parses as chunk_parses
from worker.pipeline.chunks import writing as chunk_writing
from worker.pipeline.parsing import service as parsing
from worker.pipeline.targets import TargetRegistry
from worker.target import Target

logger = logging.getLogger(__name__)


# --- read ---------------------------------------------------------------------------------------
def read(
    conn: db.Connection,
    queue: jobqueue.Queue,
    registry: TargetRegistry,
    settings: Settings,
    held_for: Sequence[int] = (),
) -> Batch | None:
    """Leases up to `batch_size` rows' worth of visible jobs (with `held_for`, of the jobs held
    for those targets); None when there are none."""
    started = time.perf_counter()
    raw = queue.read(conn, max_keys=settings.batch_size, vt=settings.vt_seconds, held_for=held_for)
    metrics.STAGE_SECONDS.labels("read").observe(time.perf_counter() - started)
    if not raw:
        return None
    faults.reached("leased")
    batch = Batch(
        jobs=parse_jobs(conn, raw, registry), lane=queue.lane, limits=pieces.Limits.of(settings)
    )
    prepare(batch)
    return batch


def parse_jobs(
    conn: db.Connection, raw: Sequence[Sequence[Any]], registry: TargetRegistry
) -> list[messages.Job]:
    """Jobs of leased messages, with their targets as the registry has them now (pull and push
    alike)."""
    targets = registry.current_definitions(conn)
    jobs = [messages.parse(r, targets) for r in raw]
    if any(job.error and job.target is None for job in jobs):
        # A target registered since we last looked: read the registry again, once.
        targets = registry.refresh(conn)
        jobs = [messages.parse(r, targets) for r in raw]
    return jobs


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
            row = batch.rows.get((job.target.id, key))
            if row is None:
                row = batch.rows[(job.target.id, key)] = Row(job.target, key, shadow_only=True)
            # Shadow only (a model change's job: only the new model's vector is missing) when
            # every job of the row says so and the change is still on; else served as any other.
            row.shadow_only = row.shadow_only and job.shadow and job.target.in_change


# --- load ---------------------------------------------------------------------------------------
def load(conn: db.Connection, batch: Batch, models: LoadedModels) -> None:
    """Loads the content of every row, one query per target, through the target's function that
    runs as the table's owner. If a target's query fails (a content function raising for some
    row, or running past its bound), rows are loaded one by one to find the culprits. A target
    whose function cannot serve it now (exceptions.TargetUnavailable) is deferred: a hidden row
    must not look deleted; one whose table another session holds past the lock timeout has its
    rows BLOCKED (worker/pipeline/bounds.py). Chunked targets' documents are split with their
    model's tokenizer (from `models`)."""
    started = time.perf_counter()
    faults.reached("load")
    seconds = batch.limits.owner_code_seconds
    for target, rows in batch.by_target(RowState.PENDING).items():
        if ("load", target.id) in batch.ignored_bound:
            bounds.OVERRUNS.note(conn, target.id)  # (the watchdog ended its session)
        if bounds.OVERRUNS.recent(conn, target.id):
            # Its content function ran past its bound lately: a row at a time.
            _load_one_by_one(conn, batch, target, rows)
            continue
        try:
            found = _load_rows(conn, target, rows, seconds)
        except exceptions.ConnectionLost:
            raise
        except (exceptions.TargetUnavailable, exceptions.LockUnavailable) as exc:
            _not_now(batch, target, rows, exc)
            continue
        except exceptions.DatabaseError as exc:
            if isinstance(exc, exceptions.StatementTimeout):
                bounds.OVERRUNS.note(conn, target.id)
            _load_one_by_one(conn, batch, target, rows)
            continue
        for row in rows:
            _apply_loaded(row, found)
    # What each kind of store needs beyond the content (chunked targets: split, find the vectors
    # already stored); documents' parses asked for first, every target's, with one wait.
    groups = batch.by_target(RowState.READY)
    chunk_parses.ask(conn, batch, groups)
    for target, ready in groups.items():
        try:
            stores.of(target).prepare(conn, batch, target, ready, models)
        except (exceptions.LockUnavailable, exceptions.StatementTimeout) as exc:
            _block(target, [r for r in ready if r.state is RowState.READY], exc)
    batch.load_ms = (time.perf_counter() - started) * 1000
    metrics.STAGE_SECONDS.labels("load").observe(batch.load_ms / 1000)


def _load_one_by_one(conn: db.Connection, batch: Batch, target: Target, rows: list[Row]) -> None:
    """Loads `rows` one at a time, failing those whose content cannot be had. A row held up by
    a lock, or whose owner code runs past its bound alone (it fails: the code is the row's),
    leaves the rows after it for a later batch: each would wait as long."""
    seconds = batch.limits.owner_code_seconds
    ran_over = batch.ignored_bound.get(("load", target.id))
    for i, row in enumerate(rows):
        if row.key == ran_over:  # its content function caught the cancel of its bound
            row.fail(bounds.ignored_bound_error("loading the content"))
            row.ran_over = True
            _block(target, rows[i + 1 :], None)
            return
        try:
            _apply_loaded(row, _load_rows(conn, target, [row], seconds, one=True))
        except exceptions.ConnectionLost:
            raise
        except (exceptions.TargetUnavailable, exceptions.LockUnavailable) as exc:
            _not_now(batch, target, rows[i:], exc)
            return
        except exceptions.StatementTimeout:
            bounds.OVERRUNS.note(conn, target.id)
            bound = bounds.owner_code_ms(seconds, [row])
            row.fail(bounds.owner_code_error("loading the content", bound))
            row.ran_over = True
            _block(target, rows[i + 1 :], None)
            return
        except exceptions.DatabaseError as exc:
            row.fail(f"loading the content failed: {exc}")


def _not_now(
    batch: Batch,
    target: Target,
    rows: list[Row],
    why: exceptions.TargetUnavailable | exceptions.LockUnavailable,
) -> None:
    """The content of `rows` cannot be had now: the target is deferred when its function cannot
    serve it (a hidden row must not look deleted), the rows wait when a lock holds them."""
    if isinstance(why, exceptions.TargetUnavailable):
        batch.deferred[target.id] = f"{target.name}: {why}"
    else:
        _block(target, rows, why)


def _block(target: Target, rows: list[Row], why: Exception | None) -> None:
    """`rows` wait for a later batch (worker/pipeline/bounds.py)."""
    for row in rows:
        row.state = RowState.BLOCKED
    if rows and why is not None:
        logger.warning("target=%s: %d rows wait for a later batch: %s", target.name, len(rows), why)


def _load_rows(
    conn: db.Connection,
    target: Target,
    rows: list[Row],
    owner_code_seconds: float,
    *,
    one: bool = False,
) -> dict[str, tuple[str | None, str | None]]:
    """Content and md5 by key, the table owner's code (its content function) bounded. A long
    document cached between its pieces (worker/pipeline/pieces.py), or one being parsed
    (worker/pipeline/parsing/), comes from what the worker holds, as long as the database's md5
    is still the held one's."""
    keys = [r.key for r in rows]
    known = {}
    if target.chunk_tokens is not None:  # documents: kept between pieces, or being parsed
        where = (pieces.database_of(conn), target.id, target.version, keys)
        known = {**parsing.SERVICE.known(*where), **pieces.CACHE.known(*where)}
    bound = bounds.owner_code_ms(owner_code_seconds, rows)
    label = ("load", target.id, rows[0].key if one else None)  # (for worker/process/watchdog.py)
    with db.translated(), db.bounded(conn, bound, label):
        if not known:
            found = conn.execute(target.query("load_content"), target.key_params(keys)).fetchall()
            return {key: (content, digest) for key, content, digest in found}
        found = conn.execute(
            target.query("load_content_known"),
            {
                **target.key_params(keys),
                "known_keys": list(known),
                "known_digests": [k.digest for k in known.values()],
            },
        ).fetchall()
    return {
        key: (known[key].text if is_known else content, digest)
        for key, content, digest, is_known in found
    }


# Separates a content's full-text fields (its title, then its body:
# embeddings_internal.fields_tsvector(), sql/59_hybrid.sql). The model reads it as a space:
# `title || chr(31) || body` embeds as
# `title || ' ' || body` (a tokenizer drops a control character, joining the words around it).
FIELD_SEPARATOR = "\x1f"


def _apply_loaded(row: Row, found: dict[str, tuple[str | None, str | None]]) -> None:
    if row.key not in found:
        row.state = RowState.GONE
        return
    content, row.digest = found[row.key]
    if content is not None and FIELD_SEPARATOR in content:
        content = content.replace(FIELD_SEPARATOR, " ")  # the same length: chunk offsets hold
    row.content = content
    row.state = RowState.READY if row.content and row.content.strip() else RowState.BLANK


# --- embed --------------------------------------------------------------------------------------
def embed(embedders: LoadedModels, batch: Batch) -> None:
    """Embeds every loaded row with its target's model (and during a model change with the new
    one too: worker/process/changes.py). A model that cannot be loaded, or whose dimensions do
    not fit the column, defers the target; a text the model fails on fails only its own row (the
    batch is split until the culprit is alone)."""
    faults.reached("embed")
    for target, rows in batch.by_target(RowState.READY).items():
        started = time.perf_counter()
        try:
            tokens = stores.of(target).embed(embedders, batch, target, rows)
        except exceptions.ProviderError as exc:
            # A remote model's provider could not embed any of the target's rows: they wait,
            # spending no attempt, for as long as the provider said (worker/pipeline/remote.py).
            batch.deferred[target.id] = f"{target.name}: {exc}"
            if exc.retry_after is not None:
                batch.defer_seconds[target.id] = exc.retry_after
            continue
        if tokens is None:
            continue  # deferred
        stats = batch.stats[target.id]
        stats.tokens += tokens
        stats.embed_ms += (time.perf_counter() - started) * 1000
        metrics.TOKENS.labels(target.model).inc(tokens)
    total_ms = sum(s.embed_ms for s in batch.stats.values())
    metrics.STAGE_SECONDS.labels("embed").observe(total_ms / 1000)


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
            "blocked=%d outdated=%d tokens=%d load_ms=%.1f embed_ms=%.1f write_ms=%.1f",
            names[target_id],
            stats.jobs,
            sum(states.values()),
            states["written"],
            states["cleared"] + states["blank"],
            states["gone"],
            states["stale"],
            states["failed"],
            states["blocked"],
            # (read under a definition of the target that changed since: handed back, redone)
            states["outdated"],
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
                "blocked": states["blocked"],
                "outdated": states["outdated"],
                "tokens": stats.tokens,
                "load_ms": round(batch.load_ms, 1),
                "embed_ms": round(stats.embed_ms, 1),
                "write_ms": round(batch.write_ms, 1),
            },
        )
    chunk_writing.log_pieces(batch)  # long documents: each piece written, how far the document is
    for row in batch.rows.values():
        if row.state is RowState.FAILED:
            _log_failed(row)
    for job in batch.jobs:
        if job.error:
            logger.warning("job %d dead-lettered: %s", job.msg_id, job.error)
        if job.retyped_keys and job.target is not None:
            logger.info(
                "target=%s: job %d had %d key(s) queued before the key was retyped, not of its"
                " type now (%s): acknowledged; the retype's backfill queues their rows again",
                job.target.name,
                job.msg_id,
                len(job.retyped_keys),
                job.retyped_keys[0][1],
            )


def _log_failed(row: Row) -> None:
    """A failed row: what failed, which attempt it was, and what happens next (another attempt,
    or none: the row went to embeddings.failures)."""
    fate = row.fate
    if fate is None:  # no job settled it (its target was deferred): nothing more to say
        logger.warning("row failed target=%s key=%s: %s", row.target.name, row.key, row.error)
    elif fate.retry_in is not None:
        logger.warning(
            "row failed target=%s key=%s attempt=%d/%d, retried in %d s: %s",
            row.target.name,
            row.key,
            fate.attempt,
            fate.of,
            fate.retry_in,
            row.error,
        )
    else:
        logger.error(
            "row failed target=%s key=%s attempt=%d/%d, the last: dead-lettered into "
            "embeddings.failures (`embed-worker failures` lists it, `failures --retry` queues it "
            "again): %s",
            row.target.name,
            row.key,
            fate.attempt,
            fate.of,
            row.error,
        )

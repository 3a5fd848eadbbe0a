"""The write stage: vectors stored, blank rows cleared and every job of a batch settled, in one
short transaction (exactly-once effect per job).

What the transaction does to each row is collected in a WriteOutcome and applied to the rows
only once COMMIT succeeded: a transaction that rolls back (a connection lost at COMMIT included)
leaves the batch as it was read, and writing it again redoes everything. Each target's
registration is locked for the transaction and its definition version compared with the one the
batch was read under; a redefined target's jobs are handed back, not acknowledged.

No statement waits without bound (worker/pipeline/bounds.py): a target whose table or
registration another session holds past the lock timeout, or whose write waits on a lock, has its
rows BLOCKED (a later batch writes them) and the rest of the batch commits; a row store's rows
held by others are skipped alone. The table owner's code that fires on the write (its triggers)
runs under a statement timeout; past it, the rows are written one at a time, and the first one
that runs past it alone fails.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg

from worker import conninfo, db, metrics, queries
from worker.config import Settings
from worker.pipeline import bounds, deferrals, faults, fingerprints, provenance, stores
from worker.pipeline import jobs as jobqueue
from worker.pipeline.batch import DEFER_SECONDS, Batch, Row, RowState
from worker.pipeline.settlement import Settlement, WriteOutcome, settle
from worker.pipeline.stores.base import Store
from worker.target import Target

logger = logging.getLogger(__name__)


def write(
    conn: db.Connection,
    queue: jobqueue.Queue,
    batch: Batch,
    settings: Settings,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Settlement:
    """Stores vectors, clears blank rows and settles every job, in one transaction.

    The rows' states are those of before the write until the transaction has committed: what
    the write did is collected in a WriteOutcome and applied to the rows only after COMMIT. A
    connection lost at any point of the transaction (COMMIT included) leaves the batch as it was
    read, so writing it again on a new connection redoes everything."""
    started = time.perf_counter()
    outcome = WriteOutcome()
    with (
        db.translated(),
        conn.transaction(),
        db.bounded(conn, bounds.owner_code_ms(batch.limits.owner_code_seconds)),
    ):
        # (rows held up at their load have nothing to lock or write)
        groups = {
            target: rows
            for target, rows in batch.by_target().items()
            if any(r.state is not RowState.BLOCKED for r in rows)
        }
        outcome.outdated, locked = _lock_targets(conn, groups)
        redefined = _redefined_deferred(conn, batch)
        outcome.outdated |= redefined
        outcome.record(
            {k: RowState.OUTDATED for k, r in batch.rows.items() if r.target.id in redefined}
        )
        for target, rows in groups.items():
            if target.id in outcome.outdated:
                outcome.record({(target.id, r.key): RowState.OUTDATED for r in rows})
            elif target.id in locked:
                outcome.block(rows)
            elif (
                refused := provenance.claim_target(conn, target, rows, batch.producers)
            ) is not None:
                outcome.deferred[target.id] = refused  # another model's vectors are there
            else:
                _write_target(conn, target, rows, outcome, batch)
        faults.reached("after_vectors")
        settlement = settle(batch, settings, now(), outcome)
        queue.delete(conn, settlement.delete)
        queue.archive(conn, settlement.archive)
        queue.retry(conn, settlement.retry, settlement.errors)
        # Deferred jobs are marked held for their target (worker/process/held.py).
        target_of = {job.msg_id: job.target.id for job in batch.jobs if job.target is not None}
        queue.defer(conn, {m: target_of.get(m) for m in settlement.defer}, DEFER_SECONDS)
        for delay in sorted(set(settlement.defer_for.values())):
            held = {m: target_of.get(m) for m, d in settlement.defer_for.items() if d == delay}
            queue.defer(conn, held, delay)
        queue.defer(conn, {m: target_of.get(m) for m in settlement.release}, 0)
        queue.send(conn, settlement.resend)
        queue.send_held(conn, settlement.hold)
        jobqueue.record_failures(conn, queue.home, settlement.dead)
        # Deferral reasons for status; dead letters of rows now written or cleared resolved.
        deferred = {**batch.deferred, **outcome.deferred}
        noted = dataclasses.replace(
            batch, deferred={t: why for t, why in deferred.items() if t not in outcome.outdated}
        )
        deferrals.record(conn, noted, outcome.state)
        working = time.monotonic() - batch.read_at
        for target_id, count in outcome.written_per_target().items():
            conn.execute(
                queries.compose("record_throughput"),
                {"target_id": target_id, "rows": count, "seconds": working},
            )
        faults.reached("before_commit")
    outcome.apply(batch)  # committed: now the rows may say what happened to them
    for row_key, fate in settlement.fates.items():
        batch.rows[row_key].fate = fate
    batch.write_ms = (time.perf_counter() - started) * 1000
    metrics.STAGE_SECONDS.labels("write").observe(batch.write_ms / 1000)
    _count(batch, settlement)
    return settlement


# What embeddings_internal.lock_target() returns when another session held the table or registration
# past the lock timeout (sql/42_definitions.sql).
HELD = -1


def _redefined_deferred(conn: db.Connection, batch: Batch) -> set[int]:
    """The targets the batch deferred whose definition changed since it was read. A deferral
    is decided at the read (a content column of a type the worker refuses, say); a worker busy
    with other rows may write the batch long after, and an ALTER meanwhile may have mended what
    the deferral was for: their jobs are handed back to be redone at once, not held for a
    minute for a reason gone (nor is the reason recorded for status). Not locked, as written
    targets are: nothing of theirs is written, and a redefinition after this read is the
    keeper's to see (worker/process/held.py)."""
    if not batch.deferred:
        return set()
    read = {j.target.id: j.target.version for j in batch.jobs if j.target is not None}
    with db.translated():
        versions = dict(conn.execute(queries.compose("target_versions")).fetchall())
    return {t for t in batch.deferred if t in read and versions.get(t) != read[t]}


def _lock_targets(
    conn: db.Connection, groups: dict[Target, list[Row]]
) -> tuple[set[int], set[int]]:
    """Locks the table and then the registration of every target of the batch (in id order:
    two writers never wait for each other crosswise; table first, as ALTER TABLE does). Returns
    the targets whose definition version is no longer the one the batch was read under, and
    those another session held past the lock timeout (nothing of them locked: their rows wait).
    The locks hold until COMMIT, so a concurrent watch() or rename waits for this write, and a
    write that starts after either sees its new version."""
    outdated, held = set(), set()
    for target in sorted(groups, key=lambda t: t.id):
        row = conn.execute(queries.compose("lock_target"), {"target_id": target.id}).fetchone()
        if row is not None and row[0] == HELD:
            held.add(target.id)
            logger.warning(
                "target=%s: its table or registration is locked by another session: its rows"
                " wait for a later batch",
                target.name,
            )
        elif row is None or row[0] != target.version:
            outdated.add(target.id)
    return outdated, held


def _write_target(
    conn: db.Connection,
    target: Target,
    rows: list[Row],
    outcome: WriteOutcome,
    batch: Batch,
) -> None:
    store = stores.of(target)
    embedded = [r for r in rows if r.state is RowState.EMBEDDED]
    blank = [r for r in rows if r.state is RowState.BLANK]
    failing = [r for r in rows if r.state is RowState.FAILED and not r.ran_over]
    if ("clear", target.id) not in batch.ignored_bound:  # (its content function ran on)
        with db.bounded(
            conn,
            bounds.owner_code_ms(batch.limits.owner_code_seconds, failing),
            ("clear", target.id, None),
        ):
            fingerprints.clear_failing(conn, target, failing)
    # What rows gone (deleted since queued) left in a side or chunk table goes too; so does
    # what rows that fail for good (dead-lettered by this transaction) hold of an older content.
    gone = [r for r in rows if r.state is RowState.GONE] if store.follows_deletes else []
    dropped = [r for r in failing if r.permanent]
    if not embedded and not blank and not gone and not dropped:
        return
    rows = embedded + blank + gone + dropped
    owner_code_seconds = batch.limits.owner_code_seconds
    if ("write", target.id) in batch.ignored_bound:
        bounds.OVERRUNS.note(conn, target.id)  # (the watchdog ended its session)
    # (its triggers ran past their bound lately: a row at a time at once)
    if not bounds.OVERRUNS.recent(conn, target.id):
        bound = bounds.owner_code_ms(owner_code_seconds, rows)
        try:
            with db.bounded(conn, bound, ("write", target.id, None)):
                # A savepoint: a failure here fails only this target's rows.
                with conn.transaction():
                    stored = store.write(conn, target, embedded, blank)
                    if gone:
                        store.forget(conn, target, gone)
                    stored.update(store.drop(conn, target, dropped))
                outcome.record({(target.id, key): state for key, state in stored.items()})
                fingerprints.record_written(conn, target, embedded, stored)  # (key checks)
            return
        except psycopg.Error as exc:
            if db.is_connection_error(exc):
                raise
            if db.unavailable(exc):
                # The target's functions cannot write as its owner now (sql/32_access.sql):
                # its jobs wait, no row fails.
                outcome.deferred[target.id] = f"{target.name}: {conninfo.redact(str(exc).strip())}"
                return
            if exc.sqlstate == db.LOCK_NOT_AVAILABLE:
                # Its table, side or chunk table, or a document another worker is writing,
                # held past the lock timeout: every row would wait as long again.
                outcome.block(rows)
                return
            if exc.sqlstate == db.QUERY_CANCELED:
                bounds.OVERRUNS.note(conn, target.id)
    # Something in the table refused the write (a trigger, a constraint), or its owner's code
    # ran past its bound: one row at a time, to fail only the rows it refuses.
    _write_one_by_one(
        conn,
        store,
        target,
        rows,
        outcome=outcome,
        owner_code_seconds=owner_code_seconds,
        ran_over=batch.ignored_bound.get(("write", target.id)),
    )


def _write_one_by_one(
    conn: db.Connection,
    store: Store,
    target: Target,
    rows: list[Row],
    *,
    outcome: WriteOutcome,
    owner_code_seconds: float,
    ran_over: str | None = None,
) -> None:
    """Writes `rows` one at a time, each where its state before this write says (a vector, a
    clear, a row gone, a row failed for good: the rolled-back savepoint changed nothing),
    failing only those refused (one failed for good stays failed, its error saying so).
    A row held up by a lock, or whose owner code runs past its bound alone (it fails: the code
    is the row's), leaves the rows after it for a later batch: each would wait as long. So does
    `ran_over`, the row whose triggers caught the cancel of their bound in an earlier try of
    this write (worker/process/watchdog.py)."""
    for i, row in enumerate(rows):
        if row.key == ran_over:
            outcome.fail(row, bounds.ignored_bound_error("storing the embedding"))
            outcome.block(rows[i + 1 :])
            return
        bound = bounds.owner_code_ms(owner_code_seconds, [row])
        try:
            with db.bounded(conn, bound, ("write", target.id, row.key)):
                with conn.transaction():
                    stored = {}
                    if row.state is RowState.EMBEDDED:
                        stored = store.write(conn, target, [row], [])
                    elif row.state is RowState.BLANK:
                        stored = store.write(conn, target, [], [row])
                    elif row.state is RowState.FAILED:
                        stored = store.drop(conn, target, [row])
                    else:
                        store.forget(conn, target, [row])
                outcome.record({(target.id, key): state for key, state in stored.items()})
                fingerprints.record_written(conn, target, [row], stored)
        except psycopg.Error as exc:
            if db.is_connection_error(exc):
                raise
            if exc.sqlstate == db.LOCK_NOT_AVAILABLE:
                outcome.block(rows[i:])
                return
            # (a row failed for good keeps its own error first: its old vectors stayed)
            said = f"{row.error}; removing its old vectors" if row.state is RowState.FAILED else ""
            if exc.sqlstate == db.QUERY_CANCELED:
                bounds.OVERRUNS.note(conn, target.id)
                outcome.fail(row, bounds.owner_code_error(said or "storing the embedding", bound))
                outcome.block(rows[i + 1 :])
                return
            error = conninfo.redact(str(exc).strip())
            outcome.fail(row, f"{said or 'storing the embedding'} failed: {error}")


def _count(batch: Batch, settlement: Settlement) -> None:
    """Metrics of a committed batch. Rows of deferred targets are not counted: their jobs went
    back to the queue as they were (metrics.row_outcome maps the other states)."""
    metrics.JOBS.labels("done").inc(len(settlement.done))
    metrics.JOBS.labels("retried").inc(len(settlement.retry) + len(settlement.resend))
    metrics.JOBS.labels("dead").inc(len(settlement.dead))
    deferred = len(settlement.defer) + len(settlement.defer_for) + len(settlement.hold)
    metrics.JOBS.labels("deferred").inc(deferred)
    metrics.JOBS.labels("released").inc(len(settlement.release))
    targets = {job.target.id: job.target.name for job in batch.jobs if job.target is not None}
    for target_id, name in targets.items():
        # (a model change's own rows held, the application's written: deferred all the same)
        metrics.target_deferred(name, target_id in batch.deferred or target_id in batch.change_held)
    for row in batch.rows.values():
        if row.target.id not in batch.deferred:
            metrics.count_row(row.target.name, row.state.value)
    for latency in settlement.latencies:
        metrics.JOB_LATENCY.observe(latency)

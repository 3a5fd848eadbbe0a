"""How each job of a batch is settled (deleted, retried, re-sent in part, deferred, released,
dead-lettered), decided from its rows' outcomes without a database: `settle()`. The write
transaction (worker/pipeline/write.py) collects what it did to each row in a WriteOutcome, settles
the batch over it, and applies the outcome to the rows only once COMMIT succeeded."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worker.config import Settings
from worker.pipeline import bounds, messages
from worker.pipeline import jobs as jobqueue
from worker.pipeline.batch import Batch, Fate, Row, RowState
from worker.target import Target

RowKey = tuple[int, str]  # (target id, canonical key)


@dataclass
class Settlement:
    """What happens to each job of a batch, decided before the write transaction."""

    delete: list[int] = field(default_factory=list)
    archive: list[int] = field(default_factory=list)
    retry: dict[int, int] = field(default_factory=dict)  # msg_id -> delay
    errors: dict[int, str] = field(default_factory=dict)  # msg_id -> its last error (retries)
    defer: list[int] = field(default_factory=list)
    defer_for: dict[int, int] = field(default_factory=dict)  # msg_id -> its own delay (remote)
    release: list[int] = field(default_factory=list)  # target redefined: redo at once
    resend: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    # a model change's own rows its new model cannot serve now (Batch.change_held): re-sent
    # held for their target, as `defer` is, so that a worker that can serve them takes them
    hold: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    dead: list[jobqueue.DeadLetter] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    # Jobs finished with at least one of their rows settled (stored, cleared, gone, stale):
    # deleted, or archived once their failed rows were dead-lettered (embed_worker_jobs_total's
    # `done`, which EmbedWorkerStalled watches; `delete` alone missed the latter).
    done: list[int] = field(default_factory=list)
    fates: dict[RowKey, Fate] = field(default_factory=dict)  # failed rows: retried, or dead
    resent: set[RowKey] = field(default_factory=set)  # rows in `resend` (each once a batch)
    # rows some job asked both vectors of, not only a model change's new one (once a batch,
    # when a changing target's row is re-sent)
    asked_live: set[RowKey] | None = None


@dataclass
class WriteOutcome:
    """What a write transaction did to each row (its new state, its error), kept apart from the
    rows until the transaction commits."""

    states: dict[RowKey, RowState] = field(default_factory=dict)
    errors: dict[RowKey, str] = field(default_factory=dict)
    outdated: set[int] = field(default_factory=set)  # targets redefined since the batch was read
    # targets whose columns hold vectors of another producer (provenance): deferred, not written
    deferred: dict[int, str] = field(default_factory=dict)

    def state(self, row: Row) -> RowState:
        return self.states.get((row.target.id, row.key), row.state)

    def error(self, row: Row) -> str | None:
        return self.errors.get((row.target.id, row.key), row.error)

    def record(self, states: dict[RowKey, RowState]) -> None:
        self.states.update(states)

    def fail(self, row: Row, error: str) -> None:
        self.states[(row.target.id, row.key)] = RowState.FAILED
        self.errors[(row.target.id, row.key)] = error

    def block(self, rows: list[Row]) -> None:
        """`rows` wait for a later batch (a lock held them up): all but those postponed."""
        for row in rows:
            if row.state is not RowState.POSTPONED:
                self.states[(row.target.id, row.key)] = RowState.BLOCKED

    def written_per_target(self) -> dict[int, int]:
        counts: dict[int, int] = defaultdict(int)
        for (target_id, _), state in self.states.items():
            if state is RowState.WRITTEN:
                counts[target_id] += 1
        return counts

    def apply(self, batch: Batch) -> None:
        batch.deferred.update(self.deferred)
        for target_id in self.outdated:  # handed back, not deferred (write._redefined_deferred)
            batch.deferred.pop(target_id, None)
            batch.defer_seconds.pop(target_id, None)
        for key, state in self.states.items():
            row = batch.rows[key]
            row.state = state
            if key in self.errors:
                row.error = self.errors[key]


def settle(
    batch: Batch, settings: Settings, now: datetime, outcome: WriteOutcome | None = None
) -> Settlement:
    """Decides each job's fate from its rows' outcomes (pure; no database): the rows' states,
    overlaid with what the write transaction in progress did to them (`outcome`)."""
    out = Settlement()
    outcome = outcome or WriteOutcome()
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
        if target.id in outcome.outdated:
            # not done: redone under the new definition (deferred when read too: what the
            # deferral was for may be mended by it)
            out.release.append(job.msg_id)
            continue
        if target.id in batch.deferred or target.id in outcome.deferred:
            if target.id in batch.defer_seconds and target.id not in outcome.deferred:
                out.defer_for[job.msg_id] = math.ceil(batch.defer_seconds[target.id])
            else:
                out.defer.append(job.msg_id)
            continue
        failed = [
            (key, outcome.error(row) or "failed")
            for key in job.keys
            if outcome.state(row := batch.rows[(target.id, key)]) is RowState.FAILED
        ]
        _resend_postponed(out, batch, job, target, outcome)
        if not failed and not job.bad_keys:
            out.delete.append(job.msg_id)
            out.done.append(job.msg_id)
            out.latencies.append((now - job.enqueued_at).total_seconds())
            continue
        exhausted = job.attempts >= settings.max_attempts
        # A row that failed for good (a document over its ceiling) is dead at once.
        final = {k for k, _ in failed if exhausted or batch.rows[(target.id, k)].permanent}
        dead = [(job.raw_keys[k], job.single_key_message(k), e) for k, e in failed if k in final]
        # An invalid key can never succeed: dead at once.
        dead += [
            (
                raw,
                {"target": target.id, "keys": [raw]} if not job.supabase_shape else job.message,
                e,
            )
            for raw, e in job.bad_keys
        ]
        retry_keys = [k for k, _ in failed if k not in final]
        for raw, message, error in dead:
            out.dead.append(
                jobqueue.DeadLetter(target, target.name, raw, message, job.attempts, error)
            )
        delay = jobqueue.backoff_seconds(
            job.attempts, settings.backoff_base_seconds, settings.backoff_max_seconds
        )
        for key, _ in failed:  # for the log: the last attempt must not read like a retry
            fate = Fate(job.attempts, settings.max_attempts, None if key in final else delay)
            out.fates[(target.id, key)] = fate
        if retry_keys and len(retry_keys) == len(job.keys) and not job.bad_keys:
            out.retry[job.msg_id] = delay  # the whole job failed: back it off as it is
            out.errors[job.msg_id] = failed[0][1]
            continue
        if retry_keys:
            # Part of the job failed: its other rows are done. Re-send only the failed keys,
            # carrying the attempts spent so far and the error (for `status`).
            out.resend.append(
                (
                    {
                        "target": target.id,
                        "keys": [job.raw_keys[k] for k in retry_keys],
                        "attempts": job.attempts,
                        "last_error": messages.clip_error(failed[0][1]),
                    },
                    delay,
                )
            )
        (out.archive if dead else out.delete).append(job.msg_id)
        if len(failed) < len(job.keys):
            out.done.append(job.msg_id)  # (its other rows are settled)
    return out


def _resend_postponed(
    out: Settlement, batch: Batch, job: messages.Job, target: Target, outcome: WriteOutcome
) -> None:
    """Rows a store postponed (a chunk store's documents past the batch's chunk budget, a remote
    model's rows its provider could not serve) go back to the queue in a message of their own,
    with the attempts spent before this one; so do long documents with pieces still to go
    (worker/pipeline/pieces.py), marked as going on from their recorded progress, and rows a
    lock held up, after a delay that grows with each time it did (worker/pipeline/bounds.py).
    A model change's own row goes back as the change's (`shadow`), held for its target when
    the change's new model could not serve it (`hold`). A row goes back once,
    however many of the batch's jobs asked for it: two messages of one
    long document would be two chains of pieces, each taking the other's progress for another
    writer's."""
    for state in (RowState.POSTPONED, RowState.PIECE, RowState.BLOCKED):
        postponed = [
            row
            for key in job.keys
            if outcome.state(row := batch.rows[(target.id, key)]) is state
            and (target.id, key) not in out.resent
        ]
        if not postponed:
            continue
        out.resent.update((target.id, row.key) for row in postponed)
        # A model change's own rows (no job of the batch asked for more than their new vector)
        # stay the change's: re-sent as plain jobs, they were embedded with the old model
        # again, the vector they have rewritten.
        if target.in_change and out.asked_live is None:
            out.asked_live = _asked_live(batch)
        chains: dict[tuple[int | None, bool], list[Row]] = defaultdict(list)
        for row in postponed:
            shadow = target.in_change and (target.id, row.key) not in (out.asked_live or ())
            chains[(_chunks_done(row, state, job), shadow)].append(row)
        for (done, shadow), rows in chains.items():
            message: dict[str, Any] = {
                "target": target.id,
                "keys": [job.raw_keys[row.key] for row in rows],
                "attempts": job.attempts - 1,
            }
            if shadow:
                message["shadow"] = True
            if done is not None:
                message["continued"] = True
                message["chunks_done"] = done
            # (remote models: visible again when their provider said it is worth asking)
            wait = max((row.retry_after or 0 for row in rows), default=0)
            if state is RowState.BLOCKED:
                message["blocked"] = job.blocked + 1
                wait = bounds.blocked_delay(job.blocked)
            held = shadow and state is RowState.POSTPONED and target.id in batch.change_held
            (out.hold if held else out.resend).append((message, math.ceil(wait)))


def _asked_live(batch: Batch) -> set[tuple[int, str]]:
    """The rows some job of the batch asked both vectors for (not only a change's new one)."""
    return {
        (job.target.id, key)
        for job in batch.jobs
        if job.target is not None and not job.shadow
        for key in job.keys
    }


def _chunks_done(row: Row, state: RowState, job: messages.Job) -> int | None:
    """Where a long document's recorded progress ends for the job that goes on with it: after
    the piece just written; where the piece that could not be written expected it (another
    writer moved it on: worker/pipeline/chunks/writing.py); else where the job's own chain left
    it. None: no chain of pieces to go on with."""
    if state is RowState.PIECE and row.chunks is not None:
        return row.chunks.end
    if state is RowState.POSTPONED and row.chunks is not None and row.chunks.first_seq > 0:
        return row.chunks.first_seq
    return job.chunks_done


def _label(job: messages.Job) -> str:
    """The `target` of a job whose target is unknown: what its message names."""
    message = job.message if isinstance(job.message, dict) else {}
    schema, table = message.get("schema"), message.get("table")
    if isinstance(schema, str) and isinstance(table, str):
        column = str(message.get("embeddingColumn") or "embedding")  # as the parse defaults it
        return messages.qualified_name(schema, table, column)
    if "target" in message:
        return f"target {message['target']}"
    return "unknown"

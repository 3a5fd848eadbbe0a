"""Model changes in the worker (the database side is sql/44_changes.sql).

While a target is changed to another model, its rows get both vectors: the old model's in the
target's column (searchable now) and the new model's in the shadow column. Jobs of the change
itself ("shadow": only the new vector is missing) embed with the new model only. When every row
has its new vector, embeddings.complete_changes() swaps the columns in one short transaction;
the worker calls it from its keeper (at most every CHECK_SECONDS) and when `run --once` drains.
A swap that finds its table held (a long transaction) backs off: each call asks for the lock in
short attempts only (sql/41_locks.sql), and the next call comes after a growing, jittered pause,
so the application's statements never queue behind the swap for long.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from worker import db, exceptions, metrics, queries
from worker.models.loaded import LoadedModels
from worker.pipeline import provenance
from worker.pipeline.batch import Batch, Row, RowState
from worker.pipeline.targets import Target, TargetRegistry

logger = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
BUSY_BACKOFF_MAX_SECONDS = 30.0  # the longest pause after swaps that found the table held

Embed = Callable[[Any, list[Row], str], int]  # (model, rows, Row attribute) -> tokens


def embed(
    embedders: LoadedModels, batch: Batch, target: Target, rows: list[Row], embed_rows: Embed
) -> int | None:
    """Embeds the rows of a plain target: with its model (rows that need it), and during a
    change with the new model too. Returns the tokens, or None when the target is deferred (the
    reason in batch.deferred). The new model's tokens are counted apart (its own metric label,
    the batch's stats); the returned count is the target model's."""
    try:
        shadow_model = _shadow_model(embedders, target, rows)
        model = _primary_model(embedders, target, rows)
    except exceptions.ModelError as exc:
        batch.deferred[target.id] = str(exc)
        return None
    problem = (target.problem(model.dim) if model else None) or _shadow_problem(
        target, shadow_model
    )
    if problem:
        batch.deferred[target.id] = problem
        return None
    primary = [r for r in rows if not r.shadow_only]
    tokens = embed_rows(model, primary, "vector") if model else 0
    if shadow_model is not None:
        both = [r for r in rows if r.state is RowState.EMBEDDED or r.shadow_only]
        shadow_tokens = embed_rows(shadow_model, both, "shadow_vector")
        metrics.TOKENS.labels(target.shadow_model).inc(shadow_tokens)
        batch.stats[target.id].tokens += shadow_tokens
    batch.producers[target.id] = (
        provenance.producer(model) if model is not None and primary else None,
        provenance.producer(shadow_model) if shadow_model is not None else None,
    )
    return tokens


def _shadow_model(embedders: LoadedModels, target: Target, rows: list[Row]) -> Any:
    """The new model of a change in progress (None without one). When it cannot be loaded, the
    application's rows are still served with the target's model (their new vectors are left
    empty: the change queues them again before it completes); the change's own jobs wait."""
    if target.shadow_model is None:
        return None
    try:
        return embedders.get(target.shadow_model)
    except exceptions.ModelError:
        if any(row.shadow_only for row in rows):
            raise
        return None


def _primary_model(embedders: LoadedModels, target: Target, rows: list[Row]) -> Any:
    """The target's model; during a change, None when it cannot be loaded: then every row gets
    only the new model's vector (the change completes, and the swap replaces the column that
    the old model can no longer maintain)."""
    try:
        return embedders.get(target.model)
    except exceptions.ModelError:
        if not target.in_change:
            raise
        for row in rows:
            row.shadow_only = True
        return None


def _shadow_problem(target: Target, shadow_model: Any) -> str | None:
    if shadow_model is None or shadow_model.dim == target.shadow_dims:
        return None
    return (
        f"{target.name}: the shadow column {target.shadow_column} of the change to "
        f"{target.shadow_model!r} has {target.shadow_dims} dimensions, the model produces "
        f"{shadow_model.dim}"
    )


class Completer:
    """Calls embeddings.complete_changes() when some target is being changed."""

    def __init__(self) -> None:
        self._next = float("-inf")
        self._busy = 0  # calls in a row that found a table held

    def run(self, conn: db.Connection, registry: TargetRegistry, *, force: bool) -> bool:
        """Completes the changes that are complete (at most every CHECK_SECONDS, less often
        while a table is held, unless `force`). True when one completed or re-queued rows
        (there is work again)."""
        if not any(t.in_change for t in registry.snapshot().values()):
            return False
        now = time.monotonic()
        if not force and now < self._next:
            return False
        with db.translated():
            results = conn.execute(queries.compose("complete_changes")).fetchall()
        self._next = now + self._pause(any(r.startswith("table busy") for _, r in results))
        progressed = False
        for target_id, result in results:
            if result == "done":
                logger.info("model change of target %d completed: columns swapped", target_id)
                registry.invalidate()
                progressed = True
            elif result.endswith("the new vector: queued"):
                logger.info("model change of target %d: %s", target_id, result)
                progressed = True
            elif result.startswith("could not complete"):
                logger.warning("model change of target %d: %s", target_id, result)
            elif result.startswith("table busy") and self._busy in (1, 5, 20):
                logger.warning(
                    "model change of target %d: the swap waits for its table lock (%d attempts):"
                    " a long transaction holds the table (embed-worker status names it)",
                    target_id,
                    self._busy,
                )
        return progressed

    def _pause(self, busy: bool) -> float:
        """Seconds until the next call: CHECK_SECONDS, or after calls that found a table held,
        doubling up to BUSY_BACKOFF_MAX_SECONDS, jittered by +-50% (workers do not retry in
        step)."""
        self._busy = self._busy + 1 if busy else 0
        if not self._busy:
            return CHECK_SECONDS
        base = min(CHECK_SECONDS * 2 ** (self._busy - 1), BUSY_BACKOFF_MAX_SECONDS)
        return float(base * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not secrecy

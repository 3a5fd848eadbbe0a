"""A row or side store's rows embedded (embed_rows: a text the model fails on fails alone), and
during a model change (sql/44_changes.sql) both vectors.

While a target is changed to another model, its rows get both vectors: the old model's in the
target's column (searchable now) and the new model's in the shadow column. Jobs of the change
itself ("shadow": only the new vector is missing) embed with the new model only. The swap that
ends the change is the worker's keeper's (worker/process/changes.py).
"""

from __future__ import annotations

from typing import Any

from worker import exceptions, metrics
from worker.models.loaded import LoadedModels
from worker.models.remote.client import RemoteModel
from worker.pipeline import provenance, remote
from worker.pipeline.batch import Batch, Row, RowState
from worker.target import Target


def embed(embedders: LoadedModels, batch: Batch, target: Target, rows: list[Row]) -> int | None:
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


def embed_rows(model: Any, rows: list[Row], attribute: str = "vector") -> int:
    """Embeds `rows` into their `attribute` (vector, or shadow_vector during a model change); a
    text the model fails on fails only its own row (the rows are split until the culprit is
    alone). Returns the tokens embedded."""
    if not rows:
        return 0
    if isinstance(model, RemoteModel):
        return remote.embed_rows(model, rows, attribute)
    try:
        result = model.embed_with_stats([row.content for row in rows])
    except Exception as exc:  # the model's failure on some input: find which
        if len(rows) == 1:
            rows[0].fail(f"embedding failed: {type(exc).__name__}: {exc}")
            return 0
        middle = len(rows) // 2
        return embed_rows(model, rows[:middle], attribute) + embed_rows(
            model, rows[middle:], attribute
        )
    for row, vector in zip(rows, result.vectors, strict=True):
        setattr(row, attribute, vector)
        row.state = RowState.EMBEDDED
    return int(result.tokens)

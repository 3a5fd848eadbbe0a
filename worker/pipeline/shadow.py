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
from worker.pipeline.batch import DEFER_SECONDS, Batch, Row, RowState
from worker.target import Target


def embed(embedders: LoadedModels, batch: Batch, target: Target, rows: list[Row]) -> int | None:
    """Embeds the rows of a plain target: with its model (rows that need it), and during a
    change with the new model too. Returns the tokens, or None when the target is deferred (the
    reason in batch.deferred). The new model's tokens are counted apart (its own metric label,
    the batch's stats); the returned count is the target model's.

    Whatever keeps the new model from serving (it cannot load, its dimensions do not fit the
    shadow column, its provider cannot answer now) holds only the change's part: the
    application's rows are embedded and written with the target's model all the same, their new
    vectors left empty (the change queues them again before it completes), and only the
    change's own rows wait (docs/model-changes.md)."""
    try:
        model = _primary_model(embedders, target, rows)
    except exceptions.ModelError as exc:
        batch.deferred[target.id] = str(exc)
        return None
    problem = target.problem(model.dim) if model else None
    if problem:
        batch.deferred[target.id] = problem
        return None
    shadow_model, change_problem = _shadow_model(embedders, target)
    if change_problem:
        if _change_waits(batch, target, rows, change_problem, None):
            return None
        shadow_model = None
    primary = [r for r in rows if not r.shadow_only]
    tokens = embed_rows(model, primary, "vector") if model else 0
    if shadow_model is not None:
        shadow_tokens = _embed_new(batch, target, shadow_model, rows)
        metrics.TOKENS.labels(target.shadow_model).inc(shadow_tokens)
        batch.stats[target.id].tokens += shadow_tokens
    served = shadow_model is not None and any(r.shadow_vector is not None for r in rows)
    batch.producers[target.id] = (
        provenance.producer(model) if model is not None and primary else None,
        provenance.producer(shadow_model) if served else None,
    )
    return tokens


def _embed_new(batch: Batch, target: Target, model: Any, rows: list[Row]) -> int:
    """The new model's vectors of the rows the target's model embedded and of the change's own
    rows. A provider that cannot answer now holds only the change's rows, and a text the new
    model fails on fails only a change's row: the application's keep their vector (written;
    the new one left empty)."""
    live = [r for r in rows if r.state is RowState.EMBEDDED and not r.shadow_only]
    both = [r for r in rows if r.state is RowState.EMBEDDED or r.shadow_only]
    try:
        tokens = embed_rows(model, both, "shadow_vector")
    except exceptions.ProviderError as exc:  # (none of them answered: remote.embed_rows)
        if not live:
            raise  # the change's rows alone: the target waits (stages.embed says why)
        _change_waits(batch, target, rows, f"{target.name}: {exc}", exc.retry_after)
        return 0
    for row in live:
        # Its new vector could not be had now, or the new model fails on its text: the old
        # vector is written all the same (the application's row stays served). The change
        # queues the row again before it completes, where a failure is the change's own.
        if row.state in (RowState.POSTPONED, RowState.FAILED):
            row.state, row.error, row.retry_after = RowState.EMBEDDED, None, None
            row.permanent = False
    return tokens


def _change_waits(
    batch: Batch, target: Target, rows: list[Row], why: str, retry_after: float | None
) -> bool:
    """The new model cannot serve the change's rows (`why`): they wait, spending no attempt.
    When they are all the batch has of the target, the target is deferred, `why` shown in
    status (True); else they go back to the queue on their own, held for the target as a
    deferral's jobs are (a worker that can serve the change takes them at once) and `why`
    shown in status all the same, the rest written (False)."""
    if all(row.shadow_only for row in rows):
        batch.deferred[target.id] = why
        if retry_after is not None:
            batch.defer_seconds[target.id] = retry_after
        return True
    waiting = [row for row in rows if row.shadow_only and row.state is RowState.READY]
    for row in waiting:
        row.state, row.error = RowState.POSTPONED, why
        row.retry_after = DEFER_SECONDS if retry_after is None else retry_after
    if waiting:
        batch.change_held[target.id] = why
    return False


def _shadow_model(embedders: LoadedModels, target: Target) -> tuple[Any, str | None]:
    """The new model of a change in progress (None without one), or why it cannot serve the
    change: it cannot be loaded, or its dimensions do not fit the shadow column."""
    if target.shadow_model is None:
        return None, None
    try:
        model = embedders.get(target.shadow_model)
    except exceptions.ModelError as exc:
        return None, str(exc)
    return model, shadow_problem(target, model)


def _primary_model(embedders: LoadedModels, target: Target, rows: list[Row]) -> Any:
    """The target's model; during a change, None when it cannot be loaded: then every row gets
    only the new model's vector (the change completes, and the swap replaces the column that
    the old model can no longer maintain)."""
    try:
        return embedders.get(target.model)
    except exceptions.ModelError as exc:
        if not target.in_change or isinstance(exc, exceptions.ModelDownloading):
            raise  # (one that downloads is not one that cannot load: its rows wait for it)
        for row in rows:
            row.shadow_only = True
        return None


def shadow_problem(target: Target, shadow_model: Any) -> str | None:
    """Why the new model of `target`'s change cannot fill its shadow column: its vectors are of
    other dimensions (None when they fit, or when the model is not loaded)."""
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

"""The embed stage of a chunked target: only the chunks that changed are embedded, a group at a
time (worker/pipeline/chunks/__init__.py has the whole path)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from worker import exceptions
from worker.pipeline import provenance
from worker.pipeline.batch import Batch, Row, RowState
from worker.pipeline.pieces import DocumentChunks
from worker.target import Target

if TYPE_CHECKING:
    from worker.models.embedder import TextModel
    from worker.models.loaded import LoadedModels

# Chunks per embed call: bounds the tokenizer's encodings and the padded input tensors.
EMBED_GROUP = 256


def embed_target(
    embedders: LoadedModels, batch: Batch, target: Target, rows: list[Row]
) -> int | None:
    """The chunk store's embed stage: the chunks that changed, with the target's model (a
    chunked target's model change is in place: docs/models.md). Returns the tokens, or None
    when the target is deferred (the reason in batch.deferred)."""
    try:
        model = embedders.get(target.model)
    except exceptions.ModelError as exc:
        batch.deferred[target.id] = str(exc)
        return None
    problem = target.problem(model.dim)
    if problem:
        batch.deferred[target.id] = problem
        return None
    tokens = embed(model, rows)
    batch.producers[target.id] = (provenance.producer(model), None)
    return tokens


def embed(model: TextModel, rows: Sequence[Row]) -> int:
    """Embeds the new chunks of each document; returns the tokens embedded. A document whose
    chunks the model fails on fails alone."""
    kept = [r for r in rows if r.chunks is not None]
    tokens = 0
    pending: list[tuple[Row, int]] = [(row, i) for row in kept for i in _chunks_of(row).new]
    for start in range(0, len(pending), EMBED_GROUP):
        group = pending[start : start + EMBED_GROUP]
        tokens += _embed_group(model, group)
    for row in kept:
        if row.state is RowState.READY:
            row.state = RowState.EMBEDDED
    return tokens


def _embed_group(model: TextModel, group: list[tuple[Row, int]]) -> int:
    live = [(row, i) for row, i in group if row.state is RowState.READY]
    if not live:
        return 0
    try:
        result = model.embed_with_stats(
            [_chunks_of(row).chunks[i].embedding_input for row, i in live]
        )
    except exceptions.ProviderError:
        raise  # a remote model's provider, not the chunks: the target waits (stages.embed)
    except Exception as exc:  # the model's failure on some chunk: find whose
        documents = {id(row): row for row, _ in live}
        if len(documents) == 1:
            row = live[0][0]
            row.fail(f"embedding failed: {type(exc).__name__}: {exc}")
            return 0
        return sum(
            _embed_group(model, [(r, i) for r, i in live if r is row]) for row in documents.values()
        )
    for (row, i), vector in zip(live, result.vectors, strict=True):
        _chunks_of(row).vectors[i] = vector
    return int(result.tokens)


def _chunks_of(row: Row) -> DocumentChunks:
    assert row.chunks is not None, "prepare() split this document"
    return row.chunks

"""Chunked targets in the pipeline: split each document, embed only the chunks that changed,
write a document's chunks under the same stale-write guard as a row's vector.

The pipeline calls in at three points, one per stage (through worker/pipeline/stores/chunked.py):

  prepare (load stage, after the content is loaded)  splits each document with the model's
      tokenizer; looks up the vectors already stored for chunks with the same hash (text and
      model), which are then not embedded again; admits documents until the batch's chunk
      budget is spent and postpones the rest (they go back to the queue, no attempt counted).
  embed (embed stage)  embeds the new chunks, at most EMBED_GROUP at a time so that a batch of
      thousands of chunks never holds thousands of encodings at once; a document whose text the
      model fails on fails alone.
  store (write stage, inside the batch's write transaction)  locks the documents (advisory, per
      key); the target's chunk write then keeps only those whose content md5 is still the one
      loaded, upserts their chunks (unchanged chunks at their position are not rewritten) and
      deletes the vanished ones. It returns each row's outcome; the caller applies it as it
      applies its own.

The chunk table is read and written only through the target's functions, which run as the table's
owner (sql/32_access.sql): the worker role holds no privilege on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from pgvector import HalfVector

from worker import db, exceptions
from worker.pipeline.batch import Batch, Row, RowState
from worker.pipeline.chunking import Chunk, Splitter
from worker.pipeline.targets import Target

if TYPE_CHECKING:
    from worker.models.embedder import TextModel
    from worker.models.loaded import LoadedModels

# Per batch, at most this many tokens of new chunks are embedded and this many chunks written
# (in one call of the chunk write): what a batch of 128 rows of 512 tokens embeds, and a write
# transaction of a few seconds at most (HNSW inserts dominate). The first document of a batch is
# always admitted.
MAX_NEW_TOKENS = 65_536
MAX_CHUNKS = 4_096
# Chunks per embed call: bounds the tokenizer's encodings and the padded input tensors.
EMBED_GROUP = 256

FloatVector = npt.NDArray[np.float32]


@dataclass
class DocumentChunks:
    """A document's chunks, with a vector for each once embedded or found stored."""

    chunks: list[Chunk]
    hashes: list[str]
    vectors: list[FloatVector | None] = field(default_factory=list)

    @property
    def new(self) -> list[int]:
        """Indexes of the chunks that still need embedding."""
        return [i for i, v in enumerate(self.vectors) if v is None]


# --- load stage ---------------------------------------------------------------------------------
def prepare(
    conn: db.Connection, batch: Batch, target: Target, rows: list[Row], models: LoadedModels
) -> None:
    """Splits the loaded documents of a chunked target (with the tokenizer of the target's
    model, read once per process) and finds their reusable vectors."""
    assert target.chunk_tokens is not None
    try:
        tokenizer = models.tokenizer(target.model)
    except exceptions.ModelError as exc:
        batch.deferred[target.id] = str(exc)
        return
    splitter = Splitter(tokenizer, target.chunk_tokens, target.chunk_overlap or 0)
    admitted = _split_within_budget(splitter, target, rows)
    try:
        _find_stored_vectors(conn, target, admitted)
    except exceptions.TargetUnavailable as exc:
        batch.deferred[target.id] = f"{target.name}: {exc}"


def _split_within_budget(splitter: Splitter, target: Target, rows: list[Row]) -> list[Row]:
    admitted: list[Row] = []
    chunks_total = 0
    for row in rows:
        if admitted and chunks_total >= MAX_CHUNKS:
            row.state = RowState.POSTPONED
            continue
        assert row.content is not None
        try:
            chunks = splitter.split(row.content)
        except Exception as exc:  # the tokenizer's failure on this text only
            row.fail(f"splitting failed: {type(exc).__name__}: {exc}")
            continue
        if not chunks:  # nothing the tokenizer reads (control characters only): as blank
            row.state = RowState.BLANK
            continue
        if admitted and chunks_total + len(chunks) > MAX_CHUNKS:
            row.state = RowState.POSTPONED
            continue
        row.chunks = DocumentChunks(chunks, [c.digest(target.model) for c in chunks])
        row.chunks.vectors = [None] * len(chunks)
        chunks_total += len(chunks)
        admitted.append(row)
    return admitted


def _find_stored_vectors(conn: db.Connection, target: Target, rows: list[Row]) -> None:
    keys = [r.key for r in rows for _ in _chunks_of(r).hashes]
    hashes = [h for r in rows for h in _chunks_of(r).hashes]
    if not keys:
        return
    with db.translated():
        found = conn.execute(
            target.query("load_reusable_chunks"), {**target.key_params(keys), "hashes": hashes}
        ).fetchall()
    stored = {(key, digest): vector for key, digest, vector in found}
    for row in rows:
        doc = _chunks_of(row)
        for i, digest in enumerate(doc.hashes):
            vector = stored.get((row.key, digest))
            if vector is not None:
                doc.vectors[i] = np.asarray(vector, dtype=np.float32)


def postpone_over_budget(rows: list[Row]) -> list[Row]:
    """Rows past the new-token budget are postponed (after reuse is known); returns the rest."""
    kept: list[Row] = []
    tokens = 0
    for row in rows:
        doc = _chunks_of(row)
        new_tokens = sum(doc.chunks[i].tokens for i in doc.new)
        if kept and tokens + new_tokens > MAX_NEW_TOKENS:
            row.state = RowState.POSTPONED
            continue
        tokens += new_tokens
        kept.append(row)
    return kept


# --- embed stage --------------------------------------------------------------------------------
def embed(model: TextModel, rows: Sequence[Row]) -> int:
    """Embeds the new chunks of each document; returns the tokens embedded. A document whose
    chunks the model fails on fails alone."""
    kept = postpone_over_budget([r for r in rows if r.chunks is not None])
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
        result = model.embed_with_stats([_chunks_of(row).chunks[i].text for row, i in live])
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


# --- write stage --------------------------------------------------------------------------------
def store(
    conn: db.Connection, target: Target, embedded: list[Row], blank: list[Row]
) -> dict[str, RowState]:
    """Writes the chunks of `embedded` documents and clears those of `blank` ones, for the
    documents whose content is still the one loaded: the target's chunk write, which runs as
    the table's owner (sql/32_access.sql). Returns each row's outcome (by key); runs inside the
    caller's transaction and changes no row itself."""
    rows = embedded + blank
    if not rows:
        return {}
    keys = [r.key for r in rows]
    conn.execute(target.query("lock_documents"), {"target_id": target.id, "keys": keys})
    chunk_keys: list[str] = []
    seqs: list[int] = []
    texts: list[str] = []
    hashes: list[str] = []
    vectors: list[HalfVector] = []
    for row in embedded:
        doc = _chunks_of(row)
        for chunk, digest, vector in zip(doc.chunks, doc.hashes, doc.vectors, strict=True):
            assert vector is not None, "only fully embedded documents are written"
            chunk_keys.append(row.key)
            seqs.append(chunk.seq)
            texts.append(chunk.text)
            hashes.append(digest)
            vectors.append(HalfVector(vector))
    found = conn.execute(
        target.query("write_chunks"),
        {
            **target.key_params(keys),
            "hashes": [r.digest for r in rows],
            "counts": [len(_chunks_of(r).chunks) for r in embedded] + [0] * len(blank),
            "chunk_keys": chunk_keys,
            "seqs": seqs,
            "chunks": texts,
            "chunk_hashes": hashes,
            "embeddings": vectors or None,  # (an empty list has no type to send)
        },
    ).fetchall()
    current = {key for key, is_current, _ in found if is_current}
    trimmed = {key for key, _, lost in found if lost}
    outcome: dict[str, RowState] = {}
    for row in embedded:
        outcome[row.key] = RowState.WRITTEN if row.key in current else RowState.STALE
    for row in blank:
        # Not cleared: it had no chunks, or its content changed since (its own job handles it).
        outcome[row.key] = RowState.CLEARED if row.key in trimmed else RowState.BLANK
    return outcome


def _chunks_of(row: Row) -> DocumentChunks:
    assert row.chunks is not None, "prepare() split this document"
    return row.chunks

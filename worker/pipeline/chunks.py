"""Chunked targets in the pipeline: split each document, embed only the chunks that changed,
write a document's chunks under the same stale-write guard as a row's vector.

The pipeline calls in at three points, one per stage (through worker/pipeline/stores/chunked.py):

  prepare (load stage, after the content is loaded)  reads each document with the model's
      tokenizer as far as the batch's budget goes (EMBED_PIECE_TOKENS tokens of new chunks, at
      most MAX_CHUNKS chunks), looking up the vectors already stored for chunks with the same
      hash (text and model), which are then not embedded again. A document that does not fit
      whole is taken a piece at a time (worker/pipeline/pieces.py); documents past the budget
      are postponed (they go back to the queue, no attempt counted); a document over the
      ceiling (EMBED_MAX_DOCUMENT_BYTES) fails at once.
  embed (embed stage)  embeds the new chunks, at most EMBED_GROUP at a time so that a batch of
      thousands of chunks never holds thousands of encodings at once; a document whose text the
      model fails on fails alone.
  store (write stage, inside the batch's write transaction)  locks the documents (advisory, per
      key); the target's chunk write then keeps only those whose content md5 is still the one
      loaded, upserts their chunks (unchanged chunks at their position are not rewritten) and
      deletes the vanished ones (for a piece: only with the last one). It returns each row's
      outcome; the caller applies it as it applies its own.

The chunk table is read and written only through the target's functions, which run as the table's
owner (sql/32_access.sql): the worker role holds no privilege on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pgvector import HalfVector

from worker import db, exceptions, queries
from worker.pipeline import jobs as jobqueue
from worker.pipeline import pieces
from worker.pipeline.batch import Batch, Row, RowState
from worker.pipeline.chunking import Splitter
from worker.pipeline.pieces import MAX_CHUNKS, Document, DocumentChunks
from worker.pipeline.targets import Target

if TYPE_CHECKING:
    from worker.models.embedder import TextModel
    from worker.models.loaded import LoadedModels

__all__ = ["MAX_CHUNKS", "DocumentChunks", "embed", "log_pieces", "prepare", "store"]

logger = logging.getLogger(__name__)

# Chunks per embed call: bounds the tokenizer's encodings and the padded input tensors.
EMBED_GROUP = 256
# Reuse lookups per batch at most: each round reads more chunks where stored vectors left
# budget over.
MAX_ROUNDS = 64


# --- load stage ---------------------------------------------------------------------------------
@dataclass
class _Budget:
    """What is left of a batch's budget: tokens of new chunks, and chunks to write."""

    tokens: int
    chunks: int
    used: bool = False  # the first document always gets a chunk

    @property
    def spent(self) -> bool:
        return self.used and (self.tokens <= 0 or self.chunks <= 0)


def prepare(
    conn: db.Connection, batch: Batch, target: Target, rows: list[Row], models: LoadedModels
) -> None:
    """Reads the loaded documents of a chunked target (with the tokenizer of the target's model,
    read once per process) as far as the batch's budget goes, and finds their reusable
    vectors."""
    assert target.chunk_tokens is not None
    try:
        tokenizer = models.tokenizer(target.model)
    except exceptions.ModelError as exc:
        batch.deferred[target.id] = str(exc)
        return
    splitter = Splitter(tokenizer, target.chunk_tokens, target.chunk_overlap or 0)
    budget = _Budget(batch.limits.piece_tokens, pieces.MAX_CHUNKS)
    try:
        _prepare_target(conn, batch, target=target, rows=rows, splitter=splitter, budget=budget)
    except exceptions.TargetUnavailable as exc:
        batch.deferred[target.id] = f"{target.name}: {exc}"


def forget(conn: db.Connection, target: Target, gone: list[Row]) -> None:
    """Deleted documents: their progress or ceiling goes (embeddings.documents)."""
    if gone:
        conn.execute(
            queries.compose("forget_documents"),
            {"target_id": target.id, "keys": [r.key for r in gone]},
        )


def _prepare_target(
    conn: db.Connection,
    batch: Batch,
    *,
    target: Target,
    rows: list[Row],
    splitter: Splitter,
    budget: _Budget,
) -> None:
    sizes = {row.key: len((row.content or "").encode()) for row in rows}
    _fail_over_ceiling(conn, batch, target, rows, sizes)
    rows = [r for r in rows if r.state is RowState.READY]
    if not rows:
        return
    with db.translated():
        found = conn.execute(
            queries.compose("document_progress"),
            {"target_id": target.id, "keys": [r.key for r in rows], "version": target.version},
        ).fetchall()
    # Only a continuation (the job a piece sent back) goes on from the recorded progress: any
    # other job may follow a delete and re-insert of the same content, whose chunks are gone.
    fresh = {
        key
        for job in batch.jobs
        if job.target is not None and job.target.id == target.id and not _continued(job)
        for key in job.keys
    }
    committed = {
        key: done
        for key, digest, state, done in found
        if state == "in_progress" and digest == _digest(rows, key) and key not in fresh
    }
    documents: dict[str, Document] = {}
    for _ in range(MAX_ROUNDS):
        taken: list[tuple[Row, DocumentChunks, list[int]]] = []
        for row in rows:
            if budget.spent or row.state is not RowState.READY:
                continue
            doc = documents.get(row.key)
            if doc is None:
                doc = documents[row.key] = _document(
                    conn, target, row, splitter=splitter, sizes=sizes, committed=committed
                )
                budget.tokens -= sum(doc.pending.chunks[i].tokens for i in doc.pending.new)
                budget.chunks -= len(doc.pending.chunks)
                budget.used = budget.used or bool(doc.pending.chunks)
            if doc.complete:
                continue
            scan = batch.limits.piece_tokens * pieces.SCAN_FACTOR
            try:
                indexes = doc.take(_group(budget, target), scan)
            except Exception as exc:  # the tokenizer's failure on this text only
                row.fail(f"splitting failed: {type(exc).__name__}: {exc}")
                continue
            budget.tokens -= sum(doc.pending.chunks[i].tokens for i in indexes)
            budget.chunks -= len(indexes)
            budget.used = budget.used or bool(indexes)
            taken.append((row, doc.pending, indexes))
        if not taken:
            break
        budget.tokens += _find_stored_vectors(conn, target, taken)  # found: no tokens to embed
    for row in rows:
        _settle_prepared(row, documents.get(row.key))


def _continued(job: jobqueue.Job) -> bool:
    return isinstance(job.message, dict) and job.message.get("continued") is True


def _digest(rows: list[Row], key: str) -> str | None:
    return next((r.digest for r in rows if r.key == key), None)


def _group(budget: _Budget, target: Target) -> int:
    """Chunks to read next: about what the budget's tokens still hold, at least one."""
    assert target.chunk_tokens is not None
    return max(1, min(budget.chunks, budget.tokens // target.chunk_tokens + 1, 256))


def _document(
    conn: db.Connection,
    target: Target,
    row: Row,
    *,
    splitter: Splitter,
    sizes: dict[str, int],
    committed: dict[str, int],
) -> Document:
    """The row's document: the one a previous piece left in the cache when the database's record
    confirms it, else read afresh from where the record says its committed chunks end."""
    assert row.content is not None and row.digest is not None
    key = pieces.document_id(conn, target.id, target.version, row.key, row.digest)
    done = committed.get(row.key, 0)
    doc = pieces.CACHE.take(key)
    if doc is not None and doc.confirm(done):
        return doc
    stream = splitter.stream(row.content)
    return Document(stream, target.model, sizes[row.key], done=done, cache_key=key)


def _settle_prepared(row: Row, doc: Document | None) -> None:
    """The row's state after prepare: its chunks to embed and write, postponed (nothing read
    within the budget, or a piece that only skipped committed chunks), or blank."""
    if row.state is not RowState.READY:
        return
    if doc is None:
        row.state = RowState.POSTPONED
        return
    if doc.complete and doc.done == 0 and not doc.pending.chunks:
        row.state = RowState.BLANK  # nothing the tokenizer reads (control characters only)
        return
    if not doc.pending.chunks and not doc.complete:
        row.state = RowState.POSTPONED  # skipped committed chunks only: next time further
        if doc.cache_key is not None:
            pieces.CACHE.put(doc.cache_key, doc)
        return
    row.chunks = doc.pending


def _fail_over_ceiling(
    conn: db.Connection, batch: Batch, target: Target, rows: list[Row], sizes: dict[str, int]
) -> None:
    """Documents over the ceiling fail at once (no retries: the same text fails again) and are
    recorded as such (embeddings.documents) for status and doctor."""
    ceiling = batch.limits.max_document_bytes
    over = [r for r in rows if ceiling and sizes[r.key] > ceiling]
    for row in over:
        row.fail(
            f"document over its ceiling: {sizes[row.key]:,} bytes, more than "
            f"EMBED_MAX_DOCUMENT_BYTES={ceiling:,}; raise the ceiling (then `embed-worker "
            "failures --retry`) or shorten the document",
            permanent=True,
        )
    if over:
        with db.translated():
            conn.execute(
                queries.compose("note_over_ceiling"),
                {
                    "target_id": target.id,
                    "keys": [r.key for r in over],
                    "digests": [r.digest for r in over],
                    "bytes": [sizes[r.key] for r in over],
                    "ceiling": ceiling,
                    "version": target.version,
                },
            )


def _find_stored_vectors(
    conn: db.Connection, target: Target, taken: list[tuple[Row, DocumentChunks, list[int]]]
) -> int:
    """Fills in the vectors stored for the chunks just taken; returns their tokens."""
    keys = [row.key for row, _, indexes in taken for _ in indexes]
    hashes = [doc.hashes[i] for _, doc, indexes in taken for i in indexes]
    if not keys:
        return 0
    with db.translated():
        found = conn.execute(
            target.query("load_reusable_chunks"), {**target.key_params(keys), "hashes": hashes}
        ).fetchall()
    stored = {(key, digest): vector for key, digest, vector in found}
    tokens = 0
    for row, doc, indexes in taken:
        for i in indexes:
            vector = stored.get((row.key, doc.hashes[i]))
            if vector is not None:
                doc.vectors[i] = np.asarray(vector, dtype=np.float32)
                tokens += doc.chunks[i].tokens
    return tokens


# --- embed stage --------------------------------------------------------------------------------
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
    """Writes the chunks of `embedded` documents (whole, or a piece) and clears those of `blank`
    ones, for the documents whose content is still the one loaded: the target's chunk write,
    which runs as the table's owner (sql/32_access.sql). A piece is written only where the
    document's recorded progress ends where it starts. Returns each row's outcome (by key);
    runs inside the caller's transaction and changes no row itself."""
    rows = embedded + blank
    if not rows:
        return {}
    keys = [r.key for r in rows]
    conn.execute(target.query("lock_documents"), {"target_id": target.id, "keys": keys})
    outcome: dict[str, RowState] = {}
    moved = {r.key for r in _moved_on(conn, target, embedded)}
    for key in moved:
        outcome[key] = RowState.POSTPONED  # it starts over from the record, next time
    embedded = [r for r in embedded if r.key not in moved]
    rows = embedded + blank
    if not rows:
        return outcome
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
            **target.key_params([r.key for r in rows]),
            "hashes": [r.digest for r in rows],
            # the chunks past a document's end go with its last piece only (NULL: none)
            "counts": [_chunks_of(r).end if _chunks_of(r).final else None for r in embedded]
            + [0] * len(blank),
            "chunk_keys": chunk_keys,
            "seqs": seqs,
            "chunks": texts,
            "chunk_hashes": hashes,
            "embeddings": vectors or None,  # (an empty list has no type to send)
        },
    ).fetchall()
    current = {key for key, is_current, _ in found if is_current}
    trimmed = {key for key, _, lost in found if lost}
    for row in embedded:
        doc = _chunks_of(row)
        if row.key not in current:
            outcome[row.key] = RowState.STALE
        else:
            outcome[row.key] = RowState.WRITTEN if doc.final else RowState.PIECE
    for row in blank:
        # Not cleared: it had no chunks, or its content changed since (its own job handles it).
        outcome[row.key] = RowState.CLEARED if row.key in trimmed else RowState.BLANK
    _note_progress(conn, target, [r for r in embedded if outcome[r.key] is RowState.PIECE])
    done = [r.key for r in rows if outcome[r.key] is not RowState.PIECE]
    if done:  # whole, last piece, cleared or stale: no progress to continue from
        conn.execute(queries.compose("forget_documents"), {"target_id": target.id, "keys": done})
    for row in embedded:
        document = _chunks_of(row).document
        if outcome[row.key] is RowState.PIECE and document and document.cache_key:
            # Handed back for the next piece: the write no longer touches it. Whether this
            # transaction commits, the next piece learns from the record (Document.confirm).
            pieces.CACHE.put(document.cache_key, document)
    return outcome


def _moved_on(conn: db.Connection, target: Target, embedded: list[Row]) -> list[Row]:
    """Pieces whose document's recorded progress does not end where they start: another writer
    wrote the document since this one read it (the record was replaced or removed)."""
    later = [r for r in embedded if _chunks_of(r).first_seq > 0]
    if not later:
        return []
    found = conn.execute(
        queries.compose("lock_document_progress"),
        {"target_id": target.id, "keys": [r.key for r in later], "version": target.version},
    ).fetchall()
    progress = {key: (digest, done) for key, digest, done in found}
    return [r for r in later if progress.get(r.key) != (r.digest, _chunks_of(r).first_seq)]


def _note_progress(conn: db.Connection, target: Target, rows: list[Row]) -> None:
    if not rows:
        return
    docs = [_chunks_of(r) for r in rows]
    conn.execute(
        queries.compose("note_document_progress"),
        {
            "target_id": target.id,
            "version": target.version,
            "keys": [r.key for r in rows],
            "digests": [r.digest for r in rows],
            "bytes": [d.document.bytes if d.document else 0 for d in docs],
            "done": [d.end for d in docs],
            "estimated": [d.document.estimated() if d.document else d.end for d in docs],
        },
    )


def log_pieces(batch: Batch) -> None:
    """One line per piece of a long document the batch wrote (after its commit)."""
    for row in batch.rows.values():
        doc = row.chunks
        if doc is None or doc.whole or row.state not in (RowState.PIECE, RowState.WRITTEN):
            continue
        document = doc.document
        estimated = document.estimated() if document else doc.end
        elapsed = time.monotonic() - document.started if document else 0.0
        logger.info(
            "document target=%s key=%s: chunks %d-%d written, %d of ~%d (%d%%)%s, %.0f s so far",
            row.target.name,
            row.key,
            doc.first_seq,
            doc.end - 1,
            doc.end,
            estimated,
            100 * doc.end // max(estimated, 1),
            ", done" if row.state is RowState.WRITTEN else "; the rest goes back to the queue",
            elapsed,
            extra={
                "target": row.target.name,
                "key": row.key,
                "first_seq": doc.first_seq,
                "chunks_done": doc.end,
                "chunks_estimated": estimated,
                "final": row.state is RowState.WRITTEN,
            },
        )


def _chunks_of(row: Row) -> DocumentChunks:
    assert row.chunks is not None, "prepare() split this document"
    return row.chunks

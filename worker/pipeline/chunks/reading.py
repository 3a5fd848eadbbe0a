"""The load stage of a chunked target: each loaded document read with the model's tokenizer as
far as the batch's budget goes, the vectors stored for its unchanged chunks found, documents over
the ceiling failed (worker/pipeline/chunks/__init__.py has the whole path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from worker import db, exceptions, queries
from worker.pipeline import messages, pieces
from worker.pipeline.batch import Batch, Row, RowState
from worker.pipeline.chunks.documents import ChunkReader, reader_for, stored_bytes
from worker.pipeline.pieces import Document, DocumentChunks
from worker.target import Target

if TYPE_CHECKING:
    from worker.models.loaded import LoadedModels

# Reuse lookups per batch at most: each round reads more chunks where stored vectors left
# budget over.
MAX_ROUNDS = 64


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
    try:
        reader = reader_for(target, tokenizer, batch.limits)
    except exceptions.ConfigError as exc:
        batch.deferred[target.id] = f"{target.name}: {exc}"
        return
    budget = _Budget(batch.limits.piece_tokens, pieces.MAX_CHUNKS)
    try:
        _prepare_target(conn, batch, target=target, rows=rows, reader=reader, budget=budget)
    except exceptions.TargetUnavailable as exc:
        batch.deferred[target.id] = f"{target.name}: {exc}"


def _prepare_target(
    conn: db.Connection,
    batch: Batch,
    *,
    target: Target,
    rows: list[Row],
    reader: ChunkReader,
    budget: _Budget,
) -> None:
    sizes = {row.key: len((row.content or "").encode()) for row in rows}
    if target.document_format is None:  # a document's ceiling is on its extracted text
        _fail_over_ceiling(conn, batch, target, rows, sizes)
    rows = [r for r in rows if r.state is RowState.READY]
    if not rows:
        return
    committed = _committed(conn, batch, target, rows)
    rows = [r for r in rows if r.state is RowState.READY]
    # (Their parses were asked for, and waited for, before any target's: chunks/parses.py.)
    documents: dict[str, Document] = {}
    for _ in range(MAX_ROUNDS):
        taken: list[tuple[Row, DocumentChunks, list[int]]] = []
        for row in rows:
            if budget.spent or row.state is not RowState.READY:
                continue
            doc = documents.get(row.key)
            if doc is None:
                doc = _open(conn, batch, target, row, reader=reader, committed=committed)
                if doc is None:
                    continue
                documents[row.key] = doc
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


def _committed(
    conn: db.Connection, batch: Batch, target: Target, rows: list[Row]
) -> dict[str, int]:
    """How far each row's document's committed chunks go (by key; none: from its start), by the
    record of its progress; rows whose chain of pieces another job's took over are marked so
    (nothing to do)."""
    with db.translated():
        found = conn.execute(
            queries.compose("document_progress"),
            {"target_id": target.id, "keys": [r.key for r in rows], "version": target.version},
        ).fetchall()
    for row in _superseded(batch, target, rows, found):
        row.state = RowState.SUPERSEDED
    # Whatever job it came with, a document goes on from the record of its content's committed
    # chunks: a delete that takes its chunks takes the record too (the worker forgets both, a
    # TRUNCATE's trigger every record of the target), so the record never speaks of chunks
    # that are gone; starting over instead would throw away the progress another job's chain
    # of pieces is making on the same content.
    return {
        key: done
        for key, digest, state, done, current in found
        if state == "in_progress" and current and digest == _digest(rows, key)
    }


def _superseded(
    batch: Batch, target: Target, rows: list[Row], found: list[tuple[Any, ...]]
) -> list[Row]:
    """Rows every job of which in the batch is a chain of pieces that another job's chain
    took over: the record of the same content goes on from elsewhere than where this chain
    left it, or is gone with a last piece, a delete or a new content (whose own job goes on
    with it; a new definition keeps the record until its job starts the document over).
    Each write of the record sent the continuation of the chain that wrote it, in its
    transaction: this one is done, and two chains would undo each other's progress."""
    records: dict[str, tuple[str, str, int]] = {
        key: (digest, state, done) for key, digest, state, done, _ in found
    }
    asked: dict[str, list[messages.Job]] = {}
    for job in batch.jobs:
        if job.target is not None and job.target.id == target.id:
            for key in job.keys:
                asked.setdefault(key, []).append(job)

    def taken_over(job: messages.Job, row: Row) -> bool:
        if job.chunks_done is None:
            return False  # not a continuation, or one of 0.3.0's: it goes on from the record
        record = records.get(row.key)
        if record is None:
            return job.chunks_done > 0
        digest, state, done = record
        return state == "in_progress" and digest == row.digest and done != job.chunks_done

    return [
        row
        for row in rows
        if row.key in asked and all(taken_over(job, row) for job in asked[row.key])
    ]


def _digest(rows: list[Row], key: str) -> str | None:
    return next((r.digest for r in rows if r.key == key), None)


def _group(budget: _Budget, target: Target) -> int:
    """Chunks to read next: about what the budget's tokens still hold, at least one."""
    assert target.chunk_tokens is not None
    return max(1, min(budget.chunks, budget.tokens // target.chunk_tokens + 1, 256))


def _open(
    conn: db.Connection,
    batch: Batch,
    target: Target,
    row: Row,
    *,
    reader: ChunkReader,
    committed: dict[str, int],
) -> Document | None:
    """The row's document; None when the row failed (a document that cannot be read, for good;
    a parse past its budget or crashed, this attempt) or was postponed (its parse goes on, and
    the row comes back for it)."""
    try:
        doc = _document(conn, target, row, reader=reader, committed=committed)
    except exceptions.DocumentError as exc:
        _fail_document(conn, batch, target, row, exc)
        return None
    except exceptions.ParseFailed as exc:
        row.fail(str(exc))
        return None
    if doc is None:
        row.state = RowState.POSTPONED
    return doc


def _document(
    conn: db.Connection,
    target: Target,
    row: Row,
    *,
    reader: ChunkReader,
    committed: dict[str, int],
) -> Document | None:
    """The row's document: the one a previous piece left in the cache when the database's record
    confirms it, else read afresh from where the record says its committed chunks end; None
    while its parse is not done."""
    assert row.content is not None and row.digest is not None
    key = pieces.document_id(conn, target.id, target.version, row.key, row.digest)
    done = committed.get(row.key, 0)
    doc = pieces.CACHE.take(key)
    if doc is not None and doc.confirm(done):
        return doc
    stream = reader.open(key, row.content)
    if stream is None:
        return None
    size = reader.size(row.content, stream)
    return Document(stream, target.model, size, done=done, cache_key=key)


def _fail_document(
    conn: db.Connection, batch: Batch, target: Target, row: Row, exc: exceptions.DocumentError
) -> None:
    """A document that cannot be read fails alone and for good: the same bytes fail again. One
    whose text is over the ceiling is recorded as such (embeddings.documents) with the size of
    the document as stored, for status and doctor."""
    row.fail(str(exc), permanent=True)
    if isinstance(exc, exceptions.DocumentTooLarge) and row.content is not None:
        stored = stored_bytes(target, row.content)
        _note_over_ceiling(conn, batch, target, [row], {row.key: stored})


def _settle_prepared(row: Row, doc: Document | None) -> None:
    """The row's state after prepare: its chunks to embed and write, postponed (nothing read
    within the budget, or a piece that only skipped committed chunks), or blank."""
    if row.state is not RowState.READY:
        return
    if doc is None:
        row.state = RowState.POSTPONED
        return
    if doc.complete and doc.done == 0 and not doc.pending.chunks:
        # No text (a document of images, an empty page; control characters only): its chunks
        # are cleared and, content there, it is settled as such (chunks/writing.py).
        row.state = RowState.BLANK
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
    _note_over_ceiling(conn, batch, target, over, sizes)


def _note_over_ceiling(
    conn: db.Connection, batch: Batch, target: Target, over: list[Row], sizes: dict[str, int]
) -> None:
    if over:
        with db.translated():
            conn.execute(
                queries.compose("note_over_ceiling"),
                {
                    "target_id": target.id,
                    "keys": [r.key for r in over],
                    "digests": [r.digest for r in over],
                    "bytes": [sizes[r.key] for r in over],
                    "ceiling": batch.limits.max_document_bytes,
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

"""The write stage of a chunked target: the chunk write under the stale-write guard, inside the
batch's write transaction; the progress of a long document written a piece at a time, and the
line logged per piece (worker/pipeline/chunks/__init__.py has the whole path)."""

from __future__ import annotations

import logging
import time
from typing import Any

from pgvector import HalfVector
from psycopg.types.json import Jsonb

from worker import db, queries
from worker.pipeline import pieces
from worker.pipeline.batch import Batch, Row, RowState
from worker.pipeline.chunks.documents import stored_bytes
from worker.pipeline.documents.stream import HeadedChunk
from worker.pipeline.pieces import DocumentChunks
from worker.pipeline.stores.side import lock_documents
from worker.target import Target

logger = logging.getLogger(__name__)


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
    lock_documents(conn, target, rows)
    outcome: dict[str, RowState] = {}
    moved = {r.key for r in _moved_on(conn, target, embedded)}
    for key in moved:
        outcome[key] = RowState.POSTPONED  # it starts over from the record, next time
    embedded = [r for r in embedded if r.key not in moved]
    rows = embedded + blank
    if not rows:
        return outcome
    found = conn.execute(
        target.query("write_chunks"),
        {
            **target.key_params([r.key for r in rows]),
            "hashes": [r.digest for r in rows],
            # the chunks past a document's end go with its last piece only (NULL: none)
            "counts": [_chunks_of(r).end if _chunks_of(r).final else None for r in embedded]
            + [0] * len(blank),
            **_chunk_params(target, embedded),
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
    no_text = [r for r in blank if r.key in current and _holds_content(r)]
    _note_no_text(conn, target, no_text)
    settled = {r.key for r in no_text}
    done = [r.key for r in rows if outcome[r.key] is not RowState.PIECE and r.key not in settled]
    if done:  # whole, last piece, cleared or stale: no progress to continue from
        conn.execute(queries.compose("forget_documents"), {"target_id": target.id, "keys": done})
    for row in embedded:
        document = _chunks_of(row).document
        if outcome[row.key] is RowState.PIECE and document and document.cache_key:
            # Handed back for the next piece: the write no longer touches it. Whether this
            # transaction commits, the next piece learns from the record (Document.confirm).
            pieces.CACHE.put(document.cache_key, document)
    return outcome


def drop(conn: db.Connection, target: Target, failed: list[Row]) -> dict[str, RowState]:
    """Documents that failed for good (unreadable, over the ceiling), inside the transaction
    that dead-letters them: the chunks they hold are of an earlier content, which the row no
    longer has, and go (the chunk write with a count of 0, as for blank content), with any
    record of that content (a chain of pieces, no text, a ceiling), where the row's content is
    still the one that failed. A row whose content changed since it was loaded is STALE instead:
    its chunks stay (they may be its newer content's, written meanwhile) and it is not
    dead-lettered (its newer job reads the new content). Returns those rows' outcome (by key)."""
    if not failed:
        return {}
    lock_documents(conn, target, failed)  # (after any other writer of these documents)
    found = conn.execute(
        target.query("write_chunks"),
        {
            **target.key_params([r.key for r in failed]),
            "hashes": [r.digest for r in failed],
            "counts": [0] * len(failed),
            **_chunk_params(target, []),
        },
    ).fetchall()
    current = {key for key, is_current, _ in found if is_current}
    settled = [r for r in failed if r.key in current]
    if settled:
        conn.execute(
            queries.compose("forget_other_documents"),
            {
                "target_id": target.id,
                "keys": [r.key for r in settled],
                "digests": [r.digest for r in settled],
            },
        )
    return {r.key: RowState.STALE for r in failed if r.key not in current}


def _chunk_params(target: Target, embedded: list[Row]) -> dict[str, Any]:
    """The chunk write's arrays, one entry per chunk of the `embedded` documents: its document's
    key, position, text, hash, vector, offsets, and a document's heading path and page (NULL
    for plain text, whose write is as it was before documents)."""
    documents = target.document_format is not None
    chunk_keys: list[str] = []
    seqs: list[int] = []
    texts: list[str] = []
    hashes: list[str] = []
    vectors: list[HalfVector] = []
    starts: list[int] = []
    ends: list[int] = []
    headings: list[list[str] | None] = []  # a document's chunks' (documents/stream.py)
    pages: list[int | None] = []
    for row in embedded:
        doc = _chunks_of(row)
        for chunk, digest, vector in zip(doc.chunks, doc.hashes, doc.vectors, strict=True):
            assert vector is not None, "only fully embedded documents are written"
            chunk_keys.append(row.key)
            seqs.append(chunk.seq)
            texts.append(chunk.text)
            hashes.append(digest)
            vectors.append(HalfVector(vector))
            starts.append(chunk.start)  # where the chunk is in the document (characters)
            ends.append(chunk.end)
            if documents:  # one entry per chunk, as every array
                headed = chunk if isinstance(chunk, HeadedChunk) else None
                headings.append(list(headed.headings) if headed else None)
                pages.append(headed.page if headed else None)
    return {
        "chunk_keys": chunk_keys,
        "seqs": seqs,
        "chunks": texts,
        "chunk_hashes": hashes,
        "embeddings": vectors or None,  # (an empty list has no type to send)
        "starts": starts,
        "ends": ends,
        "headings": Jsonb(headings) if documents else None,
        "pages": pages if documents else None,
    }


def _moved_on(conn: db.Connection, target: Target, embedded: list[Row]) -> list[Row]:
    """Pieces whose document's recorded progress does not end where they start: another writer
    wrote the document since this one read it (the record was replaced or removed), or, for a
    first piece, another job's chain of pieces has gone on with the same content since (its
    record would be lowered to this piece's end: its progress thrown away)."""
    pieces_ = [r for r in embedded if not _chunks_of(r).whole]
    if not pieces_:
        return []
    found = conn.execute(
        queries.compose("lock_document_progress"),
        {"target_id": target.id, "keys": [r.key for r in pieces_], "version": target.version},
    ).fetchall()
    progress = {key: (digest, done) for key, digest, done in found}

    def moved_on(row: Row) -> bool:
        first = _chunks_of(row).first_seq
        record = progress.get(row.key)
        if first == 0:
            return record is not None and record[0] == row.digest
        return record != (row.digest, first)

    return [r for r in pieces_ if moved_on(r)]


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


def _holds_content(row: Row) -> bool:
    """A blank row whose content is not: a document with no text in it (an empty page, a PDF of
    images only), which sweep() would otherwise queue again and again (it has content and no
    chunk)."""
    return bool(row.content and row.content.strip())


def _note_no_text(conn: db.Connection, target: Target, rows: list[Row]) -> None:
    """Settles documents with no text for the content they hold (embeddings.documents,
    no_text): sweep() leaves them, status counts them, their next content is read again."""
    if not rows:
        return
    conn.execute(
        queries.compose("note_no_text"),
        {
            "target_id": target.id,
            "version": target.version,
            "keys": [r.key for r in rows],
            "digests": [r.digest for r in rows],
            "bytes": [stored_bytes(target, r.content or "") for r in rows],
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


def forget(conn: db.Connection, target: Target, gone: list[Row]) -> None:
    """Deleted documents: their progress, ceiling or want of text goes (embeddings.documents)."""
    if gone:
        conn.execute(
            queries.compose("forget_documents"),
            {"target_id": target.id, "keys": [r.key for r in gone]},
        )


def _chunks_of(row: Row) -> DocumentChunks:
    assert row.chunks is not None, "prepare() split this document"
    return row.chunks

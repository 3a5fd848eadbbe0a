"""A document that fails for good (it cannot be read, or is over the ceiling) after an earlier
content of its row was embedded: the old chunks describe content the row no longer has, so they
go, in the transaction that dead-letters the row, and only while the row still holds the
content that failed (a QA pass: search kept returning a replaced DOCX's passages for a row
whose new bytes were a PNG, and status counted the row as both embedded and failed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support.documents import docx_bytes
from worker import db, status
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline import jobs as jobqueue
from worker.pipeline import stages, write
from worker.pipeline.batch import Batch, RowState
from worker.pipeline.targets import TargetRegistry
from worker.process.runner import Worker
from worker.retrieval import search
from worker.retrieval.request import SearchRequest

Conn = psycopg.Connection[Any]

PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
GOOD_DOCX = docx_bytes(
    [
        ("Heading 1", "Customer service"),
        ("Heading 2", "Refunds"),
        ("Normal", "A refund takes fourteen days from the day the parcel comes back."),
        ("Heading 2", "Exchanges"),
        ("Normal", "An exchange is sent as soon as the returned item is checked."),
    ],
    title="Shop rules",
)


def chunk_keys(conn: Conn, table: str) -> list[int]:
    return [k for (k,) in conn.execute(f"SELECT DISTINCT id FROM {table} ORDER BY id")]


def counts(conn: Conn) -> dict[str, Any]:
    (row,) = status.fetch(conn, exact=True)
    return row


def test_a_document_replaced_by_bytes_that_cannot_be_read_loses_its_old_chunks(
    conn: Conn, minilm: str, run_once: Callable[..., Worker], embedders: LoadedModels
) -> None:
    conn.execute("CREATE TABLE files (id bigint PRIMARY KEY, body bytea)")
    conn.execute(
        "INSERT INTO files VALUES (1, %s), (2, %s), (3, NULL)",
        (GOOD_DOCX, b"Parcels leave the warehouse within two working days."),
    )
    conn.execute(
        "SELECT embeddings.watch('files', 'body', model => %s, chunk_tokens => 100)", (minilm,)
    )
    run_once()
    assert chunk_keys(conn, "files_chunks") == [1, 2]
    request = SearchRequest("files", "refund takes how long", k=3)
    assert search.run(conn, embedders.get, request)[0]["key"] == 1

    conn.execute("UPDATE files SET body = %s WHERE id = 1", (PNG,))
    run_once()

    failures = conn.execute("SELECT row_key, attempts, last_error FROM embeddings.failures")
    ((key, attempts, error),) = failures.fetchall()
    assert (key, attempts) == (1, 1)
    assert error.startswith("unknown document: not a format we read: a PNG image")
    assert chunk_keys(conn, "files_chunks") == [2], "the DOCX's chunks went with it"
    assert [r["key"] for r in search.run(conn, embedders.get, request)] == [2]
    shown = counts(conn)
    assert (shown["total_rows"], shown["embedded_rows"], shown["cleared_rows"]) == (3, 1, 1)
    assert (shown["failed_jobs"], shown["pending_jobs"]) == (1, 0)  # counted once: failed

    # Replaced by a file that can be read, the row is embedded again.
    conn.execute("UPDATE files SET body = %s WHERE id = 1", (GOOD_DOCX,))
    run_once()
    assert chunk_keys(conn, "files_chunks") == [1, 2]
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


@pytest.fixture
def notes(conn: Conn, minilm: str) -> None:
    """Plain text in chunks of 16 tokens, one row embedded."""
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO notes VALUES (1, 'The first version of the note, short.')")
    conn.execute(
        "SELECT embeddings.watch('notes', 'body', model => %s, chunk_tokens => 16)", (minilm,)
    )


def live_batch(conn: Conn, settings: Settings, embedders: LoadedModels) -> Batch:
    """The application's jobs leased and loaded (the load stage: each document read)."""
    batch = stages.read(conn, jobqueue.Queue(settings.queue), TargetRegistry(), settings)
    assert batch is not None
    stages.load(conn, batch, embedders)
    return batch


def test_a_document_over_the_ceiling_loses_its_old_chunks_and_its_progress(
    conn: Conn,
    notes: None,
    dsn: str,
    settings: Settings,
    embedders: LoadedModels,
    run_once: Callable[..., Worker],
) -> None:
    """Over the ceiling after a first piece of a long content was written: the chunks of the
    content before go, and so do that piece's and the record of its progress (status showed
    the document in progress for ever)."""
    run_once()
    long = " ".join(f"Sentence {i} of the long version." for i in range(60))
    conn.execute("UPDATE notes SET body = %s WHERE id = 1", (long,))
    ceiling = len(long.encode()) + 10
    pieces = settings.with_overrides(piece_tokens=64, max_document_bytes=ceiling)
    with psycopg.connect(dsn, autocommit=True) as worker:
        db.register_vector_types(worker)
        batch = live_batch(worker, pieces, embedders)
        (row,) = batch.rows.values()
        assert row.chunks is not None and not row.chunks.final, "a first piece"
        stages.embed(embedders, batch)
        write.write(worker, jobqueue.Queue(pieces.queue), batch, pieces)
    assert conn.execute("SELECT state FROM embeddings.documents").fetchone() == ("in_progress",)

    conn.execute("UPDATE notes SET body = %s WHERE id = 1", (long + " And more." * 10,))
    run_once(max_document_bytes=ceiling)
    assert chunk_keys(conn, "notes_chunks") == []
    assert conn.execute("SELECT state FROM embeddings.documents").fetchall() == [("over_ceiling",)]
    failed = conn.execute("SELECT DISTINCT row_key FROM embeddings.failures").fetchall()
    assert failed == [(1,)]
    assert counts(conn)["documents_in_progress"] == []


def test_a_failure_of_a_content_the_row_no_longer_has_removes_nothing(
    conn: Conn,
    notes: None,
    dsn: str,
    settings: Settings,
    embedders: LoadedModels,
    run_once: Callable[..., Worker],
) -> None:
    """The row changed again after its failing content was loaded, and its newer content was
    embedded first: that content's chunks stay, and the failure of a content the row no longer
    has is not dead-lettered (the row is stale, as a vector of that content would be)."""
    run_once()
    small = settings.with_overrides(max_document_bytes=200)
    conn.execute("UPDATE notes SET body = %s WHERE id = 1", ("word " * 100,))  # 500 bytes
    with psycopg.connect(dsn, autocommit=True) as worker:
        db.register_vector_types(worker)
        failing = live_batch(worker, small, embedders)
        (row,) = failing.rows.values()
        assert row.state is RowState.FAILED and row.permanent
        # Meanwhile: a newer content, embedded by another batch.
        conn.execute("UPDATE notes SET body = 'The third version, short again.' WHERE id = 1")
        newer = live_batch(worker, small, embedders)
        stages.embed(embedders, newer)
        write.write(worker, jobqueue.Queue(small.queue), newer, small)
        kept = conn.execute("SELECT seq, chunk FROM notes_chunks ORDER BY seq").fetchall()
        assert kept and "third version" in kept[0][1]

        stages.embed(embedders, failing)
        write.write(worker, jobqueue.Queue(small.queue), failing, small)
    (written,) = failing.rows.values()  # (the same row, as the write left it)
    assert written.state is RowState.STALE
    assert conn.execute("SELECT seq, chunk FROM notes_chunks ORDER BY seq").fetchall() == kept
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)

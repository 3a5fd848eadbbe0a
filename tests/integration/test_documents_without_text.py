"""Documents with no text at all (an empty HTML page, an empty DOCX, a PDF of one blank page)
on a chunked target: settled once as `no_text` for the content they hold, counted by status,
and not queued again by sweep() until their content changes (a QA pass: every sweep() queued
them again, and nothing counted them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.support.documents import docx_bytes, pdf_bytes
from tests.support.jobs import queued_keys
from worker.cli.status import render
from worker.process.runner import Worker
from worker.status import fetch

Conn = psycopg.Connection[Any]

EMPTY = {1: b"<html></html>", 2: docx_bytes([]), 3: pdf_bytes([[]])}
SOME_TEXT = b"<html><body><p>Some text.</p></body></html>"


@pytest.fixture
def files(conn: Conn, minilm: str) -> Iterator[int]:
    """A table of three files with no text and one with some, watched in chunks; its target."""
    conn.execute("CREATE TABLE files (id bigint PRIMARY KEY, body bytea)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO files VALUES (%s, %s)", [*EMPTY.items(), (4, SOME_TEXT)])
    found = conn.execute(
        "SELECT embeddings.watch('files', 'body', model => %s, chunk_tokens => 64, chunk_overlap => 0)",
        (minilm,),
    ).fetchone()
    assert found is not None
    yield found[0]


def swept(conn: Conn, target_id: int, *, verify: bool = False) -> list[Any]:
    """The keys one sweep() queued (each lane emptied first)."""
    conn.execute("SELECT embeddings.sweep(verify => %s)", (verify,))
    return sorted(queued_keys(conn, target_id, "embedding_jobs_backfill"))


def test_a_document_without_text_is_settled_once_and_counted(
    conn: Conn, files: int, run_once: Callable[..., Worker]
) -> None:
    run_once()
    assert conn.execute("SELECT DISTINCT id FROM files_chunks").fetchall() == [(4,)]
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert conn.execute(
        "SELECT row_key, state, bytes FROM embeddings.document_progress ORDER BY row_key"
    ).fetchall() == [(str(k), "no_text", len(v)) for k, v in EMPTY.items()]
    # Settled: neither sweep() nor its verifying pass queues them again.
    assert swept(conn, files) == []
    assert swept(conn, files, verify=True) == []
    (row,) = fetch(conn)
    assert row["documents_no_text"] == 3
    assert row["unqueued_rows"] == 0  # settled documents are not rows left without a job
    shown = "\n".join(render([row]))
    assert "public.files.embedding: 3 document(s) with no text to embed" in shown
    assert "done" in shown.splitlines()[2]  # the progress: nothing left to embed


def test_its_next_content_is_read_again(
    conn: Conn, files: int, run_once: Callable[..., Worker]
) -> None:
    run_once()
    # Written with the triggers off: only the verifying sweep sees the content changed.
    conn.execute("SET session_replication_role = replica")
    conn.execute("UPDATE files SET body = %s WHERE id = 1", (SOME_TEXT,))
    conn.execute("RESET session_replication_role")
    assert swept(conn, files) == []
    assert swept(conn, files, verify=True) == [1]
    run_once()
    assert conn.execute("SELECT DISTINCT id FROM files_chunks ORDER BY id").fetchall() == [
        (1,),
        (4,),
    ]
    assert conn.execute("SELECT row_key FROM embeddings.documents ORDER BY row_key").fetchall() == [
        ("2",),
        ("3",),
    ]
    # Deleted, a document takes its record along.
    conn.execute("DELETE FROM files WHERE id = 2")
    run_once()
    assert conn.execute("SELECT row_key FROM embeddings.documents").fetchall() == [("3",)]

"""A long document with the real `embed-worker` process: embedded in pieces while the
application's rows keep getting their vectors, continued after SIGKILL from its last committed
piece, and refused over the ceiling (worker/pipeline/pieces.py). A tiny random-weight model keeps
inference out of the way: what is tested is the scheduling, not the model."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import modelgen
from tests.support.models import require_gte_tokenizer
from tests.support.process import WorkerProcess, wait_for
from worker.pipeline.chunking import Splitter

Conn = psycopg.Connection[Any]

MODEL = "tiny-a"
CHUNK_TOKENS = 64
PIECE_TOKENS = 256  # about four chunks a piece


def long_text(paragraphs: int) -> str:
    return "\n\n".join(
        f"Section {i}. The planner estimates the cost of scan number {i * 7} from the table "
        f"statistics, and vacuum {i} reclaims the dead row versions of page {i * 13}."
        for i in range(paragraphs)
    )


@pytest.fixture(scope="module")
def tiny_model(generated_models_root: Path) -> Path:
    return modelgen.cached_model_dir(
        generated_models_root,
        name=MODEL,
        tokenizer_dir=require_gte_tokenizer(),
        seed=1,
        pooling="mean",
        **modelgen.TINY,
    )


@pytest.fixture
def tables(conn: Conn, tiny_model: Path, worker_env: dict[str, str]) -> dict[str, str]:
    """A chunked target `docs` and a plain one `notes`, both with the tiny model; returns the
    worker's environment for it."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES (%s, %s, 512, 'mean')",
        (MODEL, modelgen.TINY["hidden"]),
    )
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE notes (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => %s,"
        " chunk_overlap => 8)",
        (MODEL, CHUNK_TOKENS),
    )
    conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (MODEL,))
    return {
        "EMBED_MODEL_PATH": os.pathsep.join(
            [str(tiny_model.parent), worker_env["EMBED_MODEL_PATH"]]
        ),
        "EMBED_PIECE_TOKENS": str(PIECE_TOKENS),
        "EMBED_VT_SECONDS": "3",  # a killed worker's lease runs out soon
    }


def expected_chunks(tiny_model: Path, text: str) -> list[tuple[int, str]]:
    splitter = Splitter.from_file(tiny_model / "tokenizer.json", CHUNK_TOKENS, 8)
    return [(c.seq, c.text) for c in splitter.split(text)]


def stored_chunks(conn: Conn) -> list[tuple[int, str]]:
    return [(s, c) for s, c in conn.execute("SELECT seq, chunk FROM docs_chunks ORDER BY seq")]


def progress(conn: Conn) -> tuple[int, int] | None:
    row = conn.execute(
        "SELECT chunks_done, chunks_estimated FROM embeddings.document_progress"
        " WHERE state = 'in_progress'"
    ).fetchone()
    return (row[0], row[1]) if row else None


def pieces_logged(worker: WorkerProcess) -> list[dict[str, Any]]:
    return [r for r in worker.log_records() if r.get("message", "").startswith("document ")]


@pytest.fixture
def long_document(
    conn: Conn, tables: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> tuple[WorkerProcess, str]:
    """A worker started on `tables`, then a long document written to `docs` (row 1): the worker
    and the document's text."""
    text = long_text(1500)  # ~50k tokens: a few hundred pieces
    worker = start_worker(**tables)
    worker.wait_ready()
    conn.execute("INSERT INTO docs VALUES (1, %s)", (text,))
    return worker, text


def test_a_live_row_gets_its_vector_while_a_long_document_is_embedded_in_pieces(
    conn: Conn, long_document: tuple[WorkerProcess, str], tiny_model: Path
) -> None:
    worker, text = long_document
    first = wait_for(lambda: progress(conn), timeout=60, what="the first piece")
    conn.execute("INSERT INTO notes VALUES (1, 'A live row, written meanwhile.')")
    wait_for(
        lambda: conn.execute("SELECT embedding IS NOT NULL FROM notes").fetchone() == (True,),
        timeout=60,
        what="the live row's vector",
    )
    during = progress(conn)
    assert first is not None
    assert during is not None, "the document was done before the live row got its vector"
    assert first[0] <= during[0] < during[1]
    wait_for(lambda: progress(conn) is None, timeout=300, what="the document's last piece")
    assert stored_chunks(conn) == expected_chunks(tiny_model, text)
    logged = pieces_logged(worker)
    assert len(logged) > 3 and logged[-1]["final"] is True
    assert all(r["chunks_estimated"] >= r["chunks_done"] for r in logged)


def test_sigkill_mid_document_loses_at_most_the_piece_in_flight(
    conn: Conn,
    long_document: tuple[WorkerProcess, str],
    tables: dict[str, str],
    tiny_model: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker, text = long_document
    wait_for(lambda: (progress(conn) or (0, 0))[0] >= 20, timeout=120, what="a few pieces")
    worker.signal(signal.SIGKILL)
    assert worker.wait_exit(10) == -signal.SIGKILL
    killed_at = progress(conn)
    assert killed_at is not None
    committed = killed_at[0]
    assert len(stored_chunks(conn)) >= committed  # the record never runs ahead of the chunks

    again = start_worker(**tables)
    wait_for(lambda: progress(conn) is None, timeout=300, what="the document's last piece")
    assert stored_chunks(conn) == expected_chunks(tiny_model, text)
    resumed = pieces_logged(again)
    # It continued from the committed chunks: its first piece starts where they end.
    assert resumed[0]["first_seq"] == committed


def test_a_document_over_the_ceiling_fails_at_once_with_its_reason(
    conn: Conn, tables: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(**tables, EMBED_MAX_DOCUMENT_BYTES=10_000)
    worker.wait_ready()
    conn.execute("INSERT INTO docs VALUES (1, %s), (2, 'A short one.')", (long_text(200),))
    failure = wait_for(
        lambda: conn.execute(
            "SELECT row_key, attempts, last_error FROM embeddings.failures"
        ).fetchall(),
        timeout=60,
        what="the dead letter",
    )
    ((key, attempts, error),) = failure
    assert key == 1 and attempts == 1 and "over its ceiling" in error
    assert "EMBED_MAX_DOCUMENT_BYTES=10,000" in error
    assert conn.execute("SELECT row_key, state FROM embeddings.document_progress").fetchall() == [
        ("1", "over_ceiling")
    ]
    wait_for(lambda: stored_chunks(conn) == [(0, "A short one.")], what="the short document")

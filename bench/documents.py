"""Long documents (worker/pipeline/pieces.py): the application's live rows while a long document
of a chunked target is embedded, against the same rows with the worker idle, in one run with one
worker and the real model.

- Insert-to-vector latency of single live rows into a plain watched table, one after another,
  stamped by the database's clock at both ends: first idle, then while one long document
  (stdlib docstrings, `mb` MB) inserted into a chunked target is embedded in pieces of
  EMBED_PIECE_TOKENS tokens. Target: p50 and p95 during the document within 2x the idle p50
  plus one piece's time. During the document the rows are inserted twice over: at random
  times (a pause drawn between 0.05 s and 1.5 pieces after each vector: an application's
  writes do not wait for the worker's rhythm), then 0.2 s after each vector, as earlier runs
  did: a row then arrives at about the same point of every piece, early in its inference, so
  that this sampling shows close to the worst a row waits.
- The document's own wall time and pieces, from insert to its last piece (so the overhead of
  serving it in pieces shows against its tokens per second).
- Side by side, "one batch" (what 0.1.0 did): the same document with EMBED_PIECE_TOKENS so
  large that it goes in one batch, and one live row inserted behind it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import corpus, sampling, worker_process
from bench.sampling import latency_summary, wait_until
from worker.pipeline.chunking import Splitter

Conn = psycopg.Connection[Any]
CHUNK_TOKENS = 200

SETUP = "CREATE TABLE bench_docs (id bigint PRIMARY KEY, body text NOT NULL);" + (
    sampling.stamped_table("bench_notes")
)


def document(megabytes: float) -> str:
    """Stdlib docstrings joined into one document of about `megabytes` MB. Past the first round
    of the corpus, each docstring's words are rotated by the round's number: every chunk is
    new text, so that no chunk's stored vector is reused (a repeated chunk costs no inference,
    and the document's time per piece would understate what a live row waits behind)."""
    texts = corpus.stdlib_docstrings()
    parts: list[str] = []
    size = 0
    i = 0
    while size < megabytes * 1_000_000:
        text = texts[i % len(texts)]
        turn = i // len(texts)
        if turn:
            words = text.split()
            text = " ".join(words[turn % len(words) :] + words[: turn % len(words)])
        parts.append(text)
        size += len(text.encode()) + 2
        i += 1
    return "\n\n".join(parts)


def run(
    dsn: str,
    model_dir: Path,
    *,
    mb: float = 10.0,
    piece_tokens: int = 4096,
    samples: int = 50,
    one_batch_mb: float | None = None,
) -> dict[str, Any]:
    model = model_dir.name
    text = document(mb)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SETUP)
        conn.execute(
            "SELECT embeddings.watch('bench_docs', 'body', model => %s, chunk_tokens => %s)",
            (model, CHUNK_TOKENS),
        )
        conn.execute("SELECT embeddings.watch('bench_notes', 'body', model => %s)", (model,))
        conn.execute(sampling.stamp_trigger("bench_notes"))
        env = worker_process.worker_env(
            dsn, model, model_dir.parent, EMBED_PIECE_TOKENS=piece_tokens, EMBED_POLL_SECONDS=30
        )
        worker = worker_process.start(env)
        try:
            _sample(conn, 3, lambda: True)  # the model loaded, the queries prepared
            idle = _sample(conn, samples, lambda: True)
            started = time.monotonic()
            conn.execute("INSERT INTO bench_docs VALUES (1, %s)", (text,))
            wait_until(lambda: _progress(conn) is not None, 600, "the document's first piece")
            spacing = _random_spacing(_piece_seconds(conn))
            during = _sample(conn, samples, lambda: _progress(conn) is not None, spacing)
            during_fixed = _sample(conn, samples, lambda: _progress(conn) is not None)
            wait_until(lambda: _progress(conn) is None, 7200, "the document's last piece")
            wall = time.monotonic() - started
        finally:
            worker.terminate()
            worker.wait(30)
        one_batch = _one_batch(conn, dsn, model, model_dir, one_batch_mb) if one_batch_mb else None
    chunks, tokens = _chunks(conn_dsn=dsn, model_dir=model_dir, text=text)
    pieces = max(tokens / piece_tokens, 1.0)
    piece_ms = wall / pieces * 1000
    idle_summary, during_summary = latency_summary(idle), latency_summary(during)
    fixed_summary = latency_summary(during_fixed)
    target_ms = 2 * float(idle_summary.get("p50_ms", 0.0)) + piece_ms
    return {
        "model": model,
        "document_mb": round(len(text.encode()) / 1e6, 2),
        "document_chunks": chunks,
        "document_tokens": tokens,
        "chunk_tokens": CHUNK_TOKENS,
        "piece_tokens": piece_tokens,
        "document_wall_s": round(wall, 1),
        "document_tokens_per_s": round(tokens / wall, 1),
        "one_piece_ms": round(piece_ms, 1),
        "idle": idle_summary,
        "during_document": during_summary,  # inserted at random times
        "during_document_fixed_spacing": fixed_summary,  # 0.2 s after each vector
        "target_ms": round(target_ms, 1),
        "target_met": float(during_summary.get("p95_ms", float("inf"))) <= target_ms,
        "target_met_fixed_spacing": float(fixed_summary.get("p95_ms", float("inf"))) <= target_ms,
        "one_batch": one_batch,
    }


def _one_batch(conn: Conn, dsn: str, model: str, model_dir: Path, mb: float) -> dict[str, Any]:
    """0.1.0's way: the whole document in one batch; one live row inserted just after it."""
    text = document(mb)
    env = worker_process.worker_env(
        dsn, model, model_dir.parent, EMBED_PIECE_TOKENS=1_000_000_000, EMBED_POLL_SECONDS=30
    )
    worker = worker_process.start(env)
    try:
        _sample(conn, 3, lambda: True)
        started = time.monotonic()
        conn.execute("INSERT INTO bench_docs VALUES (2, %s)", (text,))
        time.sleep(0.5)  # the document's batch is read first
        (latency,) = _sample(conn, 1, lambda: True, timeout=3600)
        wait_until(
            lambda: (
                conn.execute("SELECT count(*) FROM bench_docs_chunks WHERE id = 2").fetchone()
                != (0,)
            ),
            3600,
            "the document",
        )
        wall = time.monotonic() - started
    finally:
        worker.terminate()
        worker.wait(30)
    return {
        "document_mb": round(len(text.encode()) / 1e6, 2),
        "document_wall_s": round(wall, 1),
        "live_row_ms": round(latency, 1),
    }


def _piece_seconds(conn: Conn) -> float:
    """One piece's time, timed between two commits of the document's progress."""
    first = _progress(conn)
    wait_until(lambda: _progress(conn) != first, 600, "a piece")
    started, second = time.monotonic(), _progress(conn)
    wait_until(lambda: _progress(conn) != second, 600, "the next piece")
    return max(time.monotonic() - started, 0.05)


def _random_spacing(piece_s: float) -> Any:
    draw = random.Random(25).uniform
    return lambda: draw(0.05, 1.5 * piece_s)


def _sample(
    conn: Conn, samples: int, go_on: Any, spacing: Any = lambda: 0.2, timeout: float = 600
) -> list[float]:
    return sampling.live_latencies(
        conn,
        "bench_notes",
        "INSERT INTO bench_notes (body) VALUES (%s) RETURNING id",
        "written by the application while a long document is embedded.",
        samples,
        go_on=go_on,
        pause=spacing,
        timeout=timeout,
    )


def _progress(conn: Conn) -> int | None:
    row = conn.execute(
        "SELECT chunks_done FROM embeddings.documents WHERE state = 'in_progress'"
    ).fetchone()
    return int(row[0]) if row else None


def _chunks(*, conn_dsn: str, model_dir: Path, text: str) -> tuple[int, int]:
    """Chunks of document 1 as stored, and the tokens the worker embedded for them (split
    again here, after the run)."""
    with psycopg.connect(conn_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM bench_docs_chunks WHERE id = 1").fetchone()
    overlap = CHUNK_TOKENS // 10  # watch()'s default
    split = Splitter.from_file(model_dir / "tokenizer.json", CHUNK_TOKENS, overlap).split(text)
    assert row is not None and row[0] == len(split), "the stored chunks are the document's"
    return len(split), sum(c.tokens for c in split)

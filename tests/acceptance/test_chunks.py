"""Chunked targets with the real `embed-worker` process, as the least-privilege worker role:
the running worker keeps the chunk table in step; `search` and POST /search rank documents by
their best chunk; status and failures --retry cover chunked targets."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.acceptance.test_http import TOKEN, post
from tests.support import stores
from tests.support.login_roles import login_role
from tests.support.process import WorkerProcess, run_cli, wait_for

Conn = psycopg.Connection[Any]

# Characters of two, three and four bytes: chunk offsets count characters, not bytes.
FILLER = (
    "The planner estimates the cost of each scan — naïvely — from table statistics 📊, and a "
    "vacuum reclaims the space of dead row versions so that pages can be reused later on. "
)
DOCS = {
    1: FILLER * 12 + "\n\nThe lighthouse keeper painted the heavy door violet in 1887.",
    2: FILLER * 12 + "\n\nOur bakery proofs its rye sourdough for thirty hours in a cold cellar.",
    3: "A short note about nothing in particular.",
}


@pytest.fixture
def chunked(conn: Conn, worker_env: dict[str, str]) -> int:
    stores.texts_table(conn, DOCS)
    row = conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => 48,"
        " chunk_overlap => 8)",
        (worker_env["EMBED_MODEL"],),
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def search_dsn(conn: Conn, dsn: str) -> Iterator[str]:
    """A read-only role for POST /search: SELECT on docs and its chunks."""
    with login_role(conn, dsn, "app_search", "SELECT ON docs, docs_chunks") as role_dsn:
        yield role_dsn


def cli(dsn: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={**env, "DATABASE_URL": dsn})


def documents_with_chunks(conn: Conn) -> set[int]:
    return {r[0] for r in conn.execute("SELECT DISTINCT id FROM docs_chunks")}


def test_the_running_worker_chunks_search_finds_documents_by_their_best_chunk(
    conn: Conn,
    chunked: int,
    start_worker: Callable[..., WorkerProcess],
    dsn: str,
    worker_env: dict[str, str],
    search_dsn: str,
) -> None:
    # The worker's role reads no user table: /search searches as a role that may.
    worker = start_worker(EMBED_HTTP_TOKEN=TOKEN, EMBED_SEARCH_DATABASE_URL=search_dsn)
    wait_for(lambda: documents_with_chunks(conn) == {1, 2, 3}, what="chunks of every document")
    # A new document is chunked by the running worker too.
    conn.execute("INSERT INTO docs VALUES (4, %s)", (FILLER * 8,))
    wait_for(lambda: 4 in documents_with_chunks(conn), what="chunks of the new document")

    # The command line searches as its own connection's role (the application's here).
    result = cli(
        dsn, worker_env, "search", "docs", "what colour was the door?", "-k", "2", "--json"
    )
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert hits[0]["key"] == 1 and "violet" in hits[0]["content"]
    assert len({h["key"] for h in hits}) == len(hits) == 2  # documents, not chunks
    bodies = dict(conn.execute("SELECT id, body FROM docs").fetchall())
    for hit in hits:  # the chunk's place in its document
        assert bodies[hit["key"]][hit["start_offset"] : hit["end_offset"]] == hit["content"]
    assert hits[0]["start_offset"] > 0
    table = cli(dsn, worker_env, "search", "docs", "how long does the rye bread rise?")
    assert table.returncode == 0, table.stderr
    first = table.stdout.splitlines()[2]
    assert first.split()[1] == "2" and "sourdough" in first

    status, _, body = post(worker, "/search", {"table": "docs", "query": "bread", "k": 1})
    assert status == 200
    (hit,) = body["results"]
    assert hit["key"] == 2 and "sourdough" in hit["content"] and 0 < hit["similarity"] <= 1
    assert DOCS[2][hit["start_offset"] : hit["end_offset"]] == hit["content"]
    assert hit["start_offset"] > 0
    status, _, body = post(worker, "/search", {"table": "nowhere", "query": "bread"})
    assert status == 404 and "nowhere" in body["error"]
    status, _, body = post(worker, "/search", {"table": "docs", "query": "", "k": 1})
    assert status == 400
    bad = {"table": "docs", "query": "bread", "filter": {"nope": 1}}
    status, _, body = post(worker, "/search", bad)
    assert status == 400 and "no column nope" in body["error"]
    status, _, body = post(worker, "/search", {**bad, "filter": {"id": [1, 3]}, "k": 3})
    assert status == 200 and sorted(h["key"] for h in body["results"]) == [1, 3]

    # Hybrid: k documents, each with the fused score and its place in both rankings, keys
    # typed as in the table; the fusion tuned by the request, bad tuning a 400.
    conn.execute("SELECT embeddings.enable_fts('docs')")
    hybrid = {
        "table": "docs",
        "query": "violet lighthouse door",
        "k": 3,
        "mode": "hybrid",
        "fusion": "rrf",
    }
    status, _, body = post(worker, "/search", hybrid)
    assert status == 200, body
    hits = body["results"]
    assert len(hits) == 3 and hits[0]["key"] == 1 and hits[0]["text_rank"] == 1
    assert all(type(h["key"]) is int for h in hits)
    for h in hits:
        parts = [w / (60 + r) for w, r in ((1, h["vector_rank"]), (2, h["text_rank"])) if r]
        assert h["score"] == pytest.approx(sum(parts))
        assert bodies[h["key"]][h["start_offset"] : h["end_offset"]] == h["content"]
    status, _, body = post(worker, "/search", {**hybrid, "rrf_k": 1, "text_weight": 0.5})
    assert status == 200, body
    for h in body["results"]:
        parts = [1 / (1 + h["vector_rank"])] if h["vector_rank"] else []
        parts += [0.5 / (1 + h["text_rank"])] if h["text_rank"] else []
        assert h["score"] == pytest.approx(sum(parts))
    status, _, body = post(worker, "/search", {**hybrid, "depth": 0})
    assert status == 400 and '"depth" must be an integer from 1 to 1000' in body["error"]
    status, _, body = post(worker, "/search", {**hybrid, "mode": "vector", "rrf_k": 5})
    assert status == 400 and "tune hybrid search" in body["error"]

    status_json = cli(dsn, worker_env, "status", "--json")
    assert status_json.returncode == 0, status_json.stderr
    (row,) = json.loads(status_json.stdout)
    assert row["total_rows"] == row["embedded_rows"] == 4
    assert [(row["chunks"],)] == conn.execute("SELECT count(*) FROM docs_chunks").fetchall()


def test_failures_retry_re_chunks_a_dead_lettered_document(
    conn: Conn, worker_dsn: str, worker_env: dict[str, str]
) -> None:
    stores.texts_table(conn, DOCS)
    conn.execute(
        "CREATE FUNCTION picky(d docs) RETURNS text LANGUAGE plpgsql STABLE AS"
        " $$ BEGIN IF d.id = 2 AND current_setting('test.fail', true) = 'on' THEN"
        " RAISE 'not today'; END IF; RETURN d.body; END $$"
    )
    conn.execute(
        "SELECT embeddings.watch('docs', 'picky', model => %s, chunk_tokens => 48,"
        " chunk_overlap => 8)",
        (worker_env["EMBED_MODEL"],),
    )
    dbname = conn.info.dbname
    conn.execute(f"ALTER DATABASE {dbname} SET test.fail = 'on'")
    env = {**worker_env, "EMBED_MAX_ATTEMPTS": "1"}
    assert cli(worker_dsn, env, "run", "--once").returncode == 0
    assert documents_with_chunks(conn) == {1, 3}
    listed = cli(worker_dsn, env, "failures", "--json")
    (failure,) = json.loads(listed.stdout)
    assert failure["row_key"] == 2 and "not today" in failure["last_error"]
    conn.execute(f"ALTER DATABASE {dbname} RESET test.fail")
    assert cli(worker_dsn, env, "failures", "--retry").returncode == 0
    assert cli(worker_dsn, env, "run", "--once").returncode == 0
    assert documents_with_chunks(conn) == {1, 2, 3}

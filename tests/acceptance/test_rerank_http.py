"""POST /search with the rerank stage, served by the real `embed-worker` process as a
least-privilege worker role: the worker embeds the rows, loads the cross-encoder named by the
request (or the table's) from EMBED_MODEL_PATH on first use, and answers in its order; a
reranker it cannot load is a 503 naming it, a bad field a 400."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.acceptance.test_http import TOKEN, post
from tests.integration.test_rerank import BODIES, QUESTION, RERANKER, reranker_path
from tests.support.login_roles import login_role
from tests.support.models import MINILM
from tests.support.process import WorkerProcess, wait_for
from worker.models.files import ModelLocation
from worker.models.reranker import CrossEncoder

Conn = psycopg.Connection[Any]

__all__ = ["reranker_path"]  # the session fixture, shared with the integration tests


@pytest.fixture
def search_dsn(conn: Conn, dsn: str) -> Iterator[str]:
    """A read-only role for POST /search."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.cursor().executemany("INSERT INTO docs VALUES (%s, %s)", list(enumerate(BODIES, start=1)))
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (MINILM,))
    with login_role(conn, dsn, "app_search", "SELECT ON docs") as role_dsn:
        yield role_dsn


def searching_worker(
    conn: Conn, start_worker: Callable[..., WorkerProcess], search_dsn: str, **env: str
) -> WorkerProcess:
    """The worker serving POST /search as the search role, once every row of docs has its
    vector."""
    worker = start_worker(EMBED_HTTP_TOKEN=TOKEN, EMBED_SEARCH_DATABASE_URL=search_dsn, **env)
    wait_for(
        lambda: conn.execute("SELECT count(embedding) FROM docs").fetchone() == (len(BODIES),),
        what="every row embedded",
    )
    return worker


def test_post_search_reranks_as_the_cross_encoder_scores(
    conn: Conn,
    search_dsn: str,
    reranker_path: str,
    start_worker: Callable[..., WorkerProcess],
    worker_env: dict[str, str],
) -> None:
    model_path = os.pathsep.join([worker_env["EMBED_MODEL_PATH"], reranker_path])
    worker = searching_worker(conn, start_worker, search_dsn, EMBED_MODEL_PATH=model_path)
    ask = {"table": "docs", "query": QUESTION, "k": 3}

    status, _, first = post(worker, "/search", {**ask, "k": 9})
    assert status == 200 and all(r["rerank_score"] is None for r in first["results"])
    status, _, answer = post(worker, "/search", {**ask, "rerank": RERANKER, "rerank_depth": 9})
    assert status == 200, answer

    scorer = CrossEncoder.load(RERANKER, location=ModelLocation.of(reranker_path), threads=1)
    scores = scorer.score(QUESTION, [r["content"] for r in first["results"]])
    best = sorted(range(9), key=lambda i: (-scores[i], i))[:3]
    assert [r["key"] for r in answer["results"]] == [first["results"][i]["key"] for i in best]
    assert [r["rerank_score"] for r in answer["results"]] == pytest.approx(
        [float(scores[i]) for i in best], rel=1e-5
    )

    # The table's setting applies to searches that name none.
    conn.execute("SELECT embeddings.set_rerank('docs', %s, depth => 9)", (RERANKER,))
    status, _, by_table = post(worker, "/search", ask)
    assert status == 200 and by_table["results"] == answer["results"]

    status, _, missing = post(worker, "/search", {**ask, "rerank": "no-such-reranker"})
    assert status == 400 and "no-such-reranker" in missing["error"]
    status, _, bad = post(worker, "/search", {**ask, "rerank": True})
    assert status == 400 and '"rerank"' in bad["error"]

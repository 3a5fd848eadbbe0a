"""POST /search reranked by a registered remote rerank API, served by the real `embed-worker`
process as a least-privilege worker role, searching as the application's role: the answer is in
the stand-in's order (tests/support/rerank_server.py, Cohere's shape, a key required), a changed
registration is used by the next search, a reranker that cannot answer is a 503 naming it, and
the key is in none of the worker's log lines or answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.acceptance.test_http import post
from tests.acceptance.test_rerank_http import search_dsn, searching_worker
from tests.integration.test_rerank import QUESTION
from tests.support.process import WorkerProcess, wait_for
from tests.support.rerank_server import RerankServer, overlap

__all__ = ["search_dsn"]  # the fixture of test_rerank_http: a read-only role for POST /search

Conn = psycopg.Connection[Any]
KEY = "cohere-ACCEPTANCE-0123456789abcdef"


def test_post_search_reranks_through_a_remote_api(
    conn: Conn, search_dsn: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    with RerankServer(kind="cohere", api_key=KEY) as server:
        server.echo_key_in_errors = True
        conn.execute(
            "SELECT embeddings.register_reranker('co-rr', 'cohere', %s, 'rerank-test')",
            (server.base_url,),
        )
        worker = searching_worker(conn, start_worker, search_dsn, COHERE_API_KEY=KEY)
        ask = {"table": "docs", "query": QUESTION, "k": 3}

        status, _, typo = post(worker, "/search", {**ask, "rerank": "co-rx"})
        assert status == 400, typo  # the caller's mistake: no retry will fix it
        assert "did you mean 'co-rr'?" in typo["error"] and "Known models" not in typo["error"]
        status, _, first = post(worker, "/search", {**ask, "k": 9})
        assert status == 200 and all(r["rerank_score"] is None for r in first["results"])
        status, _, answer = post(worker, "/search", {**ask, "rerank": "co-rr", "rerank_depth": 9})
        assert status == 200, answer
        scores = [overlap(QUESTION, r["content"]) for r in first["results"]]
        best = sorted(range(9), key=lambda i: (-scores[i], i))[:3]
        assert [r["key"] for r in answer["results"]] == [first["results"][i]["key"] for i in best]
        assert [r["rerank_score"] for r in answer["results"]] == pytest.approx(
            [scores[i] for i in best], rel=1e-6
        )
        assert server.requests[-1]["authorization"] == f"Bearer {KEY}"
        assert server.violations == []

        # Registered again, 4 documents per request: the next search goes by it.
        conn.execute(
            "SELECT embeddings.register_reranker('co-rr', 'cohere', %s, 'rerank-test',"
            " max_documents => 4)",
            (server.base_url,),
        )
        conn.execute("SELECT embeddings.set_rerank('docs', 'co-rr', depth => 9)")
        before = len(server.requests)
        status, _, by_table = post(worker, "/search", ask)
        assert status == 200 and by_table["results"] == answer["results"]
        assert sorted(len(d) for d in server.documents()[before:]) == [3, 3, 3]

        # A refused key, echoed back by the provider: 503, the key in no answer.
        server.api_key = "cohere-ANOTHER-KEY-0123456789"
        before = len(server.requests)
        status, headers, refused = post(worker, "/search", ask)
        assert status == 503 and "credential 'cohere' was refused" in refused["error"]
        assert "Retry-After" not in headers  # the key, not the time, is what must change
        # The search answered at the first refusal; its other requests (9 documents, 4 a
        # request: 3, each refused, none held back by a refusal) may still be on their way:
        # once answered, none can meet the key or the fault set for the next search.
        wait_for(lambda: len(server.requests) == before + 3, timeout=10, what="its 3 requests")
        server.api_key = KEY
        # A Retry-After longer than a search waits: 503, naming the reranker; the searches
        # after it are held back too, with nothing sent, until the time is over.
        server.retry_after = 120
        server.faults = ["429"]
        status, headers, limited = post(worker, "/search", ask)
        assert status == 503, limited
        assert headers["Retry-After"] == "120"  # the provider's, passed on to the client
        assert limited["error"].startswith("reranker co-rr: ")
        assert "rate limited (429); retry after 120 s" in limited["error"]
        # Held back: nothing sent for it. It asks a question of its own, since requests of the
        # search before it that the 429 did not hold back may still arrive.
        held_ask = {**ask, "query": "How long does a parcel take to arrive?"}
        status, headers, held = post(worker, "/search", held_ask)
        assert status == 503 and "retry after 1" in held["error"]
        assert 100 <= int(headers["Retry-After"]) <= 120
        asked = [r["body"].get("query") for r in server.requests if "body" in r]
        assert held_ask["query"] not in asked and QUESTION in asked
        status, _, unreranked = post(worker, "/search", {**ask, "rerank": False})
        assert status == 200 and all(r["rerank_score"] is None for r in unreranked["results"])

    texts = [str(limited), str(refused), worker.log_text()]
    assert not [t for t in texts if KEY in t or KEY[:12] in t or KEY[-8:] in t]

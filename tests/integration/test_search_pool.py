"""POST /search's pooled connections (worker/retrieval/pool.py): a connection comes back
with nothing of the last search's session, and one the server closed is replaced; a search
holds one only while its SQL runs (worker/retrieval/search.py: SearchService), which every
client goes through."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import psycopg
import pytest

from worker.cli import main as cli
from worker.config import Settings
from worker.http.server import serve
from worker.models.query_batch import QueryBatchers
from worker.models.reranker import Scores
from worker.process.runner import Worker
from worker.retrieval.pool import SearchConnections
from worker.retrieval.request import SearchRequest
from worker.retrieval.search import SearchService


def test_a_connection_comes_back_without_what_the_last_user_left(dsn: str) -> None:
    searches = SearchConnections(dsn, max_size=1)
    try:
        with searches.connection() as conn:
            backend = conn.info.backend_pid
            conn.execute("CREATE TEMPORARY TABLE left_behind (x int)")
            conn.execute("SELECT set_config('search_path', 'evil, pg_catalog', false)")
            conn.execute("SELECT pg_advisory_lock(42)")
        with searches.connection() as conn:
            assert conn.info.backend_pid == backend  # the same session, pooled
            found: Any = conn.execute("SELECT to_regclass('pg_temp.left_behind')").fetchone()
            assert found == (None,)
            path = conn.execute("SHOW search_path").fetchone()
            assert path is not None and not path[0].startswith("evil")
            locks = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
                (backend,),
            ).fetchone()
            assert locks == (0,)
    finally:
        searches.close()


def test_a_connection_the_server_closed_is_replaced(dsn: str) -> None:
    searches = SearchConnections(dsn, max_size=1)
    try:
        with searches.connection() as conn:
            backend = conn.info.backend_pid
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        with searches.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != backend
    finally:
        searches.close()


class _Statements:
    """Counts the statements our connections send (each cursor's execute(), resets included:
    reset_session() and discard_session() run theirs on a plain cursor)."""

    def __init__(self, monkeypatch: Any) -> None:
        self.sent = 0
        original = psycopg.Cursor.execute

        def execute(cursor: psycopg.Cursor[Any], *args: Any, **kwargs: Any) -> Any:
            self.sent += 1
            return original(cursor, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", execute)


def test_a_search_sends_six_statements(
    conn: psycopg.Connection[Any],
    dsn: str,
    minilm: str,
    run_once: Callable[..., Worker],
    embedders: Any,
    monkeypatch: Any,
) -> None:
    """Taking the connection (the pool's check: our ping), resolving the table, the search,
    the reset its owner's code calls for and the check that the table's model did not change
    meanwhile; giving it back (DISCARD ALL and our reset, one simple query). Before: 11, with a
    reset before the pool's check and one after it, and three pgvector type lookups a search."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, embedding vector(384))")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    conn.execute("INSERT INTO docs (id, body) VALUES (1, 'a first document'), (2, 'a second')")
    run_once()
    request = SearchRequest.parse({"table": "docs", "query": "document", "k": 2})
    searches = SearchConnections(dsn, max_size=1)
    try:
        service = SearchService(searches.connection, QueryBatchers(embedders.get))
        # The pool's first connection, made and typed; the table's model learnt.
        service.search(request)
        statements = _Statements(monkeypatch)
        for _ in range(3):
            before = statements.sent
            assert [r["key"] for r in service.search(request)] == [1, 2]
            assert statements.sent - before == 6
    finally:
        searches.close()


# --- the search service: no connection held while the CPU works; one path for every client --


def _watched_docs(
    conn: psycopg.Connection[Any], minilm: str, run_once: Callable[..., Worker]
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    conn.execute(
        "INSERT INTO docs (id, body) VALUES (1, 'a first document'), (2, 'a second one'),"
        " (3, 'and a third')"
    )
    run_once()


class _Blocking:
    """Blocks its caller, once `entered` is set, until the test sets `go`."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()

    def block(self) -> None:
        self.entered.set()
        assert self.go.wait(60)


class _BlockingReranker(_Blocking):
    """A cross-encoder stand-in that scores (shortest first) once the test looked at the
    pool."""

    name = "blocking-reranker"

    def score(self, question: str, passages: Sequence[str]) -> Scores:
        self.block()
        return np.array([-len(p) for p in passages], dtype=np.float32)


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _pool_is_whole(searches: SearchConnections) -> bool:
    """No connection leased, and another search takes the pool's only one (max_size=1)."""
    if searches.leased != 0:
        return False
    with searches.connection() as other:
        return other.execute("SELECT 1").fetchone() == (1,)


def test_a_search_holds_no_connection_while_its_results_are_reranked(
    conn: psycopg.Connection[Any],
    dsn: str,
    minilm: str,
    run_once: Callable[..., Worker],
    embedders: Any,
) -> None:
    _watched_docs(conn, minilm, run_once)
    reranker = _BlockingReranker()
    searches = SearchConnections(dsn, max_size=1)
    service = SearchService(
        searches.connection, QueryBatchers(embedders.get), load_reranker=lambda *_: reranker
    )
    request = SearchRequest.parse(
        {"table": "docs", "query": "document", "k": 2, "rerank": reranker.name}
    )
    try:
        thread, outcome = _in_thread(lambda: service.search(request))
        assert reranker.entered.wait(60)
        whole = _pool_is_whole(searches)
        reranker.go.set()
        thread.join(60)
        assert whole
        assert [r["key"] for r in outcome["value"]] == [3, 2]  # the shortest contents first
        assert all(r["rerank_score"] is not None for r in outcome["value"])
    finally:
        reranker.go.set()
        searches.close()


def test_a_search_holds_no_connection_while_its_question_is_embedded(
    conn: psycopg.Connection[Any],
    dsn: str,
    minilm: str,
    run_once: Callable[..., Worker],
    embedders: Any,
) -> None:
    """The first search of a table reads its target, gives the connection back, embeds; a
    later one embeds first (the model its target had): neither holds a connection then."""
    _watched_docs(conn, minilm, run_once)
    searches = SearchConnections(dsn, max_size=1)
    gates: list[_Blocking] = []

    class Model:
        def __init__(self, inner: Any) -> None:
            self.inner, self.name, self.dim, self.max_tokens = inner, inner.name, inner.dim, 512

        def embed(self, texts: Sequence[str]) -> Any:
            gates[-1].block()
            return self.inner.embed(texts)

        def embed_with_stats(self, texts: Sequence[str]) -> Any:
            raise NotImplementedError

    model = Model(embedders.get(minilm))
    service = SearchService(searches.connection, QueryBatchers(lambda name: model))
    request = SearchRequest.parse({"table": "docs", "query": "document", "k": 3})
    try:
        for _ in range(2):  # the first search of the table, then one with its model known
            gates.append(_Blocking())
            thread, outcome = _in_thread(lambda: service.search(request))
            assert gates[-1].entered.wait(60)
            whole = _pool_is_whole(searches)
            gates[-1].go.set()
            thread.join(60)
            assert whole
            assert sorted(r["key"] for r in outcome["value"]) == [1, 2, 3]
    finally:
        for gate in gates:
            gate.go.set()
        searches.close()


def test_the_command_line_http_and_python_search_through_the_same_service(
    conn: psycopg.Connection[Any],
    minilm: str,
    model_path: str,
    settings: Settings,
    run_once: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _watched_docs(conn, minilm, run_once)
    served: list[str] = []
    original = SearchService.search

    def search(self: SearchService, request: SearchRequest) -> list[dict[str, Any]]:
        served.append(request.query)
        return original(self, request)

    monkeypatch.setattr(SearchService, "search", search)
    worker = run_once()
    server = serve(worker, settings.with_overrides(http_port=0))
    try:
        body = json.dumps({"table": "docs", "query": "over http", "k": 1}).encode()
        asked = urllib.request.Request(
            f"{server.url}/search", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(asked, timeout=60) as answer:
            assert len(json.load(answer)["results"]) == 1
    finally:
        server.shutdown()
    monkeypatch.setenv("DATABASE_URL", settings.dsn)
    monkeypatch.setenv("EMBED_MODEL_PATH", model_path)
    assert cli.main(["search", "docs", "on the command line", "-k", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1

    with SearchService.open(settings) as searches:  # a Python program's
        assert len(searches.search(SearchRequest("docs", "from python", k=1))) == 1

    assert served == ["over http", "on the command line", "from python"]

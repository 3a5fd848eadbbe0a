"""POST /search's pooled connections (worker/retrieval/pool.py): a connection comes back
with nothing of the last search's session, and one the server closed is replaced; a search
holds one only while its SQL runs (worker/retrieval/search.py: SearchService), which every
client goes through."""

from __future__ import annotations

import json
import logging
import select
import threading
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
import pytest

from worker import exceptions
from worker.cli import main as cli
from worker.config import Settings
from worker.http.server import serve
from worker.models.query_batch import QueryBatchers
from worker.models.reranker import Scores
from worker.process.runner import Worker
from worker.retrieval.errors import InvalidSearch
from worker.retrieval.pool import SearchConnections
from worker.retrieval.request import SearchRequest
from worker.retrieval.search import SearchService
from worker.session_guard import GuardedConnection


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


@pytest.mark.parametrize("ending", ["raised", "in a transaction", "in a failed transaction"])
def test_a_connection_given_back_however_the_lease_ended_comes_back_clean(
    dsn: str, ending: str
) -> None:
    """A connection given back after an error, or with a transaction left open, is DISCARDed
    before anyone else may take it, its transaction ended first (a rollback after would undo
    the reset)."""
    searches = SearchConnections(dsn, max_size=1)
    try:
        with pytest.raises(RuntimeError), searches.connection() as conn:
            backend = conn.info.backend_pid
            conn.execute("SELECT set_config('search_path', 'evil, pg_catalog', false)")
            conn.execute("CREATE TEMPORARY TABLE left_behind (x int)")
            if ending != "raised":  # a DISCARD in it would be rolled back with it
                conn.execute("BEGIN")
                conn.execute("INSERT INTO left_behind VALUES (1)")
            if ending == "in a failed transaction":
                with pytest.raises(psycopg.errors.DivisionByZero):
                    conn.execute("SELECT 1 / 0")
            raise RuntimeError("the search failed")
        with searches.connection() as conn:
            assert conn.info.backend_pid == backend
            assert conn.clean  # type: ignore[attr-defined]
            state = conn.execute(
                "SELECT current_setting('search_path'), to_regclass('pg_temp.left_behind')"
            ).fetchone()
            assert state is not None and not state[0].startswith("evil") and state[1] is None
    finally:
        searches.close()


@pytest.fixture
def docs(conn: psycopg.Connection[Any], minilm: str, run_once: Callable[..., Worker]) -> str:
    """Table `docs`, watched with all-MiniLM-L6-v2, its three rows embedded."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    conn.execute(
        "INSERT INTO docs (id, body) VALUES (1, 'a first document'), (2, 'a second one'),"
        " (3, 'and a third')"
    )
    run_once()
    return "docs"


@pytest.fixture
def one_connection(dsn: str) -> Iterator[SearchConnections]:
    """A search pool of one connection, closed after the test."""
    searches = SearchConnections(dsn, max_size=1)
    try:
        yield searches
    finally:
        searches.close()


def test_a_search_whose_pooled_connections_the_server_closed_answers(
    docs: str, dsn: str, embedders: Any
) -> None:
    """No statement checks a connection when it is taken: a search finds one broken by its
    first statement, and asks once more after the pool's idle connections were tried (a
    restarted server breaks them all)."""
    searches = SearchConnections(dsn, max_size=2)
    service = SearchService(
        searches.connection, QueryBatchers(embedders.get), recover=searches.check
    )
    request = SearchRequest.parse({"table": "docs", "query": "document", "k": 3})
    try:
        with searches.connection() as one, searches.connection() as two:  # two in the pool
            backends = {one.info.backend_pid, two.info.backend_pid}
        assert sorted(r["key"] for r in service.search(request)) == [1, 2, 3]
        with psycopg.connect(dsn, autocommit=True) as admin:
            for backend in backends:
                admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        assert sorted(r["key"] for r in service.search(request)) == [1, 2, 3]
        with searches.connection() as pooled:
            assert pooled.info.backend_pid not in backends
    finally:
        searches.close()


def test_a_search_on_a_broken_connection_asks_once_more_only(
    docs: str, dsn: str, embedders: Any
) -> None:
    """Asking again is bounded: a search whose connection is lost twice says so."""
    lost = psycopg.connect(dsn, autocommit=True)
    lost.close()
    leases: list[int] = []

    @contextmanager
    def lease() -> Iterator[psycopg.Connection[Any]]:
        leases.append(1)
        yield lost

    service = SearchService(lease, QueryBatchers(embedders.get))
    request = SearchRequest.parse({"table": "docs", "query": "document", "k": 3})
    with pytest.raises(exceptions.ConnectionLost):
        service.search(request)
    assert len(leases) == 2


class _Exchanges:
    """Counts our connections' exchanges with the server: each cursor's execute() outside a
    pipeline (resets included: reset_session() and discard_session() run theirs on a plain
    cursor, one simple query each), and each pipeline (its statements sent together, their
    results read after one sync)."""

    def __init__(self, monkeypatch: Any) -> None:
        self.sent = 0
        self.statements = 0
        self.sent_by_pool = 0  # of `sent`: those of the pool's own threads (its reset)
        self.queries: list[str] = []  # each statement's text, in the order sent
        execute, pipeline = psycopg.Cursor.execute, psycopg.Connection.pipeline
        asking = threading.current_thread()

        def counted_execute(
            cursor: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any
        ) -> Any:
            self.statements += 1
            self.queries.append(query if isinstance(query, str) else str(query))
            if cursor.connection._pipeline is None:
                self.sent += 1
                self.sent_by_pool += threading.current_thread() is not asking
            return execute(cursor, query, *args, **kwargs)

        def counted_pipeline(conn: psycopg.Connection[Any]) -> Any:
            self.sent += 1
            return pipeline(conn)

        monkeypatch.setattr(psycopg.Cursor, "execute", counted_execute)
        monkeypatch.setattr(psycopg.Connection, "pipeline", counted_pipeline)


def _given_back(searches: SearchConnections) -> None:
    """Once the pool has the connections back, reset (taking one waits for it, in a pool of
    one): what the pool's thread sends after a search has been sent."""
    with searches.connection():
        pass


def test_a_search_answers_after_one_exchange(
    conn: psycopg.Connection[Any],
    dsn: str,
    minilm: str,
    run_once: Callable[..., Worker],
    embedders: Any,
    monkeypatch: Any,
) -> None:
    """The table's target checked, the search, and the check that the table's model did not
    change meanwhile, sent together: the answer after one exchange; then, on the pool's
    thread, the DISCARD and reset its owner's code calls for, before another search may take
    the connection; nothing to take it (no ping). Before: two exchanges before the answer (the
    DISCARD sent with the model check), 6 before that (a ping, the check, the search, a
    reset, the model check, the DISCARD on a pool thread), and 11 before that."""
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
        _given_back(searches)
        exchanges = _Exchanges(monkeypatch)
        for searched in range(1, 4):
            assert [r["key"] for r in service.search(request)] == [1, 2]
            assert exchanges.sent - exchanges.sent_by_pool == searched  # the answer's
            _given_back(searches)
            assert exchanges.sent_by_pool == searched  # the DISCARD, after it
        assert exchanges.statements == 3 * (3 + 1)
        with searches.connection() as pooled:  # given back clean: nothing of the search left
            assert pooled.clean  # type: ignore[attr-defined]
        # The table's target changed since the last search: checked and searched anew.
        conn.execute("SELECT embeddings.enable_fts('docs', 'english')")
        before = exchanges.sent
        assert {r["key"] for r in service.search(request)} == {1, 2}
        assert exchanges.sent - before > 2
        assert service.targets.known("docs", None)[1].has_fulltext  # type: ignore[index]
    finally:
        searches.close()


def test_a_connection_keeps_its_plans_for_the_next_searches_of_its_table_only(
    conn: psycopg.Connection[Any],
    docs: str,
    one_connection: SearchConnections,
    run_once: Callable[..., Worker],
    minilm: str,
    embedders: Any,
    monkeypatch: Any,
) -> None:
    """The DISCARD that ends a search keeps the session's cached plans for the next searches
    of the same table: after DISCARD PLANS, hybrid search's BM25 ranking alone was planned
    again on every lease, 0.6-0.9 ms of Postgres CPU (bench/results/history/search.md). A
    search of another table drops them first, in its first exchange, so that no plan built
    while one table's owner's code ran serves another's searches
    (tests/security/test_search_plans.py)."""
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (minilm,))
    conn.execute("INSERT INTO notes VALUES (1, 'a note'), (2, 'another note')")
    run_once()
    service = SearchService(one_connection.connection, QueryBatchers(embedders.get))
    of_docs = SearchRequest.parse({"table": docs, "query": "document", "k": 2})
    of_notes = SearchRequest.parse({"table": "notes", "query": "note", "k": 2})
    for request in (of_docs, of_notes, of_docs):  # the tables' targets and models learnt
        service.search(request)
    _given_back(one_connection)
    exchanges = _Exchanges(monkeypatch)
    for _ in range(2):
        service.search(of_docs)
    _given_back(one_connection)
    assert not [q for q in exchanges.queries if "DISCARD PLANS" in q]
    assert exchanges.sent == 4  # two a search, as ever: the answer's, the pool's DISCARD
    exchanges.queries.clear()
    assert len(service.search(of_notes)) == 2
    _given_back(one_connection)
    dropped = [i for i, q in enumerate(exchanges.queries) if "DISCARD PLANS" in q]
    assert dropped == [0]  # first, in the pipeline with the check and the ranking
    assert exchanges.sent == 6


def test_a_search_looks_its_table_up_in_the_path_its_connection_read_once(
    conn: psycopg.Connection[Any], docs: str, one_connection: SearchConnections, embedders: Any
) -> None:
    """A table name is looked up in the search path the session started with, which the
    connection reads with its first reset: no search's check reads it again (pg_settings, every
    setting made into text, cost the check more than the rest of it). Here the function that
    reads it fails once the pool's connection is made, and searches still answer as before."""
    request = SearchRequest.parse({"table": docs, "query": "document", "k": 2})
    service = SearchService(one_connection.connection, QueryBatchers(embedders.get))
    first = [r["key"] for r in service.search(request)]
    assert len(first) == 2
    with one_connection.connection() as pooled:
        started = conn.execute(
            "SELECT reset_val FROM pg_settings WHERE name = 'search_path'"
        ).fetchone()
        assert started is not None and pooled.start_path == started[0]  # type: ignore[attr-defined]
    conn.execute(
        "CREATE OR REPLACE FUNCTION embeddings_internal.session_start_path() RETURNS text"
        " LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp"
        " AS $$ BEGIN RAISE EXCEPTION 'the start path read again'; END $$"
    )
    for _ in range(3):
        assert [r["key"] for r in service.search(request)] == first


def test_a_search_sent_with_its_check_fails_as_it_fails_alone(
    docs: str, one_connection: SearchConnections, embedders: Any
) -> None:
    """A ranking that fails in the exchange with its target's check (a filter naming no
    column) raises its own error once, and leaves the pooled session for the next search."""
    service = SearchService(one_connection.connection, QueryBatchers(embedders.get))
    asked = {"table": docs, "query": "document", "k": 3, "mode": "vector"}
    service.search(SearchRequest.parse(asked))  # the target known, the pool's connection typed
    with pytest.raises(InvalidSearch, match="nowhere"):
        service.search(SearchRequest.parse({**asked, "filter": {"nowhere": 1}}))
    assert sorted(r["key"] for r in service.search(SearchRequest.parse(asked))) == [1, 2, 3]


def test_a_refused_search_logs_no_warning(
    docs: str,
    one_connection: SearchConnections,
    embedders: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A filter naming no column is the caller's mistake: a 400, and nothing in the worker's
    log. Before: psycopg logged `WARNING error ignored terminating <psycopg.Pipeline ...>:
    pipeline aborted` for each one (the ranking's error let out of the pipeline's block), so a
    client could fill the operator's log with what reads as database trouble."""
    service = SearchService(one_connection.connection, QueryBatchers(embedders.get))
    asked = {"table": docs, "query": "document", "k": 3}
    service.search(SearchRequest.parse(asked))  # the target known: the pipelined path next
    # The ranking's error on the socket before the pipeline's last statement is sent (the
    # server sends an error at once), as when the client is slower than the server: one
    # search in ten here, more under load.
    as_left = GuardedConnection.execute_as_left

    def answered_first(conn: GuardedConnection, query: str, params: Any = None) -> Any:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 30)
        assert readable, "the ranking's error never came"
        return as_left(conn, query, params)

    monkeypatch.setattr(GuardedConnection, "execute_as_left", answered_first)
    caplog.set_level(logging.DEBUG)
    for _ in range(2):
        with pytest.raises(InvalidSearch, match="nope"):
            service.search(SearchRequest.parse({**asked, "filter": {"nope": 1}}))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# --- the search service: no connection held while the CPU works; one path for every client --


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
    docs: str, one_connection: SearchConnections, embedders: Any
) -> None:
    reranker = _BlockingReranker()
    service = SearchService(
        one_connection.connection, QueryBatchers(embedders.get), load_reranker=lambda *_: reranker
    )
    request = SearchRequest.parse(
        {"table": docs, "query": "document", "k": 2, "rerank": reranker.name}
    )
    try:
        thread, outcome = _in_thread(lambda: service.search(request))
        assert reranker.entered.wait(60)
        whole = _pool_is_whole(one_connection)
        reranker.go.set()
        thread.join(60)
        assert whole
        assert [r["key"] for r in outcome["value"]] == [3, 2]  # the shortest contents first
        assert all(r["rerank_score"] is not None for r in outcome["value"])
    finally:
        reranker.go.set()


def test_a_search_holds_no_connection_while_its_question_is_embedded(
    docs: str, one_connection: SearchConnections, minilm: str, embedders: Any
) -> None:
    """The first search of a table reads its target, gives the connection back, embeds; a
    later one embeds first (the model its target had): neither holds a connection then."""
    searches = one_connection
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


def test_the_command_line_http_and_python_search_through_the_same_service(
    docs: str,
    model_path: str,
    settings: Settings,
    run_once: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
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


@pytest.mark.parametrize("followed", [True, False], ids=["event-triggers", "no-event-triggers"])
@pytest.mark.parametrize("dropped", ["body", "embedding"])
def test_a_search_of_a_table_whose_column_was_dropped_is_answered_as_a_first_one(
    conn: psycopg.Connection[Any],
    docs: str,
    dsn: str,
    one_connection: SearchConnections,
    embedders: Any,
    followed: bool,
    dropped: str,
) -> None:
    """A table searched before its content or embedding column was dropped is answered as
    a table searched first after the drop, however it is spelled: where the event triggers
    recorded the drop (a superuser's install), the content column's is the target's problem
    (a TargetError: a 404); without them, the embedding column's is found missing when the
    ranking fails. Before: the ranking sent with the known target's check failed, and its
    error was raised even when the check showed the target had changed, or when its
    registration read anew said why (400 "column s.body does not exist", at every later
    search)."""
    if not followed:
        conn.execute("ALTER EVENT TRIGGER embeddings_follow_schema_changes DISABLE")
        conn.execute("ALTER EVENT TRIGGER embeddings_forget_dropped DISABLE")
    service = SearchService(one_connection.connection, QueryBatchers(embedders.get))
    asked = {"table": docs, "query": "document", "k": 3}
    for _ in range(3):  # the target known, the pool's connection typed: the one exchange
        assert len(service.search(SearchRequest.parse(asked))) == 3
    conn.execute(f"ALTER TABLE docs DROP COLUMN {dropped}")

    def refusal(searches: SearchService, table: str) -> tuple[type, str]:
        with pytest.raises(exceptions.EmbedWorkerError) as refused:
            searches.search(SearchRequest.parse({**asked, "table": table}))
        return type(refused.value), str(refused.value)

    fresh = SearchConnections(dsn, max_size=1)
    try:  # each spelling searched first (a table name is known by its spelling)
        first_search = SearchService(fresh.connection, QueryBatchers(embedders.get))
        first = {table: refusal(first_search, table) for table in (docs, "public.docs")}
    finally:
        fresh.close()
    # The target's problem as status shows it (target_problems()), found whether or not the
    # event triggers recorded it.
    if dropped == "body":
        assert first[docs] == (
            exceptions.TargetError,
            "public.docs.embedding: its content column body was dropped; watch the table"
            " again with its new content",
        )
    elif not followed:  # (with them, the column's drop unwatched the table: not watched)
        assert first[docs][0] is exceptions.TargetError
        assert "its embedding column embedding is missing" in first[docs][1]
    for table in (docs, "public.docs", docs):
        assert refusal(service, table) == first[table]

"""A worker's session, and a pooled search connection, is replaced once it served
EMBED_SESSION_MAX_TABLES watched tables.

Postgres keeps what a session compiled of each table's generated functions (the guarded stores
and loads, their plans) until the session ends: about 0.7 MB a table in the writer's session,
so 700 MB beside 1,000 tables (schema-per-tenant) if nothing ends it. The sessions count the
targets they served and are replaced between two units of work, never inside a transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support.stores import watched_table
from worker import metrics, sessions
from worker.models.query_batch import QueryBatchers
from worker.process.runner import Worker
from worker.retrieval.pool import SearchConnections
from worker.retrieval.request import SearchRequest
from worker.retrieval.search import SearchService

Conn = psycopg.Connection[Any]


def replaced(session: str) -> float:
    """embed_worker_sessions_replaced_total of `session` (writer, fetcher, search), now."""
    value = metrics.REGISTRY.get_sample_value(
        "embed_worker_sessions_replaced_total", {"session": session}
    )
    return value or 0.0


def backend(session: sessions.Session) -> int:
    return session.get().pgconn.backend_pid


def test_a_session_past_its_tables_is_replaced_between_transactions_only(dsn: str) -> None:
    session = sessions.Session(dsn, "writer", threading.Event(), max_tables=2)
    try:
        first = backend(session)
        session.served({1, 2})
        session.served({2, 1})
        assert backend(session) == first  # two tables: within the bound

        conn = session.get()
        conn.execute("BEGIN")
        session.served({3})
        assert backend(session) == first  # a transaction open: kept until it ends
        conn.execute("COMMIT")

        session.served(())
        second = backend(session)
        assert second != first

        session.served({1, 2})  # counted anew from the new session's start
        assert backend(session) == second
        session.served({3})
        assert backend(session) != second
    finally:
        session.close()


def test_a_session_without_a_bound_keeps_its_connection(dsn: str) -> None:
    session = sessions.Session(dsn, "writer", threading.Event())
    try:
        first = backend(session)
        session.served(range(1000))
        assert backend(session) == first
    finally:
        session.close()


def test_a_worker_whose_sessions_are_replaced_for_their_tables_embeds_every_row(
    conn: Conn,
    run_once: Callable[..., Worker],
    tiny_models: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    tables = [f"docs_{n}" for n in range(4)]
    for table in tables:
        watched_table(
            conn, tiny_models[0], "SELECT g, 'note ' || g FROM generate_series(1, 3) g", table
        )

    before = {kind: replaced(kind) for kind in ("writer", "fetcher")}
    with caplog.at_level(logging.DEBUG, logger=sessions.__name__):
        run_once(session_max_tables=1, batch_size=3)  # a batch: one table's three rows

    for table in tables:
        left = conn.execute(f"SELECT count(*) FROM {table} WHERE embedding IS NULL").fetchone()
        assert left == (0,), table
    logged = [r.getMessage() for r in caplog.records if "a new session after" in r.getMessage()]
    assert any(m.startswith("writer:") for m in logged), caplog.text
    assert any(m.startswith("fetcher:") for m in logged), caplog.text
    for kind, count in before.items():  # (the counter is the process's: other tests' too)
        assert replaced(kind) > count, kind


def test_a_search_connection_past_its_tables_is_replaced_when_given_back(
    conn: Conn,
    dsn: str,
    run_once: Callable[..., Worker],
    tiny_models: tuple[str, str],
    embedders: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each table's search functions stay compiled in the session that ran them (about 0.16 MB
    a table): a pool of 8 that searched 1,000 tables would hold 1.3 GB until psycopg_pool's
    hourly replacement. Replaced as a connection past its lifetime is: no warning."""
    tables = [f"docs_{n}" for n in range(3)]
    for table in tables:
        watched_table(conn, tiny_models[0], "VALUES (1, 'a note'), (2, 'another')", table)
    run_once()
    searches = SearchConnections(dsn, max_size=1, max_tables=2)
    service = SearchService(searches.connection, QueryBatchers(embedders.get))

    def search(table: str) -> int:
        assert len(service.search(SearchRequest.parse({"table": table, "query": "note"}))) == 2
        searches.pool.wait()  # (given back)
        with searches.connection() as leased:
            return leased.info.backend_pid

    before = replaced("search")
    caplog.clear()  # (run_once's start may warn of other embed-worker processes on the machine)
    try:
        with caplog.at_level(logging.INFO):
            first = search(tables[0])
            assert search(tables[1]) == first
            assert search(tables[0]) == first  # two tables: within the bound
            assert search(tables[2]) != first
    finally:
        searches.close()
    assert replaced("search") == before + 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text

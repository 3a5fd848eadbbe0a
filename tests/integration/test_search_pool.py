"""POST /search's pooled connections (worker/http/search_pool.py): a connection comes back
with nothing of the last search's session, and one the server closed is replaced."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from worker.http.search_pool import SearchConnections
from worker.process.runner import Worker
from worker.retrieval import search
from worker.retrieval.request import SearchRequest


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


def test_a_search_on_a_pooled_connection_sends_six_statements(
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
        with searches.connection() as pooled:  # the pool's first connection, made and typed
            search.run(pooled, embedders.get, request)
        statements = _Statements(monkeypatch)
        for _ in range(3):
            before = statements.sent
            with searches.connection() as pooled:
                assert [r["key"] for r in search.run(pooled, embedders.get, request)] == [1, 2]
            assert statements.sent - before == 6
    finally:
        searches.close()

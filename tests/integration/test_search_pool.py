"""POST /search's pooled connections (worker/http/search_pool.py): a connection comes back
with nothing of the last search's session, and one the server closed is replaced."""

from __future__ import annotations

from typing import Any

import psycopg

from worker.http.search_pool import SearchConnections


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

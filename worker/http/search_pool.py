"""POST /search's database connections: a pool (psycopg_pool), so a question pays no
connection set-up; opened at the first search, closed with the server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg_pool import PoolTimeout

from worker import db, exceptions

CONNECTION_TIMEOUT = 5.0  # seconds a search waits for a pooled connection


class SearchConnections:
    def __init__(
        self, dsn: str, *, max_size: int, lock_timeout_ms: int = db.DEFAULT_LOCK_TIMEOUT_MS
    ) -> None:
        """`dsn`: the search role's when one is configured (EMBED_SEARCH_DATABASE_URL), whose
        rights, row-level security included, decide what an answer holds; `max_size`: one
        connection per HTTP connection served at once, at most; `lock_timeout_ms`: the longest
        a search waits for a lock (EMBED_LOCK_TIMEOUT_MS)."""
        self.dsn = dsn
        self.pool = db.pool(dsn, max_size=max_size, name="search", lock_timeout_ms=lock_timeout_ms)
        self._opened = False
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[db.Connection]:
        """A pooled connection for one search (GuardedConnection: reset before use, DISCARDed
        when given back); ConnectionLost when none comes within CONNECTION_TIMEOUT (the
        database is down, or every one is busy)."""
        with self._lock:
            if not self._opened:
                self.pool.open(wait=False)
                self._opened = True
        try:
            with self.pool.connection(timeout=CONNECTION_TIMEOUT) as conn:
                yield conn
        except PoolTimeout:
            raise exceptions.ConnectionLost(
                f"no connection to {db.describe(self.dsn)} for the search within "
                f"{CONNECTION_TIMEOUT:.0f} s"
            ) from None

    def close(self) -> None:
        self.pool.close()

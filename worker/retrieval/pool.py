"""Searches' database connections: a pool (psycopg_pool), so a question pays no connection
set-up; opened at the first search, closed with its owner. A search leases a connection only
while its SQL runs (worker/retrieval/search.py), so a few serve many searches at once; how
many are leased and how long a search waited for one are in /metrics."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import pq
from psycopg_pool import PoolTimeout

from worker import conninfo, db, exceptions, metrics
from worker.session_guard import GuardedConnection

logger = logging.getLogger(__name__)

CONNECTION_TIMEOUT = 5.0  # seconds a search waits for a pooled connection


class SearchConnections:
    def __init__(
        self,
        dsn: str,
        *,
        max_size: int,
        lock_timeout_ms: int = db.DEFAULT_LOCK_TIMEOUT_MS,
        max_tables: int = 0,
        per_transaction: bool = False,
    ) -> None:
        """`dsn`: the search role's when one is configured (EMBED_SEARCH_DATABASE_URL), whose
        rights, row-level security included, decide what an answer holds; `max_size`: the
        searches whose SQL runs at once (EMBED_SEARCH_POOL_SIZE), at most; `lock_timeout_ms`:
        the longest a search waits for a lock (EMBED_LOCK_TIMEOUT_MS); `max_tables`: a
        connection that searched more different tables is replaced when given back
        (EMBED_SESSION_MAX_TABLES; 0: never): its session keeps each table's search functions
        compiled, about 0.16 MB a table, until it ends; `per_transaction`: behind a transaction
        pooler (EMBED_POOL_MODE=transaction: db.pool)."""
        self.dsn = dsn
        self.max_size = max_size
        self.max_tables = max_tables
        # The targets each pooled connection searched (its `plans_of` after each lease).
        self._searched: weakref.WeakKeyDictionary[GuardedConnection, set[int]] = (
            weakref.WeakKeyDictionary()
        )
        self.pool = db.pool(
            dsn,
            max_size=max_size,
            name="search",
            lock_timeout_ms=lock_timeout_ms,
            reset=_leave_clean,
            per_transaction=per_transaction,
        )
        self._opened = False
        self._lock = threading.Lock()
        self.leased = 0  # connections a search holds now
        metrics.SEARCH_POOL_SIZE.set(max_size)

    @contextmanager
    def connection(self) -> Iterator[db.Connection]:
        """A pooled connection for one search's SQL, as it was given back: no statement is
        sent to take it. ConnectionLost when none comes within CONNECTION_TIMEOUT (the database
        is down, or every one is busy). Given back, a connection its user did not leave clean
        (session_guard: discard_session()) is DISCARDed by the pool on a thread of its own,
        after the search answered and before any other search may take it (psycopg_pool runs
        `reset` so); one that cannot be is closed (the pool replaces it)."""
        with self._lock:
            if not self._opened:
                self.pool.open(wait=False)
                self._opened = True
        asked = time.perf_counter()
        try:
            with self.pool.connection(timeout=CONNECTION_TIMEOUT) as conn:
                metrics.SEARCH_CONNECTION_WAIT.observe(time.perf_counter() - asked)
                self._count(+1)
                try:
                    yield conn
                finally:
                    self._count(-1)
                    self._count_tables(conn)
        except PoolTimeout:
            raise exceptions.ConnectionLost(
                f"no connection to {conninfo.describe(self.dsn)} for the search within "
                f"{CONNECTION_TIMEOUT:.0f} s"
            ) from None

    def _count_tables(self, conn: GuardedConnection) -> None:
        """Notes the table the lease searched; past `max_tables` different ones, the pool
        replaces the connection when it comes back, as it replaces one past its lifetime (an
        info line, where a connection given back closed is a warning)."""
        if not self.max_tables or conn.plans_of is None:
            return
        searched = self._searched.setdefault(conn, set())
        searched.add(conn.plans_of)
        if len(searched) > self.max_tables:
            logger.debug("search: a new session after %d tables", len(searched))
            conn._expire_at = 0.0  # (psycopg_pool's own, which psycopg declares)
            metrics.SESSIONS_REPLACED.labels("search").inc()
            del self._searched[conn]

    def check(self) -> None:
        """The idle connections tried, the broken ones replaced (psycopg_pool's check()):
        after a search found its connection broken, before it asks again."""
        self.pool.check()

    def _count(self, change: int) -> None:
        with self._lock:
            self.leased += change
        metrics.SEARCH_CONNECTIONS_LEASED.inc(change)

    def close(self) -> None:
        self.pool.close()


def _leave_clean(conn: GuardedConnection) -> None:
    """Nothing of this lease's session for the next (the pool's `reset`): its transaction
    ended (a rollback would undo a reset made in it), then DISCARD ALL and our reset, unless
    its user did so last. The cached plans stay if they are one target's (plans_for()): a
    search of any other drops them first."""
    if conn.closed or conn.clean:
        return
    try:
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            conn.rollback()
        conn.discard_session(keeping_plans_of=conn.plans_of)
    except psycopg.Error:
        conn.close()  # given back closed: the pool makes another

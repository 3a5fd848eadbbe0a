"""Our sessions trust nothing that someone else's code left in them.

A watched table's owner's code runs in our sessions: its triggers when the worker writes
vectors, its content function when the worker loads content or a sweep scans, always through
the owner-run functions (sql/32_access.sql), with the owner's rights. What it can still leave
behind is session state: `set_config(name, value, false)` outlives the SECURITY DEFINER function
and the commit. A search path that puts the owner's schema before pg_catalog makes our next
unqualified `clock_timestamp()` the owner's function, run as us; a statement_timeout of 1 ms or
`default_transaction_read_only` stops us serving every other tenant.

So every connection db.connect() opens is a GuardedConnection: before any statement that
follows one which may have run someone else's code, it resets the session (RESET ALL: every
setting back to what the role and database give it at connect) and pins our own settings
(`session_reset` in queries.sql: the search path `pg_catalog, pg_temp`, where only the installer
creates, and the date and interval formats psycopg reads). A statement "may have run someone else's
code" unless it is one of ours that says it runs none (`-- ours:` in its queries.sql header):
the default is distrust, so a new statement is safe before it is fast. A transaction or
savepoint that rolls back undoes the resets made in it, so it leaves the session distrusted
too; so does a commit after distrusted statements (deferred triggers fire at COMMIT).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq, sql

from worker import queries


def _ours(query: Any) -> bool:
    """Whether `query` is one of ours that runs nobody else's code."""
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    if isinstance(query, str):
        return query.startswith(queries.OURS)
    if isinstance(query, sql.Composed):
        first = next(iter(query), None)
        return isinstance(first, sql.SQL) and first.as_string().startswith(queries.OURS)
    if isinstance(query, sql.SQL):
        return query.as_string().startswith(queries.OURS)
    return False


class GuardedCursor(psycopg.Cursor[Any]):
    """A cursor that resets a distrusted session before its statement runs."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        conn = self.connection
        assert isinstance(conn, GuardedConnection)
        conn.before_statement()
        try:
            return super().execute(query, params, **kwargs)
        finally:
            conn.after_statement(query)

    def executemany(self, query: Any, params_seq: Iterable[Any], **kwargs: Any) -> None:
        conn = self.connection
        assert isinstance(conn, GuardedConnection)
        conn.before_statement()
        try:
            super().executemany(query, params_seq, **kwargs)
        finally:
            conn.after_statement(query)

    def stream(self, query: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
        conn = self.connection
        assert isinstance(conn, GuardedConnection)
        conn.before_statement()
        try:
            yield from super().stream(query, params, **kwargs)
        finally:
            conn.after_statement(query)


class GuardedConnection(psycopg.Connection[Any]):
    """A connection that resets its session after anyone else's code may have run in it."""

    _distrusted = True  # until the first reset: whatever the connection started with
    _ran_others = False  # in the transaction now open: statements that may have run others' code
    resets = 0  # how many resets this connection ran (bench/ and tests read it)

    def reset_session(self) -> None:
        """RESET ALL and our settings, now (a plain cursor: this statement is not guarded)."""
        with psycopg.Cursor(self) as cur:
            cur.execute(queries.get("session_reset"))
        self.resets += 1
        self._distrusted = False

    def discard_session(self) -> None:
        """DISCARD ALL, then our reset, in one exchange (a pooled connection given back):
        nothing of the last user's session stays, and the next user's first statement needs
        no reset of its own."""
        with psycopg.Cursor(self) as cur:  # two scripts without parameters: one simple query
            discard = queries.get("session_discard").rstrip().rstrip(";")
            cur.execute(discard + ";\n" + queries.get("session_reset"))
        self.resets += 1
        self._distrusted = False
        self._ran_others = False

    def before_statement(self) -> None:
        if self._distrusted and self.pgconn.transaction_status != pq.TransactionStatus.INERROR:
            self.reset_session()

    def after_statement(self, query: Any) -> None:
        if not _ours(query):
            self._distrusted = True
            self._ran_others = True

    @contextmanager
    def transaction(
        self, savepoint_name: str | None = None, force_rollback: bool = False
    ) -> Iterator[psycopg.Transaction]:
        try:
            with super().transaction(savepoint_name, force_rollback) as tx:
                yield tx
        except BaseException:
            self._distrusted = True  # the rollback undid the resets made inside
            raise
        finally:
            if force_rollback:
                self._distrusted = True
            self._closed_transaction()

    def commit(self) -> None:
        super().commit()
        self._closed_transaction()

    def rollback(self) -> None:
        super().rollback()
        self._distrusted = True

    def _closed_transaction(self) -> None:
        # Deferred triggers fire at COMMIT, after the last statement we could reset before.
        if self.pgconn.transaction_status == pq.TransactionStatus.IDLE and self._ran_others:
            self._distrusted = True
            self._ran_others = False

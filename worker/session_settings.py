"""The statements that pin our settings, after a RESET ALL (worker/session_guard.py).

For the session (`local` false), or behind a transaction pooler for the transaction alone
(`local` true: `set_config(..., true)`): the pinned settings (`session_settings` in queries.sql:
the search path, the formats psycopg reads, and the server pid or the transaction's marker,
worker/server_session.py), the bound of a transaction left idle, the lock timeout and the
connection check, the statement timeout, and a bound (a statement timeout local to the
transaction, for a statement that runs someone else's code). One place builds them for both
modes: a setting added to one cannot be missed in the other.
"""

from __future__ import annotations

import secrets
from typing import Any

from psycopg import sql

from worker import queries

CLIENT_CHECK_SINCE = 140000  # client_connection_check_interval: PostgreSQL 14
# idle_in_transaction_session_timeout of our sessions (`session_idle_timeout` in queries.sql):
# about 100 times the longest gap between two statements of a transaction of ours measured on a
# loaded machine (0.59 s), and beyond EMBED_VT_SECONDS' default (30 s), after which a batch's
# jobs are another worker's anyway.
IDLE_IN_TRANSACTION_MS = 60_000


class OurSettings:
    """A connection's settings statements; `session_settings` composed once per mode (every
    reset sends it, and composing costs)."""

    def __init__(self) -> None:
        self._pinned: dict[bool, str] = {}
        self._marker: tuple[int, int] | None = None

    def marker(self) -> tuple[int, int]:
        """The key of the advisory lock each transaction of ours takes in its reset, behind a
        transaction pooler: drawn at random once per connection, two int4s, 62 random bits."""
        if self._marker is None:
            self._marker = (secrets.randbits(31), secrets.randbits(31))
        return self._marker

    def statements(
        self,
        conn: Any,
        *,
        local: bool,
        bound: int | None,
        lock_timeout_ms: int | None,
        statement_timeout_ms: int | None,
    ) -> list[str]:
        """To follow a RESET ALL (session_reset, or transaction_discard), in `conn`'s
        session (for its server version and its quoting)."""
        flag = sql.SQL("true" if local else "false")
        parts = [
            self._pinned_statement(conn, local),
            setting(conn, "session_idle_timeout", IDLE_IN_TRANSACTION_MS, flag),
        ]
        if lock_timeout_ms is not None:
            parts.append(setting(conn, "session_lock_timeout", lock_timeout_ms, flag))
            if conn.info.server_version >= CLIENT_CHECK_SINCE:
                parts.append(queries.compose("session_client_check", local=flag).as_string(conn))
        if statement_timeout_ms is not None:
            parts.append(setting(conn, "session_statement_timeout", statement_timeout_ms, flag))
        if bound is not None:
            parts.append(setting(conn, "statement_bound", bound))
        return parts

    def _pinned_statement(self, conn: Any, local: bool) -> str:
        if local not in self._pinned:
            high, low = self.marker() if local else (0, 0)  # (0, 0): never taken
            self._pinned[local] = queries.compose(
                "session_settings",
                local=sql.SQL("true" if local else "false"),
                marker_1=sql.Literal(high),
                marker_2=sql.Literal(low),
            ).as_string(conn)
        return self._pinned[local]


def setting(conn: Any, name: str, ms: int, local: sql.SQL | None = None) -> str:
    """Setting `name`'s statement for `ms`; `local`: true for the transaction only (per
    transaction), false (the default) for the session."""
    local = sql.SQL("false") if local is None else local
    return queries.compose(name, ms=sql.Literal(f"{ms}ms"), local=local).as_string(conn)

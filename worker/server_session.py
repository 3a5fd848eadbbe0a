"""Which server session runs our statements, as the server itself says it.

libpq's backend pid (`conn.info.backend_pid`) is what the server we connected to sent at
start-up. Behind a pooler (PgBouncer, Supavisor) that server is the pooler, and the pid is its
cancel key for our client connection, no server backend's: `pg_terminate_backend()` of it ends
an unrelated backend or none, and `pg_stat_activity` knows nothing of it. So our settings'
statement (`session_settings` in queries.sql), which every reset sends, says it, with no
exchange of its own:

- for a session of our own (direct, or a session pooler), its row has `pg_backend_pid()`;
- behind a transaction pooler the server session changes from one transaction to the next,
  and the row of a transaction's reset arrives only with the end of the exchange it shares
  with the transaction's first statement (the server sends nothing before the exchange's
  Sync): too late for the watchdog, which must end that statement while it runs. So the reset
  also takes a transaction-level advisory lock of a key the connection drew at random, its
  marker: `pg_locks` shows at once which server backend holds it, and only while our
  transaction runs (a backend that ran it and went on to serve another client holds none).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import pq

PID_FIELD = b"server_pid"  # session_settings' column (queries.sql)


@dataclass(frozen=True)
class ServerSession:
    """How to find the server backend that runs our statements (terminate_backend's
    parameters): its pid, or per transaction the marker its transaction holds."""

    pid: int | None = None
    marker: tuple[int, int] | None = None

    def params(self) -> dict[str, int | None]:
        high, low = self.marker or (None, None)
        return {"pid": self.pid, "marker_1": high, "marker_2": low}


def server_pid(result: pq.abc.PGresult | None) -> int | None:
    """The pid in session_settings' row `result`; None for any other statement's result."""
    if result is None or result.status != pq.ExecStatus.TUPLES_OK or result.ntuples != 1:
        return None
    for column in range(result.nfields):
        if result.fname(column) == PID_FIELD:
            value = result.get_value(0, column)
            return None if value is None else int(bytes(value))
    return None

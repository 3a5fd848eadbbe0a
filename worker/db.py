"""Connections: connecting, and translating errors (which database a DSN names and how to print
it: worker/conninfo.py; a worker thread's connection that comes back when lost:
worker/sessions.py).

This is the one boundary where psycopg errors become `worker.exceptions` errors: a broken
connection becomes `ConnectionLost` (the caller reconnects), anything else `DatabaseError`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from worker import exceptions, queries, session_guard
from worker.conninfo import describe, redact

logger = logging.getLogger(__name__)

APPLICATION_NAME = "embed-worker"
# What our sessions read and write text in, whatever the database's encoding or a client
# setting (PGCLIENTENCODING, the URL's options, ALTER ROLE/DATABASE ... SET client_encoding)
# says: psycopg reads jsonb (the queue's messages) as UTF-8 in any encoding, and a LATIN1
# client cannot receive a CJK row at all. The server converts from the database's encoding; a
# row it cannot convert fails alone. A startup parameter, so that RESET ALL comes back to it;
# session_settings sets it again (behind a pooler, a server session's own value may differ).
CLIENT_ENCODING = "UTF8"
# The server's answer to a wrong password (libpq has no SQLSTATE for a failed connection).
_AUTHENTICATION = re.compile(r'authentication failed for user "(?P<user>[^"]*)"')
# Its answers that turn a connection away for now (no SQLSTATE either): the slots are full
# (53300: max_connections, or the role's or the database's CONNECTION LIMIT), or it is starting
# up, shutting down, in recovery, or a standby not open for reads (57P03).
_BUSY = re.compile(
    r"sorry, too many clients already|remaining connection slots are reserved"
    r"|too many connections for (role|database)"
    r"|the database system is (starting up|shutting down|in recovery mode"
    r"|not yet accepting connections|not accepting connections)"
)
# The longest any of our statements waits for a lock, in ms (EMBED_LOCK_TIMEOUT_MS's default).
DEFAULT_LOCK_TIMEOUT_MS = 500
# SQLSTATEs of a wait cut short: a lock not granted within lock_timeout, a statement past its
# statement_timeout (or cancelled).
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
# The transaction was rolled back for a concurrent one's sake: worth running again as it was.
TRANSACTION_CONFLICTS = frozenset({"40001", "40P01"})  # serialization failure, deadlock
READ_ONLY_TRANSACTION = "25006"

Connection = psycopg.Connection[Any]


def our_conninfo(dsn: str, connect_timeout: int) -> str:
    """`dsn` with what every session of ours connects with: our application name, the connect
    timeout, and the client encoding (CLIENT_ENCODING says why)."""
    return make_conninfo(
        dsn,
        application_name=APPLICATION_NAME,
        connect_timeout=str(connect_timeout),
        client_encoding=CLIENT_ENCODING,
    )


def connect(
    dsn: str,
    *,
    autocommit: bool = True,
    connect_timeout: int = 10,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    unbounded: bool = False,
    per_transaction: bool = False,
) -> Connection:
    """A new connection, autocommit by default: every transaction of ours is explicit. No
    statement on it waits longer than `lock_timeout_ms` for a lock (EMBED_LOCK_TIMEOUT_MS; 0:
    as the role and the database say). `unbounded`: no lock or statement timeout at all,
    whatever the role or the database set, for a statement that waits for others by design
    (CREATE INDEX CONCURRENTLY waits for every older transaction), in a thread nothing waits
    for. `per_transaction`: behind a transaction pooler (EMBED_POOL_MODE=transaction), each
    transaction resets the server session it runs in and sets ours for itself alone
    (worker/session_guard.py)."""
    try:
        conninfo = our_conninfo(dsn, connect_timeout)
        # No server-side prepared statements: behind a pooler in transaction mode (PgBouncer
        # before 1.21, or without max_prepared_statements) the next execution may reach a server
        # connection that never saw the PREPARE. Each of our statements serves a whole batch,
        # so the planning saved would be small anyway.
        conn = session_guard.GuardedConnection.connect(
            conninfo,
            autocommit=autocommit,
            prepare_threshold=None,
            cursor_factory=session_guard.GuardedCursor,
        )
        try:
            _check_encoding(conn, dsn)
            # Our transactions BEGIN at READ COMMITTED, as every statement of ours is written
            # for, whatever the session's default: behind a transaction pooler the session that
            # serves a transaction is not the one session_reset set up (docs/poolers.md).
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
            conn.lock_timeout_ms = 0 if unbounded else lock_timeout_ms or None
            conn.statement_timeout_ms = 0 if unbounded else None
            conn.per_transaction = per_transaction
            conn.reset_session()  # queries.sql: session_reset
            if not autocommit:
                conn.commit()
        except BaseException:
            conn.close()
            raise
        return conn
    except psycopg.OperationalError as exc:
        if exc.sqlstate == QUERY_CANCELED:
            # (not the server: a session whose settings leave our setup no time)
            raise exceptions.SessionTimedOut(
                f"cannot set up a session at {describe(dsn)}: its {exceptions.SESSION_TIMEOUT}"
                f" cancelled our first statements; {exceptions.TIMEOUT_FIX}"
            ) from None
        raise connect_failure(dsn, str(exc)) from None
    except psycopg.ProgrammingError as exc:
        raise exceptions.ConfigError(f"invalid DATABASE_URL: {redact(str(exc))}") from None


def connect_failure(dsn: str, message: str) -> exceptions.ConnectionLost:
    """What libpq's `message` of a connection attempt to `dsn` that failed says, as ours."""
    refused = _AUTHENTICATION.search(message)
    if refused:
        return exceptions.AuthenticationFailed(
            f"authentication failed for user {refused['user']} at {describe(dsn)}: check the "
            "password (in DATABASE_URL, PGPASSWORD or ~/.pgpass)"
        )
    failure = exceptions.ServerBusy if _BUSY.search(message) else exceptions.ConnectionLost
    return failure(
        f"cannot connect to {describe(dsn)}: {redact(message.strip())}{_pool_full(message)}"
    )


def _pool_full(message: str) -> str:
    """What to check when a pooler dropped us for a full pool: PgBouncer's query_wait_timeout
    (our session's first statement waited that long in its queue for a server connection),
    else nothing."""
    if "query_wait_timeout" not in message:
        return ""
    return (
        " (the pooler's pool for this user and database is full: each of its server connections"
        " is held by a client; in session mode a worker holds up to 3 + EMBED_SEARCH_POOL_SIZE"
        " + 3: raise the pool's size, e.g. PgBouncer's default_pool_size, or use transaction"
        " mode with EMBED_POOL_MODE=transaction; docs/poolers.md#connections)"
    )


def _check_encoding(conn: Connection, dsn: str) -> None:
    """A database whose encoding is SQL_ASCII stores bytes without saying which characters they
    are: psycopg returns its text as bytes, and jsonb (the queue's messages) refuses non-ASCII
    escapes there. Said plainly at connect, rather than as a Python error from inside."""
    if conn.info.parameter_status("server_encoding") == "SQL_ASCII":
        raise exceptions.UnusableEncoding(
            f"{describe(dsn)} has the encoding SQL_ASCII (bytes, no characters): embed-worker"
            " needs a database that knows its text's characters",
            "make a database with ENCODING 'UTF8' (CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE"
            " template0) and move the data into it (pg_dump, then pg_restore)",
        )


def pool(
    dsn: str,
    *,
    max_size: int,
    name: str,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    reset: Callable[[session_guard.GuardedConnection], None] | None = None,
    per_transaction: bool = False,
) -> ConnectionPool[session_guard.GuardedConnection]:
    """Connections kept open for short requests (POST /search), made as connect() makes them
    and handed out as they are: no statement is sent when one is taken (a broken one is found
    by its first statement: the caller asks again, worker/retrieval/search.py). `reset`: run
    on each connection given back, on a thread of the pool's, before another user may take it
    (SearchConnections DISCARDs there what its user's session left). Closed until the first
    `open()`: a worker whose HTTP side never searches opens none. `per_transaction`: as
    connect()'s; such a connection is never `clean` (no session is ours between two
    transactions), so a search sends no statements of its own in one pipeline."""
    conninfo = our_conninfo(dsn, 10)

    def configure(conn: session_guard.GuardedConnection) -> None:
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED  # (as connect() says why)
        conn.lock_timeout_ms = lock_timeout_ms or None
        conn.per_transaction = per_transaction
        conn.reset_session()
        conn.clean = not per_transaction  # a new session: nothing ran in it yet
        conn.pooled = True

    return ConnectionPool(
        conninfo,
        connection_class=session_guard.GuardedConnection,
        kwargs={
            "autocommit": True,
            "prepare_threshold": None,
            "cursor_factory": session_guard.GuardedCursor,
        },
        min_size=1,
        max_size=max_size,
        open=False,
        name=name,
        configure=configure,
        reset=reset,
    )


@contextmanager
def translated() -> Iterator[None]:
    """Translates psycopg errors raised inside into our exceptions."""
    try:
        yield
    except psycopg.OperationalError as exc:
        if _is_connection_failure(exc):
            raise exceptions.ConnectionLost(redact(str(exc).strip())) from exc
        if exc.sqlstate == QUERY_CANCELED:
            raise exceptions.StatementTimeout(redact(str(exc).strip())) from exc
        if exc.sqlstate == LOCK_NOT_AVAILABLE:
            raise exceptions.LockUnavailable(redact(str(exc).strip())) from exc
        if exc.sqlstate in TRANSACTION_CONFLICTS:
            raise exceptions.TransactionConflict(redact(str(exc).strip())) from exc
        raise exceptions.DatabaseError(redact(str(exc).strip())) from exc
    except psycopg.Error as exc:
        if unavailable(exc):
            raise exceptions.TargetUnavailable(redact(str(exc).strip())) from exc
        if exc.sqlstate == READ_ONLY_TRANSACTION:
            raise exceptions.ReadOnlyTransaction(redact(str(exc).strip())) from exc
        raise exceptions.DatabaseError(redact(str(exc).strip())) from exc


@contextmanager
def bounded(conn: Connection, ms: int, label: object = None) -> Iterator[None]:
    """In the block, statements that may run someone else's code (a table owner's triggers or
    content function: `label` says whose, as (stage, target id, row key or None)) run at most
    `ms` (worker/session_guard.py: GuardedConnection.bounded; a connection not made by connect()
    is not bounded)."""
    if isinstance(conn, session_guard.GuardedConnection):
        with conn.bounded(ms, label):
            yield
    else:
        yield


def server_pid(conn: Connection) -> int | None:
    """The pid of the server backend that runs `conn`'s statements, as the server says it
    (worker/server_session.py: behind a pooler libpq's is the pooler's cancel key); None per
    transaction (each may run in another server session)."""
    if isinstance(conn, session_guard.GuardedConnection):
        return conn.server_session().pid
    return None


def execute_alone(conn: Connection, statement: bytes) -> None:
    """`statement`, one that no transaction block may hold (CREATE INDEX CONCURRENTLY), sent
    on its own (worker/session_guard.py: GuardedConnection.execute_alone)."""
    if isinstance(conn, session_guard.GuardedConnection):
        conn.execute_alone(statement)
    else:
        conn.execute(statement)


def ended_by_watchdog(conn: Connection | None) -> object:
    """The label of the bounded statement for whose sake the watchdog ended `conn`'s session
    (worker/process/watchdog.py), or None."""
    return conn.ended_by if isinstance(conn, session_guard.GuardedConnection) else None


# A target's generated function, as an error's message or context names it.
_TARGET_FUNCTION = re.compile(r"function (embeddings\.)?embeddings_[0-9]+_[a-z_]+")

# SQLSTATE of the functions that read and write a watched table as its owner when they cannot
# serve it now (sql/32_access.sql: check_serving).
TARGET_UNAVAILABLE = "EW001"
INSUFFICIENT_PRIVILEGE = "42501"


def denied(exc: BaseException) -> bool:
    """Whether `exc`, or the database error ours was translated from, is a privilege refused."""
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    return getattr(cause, "sqlstate", None) == INSUFFICIENT_PRIVILEGE


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says a target cannot be served as it is now (its jobs wait, spending no
    attempt): its functions refused (EW001), are missing (moved or dropped by hand), or lack a
    privilege an administrator took away (the table's owner its own table's schema, the worker
    role a function of the target): configuration, never a row's fault."""
    if not isinstance(exc, psycopg.Error):
        return False
    if exc.sqlstate == TARGET_UNAVAILABLE:
        return True
    if exc.sqlstate == "42883":
        return "embeddings.embeddings_" in str(exc)
    if exc.sqlstate == INSUFFICIENT_PRIVILEGE:
        return bool(_TARGET_FUNCTION.search(f"{exc} {exc.diag.context or ''}"))
    return False


def _is_connection_failure(exc: psycopg.OperationalError) -> bool:
    # Lost sockets have no SQLSTATE; admin shutdown (57P01) and friends are class 57/08.
    state = exc.sqlstate or ""
    return not state or state.startswith(("08", "57P"))


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, exceptions.ConnectionLost) or (
        isinstance(exc, psycopg.OperationalError) and _is_connection_failure(exc)
    )


@dataclass
class Attempt:
    """What best_effort() says of its block afterwards."""

    failed: bool = False


@contextmanager
def best_effort(conn: Connection, what: str, log: logging.Logger) -> Iterator[Attempt]:
    """Runs the block in a savepoint of `conn`'s transaction. If the database refuses it, the
    savepoint is rolled back, one warning says `what` failed and why (passwords redacted), the
    returned Attempt says `failed`, and the caller's transaction goes on: for what a write may
    do without (a status note, fingerprints). A lost connection is no refusal: it propagates.
    Errors that are not the database's (a bug) propagate too."""
    attempt = Attempt()
    try:
        with conn.transaction():
            yield attempt
    except psycopg.Error as exc:
        if is_connection_error(exc):
            raise
        attempt.failed = True
        log.warning("%s: %s", what, redact(str(exc).strip()))


class ReadOnly(NamedTuple):
    """Why a database takes no writes, and what ends it."""

    why: str
    fix: str

    def __str__(self) -> str:
        return f"takes no writes: {self.why}: {self.fix}"


# Each answer of queries.sql's takes_no_writes.
READ_ONLY = {
    "standby": ReadOnly("it is a hot standby (in recovery)", "point DATABASE_URL at the primary"),
    "read_only": ReadOnly(
        "its transactions are read-only by default (default_transaction_read_only is on for the"
        " database or the role)",
        "end the freeze: ALTER DATABASE ... RESET default_transaction_read_only (or ALTER ROLE)",
    ),
}


def takes_no_writes(conn: Connection) -> ReadOnly | None:
    """Why the database refuses every write now (a hot standby, read-only by default), and what
    ends it; None when it takes writes."""
    with translated():
        row = conn.execute(queries.get("takes_no_writes")).fetchone()
    return READ_ONLY[row[0]] if row and row[0] else None


def register_vector_types(conn: Connection) -> None:
    """Teaches `conn` to send pgvector's Vector and HalfVector, wherever `vector` is installed
    (public here, `extensions` on Supabase). Once per connection: a pooled one keeps them
    (DISCARD ALL is the server's; these live in the client)."""
    if conn.adapters.types.get("halfvec") is not None:
        return
    from pgvector.psycopg.halfvec import register_halfvec_info
    from pgvector.psycopg.vector import register_vector_info
    from psycopg.types import TypeInfo

    with translated():
        row = conn.execute(queries.get("vector_schema")).fetchone()
        if row is None:
            raise exceptions.DatabaseError("pgvector is not installed in this database")
        for name, register in (
            ("vector", register_vector_info),
            ("halfvec", register_halfvec_info),
        ):
            info = TypeInfo.fetch(conn, f"{row[0]}.{name}")
            if info is None:
                raise exceptions.DatabaseError(f"pgvector type {name} missing (pgvector >= 0.7?)")
            register(conn, info)

"""The locks `migrate` takes, first and all at once, so that a worker still running beside it
(a rolling upgrade) never deadlocks with it.

A worker's write transaction locks the rows it writes in the watched tables (and their side or
chunk tables), then reads `embeddings.targets`. A migration that altered `embeddings.targets`
first and then a watched table's triggers took the same two locks the other way round: the
server broke the cycle by failing the worker's write, whose jobs then waited out their lease
(a minute) before any worker saw them again. So the migration takes every lock it will need on
our tables and the targets' tables in one statement before it changes anything, under a
statement timeout shorter than the server's deadlock_timeout: any worker that waits on it
waits less than that, so the server's deadlock check never picks the worker. When the locks
are busy the migration rolls back and tries again with backoff, until its deadline; it then
says which sessions hold them.
"""

from __future__ import annotations

import psycopg
from psycopg import Connection, sql

from worker import exceptions, queries
from worker.backoff import Backoff

LOCK_SECONDS = 0.5  # the longest one try waits (at most half the server's deadlock_timeout)
WAIT_SECONDS = 60.0  # how long `migrate` keeps trying (`migrate --lock-wait`)
RETRY = Backoff(base=0.25, cap=4.0, spread=(0.5, 1.5))


class LocksBusy(exceptions.DatabaseError):
    """One try could not take the migration's locks within its statement timeout."""


def own_bounds(conn: Connection) -> None:
    """No statement timeout for the rest of the migration's transaction: a `statement_timeout`
    set for the database or the role is meant for the applications' statements, and one of the
    migration's (a whole sql/ file in one exchange, a thousand tables' triggers regenerated)
    takes longer; its waits are bounded where it waits, for its locks (`take`: LOCK_SECONDS a
    try, `--lock-wait` in all)."""
    conn.execute(queries.get("set_local_statement_timeout"), {"ms": "0"})


def serialize(conn: Connection, key: int) -> None:
    """One `migrate` at a time: the transaction's advisory lock `key`, if free; LocksBusy if
    not (another migrate runs, or some session holds that key), to be tried again."""
    row = conn.execute(queries.get("try_migration_lock"), {"key": key}).fetchone()
    if row != (True,):
        raise LocksBusy("another `embed-worker migrate` is running (its advisory lock is held)")


def take(conn: Connection) -> None:
    """In the migration's transaction: ACCESS EXCLUSIVE on every table of schema `embeddings`
    and every table a target writes (source, side, chunk), in one statement bounded by
    LOCK_SECONDS (or half of deadlock_timeout, when that is less). LocksBusy when they are
    not all free in time; nothing to do before the schema is installed."""
    if conn.execute(queries.get("schema_installed")).fetchone() != (True,):
        return
    tables = [row[0] for row in conn.execute(queries.get("migration_tables")).fetchall()]
    if not tables:
        return
    row = conn.execute(queries.get("deadlock_timeout_ms")).fetchone()
    bound_ms = int(min(LOCK_SECONDS * 1000, (row[0] if row else 1000) / 2))
    statement = queries.compose(  # regclass text: quoted and qualified already
        "lock_for_migration", tables=sql.SQL(", ").join(sql.SQL(t) for t in tables)
    )
    previous = conn.execute(queries.get("statement_timeout_now")).fetchone()
    conn.execute(queries.get("set_local_statement_timeout"), {"ms": f"{max(bound_ms, 1)}ms"})
    try:
        conn.execute(statement)
    except psycopg.errors.QueryCanceled as exc:
        raise LocksBusy(f"the tables to migrate are in use ({exc.diag.message_primary})") from exc
    conn.execute(
        queries.get("set_local_statement_timeout"), {"ms": previous[0] if previous else "0"}
    )


def holders(dsn: str, key: int) -> list[str]:
    """The sessions that hold a lock on a table the migration locks, or its advisory lock
    `key`, one line each (what the error says when the deadline passes)."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(queries.get("installer_path"))
            rows = conn.execute(queries.get("migration_lock_holders"), {"key": key}).fetchall()
    except psycopg.Error:
        return []
    return [
        f"pid {pid} ({application or 'no application_name'}, {state}, transaction open "
        f"{age:.0f} s) holds {relation}"
        for pid, application, state, age, relation in rows
    ]

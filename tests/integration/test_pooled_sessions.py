"""Which server session runs our statements, through a real PgBouncer (docs/poolers.md).

Behind a pooler libpq's backend pid is the pooler's cancel key for our client connection, not a
server backend's pid: the watchdog's pg_terminate_backend() of it ended an unrelated backend or
none, and the index builder looked for its build's waits in a session that did not exist. Our
settings' row says the server's pid (worker/server_session.py); these tests check that the pid
each uses is the server backend that runs the statement, and no other client's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support import pgbouncer
from tests.support.deferred_indexes import build_waits, deferred_table
from tests.support.fetch import fetch_value
from tests.support.jobs import clear_queue
from tests.support.process import wait_for
from worker import db, exceptions, queries, sessions
from worker.process.index_builder import IndexBuilder
from worker.process.watchdog import Watchdog

Conn = psycopg.Connection[Any]

# A function that catches the statement timeout's cancel and goes on (the watchdog's case).
STUBBORN = """CREATE FUNCTION public.stubborn() RETURNS void LANGUAGE plpgsql AS $$
BEGIN LOOP BEGIN PERFORM pg_sleep(60); EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP;
END $$"""


def pooled(dsn: str, *, mode: str = "transaction", pool_size: int = 3) -> Any:
    """PgBouncer in front of `dsn`'s server, for its user; yields the DSN through it."""
    if reason := pgbouncer.available():
        pytest.skip(reason)
    params = conninfo_to_dict(dsn)
    pooler = pgbouncer.transaction_pooler(
        int(str(params["port"])), [str(params["user"])], pool_size=pool_size, mode=mode
    )
    return pooler, lambda port: make_conninfo(dsn, port=str(port))


@pytest.fixture
def transaction_pooled(dsn: str) -> Iterator[str]:
    """`dsn` through PgBouncer in transaction mode, three server connections."""
    pooler, through = pooled(dsn)
    with pooler as port:
        yield through(port)


def active_pid(conn: Conn, query: str) -> int | None:
    """The server backend running a statement that starts with `query`, if one does."""
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND starts_with(query, %s)",
        (query,),
    ).fetchone()
    return None if row is None else int(row[0])


def alive(conn: Conn, pid: int) -> bool:
    return bool(
        fetch_value(conn, "SELECT count(*) > 0 FROM pg_stat_activity WHERE pid = %s", (pid,))
    )


@pytest.mark.parametrize(("mode", "per_transaction"), [("transaction", True), ("session", False)])
def test_the_watchdog_ends_the_server_session_that_ran_the_overdue_statement(
    conn: Conn, dsn: str, mode: str, per_transaction: bool
) -> None:
    """An overdue statement that is its transaction's first (per transaction, its reset in the
    same exchange, as the load stage's): the watchdog ends the server backend that runs it,
    while it runs, and no other client's session of the pool."""
    conn.execute(STUBBORN)
    pooler, through = pooled(dsn, mode=mode)
    with pooler as port, psycopg.connect(through(port), autocommit=True) as other:
        pooled_dsn = through(port)
        other.execute("BEGIN")  # another client of the pool, on a server session of its own
        other_pid = int(fetch_value(other, "SELECT pg_backend_pid()"))
        stop = threading.Event()
        session = sessions.Session(pooled_dsn, "fetcher", stop, per_transaction=per_transaction)
        watchdog = Watchdog(pooled_dsn, 500, per_transaction=per_transaction)
        watchdog.watch(session)
        watched = session.get()
        lost: list[BaseException] = []

        def run() -> None:
            try:
                with db.translated(), db.bounded(watched, 200, ("load", 1, 7)):
                    watched.execute("SELECT public.stubborn()")
            except exceptions.EmbedWorkerError as exc:  # (ConnectionLost, asserted below)
                lost.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            ran = wait_for(
                lambda: active_pid(conn, "SELECT public.stubborn()"), timeout=10, what="it"
            )
            overdue = wait_for(watchdog.overdue, timeout=10, what="the statement to be overdue")
            assert watched.pgconn.backend_pid != ran  # (libpq's: PgBouncer's cancel key)
            assert watchdog.end(overdue) == [ran]
            thread.join(10)
        finally:
            if thread.is_alive():  # (the watchdog missed it: end it here)
                conn.execute("SELECT pg_terminate_backend(%s)", (ran,))
                thread.join(10)
            session.close()
        assert [type(e) for e in lost] == [exceptions.ConnectionLost]
        assert db.ended_by_watchdog(watched) == ("load", 1, 7)
        assert ran is not None
        wait_for(lambda: not alive(conn, ran), timeout=10, what="the ended session to go")
        assert alive(conn, other_pid)
        assert fetch_value(other, "SELECT pg_backend_pid()") == other_pid  # (its transaction's)
        other.execute("COMMIT")


def test_a_pooled_session_is_ended_only_while_it_runs_our_transaction(dsn: str, conn: Conn) -> None:
    """Per transaction the server session is ours only while our transaction runs; once it
    ended, the same backend serves another client of the pool, and the watchdog's statement
    for our session ends nothing."""
    pooler, through = pooled(dsn, pool_size=1)  # one server session: the next client gets it
    with pooler as port:
        ours = db.connect(through(port), per_transaction=True)
        try:
            server = ours.server_session()  # type: ignore[attr-defined]
            with ours.transaction():
                ran = fetch_value(ours, "SELECT pg_backend_pid()")
                holders = "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory'"
                assert conn.execute(holders).fetchall() == [(ran,)]  # our marker, in pg_locks
            with psycopg.connect(through(port), autocommit=True) as other:
                other.execute("BEGIN")
                assert fetch_value(other, "SELECT pg_backend_pid()") == ran
                ended = conn.execute(queries.get("terminate_backend"), server.params())
                assert ended.fetchall() == []
                assert alive(conn, ran)
                other.execute("COMMIT")
        finally:
            ours.close()


def test_a_statement_in_a_pipeline_is_not_given_a_transaction_of_its_own(
    transaction_pooled: str,
) -> None:
    """Per transaction, a statement outside a transaction gets one of its own, but not one in a
    pipeline (whose statements share an implicit transaction): detected through psycopg's
    public pipeline status, not its private `_pipeline`."""
    conn = db.connect(transaction_pooled, per_transaction=True)
    try:
        assert conn.needs_transaction()  # type: ignore[attr-defined]
        with conn.pipeline():
            assert not conn.needs_transaction()  # type: ignore[attr-defined]
            first = conn.execute("SELECT pg_backend_pid()")
            second = conn.execute("SELECT pg_backend_pid()")
        assert first.fetchone() == second.fetchone()  # one server session
        assert conn.needs_transaction()  # type: ignore[attr-defined]
        with conn.transaction():
            assert not conn.needs_transaction()  # type: ignore[attr-defined]
    finally:
        conn.close()


@pytest.mark.parametrize(("mode", "per_transaction"), [("transaction", True), ("session", False)])
def test_the_index_builder_knows_its_build_s_server_session(
    conn: Conn, dsn: str, tiny_models: tuple[str, str], mode: str, per_transaction: bool
) -> None:
    """The build's session, which the fetcher's looks ask what it waits for, is the server
    backend running the CREATE INDEX CONCURRENTLY: behind a transaction pooler, whichever
    server session runs it; behind a session pooler, the client's own."""
    deferred_table(conn, "docs", tiny_models[0], kept_rows=0)
    clear_queue(conn)
    conn.execute("SELECT embeddings_internal.backfill_next('embedding_jobs', 1000)")  # (its end)
    pooler, through = pooled(dsn, mode=mode)
    with pooler as port, psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE docs IN SHARE UPDATE EXCLUSIVE MODE")  # the build waits
        builder = IndexBuilder(through(port), "embedding_jobs", per_transaction=per_transaction)
        look = db.connect(through(port), per_transaction=per_transaction)
        try:
            builder.maybe_start(look)
            wait_for(lambda: build_waits(conn, "docs"), timeout=30, what="the build to wait")
            built = active_pid(conn, "CREATE INDEX CONCURRENTLY")
            assert built is not None
            assert builder.build_pid(look) == built
        finally:
            builder.stop()
            look.close()
            holder.rollback()

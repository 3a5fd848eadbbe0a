"""The real worker through a real PgBouncer in transaction mode (docs/poolers.md).

The pooler has one server connection per user, so the worker's three connections take turns on
it: a prepared statement or a SET of one of them is what the next one finds.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support import pgbouncer
from tests.support.jobs import JOBS
from tests.support.process import WorkerProcess, wait_for
from worker import db, exceptions

Conn = psycopg.Connection[Any]


@pytest.fixture
def pooled_dsn(worker_dsn: str) -> Iterator[str]:
    if reason := pgbouncer.available():
        pytest.skip(reason)
    params = conninfo_to_dict(worker_dsn)
    port, user = str(params["port"]), str(params["user"])
    with pgbouncer.transaction_pooler(int(port), [user, "postgres"]) as pooler_port:
        yield make_conninfo(worker_dsn, port=str(pooler_port))


def make_counted_docs(conn: Conn) -> None:
    """docs, watched, with a trigger that counts every write of a vector per row."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2')")
    conn.execute("CREATE TABLE vector_writes (id bigint, at timestamptz DEFAULT clock_timestamp())")
    conn.execute(
        """CREATE FUNCTION count_vector_write() RETURNS trigger
           LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
           BEGIN INSERT INTO vector_writes (id) VALUES (NEW.id); RETURN NULL; END $$"""
    )
    conn.execute(
        "CREATE TRIGGER count_vector_write AFTER UPDATE OF embedding ON docs FOR EACH ROW"
        " WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION count_vector_write()"
    )


def insert(conn: Conn, first: int, last: int) -> None:
    conn.execute(
        "INSERT INTO docs SELECT g, 'document ' || g || ' about topic ' || (g %% 13)"
        " FROM generate_series(%s::int, %s::int) g",
        (first, last),
    )


def count(conn: Conn, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def pending_keys(conn: Conn) -> set[int]:
    rows = conn.execute(
        f"SELECT (k #>> '{{}}')::bigint FROM {JOBS}, embeddings_internal.message_keys(message) k"
    ).fetchall()
    return {int(r[0]) for r in rows}


def test_worker_through_pgbouncer_transaction_mode(
    conn: Conn, pooled_dsn: str, worker_env: dict[str, str]
) -> None:
    make_counted_docs(conn)
    # A poll interval longer than the test: rows inserted while the worker idles are found only
    # because it looks for them (embeddings.wait_for_jobs), which a pooler does not get in the
    # way of as it did of LISTEN.
    env = {**worker_env, "EMBED_POOL_MODE": "transaction", "EMBED_POLL_SECONDS": "120"}
    worker = WorkerProcess(pooled_dsn, env)
    try:
        worker.wait_ready()
        for first in range(1, 200, 50):  # idle in between: each statement needs a poll
            insert(conn, first, first + 49)
            last = first + 49

            def embedded_up_to(last: int = last) -> bool:
                return count(conn, f"SELECT count(embedding) FROM docs WHERE id <= {last}") == last

            wait_for(
                embedded_up_to,
                timeout=30,
                what=f"rows up to {first + 49} to be embedded",
            )
        assert count(conn, "SELECT count(*) FROM vector_writes") == 200  # none written twice
        assert worker.proc.poll() is None, worker.log_text()[-3000:]
    finally:
        worker.signal(signal.SIGTERM)
        assert worker.wait_exit(30) == 0
        worker.stop()


def test_sigterm_through_pgbouncer_hands_back_and_leaves_no_session_state(
    conn: Conn, pooled_dsn: str, worker_env: dict[str, str]
) -> None:
    make_counted_docs(conn)
    # Statements of at most 1,000 rows: their jobs are live, where the worker holds several
    # batches at once (a bulk statement's go to the backfill lane, one batch in flight, and a
    # SIGTERM between its batches has nothing to hand back).
    insert(conn, 1, 1000)
    insert(conn, 1001, 2000)
    # No grace: the batch in flight is handed back at once on a fresh connection, the path that
    # sets a statement timeout.
    env = {**worker_env, "EMBED_POOL_MODE": "transaction", "EMBED_GRACE_SECONDS": "0"}
    worker = WorkerProcess(pooled_dsn, env)
    try:
        wait_for(
            lambda: count(conn, "SELECT count(embedding) FROM docs") >= 64,
            timeout=60,
            what="the drain to start",
        )
        worker.signal(signal.SIGTERM)
        assert worker.wait_exit(30) == 0
        records = worker.log_records()
        assert any("handed back" in r.get("message", "") for r in records), worker.log_text()
    finally:
        worker.stop()
    embedded = {int(r[0]) for r in conn.execute("SELECT id FROM docs WHERE embedding IS NOT NULL")}
    assert 64 <= len(embedded) < 2000
    # Nothing lost: every row is embedded or still queued, visible again now.
    assert embedded | pending_keys(conn) == set(range(1, 2001))
    assert count(conn, f"SELECT count(*) FROM {JOBS} WHERE vt > now()") == 0
    assert count(conn, "SELECT count(*) - count(DISTINCT id) FROM vector_writes") == 0
    # The pooler's one server connection for this user carries no statement timeout of ours.
    with psycopg.connect(pooled_dsn, autocommit=True) as pooled:
        assert (
            count(pooled, "SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'")
            == 0
        )


def test_worker_connections_prepare_nothing_a_pooler_could_lose(dsn: str) -> None:
    """A statement run often enough to be prepared still runs when the pooler hands this client
    another server connection (the first one busy in someone else's transaction)."""
    if reason := pgbouncer.available():
        pytest.skip(reason)
    params = conninfo_to_dict(dsn)
    with pgbouncer.transaction_pooler(int(str(params["port"])), ["postgres"], pool_size=2) as port:
        pooled = make_conninfo(dsn, port=str(port))
        ours, other = db.connect(pooled), db.connect(pooled)
        try:
            for i in range(8):
                assert ours.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
            with other.transaction():  # holds the server connection ours just used
                other.execute("SELECT 1")
                assert ours.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)
        finally:
            ours.close()
            other.close()


# What the worker's session_reset pins: none of it may reach another client of the pool.
WORKER_SETTINGS = (
    "SELECT current_setting('search_path'), current_setting('lock_timeout'),"
    " current_setting('client_connection_check_interval'), current_setting('statement_timeout')"
)


def test_transaction_mode_leaves_other_clients_of_the_pool_none_of_its_settings(
    conn: Conn, pooled_dsn: str, worker_env: dict[str, str]
) -> None:
    """EMBED_POOL_MODE=transaction: the worker's settings are its transactions' own (SET
    LOCAL), so the client that gets the server connection next (the one server connection of
    this user: any client of the worker's role) finds the role's defaults, not
    `pg_catalog, pg_temp` (`select count(*) from documents` failed so) or our lock_timeout."""
    make_counted_docs(conn)
    with psycopg.connect(pooled_dsn, autocommit=True) as other:
        defaults = other.execute(WORKER_SETTINGS).fetchone()
    assert defaults is not None and defaults[0] != "pg_catalog, pg_temp"
    worker = WorkerProcess(pooled_dsn, {**worker_env, "EMBED_POOL_MODE": "transaction"})
    try:
        worker.wait_ready()
        insert(conn, 1, 100)
        wait_for(
            lambda: count(conn, "SELECT count(embedding) FROM docs") == 100,
            timeout=60,
            what="the rows to be embedded",
        )
        # While the worker runs (between its transactions) and after it stopped.
        with psycopg.connect(pooled_dsn, autocommit=True) as other:
            for _ in range(20):
                assert other.execute(WORKER_SETTINGS).fetchone() == defaults
        worker.signal(signal.SIGTERM)
        assert worker.wait_exit(30) == 0, worker.log_text()[-3000:]
    finally:
        worker.stop()
    with psycopg.connect(pooled_dsn, autocommit=True) as other:
        assert other.execute(WORKER_SETTINGS).fetchone() == defaults


def test_transaction_mode_runs_nothing_another_client_left_in_the_server_session(
    conn: Conn, pooled_dsn: str, worker_env: dict[str, str]
) -> None:
    """Another client of the worker's pool plants a search path with an exact-type overload of
    a function our statements call by name (clock_timestamp(), read_jobs') on the one server
    connection: every transaction of the worker discards it first, so the overload never runs
    and every row is embedded."""
    make_counted_docs(conn)
    conn.execute("CREATE SCHEMA evil")
    conn.execute("GRANT USAGE ON SCHEMA evil TO PUBLIC")
    conn.execute("CREATE TABLE evil.calls (by_role name)")
    conn.execute("GRANT INSERT ON evil.calls TO PUBLIC")
    conn.execute(
        """CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO evil.calls VALUES (current_user);
                 RETURN pg_catalog.clock_timestamp(); END $$"""
    )
    env = {**worker_env, "EMBED_POOL_MODE": "transaction", "EMBED_BATCH_SIZE": "4"}
    worker = WorkerProcess(pooled_dsn, env)
    try:
        worker.wait_ready()
        with psycopg.connect(pooled_dsn, autocommit=True) as planter:

            def embedded_while_planting() -> bool:
                # Left on the server session between two transactions of the worker's, again
                # and again: a reset of the session the worker made before it does not help.
                planter.execute("SET search_path = evil, pg_catalog")
                return count(conn, "SELECT count(embedding) FROM docs") == 200

            insert(conn, 1, 200)
            wait_for(embedded_while_planting, timeout=90, what="the rows to be embedded")
        worker.signal(signal.SIGTERM)
        assert worker.wait_exit(30) == 0, worker.log_text()[-3000:]
    finally:
        worker.stop()
    assert conn.execute("SELECT by_role FROM evil.calls").fetchall() == []


def test_a_full_session_pool_says_to_check_the_pool_size(dsn: str) -> None:
    """A session-mode pool whose server connections are all held: our connection's first
    statement waits in the pooler's queue until its query_wait_timeout drops us, and the error
    the worker logs ("database unavailable (...); retrying") says what to check."""
    if reason := pgbouncer.available():
        pytest.skip(reason)
    params = conninfo_to_dict(dsn)
    with pgbouncer.transaction_pooler(
        int(str(params["port"])), ["postgres"], mode="session", query_wait_timeout=2
    ) as port:
        pooled = make_conninfo(dsn, port=str(port))
        with psycopg.connect(pooled, autocommit=True) as holder:
            holder.execute("SELECT 1")  # holds the pool's one server connection
            with pytest.raises(exceptions.ConnectionLost) as lost:
                db.connect(pooled, connect_timeout=5)
    message = str(lost.value)
    assert "query_wait_timeout" in message
    assert "pool for this user and database is full" in message
    assert "default_pool_size" in message

"""A running worker after a Postgres restart: its pipeline fetches again once the database is
reachable (worker/outages.py: `reachable`), not after the rest of its reconnect backoff: once
/readyz's check got through, or the probe that looks for the database while sessions wait.
The probe is one per database and process, and ends when nobody waits any longer."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import Running
from tests.support import tcp_proxy
from tests.support.cluster import Cluster, free_port, session_cluster
from tests.support.fetch import fetch_value
from tests.support.process import wait_for
from worker import exceptions, outages, sessions
from worker.backoff import Backoff
from worker.config import Settings
from worker.http.server import Server, serve

Conn = psycopg.Connection[Any]


def readyz(server: Server) -> int:
    try:
        with urllib.request.urlopen(f"{server.url}/readyz", timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def restartable(cluster: Cluster) -> Iterator[Cluster]:
    if cluster.directory is None:
        pytest.skip("needs the suite's own cluster to restart (TEST_DATABASE_URL points elsewhere)")
    yield cluster
    if not fetch_ok(cluster):
        cluster.start()  # (a failure while it was down leaves it to the next test up)


def fetch_ok(cluster: Cluster) -> bool:
    try:
        with psycopg.connect(cluster.admin_dsn, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def test_the_pipeline_fetches_once_the_database_is_back_not_after_its_backoff(
    dsn: str,
    restartable: Cluster,
    tiny_models: tuple[str, str],
    settings: Settings,
    running: Callable[..., Running],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every reconnect waits an hour here: only the database being reached again (/readyz's
    check) can make the fetcher read the row inserted after the restart within the deadline.
    Before, /readyz said ready while the fetcher slept out its backoff (up to 45 s)."""
    model = tiny_models[0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (model,))
        conn.execute("INSERT INTO docs VALUES (1, 'before the restart')")
    monkeypatch.setattr(sessions, "RECONNECT", Backoff(3600.0, 3600.0))
    run = running(model=model, poll_seconds=0.2)
    server = serve(run.worker, settings.with_overrides(model=model, http_port=0))
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            embedded = "SELECT embedding IS NOT NULL FROM docs WHERE id = %s"
            wait_for(lambda: fetch_value(conn, embedded, (1,)), timeout=60, what="the first row")
        wait_for(lambda: readyz(server) == 200, timeout=60, what="ready")

        restartable.stop()
        wait_for(
            lambda: any("fetcher: database unavailable" in m for m in caplog.messages),
            timeout=60,
            what="the fetcher waiting to reconnect",
        )
        wait_for(lambda: readyz(server) == 503, timeout=60, what="not ready")
        restartable.start()
        wait_for(lambda: readyz(server) == 200, timeout=60, what="ready again")

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO docs VALUES (2, 'after the restart')")
            wait_for(
                lambda: fetch_value(conn, embedded, (2,)),
                timeout=60,
                what="the row inserted after the restart (the fetcher still in its backoff)",
            )
    finally:
        server.shutdown()


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in m for m in caplog.messages)


def probes() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == outages.PROBE_THREAD and t.is_alive()]


def test_the_pipeline_fetches_soon_after_a_restart_with_nobody_asking_readyz(
    dsn: str,
    restartable: Cluster,
    tiny_models: tuple[str, str],
    running: Callable[..., Running],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every reconnect waits an hour here and no HTTP server runs: only the probe finding the
    database again can make the fetcher read the row inserted after the restart within the
    deadline. Before, a worker found it at its sessions' next backoff attempt only (0.25 to
    4.9 s after a 5 s outage, up to 45 s after a long one)."""
    model = tiny_models[0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (model,))
        conn.execute("INSERT INTO docs VALUES (1, 'before the restart')")
    monkeypatch.setattr(sessions, "RECONNECT", Backoff(3600.0, 3600.0))
    run = running(model=model, poll_seconds=0.2)
    embedded = "SELECT embedding IS NOT NULL FROM docs WHERE id = %s"
    with psycopg.connect(dsn, autocommit=True) as conn:
        wait_for(lambda: fetch_value(conn, embedded, (1,)), timeout=60, what="the first row")

    restartable.stop()
    # Both in their backoff: the keeper, which looks every second, would otherwise reconnect at
    # once after the restart, and wake the fetcher. (The writer connects when it has work.)
    for name in ("fetcher", "keeper"):
        wait_for(
            functools.partial(logged, caplog, f"{name}: database unavailable"),
            timeout=60,
            what=f"the {name} waiting to reconnect",
        )
    restartable.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO docs VALUES (2, 'after the restart')")
        wait_for(
            lambda: fetch_value(conn, embedded, (2,)),
            timeout=30,
            what="the row inserted after the restart (the fetcher still in its backoff)",
        )
    run.stop()
    wait_for(lambda: not probes(), timeout=10, what="the probe to end")


def test_one_probe_for_all_the_waiting_sessions_ended_by_their_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two sessions wait for a database nobody listens for: one probe looks for it, not one a
    session; setting their stop ends their waits (get() returns) and the probe with them."""
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    stop = threading.Event()
    waiting = [sessions.Session(nowhere, name, stop) for name in ("fetcher", "writer")]
    threads = [threading.Thread(target=_get, args=(s,), daemon=True) for s in waiting]
    seen: set[int] = set()  # how many probes ran, each time we looked

    def both_retried_twice() -> bool:
        seen.add(len(probes()))
        logged = [m.split(":")[0] for m in caplog.messages if "database unavailable" in m]
        return logged.count("fetcher") >= 2 and logged.count("writer") >= 2

    with caplog.at_level(logging.WARNING, logger="worker.sessions"):
        for thread in threads:
            thread.start()
        try:
            wait_for(both_retried_twice, timeout=30, what="both sessions waiting to reconnect")
            wait_for(probes, timeout=10, what="the probe (between two of the sessions' waits)")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
    assert max(seen) == 1, seen
    assert not any(thread.is_alive() for thread in threads), "stop did not end the waits"
    wait_for(lambda: not probes(), timeout=10, what="the probe to end")


def _get(session: sessions.Session) -> None:
    with contextlib.suppress(exceptions.ConnectionLost):  # (how a stopped session's get() ends)
        session.get()


@pytest.fixture
def crowded() -> Iterator[Cluster]:
    """A cluster of its own with 4 connection slots (none reserved), for a test to fill."""
    with session_cluster(external_env="EMBED_TEST_NO_EXTERNAL_CLUSTER") as found:
        with psycopg.connect(found.admin_dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_connections = 4")
            conn.execute("ALTER SYSTEM SET superuser_reserved_connections = 0")
        found.stop()
        found.start()
        yield found


# How long the probe's knocks are counted for while the server turns them away.
WINDOW_SECONDS = 3.0


def test_the_probe_knocks_at_its_slowest_pace_while_the_server_is_full(
    crowded: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every connection slot taken ("sorry, too many clients already", SQLSTATE 53300): the
    probe does not add four knocks a second to what the server is short of, but knocks every
    2 s (jittered by 20%: at most 2 in a 3 s window), and still finds it once a slot is free.
    Before, it knocked every 0.25 s (about 12 in the window)."""
    knocks: list[float] = []
    look = outages._look

    def counted(*args: Any) -> Any:
        knocks.append(time.monotonic())
        return look(*args)

    monkeypatch.setattr(outages, "_look", counted)
    monkeypatch.setattr(sessions, "RECONNECT", Backoff(3600.0, 3600.0))
    held = []
    with contextlib.ExitStack() as stack:
        while True:  # (the slots, taken until the server says it has none left)
            try:
                held.append(stack.enter_context(psycopg.connect(crowded.admin_dsn)))
            except psycopg.OperationalError as exc:
                assert "too many clients" in str(exc), exc
                break
        stop = threading.Event()
        session = sessions.Session(crowded.admin_dsn, "fetcher", stop)
        thread = threading.Thread(target=_get, args=(session,), daemon=True)
        thread.start()
        try:
            wait_for(lambda: knocks, timeout=10, what="the probe's first knock")
            time.sleep(WINDOW_SECONDS)  # (a window to count knocks in, not a wait for work)
            first = knocks[0]
            counted_knocks = [k for k in knocks if k - first < WINDOW_SECONDS]
            assert len(counted_knocks) <= 2, f"{len(counted_knocks)} knocks in {WINDOW_SECONDS} s"
            held.pop().close()  # a slot free: the probe finds the server, the session goes on
            thread.join(timeout=10)
            assert not thread.is_alive(), "the session did not connect once a slot was free"
            assert session.current() is not None
        finally:
            stop.set()
            thread.join(timeout=10)
            session.close()


def test_a_stop_during_an_outage_ends_the_probe_with_the_worker(
    dsn: str,
    tiny_models: tuple[str, str],
    running: Callable[..., Running],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The database's host drops packets (the proxy holds each new connection unanswered)
    while the worker's sessions wait to reconnect: the probe is inside a connection attempt
    when the worker stops. The probe is one of the worker's threads and gone when run()
    returns (its attempt given up once nobody waits). Before, it was no thread of the
    worker's and outlived it by up to its connect timeout (2 s); and the sessions, their wait
    ended by the stop, tried once more, which took their connect timeout (10 s)."""
    model = tiny_models[0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (model,))
        conn.execute("INSERT INTO docs VALUES (1, 'before the outage')")
    monkeypatch.setattr(sessions, "RECONNECT", Backoff(3600.0, 3600.0))
    with tcp_proxy.proxy(dsn) as front:
        run = running(model=model, poll_seconds=0.2, database_url=front.dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            embedded = "SELECT embedding IS NOT NULL FROM docs WHERE id = 1"
            wait_for(lambda: fetch_value(conn, embedded), timeout=60, what="the first row")
        front.set_mode("slam")
        wait_for(
            functools.partial(logged, caplog, "fetcher: database unavailable"),
            timeout=60,
            what="the fetcher waiting to reconnect",
        )
        wait_for(probes, timeout=10, what="the probe")
        front.set_mode("hold")
        wait_for(lambda: front.accepted["hold"], timeout=10, what="a knock, held unanswered")
        assert set(probes()) <= set(run.worker.threads), "the probe is no thread of the worker's"
        run.worker.request_stop("test over")
        run.thread.join(timeout=30)
        assert not run.thread.is_alive(), "the worker did not stop"
        assert not probes(), "the probe outlived the worker"
    # Nor did a session try again once the stop ended its wait (that attempt waited out its
    # whole connect timeout, 10 s, held unanswered).
    assert not logged(caplog, "timeout expired"), caplog.messages

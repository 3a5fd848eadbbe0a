"""A running worker after a Postgres restart: its pipeline fetches again once the database is
reachable (worker/outages.py: `reachable`), not after the rest of its reconnect backoff: once
/readyz's check got through, or the probe that looks for the database while sessions wait.
The probe is one per database and process, and ends when nobody waits any longer."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import Running
from tests.support.cluster import Cluster, free_port
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

"""A running worker after a Postgres restart: its pipeline fetches again once the database is
reachable (worker/sessions.py: `reachable`), not after the rest of its reconnect backoff."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import Running
from tests.support.cluster import Cluster
from tests.support.fetch import fetch_value
from tests.support.process import wait_for
from worker import sessions
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

"""The in-process workers the tests start (tests/integration/conftest.py: `running`) are gone,
every thread of them, once the test's teardown is over: a thread left behind logged after
pytest had closed the test's capture ("Logging error: I/O operation on closed file" in CI)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import Running
from tests.support import stores
from tests.support.process import wait_for

Conn = psycopg.Connection[Any]

PIPELINE = {"fetcher", "embedder", "writer", "keeper", "watchdog", "index-builder"}


@pytest.fixture
def no_pipeline_thread_left(dsn: str) -> Iterator[None]:
    """Asked for before `running`, so set up before it and torn down after it: no thread of a
    worker it started may be left by then. (Torn down before `dsn`, whose drop of the database
    ends what its sessions were doing: a thread left behind ended there, after logging.)"""
    before = set(threading.enumerate())
    yield
    left = [t.name for t in threading.enumerate() if t not in before and t.name in PIPELINE]
    assert not left, f"threads of the test's worker outlived its fixture: {left}"


def test_a_worker_thread_busy_past_the_stop_is_joined_by_the_fixture(
    no_pipeline_thread_left: None, conn: Conn, minilm: str, running: Callable[..., Running]
) -> None:
    """The fetcher is loading a row whose content function takes 10 s when the test ends; with
    no grace period the worker's run() gives each thread 2 s and returns, the fetcher still in
    the load. The fixture joined run()'s thread only: the fetcher went on, and logged, after
    the test."""
    conn.execute("CREATE TABLE docs (id integer PRIMARY KEY, body text)")
    conn.execute(
        "CREATE FUNCTION docs_text(d docs) RETURNS text LANGUAGE plpgsql STABLE AS"
        " $$ BEGIN PERFORM pg_sleep(10); RETURN d.body; END $$"
    )
    stores.watch(conn, "row", minilm, table="docs", content="docs_text")
    running(grace_seconds=0, owner_code_timeout_seconds=60)
    conn.execute("INSERT INTO docs VALUES (1, 'loaded slowly')")
    wait_for(
        lambda: conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND wait_event = 'PgSleep'"
            " AND query NOT LIKE '%%wait_for_jobs%%'"  # (the fetcher's wait for work sleeps too)
        ).fetchone(),
        timeout=60,
        what="the fetcher in the content function",
    )

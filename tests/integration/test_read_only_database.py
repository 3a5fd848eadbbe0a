"""A database that takes no writes (a hot standby that DATABASE_URL names by mistake or that a
failover left the worker on; `default_transaction_read_only = on`, a freeze for maintenance)
is waited out as an unreachable one, and said to be what it is (docs/reliability.md, "Under
faults"). The worker's fetcher had stopped the worker with a traceback on its first read, and
`doctor` found nothing wrong.

A freeze stands in for a standby here: the worker asks the server the same question of both
(queries.sql: takes_no_writes), and a test cluster has no standby."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import Running
from tests.support.fault_scenario import terminate_worker_connections
from tests.support.process import wait_for
from worker import metrics
from worker.cli import doctor
from worker.config import Settings

Conn = psycopg.Connection[Any]

FROZEN = "its transactions are read-only by default"
QUEUE_GAUGES = (
    "embed_worker_queue_jobs",
    "embed_worker_queue_visible_jobs",
    "embed_worker_queue_oldest_job_age_seconds",
)


def queue_gauges() -> list[float]:
    return [metrics.REGISTRY.get_sample_value(name) or 0.0 for name in QUEUE_GAUGES]


@contextmanager
def frozen(conn: Conn) -> Iterator[None]:
    """New sessions of the test's database read-only by default, for the block."""
    database = conn.info.dbname
    conn.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    try:
        yield
    finally:
        conn.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')


def embedded(conn: Conn) -> int:
    row = conn.execute("SELECT count(embedding) FROM docs").fetchone()
    assert row is not None
    return int(row[0])


def test_a_worker_waits_out_a_database_that_takes_no_writes(
    conn: Conn,
    dsn: str,
    minilm: str,
    running: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn.execute("CREATE TABLE docs (id integer PRIMARY KEY, body text, embedding vector(384))")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    conn.execute("INSERT INTO docs SELECT g, 'note ' || g FROM generate_series(1, 3) g")
    worker = running()
    wait_for(lambda: embedded(conn) == 3, timeout=20, what="the first rows embedded")

    with frozen(conn), caplog.at_level(logging.WARNING):
        terminate_worker_connections(conn)  # (new sessions are read-only)
        # The application writes all the same (its session says so).
        conn.execute("SET default_transaction_read_only = off")
        conn.execute("INSERT INTO docs SELECT g, 'note ' || g FROM generate_series(4, 6) g")
        wait_for(
            lambda: any(FROZEN in r.getMessage() for r in caplog.records),
            timeout=20,
            what="the worker to say that the database takes no writes",
        )
        assert worker.thread.is_alive() and worker.worker.failure is None
        # Unknown, not their last reading: a frozen visible_jobs > 0 made EmbedWorkerStalled
        # fire, whose runbook says to restart the worker.
        wait_for(
            lambda: all(math.isnan(v) for v in queue_gauges()),
            timeout=20,
            what="the queue gauges to say they cannot be read",
        )
    wait_for(lambda: embedded(conn) == 6, timeout=60, what="the rows written meanwhile embedded")
    wait_for(
        lambda: not any(math.isnan(v) for v in queue_gauges()),
        timeout=20,
        what="the queue gauges read again",
    )
    assert worker.worker.failure is None


def test_doctor_says_the_database_takes_no_writes(conn: Conn, dsn: str, settings: Settings) -> None:
    assert [f.level for f in doctor.check(dsn, settings) if f.check == "database"] == ["ok"]
    with frozen(conn):
        (finding,) = [f for f in doctor.check(dsn, settings) if f.check == "database"]
    assert finding.level == "FAIL"
    assert FROZEN in finding.detail and "default_transaction_read_only" in finding.fix

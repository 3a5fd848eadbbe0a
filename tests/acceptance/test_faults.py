"""Faults lose nothing: kill -9, a Postgres restart, poison rows, hostile text, many workers.
The worker is the real process, running as a least-privilege role."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.support.cluster import Cluster
from tests.support.jobs import JOBS
from tests.support.models import MINILM, require_minilm
from tests.support.process import WorkerProcess, run_cli, wait_for
from worker.models.embedder import Embedder

Conn = psycopg.Connection[Any]


def make_docs(conn: Conn, rows: int) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, clear_on_update => false)", (MINILM,)
    )
    conn.execute(
        "INSERT INTO docs SELECT g, 'document ' || g || ' about subject ' || (g %% 23) FROM generate_series(1, %s) g",
        (rows,),
    )


def count(conn: Conn, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def drained(conn: Conn, rows: int) -> bool:
    return (
        count(conn, "SELECT count(embedding) FROM docs") == rows
        and count(conn, f"SELECT count(*) FROM {JOBS}") == 0
    )


def cli(dsn: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={**env, "DATABASE_URL": dsn}, timeout=300)


def test_kill_9_mid_batch_loses_nothing_and_keeps_the_latest_content(
    conn: Conn, start_worker: Callable[..., WorkerProcess], worker_env: dict[str, str]
) -> None:
    make_docs(conn, 2000)
    first = start_worker(EMBED_VT_SECONDS=3, http=False)
    wait_for(
        lambda: count(conn, "SELECT count(embedding) FROM docs") >= 200, timeout=60, what="progress"
    )
    conn.execute(
        "UPDATE docs SET body = 'rewritten: the tides follow the moon ' || id WHERE id % 100 = 0"
    )
    first.proc.send_signal(signal.SIGKILL)
    first.wait_exit(10)

    second = start_worker(EMBED_VT_SECONDS=3, http=False)
    wait_for(lambda: drained(conn, 2000), timeout=120, what="the drain after kill -9")
    second.signal()
    assert second.wait_exit(30) == 0

    assert count(conn, "SELECT count(*) FROM embeddings.failures") == 0
    model = Embedder.load(str(require_minilm()), threads=1)
    rows = conn.execute(
        "SELECT body, embedding::real[] FROM docs WHERE id % 100 = 0 ORDER BY id"
    ).fetchall()
    expected = model.embed([body for body, _ in rows])
    for (_, stored), want in zip(rows, expected, strict=True):
        assert float(np.array(stored) @ want) > 0.999


def test_postgres_restart_under_a_running_worker(
    conn: Conn, dsn: str, cluster: Cluster, start_worker: Callable[..., WorkerProcess]
) -> None:
    if cluster.directory is None:
        pytest.skip("needs the suite's own cluster to restart (TEST_DATABASE_URL points elsewhere)")
    make_docs(conn, 10)
    worker = start_worker(EMBED_POLL_SECONDS=1)
    worker.wait_ready()
    wait_for(lambda: drained(conn, 10), timeout=60, what="the first rows")
    conn.close()

    cluster.stop()
    wait_for(lambda: worker.get("/readyz")[0] == 503, timeout=30, what="readiness to drop")
    assert worker.get("/healthz")[0] == 200  # alive, waiting
    cluster.start()

    with psycopg.connect(dsn, autocommit=True) as again:
        again.execute(
            "INSERT INTO docs SELECT g, 'after the restart ' || g FROM generate_series(11, 20) g"
        )
        wait_for(lambda: drained(again, 20), timeout=90, what="rows inserted after the restart")
    assert worker.proc.poll() is None
    messages = [r.get("message", "") for r in worker.log_records()]
    assert any("database unavailable" in m or "connection lost" in m for m in messages)
    assert any("reconnected" in m for m in messages)
    worker.signal()
    assert worker.wait_exit(30) == 0


def test_a_database_that_stops_taking_writes_is_waited_out(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    """As a failover that leaves the worker on the old primary, now a standby, or a freeze for
    maintenance: its sessions end, and the new ones may not write. /readyz says why, the
    process waits (it had stopped, its fetcher's first read refused), and embeds what came
    meanwhile once writes are taken again."""
    make_docs(conn, 10)
    worker = start_worker(EMBED_POLL_SECONDS=1)
    worker.wait_ready()
    wait_for(lambda: drained(conn, 10), timeout=60, what="the first rows")

    database = conn.info.dbname
    try:
        conn.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        wait_for(lambda: worker.get("/readyz")[0] == 503, timeout=30, what="readiness to drop")
        assert "takes no writes" in worker.get("/readyz")[1].decode()
        conn.execute("SET default_transaction_read_only = off")  # (the application's own writes)
        conn.execute("INSERT INTO docs SELECT g, 'meanwhile ' || g FROM generate_series(11, 20) g")
        wait_for(
            lambda: any("takes no writes" in r.get("message", "") for r in worker.log_records()),
            timeout=30,
            what="the worker to log why it waits",
        )
        assert worker.proc.poll() is None
    finally:
        conn.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
    wait_for(lambda: drained(conn, 20), timeout=90, what="rows inserted meanwhile")
    wait_for(lambda: worker.get("/readyz")[0] == 200, timeout=10, what="ready again")
    worker.signal()
    assert worker.wait_exit(30) == 0


def test_a_poisoned_row_is_dead_lettered_and_retried_from_the_cli(
    conn: Conn, worker_dsn: str, worker_env: dict[str, str]
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute(
        "CREATE FUNCTION picky(d docs) RETURNS text LANGUAGE plpgsql STABLE AS $$ BEGIN"
        " IF d.body LIKE 'poison%' THEN RAISE EXCEPTION 'refusing row %', d.id; END IF;"
        " RETURN d.body; END $$"
    )
    conn.execute("SELECT embeddings.watch('docs', 'picky', model => %s)", (MINILM,))
    conn.execute(
        "INSERT INTO docs SELECT g, CASE WHEN g = 7 THEN 'poison' ELSE 'fine ' || g END FROM generate_series(1, 50) g"
    )
    env = {**worker_env, "EMBED_MAX_ATTEMPTS": "3", "EMBED_BACKOFF_BASE_SECONDS": "0.1"}

    assert cli(worker_dsn, env, "run", "--once").returncode == 0
    assert count(conn, "SELECT count(embedding) FROM docs") == 49
    listed = cli(worker_dsn, env, "failures", "--json")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout, listed.stderr
    failures = json.loads(listed.stdout)
    assert [(f["row_key"], f["attempts"]) for f in failures] == [(7, 3)]
    assert "refusing row 7" in failures[0]["last_error"]
    status = json.loads(cli(worker_dsn, env, "status", "--json").stdout)
    assert status[0]["failed_jobs"] == 1 and status[0]["pending_jobs"] == 0

    conn.execute(
        "CREATE OR REPLACE FUNCTION picky(d docs) RETURNS text LANGUAGE sql STABLE AS $$ SELECT d.body $$"
    )
    retried = cli(worker_dsn, env, "failures", "--retry")
    assert retried.returncode == 0 and "re-queued 1" in retried.stderr
    assert cli(worker_dsn, env, "run", "--once").returncode == 0
    assert count(conn, "SELECT count(embedding) FROM docs") == 50
    assert count(conn, "SELECT count(*) FROM embeddings.failures") == 0


HOSTILE = [
    "x" * 1_000_000,  # 1 MB
    "supercalifragilistic" * 3000,  # a 60k-character single word
    "control \x01\x02\x07\x1b[31m red \x7f characters",
    "emoji 🎉🔥👩‍👩‍👧 and CJK 日本語のテキスト 中文文本 한국어",
    "'); DROP TABLE docs; -- SELECT * FROM pg_authid; $$ \\x00",
    "   \n\t  ",  # whitespace only: cleared
    "\u200b\u200b",  # zero-width spaces
    "a",
]


def test_hostile_content_is_embedded_or_cleared(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, clear_on_update => false)", (MINILM,)
    )
    worker = start_worker(EMBED_POLL_SECONDS=1)
    worker.wait_ready()
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO docs VALUES (%s, %s)", list(enumerate(HOSTILE)))
    wait_for(
        lambda: count(conn, f"SELECT count(*) FROM {JOBS}") == 0,
        timeout=60,
        what="the queue to drain",
    )
    rows = dict(conn.execute("SELECT id, embedding IS NOT NULL FROM docs").fetchall())
    assert rows == {i: not text.isspace() for i, text in enumerate(HOSTILE)}
    assert count(conn, "SELECT count(*) FROM embeddings.failures") == 0
    assert worker.proc.poll() is None and worker.get("/healthz")[0] == 200
    assert count(conn, "SELECT count(*) FROM pg_tables WHERE tablename = 'docs'") == 1


@pytest.mark.parametrize("workers", [2, 4])
def test_many_workers_drain_5000_rows_each_exactly_once(
    conn: Conn, start_worker: Callable[..., WorkerProcess], workers: int
) -> None:
    make_docs(conn, 5000)
    procs = [start_worker(http=False, EMBED_BATCH_SIZE=64) for _ in range(workers)]
    wait_for(lambda: drained(conn, 5000), timeout=300, interval=0.5, what="the drain")
    for proc in procs:
        proc.signal()
        assert proc.wait_exit(30) == 0
    written = [proc.rows_written() for proc in procs]
    # Leases (30 s) never expired here, so no row was embedded twice.
    assert sum(written) == 5000, written
    assert sum(1 for n in written if n > 0) >= 2, written
    assert count(conn, "SELECT count(*) FROM embeddings.failures") == 0

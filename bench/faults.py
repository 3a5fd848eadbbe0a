"""Faults injected into a running worker, with what was lost and how long recovery took:

- kill -9 in the middle of a drain, then a new worker: rows lost, and the time from the kill to
  the queue drained again (dominated by the lease, EMBED_VT_SECONDS);
- Postgres stopped for a few seconds under a running worker: the time from the server's
  return to the first row inserted afterwards being embedded (the reconnect backoff);
- two and four workers draining one queue: rows embedded more than once.

    python -m bench.faults
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import corpus, endtoend, worker_process
from bench.machine import describe as machine
from bench.sections import RESULTS, SHARED_MODELS
from tests.support.cluster import Cluster, session_cluster
from worker import schema

MODEL = "all-MiniLM-L6-v2"


def _count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def _wait(condition: Any, timeout: float = 300) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError
        time.sleep(0.05)
    return time.monotonic() - started


def kill_9(dsn: str, rows: int = 3000, vt: int = 30) -> dict[str, Any]:
    endtoend.prepare(dsn, MODEL, corpus.load(rows))
    env = worker_process.worker_env(dsn, MODEL, SHARED_MODELS, EMBED_VT_SECONDS=vt, EMBED_THREADS=2)
    first = worker_process.start(env)
    _wait(lambda: _count(dsn, "SELECT count(embedding) FROM bench_docs") >= rows // 4)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic()
    before = _count(dsn, "SELECT count(embedding) FROM bench_docs")
    second = worker_process.start(env)
    _wait(lambda: _count(dsn, worker_process.QUEUED_JOBS) == 0)
    recovered = time.monotonic() - killed_at
    second.send_signal(signal.SIGTERM)
    second.wait(60)
    return {
        "rows": rows,
        "vt_seconds": vt,
        "embedded_at_kill": before,
        "rows_lost": rows - _count(dsn, "SELECT count(embedding) FROM bench_docs"),
        "failures": _count(dsn, "SELECT count(*) FROM embeddings.failures"),
        "seconds_from_kill_to_drained": round(recovered, 1),
    }


def postgres_restart(cluster: Cluster, dsn: str, outage: float = 5.0) -> dict[str, Any]:
    endtoend.prepare(dsn, MODEL, ["before the restart"])
    env = worker_process.worker_env(dsn, MODEL, SHARED_MODELS)
    worker = worker_process.start(env)
    _wait(lambda: _count(dsn, "SELECT count(embedding) FROM bench_docs") == 1)
    cluster.stop()
    time.sleep(outage)
    cluster.start()
    back = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO bench_docs VALUES (1, 'after the restart')")
    recovered = (
        time.monotonic()
        - back
        + _wait(lambda: _count(dsn, "SELECT count(embedding) FROM bench_docs") == 2, timeout=120)
    )
    alive = worker.poll() is None
    worker.send_signal(signal.SIGTERM)
    worker.wait(60)
    return {
        "outage_seconds": outage,
        "worker_stayed_up": alive,
        "seconds_from_server_back_to_new_row_embedded": round(recovered, 2),
        "rows_lost": 2 - _count(dsn, "SELECT count(embedding) FROM bench_docs"),
    }


def many_workers(dsn: str, workers: int, rows: int = 5000) -> dict[str, Any]:
    endtoend.prepare(dsn, MODEL, corpus.rows(rows))
    env = worker_process.worker_env(
        dsn, MODEL, SHARED_MODELS, EMBED_THREADS=1, EMBED_LOG_FORMAT="json", EMBED_LOG_LEVEL="INFO"
    )
    logs = [Path(f"/tmp/bench-worker-{i}.log") for i in range(workers)]
    started = time.perf_counter()
    procs = [worker_process.start(env, "--once", "--no-progress", log=log) for log in logs]
    for p in procs:
        p.wait(600)
    wall = time.perf_counter() - started
    written = 0
    for log in logs:
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            written += (
                int(record.get("embedded", 0))
                if str(record.get("message", "")).startswith("batch ")
                else 0
            )
    return {
        "workers": workers,
        "rows": rows,
        "rows_embedded": _count(dsn, "SELECT count(embedding) FROM bench_docs"),
        "rows_written_including_duplicates": written,
        "duplicates": written - rows,
        "wall_s": round(wall, 1),
    }


def main() -> int:
    out: dict[str, Any] = {"machine": machine()}
    with session_cluster(fast=False, external_env="BENCH_FAULTS_NEVER_EXTERNAL") as cluster:
        template = cluster.create_database(prefix="faulttemplate")
        schema.migrate(cluster.dsn(template))

        def fresh() -> str:
            return cluster.dsn(cluster.create_database(template=template, prefix="fault"))

        out["kill_9"] = kill_9(fresh())
        out["postgres_restart"] = postgres_restart(cluster, fresh())
        out["many_workers"] = [many_workers(fresh(), n) for n in (2, 4)]
    (RESULTS / "faults.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

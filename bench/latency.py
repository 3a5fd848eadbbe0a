"""Idle latency: from a single-row INSERT to its vector stored, with a worker waiting.

Both ends are stamped by the database's own clock (clock_timestamp() at insert, and in a
trigger when the embedding lands), so client polling adds nothing to the figure. Rows are
inserted one at a time, each after the previous one landed plus a short random pause, so the
worker is idle every time: this is the latency of a quiet system, not of a backlog.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import sampling, worker_process

SETUP = sampling.stamped_table("bench_latency")


def run(
    dsn: str, model: str, model_path: Path, samples: int = 200, seed: int = 0
) -> dict[str, Any]:
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_latency")
        conn.execute("DROP FUNCTION IF EXISTS bench_latency_stamp()")
        conn.execute(SETUP)
        conn.execute("SELECT embeddings.watch('bench_latency', 'body', model => %s)", (model,))
        conn.execute(sampling.stamp_trigger("bench_latency"))
        env = worker_process.worker_env(dsn, model, model_path, EMBED_POLL_SECONDS=30)
        worker = worker_process.start(env)
        try:
            _warm_up(conn)
            for i in range(samples):
                row = conn.execute(
                    "INSERT INTO bench_latency (body) VALUES (%s) RETURNING id",
                    (f"Short note number {i}: the quick brown fox jumps over the lazy dog.",),
                ).fetchone()
                assert row is not None
                _wait_embedded(conn, row[0])
                time.sleep(rng.uniform(0.05, 0.15))
            latencies = [
                float(r[0])
                for r in conn.execute(
                    "SELECT extract(epoch FROM embedded_at - inserted_at) * 1000 FROM bench_latency"
                    " WHERE body LIKE 'Short note%' ORDER BY id"
                )
            ]
        finally:
            worker.terminate()
            worker.wait(30)
    return sampling.latency_summary(latencies, mean=True)


def _warm_up(conn: psycopg.Connection[Any]) -> None:
    """One row first: the worker loads its model and settles before sampling starts."""
    row = conn.execute(
        "INSERT INTO bench_latency (body) VALUES ('warm up') RETURNING id"
    ).fetchone()
    assert row is not None
    _wait_embedded(conn, row[0], timeout=300)


def _wait_embedded(conn: psycopg.Connection[Any], key: int, timeout: float = 30) -> None:
    sampling.wait_embedded(conn, "bench_latency", key, timeout, poll=0.002)

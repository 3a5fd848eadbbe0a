"""Two bulk loads of two tables in the backfill lane: how long the small one waits behind the
large one written just before it, and the drain's throughput (a tiny fast model: the figures
are about queueing, not inference).

    python -m bench.twoloads [--big 50000] [--small 2000] [--rounds 1]

Its own cluster, the checkout's schema and worker (PYTHONPATH=<checkout> measures another).
Prints one JSON object: per round, when the small load was done and how much of the large one
was embedded by then, and when both were.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import worker_process
from bench.machine import describe as machine
from bench.sections import SHARED_MODELS
from tests.support import modelgen
from tests.support.cluster import session_cluster
from worker import schema

MODEL = "tiny-a"
BATCH = 64


def _embedded(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table} WHERE embedding IS NOT NULL").fetchone()
    return int(row[0]) if row else 0


def one_round(dsn: str, model_dir: Path, big: int, small: int) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
            " VALUES (%s, %s, 512, 'mean') ON CONFLICT DO NOTHING",
            (MODEL, modelgen.TINY["hidden"]),
        )
        for table in ("big_load", "small_load"):
            conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
            conn.execute("SELECT embeddings.watch(%s, 'body', model => %s)", (table, MODEL))
        text = "' document ' || g || ': ' || repeat('the quick brown fox ', 1 + g %% 4)"
        conn.execute(
            f"INSERT INTO big_load SELECT g, 'big' || {text} FROM generate_series(1, %s) g", (big,)
        )
        conn.execute(
            f"INSERT INTO small_load SELECT g, 'small' || {text} FROM generate_series(1, %s) g",
            (small,),
        )
        env = worker_process.worker_env(
            dsn, MODEL, model_dir.parent, EMBED_POLL_SECONDS=30, EMBED_BATCH_SIZE=BATCH
        )
        worker = worker_process.start(env)
        started = time.monotonic()
        small_done_s = big_at_small_done = None
        try:
            while True:
                small_rows, big_rows = _embedded(conn, "small_load"), _embedded(conn, "big_load")
                now = time.monotonic() - started
                if small_done_s is None and small_rows == small:
                    small_done_s, big_at_small_done = now, big_rows
                if small_rows == small and big_rows == big:
                    break
                if now > 3600:
                    raise TimeoutError("the loads did not drain in an hour")
                time.sleep(0.05)
        finally:
            worker.terminate()
            worker.wait(30)
    both_s = time.monotonic() - started
    return {
        "small_done_s": round(small_done_s or 0.0, 2),
        "big_rows_embedded_before_small_done": big_at_small_done,
        "both_done_s": round(both_s, 2),
        "rows_per_s": round((big + small) / both_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.twoloads")
    parser.add_argument("--big", type=int, default=50000)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    model_dir = modelgen.cached_model_dir(
        Path(tempfile.gettempdir()) / "embed-worker-bench-models",
        name=MODEL,
        tokenizer_dir=SHARED_MODELS / "gte-small",
        seed=1,
        pooling="mean",
        **modelgen.TINY,
    )
    rounds = []
    with session_cluster(fast=False, external_env="BENCH_DATABASE_URL") as cluster:
        template = cluster.create_database(prefix="benchtemplate")
        schema.migrate(cluster.dsn(template))
        for _ in range(args.rounds):
            dsn = cluster.dsn(cluster.create_database(template=template, prefix="bench"))
            rounds.append(one_round(dsn, model_dir, args.big, args.small))
    print(
        json.dumps({"machine": machine(), "big": args.big, "small": args.small, "rounds": rounds})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

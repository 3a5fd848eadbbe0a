"""What one search costs through POST /search, against the SQL function called directly over
pooled connections, at 1, 8 and 32 concurrent clients, in one run (issue 38).

A table of `--rows` rows with random unit vectors written straight in (no model runs for
them), all-MiniLM-L6-v2 from EMBED_TEST_MODELS or ../shared/models. Three paths, each for
`--seconds` at each concurrency, alternating:

  http       POST /search to a real `embed-worker run --no-pull` (its HTTP side only): the
             request read and checked, the query embedded by the worker's model, the target
             resolved and ranked on a pooled connection, JSON written back; keep-alive clients.
  sql+embed  the same two steps without HTTP: the query embedded by the same model in this
             process, then embeddings.search() over a psycopg_pool pool.
  sql        embeddings.search() alone, over the pool, with a vector embedded beforehand: the
             database's share.

    python -m bench.search_http DATABASE_URL [--rows N] [--seconds S] [--clients 1,8,32]
                                [--checkout DIR]

DATABASE_URL: a superuser's, on a server with the schema installed; the table is made and
dropped here. `--checkout DIR` runs the worker of another checkout (a before/after of the
route). Results: bench/results/search_http.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from bench import calls, worker_process
from bench.machine import describe as machine
from tests.support.cluster import free_port
from tests.support.models import MINILM, require_minilm
from worker.models.embedder import Embedder

TABLE = "bench_search_http"
DIMS = 384
RESULTS = Path(__file__).parent / "results" / "search_http.json"
QUERIES = [f"how do I configure item {i} of the release notes" for i in range(64)]


def setup(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, body text)")
        conn.execute(f"SELECT embeddings.watch('{TABLE}', 'body', model => %s)", (MINILM,))
        rng = np.random.default_rng(1)
        vectors = rng.standard_normal((rows, DIMS)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        with conn.cursor().copy(f"COPY {TABLE} (id, body, embedding) FROM STDIN") as copy:
            for i, v in enumerate(vectors, start=1):
                copy.write_row((i, f"note {i}", "[" + ",".join(f"{x:.5f}" for x in v) + "]"))
        conn.execute("SELECT pgmq.purge_queue('embedding_jobs')")
        conn.execute(f"ANALYZE {TABLE}")


def start_worker(dsn: str, checkout: Path, max_clients: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "DATABASE_URL": dsn,
        "EMBED_HTTP_PORT": str(port),
        "EMBED_HTTP_MAX_CONNECTIONS": str(max_clients + 8),
        "EMBED_MODEL": MINILM,
        "EMBED_MODEL_PATH": str(require_minilm().parent),
        "EMBED_LOG_LEVEL": "WARNING",
    }
    log = tempfile.TemporaryFile()  # noqa: SIM115 - the worker writes it as long as it runs
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--no-pull"], env=env, stdout=log, stderr=log,
        cwd=checkout,
    )  # fmt: skip
    worker_process.wait_ready(proc, port, log, seconds=120, what="the worker")
    return proc, port


def drive(clients: int, seconds: float, call: Callable[[int, int], None]) -> dict[str, float]:
    """`clients` threads calling `call(client, n)` for `seconds`: throughput, p50, p95 (ms)."""
    found = calls.drive(clients, seconds, call)
    return {key: found[key] for key in ("per_second", "p50_ms", "p95_ms", "calls")}


def http_call(port: int, clients: int) -> Callable[[int, int], None]:
    local = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(clients)]

    def call(client: int, n: int) -> None:
        body = json.dumps({"table": TABLE, "query": QUERIES[n % len(QUERIES)], "k": 5})
        conn = local[client]
        conn.request("POST", "/search", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"POST /search: {answer.status} {data[:200]!r}")

    return call


def sql_call(
    pool: ConnectionPool[Any], model: Embedder | None, fixed: np.ndarray[Any, Any]
) -> Callable[[int, int], None]:
    def call(client: int, n: int) -> None:
        vector = model.embed([QUERIES[n % len(QUERIES)]])[0] if model is not None else fixed
        literal = "[" + ",".join(f"{x:.6f}" for x in vector) + "]"
        with pool.connection() as conn:
            conn.execute(
                f"SELECT key FROM embeddings.search('{TABLE}', %s::halfvec, 5)", (literal,)
            ).fetchall()

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    setup(args.dsn, args.rows)
    model = Embedder.load(require_minilm(), threads=1)
    fixed = model.embed([QUERIES[0]])[0]
    proc, port = start_worker(args.dsn, args.checkout, max(counts))
    pool: ConnectionPool[Any] = ConnectionPool(
        args.dsn, min_size=max(counts), max_size=max(counts), kwargs={"autocommit": True}
    )
    results: dict[str, dict[str, Any]] = {}
    try:
        pool.wait()
        for clients in counts:
            paths = {
                "http": http_call(port, clients),
                "sql+embed": sql_call(pool, model, fixed),
                "sql": sql_call(pool, None, fixed),
            }
            for name, call in paths.items():
                drive(clients, 1.0, call)  # warm-up
                results.setdefault(str(clients), {})[name] = drive(clients, args.seconds, call)
                print(clients, name, results[str(clients)][name], flush=True)
    finally:
        pool.close()
        proc.terminate()
        proc.wait(30)
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"SELECT embeddings.unwatch('{TABLE}')")
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    for per in results.values():
        per["http/sql"] = round(per["http"]["per_second"] / per["sql"]["per_second"], 3)
        per["http/sql+embed"] = round(per["http"]["per_second"] / per["sql+embed"]["per_second"], 3)
    out = {
        "machine": machine(),
        "rows": args.rows,
        "seconds": args.seconds,
        "checkout": str(args.checkout),
        "results": results,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

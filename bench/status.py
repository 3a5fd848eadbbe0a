"""`embed-worker status` and a /metrics scrape at ten million rows (issue 16 section 3): the
exact counts that scan the table (embeddings.status_exact, what embeddings.status did before)
against the estimates that embeddings.status gives for large tables, side by side, alternating.

The rows come with their vectors already set (4 dimensions, synthetic short texts), so that no
embedding is needed; their HNSW index is an empty partial one (WHERE false), so that watch()
finds an index and builds none. Not part of the default `make bench` (the table takes minutes
to fill here): `python -m bench --only status [--scale-rows N]`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench import million, worker_process
from tests.support.cluster import free_port
from worker import db, queries
from worker import status as status_model
from worker.cli import status

TABLE = "bench_status"
MODEL = "status-bench-4d"  # a model row for the column's dimension; nothing is embedded
BACKLOG_ROWS = 1_000_000  # keys queued for the "with a backlog" figures
Conn = psycopg.Connection[Any]


def timed(body: Callable[[], object]) -> float:
    started = time.perf_counter()
    body()
    return (time.perf_counter() - started) * 1000


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "max_ms": round(ordered[-1], 2),
        "samples": len(ordered),
    }


def fill(conn: Conn, rows: int) -> dict[str, float]:
    took = {}
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES (%s, 4, 512, 'mean') ON CONFLICT (name) DO NOTHING",
        (MODEL,),
    )
    conn.execute(f"CREATE TABLE {TABLE} (id bigint NOT NULL, body text, embedding halfvec(4))")
    took["insert_s"] = timed(
        lambda: conn.execute(
            f"INSERT INTO {TABLE} SELECT i, 'doc ' || i || ' ' || md5(i::text),"
            " '[0.1,0.2,0.3,0.4]' FROM generate_series(1, %s) i",
            (rows,),
        )
    )
    took["primary_key_s"] = timed(lambda: conn.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)"))
    conn.execute(
        f"CREATE INDEX {TABLE}_embedding ON {TABLE}"
        " USING hnsw (embedding halfvec_cosine_ops) WHERE false"
    )
    took["watch_s"] = timed(
        lambda: conn.execute("SELECT embeddings.watch(%s, 'body', model => %s)", (TABLE, MODEL))
    )
    took["vacuum_analyze_s"] = timed(lambda: conn.execute(f"VACUUM ANALYZE {TABLE}"))
    return {k: round(v / 1000, 1) for k, v in took.items()}


def small_target(conn: Conn) -> int:
    """A second target just under the exact-count threshold: the most one target counts."""
    rows = status_view_threshold(conn) - 1
    conn.execute(
        "CREATE TABLE bench_status_small (id bigint PRIMARY KEY, body text, embedding halfvec(4))"
    )
    conn.execute(
        "INSERT INTO bench_status_small SELECT i, 'doc ' || i || ' ' || md5(i::text),"
        " '[0.1,0.2,0.3,0.4]' FROM generate_series(1, %s) i",
        (rows,),
    )
    conn.execute("SELECT embeddings.watch('bench_status_small', 'body', model => %s)", (MODEL,))
    conn.execute("VACUUM ANALYZE bench_status_small")
    return rows


def compare(conn: Conn, rounds: int) -> dict[str, Any]:
    """Exact against estimated, alternating round by round (the machine's speed drifts)."""
    exact: list[float] = []
    estimated: list[float] = []
    cli_fetch: list[float] = []
    for i in range(rounds * 10):
        if i % 10 == 0:
            exact.append(
                timed(lambda: conn.execute("SELECT * FROM embeddings.status_exact").fetchall())
            )
        estimated.append(timed(lambda: conn.execute("SELECT * FROM embeddings.status").fetchall()))
        cli_fetch.append(timed(lambda: status.render(status_model.fetch(conn))))
    return {
        "exact (embeddings.status_exact; before)": summary(exact),
        "estimated (embeddings.status; after)": summary(estimated),
        "status command's query and rendering (after)": summary(cli_fetch),
        "exact_over_estimated": round(statistics.median(exact) / statistics.median(estimated), 1),
    }


def cli(dsn: str, *args: str) -> float:
    return timed(
        lambda: subprocess.run(
            [sys.executable, "-m", "worker", "status", "--database-url", dsn, *args],
            check=True,
            capture_output=True,
        )
    )


def scrapes(dsn: str, tokenizer_dir: Path, count: int) -> dict[str, Any]:
    """GET /metrics of a running worker (not leasing jobs: the backlog stays), `count` times."""
    port = free_port()
    model_dir = million.tiny_model(tokenizer_dir)
    env = worker_process.worker_env(dsn, million.MODEL, model_dir.parent, EMBED_HTTP_PORT=port)
    process = worker_process.start(env, "--no-pull")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the worker did not start serving HTTP") from None
                time.sleep(0.2)
        time.sleep(6)  # the keeper has read the queue gauges once
        samples = [
            timed(lambda: urllib.request.urlopen(f"{url}/metrics", timeout=10).read())
            for _ in range(count)
        ]
        body = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    finally:
        process.terminate()
        process.wait(timeout=60)
    gauge = next(x for x in body.splitlines() if x.startswith("embed_worker_queue_jobs "))
    return {**summary(samples), "queue_jobs_gauge": float(gauge.split()[1])}


def queue_depth(conn: Conn, rounds: int) -> dict[str, float]:
    """The keeper's query behind the /metrics queue gauges (every 5 s, not per scrape)."""
    query = queries.compose("queue_depth", queue_table=queries.queue_table("embedding_jobs"))
    params = {"queue": "embedding_jobs"}
    return summary([timed(lambda: conn.execute(query, params).fetchall()) for _ in range(rounds)])


def run(dsn: str, tokenizer_dir: Path, rows: int = 10_000_000, rounds: int = 3) -> dict[str, Any]:
    with db.connect(dsn) as conn:
        setup = fill(conn, rows)
        sizes = conn.execute(
            "SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass)", (TABLE, TABLE)
        ).fetchone()
        assert sizes is not None
        result: dict[str, Any] = {
            "rows": rows,
            "texts": "'doc <n> <md5 of n>' (about 45 characters), 4-dimension vectors already set",
            "setup": setup,
            "table_bytes": sizes[0],
            "index_bytes": sizes[1],
            "exact_count_threshold_rows": status_view_threshold(conn),
        }
        result["one target, queue empty"] = compare(conn, rounds)
        result["one target, queue empty"][
            "status command, whole process (python start included)"
        ] = {
            "estimated_ms": round(statistics.median(cli(dsn) for _ in range(3)), 1),
            "exact_ms": round(cli(dsn, "--exact"), 1),
        }
        small_rows = small_target(conn)
        with_small = compare(conn, 1)
        conn.execute("SET embeddings.status_exact_rows = 0")
        both_estimated = compare(conn, 1)
        conn.execute("RESET embeddings.status_exact_rows")
        result["plus a target just under the threshold, queue empty"] = {
            "rows": small_rows,
            "status, small target counted exactly": with_small[
                "estimated (embeddings.status; after)"
            ],
            "status, both estimated": both_estimated["estimated (embeddings.status; after)"],
        }
        target = conn.execute(
            "SELECT id FROM embeddings.targets WHERE source = %s::regclass", (TABLE,)
        ).fetchone()
        assert target is not None
        queued = 0
        for backlog in (min(BACKLOG_ROWS, rows), rows):
            conn.execute(
                "SELECT embeddings_internal.enqueue_keys(%s, ARRAY(SELECT generate_series(%s, %s)::bigint))",
                (target[0], queued + 1, backlog),
            )
            queued = backlog
            # The queue's size, published to the statistics system now (status reads it there
            # to choose between counting and sampling the pending keys).
            conn.execute("SELECT pg_stat_force_next_flush()")
            label = f"two targets, {backlog:,} rows pending"
            result[label] = compare(conn, rounds if backlog < rows else 1)
            result[label]["counting the pending keys alone (embeddings_internal.queue_pending)"] = (
                summary(
                    [
                        timed(
                            lambda: conn.execute(
                                "SELECT * FROM embeddings_internal.queue_pending('embedding_jobs')"
                            ).fetchall()
                        )
                        for _ in range(5)
                    ]
                )
            )
            result[label]["/metrics scrape"] = scrapes(dsn, tokenizer_dir, 50)
            result[label]["keeper's queue_depth query (every 5 s)"] = queue_depth(conn, 10)
    return result


def status_view_threshold(conn: Conn) -> int:
    row = conn.execute("SELECT embeddings_internal.status_exact_rows()").fetchone()
    assert row is not None
    return int(row[0])

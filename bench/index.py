"""What the HNSW index costs the worker's writes: the worker's write statement shape (an UPDATE
of 128 rows' vectors from one array) timed on a table that already holds many embedded rows,
with the index and without it. The server does this work on the same cores as inference."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import psycopg

BATCH = 128
DIMS = 384


def _random_vectors(rng: np.random.Generator, n: int) -> list[str]:
    vectors = rng.standard_normal((n, DIMS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ["[" + ",".join(f"{x:.5f}" for x in v) + "]" for v in vectors]


def _time_updates(
    conn: psycopg.Connection[Any], rng: np.random.Generator, rows: int, rounds: int
) -> float:
    timings = []
    for _ in range(rounds):
        keys = rng.choice(rows, size=BATCH, replace=False).tolist()
        vectors = _random_vectors(rng, BATCH)
        started = time.perf_counter()
        conn.execute(
            "UPDATE bench_index t SET embedding = v.embedding::halfvec"
            " FROM unnest(%s::bigint[], %s::text[]) AS v(key, embedding) WHERE t.id = v.key",
            (keys, vectors),
        )
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def run(dsn: str, rows: int = 20000, rounds: int = 7) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_index")
        conn.execute(f"CREATE TABLE bench_index (id bigint PRIMARY KEY, embedding halfvec({DIMS}))")
        for start in range(0, rows, 1000):
            chunk = list(range(start, min(start + 1000, rows)))
            conn.execute(
                "INSERT INTO bench_index SELECT * FROM unnest(%s::bigint[], %s::halfvec[])",
                (chunk, _random_vectors(rng, len(chunk))),
            )
        started = time.perf_counter()
        conn.execute(
            "CREATE INDEX bench_index_hnsw ON bench_index USING hnsw (embedding halfvec_cosine_ops)"
        )
        build = time.perf_counter() - started
        with_index = _time_updates(conn, rng, rows, rounds)
        conn.execute("DROP INDEX bench_index_hnsw")
        without_index = _time_updates(conn, rng, rows, rounds)
        conn.execute("DROP TABLE bench_index")
    return {
        "rows_in_table": rows,
        "rows_per_update": BATCH,
        "rounds": rounds,
        "index": "hnsw (halfvec_cosine_ops), pgvector defaults m = 16, ef_construction = 64",
        "index_build_s": round(build, 1),
        "update_ms_with_index": round(with_index * 1000, 1),
        "update_ms_without_index": round(without_index * 1000, 1),
        "ms_per_row_for_the_index": round((with_index - without_index) * 1000 / BATCH, 2),
    }

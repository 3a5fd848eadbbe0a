"""HNSW upkeep at scale: inserting vectors one batch at a time into a large index (what the worker
does during a backfill) against building the index once after the backfill (a parallel build
with enough maintenance_work_mem to hold the graph).

The vectors are real-looking and distinct: a Gaussian with the mean and covariance of real
all-MiniLM-L6-v2 embeddings of distinct standard-library docstrings (so they have real
embeddings' anisotropy and neighbourhood structure, not near-duplicates, which make HNSW look
cheap, nor isotropic noise, which makes it look expensive), normalized. The realism figures
(mean pairwise cosine, nearest-neighbour cosine) are recorded beside those of the real vectors.

Not part of the default `make bench`: `python -m bench --only hnsw [--scale-rows N]`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from bench import corpus
from worker.models.embedder import Embedder

DIMS = 384
BATCH = 128  # the worker's write: one UPDATE of a batch's vectors
PROBE_ROWS = 20 * BATCH  # rows kept without a vector, for timing inserts into the full index


def real_embeddings(model_dir: Path, n: int = 3000) -> np.ndarray:
    texts = corpus.stdlib_docstrings()[:n]
    return Embedder.load(str(model_dir), threads=2).embed(texts)


def gaussian_like(real: np.ndarray, n: int, seed: int = 11) -> np.ndarray:
    """n unit vectors from a Gaussian fitted to `real` (float16, to hold 1M in 768 MB)."""
    rng = np.random.default_rng(seed)
    mean = real.mean(axis=0)
    cov = np.cov(real, rowvar=False) + np.eye(real.shape[1]) * 1e-6
    factor = np.linalg.cholesky(cov).astype(np.float32)
    out = np.empty((n, real.shape[1]), dtype=np.float16)
    for start in range(0, n, 100_000):
        z = rng.standard_normal((min(100_000, n - start), real.shape[1]), dtype=np.float32)
        v = mean + z @ factor.T
        out[start : start + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def realism(vectors: np.ndarray, sample: int = 3000) -> dict[str, float]:
    v = vectors[:sample].astype(np.float32)
    sims = v @ v.T
    np.fill_diagonal(sims, -1.0)
    upper = sims[np.triu_indices(len(v), 1)]
    return {
        "mean_pairwise_cosine": round(float(upper.mean()), 4),
        "p99_pairwise_cosine": round(float(np.percentile(upper, 99)), 4),
        "median_nearest_neighbour_cosine": round(float(np.median(sims.max(axis=1))), 4),
        "share_nearest_over_0.99": round(float((sims.max(axis=1) > 0.99).mean()), 4),
    }


def load(conn: psycopg.Connection[Any], table: str, vectors: np.ndarray) -> None:
    """`table` gets one row per vector, then PROBE_ROWS rows without one (binary COPY)."""
    conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, embedding halfvec({DIMS}))")
    with conn.cursor() as cur, cur.copy(f"COPY {table} (id, embedding) FROM STDIN BINARY") as cp:
        cp.set_types(["int8", "halfvec"])
        for i, v in enumerate(vectors):
            cp.write_row((i, HalfVector(v)))
        for i in range(len(vectors), len(vectors) + PROBE_ROWS):
            cp.write_row((i, None))
    conn.execute(f"VACUUM ANALYZE {table}")


def time_inserts(
    conn: psycopg.Connection[Any], table: str, first: int, vectors: np.ndarray, rounds: int
) -> list[float]:
    """Seconds per UPDATE of BATCH vectors into rows that had none, `rounds` times."""
    timings = []
    for r in range(rounds):
        keys = list(range(first + r * BATCH, first + (r + 1) * BATCH))
        values = [HalfVector(v) for v in vectors[r * BATCH : (r + 1) * BATCH]]
        started = time.perf_counter()
        conn.execute(
            f"UPDATE {table} t SET embedding = v.e"
            " FROM unnest(%s::bigint[], %s::halfvec[]) AS v(id, e) WHERE t.id = v.id",
            (keys, values),
        )
        timings.append(time.perf_counter() - started)
    return timings


def measure(
    conn: psycopg.Connection[Any], vectors: np.ndarray, probe: np.ndarray, rounds: int
) -> dict[str, Any]:
    n = len(vectors)
    table = f"bench_hnsw_{n}"
    load(conn, table, vectors)
    conn.execute("SET maintenance_work_mem = '3GB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")  # leader + 1: both cores
    started = time.perf_counter()
    conn.execute(f"CREATE INDEX ON {table} USING hnsw (embedding halfvec_cosine_ops)")
    build = time.perf_counter() - started
    size = conn.execute(f"SELECT pg_indexes_size('{table}'::regclass)").fetchone()
    # Alternating with and without the index, on fresh rows each time (inserts into the
    # full index vs the same UPDATE with no index to maintain).
    half = PROBE_ROWS // 2
    with_index = time_inserts(conn, table, n, probe, rounds)
    conn.execute(f"DROP INDEX {table}_embedding_idx")
    without_index = time_inserts(conn, table, n + half, probe[half:], rounds)
    conn.execute(f"DROP TABLE {table}")
    per_row_ms = (statistics.median(with_index) - statistics.median(without_index)) * 1000 / BATCH
    return {
        "rows": n,
        "build_s": round(build, 1),
        "build_ms_per_row": round(build * 1000 / n, 3),
        "index_mb": round((size[0] if size else 0) / 2**20, 1),
        "update_ms_per_batch_with_index": round(statistics.median(with_index) * 1000, 1),
        "update_ms_per_batch_without_index": round(statistics.median(without_index) * 1000, 1),
        "insert_ms_per_row_into_index": round(per_row_ms, 3),
        "rounds_ms_with_index": [round(t * 1000, 1) for t in with_index],
        "insert_vs_build_per_row": round(per_row_ms / (build * 1000 / n), 1),
    }


def run(dsn: str, model_dir: Path, rows: int = 1_000_000, rounds: int = 8) -> dict[str, Any]:
    real = real_embeddings(model_dir)
    vectors = gaussian_like(real, rows + 2 * PROBE_ROWS)
    probe = vectors[rows:]
    sizes = sorted({max(rows // 10, 1000), rows})
    result: dict[str, Any] = {
        "vectors": "Gaussian with the mean and covariance of 3000 real all-MiniLM-L6-v2 "
        "embeddings of distinct stdlib docstrings, normalized; halfvec(384)",
        "realism": {"real": realism(real), "synthetic": realism(vectors)},
        "index": "hnsw (halfvec_cosine_ops), m = 16, ef_construction = 64 (pgvector defaults)",
        "build": "maintenance_work_mem = 3GB, max_parallel_maintenance_workers = 1 (2 cores)",
        "insert": f"UPDATE of {BATCH} rows' vectors (the worker's write), median of {rounds}",
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        for n in sizes:
            result[f"{n} rows"] = measure(conn, vectors[:n], probe, rounds)
    largest = result[f"{rows} rows"]
    smaller = result[f"{sizes[0]} rows"]
    # A backfill of `rows` rows inserting one batch at a time pays the per-row cost of an
    # index that grows from 0 to `rows`: bounded above by rows x the cost at full size, and
    # below by the cost at a tenth of it for the last nine tenths.
    result["backfill_estimate_s"] = {
        "insert_as_you_go_at_least": round(
            0.9 * rows * smaller["insert_ms_per_row_into_index"] / 1000, 0
        ),
        "insert_as_you_go_at_most": round(rows * largest["insert_ms_per_row_into_index"] / 1000, 0),
        "build_after": largest["build_s"],
    }
    return result

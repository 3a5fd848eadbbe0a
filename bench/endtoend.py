"""End-to-end drains: rows queued in a watched table (halfvec column, HNSW index), then the wall
time of `embed-worker run --once` processes, process start and model load included, with
their CPU time and peak RSS."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import worker_process


def prepare(dsn: str, model: str, texts: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_docs")
        conn.execute("CREATE TABLE bench_docs (id bigint PRIMARY KEY, body text NOT NULL)")
        conn.execute("SELECT embeddings.watch('bench_docs', 'body', model => %s)", (model,))
        with conn.cursor() as cur, cur.copy("COPY bench_docs (id, body) FROM STDIN") as copy:
            for i, text in enumerate(texts):
                copy.write_row((i, text))


def drain(
    dsn: str,
    model: str,
    model_path: Path,
    texts: list[str],
    *,
    workers: int = 1,
    threads: int = 2,
    variant: str = "fp32",
    batch_size: int = 128,
    cores: int = 2,
) -> dict[str, Any]:
    prepare(dsn, model, texts)
    env = worker_process.worker_env(
        dsn,
        model,
        model_path,
        EMBED_THREADS=threads,
        EMBED_MODEL_VARIANT=variant,
        EMBED_BATCH_SIZE=batch_size,
    )
    started = time.perf_counter()
    processes = [worker_process.start(env, "--once", "--no-progress") for _ in range(workers)]
    costs = [worker_process.wait(p, started) for p in processes]
    wall = max(c.wall_s for c in costs)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(embedding), count(*) FROM bench_docs").fetchone()
        failed = conn.execute("SELECT count(*) FROM embeddings.failures").fetchone()
    assert row is not None and failed is not None
    if any(c.returncode != 0 for c in costs) or row[0] != row[1]:
        raise RuntimeError(
            f"drain incomplete: {row[0]}/{row[1]} rows, exit codes {[c.returncode for c in costs]}"
        )
    cpu = sum(c.cpu_s for c in costs)
    return {
        "rows": len(texts),
        "workers": workers,
        "threads": threads,
        "variant": variant,
        "wall_s": round(wall, 2),
        "docs_per_s": round(len(texts) / wall, 1),
        "cpu_utilisation": round(cpu / (wall * cores), 2),
        "peak_rss_mb": round(max(c.peak_rss_mb for c in costs), 1),
        "failed": int(failed[0]),
    }


def median(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The sample with the median rate (the lower middle one of an even count), with every
    round's rate beside it, so the spread is on record."""
    ordered = sorted(samples, key=lambda sample: sample["docs_per_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds_docs_per_s"] = [sample["docs_per_s"] for sample in samples]
    chosen["spread"] = round(
        (ordered[-1]["docs_per_s"] - ordered[0]["docs_per_s"])
        / statistics.median(s["docs_per_s"] for s in samples),
        3,
    )
    return chosen

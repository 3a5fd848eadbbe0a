"""A large backlog drained by one worker, with its resident memory sampled all along: memory
must stay flat (no growth with the number of rows processed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg

from bench import corpus, endtoend, worker_process


def run(dsn: str, model: str, model_path: Path, rows: int = 20000) -> dict[str, Any]:
    endtoend.prepare(dsn, model, corpus.rows(rows))
    env = worker_process.worker_env(dsn, model, model_path)
    started = time.perf_counter()
    process = worker_process.start(env, "--once", "--no-progress")
    samples: list[tuple[float, float, int]] = []  # (seconds, rss MB, rows embedded)
    with psycopg.connect(dsn, autocommit=True) as conn:
        while process.poll() is None:
            rss = worker_process.rss_mb(process.pid)
            row = conn.execute("SELECT count(embedding) FROM bench_docs").fetchone()
            if rss is not None and row is not None:
                samples.append((time.perf_counter() - started, rss, int(row[0])))
            time.sleep(1.0)
        done = conn.execute("SELECT count(embedding) FROM bench_docs").fetchone()
    wall = time.perf_counter() - started
    assert done is not None and done[0] == rows, f"only {done} of {rows} rows embedded"
    working = [s for s in samples if s[2] > 0]
    first_tenth = [s[1] for s in working if s[2] <= rows / 10] or [working[0][1]]
    last_tenth = [s[1] for s in working if s[2] >= rows * 0.9] or [working[-1][1]]
    return {
        "model": model,
        "rows": rows,
        "wall_s": round(wall, 1),
        "docs_per_s": round(rows / wall, 1),
        "rss_mb_first_tenth_max": round(max(first_tenth), 1),
        "rss_mb_last_tenth_max": round(max(last_tenth), 1),
        "rss_mb_max": round(max(s[1] for s in samples), 1),
        "samples": [(round(t, 1), round(r, 1), n) for t, r, n in samples],
    }

"""The longest application statement stall while a model change's swap waits behind a long
reader (issue 25 §2), before and after the swap's lock became polite, in one run.

A table whose model change is complete (every new vector written) is held by a long read
transaction, so the swap cannot take its ACCESS EXCLUSIVE lock. Meanwhile one application
connection runs single-row UPDATEs with a 500 ms lock_timeout, and the swap is retried at the
worker's cadence. Variants:

- before: each attempt waits up to 2 s for the lock (the old `lock_timeout = '2s'`, emulated
  with embeddings.lock_attempt_ms = 2000), retried every 2 s;
- after: attempts of 20 ms (the default), a few per call, and the worker's backoff between calls
  (worker/process/changes.py);
- no_swap: the same reader and statements with no swap tried: the machine's own noise.

Reported: statements, failures (lock_timeout), and the longest, p99 and median statement time.

    python -m bench --only swapstall
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import psycopg

from worker.process.changes import CHECK_SECONDS, Completer

ROWS = 2000
VEC = "array_fill(0.1, ARRAY[384])::halfvec"


def _ready_change(conn: psycopg.Connection[Any]) -> None:
    """docs, watched, with a model change whose every new vector is written (no worker)."""
    conn.execute("DROP TABLE IF EXISTS docs CASCADE")
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(f"INSERT INTO docs SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'gte-small')")
    conn.execute(f"UPDATE docs SET embedding = {VEC}")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2')")
    conn.execute(f"UPDATE docs SET embedding_next = {VEC}")
    conn.execute("DELETE FROM embeddings.backfills")
    conn.execute(
        "SELECT pgmq.purge_queue('embedding_jobs'), pgmq.purge_queue('embedding_jobs_backfill')"
    )
    conn.execute("TRUNCATE embeddings.inbox")


def _variant(dsn: str, name: str, seconds: float) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        _ready_change(conn)
    times: list[float] = []
    failures = 0
    calls = 0
    done = threading.Event()

    def swapper() -> None:
        nonlocal calls
        completer = Completer()
        with psycopg.connect(dsn, autocommit=True) as swap:
            if name == "before":
                swap.execute("SET embeddings.lock_attempt_ms = 2000")
            while not done.is_set():
                results = swap.execute(
                    "SELECT * FROM embeddings_internal.complete_changes()"
                ).fetchall()
                calls += 1
                busy = any(r.startswith("table busy") for _, r in results)
                pause = CHECK_SECONDS if name == "before" else completer._pause(busy)
                done.wait(pause)

    with psycopg.connect(dsn) as reader, psycopg.connect(dsn, autocommit=True) as app:
        reader.execute("SELECT count(*) FROM docs")  # the long reader: stays open
        app.execute("SET lock_timeout = '500ms'")
        thread = threading.Thread(target=swapper)
        if name != "no_swap":
            thread.start()
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            i += 1
            started = time.perf_counter()
            try:
                app.execute("UPDATE docs SET body = body WHERE id = %s", (i % ROWS + 1,))
            except psycopg.errors.LockNotAvailable:
                failures += 1
            times.append(time.perf_counter() - started)
        done.set()
        if thread.is_alive():
            thread.join()
        reader.rollback()
    times.sort()
    return {
        "statements": len(times),
        "failed_lock_timeout_500ms": failures,
        "swap_calls": calls,
        "longest_ms": round(times[-1] * 1000, 1),
        "p99_ms": round(times[int(len(times) * 0.99)] * 1000, 2),
        "median_ms": round(statistics.median(times) * 1000, 3),
    }


def run(dsn: str, seconds: float = 15.0) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "rows": ROWS,
        "no_swap": _variant(dsn, "no_swap", seconds),
        "before": _variant(dsn, "before", seconds),
        "after": _variant(dsn, "after", seconds),
    }

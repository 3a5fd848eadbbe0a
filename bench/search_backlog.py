"""The `search` section's backlog phase (bench/search.py): questions to a worker while it drains
a backlog of another table, windows with and without questions alternating; the questions'
latency against the idle worker's, and the backlog's embed rate with questions against
without."""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from bench import corpus
from bench.calls import drive, percentiles
from bench.search_paths import http_call

T = TypeVar("T")

BACKLOG = "bench_backlog"
THINK = 0.2  # seconds a backlog-phase client waits between an answer and its next question
POISSON_THINK = 2.0  # ... its mean, drawn from the exponential distribution (Poisson arrivals)


def _rate(dsn: str, work: Callable[[], T]) -> tuple[float, T]:
    """The backlog's rows embedded per second while `work` runs, and what it returned. The
    worker commits a batch at a time (128 rows, a second or more apart): the count is polled
    and the rate taken between its first and last change in the window, so that where the
    window cuts a batch does not count."""
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def poll() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not done.is_set():
                samples.append((time.monotonic(), _embedded(conn)))
                done.wait(0.25)
            samples.append((time.monotonic(), _embedded(conn)))

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        found = work()
    finally:
        done.set()
        thread.join()
    changes = [samples[i] for i in range(1, len(samples)) if samples[i][1] != samples[i - 1][1]]
    if len(changes) >= 2:
        (t0, n0), (t1, n1) = changes[0], changes[-1]
    else:
        (t0, n0), (t1, n1) = samples[0], samples[-1]
    return (n1 - n0) / max(t1 - t0, 1e-9), found


def _embedded(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(f"SELECT count(*) FROM {BACKLOG} WHERE embedding IS NOT NULL").fetchone()
    return int(row[0]) if row else 0


def backlog(
    dsn: str,
    port: int,
    *,
    model: str,
    asked: list[str],
    rows: int,
    window: float,
    rounds: int,
    poisson: bool,
) -> dict[str, Any]:
    """8 clients asking `asked` of the worker on `port`, idle, then while it drains `rows` of a
    table watched with `model`, windows with and without questions alternating: question p95
    (over every question of the windows) against idle's, and the embed rate in each.
    `poisson`: each client asks after a think time drawn with mean POISSON_THINK (questions
    arrive as a Poisson process's, as a chat product's users ask), else THINK after each
    answer."""
    think = POISSON_THINK if poisson else THINK
    call = http_call(port, 8, asked, mode="vector")
    drive(8, 2.0, call, think=THINK)
    idle = [drive(8, window, call, think=think, poisson=poisson)]
    texts = corpus.rows(rows, seed=3)  # more rows than the docstrings: cycled, each distinct
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {BACKLOG} (id int PRIMARY KEY, body text)")
        with conn.cursor().copy(f"COPY {BACKLOG} (id, body) FROM STDIN") as copy:
            for i, text in enumerate(texts):
                copy.write_row((i, text))
        conn.execute(f"SELECT embeddings.watch('{BACKLOG}', 'body', model => %s)", (model,))
        time.sleep(window / 2)  # the drain under way
        quiet: list[float] = []
        busy: list[float] = []
        loaded: list[dict[str, Any]] = []
        for _ in range(rounds):
            quiet.append(_rate(dsn, lambda: time.sleep(window))[0])
            rate, found = _rate(dsn, lambda: drive(8, window, call, think=think, poisson=poisson))
            busy.append(rate)
            loaded.append(found)
            shown = {k: v for k, v in loaded[-1].items() if k != "latencies"}
            print("backlog", round(quiet[-1], 1), round(busy[-1], 1), shown, flush=True)
        left = rows - _embedded(conn)
        conn.execute(f"SELECT embeddings.unwatch('{BACKLOG}')")
        conn.execute(f"DROP TABLE {BACKLOG}")
        conn.execute("SELECT pgmq.purge_queue('embedding_jobs')")
    idle.append(drive(8, window, call, think=think, poisson=poisson))
    idle_all = percentiles([x for r in idle for x in r.pop("latencies")])
    busy_all = percentiles([x for r in loaded for x in r.pop("latencies")])
    idle_all.pop("latencies")
    busy_all.pop("latencies")
    return {
        "arrivals": f"poisson, mean think {think} s" if poisson else f"think {think} s",
        "idle": idle,
        "draining": loaded,
        "idle_all": idle_all,
        "draining_all": busy_all,
        "rows_per_s_without_questions": [round(x, 1) for x in quiet],
        "rows_per_s_with_questions": [round(x, 1) for x in busy],
        "rows_left_unembedded": left,
        "p95_draining/idle": round(busy_all["p95_ms"] / idle_all["p95_ms"], 2),
        "rate_with/without_questions": round(statistics.median(busy) / statistics.median(quiet), 2),
        "yields": _backlog_yields(port),
    }


def _backlog_yields(port: int) -> float | None:
    """embed_worker_backlog_yields_total, summed, from the worker's /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    found = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("embed_worker_backlog_yields_total")
    ]
    return sum(found) if found else None

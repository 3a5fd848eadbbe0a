"""Concurrent callers, timed: threads calling something for a while, their calls per second and
latency percentiles (search.py, search_http.py, http_front.py, questions_first.py)."""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any


def drive(
    clients: int,
    seconds: float,
    call: Callable[[int, int], None],
    *,
    think: float = 0.0,
    poisson: bool = False,
) -> dict[str, Any]:
    """`clients` threads calling `call(client, n)` for `seconds`, each waiting `think` after
    an answer (`poisson`: a time drawn from the exponential distribution of mean `think`, so
    that questions arrive as a Poisson process's do, as a chat product's users ask): calls/s,
    p50/p95/p99 latency (ms), and every latency (s, under "latencies")."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    stop = time.monotonic() + seconds

    def run(client: int) -> None:
        n = 0
        rng = random.Random(client)
        try:
            if poisson:  # the clients' first questions spread too
                time.sleep(min(rng.expovariate(1 / think), max(0.0, stop - time.monotonic())))
            while time.monotonic() < stop:
                started = time.perf_counter()
                call(client, n)
                latencies[client].append(time.perf_counter() - started)
                n += 1
                if think:
                    wait = rng.expovariate(1 / think) if poisson else think
                    time.sleep(min(wait, max(0.0, stop - time.monotonic())))
        except BaseException as exc:  # reported after the round
            errors.append(exc)

    elapsed = run_all([threading.Thread(target=run, args=(c,)) for c in range(clients)])
    if errors:
        raise errors[0]
    every = sorted(x for per in latencies for x in per)
    return {"per_second": round(len(every) / elapsed, 1), **percentiles(every)}


def run_all(threads: Sequence[threading.Thread]) -> float:
    """Starts `threads` and waits for them all; the seconds they took."""
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - began


def percentiles(every: list[float]) -> dict[str, Any]:
    """p50/p95/p99 (ms) of latencies in seconds, their count, and the latencies sorted."""
    every = sorted(every)
    return {
        "p50_ms": round(statistics.median(every) * 1000, 2),
        "p95_ms": round(every[int(0.95 * (len(every) - 1))] * 1000, 2),
        "p99_ms": round(every[int(0.99 * (len(every) - 1))] * 1000, 2),
        "calls": len(every),
        "latencies": every,
    }

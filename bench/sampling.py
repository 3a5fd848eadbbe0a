"""What the latency benches share: waiting for a condition with a deadline, and the summary of
a list of latencies (milliseconds) as the results files record it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def wait_until(
    condition: Callable[..., object], timeout: float, what: str, poll: float = 0.01
) -> None:
    """Polls `condition` every `poll` seconds until it holds; TimeoutError naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(poll)


def latency_summary(latencies: list[float], mean: bool = False) -> dict[str, Any]:
    """Samples, p50, p95 and max (and the mean, when asked) of latencies in milliseconds."""
    if not latencies:
        return {"samples": 0}
    ordered = sorted(latencies)
    summary: dict[str, Any] = {
        "samples": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
    }
    if mean:
        summary["mean_ms"] = round(statistics.fmean(ordered), 1)
    summary["max_ms"] = round(ordered[-1], 1)
    return summary

"""The upgrade bench's summary of statement latencies (bench/upgrade_sessions.py)."""

from __future__ import annotations

from bench.upgrade_sessions import latency_summary


def test_p99_is_the_nearest_rank_and_max_the_longest_stall() -> None:
    latencies = [0.001] * 98 + [0.050, 0.400]  # one statement waited out the lock
    assert latency_summary(latencies) == {
        "statements": 100,
        "median_ms": 1.0,
        "p99_ms": 50.0,
        "max_ms": 400.0,
    }


def test_p99_of_few_statements_is_their_longest() -> None:
    assert latency_summary([0.002, 0.003, 0.010])["p99_ms"] == 10.0


def test_no_statements_says_so() -> None:
    assert latency_summary([]) == {"statements": 0}

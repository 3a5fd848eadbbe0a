"""The one retry policy (worker/backoff.py): known delays under a seeded generator, bounds for
every attempt, and the same delays as the four hand-written backoffs it replaced."""

from __future__ import annotations

import random

import pytest
import tenacity
from hypothesis import given
from hypothesis import strategies as st

from worker.backoff import Backoff
from worker.pipeline import jobs
from worker.process import changes


def test_known_delays() -> None:
    policy = Backoff(5.0, 900.0, spread=(0.8, 1.2))
    rng = random.Random(7)
    # base · 2^(attempt-1), capped at 900, times U(0.8, 1.2) drawn from Random(7)
    expected = [5 * 2**i * (0.8 + 0.4 * x) for i, x in enumerate(_uniforms(7, 3))]
    assert [policy.delay(n, rng) for n in (1, 2, 3)] == pytest.approx(expected)
    assert Backoff(5.0, 900.0, spread=(1.0, 1.0)).delay(20) == 900.0  # capped
    assert Backoff(5.0, 900.0, spread=(1.0, 1.0)).delay(0) == 5.0  # attempt 0 counts as 1


def _uniforms(seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]


@given(
    base=st.floats(0, 100),
    cap=st.floats(0, 10_000),
    low=st.floats(0, 2),
    width=st.floats(0, 2),
    attempt=st.integers(-5, 10_000),
    seed=st.integers(0, 2**32),
)
def test_every_delay_is_within_the_jittered_exponential(
    base: float, cap: float, low: float, width: float, attempt: int, seed: int
) -> None:
    policy = Backoff(base, cap, spread=(low, low + width))
    delay = policy.delay(attempt, random.Random(seed))
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 64))
    assert low * ceiling - 1e-9 <= delay <= (low + width) * ceiling + 1e-9


def test_bad_policies_are_refused() -> None:
    for args in ((-1.0, 1.0), (1.0, -1.0)):
        with pytest.raises(ValueError, match="not a backoff policy"):
            Backoff(*args)
    with pytest.raises(ValueError, match="not a backoff policy"):
        Backoff(1.0, 1.0, spread=(1.2, 0.8))


def test_the_jobs_backoff_is_the_one_it_replaced() -> None:
    """Whole seconds, ±20%: the hand-written formula, same seed, same numbers."""
    for attempts in range(0, 12):
        old = random.Random(attempts)
        delay = min(900.0, 5.0 * 2 ** max(attempts - 1, 0)) * old.uniform(0.8, 1.2)
        assert jobs.backoff_seconds(attempts, 5.0, 900.0, random.Random(attempts)) == max(
            0, round(delay)
        )


def test_the_busy_swap_backs_off_as_before() -> None:
    assert (
        Backoff(changes.CHECK_SECONDS, changes.BUSY_BACKOFF_MAX_SECONDS, spread=(0.5, 1.5))
        == changes.BUSY_BACKOFF
    )


def test_a_policy_is_a_tenacity_wait() -> None:
    policy = Backoff(0.01, 0.02, spread=(1.0, 1.0))
    waits: list[float] = []
    retrying = tenacity.Retrying(
        wait=policy,
        stop=tenacity.stop_after_attempt(4),
        sleep=waits.append,
        retry=tenacity.retry_if_exception_type(OSError),
        reraise=True,
    )
    with pytest.raises(OSError):
        for attempt in retrying:
            with attempt:
                raise OSError("down")
    assert waits == pytest.approx([0.01, 0.02, 0.02])

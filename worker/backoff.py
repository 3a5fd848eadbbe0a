"""One retry policy: exponential backoff with jitter, the same shape wherever something is
retried (a job's attempts, a model change's busy table, a provider's request, a lost database
connection).

The delay before retry `attempt` (from 1) is base · 2^(attempt - 1), capped at `cap`, times a
random factor drawn from `spread`: (0.8, 1.2) is ±20%, (0, 1) "full jitter" (AWS's name: any
wait up to the exponential one). Jitter keeps workers that failed together from retrying in
step. A policy is also a tenacity wait (`wait=policy`), so tenacity's retry loops use it as is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol


class _RetryState(Protocol):
    attempt_number: int  # tenacity.RetryCallState's: 1 after the first failure


@dataclass(frozen=True)
class Backoff:
    base: float  # seconds before the first retry (times the jitter)
    cap: float  # the longest un-jittered delay
    spread: tuple[float, float] = (0.8, 1.2)  # the jitter factor's range

    def __post_init__(self) -> None:
        low, high = self.spread
        if self.base < 0 or self.cap < 0 or not 0 <= low <= high:
            raise ValueError(f"not a backoff policy: {self}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry `attempt` (from 1; lower counts as 1)."""
        exponent = min(max(attempt - 1, 0), 64)  # 2^64 · base is past any cap
        ceiling = min(self.cap, self.base * 2.0**exponent)
        return ceiling * (rng or _RANDOM).uniform(*self.spread)

    def __call__(self, retry_state: _RetryState) -> float:
        """As a tenacity wait: the delay before the retry that follows attempt N."""
        return self.delay(retry_state.attempt_number)


_RANDOM = random.Random()  # noqa: S311 - jitter, not secrecy

"""A circuit breaker per provider (the endpoint's host): after repeated failures, stop sending.

Closed: requests go. After THRESHOLD consecutive failures (5xx, timeouts, connection errors,
malformed answers) it opens: requests fail at once with ProviderUnavailable, whose retry_after
says when the breaker lets a probe through, and the targets' jobs are deferred with that reason
(no attempt spent, nothing dead-lettered) instead of each batch waiting out its own retries.
When the open time is over, one request goes through (half-open): success closes the breaker,
failure opens it again for twice as long (up to MAX_OPEN_SECONDS).

Rate limits are not failures: a 429 says the provider is up and wants us slower. Its
Retry-After throttles every request to the provider until then (`throttle`), so that the
other in-flight slots do not each collect a 429 of their own.

Every outcome of a probe settles the breaker, or the circuit would stay open with no request
ever let through again: an answer (success(): vectors, or a refusal, a rejected input, vectors
of another dimension: the provider is up, the fault is the registration's or the input's)
closes it; a failure opens it for longer; a 429 (throttle()) keeps it open, not
longer, until the Retry-After ends, when the next probe goes. A probe that ends any other way
(never sent: a long throttle, a key that cannot be sent; an exception) gives its slot back as
it ends (`admit()`'s `finally`), the breaker as it was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from worker import exceptions, metrics

logger = logging.getLogger(__name__)

THRESHOLD = 5
OPEN_SECONDS = 5.0
MAX_OPEN_SECONDS = 300.0


class Probe:
    """The one request let through while the circuit is open (compared by identity)."""


class Breaker:
    def __init__(
        self,
        provider: str,
        *,
        threshold: int = THRESHOLD,
        open_seconds: float = OPEN_SECONDS,
        max_open_seconds: float = MAX_OPEN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.threshold = threshold
        self.base_open = open_seconds
        self.max_open = max_open_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_for = open_seconds
        self._open_until: float | None = None  # None: closed
        self._probe: Probe | None = None  # the request let through half-open, while under way
        self._throttled_until = 0.0
        self.last_error: str | None = None
        metrics.PROVIDER_CIRCUIT_OPEN.labels(provider).set(0)

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None

    def admit(self) -> Probe | None:
        """Raises ProviderUnavailable while open; once the open time is over lets one request
        through as the probe (returned: its sender calls release() with it when the request
        ends, however it ends)."""
        with self._lock:
            if self._open_until is None:
                return None
            remaining = self._open_until - self.clock()
            if remaining <= 0 and self._probe is None:
                self._probe = probe = Probe()  # half-open: this caller is the probe
                return probe
            raise exceptions.ProviderUnavailable(self._reason(), retry_after=max(remaining, 1.0))

    def release(self, probe: Probe | None) -> None:
        """The request admit() let through has ended: a probe whose outcome did not settle
        the breaker gives its slot back, the breaker as it was (the next request probes)."""
        if probe is None:
            return
        with self._lock:
            if self._probe is probe:
                self._probe = None

    def throttled_for(self) -> float:
        """Seconds left of the provider's last Retry-After (0 when none)."""
        with self._lock:
            return max(self._throttled_until - self.clock(), 0.0)

    def throttle(self, seconds: float, why: str = "rate limited (429)") -> None:
        """The provider said 429 (or is loading its model) for `seconds`: not a failure. A
        probe's 429 keeps the circuit open until then, when the next probe goes; `why` is then
        the reason the open circuit gives (the provider's last word, not the failure before)."""
        with self._lock:
            self._throttled_until = max(self._throttled_until, self.clock() + seconds)
            if self._probe is not None:
                self._probe = None
                assert self._open_until is not None
                self._open_until = max(self._open_until, self._throttled_until)
                self.last_error = why

    def success(self) -> None:
        with self._lock:
            was_open = self._open_until is not None
            self._failures = 0
            self._open_for = self.base_open
            self._open_until = None
            self._probe = None
            self.last_error = None  # (a reason is given only while open: none to keep)
        if was_open:
            logger.info("provider %s answers again: circuit closed", self.provider)
        metrics.PROVIDER_CIRCUIT_OPEN.labels(self.provider).set(0)

    def failure(self, error: str) -> None:
        with self._lock:
            self.last_error = error
            self._failures += 1
            if self._probe is not None:  # the probe failed: open again, for longer
                self._probe = None
                self._open_for = min(self._open_for * 2, self.max_open)
                self._open_until = self.clock() + self._open_for
                opened = False
            elif self._open_until is None and self._failures >= self.threshold:
                self._open_until = self.clock() + self._open_for
                opened = True
            else:
                opened = False
            is_open = self._open_until is not None
        if opened:
            logger.error(
                "provider %s failed %d times in a row: circuit open, its targets wait "
                "(deferred) and a probe goes in %.0f s; last error: %s",
                self.provider,
                self.threshold,
                self._open_for,
                error,
            )
        metrics.PROVIDER_CIRCUIT_OPEN.labels(self.provider).set(1 if is_open else 0)

    def problem(self) -> str | None:
        """Why the provider's targets wait, while open (for /readyz); None when closed."""
        with self._lock:
            return self._reason() if self._open_until is not None else None

    def _reason(self) -> str:
        # (called with the lock held)
        assert self._open_until is not None
        remaining = max(self._open_until - self.clock(), 0.0)
        return (
            f"provider {self.provider} unavailable (circuit open after {self._failures} "
            f"failures in a row; next try in {remaining:.0f} s): {self.last_error}"
        )


_breakers: dict[str, Breaker] = {}
_lock = threading.Lock()


def for_provider(provider: str) -> Breaker:
    """The process's breaker for `provider` (every model served by that host shares it)."""
    with _lock:
        found = _breakers.get(provider)
        if found is None:  # (the module's settings as they are now: tests change them)
            found = _breakers[provider] = Breaker(
                provider,
                threshold=THRESHOLD,
                open_seconds=OPEN_SECONDS,
                max_open_seconds=MAX_OPEN_SECONDS,
            )
        return found


def open_providers() -> dict[str, str]:
    """Providers whose circuit is open, with why."""
    with _lock:
        breakers = list(_breakers.values())
    return {b.provider: p for b in breakers if (p := b.problem()) is not None}


def reset() -> None:
    """Forgets every breaker (tests)."""
    with _lock:
        _breakers.clear()

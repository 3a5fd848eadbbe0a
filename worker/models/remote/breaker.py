"""Circuit breakers of a provider (the endpoint's host): after repeated failures, stop sending.

Each provider has one circuit for the host and one per model it serves, and a failure opens
only the circuit it is about. The host's: what says the host cannot serve anyone (a connection
refused or reset, no connection within the timeout, 5xx); it opens for every model the host
serves, its reason naming the failure that opened it and the model whose request met it
("the provider at HOST is failing (HTTP 502: ..., from model m)"). A model's: what says only
that model's requests fail while the host answers (a malformed or oversized answer, no answer
within the model's timeout); it opens for that model alone ("model m at HOST is failing (...)").
One model answering HTML, or stalling, on a shared gateway held back every model of the host,
each deferred with that model's error, their own problems unseen. What is not a failure at
all (a refusal, a rejected input, vectors of another dimension: the provider is up, the fault
is the key's, the registration's or the input's) never opens one; it is that model's reason
alone, as is a key that is missing (checked before a circuit is asked: exchange.py).

Closed: requests go. After THRESHOLD consecutive failures a circuit opens: requests fail at
once with ProviderUnavailable, whose retry_after says when it lets a probe through, and the
targets' jobs are deferred with that reason (no attempt spent, nothing dead-lettered) instead
of each batch waiting out its own retries. When the open time is over, one request goes
through (half-open): success closes it, failure opens it again for twice as long (up to
MAX_OPEN_SECONDS).

Rate limits are not failures: a 429 says the provider is up and wants us slower. Its
Retry-After throttles every request to the provider until then (`throttle`), so that the
other in-flight slots do not each collect a 429 of their own.

Every outcome of a probe settles its circuit, or the circuit would stay open with no request
ever let through again: an answer closes the host's circuit (and the model's, but for an answer
that is a failure of the model's); a failure opens it for longer; a 429 (throttle()) keeps the
host's open, not longer, until the Retry-After ends, when the next probe goes. A probe that ends
any other way (never sent: a long throttle, a key that cannot be sent; an exception) gives its
slot back as it ends (`admit()`'s `finally`), the circuit as it was.
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
    """The one request let through while a circuit is open (compared by identity)."""


class _Circuit:
    """One circuit's state (guarded by its Breaker's lock)."""

    def __init__(self, open_seconds: float) -> None:
        self.failures = 0
        self.open_for = open_seconds
        self.open_until: float | None = None  # None: closed
        self.probe: Probe | None = None  # the request let through half-open, while under way
        self.last_error: str | None = None
        self.culprit: str | None = None  # the model whose request met last_error

    def close(self, open_seconds: float) -> bool:
        """Closed (its count started over); True when it was open."""
        was_open = self.open_until is not None
        self.failures, self.open_for, self.open_until = 0, open_seconds, None
        self.probe, self.last_error, self.culprit = None, None, None
        return was_open

    def fail(self, error: str, model: str | None, now: float, threshold: int, cap: float) -> bool:
        """One more failure; True when it opened the circuit (a probe's reopens it, longer)."""
        self.last_error, self.culprit = error, model
        self.failures += 1
        if self.probe is not None:  # the probe failed: open again, for longer
            self.probe = None
            self.open_for = min(self.open_for * 2, cap)
            self.open_until = now + self.open_for
            return False
        if self.open_until is None and self.failures >= threshold:
            self.open_until = now + self.open_for
            return True
        return False


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
        self._host = _Circuit(open_seconds)
        self._models: dict[str, _Circuit] = {}
        self._throttled_until = 0.0
        self._throttled_by: str | None = None  # the model whose request met the 429
        metrics.PROVIDER_CIRCUIT_OPEN.labels(provider).set(0)

    @property
    def is_open(self) -> bool:
        """The host's circuit is open."""
        with self._lock:
            return self._host.open_until is not None

    @property
    def last_error(self) -> str | None:
        """The host's last failure while its circuit counts them (None once it closed)."""
        with self._lock:
            return self._host.last_error

    def admit(self, model: str | None = None) -> Probe | None:
        """Raises ProviderUnavailable while the host's circuit, or `model`'s, is open; once its
        open time is over lets one request through as the probe (returned: its sender calls
        release() with it when the request ends, however it ends)."""
        with self._lock:
            circuits = [self._host]
            if model is not None and model in self._models:
                circuits.append(self._models[model])
            now = self.clock()
            for circuit in circuits:
                if circuit.open_until is None:
                    continue
                remaining = circuit.open_until - now
                if remaining > 0 or circuit.probe is not None:
                    reason = self._reason(circuit, model)
                    raise exceptions.ProviderUnavailable(reason, retry_after=max(remaining, 1.0))
            probe = Probe()  # half-open: this caller probes every open circuit it goes through
            found = None
            for circuit in circuits:
                if circuit.open_until is not None:
                    circuit.probe = found = probe
            return found

    def release(self, probe: Probe | None) -> None:
        """The request admit() let through has ended: a probe whose outcome did not settle
        its circuit gives its slot back, the circuit as it was (the next request probes)."""
        if probe is None:
            return
        with self._lock:
            for circuit in (self._host, *self._models.values()):
                if circuit.probe is probe:
                    circuit.probe = None

    def throttled_for(self) -> float:
        """Seconds left of the provider's last Retry-After (0 when none)."""
        with self._lock:
            return max(self._throttled_until - self.clock(), 0.0)

    def throttled_by(self) -> str | None:
        """The model whose request met the 429 that throttles the provider now."""
        with self._lock:
            return self._throttled_by

    def throttle(
        self, seconds: float, why: str = "rate limited (429)", model: str | None = None
    ) -> None:
        """The provider said 429 (or is loading its model) for `seconds`, to a request of
        `model`'s: not a failure. A probe's 429 keeps the host's circuit open until then, when
        the next probe goes; `why` is then the reason the open circuit gives (the provider's
        last word, not the failure before)."""
        with self._lock:
            self._throttled_until = max(self._throttled_until, self.clock() + seconds)
            self._throttled_by = model
            host = self._host
            if host.probe is not None:
                host.probe = None
                assert host.open_until is not None
                host.open_until = max(host.open_until, self._throttled_until)
                host.last_error, host.culprit = why, model

    def success(self, model: str | None = None) -> None:
        """The host answered (closing its circuit), and `model`'s request was served, or
        refused for its key, its registration or its input: its circuit closes too."""
        with self._lock:
            was_open = self._host.close(self.base_open)
            circuit = self._models.pop(model, None) if model is not None else None
            model_was_open = circuit is not None and circuit.open_until is not None
        if was_open:
            logger.info("provider %s answers again: circuit closed", self.provider)
        if model_was_open:
            logger.info("model %s at %s answers again: circuit closed", model, self.provider)
        metrics.PROVIDER_CIRCUIT_OPEN.labels(self.provider).set(0)

    def failure(self, error: str, model: str | None = None) -> None:
        """A request of `model`'s met a failure of the host's: the host's circuit counts it."""
        with self._lock:
            host = self._host
            opened = host.fail(error, model, self.clock(), self.threshold, self.max_open)
            is_open = host.open_until is not None
            open_for = host.open_for
        if opened:
            logger.error(
                "provider %s failed %d times in a row: circuit open, the targets of every model "
                "it serves wait (deferred) and a probe goes in %.0f s; last error: %s%s",
                self.provider,
                self.threshold,
                open_for,
                error,
                f" (from model {model})" if model else "",
            )
        metrics.PROVIDER_CIRCUIT_OPEN.labels(self.provider).set(1 if is_open else 0)

    def model_failure(self, error: str, model: str) -> None:
        """A request of `model`'s failed in a way that says nothing of the host (its answer,
        its own slowness): `model`'s circuit counts it, and no other model's."""
        with self._lock:
            circuit = self._models.setdefault(model, _Circuit(self.base_open))
            opened = circuit.fail(error, model, self.clock(), self.threshold, self.max_open)
            open_for = circuit.open_for
        if opened:
            logger.error(
                "model %s at %s failed %d times in a row: its circuit open, its targets wait "
                "(deferred; the provider's other models go on) and a probe goes in %.0f s; "
                "last error: %s",
                model,
                self.provider,
                self.threshold,
                open_for,
                error,
            )

    def problem(self, model: str | None = None) -> str | None:
        """Why `model`'s targets wait, while the host's circuit or its own is open (for
        /readyz, held jobs); None when neither is. Without `model`: the host's."""
        with self._lock:
            circuits = [self._host, self._models.get(model) if model is not None else None]
            for circuit in circuits:
                if circuit is not None and circuit.open_until is not None:
                    return self._reason(circuit, model)
            return None

    def _reason(self, circuit: _Circuit, model: str | None) -> str:
        # (called with the lock held) Says no time left, nor how many probes failed since it
        # opened, nor how long it waits now: a failed probe that met the same failure leaves
        # it as it was. The reason is recorded for the held jobs (note_deferrals), whose
        # `since` (status, /readyz) starts over when the reason changes: it said the count
        # and the wait, and the hold seemed to begin at each probe.
        cause = circuit.last_error
        if circuit is self._host:
            culprit = f", from model {circuit.culprit}" if circuit.culprit else ""
            what = f"the provider at {self.provider} is failing ({cause}{culprit})"
        else:
            what = f"model {model} at {self.provider} is failing ({cause})"
        return (
            f"{what}: circuit open after {self.threshold} failures in a row, probed every"
            f" {self.base_open:.0f} s, then less often (up to every {self.max_open:.0f} s)"
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


def problem_of(provider: str, model: str) -> str | None:
    """Why `model` of `provider` cannot be asked now (its host's circuit or its own open)."""
    with _lock:
        found = _breakers.get(provider)
    return found.problem(model) if found is not None else None


def open_providers() -> dict[str, str]:
    """Providers whose host's circuit is open, with why."""
    with _lock:
        breakers = list(_breakers.values())
    return {b.provider: p for b in breakers if (p := b.problem()) is not None}


def reset() -> None:
    """Forgets every breaker (tests)."""
    with _lock:
        _breakers.clear()

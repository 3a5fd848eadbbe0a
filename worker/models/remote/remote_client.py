"""What a remote model (client.py) and a remote reranker (reranker.py) share: a registration's
spec, the circuit breaker of its endpoint's host, and the Exchange its requests go through
(exchange.py: its own threads and connections, retries, the key, a bounded answer)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

from worker import metrics
from worker.models.remote import breaker as breakers
from worker.models.remote import exchange
from worker.models.remote.keys import ApiKey

E = TypeVar("E", bound=exchange.Endpoint)


class RemoteClient(Generic[E]):
    """A registration's requests, through an Exchange of its own. Thread-safe."""

    def __init__(
        self,
        spec: E,
        *,
        api_key: ApiKey,
        breaker: breakers.Breaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.breaker = breaker or breakers.for_provider(spec.host)
        self._sleep = sleep
        # Its requests' threads, max_in_flight of them whatever the callers at once, and their
        # connections.
        self._exchange = exchange.Exchange(spec, api_key=api_key, breaker=self.breaker)
        # (the exchange's series, and this, exist at zero from the moment it is loaded)
        metrics.PROVIDER_TOKENS.labels(spec.host, self.name)

    def close(self) -> None:
        self._exchange.close()

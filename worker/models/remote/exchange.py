"""One request to a remote provider and its answer, with the guarantees every remote call keeps,
whatever it asks for: a remote model's vectors (client.py: RemoteModel) or a remote reranker's
scores (reranker.py: RemoteReranker).

Before a request goes: the key, looked up before every request and refused where it may not
go (keys.py: a key that is missing is that model's reason, whatever its provider's state); the
provider's circuits (breaker.py: the host's and the model's own) and what is left of its last
Retry-After, up to the policy's inline wait (longer: ProviderUnavailable at once, with
retry_after). The request is a JSON POST through transport.Connections, the whole exchange
within the endpoint's timeout and the answer read no further than the caller's bound. Then the
status:

  2xx                 the caller's parser reads the body; BadResponse is a bad answer (retried,
                      a failure of the model's: the host answered), DimensionMismatch a
                      registration that may be wrong (retried, then ProviderRefused; the
                      provider is up: a success for the breaker, like every answer below but
                      429 and 5xx)
  429, 503 "loading"  the provider throttled for Retry-After (or Hugging Face's estimated_time),
                      waited up to the inline wait and retried; longer: ProviderUnavailable;
                      neither success nor failure (a probe's: the next probe after the wait)
  401, 403, 404, 405  ProviderRefused: the key or the registration is wrong
  400, 413, 422       InputRejected: the provider refuses these inputs
  5xx, connection errors (none made, or one dropped)
                      retried, each a failure of the host's (every model it serves waits once
                      its circuit opens)
  no answer within the timeout once sent, an answer over the bound
                      retried, each a failure of the model's (its own circuit: the host's other
                      models go on)

Retries follow the policy: its attempts, its backoff (worker/backoff.py) or the Retry-After
hint, whichever is longer; after the last, ProviderUnavailable. Every attempt counts in
embed_worker_provider_requests_total by outcome, under the endpoint's host and the caller's name.
No key is ever part of a message: the provider's error text is stripped of it (and of anything
shaped like a key) before it reaches an exception.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from worker import __version__, exceptions, metrics
from worker.backoff import Backoff
from worker.models.remote import breaker as breakers
from worker.models.remote import keys, protocol, transport
from worker.models.remote.keys import ApiKey, Keyed
from worker.models.remote.providers import BadResponse, DimensionMismatch
from worker.secret import Secret

T = TypeVar("T")

# The defaults of a Policy (client.py and reranker.py each keep theirs, which tests tune).
ATTEMPTS = 4  # per request: the first and three retries
BACKOFF = Backoff(0.25, 4.0, spread=(0.0, 1.0))  # up to 0.25, 0.5, 1 ... s: full jitter
MAX_INLINE_WAIT_SECONDS = 10.0  # a longer Retry-After is the caller's to wait out, not ours

# A transport failure's kind (transport.TransportError) as the requests metric's outcome.
_OUTCOMES = {"timeout": "timeout", "connection": "connection_error", "too_large": "bad_response"}


class Endpoint(Keyed, Protocol):
    """Where requests go (a RemoteSpec, a RerankerSpec): what the exchange needs of it."""

    @property
    def name(self) -> str: ...

    @property
    def max_in_flight(self) -> int: ...

    @property
    def url(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def timeout_seconds(self) -> float: ...

    @property
    def remote_model(self) -> str | None: ...


@dataclass(frozen=True)
class Policy:
    """How one request is retried and waited for."""

    attempts: int
    backoff: Callable[[RetryCallState], float]
    max_inline_wait: float  # the longest Retry-After waited out within the request
    sleep: Callable[[float], None]


class _Retry(Exception):
    """One attempt failed in a way worth another: `outcome` for the metric."""

    def __init__(
        self,
        outcome: str,
        message: str,
        retry_after: float | None = None,
        *,
        refused: bool = False,
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.retry_after = retry_after
        self.refused = refused  # the last try says the registration is wrong, not the provider


class Exchange:
    """Requests to one endpoint, counted under the endpoint's name (a model's, a reranker's),
    sent from up to its max_in_flight threads of their own (submit(); remote calls wait on the
    network, not the CPU), each keeping its keep-alive connection. Thread-safe. Dropped without
    close() (replaced, garbage), it still closes its threads and sockets."""

    def __init__(self, endpoint: Endpoint, *, api_key: ApiKey, breaker: breakers.Breaker) -> None:
        self.endpoint = endpoint
        self.name = name = endpoint.name
        self.breaker = breaker
        self._api_key = api_key
        self._connections = transport.Connections()
        self._pool = ThreadPoolExecutor(endpoint.max_in_flight, thread_name_prefix=f"remote-{name}")
        self._closed = weakref.finalize(self, _shut, self._pool, self._connections)
        # Series exist from the moment the caller is loaded (at zero), so the dashboard's
        # provider panels and rate() see them before the first answer.
        for outcome in metrics.PROVIDER_OUTCOMES:
            metrics.PROVIDER_REQUESTS.labels(endpoint.host, name, outcome)
        metrics.PROVIDER_SECONDS.labels(endpoint.host)
        metrics.PROVIDER_IN_FLIGHT.labels(endpoint.host)

    def close(self) -> None:
        """Waits for the requests under way; those not started are cancelled."""
        self._closed()

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """`fn(*args)` on one of the exchange's threads (RuntimeError once closed)."""
        return self._pool.submit(fn, *args)

    def post(
        self, body: dict[str, Any], limit: int, parse: Callable[[bytes], T], policy: Policy
    ) -> T:
        """`body` sent until an answer `parse` accepts (at most `limit` bytes of it), within
        the policy; ProviderError or InputRejected otherwise."""
        describe = self.endpoint.describe()

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            hinted = getattr(error, "retry_after", None) or 0.0
            return max(float(policy.backoff(state)), float(hinted))

        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait,
            retry=retry_if_exception_type(_Retry),
            sleep=policy.sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(body, limit, parse, policy)
        except _Retry as exc:
            if exc.refused:
                raise exceptions.ProviderRefused(f"{describe}: {exc}") from None
            raise exceptions.ProviderUnavailable(
                f"{describe}: {exc} (after {policy.attempts} attempts)",
                retry_after=exc.retry_after,
            ) from None
        raise AssertionError("unreachable")

    def _attempt(
        self, body: dict[str, Any], limit: int, parse: Callable[[bytes], T], policy: Policy
    ) -> T:
        # The key first: a model without one has that reason, not its provider's circuit's.
        key = keys.key_for(self.endpoint, self._api_key)
        try:
            probe = self.breaker.admit(self.name)
        except exceptions.ProviderUnavailable:
            self._count("circuit_open")
            raise
        try:
            return self._send(body, limit, parse, policy, key)
        finally:  # a probe's slot, however the attempt ended (breaker.py)
            self.breaker.release(probe)

    def _send(
        self,
        body: dict[str, Any],
        limit: int,
        parse: Callable[[bytes], T],
        policy: Policy,
        key: Secret | None,
    ) -> T:
        endpoint = self.endpoint
        throttled = self.breaker.throttled_for()
        if throttled > policy.max_inline_wait:
            by = self.breaker.throttled_by()
            raise exceptions.ProviderUnavailable(
                f"{endpoint.describe()}: rate limited (429"
                + (f" to model {by}" if by and by != self.name else "")
                + f"); retry after {throttled:.0f} s",
                retry_after=throttled,
            )
        if throttled > 0:
            policy.sleep(throttled)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"embed-worker/{__version__}",
        }
        if key is not None:
            headers["Authorization"] = keys.header(key)
        data = json.dumps(body, ensure_ascii=False).encode()
        started = time.monotonic()
        self._flight(+1)
        try:
            response = self._connections.post(
                endpoint.url, data, headers, endpoint.timeout_seconds, limit
            )
        except transport.Unsendable as exc:  # (its text names no header value)
            raise exceptions.ProviderRefused(
                f"{endpoint.describe()}: the API key of credential {endpoint.credential!r} {exc}"
            ) from None
        except transport.TransportError as exc:
            outcome = _OUTCOMES.get(exc.kind, "connection_error")
            what = "bad answer" if outcome == "bad_response" else outcome.replace("_", " ")
            self._count(outcome)
            if exc.host:
                self.breaker.failure(f"{what}: {exc}", self.name)
            else:  # (sent, and the answer late or too large: this model's)
                self.breaker.model_failure(f"{what}: {exc}", self.name)
            raise _Retry(outcome, f"{what}: {exc}") from None
        finally:
            self._flight(-1)
            metrics.PROVIDER_SECONDS.labels(endpoint.host).observe(time.monotonic() - started)
        return self._answer(response, parse, policy, key)

    def _answer(
        self,
        response: transport.Response,
        parse: Callable[[bytes], T],
        policy: Policy,
        key: Secret | None,
    ) -> T:
        endpoint = self.endpoint
        describe = endpoint.describe()
        status = response.status
        if 200 <= status < 300:
            try:
                answer = parse(response.body)
            except DimensionMismatch as exc:
                # Once may be a garbled answer: asked again. Every time: the registration's
                # dimensions are wrong (refused). Either way the provider is up and answers.
                self._count("bad_response")
                self.breaker.success(self.name)
                raise _Retry("bad_response", str(exc), refused=True) from None
            except BadResponse as exc:
                # The host answered (its circuit closes); the answer to this model is wrong.
                self._count("bad_response")
                why = f"bad answer: {keys.clean(str(exc), key)}"
                self.breaker.success()
                self.breaker.model_failure(why, self.name)
                raise _Retry("bad_response", why) from None
            self._count("ok")
            self.breaker.success(self.name)
            return answer
        message = keys.clean(protocol.error_message(response.body), key)
        loading = protocol.loading_seconds(response.body) if status == 503 else None
        if status == 429 or loading is not None:
            wait = loading if loading is not None else transport.retry_after(response.headers)
            self._count("rate_limited")
            what = "model loading" if loading is not None else "rate limited (429)"
            self.breaker.throttle(
                wait if wait is not None else 1.0, f"{what}: {message}", self.name
            )
            if wait is not None and wait > policy.max_inline_wait:
                raise exceptions.ProviderUnavailable(
                    f"{describe}: {what}; retry after {wait:.0f} s", retry_after=wait
                )
            raise _Retry("rate_limited", f"{what}: {message}", retry_after=wait)
        if status in (401, 403, 404, 405):
            self._count("refused")
            # (up and answering: the key or the registration is wrong)
            self.breaker.success(self.name)
            missing = (
                f"no such endpoint or model: {endpoint.url} for {endpoint.remote_model}"
                if endpoint.remote_model
                else f"no such endpoint: {endpoint.url}"
            )
            hint = {
                401: f" (the API key of credential {endpoint.credential!r} was refused)",
                403: " (the key may not use this model)",
                404: f" ({missing})",
            }.get(status, "")
            raise exceptions.ProviderRefused(
                f"{describe}: HTTP {status}{hint}: {message}", retry_after=None
            )
        if status in (400, 413, 422):
            self._count("rejected")
            self.breaker.success(self.name)  # (up and answering: the inputs are at fault)
            raise exceptions.InputRejected(
                f"{describe} refused the input: HTTP {status}: {message}"
            )
        self._count("server_error")
        self.breaker.failure(f"HTTP {status}: {message}", self.name)
        raise _Retry(
            "server_error", f"HTTP {status}: {message}", transport.retry_after(response.headers)
        )

    def _count(self, outcome: str) -> None:
        metrics.PROVIDER_REQUESTS.labels(self.endpoint.host, self.name, outcome).inc()

    def _flight(self, delta: int) -> None:
        metrics.PROVIDER_IN_FLIGHT.labels(self.endpoint.host).inc(delta)


def _shut(pool: ThreadPoolExecutor, connections: transport.Connections) -> None:
    pool.shutdown(wait=True, cancel_futures=True)
    connections.close()

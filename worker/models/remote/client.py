"""RemoteModel: a remote model behind the interface of a local Embedder.

`embed_partial(texts)` is what the pipeline calls (worker/pipeline/remote.py): each text is cut
to the model's token limit (worker/models/remote/tokens.py), the texts are grouped into requests
within the provider's limits (inputs and tokens per request, in order) and spread over up to
`max_in_flight` requests of balanced sizes even when the batch would fit in one, and up to
`max_in_flight` requests run at once on the model's own threads (remote calls wait on the
network, not the CPU). Each request is retried with jittered exponential backoff on 5xx,
timeouts, connection errors and malformed answers, and after a 429 as long as its Retry-After
says, up to MAX_INLINE_WAIT_SECONDS; past that, or with the provider's circuit breaker open, the
texts of that request come back `waiting` (the rows wait, no attempt spent). A request the
provider refuses for its inputs (400, 413, 422) is split until the refused inputs are alone:
only those rows fail. `embed`/`embed_with_stats` (POST /embed, `embed-worker embed`, search
queries, chunks) raise instead of returning partial results.

No key is ever part of a message: the provider's error text is stripped of it (and of anything
shaped like a key) before it reaches a log line, an exception or embeddings.failures.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)

from worker import __version__, exceptions, metrics
from worker.backoff import Backoff
from worker.models.embedder import EmbedResult, FloatMatrix
from worker.models.remote import breaker as breakers
from worker.models.remote import keys, protocol, providers, transport
from worker.models.remote.keys import ApiKey
from worker.models.remote.spec import VARIANT, RemoteSpec
from worker.models.remote.tokens import TokenCounter
from worker.secret import Secret

logger = logging.getLogger(__name__)

ATTEMPTS = 4  # per request: the first and three retries
# A batch is spread over several requests (requests()), but none of fewer inputs than this.
MIN_INPUTS_PER_REQUEST = 8
# A transport failure's kind (transport.TransportError) as the requests metric's outcome.
_OUTCOMES = {"timeout": "timeout", "connection": "connection_error", "too_large": "bad_response"}
MAX_INLINE_WAIT_SECONDS = 10.0  # a longer Retry-After hands the rows back to the queue instead
BACKOFF = Backoff(0.25, 4.0, spread=(0.0, 1.0))  # up to 0.25, 0.5, 1 ... s: full jitter


@dataclass
class Partial:
    """What became of each text: a vector, a refusal (`errors`: the input's own fault), or
    nothing yet (`waiting`: the provider's fault; asked again later)."""

    vectors: list[np.ndarray[Any, np.dtype[np.float32]] | None]
    errors: dict[int, str] = field(default_factory=dict)
    waiting: dict[int, exceptions.ProviderError] = field(default_factory=dict)
    tokens: int = 0


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


class RemoteModel:
    """A remote model: `name`, `dim`, `max_tokens`, `variant` ("remote") like an Embedder.
    Thread-safe; its request threads are its own."""

    def __init__(
        self,
        spec: RemoteSpec,
        *,
        api_key: ApiKey,
        counter: TokenCounter,
        breaker: breakers.Breaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.dim = spec.dimensions
        self.max_tokens = spec.max_tokens
        self.variant = VARIANT
        self.pooling = spec.pooling
        self.counter = counter
        self.breaker = breaker or breakers.for_provider(spec.host)
        self._api_key = api_key
        self._sleep = sleep
        self._pool = ThreadPoolExecutor(
            spec.max_in_flight, thread_name_prefix=f"remote-{spec.name}"
        )
        self._connections = transport.Connections()
        # A model dropped without close() (replaced, garbage) still closes its sockets.
        weakref.finalize(self, _shut, self._pool, self._connections)
        self._in_flight = 0
        self._lock = threading.Lock()
        # Series exist from the moment the model is loaded (at zero), so the dashboard's
        # provider panels and rate() see them before the first answer.
        for outcome in metrics.PROVIDER_OUTCOMES:
            metrics.PROVIDER_REQUESTS.labels(spec.host, self.name, outcome)
        metrics.PROVIDER_SECONDS.labels(spec.host)
        metrics.PROVIDER_TOKENS.labels(spec.host, self.name)
        metrics.PROVIDER_COST.labels(spec.host, self.name)
        metrics.PROVIDER_IN_FLIGHT.labels(spec.host)

    def __repr__(self) -> str:
        return f"RemoteModel(name={self.name!r}, {self.spec.describe()}, dim={self.dim})"

    @property
    def producer(self) -> str:
        return self.spec.producer

    def close(self) -> None:
        _shut(self._pool, self._connections)

    # --- the Embedder interface -----------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        return self.embed_with_stats(texts).vectors

    def embed_with_stats(self, texts: Sequence[str]) -> EmbedResult:
        """Every text's vector, or an exception: the provider's (ProviderError) when some text
        could not be sent, InputRejected when the provider refused one."""
        texts = list(texts)
        result = self.embed_partial(texts)
        if result.waiting:
            raise next(iter(result.waiting.values()))
        if result.errors:
            position, error = next(iter(sorted(result.errors.items())))
            raise exceptions.InputRejected(f"input {position}: {error}")
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, vector in enumerate(result.vectors):
            vectors[i] = vector
        return EmbedResult(vectors=vectors, tokens=result.tokens, padded_tokens=result.tokens)

    # --- partial results ------------------------------------------------------------------------
    def embed_partial(self, texts: Sequence[str]) -> Partial:
        fitted = [self.counter.fit(text, self.max_tokens) for text in texts]
        result = Partial(vectors=[None] * len(fitted))
        if not fitted:
            return result
        futures: list[tuple[list[int], Future[Partial]]] = []
        for group in self.requests([tokens for _, tokens in fitted]):
            chunk = [(fitted[i][0], fitted[i][1]) for i in group]
            futures.append((group, self._pool.submit(self._isolating, chunk)))
        for group, future in futures:
            try:
                part = future.result()
            except exceptions.ProviderError as exc:
                for i in group:
                    result.waiting[i] = exc
                continue
            for j, i in enumerate(group):
                result.vectors[i] = part.vectors[j]
                if j in part.errors:
                    result.errors[i] = part.errors[j]
            result.tokens += part.tokens
        messages = set(result.errors.values())
        if len(result.errors) == len(fitted) > 1 and len(messages) == 1:
            # Every input refused alike: the request is wrong (a parameter this model does not
            # take), not the texts. The target waits for its registration to be fixed.
            raise exceptions.ProviderRefused(
                f"{self.spec.describe()} refuses every request: {messages.pop()}"
            )
        return result

    def requests(self, tokens: list[int]) -> list[list[int]]:
        """Positions grouped into requests, in order: at most max_inputs inputs and
        max_request_tokens tokens each (an input over the latter alone goes alone), and spread
        over up to max_in_flight requests of balanced sizes, so that a batch smaller than
        max_inputs (EMBED_BATCH_SIZE 128 against OpenAI's 2048) still keeps several requests
        in flight; never fewer than MIN_INPUTS_PER_REQUEST inputs per request for that (a
        request per text would cost more in round trips than it gains)."""
        needed = len(self._grouped(tokens, self.spec.max_inputs))
        spread = min(self.spec.max_in_flight, len(tokens) // MIN_INPUTS_PER_REQUEST)
        requests = max(needed, spread, 1)
        return self._grouped(tokens, min(self.spec.max_inputs, -(-len(tokens) // requests)))

    def _grouped(self, tokens: list[int], max_inputs: int) -> list[list[int]]:
        groups: list[list[int]] = []
        current: list[int] = []
        total = 0
        limit = self.spec.max_request_tokens
        for i, n in enumerate(tokens):
            if current and (
                len(current) >= max_inputs or (limit is not None and total + n > limit)
            ):
                groups.append(current)
                current, total = [], 0
            current.append(i)
            total += n
        if current:
            groups.append(current)
        return groups

    def _isolating(self, chunk: list[tuple[str, int]]) -> Partial:
        """One request; halved while the provider refuses its inputs, until the refused
        ones are alone (runs on a request thread)."""
        try:
            answer = self._request([text for text, _ in chunk])
        except exceptions.InputRejected as exc:
            if len(chunk) == 1:
                return Partial(vectors=[None], errors={0: str(exc)})
            middle = len(chunk) // 2
            left, right = self._isolating(chunk[:middle]), self._isolating(chunk[middle:])
            return Partial(
                vectors=left.vectors + right.vectors,
                errors={**left.errors, **{k + middle: v for k, v in right.errors.items()}},
                tokens=left.tokens + right.tokens,
            )
        tokens = answer.tokens if answer.tokens is not None else sum(n for _, n in chunk)
        self._count_tokens(tokens)
        return Partial(vectors=answer.vectors, errors=answer.errors, tokens=tokens)

    # --- one request, retried -------------------------------------------------------------------
    def _request(self, texts: list[str]) -> protocol.Answer:
        retrying = Retrying(
            stop=stop_after_attempt(ATTEMPTS),
            wait=self._wait,
            retry=retry_if_exception_type(_Retry),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(texts)
        except _Retry as exc:
            if exc.refused:
                raise exceptions.ProviderRefused(f"{self.spec.describe()}: {exc}") from None
            raise exceptions.ProviderUnavailable(
                f"{self.spec.describe()}: {exc} (after {ATTEMPTS} attempts)",
                retry_after=exc.retry_after,
            ) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _wait(state: RetryCallState) -> float:
        backoff = float(BACKOFF(state))
        error = state.outcome.exception() if state.outcome is not None else None
        hinted = getattr(error, "retry_after", None) or 0.0
        return max(backoff, float(hinted))

    def _attempt(self, texts: list[str]) -> protocol.Answer:
        spec = self.spec
        try:
            self.breaker.check()
        except exceptions.ProviderUnavailable:
            self._count("circuit_open")
            raise
        throttled = self.breaker.throttled_for()
        if throttled > MAX_INLINE_WAIT_SECONDS:
            raise exceptions.ProviderUnavailable(
                f"{spec.describe()}: rate limited (429); retry after {throttled:.0f} s",
                retry_after=throttled,
            )
        if throttled > 0:
            self._sleep(throttled)
        key = keys.key_for(spec, self._api_key)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"embed-worker/{__version__}",
        }
        if key is not None:
            headers["Authorization"] = keys.header(key)
        body = json.dumps(protocol.request_body(spec, texts), ensure_ascii=False).encode()
        # Never more than this many inputs of these dimensions can take (issue 36).
        limit = protocol.answer_limit(spec, len(texts))
        started = time.monotonic()
        self._flight(+1)
        try:
            response = self._connections.post(spec.url, body, headers, spec.timeout_seconds, limit)
        except transport.Unsendable as exc:  # (its text names no header value)
            raise exceptions.ProviderRefused(
                f"{spec.describe()}: the API key of credential {spec.credential!r} {exc}"
            ) from None
        except transport.TransportError as exc:
            outcome = _OUTCOMES.get(exc.kind, "connection_error")
            what = "bad answer" if outcome == "bad_response" else outcome.replace("_", " ")
            self._count(outcome)
            self.breaker.failure(f"{what}: {exc}")
            raise _Retry(outcome, f"{what}: {exc}") from None
        finally:
            self._flight(-1)
            metrics.PROVIDER_SECONDS.labels(spec.host).observe(time.monotonic() - started)
        return self._answer(response, len(texts), key)

    def _answer(self, response: transport.Response, n: int, key: Secret | None) -> protocol.Answer:
        spec = self.spec
        status = response.status
        if 200 <= status < 300:
            try:
                answer = protocol.parse(spec, response.body, n)
            except providers.DimensionMismatch as exc:
                # Once may be a garbled answer: asked again. Every time: the registration's
                # dimensions are wrong (refused). Either way not the provider's health.
                self._count("bad_response")
                raise _Retry("bad_response", str(exc), refused=True) from None
            except providers.BadResponse as exc:
                self._count("bad_response")
                self.breaker.failure(f"bad answer: {exc}")
                raise _Retry("bad_response", f"bad answer: {keys.clean(str(exc), key)}") from None
            self._count("ok")
            self.breaker.success()
            return answer
        message = keys.clean(protocol.error_message(response.body), key)
        loading = protocol.loading_seconds(response.body) if status == 503 else None
        if status == 429 or loading is not None:
            wait = loading if loading is not None else transport.retry_after(response.headers)
            self._count("rate_limited")
            self.breaker.throttle(wait if wait is not None else 1.0)
            what = "model loading" if loading is not None else "rate limited (429)"
            if wait is not None and wait > MAX_INLINE_WAIT_SECONDS:
                raise exceptions.ProviderUnavailable(
                    f"{spec.describe()}: {what}; retry after {wait:.0f} s", retry_after=wait
                )
            raise _Retry("rate_limited", f"{what}: {message}", retry_after=wait)
        if status in (401, 403, 404, 405):
            self._count("refused")
            hint = {
                401: f" (the API key of credential {spec.credential!r} was refused)",
                403: " (the key may not use this model)",
                404: f" (no such endpoint or model: {spec.url} for {spec.remote_model})",
            }.get(status, "")
            raise exceptions.ProviderRefused(
                f"{spec.describe()}: HTTP {status}{hint}: {message}", retry_after=None
            )
        if status in (400, 413, 422):
            self._count("rejected")
            raise exceptions.InputRejected(
                f"{spec.describe()} refused the input: HTTP {status}: {message}"
            )
        self._count("server_error")
        self.breaker.failure(f"HTTP {status}: {message}")
        raise _Retry(
            "server_error", f"HTTP {status}: {message}", transport.retry_after(response.headers)
        )

    def _count(self, outcome: str) -> None:
        metrics.PROVIDER_REQUESTS.labels(self.spec.host, self.name, outcome).inc()

    def _count_tokens(self, tokens: int) -> None:
        metrics.PROVIDER_TOKENS.labels(self.spec.host, self.name).inc(tokens)
        price = self.spec.price_per_million_tokens
        if price:
            metrics.PROVIDER_COST.labels(self.spec.host, self.name).inc(tokens * price / 1e6)

    def _flight(self, delta: int) -> None:
        with self._lock:
            self._in_flight += delta
        metrics.PROVIDER_IN_FLIGHT.labels(self.spec.host).inc(delta)


def _shut(pool: ThreadPoolExecutor, connections: transport.Connections) -> None:
    pool.shutdown(wait=True, cancel_futures=True)
    connections.close()

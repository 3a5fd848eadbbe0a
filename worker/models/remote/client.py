"""RemoteModel: a remote model behind the interface of a local Embedder.

`embed_partial(texts)` is what the pipeline calls (worker/pipeline/remote.py): each text is cut
to the model's token limit (worker/models/remote/tokens.py), the texts are grouped into requests
within the provider's limits (inputs and tokens per request, in order) and spread over up to
`max_in_flight` requests of balanced sizes even when the batch would fit in one, and up to
`max_in_flight` requests run at once on the model's own threads (remote calls wait on the
network, not the CPU). Each request goes through the model's Exchange (exchange.py): retried
with jittered exponential backoff on 5xx, timeouts, connection errors and malformed answers, and
after a 429 as long as its Retry-After says, up to MAX_INLINE_WAIT_SECONDS; past that, or with
the provider's circuit breaker open, the texts of that request come back `waiting` (the rows
wait, no attempt spent). A request the provider refuses for its inputs (400, 413, 422) is split
until the refused inputs are alone: only those rows fail. `embed`/`embed_with_stats` (POST
/embed, `embed-worker embed`, search queries, chunks) raise instead of returning partial
results.

No key is ever part of a message: the provider's error text is stripped of it (and of anything
shaped like a key) before it reaches a log line, an exception or embeddings.failures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker import exceptions, metrics
from worker.models.embedder import EmbedResult, FloatMatrix
from worker.models.remote import breaker as breakers
from worker.models.remote import exchange, protocol
from worker.models.remote.keys import ApiKey
from worker.models.remote.remote_client import RemoteClient
from worker.models.remote.spec import VARIANT, RemoteSpec
from worker.models.remote.tokens import TokenCounter

logger = logging.getLogger(__name__)

# This client's retry policy (exchange.Policy), read at each request: tests tune it here.
ATTEMPTS = exchange.ATTEMPTS
BACKOFF = exchange.BACKOFF
MAX_INLINE_WAIT_SECONDS = exchange.MAX_INLINE_WAIT_SECONDS  # longer: the rows go back to the queue
# A batch is spread over several requests (requests()), but none of fewer inputs than this.
MIN_INPUTS_PER_REQUEST = 8


@dataclass
class Partial:
    """What became of each text: a vector, a refusal (`errors`: the input's own fault), or
    nothing yet (`waiting`: the provider's fault; asked again later)."""

    vectors: list[np.ndarray[Any, np.dtype[np.float32]] | None]
    errors: dict[int, str] = field(default_factory=dict)
    waiting: dict[int, exceptions.ProviderError] = field(default_factory=dict)
    tokens: int = 0


class RemoteModel(RemoteClient[RemoteSpec]):
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
        super().__init__(spec, api_key=api_key, breaker=breaker, sleep=sleep)
        self.dim = spec.dimensions
        self.max_tokens = spec.max_tokens
        self.variant = VARIANT
        self.pooling = spec.pooling
        self.counter = counter
        metrics.PROVIDER_COST.labels(spec.host, self.name)

    def __repr__(self) -> str:
        return f"RemoteModel(name={self.name!r}, {self.spec.describe()}, dim={self.dim})"

    @property
    def producer(self) -> str:
        return self.spec.producer

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
            futures.append((group, self._exchange.submit(self._isolating, chunk)))
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

    # --- one request, retried (exchange.py) ----------------------------------------------------
    def _request(self, texts: list[str]) -> protocol.Answer:
        # Never more than this many inputs of these dimensions can take (issue 36).
        limit = protocol.answer_limit(self.spec, len(texts))
        return self._exchange.post(
            protocol.request_body(self.spec, texts),
            limit,
            lambda body: protocol.parse(self.spec, body, len(texts)),
            # This module's policy as it is now, and the model's sleep (tests tune both).
            exchange.Policy(ATTEMPTS, BACKOFF, MAX_INLINE_WAIT_SECONDS, self._sleep),
        )

    def _count_tokens(self, tokens: int) -> None:
        metrics.PROVIDER_TOKENS.labels(self.spec.host, self.name).inc(tokens)
        price = self.spec.price_per_million_tokens
        if price:
            metrics.PROVIDER_COST.labels(self.spec.host, self.name).inc(tokens * price / 1e6)

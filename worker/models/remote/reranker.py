"""RemoteReranker: a remote rerank API (Cohere, Jina, Voyage, text-embeddings-inference) as the
rerank stage's Reranker (worker/models/reranker.py), with a remote model's guarantees.

`score(question, passages)` cuts each passage to about the registration's max_tokens (characters:
max_tokens x PREFIX_CHARS_PER_TOKEN, as the local CrossEncoder reads a passage's head), so that
a row of megabytes is never sent whole; sends them in requests of at most max_documents
(a depth of 200 over text-embeddings-inference's 32 is 7 requests, of balanced sizes), up to
max_in_flight at once on the reranker's own threads (however many searches ask at once); and
puts the scores back together in the passages' order: a score is the provider's for one
(question, passage) pair, so scores of several requests compare. A request is not split further
to spread it over more threads, since providers bill by request (Cohere by search: a query with
up to 100 documents). Each request goes through an Exchange (exchange.py): the circuit breaker
of the endpoint's host, Retry-After, retries with jittered backoff, the key, a bounded answer.

Anything short of every score raises a ModelError (ProviderUnavailable, ProviderRefused,
InputRejected), which the search answers with a 503 naming the reranker: never with the first
ranking's order passed off as reranked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future

import numpy as np

from worker import exceptions, metrics
from worker.models.embedder import PREFIX_CHARS_PER_TOKEN
from worker.models.remote import exchange, rerank_providers
from worker.models.remote.remote_client import RemoteClient
from worker.models.remote.rerank_providers import Scores
from worker.models.remote.rerank_spec import RerankerSpec

logger = logging.getLogger(__name__)

# This reranker's retry policy (exchange.Policy), read at each request: tests tune it here. A
# search waits for it, as it waits for a remote model's embedding of its query: the same one.
ATTEMPTS = exchange.ATTEMPTS
BACKOFF = exchange.BACKOFF
MAX_INLINE_WAIT_SECONDS = exchange.MAX_INLINE_WAIT_SECONDS  # longer: the search answers 503


class RemoteReranker(RemoteClient[RerankerSpec]):
    """A registered remote reranker: `name` and `score()` like a CrossEncoder. Thread-safe."""

    def __repr__(self) -> str:
        return f"RemoteReranker(name={self.name!r}, {self.spec.describe()})"

    def score(self, question: str, passages: Sequence[str]) -> Scores:
        """One score per passage, in the passages' order: higher is more relevant."""
        if not isinstance(question, str) or any(not isinstance(p, str) for p in passages):
            raise TypeError("score() takes a question and a sequence of passages, all str")
        limit = self.spec.max_tokens * PREFIX_CHARS_PER_TOKEN
        cut = [p[:limit] for p in passages]
        scores = np.zeros(len(cut), dtype=np.float32)
        futures: list[tuple[range, Future[Scores]]] = []
        try:
            for group in self.requests(len(cut)):
                documents = cut[group.start : group.stop]
                try:
                    future = self._exchange.submit(self._request, question, documents)
                except RuntimeError:  # shut down: replaced by a new registration meanwhile
                    raise self._replaced() from None
                futures.append((group, future))
            for group, future in futures:
                try:
                    scores[group.start : group.stop] = future.result()
                except CancelledError:
                    raise self._replaced() from None
        finally:
            for _, future in futures:
                future.cancel()  # what has not started yet, when one request failed
        return scores

    def _replaced(self) -> exceptions.ProviderUnavailable:
        return exceptions.ProviderUnavailable(
            f"{self.spec.describe()}: the reranker was replaced while it scored; ask again"
        )

    def requests(self, n: int) -> list[range]:
        """Positions 0..n-1 in requests of at most max_documents, of balanced sizes."""
        count = -(-n // self.spec.max_documents)
        size, larger = divmod(n, count) if count else (0, 0)
        groups, start = [], 0
        for i in range(count):  # the first `larger` requests take one more
            stop = start + size + (i < larger)
            groups.append(range(start, stop))
            start = stop
        return groups

    def _request(self, question: str, documents: list[str]) -> Scores:
        kind = self.spec.kind
        found, tokens = self._exchange.post(
            kind.request_body(self.spec, question, documents),
            rerank_providers.answer_limit(len(documents)),
            lambda body: rerank_providers.scores(kind, body, len(documents)),
            # This module's policy as it is now, and the reranker's sleep (tests tune both).
            exchange.Policy(ATTEMPTS, BACKOFF, MAX_INLINE_WAIT_SECONDS, self._sleep),
        )
        if tokens is not None:
            metrics.PROVIDER_TOKENS.labels(self.spec.host, self.name).inc(tokens)
        return found

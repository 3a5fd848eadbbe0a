"""The kinds a remote reranker may have (embeddings.rerankers.provider), one class each: its
request body, where its answer keeps the scores, its default endpoint and limits, the variable
of its API key and the shape of its keys. `of(name)` is the only way in: an unknown kind is an
error naming the known ones, never another kind's requests. Every kind POSTs to
{endpoint}/rerank and asks for no documents back.

Cohere (POST {endpoint}/rerank, endpoint https://api.cohere.com/v2), as its API reference
documents v2's rerank:
  request  {"model": str, "query": str, "documents": [str], "top_n": n}
  answer   {"id": ..., "results": [{"index": i, "relevance_score": f}], "meta": {...}}
           (sorted by score; documents are never echoed in v2)
  limits   1,000 documents per request (Cohere's recommended most); a document past
           max_tokens_per_doc (4,096 by default) is truncated by Cohere
Jina (POST https://api.jina.ai/v1/rerank):
  request  {"model": str, "query": str, "documents": [str], "top_n": n, "return_documents": false}
  answer   {"model": str, "results": [{"index": i, "relevance_score": f}],
            "usage": {"total_tokens": n}}
Voyage (POST https://api.voyageai.com/v1/rerank):
  request  {"model": str, "query": str, "documents": [str], "top_k": n, "return_documents": false,
            "truncation": true}
  answer   {"object": "list", "data": [{"index": i, "relevance_score": f}], "model": str,
            "usage": {"total_tokens": n}}
  limits   1,000 documents per request; query and document of rerank-2 16,000 tokens together
text-embeddings-inference (Hugging Face's server, self-hosted: POST {endpoint}/rerank):
  request  {"query": str, "texts": [str], "truncate": true, "raw_scores": false,
            "return_text": false}  (no model: the server serves one)
  answer   [{"index": i, "score": f}]
  limits   32 texts per request (its --max-client-batch-size default); a key only where the
           server was started with --api-key (then a Bearer token)
Errors come as {"message": str} (Cohere), {"detail": str} (Jina, Voyage) or {"error": str}
(text-embeddings-inference): protocol.error_message() reads each.

An answer is checked whatever its kind (scores()): one result per document, every index exactly
once and in range, each score a finite number; otherwise it is a bad answer (BadResponse:
retried, a failure for the provider's circuit breaker). Results come in any order (sorted by
score, as Cohere, Jina and Voyage answer): they are put back in the documents' order.

The SQL side's defaults (embeddings.reranker_defaults(), sql/57_rerank.sql, which
register_reranker() writes into a row) are these classes' (a test compares them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from worker.models.remote.providers import BadResponse, is_number, kind_of


class RerankRegistration(Protocol):
    """What a rerank provider reads of a reranker's registration (rerank_spec.RerankerSpec,
    which names the provider kind: this module does not import it back)."""

    @property
    def endpoint(self) -> str: ...

    @property
    def remote_model(self) -> str | None: ...


Scores = npt.NDArray[np.float32]

# The bound of an answer (answer_limit): no documents come back, so a result is its index and
# score, pretty-printed ({"index": 199, "relevance_score": 0.12345678901234568}, indented: under
# 100 bytes), with room to spare; and the rest (id, meta, usage, an error's message).
RESULT_BYTES = 512
ENVELOPE_BYTES = 64 * 1024


@dataclass(frozen=True)
class RerankProvider:
    """What every rerank kind says of itself; the subclasses say how they talk."""

    name: ClassVar[str]
    credential_variable: ClassVar[str | None]  # the provider's own variable for its key
    key_pattern: ClassVar[str | None]  # the shape of its keys, masked in every message we keep
    default_endpoint: ClassVar[str | None]  # None: self-hosted, the endpoint must be given
    max_documents: ClassVar[int]  # per request
    max_tokens: ClassVar[int]  # per passage: passages are cut client-side to about this
    sends_model: ClassVar[bool] = True  # the request names the provider's model
    count_field: ClassVar[str] = "top_n"  # how many results to answer: every document's
    extra: ClassVar[tuple[tuple[str, Any], ...]] = ()  # the rest of the kind's request
    results_field: ClassVar[str | None] = "results"  # where the results are (None: the answer)
    score_field: ClassVar[str] = "relevance_score"

    @property
    def default_credential(self) -> str | None:
        """The credential a registration names by default: the kind's own, when it has a
        variable for its key."""
        return self.name if self.credential_variable is not None else None

    def url(self, spec: RerankRegistration) -> str:
        return spec.endpoint + "/rerank"

    def request_body(
        self, spec: RerankRegistration, query: str, documents: list[str]
    ) -> dict[str, Any]:
        return {
            "model": spec.remote_model,
            "query": query,
            "documents": documents,
            self.count_field: len(documents),
            **dict(self.extra),
        }

    def results(self, payload: Any) -> list[Any]:
        """The answer's results (unchecked), or BadResponse when it has none."""
        found = payload if self.results_field is None else _field(payload, self.results_field)
        if not isinstance(found, list):
            where = "the answer" if self.results_field is None else f'"{self.results_field}"'
            raise BadResponse(f"{where} is not a list of results")
        return found

    def tokens(self, payload: Any) -> int | None:
        """The tokens the provider counted (usage.total_tokens), when it says."""
        usage = _field(payload, "usage")
        value = usage.get("total_tokens") if isinstance(usage, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        return None


@dataclass(frozen=True)
class Cohere(RerankProvider):
    name = "cohere"
    # Cohere's SDK reads CO_API_KEY; its integrations (LangChain, Haystack, LlamaIndex) read
    # COHERE_API_KEY, which is ours (docs/providers.md). Its keys have no prefix to mask by
    # shape: the key itself is masked in messages.
    credential_variable = "COHERE_API_KEY"
    key_pattern = None
    default_endpoint = "https://api.cohere.com/v2"
    max_documents = 1000
    max_tokens = 4096


@dataclass(frozen=True)
class Jina(RerankProvider):
    name = "jina"
    credential_variable = "JINA_API_KEY"
    key_pattern = r"\bjina_[A-Za-z0-9]{6,}"
    default_endpoint = "https://api.jina.ai/v1"
    max_documents = 1000  # none documented that we could check; a search reads 200 at most
    max_tokens = 1024  # jina-reranker-v2-base-multilingual's
    extra = (("return_documents", False),)


@dataclass(frozen=True)
class Voyage(RerankProvider):
    name = "voyage"
    credential_variable = "VOYAGE_API_KEY"
    key_pattern = r"\bpa-[A-Za-z0-9_\-]{6,}"
    default_endpoint = "https://api.voyageai.com/v1"
    max_documents = 1000
    max_tokens = 16000  # rerank-2's query and document together
    results_field = "data"
    count_field = "top_k"
    extra = (("return_documents", False), ("truncation", True))


@dataclass(frozen=True)
class TextEmbeddingsInference(RerankProvider):
    name = "tei"
    credential_variable = None  # a key only where the server has one: a credential's file
    key_pattern = None
    default_endpoint = None
    max_documents = 32  # the server's --max-client-batch-size default
    max_tokens = 512  # the BERT-sized cross-encoders it serves; it truncates itself too
    sends_model = False
    results_field = None
    score_field = "score"

    def request_body(
        self, spec: RerankRegistration, query: str, documents: list[str]
    ) -> dict[str, Any]:
        return {
            "query": query,
            "texts": documents,
            "truncate": True,
            "raw_scores": False,
            "return_text": False,
        }


KINDS: dict[str, RerankProvider] = {
    k.name: k for k in (Cohere(), Jina(), Voyage(), TextEmbeddingsInference())
}


def of(name: str) -> RerankProvider:
    """The rerank kind `name`; ConfigError naming the known kinds when there is none."""
    return kind_of(KINDS, name, "rerank provider", "embeddings.rerankers")


def key_patterns() -> list[str]:
    """Every kind's key shape (keys.py masks them in messages)."""
    return [k.key_pattern for k in KINDS.values() if k.key_pattern is not None]


def answer_limit(n: int) -> int:
    """The most bytes an answer to `n` documents may take."""
    return n * RESULT_BYTES + ENVELOPE_BYTES


def scores(kind: RerankProvider, body: bytes, n: int) -> tuple[Scores, int | None]:
    """The scores of a 2xx answer to a request of `n` documents, in the documents' order, and
    the tokens the provider counted (None when it does not say); BadResponse when the answer
    does not match the request."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadResponse(f"the answer is not JSON ({len(body)} bytes): {exc}") from None
    results = kind.results(payload)
    if len(results) != n:
        raise BadResponse(f"{len(results)} scores for {n} documents")
    found: list[float | None] = [None] * n
    for position, item in enumerate(results):
        if not isinstance(item, dict):
            raise BadResponse(f"result {position} is not an object")
        index = item.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            raise BadResponse(f"result {position} has index {index!r}, not one of 0..{n - 1}")
        if found[index] is not None:
            raise BadResponse(f"index {index} answered twice")
        value: Any = item.get(kind.score_field)
        if not _finite(value):
            raise BadResponse(
                f"result {position} has {kind.score_field} {str(value)[:40]!r}, not a finite number"
            )
        found[index] = float(value)  # (a number: _finite said so)
    return np.asarray(found, dtype=np.float32), kind.tokens(payload)


def _finite(value: Any) -> bool:
    """A JSON number that is a finite float32 (what the rerank stage holds: a double past its
    range would become infinity)."""
    if not is_number(value):
        return False
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return False
    return math.isfinite(number) and abs(number) <= _FLOAT32_MAX


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _field(payload: Any, name: str) -> Any:
    return payload.get(name) if isinstance(payload, dict) else None

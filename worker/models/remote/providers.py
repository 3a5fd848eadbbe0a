"""The provider kinds a remote model may have (embeddings.models.provider), one class each: its
URL shape, request body, answer parsing, default limits, the variable of its API key and the
shape of its keys. `of(name)` is the only way in: an unknown kind is an error naming the known
ones, never another kind's requests.

OpenAI-compatible (POST {base}/embeddings), as OpenAI's API reference documents it:
  request  {"model": str, "input": [str, ...], "encoding_format": "float", "dimensions": int?}
           (at most 2048 inputs, none empty; 8192 tokens per input, 300,000 per request;
           `dimensions` only for text-embedding-3 and later)
  answer   {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}],
            "model": str, "usage": {"prompt_tokens": n, "total_tokens": n}}
  errors   {"error": {"message": str, "type": str, "code": ...}}; 429 with Retry-After or
           x-ratelimit-reset-* headers
Hugging Face Inference API, feature extraction (POST to the model's URL), as the Inference
Providers documentation and the @huggingface/tasks schema (feature-extraction/spec) give it:
  request  {"inputs": [str, ...], "truncate": true}
  answer   [[float, ...], ...] one vector per input; a model without a pooling layer answers
           token vectors [[[float, ...] per token] per input], pooled here by the model's pooling
  errors   {"error": str} or {"error": [str]}; 503 {"error": "... is currently loading",
           "estimated_time": seconds} while a serverless model starts

The SQL side's defaults (embeddings.provider_defaults(), sql/46_providers.sql, which
register_model() writes into a row) are these classes' (a test compares them). Adding a kind
is a class here and a row there: no table changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

from worker import exceptions

TOKEN_SLACK = 8  # special tokens ([CLS], [SEP], ...) beyond max_tokens in a token-level answer


class Registration(Protocol):
    """What a provider reads of a remote model's registration (spec.RemoteSpec, which names
    the provider kind: this module does not import it back)."""

    @property
    def endpoint(self) -> str: ...

    @property
    def remote_model(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    @property
    def max_tokens(self) -> int: ...

    @property
    def pooling(self) -> str: ...

    @property
    def send_dimensions(self) -> bool: ...


class BadResponse(Exception):
    """The answer does not match the request: nothing of it is used."""


class DimensionMismatch(BadResponse):
    """Vectors of another length than registered: the registration is wrong, not the answer."""


@dataclass(frozen=True)
class Provider:
    """What every provider kind says of itself; the subclasses say how they talk."""

    name: ClassVar[str]
    credential_variable: ClassVar[str]  # the provider's own variable for its key
    key_pattern: ClassVar[str]  # the shape of its keys, masked in every message we keep
    default_endpoint: ClassVar[str]  # {model}: the provider's model id
    max_tokens: ClassVar[int]  # per input
    max_inputs: ClassVar[int]  # per request
    max_request_tokens: ClassVar[int | None]  # per request (None: no documented limit)
    # Whether a registration's pooling is used: the kind's answers may be token vectors, pooled
    # here (`model list` shows "-" for the others: their vectors come pooled).
    pools_tokens: ClassVar[bool] = False

    def url(self, spec: Registration) -> str:
        """Where a request goes, from the registered endpoint."""
        raise NotImplementedError

    def request_body(self, spec: Registration, texts: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def vectors_per_input(self, spec: Registration) -> int:
        """The most vectors an answer may carry per input (the answer's size bound)."""
        return 1

    def rows(self, spec: Registration, payload: Any, n: int) -> tuple[list[Any], int | None]:
        """Each input's vector (a list, unchecked) in the inputs' order, and the tokens the
        provider counted (None when it does not say); BadResponse when the shape is wrong."""
        raise NotImplementedError


@dataclass(frozen=True)
class OpenAI(Provider):
    name = "openai"
    credential_variable = "OPENAI_API_KEY"
    key_pattern = r"\bsk-[A-Za-z0-9_\-]{6,}"
    default_endpoint = "https://api.openai.com/v1"
    max_tokens = 8191
    max_inputs = 2048
    max_request_tokens = 300_000

    def url(self, spec: Registration) -> str:
        return spec.endpoint + "/embeddings"

    def request_body(self, spec: Registration, texts: list[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": spec.remote_model,
            "input": texts,
            "encoding_format": "float",
        }
        if spec.send_dimensions:
            body["dimensions"] = spec.dimensions
        return body

    def rows(self, spec: Registration, payload: Any, n: int) -> tuple[list[Any], int | None]:
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise BadResponse('the answer has no "data" list')
        data = payload["data"]
        if len(data) != n:
            raise BadResponse(f"{len(data)} embeddings for {n} inputs")
        rows: list[Any] = [None] * n
        for position, item in enumerate(data):
            if not isinstance(item, dict) or "embedding" not in item:
                raise BadResponse(f'data[{position}] has no "embedding"')
            index = item.get("index", position)
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
                raise BadResponse(f"data[{position}] has index {index!r}, not one of 0..{n - 1}")
            if rows[index] is not None:
                raise BadResponse(f"index {index} answered twice")
            rows[index] = item["embedding"]
        usage = payload.get("usage")
        tokens = None
        if isinstance(usage, dict):
            value = usage.get("total_tokens", usage.get("prompt_tokens"))
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                tokens = value
        return rows, tokens


@dataclass(frozen=True)
class HuggingFace(Provider):
    name = "huggingface"
    credential_variable = "HF_TOKEN"
    key_pattern = r"\bhf_[A-Za-z0-9]{6,}"
    default_endpoint = (
        "https://router.huggingface.co/hf-inference/models/{model}/pipeline/feature-extraction"
    )
    max_tokens = 512
    max_inputs = 32
    max_request_tokens = None
    pools_tokens = True

    def url(self, spec: Registration) -> str:
        return spec.endpoint

    def request_body(self, spec: Registration, texts: list[str]) -> dict[str, Any]:
        return {"inputs": texts, "truncate": True}

    def vectors_per_input(self, spec: Registration) -> int:
        # A model without pooling answers a vector per token of the input cut to max_tokens.
        return spec.max_tokens + TOKEN_SLACK

    def rows(self, spec: Registration, payload: Any, n: int) -> tuple[list[Any], int | None]:
        if not isinstance(payload, list):
            raise BadResponse("the answer is not a list of embeddings")
        if n == 1 and payload and all(is_number(x) for x in payload):
            payload = [payload]  # one input answered as one flat vector
        if len(payload) != n:
            raise BadResponse(f"{len(payload)} embeddings for {n} inputs")
        rows = []
        for item in payload:
            if isinstance(item, list) and item and isinstance(item[0], list):
                rows.append(_pool(spec, item))  # token vectors: pooled as the model says
            else:
                rows.append(item)
        return rows, None


PROVIDERS: dict[str, Provider] = {p.name: p for p in (OpenAI(), HuggingFace())}


def of(name: str) -> Provider:
    """The provider kind `name`; ConfigError naming the known kinds when there is none."""
    return kind_of(PROVIDERS, name, "provider", "embeddings.models")


K = TypeVar("K")


def kind_of(kinds: Mapping[str, K], name: str, what: str, table: str) -> K:
    """`kinds[name]`, or a ConfigError naming the known ones (never another kind's requests):
    the registry rows of a newer release, or set by hand, may name kinds this worker lacks."""
    found = kinds.get(name)
    if found is None:
        raise exceptions.ConfigError(
            f"unknown {what} {name!r}: this worker knows {', '.join(sorted(kinds))}"
            f" (an {table} row of a newer release?)"
        )
    return found


def key_patterns() -> list[str]:
    """Every kind's key shape (keys.py masks them in messages)."""
    return [p.key_pattern for p in PROVIDERS.values()]


def _pool(spec: Registration, tokens: list[Any]) -> Any:
    try:
        matrix = np.asarray(tokens, dtype=np.float64)
    except (ValueError, TypeError):
        raise BadResponse("token vectors of unequal lengths") from None
    if matrix.ndim != 2:
        raise BadResponse("token vectors of unequal lengths")
    return (matrix[0] if spec.pooling == "cls" else matrix.mean(axis=0)).tolist()


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


__all__ = [
    "PROVIDERS",
    "BadResponse",
    "DimensionMismatch",
    "HuggingFace",
    "OpenAI",
    "Provider",
    "of",
]

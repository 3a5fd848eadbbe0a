"""Talking to a remote model's provider, whatever its kind (providers.py has each kind's shapes):
the request body, the bound of an answer's size, and an answer checked against its request.

A checked answer has exactly one finite vector of the registered dimensions per input, in the
inputs' order (the kind's parser says which input each belongs to; a missing, repeated or
out-of-range position is refused). A vector with NaN or infinity fails its own input only.
tests/unit/test_provider_contract.py checks every kind against stand-ins of its shapes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.models.remote import providers
from worker.models.remote.providers import BadResponse, DimensionMismatch
from worker.models.remote.spec import RemoteSpec


@dataclass
class Answer:
    vectors: list[np.ndarray[Any, np.dtype[np.float32]] | None]  # None: refused (see errors)
    errors: dict[int, str] = field(default_factory=dict)  # input position -> why refused
    tokens: int | None = None  # as the provider counted them (usage), when it says


def request_body(spec: RemoteSpec, texts: list[str]) -> dict[str, Any]:
    return providers.of(spec.provider).request_body(spec, texts)


# The bound of an answer (answer_limit), from what was asked. One number as JSON text: 17
# significant digits, a sign, a decimal point, an exponent (`-1.2345678901234567e-05`, 23
# bytes), its separator and a pretty-printer's line and indentation (OpenAI's answers are
# indented by 8 spaces): 48 bytes is about one and a half times the worst seen.
NUMBER_BYTES = 48
ITEM_BYTES = 512  # per vector: {"object": "embedding", "index": i, "embedding": [...]}, indented
ENVELOPE_BYTES = 64 * 1024  # the rest: model, usage, an error's message, whitespace


def answer_limit(spec: RemoteSpec, n: int) -> int:
    """The most bytes an answer to `n` inputs may take: a vector of `spec.dimensions` numbers
    per input, and for Hugging Face, whose models without pooling answer a vector per token,
    per token of an input cut to max_tokens. A larger answer is not read past this (a provider
    answering 190 MB to one input cost about 2.3 GB of memory per request in flight)."""
    vectors = n * providers.of(spec.provider).vectors_per_input(spec)
    return vectors * (spec.dimensions * NUMBER_BYTES + ITEM_BYTES) + ENVELOPE_BYTES


def parse(spec: RemoteSpec, body: bytes, n: int) -> Answer:
    """The vectors of a 2xx answer to a request of `n` inputs, or BadResponse."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadResponse(f"the answer is not JSON ({_describe(body)}): {exc}") from None
    rows, tokens = providers.of(spec.provider).rows(spec, payload, n)
    return _checked(spec, rows, tokens)


def _checked(spec: RemoteSpec, rows: list[Any], tokens: int | None) -> Answer:
    answer = Answer(vectors=[], tokens=tokens)
    for position, row in enumerate(rows):
        if not isinstance(row, list) or not all(providers.is_number(x) for x in row):
            raise BadResponse(f"embedding {position} is not a list of numbers")
        if len(row) != spec.dimensions:
            raise DimensionMismatch(
                f"the endpoint answered {len(row)}-dimensional vectors; {spec.name} is "
                f"registered with {spec.dimensions} dimensions"
            )
        vector = np.asarray(row, dtype=np.float64)
        norm = float(np.linalg.norm(vector)) if np.isfinite(vector).all() else math.nan
        if not math.isfinite(norm) or norm == 0.0:
            what = "NaN or infinity" if not math.isfinite(norm) else "a zero vector"
            answer.errors[position] = f"the provider answered {what} for this input"
            answer.vectors.append(None)
            continue
        answer.vectors.append((vector / norm).astype(np.float32))
    return answer


def error_message(body: bytes) -> str:
    """The provider's own error message, when its answer carries one (OpenAI: error.message;
    Hugging Face: error), else a short description of the body."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _describe(body)
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if isinstance(error, list) and error:
            error = error[0]
        if isinstance(error, str):
            return error
        if error is not None:
            return json.dumps(error)[:300]
    return _describe(body)


def loading_seconds(body: bytes) -> float | None:
    """Hugging Face's `estimated_time` of a model still loading (503), if the answer says."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    value = payload.get("estimated_time") if isinstance(payload, dict) else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return max(float(value), 0.0)


def _describe(body: bytes) -> str:
    if not body:
        return "an empty body"
    text = body[:120].decode("utf-8", errors="replace")
    return f"{len(body)} bytes starting {text!r}"

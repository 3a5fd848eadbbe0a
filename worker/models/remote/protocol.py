"""What the providers' APIs take and answer, and checking an answer against its request.

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
tests/unit/test_provider_contract.py checks both against stand-ins of these shapes.

A checked answer has exactly one finite vector of the registered dimensions per input, in the
inputs' order (OpenAI's `index` says which input each belongs to; a missing, repeated or
out-of-range index is refused). A vector with NaN or infinity fails its own input only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.models.remote.spec import RemoteSpec


class BadResponse(Exception):
    """The answer does not match the request: nothing of it is used."""


@dataclass
class Answer:
    vectors: list[np.ndarray[Any, np.dtype[np.float32]] | None]  # None: refused (see errors)
    errors: dict[int, str] = field(default_factory=dict)  # input position -> why refused
    tokens: int | None = None  # as the provider counted them (usage), when it says


def request_body(spec: RemoteSpec, texts: list[str]) -> dict[str, Any]:
    if spec.provider == "openai":
        body: dict[str, Any] = {
            "model": spec.remote_model,
            "input": texts,
            "encoding_format": "float",
        }
        if spec.send_dimensions:
            body["dimensions"] = spec.dimensions
        return body
    return {"inputs": texts, "truncate": True}


# The bound of an answer (answer_limit), from what was asked. One number as JSON text: 17
# significant digits, a sign, a decimal point, an exponent (`-1.2345678901234567e-05`, 23
# bytes), its separator and a pretty-printer's line and indentation (OpenAI's answers are
# indented by 8 spaces): 48 bytes is about one and a half times the worst seen.
NUMBER_BYTES = 48
ITEM_BYTES = 512  # per vector: {"object": "embedding", "index": i, "embedding": [...]}, indented
ENVELOPE_BYTES = 64 * 1024  # the rest: model, usage, an error's message, whitespace
TOKEN_SLACK = 8  # special tokens ([CLS], [SEP], ...) beyond max_tokens in a token-level answer


def answer_limit(spec: RemoteSpec, n: int) -> int:
    """The most bytes an answer to `n` inputs may take: a vector of `spec.dimensions` numbers
    per input, and for Hugging Face, whose models without pooling answer a vector per token,
    per token of an input cut to max_tokens. A larger answer is not read past this (a provider
    answering 190 MB to one input cost about 2.3 GB of memory per request in flight)."""
    vectors = n if spec.provider == "openai" else n * (spec.max_tokens + TOKEN_SLACK)
    return vectors * (spec.dimensions * NUMBER_BYTES + ITEM_BYTES) + ENVELOPE_BYTES


def parse(spec: RemoteSpec, body: bytes, n: int) -> Answer:
    """The vectors of a 2xx answer to a request of `n` inputs, or BadResponse."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadResponse(f"the answer is not JSON ({_describe(body)}): {exc}") from None
    if spec.provider == "openai":
        rows, tokens = _openai_rows(payload, n)
    else:
        rows, tokens = _hf_rows(spec, payload, n), None
    return _checked(spec, rows, tokens)


def _openai_rows(payload: Any, n: int) -> tuple[list[Any], int | None]:
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


def _hf_rows(spec: RemoteSpec, payload: Any, n: int) -> list[Any]:
    if not isinstance(payload, list):
        raise BadResponse("the answer is not a list of embeddings")
    if n == 1 and payload and all(_is_number(x) for x in payload):
        payload = [payload]  # one input answered as one flat vector
    if len(payload) != n:
        raise BadResponse(f"{len(payload)} embeddings for {n} inputs")
    rows = []
    for item in payload:
        if isinstance(item, list) and item and isinstance(item[0], list):
            rows.append(_pool(spec, item))  # token vectors: pooled as the model's pooling says
        else:
            rows.append(item)
    return rows


def _pool(spec: RemoteSpec, tokens: list[Any]) -> Any:
    try:
        matrix = np.asarray(tokens, dtype=np.float64)
    except (ValueError, TypeError):
        raise BadResponse("token vectors of unequal lengths") from None
    if matrix.ndim != 2:
        raise BadResponse("token vectors of unequal lengths")
    return (matrix[0] if spec.pooling == "cls" else matrix.mean(axis=0)).tolist()


def _checked(spec: RemoteSpec, rows: list[Any], tokens: int | None) -> Answer:
    answer = Answer(vectors=[], tokens=tokens)
    for position, row in enumerate(rows):
        if not isinstance(row, list) or not all(_is_number(x) for x in row):
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


class DimensionMismatch(BadResponse):
    """Vectors of another length than registered: the registration is wrong, not the answer."""


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


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _describe(body: bytes) -> str:
    if not body:
        return "an empty body"
    text = body[:120].decode("utf-8", errors="replace")
    return f"{len(body)} bytes starting {text!r}"

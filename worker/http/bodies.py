"""JSON request bodies for worker.http: UTF-8 only (RFC 8259), nesting bounded before json.loads
recurses into it, numbers finite and of sane length, strings encodable. A body that is not
such JSON is a `BadRequest` (400) with the parser's reason."""

from __future__ import annotations

import json
import math
import re
from http import HTTPStatus
from typing import Any

import numpy as np

from worker.http.protocol import BadRequest

MAX_JSON_DEPTH = 32  # nesting of arrays and objects; our routes need 3
MAX_INT_DIGITS = 1000  # digits of one JSON integer (int() of many digits costs quadratic time)

# A JSON string, up to its closing quote or, unterminated, to the end: never backtracks, so the
# depth scan stays linear whatever the body holds.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))


def request_json(raw: bytes) -> Any:
    """A POST route's body as JSON; None for an empty one, so that each route says what it
    expects ("table" and "query") rather than "malformed JSON"."""
    return None if not raw.strip() else parse_json(raw)


def parse_json(raw: bytes) -> Any:
    """The JSON value of a request body. UTF-8 only (RFC 8259), nesting bounded before
    json.loads recurses into it, numbers finite and of sane length (NaN and Infinity are not
    JSON, and would make our own answers invalid JSON), strings encodable (no lone
    surrogates: no model can encode them)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            HTTPStatus.BAD_REQUEST, f"body is not UTF-8 (byte {exc.start}: {exc.reason})"
        ) from None
    if too_deep(raw):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(
            HTTPStatus.BAD_REQUEST, "malformed JSON: a string holds a lone surrogate"
        ) from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and our number checks
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"malformed JSON: {exc}") from None
    return body


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than `limit` in the JSON text `raw` (brackets
    inside strings do not count), found in linear time without recursion."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = np.frombuffer(_STRING.sub(b"", raw).translate(None, _NOT_BRACKET), np.uint8)
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return bool(steps.size and int(np.cumsum(steps).max()) > limit)


def _constant(name: str) -> Any:
    raise ValueError(f"{name}: NaN, Infinity and -Infinity are not JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise ValueError(f"a number of more than {MAX_INT_DIGITS} digits")
    return int(text)

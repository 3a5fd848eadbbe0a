"""The request-reading pieces of worker.http.protocol on their own: JSON bodies, the nesting
scan, and Content-Length framing. (The server answering them is tests/acceptance/
test_http_input.py and test_http_fuzz.py.)"""

from __future__ import annotations

import email.message
import http.client
import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.http.protocol import (
    MAX_JSON_DEPTH,
    BadRequest,
    HeadReader,
    declared_length,
    parse_json,
    read_body,
    too_deep,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def wrapped(value: Any, levels: int) -> Any:
    for i in range(levels):
        value = [value] if i % 2 else {'k[{"': value}  # brackets in strings do not count
    return value


@given(json_values, st.integers(0, 2 * MAX_JSON_DEPTH))
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_valid_json_within_the_depth_parses_as_json_loads_does(value: Any, levels: int) -> None:
    value = wrapped(value, levels)
    raw = json.dumps(value, ensure_ascii=False).encode()
    assert too_deep(raw) == (depth(value) > MAX_JSON_DEPTH)
    if depth(value) <= MAX_JSON_DEPTH:
        assert parse_json(raw) == json.loads(raw)
    else:
        with pytest.raises(BadRequest, match="nested deeper than"):
            parse_json(raw)


@given(st.binary(max_size=300) | st.text(alphabet='[]{}"\\:,0123456789.eE+-nul ').map(str.encode))
def test_any_bytes_parse_or_raise_bad_request(raw: bytes) -> None:
    try:
        parse_json(raw)
    except BadRequest as exc:
        assert exc.status == 400


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 100_000, "nested deeper than"),
        (b'{"a": ' * 2000 + b"1" + b"}" * 2000, "nested deeper than"),
        (b"[NaN]", "not JSON"),
        (b"[-Infinity]", "not JSON"),
        (b"[1e400]", "out of range"),
        (b"[" + b"1" * 1001 + b"]", "digits"),
        (b'["\\ud800"]', "lone surrogate"),
        (b'"\xc3"', "not UTF-8"),
        (b"\xef\xbb\xbf[]", "malformed JSON"),  # a UTF-8 BOM
        (b'"\\', "malformed JSON"),
        (b"", "malformed JSON"),
    ],
)
def test_refused_bodies_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        parse_json(raw)


def test_the_depth_scan_is_linear_on_hostile_strings() -> None:
    """Unterminated strings and runs of escapes cannot make the scan backtrack."""
    for raw in (b'"\\"' * 300_000, b'["' + b"\\\\" * 300_000, b'[["' * 200_000):
        too_deep(raw)  # the test's timeout is the bound; each takes milliseconds


def headers(*pairs: tuple[str, str]) -> email.message.Message:
    raw = "".join(f"{name}: {value}\r\n" for name, value in pairs) + "\r\n"
    return http.client.parse_headers(io.BytesIO(raw.encode("latin-1")))


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ((), None),
        ((("Content-Length", "0"),), 0),
        ((("Content-Length", " 12 "),), 12),
        ((("Content-Length", "1000"),), 1000),
    ],
)
def test_a_content_length(pairs: tuple[tuple[str, str], ...], expected: int | None) -> None:
    assert declared_length(headers(*pairs), limit=1000) == expected


@pytest.mark.parametrize(
    ("pairs", "status"),
    [
        ((("Content-Length", "1001"),), 413),
        ((("Content-Length", "9" * 40),), 413),
        *[((("Content-Length", v),), 400) for v in ("-1", "+1", "1.0", "0x1", "1,1", "", "²")],
        ((("Content-Length", "1"), ("Content-Length", "1")), 400),
        ((("Transfer-Encoding", "chunked"),), 411),
        ((("Transfer-Encoding", "chunked"), ("Content-Length", "1")), 400),
    ],
)
def test_an_ambiguous_or_oversized_length_is_refused(
    pairs: tuple[tuple[str, str], ...], status: int
) -> None:
    with pytest.raises(BadRequest) as raised:
        declared_length(headers(*pairs), limit=1000)
    assert raised.value.status == status


def test_the_head_reader_bounds_the_headers_in_all() -> None:
    head = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 100) for i in range(50)) + b"\r\n"
    assert len(http.client.parse_headers(HeadReader(io.BytesIO(head), 10_000))) == 50
    with pytest.raises(http.client.LineTooLong):
        http.client.parse_headers(HeadReader(io.BytesIO(head), 4_000))


def test_a_short_body_is_a_bad_request() -> None:
    assert read_body(io.BufferedReader(io.BytesIO(b"abcdef")), 4, 1.0) == b"abcd"
    with pytest.raises(BadRequest, match="body ended after 6 of 10 bytes"):
        read_body(io.BufferedReader(io.BytesIO(b"abcdef")), 10, 1.0)

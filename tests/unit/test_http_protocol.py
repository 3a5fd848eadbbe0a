"""The request-reading pieces of worker.http on their own: finding and parsing a request's head
(worker.http.protocol), JSON bodies and the nesting scan (worker.http.bodies), Content-Length
framing, answers' bytes. (The server answering them is tests/acceptance/test_http_input.py,
test_http_fuzz.py and test_http_heads.py.)"""

from __future__ import annotations

import email.message
import http.client
import io
import json
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.http.bodies import MAX_JSON_DEPTH, parse_json, too_deep
from worker.http.protocol import (
    MAX_HEAD,
    MAX_REQUEST_LINE,
    Answer,
    BadRequest,
    HeadScan,
    declared_length,
    parse_head,
    render,
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


def scan_trickled(data: bytes) -> tuple[HeadScan, int | None, int]:
    """Feeds `data` to a HeadScan a byte at a time: the scan, the head's end, the bytes fed."""
    scan, buffer = HeadScan(), bytearray()
    for byte in data:
        buffer.append(byte)
        end = scan.end(buffer)
        if end is not None:
            return scan, end, len(buffer)
    return scan, None, len(buffer)


def test_a_head_that_trickles_in_is_found_where_it_ends() -> None:
    """Its end is found at its empty line, with a pipelined request after it left alone; a
    head of 60 KB sent a byte at a time is scanned once in all (the test's timeout is the
    bound: a rescan on each byte would take minutes)."""
    first = b"\r\n\r\nPOST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n"
    scan, end, fed = scan_trickled(first + b"{}GET / HTTP/1.1\r\n\r\n")
    assert (end, fed, scan.start) == (len(first), len(first), 4)
    big = b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 60_000 + b"\n\n"
    assert scan_trickled(big)[1] == len(big)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /" + b"a" * MAX_REQUEST_LINE, 414),  # no newline yet: refused without it
        (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD, 431),  # no empty line yet
        (b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * (MAX_HEAD // 6), 431),
    ],
)
def test_a_head_past_its_limits_is_refused_before_it_ends(data: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as raised:
        scan_trickled(data)
    assert raised.value.status == status


def test_blank_lines_before_a_request_are_skipped_up_to_eight() -> None:
    assert scan_trickled(b"\r\n" * 8 + b"GET / HTTP/1.1\r\n\r\n")[0].start == 16
    scan, _, _ = scan_trickled(b"\n" * 9 + b"GET / HTTP/1.1\r\n\r\n")
    assert (scan.start, scan.request_line_end) == (8, 9)  # the ninth is the request line,
    with pytest.raises(BadRequest, match="empty request line"):  # refused as soon as it is seen
        parse_head(b"\n" + b"\r\n", 100)


@pytest.mark.parametrize(
    ("head", "status", "reason"),
    [
        (b"GET /healthz\r\n", 400, "HTTP/0.9"),
        (b"POST /embed\r\n\r\n", 400, "HTTP/0.9"),
        (b"GET /healthz HTTP/2.0\r\n\r\n", 505, "version"),
        (b"GET /healthz HTTP/x\r\n\r\n", 400, "version"),
        (b"GET\r\n\r\n", 400, "syntax"),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400, "header"),
        (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400, "folded"),
        (b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 101 + b"\r\n", 431, "headers"),
        (b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413, "body over"),
    ],
)
def test_a_head_that_is_not_a_request_is_refused(head: bytes, status: int, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason) as raised:
        parse_head(head, 100)
    assert raised.value.status == status


def test_what_a_head_says() -> None:
    head = (
        b"POST http://h/embed?x=1 HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
        b"Connection: close\r\n\r\n"
    )
    request = parse_head(head, 100)
    assert (request.method, request.path, request.length) == ("POST", "/embed", 2)
    assert request.expect_continue and request.close and not request.head_only
    old = parse_head(b"HEAD /healthz HTTP/1.0\r\n\r\n", 100)
    assert old.head_only and old.close and old.length is None
    assert not parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 100).close


def test_an_answer_as_it_goes_out() -> None:
    answer = Answer.error(HTTPStatus.SERVICE_UNAVAILABLE, "busy", retry_after=3)
    sent = render(answer, head_only=False, close=True)
    head, body = sent.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    assert {"Retry-After: 3", "Connection: close", f"Content-Length: {len(body)}"} <= set(lines)
    assert json.loads(body) == {"error": "busy"}
    assert render(answer, head_only=True, close=False).endswith(b"\r\n\r\n")

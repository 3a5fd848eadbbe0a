"""Bad input to the HTTP server gets an answer (issue 24 §5): every malformed, hostile or odd
request is answered once with a well-formed status and a JSON reason, and the server stays up.

The requests go out as raw bytes (tests/support/rawhttp.py): no HTTP library would send most of
them. One worker serves the whole module; after every case it must still answer /healthz and
must not have logged a traceback.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.cluster import Cluster
from tests.support.process import WorkerProcess
from tests.support.rawhttp import Answer, exchange, http_worker, read_answer, request

TOKEN = "input-test-token"
AUTH = ("Authorization", f"Bearer {TOKEN}")
JSON = ("Content-Type", "application/json")
TIMEOUT = 2  # EMBED_HTTP_TIMEOUT_SECONDS of this module's worker


@pytest.fixture(scope="module")
def served(cluster: Cluster, template_db: str) -> Iterator[WorkerProcess]:
    with http_worker(
        cluster, template_db, EMBED_HTTP_TOKEN=TOKEN, EMBED_HTTP_TIMEOUT_SECONDS=str(TIMEOUT)
    ) as (worker, _):
        yield worker


@pytest.fixture
def port(served: WorkerProcess) -> Iterator[int]:
    assert served.port is not None
    logged = len(served.log_text())
    yield served.port
    assert served.proc.poll() is None, served.log_text()[-3000:]
    assert [a.status for a in exchange(served.port, request("GET", "/healthz"))] == [200]
    new = served.log_text()[logged:]
    assert "Traceback" not in new, new[-5000:]


def post(path: str, body: bytes, *headers: tuple[str, str], auth: bool = True) -> bytes:
    return request("POST", path, body, headers=[*([AUTH] if auth else []), JSON, *headers])


def one(port: int, data: bytes, method: str = "GET") -> Answer:
    answers = exchange(port, data, methods=[method])
    assert len(answers) == 1, answers
    return answers[0]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


ROUTES = ["/embed", "/search", "/functions/v1/embed"]

CASES: list[tuple[str, bytes, int, str]] = [
    # The two requests the issue reports.
    *[
        (f"2000-deep JSON to {route}", post(route, nested(2000)), 400, "nested deeper than")
        for route in ROUTES
    ],
    (
        "2000-deep object inside a valid field",
        post("/embed", b'{"input": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2000 + b"}"),
        400,
        "nested deeper than",
    ),
    (
        "wrong token, non-numeric Content-Length",
        request(
            "POST",
            "/embed",
            b'{"input": "x"}',
            headers=[("Authorization", "Bearer wrong"), JSON, ("Content-Length", "abc")],
        ),
        400,
        "invalid Content-Length",
    ),
    (
        "no token, non-numeric Content-Length",
        post("/embed", b"{}", ("Content-Length", "abc"), auth=False),
        400,
        "invalid Content-Length",
    ),
    (
        "PUT, non-numeric Content-Length",
        request("PUT", "/embed", b"{}", headers=[("Content-Length", "x")]),
        400,
        "invalid Content-Length",
    ),
    # Content-Length, strictly.
    *[
        (f"Content-Length {value!r}", post("/embed", b"{}", ("Content-Length", value)), 400, why)
        for value, why in [
            ("-1", "invalid Content-Length"),
            ("+2", "invalid Content-Length"),
            ("2.0", "invalid Content-Length"),
            ("0x2", "invalid Content-Length"),
            ("2, 2", "invalid Content-Length"),
            ("1e1", "invalid Content-Length"),
            ("", "invalid Content-Length"),
        ]
    ],
    (
        "Content-Length twice, the same",
        post("/embed", b"{}", ("Content-Length", "2"), ("Content-Length", "2")),
        400,
        "Content-Length",
    ),
    (
        "Content-Length twice, different",
        post("/embed", b"{}", ("Content-Length", "2"), ("Content-Length", "20")),
        400,
        "Content-Length",
    ),
    (
        "Content-Length of 30 digits",
        post("/embed", b"{}", ("Content-Length", "9" * 30)),
        413,
        "body over",
    ),
    ("Content-Length 0", post("/embed", b""), 400, 'expected a JSON object with "input"'),
    (
        "no Content-Length",
        request("POST", "/embed", headers=[AUTH, JSON]),
        411,
        "Content-Length is required",
    ),
    (
        "body shorter than Content-Length",
        post("/embed", b"{}", ("Content-Length", "10")),
        400,
        "body ended after 2 of 10 bytes",
    ),
    # Transfer codings we do not take: the stream could not be framed.
    (
        "chunked body",
        post("/embed", b"2\r\n{}\r\n0\r\n\r\n", ("Transfer-Encoding", "chunked")),
        411,
        "Transfer-Encoding",
    ),
    (
        "chunked and Content-Length",
        post(
            "/embed",
            b"2\r\n{}\r\n0\r\n\r\n",
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "12"),
        ),
        400,
        "Transfer-Encoding",
    ),
    (
        "chunked GET",
        request("GET", "/healthz", b"0\r\n\r\n", headers=[("Transfer-Encoding", "chunked")]),
        411,
        "Transfer-Encoding",
    ),
    # The body's text and JSON.
    ("invalid UTF-8", post("/embed", b'{"input": "\xff\xfe"}'), 400, "not UTF-8"),
    ("UTF-16", post("/embed", '{"input": "x"}'.encode("utf-16")), 400, "not UTF-8"),
    *[
        (f"{text.decode()} for {route}", post(route, text), 400, why)
        for route, why in [("/embed", '"input"'), ("/search", '"table"')]
        for text in (b"[]", b'"x"', b"1", b"null", b"true")
    ],
    ("an object for the push route", post("/functions/v1/embed", b"{}"), 400, "JSON array"),
    *[
        (
            f"{text} in the body",
            post("/embed", b'{"input": "x", "n": ' + text.encode() + b"}"),
            400,
            "are not JSON",
        )
        for text in ("NaN", "Infinity", "-Infinity")
    ],
    ("1e999", post("/embed", b'{"input": "x", "n": 1e999}'), 400, "out of range"),
    (
        "k 1e999",
        post("/search", b'{"table": "docs", "query": "x", "k": 1e999}'),
        400,
        "out of range",
    ),
    (
        "5000-digit integer",
        post("/embed", b'{"input": "x", "n": ' + b"9" * 5000 + b"}"),
        400,
        "digits",
    ),
    # Wrong types and values of fields.
    ("input null", post("/embed", b'{"input": null}'), 400, '"input"'),
    ("input [1]", post("/embed", b'{"input": [1]}'), 400, '"input"'),
    ("model 5", post("/embed", b'{"input": "x", "model": 5}'), 400, '"model"'),
    *[
        (f"search {body.decode()}", post("/search", body), status, why)
        for body, status, why in [
            (b'{"table": 1, "query": "x"}', 400, '"table"'),
            (b'{"table": "docs", "query": "x", "k": "5"}', 400, '"k"'),
            (b'{"table": "docs", "query": "x", "k": 1.5}', 400, '"k"'),
            (b'{"table": "docs", "query": "x", "k": true}', 400, '"k"'),
            (b'{"table": "docs", "query": "x", "k": 0}', 400, '"k"'),
            (b'{"table": "docs", "query": "x", "k": 101}', 400, '"k"'),
            (b'{"table": "docs", "query": []}', 400, '"query"'),
            (b'{"table": "docs\\u0000", "query": "x"}', 400, '"table"'),
            (b'{"table": "docs", "query": "x", "column": "e\\u0000"}', 400, '"column"'),
            (b'{"table": "docs", "query": "pass\\u0000word"}', 400, '"query"'),
            (b'{"table": "docs", "query": "x", "filter": {"lang": "e\\u0000n"}}', 400, '"filter"'),
            (b'{"table": "\\"", "query": "x"}', 404, "no table"),
            (b'{"table": "a.b.c.d", "query": "x"}', 404, "no table"),
            (b'{"table": "other_db.public.docs", "query": "x"}', 404, "no table"),
            (b'{"table": "docs(", "query": "x"}', 404, "no table"),
            (b'{"table": "docs", "query": "x", "rrf_k": "60"}', 400, '"rrf_k"'),
            (b'{"table": "docs", "query": "x", "rrf_k": ' + b"9" * 400 + b"}", 400, '"rrf_k"'),
            (b'{"table": "docs", "query": "x", "text_weight": -1}', 400, "text_weight must"),
            (b'{"table": "docs", "query": "x", "depth": 0}', 400, '"depth"'),
            (b'{"table": "docs", "query": "x", "mode": "vector", "depth": 5}', 400, "depth"),
        ]
    ],
    *[
        (f"push {body.decode()}", post("/functions/v1/embed", body), 400, "jobId")
        for body in (
            b'[{"jobId": true}]',
            b'[{"jobId": 1.9}]',  # not job 1
            b'[{"jobId": "1"}]',
            b'[{"jobId": null}]',
            b'[{"jobId": 1e30}]',
            b'[{"jobId": ' + str(10**30).encode() + b"}]",
            b'[{"jobId": -9223372036854775809}]',
        )
    ],
    # Request heads too large.
    (
        "a 70 KB header line",
        request("GET", "/healthz", headers=[("X-Big", "a" * 70_000)]),
        431,
        "header",
    ),
    (
        "120 headers",
        request("GET", "/healthz", headers=[(f"X-{i}", "a") for i in range(120)]),
        431,
        "header",
    ),
    (
        "90 headers of 1 KB",
        request("GET", "/healthz", headers=[(f"X-{i}", "a" * 1000) for i in range(90)]),
        431,
        "header",
    ),
    ("a 9 KB path", request("GET", "/" + "a" * 9000), 414, "request line"),
    # Header lines that are not headers.
    (
        "a header line without a colon",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        400,
        "header",
    ),
    (
        "a space before the colon",
        b"POST /embed HTTP/1.1\r\nContent-Length : 2\r\n\r\n{}",
        400,
        "header",
    ),
    # Methods and paths.
    *[
        (f"method {method}", request(method, path), status, why)
        for method, path, status, why in [
            ("FOO", "/healthz", 405, "not allowed"),
            ("get", "/healthz", 405, "not allowed"),
            ("OPTIONS", "/embed", 405, "not allowed"),
            ("TRACE", "/healthz", 405, "not allowed"),
            ("DELETE", "/embed", 405, "not allowed"),
            ("CONNECT", "example.com:443", 404, "no route"),
        ]
    ],
    ("path *", request("GET", "*"), 404, "no route"),
    ("path with %00", request("GET", "/%00"), 404, "no route"),
    ("a bare path", request("GET", "healthz"), 404, "no route"),
    # HTTP/0.9 and request lines that are not request lines.
    ("HTTP/0.9 GET", b"GET /healthz\r\n", 400, "HTTP/0.9"),
    ("HTTP/0.9 POST", b"POST /embed\r\n", 400, "HTTP/0.9"),
    ("a bare method", b"GET\r\n\r\n", 400, "request"),
    ("four words", b"GET /healthz HTTP/1.1 x\r\n\r\n", 400, "request"),
    ("version HTTP/x", b"GET /healthz HTTP/x\r\n\r\n", 400, "version"),
    ("version FOO/1.1", b"GET /healthz FOO/1.1\r\n\r\n", 400, "version"),
    ("version HTTP/1.1.1", b"GET /healthz HTTP/1.1.1\r\n\r\n", 400, "version"),
    ("version HTTP/2.0", b"GET /healthz HTTP/2.0\r\n\r\n", 505, "version"),
    ("NUL bytes", b"\x00\x00\x00\r\n\r\n", 400, "request"),
    ("whitespace", b"   \t \r\n\r\n", 400, "request"),
    (
        "a TLS ClientHello",
        bytes.fromhex("160301020001000200fc0303") + bytes(range(256)),
        400,
        "request",
    ),
]


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [pytest.param(data, status, reason, id=name) for name, data, status, reason in CASES],
)
def test_bad_input_gets_one_well_formed_answer(
    port: int, data: bytes, status: int, reason: str
) -> None:
    answer = one(port, data)
    assert answer.status == status, answer
    assert reason in answer.error, answer.error


def test_head_answers_without_a_body(port: int) -> None:
    data = request("HEAD", "/healthz") + request("HEAD", "/embed") + request("GET", "/healthz")
    answers = exchange(port, data, methods=["HEAD", "HEAD", "GET"])
    assert [a.status for a in answers] == [200, 405, 200]
    assert answers[1].headers["allow"] == "POST"
    assert answers[2].json() == {"status": "ok"}


def test_a_405_says_what_is_allowed(port: int) -> None:
    assert one(port, request("FOO", "/healthz")).headers["allow"] == "GET, HEAD"
    assert one(port, request("PATCH", "/search", b"{}")).headers["allow"] == "POST"


def test_absolute_form_and_blank_lines_before_a_request(port: int) -> None:
    assert one(port, request("GET", "http://test/healthz")).json() == {"status": "ok"}
    assert one(port, b"\r\n\r\n" + request("GET", "/healthz")).status == 200
    assert exchange(port, b"\r\n\r\n") == []  # no request, no answer


def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    data = b"".join(
        [
            request("GET", "/healthz"),
            post("/embed", b'{"input": "hello"}'),
            post("/embed", b"{not json"),
            request("GET", "/nope"),
            request("GET", "/healthz", b"ignored"),  # a GET body is read and ignored
            post("/search", b'{"table": "docs", "query": "kittens", "k": 2}'),
            request("GET", "/healthz", headers=[("Connection", "close")]),
            request("GET", "/healthz"),  # after Connection: close: never read
        ]
    )
    answers = exchange(port, data)
    assert [a.status for a in answers] == [200, 200, 400, 404, 200, 200, 200]
    assert len(answers[1].json()["embedding"]) == 384
    assert len(answers[5].json()["results"]) == 2
    assert answers[6].headers["connection"] == "close"


def test_a_stalled_request_gets_408(port: int) -> None:
    for partial in (
        post("/embed", b'{"input": "x"}', ("Content-Length", "100")),  # a body that stops
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",  # headers that stop
    ):
        started = time.monotonic()
        answer = one_without_closing(port, partial)
        assert answer.status == 408 and "within" in answer.error
        assert time.monotonic() - started < TIMEOUT + 5


def one_without_closing(port: int, data: bytes) -> Answer:
    answers = exchange(port, data, half_close=False)
    assert len(answers) == 1, answers
    return answers[0]


def test_the_token_is_checked_before_the_body_is_asked_for(port: int) -> None:
    """Expect: 100-continue: a wrong token is answered 401 at once, and the client never
    sends its body; the right token gets 100 Continue, then the answer."""
    head = request(
        "POST", "/embed", headers=[JSON, ("Content-Length", "14"), ("Expect", "100-continue")]
    )
    wrong = head.replace(b"Host: test", b"Host: test\r\nAuthorization: Bearer wrong")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wrong)
        with sock.makefile("rb") as reader:
            assert reader.readline() == b"HTTP/1.1 401 Unauthorized\r\n"  # no 100 Continue

    right = head.replace(b"Host: test", f"Host: test\r\n{AUTH[0]}: {AUTH[1]}".encode())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(right)
        with sock.makefile("rb") as reader:
            assert reader.readline() == b"HTTP/1.1 100 Continue\r\n"
            assert reader.readline() == b"\r\n"
            sock.sendall(b'{"input": "x"}')
            answer = read_answer(reader)
            assert answer is not None and answer.status == 200


def test_an_unauthenticated_body_is_never_parsed(port: int) -> None:
    """A wrong token gets its 401 whatever the body holds: the JSON is not looked at."""
    answer = one(port, post("/embed", nested(2000), ("Authorization", "Bearer wrong"), auth=False))
    assert answer.status == 401 and "bearer token" in answer.error


def test_the_server_keeps_serving_after_all_of_it(served: WorkerProcess, port: int) -> None:
    for _, data, _, _ in CASES:
        exchange(port, data)
    status, body = served.get("/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"


@pytest.mark.parametrize(
    ("headers", "status"),
    [((("Authorization", "Bearer wrong"),), 401), ((AUTH, ("Content-Length", "1048577")), 413)],
    ids=["wrong token", "over the limit"],
)
def test_a_refused_body_sent_anyway_does_not_reset_the_answer(
    port: int, headers: tuple[tuple[str, str], ...], status: int
) -> None:
    """The client sends its whole megabyte although the answer came after the headers, and
    still reads the answer. (The server drains such input before closing, so that a reset does
    not destroy an answer in flight; over loopback a reset loses nothing, so this guards the
    exchange, not the drain itself.)"""
    body = b'{"input": "' + b"x" * 1_048_550 + b'"}'
    data = request("POST", "/embed", body, headers=[JSON, *headers])
    assert [a.status for a in exchange(port, data)] == [status]

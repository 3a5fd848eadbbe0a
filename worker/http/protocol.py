"""HTTP/1.1 on the wire for worker.http, without sockets: where a request's head ends in the bytes
a connection received (`HeadScan`, within size limits), what the head says (`parse_head`: the
request line and headers as http.server reads them, checked), and the bytes of an answer
(`Answer`, `render`). A problem with the request is a `BadRequest` carrying the status to
answer and the reason. worker.http.connection moves the bytes; bodies are worker.http.bodies'.

Framing is strict on purpose: a request whose body length is ambiguous (two Content-Lengths, a
sign, a transfer coding) is refused and its connection closed, because another reader of the
same bytes (a proxy in front of us) could split the stream into requests differently.
"""

from __future__ import annotations

import email.message
import email.utils
import functools
import io
import json
import math
import re
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from worker import conninfo

MAX_REQUEST_LINE = 8192  # bytes; a longer request line is answered 414
MAX_HEAD = 65536  # bytes of request line and headers together; more is answered 431
MAX_BLANK_LINES = 8  # empty lines skipped before a request line (RFC 9112 2.2)
SERVER = "embed-worker"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_DIGITS = re.compile(r"[0-9]+")


class BadRequest(Exception):
    """The request cannot be served as sent: answer `status` with the message as the reason."""

    def __init__(self, status: HTTPStatus, message: str, *, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.allow = allow


class BadFraming(BadRequest):
    """A head read and parsed in full whose body's declared length is refused (ambiguous,
    malformed, a transfer coding, over EMBED_HTTP_MAX_BODY): the request is known (`request`,
    its length None), so it is answered and counted as one; where it ends is not, so its
    connection closes after the answer (`request.close`)."""

    def __init__(self, refusal: BadRequest, request: Request) -> None:
        super().__init__(refusal.status, str(refusal))
        self.request = request


class HeadScan:
    """Where the head of the next request ends in a connection's buffer, found as its bytes
    arrive: each call goes on from where the last one stopped, so a head that trickles in a byte
    at a time is still read in linear time. Up to MAX_BLANK_LINES empty lines before the
    request line are skipped; past MAX_REQUEST_LINE bytes of request line, or MAX_HEAD of head,
    the scan raises (414, 431) without waiting for the rest."""

    def __init__(self) -> None:
        self.start = 0  # where the request line begins in the buffer
        self.request_line_end: int | None = None  # where it ends, once it has
        self._line = 0  # where the line being scanned begins
        self._blank = 0

    def started(self, buffer: bytearray) -> bool:
        """Whether a byte of the request (past skipped empty lines) has arrived."""
        return len(buffer) > self.start

    def end(self, buffer: bytearray) -> int | None:
        """The index just past the head's empty line, or None while the head is incomplete."""
        while (newline := buffer.find(b"\n", self._line)) >= 0:
            line_end = newline + 1
            line = bytes(buffer[self._line : line_end]) if line_end - self._line <= 2 else b""
            blank = line in (b"\n", b"\r\n")
            if self.request_line_end is None:
                if blank and self._blank < MAX_BLANK_LINES:
                    self._blank += 1
                    self.start = self._line = line_end
                    continue
                self._check(line_end)
                self.request_line_end = self._line = line_end
                continue
            self._check(line_end)
            self._line = line_end
            if blank:
                return line_end
        self._check(len(buffer))
        return None

    def _check(self, upto: int) -> None:
        if self.request_line_end is None and upto - self.start > MAX_REQUEST_LINE:
            raise BadRequest(
                HTTPStatus.REQUEST_URI_TOO_LONG, f"request line over {MAX_REQUEST_LINE} bytes"
            )
        if upto - self.start > MAX_HEAD:
            raise BadRequest(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"request line and headers over {MAX_HEAD} bytes",
            )


@dataclass
class Request:
    """A request as its head says, and once read (worker.http.connection), its body."""

    method: str
    path: str  # the route's path: query string removed, the absolute form reduced
    headers: email.message.Message
    length: int | None  # the body's declared length (None: no Content-Length)
    expect_continue: bool  # the client waits for 100 Continue before it sends the body
    close: bool  # the client asked to close after this request (or speaks HTTP/1.0)
    body: bytes = b""
    received: float = 0.0  # time.perf_counter() when its head had been read

    @property
    def head_only(self) -> bool:
        return self.method == "HEAD"


class _HeadParser(BaseHTTPRequestHandler):
    """http.server's own reading of a request line and headers, run on a head already in
    memory. Its __init__ would serve a socket, so it is not called."""

    protocol_version = "HTTP/1.1"

    def __init__(self, head: bytes) -> None:
        self.rfile = io.BytesIO(head)
        self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
        self.refusal: BadRequest | None = None
        self.expect_continue = False

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        reason = message or HTTPStatus(code).phrase
        self.refusal = BadRequest(HTTPStatus(code), f"{reason}: {explain}" if explain else reason)

    def handle_expect_100(self) -> bool:
        self.expect_continue = True  # sent only once a route wants the body
        return True


def parse_head(head: bytes, max_body: int) -> Request:
    """The request that `head` (a request line and headers, usually up to their empty line)
    makes, or a BadRequest: a request line that is not `METHOD target HTTP/1.x`, HTTP/0.9,
    headers http.server refuses or only half understands, an ambiguous or oversized body."""
    parser = _HeadParser(head)
    if len(parser.raw_requestline) > MAX_REQUEST_LINE:
        raise BadRequest(
            HTTPStatus.REQUEST_URI_TOO_LONG, f"request line over {MAX_REQUEST_LINE} bytes"
        )
    if not parser.parse_request():
        raise parser.refusal or BadRequest(HTTPStatus.BAD_REQUEST, "empty request line")
    if parser.request_version == "HTTP/0.9":
        raise BadRequest(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not served")
    check_headers(parser.headers)
    path = parser.path.split("?", 1)[0]
    if path.startswith(("http://", "https://")):  # the absolute form (RFC 9112 3.2.2)
        path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
    request = Request(
        method=str(parser.command),
        path=path,
        headers=parser.headers,
        length=None,
        expect_continue=parser.expect_continue,
        close=parser.close_connection,
    )
    try:
        request.length = declared_length(parser.headers, max_body)
    except BadRequest as exc:
        request.close = True  # where its body ends is unknown: nothing after it can be read
        raise BadFraming(exc, request) from None
    return request


def check_headers(headers: email.message.Message) -> None:
    """Refuses header sections the parser only half understood: a line without a colon (the
    parser takes it and everything after it for a body, so a Content-Length below it would go
    unseen), and folded lines (obsolete; RFC 9112 lets a server refuse them)."""
    if headers.defects or headers.get_payload() or headers.get_unixfrom():
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed header line (no name: value)")
    if any("\n" in str(value) for value in headers.values()):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "folded header lines are not accepted")


def declared_length(headers: email.message.Message, limit: int) -> int | None:
    """The body's length from Content-Length, None when the request declares no body."""
    lengths = headers.get_all("Content-Length") or []
    if headers.get_all("Transfer-Encoding"):
        if lengths:
            raise BadRequest(
                HTTPStatus.BAD_REQUEST, "both Transfer-Encoding and Content-Length are given"
            )
        raise BadRequest(
            HTTPStatus.LENGTH_REQUIRED,
            "Transfer-Encoding (a chunked body) is not accepted: send Content-Length",
        )
    if not lengths:
        return None
    value = str(lengths[0]).strip(" \t")
    if len(lengths) > 1 or not _DIGITS.fullmatch(value):
        shown = ", ".join(repr(str(v)[:40]) for v in lengths)
        raise BadRequest(
            HTTPStatus.BAD_REQUEST,
            f"invalid Content-Length {shown}: expected one decimal number of bytes",
        )
    if len(value) > 18 or int(value) > limit:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {limit} bytes")
    return int(value)


@dataclass(frozen=True)
class Answer:
    """An answer's status, body and own headers (Content-Type, Content-Length, Connection and
    the rest are `render()`'s)."""

    status: HTTPStatus
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: HTTPStatus, value: Any, headers: dict[str, str] | None = None) -> Answer:
        return cls(status, json.dumps(value).encode(), headers=tuple((headers or {}).items()))

    @classmethod
    def error(
        cls,
        status: HTTPStatus,
        message: str,
        *,
        allow: str | None = None,
        retry_after: int | None = None,
    ) -> Answer:
        """{"error": reason}, a password in the reason redacted; `Allow` for a 405, the
        challenge every 401 must carry (RFC 9110 11.6.1: the bearer token, EMBED_HTTP_TOKEN),
        and `Retry-After` where the time to wait is known."""
        headers = {"Allow": allow} if allow else {}
        if status == HTTPStatus.UNAUTHORIZED:
            headers["WWW-Authenticate"] = "Bearer"
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return cls.json(status, {"error": conninfo.redact(message)}, headers)


BUSY = Answer.error(
    HTTPStatus.SERVICE_UNAVAILABLE, "too many concurrent requests; retry shortly", retry_after=1
)
STOPPING = Answer.error(
    HTTPStatus.SERVICE_UNAVAILABLE, "the worker is stopping; retry shortly", retry_after=5
)


def render(answer: Answer, *, head_only: bool, close: bool) -> bytes:
    """The answer's bytes: status line, headers (`Connection: close` when the connection
    closes after it), and the body unless the request was a HEAD."""
    status = answer.status
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Server: {SERVER}",
        f"Date: {_date()}",
        f"Content-Type: {answer.content_type}",
        f"Content-Length: {len(answer.body)}",
        *(f"{name}: {value}" for name, value in answer.headers),
    ]
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + answer.body


@functools.lru_cache(maxsize=2)
def _date_of(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)


def _date() -> str:
    """The Date header's value, made once a second rather than per answer."""
    return _date_of(int(time.time()))


def retry_after(exc: BaseException) -> int | None:
    """Whole seconds until the request may succeed, where the exception or one it was raised
    from knows (a provider's Retry-After, its circuit breaker's time left): a 503's Retry-After
    header (RFC 9110 10.2.3), so that a client backs off as long as the provider asked."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain is short; a cycle must not loop
        if seen is None:
            return None
        wait = getattr(seen, "retry_after", None)
        if isinstance(wait, int | float) and not isinstance(wait, bool) and wait >= 0:
            return max(1, math.ceil(wait))
        seen = seen.__cause__ or seen.__context__
    return None

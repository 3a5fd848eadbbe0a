"""HTTP/1.1 on the wire for worker.http: `JSONRequestHandler` reads one request at a time
within bounds a hostile or broken client cannot stretch (the request line and headers, the
body's framing and arrival, the JSON's shape) and answers whatever arrives exactly once, with
a status and a JSON reason; worker.http adds the routes. A problem with the request is a
`BadRequest` carrying the status to answer and the reason.

Framing is strict on purpose: a request whose body length is ambiguous (two Content-Lengths, a
sign, a transfer coding) is refused and its connection closed, because another reader of the
same bytes (a proxy in front of us) could split the stream into requests differently.
"""

from __future__ import annotations

import contextlib
import email.message
import http.client
import io
import json
import logging
import math
import re
import socket
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np

from worker import db

logger = logging.getLogger(__name__)

MAX_REQUEST_LINE = 8192  # bytes; a longer request line is answered 414
MAX_HEAD = 65536  # bytes of request line and headers together; more is answered 431
MAX_JSON_DEPTH = 32  # nesting of arrays and objects; our routes need 3
MAX_INT_DIGITS = 1000  # digits of one JSON integer (int() of many digits costs quadratic time)
READ_SIZE = 65536
LINGER_SECONDS = 2.0  # how long input is drained after an error answer, before closing

_DIGITS = re.compile(r"[0-9]+")
# A JSON string, up to its closing quote or, unterminated, to the end: never backtracks, so the
# depth scan stays linear whatever the body holds.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))


class BadRequest(Exception):
    """The request cannot be served as sent: answer `status` with the message as the reason."""

    def __init__(self, status: HTTPStatus, message: str, *, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.allow = allow


class HeadReader(io.BufferedIOBase):
    """`rfile` while the headers are read: at most `budget` bytes in all. The standard library
    bounds each header line (64 KiB) and their number (100), not their total (6.4 MB)."""

    def __init__(self, rfile: io.BufferedIOBase, budget: int) -> None:
        super().__init__()
        self._rfile = rfile
        self._budget = budget

    def readline(self, size: int | None = -1) -> bytes:
        wanted = self._budget + 1 if size is None or size < 0 else min(size, self._budget + 1)
        line = self._rfile.readline(wanted)
        self._budget -= len(line)
        if self._budget < 0:
            # http.server answers this one with 431 itself.
            raise http.client.LineTooLong(f"the request headers (at most {MAX_HEAD} bytes)")
        return line


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


def read_body(rfile: io.BufferedIOBase, length: int, timeout: float) -> bytes:
    """Exactly `length` bytes, arriving within `timeout` seconds in all (a socket timeout alone
    bounds each read, so a client trickling bytes could hold the connection for ever);
    TimeoutError when they do not."""
    deadline = time.monotonic() + timeout
    parts: list[bytes] = []
    got = 0
    while got < length:
        if time.monotonic() > deadline:
            raise TimeoutError(f"body not received within {timeout:g} s")
        part = rfile.read1(min(length - got, READ_SIZE))
        if not part:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"body ended after {got} of {length} bytes")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


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


class JSONRequestHandler(BaseHTTPRequestHandler):
    """Serves one request at a time (keep-alive, pipelining) and answers each exactly once: a
    `BadRequest` raised anywhere becomes its status with {"error": reason}; so do http.server's
    own refusals; an exception `failure()` does not map is logged and answered 500. Subclasses
    set `timeout_seconds` and `max_body` and implement `route()`."""

    protocol_version = "HTTP/1.1"
    timeout_seconds: float = 30.0
    max_body: int = 1_048_576

    def route(self, path: str, length: int | None) -> None:
        """Serves the request for `path` (query string removed), whose body of `length` bytes
        (None: no Content-Length) is still unread (`read_body()`)."""
        raise NotImplementedError

    def failure(self, exc: Exception) -> tuple[HTTPStatus, str] | None:
        """The answer to an exception a route raised, or None for a bug (logged, then 500)."""
        return None

    def setup(self) -> None:
        super().setup()
        # A socket timeout on every read and write: a client that stalls mid-request is cut off.
        self.connection.settimeout(self.timeout_seconds)
        # The headers and the body go out in two writes: with Nagle's algorithm the second
        # waits for the client's delayed ACK of the first (40 ms on Linux) on every answer of
        # a keep-alive connection (docs/performance.md, "Figures behind the code's choices").
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._linger = False

    def handle(self) -> None:
        try:
            super().handle()
        finally:
            if self._linger:
                self._discard_input()

    def handle_one_request(self) -> None:
        self._answered = self._started = self._expect_continue = False
        self._unread = 0  # bytes of this request's body not read (yet)
        try:
            self._serve_one()
        except BadRequest as exc:
            self._answer_error(exc.status, str(exc), allow=exc.allow)
        except TimeoutError:
            if self._started:  # silent mid-request; between requests we just hang up
                self._answer_error(
                    HTTPStatus.REQUEST_TIMEOUT,
                    f"request not received within {self.timeout_seconds:g} s",
                )
            self.close_connection = True
        except OSError:
            self.close_connection = True  # the client went away: nobody to answer
        except Exception as exc:
            answer = self.failure(exc)
            if answer is None:
                logger.exception("HTTP %r failed", getattr(self, "requestline", "")[:200])
                answer = (HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (logged)")
            status, message = answer
            wait = retry_after(exc) if status == HTTPStatus.SERVICE_UNAVAILABLE else None
            self._answer_error(status, message, retry_after=wait)

    def _serve_one(self) -> None:
        line = self.rfile.readline(MAX_REQUEST_LINE + 1)
        for _ in range(8):  # RFC 9112 2.2: empty lines before a request line are ignored
            if line not in (b"\r\n", b"\n"):
                break
            line = self.rfile.readline(MAX_REQUEST_LINE + 1)
        if not line:
            self.close_connection = True
            return
        self._started = True
        self.raw_requestline = line
        if len(line) > MAX_REQUEST_LINE:
            self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
            self.close_connection = True
            raise BadRequest(
                HTTPStatus.REQUEST_URI_TOO_LONG, f"request line over {MAX_REQUEST_LINE} bytes"
            )
        rfile = self.rfile
        self.rfile = HeadReader(rfile, MAX_HEAD - len(line))
        try:
            parsed = self.parse_request()  # on failure it answered through send_error
        finally:
            self.rfile = rfile
        if not parsed:
            if not self._answered:  # a request line of whitespace only
                self.close_connection = True
                raise BadRequest(HTTPStatus.BAD_REQUEST, "empty request line")
            return
        if self.request_version == "HTTP/0.9":
            raise BadRequest(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not served")
        try:
            check_headers(self.headers)
            length = declared_length(self.headers, self.max_body)
        except BadRequest:
            self.close_connection = True  # where this request ends is unknown
            raise
        self._unread = length or 0
        path = self.path.split("?", 1)[0]
        if path.startswith(("http://", "https://")):  # the absolute form (RFC 9112 3.2.2)
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        self.route(path, length)
        self.wfile.flush()

    def handle_expect_100(self) -> bool:
        # Deferred to read_body(): the client sends its body only once the route wants it, so
        # a request refused on its headers (a wrong token) never sends it.
        self._expect_continue = True
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (request line, version, headers), in JSON like ours."""
        reason = message or HTTPStatus(code).phrase
        self.close_connection = True  # what follows a request it could not parse is unknown
        self._answer_error(HTTPStatus(code), f"{reason}: {explain}" if explain else reason)

    def read_body(self) -> bytes:
        if self._expect_continue:
            self._expect_continue = False
            self.send_response_only(HTTPStatus.CONTINUE)
            self.end_headers()
        length, self._unread = self._unread, 0
        try:
            return read_body(self.rfile, length, self.timeout_seconds)
        except BadRequest:
            self.close_connection = True  # the client closed mid-body
            raise

    def _discard_input(self) -> None:
        """Reads and drops what the client still sends after an error answer, for a moment,
        before the connection closes: closing with unread input makes the kernel reset the
        connection, and a reset can destroy the answer before the client has read it."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            budget = self.max_body + MAX_HEAD
            while budget > 0 and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                data = self.rfile.read1(READ_SIZE)
                if not data:
                    break
                budget -= len(data)
        except (OSError, ValueError):
            pass

    def _answer_error(
        self,
        status: HTTPStatus,
        message: str,
        *,
        allow: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """An error answer, unless this request has one already: then the connection closes
        (the client could not tell where a second answer would begin)."""
        if self._answered:
            self.close_connection = True
            return
        headers = {"Allow": allow} if allow else {}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        try:
            self._json(status, {"error": db.redact(message)}, headers or None)
        except OSError:
            self.close_connection = True

    def _json(self, status: HTTPStatus, value: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), "application/json", headers)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._answered = True
        if self._unread:  # the body is not read: the stream cannot carry another request
            self.close_connection = True
        if self.close_connection and status >= HTTPStatus.BAD_REQUEST:
            self._linger = True
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # answer with a status line, as to any client
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        # No body for HEAD, even to a HEAD request too broken to parse: the client expects none.
        if self.command != "HEAD" and not getattr(self, "raw_requestline", b"").startswith(
            b"HEAD "
        ):
            self.wfile.write(body)

"""HTTP POST of a JSON body, with keep-alive connections per thread and a whole-request deadline.

The standard library's http.client, not a client library: the worker needs only POST, a
connection per in-flight slot reused across requests (a TLS handshake per request would cost
more than a small embedding request), and a deadline over the whole exchange: a socket timeout
alone resets with every byte, so a server trickling its answer could hold a request forever.
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

# The ceiling of any answer; each request has its own, lower, bound (protocol.answer_limit:
# what its inputs and dimensions can take), passed to post().
MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # 2048 inputs x 3072 floats as JSON text is ~130 MB


class TransportError(Exception):
    """No usable HTTP answer: `kind` is "timeout", "connection" or "too_large". `host`: the
    failure is the host's (no connection, or one dropped), not the answer's to this request
    (none within the timeout once sent, one too large): what a provider's circuits tell apart
    (breaker.py)."""

    def __init__(self, kind: str, message: str, *, host: bool = True) -> None:
        super().__init__(message)
        self.kind = kind
        self.host = host


class AnswerTooLarge(TransportError):
    """The answer is longer than the request's bound: reading stopped there."""

    def __init__(self, limit: int) -> None:
        super().__init__("too_large", f"the answer is larger than {limit:,} bytes", host=False)


class Unsendable(Exception):
    """A header cannot be sent (a line break, a character outside Latin-1): nothing was sent.
    Its text never quotes the header, as http.client's own error would."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


_tls = ssl.create_default_context()
Key = tuple[str, str | None, int | None]


class Connections:
    """Keep-alive connections, one per (thread, scheme, host, port): a request thread reuses
    its own. `close()` closes them all (a RemoteModel replaced or closed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[tuple[int, Key], http.client.HTTPConnection] = {}

    def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        timeout: float,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> Response:
        """POSTs `body`; the whole exchange (connect, send, read) within `timeout` seconds, the
        answer's body read up to `max_bytes` (AnswerTooLarge past it)."""
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (parts.scheme, parts.hostname, parts.port)
        deadline = time.monotonic() + timeout
        limit = min(max_bytes, MAX_RESPONSE_BYTES)
        if not _sendable(headers):
            raise Unsendable("cannot be sent in a header (a line break or another character)")
        for attempt in (0, 1):
            conn, fresh = self._connection(key, timeout)
            if conn.sock is None:
                self._connect(conn, key, timeout)
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                data = _read(conn, response, deadline, limit)
                if response.getheader("connection", "").lower() == "close":
                    self._drop(key)
                found = {k.lower(): v for k, v in response.getheaders()}
                return Response(response.status, found, data)
            except AnswerTooLarge:
                self._drop(key)  # the rest of the answer is never read
                raise
            except TimeoutError as exc:
                self._drop(key)
                # Connected, and sent: the host took the request, and this answer is late.
                raise TransportError(
                    "timeout", f"no answer within {timeout:g} s", host=False
                ) from exc
            except (http.client.HTTPException, OSError) as exc:
                self._drop(key)
                # A kept-alive connection the server closed meanwhile fails on first use: once
                # more on a new one. A fresh connection's failure is the server's.
                if attempt == 0 and not fresh and time.monotonic() < deadline:
                    continue
                raise TransportError("connection", f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    def _connect(self, conn: http.client.HTTPConnection, key: Key, timeout: float) -> None:
        """Opens `conn` (TLS included): a failure here is the host's, whatever the request."""
        try:
            conn.connect()
        except TimeoutError as exc:
            self._drop(key)
            raise TransportError("timeout", f"no connection within {timeout:g} s") from exc
        except OSError as exc:
            self._drop(key)
            raise TransportError("connection", f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            found, self._open = list(self._open.values()), {}
        for conn in found:
            conn.close()

    def _connection(self, key: Key, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        slot = (threading.get_ident(), key)
        with self._lock:
            conn = self._open.get(slot)
        if conn is not None:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            return conn, False
        scheme, host, port = key
        if scheme == "https":
            conn = http.client.HTTPSConnection(host or "", port, timeout=timeout, context=_tls)
        else:
            conn = http.client.HTTPConnection(host or "", port, timeout=timeout)
        with self._lock:
            self._open[slot] = conn
        return conn, True

    def _drop(self, key: Key) -> None:
        with self._lock:
            conn = self._open.pop((threading.get_ident(), key), None)
        if conn is not None:
            conn.close()


def _sendable(headers: dict[str, str]) -> bool:
    """Whether http.client can send these headers: Latin-1, no line break or other control
    character. Checked before sending, since http.client's own error quotes the value whole
    (a key, in an Authorization header)."""
    for value in headers.values():
        if not all(" " <= c <= "~" or "\xa0" <= c <= "\xff" for c in value):
            return False
    return True


def _read(
    conn: http.client.HTTPConnection,
    response: http.client.HTTPResponse,
    deadline: float,
    limit: int = MAX_RESPONSE_BYTES,
) -> bytes:
    """The body, read up to `limit` bytes and no further: one byte past it ends the read with
    AnswerTooLarge (a Content-Length past it, before anything is read)."""
    length = response.getheader("content-length") if hasattr(response, "getheader") else None
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise AnswerTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        if conn.sock is not None:
            conn.sock.settimeout(remaining)
        wanted = min(1 << 16, limit - size + 1)
        chunk = response.read1(wanted) if hasattr(response, "read1") else response.read(wanted)
        if not chunk:
            # Closed explicitly: read1() at the end of a Content-Length body leaves the
            # response open, and http.client then refuses the connection's next request
            # (ResponseNotReady) after sending it, so each reuse would send it twice.
            response.close()
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise AnswerTooLarge(limit)
        chunks.append(chunk)


def retry_after(headers: dict[str, str]) -> float | None:
    """Seconds to wait, from Retry-After (seconds or an HTTP date), retry-after-ms, or
    OpenAI's x-ratelimit-reset-requests/-tokens ("1s", "6m0s", "120ms"); None when none."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is not None:
        try:
            return max(float(value), 0.0)
        except ValueError:
            try:
                return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
            except (TypeError, ValueError):
                pass
    resets = [
        _duration(headers[name])
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if name in headers
    ]
    found = [r for r in resets if r is not None]
    return max(found) if found else None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def _duration(text: str) -> float | None:
    parts = _DURATION.findall(text.strip())
    if not parts:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[unit] for n, unit in parts)

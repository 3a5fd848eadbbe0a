"""One client's connection, served by the front's loop (worker.http.front): its requests one
after another (keep-alive, pipelining), each answered exactly once, with a status and a JSON
reason when it is refused (docs/http.md#what-bad-input-gets).

Every wait is bounded: the next request's first byte (EMBED_HTTP_TIMEOUT_SECONDS of silence),
its head (EMBED_HTTP_HEAD_TIMEOUT_SECONDS from its first byte, as well as each silence), its
body (EMBED_HTTP_TIMEOUT_SECONDS in all, however slowly it trickles), its answer's departure
(the same). A request that cannot be served as sent closes the connection after its answer
when where the next request begins is unknown (guessing is how request smuggling through a
proxy starts); before closing, what the client still sends is read and dropped for a moment,
so that the close does not reset the connection and destroy the answer before it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Protocol

from worker import metrics
from worker.http.incoming import READ_SIZE, Incoming
from worker.http.lanes import Lane, Limits, Route, Service
from worker.http.protocol import (
    BUSY,
    CONTINUE,
    MAX_HEAD,
    STOPPING,
    Answer,
    BadFraming,
    BadRequest,
    HeadScan,
    Request,
    parse_head,
    render,
)

logger = logging.getLogger(__name__)

LINGER_SECONDS = 2.0  # how long input is drained after an error answer, before closing


class Host(Protocol):
    """What a connection asks of the front that accepted it (worker.http.front.Front): its
    loop, limits and service; the count of connections waiting for a request; the lanes'
    places; a route's answer, at once or computed by a lane's thread."""

    loop: asyncio.AbstractEventLoop
    limits: Limits
    service: Service
    closing: bool  # the worker is stopping: no more work is taken

    def waiting(self, connection: Connection) -> None: ...

    def busy(self, connection: Connection) -> None: ...

    def take(self, lane: Lane) -> bool: ...

    def give_back(self, lane: Lane) -> None: ...

    def answer(self, route: Route, request: Request) -> Answer: ...

    def in_thread(
        self, lane: Lane, route: Route, request: Request, send: Callable[[Answer], None]
    ) -> asyncio.Future[Answer]: ...


class Connection:
    def __init__(self, front: Host, sock: socket.socket, peer: str) -> None:
        self.front = front
        self.limits = front.limits
        self.loop = front.loop
        self.sock = sock
        self.peer = peer
        self.incoming = Incoming(sock, front.loop, front.limits)
        self.task: asyncio.Task[None] | None = None

    def evict(self) -> None:
        """Closes the connection from the front: it waited longest, and another needs room."""
        if self.task is not None:
            self.task.cancel()

    async def serve(self) -> None:
        try:
            while await self._next():
                pass
        except (OSError, TimeoutError):
            pass  # the client went away, or stopped reading its answer: nobody to answer
        except Exception:
            logger.exception("HTTP connection from %s failed", self.peer)
        finally:
            self.front.busy(self)
            self.sock.close()
            # Released now rather than by the garbage collector: a connection closed while it
            # waited (cancelled) is in a reference cycle with its task until a collection,
            # and a flood of them would otherwise hold their buffers (up to a head each).
            self.incoming.release()
            self.task = None

    async def _next(self) -> bool:
        """Serves the next request; False when the connection is to close."""
        self.front.waiting(self)
        scan = HeadScan()
        head = b""
        framing: BadFraming | None = None
        try:
            head = await self.incoming.head(scan)
            if not head:
                return False
            request = parse_head(head, self.limits.max_body)
        except BadFraming as exc:
            # The head was read in full: a request, answered as one with its status (and
            # counted in /metrics); where its body ends is unknown, so it closes (request.close).
            request, framing = exc.request, exc
        except (BadRequest, TimeoutError) as exc:
            if isinstance(exc, TimeoutError) and not scan.started(self.incoming.buffer):
                return False  # silent between requests: just hang up
            # A refusal of the head itself: where this request ends is unknown, so it closes.
            status = HTTPStatus.REQUEST_TIMEOUT
            if isinstance(exc, BadRequest):
                status = exc.status
            else:
                metrics.HTTP_CLOSED.labels("head_timeout").inc()
            seen = head or bytes(self.incoming.buffer[scan.start : scan.start + 5])
            return await self._refuse(Answer.error(status, str(exc)), seen.startswith(b"HEAD "))
        request.received = time.perf_counter()
        try:
            if framing is not None:
                raise framing
            route = self.front.service.route(request)
        except BadRequest as exc:
            answer = Answer.error(exc.status, str(exc), allow=exc.allow)
            return await self._finish(request, answer, unread=bool(request.length))
        if route.lane is Lane.WORK:
            return await self._work(request, route)
        return await self._look(request, route)

    async def _look(self, request: Request, route: Route) -> bool:
        """A request of a route anyone may ask for (/healthz, /readyz, /metrics): answered by
        the loop at once, or by a probe's thread."""
        try:
            if request.length:  # a body nobody asked for: read past it to the next request
                await self._body(request, keep=False)
        except (BadRequest, TimeoutError) as exc:
            answer = _body_error(exc, self.limits.timeout_seconds)
            return await self._finish(request, answer, close=True)
        if route.lane is Lane.INLINE:
            return await self._finish(request, self.front.answer(route, request))
        if not self.front.take(Lane.PROBE):
            return await self._finish(request, BUSY, close=True)
        self.front.busy(self)
        try:
            answer = await self.front.in_thread(
                Lane.PROBE, route, request, self._sender(request, request.close)
            )
        finally:
            self.front.give_back(Lane.PROBE)
        return self._after(request, answer, request.close)

    async def _work(self, request: Request, route: Route) -> bool:
        """An authenticated request: a slot, its body, a thread that computes its answer and
        sends it; the slot is given back before any lingering."""
        if not self.front.take(Lane.WORK):
            refusal = STOPPING if self.front.closing else BUSY
            return await self._finish(request, refusal, unread=bool(request.length))
        self.front.busy(self)
        close = request.close
        try:
            try:
                request.body = await self._body(request)
            except (BadRequest, TimeoutError) as exc:
                answer, close = _body_error(exc, self.limits.timeout_seconds), True
                await self._send(render(answer, head_only=request.head_only, close=close))
                _answered(request, answer)
            else:
                answer = await self.front.in_thread(
                    Lane.WORK, route, request, self._sender(request, close)
                )
        finally:
            self.front.give_back(Lane.WORK)
        if close and answer.status >= HTTPStatus.BAD_REQUEST:
            self._log(request, answer)
            self.front.waiting(self)
            await self._linger()
            return False
        return self._after(request, answer, close)

    def _sender(self, request: Request, close: bool) -> Callable[[Answer], None]:
        """How a lane's thread sends the answer it computed: the socket, idle in the loop
        meanwhile, written with a deadline (EMBED_HTTP_TIMEOUT_SECONDS in all), then handed
        back to the loop."""

        def send(answer: Answer) -> None:
            data = render(answer, head_only=request.head_only, close=close)
            self.sock.settimeout(self.limits.timeout_seconds)
            try:
                self.sock.sendall(data)
            finally:
                self.sock.setblocking(False)
            _answered(request, answer)

        return send

    def _after(self, request: Request, answer: Answer, close: bool) -> bool:
        """Whether the connection serves on after an answer a thread sent."""
        self._log(request, answer)
        return not close

    # --- answering --------------------------------------------------------------------------
    async def _finish(
        self, request: Request, answer: Answer, *, unread: bool = False, close: bool = False
    ) -> bool:
        """Sends the answer; True when the connection stays open for the next request (not
        when the request's body was left unread: the stream cannot carry another)."""
        close = close or unread or request.close
        await self._send(render(answer, head_only=request.head_only, close=close))
        _answered(request, answer)
        self._log(request, answer)
        if close and answer.status >= HTTPStatus.BAD_REQUEST:
            await self._linger()
        return not close

    async def _refuse(self, answer: Answer, head_only: bool) -> bool:
        """Answers a request whose head could not be read or parsed, and closes."""
        await self._send(render(answer, head_only=head_only, close=True))
        logger.debug("%s refused: %d %s", self.peer, answer.status, answer.body[:200])
        await self._linger()
        return False

    async def _send(self, data: bytes) -> None:
        async with asyncio.timeout(self.limits.timeout_seconds):
            await self.loop.sock_sendall(self.sock, data)

    async def _linger(self) -> None:
        """Reads and drops what the client still sends, for a moment, before the connection
        closes: closing with unread input makes the kernel reset the connection, and a reset
        can destroy the answer before the client has read it."""
        budget = self.limits.max_body + MAX_HEAD
        with contextlib.suppress(OSError, TimeoutError):
            self.sock.shutdown(socket.SHUT_WR)
            async with asyncio.timeout(LINGER_SECONDS):
                while budget > 0 and (data := await self.loop.sock_recv(self.sock, READ_SIZE)):
                    budget -= len(data)

    async def _body(self, request: Request, *, keep: bool = True) -> bytes:
        """The request's body (asked for with 100 Continue first, where the client waits for
        it), within EMBED_HTTP_TIMEOUT_SECONDS; read and dropped unless `keep`."""
        if request.expect_continue:
            await self._send(CONTINUE)
        return await self.incoming.body(request.length or 0, keep=keep)

    def _log(self, request: Request, answer: Answer) -> None:
        logger.debug("%s %s %s %d", self.peer, request.method, request.path[:100], answer.status)


def _answered(request: Request, answer: Answer) -> None:
    """The request's time, from its head read to its answer sent, in /metrics."""
    metrics.http_answered(request.path, answer.status, time.perf_counter() - request.received)


def _body_error(exc: BadRequest | TimeoutError, timeout: float) -> Answer:
    if isinstance(exc, BadRequest):
        return Answer.error(exc.status, str(exc))
    return Answer.error(HTTPStatus.REQUEST_TIMEOUT, f"request not received within {timeout:g} s")

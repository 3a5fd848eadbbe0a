"""What a client sent on its connection, read for worker.http.connection within deadlines and
sizes: the next request's head (`HeadScan` finds where it ends; EMBED_HTTP_HEAD_TIMEOUT_SECONDS
from its first byte, EMBED_HTTP_TIMEOUT_SECONDS of silence), and a body (EMBED_HTTP_TIMEOUT_SECONDS
in all, however slowly it trickles). What arrived beyond the request being read stays in the
buffer for the next (pipelining); the buffer holds at most a head's worth."""

from __future__ import annotations

import asyncio
import socket
from http import HTTPStatus
from typing import TYPE_CHECKING

from worker.http.protocol import MAX_HEAD, BadRequest, HeadScan, parse_head

if TYPE_CHECKING:
    from worker.http.lanes import Limits

READ_SIZE = 65536


class Incoming:
    def __init__(
        self, sock: socket.socket, loop: asyncio.AbstractEventLoop, limits: Limits
    ) -> None:
        self.sock = sock
        self.loop = loop
        self.limits = limits
        self.buffer = bytearray()  # received, not yet consumed: the next head, a body's start
        self.ended = False  # the client sent its last byte (it may still read our answers)

    def release(self) -> None:
        """Drops what was received and not consumed: the connection closed."""
        self.buffer = bytearray()

    async def head(self, scan: HeadScan) -> bytes:
        """The next request's head, taken from the buffer once it arrived whole (or as much of
        it as came before the client's last byte); b"" when the client ended before sending
        any. TimeoutError past a deadline, BadRequest past a limit."""
        limits = self.limits
        head_deadline: float | None = None
        line_checked = False
        while True:
            end = scan.end(self.buffer)
            if end is None and self.ended:
                end = len(self.buffer)
            if end is not None:
                head = bytes(self.buffer[scan.start : end])
                del self.buffer[:end]
                return head
            if scan.request_line_end is not None and not line_checked:
                # Before waiting for the headers: a request line no header can mend is refused
                # at once, not at the deadline.
                line_checked = True
                line = bytes(self.buffer[scan.start : scan.request_line_end])
                parse_head(line + b"\r\n", limits.max_body)
            started = scan.started(self.buffer)
            now = self.loop.time()
            deadline = now + limits.timeout_seconds
            reason = f"request not received within {limits.timeout_seconds:g} s"
            if started:
                head_deadline = head_deadline or now + limits.head_timeout_seconds
                if head_deadline < deadline:
                    deadline = head_deadline
                    reason = f"request head not received within {limits.head_timeout_seconds:g} s"
            room = MAX_HEAD + 1 - (len(self.buffer) - scan.start)
            try:
                data = await self._recv(min(READ_SIZE, max(room, 1)), deadline)
            except TimeoutError:
                raise TimeoutError(reason) from None
            if data:
                self.buffer += data
            else:
                self.ended = True

    async def body(self, length: int, *, keep: bool = True) -> bytes:
        """`length` bytes of body, arriving whole within EMBED_HTTP_TIMEOUT_SECONDS; read and
        dropped unless `keep`, so that a body nobody asked for costs no memory. BadRequest when
        the client ends first, TimeoutError past the deadline."""
        deadline = self.loop.time() + self.limits.timeout_seconds
        parts = [bytes(self.buffer[:length])]
        del self.buffer[:length]
        got = len(parts[0])
        while got < length:
            data = await self._recv(min(length - got, READ_SIZE), deadline)
            if not data:
                self.ended = True
                raise BadRequest(
                    HTTPStatus.BAD_REQUEST, f"body ended after {got} of {length} bytes"
                )
            got += len(data)
            if keep:
                parts.append(data)
        return b"".join(parts) if keep else b""

    async def _recv(self, size: int, deadline: float) -> bytes:
        async with asyncio.timeout_at(deadline):
            return await self.loop.sock_recv(self.sock, size)

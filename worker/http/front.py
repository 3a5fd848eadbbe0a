"""The HTTP front (docs/http.md#hardening): one thread runs an asyncio loop that owns every
connection, so that a connection costs a socket and a buffer, never a thread, until what it
asks for is worth one (worker.http.connection reads and answers each request).

What a request asks for runs in one of three lanes (`Lane`), chosen by the service from its
head alone (`Service.route()`, which checks the token too):

- INLINE: answered by the loop itself, at once (/healthz): there is nothing to wait for, so a
  probe is answered whatever the other connections do;
- PROBE: computed by a thread, at most PROBES at once (/readyz, /metrics);
- WORK: only for a whole, authenticated head: it takes one of EMBED_HTTP_MAX_CONNECTIONS slots,
  the loop reads its body, and a thread computes the answer and sends it.

So no slot is held by a connection that has not delivered a whole, authenticated head, and no
thread waits on a client but to send the answer it computed (EMBED_HTTP_TIMEOUT_SECONDS at
most). The connections waiting for a request (idle keep-alive ones, heads still arriving,
refusals being answered) are at most EMBED_HTTP_MAX_WAITING_CONNECTIONS: at the limit the one
that has waited longest is closed, so that connections that never send a request cannot keep a
new one out.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable

from worker import exceptions, metrics
from worker.http.connection import Connection
from worker.http.lanes import Lane, Limits, Outcome, Route, Service
from worker.http.protocol import Answer, BadRequest, Request

logger = logging.getLogger(__name__)

PROBES = 4  # /readyz and /metrics computed at once; more get 503
# The listen backlog: connections the kernel holds until the loop accepts them (32 clients
# connecting at once had connections reset with socketserver's 5: bench/search_http.py).
BACKLOG = 128
ACCEPT_BACKOFF_SECONDS = 0.1  # after accept() failed (out of file descriptors, say)


# What getaddrinfo says of a name that is no IPv4 address this machine could have: the
# configuration's, not a moment's (EAI_AGAIN, a name service down, is a moment's).
_NO_SUCH_HOST = {
    getattr(socket, name)
    for name in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY")
    if hasattr(socket, name)
}


def family(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 address (`::`, `::1`; socket.create_server's default, IPv4, could not
    even parse one), else IPv4: a name resolves to its IPv4 address, as it always did."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return socket.AF_INET
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def listen(host: str, port: int) -> socket.socket:
    """The listening socket on `host`:`port`, or a one-line error naming the variable to look
    at (docs/cli.md#exit-codes): a host that resolves to no address of this machine is the
    configuration's (ConfigError, exit 2: restarting cannot help); a port another process
    holds, or any other refusal, is the machine's at this moment (exit 1: a restart may find
    the port free). `::` is every interface, IPv4 ones too where the system can (dual stack),
    as 0.0.0.0 is every IPv4 one."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    kind = family(host)
    dual = kind == socket.AF_INET6 and ipaddress.ip_address(host).is_unspecified
    try:
        return socket.create_server(
            (host, port),
            family=kind,
            backlog=BACKLOG,
            dualstack_ipv6=dual and socket.has_dualstack_ipv6(),
        )
    except OSError as exc:
        # (create_server re-raises a resolver's error as a plain OSError, its errno kept)
        reason = (exc.strerror or str(exc)).split(" (while attempting", 1)[0]
        if exc.errno in _NO_SUCH_HOST:
            raise exceptions.ConfigError(
                f"EMBED_HTTP_HOST: cannot listen on {shown}: {host!r} is not an IP address and"
                f" does not resolve to an IPv4 address ({reason})"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise exceptions.ConfigError(
                f"EMBED_HTTP_HOST: cannot listen on {shown}: {host} is not an address of this "
                "machine (127.0.0.1 or ::1: this machine only; 0.0.0.0 or ::: every interface)"
            ) from None
        if exc.errno == errno.EADDRINUSE:
            raise exceptions.EmbedWorkerError(
                f"EMBED_HTTP_PORT: cannot listen on {shown}: the port is in use by another "
                "process (another worker?)"
            ) from None
        raise exceptions.EmbedWorkerError(
            f"EMBED_HTTP_HOST, EMBED_HTTP_PORT: cannot listen on {shown}: {reason}"
        ) from None


class Front:
    """The listening socket and the loop's thread; the lanes' counts and the waiting
    connections, touched by the loop's thread only."""

    def __init__(self, service: Service, limits: Limits, host: str, port: int) -> None:
        self.service = service
        self.limits = limits
        self.listener = listen(host, port)
        self.listener.setblocking(False)
        self.loop = asyncio.new_event_loop()
        self._capacity = {Lane.PROBE: PROBES, Lane.WORK: limits.max_connections}
        self._in_use = {Lane.PROBE: 0, Lane.WORK: 0}
        self._threads = {lane: Threads(f"http-{lane.value}") for lane in self._in_use}
        self._waiting: dict[Connection, None] = {}  # in the order they began waiting
        self._connections: set[asyncio.Task[None]] = set()
        self.closing = False  # draining: POST requests get 503 (the loop's thread sets it)
        self._idle = asyncio.Event()  # no lane's place in use (while closing)
        self._main = self.loop.create_task(self._accept())
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def drain(self, deadline: float) -> bool:
        """Takes no more work (503: the worker is stopping) and waits until every request in
        progress was answered, or `deadline` (time.monotonic()) passes; True when none is
        left. A worker's shutdown calls it first, so that no request is cut off unanswered."""
        if not self._thread.is_alive():
            return True
        drained = asyncio.run_coroutine_threadsafe(self._drained(), self.loop)
        try:
            return drained.result(timeout=max(deadline - time.monotonic(), 0))
        except TimeoutError:
            drained.cancel()
            return False

    async def _drained(self) -> bool:
        self.closing = True
        while any(self._in_use.values()):
            self._idle.clear()
            await self._idle.wait()
        return True

    def close(self) -> None:
        """Stops accepting and closes every connection. Threads still computing an answer
        (past drain()'s deadline) are daemon threads: they do not hold up the process's exit;
        the worker hands back their jobs and ends the process without waiting for them
        (worker/process/runner.py)."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._main.cancel)
            self._thread.join(10)
        elif not self.loop.is_closed():  # never started
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                self.loop.run_until_complete(self._main)
            self.loop.close()
        self.listener.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.close()

    async def _accept(self) -> None:
        try:
            while True:
                try:
                    sock, peer = await self.loop.sock_accept(self.listener)
                except OSError as exc:
                    logger.warning("HTTP could not accept a connection: %s", exc)
                    await asyncio.sleep(ACCEPT_BACKOFF_SECONDS)
                    continue
                sock.setblocking(False)
                # The headers and the body go out in one write, but 100 Continue and the
                # answer in two: with Nagle's algorithm the second would wait for the
                # client's delayed ACK of the first (40 ms on Linux).
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                connection = Connection(self, sock, str(peer[0]))
                task = self.loop.create_task(connection.serve())
                connection.task = task
                self._connections.add(task)
                task.add_done_callback(self._connections.discard)
        finally:
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)

    # --- the connections waiting for a request --------------------------------------------
    def waiting(self, connection: Connection) -> None:
        """`connection` waits for a request (or answers one refused): it is counted, and at
        the limit the connection that has waited longest is closed to make room."""
        self._waiting.pop(connection, None)
        while len(self._waiting) >= self.limits.max_waiting_connections:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.evict()
            metrics.HTTP_CLOSED.labels("evicted").inc()
        self._waiting[connection] = None
        metrics.HTTP_WAITING.set(len(self._waiting))

    def busy(self, connection: Connection) -> None:
        """`connection` holds a lane's place now, or has closed: it is not counted."""
        if connection in self._waiting:
            del self._waiting[connection]
            metrics.HTTP_WAITING.set(len(self._waiting))

    # --- the lanes --------------------------------------------------------------------------
    def take(self, lane: Lane) -> bool:
        """A place in `lane`, if one is free and the front is not closing (else the request
        is answered 503)."""
        if self.closing and lane is Lane.WORK:
            return False
        if self._in_use[lane] >= self._capacity[lane]:
            metrics.HTTP_CLOSED.labels("busy").inc()
            return False
        self._in_use[lane] += 1
        return True

    def give_back(self, lane: Lane) -> None:
        self._in_use[lane] -= 1
        if not any(self._in_use.values()):
            self._idle.set()

    def answer(self, route: Route, request: Request) -> Answer:
        """What `route` answers, whatever it raises (a route's bug is a 500, logged)."""
        try:
            return route.run(request)
        except BadRequest as exc:
            return Answer.error(exc.status, str(exc), allow=exc.allow)
        except Exception as exc:
            return self.service.failed(request, exc)

    def in_thread(
        self, lane: Lane, route: Route, request: Request, send: Callable[[Answer], None]
    ) -> asyncio.Future[Answer]:
        """What `route` answers, computed by one of the lane's threads (its places bound how
        many run at once) and sent by the same thread with `send`: handing the answer back to
        the loop to send would cost one more thread's wake-up per request, the dearest part of
        it on a busy machine. The future has the answer once it is sent, or the error that
        kept it from the client."""
        future: asyncio.Future[Answer] = self.loop.create_future()

        def run() -> Outcome:
            answer = self.answer(route, request)
            try:
                send(answer)
            except OSError as exc:  # (TimeoutError too: the client stopped reading)
                return answer, exc
            return answer, None

        def done(outcome: Outcome) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the server stopped
                self.loop.call_soon_threadsafe(_settle, future, *outcome)

        self._threads[lane].run(run, done)
        return future


def _settle(future: asyncio.Future[Answer], answer: Answer, failure: BaseException | None) -> None:
    if future.done():  # (cancelled: the connection closed while it was computed)
        return
    if failure is not None:
        future.set_exception(failure)
    else:
        future.set_result(answer)


class Threads:
    """Daemon threads for a lane, made as jobs need them and kept for the next (starting a
    thread costs about 0.25 ms here, per request otherwise): there are always at least as
    many as jobs running or waiting, so no job waits behind another, and never more than the
    lane has places, since a job's thread counts itself free before the loop learns the job
    is done. Daemon threads, so that a job still running never holds up the process's exit
    (concurrent.futures' threads are joined at exit)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Outcome], Callable[[Outcome], None]]]
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._count = 0
        self._busy = 0

    def run(self, work: Callable[[], Outcome], done: Callable[[Outcome], None]) -> None:
        """Runs `work` in a thread, then `done` with what it returned."""
        with self._lock:
            self._busy += 1
            if self._busy > self._count:
                self._count += 1
                threading.Thread(target=self._serve, name=self._name, daemon=True).start()
        self._jobs.put((work, done))

    def _serve(self) -> None:
        while True:
            work, done = self._jobs.get()
            try:
                outcome = work()
            finally:
                with self._lock:
                    self._busy -= 1
            done(outcome)

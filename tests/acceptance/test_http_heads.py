"""The HTTP head is bounded as a whole (issue 46): a request line and headers arrive within
EMBED_HTTP_HEAD_TIMEOUT_SECONDS or get 408; a connection holds one of the
EMBED_HTTP_MAX_CONNECTIONS slots only once its head is whole and its token checked; the
connections waiting for a request are bounded (EMBED_HTTP_MAX_WAITING_CONNECTIONS, the one that
waited longest closed first); and /healthz is answered within a second whatever the other
connections do, as a Kubernetes liveness probe (timeoutSeconds: 1) asks.

The hostile clients are real sockets fed from a thread: heads sent a byte at a time, idle
connections, wrong tokens with bodies that never end. The settings are small so that each
test takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.process import WorkerProcess, wait_for
from tests.support.rawhttp import read_answer, rss_kib

TOKEN = "heads-token"
READ_TIMEOUT = 8  # EMBED_HTTP_TIMEOUT_SECONDS: longer than any pause of the clients below
TRICKLE_SECONDS = 1.0  # between two bytes of a trickled head


class Tricklers:
    """Connections that each send the start of a request, then one more byte every
    TRICKLE_SECONDS from a thread, for as long as the test runs (or the server closes them)."""

    def __init__(self, port: int, starts: list[bytes]) -> None:
        self.sockets = [socket.create_connection(("127.0.0.1", port)) for _ in starts]
        for sock, start in zip(self.sockets, starts, strict=True):
            sock.sendall(start)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        while not self.stopped.wait(TRICKLE_SECONDS):
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(b"x")

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


@contextlib.contextmanager
def tricklers(port: int | None, starts: list[bytes]) -> Iterator[Tricklers]:
    assert port is not None
    hostile = Tricklers(port, starts)
    try:
        yield hostile
    finally:
        hostile.close()


def healthz_within_a_second(worker: WorkerProcess) -> int:
    """The status of GET /healthz, which must be answered within 1 s."""
    assert worker.port is not None
    with socket.create_connection(("127.0.0.1", worker.port), timeout=1) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        with sock.makefile("rb") as reader:
            answer = read_answer(reader)
    assert answer is not None
    return answer.status


def embed(worker: WorkerProcess, text: str = "hello") -> tuple[int, Any]:
    request = urllib.request.Request(
        worker.url + "/embed",
        data=json.dumps({"input": text}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@pytest.fixture
def served(start_worker: Callable[..., WorkerProcess]) -> Callable[..., WorkerProcess]:
    def start(**env: Any) -> WorkerProcess:
        settings = {"EMBED_HTTP_TOKEN": TOKEN, "EMBED_HTTP_TIMEOUT_SECONDS": READ_TIMEOUT}
        worker = start_worker("--no-pull", **{**settings, **env})
        worker.wait_ready()
        return worker

    return start


def test_slow_heads_on_every_slot_leave_healthz_and_work_served(
    served: Callable[..., WorkerProcess],
) -> None:
    """Sixteen connections (the default EMBED_HTTP_MAX_CONNECTIONS) each sending a header byte
    at a time: every /healthz is answered 200 within a second, and an authenticated POST /embed
    is served, while they go on."""
    worker = served(EMBED_HTTP_HEAD_TIMEOUT_SECONDS=60)
    starts = [b"POST /embed HTTP/1.1\r\nHost: slow\r\nX-Slow: "] * 16
    with tricklers(worker.port, starts) as hostile:
        for _ in range(3):
            assert healthz_within_a_second(worker) == 200
        status, body = embed(worker)
        assert status == 200 and len(body["embedding"]) == 384
        assert healthz_within_a_second(worker) == 200
        assert not hostile.stopped.is_set()


def test_a_head_that_trickles_forever_is_closed_at_its_deadline(
    served: Callable[..., WorkerProcess],
) -> None:
    """A byte every half second never lets the per-read timeout fire; the head's deadline does:
    408, then the connection closes."""
    deadline_seconds = 2
    worker = served(EMBED_HTTP_HEAD_TIMEOUT_SECONDS=deadline_seconds)
    assert worker.port is not None
    with socket.create_connection(("127.0.0.1", worker.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        while not select.select([sock], [], [], 0.5)[0]:
            assert time.monotonic() - started < deadline_seconds + 5, "no answer to the trickle"
            sock.sendall(b"x")
        with sock.makefile("rb") as reader:
            answer = read_answer(reader)
            assert answer is not None and answer.status == 408, answer
            assert f"within {deadline_seconds} s" in answer.error
            assert reader.read() == b""


def test_unauthenticated_connections_cannot_starve_an_authenticated_one(
    served: Callable[..., WorkerProcess],
) -> None:
    """Two slots, eight waiting connections at most, and 48 hostile connections: idle ones,
    heads sent a byte at a time, and wrong tokens whose bodies never end. An authenticated
    POST /embed is still served, and probes still answered."""
    worker = served(
        EMBED_HTTP_MAX_CONNECTIONS=2,
        EMBED_HTTP_MAX_WAITING_CONNECTIONS=8,
        EMBED_HTTP_HEAD_TIMEOUT_SECONDS=60,
    )
    wrong_token = (
        b"POST /embed HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer wrong\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
    )
    starts = [b""] * 16 + [b"POST /embed HTTP/1.1\r\nX-Slow: "] * 16 + [wrong_token] * 16
    with tricklers(worker.port, starts):
        for text in ("one", "two", "three"):
            status, body = embed(worker, text)
            assert status == 200 and len(body["embedding"]) == 384
            assert healthz_within_a_second(worker) == 200
        assert worker.get("/readyz")[0] == 200


def test_the_connections_waiting_for_a_request_are_bounded(
    served: Callable[..., WorkerProcess],
) -> None:
    """Beyond EMBED_HTTP_MAX_WAITING_CONNECTIONS, each new connection closes the one that has
    waited longest: the newest stay open, the oldest are closed, the server keeps serving."""
    # (Idle connections are not closed for their silence while the test runs.)
    worker = served(EMBED_HTTP_MAX_WAITING_CONNECTIONS=8, EMBED_HTTP_TIMEOUT_SECONDS=120)
    assert worker.port is not None
    with contextlib.ExitStack() as stack:
        idle = []
        for _ in range(40):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", worker.port)))
            idle.append(sock)
            # One at a time, so that "oldest" has a meaning: the previous one is accepted.
            wait_for(lambda: healthz_within_a_second(worker) == 200, 10, what="served")

        def closed(sock: socket.socket) -> bool:
            if not select.select([sock], [], [], 0)[0]:
                return False
            try:
                return sock.recv(1, socket.MSG_PEEK) == b""
            except ConnectionResetError:
                return True

        wait_for(lambda: all(closed(s) for s in idle[:30]), timeout=10, what="the oldest closed")
        assert not any(closed(s) for s in idle[-6:])
        assert healthz_within_a_second(worker) == 200


def test_floods_of_heads_leave_memory_bounded(served: Callable[..., WorkerProcess]) -> None:
    """Floods of connections each sending 60 KiB of a head that never ends: the waiting ones
    beyond EMBED_HTTP_MAX_WAITING_CONNECTIONS are closed, and what they held is freed as they
    close, so the worker's memory does not grow flood after flood (a bound, generous: a few
    floods' buffers left to the garbage collector cross it)."""
    worker = served(EMBED_HTTP_MAX_WAITING_CONNECTIONS=64, EMBED_HTTP_TIMEOUT_SECONDS=120)
    assert worker.port is not None
    flood = 500

    def evicted() -> float:
        for line in worker.get("/metrics")[1].decode().splitlines():
            if line.startswith('embed_worker_http_connections_closed_total{reason="evicted"}'):
                return float(line.split()[-1])
        raise AssertionError("no eviction counter")

    def one_flood() -> None:
        before = evicted()
        with contextlib.ExitStack() as stack:
            for _ in range(flood):
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", worker.port)))
                sock.setblocking(False)
                with contextlib.suppress(OSError):  # (the server closed it already)
                    sock.send(b"POST /embed HTTP/1.1\r\nX-Big: " + b"a" * 60_000)
            wait_for(lambda: evicted() >= before + flood - 64, 30, what="the flood evicted")
        assert healthz_within_a_second(worker) == 200

    one_flood()  # (what the first one allocates stays with the process, for the next)
    start = rss_kib(worker.proc.pid)
    for _ in range(4):
        one_flood()
    growth_mib = (rss_kib(worker.proc.pid) - start) / 1024
    assert growth_mib < 48, f"{growth_mib:.0f} MiB more after 4 floods of {flood}"

"""What the HTTP front costs and what it holds, before and after (issue 46): a real `embed-worker
run --no-pull` of each checkout, one after the other, on the same database.

  healthz  GET /healthz over keep-alive connections at 1 and 8 clients: requests/s, the
           front's own cost (nothing else runs for it)
  embed    POST /embed of one short text, keep-alive, at 1 and 8 clients: requests/s, p50, p95
           (both servers run throughout; each round measures one after the other, and the
           medians of `--rounds` rounds are reported: the machine's load changes meanwhile)
  slow     while `--slow` connections each hold half a request head: the share of /healthz
           probes answered 200 within 1 s and the slowest, and whether an authenticated
           POST /embed is served (200) or refused
  held     the worker's resident memory and threads with `--held` connections open, each having
           sent 60 KiB of a head that never ends (the most a head may be), against none

    python -m bench.http_front [DATABASE_URL] [--before DIR] [--seconds S] [--rounds N]
                               [--slow N] [--held N]

DATABASE_URL: a superuser's, on a server with the schema installed; without it, a cluster of
its own. `--before DIR` is the checkout to compare with (default: none, this checkout only).
Results: bench/results/http_front.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from bench.machine import describe as machine
from bench.search_http import drive, start_worker
from tests.support.cluster import session_cluster
from tests.support.rawhttp import read_answer, rss_kib
from worker import schema

RESULTS = Path(__file__).parent / "results" / "http_front.json"
TOKEN = "bench-front-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@contextmanager
def keep_alive(
    port: int, clients: int, method: str, path: str, body: bytes | None
) -> Iterator[Callable[[int, int], None]]:
    local = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(clients)]

    def call(client: int, n: int) -> None:
        conn = local[client]
        conn.request(method, path, body, AUTH if body is not None else {})
        answer = conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{method} {path}: {answer.status} {data[:200]!r}")

    try:
        yield call
    finally:
        for conn in local:
            conn.close()


ROUTES = {"healthz": ("GET", "/healthz", None), "embed": ("POST", "/embed", b'{"input": "hi"}')}


def throughput(ports: dict[str, int], seconds: float, rounds: int) -> dict[str, Any]:
    """Each route at 1 and 8 clients on each server, alternating server by server within
    each round; the medians of the rounds."""
    runs: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in ports}
    for _ in range(rounds):
        for route, (method, path, body) in ROUTES.items():
            for clients in (1, 8):
                for name, port in ports.items():
                    with keep_alive(port, clients, method, path, body) as call:
                        runs[name].setdefault(f"{route}_{clients}", []).append(
                            drive(clients, seconds, call)
                        )
    return {
        name: {
            key: {
                field: statistics.median(r[field] for r in results)
                for field in ("per_second", "p50_ms", "p95_ms")
            }
            for key, results in measured.items()
        }
        for name, measured in runs.items()
    }


def probe(port: int) -> tuple[int, float]:
    """GET /healthz on a new connection, with 1 s to answer: (status or 0, seconds taken)."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            with sock.makefile("rb") as reader:
                answer = read_answer(reader)
        return (answer.status if answer else 0), time.perf_counter() - started
    except OSError:
        return 0, time.perf_counter() - started


def embed_once(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/embed", json.dumps({"input": "hello"}), AUTH)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


@contextmanager
def half_heads(port: int, count: int, size: int) -> Iterator[None]:
    with ExitStack() as stack:
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
            sock.setblocking(False)
            with suppress(OSError):  # (a connection the server already closed)
                sock.send(b"POST /embed HTTP/1.1\r\nX-Slow: " + b"a" * size)
        yield


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def hostile(proc: subprocess.Popen[bytes], port: int, slow: int, held: int) -> dict[str, Any]:
    """What `slow` half-sent heads do to probes and work, and what `held` heads of 60 KiB
    make the process hold."""
    found: dict[str, Any] = {}
    with half_heads(port, slow, 16):
        time.sleep(1)  # (the server accepts them meanwhile)
        probes = [probe(port) for _ in range(20)]
        found["slow"] = {
            "connections": slow,
            "healthz_200_within_1s": sum(s == 200 and t <= 1 for s, t in probes) / len(probes),
            "healthz_slowest_ms": round(max(t for _, t in probes) * 1000, 1),
            "embed_status": embed_once(port),
        }
    time.sleep(1)
    idle = {"rss_mib": round(rss_kib(proc.pid) / 1024, 1), "threads": threads_of(proc.pid)}
    with half_heads(port, held, 60_000):
        time.sleep(2)  # (the server reads what it will of them)
        found["held"] = {
            "connections": held,
            "idle": idle,
            "rss_mib": round(rss_kib(proc.pid) / 1024, 1),
            "threads": threads_of(proc.pid),
            "healthz_status": probe(port)[0],
            "embed_status": embed_once(port),
        }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn", nargs="?")
    parser.add_argument("--before", type=Path)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow", type=int, default=64)
    parser.add_argument("--held", type=int, default=1000)
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    checkouts = {"after": here} | ({"before": args.before.resolve()} if args.before else {})
    with ExitStack() as stack:
        dsn = args.dsn
        if dsn is None:
            cluster = stack.enter_context(session_cluster(fast=True))
            dsn = cluster.dsn(cluster.create_database(prefix="bench"))
            schema.migrate(dsn)
        # EMBED_HTTP_MAX_CONNECTIONS 16 (the default) each, both running throughout.
        workers = {name: start_worker(dsn, path, 8) for name, path in checkouts.items()}
        for proc, _ in workers.values():
            stack.callback(proc.wait)
            stack.callback(proc.kill)
        ports = {name: port for name, (_, port) in workers.items()}
        for port in ports.values():  # (the model loaded, its first run done)
            with keep_alive(port, 1, *ROUTES["embed"]) as call:
                call(0, 0)
        results = throughput(ports, args.seconds, args.rounds)
        for name, (proc, port) in workers.items():
            results[name] |= hostile(proc, port, args.slow, args.held)
    report = {"machine": machine(), "settings": vars(args) | {"before": str(args.before)}}
    report |= results
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()

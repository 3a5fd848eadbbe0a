"""The search bench's paths to an answer (bench/search.py): POST /search to a worker, the
in-caller baseline (the model in this process, embeddings.search() over a pool), and the
search service in this process (the Python entry point), each driven by clients of their own
(keep-alive ones for HTTP); and their side-by-side run, with what each search cost in CPU."""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from bench import cputime
from bench.calls import drive
from worker.models.embedder import Embedder
from worker.models.query_batch import QueryBatchers
from worker.retrieval.pool import SearchConnections
from worker.retrieval.request import SearchRequest
from worker.retrieval.search import SearchService

TABLE = "bench_search"
RERANKER = "bench-rerank"
# The reranked path at these client counts only: a search reranks 20 passages with a
# cross-encoder, seconds each on a loaded 2-core machine, so at 32 clients (which issue 50 also
# names) a round would take minutes, and 2 and 4 (the server's weakest counts, measured for
# the vector and hybrid paths) would add a minute each.
RERANK_CLIENTS = (1, 8)


class Server(Protocol):
    """A worker serving POST /search (bench/search.py: WorkerProcess)."""

    port: int
    proc: subprocess.Popen[bytes]


def vector_literal(v: np.ndarray[Any, Any]) -> str:
    """`v` as pgvector's text form, five decimals a component."""
    return "[" + ",".join(f"{x:.5f}" for x in v.tolist()) + "]"


def http_call(
    port: int, clients: int, asked: list[str], **fields: Any
) -> Callable[[int, int], None]:
    local = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(clients)]

    def call(client: int, n: int) -> None:
        question = asked[(n * clients + client) % len(asked)]
        body = json.dumps({"table": TABLE, "query": question, "k": 5, **fields})
        try:
            answer = _post(local[client], body)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed it while it was idle (a slow round's other clients): anew,
            # as an HTTP client's pool does.
            local[client].close()
            local[client] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            answer = _post(local[client], body)
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"POST /search: {answer.status} {data[:300]!r}")

    return call


def _post(conn: http.client.HTTPConnection, body: str) -> http.client.HTTPResponse:
    conn.request("POST", "/search", body, {"Content-Type": "application/json"})
    return conn.getresponse()


def caller_call(
    pool: ConnectionPool[Any], model: Embedder, clients: int, asked: list[str], *, hybrid: bool
) -> Callable[[int, int], None]:
    statement = (
        f"SELECT key FROM embeddings.hybrid_search('{TABLE}', %s, %s::halfvec, 5)"
        if hybrid
        else f"SELECT key FROM embeddings.search('{TABLE}', %s::halfvec, 5)"
    )

    def call(client: int, n: int) -> None:
        question = asked[(n * clients + client) % len(asked)]
        vector = vector_literal(model.embed([question])[0])
        with pool.connection() as conn:
            params = (question, vector) if hybrid else (vector,)
            conn.execute(statement, params).fetchall()

    return call


def service_call(
    service: SearchService, clients: int, asked: list[str]
) -> Callable[[int, int], None]:
    """The Python entry point, vector: `service` in this process (its questions batched as
    POST /search's are, its SQL on its own pool), the way an application would embed it; between
    the caller and POST /search it tells the service's own cost from the transport's."""

    def call(client: int, n: int) -> None:
        question = asked[(n * clients + client) % len(asked)]
        service.search(
            SearchRequest.parse({"table": TABLE, "query": question, "k": 5, "mode": "vector"})
        )

    return call


def _rate_ratio(runs: dict[str, list[dict[str, Any]]], path: str, against: str) -> float:
    """`path`'s searches a second over `against`'s, in the round just run (as _p50_gap())."""
    ratio: float = runs[path][-1]["per_second"] / runs[against][-1]["per_second"]
    return ratio


def _p50_gap(runs: dict[str, list[dict[str, Any]]], path: str) -> float:
    """`path`'s p50 over the caller's (vector), in ms, in the round just run: the two ran one
    after the other, so a host that slows down between rounds moves both (the medians of each
    path's rounds, taken apart, may pair one round's with another's)."""
    gap: float = runs[path][-1]["p50_ms"] - runs["caller_vector"][-1]["p50_ms"]
    return gap


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        key: statistics.median(r[key] for r in runs)
        for key in ("per_second", "p50_ms", "p95_ms", "p99_ms", "cores_busy")
        if all(key in r for r in runs)
    }
    if all("cpu_ms_per_search" in r for r in runs):
        merged["cpu_ms_per_search"] = {
            part: round(statistics.median(r["cpu_ms_per_search"][part] for r in runs), 2)
            for part in runs[0]["cpu_ms_per_search"]
        }
    return merged | {"rounds": runs}


def _costed(
    clients: int,
    seconds: float,
    call: Callable[[int, int], None],
    workers: list[int],
    postmaster: int | None,
) -> dict[str, Any]:
    """drive()'s figures (without every latency), and what the searches cost: the CPU of the
    worker processes, the database server and this process (the clients; the caller's model
    too) per search, and the cores they kept busy over the run. On two cores, a path can spend
    less CPU per search and still answer fewer: what it leaves idle says why. No CPU figures
    for a server on another machine."""
    before = _cpu(workers, postmaster)
    started = time.perf_counter()
    found = drive(clients, seconds, call)
    wall = time.perf_counter() - started
    after = _cpu(workers, postmaster)
    found.pop("latencies")
    if before is not None and after is not None and found["calls"]:
        spent = {part: after[part] - before[part] for part in after}
        found["cpu_ms_per_search"] = {
            part: round(used / found["calls"] * 1000, 2)
            for part, used in (spent | {"total": sum(spent.values())}).items()
        }
        found["cores_busy"] = round(sum(spent.values()) / wall, 2)
    return found


def _cpu(workers: list[int], postmaster: int | None) -> dict[str, float] | None:
    server = cputime.server_seconds(postmaster)
    if server is None:
        return None
    return {
        "worker": sum(map(cputime.process_seconds, workers)),
        "postgres": server,
        "bench": time.process_time(),
    }


def in_turn(names: list[str], turn: int) -> list[str]:
    """The paths' order in round `turn`: as given, reversed every other round. In one fixed
    order this worker's vector path (first, after the last round's reranking) ran 2-12% under
    the head's (third) at 1 client on an unchanged path, three runs in three (history/search.md,
    2026-11-28); alternating paired rounds put them level."""
    return names if turn % 2 == 0 else names[::-1]


def even(rounds: int) -> int:
    """`rounds`, one more when odd: each order of in_turn() then runs as often (with 3, one
    order ran twice and the other once, and the medians leaned its way)."""
    return rounds + rounds % 2


def throughput(
    dsn: str,
    worker: Server,
    model: Embedder,
    asked: list[str],
    *,
    counts: list[int],
    seconds: float,
    rounds: int,
    before: Server | None = None,
) -> dict[str, Any]:
    """Each path in turn, every round (`rounds`, made even), at each of `counts` clients,
    asking `asked`; `before`: a worker of another checkout (BENCH_BEFORE), whose POST /search
    (vector) takes its turn in each round as http_vector_before."""
    results: dict[str, Any] = {}
    workers = [worker.proc.pid] + ([before.proc.pid] if before else [])
    with psycopg.connect(dsn) as conn:
        postmaster = cputime.postmaster(conn)
    for clients in counts:
        # The caller's pool holds a connection per client, as issue 50's baseline: psycopg_pool
        # hands out its idle connections oldest first, so a larger one would send a lone
        # client's searches round all its backends (history/search.md: a pool that rotates).
        pool: ConnectionPool[Any] = ConnectionPool(
            dsn, min_size=clients, max_size=clients, kwargs={"autocommit": True}
        )
        searches = SearchConnections(dsn, max_size=clients)
        service = SearchService(searches.connection, QueryBatchers(lambda name: model))
        try:
            pool.wait()
            runs: dict[str, list[dict[str, Any]]] = {}
            ratios: dict[str, list[float]] = {"vector": [], "hybrid": []}
            gaps: dict[str, list[float]] = {}  # http p50 - caller p50 (vector), ms, per round
            against_before: list[float] = []  # http_vector / http_vector_before, searches/s
            in_process: list[float] = []  # service_vector / caller_vector, searches/s
            for turn in range(even(rounds)):
                # New keep-alive connections each round: the server closes idle ones.
                paths = {
                    "http_vector": http_call(worker.port, clients, asked, mode="vector"),
                    "caller_vector": caller_call(pool, model, clients, asked, hybrid=False),
                    "service_vector": service_call(service, clients, asked),
                    **(
                        {
                            "http_vector_before": http_call(
                                before.port, clients, asked, mode="vector"
                            )
                        }
                        if before
                        else {}
                    ),
                    "http_hybrid": http_call(worker.port, clients, asked, mode="hybrid"),
                    "caller_hybrid": caller_call(pool, model, clients, asked, hybrid=True),
                }
                if clients in RERANK_CLIENTS:
                    paths["http_hybrid_rerank"] = http_call(
                        worker.port, clients, asked, mode="hybrid", rerank=RERANKER
                    )
                for name in in_turn(list(paths), turn):
                    call = paths[name]
                    drive(clients, 1.0, call)  # warm-up
                    found = _costed(clients, seconds, call, workers, postmaster)
                    runs.setdefault(name, []).append(found)
                    print(clients, name, runs[name][-1], flush=True)
                for kind, each in ratios.items():
                    each.append(_rate_ratio(runs, f"http_{kind}", f"caller_{kind}"))
                in_process.append(_rate_ratio(runs, "service_vector", "caller_vector"))
                gaps.setdefault("after", []).append(_p50_gap(runs, "http_vector"))
                if before:
                    against_before.append(_rate_ratio(runs, "http_vector", "http_vector_before"))
                    gaps.setdefault("before", []).append(_p50_gap(runs, "http_vector_before"))
            per = {name: _merge(r) for name, r in runs.items()}
            per["http/caller"] = {k: round(statistics.median(v), 3) for k, v in ratios.items()}
            per["service/caller"] = {"vector": round(statistics.median(in_process), 3)}
            if against_before:
                per["http/caller"]["vector, after/before"] = round(
                    statistics.median(against_before), 3
                )
            per["p50 - caller p50, ms"] = {
                k: {"median": round(statistics.median(v), 2), "rounds": [round(x, 2) for x in v]}
                for k, v in gaps.items()
            }
            results[str(clients)] = per
        finally:
            searches.close()
            pool.close()
    return results

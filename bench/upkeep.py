"""What a worker's upkeep costs the database per watched table: the statements it runs for every
target while nothing else happens, and the one a search runs for a table it does not know yet.

- `stopped_targets()`: every worker's keeper reads it every 5 s (worker/process/stopped.py) for
  /readyz and embed_worker_target_stopped; `embed-worker status` and doctor read it too;
- load_targets: the registry's read of every target (a worker's start, each definition change);
- search_target: a search's lookup of one table it has not searched yet (worker/retrieval/
  targets.py: find_target);
- status: what `embed-worker status` reads (worker/status.py: fetch), every watched table's
  counts and pending jobs (each table holds ROWS rows, whose backfill jobs wait in the queue);
- a session's memory for each table it served: a new session calls, for every table, the
  generated functions a worker's calls for a batch (`_lock`, `_lock_rows`, `_store` in a
  transaction rolled back, `_load`), and reads what its backend holds
  (pg_backend_memory_contexts) before and after: the plans and compiled functions a session
  keeps, which grow with the tables it writes.

At 10 and 50 watched tables (of ROWS rows each: the statements read the catalog and our
tables, and status counts the small tables' rows), each statement timed from the client, one connection, CALLS calls a
round; first once the tables are watched (at 50, after the reinstalls of the round at 10),
then after the code was reinstalled REINSTALLS more times
(each as `migrate` reinstalls it on an upgrade, and as ALTERs of watched tables regenerate
their functions): a catalog that has lived, whose pg_proc is larger and planned
otherwise. With BENCH_BEFORE=CHECKOUT, CHECKOUT's schema is installed in a database of its own
with the same tables, reinstalled by its own package, and the two are timed round by round,
alternating which goes first: the schema is all that differs.

    [BENCH_BEFORE=CHECKOUT] python -m bench --only upkeep
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from worker import status
from worker.pipeline.targets import load as load_targets
from worker.process.stopped import StoppedTargets
from worker.retrieval.targets import find_target

TARGETS = (10, 50)
CALLS = 40
REINSTALLS = 10
MODEL = "upkeep-4d"  # a model row for the watch; nothing is embedded
ROWS = 10  # a watched table's
Conn = psycopg.Connection[Any]


def _statements() -> dict[str, Callable[[Conn], object]]:
    """Each statement as the worker runs it, by its own code."""
    stopped = StoppedTargets("embedding_jobs")
    return {
        "stopped_targets": stopped.refresh,
        "load_targets": load_targets,
        "search_target": lambda conn: find_target(conn, "upkeep_1"),
        "status": status.fetch,
    }


def watch_tables(conn: Conn, upto: int) -> None:
    """upkeep_1 .. upkeep_<upto> watched (those not yet)."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES (%s, 4, 512, 'mean') ON CONFLICT (name) DO NOTHING",
        (MODEL,),
    )
    (have,) = conn.execute("SELECT count(*) FROM embeddings.targets").fetchone() or (0,)
    for i in range(int(have) + 1, upto + 1):
        conn.execute(f"CREATE TABLE upkeep_{i} (id int PRIMARY KEY, body text)")
        conn.execute(
            f"INSERT INTO upkeep_{i} SELECT g, 'row ' || g FROM generate_series(1, %s) g", (ROWS,)
        )
        conn.execute("SELECT embeddings.watch(%s, 'body', model => %s)", (f"upkeep_{i}", MODEL))


def _reinstall(dsn: str, checkout: Path | None, times: int = 1) -> None:
    """The code of `checkout`'s package (None: this one) reinstalled over `dsn`'s schema
    `times` times, each in a transaction of its own (a first time: installed)."""
    code = (
        "import sys, psycopg\n"
        "from worker import schema\n"
        "from worker.schema.install import install\n"
        "schema.migrate(sys.argv[1])\n"
        "for _ in range(int(sys.argv[2])):\n"
        "    with psycopg.connect(sys.argv[1]) as conn, conn.transaction():\n"
        "        install(conn)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(checkout)} if checkout is not None else None
    subprocess.run(  # in the checkout: `-c` puts the working directory first on the path
        [sys.executable, "-c", code, dsn, str(times)],
        cwd=checkout,
        env=env,
        check=True,
        capture_output=True,
    )


def _round(conn: Conn, statement: Callable[[Conn], object]) -> float:
    """ms a call, over CALLS calls after one that plans."""
    statement(conn)
    started = time.perf_counter()
    for _ in range(CALLS):
        statement(conn)
    return (time.perf_counter() - started) * 1000 / CALLS


def _timed(dsns: dict[str, str], rounds: int) -> dict[str, Any]:
    statements = _statements()
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        order = list(dsns) if r % 2 == 0 else list(reversed(dsns))
        for path in order:
            with psycopg.connect(dsns[path], autocommit=True) as conn:  # a new session
                for name, statement in statements.items():
                    times.setdefault((name, path), []).append(_round(conn, statement))
    figures: dict[str, Any] = {}
    for name in statements:
        figures[name] = {path: round(statistics.median(times[(name, path)]), 2) for path in dsns}
        if "before" in dsns:
            figures[name]["this_over_before"] = round(
                figures[name]["this"] / figures[name]["before"], 3
            )
    return figures


def _session_kb_a_table(dsn: str) -> float:
    """KB a new session holds more for each watched table once it served each one's batch."""
    held = "SELECT sum(total_bytes) FROM pg_backend_memory_contexts"
    with psycopg.connect(dsn, autocommit=True) as conn:
        targets = conn.execute(
            "SELECT t.id, format_type(a.atttypid, a.atttypmod) FROM embeddings.targets t"
            " JOIN pg_attribute a ON a.attrelid = t.store_table AND a.attname = t.embedding_column"
            " ORDER BY t.id"
        ).fetchall()
        keys = [str(k) for k in range(1, ROWS + 1)]
        vectors = ["[0.1,0.2,0.3,0.4]"] * ROWS
        (before,) = conn.execute(held).fetchone() or (0,)
        for target, vector_type in targets:
            fn = f"embeddings.embeddings_{target}"
            with conn.transaction(force_rollback=True):
                conn.execute(f"SELECT {fn}_lock()")
                conn.execute(f"SELECT * FROM {fn}_lock_rows(%s, %s)", (keys, keys))
                conn.execute(
                    f"SELECT * FROM {fn}_store(%s, %s, %s::text[]::{vector_type}[], %s)",
                    (keys, keys, vectors, [None] * ROWS),
                )
                conn.execute(f"SELECT * FROM {fn}_load(%s, %s)", (keys, keys))
        (after,) = conn.execute(held).fetchone() or (0,)
    return round((int(after) - int(before)) / 1024 / max(1, len(targets)), 1)


def _proc_bytes(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        (size,) = conn.execute("SELECT pg_relation_size('pg_catalog.pg_proc')").fetchone() or (0,)
    return int(size)


def run(
    dsn: str, empty_db: Callable[[], str], before: Path | None, rounds: int = 6
) -> dict[str, Any]:
    dsns = {"this": dsn}  # made from the run's migrated template
    checkouts: dict[str, Path | None] = {"this": None}
    if before is not None:
        dsns["before"] = empty_db()
        checkouts["before"] = before
        _reinstall(dsns["before"], before, times=0)
    result: dict[str, Any] = {"calls_a_round": CALLS, "rounds": rounds, "reinstalls": REINSTALLS}
    for targets in TARGETS:
        for each in dsns.values():
            with psycopg.connect(each, autocommit=True) as conn:
                watch_tables(conn, targets)
        for catalog in ("as_made", "lived_in"):
            if catalog == "lived_in":
                for path, each in dsns.items():
                    _reinstall(each, checkouts[path], times=REINSTALLS)
            figures = _timed(dsns, rounds)
            figures["pg_proc_bytes"] = {path: _proc_bytes(each) for path, each in dsns.items()}
            figures["session_kb_a_table"] = {
                path: _session_kb_a_table(each) for path, each in dsns.items()
            }
            result[f"{targets}_targets_{catalog}_ms"] = figures
            print(f"bench: upkeep, {targets} targets, {catalog}: {figures}", file=sys.stderr)
    return result

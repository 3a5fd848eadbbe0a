"""The exact path of embeddings.search() (sql/58_search.sql: a scan, every matching row's
distance, the k nearest), timed statement by statement: a table of ROWS rows (one vector per
row) and a chunked one (DOCUMENTS documents of CHUNKS chunks each), random unit vectors,
k = 10, a new query each time. p50 and p95 of `SELECT embeddings.embeddings_<id>_search(...)`
from the client, one connection.

With BENCH_BEFORE=CHECKOUT, CHECKOUT's schema is installed in a database of its own, the same
tables watched there, and its generated search functions copied into this checkout's database
under other names: both run on the same rows, interleaved query by query (which goes first
alternates), and their answers must be equal.

    [BENCH_BEFORE=CHECKOUT] python -m bench --only exact

Run as a script (`python bench/exact_search.py DSN`, the checkout's package on PYTHONPATH): the
tables made in DSN, and the generated functions' definitions printed as JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

ROWS = 4000
DOCUMENTS = 1000
CHUNKS = 4
DIMS = 384
K = 10
MODEL = "all-MiniLM-L6-v2"


def _vector(rng: np.random.Generator) -> str:
    v = rng.standard_normal(DIMS)
    v /= np.linalg.norm(v)
    return "[" + ",".join(f"{x:.5f}" for x in v) + "]"


def make_tables(dsn: str) -> dict[str, tuple[str, str]]:
    """The two tables, watched by the schema of the `worker` package imported; by table, its
    generated search function's name and definition."""
    from worker import schema

    schema.migrate(dsn)
    rng = np.random.default_rng(1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE exact_rows (id int PRIMARY KEY, body text, embedding halfvec({DIMS}))"
        )
        with conn.cursor().copy("COPY exact_rows FROM STDIN") as copy:
            for i in range(1, ROWS + 1):
                copy.write_row((i, f"row {i} of the exact bench " * 12, _vector(rng)))
        conn.execute("SELECT embeddings.watch('exact_rows', 'body', model => %s)", (MODEL,))
        conn.execute("CREATE TABLE exact_docs (id int PRIMARY KEY, body text)")
        conn.execute(
            f"INSERT INTO exact_docs SELECT i, 'doc ' || i FROM generate_series(1, {DOCUMENTS}) i"
        )
        conn.execute(
            "SELECT embeddings.watch('exact_docs', 'body', model => %s, chunk_tokens => 64)",
            (MODEL,),
        )
        statement = "COPY exact_docs_chunks (id, seq, chunk, chunk_hash, embedding) FROM STDIN"
        with conn.cursor().copy(statement) as copy:
            for doc in range(1, DOCUMENTS + 1):
                for seq in range(CHUNKS):
                    copy.write_row(
                        (doc, seq, f"doc {doc} chunk {seq} " * 12, f"h{seq}", _vector(rng))
                    )
        conn.execute("SELECT pgmq.purge_queue('embedding_jobs')")
        conn.execute("ANALYZE exact_rows")
        conn.execute("ANALYZE exact_docs_chunks")
        found = conn.execute(
            "SELECT t.source::text, 'embeddings_' || t.id || '_search', pg_get_functiondef("
            "format('embeddings.%I', 'embeddings_' || t.id || '_search')::regproc)"
            " FROM embeddings.targets t"
        ).fetchall()
    return {table: (name, definition) for table, name, definition in found}


def _before_functions(
    conn: psycopg.Connection[Any], before: Path, empty_dsn: str
) -> dict[str, str]:
    """CHECKOUT's generated functions, made in `empty_dsn` by its schema and created in `conn`'s
    database as embeddings.before_<table>: the function's name by table."""
    env = {**os.environ, "PYTHONPATH": str(before)}
    made = subprocess.run(
        [sys.executable, __file__, empty_dsn], env=env, check=True, capture_output=True, text=True
    )
    names = {}
    for table, (name, definition) in json.loads(made.stdout.splitlines()[-1]).items():
        names[table] = f"before_{table}"
        conn.execute(definition.replace(name, names[table]))
    return names


def run(
    dsn: str, empty_db: Callable[[], str], before: Path | None, samples: int = 300
) -> dict[str, Any]:
    ours = {table: name for table, (name, _) in make_tables(dsn).items()}
    rng = np.random.default_rng(7)
    result: dict[str, Any] = {"rows": ROWS, "documents": DOCUMENTS, "chunks": CHUNKS, "k": K}
    with psycopg.connect(dsn, autocommit=True) as conn:
        paths = {table: {"this": name} for table, name in ours.items()}
        if before is not None:
            for table, name in _before_functions(conn, before, empty_db()).items():
                paths[table]["before"] = name
        for table, functions in paths.items():
            times: dict[str, list[float]] = {path: [] for path in functions}
            differ = 0
            for i in range(samples):
                query = _vector(rng)
                order = list(functions) if i % 2 == 0 else list(reversed(functions))
                answers = []
                for path in order:
                    started = time.perf_counter()
                    (answer,) = conn.execute(
                        f"SELECT embeddings.{functions[path]}(%s::halfvec, NULL, {K}, true)",
                        (query,),
                    ).fetchone() or (None,)
                    times[path].append(time.perf_counter() - started)
                    answers.append(answer)
                differ += any(a != answers[0] for a in answers)
            result[table] = {
                path: {
                    "p50_ms": round(1000 * statistics.median(t), 2),
                    "p95_ms": round(1000 * statistics.quantiles(t, n=20)[-1], 2),
                }
                for path, t in times.items()
            }
            result[table]["answers_differ"] = differ
            if "before" in times:
                result[table]["this_over_before_p50"] = round(
                    statistics.median(times["this"]) / statistics.median(times["before"]), 3
                )
            print(f"bench: exact {table}: {result[table]}", file=sys.stderr)
    return result


if __name__ == "__main__":
    print(json.dumps(make_tables(sys.argv[1])))

"""What trust by construction (issue 36) costs, before and after in one run.

Two databases of one cluster: `after` is this checkout's schema; `before` the same tables with
the code (functions, triggers, views) of git ref `before` reinstalled over them, as `migrate`
would have left it. On each:
- the application's write path: single-row INSERT and UPDATE TPS of watched tables against
  unwatched ones (bench/oltp.py), and the bulk 100k-row INSERT (bench/writepath.py); the
  triggers are not what changed, so these should match within noise;
- the worker's write: a target's owner-run store call (`_blank` of 64 rows, the stale-write
  guard's UPDATE with the owner's triggers firing), called as the worker calls it; after the
  change it is a guard around `_blank_body` (sql/32_access.sql: create_access_function) that
  puts back whatever session settings the owner's code changed, and starts with SET CONSTRAINTS
  ALL IMMEDIATE. Median milliseconds per call, alternating;
- the session reset the worker's connections run after a statement that may have run someone
  else's code (worker/session_guard.py): its round trip in microseconds; the write stage of a
  batch runs it once per target written and once after COMMIT.

    python -m bench --only trust [--quick]   (BENCH_TRUST_BEFORE: the ref, default e55a0a5)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import oltp, writepath
from worker import db, queries, schema
from worker.schema import files as schema_files

BEFORE = os.environ.get("BENCH_TRUST_BEFORE", "e55a0a5")
ROWS = 64


def _code_of(ref: str, into: Path) -> list[Path]:
    """The install files of `ref`'s sql/ (git archive), in install order."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", ref, "sql"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return schema_files.install_files(into / "sql")


def _reinstall_before(dsn: str, ref: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(dsn, autocommit=True) as conn:
        schema.reinstall_code(conn, _code_of(ref, Path(tmp)))


def _store_calls(dsn: str, rounds: int) -> list[float]:
    """Milliseconds per `_blank` call of ROWS rows of a watched table with one row trigger."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS trust_docs CASCADE")
        conn.execute("CREATE TABLE trust_docs (id integer PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO trust_docs SELECT g, 'text ' || g FROM generate_series(1, %s) g", (ROWS,)
        )
        conn.execute(
            "CREATE OR REPLACE FUNCTION trust_touch() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE TRIGGER touch AFTER UPDATE ON trust_docs FOR EACH ROW"
            " EXECUTE FUNCTION trust_touch()"
        )
        row = conn.execute("SELECT embeddings.watch('trust_docs', 'body')").fetchone()
        assert row is not None
        blank = f"embeddings.embeddings_{row[0]}_blank"
        keys = [str(i) for i in range(1, ROWS + 1)]
        digests = [
            r[0] for r in conn.execute("SELECT md5(body) FROM trust_docs ORDER BY id").fetchall()
        ]
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            with conn.transaction():
                conn.execute(f"SELECT {blank}(%s, %s, %s)", (keys, keys, digests))
            times.append((time.perf_counter() - started) * 1000)
        return times


def _reset_round_trip(dsn: str, rounds: int) -> list[float]:
    conn = db.connect(dsn)
    try:
        reset = queries.get("session_reset")
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            with psycopg.Cursor(conn) as cur:
                cur.execute(reset)
            times.append((time.perf_counter() - started) * 1e6)
        return times
    finally:
        conn.close()


def run(
    before_dsn: str, after_dsn: str, *, quick: bool = False, ref: str = BEFORE
) -> dict[str, Any]:
    _reinstall_before(before_dsn, ref)
    stores: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(5 if quick else 15):  # alternating: the machine's speed drifts
        for label, dsn in (("before", before_dsn), ("after", after_dsn)):
            stores[label].extend(_store_calls(dsn, 10))
    store_ms = {k: statistics.median(v) for k, v in stores.items()}
    resets = _reset_round_trip(after_dsn, 200 if quick else 1000)
    seconds, rounds = (5, 2) if quick else (8, 3)
    return {
        "before_ref": ref,
        "worker_store_call_ms": {
            **store_ms,
            "ratio_after_to_before": store_ms["after"] / store_ms["before"],
            "rows_per_call": ROWS,
        },
        "session_reset_us": {
            "median": statistics.median(resets),
            "p95": statistics.quantiles(resets, n=20)[18],
        },
        "oltp": {
            "before": oltp.run(before_dsn, seconds=seconds, rounds=rounds),
            "after": oltp.run(after_dsn, seconds=seconds, rounds=rounds),
        },
        "bulk": {
            "before": writepath.run(before_dsn, rounds=2 if quick else 3),
            "after": writepath.run(after_dsn, rounds=2 if quick else 3),
        },
    }

"""Content fingerprints and the verifying sweep (issue 25 §1), at scale.

- `write_stage`: the worker's write of a batch (vectors through the target's store function,
  as the worker does it) with and without the fingerprint it records beside each vector,
  alternating round by round: rows/s of the write stage, before and after. The application's
  statements run no fingerprint code at all (the triggers are unchanged); `app_write_path`
  measures them anyway, single-row (pgbench) and bulk, with an empty fingerprint table and
  with one holding a fingerprint for every row of the table.
- `verify`: a full verifying pass over `rows` rows (vectors and fingerprints written in SQL, 1%
  of the rows edited under session_replication_role = replica, unseen by the triggers), in
  slices of `slice_rows`: rows/s, time per slice, and the stale rows it queued.
- `concurrent_tps`: single-row UPDATEs of that table (pgbench, 8 clients) alone and while
  verifying slices run back to back, alternating.

    python -m bench --only verify [--scale-rows N] [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from bench.oltp import _pgbench
from worker import db
from worker.pipeline import fingerprints, settlement, targets, write
from worker.pipeline.batch import Batch, Row, RowState

DIMS = 384
BODY = "'Row ' || g || ': ' || repeat('some representative words of text ', 8)"
CHUNK = 100_000


def _big_table(conn: psycopg.Connection[Any], rows: int) -> int:
    # Registered while empty of vectors (watch() of a large table defers its HNSW index until
    # its backfill ends: no index is built, none is needed to verify), then every row given a
    # vector unseen by the triggers, as if embedded, and its backfill dropped.
    conn.execute("CREATE TABLE vdocs (id bigint PRIMARY KEY, body text)")
    for start in range(1, rows + 1, CHUNK):
        conn.execute(
            f"INSERT INTO vdocs SELECT g, {BODY} FROM generate_series(%s::bigint, %s::bigint) g",
            (start, min(start + CHUNK - 1, rows)),
        )
    conn.execute("ANALYZE vdocs")
    row = conn.execute("SELECT embeddings.watch('vdocs', 'body')").fetchone()
    assert row is not None
    target = int(row[0])
    conn.execute("DELETE FROM embeddings.backfills WHERE target_id = %s", (target,))
    _purge(conn)
    conn.execute("SET session_replication_role = replica")
    for start in range(1, rows + 1, CHUNK):
        conn.execute(
            f"UPDATE vdocs SET embedding = array_fill(0.05::real, ARRAY[{DIMS}])::halfvec"
            " WHERE id BETWEEN %s AND %s",
            (start, min(start + CHUNK - 1, rows)),
        )
    conn.execute("RESET session_replication_role")
    # Every vector with the fingerprint the worker would have recorded for it.
    conn.execute(
        "INSERT INTO embeddings.fingerprints (target_id, slot, key, fingerprint)"
        " SELECT t.id, s.slot, to_jsonb(d.id), md5(embeddings_internal.definition_tag(t, s.model) || md5(d.body))"
        " FROM embeddings.targets t CROSS JOIN LATERAL embeddings_internal.fingerprint_slot(t) s, vdocs d"
        " WHERE t.id = %s",
        (target,),
    )
    conn.execute("VACUUM ANALYZE vdocs")
    conn.execute("VACUUM ANALYZE embeddings.fingerprints")
    return target


def _purge(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pgmq.purge_queue('embedding_jobs')")
    conn.execute("SELECT pgmq.purge_queue(embeddings_internal.backfill_queue('embedding_jobs'))")
    conn.execute("TRUNCATE embeddings.inbox")


def verify_pass(
    conn: psycopg.Connection[Any], target: int, rows: int, slice_rows: int
) -> dict[str, Any]:
    conn.execute("DELETE FROM embeddings.verify_cursors WHERE target_id = %s", (target,))
    slices: list[float] = []
    queued = 0
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        row = conn.execute("SELECT embeddings.verify(%s)", (slice_rows,)).fetchone()
        slices.append(time.perf_counter() - t0)
        queued += int(row[0]) if row else 0
        done = conn.execute(
            "SELECT last_pass_finished IS NOT NULL FROM embeddings.verify_cursors WHERE target_id = %s",
            (target,),
        ).fetchone()
        if done and done[0]:
            break
    elapsed = time.perf_counter() - started
    return {
        "rows": rows,
        "slice_rows": slice_rows,
        "seconds": round(elapsed, 1),
        "rows_per_second": round(rows / elapsed),
        "slice_ms_median": round(statistics.median(slices) * 1000, 1),
        "slice_ms_max": round(max(slices) * 1000, 1),
        "queued": queued,
    }


def _verify_until(dsn: str, stop: threading.Event) -> None:
    with psycopg.connect(dsn, autocommit=True) as sweeper:
        while not stop.is_set():
            sweeper.execute("SELECT embeddings.verify(1000)")


def concurrent_tps(dsn: str, target: int, rows: int, seconds: int, rounds: int) -> dict[str, Any]:
    alone: list[float] = []
    verifying: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(dsn, autocommit=True) as conn:
        script = Path(tmp) / "update.sql"
        script.write_text(
            f"\\set id random(1, {rows})\n"
            "UPDATE vdocs SET body = 'edited by ' || :client_id || ' at ' || clock_timestamp()"
            " WHERE id = :id;\n"
        )
        for _ in range(rounds):
            _purge(conn)
            alone.append(_pgbench(dsn, script, 8, seconds))
            _purge(conn)
            stop = threading.Event()

            thread = threading.Thread(target=_verify_until, args=(dsn, stop))
            thread.start()
            try:
                verifying.append(_pgbench(dsn, script, 8, seconds))
            finally:
                stop.set()
                thread.join()
        _purge(conn)
    return {
        "clients": 8,
        "seconds": seconds,
        "alone_tps": [round(x) for x in alone],
        "verifying_tps": [round(x) for x in verifying],
        "ratio": round(statistics.median(verifying) / statistics.median(alone), 2),
    }


def write_stage(dsn: str, rounds: int, batches: int, batch_rows: int = 64) -> dict[str, Any]:
    """The worker's write of a target's rows (write._write_target: the store function, then the
    fingerprints) in transactions of `batch_rows` rows, with and without the fingerprints."""
    with db.connect(dsn) as conn:
        conn.execute(
            "CREATE TABLE wdocs (id bigint PRIMARY KEY, body text, embedding halfvec(384))"
        )
        conn.execute(
            f"INSERT INTO wdocs SELECT g, {BODY} FROM generate_series(1, {batches * batch_rows}) g"
        )
        conn.execute("SELECT embeddings.watch('wdocs', 'body')")
        db.register_vector_types(conn)
        conn.execute("DELETE FROM embeddings.backfills")
        _purge(conn)
        target = next(t for t in targets.load(conn).values() if t.table == "wdocs")
        digests = dict(conn.execute("SELECT id::text, md5(body) FROM wdocs").fetchall())
        rng = np.random.default_rng(1)
        vector = rng.standard_normal(DIMS).astype(np.float32)
        real = fingerprints.record_written
        spent: list[float] = []  # seconds inside record_written, per batch

        def timed(*args: Any, **kwargs: Any) -> None:
            t0 = time.perf_counter()
            real(*args, **kwargs)
            spent.append(time.perf_counter() - t0)

        rates: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(rounds):
            for variant in ("without", "with"):
                fingerprints.record_written = timed if variant == "with" else (lambda *a, **k: None)
                try:
                    started = time.perf_counter()
                    for b in range(batches):
                        rows = [
                            Row(
                                target,
                                str(k),
                                state=RowState.EMBEDDED,
                                digest=digests[str(k)],
                                vector=vector,
                            )
                            for k in range(b * batch_rows + 1, (b + 1) * batch_rows + 1)
                        ]
                        with conn.transaction():
                            write._write_target(
                                conn, target, rows, settlement.WriteOutcome(), Batch(jobs=[])
                            )
                    rates[variant].append(batches * batch_rows / (time.perf_counter() - started))
                finally:
                    fingerprints.record_written = real
        conn.execute("DROP TABLE wdocs")
    return {
        "batch_rows": batch_rows,
        "batches": batches,
        "rows_per_second": {v: [round(x) for x in r] for v, r in rates.items()},
        "median": {v: round(statistics.median(r)) for v, r in rates.items()},
        "ratio": round(statistics.median(rates["with"]) / statistics.median(rates["without"]), 3),
        # The fingerprints' own share, timed directly (the rates above move with the machine's
        # load more than with the fingerprints)
        "fingerprint_ms_per_batch_median": round(statistics.median(spent) * 1000, 2),
        "fingerprint_ms_per_batch_p95": round(sorted(spent)[int(len(spent) * 0.95)] * 1000, 2),
    }


def app_write_path(dsn: str, target_rows: int, rounds: int, seconds: int) -> dict[str, Any]:
    """Bulk (100k rows) and single-row INSERTs into a watched table: the fingerprint table empty,
    then holding `target_rows` fingerprints of that target (the triggers never read it)."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE idocs (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, body text,"
            " embedding halfvec(384))"
        )
        row = conn.execute("SELECT embeddings.watch('idocs', 'body')").fetchone()
        assert row is not None
        script = Path(tmp) / "insert.sql"
        script.write_text(
            "INSERT INTO idocs (body) VALUES ('client ' || :client_id || ' wrote some words');\n"
        )
        for state in ("fingerprints_empty", "fingerprints_full"):
            if state == "fingerprints_full":
                conn.execute(
                    "INSERT INTO embeddings.fingerprints (target_id, slot, key, fingerprint)"
                    " SELECT %s, 3, to_jsonb(g), md5(g::text) FROM generate_series(1, %s::bigint) g",
                    (row[0], target_rows),
                )
            bulk: list[float] = []
            single: list[float] = []
            for _ in range(rounds):
                conn.execute("TRUNCATE idocs")
                _purge(conn)
                started = time.perf_counter()
                conn.execute(
                    f"INSERT INTO idocs (body) SELECT {BODY} FROM generate_series(1, 100000) g"
                )
                bulk.append(time.perf_counter() - started)
                _purge(conn)
                single.append(_pgbench(dsn, script, 8, seconds))
            out[state] = {
                "bulk_insert_100k_s": round(statistics.median(bulk), 2),
                "single_row_insert_tps": round(statistics.median(single)),
            }
        conn.execute("DROP TABLE idocs")
        _purge(conn)
    return out


def run(dsn: str, rows: int = 1_000_000, *, quick: bool = False) -> dict[str, Any]:
    rounds = 2 if quick else 3
    result: dict[str, Any] = {}
    result["write_stage"] = write_stage(dsn, rounds=rounds, batches=20 if quick else 50)
    result["app_write_path"] = app_write_path(dsn, rows, rounds=rounds, seconds=5 if quick else 10)
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        target = _big_table(conn, rows)
        result["setup_seconds"] = round(time.perf_counter() - started)
        result["verify_clean"] = verify_pass(conn, target, rows, 10_000)
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE vdocs SET body = body || ' (edited unseen)' WHERE id % 100 = 0")
        conn.execute("RESET session_replication_role")
        result["verify_1pct_stale"] = verify_pass(conn, target, rows, 10_000)
        _purge(conn)
        # The default slice (sweep()'s max_rows, 1000 rows): what a pg_cron call costs.
        conn.execute("DELETE FROM embeddings.verify_cursors WHERE target_id = %s", (target,))
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            conn.execute("SELECT embeddings.verify(1000)")
            times.append(time.perf_counter() - t0)
        result["slice_1000_rows_ms"] = round(statistics.median(times) * 1000, 1)
    result["concurrent_tps"] = concurrent_tps(
        dsn, target, rows, seconds=5 if quick else 10, rounds=rounds
    )
    return result

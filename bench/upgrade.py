"""Upgrading a running 0.2.0 installation with today's `embed-worker migrate` (release 0.3.0):
how long the application's writes to a large watched table wait while it runs.

One database of the bench's own cluster, set up as a 0.2.0 user has it: release 0.2.0's own
`migrate` (its tag's source, tests/support/release.py), a table `(id bigint primary key, body
text)` of `rows` short texts filled before it is watched, then watched by 0.2.0's `watch()` with
all-MiniLM-L6-v2. 0.2.0's watch() does not queue a job per existing row: it records a backfill
cursor and queues one step of 1,000 rows in its own transaction (its sql/62_backfill.sql); the
worker queues the rest in steps when its queue is empty. So the upgrade meets a table whose
backfill has just begun (the other rows wait behind the cursor, costing nothing meanwhile);
watch()'s own time is recorded. A side-store table and a chunked table of SMALL_ROWS rows each
are watched too, so that every store kind is migrated.

Then, with 0.2.0's worker running (a rolling upgrade: it keeps serving), an application session
writes to the large table (bench/upgrade_sessions.py), one INSERT or UPDATE per transaction every PACE_SECONDS, each
statement timed: BASELINE_SECONDS before the migration, through it, AFTER_SECONDS after it.
Today's `migrate` runs as a subprocess of this checkout meanwhile. A third session samples
pg_locks every LOCK_SAMPLE_SECONDS for ACCESS EXCLUSIVE held on the large table: the first
and last sample that saw it bound how long the migration held it (the application's longest
statement is the same figure, seen from the application). `migrate` says "trying again" on
stderr for each try whose locks were busy (worker/schema/locks.py).

Last, the old worker stops and today's starts with the real model: the time from its start
until every row the application wrote, and BACKLOG_ROWS rows inserted after the migration,
hold a vector again.

    python -m bench --only upgrade [--scale-rows N] [--quick]   (default 10,000,000 rows;
                                                                 --quick: 100,000)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.upgrade_sessions import PACE_SECONDS, Application, LockSampler, latency_summary
from tests.support import release
from tests.support.cluster import REPO, Cluster
from tests.support.process import wait_for

ROWS = 10_000_000
QUICK_ROWS = 100_000
MODEL = "all-MiniLM-L6-v2"
TABLE = "upgrade_rows"
OTHER_TABLES = {  # every other store kind 0.2.0 has, small
    "upgrade_side": "store => 'side'",
    "upgrade_chunks": "chunk_tokens => 32, chunk_overlap => 4",
}
SMALL_ROWS = 200
BASELINE_SECONDS = 5.0
AFTER_SECONDS = 2.0
BACKLOG_ROWS = 1000
DRAIN_TIMEOUT = 900.0


def _fill(dsn: str, rows: int) -> dict[str, float]:
    """The large table, filled before its key's index is built (one sorted build)."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id bigint NOT NULL, body text)")
        conn.execute(
            f"INSERT INTO {TABLE} SELECT g, 'row ' || g || ' of the table being upgraded, a short"
            " text to embed' FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)")
        conn.execute(f"VACUUM ANALYZE {TABLE}")
        for table in OTHER_TABLES:
            conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, body text)")
            conn.execute(
                f"INSERT INTO {table} SELECT g, repeat('{table} row ' || g || ' says hello. ',"
                " 12) FROM generate_series(1, %s) g",
                (SMALL_ROWS,),
            )
        row = conn.execute("SELECT pg_total_relation_size(%s)", (TABLE,)).fetchone()
    return {
        "fill_seconds": time.perf_counter() - started,
        "table_bytes": float(row[0] if row else 0),
    }


def _watch(dsn: str) -> dict[str, float]:
    """0.2.0's watch() of each table; what it queued for the large one, and its cursor."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(f"SELECT embeddings.watch('{TABLE}', 'body', model => '{MODEL}')")
        watched = time.perf_counter() - started
        for table, how in OTHER_TABLES.items():
            conn.execute(f"SELECT embeddings.watch('{table}', 'body', {how}, model => '{MODEL}')")
        queued = 0
        for lane in ("q_embedding_jobs", "q_embedding_jobs_backfill"):
            row = conn.execute(
                f"SELECT coalesce(sum(jsonb_array_length(message -> 'keys')), 0) FROM pgmq.{lane}"
                " WHERE message ->> 'target' = (SELECT id::text FROM embeddings.targets"
                f" WHERE source = '{TABLE}'::regclass)"
            ).fetchone()
            queued += int(row[0]) if row else 0
        cursor = conn.execute(
            "SELECT scanned_rows FROM embeddings.backfills b JOIN embeddings.targets t"
            " ON t.id = b.target_id WHERE t.source = %s::regclass",
            (TABLE,),
        ).fetchone()
    return {
        "watch_seconds": watched,
        "keys_queued_by_watch": float(queued),
        "backfill_cursor_rows": float(cursor[0]) if cursor else -1.0,
    }


def _migrate_today(dsn: str) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Today's `embed-worker migrate` (this checkout), and its start and end (monotonic)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "worker", "migrate"],
        cwd=REPO,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DATABASE_URL": dsn,
            "EMBED_LOG_LEVEL": "INFO",
        },
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return started, time.monotonic(), done


def _worker(
    command: list[str], dsn: str, models: Path, *, cwd: Path, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env={
                **env,
                "DATABASE_URL": dsn,
                "EMBED_MODEL": MODEL,
                "EMBED_MODEL_PATH": str(models),
                "EMBED_THREADS": "1",
                "EMBED_LOG_LEVEL": "WARNING",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def _embedded_any(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT EXISTS (SELECT FROM {TABLE} WHERE embedding IS NOT NULL)"
        ).fetchone()
    return bool(row and row[0])


def _unembedded(dsn: str, keys: list[int]) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {TABLE} WHERE id = ANY(%s) AND embedding IS NULL", (keys,)
        ).fetchone()
    return int(row[0]) if row else -1


def _drain(dsn: str, keys: list[int], models: Path, log: Path) -> dict[str, float]:
    """Today's worker from its start until every row of `keys` holds a vector."""
    pending = _unembedded(dsn, keys)
    started = time.monotonic()
    worker = _worker(
        [sys.executable, "-m", "worker", "run"],
        dsn,
        models,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        log=log,
    )
    try:
        wait_for(
            lambda: worker.poll() is not None or _unembedded(dsn, keys) == 0,
            DRAIN_TIMEOUT,
            interval=0.1,
            what="today's worker to embed the live backlog",
        )
        drained = time.monotonic() - started
        if worker.poll() is not None:
            raise RuntimeError(f"today's worker exited early:\n{log.read_text()[-3000:]}")
    finally:
        _stop(worker)
    return {
        "live_backlog_rows": float(pending),
        "drain_seconds": drained,
        "rows_per_second": pending / drained if drained else 0.0,
    }


def run(cluster: Cluster, models: Path, rows: int = ROWS) -> dict[str, Any]:
    name = cluster.create_database(prefix="upgrade")
    dsn = cluster.dsn(name)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-upgrade-") as tmp:
            return _measure(dsn, models, rows, Path(tmp))
    finally:
        cluster.drop_database(name)


def _measure(dsn: str, models: Path, rows: int, tmp: Path) -> dict[str, Any]:
    old = release.unpack("0.2.0", tmp)
    installed = old.run("migrate", dsn=dsn, timeout=600)
    if installed.returncode != 0:
        raise RuntimeError(f"0.2.0's migrate failed:\n{installed.stderr}")
    result: dict[str, Any] = {"rows": rows, "model": MODEL, "small_tables_rows": SMALL_ROWS}
    result["setup"] = {**_fill(dsn, rows), **_watch(dsn)}
    print(f"bench: upgrade set up: {result['setup']}", file=sys.stderr)

    old_log = tmp / "old.log"
    old_worker = _worker(old.command("run"), dsn, models, cwd=old.root, env=old.env(), log=old_log)
    app, sampler = Application(dsn, TABLE, rows), LockSampler(dsn, TABLE)
    try:
        # The baseline starts once 0.2.0's worker is at work (its model loaded, vectors written).
        wait_for(
            lambda: old_worker.poll() is not None or _embedded_any(dsn),
            120,
            what="0.2.0's worker to write a vector",
        )
        if old_worker.poll() is not None:
            raise RuntimeError(f"0.2.0's worker exited:\n{old_log.read_text()[-3000:]}")
        app.start()
        sampler.start()
        time.sleep(BASELINE_SECONDS)
        started, ended, migrated = _migrate_today(dsn)
        time.sleep(AFTER_SECONDS)
    finally:
        app.stop.set()
        sampler.stop.set()
        app.join()
        sampler.join()
        old_exit = _stop(old_worker)
    if app.error is not None:
        raise RuntimeError(f"the application's statement failed: {app.error!r}")
    if migrated.returncode != 0:
        raise RuntimeError(f"today's migrate failed:\n{migrated.stdout}{migrated.stderr}")
    held = [t for t in sampler.seen if started <= t <= ended]
    during = app.between(started, ended)
    result["migrate"] = {
        "wall_seconds": ended - started,
        "lock_tries": 1 + migrated.stderr.count("trying again"),
        "busy_tries": [line for line in migrated.stderr.splitlines() if "trying again" in line],
        "lock_waited_for": sorted(sampler.blockers),
        "output": migrated.stdout.strip().splitlines(),
        # First and last sample that saw the lock; the hold is at least their distance and
        # at most one sampling interval (plus a sample's own time) more.
        "exclusive_first_seen_after_seconds": held[0] - started if held else None,
        "exclusive_held_seconds": held[-1] - held[0] if held else 0.0,
        "exclusive_samples": len(held),
        "lock_sample_interval_seconds": sampler.interval(),
    }
    result["application"] = {
        "pace_seconds": PACE_SECONDS,
        "before": latency_summary(app.between(started - BASELINE_SECONDS, started)),
        "during": latency_summary(during),
        "after": latency_summary(app.between(ended, ended + AFTER_SECONDS)),
    }
    old_lines = old_log.read_text(errors="replace").splitlines()
    result["old_worker"] = {
        "exit_code": old_exit,
        "error_lines": [line for line in old_lines if "ERROR" in line or "Traceback" in line],
    }
    keys = sorted(app.keys)
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = max(keys) + 1
        conn.execute(
            f"INSERT INTO {TABLE} SELECT g, 'queued after the upgrade: row ' || g"
            " FROM generate_series(%s::bigint, %s::bigint) g",
            (first, first + BACKLOG_ROWS - 1),
        )
    keys += list(range(first, first + BACKLOG_ROWS))
    result["drain"] = _drain(dsn, keys, models, tmp / "new.log")
    return result


def table(result: dict[str, Any]) -> str:
    """The figures as a text table (what the bench prints)."""
    m, a, s = result["migrate"], result["application"], result["setup"]
    lines = [
        f"upgrade of a 0.2.0 database, {result['rows']:,} rows watched:",
        f"  0.2.0 watch(): {s['watch_seconds']:.3f} s, {s['keys_queued_by_watch']:.0f} keys"
        f" queued, backfill cursor at {s['backfill_cursor_rows']:.0f} rows",
        f"  migrate wall time            {m['wall_seconds']:8.2f} s ({m['lock_tries']} lock tries)",
        f"  ACCESS EXCLUSIVE on the table {m['exclusive_held_seconds']:7.3f} s"
        f" ({m['exclusive_samples']} samples)",
        f"  {'application statements':28} {'count':>6} {'median':>9} {'p99':>9} {'max':>9}",
    ]
    for phase in ("before", "during", "after"):
        p = a[phase]
        if p.get("statements"):
            lines.append(
                f"  {phase:28} {p['statements']:6d} {p['median_ms']:7.2f}ms"
                f" {p['p99_ms']:7.2f}ms {p['max_ms']:7.2f}ms"
            )
    errors = result["old_worker"]["error_lines"]
    lines.append(
        f"  0.2.0's worker beside it: exit {result['old_worker']['exit_code']},"
        f" {len(errors)} error lines"
    )
    if "drain" in result:
        d = result["drain"]
        lines.append(
            f"  today's worker: {d['live_backlog_rows']:.0f} rows embedded {d['drain_seconds']:.1f}"
            f" s after its start ({d['rows_per_second']:.0f} rows/s)"
        )
    return "\n".join(lines)

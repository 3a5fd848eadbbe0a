"""watch() on a large table (issue 16 §2): how long watch() holds its locks, and how long a
concurrent `SELECT ... WHERE id = 12345` waits meanwhile, before and after the backfill.

before: revision 0006 of main (before the backfill): watch() adds the column (ACCESS
        EXCLUSIVE) and queues every key with one array_agg, all in its transaction. That
        revision was squashed into release 0.2.0's: measure it from a checkout of d295fb3 or
        earlier. From this tree only `after` runs (results keep the figures measured then).
after:  head: watch() adds the column, records a backfill cursor and queues one bounded step;
        the rest is queued by steps after it committed (sql/62_backfill.sql).

Both run on copies of one database holding `rows` short synthetic texts (no embedding: the
figure is the database's), alternating before/after in each round. The probe starts once
the watcher holds ACCESS EXCLUSIVE on the table (polled in pg_locks), so its wait is the part
of watch() it overlaps. For `after`, the backfill's steps are then driven to the end as a
worker would (a step whenever the queue is empty: the queue is emptied between steps), and
the time of the steps reported; a step takes no lock that blocks readers or writers.

    python -m bench --only bigwatch [--scale-rows N] [--quick]
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import psycopg

from tests.support.cluster import Cluster
from worker import schema

SIZES = (1_000_000, 10_000_000)
PROBE_KEY = 12345
VARIANTS = {"after": "head"}  # before: revision 0006 of main, squashed (see above)
# A table of 4 range partitions: before, 0012 of main (the backfill, but the partitioned table's
# index built inside watch(); squashed too); after, head (the parent's index ON ONLY,
# partitions' built later).
PARTITIONED_VARIANTS = {"after": "head"}
PARTITIONS = 4
STEP_KEYS = 2048  # the worker's step at the default batch size (worker/process/backfill.py)


def _fill(dsn: str, rows: int, partitions: int = 0) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if partitions:
            conn.execute(
                "CREATE TABLE docs (id bigint PRIMARY KEY, body text) PARTITION BY RANGE (id)"
            )
            width = rows // partitions + 1
            for i in range(partitions):
                conn.execute(
                    f"CREATE TABLE docs_{i} PARTITION OF docs"
                    f" FOR VALUES FROM ({i * width + 1}) TO ({(i + 1) * width + 1})"
                )
        else:
            conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO docs SELECT g, 'short text number ' || g FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE docs")


def _watch_and_probe(dsn: str) -> dict[str, float]:
    """watch() in one session, a SELECT by key in another once watch() holds the lock."""
    timing: dict[str, float] = {}
    with (
        psycopg.connect(dsn, autocommit=True) as watcher,
        psycopg.connect(dsn, autocommit=True) as prober,
    ):
        prober.execute("SELECT body FROM docs WHERE id = %s", (PROBE_KEY,)).fetchone()  # warm
        pid = watcher.info.backend_pid

        def watch() -> None:
            started = time.perf_counter()
            watcher.execute("SELECT embeddings.watch('docs', 'body')")
            timing["watch_seconds"] = time.perf_counter() - started

        thread = threading.Thread(target=watch)
        thread.start()
        locked = False
        with psycopg.connect(dsn, autocommit=True) as observer:
            while thread.is_alive() and not locked:
                row = observer.execute(
                    "SELECT EXISTS (SELECT FROM pg_locks WHERE pid = %s AND granted"
                    " AND mode = 'AccessExclusiveLock' AND relation = 'docs'::regclass)",
                    (pid,),
                ).fetchone()
                locked = bool(row and row[0])
        started = time.perf_counter()
        prober.execute("SELECT body FROM docs WHERE id = %s", (PROBE_KEY,)).fetchone()
        timing["select_seconds"] = time.perf_counter() - started
        timing["probe_saw_lock"] = float(locked)
        thread.join()
        # watch() queues "keys"-shaped messages, in the backfill lane where there is one.
        lanes = ["q_embedding_jobs"] + (
            ["q_embedding_jobs_backfill"]
            if watcher.execute("SELECT to_regclass('pgmq.q_embedding_jobs_backfill')").fetchone()
            != (None,)
            else []
        )
        queued = 0.0
        for lane in lanes:
            row = watcher.execute(
                f"SELECT coalesce(sum(jsonb_array_length(message -> 'keys')), 0) FROM pgmq.{lane}"
            ).fetchone()
            queued += float(row[0]) if row else 0.0
        timing["keys_queued_by_watch"] = queued
    return timing


def _drive_backfill(dsn: str) -> dict[str, float]:
    """Steps the backfill to its end, emptying the queue between steps as a worker would."""
    durations: list[float] = []
    queued = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            started = time.perf_counter()
            row = conn.execute(
                "SELECT scanned, enqueued FROM embeddings_internal.backfill_next('embedding_jobs', %s)",
                (STEP_KEYS,),
            ).fetchone()
            durations.append(time.perf_counter() - started)
            assert row is not None
            if not row[0]:
                break
            queued += row[1]
            # Both lanes (the backfill's jobs are in the backfill lane, and a step waits while
            # that lane holds a step's worth).
            conn.execute("DELETE FROM pgmq.q_embedding_jobs")
            conn.execute("DELETE FROM pgmq.q_embedding_jobs_backfill")
    return {
        "steps": len(durations) - 1,
        "keys_queued": queued,
        "steps_total_seconds": sum(durations),
        "step_median_seconds": statistics.median(durations),
        "step_max_seconds": max(durations),
    }


def run(cluster: Cluster, sizes: tuple[int, ...] = SIZES, rounds: int = 1) -> dict[str, Any]:
    results: dict[str, Any] = {"probe_key": PROBE_KEY, "step_keys": STEP_KEYS, "sizes": {}}
    for rows in sizes:
        results["sizes"][str(rows)] = _measure(cluster, rows, rounds, VARIANTS, 0)
        print(f"bench: bigwatch {rows:,} rows: {results['sizes'][str(rows)]}")
    results["partitioned"] = {}
    for rows in sizes:
        results["partitioned"][str(rows)] = _measure(
            cluster, rows, rounds, PARTITIONED_VARIANTS, PARTITIONS
        )
        print(f"bench: bigwatch {rows:,} rows partitioned: {results['partitioned'][str(rows)]}")
    return results


def _measure(
    cluster: Cluster, rows: int, rounds: int, variants: dict[str, str], partitions: int
) -> dict[str, Any]:
    base = cluster.create_database(prefix="bigwatch")
    started = time.monotonic()
    _fill(cluster.dsn(base), rows, partitions)
    samples: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant, revision in variants.items():
            name = cluster.create_database(template=base, prefix="bigwatch")
            try:
                dsn = cluster.dsn(name)
                schema.migrate(dsn, revision)
                sample = _watch_and_probe(dsn)
                if variant == "after":
                    sample.update(_drive_backfill(dsn))
                samples[variant].append(sample)
            finally:
                cluster.drop_database(name)
    cluster.drop_database(base)
    return {
        "wall_seconds": time.monotonic() - started,  # filling and every round
        **{
            variant: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
            for variant, runs in samples.items()
        },
    }

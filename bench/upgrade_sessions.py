"""The sessions beside the upgrade bench's `migrate` (bench/upgrade.py): the application writing
to the large table, each statement timed, and the sampler of its ACCESS EXCLUSIVE lock."""

from __future__ import annotations

import random
import statistics
import threading
import time

import psycopg

PACE_SECONDS = 0.002
LOCK_SAMPLE_SECONDS = 0.005

# The sessions a waiting LOCK of `migrate` waits for (worker/queries.sql: lock_for_migration),
# by application name and what they run: why a try found its tables busy.
BLOCKERS = """
    SELECT DISTINCT coalesce(nullif(b.application_name, ''), 'no application_name') || ' ('
           || coalesce(b.state, '') || '): ' || left(b.query, 100)
    FROM pg_stat_activity w
    CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocking(pid)
    JOIN pg_stat_activity b ON b.pid = blocking.pid
    WHERE w.wait_event_type = 'Lock' AND w.query LIKE '%LOCK TABLE % IN ACCESS EXCLUSIVE MODE'
"""


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """Count, median, p99 and max of statement latencies, in milliseconds (p99: the value
    under which 99% of the statements finished, nearest rank)."""
    if not seconds:
        return {"statements": 0}
    ordered = sorted(seconds)
    rank = max(0, -(-99 * len(ordered) // 100) - 1)
    return {
        "statements": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[rank] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


class Application(threading.Thread):
    """One session writing to the large `table`, one statement per transaction, each timed:
    INSERTs of new keys and UPDATEs of existing rows, alternately."""

    def __init__(self, dsn: str, table: str, rows: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.table, self.rows = dsn, table, rows
        self.statements: list[tuple[float, float]] = []  # (started, seconds), monotonic
        self.keys: set[int] = set()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(0)
        next_key = self.rows + 1
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    if len(self.statements) % 2:
                        key = rng.randint(1, self.rows)
                        query = f"UPDATE {self.table} SET body = 'edited ' || id WHERE id = %s"
                    else:
                        key, next_key = next_key, next_key + 1
                        query = (
                            f"INSERT INTO {self.table} VALUES (%s, 'written during the upgrade')"
                        )
                    started = time.monotonic()
                    conn.execute(query, (key,))
                    self.statements.append((started, time.monotonic() - started))
                    self.keys.add(key)
                    time.sleep(PACE_SECONDS)
        except BaseException as exc:  # reported by the bench after join()
            self.error = exc

    def between(self, start: float, end: float) -> list[float]:
        """Latencies of the statements that started in [start, end) or were still running."""
        return [s for t, s in self.statements if t < end and t + s >= start]


class LockSampler(threading.Thread):
    """Samples pg_locks for ACCESS EXCLUSIVE granted on the large `table`, from its own session."""

    def __init__(self, dsn: str, table: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.table = dsn, table
        self.seen: list[float] = []
        self.samples: list[float] = []
        self.blockers: set[str] = set()  # sessions seen holding up migrate's LOCK
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT %s::regclass::oid", (self.table,)).fetchone()
            assert row is not None
            while not self.stop.is_set():
                sampled = time.monotonic()
                held = conn.execute(
                    "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'relation'"
                    " AND relation = %s AND mode = 'AccessExclusiveLock' AND granted)",
                    (row[0],),
                ).fetchone()
                self.samples.append(sampled)
                if held and held[0]:
                    self.seen.append(sampled)
                for (blocker,) in conn.execute(BLOCKERS).fetchall():
                    self.blockers.add(blocker)
                time.sleep(LOCK_SAMPLE_SECONDS)

    def interval(self) -> float:
        """The mean time between two samples (the sleep plus a sample's own time)."""
        span = self.samples[-1] - self.samples[0] if len(self.samples) > 1 else 0.0
        return span / (len(self.samples) - 1) if span else 0.0

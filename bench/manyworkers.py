"""Many workers, many targets: 1 to 8 single-threaded workers on one queue serving 100 watched
tables, with the tiny model so that leasing and writing, not inference, are what they share.

Reports, for each worker count: rows/s, every vector write counted per row by a trigger (no
row may be written twice), the connections each worker holds, and lease contention (how often
a worker's backend was seen waiting on a lock). The database runs on the same 2 cores.

Not part of the default `make bench`: `python -m bench --only workers [--scale-rows N]`.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import million, worker_process

TABLES = 100
COUNTER = """
CREATE TABLE bench_writes (tbl text, id bigint);
CREATE FUNCTION bench_count_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO bench_writes VALUES (TG_TABLE_NAME, NEW.id); RETURN NULL; END $$;
"""


def prepare(dsn: str, rows_per_table: int) -> None:
    texts = million.short_texts(TABLES * rows_per_table)
    with psycopg.connect(dsn, autocommit=True) as conn:
        million.register_model(conn)
        conn.execute(COUNTER)
        for t in range(TABLES):
            table = sql.Identifier(f"bench_t{t:03d}")
            conn.execute(
                sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, body text)").format(table)
            )
            first = t * rows_per_table
            with (
                conn.cursor() as cur,
                cur.copy(sql.SQL("COPY {} (id, body) FROM STDIN").format(table)) as copy,
            ):
                for i in range(first, first + rows_per_table):
                    copy.write_row((i, texts[i]))
            conn.execute(
                "SELECT embeddings.watch(%s::regclass, 'body', model => %s)",
                (f"bench_t{t:03d}", million.MODEL),
            )
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER bench_count_write AFTER UPDATE OF embedding ON {}"
                    " FOR EACH ROW WHEN (NEW.embedding IS NOT NULL)"
                    " EXECUTE FUNCTION bench_count_write()"
                ).format(table)
            )


class ActivitySampler:
    """Samples pg_stat_activity for the workers' backends every `interval` seconds."""

    def __init__(self, dsn: str, interval: float = 0.25) -> None:
        self.dsn = dsn
        self.interval = interval
        # (seconds, backends, active, waiting on a lock, rows written so far)
        self.samples: list[tuple[float, int, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ActivitySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def steady_rate(self, rows: int) -> float:
        """Rows/s between 10% and 90% of the rows written: no process start or tail in it."""
        low = next((s for s in self.samples if s[4] >= rows * 0.1), self.samples[0])
        high = next((s for s in self.samples if s[4] >= rows * 0.9), self.samples[-1])
        return (high[4] - low[4]) / max(high[0] - low[0], 1e-6)

    def _run(self) -> None:
        started = time.perf_counter()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(self.interval):
                row = conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE state = 'active'),"
                    " count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock')"
                    " FROM pg_stat_activity WHERE application_name = 'embed-worker'"
                    " AND datname = current_database()"
                ).fetchone()
                written = conn.execute("SELECT count(*) FROM bench_writes").fetchone()
                assert row is not None and written is not None
                self.samples.append(
                    (
                        time.perf_counter() - started,
                        int(row[0]),
                        int(row[1]),
                        int(row[2]),
                        int(written[0]),
                    )
                )


def drain(dsn: str, model_path: Path, workers: int, rows: int) -> dict[str, Any]:
    env = worker_process.worker_env(dsn, million.MODEL, model_path, EMBED_THREADS=1)
    with ActivitySampler(dsn) as activity:
        started = time.perf_counter()
        processes = [worker_process.start(env, "--once", "--no-progress") for _ in range(workers)]
        costs = [worker_process.wait(p, started) for p in processes]
    wall = max(c.wall_s for c in costs)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (tbl, id)) FROM bench_writes"
        ).fetchone()
        failed = conn.execute("SELECT count(*) FROM embeddings.failures").fetchone()
        queued = conn.execute(worker_process.QUEUED_JOBS).fetchone()
    assert row is not None and failed is not None and queued is not None
    writes, distinct = int(row[0]), int(row[1])
    if any(c.returncode != 0 for c in costs) or distinct != rows or queued[0] != 0:
        raise RuntimeError(
            f"drain incomplete: {distinct}/{rows} rows, {queued[0]} jobs left,"
            f" exit codes {[c.returncode for c in costs]}"
        )
    working = [s for s in activity.samples if 0 < s[4] < rows]  # between first and last write
    active = sum(s[2] for s in working)
    return {
        "workers": workers,
        "threads_per_worker": 1,
        "rows": rows,
        "wall_s": round(wall, 2),
        "rows_per_s": round(activity.steady_rate(rows), 1),
        "rows_per_s_with_process_start": round(rows / wall, 1),
        "vector_writes": writes,
        "rows_written_twice": writes - distinct,
        "failed": int(failed[0]),
        "connections_per_worker_max": round(max(s[1] for s in working) / workers, 2),
        "connections_per_worker_median": round(
            statistics.median(s[1] for s in working) / workers, 2
        ),
        "lock_wait_share_of_active_backends": round(
            sum(s[3] for s in working) / active if active else 0.0, 4
        ),
        "activity_samples": len(working),
        "peak_rss_mb_per_worker": round(max(c.peak_rss_mb for c in costs), 1),
    }


def run(
    cluster_dsn: Any,
    tokenizer_dir: Path,
    rows_per_table: int = 200,
    counts: tuple[int, ...] = (1, 2, 4, 8),
    rounds: int = 2,
) -> dict[str, Any]:
    """`cluster_dsn()` gives a fresh migrated database for each drain."""
    model_path = million.tiny_model(tokenizer_dir).parent
    rows = TABLES * rows_per_table
    samples: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for _ in range(rounds):  # alternating worker counts, round after round
        for n in counts:
            dsn = cluster_dsn()
            prepare(dsn, rows_per_table)
            samples[n].append(drain(dsn, model_path, n, rows))
    result: dict[str, Any] = {
        "tables": TABLES,
        "rows_per_table": rows_per_table,
        "model": million.MODEL,
        "database": "on the same 2-core machine as the workers",
        "counter": "a row trigger on each table inserts one bench_writes row per vector write",
    }
    base = None
    for n in counts:
        ordered = sorted(samples[n], key=lambda s: s["rows_per_s"])
        chosen = dict(ordered[(len(ordered) - 1) // 2])
        chosen["rounds_rows_per_s"] = [s["rows_per_s"] for s in samples[n]]
        chosen["rows_written_twice"] = sum(s["rows_written_twice"] for s in samples[n])
        base = base or chosen["rows_per_s"]
        chosen["vs_1_worker"] = round(chosen["rows_per_s"] / base, 2)
        result[f"{n} workers"] = chosen
    return result

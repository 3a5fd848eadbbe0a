"""An idle worker: how fast it notices a new row, and what waiting costs while nothing comes.

With a tiny fast model (the figures are about waiting, not inference), one worker, and the
database's own clock at both ends (clock_timestamp() at the INSERT, and in a trigger when the
vector lands):

- insert-to-vector latency of single rows, each inserted after the previous one landed and a
  random pause, so that the worker is idle every time; the same with each INSERT in a prepared
  transaction (PREPARE TRANSACTION, then COMMIT PREPARED: XA/JTA applications); and of a few
  rows each inserted after QUIET seconds without any (a worker waiting in the database looks
  less often after a quiet spell: worker/process/wakeups.py);
- CPU of the idle worker with nothing to do, its own process and the database backends serving
  its connections, and the transactions per second it runs: right after work (for QUIET - 2
  seconds), then over IDLE_SECONDS once quiet, then as long again while another session commits
  OTHER_WRITES_PER_S single-row INSERTs into an unwatched table (every commit is news to a
  worker that looks only when some transaction has ended);
- both again through PgBouncer in transaction mode (one server connection), its CPU included.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench import cputime, sampling, worker_process
from bench.sampling import latency_summary
from tests.support import modelgen, pgbouncer
from tests.support.cluster import Cluster
from worker.process import wakeups

Conn = psycopg.Connection[Any]
MODEL = "tiny-a"
IDLE_SECONDS = 30.0
QUIET = float(getattr(wakeups, "QUIET_SECONDS", 10.0))  # worker/process/wakeups.py (10 s)
OTHER_WRITES_PER_S = 200

SETUP = sampling.stamped_table("bench_idle") + (
    "CREATE TABLE bench_idle_other (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz DEFAULT now());"
)


def run(
    cluster: Cluster, dsn: str, tokenizer_dir: Path, samples: int = 100, seed: int = 0
) -> dict[str, Any]:
    _allow_prepared_transactions(cluster)
    model_dir = modelgen.cached_model_dir(
        Path("/tmp/embed-worker-bench-models"),
        name=MODEL,
        tokenizer_dir=tokenizer_dir,
        seed=1,
        pooling="mean",
        **modelgen.TINY,
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
            " VALUES (%s, %s, 512, 'mean') ON CONFLICT DO NOTHING",
            (MODEL, modelgen.TINY["hidden"]),
        )
        conn.execute(SETUP)
        conn.execute("SELECT embeddings.watch('bench_idle', 'body', model => %s)", (MODEL,))
        conn.execute(sampling.stamp_trigger("bench_idle"))
        result: dict[str, Any] = {
            "model": f"{MODEL} (random weights, {modelgen.TINY['hidden']}-d, 2 layers)",
            "idle_seconds": IDLE_SECONDS,
        }
        result["direct"] = _measure(conn, dsn, model_dir.parent, samples, random.Random(seed))
        params = conninfo_to_dict(dsn)
        if reason := pgbouncer.available():
            result["pgbouncer_transaction_mode"] = {"skipped": reason}
        else:
            with pgbouncer.transaction_pooler(
                int(str(params["port"])), [str(params.get("user") or "postgres")]
            ) as port:
                pooled = make_conninfo(dsn, port=str(port))
                result["pgbouncer_transaction_mode"] = _measure(
                    conn, pooled, model_dir.parent, samples, random.Random(seed), pooler=True
                )
    return result


def _allow_prepared_transactions(cluster: Cluster) -> None:
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
        row = conn.execute("SHOW max_prepared_transactions").fetchone()
        if row is not None and int(row[0]) > 0:
            return
        conn.execute("ALTER SYSTEM SET max_prepared_transactions = 16")
    cluster.stop()
    cluster.start()


def _measure(
    conn: Conn,
    worker_dsn: str,
    model_path: Path,
    samples: int,
    rng: random.Random,
    *,
    pooler: bool = False,
) -> dict[str, Any]:
    env = worker_process.worker_env(worker_dsn, MODEL, model_path, EMBED_POLL_SECONDS=30)
    worker = worker_process.start(env)
    try:
        _insert(conn, "warm up", timeout=300)  # the model is loaded, the worker settled
        plain = [_insert(conn, f"note {i}: the quick brown fox") for i in _paced(samples, rng)]
        try:
            prepared = [
                _insert(conn, f"prepared note {i}: the lazy dog", prepared=True)
                for i in _paced(samples, rng)
            ]
            two_phase: dict[str, Any] = latency_summary(prepared, mean=True)
        except psycopg.Error as exc:
            two_phase = {"error": str(exc).strip()}
        time.sleep(1)  # whatever the last row started has settled
        recent = _idle_cost(conn, worker.pid, pooler=pooler, seconds=QUIET - 2)
        time.sleep(3)
        cost = _idle_cost(conn, worker.pid, pooler=pooler)
        busy_db = _idle_cost(conn, worker.pid, pooler=pooler, others_write=True)
        after_quiet = []
        for i in range(max(samples // 10, 5)):
            time.sleep(QUIET + 1)
            after_quiet.append(_insert(conn, f"note {i} after a quiet spell"))
    finally:
        worker.terminate()
        worker.wait(30)
    return {
        "latency": latency_summary(plain, mean=True),
        "latency_two_phase": two_phase,
        "latency_after_quiet": latency_summary(after_quiet, mean=True),
        "idle_after_work": recent,
        "idle": cost,
        "idle_while_others_write": busy_db,
    }


def _paced(samples: int, rng: random.Random) -> Iterator[int]:
    """Sample numbers; between two samples a random pause (the worker goes idle)."""
    for i in range(samples):
        if i:
            time.sleep(rng.uniform(0.05, 0.15))
        yield i


def _insert(conn: Conn, body: str, *, prepared: bool = False, timeout: float = 30) -> float:
    """Inserts one row (in a prepared transaction, committed at once); its latency in ms."""
    if prepared:
        gid = f"bench-{uuid.uuid4().hex[:12]}"
        conn.execute("BEGIN")
        try:
            row = conn.execute(
                "INSERT INTO bench_idle (body) VALUES (%s) RETURNING id", (body,)
            ).fetchone()
            conn.execute(f"PREPARE TRANSACTION '{gid}'")
        except psycopg.Error:
            conn.execute("ROLLBACK")
            raise
        conn.execute(f"COMMIT PREPARED '{gid}'")
    else:
        row = conn.execute(
            "INSERT INTO bench_idle (body) VALUES (%s) RETURNING id", (body,)
        ).fetchone()
    assert row is not None
    return sampling.embedded_latency(conn, "bench_idle", row[0], timeout, poll=0.002)


def _pgbouncer_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "pgbouncer":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _idle_cost(
    conn: Conn,
    worker_pid: int,
    *,
    pooler: bool,
    others_write: bool = False,
    seconds: float = IDLE_SECONDS,
) -> dict[str, Any]:
    """CPU over `seconds` of nothing to do: the worker process, the backends of its
    connections (behind the pooler: the pooler's server connections) and the pooler; with
    `others_write`, while another session writes an unwatched table."""
    backends = [
        int(r[0])
        for r in conn.execute(
            # Behind the pooler, its server connections (nothing else runs meanwhile).
            "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            " AND (application_name = 'embed-worker' OR (%s AND backend_type = 'client backend'))",
            (pooler,),
        )
    ]
    others = _pgbouncer_pids() if pooler else []
    stop = threading.Event()
    writer = threading.Thread(target=_write_elsewhere, args=(conn.info.dsn, stop), daemon=True)
    xacts = _committed(conn)
    if others_write:
        writer.start()
    before = (cputime.process_seconds(worker_pid), sum(map(cputime.process_seconds, backends)))
    pooled_before = sum(map(cputime.process_seconds, others))
    started = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - started
    after = (cputime.process_seconds(worker_pid), sum(map(cputime.process_seconds, backends)))
    pooled_after = sum(map(cputime.process_seconds, others))
    stop.set()
    if others_write:
        writer.join()
    written = writer.native_id is not None and _count(conn, "SELECT count(*) FROM bench_idle_other")
    xacts = _committed(conn) - xacts - 2 - (written or 0)  # less the counting, the other writes

    def percent(seconds: float) -> float:
        return round(100 * seconds / wall, 2)

    cost: dict[str, Any] = {
        "worker_process_cpu_percent": percent(after[0] - before[0]),
        "database_backends_cpu_percent": percent(after[1] - before[1]),
        "database_backends": len(backends),
        "transactions_per_s": round(xacts / wall, 1),
    }
    if others_write:
        cost["other_writes_per_s"] = round((written or 0) / wall, 1)
    if pooler:
        cost["pgbouncer_cpu_percent"] = percent(pooled_after - pooled_before)
    return cost


def _write_elsewhere(dsn: str, stop: threading.Event) -> None:
    """Single-row INSERTs into an unwatched table, OTHER_WRITES_PER_S of them a second."""
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("TRUNCATE bench_idle_other")
        while not stop.wait(1 / OTHER_WRITES_PER_S):
            other.execute("INSERT INTO bench_idle_other DEFAULT VALUES")


def _count(conn: Conn, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _committed(conn: Conn) -> int:
    conn.execute("SELECT pg_stat_force_next_flush()")
    time.sleep(1.1)  # other backends flush their counters at most once a second
    row = conn.execute(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database"
        " WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])

"""Priority lanes and model changes, measured with a tiny fast model (so that 20k rows fit in
minutes; the figures are about queueing, not inference).

- Insert-to-vector latency of single live rows while a 20k-row backfill runs (watch()'s initial
  enqueue, on the backfill lane), against the same latency with the worker idle, in one run
  with one worker. Both ends are stamped by the database's clock. Target: p50 under backfill
  within 2x the idle p50 plus one batch time.
- Side by side, what one FIFO queue would do: the same 20k rows queued on the live lane, then
  one live row inserted behind them (its insert-to-vector latency).
- Wall time of a 20k-row model change: from watch() with another model to the swap.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import sampling, worker_process
from bench.sampling import latency_summary
from tests.support import modelgen

Conn = psycopg.Connection[Any]
MODELS = ("tiny-a", "tiny-b")
BATCH = 64


def _wait(condition: Any, timeout: float, what: str) -> None:
    # every 2 ms: the latencies measured here are a few milliseconds
    sampling.wait_until(condition, timeout, what, poll=0.002)


SETUP = sampling.stamped_table("bench_lanes", "live boolean NOT NULL DEFAULT false")


def run(dsn: str, tokenizer_dir: Path, rows: int = 20000, samples: int = 100) -> dict[str, Any]:
    root = Path(tempfile.gettempdir()) / "embed-worker-bench-models"
    dirs = [
        modelgen.cached_model_dir(
            root, name=name, tokenizer_dir=tokenizer_dir, seed=seed, pooling="mean", **modelgen.TINY
        )
        for seed, name in enumerate(MODELS, start=1)
    ]
    model_path = ":".join(str(d.parent) for d in dirs)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in MODELS:
            conn.execute(
                "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
                " VALUES (%s, %s, 512, 'mean') ON CONFLICT DO NOTHING",
                (name, modelgen.TINY["hidden"]),
            )
        conn.execute("DROP TABLE IF EXISTS bench_lanes")
        conn.execute("DROP FUNCTION IF EXISTS bench_lanes_stamp()")
        conn.execute(SETUP)
        conn.execute(
            "INSERT INTO bench_lanes (body) SELECT 'Backfill document ' || i || ': ' ||"
            " repeat('the quick brown fox jumps over the lazy dog ', 1 + i %% 4)"
            " FROM generate_series(1, %s) i",
            (rows,),
        )
        env = worker_process.worker_env(
            dsn, MODELS[0], Path(model_path), EMBED_POLL_SECONDS=30, EMBED_BATCH_SIZE=BATCH
        )
        worker = worker_process.start(env)
        try:
            # watch() creates the column and enqueues the backfill; the stamp trigger needs it.
            conn.execute("BEGIN")
            conn.execute(
                "SELECT embeddings.watch('bench_lanes', 'body', model => %s)", (MODELS[0],)
            )
            conn.execute(sampling.stamp_trigger("bench_lanes"))
            conn.execute("COMMIT")
            started = time.monotonic()
            under = _sample(conn, samples, until_backfill_done=True)
            backfill_rows = _pending_backfill(conn)
            _wait(lambda: _pending_backfill(conn) == 0, 1800, "the backfill to drain")
            drain_s = time.monotonic() - started
            idle = _sample(conn, samples, until_backfill_done=False)
            fifo = _behind_one_queue(conn)
            conn.execute("DROP TRIGGER stamp ON bench_lanes")  # it depends on the old column
            change = _model_change(conn, rows)
        finally:
            worker.terminate()
            worker.wait(30)
    rows_per_s = rows / drain_s
    batch_ms = BATCH / rows_per_s * 1000
    idle_summary, under_summary = latency_summary(idle), latency_summary(under)
    target_ms = 2 * float(idle_summary.get("p50_ms", 0.0)) + batch_ms
    result: dict[str, Any] = {
        "model": f"{MODELS[0]} (random weights, {modelgen.TINY['hidden']}-d, 2 layers)",
        "batch_size": BATCH,
        "backfill_rows": rows,
        "backfill_drain_s": round(drain_s, 1),
        "backfill_rows_per_s": round(rows_per_s, 1),
        "one_batch_ms": round(batch_ms, 1),
        "idle": idle_summary,
        "during_backfill": under_summary,
        "backfill_rows_left_after_sampling": backfill_rows,
        "one_fifo_queue": fifo,
        "model_change": change,
    }
    result["target_p50_ms"] = round(target_ms, 1)
    result["target_met"] = float(under_summary.get("p50_ms", float("inf"))) <= target_ms
    return result


def _sample(
    conn: Conn, samples: int, *, until_backfill_done: bool, timeout: float = 60
) -> list[float]:
    """Live single-row inserts, each after the previous one landed; stops early when sampling
    under backfill and the backfill is gone."""
    return sampling.live_latencies(
        conn,
        "bench_lanes",
        "INSERT INTO bench_lanes (body, live) VALUES (%s, true) RETURNING id",
        "written by the application while the backfill runs.",
        samples,
        go_on=lambda: not (until_backfill_done and _pending_backfill(conn) == 0),
        pause=lambda: 0.05,
        timeout=timeout,
        poll=0.002,  # the latencies measured here are a few milliseconds
    )


def _behind_one_queue(conn: Conn) -> dict[str, Any]:
    """Every row queued again on the live lane (as one FIFO queue would hold a backfill), then
    one live row behind them: its latency, and the wait for the whole queue to drain."""
    conn.execute(
        "SELECT embeddings_internal.enqueue_keys(t.id, array_agg(b.id ORDER BY b.id), 0, 'live')"
        " FROM bench_lanes b, embeddings.targets t GROUP BY t.id"
    )
    started = time.monotonic()
    latency = _sample(conn, 1, until_backfill_done=False, timeout=1800)
    _wait(lambda: _pending(conn) == 0, 1800, "the FIFO queue to drain")
    return {
        "queued_rows": _count(conn) - 1,
        "live_row_ms": round(latency[0], 1),
        "drain_s": round(time.monotonic() - started, 1),
    }


def _pending(conn: Conn) -> int:
    row = conn.execute("SELECT pending_jobs FROM embeddings.status").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _count(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM bench_lanes").fetchone()
    return int(row[0]) if row else 0


def _model_change(conn: Conn, rows: int) -> dict[str, Any]:
    started = time.monotonic()
    conn.execute("SELECT embeddings.watch('bench_lanes', 'body', model => %s)", (MODELS[1],))
    _wait(
        lambda: conn.execute("SELECT model FROM embeddings.targets").fetchone() == (MODELS[1],),
        1800,
        "the model change",
    )
    wall = time.monotonic() - started
    return {"rows": rows, "wall_s": round(wall, 1), "rows_per_s": round(rows / wall, 1)}


def _pending_backfill(conn: Conn) -> int:
    row = conn.execute("SELECT pending_backfill FROM embeddings.status").fetchone()
    return int(row[0]) if row and row[0] is not None else 0

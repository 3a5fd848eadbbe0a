"""A million-row drain with a tiny random-weight model, so that the pipeline and the database,
not inference, set the pace: rows/s in each tenth of the drain (it should stay flat), the
worker's RSS all along, and the table, index and WAL bytes each row cost.

Not part of the default `make bench` (it takes about ten minutes here):
`python -m bench --only million [--million-rows N]`.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import corpus, worker_process
from tests.support.modelgen import TINY, cached_model_dir

MODEL = "tiny-bench"  # 2 layers, 32 dimensions: milliseconds per batch


def tiny_model(tokenizer_dir: Path) -> Path:
    """The tiny model's directory (built once, cached); put its parent on EMBED_MODEL_PATH."""
    return cached_model_dir(
        Path(tempfile.gettempdir()) / "embed-worker-bench-models",
        name=MODEL,
        tokenizer_dir=tokenizer_dir,
        **TINY,
    )


def register_model(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES (%s, %s, 512, 'mean') ON CONFLICT (name) DO NOTHING",
        (MODEL, TINY["hidden"]),
    )


def short_texts(n: int, offset: int = 0) -> list[str]:
    """n distinct short texts: the first line of a standard library docstring and a number."""
    pool = [doc.split("\n", 1)[0][:160] for doc in corpus.stdlib_docstrings()]
    return [f"{pool[i % len(pool)]} (#{i + offset})" for i in range(n)]


def batches(log: Path) -> list[dict[str, Any]]:
    """The worker's per-batch log records (JSON log format), in order."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if str(record.get("message", "")).startswith("batch "):
            record["at"] = datetime.fromisoformat(record["ts"]).timestamp()
            found.append(record)
    return found


def tenths(records: list[dict[str, Any]], rows: int, started: float) -> list[dict[str, Any]]:
    """rows/s and the median stage times in each tenth of the rows, from the batch log."""
    result: list[dict[str, Any]] = []
    done, edge, last_at, bucket = 0, 1, started, []
    for record in records:
        done += int(record.get("embedded", 0))
        bucket.append(record)
        if done >= rows * edge / 10 or record is records[-1]:
            at = record["at"]
            result.append(
                {
                    "tenth": edge,
                    "rows": sum(int(r.get("embedded", 0)) for r in bucket),
                    "rows_per_s": round(
                        sum(int(r.get("embedded", 0)) for r in bucket) / max(at - last_at, 1e-6),
                        1,
                    ),
                    "median_load_ms": statistics.median(float(r["load_ms"]) for r in bucket),
                    "median_embed_ms": statistics.median(float(r["embed_ms"]) for r in bucket),
                    "median_write_ms": statistics.median(float(r["write_ms"]) for r in bucket),
                }
            )
            edge, last_at, bucket = edge + 1, at, []
    return result


def sizes(conn: psycopg.Connection[Any], table: str) -> dict[str, int]:
    row = conn.execute(
        "SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass),"
        " pg_relation_size('pgmq.q_embedding_jobs') + pg_indexes_size('pgmq.q_embedding_jobs'),"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
        (table, table),
    ).fetchone()
    assert row is not None
    return {"table": row[0], "indexes": row[1], "queue": row[2], "wal": row[3]}


def run(dsn: str, tokenizer_dir: Path, rows: int = 1_000_000) -> dict[str, Any]:
    model_dir = tiny_model(tokenizer_dir)
    texts = short_texts(rows)
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_model(conn)
        conn.execute("CREATE TABLE bench_million (id bigint PRIMARY KEY, body text NOT NULL)")
        with conn.cursor() as cur, cur.copy("COPY bench_million (id, body) FROM STDIN") as copy:
            for i, text in enumerate(texts):
                copy.write_row((i, text))
        del texts
        conn.execute("VACUUM ANALYZE bench_million")
        before_watch = sizes(conn, "bench_million")
        started = time.perf_counter()
        conn.execute("SELECT embeddings.watch('bench_million', 'body', model => %s)", (MODEL,))
        watch_s = time.perf_counter() - started
        conn.execute("CHECKPOINT")
        before = sizes(conn, "bench_million")
        log = Path(tempfile.mkstemp(prefix="bench-million-", suffix=".log")[1])
        env = worker_process.worker_env(
            dsn,
            MODEL,
            model_dir.parent,
            EMBED_LOG_LEVEL="INFO",
            EMBED_LOG_FORMAT="json",
        )
        wall_started = time.time()
        started = time.perf_counter()
        process = worker_process.start(env, "--once", "--no-progress", log=log)
        rss: list[tuple[float, float]] = []
        while process.poll() is None:
            if (value := worker_process.rss_mb(process.pid)) is not None:
                rss.append((time.perf_counter() - started, value))
            time.sleep(1.0)
        wall = time.perf_counter() - started
        after = sizes(conn, "bench_million")
        row = conn.execute("SELECT count(embedding), count(*) FROM bench_million").fetchone()
        assert row is not None
        if process.returncode != 0 or row[0] != rows:
            raise RuntimeError(f"drain incomplete: {row[0]}/{row[1]}, exit {process.returncode}")
    records = batches(log)
    log.unlink()
    per_tenth = tenths(records, rows, wall_started)
    rates = [t["rows_per_s"] for t in per_tenth]
    quarter = max(len(rss) // 4, 1)
    return {
        "rows": rows,
        "model": f"{MODEL}: random weights, {TINY['layers']} layers, {TINY['hidden']} dimensions",
        "texts": "first line (<= 160 chars) of a stdlib docstring + a distinct number",
        "worker": "one `embed-worker run --once`, default threads and batch size (128)",
        "watch_s": round(watch_s, 1),
        "wall_s": round(wall, 1),
        "rows_per_s": round(rows / wall, 1),
        "tenths": per_tenth,
        "last_tenth_vs_first": round(rates[-1] / rates[0], 3) if rates else None,
        "slowest_tenth_vs_median": round(min(rates) / statistics.median(rates), 3),
        "rss_mb_first_quarter_max": round(max(r for _, r in rss[:quarter]), 1),
        "rss_mb_last_quarter_max": round(max(r for _, r in rss[-quarter:]), 1),
        "rss_mb_max": round(max(r for _, r in rss), 1),
        "bytes_per_row": {
            "table_before_watch": round(before_watch["table"] / rows, 1),
            "table_after_drain": round(after["table"] / rows, 1),
            "indexes_after_drain (pkey + hnsw)": round(after["indexes"] / rows, 1),
            "wal_during_drain": round((after["wal"] - before["wal"]) / rows, 1),
            "wal_during_watch": round((before["wal"] - before_watch["wal"]) / rows, 1),
            "queue_table_after_drain": round(after["queue"] / rows, 2),
        },
        "rss_samples": [(round(t), round(r, 1)) for t, r in rss[:: max(len(rss) // 60, 1)]],
    }

"""Bounded waits (issue 46), before and after, in one run: what the lock timeouts, the bounds of
a table owner's code and the write's row locks taken SKIP LOCKED cost.

    python -m bench.bounded_waits BEFORE_CHECKOUT [--rounds 3] [--seconds 10]

BEFORE_CHECKOUT is a checkout of the change's parent with its own .venv (`make install`). Two
databases of one throwaway cluster, each migrated by its own checkout's `embed-worker migrate`;
the variants alternate within each round (the machine's speed drifts), and each figure is the
median of the rounds, with the median of the per-round ratios after / before:

- oltp: single-row INSERT and UPDATE TPS (pgbench, 8 clients, `seconds` each) of an unwatched
  table, a watched one and one watched with a side table, with the server's CPU per
  transaction (bench/oltp.py's scripts and tables); and whether the trigger functions the two
  schemas generate for the same tables are the same text.
- write: the write stage alone, `write.write()` of a batch of 128 rows of a row-store target
  of 10,000 rows, with its HNSW index (what a write costs) and without it (what is left: the
  statements and round trips around the vectors), and its load stage `stages.load()`, each in a
  child process of each checkout's own Python (the same batch shape, the same database state).
- drain: `embed-worker run --once` of each checkout over 3,000 plain text rows with a tiny
  random-weight model (2 layers, 32 dimensions: inference is a small part of the work, so the
  database's is what shows), rows per second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
AFTER = HERE.parents[1]
WRITE_ROWS = 128
TABLE_ROWS = 10_000
DRAIN_ROWS = 3_000
TINY = "tiny-bench"


# --- the child: one checkout's write and load stages -------------------------------------------
def child(dsn: str, writes: int, table: str) -> dict[str, list[float]]:
    """Times `writes` loads and writes of a WRITE_ROWS batch with this interpreter's `worker`
    (the checkout it was installed from). Imports only what both checkouts have."""
    import numpy as np

    from worker import db
    from worker.config import Settings
    from worker.pipeline import jobs, stages, write
    from worker.pipeline.batch import RowState
    from worker.pipeline.targets import TargetRegistry

    settings = Settings(database_url=dsn, batch_size=WRITE_ROWS)
    queue = jobs.Queue(settings.queue)
    registry = TargetRegistry()
    rng = np.random.default_rng(0)
    conn = db.connect(dsn)
    db.register_vector_types(conn)
    timings: dict[str, list[float]] = {"load_ms": [], "write_ms": []}
    for i in range(writes + 1):  # the first warms the caches
        conn.execute(
            f"UPDATE {table} SET body = 'edit ' || %s || ' of ' || id WHERE id <= %s",
            (i, WRITE_ROWS),
        )
        batch = stages.read(conn, queue, registry, settings)
        assert batch is not None
        started = time.perf_counter()
        stages.load(conn, batch, None)  # type: ignore[arg-type]  # (no chunked target)
        loaded = time.perf_counter()
        for row in batch.rows.values():
            assert row.state is RowState.READY, row.state
            vector = rng.standard_normal(384).astype(np.float32)
            row.vector = vector / np.linalg.norm(vector)
            row.state = RowState.EMBEDDED
        written = time.perf_counter()
        write.write(conn, queue, batch, settings)
        done = time.perf_counter()
        assert all(r.state is RowState.WRITTEN for r in batch.rows.values())
        if i:
            timings["load_ms"].append((loaded - started) * 1000)
            timings["write_ms"].append((done - written) * 1000)
    conn.close()
    return timings


# --- the parent --------------------------------------------------------------------------------
def _python(checkout: Path) -> Path:
    return checkout / ".venv" / "bin" / "python"


def _migrate(checkout: Path, dsn: str) -> None:
    subprocess.run(
        [str(checkout / ".venv" / "bin" / "embed-worker"), "migrate"],
        env={**os.environ, "DATABASE_URL": dsn},
        cwd=checkout,
        check=True,
        capture_output=True,
    )


def _trigger_functions(dsn: str, table: str) -> list[str]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT replace(pg_get_functiondef(p.oid), 'embeddings_' || t.id || '_', 'embeddings_N_')"
            " FROM embeddings.targets t JOIN pg_proc p ON p.pronamespace = 'embeddings'::regnamespace"
            " AND p.proname LIKE 'embeddings_' || t.id || '\\_%%'"
            " AND p.prorettype = 'trigger'::regtype WHERE t.source = %s::regclass ORDER BY 1",
            (table,),
        ).fetchall()
    return [r[0] for r in rows]


def _ratio(after: list[float], before: list[float]) -> float:
    return round(statistics.median(a / b for a, b in zip(after, before, strict=True)), 3)


def oltp(dsns: dict[str, str], rounds: int, seconds: int) -> dict[str, Any]:
    import psycopg

    from bench import cputime
    from bench import oltp as bench_oltp

    variants = ("unwatched", "watched", "watched_side")
    tps: dict[str, dict[str, dict[str, list[float]]]] = {}
    cpu: dict[str, dict[str, dict[str, list[float]]]] = {}
    for dsn in dsns.values():
        with psycopg.connect(dsn, autocommit=True) as conn:
            for variant in variants:
                bench_oltp._table(conn, f"oltp_{variant}", variant)
    same = {
        v: _trigger_functions(dsns["before"], f"oltp_{v}")
        == _trigger_functions(dsns["after"], f"oltp_{v}")
        for v in variants[1:]
    }
    with tempfile.TemporaryDirectory() as tmp:
        for workload, template in bench_oltp.SCRIPTS.items():
            for r in range(rounds):
                order = list(dsns.items()) if r % 2 == 0 else list(reversed(dsns.items()))
                for name, dsn in order:
                    with psycopg.connect(dsn, autocommit=True) as conn:
                        postmaster = cputime.postmaster(conn)
                        for variant in variants:
                            script = Path(tmp) / f"{workload}_{variant}.sql"
                            script.write_text(template.format(table=f"oltp_{variant}"))
                            conn.execute("CHECKPOINT")
                            before = cputime.server_seconds(postmaster)
                            rate = bench_oltp._pgbench(dsn, script, 8, seconds)
                            after = cputime.server_seconds(postmaster)
                            tps.setdefault(workload, {}).setdefault(name, {}).setdefault(
                                variant, []
                            ).append(rate)
                            if before is not None and after is not None and rate > 0:
                                cpu.setdefault(workload, {}).setdefault(name, {}).setdefault(
                                    variant, []
                                ).append((after - before) / (rate * seconds) * 1e6)
                            conn.execute("SELECT pgmq.purge_queue('embedding_jobs')")
                            conn.execute("TRUNCATE embeddings.inbox")
    out: dict[str, Any] = {"trigger_functions_identical": same}
    for workload, per in tps.items():
        result: dict[str, Any] = {}
        for name, runs in per.items():
            result[name] = {
                v: {
                    "median_tps": round(statistics.median(t)),
                    "watched_over_unwatched": round(
                        statistics.median(t) / statistics.median(runs["unwatched"]), 3
                    ),
                    "server_cpu_us_per_tx": round(statistics.median(cpu[workload][name][v]), 1)
                    if cpu.get(workload, {}).get(name, {}).get(v)
                    else None,
                    "runs_tps": [round(x) for x in t],
                }
                for v, t in runs.items()
            }
        result["after_over_before_tps"] = {
            v: _ratio(per["after"][v], per["before"][v]) for v in variants
        }
        out[workload] = result
    return out


WRITE_TABLES = {"with HNSW": "bench_write", "without an index": "bench_write_plain"}


def _write_table(dsn: str, table: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, body text)")
        conn.execute(
            f"INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, %s) g",
            (TABLE_ROWS,),
        )
        conn.execute(f"SELECT embeddings.watch('{table}', 'body', model => 'gte-small')")
        if table == WRITE_TABLES["without an index"]:
            index = conn.execute(
                f"SELECT embeddings_internal.hnsw_index('{table}', 'embedding')::text"
            )
            row = index.fetchone()
            assert row is not None and row[0] is not None
            conn.execute(f"DROP INDEX {row[0]}")
        conn.execute(
            f"UPDATE {table} SET embedding = ARRAY(SELECT random() - 0.5 + 0 * id"
            " FROM generate_series(1, 384))::real[]::halfvec(384)"
        )
        conn.execute("SELECT pgmq.purge_queue('embedding_jobs_backfill')")
        conn.execute("SELECT pgmq.purge_queue('embedding_jobs')")
        conn.execute("TRUNCATE embeddings.inbox")
        conn.execute(f"VACUUM ANALYZE {table}")


def write_stage(dsns: dict[str, str], checkouts: dict[str, Path], rounds: int) -> dict[str, Any]:
    for dsn in dsns.values():
        for table in WRITE_TABLES.values():
            _write_table(dsn, table)
    result: dict[str, Any] = {"batch_rows": WRITE_ROWS, "table_rows": TABLE_ROWS}
    for shape, table in WRITE_TABLES.items():
        medians: dict[str, dict[str, list[float]]] = {
            n: {"load_ms": [], "write_ms": []} for n in dsns
        }
        for r in range(rounds):
            for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
                found = subprocess.run(
                    [
                        str(_python(checkouts[name])),
                        str(HERE),
                        "--child",
                        dsns[name],
                        "--writes",
                        "30",
                        "--table",
                        table,
                    ],
                    cwd=checkouts[name],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                timings = json.loads(found.stdout.strip().splitlines()[-1])
                for key, values in timings.items():
                    medians[name][key].append(statistics.median(values))
        result[shape] = {
            key: {
                "before_ms": round(statistics.median(medians["before"][key]), 2),
                "after_ms": round(statistics.median(medians["after"][key]), 2),
                "after_over_before": _ratio(medians["after"][key], medians["before"][key]),
                "runs_before_ms": [round(x, 2) for x in medians["before"][key]],
                "runs_after_ms": [round(x, 2) for x in medians["after"][key]],
            }
            for key in ("load_ms", "write_ms")
        }
    return result


def drain(dsns: dict[str, str], checkouts: dict[str, Path], rounds: int) -> dict[str, Any]:
    import psycopg

    from tests.support import modelgen

    shared = Path(os.environ.get("EMBED_TEST_MODELS") or AFTER.parent / "shared" / "models")
    model_dir = modelgen.cached_model_dir(
        Path(tempfile.gettempdir()) / "embed-worker-bench-models",
        name=TINY,
        tokenizer_dir=shared / "gte-small",
        seed=1,
        pooling="mean",
        **modelgen.TINY,
    )
    rates: dict[str, list[float]] = {n: [] for n in dsns}
    for dsn in dsns.values():
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
                " VALUES (%s, %s, 512, 'mean') ON CONFLICT DO NOTHING",
                (TINY, modelgen.TINY["hidden"]),
            )
    for r in range(rounds):
        for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
            dsn = dsns[name]
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS bench_drain")
                conn.execute("CREATE TABLE bench_drain (id integer PRIMARY KEY, body text)")
                conn.execute("SELECT embeddings.watch('bench_drain', 'body', model => %s)", (TINY,))
                conn.execute(
                    "INSERT INTO bench_drain SELECT g, 'plain text row ' || g || ': ' ||"
                    " repeat('the quick brown fox jumps over the lazy dog ', 1 + g %% 3)"
                    " FROM generate_series(1, %s) g",
                    (DRAIN_ROWS,),
                )
            env = {
                **os.environ,
                "DATABASE_URL": dsn,
                "EMBED_MODEL": TINY,
                "EMBED_MODEL_PATH": str(model_dir.parent),
                "EMBED_LOG_LEVEL": "WARNING",
            }
            started = time.perf_counter()
            subprocess.run(
                [str(checkouts[name] / ".venv" / "bin" / "embed-worker"), "run", "--once"],
                env=env,
                cwd=checkouts[name],
                check=True,
                capture_output=True,
            )
            wall = time.perf_counter() - started
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute("SELECT count(embedding) FROM bench_drain").fetchone()
            assert row == (DRAIN_ROWS,), row
            rates[name].append(DRAIN_ROWS / wall)
    return {
        "rows": DRAIN_ROWS,
        "model": f"{TINY} (random weights, {modelgen.TINY['hidden']}-d, 2 layers)",
        "before_rows_per_s": round(statistics.median(rates["before"]), 1),
        "after_rows_per_s": round(statistics.median(rates["after"]), 1),
        "after_over_before": _ratio(rates["after"], rates["before"]),
        "runs_before": [round(x, 1) for x in rates["before"]],
        "runs_after": [round(x, 1) for x in rates["after"]],
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", nargs="?", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--only", default="oltp,write,drain")
    parser.add_argument("--child")
    parser.add_argument("--writes", type=int, default=30)
    parser.add_argument("--table", default="bench_write")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.writes, args.table)))
        return 0
    assert args.before is not None, "name the checkout of before the change"
    from bench.machine import describe
    from tests.support.cluster import session_cluster

    checkouts = {"before": args.before.resolve(), "after": AFTER}
    result: dict[str, Any] = {"machine": describe(), "checkouts": {}}
    for name, checkout in checkouts.items():
        head = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        result["checkouts"][name] = {"path": str(checkout), "commit": head.stdout.strip()}
    with session_cluster() as cluster:
        dsns = {n: cluster.dsn(cluster.create_database(prefix=f"bench_{n}")) for n in checkouts}
        for name, dsn in dsns.items():
            _migrate(checkouts[name], dsn)
        wanted = args.only.split(",")
        if "write" in wanted:
            result["write"] = write_stage(dsns, checkouts, args.rounds + 4)
            print(json.dumps(result["write"], indent=1), flush=True)
        if "drain" in wanted:
            result["drain"] = drain(dsns, checkouts, args.rounds)
            print(json.dumps(result["drain"], indent=1), flush=True)
        if "oltp" in wanted:
            result["oltp"] = oltp(dsns, args.rounds, args.seconds)
            print(json.dumps(result["oltp"], indent=1), flush=True)
    out = AFTER / "bench" / "results" / "bounded_waits.json"
    if out.exists():  # a section run alone keeps the others' figures
        result = {**json.loads(out.read_text()), **result}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:  # run by another checkout's interpreter: nothing of bench/ here
        sys.path = [p for p in sys.path if Path(p).resolve() != HERE.parent]
    sys.exit(main())

"""What the chunk and side tables' row-level security (sql/56_side.sql) costs a tenant's search:
embeddings.search() and hybrid_search() as a role under the watched table's row-level security,
with the store's policy (after) and without it (before: the store's row-level security turned
off, as every store was before 0.3.0), side by side, alternating rounds in one run.

A chunked target (two chunks a document) and a side-table target over `--rows` documents held by
two tenants; random 384-dimension vectors written straight into the stores (no model runs),
full-text search on. Each path: the default (below embeddings.exact_search_rows an exact scan of
the caller's rows), the HNSW index path (exact_search_rows = 0), hybrid search.

    python -m bench.store_rls DATABASE_URL [--rows N] [--rounds R] [--calls C]

DATABASE_URL: a superuser's, on a server with the schema installed (`embed-worker migrate`);
the tables are made and dropped here. Results: bench/results/store_rls.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from bench.machine import describe as machine

Conn = psycopg.Connection[Any]
MODEL = "all-MiniLM-L6-v2"
DIMS = 384
TENANT = "bench_store_rls_tenant"
TARGETS = {
    "chunks": ("rls_chunked", "rls_chunked_chunks"),
    "side": ("rls_side", "rls_side_embeddings"),
}
WATCH = {
    "chunks": "chunk_tokens => 64, fts => 'english'",
    "side": "store => 'side', fts => 'english'",
}
RESULTS = Path(__file__).parent / "results" / "store_rls.json"


def setup(conn: Conn, rows: int) -> None:
    conn.execute(f"DROP ROLE IF EXISTS {TENANT}")
    conn.execute(f"CREATE ROLE {TENANT}")
    vector = f"(SELECT array_agg(random()::real - 0.5) FROM generate_series(1, {DIMS}) WHERE g > 0)"
    for store, (table, store_table) in TARGETS.items():
        conn.execute(f"DROP TABLE IF EXISTS {table}, {store_table}")
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, tenant text NOT NULL, body text)")
        conn.execute(
            f"INSERT INTO {table} SELECT g, CASE WHEN g %% 2 = 0 THEN 'even' ELSE 'odd' END,"
            " 'note ' || g || ' about ' || (ARRAY['launch', 'budget', 'hiring', 'roadmap'])[g %% 4 + 1]"
            " FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute(
            f"SELECT embeddings.watch('{table}', 'body', model => %s, {WATCH[store]})", (MODEL,)
        )
        if store == "chunks":
            conn.execute(
                f"INSERT INTO {store_table} (id, seq, chunk, chunk_hash, embedding)"
                f" SELECT t.id, s.seq, t.body, md5(t.body || s.seq), {vector.replace('g > 0', 't.id + s.seq > 0')}::halfvec"
                f" FROM {table} t, generate_series(0, 1) AS s(seq)"
            )
        else:
            conn.execute(
                f"INSERT INTO {store_table} (id, embedding, content_md5, embedding_fts)"
                f" SELECT t.id, {vector.replace('g > 0', 't.id > 0')}::halfvec, md5(t.body),"
                " to_tsvector('english', t.body) FROM " + table + " t"
            )
        conn.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        conn.execute(
            f"CREATE POLICY half ON {table} USING (tenant = current_setting('bench.tenant'))"
        )
        conn.execute(f"GRANT SELECT ON {table}, {store_table} TO {TENANT}")
        conn.execute(f"ANALYZE {table}")
        conn.execute(f"ANALYZE {store_table}")


def measure(conn: Conn, table: str, statement: str, queries: list[str]) -> float:
    """Median milliseconds of one call, as the tenant."""
    samples = []
    for q in queries:
        started = time.perf_counter()
        conn.execute(statement.format(table=table), (q,)).fetchall()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


PATHS = {
    "search (default: exact below 10,000 rows)": "SELECT * FROM embeddings.search('{table}', %s::halfvec, 10)",
    "search (HNSW index)": "SELECT * FROM embeddings.search('{table}', %s::halfvec, 10)",
    "hybrid_search": "SELECT * FROM embeddings.hybrid_search('{table}', 'launch budget', %s::halfvec, 10)",
}


def run(dsn: str, rows: int, rounds: int, calls: int) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    queries = [
        "[" + ",".join(f"{x:.4f}" for x in rng.standard_normal(DIMS)) + "]" for _ in range(calls)
    ]
    samples: dict[str, dict[str, list[float]]] = {}
    with (
        psycopg.connect(dsn, autocommit=True) as su,
        psycopg.connect(dsn, autocommit=True) as tenant,
    ):
        setup(su, rows)
        tenant.execute(f"SET ROLE {TENANT}")
        tenant.execute("SET bench.tenant = 'even'")
        for _ in range(rounds):
            for policy in ("before", "after"):  # alternating: the machine's drift hits both
                for store, (table, store_table) in TARGETS.items():
                    su.execute(
                        f"ALTER TABLE {store_table} {'ENABLE' if policy == 'after' else 'DISABLE'} ROW LEVEL SECURITY"
                    )
                    for path, statement in PATHS.items():
                        tenant.execute(
                            f"SET embeddings.exact_search_rows = {0 if 'HNSW' in path else 10000}"
                        )
                        measure(tenant, table, statement, queries[:3])  # warm the plans
                        took = measure(tenant, table, statement, queries)
                        samples.setdefault(f"{store}: {path}", {}).setdefault(policy, []).append(
                            took
                        )
        su.execute(f"ALTER TABLE {TARGETS['chunks'][1]} ENABLE ROW LEVEL SECURITY")
        su.execute(f"ALTER TABLE {TARGETS['side'][1]} ENABLE ROW LEVEL SECURITY")
        for table, store_table in TARGETS.values():
            su.execute(f"DROP TABLE {table}, {store_table}")
        su.execute(f"DROP ROLE {TENANT}")
    results = {}
    for name, by in samples.items():
        before, after = statistics.median(by["before"]), statistics.median(by["after"])
        results[name] = {
            "before_ms": round(before, 2),
            "after_ms": round(after, 2),
            "ratio": round(after / before, 2),
        }
    return {
        "machine": machine(),
        "rows": rows,
        "rounds": rounds,
        "calls": calls,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dsn")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    found = run(args.dsn, args.rows, args.rounds, args.calls)
    RESULTS.write_text(json.dumps(found, indent=2) + "\n")
    for name, r in found["results"].items():
        print(
            f"{name:60s} before {r['before_ms']:7.2f} ms  after {r['after_ms']:7.2f} ms  x{r['ratio']}"
        )


if __name__ == "__main__":
    main()

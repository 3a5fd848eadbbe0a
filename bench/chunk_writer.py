"""The chunk writer, before and after a change: the generated `embeddings_<id>_chunks()` that the
worker's write transaction calls for a chunked target (sql/55_chunks.sql), timed alone, in two
databases whose schemas come from two checkouts (the change's parent and the change).

    python -m bench.chunk_writer DSN_BEFORE DSN_AFTER [--rows 500] [--chunks 4] [--pairs 25]
        [--kind text|text-fts|documents]

Each database must be migrated (`embed-worker migrate`, run from the checkout it stands for) and
otherwise empty of a table named bench_chunked. Each call writes `rows` documents of `chunks`
chunks with 384-dimension vectors, in a transaction that is rolled back, so every call starts
from the same state; calls alternate before, after (the machine's speed drifts), and the
report is the median time of each and the median of the paired ratios after / before. The
writer's arguments are read from its signature, so a release that added one (the chunks'
`headings` and `pages`, issue 39) gets it as NULLs: a text document's chunks have neither.
`--kind`: a text column chunked as plain text (the default), the same with full-text search on
(the chunk table's generated tsvector), or read as Markdown with full-text search on, each chunk
with a heading path of three headings (whose words the tsvector holds since 0.4.0).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from typing import Any

import numpy as np
import psycopg

TABLE = "bench_chunked"
DIMS = 384


# watch()'s arguments after the chunk size, by --kind.
KINDS = {
    "text": "",
    "text-fts": ", fts => 'english'",
    "documents": ", format => 'markdown', fts => 'english'",
}


def prepare(dsn: str, rows: int, kind: str = "text") -> str:
    """The chunked target's table with `rows` rows; the name of its chunk writer."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, body text)")
        conn.execute(
            f"INSERT INTO {TABLE} SELECT g, repeat('word ', 300) || g"
            " FROM generate_series(1, %s) g",
            (rows,),
        )
        found = conn.execute(
            "SELECT embeddings.watch(%s, 'body', model => 'all-MiniLM-L6-v2', chunk_tokens => 64"
            + KINDS[kind]
            + ")",
            (TABLE,),
        ).fetchone()
        assert found is not None
        conn.execute(f"VACUUM ANALYZE {TABLE}")
        return f"embeddings.embeddings_{found[0]}_chunks"


def arguments(
    dsn: str, writer: str, chunks: int, seed: int, headed: bool = False
) -> tuple[str, list[Any]]:
    """The call and its parameters, by the writer's argument names; `headed`: each chunk with a
    heading path, as a document's has."""
    with psycopg.connect(dsn) as conn:
        # The writer of the most arguments: a release may keep its predecessor's beside it
        # (0.4.0 keeps 0.2.0's for workers of that release).
        found = conn.execute(
            "SELECT pg_get_function_identity_arguments(p.oid) FROM pg_proc p"
            " WHERE p.pronamespace = 'embeddings'::regnamespace AND p.proname = %s"
            " ORDER BY p.pronargs DESC LIMIT 1",
            (writer.split(".", 1)[1],),
        ).fetchone()
        keyed = conn.execute(f"SELECT id::text, md5(body) FROM {TABLE} ORDER BY id").fetchall()
    assert found is not None
    # "keys text[], k0 text[], ...": the input arguments, named, in order.
    named = [a.strip().split(" ", 1) for a in found[0].split(",")]
    arg_names, types = [n for n, _ in named], [t for _, t in named]
    rng = np.random.default_rng(seed)
    keys = [k for k, _ in keyed]
    per_chunk: dict[str, list[Any]] = {n: [] for n in ("chunk_keys", "seqs", "chunks", "hashes")}
    per_chunk |= {"vectors": [], "starts": [], "ends": []}
    for key in keys:
        for seq in range(chunks):
            text = f"chunk {key} {seq} " * 40
            vector = rng.standard_normal(DIMS).astype(np.float16)
            per_chunk["chunk_keys"].append(key)
            per_chunk["seqs"].append(seq)
            per_chunk["chunks"].append(text)
            per_chunk["hashes"].append(hashlib.md5(text.encode()).hexdigest())
            per_chunk["vectors"].append("[" + ",".join(f"{x:.4f}" for x in vector) + "]")
            per_chunk["starts"].append(seq * 100)
            per_chunk["ends"].append(seq * 100 + 100)
    n = len(per_chunk["seqs"])
    values: dict[str, Any] = {
        "keys": keys,
        "k0": keys,
        "digests": [d for _, d in keyed],
        "counts": [chunks] * len(keys),
        **per_chunk,
        "headings": json.dumps(
            [
                ["Installation guide", "Configuring the server", f"Step {seq % chunks}"]
                for seq in range(n)
            ]
            if headed
            else [None] * n
        ),
        "pages": [None] * n,
    }
    missing = [a for a in arg_names if a not in values]
    if missing:
        raise SystemExit(f"{writer} takes arguments this bench does not know: {missing}")
    placeholders = ", ".join(f"%s::{t}" for t in types)
    return f"SELECT count(*) FROM {writer}({placeholders})", [values[a] for a in arg_names]


def backend_cpu(pid: int) -> float | None:
    """Server process `pid`'s CPU seconds (user and system), where the server runs here and
    /proc shows it; else None. On a loaded machine wall time varies with the neighbours, the
    backend's own CPU time much less."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_call(dsn: str, call: str, params: list[Any]) -> tuple[float, float | None]:
    """The call's wall time and its backend's CPU time (None where unknown), in seconds."""
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert found is not None
        cpu_before = backend_cpu(found[0])
        started = time.perf_counter()
        conn.execute(call, params)
        elapsed = time.perf_counter() - started
        cpu_after = backend_cpu(found[0])
        conn.rollback()
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return elapsed, cpu


def summary(before: list[float], after: list[float]) -> dict[str, Any]:
    ratios = [a / b for a, b in zip(after, before, strict=True) if b > 0]
    return {
        "before_median_ms": round(statistics.median(before) * 1000, 1),
        "after_median_ms": round(statistics.median(after) * 1000, 1),
        "after_over_before_median": round(statistics.median(ratios), 3),
        "after_over_before_quartiles": [
            round(q, 3) for q in statistics.quantiles(ratios, n=4)[::2]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=25)
    parser.add_argument("--kind", choices=sorted(KINDS), default="text")
    args = parser.parse_args()
    calls = []
    for dsn in (args.before, args.after):
        writer = prepare(dsn, args.rows, args.kind)
        headed = args.kind == "documents"
        calls.append((dsn, *arguments(dsn, writer, args.chunks, seed=1, headed=headed)))
    for dsn, call, params in calls:  # warm-up: caches, plans
        timed_call(dsn, call, params)
    before: list[tuple[float, float | None]] = []
    after: list[tuple[float, float | None]] = []
    for _ in range(args.pairs):
        before.append(timed_call(*calls[0]))
        after.append(timed_call(*calls[1]))
    report: dict[str, Any] = {
        "kind": args.kind,
        "rows": args.rows,
        "chunks_per_row": args.chunks,
        "pairs": args.pairs,
        **summary([w for w, _ in before], [w for w, _ in after]),
    }
    cpu_before = [c for _, c in before if c is not None]
    cpu_after = [c for _, c in after if c is not None]
    if len(cpu_before) == len(cpu_after) == args.pairs:
        report["backend_cpu"] = summary(cpu_before, cpu_after)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

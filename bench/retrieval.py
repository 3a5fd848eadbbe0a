"""Search paths at scale: recall@10 against exact search and p50/p95 latency of each path of
embeddings.search() and embeddings.hybrid_search() (sql/58_search.sql, sql/59_hybrid.sql), beside
pgvector's plain HNSW scan (no iterative scan), for a plain table and a chunked one.

Vectors: real-looking (bench/hnsw.py: a Gaussian fitted to real all-MiniLM-L6-v2 embeddings of
standard-library docstrings), queries drawn from the same distribution with another seed.
Texts: the docstrings, cycled (for the full-text side of hybrid search). Paths, k = 10:
- `exact`: search() with embeddings.exact_search_rows above the table's size (a scan);
- `hnsw_plain`: `ORDER BY embedding <=> q LIMIT 10` with pgvector's defaults (ef_search 40);
- `search`: search() as shipped (iterative index scan, relaxed order, re-sorted), a new
  question: the first statement to walk its part of the index, whose pages and rows come from
  the OS page cache unless shared buffers hold them; `search_warm`: the same question again;
- `search_filtered`: search() with a filter one row in 100 passes (`tenant`), against the
  exact answer under the same filter (questions of its own; `_warm` as above);
- `chunks`: a chunked target, 10 chunks per document: search() (documents by their best
  chunk) against the exact per-document answer (questions of its own; `_warm` as above);
- `hybrid`: hybrid_search() as shipped, any word of the question ranked by BM25 (latency
  only: its quality is bench/quality's and the BEIR bench's; its vector side asked after the
  paths above, so warm: its cost is the full-text ranking's);
- `hybrid_every_word`: hybrid_search(text_match => 'all'): only rows holding every word are
  ranked, so its cost does not grow with the rows holding a common one;
- `search_ef<N>` / `hnsw_ef<N>`: search() and the plain HNSW scan with hnsw.ef_search = N
  (EF_SEARCH), the recall each buys and what it costs: what search()'s default is chosen from.
  These and `hnsw_plain` are timed warm (each statement run once untimed first), so that they
  differ by their work alone.
And hybrid search's BM25 ranking alone, its counted and its sampled statement paired on the
plain table (bench/bm25_statements.py): what embeddings.bm25_sample_rows is chosen from.

Not part of the default `make bench`: `python -m bench --only retrieval [--scale-rows N]`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from bench import bm25_statements, corpus
from bench.hnsw import gaussian_like, real_embeddings

DIMS = 384
K = 10
MODEL = "all-MiniLM-L6-v2"
EF_SEARCH = (40, 100, 200, 400)


def _vec(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.5g}" for x in v.astype(np.float32).tolist()) + "]"


def _load(conn: psycopg.Connection[Any], statement: str, rows: Any) -> None:
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _timed(
    conn: psycopg.Connection[Any], statement: str, params: tuple[Any, ...]
) -> tuple[list[Any], float]:
    start = time.perf_counter()
    rows = conn.execute(statement, params).fetchall()
    return [r[0] for r in rows], (time.perf_counter() - start) * 1000


def _summary(times: list[float], recalls: list[float] | None) -> dict[str, Any]:
    ordered = sorted(times)
    out: dict[str, Any] = {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
    }
    if recalls is not None:
        out["recall_at_10"] = round(statistics.fmean(recalls), 4)
    return out


def run(
    dsn: str, model_dir: Path, *, rows: int = 100_000, queries: int = 100, rounds: int = 2
) -> dict[str, Any]:
    real = real_embeddings(model_dir, 1000)
    vectors = gaussian_like(real, rows, seed=21)
    asked = gaussian_like(real, queries, seed=22)
    asked_filtered = gaussian_like(real, queries, seed=23)
    asked_chunks = gaussian_like(real, queries, seed=24)
    texts = corpus.stdlib_docstrings()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '3GB'")  # as bench/hnsw.py: 1M rows' graph fits
        conn.execute(
            f"CREATE TABLE plain (id int PRIMARY KEY, tenant int NOT NULL, body text NOT NULL,"
            f" embedding halfvec({DIMS}))"
        )
        _load(
            conn,
            "COPY plain FROM STDIN",
            ((i, i % 100, texts[i % len(texts)], _vec(v)) for i, v in enumerate(vectors)),
        )
        # The table filled first, its indexes built after: a placeholder HNSW index (partial,
        # empty) keeps watch() from building one, enable_fts() fills the tsvectors and builds
        # the GIN index, then the HNSW index is built and timed on its own. (enable_fts() over
        # an HNSW-indexed table drops and rebuilds it around its fill: an UPDATE's new row
        # versions go into every index, and 100k HNSW inserts took over 20 minutes here.)
        conn.execute(
            "CREATE INDEX plain_placeholder ON plain USING hnsw (embedding halfvec_cosine_ops)"
            " WHERE false"
        )
        conn.execute(
            "SELECT embeddings.watch('plain', 'body', model => %s, backfill => false)", (MODEL,)
        )
        started = time.perf_counter()
        conn.execute("SELECT embeddings.enable_fts('plain', 'english')")
        fts_s = time.perf_counter() - started
        conn.execute("DROP INDEX plain_placeholder")
        started = time.perf_counter()
        conn.execute("CREATE INDEX ON plain USING hnsw (embedding halfvec_cosine_ops)")
        index_s = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE plain")

        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL)")
        conn.execute(
            "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => 200)",
            (MODEL,),
        )
        _load(conn, "COPY docs FROM STDIN", ((d, "doc") for d in range(rows // 10)))
        (index,) = conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = 'docs_chunks'::regclass"
            " AND am.amname = 'hnsw'"
        ).fetchone() or ("",)
        conn.execute(f'DROP INDEX "{index}"')
        _load(
            conn,
            "COPY docs_chunks (id, seq, chunk, chunk_hash, embedding) FROM STDIN",
            (
                (i // 10, i % 10, texts[i % len(texts)], str(i), _vec(v))
                for i, v in enumerate(vectors)
            ),
        )
        conn.execute("CREATE INDEX ON docs_chunks USING hnsw (embedding halfvec_cosine_ops)")
        conn.execute("VACUUM ANALYZE docs_chunks")

        search = "SELECT key FROM embeddings.search(%s, %s::halfvec, %s, %s::jsonb)"
        hybrid = "SELECT key FROM embeddings.hybrid_search(%s, %s, %s::halfvec, %s)"
        every_word = (
            "SELECT key FROM embeddings.hybrid_search(%s, %s, %s::halfvec, %s, text_match => 'all')"
        )
        plain_hnsw = "SELECT id FROM plain ORDER BY embedding <=> %s::halfvec LIMIT %s"
        tenant = '{"tenant": 7}'
        paths: dict[str, tuple[list[float], list[float] | None]] = {
            name: ([], [])
            for name in (
                "exact",
                "hnsw_plain",
                "search",
                "search_warm",
                "search_filtered",
                "search_filtered_warm",
                "exact_filtered",
                "chunks",
                "chunks_warm",
                "chunks_exact",
            )
        }
        paths["hybrid"] = ([], None)
        paths["hybrid_every_word"] = ([], None)
        for ef in EF_SEARCH:
            paths[f"hnsw_ef{ef}"] = ([], [])
            paths[f"search_ef{ef}"] = ([], [])

        def timed(
            name: str,
            statement: str,
            params: tuple[Any, ...],
            truth: list[Any],
            *,
            warm: bool = False,
        ) -> None:
            """`warm`: the statement run once untimed first, so that only its work is timed."""
            if warm:
                conn.execute(statement, params).fetchall()
            found, ms = _timed(conn, statement, params)
            times, recalls = paths[name]
            times.append(ms)
            assert recalls is not None
            recalls.append(len(set(found) & set(truth)) / K)

        # The filtered and the chunked paths ask their own questions (from the same Gaussian), so
        # that each of the three search() paths below is the first to walk its question's part of
        # the index: what a new question costs.
        for n, (q, q_filtered, q_chunks) in enumerate(
            zip(asked, asked_filtered, asked_chunks, strict=True)
        ):
            v, v_filtered, v_chunks = _vec(q), _vec(q_filtered), _vec(q_chunks)
            # The exact scans read the heap through a ring of a few buffers (a sequential scan of
            # a table over a quarter of shared_buffers), so they leave none of the index's pages
            # and few of the rows in shared buffers.
            conn.execute("SET embeddings.exact_search_rows = 1e12")
            truth, ms = _timed(conn, search, ("plain", v, K, None))
            paths["exact"][0].append(ms)
            truth_f, ms = _timed(conn, search, ("plain", v_filtered, K, tenant))
            paths["exact_filtered"][0].append(ms)
            truth_c, ms = _timed(conn, search, ("docs", v_chunks, K, None))
            paths["chunks_exact"][0].append(ms)
            conn.execute("RESET embeddings.exact_search_rows")
            # A new question's search reads the index pages and rows it walks into shared buffers
            # (here from the OS page cache); asked again, it finds them there. Until 2026-11-29
            # the paths were timed one after the other on one question, each finding the pages
            # the ones before it had read: `search` (second, after an ef_search 40 scan) took
            # 1.8x the time of `search_ef200` (the same statement, later) at 100k rows, 2.9x at 1M.
            for name, params, expected in (
                ("search", ("plain", v, K, None), truth),
                ("search_filtered", ("plain", v_filtered, K, tenant), truth_f),
                ("chunks", ("docs", v_chunks, K, None), truth_c),
            ):
                timed(name, search, params, expected)
                timed(f"{name}_warm", search, params, expected)
            # The sweep compares what each ef_search costs, so every statement in it is timed
            # warm: run once untimed, then timed.
            timed("hnsw_plain", plain_hnsw, (v, K), truth, warm=True)
            for ef in EF_SEARCH:
                conn.execute(f"SET hnsw.ef_search = {ef}")
                conn.execute(f"SET embeddings.search_ef_search = {ef}")
                for name, statement, args in (
                    (f"hnsw_ef{ef}", plain_hnsw, (v, K)),
                    (f"search_ef{ef}", search, ("plain", v, K, None)),
                ):
                    timed(name, statement, args, truth, warm=True)
            conn.execute("RESET hnsw.ef_search")
            conn.execute("RESET embeddings.search_ef_search")
            words = " ".join(texts[(n * 7) % len(texts)].split()[:3])
            # In turn, so that neither always finds the pages the other read.
            both = [("hybrid", hybrid), ("hybrid_every_word", every_word)]
            for name, statement in both if n % 2 else both[::-1]:
                _, ms = _timed(conn, statement, ("plain", words, v, K))
                paths[name][0].append(ms)
        for name in ("exact", "exact_filtered", "chunks_exact"):
            paths[name] = (paths[name][0], None)
        statements = bm25_statements.run(conn, "plain", texts, rounds=rounds)
        sizes = conn.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('plain')),"
            " pg_size_pretty(pg_total_relation_size('docs_chunks'))"
        ).fetchone()
    return {
        # The vectors are synthetic; only the texts (the full-text side) are docstrings.
        "corpus": (
            "synthetic vectors: a Gaussian fitted to all-MiniLM-L6-v2 embeddings of 1,000"
            " standard-library docstrings; texts (full-text search only): the docstrings,"
            " cycled"
        ),
        "rows": rows,
        "queries": queries,
        "k": K,
        "hnsw_build_s": round(index_s, 1),
        "enable_fts_s": round(fts_s, 1),
        "sizes": sizes,
        "paths": {name: _summary(t, r) for name, (t, r) in paths.items()},
        "bm25_statements": statements,
    }

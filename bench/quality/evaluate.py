"""`make bench`'s `quality` section (`python -m bench --only quality`): recall@10 and nDCG@10
of full-text, vector and hybrid retrieval over the standard library's documentation, for whole
rows and for chunks, per query type.

Steps: build the corpus (bench/quality/stdlib.py) and split each module's page into chunks with
the project's splitter and the model's tokenizer; resolve every query's labels to rows and to
chunks (bench/quality/labels.py); embed rows, chunks and queries with the project's Embedder;
load three tables into Postgres (`quality_rows`, `quality_chunks` and `quality_chunks_headed`,
the pages read as Markdown documents and chunked by section with a context header: text,
halfvec, generated tsvector with a GIN index); run every retriever for every query in each;
score, with each retriever's median and 95th-percentile latency.

The fused retriever is checked against `retrievers.rrf` computed in Python from the same two
candidate lists: a mismatch stops the run rather than report a wrong baseline.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from bench.chunks import CHUNK_OVERLAP, CHUNK_TOKENS
from bench.quality import labels, metrics, stdlib, summary
from bench.quality.labels import ChunkSpan, Query
from bench.quality.retrievers import (
    BM25,
    SPLIT_DOTS,
    Conn,
    FullText,
    Fusion,
    RankFusion,
    Retriever,
    SqlFunction,
    Table,
    Vector,
    Vector32,
    halfvec,
    rrf,
)
from worker.models import onnx
from worker.models.embedder import Embedder
from worker.pipeline.chunking import Splitter
from worker.pipeline.documents.extraction import extract
from worker.pipeline.documents.splitting import DocumentSplitter

K = 10
ROWS, CHUNKS = Table("quality_rows"), Table("quality_chunks")
# The same pages read as Markdown documents (worker/pipeline/documents/): a heading starts a
# chunk and each chunk is embedded with its context header (the module, the member's heading),
# as a documents target embeds them; full-text search indexes the chunk's own text.
HEADED = Table("quality_chunks_headed")
CACHE = Path(tempfile.gettempdir()) / "embed-worker-bench-quality"


def default_retrievers() -> list[Retriever]:
    """The baselines, and the shipped embeddings.hybrid_search(): scored in every run, so the
    product's figures come from the same run as the baselines it is compared with."""
    fulltext, any_term, vector = FullText("all"), FullText("any"), Vector()
    split, any_split, bm25 = (
        FullText("all", split_dots=True),
        FullText("any", split_dots=True),
        BM25(),
    )
    hybrid = "embeddings.hybrid_search"
    return [
        fulltext,
        any_term,
        split,
        any_split,
        bm25,
        vector,
        Fusion(fulltext, vector, name="hybrid_rrf"),
        Fusion(any_term, vector, name="hybrid_rrf_any"),
        Fusion(split, vector, name="hybrid_rrf_split"),
        Fusion(any_split, vector, name="hybrid_rrf_any_split"),
        RankFusion(bm25, vector, name="hybrid_rrf_bm25"),
        SqlFunction.named(hybrid),
        # The defaults until 0.3.0: every word, reciprocal rank fusion (text_weight 2).
        SqlFunction.named(hybrid, "fusion => 'rrf', text_match => 'all'"),
        SqlFunction.named(hybrid, "fusion => 'rrf'"),
        # The product's BM25 ranking alone (sql/59_bm25.sql): the fusion without the vector's
        # (by places: with vector_weight 0 every other document scores 0).
        SqlFunction.named(
            hybrid, "vector_weight => 0, text_match => 'any', fusion => 'rrf'", text_only=True
        ),
        # The full-text ranking's weight around the default's, 0.2 (docs/retrieval-quality.md).
        SqlFunction.named(hybrid, "text_weight => 0.15"),
        SqlFunction.named(hybrid, "text_weight => 0.3"),
        # Full-text fields: the object's name as a title, weighted 2 (docs/retrieval-quality.md).
        SqlFunction.fielded(2),
    ]


def embedded(embedder: Embedder, texts: list[str]) -> tuple[Vector32, bool]:
    """The texts' vectors, and whether they came from the cache: the corpus is embedded once
    per model file and corpus text (about 3 minutes on 2 cores), then read back
    (`CACHE`, under the temporary directory; delete it to embed again)."""
    digest = hashlib.sha256(_file_digest(embedder.model_file).encode())
    digest.update(f"{embedder.variant} {embedder.max_tokens}".encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    path = CACHE / f"{digest.hexdigest()[:24]}.npy"
    if path.is_file():
        return np.load(path), True
    vectors = embedder.embed(texts)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = CACHE / f".{path.stem}.{os.getpid()}.npy"
    np.save(partial, vectors)
    os.replace(partial, path)  # concurrent runs never read half a file
    return vectors, False


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def create_table(
    conn: Conn, table: Table, dim: int, rows: Iterable[tuple[str, str, Vector32]]
) -> None:
    """The corpus table: ids in the order given (0, 1, ...), both tsvectors GIN-indexed."""
    split = SPLIT_DOTS.format("body")
    conn.execute(f"DROP TABLE IF EXISTS {table.name}")
    conn.execute(
        f"CREATE TABLE {table.name} (id integer PRIMARY KEY, name text NOT NULL,"
        f" body text NOT NULL, embedding halfvec({dim}) NOT NULL,"
        f" fts tsvector GENERATED ALWAYS AS (to_tsvector('{table.config}', body)) STORED,"
        f" fts_split tsvector GENERATED ALWAYS AS (to_tsvector('{table.config}', {split})) STORED)"
    )
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY {table.name} (id, name, body, embedding) FROM STDIN") as copy,
    ):
        for item_id, (name, body, vector) in enumerate(rows):
            copy.write_row((item_id, name, body, halfvec(vector)))
    conn.execute(f"CREATE INDEX ON {table.name} USING gin (fts)")
    conn.execute(f"CREATE INDEX ON {table.name} USING gin (fts_split)")
    conn.execute(f"ANALYZE {table.name}")


def _chunks(
    pages: list[stdlib.Page], splitter: Splitter
) -> tuple[list[tuple[str, str]], dict[str, list[ChunkSpan]]]:
    texts: list[tuple[str, str]] = []
    spans: dict[str, list[ChunkSpan]] = {}
    for page in pages:
        for chunk in splitter.split(page.text):
            spans.setdefault(page.module, []).append(
                ChunkSpan(len(texts), page.module, chunk.start, chunk.end)
            )
            texts.append((f"{page.module}#{chunk.seq}", chunk.text))
    return texts, spans


def _headed_chunks(
    pages: list[stdlib.Page], splitter: DocumentSplitter
) -> tuple[list[tuple[str, str, str]], dict[str, list[ChunkSpan]]]:
    """(name, chunk text, what the model reads) of each chunk, and the chunks' spans."""
    texts: list[tuple[str, str, str]] = []
    spans: dict[str, list[ChunkSpan]] = {}
    for page in pages:
        document = extract(page.text, format="markdown", max_bytes=0)
        assert document.text == page.text  # Markdown is kept as written: the offsets hold
        for chunk in splitter.stream(document):
            spans.setdefault(page.module, []).append(
                ChunkSpan(len(texts), page.module, chunk.chunk.start, chunk.chunk.end)
            )
            texts.append(
                (f"{page.module}#{chunk.chunk.seq}", chunk.chunk.text, chunk.embedding_input)
            )
    return texts, spans


def _headed_qrels(
    queries: list[Query],
    objects: list[stdlib.DocObject],
    pages: list[stdlib.Page],
    spans: dict[str, list[ChunkSpan]],
) -> dict[str, dict[int, int]]:
    """As labels.chunk_qrels, but an anchor in a member's heading line (which the headed chunks
    carry in their header, not their text) judges the first chunk of the member's section."""
    by_name = {o.qualname: o for o in objects}
    by_module = {p.module: p for p in pages}
    same_doc = labels.equivalents(objects)
    found: dict[str, dict[int, int]] = {}
    for query in queries:
        qrels: dict[int, int] = {}
        for j in labels.expanded(query, same_doc):
            obj = by_name[j.object]
            start, end = labels.needle(obj, j.anchor)
            offset = by_module[obj.module].sections[obj.qualname][0]
            module_spans = spans[obj.module]
            try:
                chunk = labels.holding(module_spans, offset + start, offset + end)
            except ValueError:
                chunk = min(
                    (c for c in module_spans if c.start >= offset + end),
                    key=lambda c: c.start,
                    default=module_spans[-1],
                )
            qrels[chunk.id] = max(qrels.get(chunk.id, 0), j.grade)
        found[query.id] = qrels
    return found


def _judged(
    queries: list[Query],
    objects: list[stdlib.DocObject],
    pages: list[stdlib.Page],
    spans: dict[str, list[ChunkSpan]],
) -> tuple[list[Query], dict[str, dict[int, int]], dict[str, dict[int, int]], list[str]]:
    by_name = {o.qualname: o for o in objects}
    row_ids = {o.qualname: i for i, o in enumerate(objects)}
    by_module = {p.module: p for p in pages}
    same_doc = labels.equivalents(objects)
    kept, rows, chunks, dropped = [], {}, {}, []
    for query in queries:
        judgements = labels.expanded(query, same_doc)
        try:
            rows[query.id] = labels.row_qrels(judgements, row_ids, by_name)
            chunks[query.id] = labels.chunk_qrels(judgements, by_name, by_module, spans)
        except (KeyError, ValueError) as missing:  # another Python version's library
            dropped.append(f"{query.id}: {missing}")
            continue
        kept.append(query)
    return kept, rows, chunks, dropped


def _score(
    conn: Conn,
    table: Table,
    retriever: Retriever,
    queries: list[Query],
    vectors: Vector32,
    *,
    qrels: dict[str, dict[int, int]],
) -> dict[str, Any]:
    rankings: dict[str, list[int]] = {}
    per_query: dict[str, list[float]] = {}
    timings = []
    for query, vector in zip(queries, vectors, strict=True):
        started = time.perf_counter()
        ranking = retriever.search(conn, table, query.text, vector, K)
        timings.append(time.perf_counter() - started)
        if isinstance(retriever, Fusion):
            _check_fusion(conn, table, retriever, query, vector, ranking=ranking)
        judged = qrels[query.id]
        rankings[query.id] = ranking
        per_query[query.id] = [
            round(metrics.recall_at_k(ranking, judged, K), 4),
            round(metrics.ndcg_at_k(ranking, judged, K), 4),
        ]
    return {
        "summary": summary.by_group(per_query, queries, K),
        "no_result_queries": sum(1 for r in rankings.values() if not r),
        "median_ms": round(statistics.median(timings) * 1000, 2),
        "p95_ms": round(float(np.percentile(timings, 95)) * 1000, 2),
        "per_query": per_query,
        "rankings": rankings,
    }


def _check_fusion(
    conn: Conn, table: Table, fusion: Fusion, query: Query, vector: Vector32, *, ranking: list[int]
) -> None:
    sides = [
        r.search(conn, table, query.text, vector, fusion.depth)
        for r in (fusion.first, fusion.second)
    ]
    expected = rrf(sides, rrf_k=fusion.rrf_k, weights=fusion.weights)[:K]
    if ranking != expected:
        raise RuntimeError(f"{fusion.name} on {query.id}: SQL {ranking} != reference {expected}")


def run(
    dsn: str,
    model_dir: Path,
    retrievers: list[Retriever] | None = None,
    *,
    details: Path | None = None,
) -> dict[str, Any]:
    """The section's results; every query's rankings and scores go to `details` if given."""
    retrievers = retrievers or default_retrievers()
    started = time.monotonic()
    objects = list(stdlib.objects())
    pages = stdlib.pages(objects)
    splitter = Splitter.from_file(model_dir / "tokenizer.json", CHUNK_TOKENS, CHUNK_OVERLAP)
    chunk_texts, spans = _chunks(pages, splitter)
    queries, row_qrels, chunk_qrels, dropped = _judged(labels.load(), objects, pages, spans)
    tokenizer = onnx.load_tokenizer(model_dir / "tokenizer.json", max_tokens=None)
    headed_splitter = DocumentSplitter(tokenizer, CHUNK_TOKENS, CHUNK_OVERLAP)
    headed_texts, headed_spans = _headed_chunks(pages, headed_splitter)
    headed_qrels = _headed_qrels(queries, objects, pages, headed_spans)
    built_s = time.monotonic() - started

    embedder = Embedder.load(model_dir)
    started = time.monotonic()
    row_vectors, rows_cached = embedded(embedder, [o.text() for o in objects])
    chunk_vectors, chunks_cached = embedded(embedder, [text for _, text in chunk_texts])
    headed_vectors, headed_cached = embedded(embedder, [read for _, _, read in headed_texts])
    query_vectors = embedder.embed([q.text for q in queries])
    embed_s = time.monotonic() - started

    row_names = [o.qualname for o in objects]
    chunk_names = [name for name, _ in chunk_texts]
    with psycopg.connect(dsn, autocommit=True) as conn:
        row_texts = [o.text() for o in objects]
        create_table(conn, ROWS, embedder.dim, zip(row_names, row_texts, row_vectors, strict=True))
        chunk_bodies = [text for _, text in chunk_texts]
        create_table(
            conn, CHUNKS, embedder.dim, zip(chunk_names, chunk_bodies, chunk_vectors, strict=True)
        )
        headed_names = [name for name, _, _ in headed_texts]
        headed_bodies = [text for _, text, _ in headed_texts]
        create_table(
            conn,
            HEADED,
            embedder.dim,
            zip(headed_names, headed_bodies, headed_vectors, strict=True),
        )
        started = time.monotonic()
        results: dict[str, dict[str, Any]] = {}
        for granularity, table, qrels in (
            ("rows", ROWS, row_qrels),
            ("chunks", CHUNKS, chunk_qrels),
            ("chunks_headed", HEADED, headed_qrels),
        ):
            results[granularity] = {}
            for retriever in retrievers:
                retriever.prepare(conn, table)
                results[granularity][retriever.name] = _score(
                    conn, table, retriever, queries, query_vectors, qrels=qrels
                )
        search_s = time.monotonic() - started
    if details is not None:
        names = {"rows": row_names, "chunks": chunk_names, "chunks_headed": headed_names}
        qrels_by = {"rows": row_qrels, "chunks": chunk_qrels, "chunks_headed": headed_qrels}
        summary.write_details(details, queries, results, names, qrels_by)
    comparisons = {
        f"{granularity}: {fused.name} - {part.name}": summary.paired(
            by_name[fused.name]["per_query"], by_name[part.name]["per_query"], queries
        )
        for granularity, by_name in results.items()
        for fused in retrievers
        if isinstance(fused, Fusion)
        for part in (fused.first, fused.second)
    }
    for by_name in results.values():
        for scored in by_name.values():
            del scored["per_query"], scored["rankings"]
    return {
        "model": embedder.name,
        "k": K,
        "language": ROWS.config,
        "corpus": summary.corpus(objects, pages, chunk_texts, splitter, embedder.max_tokens),
        "queries": summary.query_set(queries, dropped, row_qrels, chunk_qrels),
        "retrievers": {r.name: summary.explain(r) for r in retrievers},
        "results": results,
        "hybrid_minus_parts_ndcg": comparisons,
        "seconds": {
            "build": round(built_s, 1),
            "embed": round(embed_s, 1),
            "embeddings_from_cache": rows_cached and chunks_cached and headed_cached,
            "search": round(search_s, 1),
        },
    }
